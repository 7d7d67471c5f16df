//! `greeter`: a test-only guest for the host features the other guests do
//! not use: speaking first, guest-driven framing, timers and key-value.
//!
//! ```text
//! (on open)        <- HELLO <connection id>
//! ECHO <text>      -> <text>
//! TIMER <ms>       -> +OK, then TICK when the timer fires
//! SET <key> <val>  -> +OK | -ERR <reason>        (protocol-scoped key-value)
//! GET <key>        -> <val> | (nil)
//! SETNX <key> <val>-> 1 | 0                       (written only if absent)
//! SETPX <key> <ms> <val> -> +OK                   (with a time to live)
//! INCR <key>       -> <new value> | -ERR <reason>
//! TTL <key>        -> <ms> | -1 (no expiry) | -2 (no key)
//! COUNT <prefix>   -> <keys>          CLEAR <prefix> -> <deleted>
//! NAME <name>      -> +OK             LIST -> <id>:<name> ...   KILL <id> -> +OK | -ERR
//! SUBS             -> <filter>=<count> ...        (wildcard subscriptions broker-wide)
//! ```
//!
//! Frames are lines, but found by the guest in `on-stream` rather than by the host.

// Natively (tests) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use sandport_guest::types::{
    CloseReason, ConnectionInfo, FilterKind, Framing, HostError, KvCondition, KvScope, KvSetOptions,
    NextFrame, ProbeResult, ProtocolInfo, StreamScan,
};
use sandport_guest::{Handler, host};

struct Greeter;

fn set(condition: KvCondition, ttl_ms: Option<u64>) -> KvSetOptions {
    KvSetOptions { condition, ttl_ms, keep_ttl: false }
}

fn reply_to(written: Result<bool, HostError>) -> String {
    match written {
        Ok(_) => "+OK".to_string(),
        Err(e) => format!("-ERR {}", e.message),
    }
}

/// The complete lines at the start of `buffer`, each with its `\n`.
fn complete_lines(buffer: &[u8]) -> impl Iterator<Item = &[u8]> {
    buffer.split_inclusive(|b| *b == b'\n').take_while(|line| line.ends_with(b"\n"))
}

impl Handler for Greeter {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "greeter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::Guest,
            speaks_first: true,
            settings: Vec::new(),
        }
    }

    fn probe(_prefix: Vec<u8>) -> ProbeResult {
        ProbeResult::NoMatch
    }

    fn on_stream(data: Vec<u8>) -> Result<StreamScan, String> {
        let mut out = String::new();
        let (mut handled, mut frames) = (0, 0);
        for line in complete_lines(&data) {
            out.push_str(&reply(String::from_utf8_lossy(line).trim_end())?);
            out.push('\n');
            handled += line.len() as u32;
            frames += 1;
        }
        host::send(out.as_bytes());
        Ok(StreamScan { handled, frames, next: NextFrame::Unknown })
    }

    fn on_open(info: ConnectionInfo) {
        host::send(format!("HELLO {}\n", info.id).as_bytes());
    }

    fn on_frames(_data: Vec<u8>, _ends: Vec<u32>) -> Result<(), String> {
        sandport_guest::framed_by_guest()
    }

    fn on_deliver(_batch: Vec<u8>) {}

    fn on_timer() {
        host::send(b"TICK\n");
    }

    fn on_close(_reason: CloseReason) {}
}

/// The answer to one command line.
fn reply(line: &str) -> Result<String, String> {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    Ok(match command {
        "ECHO" => rest.to_string(),
        "TIMER" => {
            host::set_timer(rest.parse().map_err(|_| "TIMER needs milliseconds")?);
            "+OK".to_string()
        }
        "SET" => {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            reply_to(host::kv_set(KvScope::Protocol, key, value.as_bytes(), set(KvCondition::Always, None)))
        }
        "SETNX" => {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            match host::kv_set(KvScope::Protocol, key, value.as_bytes(), set(KvCondition::IfAbsent, None)) {
                Ok(written) => u8::from(written).to_string(),
                Err(e) => format!("-ERR {}", e.message),
            }
        }
        "SETPX" => {
            let mut words = rest.splitn(3, ' ');
            let (key, ms, value) = (words.next().unwrap_or(""), words.next(), words.next().unwrap_or(""));
            let ms = ms.and_then(|m| m.parse().ok()).ok_or("SETPX needs milliseconds")?;
            reply_to(host::kv_set(
                KvScope::Protocol,
                key,
                value.as_bytes(),
                set(KvCondition::Always, Some(ms)),
            ))
        }
        "GET" => match host::kv_get(KvScope::Protocol, rest) {
            Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
            Ok(None) => "(nil)".to_string(),
            Err(e) => format!("-ERR {}", e.message),
        },
        "INCR" => match host::kv_increment(KvScope::Protocol, rest, 1) {
            Ok(value) => value.to_string(),
            Err(e) => format!("-ERR {}", e.message),
        },
        "TTL" => match host::kv_ttl(KvScope::Protocol, rest) {
            Ok(None) => "-2".to_string(),
            Ok(Some(None)) => "-1".to_string(),
            Ok(Some(Some(ms))) => ms.to_string(),
            Err(e) => format!("-ERR {}", e.message),
        },
        "COUNT" => host::kv_count(KvScope::Protocol, rest).map_or_else(|e| e.message, |n| n.to_string()),
        "CLEAR" => host::kv_clear(KvScope::Protocol, rest).map_or_else(|e| e.message, |n| n.to_string()),
        "NAME" => {
            host::set_connection_name(Some(rest));
            "+OK".to_string()
        }
        "LIST" => host::list_connections()
            .iter()
            .map(|c| format!("{}:{}", c.id, c.name.as_deref().unwrap_or("-")))
            .collect::<Vec<_>>()
            .join(" "),
        "KILL" => match rest.parse().map(host::close_connection) {
            Ok(Ok(())) => "+OK".to_string(),
            Ok(Err(e)) => format!("-ERR {}", e.message),
            Err(_) => "-ERR KILL needs a connection id".to_string(),
        },
        "SUBS" => host::subscription_counts(FilterKind::Wildcard, None)
            .iter()
            .map(|(filter, n)| format!("{filter}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
        other => return Err(format!("unknown command {other}")),
    })
}

#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Greeter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_the_tail_kept() {
        let lines: Vec<&[u8]> = complete_lines(b"a\nbc\nde").collect();
        assert_eq!(lines, [&b"a\n"[..], b"bc\n"]);
    }
}
