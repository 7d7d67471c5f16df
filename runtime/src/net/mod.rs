//! The network side of the host: accepting, probing, framing, and the
//! per-connection task that drives a guest.

pub mod connection;
pub mod framing;
pub mod listener;
pub mod probe;
