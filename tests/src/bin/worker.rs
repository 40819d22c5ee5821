//! A separate process for the multi-process tests.
//!
//! `worker hold <url> <key> <permits> <lease_ms>`: acquires one permit, prints `held <token>`,
//!   then sleeps until killed (the crash test SIGKILLs it).
//! `worker stress <url> <key> <permits> <oracle_url> <tasks> <cycles>`: `tasks` threads, each
//!   doing `cycles` acquire/hold/release rounds with random holds. The oracle, a separate Redis
//!   server that knows nothing of the protocol, counts holders with INCR/DECR; a count above
//!   `permits` is recorded as a violation. Prints `done <cycles> <max seen>`.
//! `worker wait <url> <key> <permits> <timeout_s> [lease_ms]`: prints `waiting`, blocks in acquire and prints
//!   `acquired <ms waited>` or `timeout`.
//! `worker chaos <json>`: the fault tests' client (see [`chaos`]); the JSON names `masters`,
//!   `cluster`, `key`, `permits`, `lease_ms`, `oracle`, `duration_ms` and `threads`.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pottery_semaphore_host::{BlockingSemaphore, Options};
use pottery_semaphore_tests::oracle::{oracle_slot, Mode, OracleClient, Verdict};

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

/// What a chaos worker counts; printed as one JSON line every half second and at the end.
#[derive(Debug, Default)]
struct Counts {
    acquired: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    /// Uses of the resource the oracle accepted.
    ops: AtomicU64,
    stale: AtomicU64,
    expired: AtomicU64,
    violations: AtomicU64,
    /// Permits found lost (`take_lost`) before an op: the holder stopped using them.
    lost: AtomicU64,
    /// Threads done, and threads parked holding a permit after the stop.
    finished: AtomicU64,
    holding: AtomicU64,
}

impl Counts {
    fn json(&self, last: bool) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        serde_json::json!({
            "acquired": get(&self.acquired), "timeouts": get(&self.timeouts), "errors": get(&self.errors),
            "ops": get(&self.ops), "stale": get(&self.stale), "expired": get(&self.expired),
            "violations": get(&self.violations), "lost": get(&self.lost),
            "holding": get(&self.holding),
            "final": last,
        })
        .to_string()
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::SeqCst);
}

#[derive(Debug)]
struct Chaos {
    masters: Vec<String>,
    cluster: bool,
    key: String,
    permits: i64,
    lease: Duration,
    oracle: String,
    threads: usize,
    end: Instant,
}

/// Random acquire/hold/release against the fault tests' oracle until `duration_ms` ends or a
/// `stop` line (or end of input) arrives on stdin. Every error is counted and followed by a
/// short back-off: the servers are being faulted on purpose. After the stop, a thread that holds
/// a permit keeps it (and its oracle entry) and parks, and one that holds none tries once more
/// for one to keep, so the test can SIGKILL the process with permits held and time their
/// recovery; the final line says how many are held.
fn chaos(config: &str) {
    let v: serde_json::Value = serde_json::from_str(config).expect("chaos config JSON");
    let field = |k: &str| v.get(k).unwrap_or_else(|| panic!("chaos config lacks {k}"));
    let chaos = Arc::new(Chaos {
        masters: field("masters").as_array().expect("masters").iter().map(|m| m.as_str().expect("url").to_string()).collect(),
        cluster: field("cluster").as_bool().expect("cluster"),
        key: field("key").as_str().expect("key").to_string(),
        permits: field("permits").as_i64().expect("permits"),
        lease: Duration::from_millis(field("lease_ms").as_u64().expect("lease_ms")),
        oracle: field("oracle").as_str().expect("oracle").to_string(),
        threads: field("threads").as_u64().expect("threads") as usize,
        end: Instant::now() + Duration::from_millis(field("duration_ms").as_u64().expect("duration_ms")),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.map(|l| l.trim() == "stop").unwrap_or(true) {
                break;
            }
        }
        s.store(true, Ordering::SeqCst);
    });
    let counts = Arc::new(Counts::default());
    for t in 0..chaos.threads {
        let (chaos, stop, counts) = (chaos.clone(), stop.clone(), counts.clone());
        std::thread::spawn(move || chaos_thread(&chaos, t, &stop, &counts));
    }
    let threads = chaos.threads as u64;
    while counts.finished.load(Ordering::SeqCst) + counts.holding.load(Ordering::SeqCst) < threads {
        println!("{}", counts.json(false));
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("{}", counts.json(true));
    // Holders wait to be killed; a test that went away without killing us ends it here.
    if counts.holding.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn chaos_thread(chaos: &Chaos, t: usize, stop: &AtomicBool, counts: &Counts) {
    let stopped = || stop.load(Ordering::SeqCst) || Instant::now() >= chaos.end;
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| u64::from(d.subsec_nanos())).unwrap_or(1);
    let mut rng = ((u64::from(std::process::id()) << 20) ^ ((t as u64) << 8) ^ nanos) | 1;
    let backoff = |rng: &mut u64| std::thread::sleep(Duration::from_millis(20 + next(rng) % 80));
    let mode = Mode::of(chaos.masters.len(), chaos.cluster);
    let holder = format!("{}.{t}", std::process::id());
    let mut oracle = OracleClient::connect(&chaos.oracle);
    // A handle per thread: `take_lost` then speaks of this thread's permits only.
    let options = Options::with_masters(chaos.masters.clone(), &chaos.key)
        .cluster(chaos.cluster)
        .permits(chaos.permits)
        .lease(chaos.lease)
        .guard_fresh_server(true);
    let sem = loop {
        if stopped() {
            bump(&counts.finished);
            return;
        }
        match BlockingSemaphore::open(options.clone()) {
            Ok(sem) => break sem,
            Err(_) => {
                bump(&counts.errors);
                backoff(&mut rng);
            }
        }
    };
    while !stopped() {
        let since = SystemTime::now();
        let timeout = Duration::from_millis(50 + next(&mut rng) % 750);
        let permit = match sem.acquire_n(1, true, Some(timeout.as_secs_f64())) {
            Ok(permits) if permits.is_empty() => {
                bump(&counts.timeouts);
                continue;
            }
            Ok(permits) => permits[0],
            Err(_) => {
                bump(&counts.errors);
                backoff(&mut rng);
                continue;
            }
        };
        bump(&counts.acquired);
        let slot = oracle_slot(permit.token, mode);
        let mut verdict = oracle.enter(&holder, slot, permit.token, permit.ttl_ms, since);
        for _ in 0..1 + next(&mut rng) % 3 {
            if verdict != Verdict::Accepted {
                break;
            }
            if stopped() {
                park_holding(counts);
            }
            std::thread::sleep(Duration::from_millis(next(&mut rng) % 41));
            let lost = sem.take_lost().iter().any(|p| p.token == permit.token) || !sem.held().iter().any(|p| p.token == permit.token);
            if lost {
                bump(&counts.lost);
                break;
            }
            verdict = oracle.op(&holder, slot, permit.token);
            if verdict == Verdict::Accepted {
                bump(&counts.ops);
            }
        }
        tally_refusal(counts, verdict);
        oracle.leave(&holder);
        // Exactly this permit: `release(1)` would take another holder's when ours is lost. On
        // failure the handle stops refreshing it and releases it again in the background.
        if sem.release_permits(vec![permit.token]).is_err() {
            bump(&counts.errors);
            backoff(&mut rng);
        }
    }
    // The stop found this thread between permits: it takes one more to hold into the kill, so
    // that the test always has held permits whose recovery it can time. At most `permits`
    // threads get one; the others time out well inside the test's wait for the final line.
    let since = SystemTime::now();
    let last = sem.acquire_n(1, true, Some(LAST_ACQUIRE.as_secs_f64())).ok().and_then(|permits| permits.first().copied());
    if let Some(permit) = last {
        bump(&counts.acquired);
        let slot = oracle_slot(permit.token, mode);
        let verdict = oracle.enter(&holder, slot, permit.token, permit.ttl_ms, since);
        if verdict == Verdict::Accepted {
            park_holding(counts);
        }
        tally_refusal(counts, verdict);
        oracle.leave(&holder);
        let _ = sem.release_permits(vec![permit.token]);
    }
    bump(&counts.finished);
}

/// Counts an oracle refusal by its kind (an accepted use counts nothing here).
fn tally_refusal(counts: &Counts, verdict: Verdict) {
    match verdict {
        Verdict::Stale => bump(&counts.stale),
        Verdict::Expired => bump(&counts.expired),
        Verdict::Violation => bump(&counts.violations),
        Verdict::Accepted => {}
    }
}

/// How long a stopped thread that holds nothing waits for one last permit to hold into the kill.
const LAST_ACQUIRE: Duration = Duration::from_secs(2);

/// Keeps the permit and the oracle entry until SIGKILL.
fn park_holding(counts: &Counts) -> ! {
    bump(&counts.holding);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if arg(&args, 1) == "chaos" {
        return chaos(arg(&args, 2));
    }
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
            let lease_ms: u64 = args.get(6).map_or(10_000, |l| l.parse().expect("lease_ms"));
            let sem = open(url, key, permits, Duration::from_millis(lease_ms));
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
