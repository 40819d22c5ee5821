//! `cargo xtask demo`: Rust threads, Python processes and Kotlin JVMs contend for one 3-permit
//! semaphore, all through the wasm component, and the demo prints who held a permit when (with
//! its fencing token) and the most holders seen at once. Uses `$REDIS_URL`, or starts a
//! throwaway redis-server on a free loopback port. Python and Kotlin workers join when their SDKs
//! are built (`cargo xtask demo` builds them).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pottery_semaphore_host::{BlockingSemaphore, Options, Runtime};
use pottery_semaphore_tests::{Flavor, Server};

const PERMITS: i64 = 3;
const RUST_WORKERS: usize = 4;
const PYTHON_WORKERS: usize = 3;
const KOTLIN_WORKERS: usize = 2;
const ROUNDS: usize = 4;

struct Span {
    worker: String,
    token: u64,
    start: Duration,
    end: Duration,
}

/// Workers in other languages print `span <start µs> <end µs> <token>` relative to `epoch`.
/// Every worker reads the same clock (the system's real-time clock) to the microsecond: the
/// over-admission check compares spans across processes, and a hand-off takes well under a
/// millisecond, so spans rounded to milliseconds could seem to overlap when they do not.
fn external_workers(
    kind: &str,
    command: &[String],
    count: usize,
    url: &str,
    key: &str,
    epoch: std::time::SystemTime,
) -> Vec<std::thread::JoinHandle<Vec<Span>>> {
    let epoch_us = epoch.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0).to_string();
    (0..count)
        .map(|i| {
            let child = std::process::Command::new(&command[0])
                .args(&command[1..])
                .args([url, key, &PERMITS.to_string(), &ROUNDS.to_string(), &epoch_us, &i.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{kind} worker: {e}"));
            let name = format!("{kind} {i}");
            std::thread::spawn(move || {
                let out = child.wait_with_output().expect("worker output");
                assert!(out.status.success(), "{name} failed");
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| {
                        let f: Vec<u64> = l.strip_prefix("span ")?.split(' ').filter_map(|x| x.parse().ok()).collect();
                        let (start, end) = (Duration::from_micros(f[0]), Duration::from_micros(f[1]));
                        Some(Span { worker: name.clone(), token: f[2], start, end })
                    })
                    .collect()
            })
        })
        .collect()
}

/// Time since `epoch` on the real-time clock, the one the other languages' workers read too.
fn since(epoch: std::time::SystemTime) -> Duration {
    std::time::SystemTime::now().duration_since(epoch).unwrap_or_default()
}

/// The Python SDK's worker when target/py/venv holds the SDK (`cargo xtask demo` builds it).
fn python_command(root: &std::path::Path) -> Option<Vec<String>> {
    let python = root.join("target/py/venv/bin/python");
    let probe = std::process::Command::new(&python).args(["-c", "import pottery_semaphore"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("(no Python SDK in target/py/venv: `cargo xtask demo` builds it)");
        return None;
    }
    Some(vec![python.display().to_string(), root.join("bindings/python/demo_worker.py").display().to_string()])
}

/// The Kotlin SDK's worker when its classes and class path are built (`cargo xtask demo` does so
/// where Maven is installed).
fn kotlin_command(root: &std::path::Path) -> Option<Vec<String>> {
    let target = root.join("bindings/kotlin/target");
    let Ok(deps) = std::fs::read_to_string(target.join("demo-classpath.txt")) else {
        println!("(no Kotlin SDK build: `cargo xtask demo` builds it where Maven is installed)");
        return None;
    };
    let cp = format!("{}:{}:{}", target.join("test-classes").display(), target.join("classes").display(), deps.trim());
    Some(vec!["java".into(), "-cp".into(), cp, "io.pottery.semaphore.DemoWorkerKt".into()])
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
    let epoch = std::time::SystemTime::now();
    // Cargo names the package's directory at run time too: a copy of the workspace may run a
    // binary built for the original.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
    let root = manifest.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
    let mut others = Vec::new();
    if let Some(cmd) = python_command(&root) {
        others.extend(external_workers("python", &cmd, PYTHON_WORKERS, &url, &key, epoch));
    }
    if let Some(cmd) = kotlin_command(&root) {
        others.extend(external_workers("kotlin", &cmd, KOTLIN_WORKERS, &url, &key, epoch));
    }
    let spans = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..RUST_WORKERS)
        .map(|worker| {
            let sem = BlockingSemaphore::open(options.clone()).expect("open");
            let spans = spans.clone();
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let permit = sem.acquire_n(1, true, Some(30.0)).expect("acquire");
                    // A span starts once the permit is ours and ends before release() is called,
                    // so it lies inside the time Redis counts the permit as held.
                    let start = since(epoch);
                    std::thread::sleep(Duration::from_millis(40 + ((worker * 37 + round * 53) % 90) as u64));
                    let end = since(epoch);
                    sem.release(1).expect("release");
                    let worker = format!("rust {worker}");
                    spans.lock().expect("spans").push(Span { worker, token: permit[0].token, start, end });
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let mut spans = std::mem::take(&mut *spans.lock().expect("spans"));
    for worker in others {
        spans.extend(worker.join().expect("worker"));
    }
    spans.sort_by_key(|s| s.start);
    let total = spans.last().map(|s| s.end).unwrap_or_default();
    let mut names: Vec<String> = spans.iter().map(|s| s.worker.clone()).collect();
    names.sort();
    names.dedup();
    println!("\n{} workers x {ROUNDS} rounds on {PERMITS} permits ('#' = holding; token = fencing token)\n", names.len());
    let width = 60.0;
    for worker in &names {
        let mut line = vec![b'.'; width as usize];
        for s in spans.iter().filter(|s| &s.worker == worker) {
            let a = (s.start.as_secs_f64() / total.as_secs_f64() * width) as usize;
            let b = ((s.end.as_secs_f64() / total.as_secs_f64() * width) as usize).max(a + 1).min(line.len());
            line[a..b].fill(b'#');
        }
        let tokens: Vec<String> = spans.iter().filter(|s| &s.worker == worker).map(|s| (s.token % 10_000).to_string()).collect();
        println!("{worker:<9} |{}| tokens …{}", String::from_utf8_lossy(&line), tokens.join(" …"));
    }
    let mut max_concurrent = 0;
    for s in &spans {
        let at = s.start;
        max_concurrent = max_concurrent.max(spans.iter().filter(|o| o.start <= at && at < o.end).count());
    }
    println!("\n{} grants in {:.2?}; most holders at once: {max_concurrent} (permits: {PERMITS})", spans.len(), total);
    assert!(max_concurrent as i64 <= PERMITS, "over-admission!");
}
