//! The WebAssembly side of the host: engine, bindings, loading, instances,
//! and the native implementation of the `host` interface.

pub mod bindings;
pub mod borrowed;
pub mod breaker;
pub mod cpu;
pub mod engine;
pub mod guest;
pub mod guest_text;
pub mod host;
pub mod packing;
pub mod protocol;
pub mod state;
pub mod stdio;
pub mod world;
