//! The semaphore on a real Redis Cluster (and a Valkey one when installed): three primaries,
//! each semaphore's keys in the slot of its hash tag, the single-master protocol unchanged.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pottery_semaphore_core::keys::Keys;
use pottery_semaphore_host::{BlockingSemaphore, Error, ReplicaAck, Semaphore};
use pottery_semaphore_tests::cluster::Cluster;
use pottery_semaphore_tests::{assert_time_outs_are_prompt, key, Flavor};

fn clusters() -> Vec<Cluster> {
    Flavor::all().into_iter().map(|f| Cluster::start(f, 3)).collect()
}

/// Clients blocked in BLPOP on any node.
fn blocked_clients(cluster: &Cluster) -> u64 {
    cluster
        .nodes
        .iter()
        .map(|n| {
            let info: String = redis::cmd("INFO").arg("clients").query(&mut n.connection()).unwrap();
            info.lines().find_map(|l| l.strip_prefix("blocked_clients:")).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0)
        })
        .sum()
}

async fn open(cluster: &Cluster, key: &str, permits: i64) -> Semaphore {
    Semaphore::open(cluster.options(key).permits(permits)).await.expect("open")
}

#[tokio::test(flavor = "multi_thread")]
async fn acquire_release_value_and_status_on_a_cluster() {
    for cluster in clusters() {
        let k = key("basic");
        let sem = open(&cluster, &k, 2).await;
        assert!(sem.created());
        assert_eq!(sem.value().await.unwrap(), 2);
        assert_eq!(sem.initial_value().await.unwrap(), 2);
        let permits = sem.acquire_n(2, false, None).await.unwrap();
        assert_eq!(permits.len(), 2);
        assert!(sem.locked().await.unwrap());
        assert!(!sem.acquire(false, None).await.unwrap());
        let status = sem.status().await.unwrap();
        assert_eq!((status.capacity, status.available, status.holders.len()), (2, 0, 2));
        sem.release(1).await.unwrap();
        assert_eq!(sem.value().await.unwrap(), 1);
        assert!(matches!(sem.release(2).await, Err(Error::Bounded { current: 1, initial: 2, .. })));
        sem.release(1).await.unwrap();
        assert_eq!(sem.value().await.unwrap(), 2);
        let again = open(&cluster, &k, 7).await;
        assert!(!again.created(), "a second opener finds the semaphore on its node");
        assert_eq!(again.opened_initial(), 2);
        // Every key of the semaphore sits on the node that owns its hash tag's slot.
        let meta = Keys::new(&k).meta();
        let owner = cluster.owner_of(cluster.slot_of(&meta));
        let exists: bool = redis::cmd("EXISTS").arg(&meta).query(&mut cluster.nodes[owner].connection()).unwrap();
        assert!(exists, "{meta} on node {owner}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_is_woken_by_a_release_through_another_seed_node() {
    for cluster in clusters() {
        let k = key("wake");
        let holder = Semaphore::open(cluster.options_via(0, &k)).await.unwrap();
        let waiter = Semaphore::open(cluster.options_via(1, &k)).await.unwrap();
        assert!(holder.acquire(false, None).await.unwrap());
        let w = waiter.clone();
        let pending = tokio::spawn(async move {
            let granted = w.acquire(true, Some(Duration::from_secs(10))).await;
            (granted, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(holder.status().await.unwrap().waiters.len(), 1, "the waiter is queued");
        let released = Instant::now();
        holder.release(1).await.unwrap();
        let (granted, woke) = pending.await.unwrap();
        assert!(granted.unwrap());
        let latency = woke - released;
        assert!(latency < Duration::from_millis(200), "wake-up took {latency:?}");
        assert_eq!(waiter.held().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_are_honoured_on_a_cluster() {
    for cluster in clusters() {
        let k = key("timeout");
        let holder = open(&cluster, &k, 1).await;
        assert!(holder.acquire(false, None).await.unwrap());
        let waiter = Semaphore::open(cluster.options_via(2, &k)).await.unwrap();
        assert_time_outs_are_prompt(&waiter).await;
        // A timed-out pop drops its cluster connection, which ends the BLPOP on the server. Left
        // alone, Redis would end the last (300 ms) one itself only after its slack of a second.
        let deadline = Instant::now() + Duration::from_millis(600);
        while blocked_clients(&cluster) > 0 {
            assert!(Instant::now() < deadline, "a BLPOP outlived its time-out");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        holder.release(1).await.unwrap();
        assert_eq!(waiter.value().await.unwrap(), 1, "nothing leaked");
    }
}

#[test]
fn blocking_semaphore_works_on_a_cluster() {
    for cluster in clusters() {
        let k = key("blocking");
        let holder = BlockingSemaphore::open(cluster.options(&k).permits(1)).unwrap();
        let waiter = BlockingSemaphore::open(cluster.options_via(1, &k)).unwrap();
        assert!(!holder.on_caller_thread(), "a cluster routes on the async path");
        assert!(holder.acquire(false, None).unwrap());
        assert_eq!(holder.value().unwrap(), 0);
        let started = Instant::now();
        assert!(!waiter.acquire(true, Some(Duration::from_millis(100))).unwrap());
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_millis(400), "timed out after {took:?}");
        let w = waiter.clone();
        let pending = std::thread::spawn(move || {
            let granted = w.acquire(true, Some(Duration::from_secs(10)));
            (granted, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(300));
        let released = Instant::now();
        holder.release(1).unwrap();
        let (granted, woke) = pending.join().unwrap();
        assert!(granted.unwrap());
        assert!(woke - released < Duration::from_millis(200), "wake-up took {:?}", woke - released);
        assert_eq!(waiter.held().len(), 1);
        waiter.release(1).unwrap();
        assert_eq!(holder.value().unwrap(), 1);
        assert_eq!(holder.status().unwrap().holders.len(), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn semaphores_spread_over_the_nodes_each_within_one_slot() {
    for cluster in clusters() {
        // Pick semaphore names until every node owns one (per CLUSTER KEYSLOT and CLUSTER NODES).
        let mut names = Vec::new();
        let mut nodes = BTreeSet::new();
        let mut i = 0;
        while nodes.len() < cluster.nodes.len() {
            let k = key(&format!("spread{i}"));
            i += 1;
            let node = cluster.owner_of(cluster.slot_of(&Keys::new(&k).meta()));
            if nodes.insert(node) {
                names.push((k, node));
            }
        }
        assert!(nodes.len() >= 2);
        let mut sems = Vec::new();
        for (k, node) in &names {
            let sem = open(&cluster, k, 1).await;
            assert!(sem.acquire(false, None).await.unwrap());
            let keys = Keys::new(k);
            let slots: BTreeSet<u16> = keys.script_keys().iter().chain(&keys.multi_script_keys(sem.holder_id())).map(|key| cluster.slot_of(key)).collect();
            assert_eq!(slots.len(), 1, "all keys of {k} share one slot");
            // The node that owns the slot holds the semaphore's state (read there directly).
            let leases: u64 = redis::cmd("ZCARD").arg(format!("{}leases", keys.prefix())).query(&mut cluster.nodes[*node].connection()).unwrap();
            assert_eq!(leases, 1, "{k} lives on node {node}");
            sems.push(sem);
        }
        // They stay independent: a blocked waiter on one is not woken by releases on the others.
        let waiter = Semaphore::open(cluster.options(&names[0].0)).await.unwrap();
        let w = waiter.clone();
        let pending = tokio::spawn(async move { w.acquire(true, Some(Duration::from_secs(10))).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        for sem in &sems[1..] {
            sem.release(1).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!pending.is_finished());
        sems[0].release(1).await.unwrap();
        assert!(pending.await.unwrap().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_cluster_options_are_refused_clearly() {
    let none = Semaphore::open(pottery_semaphore_host::Options::with_masters(Vec::<String>::new(), "k").cluster(true)).await;
    assert!(matches!(none, Err(Error::InvalidArgument(_))), "{none:?}");
    let bad = Semaphore::open(pottery_semaphore_host::Options::with_masters(["not a url".to_string()], "k").cluster(true)).await;
    assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_migrated_mid_use_keeps_the_semaphore_working() {
    for cluster in clusters() {
        let k = key("migrate");
        let sem = open(&cluster, &k, 2).await;
        let other = Semaphore::open(cluster.options_via(2, &k)).await.unwrap();
        let held = sem.acquire_n(1, false, None).await.unwrap();
        assert!(other.acquire(false, None).await.unwrap());
        // A waiter blocks in BLPOP on the old node while the slot moves.
        let w = other.clone();
        let pending = tokio::spawn(async move { w.acquire(true, Some(Duration::from_secs(10))).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let slot = cluster.slot_of(&Keys::new(&k).meta());
        let from = cluster.owner_of(slot);
        let to = (from + 1) % cluster.nodes.len();
        cluster.migrate_slot(slot, to);
        // Redis answers both handles with MOVED now; redis-rs follows it and refreshes its map.
        assert_eq!(sem.value().await.unwrap(), 0);
        sem.release_permits(held.iter().map(|p| p.token).collect()).await.unwrap();
        assert!(pending.await.unwrap().unwrap(), "the waiter is served after the move");
        sem.refresh().await.unwrap();
        other.refresh().await.unwrap();
        assert!(other.take_lost().is_empty(), "permits survive the move");
        other.release(2).await.unwrap();
        assert_eq!(sem.value().await.unwrap(), 2);
        assert!(sem.acquire(true, Some(Duration::from_secs(1))).await.unwrap());
        let leases: u64 = redis::cmd("ZCARD").arg(format!("{}leases", Keys::new(&k).prefix())).query(&mut cluster.nodes[to].connection()).unwrap();
        assert_eq!(leases, 1, "the state lives on the new node");
    }
}

/// The sandbox's foreign-key checks run before routing (host unit test
/// `the_guest_reaches_only_its_own_keys_through_known_scripts` covers a cluster too). Here: a
/// semaphore whose name extends another's (`k}:x`) shares its hash tag, so its slot and node,
/// yet neither reaches the other's keys.
#[tokio::test(flavor = "multi_thread")]
async fn semaphores_sharing_a_slot_stay_apart() {
    let cluster = Cluster::start(Flavor::Redis, 3);
    let k = key("apart");
    let nested = format!("{k}}}:x");
    assert_eq!(cluster.slot_of(&Keys::new(&k).meta()), cluster.slot_of(&Keys::new(&nested).meta()));
    let a = open(&cluster, &k, 1).await;
    let b = open(&cluster, &nested, 3).await;
    assert!(a.acquire(false, None).await.unwrap());
    assert_eq!(b.acquire_n(3, false, None).await.unwrap().len(), 3);
    assert_eq!((a.value().await.unwrap(), b.value().await.unwrap()), (0, 0));
    assert!(matches!(a.release(2).await, Err(Error::Bounded { .. })));
    a.release(1).await.unwrap();
    assert_eq!((a.value().await.unwrap(), b.value().await.unwrap()), (1, 0));
}

/// WAIT has no key: it goes to the primary of the semaphore's slot, whose connection ran the
/// scripts. (The cluster has no replicas, so 0 of them acknowledge at once.)
#[tokio::test(flavor = "multi_thread")]
async fn replica_ack_waits_on_the_node_of_the_slot() {
    let cluster = Cluster::start(Flavor::Redis, 3);
    let k = key("cluster-ack");
    let sem = Semaphore::open(cluster.options(&k).replica_ack(ReplicaAck::new(0, Duration::from_millis(100)))).await.unwrap();
    assert!(sem.acquire(false, None).await.unwrap());
    sem.release(1).await.unwrap();
    let owner = cluster.owner_of(cluster.slot_of(&Keys::new(&k).meta()));
    for (i, node) in cluster.nodes.iter().enumerate() {
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut node.connection()).unwrap();
        let waited = info.contains("cmdstat_wait:");
        assert_eq!(waited, i == owner, "node {i} (owner {owner}):\n{info}");
    }
    let mut one = Semaphore::open(cluster.options(&k).replica_ack(ReplicaAck::new(1, Duration::from_millis(100)))).await.unwrap();
    let r = one.acquire(false, None).await;
    assert!(matches!(r, Err(Error::NotReplicated(_))), "no replica: {r:?}");
    one = Semaphore::open(cluster.options(&k)).await.unwrap();
    assert_eq!(one.value().await.unwrap(), 1, "given back");
}

/// A release runs on its node but the reply is lost with the connection: the node holds the
/// script (CLIENT PAUSE) while its proxy cuts the network, and healing closes the connection.
/// redis-rs's cluster client then sends the command again on a new connection by itself (it
/// must, to follow redirections). Run twice, the release would no longer find the caller's permit
/// and would give back another holder's (permits are fungible). The second run must only repeat
/// the first one's answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_whose_reply_was_lost_runs_once_on_a_cluster() {
    for flavor in Flavor::all() {
        let cluster = Cluster::start_behind_proxies(flavor, 3, &[]);
        let k = key("lost-reply");
        let owner = cluster.owner_of(cluster.slot_of(&Keys::new(&k).meta()));
        let mine = open(&cluster, &k, 2).await;
        let other = open(&cluster, &k, 2).await;
        assert!(mine.acquire(false, None).await.unwrap());
        assert!(other.acquire(false, None).await.unwrap());
        // The node has the release script (a NOSCRIPT reply would be lost instead).
        mine.release(1).await.unwrap();
        assert!(mine.acquire(false, None).await.unwrap());
        let mut admin = cluster.nodes[owner].connection();
        let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1_000).arg("WRITE").query(&mut admin).unwrap();
        let releasing = tokio::spawn(async move { mine.release(1).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.proxies[owner].cut();
        tokio::time::sleep(Duration::from_millis(1_300)).await; // the release ran; its reply was dropped
        cluster.proxies[owner].restore();
        // Its first reply was lost: an answer at all means the client sent it again.
        let released = releasing.await.unwrap();
        assert!(matches!(released, Ok(())), "{flavor:?}: not sent again: {released:?}");
        assert_eq!(other.permits().await.unwrap().len(), 1, "{flavor:?}: the release ran twice and took the other holder's permit");
        assert_eq!(other.value().await.unwrap(), 1, "{flavor:?}: the caller's own permit was released once");
    }
}

/// ACL refusals on a cluster are the same typed error as on one server: a wrong password at the
/// seed nodes (which redis-rs reports as failing to create its initial connections, an I/O
/// error), and a WAIT the user may not run (routed to the slot's node, whose error reply
/// redis-rs hands back as a value).
#[tokio::test(flavor = "multi_thread")]
async fn acl_refusals_on_a_cluster_are_auth_errors() {
    let cluster = Cluster::start(Flavor::Redis, 3);
    let acl = |rules: &[&str]| {
        for node in &cluster.nodes {
            redis::cmd("ACL").arg("SETUSER").arg("app").arg(rules).query::<()>(&mut node.connection()).unwrap();
        }
    };
    acl(&["on", ">pw", "~*", "&*", "+@all"]);
    let as_user = |password: &str| {
        let urls = cluster.seed_urls().iter().map(|u| u.replacen("redis://", &format!("redis://app:{password}@"), 1)).collect::<Vec<_>>();
        pottery_semaphore_host::Options::with_masters(urls, key("cluster-acl")).cluster(true).guard_fresh_server(false)
    };
    let wrong = Semaphore::open(as_user("wrong")).await;
    assert!(matches!(wrong, Err(Error::Auth(_))), "{wrong:?}");
    let sem = Semaphore::open(as_user("pw").replica_ack(ReplicaAck::new(0, Duration::from_millis(100)))).await.unwrap();
    assert!(sem.acquire(false, None).await.unwrap());
    acl(&["-wait"]);
    let r = sem.release(1).await;
    assert!(matches!(r, Err(Error::Auth(_))), "{r:?}");
}
