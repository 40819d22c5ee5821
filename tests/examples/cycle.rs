//! N uncontended acquire+release cycles through the component, for profilers (callgrind, perf).
use pottery_semaphore_host::BlockingSemaphore;
use pottery_semaphore_tests::{Flavor, Server};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let server = Server::start(Flavor::Redis);
    let sem = BlockingSemaphore::open(server.options("cycle")).expect("open");
    server.script_us_per_call();
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(sem.acquire(true, None).expect("acquire"));
        sem.release(1).expect("release");
    }
    let per_cycle = start.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    eprintln!("{per_cycle:.1} µs per cycle; server {:.2} µs per script", server.script_us_per_call());
}
