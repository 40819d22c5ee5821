//! The semaphore's semantics through the component, against real redis-server (and
//! valkey-server when installed), each test on its own throwaway server.

use std::time::{Duration, Instant};

use pottery_semaphore_core::{Config, Semaphore as NativeSemaphore};
use pottery_semaphore_host::{BlockingSemaphore, Error, Semaphore};
use pottery_semaphore_tests::native::NativeTransport;
use pottery_semaphore_tests::monitor::{Request, Requests};
use pottery_semaphore_tests::{assert_time_outs_are_prompt, eventually, key, Flavor, Server};

async fn open(server: &Server, key: &str, permits: i64) -> Semaphore {
    Semaphore::open(server.options(key).permits(permits)).await.expect("open")
}

fn servers() -> Vec<Server> {
    Flavor::all().into_iter().map(Server::start).collect()
}

async fn commandstat(server: &Server, command: &str) -> u64 {
    let mut conn = server.client().get_multiplexed_async_connection().await.expect("conn");
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn first_opener_initialises_and_later_values_do_not_overwrite() {
    for server in servers() {
        let k = key("init");
        let first = open(&server, &k, 3).await;
        assert!(first.created());
        let second = open(&server, &k, 7).await;
        assert!(!second.created());
        assert_eq!(second.opened_initial(), 3);
        assert_eq!(second.initial_value().await.unwrap(), 3);
        assert_eq!(second.value().await.unwrap(), 3);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn value_locked_and_non_blocking_acquire() {
    for server in servers() {
        let sem = open(&server, &key("value"), 2).await;
        assert!(!sem.locked().await.unwrap());
        assert!(sem.acquire(false, None).await.unwrap());
        assert_eq!(sem.value().await.unwrap(), 1);
        assert!(sem.acquire(false, None).await.unwrap());
        assert!(sem.locked().await.unwrap());
        let started = Instant::now();
        assert!(!sem.acquire(false, None).await.unwrap());
        assert!(started.elapsed() < Duration::from_millis(200), "non-blocking acquire must not wait");
        sem.release(2).await.unwrap();
        assert_eq!(sem.value().await.unwrap(), 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_is_honoured_promptly() {
    for server in servers() {
        let k = key("timeout");
        let holder = open(&server, &k, 1).await;
        assert!(holder.acquire(false, None).await.unwrap());
        let waiter = open(&server, &k, 1).await;
        assert_time_outs_are_prompt(&waiter).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn n_permits_are_taken_atomically_or_not_at_all() {
    for server in servers() {
        let k = key("atomic");
        let a = open(&server, &k, 3).await;
        let b = open(&server, &k, 3).await;
        assert!(a.acquire(false, None).await.unwrap());
        assert!(b.acquire_n(3, false, None).await.unwrap().is_empty());
        assert_eq!(b.value().await.unwrap(), 2, "a failed multi-permit acquire takes nothing");
        let got = b.acquire_n(2, false, None).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(b.value().await.unwrap(), 0);
        // A blocked acquire of 2 gets both at once when they are free, never one of them.
        let waiter = b.clone();
        let pending = tokio::spawn(async move { waiter.acquire_n(2, true, Some(5.0)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.release(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(a.value().await.unwrap(), 1, "one free permit stays free for the waiter of two");
        b.release_permits(got.iter().map(|p| p.token).collect()).await.unwrap();
        assert_eq!(pending.await.unwrap().unwrap().len(), 2);
        assert_eq!(a.value().await.unwrap(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn release_prefers_own_permits_then_others_oldest_first_who_learn_of_it() {
    for server in servers() {
        let k = key("release");
        let a = open(&server, &k, 3).await;
        let b = open(&server, &k, 3).await;
        assert!(a.acquire(false, None).await.unwrap());
        assert!(b.acquire(false, None).await.unwrap());
        assert!(b.acquire(false, None).await.unwrap());
        // b releases 1: its own.
        b.release(1).await.unwrap();
        assert_eq!(b.held().len(), 1);
        assert_eq!(a.held().len(), 1);
        // b releases 2: its own, then a's (fungible, as in threading.Semaphore).
        b.release(2).await.unwrap();
        assert!(b.held().is_empty());
        assert_eq!(a.value().await.unwrap(), 3);
        a.refresh().await.unwrap();
        let lost = a.take_lost();
        assert_eq!(lost.len(), 1, "a learns its permit was released by another holder");
        assert!(a.held().is_empty());
    }
}

/// A block's grant (`acquire_n_spared`) is spared from the moment the handle holds it, with no
/// step of the caller's: `release` takes the handle's other permits first, then it; `unspare`
/// ends the sparing, and `acquire_n_until` spares as well.
#[tokio::test(flavor = "multi_thread")]
async fn a_spared_grant_is_released_last_from_the_moment_it_is_granted() {
    let server = Server::start(Flavor::Redis);
    let sem = open(&server, &key("spared"), 4).await;
    let tokens = |permits: Vec<pottery_semaphore_host::Permit>| permits.into_iter().map(|p| p.token).collect::<Vec<_>>();
    let held = |sem: &Semaphore| sem.held().into_iter().map(|p| p.token).collect::<Vec<_>>();
    let block = tokens(sem.acquire_n_spared(1, false, None).await.unwrap());
    let plain = tokens(sem.acquire_n(1, false, None).await.unwrap());
    assert!(block[0] < plain[0], "the block's permit has the lower token, which release takes first unless spared");
    sem.release(1).await.unwrap();
    assert_eq!(held(&sem), block, "release took the plain permit, not the block's");
    sem.release(1).await.unwrap();
    assert!(sem.held().is_empty(), "with nothing else held, release takes the spared one too");

    let block = tokens(sem.acquire_n_spared(1, false, None).await.unwrap());
    assert_eq!(sem.release_permits(block.clone()).await.unwrap(), block, "the block gives back its own");

    let block = tokens(sem.acquire_n_spared(1, false, None).await.unwrap());
    let plain = tokens(sem.acquire_n(1, false, None).await.unwrap());
    sem.unspare(&block);
    sem.release(1).await.unwrap();
    assert_eq!(held(&sem), plain, "unspared, the lower token goes first again");
    sem.release(1).await.unwrap();

    let stop = std::future::pending::<()>();
    let raced = tokens(sem.acquire_n_until(1, false, None, true, stop).await.unwrap());
    let plain = tokens(sem.acquire_n(1, false, None).await.unwrap());
    sem.release(1).await.unwrap();
    assert_eq!(held(&sem), raced, "acquire_n_until spares as acquire_n_spared does");
    assert!(!plain.contains(&raced[0]));
    sem.give_back_soon(raced);
    assert!(sem.held().is_empty(), "given back at once");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sem.value().await.unwrap() != 4 {
        assert!(Instant::now() < deadline, "the given back permit was released in the background");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A permit is the caller's only if Redis records it under the caller's holder id: naming
/// another holder's token (the protocol run natively, so the test can name any) gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn naming_another_holders_token_does_not_make_it_yours() {
    for server in servers() {
        let k = key("not-mine");
        let a = open(&server, &k, 2).await;
        let token = a.acquire_n(1, false, None).await.unwrap()[0].token;
        let config = Config {
            key: k.clone(),
            value: 2,
            bounded: true,
            lease_ms: 10_000,
            holder: "intruder".into(),
            guard_fresh_server: false,
            existed: false,
            create: false,
            masters: 1,
            raise_on_redis_errors: false,
            replicate: false,
        };
        let (b, _) = NativeSemaphore::open(NativeTransport::connect(&server.url()).unwrap(), config).unwrap();
        assert!(b.release_permits(&[token]).unwrap().is_empty(), "b cannot release a's permit by its token");
        assert!(b.refresh(&[token]).unwrap().is_empty(), "nor extend it");
        let released = b.release(1, &[token], 0).unwrap();
        assert!(released.own.is_empty(), "a named token is released as b's own only if b holds it");
        assert_eq!(released.others, 1, "a's permit went as anyone's (fungible), and is reported so");
        a.refresh().await.unwrap();
        assert_eq!(a.take_lost().len(), 1, "a learns it lost the permit");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bounded_release_beyond_initial_value_is_a_typed_error_and_changes_nothing() {
    for server in servers() {
        let k = key("bounded");
        let sem = open(&server, &k, 2).await;
        assert!(sem.acquire(false, None).await.unwrap());
        let err = sem.release(2).await.unwrap_err();
        assert_eq!(err, Error::Bounded { key: k.clone(), current: 1, initial: 2 });
        assert_eq!(sem.value().await.unwrap(), 1, "a refused release changes nothing");
        assert_eq!(sem.held().len(), 1);
        assert!(matches!(sem.release(0).await, Err(Error::InvalidArgument(m)) if m == "n must be >= 1"));
        assert!(matches!(sem.release(-3).await, Err(Error::InvalidArgument(_))));
        sem.release(1).await.unwrap();
        assert!(matches!(sem.release(1).await, Err(Error::Bounded { current: 2, initial: 2, .. })));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unbounded_release_beyond_use_raises_capacity() {
    for server in servers() {
        let sem =
            Semaphore::open(server.options(&key("unbounded")).permits(1).bounded(false)).await.unwrap();
        sem.release(2).await.unwrap();
        assert_eq!(sem.value().await.unwrap(), 3);
        assert_eq!(sem.initial_value().await.unwrap(), 1, "the initial value stays what it was");
        assert_eq!(sem.status().await.unwrap().capacity, 3);
        assert_eq!(sem.acquire_n(3, false, None).await.unwrap().len(), 3);
    }
}

/// Growth has a ceiling, the most permits a semaphore can have: a release that would pass it is
/// refused as an argument error and changes nothing, the caller's own permit included. Before,
/// it released the permit and grew by less than asked, with no error.
#[tokio::test(flavor = "multi_thread")]
async fn an_unbounded_release_past_the_most_permits_is_refused_and_drops_nothing() {
    use pottery_semaphore_core::validate::MAX_VALUE;
    for server in servers() {
        let options = server.options(&key("unbounded-max")).permits(MAX_VALUE - 1).bounded(false);
        let sem = Semaphore::open(options).await.unwrap();
        let token = sem.acquire_n(1, false, None).await.unwrap()[0].token;
        let refused = sem.release(3).await;
        assert!(matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains("nothing was released")), "{refused:?}");
        assert_eq!(sem.held().iter().map(|p| p.token).collect::<Vec<_>>(), vec![token], "the handle dropped its permit");
        assert_eq!(sem.status().await.unwrap().capacity, (MAX_VALUE - 1) as u64);
        assert_eq!(sem.value().await.unwrap(), (MAX_VALUE - 2) as u64, "the permit was released in Redis");
        sem.release(2).await.unwrap();
        assert_eq!(sem.status().await.unwrap().capacity, MAX_VALUE as u64, "growth up to the ceiling");
        assert!(sem.held().is_empty());
    }
}

/// A caller stopped before it asks (a Swift task cancelled already) takes nothing, not even a
/// permit given back later: the next grant's token is the one after the last.
#[tokio::test(flavor = "multi_thread")]
async fn an_acquire_stopped_before_it_starts_sends_nothing() {
    let server = Server::start(Flavor::Redis);
    let sem = open(&server, &key("stopped"), 1).await;
    let first = sem.acquire_n(1, false, None).await.unwrap()[0].token;
    sem.release(1).await.unwrap();
    let stopped = sem.acquire_n_until(1, true, None, false, std::future::ready(())).await;
    assert!(matches!(stopped, Err(Error::Cancelled)), "{stopped:?}");
    // Time for an acquire started in the background (and its give-back) to have run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = sem.acquire_n(1, false, None).await.unwrap()[0].token;
    assert_eq!(next, first + 1, "the stopped acquire was granted a permit");
}

#[tokio::test(flavor = "multi_thread")]
async fn fencing_tokens_increase_across_holders_and_grants() {
    for server in servers() {
        let k = key("fencing");
        let a = open(&server, &k, 2).await;
        let b = open(&server, &k, 2).await;
        let mut last = 0;
        for _ in 0..5 {
            for sem in [&a, &b] {
                let permits = sem.acquire_n(1, true, Some(1.0)).await.unwrap();
                assert!(permits[0].token > last, "token {} not above {last}", permits[0].token);
                last = permits[0].token;
                assert!(permits[0].ttl_ms > 0 && permits[0].deadline_ms > 0);
                sem.release(1).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn permit_inspection_and_lease_refresh() {
    let server = Server::start(Flavor::Redis);
    let sem = Semaphore::open(server.options(&key("inspect")).permits(2).lease(Duration::from_millis(600)))
        .await
        .unwrap();
    let got = sem.acquire_n(1, false, None).await.unwrap();
    let listed = sem.permits().await.unwrap();
    assert_eq!(listed.iter().map(|p| p.token).collect::<Vec<_>>(), vec![got[0].token]);
    assert!(listed[0].ttl_ms <= 600);
    // Held for three leases: the background refresher keeps it alive.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(sem.permits().await.unwrap().len(), 1);
    assert!(sem.take_lost().is_empty());
    let status = sem.status().await.unwrap();
    assert_eq!(status.holders.len(), 1);
    assert_eq!(status.holders[0].holder, sem.holder_id());
    assert_eq!(status.available, 1);
}

/// A handle may hold more permits than one call takes (10,000): the refresher then extends them
/// call by call. It used to send them all at once, be refused, and let every lease lapse while
/// the handle still counted them as held, reporting nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_refresher_keeps_more_permits_than_one_call_takes() {
    let server = Server::start(Flavor::Redis);
    // A lease long enough for a refresh of 10,000 permits (tens of ms) to come in time on a
    // busy machine: at 400 ms, two busy loops beside it made leases lapse.
    let sem = Semaphore::open(server.options(&key("many")).permits(10_001).lease(Duration::from_millis(1500)))
        .await
        .unwrap();
    assert_eq!(sem.acquire_n(10_000, false, None).await.unwrap().len(), 10_000);
    assert_eq!(sem.acquire_n(1, false, None).await.unwrap().len(), 1);
    // Three leases: only the refresher keeps them.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let status = sem.status().await.unwrap();
    assert_eq!((status.available, status.holders.len()), (0, 10_001), "every permit still held in Redis");
    assert_eq!(sem.held().len(), 10_001);
    assert!(sem.take_lost().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_never_resurrects_an_expired_permit_and_reports_it_lost() {
    let server = Server::start(Flavor::Redis);
    let k = key("expire");
    let sem = open(&server, &k, 1).await;
    let token = sem.acquire_n(1, false, None).await.unwrap()[0].token;
    // Make the lease end now, as if this process had been paused past it (a permit is the
    // member "token:holder" of the leases set).
    let mut conn = server.connection();
    let member = format!("{token}:{}", sem.holder_id());
    let changed: i64 = redis::cmd("ZADD").arg(format!("pottery-semaphore:{{{k}}}:leases")).arg("XX").arg("CH").arg(1).arg(member).query(&mut conn).unwrap();
    assert_eq!(changed, 1, "the permit's lease was found and ended");
    sem.refresh().await.unwrap();
    assert_eq!(sem.take_lost().iter().map(|p| p.token).collect::<Vec<_>>(), vec![token]);
    assert!(sem.permits().await.unwrap().is_empty(), "the expired permit stays expired");
    assert_eq!(sem.value().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn waiter_wakes_right_after_a_release() {
    for server in servers() {
        let k = key("wake");
        let holder = open(&server, &k, 1).await;
        let waiter = open(&server, &k, 1).await;
        for _ in 0..5 {
            assert!(holder.acquire(false, None).await.unwrap());
            let w = waiter.clone();
            let pending = tokio::spawn(async move {
                let ok = w.acquire(true, Some(Duration::from_secs(5))).await.unwrap();
                (ok, Instant::now())
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            let released = Instant::now();
            holder.release(1).await.unwrap();
            let (ok, woke) = pending.await.unwrap();
            assert!(ok);
            let latency = woke.duration_since(released);
            assert!(latency < Duration::from_millis(200), "woke {latency:?} after the release");
            waiter.release(1).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waiters_are_served_in_arrival_order() {
    for server in servers() {
        let k = key("fifo");
        let holder = open(&server, &k, 1).await;
        assert!(holder.acquire(false, None).await.unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for i in 0..5 {
            let sem = open(&server, &k, 1).await;
            let tx = tx.clone();
            waiters.push(tokio::spawn(async move {
                assert!(sem.acquire(true, Some(Duration::from_secs(10))).await.unwrap());
                tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                sem.release(1).await.unwrap();
            }));
            // Let waiter i join the queue before i + 1.
            let deadline = Instant::now() + Duration::from_secs(5);
            while holder.status().await.unwrap().waiters.len() < i + 1 {
                assert!(Instant::now() < deadline, "waiter {i} never queued");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        holder.release(1).await.unwrap();
        for w in waiters {
            w.await.unwrap();
        }
        let order: Vec<usize> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
    }
}

/// Every request the semaphore's connections send counts (MONITOR shows them all), not only
/// scripts: a PING, a clock read or a second script would each be another round trip. (A
/// connection idle for over a second is checked with a PING before a release, by design: a
/// round in which the machine stalled that long between the two calls is taken again.)
#[tokio::test(flavor = "multi_thread")]
async fn uncontended_acquire_and_release_are_one_round_trip_each() {
    let server = Server::start(Flavor::Redis);
    let mut requests = Requests::start(&server);
    let commands = |seen: &[Request]| seen.iter().map(|r| r.command.clone()).collect::<Vec<_>>();
    let stalled = |gap: Duration, seen: &[Request]| gap > Duration::from_millis(900) && seen.iter().any(|r| r.command == "PING");

    let sem = open(&server, &key("rtt"), 1).await;
    // Warm up: scripts loaded, connections open.
    assert!(sem.acquire(false, None).await.unwrap());
    sem.release(1).await.unwrap();
    for round in 1.. {
        requests.since_last();
        assert!(sem.acquire(true, None).await.unwrap());
        let acquired_at = Instant::now();
        let acquire = requests.since_last();
        let gap = acquired_at.elapsed();
        sem.release(1).await.unwrap();
        let release = requests.since_last();
        if stalled(gap, &release) && round < 3 {
            continue;
        }
        assert_eq!(commands(&acquire), ["EVALSHA"], "async acquire: {acquire:?}");
        assert_eq!(commands(&release), ["EVALSHA"], "async release: {release:?}");
        break;
    }

    // The blocking API on one server runs on the caller's thread, over connections of its own.
    let blocking = tokio::task::spawn_blocking(move || {
        let sem = BlockingSemaphore::open(server.options(&key("rtt-blocking")).permits(1)).unwrap();
        assert!(sem.acquire(false, None).unwrap());
        sem.release(1).unwrap();
        for round in 1.. {
            requests.since_last();
            assert!(sem.acquire(true, None).unwrap());
            let acquired_at = Instant::now();
            let acquire = requests.since_last();
            let gap = acquired_at.elapsed();
            sem.release(1).unwrap();
            let release = requests.since_last();
            if stalled(gap, &release) && round < 3 {
                continue;
            }
            assert_eq!(commands(&acquire), ["EVALSHA"], "blocking acquire: {acquire:?}");
            assert_eq!(commands(&release), ["EVALSHA"], "blocking release: {release:?}");
            break;
        }
    });
    blocking.await.unwrap();
}

/// The uncontended acquire and release return before the general path runs (acquire_fast.lua,
/// release_fast.lua). Each case here is one they must hand over to it.
#[tokio::test(flavor = "multi_thread")]
async fn the_fast_paths_give_way_to_the_queue_quarantine_and_ended_leases() {
    for server in servers() {
        let k = key("fast");
        let (meta, leases) = (format!("pottery-semaphore:{{{k}}}:meta"), format!("pottery-semaphore:{{{k}}}:leases"));
        let mut conn = server.connection();
        let end_lease = |conn: &mut redis::Connection, sem: &Semaphore, token: u64| {
            let member = format!("{token}:{}", sem.holder_id());
            let changed: i64 = redis::cmd("ZADD").arg(&leases).arg("XX").arg("CH").arg(1).arg(member).query(conn).unwrap();
            assert_eq!(changed, 1, "the lease was found and ended");
        };
        let a = open(&server, &k, 2).await;
        let b = open(&server, &k, 2).await;
        let c = open(&server, &k, 2).await;

        // A free permit is not for a newcomer while a waiter queued first (strict FIFO).
        assert!(a.acquire(false, None).await.unwrap());
        let waiter = b.clone();
        let pending = tokio::spawn(async move { waiter.acquire_n(2, true, Some(5.0)).await });
        while a.status().await.unwrap().waiters.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!c.acquire(false, None).await.unwrap(), "overtook a queued waiter");
        a.release(1).await.unwrap();
        let both = pending.await.unwrap().unwrap();
        assert_eq!(both.len(), 2);
        b.release(2).await.unwrap();

        // Nothing is granted while the semaphore is quarantined, free permits or not.
        let _: () = redis::cmd("HSET").arg(&meta).arg("quarantine").arg(i64::MAX / 2).query(&mut conn).unwrap();
        assert!(!c.acquire(false, None).await.unwrap(), "granted during quarantine");
        let _: () = redis::cmd("HSET").arg(&meta).arg("quarantine").arg(0).query(&mut conn).unwrap();

        // An ended lease does not count against the capacity.
        let t1 = a.acquire_n(1, false, None).await.unwrap()[0].token;
        let t2 = a.acquire_n(1, false, None).await.unwrap()[0].token;
        end_lease(&mut conn, &a, t1);
        assert!(c.acquire(false, None).await.unwrap(), "an ended lease still counted");

        // Releasing a permit whose lease ended releases another holder's live one instead
        // (permits are fungible, oldest first): the ended one is not released as if it were live.
        end_lease(&mut conn, &a, t2);
        a.release(1).await.unwrap();
        assert_eq!(a.value().await.unwrap(), 2, "c's permit went to a's release");
        c.refresh().await.unwrap();
        assert_eq!(c.take_lost().len(), 1, "c learns its permit was released by another holder");
        a.refresh().await.unwrap();
        let mut lost: Vec<u64> = a.take_lost().iter().map(|p| p.token).collect();
        lost.sort_unstable();
        assert_eq!(lost, vec![t1, t2], "a's ended permits are reported lost, not released");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_shares_the_hash_tag() {
    let server = Server::start(Flavor::Redis);
    let k = key("tag");
    let holder = open(&server, &k, 1).await;
    assert!(holder.acquire(false, None).await.unwrap());
    let waiter = open(&server, &k, 1).await;
    let w = waiter.clone();
    let pending = tokio::spawn(async move { w.acquire(true, Some(Duration::from_secs(5))).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = server.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    // meta, leases, queue, waiters (and the waiter's wake-up list once it is served).
    assert!(keys.len() >= 4, "{keys:?}");
    for key in &keys {
        assert!(key.starts_with(&format!("pottery-semaphore:{{{k}}}:")), "{key}");
    }
    holder.release(1).await.unwrap();
    assert!(pending.await.unwrap().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn release_on_the_same_handle_goes_through_while_an_acquire_waits() {
    let server = Server::start(Flavor::Redis);
    let sem = open(&server, &key("same-handle"), 1).await;
    assert!(sem.acquire(false, None).await.unwrap());
    let waiting = sem.clone();
    let pending = tokio::spawn(async move { waiting.acquire(true, Some(Duration::from_secs(5))).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    sem.release(1).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(200), "release queued behind the blocked acquire");
    assert!(pending.await.unwrap().unwrap());
    assert_eq!(sem.held().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_an_acquire_future_leaks_nothing_and_the_handle_stays_usable() {
    let server = Server::start(Flavor::Redis);
    let k = key("cancel");
    let holder = open(&server, &k, 1).await;
    assert!(holder.acquire(false, None).await.unwrap());
    let sem = open(&server, &k, 1).await;
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_millis(150), sem.acquire(true, None)).await;
        assert!(r.is_err(), "the acquire should still be waiting");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = holder.status().await.unwrap();
    assert!(status.waiters.is_empty(), "cancelled waiters left the queue: {:?}", status.waiters);
    // A cancel that races with a grant gives the permit back.
    let racing = sem.clone();
    let pending = tokio::spawn(async move { racing.acquire(true, None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.release(1).await.unwrap();
    pending.abort();
    let _ = pending.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = holder.status().await.unwrap();
    assert!(status.waiters.is_empty());
    assert!(
        status.holders.len() == usize::from(!sem.held().is_empty()),
        "a permit is held only if the handle knows it: {status:?}"
    );
    sem.release_permits(sem.held().iter().map(|p| p.token).collect()).await.unwrap();
    assert_eq!(holder.value().await.unwrap(), 1);
    assert!(sem.acquire(false, None).await.unwrap(), "the handle stays usable");
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_last_handle_gives_its_permits_back() {
    let server = Server::start(Flavor::Redis);
    let k = key("drop");
    let watcher = open(&server, &k, 2).await;
    {
        let sem = open(&server, &k, 2).await;
        assert_eq!(sem.acquire_n(2, false, None).await.unwrap().len(), 2);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while watcher.value().await.unwrap() != 2 {
        assert!(Instant::now() < deadline, "permits of a dropped handle were not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_change_the_number_of_permits_without_taking_any_away() {
    let server = Server::start(Flavor::Redis);
    let k = key("operators");
    let sem = open(&server, &k, 2).await;
    assert_eq!(sem.acquire_n(2, false, None).await.unwrap().len(), 2);
    // A waiter for one more is served as soon as an operator adds a permit.
    let waiter = open(&server, &k, 2).await;
    let w = waiter.clone();
    let pending = tokio::spawn(async move { w.acquire(true, Some(Duration::from_secs(5))).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sem.add_permits(1).await.unwrap(), 3);
    assert!(pending.await.unwrap().unwrap());
    assert_eq!(sem.initial_value().await.unwrap(), 3);
    // Lowering below the permits in use takes nothing away; nothing is granted until below it.
    assert_eq!(sem.set_permits(1).await.unwrap(), 1);
    assert_eq!(sem.value().await.unwrap(), 0);
    assert!(!waiter.acquire(false, None).await.unwrap());
    sem.release(2).await.unwrap();
    assert_eq!(sem.value().await.unwrap(), 0, "the waiter's permit still fills the one left");
    waiter.release(1).await.unwrap();
    assert_eq!(sem.value().await.unwrap(), 1);
    assert!(matches!(sem.add_permits(-2).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(sem.set_permits(-1).await, Err(Error::InvalidArgument(_))));
    assert_eq!(sem.status().await.unwrap().capacity, 1, "a refused change changes nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn inspecting_tools_do_not_create_semaphores() {
    let server = Server::start(Flavor::Redis);
    let k = key("inspect-only");
    let r = Semaphore::open(server.options(&k).create(false)).await;
    assert!(matches!(r, Err(Error::InvalidArgument(m)) if m.contains("no semaphore")));
    let mut conn = server.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    open(&server, &k, 4).await;
    let viewer = Semaphore::open(server.options(&k).create(false)).await.unwrap();
    assert_eq!(viewer.status().await.unwrap().capacity, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn scripts_flushed_from_redis_are_loaded_again() {
    let server = Server::start(Flavor::Redis);
    let sem = open(&server, &key("flush"), 1).await;
    assert!(sem.acquire(false, None).await.unwrap());
    let mut conn = server.connection();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    sem.release(1).await.unwrap();
    assert!(commandstat(&server, "script|load").await >= 1, "the guest loaded the script again");
    assert!(sem.acquire(false, None).await.unwrap());
}

/// A release runs in Redis but its reply is lost: Redis holds it (CLIENT PAUSE) while a proxy
/// cuts the network, so the reply is dropped, and the healed network closes the connection. The
/// caller gets `Unreachable`. Sent a second time, the release would no longer find the caller's
/// permit and would give back another holder's (permits are fungible), so the host must not send
/// it again. Through both paths: the async API and the blocking one, which runs on the caller's
/// thread over its own connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_whose_reply_was_lost_is_not_sent_again() {
    use pottery_semaphore_host::{BlockingSemaphore, Options};
    use pottery_semaphore_tests::proxy::Proxy;
    let server = Server::start(Flavor::Redis);
    let proxy = Proxy::start(server.port);
    let (ka, kb) = (key("lost-reply-async"), key("lost-reply-blocking"));
    let via_proxy = |k: &str| Options::new(proxy.url(), k).guard_fresh_server(false).permits(2);
    let (mine_async, other_async) = (Semaphore::open(via_proxy(&ka)).await.unwrap(), open(&server, &ka, 2).await);
    let (mine_blocking, other_blocking) = (Semaphore::open(via_proxy(&kb)).await.unwrap(), open(&server, &kb, 2).await);
    for sem in [&mine_async, &other_async, &mine_blocking, &other_blocking] {
        assert!(sem.acquire(false, None).await.unwrap());
    }
    // Redis has the release script (a NOSCRIPT reply would be lost instead).
    mine_async.release(1).await.unwrap();
    assert!(mine_async.acquire(false, None).await.unwrap());
    let mine_blocking = BlockingSemaphore::from(mine_blocking);
    // Its guest instance for the caller's thread, and that instance's connection, exist first.
    let mine_blocking = tokio::task::spawn_blocking(move || mine_blocking.value().map(|_| mine_blocking)).await.unwrap().unwrap();
    let mut conn = server.client().get_multiplexed_async_connection().await.expect("conn");
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1_000).arg("WRITE").query_async(&mut conn).await.expect("CLIENT PAUSE");
    let blocking = tokio::task::spawn_blocking(move || mine_blocking.release(1));
    let releasing = tokio::spawn(async move { mine_async.release(1).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1_300)).await; // the releases ran; their replies were dropped
    proxy.restore();
    let released = releasing.await.unwrap();
    assert!(matches!(released, Err(Error::Unreachable(_))), "async: {released:?}");
    let released = blocking.await.unwrap();
    assert!(matches!(released, Err(Error::Unreachable(_))), "blocking: {released:?}");
    for (path, other) in [("async", &other_async), ("blocking", &other_blocking)] {
        assert_eq!(other.permits().await.unwrap().len(), 1, "{path}: the release ran twice and took the other holder's permit");
        assert_eq!(other.value().await.unwrap(), 1, "{path}: the caller's own permit was released once");
    }
}

/// A time-out counts the time a wait spends connecting: a server slow to take on the new
/// connection a blocking pop needs (remote, TLS, a lost SYN) must not push the end of the wait
/// back by that much, on the blocking API (its own connection on the caller's thread) as on
/// the async one.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_connection_for_the_wait_does_not_stretch_the_time_out() {
    use pottery_semaphore_host::{BlockingSemaphore, Options};
    use pottery_semaphore_tests::proxy::Proxy;
    let server = Server::start(Flavor::Redis);
    let proxy = Proxy::start(server.port);
    let k = key("slow-pop-connection");
    let holder = open(&server, &k, 1).await;
    assert!(holder.acquire(false, None).await.unwrap());
    let via_proxy = || Options::new(proxy.url(), &k).guard_fresh_server(false).permits(1);
    let blocking = BlockingSemaphore::open(via_proxy()).unwrap();
    let on_async = Semaphore::open(via_proxy()).await.unwrap();
    // Their command connections are up; the wait's own are not.
    let (blocking, _) = tokio::task::spawn_blocking(move || blocking.value().map(|v| (blocking, v))).await.unwrap().unwrap();
    on_async.value().await.unwrap();
    proxy.delay_new_connections(Duration::from_millis(1_500));
    let timeout = Duration::from_millis(300);
    let (granted, took) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        (blocking.acquire(true, Some(timeout)), started.elapsed())
    })
    .await
    .unwrap();
    assert!(!granted.unwrap(), "the only permit is held");
    assert!(took < timeout + Duration::from_millis(200), "blocking: timed out after {took:?} (time-out {timeout:?})");
    let started = Instant::now();
    assert!(!on_async.acquire(true, Some(timeout)).await.unwrap());
    let took = started.elapsed();
    assert!(took < timeout + Duration::from_millis(200), "async: timed out after {took:?} (time-out {timeout:?})");
}

/// A permit whose release by name failed (Redis out of reach) is released by the refresher in
/// the background; naming it again answers at once. Python's `__exit__` names a block's permits
/// again after each signal's handler that raises: each attempt waited out the response time-out
/// again, so repeated Ctrl-C kept the exit hanging.
#[tokio::test(flavor = "multi_thread")]
async fn naming_a_permit_whose_release_failed_again_does_not_wait_again() {
    use pottery_semaphore_host::Options;
    use pottery_semaphore_tests::proxy::Proxy;
    let server = Server::start(Flavor::Redis);
    let proxy = Proxy::start(server.port);
    // A lease long enough that its end cannot pass for the release: the refresher's retries come
    // every 7 s (a third of it), the check below gives up 10 s after Redis is back, ~15 s in.
    let lease = Duration::from_secs(21);
    let sem = Semaphore::open(Options::new(proxy.url(), key("named-again")).guard_fresh_server(false).lease(lease)).await.unwrap();
    let granted = Instant::now();
    let token = sem.acquire_n(1, false, None).await.unwrap()[0].token;
    proxy.cut();
    a_failed_release_is_not_sent_again(&sem, token).await;
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    assert!(deadline < granted + lease, "the check must end before the lease would free the permit");
    while sem.value().await.unwrap() != 1 {
        assert!(Instant::now() < deadline, "the refresher did not release it in the background");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Releases `token` by name with Redis out of reach (an error), then again: that answers at
/// once, releasing nothing.
async fn a_failed_release_is_not_sent_again(sem: &Semaphore, token: u64) {
    let first = Instant::now();
    assert!(sem.release_permits(vec![token]).await.is_err(), "Redis is out of reach");
    let waited = first.elapsed();
    let again = Instant::now();
    assert!(sem.release_permits(vec![token]).await.unwrap().is_empty());
    assert!(again.elapsed() < Duration::from_millis(500), "named again, it waited {:?} (the first {waited:?})", again.elapsed());
}

/// A server, a proxy to it (to cut it off), a handle on a semaphore `name` with this `lease`
/// through the proxy, and the token of the one permit it holds.
async fn held_through_a_proxy(name: &str, lease: Duration) -> (Server, pottery_semaphore_tests::proxy::Proxy, Semaphore, u64) {
    let server = Server::start(Flavor::Redis);
    let proxy = pottery_semaphore_tests::proxy::Proxy::start(server.port);
    let options = pottery_semaphore_host::Options::new(proxy.url(), key(name)).guard_fresh_server(false).lease(lease);
    let sem = Semaphore::open(options).await.unwrap();
    let token = sem.acquire_n(1, false, None).await.unwrap()[0].token;
    (server, proxy, sem, token)
}

/// As above for a permit already reported lost (its lease ended while Redis was out of reach,
/// so the refresher gives it back): a caller's release of it that failed is not sent again
/// either. It was, after every Ctrl-C, each time waiting out the response time-out.
#[tokio::test(flavor = "multi_thread")]
async fn naming_a_lost_permit_whose_release_failed_again_does_not_wait_again() {
    let lease = Duration::from_millis(1500);
    let (_server, proxy, sem, token) = held_through_a_proxy("lost-named-again", lease).await;
    proxy.cut();
    tokio::time::timeout(lease + Duration::from_secs(2), sem.lost()).await.expect("reported lost");
    assert_eq!(sem.take_lost().iter().map(|p| p.token).collect::<Vec<_>>(), [token]);
    a_failed_release_is_not_sent_again(&sem, token).await;
}

/// Redis out of reach: refreshes fail, and Redis cannot say that the lease ended. The holder must
/// learn it when the lease ends all the same (by its own clock), not once Redis answers again,
/// maybe never: by then another process may hold the permit.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_ends_while_redis_is_out_of_reach_is_reported_lost() {
    let lease = Duration::from_millis(1500);
    let (_server, proxy, sem, token) = held_through_a_proxy("lease-out-of-reach", lease).await;
    let granted = Instant::now();
    proxy.cut();
    let reported = tokio::time::timeout(lease + Duration::from_secs(2), sem.lost()).await;
    let after = granted.elapsed();
    assert!(reported.is_ok(), "not reported lost {after:?} after the grant (lease {lease:?})");
    // Not believed valid for longer than Redis keeps it: the lease, less 1 % and 2 ms, from
    // before the grant (with a little for the watch's timer).
    assert!(after < lease + lease / 20, "reported {after:?} after the grant, the lease being {lease:?}");
    assert!(after > lease / 2, "reported {after:?} after the grant: refreshes were due, and the lease ran on");
    assert_eq!(sem.take_lost().iter().map(|p| p.token).collect::<Vec<_>>(), [token]);
    assert!(sem.held().is_empty());
    proxy.restore();
}

/// A release still waiting for Redis when a lease ends by the holder's clock: the lease watch
/// passes over the permit (the release settles it). Refused in the end (`Bounded`: the lease
/// ended in Redis too), the release leaves it held, and the loss must be reported then, not a
/// third of a lease later, when the watch would have looked again.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_that_ends_while_its_release_waits_is_reported_lost_when_that_fails() {
    let server = Server::start(Flavor::Redis);
    let lease = Duration::from_secs(3);
    let sem = Semaphore::open(server.options(&key("release-outlived")).permits(1).lease(lease)).await.unwrap();
    let token = sem.acquire_n(1, false, None).await.unwrap()[0].token;
    let granted = Instant::now();
    let mut conn = server.client().get_multiplexed_async_connection().await.expect("conn");
    // Scripts wait from now until past the lease's end: the refreshes, then the release.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(3_400).arg("WRITE").query_async(&mut conn).await.expect("CLIENT PAUSE");
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(granted.elapsed())).await;
    let released = sem.release(1).await;
    let settled = Instant::now();
    assert!(matches!(released, Err(Error::Bounded { .. })), "{released:?} after {:?}", granted.elapsed());
    assert!(granted.elapsed() > lease, "the release returned {:?} after the grant, before the lease ended", granted.elapsed());
    // Without the fix the watch looks again only at its next period, about 570 ms later.
    let reported = tokio::time::timeout(Duration::from_millis(300), async {
        while sem.held().iter().any(|p| p.token == token) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(reported.is_ok(), "still held {:?} after the release was refused", settled.elapsed());
    assert_eq!(sem.take_lost().iter().map(|p| p.token).collect::<Vec<_>>(), [token]);
}

async fn connections_received(server: &Server) -> u64 {
    let mut conn = server.client().get_multiplexed_async_connection().await.expect("conn");
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut conn).await.expect("info");
    info.lines().find_map(|l| l.strip_prefix("total_connections_received:")).and_then(|n| n.trim().parse().ok()).expect("total_connections_received")
}

/// A waiter beats every third of its lease (here every 300 ms). Those pops are ended by Redis,
/// not cut by the host, so they keep their connection: a few thousand waiters must not open a
/// connection each per heartbeat (and fill the client's ports with TIME_WAIT sockets). Only the
/// last pop, which ends at the caller's deadline, is timed by the host. Both paths.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiters_heartbeats_keep_their_pop_connection() {
    use pottery_semaphore_host::BlockingSemaphore;
    let server = Server::start(Flavor::Redis);
    let k = key("heartbeat-connections");
    let leased = || server.options(&k).permits(1).lease(Duration::from_millis(900));
    let holder = Semaphore::open(leased()).await.unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    let waiter = Semaphore::open(leased()).await.unwrap();
    let blocking = BlockingSemaphore::from(Semaphore::open(leased()).await.unwrap());
    waiter.value().await.unwrap();
    let blocking = tokio::task::spawn_blocking(move || blocking.value().map(|_| blocking)).await.unwrap().unwrap();
    let before = connections_received(&server).await;
    let w = waiter.clone();
    let waiting = tokio::spawn(async move { w.acquire(true, Some(Duration::from_secs(3))).await });
    let waiting_blocking = tokio::task::spawn_blocking(move || blocking.acquire(true, Some(Duration::from_secs(3))));
    assert!(!waiting.await.unwrap().unwrap(), "the holder kept its permit");
    assert!(!waiting_blocking.await.unwrap().unwrap());
    // Per waiter, its pop connection and a new one after each pop the host timed itself (those
    // ending near the deadline: one or two), and this test's own; a connection per heartbeat
    // would be about twenty.
    let opened = connections_received(&server).await - before;
    assert!(opened <= 8, "{opened} connections opened while two callers waited 3 s");
}

/// A handle opens further guest instances as it goes (two calls at once, its first blocking
/// call, a replacement after a trap), each running the opening script. After FLUSHALL wiped
/// the state while its permit was in use, such an instance must recreate the semaphore
/// quarantined, as every other script does, not free to grant a second holder at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_instance_of_a_handle_recreates_a_wiped_semaphore_quarantined() {
    for flavor in Flavor::all() {
        let server = Server::start(flavor);
        let k = key("wiped-new-instance");
        let sem = open(&server, &k, 1).await;
        assert!(sem.acquire(false, None).await.unwrap(), "{flavor:?}: the only permit was free");
        let _: () = redis::cmd("FLUSHALL").query(&mut server.connection()).unwrap();
        sem.discard_idle_instances();
        assert!(!sem.acquire(false, None).await.unwrap(), "{flavor:?}: granted again right after the wipe");
        let meta = pottery_semaphore_core::keys::Keys::new(&k).meta();
        let until: u64 = redis::cmd("HGET").arg(meta).arg("quarantine").query(&mut server.connection()).unwrap();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(until > now_ms + 5_000, "{flavor:?}: not quarantined for the 10 s lease: until {until}, now {now_ms}");
    }
}

/// Installs a handler that does nothing for SIGUSR2, which only the signal tests send.
#[allow(unsafe_code)] // libc: a signal handler
fn note_sigusr2() {
    extern "C" fn noted(_: libc::c_int) {}
    // SAFETY: a handler that does nothing is async-signal-safe; the action struct is zeroed and
    // its mask emptied before use.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = noted as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()), 0);
    }
}

/// Runs `f` on a thread of its own; returns that thread's id, to send it signals while the
/// returned handle is not joined, and the handle.
#[allow(unsafe_code)] // libc: the thread's own id
fn spawn_signallable<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> (libc::pthread_t, std::thread::JoinHandle<T>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).expect("send");
        f()
    });
    (rx.recv().expect("thread id"), handle)
}

/// Sends SIGUSR2 to `thread` (from `spawn_signallable`, not joined yet: it waits on Redis for
/// longer than the tests signal it), after `note_sigusr2`.
#[allow(unsafe_code)] // libc: a signal to one thread
fn send_sigusr2(thread: libc::pthread_t) {
    // SAFETY: the thread is alive (see above) and handles SIGUSR2.
    unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
}

/// A signal delivered to a thread blocked in `acquire` breaks its read from Redis (EINTR). The
/// wait goes on and keeps its place (a profiler's tick, a reload flag); within
/// `signals_end_waits`, as the Python SDK calls it so that Ctrl-C can act, it ends at once with
/// `Cancelled`, leaving the queue. Before, the first pop's broken read came back as Redis
/// unreachable, and for a while every signal ended the wait.
#[test]
fn a_signal_ends_a_blocking_wait_only_where_asked_to() {
    use pottery_semaphore_host::{signals_end_waits, BlockingSemaphore};
    note_sigusr2();
    let server = Server::start(Flavor::Redis);
    let k = key("eintr");
    let holder = BlockingSemaphore::open(server.options(&k).permits(1)).expect("open");
    assert!(holder.acquire(false, None).expect("acquire"));
    for ends in [false, true] {
        let waiter = BlockingSemaphore::open(server.options(&k).permits(1)).expect("open");
        let (thread, waiting) = spawn_signallable(move || {
            let started = Instant::now();
            let timeout = Some(Duration::from_millis(1500));
            let r = if ends { signals_end_waits(|| waiter.acquire(true, timeout)) } else { waiter.acquire(true, timeout) };
            (r, started.elapsed())
        });
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(200));
            send_sigusr2(thread);
        }
        let (r, took) = waiting.join().expect("waiter");
        if ends {
            assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
            assert!(took < Duration::from_millis(700), "ended {took:?} after it began");
        } else {
            assert_eq!(r, Ok(false), "the signals ended the wait");
            assert!(took >= Duration::from_millis(1400), "ended {took:?} after it began");
        }
        eventually(Duration::from_secs(2), "the waiter left the queue", || holder.status().expect("status").waiters.is_empty());
    }
}

/// A signal handled while a script's reply is on its way (the server busy in DEBUG SLEEP) must
/// not make the blocking API send the script again: it ran. Before, the broken read (EINTR) was
/// taken for a dropped connection and the script sent again on a new one: both runs could grant
/// a permit, the caller learning of one while the other stayed held for a lease; and within
/// `signals_end_waits` the first run's place in the queue was left behind, and the wait went on,
/// deaf to the signal. Now the signal waits for the reply, then ends the wait where it should.
#[test]
fn a_signal_during_a_script_neither_runs_it_twice_nor_goes_unheard() {
    use pottery_semaphore_host::{signals_end_waits, BlockingSemaphore};
    note_sigusr2();
    let server = Server::start_with(Flavor::Redis, &["--enable-debug-command", "yes"]);
    for ends in [false, true] {
        // Two permits, so that a script run twice shows as two holders; or one, held by
        // `other`, so that the acquire queues.
        let (k, permits) = if ends { (key("eintr-wait"), 1) } else { (key("eintr-script"), 2) };
        let other = BlockingSemaphore::open(server.options(&k).permits(permits)).expect("open");
        let sem = BlockingSemaphore::open(server.options(&k).permits(permits)).expect("open");
        sem.value().expect("value"); // connected
        // The acquire script loaded: else the run the signal interrupts is refused (NOSCRIPT).
        assert!(other.acquire(false, None).expect("acquire"));
        if !ends {
            other.release(1).expect("release");
        }
        let mut stall = server.connection();
        let sleeper = std::thread::spawn(move || redis::cmd("DEBUG").arg("SLEEP").arg("0.5").query::<()>(&mut stall));
        std::thread::sleep(Duration::from_millis(50));
        let (thread, caller) = spawn_signallable(move || {
            let started = Instant::now();
            let r = if ends { signals_end_waits(|| sem.acquire(true, Some(Duration::from_secs(3)))) } else { sem.acquire(false, None) };
            (r, started.elapsed(), sem)
        });
        std::thread::sleep(Duration::from_millis(150));
        send_sigusr2(thread); // its script waits for the server
        sleeper.join().expect("sleeper").expect("DEBUG SLEEP");
        let (r, took, sem) = caller.join().expect("caller");
        let status = other.status().expect("status");
        if ends {
            assert!(matches!(r, Err(Error::Cancelled)), "{r:?} after {took:?}");
            assert!(took < Duration::from_millis(1500), "ended {took:?} after it began");
            assert_eq!(status.waiters.len(), 0, "a waiter was left queued: {:?}", status.waiters);
            other.release(1).expect("release");
        } else {
            assert_eq!(r, Ok(true), "a free permit was refused after {took:?}");
            assert_eq!((sem.held().len(), status.holders.len()), (1, 1), "the script ran twice: {status:?}");
            sem.release(1).expect("release");
        }
    }
}

/// A signal that breaks a wait's BLPOP sends the pop again on a new connection, whose setup
/// reads the server's answers too: a second signal there (the server busy in DEBUG SLEEP) once
/// failed the acquire as if Redis were unreachable, leaving the queue. Now the setup holds
/// signals back like a script's round trip, and the wait goes on to its time-out.
#[test]
fn a_signal_while_a_pop_reconnects_does_not_fail_the_wait() {
    use pottery_semaphore_host::BlockingSemaphore;
    note_sigusr2();
    let server = Server::start_with(Flavor::Redis, &["--enable-debug-command", "yes"]);
    let k = key("eintr-reconnect");
    let holder = BlockingSemaphore::open(server.options(&k).permits(1)).expect("open");
    let waiter = BlockingSemaphore::open(server.options(&k).permits(1)).expect("open");
    assert!(holder.acquire(false, None).expect("acquire"));
    let (thread, waiting) = spawn_signallable(move || {
        let started = Instant::now();
        (waiter.acquire(true, Some(Duration::from_secs(3))), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300)); // in its BLPOP
    let mut stall = server.connection();
    let sleeper = std::thread::spawn(move || redis::cmd("DEBUG").arg("SLEEP").arg("1").query::<()>(&mut stall));
    for pause in [50, 100] {
        std::thread::sleep(Duration::from_millis(pause));
        send_sigusr2(thread);
    }
    sleeper.join().expect("sleeper").expect("DEBUG SLEEP");
    let (r, took) = waiting.join().expect("waiter");
    assert_eq!(r, Ok(false), "after {took:?}");
    assert!(took >= Duration::from_millis(2900), "ended {took:?} after it began");
}

/// With several masters (and on a Cluster) a blocking acquire waits on the runtime's threads,
/// the caller's thread parked: inside `signals_end_waits` a signal to it ends the wait there
/// too. Before, the park slept through it (std waits again after EINTR), and Python's Ctrl-C
/// did nothing until the acquire returned.
#[test]
fn a_signal_ends_a_wait_on_several_masters_where_asked_to() {
    use pottery_semaphore_host::{signals_end_waits, BlockingSemaphore, Options};
    note_sigusr2();
    let servers: Vec<Server> = (0..3).map(|_| Server::start(Flavor::Redis)).collect();
    let k = key("eintr-masters");
    let open = || {
        let options = Options::with_masters(servers.iter().map(Server::url), k.clone()).guard_fresh_server(false).permits(1);
        BlockingSemaphore::open(options).expect("open")
    };
    let (holder, waiter) = (open(), open());
    assert!(!waiter.on_caller_thread(), "several masters wait on the runtime's threads");
    assert!(holder.acquire(false, None).expect("acquire"));
    let (thread, waiting) = spawn_signallable(move || {
        let started = Instant::now();
        (signals_end_waits(|| waiter.acquire(true, Some(Duration::from_secs(3)))), started.elapsed(), waiter)
    });
    std::thread::sleep(Duration::from_millis(300));
    send_sigusr2(thread);
    let (r, took, waiter) = waiting.join().expect("waiter");
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?} after {took:?}");
    assert!(took < Duration::from_millis(1000), "ended {took:?} after it began");
    holder.release(1).expect("release");
    assert!(waiter.acquire(true, Some(Duration::from_secs(3))).expect("acquire"), "the handle still works");
    assert_eq!(waiter.held().len(), 1, "it holds the one permit it took, nothing from the ended wait");
}

/// The same on a Cluster, whose waiters queue: the ended wait leaves the queue. (Ending it by
/// dropping the handle's inline call tore the guest down mid-call, and its place stayed at the
/// head of the queue for the waiter window, 10 s.)
#[test]
fn a_signal_ends_a_wait_on_a_cluster_and_the_waiter_leaves_the_queue() {
    use pottery_semaphore_host::{signals_end_waits, BlockingSemaphore};
    use pottery_semaphore_tests::cluster::Cluster;
    note_sigusr2();
    let cluster = Cluster::start(Flavor::Redis, 3);
    let k = key("eintr-cluster");
    let open = || BlockingSemaphore::open(cluster.options(&k).permits(1)).expect("open");
    let (holder, waiter) = (open(), open());
    assert!(!waiter.on_caller_thread(), "a Cluster waits on the runtime's threads");
    assert!(holder.acquire(false, None).expect("acquire"));
    let (thread, waiting) = spawn_signallable(move || {
        let started = Instant::now();
        (signals_end_waits(|| waiter.acquire(true, Some(Duration::from_secs(3)))), started.elapsed())
    });
    eventually(Duration::from_secs(2), "the waiter queued", || !holder.status().expect("status").waiters.is_empty());
    send_sigusr2(thread);
    let (r, took) = waiting.join().expect("waiter");
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?} after {took:?}");
    eventually(Duration::from_secs(1), "the ended wait left the queue", || holder.status().expect("status").waiters.is_empty());
}

/// A blocking pop on a connection kept from an earlier wait, whose connection breaks mid-wait
/// (a proxy reset, CLIENT KILL), goes on on a new one with the time it has left. Before, it
/// started its whole time-out again: `acquire(true, 2 s)` broken at 1 s returned after 3 s.
#[test]
fn a_broken_pop_goes_on_with_the_time_it_has_left() {
    use pottery_semaphore_host::BlockingSemaphore;
    let server = Server::start(Flavor::Redis);
    let k = key("pop-broken");
    let holder = BlockingSemaphore::open(server.options(&k).permits(1)).expect("open");
    let waiter = BlockingSemaphore::open(server.options(&k).permits(1)).expect("open");
    assert!(holder.acquire(false, None).expect("acquire"));
    // A wait served by a push keeps its pop connection for the next.
    let releaser = std::thread::spawn({
        let holder = holder.clone();
        move || {
            std::thread::sleep(Duration::from_millis(200));
            holder.release(1).expect("release");
        }
    });
    assert!(waiter.acquire(true, Some(Duration::from_secs(5))).expect("acquire"));
    releaser.join().expect("releaser");
    waiter.release(1).expect("release");
    assert!(holder.acquire(false, None).expect("acquire"));
    let killer = std::thread::spawn({
        let mut admin = server.connection();
        move || {
            std::thread::sleep(Duration::from_millis(1000));
            let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).expect("CLIENT LIST");
            let popping = clients.lines().find(|l| l.contains("cmd=blpop")).expect("a client in BLPOP");
            let id = popping.split_whitespace().find_map(|f| f.strip_prefix("id=")).expect("id");
            let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query(&mut admin).expect("CLIENT KILL");
        }
    });
    let started = Instant::now();
    assert_eq!(waiter.acquire(true, Some(Duration::from_secs(2))), Ok(false));
    let took = started.elapsed();
    killer.join().expect("killer");
    assert!(took < Duration::from_millis(2500), "a 2 s time-out took {took:?}");
}

/// `release_permits` names exactly what the caller gives up, and answers which of those were
/// still held. Those that were not (another holder's release took them; or, the case that
/// matters, the call's first reply was lost and its resend found them gone) leave the handle
/// too: before, the next refresh reported them lost, though the caller had let them go.
#[tokio::test(flavor = "multi_thread")]
async fn permits_released_by_name_are_not_reported_lost_afterwards() {
    let server = Server::start(Flavor::Redis);
    let k = key("named-gone");
    let (mine, other) = (open(&server, &k, 1).await, open(&server, &k, 1).await);
    assert!(mine.acquire(false, None).await.unwrap());
    let token = mine.held()[0].token;
    other.release(1).await.unwrap(); // permits are fungible: it takes mine
    assert_eq!(mine.release_permits(vec![token]).await.unwrap(), Vec::<u64>::new(), "not held any more");
    mine.refresh().await.unwrap();
    assert_eq!((mine.take_lost(), mine.held()), (Vec::new(), Vec::new()));
}

/// A waiter with a short lease (under a second, where the queue's heartbeat no longer caps a pop
/// at a third of the lease) keeps the permit it is served, with Redis healthy, until its own
/// refresher takes over: served by a push near the end of the holder's lease, and served by its
/// own poll once a holder that stopped refreshing (compiled natively: no refresher) let its
/// lease end. Before, a pushed grant was dated from before a pop of up to a whole lease, and a
/// polled one from before the pop ahead of the poll: both reported lost and given back.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_with_a_short_lease_keeps_the_permit_it_is_served() {
    const LEASE_MS: u64 = 300;
    for server in servers() {
        let k = key("short-lease-waiter");
        let opts = || server.options(&k).permits(1).lease(Duration::from_millis(LEASE_MS));
        let holder = Semaphore::open(opts()).await.unwrap();
        let waiter = Semaphore::open(opts()).await.unwrap();
        let check_kept = |how: &'static str| {
            let waiter = waiter.clone();
            async move {
                // A fifth of a lease: past the grant's validity as it was dated before (about
                // 20 ms after the grant, or at once), and well before the validity it has now
                // could end, even with the refresher held up on a loaded machine.
                tokio::time::sleep(Duration::from_millis(LEASE_MS / 5)).await;
                assert!(waiter.take_lost().is_empty(), "served by {how}: reported lost");
                assert_eq!(waiter.held().len(), 1, "served by {how}: not held");
                assert_eq!(waiter.value().await.unwrap(), 0, "served by {how}: released in Redis");
                waiter.release(1).await.unwrap();
            }
        };

        assert!(holder.acquire(false, None).await.unwrap());
        let pending = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.acquire(true, Some(Duration::from_secs(5))).await }
        });
        tokio::time::sleep(Duration::from_millis(LEASE_MS - 20)).await;
        holder.release(1).await.unwrap();
        assert!(pending.await.unwrap().unwrap(), "not served");
        check_kept("a push").await;

        let config = Config {
            key: k.clone(),
            value: 1,
            bounded: true,
            lease_ms: LEASE_MS as i64,
            holder: "stops-refreshing".into(),
            guard_fresh_server: false,
            existed: true,
            create: false,
            masters: 1,
            raise_on_redis_errors: false,
            replicate: false,
        };
        let (stalled, _) = NativeSemaphore::open(NativeTransport::connect(&server.url()).unwrap(), config).unwrap();
        assert_eq!(stalled.acquire(1, false, None).unwrap().len(), 1);
        assert!(waiter.acquire(true, Some(Duration::from_secs(5))).await.unwrap(), "not served after the lease ended");
        check_kept("its poll").await;
    }
}

/// Redis closes connections left idle longer than its `timeout` (as hosted Redis and middleboxes
/// do), and nothing on the client's side notices until it reads. A release, which must not be
/// sent twice, made after a long hold on such a connection was lost with it: the caller was told
/// Redis was out of reach, with Redis up all along. Both APIs' connections: the blocking one's
/// own, and the async one's shared.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_after_redis_closed_the_idle_connection_goes_through() {
    use pottery_semaphore_host::BlockingSemaphore;
    let server = Server::start(Flavor::Redis);
    let k = key("idle-closed");
    // A long lease: no refresh uses the shared connection while the test waits.
    let open_leased = || Semaphore::open(server.options(&k).permits(2).lease(Duration::from_secs(60)));
    let (mine_async, mine_blocking) = (open_leased().await.unwrap(), BlockingSemaphore::from(open_leased().await.unwrap()));
    assert!(mine_async.acquire(false, None).await.unwrap());
    let mine_blocking = tokio::task::spawn_blocking(move || mine_blocking.acquire(false, None).map(|got| (got, mine_blocking)));
    let (got, mine_blocking) = mine_blocking.await.unwrap().unwrap();
    assert!(got);
    let mut probe = server.client().get_multiplexed_async_connection().await.expect("conn");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("timeout").arg("1").query_async(&mut probe).await.unwrap();
    // Every connection but the probe's, which asks every 50 ms, is closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO").arg("clients").query_async(&mut probe).await.unwrap();
        if info.contains("connected_clients:1\r") {
            break;
        }
        assert!(Instant::now() < deadline, "Redis did not close the idle connections: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mine_async.release(1).await.expect("async: the release went through");
    let released = tokio::task::spawn_blocking(move || mine_blocking.release(1)).await.unwrap();
    released.expect("blocking: the release went through");
    assert_eq!(mine_async.value().await.unwrap(), 2, "both permits are back");
}

/// The holder trusts its own clock for a permit's validity (the lease less 1 % and 2 ms, from
/// before the script that granted it): safe only while Redis keeps the permit at least that
/// long. So Redis must store the whole lease from the grant, whether granted at once, pushed to
/// a waiter, or extended by a refresh (a shorter one would go unseen by every other test: live
/// holders refresh long before it ends).
#[tokio::test(flavor = "multi_thread")]
async fn redis_keeps_each_permit_for_the_whole_lease_from_its_grant() {
    for server in servers() {
        let k = key("whole-lease");
        let lease_ms: i64 = 5_000;
        let open = || Semaphore::open(server.options(&k).permits(1).lease(Duration::from_millis(lease_ms as u64)));
        let (a, b) = (open().await.unwrap(), open().await.unwrap());
        let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
        let leases = format!("pottery-semaphore:{{{k}}}:leases");
        // What is left of the lease of `holder`'s permit `token`, by Redis's clock (ms).
        let mut left_ms = async |holder: &str, token: u64| -> i64 {
            let (score, time): (f64, (i64, i64)) = redis::pipe()
                .cmd("ZSCORE")
                .arg(&leases)
                .arg(format!("{token}:{holder}"))
                .cmd("TIME")
                .query_async(&mut conn)
                .await
                .unwrap();
            score as i64 - (time.0 * 1000 + time.1 / 1000)
        };
        let token = a.acquire_n(1, false, None).await.unwrap()[0].token;
        let left = left_ms(a.holder_id(), token).await;
        assert!(left > lease_ms - 200, "{:?}: granted at once, {left} ms of {lease_ms} stored", server.flavor);
        let waiter = b.clone();
        let waiting = tokio::spawn(async move { waiter.acquire_n(1, true, None).await });
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.status().await.unwrap().waiters.is_empty() {
            assert!(Instant::now() < deadline, "b did not queue");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        a.release(1).await.unwrap();
        let token = waiting.await.unwrap().unwrap()[0].token;
        let left = left_ms(b.holder_id(), token).await;
        assert!(left > lease_ms - 200, "{:?}: pushed to a waiter, {left} ms of {lease_ms} stored", server.flavor);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        b.refresh().await.unwrap();
        let left = left_ms(b.holder_id(), token).await;
        assert!(left > lease_ms - 200, "{:?}: refreshed, {left} ms of {lease_ms} stored", server.flavor);
        b.release(1).await.unwrap();
    }
}
