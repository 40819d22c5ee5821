//! N uncontended acquire+release cycles through the component, for profilers (callgrind, perf).
use pottery_semaphore_host::BlockingSemaphore;
use pottery_semaphore_tests::{time_cycles, Flavor, Server};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let server = Server::start(Flavor::Redis);
    let sem = BlockingSemaphore::open(server.options("cycle")).expect("open");
    time_cycles(&server, n, || {
        assert!(sem.acquire(true, None).expect("acquire"));
        sem.release(1).expect("release");
    });
}
