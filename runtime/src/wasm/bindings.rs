//! Host-side bindings of the `sandport:protocol` world, generated once here.
//!
//! Guest exports are called asynchronously so a long-running guest yields to
//! the tokio scheduler at every epoch tick instead of pinning a worker
//! thread. Host imports are synchronous (nothing in them waits) and
//! trappable, so a guest that breaks the rules is stopped on the spot.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "protocol",
    imports: { default: trappable },
    exports: { default: async },
    // Messages, sessions and options are stored with serde (see `store`).
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub use self::sandport::protocol::types;
