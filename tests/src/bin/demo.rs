//! `cargo xtask demo`: workers contend for a 3-permit semaphore through the wasm component, and
//! the demo prints who held which permit when, and the most holders seen at once.
//! Uses `$REDIS_URL`, or starts a throwaway redis-server on a free loopback port.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pottery_semaphore_host::{BlockingSemaphore, Options, Runtime};
use pottery_semaphore_tests::{Flavor, Server};

const PERMITS: i64 = 3;
const WORKERS: usize = 6;
const ROUNDS: usize = 4;

struct Span {
    worker: usize,
    token: u64,
    start: Duration,
    end: Duration,
}

fn main() {
    let (url, _server) = match std::env::var("REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = Server::start(Flavor::Redis);
            println!("started redis-server on 127.0.0.1:{} (set REDIS_URL to use your own)", server.port);
            (server.url(), Some(server))
        }
    };
    let loaded = Instant::now();
    let runtime = Runtime::global().expect("runtime");
    println!(
        "component {} in {:?}",
        if runtime.loaded_from_cache { "loaded from the on-disk cache" } else { "compiled (and cached for next time)" },
        loaded.elapsed()
    );
    let key = format!("demo-{}", std::process::id());
    // A fresh throwaway server would trip the restart guard; a long-lived one would not.
    let options = Options::new(&url, &key).permits(PERMITS).guard_fresh_server(_server.is_none());
    let t0 = Instant::now();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let sem = BlockingSemaphore::open(options.clone()).expect("open");
            let spans = spans.clone();
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let permit = sem.acquire_n(1, true, Some(30.0)).expect("acquire");
                    let start = t0.elapsed();
                    std::thread::sleep(Duration::from_millis(40 + ((worker * 37 + round * 53) % 90) as u64));
                    let end = t0.elapsed();
                    sem.release(1).expect("release");
                    spans.lock().expect("spans").push(Span { worker, token: permit[0].token, start, end });
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let mut spans = std::mem::take(&mut *spans.lock().expect("spans"));
    spans.sort_by_key(|s| s.start);
    let total = spans.last().map(|s| s.end).unwrap_or_default();
    println!("\n{WORKERS} workers x {ROUNDS} rounds on {PERMITS} permits ('#' = holding; token = fencing token)\n");
    let width = 60.0;
    for worker in 0..WORKERS {
        let mut line = vec![b'.'; width as usize];
        for s in spans.iter().filter(|s| s.worker == worker) {
            let a = (s.start.as_secs_f64() / total.as_secs_f64() * width) as usize;
            let b = ((s.end.as_secs_f64() / total.as_secs_f64() * width) as usize).max(a + 1).min(line.len());
            line[a..b].fill(b'#');
        }
        let tokens: Vec<String> = spans.iter().filter(|s| s.worker == worker).map(|s| (s.token % 10_000).to_string()).collect();
        println!("worker {worker} |{}| tokens …{}", String::from_utf8_lossy(&line), tokens.join(" …"));
    }
    let mut max_concurrent = 0;
    for s in &spans {
        let at = s.start;
        max_concurrent = max_concurrent.max(spans.iter().filter(|o| o.start <= at && at < o.end).count());
    }
    println!("\n{} grants in {:.2?}; most holders at once: {max_concurrent} (permits: {PERMITS})", spans.len(), total);
    assert!(max_concurrent as i64 <= PERMITS, "over-admission!");
}
