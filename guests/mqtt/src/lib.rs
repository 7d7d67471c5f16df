//! `mqtt`: an MQTT 3.1.1 front end (OASIS MQTT 3.1.1).
//!
//! Covers the session lifecycle and pub/sub path: CONNECT/CONNACK,
//! SUBSCRIBE/SUBACK (QoS 0 and 1), UNSUBSCRIBE/UNSUBACK, PUBLISH at QoS 0,
//! 1 and 2 from the client, QoS 0 and 1 towards it, PINGREQ/PINGRESP,
//! DISCONNECT, wills, keep-alive and `$share/GROUP/filter` subscriptions.
//! Every malformed packet closes the connection (3.1.1 has no error packet).
//! A CONNECT with clean session 0 attaches a persistent host session: its
//! subscriptions and unacknowledged QoS 1 messages survive disconnects and
//! broker restarts, and are re-sent (with DUP) when the client returns.
//!
//! MQTT topics are already canonical (`/` levels, `+` and `#`), so they pass
//! to the host unchanged.

// Natively (tests, fuzzing) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod codec;

use std::cell::RefCell;
use std::collections::HashMap;

use codec::{DecodeError, Reader, kind, put_packet, put_string, split};
use sandport_guest::types::{
    CloseReason, ConnectionInfo, Credentials, Delivery, ErrorCode, FilterKind, FrameScan, Framing, Message,
    NextFrame, ProbeResult, ProtocolInfo, Qos, RetainedHandling, SessionOptions, SubscribeOptions,
    VarintLength, Will,
};
use sandport_guest::{Handler, host, message};

/// CONNACK return codes (3.2.2.3).
mod connack {
    pub const ACCEPTED: u8 = 0;
    pub const BAD_PROTOCOL_VERSION: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// SUBACK return code for a refused filter.
const SUBACK_FAILURE: u8 = 0x80;

/// Per-connection protocol state.
#[derive(Default)]
struct Session {
    connected: bool,
    /// Subscriptions by filter as the client wrote it.
    subscriptions: HashMap<String, u32>,
    /// QoS 1 deliveries waiting for PUBACK: packet id -> host delivery id.
    awaiting_ack: HashMap<u16, u64>,
    next_packet_id: u16,
}

impl Session {
    fn packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            if !self.awaiting_ack.contains_key(&self.next_packet_id) {
                return self.next_packet_id;
            }
        }
    }
}

thread_local! {
    static SESSION: RefCell<Session> = RefCell::default();
}

struct Mqtt;

impl Handler for Mqtt {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "mqtt".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::VarintLength(VarintLength { offset: 1, max_bytes: 4 }),
            speaks_first: false,
        }
    }

    fn probe(prefix: Vec<u8>) -> ProbeResult {
        probe(&prefix)
    }

    fn frame_lengths(_buffer: Vec<u8>) -> FrameScan {
        FrameScan { complete: Vec::new(), next: NextFrame::Unknown }
    }

    fn on_open(_info: ConnectionInfo) {}

    fn on_frames(frames: Vec<Vec<u8>>) -> Result<(), String> {
        let mut out = Vec::new();
        let result = SESSION
            .with_borrow_mut(|session| frames.iter().try_for_each(|frame| handle(session, frame, &mut out)));
        host::send(&out);
        result
    }

    fn on_deliver(batch: Vec<Delivery>) {
        let mut out = Vec::new();
        SESSION.with_borrow_mut(|session| {
            for delivery in batch {
                encode_delivery(session, delivery, &mut out);
            }
        });
        host::send(&out);
    }

    fn on_timer() {}

    fn on_close(_reason: CloseReason) {}
}

/// Recognise a CONNECT: type 1, a varint, then the protocol name.
fn probe(prefix: &[u8]) -> ProbeResult {
    let Some(&first) = prefix.first() else {
        return ProbeResult::NeedMore;
    };
    if first != 0x10 {
        return ProbeResult::NoMatch;
    }
    let mut at = 1;
    loop {
        match prefix.get(at) {
            None => return ProbeResult::NeedMore,
            Some(b) if b & 0x80 != 0 && at < 4 => at += 1,
            Some(b) if b & 0x80 != 0 => return ProbeResult::NoMatch,
            Some(_) => break,
        }
    }
    let rest = &prefix[at + 1..];
    for name in [&b"\x00\x04MQTT"[..], &b"\x00\x06MQIsdp"[..]] {
        let n = rest.len().min(name.len());
        if rest[..n] != name[..n] {
            continue;
        }
        return if n == name.len() { ProbeResult::Matched(200) } else { ProbeResult::NeedMore };
    }
    ProbeResult::NoMatch
}

fn handle(session: &mut Session, frame: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let (packet, flags, body) = split(frame)?;
    if !session.connected {
        if packet != kind::CONNECT {
            return Err("first packet is not CONNECT".into());
        }
        return on_connect(session, flags, body, out);
    }
    match packet {
        kind::CONNECT => Err("second CONNECT".into()),
        kind::PUBLISH => on_publish(flags, body, out),
        kind::PUBACK => on_puback(session, flags, body),
        kind::PUBREL => {
            expect_flags(flags, 0b0010, "PUBREL")?;
            let id = Reader::new(body).u16()?;
            put_packet(out, kind::PUBCOMP << 4, &id.to_be_bytes());
            Ok(())
        }
        kind::SUBSCRIBE => on_subscribe(session, flags, body, out),
        kind::UNSUBSCRIBE => on_unsubscribe(session, flags, body, out),
        kind::PINGREQ => {
            expect_flags(flags, 0, "PINGREQ")?;
            put_packet(out, kind::PINGRESP << 4, &[]);
            Ok(())
        }
        kind::DISCONNECT => {
            expect_flags(flags, 0, "DISCONNECT")?;
            // A clean disconnect discards the will (3.1.2.5).
            let _ = host::set_will(None);
            host::close("client disconnected");
            Ok(())
        }
        other => Err(format!("unexpected packet type {other}")),
    }
}

fn expect_flags(flags: u8, expected: u8, packet: &str) -> Result<(), DecodeError> {
    if flags != expected {
        return Err(format!("{packet} with reserved flags {flags:#06b}"));
    }
    Ok(())
}

fn connack(out: &mut Vec<u8>, session_present: bool, code: u8) {
    put_packet(out, kind::CONNACK << 4, &[u8::from(session_present), code]);
}

fn on_connect(session: &mut Session, flags: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    expect_flags(flags, 0, "CONNECT")?;
    let connect = codec::connect(body)?;
    let supported = matches!((connect.protocol_name, connect.level), ("MQTT", 4) | ("MQIsdp", 3));
    if !supported {
        connack(out, false, connack::BAD_PROTOCOL_VERSION);
        host::close("unsupported protocol level");
        return Ok(());
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        connack(out, false, connack::IDENTIFIER_REJECTED);
        host::close("empty client id without clean session");
        return Ok(());
    }
    let credentials = Credentials {
        username: connect.username.map(str::to_string),
        password: connect.password.map(<[u8]>::to_vec),
        token: None,
    };
    if host::authenticate(&credentials).is_err() {
        connack(out, false, connack::NOT_AUTHORIZED);
        host::close("not authorized");
        return Ok(());
    }
    let options = SessionOptions {
        clean: connect.clean_session,
        expiry_secs: if connect.clean_session { Some(0) } else { None },
        max_inflight: u16::MAX,
    };
    let attached = match host::attach_session(connect.client_id, options) {
        Ok(attached) => attached,
        Err(_) => {
            connack(out, false, connack::IDENTIFIER_REJECTED);
            host::close("session refused");
            return Ok(());
        }
    };
    // A resumed session keeps its subscriptions; learn them so UNSUBSCRIBE
    // and re-SUBSCRIBE by filter work.
    for subscription in attached.subscriptions {
        let filter = match &subscription.options.group {
            Some(group) => format!("$share/{group}/{}", subscription.filter),
            None => subscription.filter,
        };
        session.subscriptions.insert(filter, subscription.id);
    }
    if let Some(will) = &connect.will {
        let mut message = message(will.topic, will.payload);
        message.retain = will.retain;
        message.qos = qos_from(will.qos);
        if let Err(e) = host::set_will(Some(&Will { message, delay_secs: 0 })) {
            connack(out, false, connack::NOT_AUTHORIZED);
            host::close(&format!("will refused: {}", e.message));
            return Ok(());
        }
    }
    if connect.keep_alive > 0 {
        // The server disconnects after one and a half keep-alive periods (3.1.2.10).
        host::set_idle_timeout(u32::from(connect.keep_alive) * 1500);
    }
    session.connected = true;
    connack(out, attached.present, connack::ACCEPTED);
    Ok(())
}

fn qos_from(level: u8) -> Qos {
    match level {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        _ => Qos::ExactlyOnce,
    }
}

fn qos_level(qos: Qos) -> u8 {
    match qos {
        Qos::AtMostOnce => 0,
        Qos::AtLeastOnce => 1,
        Qos::ExactlyOnce => 2,
    }
}

fn on_publish(flags: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let qos = (flags >> 1) & 0x03;
    if qos == 3 {
        return Err("PUBLISH with QoS 3".into());
    }
    let mut r = Reader::new(body);
    let topic = r.string()?;
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err("PUBLISH topic is empty or has wildcards".into());
    }
    let packet_id = if qos > 0 { Some(r.u16()?) } else { None };
    let mut msg: Message = message(topic, r.rest());
    msg.retain = flags & 0x01 != 0;
    msg.qos = qos_from(qos);
    if let Err(e) = host::publish(&msg) {
        // 3.1.1 cannot refuse a publish; an unauthorised one is dropped (and
        // still acknowledged, as brokers commonly do), a malformed one closes.
        if e.code != ErrorCode::NotAuthorized {
            return Err(format!("publish refused: {}", e.message));
        }
        host::log(sandport_guest::types::LogLevel::Info, &format!("publish refused: {}", e.message));
    }
    match packet_id {
        Some(id) if qos == 1 => put_packet(out, kind::PUBACK << 4, &id.to_be_bytes()),
        Some(id) => put_packet(out, kind::PUBREC << 4, &id.to_be_bytes()),
        None => {}
    }
    Ok(())
}

fn on_puback(session: &mut Session, flags: u8, body: &[u8]) -> Result<(), DecodeError> {
    expect_flags(flags, 0, "PUBACK")?;
    let id = Reader::new(body).u16()?;
    if let Some(delivery) = session.awaiting_ack.remove(&id) {
        let _ = host::ack(delivery);
    }
    Ok(())
}

/// Split `$share/GROUP/filter` into group and filter (MQTT 5 4.8.2, widely
/// supported by 3.1.1 brokers too).
fn shared(filter: &str) -> Result<(Option<&str>, &str), DecodeError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok((None, filter));
    };
    match rest.split_once('/') {
        Some((group, inner)) if !group.is_empty() && !group.contains(['+', '#']) && !inner.is_empty() => {
            Ok((Some(group), inner))
        }
        _ => Err("malformed $share filter".into()),
    }
}

fn on_subscribe(session: &mut Session, flags: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    expect_flags(flags, 0b0010, "SUBSCRIBE")?;
    let mut r = Reader::new(body);
    let packet_id = r.u16()?;
    let mut codes = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let requested = r.u8()?;
        if requested & 0xfc != 0 {
            return Err("SUBSCRIBE options with reserved bits".into());
        }
        let granted = requested.min(1);
        let (group, inner) = shared(filter)?;
        let options = SubscribeOptions {
            kind: FilterKind::Wildcard,
            max_qos: qos_from(granted),
            group: group.map(str::to_string),
            no_local: false,
            retained: RetainedHandling::Send,
        };
        // A repeated filter replaces the earlier subscription (3.8.4).
        if let Some(old) = session.subscriptions.remove(filter) {
            let _ = host::unsubscribe(old);
        }
        match host::subscribe(inner, &options) {
            Ok(id) => {
                session.subscriptions.insert(filter.to_string(), id);
                codes.push(granted);
            }
            Err(_) => codes.push(SUBACK_FAILURE),
        }
    }
    if codes.is_empty() {
        return Err("SUBSCRIBE without topic filters".into());
    }
    let mut ack = packet_id.to_be_bytes().to_vec();
    ack.extend_from_slice(&codes);
    put_packet(out, kind::SUBACK << 4, &ack);
    Ok(())
}

fn on_unsubscribe(
    session: &mut Session,
    flags: u8,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    expect_flags(flags, 0b0010, "UNSUBSCRIBE")?;
    let mut r = Reader::new(body);
    let packet_id = r.u16()?;
    let mut any = false;
    while !r.is_empty() {
        any = true;
        if let Some(id) = session.subscriptions.remove(r.string()?) {
            let _ = host::unsubscribe(id);
        }
    }
    if !any {
        return Err("UNSUBSCRIBE without topic filters".into());
    }
    put_packet(out, kind::UNSUBACK << 4, &packet_id.to_be_bytes());
    Ok(())
}

fn encode_delivery(session: &mut Session, delivery: Delivery, out: &mut Vec<u8>) {
    let message = delivery.message;
    let qos = qos_level(message.qos).min(1);
    let mut body = Vec::with_capacity(message.topic.len() + message.payload.len() + 4);
    put_string(&mut body, message.topic.as_bytes());
    if qos > 0 {
        let id = session.packet_id();
        if let Some(delivery_id) = delivery.id {
            session.awaiting_ack.insert(id, delivery_id);
        }
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(&message.payload);
    // Live messages go out with RETAIN clear (3.3.1.3); stored ones with it set.
    let retain = u8::from(delivery.from_retained && message.retain);
    let dup = if delivery.redelivered && qos > 0 { 0x08 } else { 0 };
    put_packet(out, (kind::PUBLISH << 4) | dup | (qos << 1) | retain, &body);
}

// Exported only in the component build; natively the crate is a plain
// library, so its decoder can be unit-tested and fuzzed.
#[cfg(target_arch = "wasm32")]
sandport_guest::export!(Mqtt);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_recognises_connect() {
        let connect = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c";
        assert_eq!(probe(&connect[..1]), ProbeResult::NeedMore);
        assert_eq!(probe(&connect[..5]), ProbeResult::NeedMore);
        assert_eq!(probe(connect), ProbeResult::Matched(200));
        assert_eq!(probe(b"PING\r\n"), ProbeResult::NoMatch);
        assert_eq!(probe(b"\x10\x10\x00\x04MQTX"), ProbeResult::NoMatch);
    }

    #[test]
    fn shared_subscriptions_split() {
        assert_eq!(shared("$share/g/a/#").unwrap(), (Some("g"), "a/#"));
        assert_eq!(shared("a/#").unwrap(), (None, "a/#"));
        assert!(shared("$share//a").is_err());
        assert!(shared("$share/g").is_err());
    }
}
