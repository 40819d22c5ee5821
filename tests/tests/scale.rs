//! Several masters with tens of thousands of permits held: what each call reads of the masters
//! must fit in the guest's memory. Apart from masters.rs: these hold the machine's two cores
//! for seconds, which would slow that suite's lease-timed tests beside them.

use std::time::Duration;

use pottery_semaphore_host::{Options, Semaphore};
use pottery_semaphore_tests::{key, Flavor, Server};

fn masters(n: usize) -> Vec<Server> {
    (0..n).map(|_| Server::start(Flavor::Redis)).collect()
}

fn options(servers: &[Server], key: &str) -> Options {
    Options::with_masters(servers.iter().map(Server::url), key).guard_fresh_server(false)
}

/// Tens of thousands of permits held: counting the free ones reads only the masters' live
/// slots, and a release of the caller's own only their holders. Both read every slot's holder
/// from every master, which ran the guest out of memory (a Guest error) from about 16,000
/// held on three masters.
#[tokio::test(flavor = "multi_thread")]
async fn the_value_is_read_with_tens_of_thousands_of_permits_held() {
    let servers = masters(3);
    let k = key("mm-many");
    let opts = || options(&servers, &k).permits(30_000).lease(Duration::from_secs(60));
    let holder = Semaphore::open(opts()).await.expect("open");
    for _ in 0..3 {
        assert_eq!(holder.acquire_n(8_000, false, None).await.expect("acquire").len(), 8_000);
    }
    let other = Semaphore::open(opts()).await.expect("open");
    assert_eq!(other.value().await.expect("value"), 6_000);
    assert!(!other.locked().await.expect("locked"));
    assert_eq!(other.initial_value().await.expect("initial value"), 30_000);
    holder.release(2_000).await.expect("release");
    assert_eq!(holder.held().len(), 22_000);
    assert_eq!(other.value().await.expect("value"), 8_000);
    assert_eq!(other.acquire_n(8_000, false, None).await.expect("acquire the rest").len(), 8_000);
    assert!(other.locked().await.expect("locked"));
}

/// Five masters, every one of the 65,536 slots held: the value, a release of 10,000 of the
/// caller's own (by count, and by name), and a release with one master down. Each ran the
/// guest out of memory (Guest errors) before the masters' answers shrank to integers and
/// releases were sent in chunks.
#[tokio::test(flavor = "multi_thread")]
async fn five_masters_at_full_capacity_count_and_release() {
    let mut servers = masters(5);
    let k = key("mm-full");
    let capacity = pottery_semaphore_core::multi::MAX_SLOTS as i64;
    let opts = |servers: &[Server]| options(servers, &k).permits(capacity).lease(Duration::from_secs(120));
    let holder = Semaphore::open(opts(&servers)).await.expect("open");
    let mut left = capacity;
    while left > 0 {
        let n = left.min(10_000);
        assert_eq!(holder.acquire_n(n, false, None).await.expect("acquire").len() as i64, n);
        left -= n;
    }
    let other = Semaphore::open(opts(&servers)).await.expect("open");
    for _ in 0..3 {
        assert_eq!(other.value().await.expect("value"), 0);
    }
    holder.release(10_000).await.expect("release by count");
    let named: Vec<u64> = holder.held().iter().take(10_000).map(|p| p.token).collect();
    assert_eq!(holder.release_permits(named).await.expect("release by name").len(), 10_000);
    for _ in 0..3 {
        assert_eq!(other.value().await.expect("value"), 20_000);
    }
    servers[4].kill();
    holder.release(1).await.expect("release with a master down");
    assert_eq!(holder.held().len() as i64, capacity - 20_001);
}
