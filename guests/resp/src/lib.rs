//! `resp`: Redis pub/sub and the commands Redis clients and tools send, in
//! RESP2 and RESP3.
//!
//! Channels are canonical topics, verbatim except that `%`, `+` and `#`
//! (reserved in canonical topics) are percent-escaped: the Redis channel
//! `sensors/kitchen` is the MQTT topic `sensors/kitchen` and the NATS subject
//! `sensors.kitchen`. `SUBSCRIBE` makes exact subscriptions (a channel named
//! `a+` is not a wildcard); `PSUBSCRIBE` makes glob subscriptions matched
//! against the canonical topic. Keys live in the host key-value store, one
//! prefix per `SELECT`ed database.

// Natively (tests, fuzzing) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[doc(hidden)]
pub mod fuzzing;
mod wire;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;

use sandport_guest::delivery::Delivery;
use sandport_guest::types::{
    CloseReason, ConnectionInfo, Credentials, FilterKind, Framing, KvCondition, KvScope, KvSetOptions,
    NextFrame, ProbeResult, ProtocolInfo, Qos, RetainedHandling, StreamScan, SubscribeOptionsParam,
};
use sandport_guest::{Handler, host, message};
use wire::Encoder;

/// The Redis version reported to clients.
const REDIS_VERSION: &str = "7.0.0";
/// Databases `SELECT` accepts.
const DATABASES: i64 = 16;

/// Which family of subscription.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    Channel,
    Pattern,
    Shard,
}

impl Family {
    fn subscribe_reply(self) -> &'static [u8] {
        match self {
            Family::Channel => b"subscribe",
            Family::Pattern => b"psubscribe",
            Family::Shard => b"ssubscribe",
        }
    }

    fn unsubscribe_reply(self) -> &'static [u8] {
        match self {
            Family::Channel => b"unsubscribe",
            Family::Pattern => b"punsubscribe",
            Family::Shard => b"sunsubscribe",
        }
    }
}

#[derive(Default)]
struct State {
    resp3: bool,
    db: i64,
    id: u64,
    name: Option<String>,
    max_bulk: usize,
    /// The client may run commands (authenticated, or anonymous allowed).
    authenticated: bool,
    /// Subscriptions by (family, channel or pattern) -> host id.
    subscriptions: BTreeMap<(u8, Vec<u8>), u32>,
    by_host_id: BTreeMap<u32, (Family, Vec<u8>)>,
    /// The reply buffer, kept empty between calls so that a batch of
    /// commands does not allocate one.
    replies: Vec<u8>,
}

/// Most reply-buffer capacity kept between calls; a larger one (the reply
/// to a big `GET`, say) is freed with its call.
const KEPT_REPLY_BYTES: usize = 4096;

impl State {
    fn encoder(&self) -> Encoder {
        Encoder { resp3: self.resp3 }
    }

    fn subscribed(&self) -> usize {
        self.subscriptions.len()
    }

    /// Send what `out` holds, then keep it for the next call unless it grew
    /// large.
    fn send_replies(&mut self, mut out: Vec<u8>) {
        host::send(&out);
        out.clear();
        if out.capacity() <= KEPT_REPLY_BYTES {
            self.replies = out;
        }
    }

    fn key(&self, key: &[u8]) -> String {
        format!("{}:{}", self.db, String::from_utf8_lossy(key))
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

fn family_tag(family: Family) -> u8 {
    family as u8
}

/// Canonical topic of a channel: borrowed from the command when it needs no
/// escape (most channels), so publishing copies nothing in the guest.
fn channel_topic(channel: &[u8]) -> Cow<'_, str> {
    // One pass for both: ASCII (so UTF-8) and nothing to escape.
    if channel.iter().all(|b| b.is_ascii() && !matches!(b, b'%' | b'+' | b'#')) {
        debug_assert!(channel.is_ascii());
        // SAFETY: every byte is ASCII, so the bytes are UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(channel) });
    }
    if !channel.iter().any(|b| matches!(b, b'%' | b'+' | b'#'))
        && let Ok(text) = std::str::from_utf8(channel)
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(String::from_utf8_lossy(channel).replace('%', "%25").replace('+', "%2B").replace('#', "%23"))
}

/// Channel name of a canonical topic.
fn topic_channel(topic: &str) -> Vec<u8> {
    if !topic.contains('%') {
        return topic.as_bytes().to_vec();
    }
    topic.replace("%23", "#").replace("%2B", "+").replace("%25", "%").into_bytes()
}

struct Resp;

impl Handler for Resp {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "resp".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::Guest,
            speaks_first: false,
            settings: Vec::new(),
        }
    }

    fn probe(prefix: Vec<u8>) -> ProbeResult {
        match prefix.first() {
            None => ProbeResult::NeedMore,
            Some(b'*') if prefix.len() < 2 => ProbeResult::NeedMore,
            Some(b'*') if prefix[1].is_ascii_digit() => ProbeResult::Matched(120),
            _ => {
                let upper = prefix.to_ascii_uppercase();
                let known: [&[u8]; 4] = [b"PING", b"HELLO ", b"AUTH ", b"SUBSCRIBE "];
                if known.iter().any(|k| upper.starts_with(k)) {
                    ProbeResult::Matched(60)
                } else if known.iter().any(|k| k.starts_with(&upper)) {
                    ProbeResult::NeedMore
                } else {
                    ProbeResult::NoMatch
                }
            }
        }
    }

    fn on_open(info: ConnectionInfo) {
        STATE.with_borrow_mut(|s| {
            s.id = info.id;
            s.max_bulk = info.max_frame_bytes as usize;
            s.authenticated = info.user.is_some();
        });
    }

    fn on_stream(data: Vec<u8>) -> Result<StreamScan, String> {
        let mut args = wire::Args::default();
        let scan = STATE.with_borrow_mut(|state| {
            let mut out = std::mem::take(&mut state.replies);
            // Replies are usually shorter than their commands; a big command
            // (SET of a large value) must not double the guest's memory.
            out.reserve(data.len().min(16 * 1024));
            let mut frames = wire::Frames::new(&data, state.max_bulk);
            let mut count = 0;
            while frames.next_command(&mut args) {
                count += 1;
                if !args.is_empty() && !args.with(|args| command(state, args, &mut out)) {
                    break;
                }
            }
            let next = match frames.error() {
                Some(text) => {
                    // Redis answers the commands before the bad one, then explains.
                    out.extend_from_slice(format!("-ERR {text}\r\n").as_bytes());
                    NextFrame::Invalid(text.to_string())
                }
                None => frames.needs().map_or(NextFrame::Unknown, NextFrame::Needs),
            };
            let scan = StreamScan { handled: frames.handled() as u32, frames: count, next };
            state.send_replies(out);
            scan
        });
        Ok(scan)
    }

    fn on_frames(_data: Vec<u8>, _ends: Vec<u32>) -> Result<(), String> {
        sandport_guest::framed_by_guest()
    }

    fn on_deliver(batch: Vec<u8>) {
        STATE.with_borrow_mut(|state| {
            let mut out = std::mem::take(&mut state.replies);
            // Sized as `sandport_guest::deliveries` explains.
            out.reserve(batch.len());
            for delivery in sandport_guest::deliveries(&batch) {
                deliver(state, &delivery, &mut out);
            }
            state.send_replies(out);
        });
    }

    fn on_timer() {}

    fn on_close(_reason: CloseReason) {}
}

/// Write the deliveries already waiting for this connection, as a
/// subscribed connection's own messages must go before what follows them.
fn deliver_waiting(state: &State, out: &mut Vec<u8>) {
    // Only a subscribed connection can have deliveries: a pure publisher
    // skips the host call after every PUBLISH.
    if state.subscribed() == 0 {
        return;
    }
    sandport_guest::take_waiting(|delivery| deliver(state, &delivery, out));
}

fn deliver(state: &State, delivery: &Delivery, out: &mut Vec<u8>) {
    let Some((family, subject)) = state.by_host_id.get(&delivery.subscription) else { return };
    let enc = state.encoder();
    let channel = topic_channel(delivery.message.topic);
    match family {
        Family::Pattern => {
            enc.push(out, 4);
            enc.bulk(out, b"pmessage");
            enc.bulk(out, subject);
        }
        Family::Channel => {
            enc.push(out, 3);
            enc.bulk(out, b"message");
        }
        Family::Shard => {
            enc.push(out, 3);
            enc.bulk(out, b"smessage");
        }
    }
    enc.bulk(out, &channel);
    enc.bulk(out, delivery.message.payload);
}

/// Redis's arity error.
fn wrong_arity(enc: Encoder, out: &mut Vec<u8>, name: &str) {
    enc.error(out, &format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase()));
}

/// Longest command name looked up; longer ones are unknown.
const MAX_COMMAND_NAME: usize = 32;

/// `raw` upper-cased into `buffer`, or "" when it is too long or not ASCII
/// (no command matches either). Upper-cased and checked in one pass: this
/// runs for every command.
fn command_name<'b>(raw: &[u8], buffer: &'b mut [u8; MAX_COMMAND_NAME]) -> &'b str {
    let Some(copy) = buffer.get_mut(..raw.len()) else { return "" };
    let mut ascii = true;
    for (upper, &byte) in copy.iter_mut().zip(raw) {
        ascii &= byte.is_ascii();
        *upper = byte.to_ascii_uppercase();
    }
    if !ascii {
        return "";
    }
    debug_assert!(copy.is_ascii());
    // SAFETY: every byte is ASCII, so the bytes are UTF-8.
    unsafe { std::str::from_utf8_unchecked(copy) }
}

/// Run one command; returns false when the connection is closing.
fn command(state: &mut State, args: &[&[u8]], out: &mut Vec<u8>) -> bool {
    let enc = state.encoder();
    // Upper-cased on the stack: this runs for every command.
    let mut upper = [0u8; MAX_COMMAND_NAME];
    let name = command_name(args[0], &mut upper);
    let argc = args.len();
    // In RESP2 a subscribed connection may only manage subscriptions (RESP3 pushes allow anything).
    if state.subscribed() > 0 && !state.resp3 {
        let allowed = [
            "SUBSCRIBE",
            "UNSUBSCRIBE",
            "PSUBSCRIBE",
            "PUNSUBSCRIBE",
            "SSUBSCRIBE",
            "SUNSUBSCRIBE",
            "PING",
            "QUIT",
            "RESET",
        ];
        if !allowed.contains(&name) {
            enc.error(
                out,
                &format!(
                    "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                    String::from_utf8_lossy(args[0]).to_ascii_lowercase()
                ),
            );
            return true;
        }
    }
    // Like redis-server with requirepass: nothing but AUTH, HELLO and QUIT
    // before the client authenticated.
    if !state.authenticated && !matches!(name, "AUTH" | "HELLO" | "QUIT") {
        enc.error(out, "NOAUTH Authentication required.");
        return true;
    }
    // Arms are tried in order, each a string comparison: the busiest first.
    match (name, argc) {
        ("PUBLISH" | "SPUBLISH", 3) => {
            let topic = channel_topic(args[1]);
            match host::publish(message(&topic, args[2])) {
                Ok(outcome) => {
                    // redis-server writes a RESP3 subscriber's own message
                    // before its reply to PUBLISH.
                    deliver_waiting(state, out);
                    enc.integer(out, i64::from(outcome.receivers));
                }
                Err(e) => enc.error(out, &format!("ERR {}", e.message)),
            }
        }
        ("PING", 1 | 2) => {
            if state.subscribed() > 0 && !state.resp3 {
                enc.array(out, 2);
                enc.bulk(out, b"pong");
                enc.bulk(out, args.get(1).copied().unwrap_or_default());
            } else if let Some(text) = args.get(1) {
                enc.bulk(out, text);
            } else {
                enc.simple(out, "PONG");
            }
        }
        ("ECHO", 2) => enc.bulk(out, args[1]),
        ("QUIT", _) => {
            enc.simple(out, "OK");
            host::close("client quit");
            return false;
        }
        ("RESET", 1) => {
            unsubscribe_all(state, None, out, false);
            state.db = 0;
            state.resp3 = false;
            state.name = None;
            host::set_connection_name(None);
            enc.simple(out, "RESET");
        }
        ("SELECT", 2) => match parse_int(args[1]) {
            Some(db) if (0..DATABASES).contains(&db) => {
                state.db = db;
                enc.simple(out, "OK");
            }
            Some(_) => enc.error(out, "ERR DB index is out of range"),
            None => enc.error(out, "ERR value is not an integer or out of range"),
        },
        ("HELLO", _) => hello(state, args, out),
        ("AUTH", 2 | 3) => {
            let (user, pass) = if argc == 3 { (Some(args[1]), args[2]) } else { (None, args[1]) };
            if authenticate(user, pass) {
                state.authenticated = true;
                enc.simple(out, "OK");
            } else {
                enc.error(out, "WRONGPASS invalid username-password pair or user is disabled.");
            }
        }
        ("CLIENT", _) if argc >= 2 => client(state, args, out),
        ("COMMAND", _) => {
            match args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_uppercase()).as_deref() {
                Some("COUNT") => enc.integer(out, 0),
                Some("DOCS") if state.resp3 => enc.map(out, 0),
                _ => enc.array(out, 0),
            }
        }
        ("INFO", _) => {
            let info = format!(
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nos:sandport\r\narch_bits:64\r\n\
                 tcp_port:0\r\n\r\n# Clients\r\nconnected_clients:{}\r\n\r\n# Cluster\r\ncluster_enabled:0\r\n\r\n\
                 # Keyspace\r\n",
                host::list_connections().len()
            );
            enc.bulk(out, info.as_bytes());
        }
        ("CONFIG", _) if argc >= 3 && args[1].eq_ignore_ascii_case(b"GET") => {
            // Tools ask for persistence settings; sandport persists by itself.
            let known: [(&str, &str); 4] =
                [("save", ""), ("appendonly", "no"), ("databases", "16"), ("maxmemory", "0")];
            let found: Vec<(&str, &str)> = known
                .iter()
                .filter(|(k, _)| args[2..].iter().any(|p| glob(p, k.as_bytes())))
                .copied()
                .collect();
            enc.map(out, found.len());
            for (k, v) in found {
                enc.bulk(out, k.as_bytes());
                enc.bulk(out, v.as_bytes());
            }
        }
        ("FLUSHDB", 1 | 2) => {
            let _ = host::kv_clear(KvScope::Protocol, &format!("{}:", state.db));
            enc.simple(out, "OK");
        }
        ("FLUSHALL", 1 | 2) => {
            let _ = host::kv_clear(KvScope::Protocol, "");
            enc.simple(out, "OK");
        }
        ("DBSIZE", 1) => {
            let n = host::kv_count(KvScope::Protocol, &format!("{}:", state.db)).unwrap_or(0);
            enc.integer(out, n as i64);
        }
        ("GET", 2) => match host::kv_get(KvScope::Protocol, &state.key(args[1])) {
            Ok(Some(value)) => enc.bulk(out, &value),
            Ok(None) => enc.null(out),
            Err(e) => enc.error(out, &format!("ERR {}", e.message)),
        },
        ("SET", _) if argc >= 3 => set(state, args, out),
        ("DEL", _) if argc >= 2 => {
            let n = args[1..]
                .iter()
                .filter(|k| host::kv_delete(KvScope::Protocol, &state.key(k)) == Ok(true))
                .count();
            enc.integer(out, n as i64);
        }
        ("EXISTS", _) if argc >= 2 => {
            let n = args[1..]
                .iter()
                .filter(|k| matches!(host::kv_ttl(KvScope::Protocol, &state.key(k)), Ok(Some(_))))
                .count();
            enc.integer(out, n as i64);
        }
        ("EXPIRE" | "PEXPIRE", 3) => match parse_int(args[2]) {
            Some(n) => {
                let ms = if name == "EXPIRE" { n.saturating_mul(1000) } else { n };
                let key = state.key(args[1]);
                let done = if ms <= 0 {
                    host::kv_delete(KvScope::Protocol, &key)
                } else {
                    host::kv_expire(KvScope::Protocol, &key, Some(ms as u64))
                };
                enc.integer(out, i64::from(done == Ok(true)));
            }
            None => enc.error(out, "ERR value is not an integer or out of range"),
        },
        ("TTL" | "PTTL", 2) => {
            let n = match host::kv_ttl(KvScope::Protocol, &state.key(args[1])) {
                Ok(None) | Err(_) => -2,
                Ok(Some(None)) => -1,
                Ok(Some(Some(ms))) if name == "TTL" => (ms.div_ceil(1000)) as i64,
                Ok(Some(Some(ms))) => ms as i64,
            };
            enc.integer(out, n);
        }
        ("INCR" | "DECR", 2) | ("INCRBY" | "DECRBY", 3) => {
            let delta = match (name, args.get(2)) {
                ("INCR", _) => Some(1),
                ("DECR", _) => Some(-1),
                ("INCRBY", Some(n)) => parse_int(n),
                (_, Some(n)) => parse_int(n).and_then(i64::checked_neg),
                _ => None,
            };
            match delta.map(|d| host::kv_increment(KvScope::Protocol, &state.key(args[1]), d)) {
                Some(Ok(n)) => enc.integer(out, n),
                Some(Err(e)) if e.message.contains("overflow") => {
                    enc.error(out, "ERR increment or decrement would overflow")
                }
                Some(Err(e)) if e.message.contains("integer") => {
                    enc.error(out, "ERR value is not an integer or out of range")
                }
                Some(Err(e)) => enc.error(out, &format!("ERR {}", e.message)),
                None => enc.error(out, "ERR value is not an integer or out of range"),
            }
        }
        ("SUBSCRIBE", _) if argc >= 2 => subscribe(state, Family::Channel, &args[1..], out),
        ("PSUBSCRIBE", _) if argc >= 2 => subscribe(state, Family::Pattern, &args[1..], out),
        ("SSUBSCRIBE", _) if argc >= 2 => subscribe(state, Family::Shard, &args[1..], out),
        ("UNSUBSCRIBE", _) => unsubscribe(state, Family::Channel, &args[1..], out),
        ("PUNSUBSCRIBE", _) => unsubscribe(state, Family::Pattern, &args[1..], out),
        ("SUNSUBSCRIBE", _) => unsubscribe(state, Family::Shard, &args[1..], out),
        ("PUBSUB", _) if argc >= 2 => pubsub(state, args, out),
        _ => unknown(enc, args, out, name),
    }
    true
}

fn unknown(enc: Encoder, args: &[&[u8]], out: &mut Vec<u8>, name: &str) {
    const KNOWN: [&str; 33] = [
        "PING",
        "ECHO",
        "QUIT",
        "RESET",
        "SELECT",
        "HELLO",
        "AUTH",
        "CLIENT",
        "COMMAND",
        "INFO",
        "CONFIG",
        "FLUSHDB",
        "FLUSHALL",
        "DBSIZE",
        "GET",
        "SET",
        "DEL",
        "EXISTS",
        "EXPIRE",
        "PEXPIRE",
        "TTL",
        "PTTL",
        "INCR",
        "DECR",
        "INCRBY",
        "DECRBY",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "PUBLISH",
        "SPUBLISH",
        "PUBSUB",
        "UNSUBSCRIBE",
    ];
    if KNOWN.contains(&name) {
        wrong_arity(enc, out, name);
        return;
    }
    // Redis quotes each argument and follows each with a space.
    let shown: String = args[1..].iter().map(|a| format!("'{}' ", String::from_utf8_lossy(a))).collect();
    enc.error(
        out,
        &format!(
            "ERR unknown command '{}', with args beginning with: {shown}",
            String::from_utf8_lossy(args[0])
        ),
    );
}

/// An integer argument, read as Redis reads one (so `+1` and `01` are not).
fn parse_int(bytes: &[u8]) -> Option<i64> {
    wire::number(bytes)
}

fn authenticate(user: Option<&[u8]>, pass: &[u8]) -> bool {
    let user = user.map_or(std::borrow::Cow::Borrowed("default"), String::from_utf8_lossy);
    let credentials = Credentials { username: Some(&user), password: Some(pass), token: None };
    host::authenticate(credentials).is_ok()
}

fn hello(state: &mut State, args: &[&[u8]], out: &mut Vec<u8>) {
    let mut version = if state.resp3 { 3 } else { 2 };
    let mut at = 1;
    if let Some(v) = args.get(1) {
        match parse_int(v) {
            Some(v @ (2 | 3)) => version = v,
            Some(_) => {
                state.encoder().error(out, "NOPROTO unsupported protocol version");
                return;
            }
            None => {
                state.encoder().error(out, "ERR Protocol version is not an integer or out of range");
                return;
            }
        }
        at = 2;
    }
    while at < args.len() {
        let option = String::from_utf8_lossy(args[at]).to_ascii_uppercase();
        match option.as_str() {
            "AUTH" if at + 2 < args.len() => {
                if !authenticate(Some(args[at + 1]), args[at + 2]) {
                    state
                        .encoder()
                        .error(out, "WRONGPASS invalid username-password pair or user is disabled.");
                    return;
                }
                state.authenticated = true;
                at += 3;
            }
            "SETNAME" if at + 1 < args.len() => {
                let name = String::from_utf8_lossy(args[at + 1]).into_owned();
                host::set_connection_name(Some(&name));
                state.name = Some(name);
                at += 2;
            }
            _ => {
                state.encoder().error(
                    out,
                    &format!("ERR Syntax error in HELLO option '{}'", option.to_ascii_lowercase()),
                );
                return;
            }
        }
    }
    if !state.authenticated {
        state.encoder().error(
            out,
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
        return;
    }
    state.resp3 = version == 3;
    let enc = state.encoder();
    enc.map(out, 7);
    enc.bulk(out, b"server");
    enc.bulk(out, b"redis");
    enc.bulk(out, b"version");
    enc.bulk(out, REDIS_VERSION.as_bytes());
    enc.bulk(out, b"proto");
    enc.integer(out, version);
    enc.bulk(out, b"id");
    enc.integer(out, state.id as i64);
    enc.bulk(out, b"mode");
    enc.bulk(out, b"standalone");
    enc.bulk(out, b"role");
    enc.bulk(out, b"master");
    enc.bulk(out, b"modules");
    enc.array(out, 0);
}

fn client(state: &mut State, args: &[&[u8]], out: &mut Vec<u8>) {
    let enc = state.encoder();
    let sub = String::from_utf8_lossy(args[1]).to_ascii_uppercase();
    match (sub.as_str(), args.len()) {
        ("ID", 2) => enc.integer(out, state.id as i64),
        ("SETNAME", 3) => {
            // Redis allows printable ASCII but the space.
            if !args[2].iter().all(|b| (b'!'..=b'~').contains(b)) {
                enc.error(out, "ERR Client names cannot contain spaces, newlines or special characters.");
                return;
            }
            let name = String::from_utf8_lossy(args[2]).into_owned();
            host::set_connection_name((!name.is_empty()).then_some(name.as_str()));
            state.name = (!name.is_empty()).then_some(name);
            enc.simple(out, "OK");
        }
        ("GETNAME", 2) => match &state.name {
            Some(name) => enc.bulk(out, name.as_bytes()),
            None => enc.null(out),
        },
        ("LIST", _) => {
            let text: String = host::list_connections()
                .iter()
                .map(|c| {
                    format!(
                        "id={} addr={} name={} age={} db=0 cmd=client|list\n",
                        c.id,
                        c.peer,
                        c.name.as_deref().unwrap_or(""),
                        c.age_ms / 1000
                    )
                })
                .collect();
            enc.bulk(out, text.as_bytes());
        }
        ("KILL", 4) if args[2].eq_ignore_ascii_case(b"ID") => match parse_int(args[3]) {
            Some(id) => {
                let killed = host::close_connection(id as u64).is_ok();
                enc.integer(out, i64::from(killed));
            }
            None => enc.error(out, "ERR client-id should be greater than 0"),
        },
        ("KILL", 3) => {
            let addr = String::from_utf8_lossy(args[2]).into_owned();
            match host::list_connections().iter().find(|c| c.peer == addr) {
                Some(c) if host::close_connection(c.id).is_ok() => enc.simple(out, "OK"),
                _ => enc.error(out, "ERR No such client"),
            }
        }
        ("SETINFO", 4) => enc.simple(out, "OK"),
        ("ID" | "SETNAME" | "GETNAME" | "SETINFO", _) | ("KILL", 2) => enc.error(
            out,
            &format!("ERR wrong number of arguments for 'client|{}' command", sub.to_ascii_lowercase()),
        ),
        _ => enc.error(
            out,
            &format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", String::from_utf8_lossy(args[1])),
        ),
    }
}

fn set(state: &State, args: &[&[u8]], out: &mut Vec<u8>) {
    let enc = state.encoder();
    let mut options = KvSetOptions { condition: KvCondition::Always, ttl_ms: None, keep_ttl: false };
    let mut at = 3;
    while at < args.len() {
        let option = String::from_utf8_lossy(args[at]).to_ascii_uppercase();
        match option.as_str() {
            "NX" if options.condition == KvCondition::Always => options.condition = KvCondition::IfAbsent,
            "XX" if options.condition == KvCondition::Always => options.condition = KvCondition::IfPresent,
            "KEEPTTL" if options.ttl_ms.is_none() => options.keep_ttl = true,
            "EX" | "PX" if at + 1 < args.len() && options.ttl_ms.is_none() && !options.keep_ttl => {
                at += 1;
                // As Redis: not a number is one error, a time it cannot
                // keep (not positive, or seconds beyond an i64 of ms) another.
                let Some(n) = parse_int(args[at]) else {
                    enc.error(out, "ERR value is not an integer or out of range");
                    return;
                };
                let ms = if option == "EX" { n.checked_mul(1000) } else { Some(n) };
                match ms {
                    Some(ms) if ms > 0 => options.ttl_ms = Some(ms as u64),
                    _ => {
                        enc.error(out, "ERR invalid expire time in 'set' command");
                        return;
                    }
                }
            }
            _ => {
                enc.error(out, "ERR syntax error");
                return;
            }
        }
        at += 1;
    }
    match host::kv_set(KvScope::Protocol, &state.key(args[1]), args[2], options) {
        Ok(true) => enc.simple(out, "OK"),
        Ok(false) => enc.null(out),
        Err(e) => enc.error(out, &format!("OOM {}", e.message)),
    }
}

fn subscribe(state: &mut State, family: Family, names: &[&[u8]], out: &mut Vec<u8>) {
    let enc = state.encoder();
    for name in names {
        let key = (family_tag(family), name.to_vec());
        if let std::collections::btree_map::Entry::Vacant(slot) = state.subscriptions.entry(key) {
            let kind = if family == Family::Pattern { FilterKind::Glob } else { FilterKind::Exact };
            let options = SubscribeOptionsParam {
                kind,
                max_qos: Qos::AtMostOnce,
                group: None,
                no_local: false,
                retained: RetainedHandling::Skip,
            };
            let filter = if family == Family::Pattern {
                String::from_utf8_lossy(name).into_owned()
            } else {
                channel_topic(name).into_owned()
            };
            match host::subscribe(&filter, options) {
                Ok(id) => {
                    slot.insert(id);
                    state.by_host_id.insert(id, (family, name.to_vec()));
                }
                Err(e) => {
                    enc.error(out, &format!("ERR {}", e.message));
                    continue;
                }
            }
        }
        enc.push(out, 3);
        enc.bulk(out, family.subscribe_reply());
        enc.bulk(out, name);
        enc.integer(out, state.subscribed() as i64);
    }
}

fn unsubscribe(state: &mut State, family: Family, names: &[&[u8]], out: &mut Vec<u8>) {
    if names.is_empty() {
        unsubscribe_all(state, Some(family), out, true);
        return;
    }
    for name in names {
        remove_subscription(state, family, name);
        let enc = state.encoder();
        enc.push(out, 3);
        enc.bulk(out, family.unsubscribe_reply());
        enc.bulk(out, name);
        enc.integer(out, state.subscribed() as i64);
    }
}

fn remove_subscription(state: &mut State, family: Family, name: &[u8]) {
    if let Some(id) = state.subscriptions.remove(&(family_tag(family), name.to_vec())) {
        state.by_host_id.remove(&id);
        let _ = host::unsubscribe(id);
    }
}

/// Drop every subscription of `family` (or all), replying per name if asked.
fn unsubscribe_all(state: &mut State, family: Option<Family>, out: &mut Vec<u8>, reply: bool) {
    let doomed: Vec<(Family, Vec<u8>)> =
        state.by_host_id.values().filter(|(f, _)| family.is_none_or(|want| *f == want)).cloned().collect();
    let enc = state.encoder();
    if doomed.is_empty() && reply {
        let family = family.unwrap_or(Family::Channel);
        enc.push(out, 3);
        enc.bulk(out, family.unsubscribe_reply());
        enc.null(out);
        enc.integer(out, state.subscribed() as i64);
    }
    for (f, name) in doomed {
        remove_subscription(state, f, &name);
        if reply {
            enc.push(out, 3);
            enc.bulk(out, f.unsubscribe_reply());
            enc.bulk(out, &name);
            enc.integer(out, state.subscribed() as i64);
        }
    }
}

fn pubsub(state: &State, args: &[&[u8]], out: &mut Vec<u8>) {
    let enc = state.encoder();
    let sub = String::from_utf8_lossy(args[1]).to_ascii_uppercase();
    match sub.as_str() {
        "CHANNELS" | "SHARDCHANNELS" => {
            let pattern = args.get(2).map(|p| String::from_utf8_lossy(p).into_owned());
            let channels = host::subscription_counts(FilterKind::Exact, None);
            let names: Vec<Vec<u8>> = channels
                .iter()
                .map(|(topic, _)| topic_channel(topic))
                .filter(|c| pattern.as_ref().is_none_or(|p| glob(p.as_bytes(), c)))
                .collect();
            enc.array(out, names.len());
            for name in names {
                enc.bulk(out, &name);
            }
        }
        "NUMSUB" | "SHARDNUMSUB" => {
            let counts: BTreeMap<String, u32> =
                host::subscription_counts(FilterKind::Exact, None).into_iter().collect();
            enc.map(out, args.len() - 2);
            for channel in &args[2..] {
                enc.bulk(out, channel);
                enc.integer(out, i64::from(*counts.get(channel_topic(channel).as_ref()).unwrap_or(&0)));
            }
        }
        "NUMPAT" => {
            let total: u32 = host::subscription_counts(FilterKind::Glob, None).iter().map(|(_, n)| n).sum();
            enc.integer(out, i64::from(total));
        }
        _ => enc.error(
            out,
            &format!("ERR unknown subcommand '{}'. Try PUBSUB HELP.", String::from_utf8_lossy(args[1])),
        ),
    }
}

/// Redis-style glob match (`*`, `?`, `[...]`, `\x`) of `pattern` against `text`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(2),
            Some(b'[') => match pattern[p..].iter().position(|b| *b == b']') {
                Some(close) if close > 1 => {
                    let class = &pattern[p + 1..p + close];
                    let (negate, class) = match class.first() {
                        Some(b'^') => (true, &class[1..]),
                        _ => (false, class),
                    };
                    let mut hit = false;
                    let mut i = 0;
                    while i < class.len() {
                        if i + 2 < class.len() && class[i + 1] == b'-' {
                            hit |=
                                (class[i].min(class[i + 2])..=class[i].max(class[i + 2])).contains(&text[t]);
                            i += 3;
                        } else {
                            hit |= class[i] == text[t];
                            i += 1;
                        }
                    }
                    (hit != negate).then_some(close + 1)
                }
                _ => (pattern[p] == text[t]).then_some(1),
            },
            Some(&c) => (c == text[t]).then_some(1),
            None => None,
        };
        match step {
            Some(n) => {
                p += n;
                t += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

// Exported only in the component build; natively the crate is a plain
// library, so its decoder can be unit-tested and fuzzed.
#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Resp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_through_topics() {
        assert!(matches!(channel_topic(b"news/sport"), Cow::Borrowed("news/sport")));
        assert!(matches!(channel_topic("café".as_bytes()), Cow::Borrowed("café")));
        assert_eq!(channel_topic(b"caf\xe9+"), "caf\u{fffd}%2B");
        assert_eq!(channel_topic(b"a+b#c%"), "a%2Bb%23c%25");
        assert_eq!(topic_channel("a%2Bb%23c%25"), b"a+b#c%");
    }

    #[test]
    fn command_names_are_upper_cased_or_nothing() {
        let mut buffer = [0u8; MAX_COMMAND_NAME];
        assert_eq!(command_name(b"publish", &mut buffer), "PUBLISH");
        assert_eq!(command_name(b"PiNg", &mut buffer), "PING");
        assert_eq!(command_name(b"client-9_x", &mut buffer), "CLIENT-9_X", "only letters change");
        assert_eq!(command_name("pïng".as_bytes(), &mut buffer), "", "not ASCII (no command is)");
        assert_eq!(command_name(b"\xffping", &mut buffer), "", "not UTF-8");
        assert_eq!(command_name(&[b'a'; MAX_COMMAND_NAME + 1], &mut buffer), "", "too long");
    }

    #[test]
    fn globs() {
        assert!(glob(b"news.*", b"news.sport"));
        assert!(glob(b"h?llo", b"hello"));
        assert!(glob(b"h[ae]llo", b"hallo"));
        assert!(!glob(b"h[^e]llo", b"hello"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"a*b", b"ac"));
    }
}
