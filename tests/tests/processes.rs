//! Several processes on one semaphore: the safety bound checked by an independent oracle,
//! crashed holders, and Redis restarts.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use pottery_semaphore_host::{Options, Semaphore};
use pottery_semaphore_tests::{key, Flavor, Server};

/// A worker process, killed when dropped: a test that fails midway (a holder still held, the
/// very regression a test looks for) must not leave it running, as a plain `Child` would.
struct Worker(Child);

impl std::ops::Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(args: &[&str]) -> (Worker, BufReader<ChildStdout>) {
    let mut child = Command::new(pottery_semaphore_tests::built_binary("worker")).args(args).stdout(Stdio::piped()).spawn().expect("worker");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (Worker(child), out)
}

fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut s = String::new();
    out.read_line(&mut s).expect("read");
    s.trim().to_string()
}

#[test]
fn many_processes_never_exceed_the_permits() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let oracle = Server::start(Flavor::Redis);
        let k = key("safety");
        let (permits, processes, tasks, cycles) = ("3", 4, "8", "150");
        let workers: Vec<_> = (0..processes)
            .map(|_| spawn_worker(&["stress", &server.url(), &k, permits, &oracle.url(), tasks, cycles]))
            .collect();
        let mut total = 0;
        let mut max_seen = 0;
        for (mut child, mut out) in workers {
            let done = line(&mut out);
            assert!(child.wait().expect("wait").success(), "worker failed: {done}");
            let parts: Vec<u64> = done.strip_prefix("done ").expect(&done).split(' ').map(|n| n.parse().unwrap()).collect();
            total += parts[0];
            max_seen = max_seen.max(parts[1]);
        }
        let mut conn = oracle.connection();
        let violations: Option<u64> = redis::cmd("GET").arg(format!("{k}:violations")).query(&mut conn).unwrap();
        println!("{flavor:?}: {total} cycles by {processes} processes x {tasks} threads, max concurrent holders {max_seen}");
        assert_eq!(total, 4 * 8 * 150);
        assert_eq!(violations, None, "the oracle saw more than {permits} holders");
        assert!((2..=3).contains(&max_seen), "max holders seen {max_seen}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_holder_frees_its_permit_within_the_lease() {
    let server = Server::start(Flavor::Redis);
    let k = key("crash");
    let lease = Duration::from_millis(1500);
    let (mut child, mut out) = spawn_worker(&["hold", &server.url(), &k, "1", &lease.as_millis().to_string()]);
    assert!(line(&mut out).starts_with("held "));
    let sem = Semaphore::open(server.options(&k).permits(1)).await.unwrap();
    // The living holder keeps its lease alive well past one lease.
    tokio::time::sleep(lease * 2).await;
    assert!(!sem.acquire(false, None).await.unwrap(), "a live holder keeps its permit");
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let killed = Instant::now();
    assert!(sem.acquire(true, Some(lease * 3)).await.unwrap());
    let took = killed.elapsed();
    println!("permit back {took:?} after SIGKILL (lease {lease:?})");
    assert!(took <= lease + Duration::from_millis(300), "permit came back after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_waiting_is_woken_by_another_process_release() {
    let server = Server::start(Flavor::Redis);
    let k = key("xproc");
    let holder = Semaphore::open(server.options(&k).permits(1)).await.unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    let (mut child, mut out) = spawn_worker(&["wait", &server.url(), &k, "1", "10"]);
    assert_eq!(line(&mut out), "waiting");
    let deadline = Instant::now() + Duration::from_secs(5);
    while holder.status().await.unwrap().waiters.is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.release(1).await.unwrap();
    let got = line(&mut out);
    assert!(got.starts_with("acquired "), "{got}");
    assert!(child.wait().unwrap().success());
}

/// A holder of the only permit, a waiter process (lease `lease_ms`) queued behind it and killed,
/// and a live waiter queued behind the dead one. Returns the holder and the live waiter's acquire
/// (30 s time-out).
async fn dead_waiter_ahead(server: &Server, k: &str, lease_ms: &str) -> (Semaphore, tokio::task::JoinHandle<Result<bool, pottery_semaphore_host::Error>>) {
    let holder = Semaphore::open(server.options(k).permits(1)).await.unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    let (mut dead, mut out) = spawn_worker(&["wait", &server.url(), k, "1", "120", lease_ms]);
    assert_eq!(line(&mut out), "waiting");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(holder.status().await.unwrap().waiters.len(), 1);
    dead.kill().unwrap();
    dead.wait().unwrap();
    let behind = Semaphore::open(server.options(k).permits(1)).await.unwrap();
    let pending = tokio::spawn(async move { behind.acquire(true, Some(Duration::from_secs(30))).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    (holder, pending)
}

#[tokio::test(flavor = "multi_thread")]
async fn permits_served_to_a_waiter_that_died_come_back_within_seconds() {
    let server = Server::start(Flavor::Redis);
    let (holder, pending) = dead_waiter_ahead(&server, &key("deadwaiter"), "10000").await;
    holder.release(1).await.unwrap();
    // Released while the dead waiter still had its place: it was served. It never takes its
    // push, so 3 s later the live one's next heartbeat (every 3.3 s) takes the permit back for
    // itself, before the dead one's 10 s lease would have ended.
    let started = Instant::now();
    assert!(pending.await.unwrap().unwrap());
    println!("live waiter served {:?} after the release", started.elapsed());
    assert!(started.elapsed() <= Duration::from_millis(8_000), "served only {:?} after the release", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_waiter_loses_its_place_within_seconds_whatever_its_lease() {
    let server = Server::start(Flavor::Redis);
    let (holder, pending) = dead_waiter_ahead(&server, &key("deadwaiter-window"), "60000").await;
    // The dead waiter's lease is 60 s, but a waiter keeps its place at most 10 s without a
    // heartbeat: a release after that passes it over (a release within it would serve it, and
    // the permit would come back 3 s later, see above).
    tokio::time::sleep(Duration::from_millis(10_100)).await;
    holder.release(1).await.unwrap();
    let started = Instant::now();
    assert!(pending.await.unwrap().unwrap());
    println!("live waiter served {:?} after the release", started.elapsed());
    assert!(started.elapsed() <= Duration::from_millis(1_000), "served only {:?} after the release", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_with_persistence_keeps_holders() {
    let mut server = Server::start_with(Flavor::Redis, &["--appendonly", "yes", "--appendfsync", "always"]);
    let k = key("aof");
    let holder = Semaphore::open(server.options(&k).permits(1)).await.unwrap();
    let token = holder.acquire_n(1, false, None).await.unwrap()[0].token;
    server.restart();
    let other = Semaphore::open(server.options(&k).permits(1)).await.unwrap();
    assert!(!other.acquire(false, None).await.unwrap(), "the permit survived the restart");
    holder.refresh().await.unwrap();
    assert!(holder.take_lost().is_empty());
    holder.release(1).await.unwrap();
    let next = other.acquire_n(1, false, None).await.unwrap();
    assert!(next[0].token > token);
}

/// The connections kept for blocking pops broke when Redis restarted; the next wait on each
/// must reconnect rather than fail with `Unreachable` against a server that is up again
/// (async handles keep a pool, blocking ones one per instance).
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_after_a_restart_reconnects_its_kept_pop_connection() {
    let mut server = Server::start_with(Flavor::Redis, &["--appendonly", "yes", "--appendfsync", "always"]);
    let k = key("pop-reconnect");
    let holder = Semaphore::open(server.options(&k).permits(1)).await.unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    let waiter = Semaphore::open(server.options(&k).permits(1)).await.unwrap();
    let blocking = pottery_semaphore_host::BlockingSemaphore::open(server.options(&k).permits(1)).unwrap();
    let wait = Duration::from_millis(100);
    // A wait each that a release ends (a timed-out pop drops its connection; a served one keeps it).
    let (w, b) = (waiter.clone(), blocking.clone());
    let served = tokio::spawn(async move { w.acquire(true, Some(Duration::from_secs(5))).await });
    while holder.status().await.unwrap().waiters.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    holder.release(1).await.unwrap();
    assert!(served.await.unwrap().unwrap());
    let served = tokio::task::spawn_blocking(move || b.acquire(true, Some(Duration::from_secs(5))));
    while holder.status().await.unwrap().waiters.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    waiter.release(1).await.unwrap();
    assert!(served.await.unwrap().unwrap());
    let b = blocking.clone();
    tokio::task::spawn_blocking(move || b.release(1)).await.unwrap().unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    server.restart();
    let after_async = waiter.acquire(true, Some(wait)).await;
    let after_blocking = tokio::task::spawn_blocking(move || blocking.acquire(true, Some(wait))).await.unwrap();
    assert!(matches!((&after_async, &after_blocking), (Ok(false), Ok(false))), "async: {after_async:?}, blocking: {after_blocking:?}");
    holder.release(1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn state_lost_in_a_restart_is_quarantined_for_a_lease_and_reported() {
    let mut server = Server::start(Flavor::Redis);
    let k = key("wiped");
    let lease = Duration::from_millis(800);
    let holder = Semaphore::open(server.options(&k).permits(1).lease(lease)).await.unwrap();
    let token = holder.acquire_n(1, false, None).await.unwrap()[0].token;
    let other = Semaphore::open(server.options(&k).permits(1).lease(lease)).await.unwrap();
    server.restart(); // no persistence: every key is gone
    let wiped = Instant::now();
    // A handle that knew the semaphore recreates it, but grants nothing while the old holder's
    // lease could still be running.
    assert!(!other.acquire(false, None).await.unwrap(), "granted during quarantine");
    holder.refresh().await.unwrap();
    assert_eq!(holder.take_lost().iter().map(|p| p.token).collect::<Vec<_>>(), vec![token]);
    let got = other.acquire_n(1, true, Some(5.0)).await.unwrap();
    assert!(wiped.elapsed() >= lease - Duration::from_millis(50), "quarantine ended after {:?}", wiped.elapsed());
    assert!(got[0].token > token, "fencing tokens stay above those issued before the restart");
}

/// A crash that reloads an older snapshot brings the semaphore back without the permit granted
/// since, while its holder still uses it. The scripts see the server's new run id: nothing is
/// granted until a lease after the restart, and fencing tokens stay above those issued before.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_that_reloads_an_older_snapshot_is_quarantined() {
    let mut server = Server::start(Flavor::Redis);
    // The default guard, on a server older than the lease (or the opening would quarantine),
    // with a second to spare: its start is taken up to a second late.
    let lease = Duration::from_millis(1500);
    tokio::time::sleep(Duration::from_millis(2700)).await;
    let k = key("rollback");
    let options = || Options::new(server.url(), &k).permits(1).lease(lease);
    let holder = Semaphore::open(options()).await.unwrap();
    let other = Semaphore::open(options()).await.unwrap();
    let _: () = redis::cmd("SAVE").query(&mut server.connection()).unwrap();
    let token = holder.acquire_n(1, false, None).await.unwrap()[0].token;
    server.restart(); // a crash: the snapshot from before the grant comes back
    let restarted = Instant::now();
    assert!(!other.acquire(false, None).await.unwrap(), "granted the permit the old holder still uses");
    let got = other.acquire_n(1, true, Some(5.0)).await.unwrap();
    let waited = restarted.elapsed();
    assert!(waited >= lease - Duration::from_millis(50), "granted {waited:?} after the restart");
    assert!(got[0].token > token, "fencing tokens stay above those issued before the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_opener_right_after_a_restart_waits_out_the_old_leases() {
    let mut server = Server::start(Flavor::Redis);
    let k = key("fresh");
    let lease = Duration::from_millis(1500);
    let old = Semaphore::open(server.options(&k).permits(1).lease(lease)).await.unwrap();
    assert!(old.acquire(false, None).await.unwrap());
    server.restart();
    let restarted = Instant::now();
    // A process that never saw the semaphore cannot tell it was wiped; the default guard holds
    // back grants until a lease after the server started.
    let newcomer = Semaphore::open(Options::new(server.url(), &k).permits(1).lease(lease)).await.unwrap();
    assert!(newcomer.created());
    assert!(!newcomer.acquire(false, None).await.unwrap(), "granted while the old lease may run");
    assert!(newcomer.acquire(true, Some(Duration::from_secs(5))).await.unwrap());
    let waited = restarted.elapsed();
    assert!(waited >= lease - Duration::from_millis(50), "granted {waited:?} after the restart");
    assert!(waited < lease + Duration::from_millis(1300), "granted only {waited:?} after the restart");
    // Opting out (for servers that persist every write) grants at once.
    let k2 = key("fresh-optout");
    let eager = Semaphore::open(server.options(&k2).permits(1).lease(Duration::from_secs(30))).await.unwrap();
    assert!(eager.acquire(false, None).await.unwrap());
}

/// The guard looks at when the server started, not at LASTSAVE, which every RDB snapshot moves:
/// on a server that saves often, a semaphore created just after a snapshot must grant at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_does_not_quarantine_a_new_semaphore() {
    let server = Server::start(Flavor::Redis);
    let lease = Duration::from_millis(1500);
    let conn = server.client().get_multiplexed_async_connection().await.unwrap();
    let uptime = || async {
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn.clone()).await.unwrap();
        info.lines().find_map(|l| l.strip_prefix("uptime_in_seconds:")).and_then(|v| v.trim().parse::<u64>().ok()).unwrap()
    };
    while Duration::from_secs(uptime().await) < lease + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _: () = redis::cmd("SAVE").query_async(&mut conn.clone()).await.unwrap();
    let sem = Semaphore::open(Options::new(server.url(), key("after-save")).permits(1).lease(lease)).await.unwrap();
    assert!(sem.created());
    assert!(sem.acquire(false, None).await.unwrap(), "quarantined by a snapshot of a server up for {} s", uptime().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_that_fails_while_redis_is_down_does_not_keep_the_permit_alive() {
    let mut server = Server::start_persistent(Flavor::Redis);
    let k = key("failed-release");
    let lease = Duration::from_millis(1500);
    let holder = Semaphore::open(server.options(&k).permits(1).lease(lease)).await.unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    server.kill();
    assert!(holder.release(1).await.is_err(), "Redis is down");
    assert!(holder.held().is_empty(), "the handle stops refreshing what it tried to release");
    server.restart(); // the AOF brings the permit back
    let other = Semaphore::open(server.options(&k).permits(1).lease(lease)).await.unwrap();
    let started = Instant::now();
    assert!(other.acquire(true, Some(lease * 2)).await.unwrap(), "the permit stayed taken: the refresher kept it alive");
    println!("permit back {:?} after Redis returned", started.elapsed());
    assert!(started.elapsed() < lease + Duration::from_millis(500));
}

/// A connection that broke while idle (Redis restarted) fails the release sent on it, which
/// is not sent again (a release must not run twice). The connection must still be replaced:
/// the next release, through either path, goes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_on_a_broken_connection_fails_once_and_the_next_one_goes_through() {
    use pottery_semaphore_host::BlockingSemaphore;
    let mut server = Server::start_persistent(Flavor::Redis);
    let (ka, kb) = (key("broken-async"), key("broken-blocking"));
    let holder = Semaphore::open(server.options(&ka).permits(2)).await.unwrap();
    let blocking = BlockingSemaphore::from(Semaphore::open(server.options(&kb).permits(2)).await.unwrap());
    assert_eq!(holder.acquire_n(2, false, None).await.unwrap().len(), 2);
    let blocking = tokio::task::spawn_blocking(move || {
        assert_eq!(blocking.acquire_n(2, false, None).unwrap().len(), 2);
        blocking
    })
    .await
    .unwrap();
    server.kill();
    server.restart(); // the AOF keeps the permits
    let _ = holder.release(1).await; // may fail: sent on the connection that broke
    assert!(holder.release(1).await.is_ok(), "async: the broken connection was kept");
    let second = tokio::task::spawn_blocking(move || {
        let _ = blocking.release(1);
        blocking.release(1)
    })
    .await
    .unwrap();
    assert!(second.is_ok(), "blocking: the broken connection was kept: {second:?}");
}

/// A guest trap discards its instance. With every one gone, the last handle still gives its
/// permits back as it goes (on a fresh instance), not a lease later.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_handle_whose_instances_all_trapped_gives_back_its_permits() {
    let server = Server::start(Flavor::Redis);
    let k = key("dropped-trapped");
    let lease = Duration::from_secs(30);
    let holder = Semaphore::open(server.options(&k).permits(1).lease(lease)).await.unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    holder.discard_idle_instances();
    drop(holder);
    let watcher = Semaphore::open(server.options(&k).permits(1).lease(lease)).await.unwrap();
    assert!(watcher.acquire(true, Some(Duration::from_secs(5))).await.unwrap(), "the permit waited for its 30 s lease");
}

/// A release failed (Redis down) and the handle was dropped before its refresher tried again:
/// the permit goes back as the handle goes, not a lease later.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_handle_gives_back_the_permits_whose_release_failed() {
    let mut server = Server::start_persistent(Flavor::Redis);
    let k = key("dropped-unreleased");
    let lease = Duration::from_secs(30);
    let holder = Semaphore::open(server.options(&k).permits(1).lease(lease)).await.unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    server.kill();
    assert!(holder.release(1).await.is_err(), "Redis is down");
    server.restart(); // the AOF keeps the permit
    drop(holder);
    let watcher = Semaphore::open(server.options(&k).permits(1).lease(lease)).await.unwrap();
    let started = Instant::now();
    assert!(watcher.acquire(true, Some(Duration::from_secs(5))).await.unwrap(), "the permit waited for its 30 s lease");
    println!("permit back {:?} after the handle was dropped", started.elapsed());
}
