//! `mqtt`: an MQTT 3.1, 3.1.1 and 5.0 front end (OASIS MQTT 3.1.1 and 5.0).
//!
//! All protocol logic lives here; everything that must outlive a connection
//! lives in the host: sessions with their subscriptions and queued QoS 1 and 2
//! deliveries, retained messages, wills, and (in the session's key-value
//! scope) the few pieces of session state only MQTT knows about.
//!
//! One instance serves one connection. Packets arrive whole (the host frames
//! them by the fixed header's varint length, refusing anything larger than
//! the advertised maximum packet size). Every malformed packet or protocol
//! violation closes the connection; an MQTT 5 client is told why with a
//! DISCONNECT reason code first. MQTT topics are already canonical (`/`
//! levels, `+` and `#`), so they pass to the host unchanged.
//!
//! Settings (`[protocols.mqtt.settings]`): `receive_maximum` (unreleased
//! QoS 2 publishes a client may have open, default 65535),
//! `topic_alias_maximum` (default 10), `max_keep_alive` (seconds; MQTT 5
//! clients asking for more, or for none, are told this value; default 0 =
//! grant what they ask), `connect_timeout_ms` (how long a new connection may
//! take to send CONNECT, default 10000).

// Natively (tests, fuzzing) nothing is exported, so the handler looks unused.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod codec;
mod connect;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod packets;
mod properties;
mod publish;
mod reason;
mod state;
mod subscribe;

use std::cell::RefCell;

use codec::{kind, split};
use error::MqttError;
use sandport_guest::types::{
    CloseReason, ConnectionInfo, Framing, ProbeResult, ProtocolInfo, StreamScan, VarintLength,
};
use sandport_guest::{Handler, frames, host};
use state::{Conn, Limits, Phase};

thread_local! {
    static CONN: RefCell<Conn> = RefCell::default();
}

struct Mqtt;

impl Handler for Mqtt {
    fn describe() -> ProtocolInfo {
        ProtocolInfo {
            name: "mqtt".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            framing: Framing::VarintLength(VarintLength { offset: 1, max_bytes: 4 }),
            speaks_first: false,
            settings: state::SETTINGS.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn probe(prefix: Vec<u8>) -> ProbeResult {
        probe(&prefix)
    }

    fn on_stream(_data: Vec<u8>) -> Result<StreamScan, String> {
        sandport_guest::framed_by_host()
    }

    fn on_open(info: ConnectionInfo) {
        let limits = Limits::from_settings(&info.settings, info.max_frame_bytes);
        // A client that connects and never sends CONNECT is closed; the
        // keep-alive replaces this once CONNECT arrives.
        host::set_idle_timeout(limits.connect_timeout_ms);
        CONN.with_borrow_mut(|conn| conn.limits = limits);
    }

    fn on_frames(data: Vec<u8>, ends: Vec<u32>) -> Result<(), String> {
        let mut out = Vec::new();
        let result = CONN.with_borrow_mut(|conn| handle_frames(conn, frames(&data, &ends), &mut out));
        if !out.is_empty() {
            host::send(&out);
        }
        result.map_err(|e| e.text)
    }

    fn on_deliver(batch: Vec<u8>) {
        // Sized as `sandport_guest::deliveries` explains.
        let mut out = Vec::with_capacity(batch.len());
        CONN.with_borrow_mut(|conn| {
            if conn.phase != Phase::Connected {
                return;
            }
            for delivery in sandport_guest::deliveries(&batch) {
                publish::deliver(conn, delivery, &mut out);
            }
        });
        if !out.is_empty() {
            host::send(&out);
        }
    }

    fn on_timer() {}

    fn on_close(reason: CloseReason) {
        let mut out = Vec::new();
        CONN.with_borrow_mut(|conn| {
            if conn.phase == Phase::Connected && conn.v5() {
                let told = match reason {
                    CloseReason::SessionTakenOver => Some((reason::SESSION_TAKEN_OVER, "session taken over")),
                    CloseReason::IdleTimeout => Some((reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout")),
                    CloseReason::ServerShutdown => {
                        Some((reason::SERVER_SHUTTING_DOWN, "server shutting down"))
                    }
                    CloseReason::SlowConsumer => {
                        Some((reason::QUOTA_EXCEEDED, "deliveries not read in time"))
                    }
                    CloseReason::FrameTooLarge => Some((reason::PACKET_TOO_LARGE, "packet too large")),
                    CloseReason::ProtocolError(_) => Some((reason::MALFORMED_PACKET, "malformed packet")),
                    CloseReason::ClosedByRequest => {
                        Some((reason::ADMINISTRATIVE_ACTION, "closed by request"))
                    }
                    CloseReason::PeerClosed | CloseReason::GuestClosed => None,
                };
                if let Some((code, text)) = told {
                    packets::put_disconnect(&mut out, code, text);
                }
            }
            conn.phase = Phase::Closed;
        });
        if !out.is_empty() {
            host::send(&out);
        }
    }
}

/// Handle a batch of packets; the first error ends the connection.
fn handle_frames<'a>(
    conn: &mut Conn,
    frames: impl Iterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Result<(), MqttError> {
    for frame in frames {
        if conn.phase == Phase::Closed {
            break;
        }
        if let Err(error) = handle(conn, frame, out) {
            // MQTT 5 clients learn why (4.13); 3.1.1 ones just see the close.
            if conn.phase == Phase::Connected && conn.v5() {
                packets::put_disconnect(out, error.code, &error.text);
            }
            conn.phase = Phase::Closed;
            return Err(error);
        }
    }
    Ok(())
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

fn handle(conn: &mut Conn, frame: &[u8], out: &mut Vec<u8>) -> Result<(), MqttError> {
    let (packet, flags, body) = split(frame)?;
    if conn.phase == Phase::AwaitConnect {
        if packet != kind::CONNECT {
            return Err(MqttError::protocol("first packet is not CONNECT"));
        }
        return connect::on_connect(conn, flags, body, out);
    }
    match packet {
        kind::CONNECT => Err(MqttError::protocol("second CONNECT")),
        kind::PUBLISH => publish::on_publish(conn, flags, body, out),
        kind::PUBACK => publish::on_puback(conn, flags, body),
        kind::PUBREC => publish::on_pubrec(conn, flags, body, out),
        kind::PUBREL => publish::on_pubrel(conn, flags, body, out),
        kind::PUBCOMP => publish::on_pubcomp(conn, flags, body),
        kind::SUBSCRIBE => subscribe::on_subscribe(conn, flags, body, out),
        kind::UNSUBSCRIBE => subscribe::on_unsubscribe(conn, flags, body, out),
        kind::PINGREQ => {
            packets::expect_flags(flags, 0, "PINGREQ")?;
            codec::put_packet(out, kind::PINGRESP << 4, &[]);
            Ok(())
        }
        kind::DISCONNECT => on_disconnect(conn, flags, body),
        kind::AUTH if conn.v5() => Err(MqttError::protocol("AUTH without enhanced authentication")),
        other => Err(MqttError::malformed(format!("unexpected packet type {other}"))),
    }
}

/// DISCONNECT from the client (3.14): the will is discarded unless an MQTT 5
/// client asks for it (0x04), and the session expiry may change.
fn on_disconnect(conn: &mut Conn, flags: u8, body: &[u8]) -> Result<(), MqttError> {
    let (code, properties) = packets::disconnect(flags, body, conn.v5())?;
    if let Some(expiry) = properties.session_expiry {
        if conn.expiry_zero_at_connect && expiry != 0 {
            return Err(MqttError::protocol("session expiry raised at DISCONNECT after 0 at CONNECT"));
        }
        let _ = host::set_session_expiry((expiry != u32::MAX).then_some(expiry));
        conn.persistent = expiry != 0;
    }
    if code != reason::DISCONNECT_WITH_WILL {
        let _ = host::set_will(None);
    }
    conn.phase = Phase::Closed;
    host::close("client disconnected");
    Ok(())
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
}
