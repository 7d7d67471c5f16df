//! `greedy`: a test-only guest whose `probe` claims every connection with
//! the highest confidence. On a port it shares, it wins every client; the
//! tests show that the harm stays on that port (a shared port is a trust
//! decision of the operator) and that the broker carries on. Its frames
//! are split by the host, so it is also the guest whose `on-frames` spins
//! (on a `loop` line), for the deadline test of that path.

// Natively nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use sandport_guest::types::{CloseReason, ConnectionInfo, Framing, ProbeResult, ProtocolInfo, StreamScan};
use sandport_guest::{Handler, frames, host};

struct Greedy;

impl Handler for Greedy {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "greedy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::Delimiter(b"\n".to_vec()),
            speaks_first: false,
            settings: Vec::new(),
        }
    }

    fn probe(_prefix: Vec<u8>) -> ProbeResult {
        ProbeResult::Matched(u8::MAX)
    }

    fn on_stream(_data: Vec<u8>) -> Result<StreamScan, String> {
        sandport_guest::framed_by_host()
    }

    fn on_open(_info: ConnectionInfo) {}

    fn on_frames(data: Vec<u8>, ends: Vec<u32>) -> Result<(), String> {
        for frame in frames(&data, &ends) {
            if frame == b"loop\n" {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            host::send(b"mine\n");
        }
        Ok(())
    }

    fn on_deliver(_batch: Vec<u8>) {}

    fn on_timer() {}

    fn on_close(_reason: CloseReason) {}
}

#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Greedy);
