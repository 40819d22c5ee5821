//! N uncontended acquire+release cycles through the protocol compiled natively, for profilers:
//! the counterpart of `cycle.rs`, so the two measure what the component adds.
use pottery_semaphore_core::{Config, Semaphore};
use pottery_semaphore_tests::native::NativeTransport;
use pottery_semaphore_tests::{Flavor, Server};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let server = Server::start(Flavor::Redis);
    let transport = NativeTransport::connect(&server.url()).expect("connect");
    let config = Config {
        key: "native-cycle".into(),
        value: 1,
        bounded: true,
        lease_ms: 10_000,
        holder: "native-cycle-holder".into(),
        // As `Server::options`: the server is seconds old and this guard would grant nothing yet.
        guard_fresh_server: false,
        create: true,
        masters: 1,
        raise_on_redis_errors: false,
        replicate: false,
    };
    let (sem, _) = Semaphore::open(transport, config).expect("open");
    server.script_us_per_call();
    let start = std::time::Instant::now();
    for _ in 0..n {
        let permits = sem.acquire(1, true, None).expect("acquire");
        assert!(!permits.is_empty(), "an uncontended acquire was not granted");
        let mine: Vec<u64> = permits.iter().map(|p| p.token).collect();
        sem.release(1, &mine).expect("release");
    }
    let per_cycle = start.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    eprintln!("{per_cycle:.1} µs per cycle; server {:.2} µs per script", server.script_us_per_call());
}
