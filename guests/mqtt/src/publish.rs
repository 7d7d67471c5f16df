//! PUBLISH in both directions and the QoS 1 and 2 exchanges around it
//! (3.1.1 section 3.3-3.7 and 4.3, 5.0 section 3.3-3.7 and 4.3).
//!
//! Inbound: the message goes to the host (which makes QoS 1 and 2 durable
//! before the acknowledgement leaves), QoS 2 packet ids are remembered until
//! PUBREL so a resent PUBLISH is not published twice. Outbound: the host's
//! at-least-once deliveries become QoS 1 or 2 exchanges; the host delivery is
//! acknowledged on PUBACK, or on PUBREC for QoS 2, after which only the
//! PUBREL/PUBCOMP tail remains (kept across reconnects).

use std::borrow::Cow;

use sandport_guest::delivery::Delivery;
use sandport_guest::host;
use sandport_guest::types::{ErrorCode, LogLevel, Message, Qos};

use crate::codec::kind;
use crate::error::MqttError;
use crate::packets::{self, OutgoingPublish};
use crate::properties::{Properties, PropertyWriter, id};
use crate::reason;
use crate::state::{Awaiting, Conn, Outbound};

pub fn qos_from(level: u8) -> Qos {
    match level {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        _ => Qos::ExactlyOnce,
    }
}

pub fn qos_level(qos: Qos) -> u8 {
    match qos {
        Qos::AtMostOnce => 0,
        Qos::AtLeastOnce => 1,
        Qos::ExactlyOnce => 2,
    }
}

/// User properties as the host takes them (borrowed; no allocation when
/// there are none, the usual case).
pub fn user_headers(properties: &Properties) -> Vec<(&str, &str)> {
    properties.user.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect()
}

/// The host message for a PUBLISH (or a will) with its MQTT 5 properties,
/// borrowed from the packet: the host copies what it keeps.
pub fn message_from<'a>(
    topic: &'a str,
    payload: &'a [u8],
    qos: u8,
    retain: bool,
    properties: &'a Properties,
    headers: &'a [(&'a str, &'a str)],
) -> Message<'a> {
    Message {
        topic,
        payload,
        headers,
        reply_to: properties.response_topic.as_deref(),
        correlation: properties.correlation_data.as_deref(),
        content_type: properties.content_type.as_deref(),
        utf8_payload: properties.payload_format == Some(1),
        expiry_secs: properties.message_expiry,
        retain,
        qos: qos_from(qos),
    }
}

/// Resolve the topic of an inbound PUBLISH through the client's topic aliases.
fn resolve_topic<'a>(conn: &mut Conn, topic: &'a str, alias: Option<u16>) -> Result<Cow<'a, str>, MqttError> {
    let Some(alias) = alias else {
        if topic.is_empty() {
            return Err(MqttError::protocol("PUBLISH without a topic"));
        }
        return Ok(Cow::Borrowed(topic));
    };
    if alias == 0 || alias > conn.limits.topic_alias_maximum {
        return Err(MqttError::new(
            reason::TOPIC_ALIAS_INVALID,
            format!("topic alias {alias} is out of range"),
        ));
    }
    if topic.is_empty() {
        return conn
            .aliases_in
            .get(&alias)
            .map(|topic| Cow::Owned(topic.clone()))
            .ok_or_else(|| MqttError::protocol(format!("topic alias {alias} was never set")));
    }
    conn.aliases_in.insert(alias, topic.to_string());
    Ok(Cow::Borrowed(topic))
}

pub fn on_publish(conn: &mut Conn, flags: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), MqttError> {
    let v5 = conn.v5();
    let publish = packets::publish(flags, body, v5)?;
    let topic = resolve_topic(conn, publish.topic, publish.properties.topic_alias)?;
    if publish.properties.response_topic.as_deref().is_some_and(|t| t.is_empty() || t.contains(['+', '#'])) {
        return Err(MqttError::protocol("response topic is empty or has wildcards"));
    }
    let packet_id = publish.packet_id.unwrap_or(0);
    if publish.qos == 2 && conn.inbound_qos2.contains(&packet_id) {
        // A resend of a message already accepted: acknowledge, do not publish again (4.3.3).
        packets::put_ack(out, kind::PUBREC, packet_id, v5, reason::SUCCESS);
        return Ok(());
    }
    if publish.qos == 2 && conn.inbound_qos2.len() >= usize::from(conn.limits.receive_maximum) {
        return Err(MqttError::new(
            reason::RECEIVE_MAXIMUM_EXCEEDED,
            "more unreleased QoS 2 messages than allowed",
        ));
    }

    let headers = user_headers(&publish.properties);
    let message =
        message_from(&topic, publish.payload, publish.qos, publish.retain, &publish.properties, &headers);
    let code = if message.utf8_payload && std::str::from_utf8(publish.payload).is_err() {
        host::log(LogLevel::Info, "PUBLISH refused: payload format indicator says UTF-8 but it is not");
        reason::PAYLOAD_FORMAT_INVALID
    } else {
        match host::publish(message) {
            Ok(outcome) if v5 && outcome.receivers == 0 => reason::NO_MATCHING_SUBSCRIBERS,
            Ok(_) => reason::SUCCESS,
            Err(e) => {
                let code = match e.code {
                    ErrorCode::Invalid => {
                        return Err(MqttError::new(
                            reason::TOPIC_NAME_INVALID,
                            format!("PUBLISH refused: {}", e.message),
                        ));
                    }
                    ErrorCode::NotAuthorized => reason::NOT_AUTHORIZED,
                    ErrorCode::QuotaExceeded => reason::QUOTA_EXCEEDED,
                    ErrorCode::Unsupported => reason::IMPLEMENTATION_SPECIFIC,
                    ErrorCode::Unavailable => reason::UNSPECIFIED_ERROR,
                };
                host::log(LogLevel::Info, &format!("PUBLISH to {topic} refused: {}", e.message));
                // 3.1.1 cannot refuse a PUBLISH: it is acknowledged and dropped.
                if v5 { code } else { reason::SUCCESS }
            }
        }
    };
    match publish.qos {
        1 => packets::put_ack(out, kind::PUBACK, packet_id, v5, code),
        2 => {
            if code < reason::UNSPECIFIED_ERROR {
                conn.inbound_qos2.insert(packet_id);
                conn.save_inbound_qos2();
            }
            packets::put_ack(out, kind::PUBREC, packet_id, v5, code);
        }
        _ => {}
    }
    Ok(())
}

/// PUBREL from the client: the QoS 2 message is released (4.3.3).
pub fn on_pubrel(conn: &mut Conn, flags: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), MqttError> {
    let v5 = conn.v5();
    let (packet_id, _) = packets::ack(flags, 0b0010, body, v5, "PUBREL")?;
    let code = if conn.inbound_qos2.remove(&packet_id) {
        conn.save_inbound_qos2();
        reason::SUCCESS
    } else {
        reason::PACKET_ID_NOT_FOUND
    };
    packets::put_ack(out, kind::PUBCOMP, packet_id, v5, code);
    Ok(())
}

/// PUBACK: a QoS 1 delivery is done.
pub fn on_puback(conn: &mut Conn, flags: u8, body: &[u8]) -> Result<(), MqttError> {
    let (packet_id, _) = packets::ack(flags, 0, body, conn.v5(), "PUBACK")?;
    if let Some(exchange) = conn.outbound.get(&packet_id).copied()
        && exchange.awaiting == Awaiting::Puback
    {
        conn.outbound.remove(&packet_id);
        if let Some(delivery) = exchange.delivery {
            let _ = host::ack(delivery);
        }
    }
    Ok(())
}

/// PUBREC: the client owns the QoS 2 message; release it with PUBREL.
pub fn on_pubrec(conn: &mut Conn, flags: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), MqttError> {
    let v5 = conn.v5();
    let (packet_id, code) = packets::ack(flags, 0, body, v5, "PUBREC")?;
    let Some(exchange) = conn.outbound.get(&packet_id).copied() else {
        packets::put_ack(out, kind::PUBREL, packet_id, v5, reason::PACKET_ID_NOT_FOUND);
        return Ok(());
    };
    if let Some(delivery) = exchange.delivery {
        let _ = host::ack(delivery);
    }
    if code >= reason::UNSPECIFIED_ERROR {
        // The client refused the message: the exchange ends here (4.3.3).
        conn.outbound.remove(&packet_id);
        return Ok(());
    }
    conn.outbound.insert(packet_id, Outbound { delivery: None, awaiting: Awaiting::Pubcomp });
    conn.save_pubrel();
    packets::put_ack(out, kind::PUBREL, packet_id, v5, reason::SUCCESS);
    Ok(())
}

/// PUBCOMP: the QoS 2 exchange is complete.
pub fn on_pubcomp(conn: &mut Conn, flags: u8, body: &[u8]) -> Result<(), MqttError> {
    let (packet_id, _) = packets::ack(flags, 0, body, conn.v5(), "PUBCOMP")?;
    if conn.outbound.get(&packet_id).is_some_and(|o| o.awaiting == Awaiting::Pubcomp) {
        conn.outbound.remove(&packet_id);
        conn.save_pubrel();
    }
    Ok(())
}

/// Encode one delivery as a PUBLISH to the client.
pub fn deliver(conn: &mut Conn, delivery: Delivery, out: &mut Vec<u8>) {
    let v5 = conn.v5();
    let message = &delivery.message;
    let meta = conn.subscription(delivery.subscription).copied();
    // An at-least-once delivery always carries an id; without one it can only go at QoS 0.
    let qos = if delivery.id.is_some() { qos_level(message.qos.into()) } else { 0 };
    let packet_id = match (qos, delivery.id) {
        (1 | 2, Some(id)) => match conn.packet_id_for(id) {
            Some(packet_id) => Some(packet_id),
            None => {
                host::log(LogLevel::Warn, "no free packet identifier: delivery left for later");
                return;
            }
        },
        _ => None,
    };
    // RETAIN is set on messages from the retained store, and on live ones
    // only for retain-as-published subscriptions (3.3.1.3, 5.0 3.3.1.3).
    let retain = delivery.from_retained || (message.retain && meta.is_some_and(|m| m.retain_as_published));

    let mut properties = PropertyWriter::default();
    let mut topic = message.topic;
    let mut new_alias = None;
    if v5 {
        if message.utf8_payload {
            properties.byte(id::PAYLOAD_FORMAT, 1);
        }
        if let Some(secs) = message.expiry_secs {
            properties.u32(id::MESSAGE_EXPIRY, secs);
        }
        if let Some(content_type) = message.content_type {
            properties.string(id::CONTENT_TYPE, content_type);
        }
        if let Some(reply_to) = message.reply_to {
            properties.string(id::RESPONSE_TOPIC, reply_to);
        }
        if let Some(correlation) = message.correlation {
            properties.binary(id::CORRELATION_DATA, correlation);
        }
        for (name, value) in message.headers {
            properties.user(name, value);
        }
        if let Some(identifier) = meta.and_then(|m| m.identifier) {
            properties.varint(id::SUBSCRIPTION_ID, identifier);
        }
        if conn.client_alias_maximum > 0 {
            if let Some(alias) = conn.aliases_out.get(topic) {
                properties.u16(id::TOPIC_ALIAS, *alias);
                topic = "";
            } else if conn.aliases_out.len() < usize::from(conn.client_alias_maximum) {
                let alias = conn.aliases_out.len() as u16 + 1;
                properties.u16(id::TOPIC_ALIAS, alias);
                new_alias = Some(alias);
            }
        }
    }
    let publish = OutgoingPublish {
        dup: delivery.redelivered && qos > 0,
        qos,
        retain,
        topic,
        packet_id,
        properties: v5.then_some(&properties),
        payload: message.payload,
    };
    if conn.client_maximum_packet.is_some_and(|max| publish.size() > max as usize) {
        // Too large for the client: dropped as if delivered (5.0 3.1.2.11.4).
        host::log(LogLevel::Debug, "PUBLISH larger than the client's maximum packet size dropped");
        if let Some(id) = delivery.id {
            let _ = host::ack(id);
        }
        return;
    }
    publish.write(out);
    if let Some(alias) = new_alias {
        conn.aliases_out.insert(message.topic.to_string(), alias);
    }
    if let (Some(packet_id), Some(id)) = (packet_id, delivery.id) {
        let awaiting = if qos == 2 { Awaiting::Pubrec } else { Awaiting::Puback };
        conn.outbound.insert(packet_id, Outbound { delivery: Some(id), awaiting });
    }
}
