//! Native runtime of pottery-semaphore. The protocol runs inside a wasm component (built from
//! `core/`); this crate gives it a sandboxed transport to Redis and wraps it in an async
//! [`Semaphore`] and a [`BlockingSemaphore`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), pottery_semaphore_host::Error> {
//! use pottery_semaphore_host::{Options, Semaphore};
//! let sem = Semaphore::open(Options::new("redis://127.0.0.1:6379", "reports").permits(3)).await?;
//! if sem.acquire(true, None).await? {
//!     // at most 3 holders here, across every process
//!     sem.release(1).await?;
//! }
//! # Ok(()) }
//! ```

mod bindings;
mod blocking;
mod cancel;
pub mod convert;
mod error;
mod instance;
mod options;
mod runtime;
mod semaphore;
mod signals;
mod transport;

pub use blocking::BlockingSemaphore;
pub use error::Error;
pub use pottery_semaphore_core::{Holder, Permit, Status, Waiter};
pub use runtime::{EngineOptions, Runtime};
pub use options::{Options, ReplicaAck, redacted as redacted_url};
pub use semaphore::Semaphore;
pub use signals::{keep_signals_off_runtime_threads, signals_end_waits};
