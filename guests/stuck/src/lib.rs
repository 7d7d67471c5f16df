//! `stuck`: a test-only guest whose `describe` never returns. Loading it
//! must fail on the call deadline, in `sandport check` as in the broker,
//! rather than hang.

// Natively nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use sandport_guest::Handler;
use sandport_guest::types::{CloseReason, ConnectionInfo, ProbeResult, ProtocolInfo, StreamScan};

struct Stuck;

impl Handler for Stuck {
    fn describe() -> ProtocolInfo {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn probe(_prefix: Vec<u8>) -> ProbeResult {
        ProbeResult::NoMatch
    }

    fn on_stream(_data: Vec<u8>) -> Result<StreamScan, String> {
        Err("never loaded".into())
    }

    fn on_open(_info: ConnectionInfo) {}

    fn on_frames(_data: Vec<u8>, _ends: Vec<u32>) -> Result<(), String> {
        Ok(())
    }

    fn on_deliver(_batch: Vec<u8>) {}

    fn on_timer() {}

    fn on_close(_reason: CloseReason) {}
}

#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Stuck);
