//! What the semaphore costs, printed as one Markdown table; asserts nothing.
//!
//! `cargo bench -p pottery-semaphore-tests --bench semaphore`
//! (`BENCH_ITERS` = timed cycles per latency row, default 2000; `BENCH_SECONDS` = length of the
//! contended run, default 6; `BENCH_JSON=<path>` also writes every row, and the contended run's
//! wait samples, as JSON there for `bench/report.py`). Rows a–c are timed interleaved, in rounds,
//! so that drift of a shared machine's speed shows in all of them alike. Every semaphore is opened
//! with the fresh-server guard off, like the tests' (`Server::options`): the server is seconds
//! old, and the guard would grant nothing.

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use pottery_semaphore_host::BlockingSemaphore;
use pottery_semaphore_tests::{Flavor, Server, key, percentile, thread_cpu_ns};

const WARMUP: usize = 200;
const ROUNDS: usize = 10;
const WORKERS: usize = 8;
const CONTENDED_PERMITS: u32 = 2;
const HOLD: Duration = Duration::from_millis(10);
const TIMEOUT: Duration = Duration::from_millis(100);
const TIMEOUT_RUNS: usize = 20;
const WAKE_RUNS: usize = 50;
const IDLE: Duration = Duration::from_millis(10);
const IDLE_RUNS: usize = 100;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    Stats { mean, p50: percentile(&samples, 0.50), p99: percentile(&samples, 0.99) }
}

/// Times each op `iters` times, interleaved in `ROUNDS` rounds so that a machine whose speed
/// drifts (a shared VM) slows them all alike; returns each op's samples in the order taken, and
/// the CPU time this thread spent in each op's calls in all.
/// Each round starts with the next op, so none always runs right after the same other one
/// (whose threads may still be winding down on a 2-core machine).
fn measure_interleaved(iters: usize, ops: &mut [&mut dyn FnMut()]) -> (Vec<Vec<Duration>>, Vec<Duration>) {
    let mut samples = vec![Vec::with_capacity(iters); ops.len()];
    let mut cpu = vec![Duration::ZERO; ops.len()];
    for round in 0..ROUNDS {
        for k in 0..ops.len() {
            let i = (round + k) % ops.len();
            let cpu_start = thread_cpu_ns();
            for _ in 0..round_len(round, iters) {
                let t = Instant::now();
                ops[i]();
                samples[i].push(t.elapsed());
            }
            cpu[i] += Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu_start));
        }
    }
    (samples, cpu)
}

/// How many of `iters` samples round `round` takes.
fn round_len(round: usize, iters: usize) -> usize {
    iters / ROUNDS + usize::from(round < iters % ROUNDS)
}

/// One op's samples (from `measure_interleaved`), round by round.
fn by_round(samples: &[Duration], iters: usize) -> impl Iterator<Item = &[Duration]> {
    let mut rest = samples;
    (0..ROUNDS).map(move |round| {
        let (this, next) = rest.split_at(round_len(round, iters));
        rest = next;
        this
    })
}

/// Sums of consecutive pairs of single-call samples (timed back to back within a round): the
/// distribution of two calls in a row, for the JSON's cycle baseline (the table shows 2 × mean
/// and 2 × p50).
fn pair_sums(samples: &[Duration], iters: usize) -> Vec<Duration> {
    by_round(samples, iters).flat_map(|round| round.chunks_exact(2).map(|p| p[0] + p[1])).collect()
}

/// Mean of each round's samples, in round order.
fn round_means(samples: &[Duration], iters: usize) -> Vec<f64> {
    by_round(samples, iters).map(|round| round.iter().map(Duration::as_secs_f64).sum::<f64>() / round.len().max(1) as f64).collect()
}

/// `cycle`'s mean over 2 × `single`'s, round by round: how much of a ratio is the machine's
/// drift between rounds rather than the code (every round runs each op back to back).
fn round_ratios(cycle: &[Duration], single: &[Duration], iters: usize) -> Vec<f64> {
    round_means(cycle, iters).iter().zip(round_means(single, iters)).map(|(c, s)| c / (2.0 * s)).collect()
}

fn spread(ratios: &[f64]) -> String {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (low, high) = (sorted.first().copied().unwrap_or(0.0), sorted.last().copied().unwrap_or(0.0));
    format!("per round {low:.2}–{high:.2}×, median {:.2}×", sorted.get(sorted.len() / 2).copied().unwrap_or(0.0))
}

/// Warms `op` up with `WARMUP` calls; returns the server-side µs per script they took.
fn warm_up(server: &Server, op: &mut dyn FnMut()) -> f64 {
    op(); // the first call may load its scripts
    server.script_us_per_call();
    for _ in 0..WARMUP {
        op();
    }
    server.script_us_per_call()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) { format!("{:.1} µs", us(d)) } else { format!("{:.2} ms", d.as_secs_f64() * 1e3) }
}

fn fmt_stats(s: Stats) -> String {
    format!("mean {}, p50 {}, p99 {}", fmt(s.mean), fmt(s.p50), fmt(s.p99))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

/// a. EVALSHA of `return 1` on an async multiplexed connection of a current-thread runtime.
fn raw_evalsha(server: &Server) -> impl FnMut() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut conn = rt.block_on(server.client().get_multiplexed_async_connection()).expect("connection");
    let sha: String =
        rt.block_on(redis::cmd("SCRIPT").arg("LOAD").arg("return 1").query_async(&mut conn)).expect("SCRIPT LOAD");
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha.arg(sha).arg(0);
    move || {
        rt.block_on(evalsha.query_async::<i64>(&mut conn)).expect("EVALSHA");
    }
}

/// a'. The same EVALSHA spawned onto a 2-worker multi-thread runtime while the calling thread
/// waits, as `BlockingSemaphore` does where its calls cannot run on the caller's thread (several
/// masters, a Cluster): what the thread hand-offs alone cost.
fn raw_evalsha_handoff(server: &Server) -> impl FnMut() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let mut conn = rt.block_on(server.client().get_multiplexed_async_connection()).expect("connection");
    let sha: String =
        rt.block_on(redis::cmd("SCRIPT").arg("LOAD").arg("return 1").query_async(&mut conn)).expect("SCRIPT LOAD");
    move || {
        let (mut conn, sha) = (conn.clone(), sha.clone());
        let task = rt.spawn(async move { redis::cmd("EVALSHA").arg(sha).arg(0).query_async::<i64>(&mut conn).await });
        rt.block_on(task).expect("task").expect("EVALSHA");
    }
}

/// b. Uncontended acquire + release through the component.
fn component_cycle(server: &Server) -> impl FnMut() {
    let sem = BlockingSemaphore::open(server.options(&key("bench-component")).permits(1)).expect("open");
    move || {
        let granted = sem.acquire(true, None).expect("acquire");
        assert!(granted, "an uncontended acquire was not granted");
        sem.release(1).expect("release");
    }
}

/// c. The same cycle with the protocol compiled natively.
fn native_cycle(server: &Server) -> impl FnMut() {
    pottery_semaphore_tests::native::uncontended_cycle(&server.url(), key("bench-native"))
}

struct Contended {
    utilisation: f64,
    acquisitions: usize,
    /// Redis's own time per script (enqueues, releases that serve the next waiter, heartbeats).
    server_us: f64,
    wait: Stats,
    /// Every wait, in the order the workers' results were collected.
    waits: Vec<Duration>,
    /// From a holder calling `release()` to the next holder's `acquire()` returning: what a
    /// permit spends unused per grant, and so what utilisation loses.
    handoff: Stats,
    /// The run's length as measured (the last cycles end after `run`).
    wall: Duration,
}

/// The hand-off times: with FIFO service the k-th `release()` call serves the grant that
/// returns (`CONTENDED_PERMITS` + k)-th, the first grants being of permits nobody held (so a
/// slow first grant that returns after the first release still pairs right). `events`: (when,
/// true for a release call) of every worker.
fn handoffs(events: Vec<(Instant, bool)>) -> Vec<Duration> {
    let (mut released, mut granted): (Vec<_>, Vec<_>) = events.into_iter().partition(|(_, is_release)| *is_release);
    released.sort();
    granted.sort();
    let served = granted.iter().skip(CONTENDED_PERMITS as usize);
    released.iter().zip(served).filter_map(|((called, _), (got, _))| got.checked_duration_since(*called)).collect()
}

/// One worker's hold on a permit in the contended run.
trait Contender: Send + 'static {
    /// Blocks until this worker holds a permit.
    fn acquire(&mut self);
    fn release(&mut self);
}

impl Contender for BlockingSemaphore {
    fn acquire(&mut self) {
        assert!(BlockingSemaphore::acquire(self, true, None).expect("acquire"), "a blocking acquire without time-out returned false");
    }

    fn release(&mut self) {
        BlockingSemaphore::release(self, 1).expect("release");
    }
}

/// The contended run's floor on this machine: tokens in a bare Redis list, taken with `BLPOP`
/// and given back with `RPUSH`. Blocked clients are served in arrival order, so it queues too,
/// but it has no leases (a crashed holder keeps its token forever), no fencing and no atomic
/// `n`: not a semaphore, only the least a hand-off through Redis costs here (two commands and
/// a wake-up, no script, no client protocol code).
struct ListToken {
    conn: redis::Connection,
    list: String,
    token: Option<String>,
}

impl Contender for ListToken {
    fn acquire(&mut self) {
        let (_, token): (String, String) = redis::cmd("BLPOP").arg(&self.list).arg(0).query(&mut self.conn).expect("BLPOP");
        self.token = Some(token);
    }

    fn release(&mut self) {
        let token = self.token.take().expect("a token held");
        let _: () = redis::cmd("RPUSH").arg(&self.list).arg(token).query(&mut self.conn).expect("RPUSH");
    }
}

fn list_tokens(server: &Server) -> Vec<ListToken> {
    let list = key("bench-floor");
    let _: () = redis::cmd("RPUSH").arg(&list).arg((0..CONTENDED_PERMITS).collect::<Vec<_>>()).query(&mut server.connection()).expect("RPUSH");
    (0..WORKERS).map(|_| ListToken { conn: server.connection(), list: list.clone(), token: None }).collect()
}

fn semaphores(server: &Server) -> Vec<BlockingSemaphore> {
    let name = key("bench-contended");
    (0..WORKERS)
        .map(|_| BlockingSemaphore::open(server.options(&name).permits(i64::from(CONTENDED_PERMITS))).expect("open"))
        .collect()
}

/// d. `WORKERS` threads, each with its own contender, cycling acquire / hold / release on
/// `CONTENDED_PERMITS` permits for `run` wall time.
fn contended_run<C: Contender>(server: &Server, contenders: Vec<C>, run: Duration) -> Contended {
    let barrier = Arc::new(Barrier::new(WORKERS + 1));
    let results = Arc::new(Mutex::new((Duration::ZERO, Vec::new(), Vec::new())));
    let workers: Vec<_> = contenders
        .into_iter()
        .map(|mut contender| {
            let (barrier, results) = (barrier.clone(), results.clone());
            std::thread::spawn(move || {
                let mut held = Duration::ZERO;
                let mut waits = Vec::new();
                let mut events = Vec::new();
                barrier.wait();
                let deadline = Instant::now() + run;
                while Instant::now() < deadline {
                    let asked = Instant::now();
                    contender.acquire();
                    let got = Instant::now();
                    waits.push(got - asked);
                    std::thread::sleep(HOLD);
                    let releasing = Instant::now();
                    held += releasing - got;
                    events.extend([(got, false), (releasing, true)]);
                    contender.release();
                }
                let mut results = results.lock().expect("results");
                results.0 += held;
                results.1.extend(waits);
                results.2.extend(events);
            })
        })
        .collect();
    server.script_us_per_call();
    barrier.wait();
    let started = Instant::now();
    for w in workers {
        w.join().expect("worker");
    }
    let wall = started.elapsed();
    let server_us = server.script_us_per_call();
    let (held, waits, events) = std::mem::take(&mut *results.lock().expect("results"));
    Contended {
        utilisation: held.as_secs_f64() / (f64::from(CONTENDED_PERMITS) * wall.as_secs_f64()) * 100.0,
        acquisitions: waits.len(),
        server_us,
        wait: stats(waits.clone()),
        waits,
        handoff: stats(handoffs(events)),
        wall,
    }
}

/// e. acquire with a `TIMEOUT` on a permit another handle holds: how long past the time-out it returns.
fn timeout_overshoot(server: &Server) -> (Duration, Duration) {
    let name = key("bench-timeout");
    let holder = BlockingSemaphore::open(server.options(&name).permits(1)).expect("open");
    let waiter = BlockingSemaphore::open(server.options(&name).permits(1)).expect("open");
    assert!(holder.acquire(false, None).expect("acquire"), "the only permit was not free");
    let overshoots: Vec<Duration> = (0..TIMEOUT_RUNS)
        .map(|_| {
            let t = Instant::now();
            let granted = waiter.acquire(true, Some(TIMEOUT)).expect("acquire");
            let elapsed = t.elapsed();
            assert!(!granted, "acquired a permit that another handle holds");
            elapsed.saturating_sub(TIMEOUT)
        })
        .collect();
    holder.release(1).expect("release");
    let mean = overshoots.iter().sum::<Duration>() / TIMEOUT_RUNS as u32;
    (mean, overshoots.into_iter().max().unwrap_or_default())
}

/// g. Each op once after `IDLE` asleep, `IDLE_RUNS` times, taking turns: how a semaphore that
/// guards occasional work sees it. After the sleep the caches are cold, so what a call costs
/// grows with the code and data it touches (wasmtime, the guest and the host for the component).
/// Returns each op's mean.
fn after_idle(ops: &mut [&mut dyn FnMut()]) -> Vec<Duration> {
    let mut total = vec![Duration::ZERO; ops.len()];
    for run in 0..IDLE_RUNS {
        for k in 0..ops.len() {
            let i = (run + k) % ops.len();
            std::thread::sleep(IDLE);
            let t = Instant::now();
            ops[i]();
            total[i] += t.elapsed();
        }
    }
    total.into_iter().map(|t| t / IDLE_RUNS as u32).collect()
}

/// f. From calling `release()` in one thread to a blocked `acquire()` returning in another: the
/// release's round trip, the push and the waiter's wake-up. (Measured from `release()` returning,
/// it came out as 0 more often than not: the woken waiter often returns first.)
fn wake_latency(server: &Server) -> Stats {
    let name = key("bench-wake");
    let releaser = BlockingSemaphore::open(server.options(&name).permits(1)).expect("open");
    let waiter = BlockingSemaphore::open(server.options(&name).permits(1)).expect("open");
    let samples = (0..WAKE_RUNS)
        .map(|_| {
            assert!(releaser.acquire(true, None).expect("acquire"), "the releaser got no permit");
            std::thread::scope(|s| {
                let blocked = s.spawn(|| {
                    assert!(waiter.acquire(true, None).expect("acquire"), "the waiter got no permit");
                    let woke = Instant::now();
                    waiter.release(1).expect("release");
                    woke
                });
                // Release only once the waiter is queued in Redis.
                while releaser.status().expect("status").waiters.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let released = Instant::now();
                releaser.release(1).expect("release");
                blocked.join().expect("waiter").saturating_duration_since(released)
            })
        })
        .collect();
    stats(samples)
}

fn main() {
    let iters: usize = env_or("BENCH_ITERS", 2000);
    let seconds: f64 = env_or("BENCH_SECONDS", 6.0);
    let server = Server::start(Flavor::Redis);
    eprintln!(
        "redis-server on {}; {iters} timed cycles after {WARMUP} warm-up; contended run {seconds} s",
        server.url()
    );

    let (mut raw, mut handoff) = (raw_evalsha(&server), raw_evalsha_handoff(&server));
    let (mut component, mut native) = (component_cycle(&server), native_cycle(&server));
    let raw_server_us = warm_up(&server, &mut raw);
    warm_up(&server, &mut handoff);
    let component_server_us = warm_up(&server, &mut component);
    let native_server_us = warm_up(&server, &mut native);
    let (samples, cpu) = measure_interleaved(iters, &mut [&mut raw, &mut handoff, &mut component, &mut native]);
    let mut raw_pair = || {
        raw();
        raw();
    };
    let [idle_raw_pair, idle_component, idle_native] = after_idle(&mut [&mut raw_pair, &mut component, &mut native])[..]
    else {
        unreachable!("one mean per op")
    };
    let idle_overhead_us = (us(idle_component) - us(idle_native)) / 2.0;
    let cpu_per_call_us = |op: usize| us(cpu[op]) / (2 * iters.max(1)) as f64;
    let cpu_overhead_us = cpu_per_call_us(2) - cpu_per_call_us(3);
    let raw_pairs = stats(pair_sums(&samples[0], iters));
    let component_rounds = round_ratios(&samples[2], &samples[0], iters);
    let native_rounds = round_ratios(&samples[3], &samples[0], iters);
    let [raw, handoff, component, native] = samples.into_iter().map(stats).collect::<Vec<_>>()[..] else {
        unreachable!("one Stats per op")
    };
    let contended = contended_run(&server, semaphores(&server), Duration::from_secs_f64(seconds));
    let floor = contended_run(&server, list_tokens(&server), Duration::from_secs_f64(seconds));
    let (overshoot_mean, overshoot_max) = timeout_overshoot(&server);
    let wake = wake_latency(&server);

    let baseline = raw.mean * 2;
    let ratio = component.mean.as_secs_f64() / baseline.as_secs_f64();
    let ratio_p50 = component.p50.as_secs_f64() / (raw.p50 * 2).as_secs_f64();
    let native_ratio = native.mean.as_secs_f64() / baseline.as_secs_f64();
    let overhead_us = (us(component.mean) - us(native.mean)) / 2.0;
    let overhead_p50_us = (us(component.p50) - us(native.p50)) / 2.0;

    let rows: Vec<[String; 4]> = vec![
        [
            "a. raw EVALSHA (`return 1`), per call".into(),
            format!("{}; server {raw_server_us:.1} µs/call", fmt_stats(raw)),
            "—".into(),
            "—".into(),
        ],
        [
            "a. raw EVALSHA, spawned on a 2-worker runtime, caller blocked (hand-off cost)".into(),
            fmt_stats(handoff),
            "—".into(),
            "—".into(),
        ],
        [
            "a. 2 × raw EVALSHA (cycle baseline)".into(),
            format!("mean {}, p50 {}", fmt(baseline), fmt(raw.p50 * 2)),
            "—".into(),
            "—".into(),
        ],
        [
            "b. component acquire+release cycle".into(),
            format!(
                "{}; {ratio:.2}× baseline (p50 {ratio_p50:.2}×; {}); server {component_server_us:.1} µs/script",
                fmt_stats(component),
                spread(&component_rounds)
            ),
            "≤ 1.3× (mean)".into(),
            verdict(ratio <= 1.3).into(),
        ],
        [
            "c. native protocol acquire+release cycle".into(),
            format!(
                "{}; {native_ratio:.2}× baseline ({}); server {native_server_us:.1} µs/script",
                fmt_stats(native),
                spread(&native_rounds)
            ),
            "—".into(),
            "—".into(),
        ],
        [
            "c. component overhead per call, (b − c)/2".into(),
            format!("{overhead_us:.1} µs (mean), {overhead_p50_us:.1} µs (p50)"),
            "≤ 10 µs (mean)".into(),
            verdict(overhead_us <= 10.0).into(),
        ],
        [
            "c. the same in the caller's CPU time (no waits for Redis)".into(),
            format!("{cpu_overhead_us:.1} µs"),
            "— (report only)".into(),
            "—".into(),
        ],
        [
            format!("d. contended utilisation ({WORKERS} threads, {CONTENDED_PERMITS} permits, hold {HOLD:?})"),
            format!(
                "{:.1} %, {} acquisitions in {seconds} s; server {:.1} µs/script",
                contended.utilisation, contended.acquisitions, contended.server_us
            ),
            "≥ 95 %".into(),
            verdict(contended.utilisation >= 95.0).into(),
        ],
        [
            "d. contended wait (acquire call → true)".into(),
            format!("p50 {}, p99 {}", fmt(contended.wait.p50), fmt(contended.wait.p99)),
            "p99 ≤ 50 ms".into(),
            verdict(contended.wait.p99 <= Duration::from_millis(50)).into(),
        ],
        [
            "d. hand-off (release() called → the next holder's acquire() returns)".into(),
            fmt_stats(contended.handoff),
            "— (report only)".into(),
            "—".into(),
        ],
        [
            "d. floor: the same run on a bare Redis list (BLPOP/RPUSH tokens: no leases, fencing or script)".into(),
            format!(
                "{:.1} %, {} acquisitions; hand-off {}; wait p99 {}",
                floor.utilisation,
                floor.acquisitions,
                fmt_stats(floor.handoff),
                fmt(floor.wait.p99)
            ),
            "— (baseline)".into(),
            "—".into(),
        ],
        [
            format!("e. time-out overshoot ({TIMEOUT_RUNS} × {TIMEOUT:?})"),
            format!("mean {}, max {}", fmt(overshoot_mean), fmt(overshoot_max)),
            "— (report only)".into(),
            "—".into(),
        ],
        [
            format!("f. wake-up latency ({WAKE_RUNS} runs, release() called → acquire() returns)"),
            format!("p50 {}, p99 {}", fmt(wake.p50), fmt(wake.p99)),
            "— (report only)".into(),
            "—".into(),
        ],
        [
            format!("g. cycles of b, c and a (2 × raw) after {IDLE:?} idle each, {IDLE_RUNS} runs"),
            format!(
                "mean component {} ({:.2}×), native {} ({:.2}×), 2 × raw {}; component overhead {idle_overhead_us:.1} µs per call",
                fmt(idle_component),
                idle_component.as_secs_f64() / idle_raw_pair.as_secs_f64(),
                fmt(idle_native),
                idle_native.as_secs_f64() / idle_raw_pair.as_secs_f64(),
                fmt(idle_raw_pair)
            ),
            "— (report only)".into(),
            "—".into(),
        ],
    ];

    println!();
    println!("| Measurement | Result | Target | Verdict |");
    println!("|---|---|---|---|");
    for [what, result, target, verdict] in &rows {
        println!("| {what} | {result} | {target} | {verdict} |");
    }

    if let Some(path) = std::env::var_os("BENCH_JSON").map(std::path::PathBuf::from) {
        let name =
            |prefix: &str| rows.iter().map(|r| &r[0]).find(|n| n.starts_with(prefix)).cloned().unwrap_or_default();
        let cycle = |name: String, implementation: &str, s: Stats, server_us: Option<f64>, extra: Value| {
            let mut row = json!({
                "name": name,
                "implementation": implementation,
                "client": "Rust",
                "scenario": "uncontended cycle",
                "mean_us": us(s.mean),
                "p50_us": us(s.p50),
                "p99_us": us(s.p99),
                "samples": iters,
                "server_us_per_script": server_us,
            });
            row.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
            row
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let json_rows = vec![
            json!({
                "name": name("a. raw EVALSHA (`return 1`)"),
                "implementation": "raw EVALSHA",
                "client": "Rust (redis-rs, current-thread runtime)",
                "scenario": "single call",
                "mean_us": us(raw.mean), "p50_us": us(raw.p50), "p99_us": us(raw.p99),
                "samples": iters,
                "server_us_per_script": raw_server_us,
            }),
            json!({
                "name": name("a. raw EVALSHA, spawned"),
                "implementation": "raw EVALSHA (hand-off)",
                "client": "Rust (redis-rs, 2-worker runtime)",
                "scenario": "single call",
                "mean_us": us(handoff.mean), "p50_us": us(handoff.p50), "p99_us": us(handoff.p99),
                "samples": iters,
            }),
            cycle(
                name("a. 2 × raw EVALSHA"),
                "raw EVALSHA",
                raw_pairs,
                Some(raw_server_us),
                json!({
                    "client": "Rust (redis-rs, current-thread runtime)",
                    "samples": iters / 2,
                    "note": "2 × EVALSHA `return 1`; p50/p99 from sums of consecutive pairs of the single calls",
                }),
            ),
            cycle(
                name("b. component"),
                "Rust host (component)",
                component,
                Some(component_server_us),
                json!({
                    "client": "Rust (BlockingSemaphore)",
                    "ratio_to_baseline": ratio,
                    "ratio_per_round": component_rounds,
                    "cpu_us_per_call": cpu_per_call_us(2),
                    "note": format!(
                        "÷ raw EVALSHA ×2 in each of the {ROUNDS} interleaved rounds: {}; the caller's CPU time {:.1} µs per call, {cpu_overhead_us:.1} µs over native",
                        spread(&component_rounds),
                        cpu_per_call_us(2)
                    ),
                }),
            ),
            cycle(
                name("c. native protocol acquire"),
                "native protocol",
                native,
                Some(native_server_us),
                json!({
                    "client": "Rust (core compiled natively)",
                    "ratio_to_baseline": native_ratio,
                    "ratio_per_round": native_rounds,
                    "cpu_us_per_call": cpu_per_call_us(3),
                    "note": format!(
                        "÷ raw EVALSHA ×2 in each of the {ROUNDS} interleaved rounds: {}; the caller's CPU time {:.1} µs per call",
                        spread(&native_rounds),
                        cpu_per_call_us(3)
                    ),
                }),
            ),
            contended_row(name("d. contended utilisation"), "Rust host (component)", "Rust (BlockingSemaphore)", &contended, seconds),
            contended_row(name("d. floor"), "bare Redis list", "Rust (redis-rs)", &floor, seconds),
            json!({
                "name": name("e. time-out overshoot"),
                "implementation": "Rust host (component)",
                "client": "Rust (BlockingSemaphore)",
                "scenario": "time-out overshoot",
                "timeout_ms": ms(TIMEOUT),
                "runs": TIMEOUT_RUNS,
                "mean_ms": ms(overshoot_mean),
                "max_ms": ms(overshoot_max),
            }),
            json!({
                "name": name("g. cycles of b, c and a"),
                "implementation": "Rust host (component)",
                "client": "Rust (BlockingSemaphore; native protocol; redis-rs)",
                "scenario": "cycle after idle",
                "idle_ms": ms(IDLE),
                "runs": IDLE_RUNS,
                "component_mean_us": us(idle_component),
                "native_mean_us": us(idle_native),
                "raw_pair_mean_us": us(idle_raw_pair),
                "overhead_per_call_us": idle_overhead_us,
            }),
            json!({
                "name": name("f. wake-up latency"),
                "implementation": "Rust host (component)",
                "client": "Rust (BlockingSemaphore)",
                "scenario": "wake-up latency",
                "runs": WAKE_RUNS,
                "mean_us": us(wake.mean), "p50_us": us(wake.p50), "p99_us": us(wake.p99),
            }),
        ];
        let doc = json!({
            "benchmark": "tests/benches/semaphore.rs",
            "iters": iters,
            "warmup": WARMUP,
            "redis_server": server_version(&server),
            "rows": json_rows,
        });
        let text = serde_json::to_string_pretty(&doc).expect("JSON");
        std::fs::write(&path, text + "\n").unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
    }
}

/// A contended run as a JSON row of scenario "contended" (see `bench/report.py`).
fn contended_row(name: String, implementation: &str, client: &str, run: &Contended, seconds: f64) -> Value {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    json!({
        "name": name,
        "implementation": implementation,
        "client": client,
        "scenario": "contended",
        "workers": WORKERS,
        "worker_kind": "threads",
        "permits": CONTENDED_PERMITS,
        "hold_ms": ms(HOLD),
        "seconds": seconds,
        "utilisation_pct": run.utilisation,
        "server_us_per_script": run.server_us,
        "grants": run.acquisitions,
        "wait_p50_ms": ms(run.wait.p50),
        "wait_p99_ms": ms(run.wait.p99),
        "wait_mean_ms": ms(run.wait.mean),
        "wait_samples_ms": run.waits.iter().map(|&d| ms(d)).collect::<Vec<_>>(),
        "wall_seconds": run.wall.as_secs_f64(),
        "handoff_mean_us": us(run.handoff.mean),
        "handoff_p50_us": us(run.handoff.p50),
        "handoff_p99_us": us(run.handoff.p99),
    })
}

/// `redis_version` from `INFO server`.
fn server_version(server: &Server) -> String {
    let info: String = redis::cmd("INFO").arg("server").query(&mut server.connection()).unwrap_or_default();
    info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string()
}
