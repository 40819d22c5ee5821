//! Test harness: throwaway `redis-server` / `valkey-server` processes on free loopback ports,
//! started per test and killed on drop, plus helpers shared by the tests, demo and benchmark.
//! The fault tests add a [`proxy::Proxy`] to cut the network and an [`oracle::Oracle`] to judge.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod native;
pub mod monitor;
pub mod oracle;
pub mod proxy;

/// Which server binary to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Redis,
    Valkey,
}

impl Flavor {
    pub fn binary(self) -> &'static str {
        match self {
            Flavor::Redis => "redis-server",
            Flavor::Valkey => "valkey-server",
        }
    }

    /// The command-line client shipped with the server (`--cluster create` lives there).
    pub fn cli(self) -> &'static str {
        match self {
            Flavor::Redis => "redis-cli",
            Flavor::Valkey => "valkey-cli",
        }
    }

    pub fn available(self) -> bool {
        Command::new(self.binary()).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    /// Redis always (tests fail loudly without it); Valkey too when installed.
    pub fn all() -> Vec<Flavor> {
        let mut flavors = vec![Flavor::Redis];
        if Flavor::Valkey.available() {
            flavors.push(Flavor::Valkey);
        } else {
            eprintln!("note: valkey-server not installed; running against redis-server only");
        }
        flavors
    }
}

/// A server process owned by a test.
#[derive(Debug)]
pub struct Server {
    pub flavor: Flavor,
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
}

/// For the profiling examples: runs `cycle` `n` times, then prints µs per cycle and the
/// server's µs per script over those cycles.
pub fn time_cycles(server: &Server, n: usize, mut cycle: impl FnMut()) {
    server.script_us_per_call();
    let cpu_start = thread_cpu_ns();
    let start = std::time::Instant::now();
    for _ in 0..n {
        cycle();
    }
    let per_cycle = start.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
    let cpu_per_cycle = thread_cpu_ns().saturating_sub(cpu_start) as f64 / 1e3 / n.max(1) as f64;
    eprintln!(
        "{per_cycle:.1} µs per cycle, {cpu_per_cycle:.1} µs of it on this thread's CPU; server {:.2} µs per script",
        server.script_us_per_call()
    );
}

/// CPU time this thread has run, user and kernel (Linux's schedstat; 0 where it is missing).
/// Unlike wall time it leaves out the waits for Redis, where most of a shared VM's noise is.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One of the workspace's binaries, next to the running test's own deps/ directory: found at
/// run time, as `env!("CARGO_BIN_EXE_…")` is not (a copy of the workspace whose target/ came
/// along would run the original's).
pub fn built_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join(name);
    assert!(bin.exists(), "{} is missing: `cargo xtask test` builds it (or `cargo build --workspace --bins`)", bin.display());
    bin
}

/// A loopback port free now, below the range the kernel takes clients' own ports from: a
/// server's port found there can be taken by another test's server (the start is then tried
/// again, see [`Server::start_with`]), but never by a client's connection, also not while a
/// server is stopped to be restarted on the same port.
pub fn free_port() -> u16 {
    const LOWEST: u64 = 10_000;
    let clients_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(32_768);
    static DRAWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if clients_from > LOWEST + 1_000 {
        for _ in 0..1_000 {
            // Apart in each test process and each draw of it (no two processes share a pid).
            let drawn = DRAWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&(std::process::id(), drawn, nanos), &mut h);
            let port = (LOWEST + std::hash::Hasher::finish(&h) % (clients_from - LOWEST)) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl Server {
    pub fn start(flavor: Flavor) -> Server {
        Server::start_with(flavor, &[])
    }

    /// A server that saves every write before answering (`appendfsync always`), so a restart,
    /// even after SIGKILL, brings back everything a client was told.
    pub fn start_persistent(flavor: Flavor) -> Server {
        Server::start_with(flavor, &["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Starts a server with extra `--option value` arguments (e.g. `--requirepass`); `{port}` in
    /// them stands for the server's port (e.g. `--port 0 --tls-port {port}` for TLS only) and
    /// `{free_port}` for another free port (a cluster node's bus).
    ///
    /// A port found free can be taken before the server binds it (by another test's server),
    /// and the server then exits at once: it is started again on other ports, up to three times.
    pub fn start_with(flavor: Flavor, extra: &[&str]) -> Server {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            // Its own directory each attempt: one that lost the port to another test's server
            // of this process removes its directory when dropped, which must not be the other's.
            static ATTEMPT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("pottery-semaphore-{}-{port}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let extra = extra.iter().map(|s| s.replace("{port}", &port.to_string()).replace("{free_port}", &free_port().to_string())).collect();
            let mut server = Server { flavor, port, child: None, dir, extra };
            match server.try_spawn() {
                Ok(()) => return server,
                Err(e) if attempt < ATTEMPTS && server.exited() => eprintln!("note: {e}; starting it on other ports"),
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(&mut self) {
        self.try_spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Whether the process has exited (a server that could not bind its port does at once).
    fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| c.try_wait().is_ok_and(|status| status.is_some()))
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let child = Command::new(self.flavor.binary())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (is it installed?)", self.flavor.binary()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let binary = self.flavor.binary();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if self.exited() {
                return Err(format!("{binary} exited at start on port {}", self.port));
            }
            if Instant::now() >= deadline {
                return Err(format!("{binary} did not start on port {}", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // A server that replays its AOF accepts connections but answers LOADING until done. Any
        // other answer (NOAUTH included) means it is ready. (A TLS-only port cannot be asked in
        // plain text; it has nothing to load in the tests.)
        if self.extra.iter().any(|a| a == "--tls-port") {
            return Ok(());
        }
        while let Err(e) = self.client().get_connection().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c)) {
            if e.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) && !e.is_io_error() {
                break;
            }
            // A connect that "succeeded" can be the kernel joining a client socket to itself on
            // this port; the server that should have bound it is gone.
            if self.exited() {
                return Err(format!("{binary} exited at start on port {}: {e}", self.port));
            }
            if Instant::now() >= deadline {
                return Err(format!("{binary} on port {} does not answer: {e}", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // What answered may be another test's server that took the port first (this one, unable
        // to bind it, is on its way out): it must be this process. One started with a password
        // is asked after AUTH, so that another's NOAUTH is not taken for it. (Only servers that
        // refuse INFO otherwise, an ACL's, are not asked.)
        let password = self.extra.windows(2).find(|w| w[0] == "--requirepass").map(|w| w[1].clone());
        let mut refused_password = false;
        let info = self.client().get_connection().and_then(|mut c| {
            if let Some(password) = &password {
                redis::cmd("AUTH").arg(password).query::<()>(&mut c).inspect_err(|e| refused_password = !e.is_io_error())?;
            }
            redis::cmd("INFO").arg("server").query::<String>(&mut c)
        });
        let answered_by = info.ok().and_then(|i| i.lines().find_map(|l| l.strip_prefix("process_id:")?.trim().parse::<u32>().ok()));
        if refused_password || answered_by.is_some_and(|pid| Some(pid) != self.pid()) {
            if let Some(mut ours) = self.child.take() {
                let _ = ours.kill();
                let _ = ours.wait();
            }
            return Err(format!("port {} answered for another {binary} (pid {answered_by:?})", self.port));
        }
        Ok(())
    }

    /// The server's process id while it runs (to stop and continue it with signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Options for a semaphore on this server. The servers of the tests are seconds old, so the
    /// fresh-server guard (tested on its own) is off.
    pub fn options(&self, key: &str) -> pottery_semaphore_host::Options {
        pottery_semaphore_host::Options::new(self.url(), key).guard_fresh_server(false)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    pub fn connection(&self) -> redis::Connection {
        self.client().get_connection().expect("connection")
    }

    /// Server-side µs per EVALSHA/EVAL since the last call (from `INFO commandstats`), then
    /// resets the stats: what the scripts themselves cost, apart from the round trip.
    pub fn script_us_per_call(&self) -> f64 {
        let mut conn = self.connection();
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut conn).expect("INFO");
        let (mut calls, mut usec) = (0.0, 0.0);
        for line in info.lines().filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:")) {
            for field in line.split([':', ',']) {
                match field.split_once('=') {
                    Some(("calls", v)) => calls += v.parse::<f64>().unwrap_or(0.0),
                    Some(("usec", v)) => usec += v.parse::<f64>().unwrap_or(0.0),
                    _ => {}
                }
            }
        }
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn).expect("CONFIG RESETSTAT");
        if calls > 0.0 { usec / calls } else { 0.0 }
    }

    /// Kills the server (SIGKILL: no shutdown save) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port: empty, unless started with persistence (same data dir).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again on the same port with its data files deleted: what a restart of a
    /// server without persistence looks like, whatever this one was started with. A cluster
    /// node keeps its `nodes.conf`: that is its identity in the cluster, not data.
    pub fn restart_wiped(&mut self) {
        self.kill();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "nodes.conf") {
                continue;
            }
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
        self.spawn();
    }

    /// Adds `--option value` arguments for the next starts (restarts) of this server.
    pub fn add_args(&mut self, args: &[&str]) {
        self.extra.extend(args.iter().map(|a| a.to_string()));
    }

    /// SIGSTOP: the server freezes (its clients wait, its clock does not) until [`Server::resume`].
    pub fn pause(&self) {
        signal(self.pid().expect("server running"), "STOP");
    }

    /// SIGCONT after [`Server::pause`].
    pub fn resume(&self) {
        signal(self.pid().expect("server running"), "CONT");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends a signal by name (`STOP`, `CONT`, `KILL`) through kill(1): unsafe code, and so
/// `libc::kill`, is denied in this workspace.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args(["-s", name, &pid.to_string()]).status().expect("kill(1)");
    assert!(status.success(), "kill -s {name} {pid} failed");
}

/// EVAL of a protocol script as the guest runs it: its KEYS, then the ARGV every script starts
/// with (holder, initial value, lease in ms: `head.lua`), then the script's own arguments. For
/// tests that drive the scripts step by step.
pub fn eval_script(
    conn: &mut redis::Connection,
    script: &pottery_semaphore_core::scripts::Script,
    keys: &[String],
    holder: &str,
    initial: u64,
    lease_ms: u64,
    args: &[String],
) -> redis::RedisResult<redis::Value> {
    redis::cmd("EVAL").arg(script.source).arg(keys.len()).arg(keys).arg(holder).arg(initial).arg(lease_ms).arg(args).query(conn)
}

/// A unique semaphore key per test.
pub fn key(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Polls `check` every 20 ms, blocking this thread, until it holds; fails the test when it
/// does not within `within`.
pub fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

/// `waiter` finds no free permit: blocking acquires with time-outs of 0, 50 and 300 ms each give
/// up no sooner than asked and less than 200 ms later, and leave the queue.
pub async fn assert_time_outs_are_prompt(waiter: &pottery_semaphore_host::Semaphore) {
    for timeout in [Duration::ZERO, Duration::from_millis(50), Duration::from_millis(300)] {
        let started = Instant::now();
        assert!(!waiter.acquire(true, Some(timeout)).await.unwrap());
        let took = started.elapsed();
        assert!(took >= timeout, "returned before the timeout: {took:?} < {timeout:?}");
        assert!(took < timeout + Duration::from_millis(200), "timeout {timeout:?} overshot: {took:?}");
    }
    assert!(waiter.status().await.unwrap().waiters.is_empty(), "a timed-out waiter leaves the queue");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port another test's server took first answers PING, but not for this process: the start
    /// is refused (and retried elsewhere), not taken as this server's.
    #[test]
    fn a_port_another_server_answers_on_is_not_taken_for_ours() {
        let first = Server::start(Flavor::Redis);
        let dir = std::env::temp_dir().join(format!("pottery-semaphore-harness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut second = Server { flavor: Flavor::Redis, port: first.port, child: None, dir, extra: Vec::new() };
        let started = second.try_spawn();
        assert!(started.is_err(), "took {}'s server for its own", first.port);
        assert!(second.exited(), "its own server is left running");
    }
}
