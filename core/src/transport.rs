use crate::scripts::Script;
use crate::{Error, Reply};

/// What the protocol needs from the world. In the component this is the host's WIT import; natively
/// it can be a plain Redis connection (benchmarks) or an in-memory fake (unit tests).
pub trait Transport {
    /// Runs a protocol script (EVALSHA, falling back to EVAL).
    fn eval(&self, script: &Script, keys: &[String], args: &[String]) -> Result<Reply, Error>;
    /// A read-only command whose only key is its first argument.
    fn command(&self, name: &str, key: &str, args: &[String]) -> Result<Reply, Error>;
    /// BLPOP on `key` for at most `timeout_ms`; `None` on time-out, `Err(Cancelled)` when the
    /// caller went away.
    fn blocking_pop(&self, key: &str, timeout_ms: u64) -> Result<Option<String>, Error>;
    /// Returns once the configured replicas acknowledged this connection's writes;
    /// `Err(NotReplicated)` when they did not in time. Called only when `Config::replicate`.
    fn wait_replicas(&self) -> Result<(), Error>;
    /// Monotonic nanoseconds, for the caller's own time-outs only.
    fn monotonic_now_ns(&self) -> u64;
}
