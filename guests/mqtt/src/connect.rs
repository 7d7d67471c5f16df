//! CONNECT: version and identity checks, authentication through the host,
//! session attach and resume, the will, keep-alive, and the CONNACK
//! (3.1.1 section 3.1-3.2, 5.0 section 3.1-3.2).

use sandport_guest::host;
use sandport_guest::types::{Credentials, ErrorCode, LogLevel, SessionOptions, Will};

use crate::codec::Reader;
use crate::error::MqttError;
use crate::packets::{self, LEVEL_5, LEVEL_31, LEVEL_311};
use crate::properties::{PropertyWriter, id};
use crate::publish::{message_from, user_headers};
use crate::reason::{self, v3};
use crate::state::{Conn, Phase, SubscriptionMeta};

/// Longest client id MQTT 3.1 allows.
const MAX_CLIENT_ID_31: usize = 23;

/// Session expiry that means "never" (5.0 3.1.2.11.2).
const NEVER_EXPIRES: u32 = u32::MAX;

/// Refuse a CONNECT the server will not serve (a policy answer, not a
/// protocol error): CONNACK with the code, a log line, and close.
fn decline(
    conn: &mut Conn,
    out: &mut Vec<u8>,
    v3_code: u8,
    v5_code: u8,
    text: &str,
) -> Result<(), MqttError> {
    refuse(conn, out, v3_code, v5_code, text);
    host::log(LogLevel::Info, &format!("CONNECT refused: {text}"));
    host::close(text);
    Ok(())
}

/// Answer a CONNECT with a failure CONNACK in the client's version; the
/// returned error closes the connection.
fn refuse(conn: &mut Conn, out: &mut Vec<u8>, v3_code: u8, v5_code: u8, text: &str) -> MqttError {
    let v5 = conn.level == LEVEL_5;
    let mut properties = PropertyWriter::default();
    if v5 {
        properties.string(id::REASON_STRING, text);
    }
    packets::put_connack(out, v5, false, if v5 { v5_code } else { v3_code }, &properties);
    conn.phase = Phase::Closed;
    MqttError::new(v5_code, text)
}

pub fn on_connect(conn: &mut Conn, flags: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), MqttError> {
    packets::expect_flags(flags, 0, "CONNECT")?;
    let mut r = Reader::new(body);
    let (name, level) = packets::connect_header(&mut r)?;
    if !matches!(name, "MQTT" | "MQIsdp") {
        return Err(MqttError::protocol(format!("unknown protocol name \"{name}\"")));
    }
    conn.level = level;
    if !matches!((name, level), ("MQTT", LEVEL_311 | LEVEL_5) | ("MQIsdp", LEVEL_31)) {
        conn.level = LEVEL_311; // answer in a format every client reads
        let text = format!("unsupported protocol level {level}");
        return decline(conn, out, v3::BAD_PROTOCOL_VERSION, reason::UNSUPPORTED_PROTOCOL_VERSION, &text);
    }
    let v5 = level == LEVEL_5;
    let connect = match packets::connect(&mut r, level) {
        Ok(connect) => connect,
        Err(e) if v5 => return Err(refuse(conn, out, 0, e.code, &e.text)),
        Err(e) => return Err(e),
    };
    if connect.properties.auth_method.is_some() {
        let text = "enhanced authentication is not supported";
        return decline(conn, out, 0, reason::BAD_AUTHENTICATION_METHOD, text);
    }
    let id_refused = match level {
        LEVEL_31 => connect.client_id.is_empty() || connect.client_id.len() > MAX_CLIENT_ID_31,
        LEVEL_311 => connect.client_id.is_empty() && !connect.clean_start,
        _ => false,
    };
    if id_refused {
        let text = "client identifier refused";
        return decline(conn, out, v3::IDENTIFIER_REJECTED, reason::CLIENT_ID_NOT_VALID, text);
    }

    let credentials = Credentials { username: connect.username, password: connect.password, token: None };
    if let Err(e) = host::authenticate(credentials) {
        let (v3_code, v5_code) = match e.code {
            ErrorCode::Unavailable => (v3::SERVER_UNAVAILABLE, reason::SERVER_UNAVAILABLE),
            _ => (v3::NOT_AUTHORIZED, reason::NOT_AUTHORIZED),
        };
        return decline(conn, out, v3_code, v5_code, &format!("not authorized: {}", e.message));
    }

    // The will is checked before the session is attached, so a refusal
    // leaves any stored session alone.
    if let Some(will) = &connect.will {
        let headers = user_headers(&will.properties);
        let mut message =
            message_from(will.topic, will.payload, will.qos, will.retain, &will.properties, &headers);
        if message.utf8_payload && std::str::from_utf8(will.payload).is_err() {
            let text = "will payload is not UTF-8";
            return Err(refuse(conn, out, v3::NOT_AUTHORIZED, reason::PAYLOAD_FORMAT_INVALID, text));
        }
        message.retain = will.retain;
        let delay_secs = will.properties.will_delay.unwrap_or(0);
        if let Err(e) = host::set_will(Some(Will { message, delay_secs })) {
            let text = format!("will refused: {}", e.message);
            return match e.code {
                ErrorCode::Invalid if !v5 => Err(MqttError::malformed(text)),
                ErrorCode::Invalid => Err(refuse(conn, out, 0, reason::TOPIC_NAME_INVALID, &text)),
                _ => decline(conn, out, v3::NOT_AUTHORIZED, reason::NOT_AUTHORIZED, &text),
            };
        }
    }

    // MQTT 5: absent = 0 (ends with the connection), 0xFFFFFFFF = never.
    // 3.1.1: clean session ends with the connection, otherwise it never expires.
    let expiry_secs = if v5 {
        match connect.properties.session_expiry.unwrap_or(0) {
            NEVER_EXPIRES => None,
            secs => Some(secs),
        }
    } else if connect.clean_start {
        Some(0)
    } else {
        None
    };
    let options = SessionOptions {
        clean: connect.clean_start,
        expiry_secs,
        max_inflight: connect.properties.receive_maximum.unwrap_or(u16::MAX),
    };
    let attached = match host::attach_session(connect.client_id, options) {
        Ok(attached) => attached,
        Err(e) => {
            let _ = host::set_will(None);
            let text = format!("session refused: {}", e.message);
            return decline(conn, out, v3::IDENTIFIER_REJECTED, reason::CLIENT_ID_NOT_VALID, &text);
        }
    };
    conn.persistent = expiry_secs != Some(0);
    conn.expiry_zero_at_connect = expiry_secs == Some(0);

    // The server closes after one and a half keep-alive periods of silence
    // (3.1.2.10). An MQTT 5 client may be told a shorter one.
    let mut keep_alive = connect.keep_alive;
    let max = conn.limits.max_keep_alive;
    let server_keep_alive = v5 && max > 0 && (keep_alive == 0 || keep_alive > max);
    if server_keep_alive {
        keep_alive = max;
    }
    host::set_idle_timeout(u32::from(keep_alive) * 1500);

    conn.client_maximum_packet = connect.properties.maximum_packet_size;
    conn.client_alias_maximum = connect.properties.topic_alias_maximum.unwrap_or(0);

    // A resumed session keeps its subscriptions; learn them (and the options
    // the host does not keep) so UNSUBSCRIBE, re-SUBSCRIBE and deliveries work.
    let pubrel = if attached.present {
        let saved = Conn::load_subscriptions();
        for subscription in attached.subscriptions {
            let filter = match &subscription.options.group {
                Some(group) => format!("$share/{group}/{}", subscription.filter),
                None => subscription.filter,
            };
            let (identifier, retain_as_published) = saved.get(&subscription.id).copied().unwrap_or_default();
            let meta = SubscriptionMeta { host_id: subscription.id, identifier, retain_as_published };
            conn.add_subscription(filter, meta);
        }
        conn.restore_qos2()
    } else {
        Vec::new()
    };

    let mut properties = PropertyWriter::default();
    if v5 {
        if connect.client_id.is_empty() {
            properties.string(id::ASSIGNED_CLIENT_ID, &attached.client_id);
        }
        if conn.limits.receive_maximum != u16::MAX {
            properties.u16(id::RECEIVE_MAXIMUM, conn.limits.receive_maximum);
        }
        properties.u16(id::TOPIC_ALIAS_MAXIMUM, conn.limits.topic_alias_maximum);
        properties.u32(id::MAXIMUM_PACKET_SIZE, conn.limits.maximum_packet_size);
        if server_keep_alive {
            properties.u16(id::SERVER_KEEP_ALIVE, keep_alive);
        }
    }
    // MQTT 3.1 has no session present flag: the byte is reserved.
    let present = attached.present && level != LEVEL_31;
    packets::put_connack(out, v5, present, reason::SUCCESS, &properties);
    conn.phase = Phase::Connected;
    for packet_id in pubrel {
        packets::put_ack(out, crate::codec::kind::PUBREL, packet_id, v5, reason::SUCCESS);
    }
    Ok(())
}
