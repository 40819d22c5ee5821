//! Fault injection (#5): worker processes do random acquire/hold/release on real Redis servers
//! while the test SIGKILLs and SIGSTOPs holders, restarts a server with and without
//! persistence, freezes a master for longer than the lease and cuts one off the network. An
//! independent oracle ([`pottery_semaphore_tests::oracle`]) judges every grant. Zero violations,
//! at most `PERMITS` accepted holders at once and every permit back within the lease after the
//! holders crash is the only passing result.
//!
//! Table-driven over a [`Deployment`]: one server runs today; several masters and a cluster run
//! once those modes exist. Redis only: Valkey would double the minutes for the same protocol
//! paths, which the other suites already run on both.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pottery_semaphore_host::{BlockingSemaphore, Options};
use pottery_semaphore_tests::oracle::{oracle_slot, Mode, Oracle, OracleClient, Stats};
use pottery_semaphore_tests::cluster::{owner_of, Cluster};
use pottery_semaphore_tests::proxy::Proxy;
use pottery_semaphore_tests::{key, signal, Flavor, Server};
use serde_json::Value;

const PERMITS: u64 = 3;
/// Short, so that faults "longer than the lease" and the fresh-server quarantine stay short.
const LEASE: Duration = Duration::from_millis(1500);
const WORKERS: usize = 5;
const THREADS: usize = 2;
/// How long the freezes, which must outlast a lease, last.
const OVER_LEASE: Duration = Duration::from_millis(2500);
/// How long the network cut lasts: beyond the lease and beyond the host's 5 s response time-out
/// too, so that clients meet their time-outs (a frozen master, shorter, is waited out instead).
const CUT: Duration = Duration::from_secs(6);
/// Margin over the lease for the permits of crashed holders to come back: scheduling on a
/// loaded 2-core machine and the recovering client's own round trips.
const RECOVERY_SLACK: Duration = Duration::from_millis(1500);

/// Each run starts a dozen processes: two at once would only slow both down on CI.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deployment {
    Single,
    /// Independent masters (Redlock slots).
    Masters(usize),
    /// One Redis Cluster of this many masters.
    Cluster(usize),
}

impl Deployment {
    fn describe(self) -> String {
        match self {
            Deployment::Single => "one server".into(),
            Deployment::Masters(n) => format!("{n} independent masters"),
            Deployment::Cluster(n) => format!("a {n}-node cluster"),
        }
    }
}

/// The servers of a deployment, each behind a proxy the test can cut. Clients see only the
/// proxies; faults act on the servers and proxies directly.
#[derive(Debug)]
struct Servers {
    servers: Vec<Server>,
    proxies: Vec<Proxy>,
    cluster: bool,
}

impl Servers {
    fn urls(&self) -> Vec<String> {
        self.proxies.iter().map(Proxy::url).collect()
    }

    fn mode(&self) -> Mode {
        Mode::of(self.servers.len(), self.cluster)
    }
}

fn start(deployment: Deployment) -> Servers {
    match deployment {
        Deployment::Single => start_masters(1),
        Deployment::Masters(n) => start_masters(n),
        Deployment::Cluster(n) => start_cluster(n),
    }
}

/// Every server saves each write before answering; a restart "without persistence" deletes its
/// files first ([`Server::restart_wiped`]), so one server can suffer both kinds of restart.
fn start_masters(n: usize) -> Servers {
    let servers: Vec<Server> = (0..n).map(|_| Server::start_persistent(Flavor::Redis)).collect();
    let proxies = servers.iter().map(|s| Proxy::start(s.port)).collect();
    Servers { servers, proxies, cluster: false }
}

/// Three primaries with persistence, each behind a [`Proxy`] it announces
/// ([`Cluster::start_behind_proxies`]). A "restart without persistence" keeps the node's
/// `nodes.conf` ([`Server::restart_wiped`]). The semaphore lives on the node of its slot, so
/// faults of the other nodes must not disturb it and faults of that node are its own.
fn start_cluster(nodes: usize) -> Servers {
    let Cluster { nodes: servers, proxies, .. } =
        Cluster::start_behind_proxies(Flavor::Redis, nodes, &["--appendonly", "yes", "--appendfsync", "always"]);
    Servers { servers, proxies, cluster: true }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// SIGKILL of a worker process caught holding a permit, replaced by a new one.
    KillHolder,
    /// SIGSTOP of a worker process caught holding a permit, for longer than the lease, then SIGCONT.
    StopHolder,
    RestartPersistent,
    RestartWiped,
    /// SIGSTOP of a Redis server for longer than the lease, then SIGCONT.
    StopMaster,
    /// The proxy to one server blackholes everything for longer than the lease.
    CutMaster,
}

impl Fault {
    /// A fault of a Redis server (or of the way to it), not of a worker.
    fn on_a_server(self) -> bool {
        !matches!(self, Fault::KillHolder | Fault::StopHolder)
    }
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::KillHolder => "SIGKILL of a worker (respawned)",
            Fault::StopHolder => "SIGSTOP of a worker > lease, SIGCONT",
            Fault::RestartPersistent => "restart of a server with persistence",
            Fault::RestartWiped => "restart of a server without persistence",
            Fault::StopMaster => "SIGSTOP of a master > lease, SIGCONT",
            Fault::CutMaster => "network cut of a master > lease, time-out",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Step {
    /// From the workers' start.
    at: Duration,
    fault: Fault,
    /// A worker index for holder faults, a server index for the others.
    target: usize,
    /// How long a freeze or cut lasts.
    hold: Duration,
    /// The quiet time after it, in which the survivors must get grants again.
    gap: Duration,
}

/// One fault at a time, each followed by a gap in which grants must resume; returns the steps
/// and the length of the whole run. Server faults go to different servers where there are
/// several (one down at a time leaves a majority), all to the one server otherwise.
///
/// Faults that can leave dead waiters queued (a killed worker, a restart that keeps the queue
/// while its waiters' connections broke) get two leases and a second: such a waiter keeps its
/// place until its heartbeat lapses (3 s, or the lease if shorter: here the lease), and a permit
/// handed to it meanwhile stays taken until its lease ends or 3 s pass with its push untaken
/// (here the lease again). The wiped restart gets its lease of quarantine and a lease to grant.
fn schedule(servers: usize, cluster: bool) -> (Vec<Step>, Duration) {
    let ghosts = LEASE * 2 + Duration::from_secs(1);
    // A restarted cluster primary refuses commands for its first 2 s (Redis' writable delay,
    // "CLUSTERDOWN"), on top of the quarantine after a wipe.
    let rejoin = if cluster { Duration::from_secs(2) } else { Duration::ZERO };
    let steps = [
        (Fault::KillHolder, 0, Duration::ZERO, ghosts),
        (Fault::StopHolder, 1, OVER_LEASE, Duration::from_secs(2)),
        (Fault::RestartPersistent, 0, Duration::ZERO, ghosts + rejoin),
        (Fault::RestartWiped, 1 % servers, Duration::ZERO, LEASE * 2 + rejoin),
        (Fault::StopMaster, 2 % servers, OVER_LEASE, Duration::from_secs(3)),
        (Fault::CutMaster, 3 % servers, CUT, ghosts),
    ];
    let mut at = Duration::from_secs(1);
    let steps = steps
        .into_iter()
        .map(|(fault, target, hold, gap)| {
            let step = Step { at, fault, target, hold, gap };
            at += hold + gap;
            step
        })
        .collect();
    (steps, at)
}

/// Stops (SIGSTOP) a worker that holds a permit, trying them in turn from `first`: one is
/// stopped, and kept so if the oracle still shows it holding once stopped (a holder leaves the
/// oracle before it releases, so it held the permit when stopped); else it is let go on and the
/// next is tried. Returns its index. A fault aimed at a worker that happened to hold nothing
/// would test nothing: fails if none is caught holding within 10 s.
fn stop_a_holder(workers: &[Worker], oracle: &Oracle, first: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in (0..workers.len()).cycle().skip(first) {
        let pid = workers[i].child.id();
        signal(pid, "STOP");
        if oracle.live_holders().iter().any(|h| h.starts_with(&format!("{pid}."))) {
            return i;
        }
        signal(pid, "CONT");
        assert!(Instant::now() < deadline, "no worker was caught holding a permit");
        std::thread::sleep(Duration::from_millis(5));
    }
    unreachable!("the cycle is endless")
}

/// A chaos worker process and the last counts it printed.
#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    last: Arc<Mutex<Option<Value>>>,
}

impl Worker {
    fn spawn(config: &str) -> Worker {
        let mut child = Command::new(pottery_semaphore_tests::built_binary("worker")).args(["chaos", config]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("worker");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let last = Arc::new(Mutex::new(None));
        let l = last.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    *l.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                }
            }
        });
        Worker { child, stdin, last }
    }

    fn last(&self) -> Option<Value> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_final(&self) -> bool {
        self.last().is_some_and(|v| v["final"] == true)
    }

    fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sums a counter over the workers' last reports.
fn total(reports: &[Value], field: &str) -> u64 {
    reports.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum()
}

#[derive(Debug)]
struct Record {
    step: Step,
    /// When the fault began and how long it lasted.
    began: Duration,
    lasted: Duration,
    /// Grants the oracle accepted while the fault lasted: none through a cut or a frozen single
    /// server; with several masters a majority should keep granting.
    grants_during: u64,
    /// Grants the oracle accepted between the end of this fault and the next one.
    grants_after: u64,
}

/// Takes every permit from a fresh handle, non-blocking in a loop, each entered in the oracle
/// (so a grant while a crashed holder's entry lives would be a violation). Returns how many it
/// got before `deadline`.
fn recover(servers: &Servers, key: &str, oracle: &Oracle, deadline: Instant) -> usize {
    let options = Options::with_masters(servers.urls(), key).cluster(servers.cluster).permits(PERMITS as i64).lease(LEASE);
    let mut client = OracleClient::connect(&oracle.url());
    let sem = loop {
        match BlockingSemaphore::open(options.clone()) {
            Ok(sem) => break sem,
            Err(e) if Instant::now() < deadline => {
                eprintln!("recovery: open failed ({e}), retrying");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("recovery: cannot open the semaphore: {e}"),
        }
    };
    let mut tokens = Vec::new();
    while (tokens.len() as u64) < PERMITS && Instant::now() < deadline {
        let since = SystemTime::now();
        match sem.acquire_n(1, false, None) {
            Ok(permits) if !permits.is_empty() => {
                let p = permits[0];
                // A violation here is counted by the oracle and fails the test after the summary.
                client.enter(&format!("recovery.{}", tokens.len()), oracle_slot(p.token, servers.mode()), p.token, p.ttl_ms, since);
                tokens.push(p.token);
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                eprintln!("recovery: acquire failed ({e})");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    for i in 0..tokens.len() {
        client.leave(&format!("recovery.{i}"));
    }
    let _ = sem.release_permits(tokens.clone());
    tokens.len()
}

fn sleep_until(at: Instant) {
    if let Some(left) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

fn run(deployment: Deployment) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let began = Instant::now();
    let mut servers = start(deployment);
    let oracle = Oracle::start(PERMITS);
    let k = key("faults");
    let (mut steps, run) = schedule(servers.servers.len(), servers.cluster);
    if servers.cluster {
        // The server faults go to the node that holds the semaphore, its slot's primary: the
        // schedule's spread over nodes would leave most of them to nodes it does not use.
        let meta = pottery_semaphore_core::keys::Keys::new(&k).meta();
        let slot = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&meta).query(&mut servers.servers[0].connection()).expect("CLUSTER KEYSLOT");
        let owner = owner_of(&servers.servers, &servers.proxies, slot);
        for step in steps.iter_mut().filter(|s| s.fault.on_a_server()) {
            step.target = owner;
        }
    }
    let config = serde_json::json!({
        "masters": servers.urls(), "cluster": servers.cluster, "key": k, "permits": PERMITS,
        "lease_ms": LEASE.as_millis() as u64, "oracle": oracle.url(),
        // A cap for workers the test fails to stop; it stops them when the schedule ends.
        "duration_ms": (run + Duration::from_secs(30)).as_millis() as u64, "threads": THREADS,
    })
    .to_string();
    let mut workers: Vec<Worker> = (0..WORKERS).map(|_| Worker::spawn(&config)).collect();
    let mut killed_reports = Vec::new();
    let mut last_wipe: Option<Instant> = None;
    let t0 = Instant::now();
    let mut records: Vec<Record> = Vec::new();
    let mut grants_mark = 0;

    for step in steps {
        sleep_until(t0 + step.at);
        let grants = oracle.stats().accepted_enters;
        if let Some(prev) = records.last_mut() {
            prev.grants_after = grants - grants_mark;
        }
        let start = Instant::now();
        match step.fault {
            Fault::KillHolder => {
                let holder = stop_a_holder(&workers, &oracle, step.target);
                let w = &mut workers[holder];
                w.kill();
                killed_reports.extend(w.last());
                *w = Worker::spawn(&config);
            }
            Fault::StopHolder => {
                let pid = workers[stop_a_holder(&workers, &oracle, step.target)].child.id();
                std::thread::sleep(step.hold);
                signal(pid, "CONT");
            }
            Fault::RestartPersistent => servers.servers[step.target].restart(),
            Fault::RestartWiped => {
                servers.servers[step.target].restart_wiped();
                last_wipe = Some(Instant::now());
            }
            Fault::StopMaster => {
                servers.servers[step.target].pause();
                std::thread::sleep(step.hold);
                servers.servers[step.target].resume();
            }
            Fault::CutMaster => {
                servers.proxies[step.target].cut();
                std::thread::sleep(step.hold);
                servers.proxies[step.target].restore();
            }
        }
        grants_mark = oracle.stats().accepted_enters;
        records.push(Record { step, began: start - t0, lasted: start.elapsed(), grants_during: grants_mark - grants, grants_after: 0 });
    }
    sleep_until(t0 + run);
    if let Some(prev) = records.last_mut() {
        prev.grants_after = oracle.stats().accepted_enters - grants_mark;
    }

    // Stop: threads finish their acquire; those holding keep their permits and say so, those
    // between permits try once more for one to keep (up to 2 s). Then every worker is
    // SIGKILLed, holders included: their permits must come back within the lease.
    for w in &mut workers {
        w.stop();
    }
    let stop_deadline = Instant::now() + Duration::from_secs(8);
    while !workers.iter().all(Worker::is_final) && Instant::now() < stop_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let unresponsive = workers.iter().filter(|w| !w.is_final()).count();
    for w in &mut workers {
        w.kill();
    }
    let killed_at = Instant::now();
    let held_at_kill = total(&workers.iter().filter_map(Worker::last).collect::<Vec<_>>(), "holding");
    let reports: Vec<Value> = workers.iter().filter_map(Worker::last).chain(killed_reports).collect();

    // Leases of the killed holders end at most a lease after their last refresh, before the
    // kill. A restart without persistence also quarantines the semaphore for a lease from when
    // a client first finds it gone (or, for a newcomer that creates it, from the server's
    // start): had the last such restart been recent, its quarantine would bound the recovery
    // instead. The schedule keeps it well over a lease before the kill: the kill's bound applies.
    let recovery_from = last_wipe.map_or(killed_at, |w| w.max(killed_at));
    let bound = recovery_from + LEASE + RECOVERY_SLACK - killed_at;
    let recovered = recover(&servers, &k, &oracle, killed_at + bound);
    let took = killed_at.elapsed();

    let stats = oracle.stats();
    print_summary(deployment, servers.mode(), run, &records, &reports, &stats, held_at_kill, unresponsive, recovered, took, bound, began.elapsed());

    assert_eq!(stats.violations, 0, "the oracle saw more than {PERMITS} holders:\n{}", stats.details.join("\n"));
    assert!(stats.max_concurrent <= PERMITS, "max concurrent accepted holders {} > {PERMITS}", stats.max_concurrent);
    assert_eq!(total(&reports, "violations"), 0);
    // Parked holders keep permits until the kill, and a thread the stop finds between permits
    // takes one more to park with: with none held, the recovery would have nothing to recover
    // and its check would pass whatever the leases do.
    assert!(held_at_kill > 0, "the workers held no permit at the kill");
    assert_eq!(recovered as u64, PERMITS, "only {recovered}/{PERMITS} permits back within {bound:?} of the kill");
    for r in &records {
        let (fault, target, gap) = (r.step.fault.describe(), r.step.target, r.step.gap);
        assert!(r.grants_after > 0, "no grant within {gap:?} after {fault} (target {target}): the semaphore did not recover");
    }
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    deployment: Deployment,
    mode: Mode,
    run: Duration,
    records: &[Record],
    reports: &[Value],
    stats: &Stats,
    held_at_kill: u64,
    unresponsive: usize,
    recovered: usize,
    took: Duration,
    bound: Duration,
    elapsed: Duration,
) {
    let ms = |d: Duration| d.as_millis();
    println!();
    println!(
        "== faults on {}: {PERMITS} permits, lease {} ms, {WORKERS} workers x {THREADS} threads, run {:.1} s, total {:.1} s ==",
        deployment.describe(),
        ms(LEASE),
        run.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("{:<42} {:>6} {:>8} {:>8} {:>13} {:>12}", "fault", "target", "at ms", "took ms", "grants during", "grants after");
    for r in records {
        let (fault, target, at, took) = (r.step.fault.describe(), r.step.target, ms(r.began), ms(r.lasted));
        println!("{fault:<42} {target:>6} {at:>8} {took:>8} {:>13} {:>12}", r.grants_during, r.grants_after);
    }
    let mut by_kind: BTreeMap<Fault, usize> = BTreeMap::new();
    for r in records {
        *by_kind.entry(r.step.fault).or_default() += 1;
    }
    let kinds: Vec<String> = by_kind.iter().map(|(f, n)| format!("{n} {}", f.describe())).collect();
    println!("operations done           : {} ops accepted of {} attempted; {} grants entered of {}", stats.accepted_ops, stats.ops, stats.accepted_enters, stats.enters);
    println!(
        "workers                   : {} acquired, {} time-outs, {} errors, {} permits found lost before use, {} not stopping in time",
        total(reports, "acquired"),
        total(reports, "timeouts"),
        total(reports, "errors"),
        total(reports, "lost"),
        unresponsive
    );
    println!("faults injected           : {} ({})", records.len(), kinds.join(", "));
    println!("max concurrent holders    : {} (permits {PERMITS})", stats.max_concurrent);
    let per_token = if mode == Mode::MultiMaster { "" } else { " (each token is its own slot here: only a replay could be stale)" };
    println!("stale tokens rejected     : {}{per_token}", stats.stale_rejected);
    println!("expired leases rejected   : {}", stats.expired_rejected);
    println!("permits recovered         : {recovered}/{PERMITS} within {} ms of SIGKILL of every worker ({held_at_kill} held), bound {} ms", ms(took), ms(bound));
    println!("violations                : {}", stats.violations);
    for d in stats.details.iter().take(10) {
        println!("  {d}");
    }
}

#[test]
fn faults_on_one_server() {
    run(Deployment::Single);
}

#[test]
fn faults_on_three_masters() {
    run(Deployment::Masters(3));
}

#[test]
fn faults_on_five_masters() {
    run(Deployment::Masters(5));
}

#[test]
fn faults_on_a_three_node_cluster() {
    run(Deployment::Cluster(3));
}
