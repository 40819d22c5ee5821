use std::sync::atomic::{AtomicU64, Ordering};

use crate::scripts::Script;
use crate::{Args, Error, Reply};

/// What every script of one semaphore runs with: its KEYS and the leading part of its ARGV
/// (holder, initial value, lease). A transport may keep them across calls (the component's host
/// does: they cross the wasm boundary once, not with every call); `id` tells scopes apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    id: u64,
    pub keys: Vec<String>,
    pub leading: Vec<String>,
}

impl Scope {
    pub fn new(keys: Vec<String>, leading: Vec<String>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Scope { id: NEXT.fetch_add(1, Ordering::Relaxed), keys, leading }
    }

    /// Unique among the scopes of this process (or component instance).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// What the protocol needs from the world. In the component this is the host's WIT import; natively
/// it can be a plain Redis connection (benchmarks) or an in-memory fake (unit tests).
pub trait Transport {
    /// Runs a protocol script (EVALSHA, falling back to EVAL) with `scope`'s keys and ARGV =
    /// its leading arguments, then `args`.
    fn eval(&self, script: &Script, scope: &Scope, args: &Args) -> Result<Reply, Error>;
    /// A read-only command whose only key is its first argument.
    fn command(&self, name: &str, key: &str, args: &[String]) -> Result<Reply, Error>;
    /// BLPOP on `key` for at most `timeout_ms`; `None` on time-out, `Err(Cancelled)` when the
    /// caller went away. `exact`: keep the time-out to the millisecond (the caller's deadline),
    /// else Redis's timer may end it a little late (a heartbeat; see the WIT).
    fn blocking_pop(&self, key: &str, timeout_ms: u64, exact: bool) -> Result<Option<String>, Error>;
    /// Returns once the configured replicas acknowledged this connection's writes;
    /// `Err(NotReplicated)` when they did not in time. Called only when `Config::replicate`.
    fn wait_replicas(&self) -> Result<(), Error>;
    /// Monotonic nanoseconds, for the caller's own time-outs only.
    fn monotonic_now_ns(&self) -> u64;

    /// Runs `script` on several masters at once, each `(master, args)` of `calls`; one result
    /// per call, in order; a master slower than `timeout_ms` is `Unreachable`. Without several
    /// masters only master 0 exists.
    fn eval_each(&self, script: &Script, scope: &Scope, calls: &[(u32, Args)], timeout_ms: u64) -> Vec<Result<Reply, Error>> {
        let _ = timeout_ms;
        calls.iter().map(|(master, args)| if *master == 0 { self.eval(script, scope, args) } else { Err(no_master(*master)) }).collect()
    }

    /// [`Transport::blocking_pop`] on master `master`.
    fn blocking_pop_on(&self, master: u32, key: &str, timeout_ms: u64, exact: bool) -> Result<Option<String>, Error> {
        if master == 0 { self.blocking_pop(key, timeout_ms, exact) } else { Err(no_master(master)) }
    }

    /// Waits `ms` milliseconds (between retries when no master can be reached to wait on).
    fn sleep(&self, ms: u64) -> Result<(), Error>;
}

fn no_master(master: u32) -> Error {
    Error::Forbidden(format!("master {master} is not configured"))
}
