//! sandport: a message broker whose wire protocols are sandboxed
//! WebAssembly components.
//!
//! The host (this crate) accepts connections, probes which protocol a client
//! speaks, frames the byte stream, and routes messages; each protocol's
//! decode and dispatch runs in a guest component behind the
//! `sandport:protocol` world (see `wit/`). Start with [`broker::Broker`].

pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod handoff;
pub mod kv;
pub mod mailbox;
pub mod metrics;
pub mod net;
pub mod registry;
pub mod retained;
pub mod router;
pub mod sessions;
pub mod signals;
pub mod store;
pub mod topic;
pub mod wasm;

pub use broker::{Broker, StartError};
pub use config::Config;
