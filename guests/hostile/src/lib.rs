//! `hostile`: a test-only guest that misbehaves on request.
//!
//! It proves the sandbox: each command makes the guest break in one way,
//! and the broker must stop only the connection that asked for it.
//! Never ship it in a production config.
//!
//! ```text
//! echo <text>   -> <text>              (a well-behaved baseline)
//! will <topic> <text> -> +OK           (sets a will, to see it published after a fault)
//! loop          -> spins forever in on-frames (stopped at the call deadline)
//! panic         -> panics (a trap)
//! oom           -> allocates until memory is refused
//! recurse       -> recurses until the stack overflows
//! flood         -> sends until the outbound buffer limit stops it
//! ```
//!
//! `probe` spins forever when the prefix starts with `loop-probe`.

// Natively (tests, fuzzing) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::hint::black_box;

use sandport_guest::types::{
    CloseReason, ConnectionInfo, Delivery, FrameScan, Framing, NextFrame, ProbeResult, ProtocolInfo, Will,
};
use sandport_guest::{Handler, host, message};

struct Hostile;

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

// Endless on purpose: the stack overflow is the test.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    frame[0] + recurse(black_box(depth + 1))
}

impl Handler for Hostile {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::Delimiter(b"\n".to_vec()),
            speaks_first: false,
            settings: Vec::new(),
        }
    }

    fn probe(prefix: Vec<u8>) -> ProbeResult {
        if prefix.starts_with(b"loop-probe") {
            spin();
        }
        ProbeResult::NoMatch
    }

    fn frame_lengths(_buffer: Vec<u8>) -> FrameScan {
        FrameScan { complete: Vec::new(), next: NextFrame::Unknown }
    }

    fn on_open(_info: ConnectionInfo) {}

    fn on_frames(frames: Vec<Vec<u8>>) -> Result<(), String> {
        for frame in frames {
            let line = String::from_utf8_lossy(&frame).trim_end().to_string();
            let (command, rest) = line.split_once(' ').unwrap_or((&line, ""));
            match command {
                "echo" => host::send(format!("{rest}\n").as_bytes()),
                "will" => {
                    let (topic, text) = rest.split_once(' ').unwrap_or((rest, ""));
                    let will = Will { message: message(topic, text), delay_secs: 0 };
                    match host::set_will(Some(&will)) {
                        Ok(()) => host::send(b"+OK\n"),
                        Err(e) => host::send(format!("-ERR {}\n", e.message).as_bytes()),
                    }
                }
                "loop" => spin(),
                "panic" => panic!("asked to panic"),
                "oom" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1; 1 << 20]);
                        black_box(&hoard);
                    }
                }
                "recurse" => {
                    black_box(recurse(0));
                }
                "flood" => {
                    let chunk = vec![b'x'; 64 * 1024];
                    loop {
                        host::send(&chunk);
                    }
                }
                _ => host::send(b"unknown\n"),
            }
        }
        Ok(())
    }

    fn on_deliver(_batch: Vec<Delivery>) {}

    fn on_timer() {}

    fn on_close(_reason: CloseReason) {}
}

// Exported only in the component build; natively the crate is a plain
// library, so its decoder can be unit-tested and fuzzed.
#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Hostile);
