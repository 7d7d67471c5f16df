//! `foreign`: a test-only guest that reaches for what sits outside its
//! instance: files, the network, the clocks.
//!
//! Rust's `std` makes it import `wasi:filesystem`, `wasi:sockets` and
//! `wasi:clocks`, as the runtimes of other languages do. The broker loads
//! it only when its protocol is granted the clocks, and then every reach
//! beyond the instance but the clocks must fail. Each line it receives is a
//! command, answered with one line:
//!
//! - `read PATH`: read a file (`read: ERROR` is the right answer);
//! - `connect ADDRESS`: open a TCP connection (`connect: ERROR`);
//! - `resolve NAME`: look a host name up (`resolve: ERROR`);
//! - `time`: seconds since the Unix epoch by the wall clock;
//! - `sleep SECONDS`: wait that long inside the call, then `woke`.
//!
//! On open it tries to read `/etc/passwd` and sends what came of it.

// Natively (tests) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sandport_guest::types::{CloseReason, ConnectionInfo, Framing, ProbeResult, ProtocolInfo, StreamScan};
use sandport_guest::{Handler, frames, host};

struct Foreign;

/// `read PATH`: what reading the file gave, without its contents.
fn read(path: &str) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!("read: {} bytes", bytes.len()),
        Err(e) => format!("read: {e}"),
    }
}

/// Answer one command line.
fn answer(line: &str) -> String {
    let (command, argument) = line.split_once(' ').unwrap_or((line, ""));
    match command {
        "read" => read(argument),
        "connect" => match TcpStream::connect(argument) {
            Ok(_) => "connect: connected".to_string(),
            Err(e) => format!("connect: {e}"),
        },
        "resolve" => match (argument, 80).to_socket_addrs() {
            Ok(addresses) => format!("resolve: {} addresses", addresses.count()),
            Err(e) => format!("resolve: {e}"),
        },
        "time" => match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => format!("time: {}", since.as_secs()),
            Err(e) => format!("time: {e}"),
        },
        "sleep" => {
            std::thread::sleep(Duration::from_secs(argument.parse().unwrap_or(1)));
            "woke".to_string()
        }
        _ => format!("unknown command `{command}`"),
    }
}

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
        host::send(format!("{}\n", read("/etc/passwd")).as_bytes());
    }

    fn on_frames(data: Vec<u8>, ends: Vec<u32>) -> Result<(), String> {
        for frame in frames(&data, &ends) {
            let line = String::from_utf8_lossy(frame);
            let reply = answer(line.trim_end());
            host::send(format!("{reply}\n").as_bytes());
        }
        Ok(())
    }

    fn on_deliver(_batch: Vec<u8>) {}

    fn on_timer() {}

    fn on_close(_reason: CloseReason) {}
}

#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Foreign);
