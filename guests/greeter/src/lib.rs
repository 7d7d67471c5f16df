//! `greeter`: a test-only guest for the host features the other guests do
//! not use: speaking first, guest-driven framing, timers and key-value.
//!
//! ```text
//! (on open)        <- HELLO <connection id>
//! ECHO <text>      -> <text>
//! TIMER <ms>       -> +OK, then TICK when the timer fires
//! SET <key> <val>  -> +OK | -ERR <reason>        (protocol-scoped key-value)
//! GET <key>        -> <val> | (nil)
//! ```
//!
//! Frames are lines, but split by `frame-lengths` rather than by the host.

// Natively (tests) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use sandport_guest::types::{
    CloseReason, ConnectionInfo, Delivery, FrameScan, Framing, KvScope, NextFrame, ProbeResult, ProtocolInfo,
};
use sandport_guest::{Handler, host};

struct Greeter;

/// Lengths of the complete lines at the start of `buffer`.
fn scan_lines(buffer: &[u8]) -> FrameScan {
    let mut complete = Vec::new();
    let mut start = 0;
    while let Some(at) = buffer[start..].iter().position(|b| *b == b'\n') {
        complete.push((at + 1) as u32);
        start += at + 1;
    }
    FrameScan { complete, next: NextFrame::Unknown }
}

impl Handler for Greeter {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "greeter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::Guest,
            speaks_first: true,
        }
    }

    fn probe(_prefix: Vec<u8>) -> ProbeResult {
        ProbeResult::NoMatch
    }

    fn frame_lengths(buffer: Vec<u8>) -> FrameScan {
        scan_lines(&buffer)
    }

    fn on_open(info: ConnectionInfo) {
        host::send(format!("HELLO {}\n", info.id).as_bytes());
    }

    fn on_frames(frames: Vec<Vec<u8>>) -> Result<(), String> {
        let mut out = String::new();
        for frame in frames {
            let line = String::from_utf8_lossy(&frame);
            let line = line.trim_end();
            let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
            let reply = match command {
                "ECHO" => rest.to_string(),
                "TIMER" => {
                    host::set_timer(rest.parse().map_err(|_| "TIMER needs milliseconds")?);
                    "+OK".to_string()
                }
                "SET" => {
                    let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
                    match host::kv_set(KvScope::Protocol, key, value.as_bytes()) {
                        Ok(()) => "+OK".to_string(),
                        Err(e) => format!("-ERR {}", e.message),
                    }
                }
                "GET" => match host::kv_get(KvScope::Protocol, rest) {
                    Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
                    Ok(None) => "(nil)".to_string(),
                    Err(e) => format!("-ERR {}", e.message),
                },
                other => return Err(format!("unknown command {other}")),
            };
            out.push_str(&reply);
            out.push('\n');
        }
        host::send(out.as_bytes());
        Ok(())
    }

    fn on_deliver(_batch: Vec<Delivery>) {}

    fn on_timer() {
        host::send(b"TICK\n");
    }

    fn on_close(_reason: CloseReason) {}
}

#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Greeter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_the_tail_kept() {
        let scan = scan_lines(b"a\nbc\nde");
        assert_eq!(scan.complete, vec![2, 3]);
        assert_eq!(scan.next, NextFrame::Unknown);
    }
}
