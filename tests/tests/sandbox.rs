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
async fn a_guest_over_its_cpu_budget_is_trapped() {
    let server = Server::start(Flavor::Redis);
    // A normal handle first: it keeps the process's connection to this server open and shows the
    // default budget (1 s) is far above what calls need.
    let normal = Semaphore::open(server.options(&key("cpu-ok"))).await.expect("open");
    // With no budget at all, the guest traps at its first epoch check once a tick (10 ms) has
    // passed since the call began, so only a call that fits within one tick succeeds: retry open.
    let rt = runtime(EngineOptions { cpu_budget: Duration::ZERO, cache_dir: None, ..EngineOptions::default() });
    let mut opened = None;
    for _ in 0..50 {
        match Semaphore::open(server.options(&key("cpu")).runtime(rt)).await {
            Ok(sem) => {
                opened = Some(sem);
                break;
            }
            Err(e) => assert!(matches!(&e, Error::Guest(m) if m.contains("without yielding")), "{e:?}"),
        }
    }
    let sem = opened.expect("an open that fits within one epoch tick");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = sem.value().await;
    assert!(matches!(&r, Err(Error::Guest(m)) if m.contains("without yielding")), "{r:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(normal.value().await.unwrap(), 1);
}

/// iOS forbids JIT: there the component runs in wasmtime's Pulley interpreter. Same protocol,
/// same results, exercised here on Linux so the mobile path is not untested code.
#[tokio::test(flavor = "multi_thread")]
async fn the_pulley_interpreter_runs_the_protocol() {
    let server = Server::start(Flavor::Redis);
    let rt = runtime(EngineOptions { pulley: true, cache_dir: None, ..EngineOptions::default() });
    assert!(rt.interprets(), "the engine compiles to native code: the interpreter is not under test");
    assert!(!Runtime::global_async().await.unwrap().interprets(), "the default engine compiles");
    let k = key("pulley");
    let sem = Semaphore::open(server.options(&k).permits(2).runtime(rt)).await.expect("open");
    let permits = sem.acquire_n(2, false, None).await.unwrap();
    assert_eq!(permits.len(), 2);
    // A waiter on the JIT runtime is served by a release through the interpreter.
    let jit = Semaphore::open(server.options(&k)).await.unwrap();
    let waiting = jit.clone();
    let pending = tokio::spawn(async move { waiting.acquire(true, Some(Duration::from_secs(5))).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    sem.release(1).await.unwrap();
    assert!(pending.await.unwrap().unwrap());
    assert!(matches!(sem.release(3).await, Err(Error::Bounded { .. })));
    assert_eq!(sem.status().await.unwrap().holders.len(), 2);
}

/// A new process deserializes the component compiled by an earlier one instead of compiling it.
#[test]
fn the_compiled_component_is_cached_on_disk() {
    let dir = std::env::temp_dir().join(format!("pottery-semaphore-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = EngineOptions { cache_dir: Some(dir.clone()), ..EngineOptions::default() };
    // A umask that lets the group write (common on desktops) still gives a cache that is used.
    // SAFETY: umask has no preconditions. (It is the process's: files other tests make meanwhile
    // may come out group-writable, which none of them minds.)
    #[allow(unsafe_code)]
    let umask = unsafe { libc::umask(0o002) };
    let first = Runtime::new(options.clone()).expect("runtime");
    #[allow(unsafe_code)]
    unsafe {
        libc::umask(umask)
    };
    assert!(!first.loaded_from_cache);
    assert_eq!(std::fs::read_dir(&dir).expect("cache dir").count(), 1, "one artifact written");
    let second = Runtime::new(options.clone()).expect("runtime");
    assert!(second.loaded_from_cache);
    // Native code that another user could have put there is not run: a directory or file that
    // others may write to is passed over (and the cache is not written there). One case each for
    // the group's and the others' write bit, which the check must both refuse.
    use std::os::unix::fs::PermissionsExt;
    let artifact = std::fs::read_dir(&dir).expect("cache dir").next().expect("the artifact").expect("entry").path();
    for (path, mode) in [(&dir, 0o770), (&artifact, 0o606)] {
        let private = std::fs::metadata(path).expect("metadata").permissions();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let third = Runtime::new(options.clone()).expect("runtime");
        assert!(!third.loaded_from_cache, "loaded from {} with mode {mode:o}", path.display());
        std::fs::set_permissions(path, private).expect("chmod back");
    }
    drop((first, second));
    let _ = std::fs::remove_dir_all(&dir);
}
