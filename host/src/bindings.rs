//! Host side of the WIT world. Every import is async: Redis I/O runs on tokio while the guest
//! waits, and exports are called asynchronously for the same reason.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "guest",
    imports: { default: async },
    exports: { default: async },
    with: { "pottery:semaphore/transport.scope": crate::transport::Scope },
});

pub use exports::pottery::semaphore::api;
pub use pottery::semaphore::{transport, types};
