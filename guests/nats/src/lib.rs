//! `nats`: the NATS core client protocol, so unmodified NATS clients can
//! use sandport.
//!
//! The server speaks first (`INFO`), then handles `CONNECT`, `PUB`, `HPUB`,
//! `SUB` (with queue groups), `UNSUB` (with a message limit), `PING`/`PONG`,
//! answering with `MSG`/`HMSG`, `+OK` (verbose) and nats-server's `-ERR`
//! texts. Requests with `no_responders` get a `503` status message when no
//! one is subscribed. Queue groups are host subscription groups, so NATS
//! queue members and MQTT `$share` members balance the same way. Subjects
//! map to canonical topics as described in `subject.rs`.

// Natively (tests, fuzzing) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[doc(hidden)]
pub mod fuzzing;
mod subject;
mod wire;

use std::cell::RefCell;

use rustc_hash::FxHashMap;
use sandport_guest::delivery::Delivery;
use sandport_guest::types::{
    CloseReason, ConnectionInfo, Credentials, ErrorCode, FilterKind, Framing, HostError, Message, NextFrame,
    ProbeResult, ProtocolInfo, PublishOutcome, Qos, RetainedHandling, StreamScan, SubscribeOptionsParam,
};
use sandport_guest::{Handler, host, message};
use serde::Deserialize;
use subject::Wildcards;
use wire::{Op, ParseError};

/// nats-server pings idle clients every two minutes...
const PING_INTERVAL_MS: u32 = 120_000;
/// ...and drops them after this many unanswered pings.
const MAX_PINGS_OUT: u32 = 2;

/// The fields of `CONNECT` sandport uses. Absent flags default as in
/// nats-server: verbose, pedantic and echo on.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct Connect {
    verbose: bool,
    pedantic: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
    name: Option<String>,
    user: Option<String>,
    pass: Option<String>,
    auth_token: Option<String>,
}

impl Default for Connect {
    fn default() -> Self {
        Connect {
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            name: None,
            user: None,
            pass: None,
            auth_token: None,
        }
    }
}

/// One client subscription.
struct Sub {
    /// The client's id for it.
    sid: String,
    /// The subject as subscribed (NATS syntax).
    subject: String,
    /// Whether it has wildcards: only then can the host's match be wider
    /// than NATS's (`a.>` does not match `a`, the canonical `a/#` does).
    wildcard: bool,
    /// Deliveries left before an automatic unsubscribe.
    remaining: Option<u64>,
}

#[derive(Default)]
struct State {
    max_payload: usize,
    verbose: bool,
    /// Whether publish subjects are checked (nats-server's `pedantic`).
    pedantic: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
    /// Subscriptions by the id the host gave them: looked up once for
    /// every delivery.
    subs: FxHashMap<u32, Sub>,
    // Fx rather than SipHash: the keys are this connection's own sids, so
    // collisions could only slow down the client that chose them.
    by_sid: FxHashMap<String, u32>,
    /// Reused for the subject of each delivery.
    subject: String,
    pings_out: u32,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
    /// Reused for the topic of each publish; kept apart from `STATE` so a
    /// publish can fill it while it reads the state.
    static PUBLISH_TOPIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// How a frame's handling ended.
enum Outcome {
    Continue,
    /// Send `-ERR '<text>'` and close.
    Fatal(String),
    /// Close without a word, as nats-server does for malformed arguments.
    Drop(&'static str),
}

struct Nats;

impl Handler for Nats {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "nats".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::Guest,
            speaks_first: true,
            settings: Vec::new(),
        }
    }

    fn probe(prefix: Vec<u8>) -> ProbeResult {
        // Clients wait for INFO, so a silent client is the usual NATS case;
        // one that starts with CONNECT is NATS too.
        let upper = prefix.to_ascii_uppercase();
        if upper.starts_with(b"CONNECT ") || upper.starts_with(b"CONNECT\t") {
            ProbeResult::Matched(150)
        } else if b"CONNECT ".starts_with(&upper) {
            ProbeResult::NeedMore
        } else {
            ProbeResult::NoMatch
        }
    }

    fn on_stream(data: Vec<u8>) -> Result<StreamScan, String> {
        let mut out = Vec::new();
        let scan = STATE.with_borrow_mut(|state| {
            let mut frames = wire::Frames::new(&data, state.max_payload);
            let mut count = 0;
            let mut pending = Vec::new();
            for op in frames.by_ref() {
                count += 1;
                if let Some(publish) = batchable(state, &op) {
                    // One allocation for a typical run of them.
                    if pending.is_empty() {
                        pending.reserve(PUB_RUN);
                    }
                    pending.push(publish);
                    continue;
                }
                publish_pending(state, &mut pending, &mut out);
                match handle(state, op, &mut out) {
                    Outcome::Continue => {}
                    Outcome::Fatal(text) => {
                        out.extend_from_slice(format!("-ERR '{text}'\r\n").as_bytes());
                        host::close(&text);
                        break;
                    }
                    Outcome::Drop(why) => {
                        host::close(why);
                        break;
                    }
                }
            }
            publish_pending(state, &mut pending, &mut out);
            let next = frames.needs().map_or(NextFrame::Unknown, NextFrame::Needs);
            StreamScan { handled: frames.handled() as u32, frames: count, next }
        });
        host::send(&out);
        Ok(scan)
    }

    fn on_open(info: ConnectionInfo) {
        let max_payload =
            (info.max_frame_bytes as usize).saturating_sub(wire::MAX_CONTROL_LINE + 2).max(1024);
        STATE.with_borrow_mut(|s| {
            let defaults = Connect::default();
            s.max_payload = max_payload;
            // What nats-server assumes until CONNECT says otherwise.
            s.verbose = defaults.verbose;
            s.pedantic = defaults.pedantic;
            s.echo = defaults.echo;
        });
        let ip = info.peer.rsplit_once(':').map_or(info.peer.as_str(), |(ip, _)| ip);
        let (host_addr, port) = info.local.rsplit_once(':').unwrap_or((info.local.as_str(), "0"));
        let server_info = serde_json::json!({
            "server_id": info.server_id,
            "server_name": info.server_id,
            "version": info.server_version,
            "proto": 1,
            "go": "sandport",
            "host": host_addr,
            "port": port.parse::<u16>().unwrap_or(0),
            "headers": true,
            "max_payload": max_payload,
            "client_id": info.id,
            "client_ip": ip,
            // Clients send their credentials only when asked to.
            "auth_required": info.user.is_none() || (info.credentials_checked && info.user.as_deref() == Some("anonymous")),
        });
        host::send(format!("INFO {server_info}\r\n").as_bytes());
        host::set_timer(PING_INTERVAL_MS);
    }

    fn on_frames(_data: Vec<u8>, _ends: Vec<u32>) -> Result<(), String> {
        sandport_guest::framed_by_guest()
    }

    fn on_deliver(batch: Vec<u8>) {
        // Sized as `sandport_guest::deliveries` explains.
        let mut out = Vec::with_capacity(batch.len());
        STATE.with_borrow_mut(|state| {
            for delivery in sandport_guest::deliveries(&batch) {
                deliver(state, delivery, &mut out);
            }
        });
        host::send(&out);
    }

    fn on_timer() {
        let stale = STATE.with_borrow_mut(|s| {
            s.pings_out += 1;
            s.pings_out > MAX_PINGS_OUT
        });
        if stale {
            host::send(b"-ERR 'Stale Connection'\r\n");
            host::close("stale connection");
        } else {
            host::send(b"PING\r\n");
            host::set_timer(PING_INTERVAL_MS);
        }
    }

    fn on_close(_reason: CloseReason) {}
}

fn handle(state: &mut State, op: Result<Op<'_>, ParseError>, out: &mut Vec<u8>) -> Outcome {
    let op = match op {
        Ok(op) => op,
        Err(ParseError::BadArguments) => return Outcome::Drop("malformed arguments"),
        Err(e) => return Outcome::Fatal(e.text().into()),
    };
    let ok = |state: &State, out: &mut Vec<u8>| {
        if state.verbose {
            out.extend_from_slice(b"+OK\r\n");
        }
    };
    match op {
        Op::Connect(json) => {
            let connect: Connect = match serde_json::from_str(json) {
                Ok(connect) => connect,
                Err(_) => return Outcome::Drop("CONNECT is not valid JSON"),
            };
            let credentials = Credentials {
                username: connect.user.as_deref(),
                password: connect.pass.as_deref().map(str::as_bytes),
                token: connect.auth_token.as_deref(),
            };
            if host::authenticate(credentials).is_err() {
                return Outcome::Fatal("Authorization Violation".into());
            }
            if let Some(name) = &connect.name {
                host::set_connection_name(Some(name));
            }
            state.verbose = connect.verbose;
            state.pedantic = connect.pedantic;
            state.echo = connect.echo;
            state.headers = connect.headers;
            state.no_responders = connect.no_responders && connect.headers;
            ok(state, out);
        }
        Op::Ping => {
            // Messages the server already has for this client go before the
            // PONG, so a flush (PING/PONG) is a barrier as with nats-server.
            deliver_waiting(state, out);
            out.extend_from_slice(b"PONG\r\n");
        }
        Op::Pong => state.pings_out = 0,
        // nats-server closes on headers the client did not announce.
        Op::Pub { headers: Some(_), .. } if !state.headers => return Outcome::Drop("HPUB without headers"),
        Op::Pub { subject, reply, headers, payload } => {
            let publish = Pub { subject, reply, headers, payload };
            let published = publish_one(state, &publish, out);
            answer_pub(state, &publish, published, out);
        }
        Op::Sub { subject, queue, sid } => match subscribe(state, subject, queue, sid) {
            Ok(()) => ok(state, out),
            Err(text) => out.extend_from_slice(format!("-ERR '{text}'\r\n").as_bytes()),
        },
        Op::Unsub { sid, max } => {
            unsubscribe(state, sid, max);
            ok(state, out);
        }
    }
    Outcome::Continue
}

/// The arguments of one `PUB` or `HPUB`.
struct Pub<'a> {
    subject: &'a str,
    reply: Option<&'a str>,
    headers: Option<&'a [u8]>,
    payload: &'a [u8],
}

/// A `PUB` that may wait to be published with the ones after it in one
/// `publish-batch`: one of a connection without subscriptions, which hears
/// nothing about a `PUB` but its own `+OK` or `-ERR` (no inline deliveries,
/// no no-responders message), so writing those after the batch's call gives
/// the client the same bytes in the same order.
fn batchable<'a>(state: &State, op: &Result<Op<'a>, ParseError>) -> Option<Pub<'a>> {
    match *op {
        Ok(Op::Pub { subject, reply, headers, payload })
            if state.subs.is_empty() && (headers.is_none() || state.headers) =>
        {
            Some(Pub { subject, reply, headers, payload })
        }
        _ => None,
    }
}

/// `PUB`s a busy publisher's one read usually holds.
const PUB_RUN: usize = 64;

/// Publish the `PUB`s [`batchable`] held back, in one host call when there
/// are several, and answer each in order.
fn publish_pending(state: &mut State, pending: &mut Vec<Pub<'_>>, out: &mut Vec<u8>) {
    match pending.as_slice() {
        [] => {}
        [publish] => {
            let published = publish_one(state, publish, out);
            answer_pub(state, publish, published, out);
        }
        several => {
            for chunk in several.chunks(sandport_guest::MAX_PUBLISH_BATCH) {
                for (publish, published) in chunk.iter().zip(publish_several(state, chunk, out)) {
                    answer_pub(state, publish, published, out);
                }
            }
        }
    }
    pending.clear();
}

/// What follows a `PUB` once it was published or refused, as nats-server
/// answers: a pedantic connection is told first that a subject with
/// wildcards or empty tokens is invalid, and the message is published all
/// the same; then a refusal (`Permissions Violation`) or, if verbose, `+OK`;
/// then the deliveries to this client's own subscriptions.
fn answer_pub(state: &mut State, publish: &Pub<'_>, published: Result<(), String>, out: &mut Vec<u8>) {
    if state.pedantic && !subject::is_literal(publish.subject) {
        out.extend_from_slice(b"-ERR 'Invalid Publish Subject'\r\n");
    }
    match published {
        Err(text) => out.extend_from_slice(format!("-ERR '{text}'\r\n").as_bytes()),
        Ok(()) if state.verbose => out.extend_from_slice(b"+OK\r\n"),
        Ok(()) => {}
    }
    deliver_waiting(state, out);
}

fn publish_one(state: &State, publish: &Pub<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    PUBLISH_TOPIC.with_borrow_mut(|topics| {
        topics.clear();
        let Some(prepared) = prepare(topics, publish)? else { return Ok(()) };
        let outcome = host::publish(prepared.message(topics));
        published(state, publish, outcome, out)
    })
}

/// Publish several `PUB`s in one `publish-batch`; what each came to, in order.
fn publish_several(state: &State, several: &[Pub<'_>], out: &mut Vec<u8>) -> Vec<Result<(), String>> {
    PUBLISH_TOPIC.with_borrow_mut(|topics| {
        topics.clear();
        let prepared: Vec<_> = several.iter().map(|publish| prepare(topics, publish)).collect();
        let messages: Vec<Message<'_>> = prepared
            .iter()
            .flat_map(|p| p.as_ref().ok().and_then(Option::as_ref))
            .map(|p| p.message(topics))
            .collect();
        let mut outcomes = host::publish_batch(&messages).into_iter();
        several
            .iter()
            .zip(prepared)
            .map(|(publish, prepared)| match prepared? {
                None => Ok(()),
                Some(_) => match outcomes.next() {
                    Some(outcome) => published(state, publish, outcome, out),
                    None => Err("the broker did not answer every publish".into()),
                },
            })
            .collect()
    })
}

/// A `PUB` mapped for the host: its canonical topic is `topics[topic]`.
struct Prepared<'a> {
    topic: std::ops::Range<usize>,
    reply_topic: Option<String>,
    headers: Vec<(&'a str, &'a str)>,
    payload: &'a [u8],
}

impl Prepared<'_> {
    fn message<'m>(&'m self, topics: &'m str) -> Message<'m> {
        Message {
            reply_to: self.reply_topic.as_deref(),
            headers: &self.headers,
            ..message(&topics[self.topic.clone()], self.payload)
        }
    }
}

/// Map a `PUB`'s subjects and headers for the host, appending its topic to
/// `topics`; `None` when the message goes nowhere.
fn prepare<'a>(topics: &mut String, publish: &Pub<'a>) -> Result<Option<Prepared<'a>>, String> {
    let start = topics.len();
    let reply_topic = subject::to_topic_into(topics, publish.subject, Wildcards::Literal)
        .and_then(|()| publish.reply.map(|reply| subject::to_topic(reply, Wildcards::Literal)).transpose());
    let reply_topic = match reply_topic {
        Ok(reply_topic) => reply_topic,
        // nats-server routes any subject (a pedantic connection is told
        // first, by `answer_pub`), and nats-py closes its connection on
        // any other -ERR. A subject that is no topic (`a..b`) cannot be
        // routed, so the message goes nowhere.
        Err(_) => {
            topics.truncate(start);
            return Ok(None);
        }
    };
    let headers = match publish.headers {
        Some(block) => wire::parse_headers(block).ok_or_else(|| "Invalid Header".to_string())?,
        None => Vec::new(),
    };
    Ok(Some(Prepared { topic: start..topics.len(), reply_topic, headers, payload: publish.payload }))
}

/// What the host's answer to a publish means for the client.
fn published(
    state: &State,
    publish: &Pub<'_>,
    outcome: Result<PublishOutcome, HostError>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match outcome {
        Ok(outcome) => {
            if outcome.receivers == 0
                && state.no_responders
                && let Some(reply) = publish.reply
            {
                no_responders(state, reply, out);
            }
            Ok(())
        }
        Err(e) if e.code == ErrorCode::NotAuthorized => {
            Err(format!("Permissions Violation for Publish to \"{}\"", publish.subject))
        }
        Err(e) => Err(e.message),
    }
}

/// Tell a requester nobody listens: a `503` status on its reply subject.
fn no_responders(state: &State, reply: &str, out: &mut Vec<u8>) {
    let Some(sub) = state.subs.values().find(|sub| subject::matches(&sub.subject, reply)) else {
        return;
    };
    let status = wire::encode_headers(Some("503"), []);
    wire::put_message(out, reply, &sub.sid, None, Some(&status), b"");
}

fn subscribe(state: &mut State, subject: &str, queue: Option<&str>, sid: &str) -> Result<(), String> {
    let filter = subject::to_topic(subject, Wildcards::Match).map_err(|_| "Invalid Subject".to_string())?;
    let wildcard = filter.contains(['+', '#']);
    // nats-server takes any queue name (a word of the control line).
    let options = SubscribeOptionsParam {
        kind: FilterKind::Wildcard,
        max_qos: Qos::AtMostOnce,
        group: queue,
        no_local: !state.echo,
        retained: RetainedHandling::Skip,
    };
    // nats-server keeps the subscription a sid already names.
    if state.by_sid.contains_key(sid) {
        return Ok(());
    }
    match host::subscribe(&filter, options) {
        Ok(host_id) => {
            state.by_sid.insert(sid.to_string(), host_id);
            state.subs.insert(
                host_id,
                Sub { sid: sid.to_string(), subject: subject.to_string(), wildcard, remaining: None },
            );
            Ok(())
        }
        Err(e) if e.code == ErrorCode::NotAuthorized => {
            Err(format!("Permissions Violation for Subscription to \"{subject}\""))
        }
        Err(e) => Err(e.message),
    }
}

fn unsubscribe(state: &mut State, sid: &str, max: Option<u64>) {
    let Some(&host_id) = state.by_sid.get(sid) else { return };
    match (max, state.subs.get_mut(&host_id)) {
        (Some(max), Some(sub)) if max > 0 => sub.remaining = Some(max),
        _ => remove(state, host_id),
    }
}

fn remove(state: &mut State, host_id: u32) {
    if let Some(sub) = state.subs.remove(&host_id) {
        state.by_sid.remove(&sub.sid);
        let _ = host::unsubscribe(host_id);
    }
}

/// Encode the deliveries already waiting for this connection.
fn deliver_waiting(state: &mut State, out: &mut Vec<u8>) {
    // Only a subscribed connection can have deliveries: a pure publisher
    // skips the host call after every PUB.
    if state.subs.is_empty() {
        return;
    }
    sandport_guest::take_waiting(|delivery| deliver(state, delivery, out));
}

fn deliver(state: &mut State, delivery: Delivery, out: &mut Vec<u8>) {
    let Some(sub) = state.subs.get_mut(&delivery.subscription) else { return };
    let message = delivery.message;
    let subject = if sub.wildcard {
        let subject = &mut state.subject;
        subject.clear();
        subject::from_topic_into(subject, message.topic);
        // `a.>` needs a token after `a`; the canonical `a/#` also matches `a`.
        if !subject::matches(&sub.subject, subject) {
            return;
        }
        subject.as_str()
    } else {
        // A literal subscription matches only its own topic, and that topic
        // maps back to the subject as subscribed: no mapping per delivery.
        sub.subject.as_str()
    };
    let reply = message.reply_to.map(subject::from_topic);
    let headers =
        (state.headers && !message.headers.is_empty()).then(|| wire::encode_headers(None, message.headers));
    wire::put_message(out, subject, &sub.sid, reply.as_deref(), headers.as_deref(), message.payload);
    if let Some(remaining) = &mut sub.remaining {
        *remaining -= 1;
        if *remaining == 0 {
            remove(state, delivery.subscription);
        }
    }
}

// Exported only in the component build; natively the crate is a plain
// library, so its decoder can be unit-tested and fuzzed.
#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Nats);
