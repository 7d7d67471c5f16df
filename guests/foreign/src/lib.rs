//! `foreign`: a test-only guest that reaches outside the sandport world.
//!
//! It reads a file with `std::fs` and opens a TCP connection with
//! `std::net`, which makes the component import `wasi:filesystem` and
//! `wasi:sockets`. The broker must refuse to load it, naming the imports.

// Natively (tests) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use sandport_guest::Handler;
use sandport_guest::types::{CloseReason, ConnectionInfo, Framing, ProbeResult, ProtocolInfo, StreamScan};

struct Foreign;

impl Handler for Foreign {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "foreign".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::Delimiter(b"\n".to_vec()),
            speaks_first: false,
            settings: Vec::new(),
        }
    }

    fn probe(_prefix: Vec<u8>) -> ProbeResult {
        ProbeResult::NoMatch
    }

    fn on_stream(_data: Vec<u8>) -> Result<StreamScan, String> {
        sandport_guest::framed_by_host()
    }

    fn on_open(_info: ConnectionInfo) {
        let secret = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        sandport_guest::host::send(secret.as_bytes());
    }

    fn on_frames(_data: Vec<u8>, _ends: Vec<u32>) -> Result<(), String> {
        // An escape through the network, if the host let it link.
        let _ = std::net::TcpStream::connect("127.0.0.1:22");
        Ok(())
    }

    fn on_deliver(_batch: Vec<u8>) {}

    fn on_timer() {}

    fn on_close(_reason: CloseReason) {}
}

#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Foreign);
