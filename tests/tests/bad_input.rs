//! Bad input and hostile environments: each gives a typed error, never a panic, never a leaked permit.

use std::time::{Duration, Instant};

use pottery_semaphore_host::{Error, Options, Semaphore};
use pottery_semaphore_tests::{free_port, key, Flavor, Server};

async fn open(url: String, key: &str, permits: i64) -> Result<Semaphore, Error> {
    Semaphore::open(Options::new(url, key).permits(permits).guard_fresh_server(false)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_invalid_argument_errors() {
    let server = Server::start(Flavor::Redis);
    let invalid = |r: Result<Semaphore, Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert_eq!(
        open(server.url(), "k", -1).await.unwrap_err(),
        Error::InvalidArgument("Semaphore value must be non-negative".into())
    );
    assert!(invalid(open(server.url(), "", 1).await), "empty key");
    assert!(invalid(open(server.url(), &"k".repeat(1 << 20), 1).await), "1 MiB key");
    // Larger than the guest's memory: refused before it is copied in (it trapped the guest).
    assert!(invalid(open(server.url(), &"k".repeat(32 << 20), 1).await), "32 MiB key");
    assert!(invalid(Semaphore::open(Options::new(server.url(), "k").lease(Duration::ZERO)).await), "zero lease");
    assert!(invalid(open("not a url".into(), "k", 1).await), "bad URL");

    let sem = open(server.url(), &key("args"), 2).await.unwrap();
    for (n, blocking, timeout) in [
        (0, true, None),
        (-1, true, None),
        (3, true, None), // more than the capacity of a bounded semaphore
        (1, true, Some(f64::NAN)),
        (1, true, Some(-0.5)),
        (1, true, Some(f64::NEG_INFINITY)),
        (1, false, Some(1.0)), // a timeout on a non-blocking call
        (i64::MAX, true, None),
    ] {
        let r = sem.acquire_n(n, blocking, timeout).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "acquire({n}, {blocking}, {timeout:?}) gave {r:?}");
    }
    assert!(matches!(sem.release(0).await, Err(Error::InvalidArgument(m)) if m == "n must be >= 1"));
    assert!(matches!(sem.release(i64::MIN).await, Err(Error::InvalidArgument(_))));
    assert_eq!(sem.value().await.unwrap(), 2, "nothing leaked");
    assert!(sem.acquire_n(1, true, Some(f64::INFINITY)).await.unwrap().len() == 1, "+inf waits forever, and succeeds here");
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_value_is_a_semaphore_with_no_permits() {
    let server = Server::start(Flavor::Redis);
    let sem = open(server.url(), &key("zero"), 0).await.unwrap();
    assert!(sem.locked().await.unwrap());
    assert!(!sem.acquire(false, None).await.unwrap(), "non-blocking: simply not acquired");
    // Blocking on a bounded semaphore that can never have a permit is an error, not a hang.
    assert!(matches!(sem.acquire(true, None).await, Err(Error::InvalidArgument(m)) if m.contains("capacity")));
    assert!(matches!(sem.release(1).await, Err(Error::Bounded { current: 0, initial: 0, .. })));
    assert!(sem.status().await.unwrap().waiters.is_empty());

    // An unbounded one can grow: a blocked acquire is served by the release that grows it.
    let k = key("zero-unbounded");
    let grow = Semaphore::open(server.options(&k).permits(0).bounded(false)).await.unwrap();
    let waiter = grow.clone();
    let pending = tokio::spawn(async move { waiter.acquire_n(2, true, Some(5.0)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    grow.release(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "one permit is not enough for a request of two");
    grow.release(1).await.unwrap();
    assert_eq!(pending.await.unwrap().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_holding_another_type_are_wrong_type_errors() {
    let server = Server::start(Flavor::Redis);
    let mut conn = server.connection();
    for part in ["meta", "leases", "queue"] {
        let k = key("wrongtype");
        let _: () = redis::cmd("SET").arg(format!("pottery-semaphore:{{{k}}}:{part}")).arg("x").query(&mut conn).unwrap();
        let r = open(server.url(), &k, 1).await;
        assert!(matches!(r, Err(Error::WrongType(_))), "{part}: {r:?}");
    }
    // A key turned into another type after opening.
    let k = key("wrongtype-later");
    let sem = open(server.url(), &k, 1).await.unwrap();
    let _: () = redis::cmd("DEL").arg(format!("pottery-semaphore:{{{k}}}:leases")).query(&mut conn).unwrap();
    let _: () = redis::cmd("SET").arg(format!("pottery-semaphore:{{{k}}}:leases")).arg("x").query(&mut conn).unwrap();
    assert!(matches!(sem.acquire(false, None).await, Err(Error::WrongType(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_redis_at_open_is_a_typed_error() {
    let started = Instant::now();
    let r = open(format!("redis://127.0.0.1:{}", free_port()), "k", 1).await;
    assert!(matches!(r, Err(Error::Unreachable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_dying_mid_wait_ends_the_wait_with_a_typed_error() {
    let mut server = Server::start(Flavor::Redis);
    let k = key("midwait");
    let holder = open(server.url(), &k, 1).await.unwrap();
    assert!(holder.acquire(false, None).await.unwrap());
    let waiter = open(server.url(), &k, 1).await.unwrap();
    let pending = tokio::spawn(async move { waiter.acquire(true, Some(Duration::from_secs(30))).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    server.kill();
    let r = pending.await.unwrap();
    assert!(matches!(r, Err(Error::Unreachable(_))), "{r:?}");
    assert!(killed.elapsed() < Duration::from_secs(5), "the waiter noticed only after {:?}", killed.elapsed());
    assert!(matches!(holder.value().await, Err(Error::Unreachable(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_an_auth_error_and_acl_users_work() {
    let server = Server::start_with(Flavor::Redis, &["--requirepass", "s3cret"]);
    let url = |auth: &str| format!("redis://{auth}@127.0.0.1:{}", server.port);
    let r = open(url(":wrong"), &key("auth"), 1).await;
    assert!(matches!(r, Err(Error::Auth(_))), "{r:?}");
    let r = open(server.url(), &key("noauth"), 1).await;
    assert!(matches!(r, Err(Error::Auth(_))), "no password: {r:?}");
    // A database but 0 is selected at connection, which a server wanting a password refuses.
    let r = open(format!("{}/1", server.url()), &key("noauth-db"), 1).await;
    assert!(matches!(r, Err(Error::Auth(_))), "no password, db 1: {r:?}");
    let sem = open(url(":s3cret"), &key("auth"), 1).await.unwrap();
    assert!(sem.acquire(false, None).await.unwrap());

    // An ACL user with a password, limited to the semaphore's keys.
    let mut admin = redis::Client::open(url(":s3cret")).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">apppass", "~pottery-semaphore:*", "+@all"])
        .query(&mut admin)
        .unwrap();
    let sem = open(url("app:apppass"), &key("acl"), 2).await.unwrap();
    assert_eq!(sem.acquire_n(2, false, None).await.unwrap().len(), 2);
    let r = open(url("app:nope"), &key("acl"), 2).await;
    assert!(matches!(r, Err(Error::Auth(_))), "{r:?}");

    // A user who may run scripts but not a command inside them (TIME): refused by the ACL
    // inside the script, which Redis answers with a plain ERR.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "scripts", "on", ">pw", "~pottery-semaphore:*", "+@all", "-time"])
        .query(&mut admin)
        .unwrap();
    let r = open(url("scripts:pw"), &key("acl-in-script"), 1).await;
    assert!(matches!(r, Err(Error::Auth(_))), "{r:?}");

    // A user who may not switch database, with a database but 0 in the URL: redis-rs wraps the
    // refusal of SELECT at connection in an error of its own.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "one-db", "on", ">pw", "~pottery-semaphore:*", "+@all", "-select"])
        .query(&mut admin)
        .unwrap();
    let r = open(format!("{}/1", url("one-db:pw")), &key("acl-select"), 1).await;
    assert!(matches!(r, Err(Error::Auth(_))), "{r:?}");
}

/// A TLS handshake that fails (the server hangs up at once) is out of reach, not an error reply:
/// the async connect reported it as one.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_tls_handshake_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hang_up = std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            drop(stream);
        }
    });
    let r = open(format!("rediss://127.0.0.1:{port}/#insecure"), &key("tls-hang-up"), 1).await;
    assert!(matches!(r, Err(Error::Unreachable(_))), "{r:?}");
    drop(hang_up);
}

#[tokio::test(flavor = "multi_thread")]
async fn unix_socket_urls_work() {
    let dir = std::env::temp_dir().join(format!("pottery-semaphore-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let socket_arg = socket.display().to_string();
    let _server = Server::start_with(Flavor::Redis, &["--unixsocket", &socket_arg, "--unixsocketperm", "700"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no socket");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sem = open(format!("unix://{socket_arg}"), &key("unix"), 1).await.unwrap();
    assert!(sem.acquire(false, None).await.unwrap());
    sem.release(1).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A redis-server that speaks TLS only, with a throwaway self-signed certificate in `dir`, and
/// its URL (the client skips verification: `#insecure`).
fn tls_server(dir: &std::path::Path) -> (Server, String) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, keyfile) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(&keyfile)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (installed by .ci/run)");
    assert!(made.success());
    let (cert, keyfile) = (cert.display().to_string(), keyfile.display().to_string());
    let server = Server::start_with(
        Flavor::Redis,
        &["--port", "0", "--tls-port", "{port}", "--tls-cert-file", &cert, "--tls-key-file", &keyfile, "--tls-auth-clients", "no"],
    );
    let url = format!("rediss://127.0.0.1:{}/#insecure", server.port);
    (server, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_urls_work() {
    let dir = std::env::temp_dir().join(format!("pottery-semaphore-tls-{}", std::process::id()));
    let (server, url) = tls_server(&dir);
    let sem = open(url.clone(), &key("tls"), 1).await.expect("open over TLS");
    // Plain text to the TLS port does not get through.
    assert!(open(server.url(), &key("plain"), 1).await.is_err());
    assert!(sem.acquire(false, None).await.unwrap());
    assert!(!sem.acquire(false, None).await.unwrap());
    sem.release(1).await.unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The blocking API over TLS, on a server that stops answering (SIGSTOP): a call ends with an
/// error within the connection's time-outs. redis-rs's blocking connect bounds the TCP connect
/// but not the TLS handshake after it, so a reconnect on the caller's thread waited for the
/// server to come back, with signals held back (not even Ctrl-C ended it). TLS and unix
/// sockets now take the async path, which bounds both.
#[test]
fn the_blocking_api_over_tls_gives_up_on_a_stopped_server() {
    use pottery_semaphore_host::BlockingSemaphore;
    let dir = std::env::temp_dir().join(format!("pottery-semaphore-tls-stopped-{}", std::process::id()));
    let (server, url) = tls_server(&dir);
    let sem = BlockingSemaphore::open(Options::new(url, key("tls-stopped")).guard_fresh_server(false)).unwrap();
    assert!(sem.acquire(false, None).unwrap());
    sem.release(1).unwrap();
    server.pause();
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let caller = std::thread::spawn(move || tx.send(sem.acquire(true, Some(Duration::from_millis(500)))));
    let ended = rx.recv_timeout(Duration::from_secs(25));
    server.resume();
    let took = started.elapsed();
    caller.join().unwrap().ok();
    assert!(matches!(ended, Ok(Err(Error::Unreachable(_)))), "after {took:?}: {ended:?}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_blocking_api_times_out_precisely_and_reports_redis_dying_mid_wait() {
    use pottery_semaphore_host::BlockingSemaphore;
    let mut server = Server::start(Flavor::Redis);
    let k = key("blocking");
    let holder = BlockingSemaphore::open(server.options(&k)).unwrap();
    assert!(holder.acquire(false, None).unwrap());
    let waiter = BlockingSemaphore::open(server.options(&k)).unwrap();
    let started = Instant::now();
    assert!(!waiter.acquire(true, Some(Duration::from_millis(150))).unwrap());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(150) && took < Duration::from_millis(350), "{took:?}");
    let w = waiter.clone();
    let pending = std::thread::spawn(move || w.acquire(true, Some(Duration::from_secs(30))));
    std::thread::sleep(Duration::from_millis(200));
    server.kill();
    let r = pending.join().unwrap();
    assert!(matches!(r, Err(Error::Unreachable(_))), "{r:?}");
}

/// A bad argument is an argument error even when the call would first have to reach Redis (the
/// blocking API's first call opens an instance of its own): checked before any I/O. Before, a
/// dead Redis answered for it (Unreachable), and Python's `acquire(n=0)` returned False.
#[test]
fn bad_arguments_are_refused_before_reaching_redis() {
    use pottery_semaphore_host::BlockingSemaphore;
    let mut server = Server::start(Flavor::Redis);
    let sem = BlockingSemaphore::open(server.options(&key("args-first"))).unwrap();
    server.kill();
    let invalid = |r: Result<(), Error>, what: &str| assert!(matches!(r, Err(Error::InvalidArgument(_))), "{what}: {r:?}");
    invalid(sem.acquire_n(0, true, None).map(drop), "n = 0");
    invalid(sem.acquire_n(1, true, Some(-1.0)).map(drop), "a negative time-out");
    invalid(sem.acquire_n(1, false, Some(1.0)).map(drop), "a time-out without blocking");
    invalid(sem.release(0), "release(0)");
    invalid(sem.release_permits(vec![1; 10_001]).map(drop), "too many tokens");
    invalid(sem.set_permits(-1).map(drop), "a negative number of permits");
    invalid(sem.add_permits(i64::MAX).map(drop), "a delta out of range");
}
