//! The several-master (Redlock slot) mode against real, independent redis-servers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pottery_semaphore_core::multi::slot_of;
use pottery_semaphore_host::{Error, Options, Semaphore};
use pottery_semaphore_tests::{eval_script, key, Flavor, Server};

/// `n` masters; with Valkey installed, the last one is a Valkey server (the mode mixes them).
fn masters(n: usize) -> Vec<Server> {
    (0..n)
        .map(|i| if i == n - 1 && Flavor::Valkey.available() { Server::start(Flavor::Valkey) } else { Server::start(Flavor::Redis) })
        .collect()
}

fn options(servers: &[Server], key: &str) -> Options {
    Options::with_masters(servers.iter().map(Server::url), key).guard_fresh_server(false)
}

async fn open(servers: &[Server], key: &str, permits: i64) -> Semaphore {
    Semaphore::open(options(servers, key).permits(permits)).await.expect("open")
}

#[tokio::test(flavor = "multi_thread")]
async fn permits_are_slots_held_on_a_majority() {
    let servers = masters(3);
    let k = key("mm-basic");
    let a = open(&servers, &k, 2).await;
    let b = open(&servers, &k, 5).await;
    assert_eq!(b.opened_initial(), 2, "the first opener's value stands");
    assert_eq!(a.value().await.unwrap(), 2);
    assert!(a.acquire(false, None).await.unwrap());
    assert!(b.acquire(false, None).await.unwrap());
    assert!(!b.acquire(false, None).await.unwrap(), "2 permits");
    assert!(a.locked().await.unwrap());
    let (pa, pb) = (a.held()[0], b.held()[0]);
    assert_ne!(slot_of(pa.token), slot_of(pb.token), "one slot each");
    assert!(pa.ttl_ms > 9_000 && pa.ttl_ms < 10_000, "validity is lease - elapsed - drift: {}", pa.ttl_ms);
    // Every master records both holders (the grant confirmed everywhere reachable).
    for server in &servers {
        let mut conn = server.connection();
        let owners: Vec<String> = redis::cmd("HVALS").arg(format!("pottery-semaphore:{{{k}}}:owner")).query(&mut conn).unwrap();
        assert_eq!(owners.len(), 2, "{owners:?}");
    }
    let status = a.status().await.unwrap();
    assert_eq!((status.capacity, status.available, status.holders.len()), (2, 0, 2));
    assert!(status.waiters.is_empty(), "no queue in this mode");
    assert_eq!(a.permits().await.unwrap().iter().map(|p| p.token).collect::<Vec<_>>(), vec![pa.token]);
    a.release(1).await.unwrap();
    assert!(b.acquire(false, None).await.unwrap(), "the released slot is free again");
    let again = b.held().into_iter().find(|p| slot_of(p.token) == slot_of(pa.token)).expect("same slot reused");
    assert!(again.token > pa.token, "fencing tokens increase per slot");
    b.release(2).await.unwrap();
    assert_eq!(b.value().await.unwrap(), 2);
    assert!(matches!(b.release(1).await, Err(Error::Bounded { .. })), "bounded by default");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_tasks_never_hold_more_slots_than_permits() {
    let servers = masters(3);
    let k = key("mm-safety");
    let inside = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let sem = open(&servers, &k, 2).await;
        let (inside, max_seen) = (inside.clone(), max_seen.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..25u64 {
                assert!(sem.acquire(true, Some(Duration::from_secs(20))).await.expect("acquire"), "starved");
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(i % 4)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                sem.release(1).await.expect("release");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let max = max_seen.load(Ordering::SeqCst);
    println!("6 handles x 25 cycles on 2 permits over 3 masters: max concurrent holders {max}");
    assert!(max <= 2, "over-admitted: {max} holders");
    assert_eq!(max, 2, "both permits were used");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_wakes_on_release_and_time_outs_hold() {
    let servers = masters(3);
    let k = key("mm-wait");
    let holder = open(&servers, &k, 1).await;
    let waiter = open(&servers, &k, 1).await;
    assert!(holder.acquire(false, None).await.unwrap());
    let started = Instant::now();
    assert!(!waiter.acquire(true, Some(Duration::from_millis(300))).await.unwrap());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(500), "time-out after {waited:?}");
    let w = tokio::spawn(async move {
        let ok = waiter.acquire(true, Some(Duration::from_secs(10))).await.unwrap();
        (ok, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = Instant::now();
    holder.release(1).await.unwrap();
    let (ok, at) = w.await.unwrap();
    assert!(ok);
    let latency = at.duration_since(released);
    println!("wake-up after release: {latency:?}");
    assert!(latency < Duration::from_millis(200), "woken after {latency:?}");
}

/// A waiter for 2 slots blocked before a waiter for 1, one slot freed: where both wait on the
/// same master, that master hands its wake-up to the first, who cannot use it. It hands it on,
/// and the waiter for 1 acquires at once (it slept its whole 2 s pause).
#[tokio::test(flavor = "multi_thread")]
async fn a_wake_up_a_waiter_cannot_use_reaches_the_one_who_can() {
    let servers = masters(3);
    for round in 0..6 {
        let k = key(&format!("mm-hand-on-{round}"));
        let (h1, h2) = (open(&servers, &k, 2).await, open(&servers, &k, 2).await);
        assert!(h1.acquire(false, None).await.unwrap() && h2.acquire(false, None).await.unwrap());
        let (big, small) = (open(&servers, &k, 2).await, open(&servers, &k, 2).await);
        let for_two = tokio::spawn(async move { big.acquire_n(2, true, Some(10.0)).await.map(|p| p.len()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let for_one = tokio::spawn(async move {
            let got = small.acquire(true, Some(Duration::from_secs(10))).await;
            (got, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let released = Instant::now();
        h1.release(1).await.unwrap();
        let (got, at) = for_one.await.unwrap();
        assert!(got.unwrap(), "round {round}: the waiter for 1 got nothing");
        let waited = at - released;
        assert!(waited < Duration::from_millis(1_000), "round {round}: the waiter for 1 slept {waited:?} with a slot free");
        for_two.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minority_down_is_tolerated_a_majority_down_is_a_quorum_error() {
    let mut servers = masters(3);
    let k = key("mm-quorum");
    let sem = open(&servers, &k, 2).await;
    servers[2].kill();
    assert!(sem.acquire(false, None).await.unwrap(), "2 of 3 masters are a majority");
    assert_eq!(sem.value().await.unwrap(), 1);
    sem.release(1).await.unwrap();
    servers[1].kill();
    assert!(!sem.acquire(false, None).await.unwrap(), "no majority: not acquired");
    let started = Instant::now();
    assert!(!sem.acquire(true, Some(Duration::from_millis(400))).await.unwrap());
    assert!(started.elapsed() < Duration::from_millis(1500), "the time-out holds while masters are down");
    let strict = Semaphore::open(options(&servers, &k).permits(2).raise_on_redis_errors(true)).await;
    match strict {
        Err(Error::Quorum(msg)) => assert!(msg.contains("2 of 3"), "{msg}"),
        Ok(s) => match s.acquire(false, None).await {
            Err(Error::Quorum(msg)) => assert!(msg.contains("2 of 3 masters failed"), "{msg}"),
            other => panic!("expected a quorum error, got {other:?}"),
        },
        Err(other) => panic!("expected a quorum error, got {other:?}"),
    }
    assert!(matches!(sem.value().await, Err(Error::Quorum(_))), "no majority to read either");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_master_without_persistence_cannot_hand_out_a_held_slot() {
    let mut servers = masters(3);
    let k = key("mm-restart");
    let lease = Duration::from_millis(1500);
    let holder = Semaphore::open(options(&servers, &k).permits(1).lease(lease)).await.unwrap();
    // The slot is granted on masters 0 and 1 while 2 is frozen: 2 never hears of it. Then 0
    // forgets it (restart, no persistence) and 1 is gone: 0 and 2 must not form a majority
    // for a newcomer. (Held on all three, 2 alone would refuse and the test could not fail.)
    servers[2].pause();
    assert!(holder.acquire(false, None).await.unwrap());
    servers[2].resume();
    let owners: Vec<String> = redis::cmd("HVALS").arg(format!("pottery-semaphore:{{{k}}}:owner")).query(&mut servers[2].connection()).unwrap();
    assert!(owners.is_empty(), "master 2 was to miss the grant: {owners:?}");
    servers[0].restart();
    servers[1].kill();
    let newcomer = Semaphore::open(options(&servers, &k).permits(1).lease(lease).guard_fresh_server(true)).await.unwrap();
    assert!(!newcomer.acquire(false, None).await.unwrap(), "the restarted master is quarantined");
    servers[1].restart();
    drop(holder);
}

/// Two of three masters crash and reload a snapshot taken before a grant: they come back without
/// the slot, while its holder still uses it, and would form a majority for a second holder. Their
/// scripts see each server's new run id and lend no vote until a lease after its restart.
#[tokio::test(flavor = "multi_thread")]
async fn masters_that_reload_an_older_snapshot_lend_no_vote_for_a_lease() {
    let mut servers = masters(3);
    let k = key("mm-rollback");
    let lease = Duration::from_millis(1500);
    // The default guard, on servers older than the lease (or the opening would quarantine),
    // with a second to spare: a start is taken up to a second late.
    tokio::time::sleep(Duration::from_millis(2700)).await;
    let options = Options::with_masters(servers.iter().map(Server::url), &k).permits(1).lease(lease);
    let holder = Semaphore::open(options.clone()).await.unwrap();
    let other = Semaphore::open(options).await.unwrap();
    for server in &servers[..2] {
        let _: () = redis::cmd("SAVE").query(&mut server.connection()).unwrap();
    }
    assert!(holder.acquire(false, None).await.unwrap());
    servers[0].restart(); // crashes: the snapshots from before the grant come back
    servers[1].restart();
    let restarted = Instant::now();
    assert!(!other.acquire(false, None).await.unwrap(), "granted the slot its holder still uses");
    assert!(other.acquire(true, Some(Duration::from_secs(5))).await.unwrap());
    let waited = restarted.elapsed();
    assert!(waited >= lease - Duration::from_millis(50), "granted {waited:?} after the restarts");
    drop(holder);
}

/// A holds the only slot on two of three masters (the third was down). One of the two loses its
/// state while up (FLUSHALL: the fresh-server guard, which looks at uptime, cannot see it). A
/// process opening the semaphore then finds it on one master and missing on two: those copies
/// are recreated quarantined, or X would hold the slot on the wiped master and the third, a
/// majority, beside A.
#[tokio::test(flavor = "multi_thread")]
async fn copies_lost_beside_existing_ones_are_recreated_quarantined() {
    let mut servers = masters(3);
    let k = key("mm-lost-copy");
    let a = open(&servers, &k, 1).await;
    servers[2].kill();
    assert!(a.acquire(false, None).await.unwrap(), "two of three masters grant");
    servers[2].restart();
    let _: () = redis::cmd("FLUSHALL").query(&mut servers[0].connection()).unwrap();
    let x = open(&servers, &k, 1).await;
    assert!(!x.acquire(false, None).await.unwrap(), "granted a slot A holds on a majority of one");
    drop(a);
}

/// As `a_new_instance_of_a_handle_recreates_a_wiped_semaphore_quarantined` (semantics.rs) with
/// several masters: every copy is wiped while up (the fresh-server guard cannot see it) and the
/// holder's handle opens another guest instance, which finds them all missing. It knows the
/// semaphore existed, so it recreates them quarantined; as new, X would take the held slot.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_instance_of_a_handle_recreates_copies_wiped_everywhere_quarantined() {
    let servers = masters(3);
    let k = key("mm-wiped-new-instance");
    let holder = open(&servers, &k, 1).await;
    let x = open(&servers, &k, 1).await;
    assert!(holder.acquire(false, None).await.unwrap(), "the only slot was free");
    for server in &servers {
        let _: () = redis::cmd("FLUSHALL").query(&mut server.connection()).unwrap();
    }
    holder.discard_idle_instances();
    holder.value().await.expect("value through a new instance");
    assert!(!x.acquire(false, None).await.unwrap(), "granted the slot the holder still uses");
    drop(holder);
}

/// H holds the only slot on A and B (C was stalled and never saw a claim: its copy looks new).
/// B then loses its state while up, and a process opens the semaphore while A does not answer:
/// it sees B missing and C never claimed, but not A. Unless B is recreated quarantined, B and C
/// form a majority for the slot H still holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_lost_while_a_master_is_silent_is_recreated_quarantined() {
    let servers = masters(3);
    let k = key("mm-lost-silent");
    let lease = Duration::from_millis(1500);
    let holder = Semaphore::open(options(&servers, &k).permits(1).lease(lease)).await.unwrap();
    servers[2].pause();
    let held = holder.acquire(false, None).await;
    servers[2].resume();
    assert!(held.unwrap(), "A and B grant");
    let _: () = redis::cmd("FLUSHALL").query(&mut servers[1].connection()).unwrap();
    servers[0].pause();
    let newcomer = Semaphore::open(options(&servers, &k).permits(1).lease(lease)).await;
    let granted = match &newcomer {
        Ok(sem) => sem.acquire(false, None).await,
        Err(e) => Err(e.clone()),
    };
    servers[0].resume();
    assert!(!granted.unwrap(), "granted the slot H holds, through the recreated copy and one that never saw a claim");
    drop(holder);
}

/// Created while a master does not answer, a semaphore cannot tell new from lost (the silent
/// master may hold a copy that saw claims, beside copies lost or never made): it grants nothing
/// for a lease.
#[tokio::test(flavor = "multi_thread")]
async fn a_semaphore_created_while_a_master_is_silent_waits_a_lease() {
    let servers = masters(3);
    let lease = Duration::from_millis(1500);
    servers[2].pause();
    let opened = Instant::now();
    let sem = Semaphore::open(options(&servers, &key("mm-silent-create")).permits(1).lease(lease)).await;
    let (at_once, later) = match &sem {
        Ok(sem) => (sem.acquire(false, None).await, sem.acquire(true, Some(Duration::from_secs(5))).await),
        Err(e) => (Err(e.clone()), Err(e.clone())),
    };
    let waited = opened.elapsed();
    servers[2].resume();
    assert!(!at_once.unwrap(), "granted at once beside a silent master");
    assert!(later.unwrap(), "granted after the quarantine");
    assert!(waited >= lease - Duration::from_millis(50), "granted {waited:?} after the opening");
}

/// Every master restarted without persistence while a slot was held: no copy is left and no
/// master failed, so only the fresh-server guard (on by default) keeps a newcomer from the
/// slot its holder still uses, until a lease after the restarts.
#[tokio::test(flavor = "multi_thread")]
async fn masters_all_restarted_empty_grant_nothing_for_a_lease_with_the_guard() {
    let mut servers = masters(3);
    let k = key("mm-fresh");
    let lease = Duration::from_millis(1500);
    let holder = Semaphore::open(options(&servers, &k).permits(1).lease(lease)).await.unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    for server in &mut servers {
        server.restart();
    }
    let newcomer = Semaphore::open(options(&servers, &k).permits(1).lease(lease).guard_fresh_server(true)).await.unwrap();
    assert!(!newcomer.acquire(false, None).await.unwrap(), "granted by masters that forgot a held slot");
    drop(holder);
}

/// Another opener is creating the semaphore right now: its copy exists on one master, the other
/// two not yet. Copies that never saw a claim mean nothing can be held, so this opener creates
/// the missing ones as new (the fresh-server guard, off here), not quarantined as lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_semaphore_half_created_by_another_opener_is_not_quarantined() {
    let servers = masters(3);
    let k = key("mm-half-created");
    let keys = pottery_semaphore_core::keys::Keys::new(&k);
    let init = &pottery_semaphore_core::scripts::MULTI_INIT;
    let created = eval_script(&mut servers[0].connection(), init, &keys.multi_script_keys("P1"), "P1", 1, 10_000, &["0".into(), "1".into()]).unwrap();
    assert_eq!(redis::from_redis_value::<Vec<i64>>(created).unwrap(), [1, 1, 1, 1]);
    let sem = open(&servers, &k, 1).await;
    assert!(sem.acquire(false, None).await.unwrap(), "quarantined a semaphore nobody ever claimed on");
}

/// Three slots; the third master is down. Grants made during outages left slot 0 taken on the
/// first master only and slot 1 on the second only. Each master's lowest free slot differs (1
/// and 0), so claims split on every attempt, yet slot 2 is free on both: after a split the
/// waiter claims the slots free on a majority first, and gets slot 2. When nothing is free on
/// a majority, it waits for a release instead of voting again.
#[tokio::test(flavor = "multi_thread")]
async fn a_split_vote_claims_the_slots_free_on_a_majority() {
    let mut servers = masters(3);
    let k = key("mm-split");
    let a = open(&servers, &k, 3).await;
    servers[2].kill();
    let keys = pottery_semaphore_core::keys::Keys::new(&k);
    let run = |server: &Server, script: &pottery_semaphore_core::scripts::Script, holder: &str, args: &[String]| -> redis::Value {
        eval_script(&mut server.connection(), script, &keys.multi_script_keys(holder), holder, 3, 60_000, args).unwrap()
    };
    use pottery_semaphore_core::scripts::{MULTI_CLAIM, MULTI_RELEASE};
    let claimed = |v: redis::Value| -> Vec<i64> { redis::from_redis_value(v).unwrap() };
    assert_eq!(claimed(run(&servers[0], &MULTI_CLAIM, "Y", &["1".into()]))[3..], [0]);
    let z = claimed(run(&servers[1], &MULTI_CLAIM, "Z", &["2".into()]));
    assert_eq!(z[3..], [0, 1]);
    // Z gives slot 0 back unconfirmed, by its claim.
    let dropped = run(&servers[1], &MULTI_RELEASE, "Z", &["0".into(), "0".into(), format!("c{}", z[1]), "Z".into()]);
    assert_eq!(claimed(dropped), [0, z[1]]);
    let got = a.acquire_n(1, true, Some(2.0)).await.unwrap();
    assert_eq!(got.iter().map(|p| slot_of(p.token)).collect::<Vec<_>>(), [2], "split votes never converged");
    assert!(a.acquire_n(1, false, None).await.unwrap().is_empty(), "nothing left on a majority");
}

#[tokio::test(flavor = "multi_thread")]
async fn modes_do_not_mix_and_arguments_are_checked() {
    let servers = masters(3);
    let k = key("mm-modes");
    let single = Semaphore::open(servers[0].options(&k)).await.unwrap();
    assert!(matches!(Semaphore::open(options(&servers, &k)).await, Err(Error::InvalidArgument(m)) if m.contains("one server")));
    drop(single);
    let k2 = key("mm-modes2");
    let multi = open(&servers, &k2, 3).await;
    assert!(matches!(Semaphore::open(servers[1].options(&k2)).await, Err(Error::InvalidArgument(m)) if m.contains("several masters")));
    assert!(matches!(Semaphore::open(options(&servers, &key("big")).permits(70_000)).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(multi.acquire_n(0, true, None).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(multi.acquire_n(4, true, None).await, Err(Error::InvalidArgument(m)) if m.contains("capacity")));
    assert!(multi.acquire_n(4, false, None).await.unwrap().is_empty(), "non-blocking: just not acquired");
    assert!(matches!(multi.acquire_n(1, true, Some(f64::NAN)).await, Err(Error::InvalidArgument(_))));
    assert_eq!(multi.set_permits(5).await.unwrap(), 5);
    assert_eq!(multi.add_permits(-1).await.unwrap(), 4);
    assert_eq!(multi.value().await.unwrap(), 4);
    assert_eq!(multi.acquire_n(3, false, None).await.unwrap().len(), 3, "n permits at once");
    assert_eq!(multi.value().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_refresh_and_expired_slots_come_back() {
    let servers = masters(3);
    let k = key("mm-lease");
    let lease = Duration::from_millis(600);
    let a = Semaphore::open(options(&servers, &k).permits(1).lease(lease)).await.unwrap();
    let b = Semaphore::open(options(&servers, &k).permits(1).lease(lease)).await.unwrap();
    assert!(a.acquire(false, None).await.unwrap());
    tokio::time::sleep(lease * 3).await;
    assert!(!b.acquire(false, None).await.unwrap(), "the background refresher keeps the lease");
    assert!(a.take_lost().is_empty());
    // Another holder force-releases it (fungible permits): `a` learns it lost the permit.
    b.release(1).await.unwrap();
    a.refresh().await.unwrap();
    assert_eq!(a.take_lost().len(), 1, "the lost lease is reported");
    assert!(b.acquire(false, None).await.unwrap());
    let unbounded = Semaphore::open(options(&servers, &k).bounded(false)).await.unwrap();
    unbounded.release(2).await.unwrap();
    let status = unbounded.status().await.unwrap();
    assert_eq!(status.capacity, 2, "an unbounded release beyond the holders adds capacity");
    // As on one server: the initial value stays what it was (operators' changes move it).
    assert_eq!(status.initial, 1, "an unbounded release moved the initial value");
    assert_eq!(unbounded.initial_value().await.unwrap(), 1);
}

/// With one master silent every round waits out its time-out. A grant's validity is what is
/// left of the lease after its confirm round, so it counts from that round's answer (counted
/// from its sending, the round was taken off twice), and it must outlast the first refresh
/// that covers the permit: a round already under way (which does not know it), a third of a
/// lease, then that refresh's own round. With rounds of a fifth of the lease, about a quarter
/// of the grants made during a refresh came too late, and the holder was told it lost a permit
/// its majority still held. Grants here come at steps that fall all over the refresh cycle.
#[tokio::test(flavor = "multi_thread")]
async fn permits_held_beside_a_silent_master_are_not_reported_lost() {
    let servers = masters(3);
    let k = key("mm-silent-refresh");
    let lease = Duration::from_millis(3000);
    let sem = Semaphore::open(options(&servers, &k).permits(8).lease(lease)).await.unwrap();
    servers[2].pause();
    let mut acquired = Vec::new();
    for _ in 0..7 {
        acquired.push(sem.acquire(false, None).await);
        tokio::time::sleep(lease / 12).await;
    }
    tokio::time::sleep(lease + lease / 6).await;
    let (lost, held) = (sem.take_lost(), sem.held().len());
    servers[2].resume();
    assert!(acquired.into_iter().all(|a| a.unwrap()), "a majority grants");
    assert_eq!((lost, held), (Vec::new(), 7), "permits reported lost while their majority held them");
}

/// Beside a master that does not answer, every round waits its time-out (a tenth of the lease:
/// 1 s here), which held a shorter acquire time-out up by a round or more. Rounds now end by the
/// acquire's deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_master_does_not_hold_up_a_short_time_out() {
    let servers = masters(3);
    let k = key("mm-silent-timeout");
    let (holder, waiter) = (open(&servers, &k, 1).await, open(&servers, &k, 1).await);
    assert!(holder.acquire(false, None).await.unwrap());
    servers[2].pause();
    let started = Instant::now();
    let granted = waiter.acquire(true, Some(Duration::from_millis(300))).await;
    let took = started.elapsed();
    servers[2].resume();
    assert!(!granted.unwrap(), "granted the held permit");
    assert!(took < Duration::from_millis(700), "a 300 ms time-out took {took:?}");
}

/// Waiters can split the masters between them: each claims a slot on one, none on a majority.
/// Each then gives its claim back and waits on a master that refused it for a push, so the give
/// back must push one, or all of them sleep until the nearest lease ends (up to 2 s) while the
/// slot is free everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_given_back_wakes_the_waiters_it_held_up() {
    let servers = masters(3);
    let k = key("mm-split");
    let a = open(&servers, &k, 1).await;
    // Other waiters' claims in flight hold the only slot on masters 1 and 2.
    claim_slot_as(&servers[1], &k, "x");
    claim_slot_as(&servers[2], &k, "y");
    assert!(!a.acquire(false, None).await.unwrap(), "one master of three is no majority");
    assert_eq!(pushes(&servers, &k), [1, 0, 0], "giving back the claim on master 0 woke whoever waits there");
}

/// The same for a slot a master granted but the majority did not: the grant gives it back.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_given_back_at_confirmation_wakes_the_waiters_it_held_up() {
    let servers = masters(3);
    let k = key("mm-odd-slot");
    let a = open(&servers, &k, 2).await;
    // On master 0 another claim holds slot 0, so it grants slot 1; masters 1 and 2 grant slot 0.
    claim_slot_as(&servers[0], &k, "x");
    assert!(a.acquire(false, None).await.unwrap(), "slot 0 on a majority");
    assert_eq!(slot_of(a.held()[0].token), 0);
    assert_eq!(pushes(&servers, &k), [1, 0, 0], "slot 1 went back on master 0, waking whoever waits there");
}

/// Claims the lowest free slot of semaphore `k` on `server` as `holder` (a claim in flight).
fn claim_slot_as(server: &Server, k: &str, holder: &str) {
    let multi_keys = pottery_semaphore_core::keys::Keys::new(k).multi_script_keys(holder);
    let script = &pottery_semaphore_core::scripts::MULTI_CLAIM;
    let claim = eval_script(&mut server.connection(), script, &multi_keys, holder, 1, 10_000, &["1".into()]).unwrap();
    let claim: Vec<i64> = redis::from_redis_value(claim).unwrap();
    assert_eq!(claim[0], 1, "{claim:?}");
}

/// Wake-up pushes waiting in each master's list.
fn pushes(servers: &[Server], k: &str) -> Vec<i64> {
    let mwake = pottery_semaphore_core::keys::Keys::new(k).multi_wake();
    servers.iter().map(|s| redis::cmd("LLEN").arg(&mwake).query(&mut s.connection()).unwrap()).collect()
}

/// A master that fails for good (here the semaphore's `owner` key holds a string) fails the
/// acquire with a typed error, and the slot the other masters granted meanwhile goes back at
/// once instead of staying claimed for a lease.
#[tokio::test(flavor = "multi_thread")]
async fn an_acquire_failing_on_one_master_gives_back_what_the_others_granted() {
    let servers = masters(3);
    let k = key("mm-fatal");
    let a = open(&servers, &k, 1).await;
    let owner = format!("pottery-semaphore:{{{k}}}:owner");
    let _: () = redis::cmd("SET").arg(&owner).arg("not a hash").query(&mut servers[2].connection()).unwrap();
    let result = a.acquire(false, None).await;
    assert!(matches!(result, Err(Error::WrongType(_))), "{result:?}");
    for server in &servers[..2] {
        let leases: i64 = redis::cmd("ZCARD").arg(format!("pottery-semaphore:{{{k}}}:leases")).query(&mut server.connection()).unwrap();
        assert_eq!(leases, 0, "the slot claimed on a healthy master went back");
    }
}

/// A release names the permits the caller knows it holds, and those go first. Here the handle
/// holds U and A; U's release failed (no majority), so the handle no longer counts it (it
/// retries it in the background) though the masters still do. `release(1)` must give back A,
/// which the caller means, not U, the holder's oldest in Redis: else A stays held and refreshed
/// for as long as the handle lives.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_gives_back_the_permits_the_caller_names_first() {
    let mut servers: Vec<Server> = (0..3).map(|_| Server::start_persistent(Flavor::Redis)).collect();
    let k = key("mm-named");
    let sem = Semaphore::open(options(&servers, &k).permits(2).lease(Duration::from_secs(30))).await.unwrap();
    let u = sem.acquire_n(1, false, None).await.unwrap()[0].token;
    let a = sem.acquire_n(1, false, None).await.unwrap()[0].token;
    assert!(u < a);
    servers[1].kill();
    servers[2].kill();
    assert!(matches!(sem.release_permits(vec![u]).await, Err(Error::Quorum(_))));
    assert_eq!(sem.held().iter().map(|p| p.token).collect::<Vec<_>>(), [a], "U's release is in doubt");
    servers[1].restart();
    servers[2].restart();
    sem.release(1).await.unwrap();
    assert!(sem.held().is_empty(), "A was released: {:?}", sem.held());
    let in_redis: Vec<u64> = sem.permits().await.unwrap().iter().map(|p| p.token).collect();
    assert!(!in_redis.contains(&a), "A is gone from the masters: {in_redis:?}");
}

/// A release whose replies were lost on every master (the connections broke after the script
/// ran) must not be sent again: its second run finds the named permit gone, and the release would
/// take another holder's in its place, two permits freed for one.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_whose_replies_were_lost_is_not_sent_again() {
    use pottery_semaphore_tests::proxy::Proxy;
    let servers = masters(3);
    let proxies: Vec<Proxy> = servers.iter().map(|s| Proxy::start(s.port)).collect();
    let k = key("mm-lost-reply");
    let via_proxies = Options::with_masters(proxies.iter().map(Proxy::url), &k).guard_fresh_server(false).permits(3);
    let mine = Semaphore::open(via_proxies).await.unwrap();
    let other = open(&servers, &k, 3).await;
    assert!(mine.acquire(false, None).await.unwrap());
    assert!(other.acquire(false, None).await.unwrap());
    // Every master has the release script (a NOSCRIPT reply would be lost instead).
    mine.release(1).await.unwrap();
    assert!(mine.acquire(false, None).await.unwrap());
    // Each master runs the release; its reply is lost, then its connection breaks.
    for proxy in &proxies {
        proxy.lose_reply_to(pottery_semaphore_core::scripts::MULTI_RELEASE.sha1().as_bytes());
    }
    let releasing = tokio::spawn(async move { mine.release(1).await });
    let released = releasing.await.unwrap();
    assert_eq!(other.permits().await.unwrap().len(), 1, "the release ran twice and took the other holder's permit");
    assert_eq!(other.value().await.unwrap(), 2, "the caller's own permit was released once");
    assert!(matches!(released, Err(Error::Quorum(_))), "no master answered the release: {released:?}");
}

/// One server listed twice (here as `…` and `…/0`, the same database) would vote twice with the
/// same keys: a claim could never reach its quorum, and an acquire waited for good. Refused when
/// opened; another database of the same server is another set of keys, and is let through.
#[tokio::test(flavor = "multi_thread")]
async fn a_master_listed_twice_is_refused() {
    let servers = masters(2);
    let url = servers[0].url();
    let twice = Options::with_masters([url.clone(), format!("{}/0", url.trim_end_matches('/'))], key("listed-twice")).guard_fresh_server(false);
    let r = Semaphore::open(twice).await;
    assert!(matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("listed twice")), "{r:?}");
    let spelled_apart = [format!("{url}/"), servers[1].url(), url.clone()];
    let r = Semaphore::open(Options::with_masters(spelled_apart, key("listed-twice")).guard_fresh_server(false)).await;
    assert!(matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("listed twice")), "{r:?}");
    let other_db = Options::with_masters([url.clone(), format!("{}/1", url.trim_end_matches('/')), servers[1].url()], key("listed-twice"));
    let sem = Semaphore::open(other_db.guard_fresh_server(false)).await.expect("another database is another master");
    assert!(sem.acquire(false, None).await.unwrap());
}

/// As one server's test in semantics.rs: every master closed the process's idle connections (its
/// `timeout`), and a release, which must not run twice, is sent on each after a PING found its
/// connection closed, not lost with it (a quorum error, with every master up).
#[tokio::test(flavor = "multi_thread")]
async fn a_release_after_the_masters_closed_the_idle_connections_goes_through() {
    let servers = masters(3);
    let k = key("idle-closed");
    let sem = Semaphore::open(options(&servers, &k).permits(2).lease(Duration::from_secs(60))).await.expect("open");
    let tokens: Vec<u64> = sem.acquire_n(1, false, None).await.unwrap().iter().map(|p| p.token).collect();
    assert_eq!(tokens.len(), 1);
    let mut probes = Vec::new();
    for server in &servers {
        let mut probe = server.client().get_multiplexed_async_connection().await.expect("conn");
        let _: () = redis::cmd("CONFIG").arg("SET").arg("timeout").arg("1").query_async(&mut probe).await.unwrap();
        probes.push(probe);
    }
    // Every connection but the probes', which all ask every 50 ms, is closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut closed = 0;
        for probe in &mut probes {
            let info: String = redis::cmd("INFO").arg("clients").query_async(probe).await.unwrap();
            closed += usize::from(info.contains("connected_clients:1\r"));
        }
        if closed == probes.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the masters did not close the idle connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sem.release_permits(tokens).await.expect("the release went through");
    assert_eq!(sem.value().await.unwrap(), 2, "the permit is back");
}
