//! The limits the host sets on the guest: memory and CPU time.

use std::time::Duration;

use pottery_semaphore_host::{EngineOptions, Error, Runtime, Semaphore};
use pottery_semaphore_tests::{key, Flavor, Server};

fn runtime(options: EngineOptions) -> &'static Runtime {
    Box::leak(Box::new(Runtime::new(options).expect("runtime")))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_over_its_memory_cap_is_refused() {
    let server = Server::start(Flavor::Redis);
    let rt = runtime(EngineOptions { memory_limit: 64 * 1024, cache_dir: None, ..EngineOptions::default() });
    let r = Semaphore::open(server.options(&key("mem")).runtime(rt)).await;
    assert!(matches!(r, Err(Error::Guest(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_over_its_cpu_budget_is_trapped_and_replaced() {
    let server = Server::start(Flavor::Redis);
    // With no budget at all, the guest traps at its first epoch check after a tick has passed.
    let rt = runtime(EngineOptions { cpu_budget: Duration::ZERO, cache_dir: None, ..EngineOptions::default() });
    let sem = Semaphore::open(server.options(&key("cpu")).runtime(rt)).await.expect("open");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = sem.value().await;
    assert!(matches!(&r, Err(Error::Guest(m)) if m.contains("without yielding")), "{r:?}");
    // The default budget (1 s) is far above what a call needs.
    let normal = Semaphore::open(server.options(&key("cpu-ok"))).await.expect("open");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(normal.value().await.unwrap(), 1);
}
