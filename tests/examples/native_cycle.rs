//! N uncontended acquire+release cycles through the protocol compiled natively, for profilers:
//! the counterpart of `cycle.rs`, so the two measure what the component adds.
use pottery_semaphore_tests::native::uncontended_cycle;
use pottery_semaphore_tests::{time_cycles, Flavor, Server};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let server = Server::start(Flavor::Redis);
    time_cycles(&server, n, uncontended_cycle(&server.url(), "native-cycle".into()));
}
