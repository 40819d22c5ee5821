//! A separate process for the multi-process tests.
//!
//! `worker hold <url> <key> <permits> <lease_ms>`: acquires one permit, prints `held <token>`,
//!   then sleeps until killed (the crash test SIGKILLs it).
//! `worker stress <url> <key> <permits> <oracle_url> <tasks> <cycles>`: `tasks` threads, each
//!   doing `cycles` acquire/hold/release rounds with random holds. The oracle, a separate Redis
//!   server that knows nothing of the protocol, counts holders with INCR/DECR; a count above
//!   `permits` is recorded as a violation. Prints `done <cycles> <max seen>`.
//! `worker wait <url> <key> <permits> <timeout_s>`: prints `waiting`, blocks in acquire and prints
//!   `acquired <ms waited>` or `timeout`.

use std::time::{Duration, Instant};

use pottery_semaphore_host::{BlockingSemaphore, Options};

fn arg(args: &[String], i: usize) -> &str {
    args.get(i).map(String::as_str).unwrap_or_else(|| panic!("missing argument {i}: see the module docs"))
}

fn open(url: &str, key: &str, permits: i64, lease: Duration) -> BlockingSemaphore {
    BlockingSemaphore::open(Options::new(url, key).permits(permits).lease(lease).guard_fresh_server(false)).expect("open")
}

/// xorshift: random holds without a dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn stress(url: &str, key: &str, permits: i64, oracle_url: &str, tasks: usize, cycles: usize) {
    let sem = open(url, key, permits, Duration::from_secs(10));
    let oracle = redis::Client::open(oracle_url).expect("oracle url");
    let threads: Vec<_> = (0..tasks)
        .map(|t| {
            let sem = sem.clone();
            let oracle = oracle.clone();
            let key = key.to_string();
            std::thread::spawn(move || {
                let mut conn = oracle.get_connection().expect("oracle");
                let mut rng = (std::process::id() as u64) << 16 | t as u64 | 1;
                let mut max_seen = 0i64;
                for _ in 0..cycles {
                    assert!(sem.acquire(true, None).expect("acquire"));
                    let holders: i64 = redis::cmd("INCR").arg(format!("{key}:holders")).query(&mut conn).expect("incr");
                    max_seen = max_seen.max(holders);
                    if holders > permits {
                        let _: i64 = redis::cmd("INCR").arg(format!("{key}:violations")).query(&mut conn).expect("incr");
                    }
                    let hold = next(&mut rng) % 400;
                    if hold > 50 {
                        std::thread::sleep(Duration::from_micros(hold * 5));
                    }
                    let _: i64 = redis::cmd("DECR").arg(format!("{key}:holders")).query(&mut conn).expect("decr");
                    sem.release(1).expect("release");
                }
                max_seen
            })
        })
        .collect();
    let max_seen = threads.into_iter().map(|t| t.join().expect("thread")).max().unwrap_or(0);
    println!("done {} {max_seen}", tasks * cycles);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, key) = (arg(&args, 2), arg(&args, 3));
    let permits: i64 = arg(&args, 4).parse().expect("permits");
    match arg(&args, 1) {
        "hold" => {
            let lease = Duration::from_millis(arg(&args, 5).parse().expect("lease_ms"));
            let sem = open(url, key, permits, lease);
            assert!(sem.acquire(true, None).expect("acquire"));
            println!("held {}", sem.held()[0].token);
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        "stress" => stress(url, key, permits, arg(&args, 5), arg(&args, 6).parse().expect("tasks"), arg(&args, 7).parse().expect("cycles")),
        "wait" => {
            let sem = open(url, key, permits, Duration::from_secs(10));
            let timeout: f64 = arg(&args, 5).parse().expect("timeout");
            println!("waiting");
            let started = Instant::now();
            if sem.acquire(true, Some(Duration::from_secs_f64(timeout))).expect("acquire") {
                println!("acquired {}", started.elapsed().as_millis());
                sem.release(1).expect("release");
            } else {
                println!("timeout");
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
