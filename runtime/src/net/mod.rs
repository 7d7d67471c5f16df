//! The network side of the host: accepting, transports (TCP, TLS, WebSocket),
//! probing, framing, and the per-connection task that drives a guest.

pub mod connection;
pub mod framing;
pub mod listener;
pub mod probe;
pub mod stream;
pub mod tls;
pub mod websocket;
