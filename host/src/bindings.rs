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

/// The same world with synchronous imports and exports, for the blocking API on one plain
/// server: a call runs straight on the caller's thread, with no fiber and no future per import.
/// The shared types interface keeps one error type for both.
pub mod sync {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "guest",
        with: {
            "pottery:semaphore/types": crate::bindings::types,
            "pottery:semaphore/transport.scope": crate::transport::Scope,
        },
    });

    pub use exports::pottery::semaphore::api;
    pub use pottery::semaphore::transport;
}
