//! All protocol logic of pottery-semaphore. Built for wasm32 it is the component the host runs
//! (see `guest`); built natively it is the same code behind a [`Transport`] trait, for unit tests
//! and for measuring what the component costs over native code.

pub mod allocator;
pub mod args;
pub mod api;
pub mod decimal;
pub mod error;
pub mod keys;
pub mod multi;
pub mod protocol;
pub mod reply;
pub mod scripts;
pub mod transport;
pub mod validate;

#[cfg(target_arch = "wasm32")]
mod guest;

pub use api::Api;
pub use args::{Arg, Args};
pub use decimal::Decimal;
pub use error::Error;
pub use protocol::{Config, Holder, Opened, Permit, Released, Semaphore, Status, Waiter};
pub use reply::{Reply, Scalar};
pub use transport::{Scope, Transport};
