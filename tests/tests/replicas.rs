//! Replica acknowledgement (WAIT / WAITAOF) against a real primary with one replica: grants,
//! releases and changes wait for the replica; a grant it does not acknowledge is given back.

use std::process::Command;
use std::time::{Duration, Instant};

use pottery_semaphore_host::{Error, ReplicaAck, Semaphore};
use pottery_semaphore_tests::{key, Flavor, Server};

/// A primary and a replica of it, both started with `extra`, replication up.
fn primary_and_replica(flavor: Flavor, extra: &[&str]) -> (Server, Server) {
    // Sync at once instead of after the default 5 s delay for more replicas to come.
    let mut args = vec!["--repl-diskless-sync-delay", "0"];
    args.extend_from_slice(extra);
    let primary = Server::start_with(flavor, &args);
    let port = primary.port.to_string();
    let mut args = vec!["--replicaof", "127.0.0.1", port.as_str()];
    args.extend_from_slice(extra);
    let replica = Server::start_with(flavor, &args);
    // Up when a write on one connection is acknowledged (and, with an AOF, fsynced: a replica
    // reports no fsyncs while it rewrites its AOF after the initial sync).
    let aof = extra.contains(&"--appendonly") && has_waitaof(&primary);
    let mut conn = primary.connection();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Until the replica is online, a write is not propagated and WAIT answers at once.
        let link: String = redis::cmd("INFO").arg("replication").query(&mut replica.connection()).unwrap();
        let feed: String = redis::cmd("INFO").arg("replication").query(&mut conn).unwrap();
        if !link.contains("master_link_status:up") || !feed.contains("state=online") {
            assert!(Instant::now() < deadline, "replication did not come up:\n{link}\n{feed}");
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let _: () = redis::cmd("SET").arg("replication-probe").arg(1).query(&mut conn).unwrap();
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(100).query(&mut conn).unwrap();
        let fsynced = !aof || {
            let counts: Vec<i64> = redis::cmd("WAITAOF").arg(0).arg(1).arg(100).query(&mut conn).unwrap();
            counts[1] == 1
        };
        if acked == 1 && fsynced {
            let _: () = redis::cmd("DEL").arg("replication-probe").query(&mut conn).unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "replication did not come up");
    }
    (primary, replica)
}

/// WAITAOF exists from Redis 7.2 on (and in every Valkey).
fn has_waitaof(server: &Server) -> bool {
    let info: Vec<redis::Value> = redis::cmd("COMMAND").arg("INFO").arg("WAITAOF").query(&mut server.connection()).unwrap();
    !matches!(info.first(), None | Some(redis::Value::Nil))
}

fn signal(server: &Server, sig: &str) {
    let pid = server.pid().expect("running").to_string();
    assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success(), "kill {sig} {pid}");
}

/// Pauses the replica (SIGSTOP) until dropped (SIGCONT), so a failing test leaves nothing stopped.
struct Paused<'a>(&'a Server);

impl<'a> Paused<'a> {
    fn new(server: &'a Server) -> Self {
        signal(server, "-STOP");
        Paused(server)
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn calls(server: &Server, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.connection()).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

const ACK: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread")]
async fn grants_releases_and_changes_wait_for_an_acknowledging_replica() {
    for flavor in Flavor::all() {
        let (primary, _replica) = primary_and_replica(flavor, &[]);
        let k = key("ack");
        let options = primary.options(&k).permits(2).replica_ack(ReplicaAck::new(1, ACK));
        let a = Semaphore::open(options.clone()).await.unwrap();
        let b = Semaphore::open(options).await.unwrap();
        let waits = calls(&primary, "wait");
        assert!(waits >= 1, "creating the semaphore waited");
        assert_eq!(a.acquire_n(2, false, None).await.unwrap().len(), 2);
        // A waiter served by a push claims its grant on its own connection, then waits.
        let w = b.clone();
        let pending = tokio::spawn(async move { w.acquire(true, Some(Duration::from_secs(5))).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.release(1).await.unwrap();
        assert!(pending.await.unwrap().unwrap());
        assert_eq!(b.held().len(), 1);
        assert_eq!(a.set_permits(3).await.unwrap(), 3);
        assert_eq!(a.add_permits(-1).await.unwrap(), 2);
        b.release(1).await.unwrap();
        a.release(1).await.unwrap();
        assert_eq!(a.value().await.unwrap(), 2);
        // acquire, wake-up, two set/add, three releases.
        assert!(calls(&primary, "wait") >= waits + 7, "every change waited");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acquire_the_replica_does_not_acknowledge_fails_and_leaks_nothing() {
    for flavor in Flavor::all() {
        let (primary, replica) = primary_and_replica(flavor, &[]);
        let k = key("lagging");
        let sem = Semaphore::open(primary.options(&k).permits(2).replica_ack(ReplicaAck::new(1, ACK))).await.unwrap();
        let held = sem.acquire_n(1, false, None).await.unwrap();
        assert_eq!(held.len(), 1);
        {
            let _paused = Paused::new(&replica);
            let started = Instant::now();
            let r = sem.acquire_n(1, true, Some(5.0)).await;
            let took = started.elapsed();
            assert!(matches!(&r, Err(Error::NotReplicated(m)) if m.contains("0 of 1")), "{r:?}");
            assert!(took >= ACK && took < ACK + Duration::from_millis(400), "failed after {took:?}");
            let status = sem.status().await.unwrap();
            assert_eq!((status.available, status.holders.len()), (1, 1), "the unacknowledged grant was given back");
            assert_eq!(sem.held().len(), 1);
            // A release that is not acknowledged did happen on the primary; the handle forgets it.
            let r = sem.release(1).await;
            assert!(matches!(r, Err(Error::NotReplicated(_))), "{r:?}");
            assert_eq!(sem.value().await.unwrap(), 2);
            let deadline = Instant::now() + Duration::from_secs(2);
            while !sem.held().is_empty() {
                assert!(Instant::now() < deadline, "the released permit stays in held()");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // The replica is back: everything works again, with all permits there.
        assert_eq!(sem.acquire_n(2, true, Some(5.0)).await.unwrap().len(), 2);
        sem.release(2).await.unwrap();
        assert_eq!(sem.value().await.unwrap(), 2);
        assert!(sem.take_lost().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waitaof_waits_for_the_replicas_append_only_file() {
    for flavor in Flavor::all() {
        // fsync on every write: with the default (every second) WAITAOF would wait up to 1 s.
        let (primary, replica) = primary_and_replica(flavor, &["--appendonly", "yes", "--appendfsync", "always"]);
        let k = key("aof");
        // Room for a slow fsync on a busy machine (a CI run beside other builds took over 500 ms).
        let ack = ReplicaAck::new(1, Duration::from_secs(2)).aof(true);
        let opened = Semaphore::open(primary.options(&k).permits(1).replica_ack(ack)).await;
        if !has_waitaof(&primary) {
            // No WAITAOF before Redis 7.2: a clear error, and nothing is left behind.
            assert!(matches!(&opened, Err(Error::Redis(m)) if m.to_lowercase().contains("unknown command")), "{opened:?}");
            let plain = Semaphore::open(primary.options(&k)).await.unwrap();
            assert_eq!(plain.value().await.unwrap(), 1);
            continue;
        }
        let sem = opened.unwrap();
        assert!(sem.acquire(false, None).await.unwrap());
        sem.release(1).await.unwrap();
        assert!(calls(&primary, "waitaof") >= 3);
        let _paused = Paused::new(&replica);
        assert!(matches!(sem.acquire(false, None).await, Err(Error::NotReplicated(m)) if m.contains("AOF")));
        assert_eq!(sem.status().await.unwrap().holders.len(), 0, "given back");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_replica_ack_nothing_waits() {
    let (primary, replica) = primary_and_replica(Flavor::Redis, &[]);
    let (waits, waitaofs) = (calls(&primary, "wait"), calls(&primary, "waitaof"));
    let sem = Semaphore::open(primary.options(&key("no-ack")).permits(1)).await.unwrap();
    let _paused = Paused::new(&replica);
    assert!(sem.acquire(false, None).await.unwrap());
    sem.release(1).await.unwrap();
    assert_eq!((calls(&primary, "wait"), calls(&primary, "waitaof")), (waits, waitaofs), "the harness's probes only");
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_ack_time_outs_are_checked() {
    let server = Server::start(Flavor::Redis);
    for timeout in [Duration::ZERO, Duration::from_secs(60)] {
        let r = Semaphore::open(server.options(&key("bad-ack")).replica_ack(ReplicaAck::new(1, timeout))).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
}

/// `BlockingSemaphore` runs its scripts on the calling thread's own connection: WAIT runs there.
#[test]
fn blocking_calls_wait_on_their_own_connection() {
    use pottery_semaphore_host::BlockingSemaphore;
    let (primary, replica) = primary_and_replica(Flavor::Redis, &[]);
    let waits = calls(&primary, "wait");
    let sem = BlockingSemaphore::open(primary.options(&key("blocking-ack")).permits(1).replica_ack(ReplicaAck::new(1, ACK))).unwrap();
    assert!(sem.on_caller_thread(), "one plain server: the synchronous imports");
    assert!(sem.acquire(false, None).unwrap());
    sem.release(1).unwrap();
    assert!(calls(&primary, "wait") >= waits + 3);
    let paused = Paused::new(&replica);
    let r = sem.acquire(false, None);
    assert!(matches!(r, Err(Error::NotReplicated(_))), "{r:?}");
    assert_eq!(sem.value().unwrap(), 1, "given back");
    drop(paused);
    assert!(sem.acquire(true, Some(Duration::from_secs(5))).unwrap());
}

/// A replica that stalls for longer than a lease acknowledges the grant only once its lease has
/// ended, when another handle may hold the permit: the grant is refused and given back. Before,
/// it was returned as granted, a second holder of the one permit.
#[tokio::test(flavor = "multi_thread")]
async fn a_grant_acknowledged_only_after_its_lease_ended_is_refused() {
    let (primary, replica) = primary_and_replica(Flavor::Redis, &[]);
    let lease = Duration::from_millis(200);
    let options = primary.options(&key("late-ack")).permits(1).lease(lease);
    let sem = Semaphore::open(options.replica_ack(ReplicaAck::new(1, Duration::from_secs(3)))).await.unwrap();
    let paused = Paused::new(&replica);
    let acquiring = tokio::spawn({
        let sem = sem.clone();
        async move { sem.acquire(false, None).await }
    });
    tokio::time::sleep(lease * 3).await;
    drop(paused);
    let r = acquiring.await.unwrap();
    assert!(matches!(&r, Err(Error::NotReplicated(_))), "{r:?}");
    assert!(sem.held().is_empty(), "{:?}", sem.held());
    let deadline = Instant::now() + Duration::from_secs(2);
    while sem.value().await.unwrap() != 1 {
        assert!(Instant::now() < deadline, "the permit was not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A refresh moves the lease's end on the primary; a replica promoted without it would free the
/// permit at the old end. So an extension counts only once the replica has it: unacknowledged,
/// the refresh fails and the holder's bound stays the grant's, and the permit is reported lost
/// when that ends. Before, the holder kept counting on refreshes only the primary had.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_the_replica_does_not_acknowledge_does_not_extend_the_holders_bound() {
    let (primary, replica) = primary_and_replica(Flavor::Redis, &[]);
    let lease = Duration::from_millis(1000);
    let options = primary.options(&key("unacked-refresh")).permits(1).lease(lease);
    let sem = Semaphore::open(options.replica_ack(ReplicaAck::new(1, ACK))).await.unwrap();
    assert!(sem.acquire(false, None).await.unwrap());
    let granted = Instant::now();
    let paused = Paused::new(&replica);
    let r = sem.refresh().await;
    assert!(matches!(&r, Err(Error::NotReplicated(_))), "{r:?}");
    tokio::time::sleep(lease + lease / 2).await;
    let lost = sem.take_lost();
    let held = sem.held();
    drop(paused);
    assert_eq!((lost.len(), held.len()), (1, 0), "the holder still counted on it {:?} after its grant", granted.elapsed());
}

/// A release that waits for a stopped replica has already taken its permit off the primary; a
/// refresh that runs meanwhile (the refresher, on another connection) no longer finds it. That
/// is the handle's own release, not a lost lease: nothing may be reported lost.
#[test]
fn a_refresh_during_a_slow_release_does_not_report_the_permit_lost() {
    use pottery_semaphore_host::BlockingSemaphore;
    let (primary, replica) = primary_and_replica(Flavor::Redis, &[]);
    let options = primary.options(&key("slow-release")).permits(1).lease(Duration::from_millis(300));
    let sem = BlockingSemaphore::open(options.replica_ack(ReplicaAck::new(1, Duration::from_millis(800)))).unwrap();
    assert!(sem.acquire(false, None).unwrap());
    let paused = Paused::new(&replica);
    // WAIT holds the release for 800 ms on its own connection; the refresher runs every 100 ms.
    let r = sem.release(1);
    assert!(matches!(r, Err(Error::NotReplicated(_))), "{r:?}");
    drop(paused);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sem.take_lost(), Vec::new(), "released, not lost");
    assert!(sem.held().is_empty());
}

/// A release whose caller stops waiting for it (a time-out around the call) still completes and
/// settles the handle's books: the permit is neither kept as held nor reported lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_whose_caller_stops_waiting_still_settles() {
    let (primary, replica) = primary_and_replica(Flavor::Redis, &[]);
    let options = primary.options(&key("dropped-release")).permits(1).lease(Duration::from_millis(300));
    let sem = Semaphore::open(options.replica_ack(ReplicaAck::new(1, Duration::from_millis(800)))).await.unwrap();
    assert!(sem.acquire(false, None).await.unwrap());
    let paused = Paused::new(&replica);
    let waited = tokio::time::timeout(Duration::from_millis(100), sem.release(1)).await;
    assert!(waited.is_err(), "the release waits for the stopped replica");
    // The release goes on without its caller; the refresher runs every 100 ms meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(paused);
    assert_eq!(sem.take_lost(), Vec::new(), "released, not lost");
    assert!(sem.held().is_empty(), "{:?}", sem.held());
}

/// A release whose WAIT is refused after its script ran (an ACL changed meanwhile) may have
/// happened: the handle neither keeps refreshing the permit nor reports it lost, and the
/// permit is free in Redis.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_refused_after_its_script_ran_neither_keeps_nor_loses_the_permit() {
    let (primary, _replica) = primary_and_replica(Flavor::Redis, &[]);
    let acl = |rules: &[&str]| redis::cmd("ACL").arg("SETUSER").arg("app").arg(rules).query::<()>(&mut primary.connection()).unwrap();
    acl(&["on", ">pw", "~*", "&*", "+@all"]);
    let url = primary.url().replacen("redis://", "redis://app:pw@", 1);
    let options = pottery_semaphore_host::Options::new(url, key("refused-release")).guard_fresh_server(false).lease(Duration::from_millis(300));
    let sem = Semaphore::open(options.replica_ack(ReplicaAck::new(1, ACK))).await.unwrap();
    assert!(sem.acquire(false, None).await.unwrap());
    acl(&["-wait"]);
    let r = sem.release(1).await;
    assert!(matches!(r, Err(Error::Auth(_))), "{r:?}");
    // Longer than the lease: the refresher (every 100 ms) and the lease watch have had their say.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sem.take_lost(), Vec::new(), "released, not lost");
    assert!(sem.held().is_empty(), "still refreshed: {:?}", sem.held());
    acl(&["+wait"]);
    assert_eq!(sem.value().await.unwrap(), 1, "the permit is free in Redis");
}

/// A WAIT held up by a stopped replica holds up only the call that sent it. Redis reads nothing
/// more from a client blocked in WAIT, so the scripts of the process's other semaphores (one
/// without replica acknowledgement here) must not queue behind it on a shared connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_wait_does_not_hold_up_other_semaphores() {
    let (primary, replica) = primary_and_replica(Flavor::Redis, &[]);
    let slow = Duration::from_millis(1500);
    let acked = Semaphore::open(primary.options(&key("slow-wait")).permits(1).replica_ack(ReplicaAck::new(1, slow))).await.unwrap();
    let plain = Semaphore::open(primary.options(&key("no-wait")).permits(1)).await.unwrap();
    let paused = Paused::new(&replica);
    let waiting = tokio::spawn(async move { acked.acquire(false, None).await });
    tokio::time::sleep(Duration::from_millis(200)).await; // its WAIT is in flight by now
    let started = Instant::now();
    assert!(plain.acquire(false, None).await.unwrap());
    plain.release(1).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "queued behind the other semaphore's WAIT: {took:?}");
    let r = waiting.await.unwrap();
    assert!(matches!(r, Err(Error::NotReplicated(_))), "{r:?}");
    drop(paused);
}
