//! `echo`: the example protocol, and the template for guest authors.
//!
//! A line protocol (one command per `\n`-terminated line) small enough to
//! read in one sitting, yet using the whole path: framing declared to the
//! host, probing on a shared port, replies with `host::send`, and pub/sub
//! through the host router, so an `echo` client can talk to MQTT clients.
//!
//! ```text
//! PING                 -> PONG
//! ECHO <text>          -> <text>
//! SUB <filter>         -> +OK <id>      (filter: canonical topic, `+` / `#` wildcards)
//! UNSUB <id>           -> +OK
//! PUB <topic> <text>   -> +OK <receivers>
//! QUIT                 -> +BYE, then the connection closes
//! (delivery)           <- MSG <topic> <text>
//! ```
//!
//! Errors are `-ERR <reason>` lines; the connection stays open.

// Natively (tests, fuzzing) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use sandport_guest::types::{CloseReason, ConnectionInfo, Framing, ProbeResult, ProtocolInfo, StreamScan};
use sandport_guest::{Handler, frames, host, message, wildcard_subscription};

/// Command words, for probing.
const COMMANDS: [&[u8]; 6] = [b"PING", b"ECHO", b"SUB", b"UNSUB", b"PUB", b"QUIT"];

struct Echo;

impl Handler for Echo {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "echo".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::Delimiter(b"\n".to_vec()),
            speaks_first: false,
            settings: Vec::new(),
        }
    }

    fn probe(prefix: Vec<u8>) -> ProbeResult {
        let word_len =
            prefix.iter().position(|b| *b == b' ' || *b == b'\r' || *b == b'\n').unwrap_or(prefix.len());
        let word = &prefix[..word_len];
        let complete = word_len < prefix.len();
        if complete && COMMANDS.contains(&word) {
            ProbeResult::Matched(100)
        } else if !complete && COMMANDS.iter().any(|c| c.starts_with(word)) {
            ProbeResult::NeedMore
        } else {
            ProbeResult::NoMatch
        }
    }

    fn on_stream(_data: Vec<u8>) -> Result<StreamScan, String> {
        sandport_guest::framed_by_host()
    }

    fn on_open(_info: ConnectionInfo) {}

    fn on_frames(data: Vec<u8>, ends: Vec<u32>) -> Result<(), String> {
        let mut out = Vec::new();
        for frame in frames(&data, &ends) {
            let line = String::from_utf8_lossy(frame);
            let line = line.trim_end_matches(['\r', '\n']);
            let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
            let reply = match command {
                "PING" => "PONG".to_string(),
                "ECHO" => rest.to_string(),
                "SUB" => match host::subscribe(rest, wildcard_subscription()) {
                    Ok(id) => format!("+OK {id}"),
                    Err(e) => format!("-ERR {}", e.message),
                },
                "UNSUB" => match rest.parse::<u32>() {
                    Ok(id) => match host::unsubscribe(id) {
                        Ok(()) => "+OK".to_string(),
                        Err(e) => format!("-ERR {}", e.message),
                    },
                    Err(_) => "-ERR UNSUB needs a subscription id".to_string(),
                },
                "PUB" => match rest.split_once(' ') {
                    Some((topic, text)) => match host::publish(message(topic, text.as_bytes())) {
                        Ok(outcome) => format!("+OK {}", outcome.receivers),
                        Err(e) => format!("-ERR {}", e.message),
                    },
                    None => "-ERR PUB needs a topic and a text".to_string(),
                },
                "QUIT" => {
                    // Lines after QUIT in the same batch are ignored.
                    out.extend_from_slice(b"+BYE\n");
                    host::close("client quit");
                    break;
                }
                _ => format!("-ERR unknown command '{command}'"),
            };
            out.extend_from_slice(reply.as_bytes());
            out.push(b'\n');
        }
        // One `send` per batch: host calls cost more than a copy.
        host::send(&out);
        Ok(())
    }

    fn on_deliver(batch: Vec<u8>) {
        let mut out = Vec::new();
        for delivery in sandport_guest::deliveries(&batch) {
            let message = delivery.message;
            out.extend_from_slice(b"MSG ");
            out.extend_from_slice(message.topic.as_bytes());
            out.push(b' ');
            out.extend_from_slice(message.payload);
            out.push(b'\n');
        }
        host::send(&out);
    }

    fn on_timer() {}

    fn on_close(_reason: CloseReason) {}
}

// Exported only in the component build; natively the crate is a plain
// library, so its decoder can be unit-tested and fuzzed.
#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Echo);
