//! Decoding the packets a client sends and encoding the ones the server
//! sends, for protocol levels 3 (3.1), 4 (3.1.1) and 5 (5.0).

use crate::codec::{Reader, kind, put_binary, put_packet, put_varint, varint_len};
use crate::error::MqttError;
use crate::properties::{Context, Properties, PropertyWriter, id};

/// Protocol levels this server speaks.
pub const LEVEL_31: u8 = 3;
pub const LEVEL_311: u8 = 4;
pub const LEVEL_5: u8 = 5;

/// Parsed CONNECT.
#[derive(Debug)]
pub struct Connect<'a> {
    pub clean_start: bool,
    pub keep_alive: u16,
    pub properties: Properties,
    pub client_id: &'a str,
    pub will: Option<Will<'a>>,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

/// The will in a CONNECT.
#[derive(Debug)]
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
    pub properties: Properties,
}

/// The start of a CONNECT: enough to answer in the client's version even
/// when the rest is unusable.
pub fn connect_header<'a>(r: &mut Reader<'a>) -> Result<(&'a str, u8), MqttError> {
    let name = r.string()?;
    let level = r.u8()?;
    Ok((name, level))
}

/// Decode the rest of a CONNECT body after [`connect_header`] (3.1, 5.0 3.1).
pub fn connect<'a>(r: &mut Reader<'a>, level: u8) -> Result<Connect<'a>, MqttError> {
    let v5 = level == LEVEL_5;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(MqttError::malformed("CONNECT reserved flag is set"));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 { Properties::decode(r, Context::Connect)? } else { Properties::default() };
    let client_id = r.string()?;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    if will_qos == 3 {
        return Err(MqttError::malformed("will QoS 3"));
    }
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(MqttError::malformed("will QoS or retain set without a will"));
    }
    let will = if will_flag {
        let properties = if v5 { Properties::decode(r, Context::Will)? } else { Properties::default() };
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let has_username = flags & 0x80 != 0;
    let has_password = flags & 0x40 != 0;
    if has_password && !has_username && !v5 {
        return Err(MqttError::malformed("password without a user name"));
    }
    let username = if has_username { Some(r.string()?) } else { None };
    let password = if has_password { Some(r.binary()?) } else { None };
    if !r.is_empty() {
        return Err(MqttError::malformed("bytes after the CONNECT payload"));
    }
    Ok(Connect {
        clean_start: flags & 0x02 != 0,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

/// Parsed PUBLISH from a client.
#[derive(Debug)]
pub struct Publish<'a> {
    pub qos: u8,
    pub retain: bool,
    /// Empty when the topic comes from a topic alias.
    pub topic: &'a str,
    pub packet_id: Option<u16>,
    pub properties: Properties,
    pub payload: &'a [u8],
}

/// Decode a PUBLISH (3.3).
pub fn publish<'a>(flags: u8, body: &'a [u8], v5: bool) -> Result<Publish<'a>, MqttError> {
    let qos = (flags >> 1) & 0x03;
    let dup = flags & 0x08 != 0;
    if qos == 3 {
        return Err(MqttError::malformed("PUBLISH with QoS 3"));
    }
    if qos == 0 && dup {
        return Err(MqttError::malformed("PUBLISH with DUP set at QoS 0"));
    }
    let mut r = Reader::new(body);
    let topic = r.string()?;
    if topic.contains(['+', '#']) {
        return Err(MqttError::new(crate::reason::TOPIC_NAME_INVALID, "PUBLISH topic has wildcards"));
    }
    let packet_id = if qos > 0 {
        let id = r.u16()?;
        if id == 0 {
            return Err(MqttError::protocol("PUBLISH with packet identifier 0"));
        }
        Some(id)
    } else {
        None
    };
    let properties = if v5 { Properties::decode(&mut r, Context::Publish)? } else { Properties::default() };
    Ok(Publish { qos, retain: flags & 0x01 != 0, topic, packet_id, properties, payload: r.rest() })
}

/// One filter of a SUBSCRIBE with its options byte decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription<'a> {
    pub filter: &'a str,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0 send, 1 send if new, 2 never.
    pub retain_handling: u8,
}

/// Parsed SUBSCRIBE.
#[derive(Debug)]
pub struct Subscribe<'a> {
    pub packet_id: u16,
    pub subscription_id: Option<u32>,
    pub filters: Vec<Subscription<'a>>,
}

fn packet_id(r: &mut Reader<'_>, packet: &str) -> Result<u16, MqttError> {
    let id = r.u16()?;
    if id == 0 {
        return Err(MqttError::protocol(format!("{packet} with packet identifier 0")));
    }
    Ok(id)
}

/// Decode a SUBSCRIBE (3.8).
pub fn subscribe(flags: u8, body: &[u8], v5: bool) -> Result<Subscribe<'_>, MqttError> {
    expect_flags(flags, 0b0010, "SUBSCRIBE")?;
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r, "SUBSCRIBE")?;
    let properties = if v5 { Properties::decode(&mut r, Context::Subscribe)? } else { Properties::default() };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = r.u8()?;
        let reserved = if v5 { 0xc0 } else { 0xfc };
        if options & reserved != 0 {
            return Err(MqttError::malformed("SUBSCRIBE options with reserved bits set"));
        }
        let qos = options & 0x03;
        let retain_handling = (options >> 4) & 0x03;
        if qos == 3 || retain_handling == 3 {
            return Err(MqttError::malformed("SUBSCRIBE with QoS 3 or retain handling 3"));
        }
        filters.push(Subscription {
            filter,
            qos,
            no_local: options & 0x04 != 0,
            retain_as_published: options & 0x08 != 0,
            retain_handling,
        });
    }
    if filters.is_empty() {
        return Err(MqttError::protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe { packet_id, subscription_id: properties.subscription_id, filters })
}

/// Decode an UNSUBSCRIBE (3.10): packet id and filters.
pub fn unsubscribe(flags: u8, body: &[u8], v5: bool) -> Result<(u16, Vec<&str>), MqttError> {
    expect_flags(flags, 0b0010, "UNSUBSCRIBE")?;
    let mut r = Reader::new(body);
    let packet_id = packet_id(&mut r, "UNSUBSCRIBE")?;
    if v5 {
        Properties::decode(&mut r, Context::Unsubscribe)?;
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(MqttError::protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok((packet_id, filters))
}

/// Decode PUBACK, PUBREC, PUBREL or PUBCOMP: packet id and reason code.
pub fn ack(
    flags: u8,
    expected_flags: u8,
    body: &[u8],
    v5: bool,
    packet: &str,
) -> Result<(u16, u8), MqttError> {
    expect_flags(flags, expected_flags, packet)?;
    let mut r = Reader::new(body);
    let id = packet_id(&mut r, packet)?;
    let code = if v5 && !r.is_empty() { r.u8()? } else { crate::reason::SUCCESS };
    if v5 && !r.is_empty() {
        Properties::decode(&mut r, Context::Ack)?;
    }
    if !r.is_empty() {
        return Err(MqttError::malformed(format!("bytes after the {packet}")));
    }
    Ok((id, code))
}

/// Decode a DISCONNECT: reason code and properties (5.0 3.14).
pub fn disconnect(flags: u8, body: &[u8], v5: bool) -> Result<(u8, Properties), MqttError> {
    expect_flags(flags, 0, "DISCONNECT")?;
    let mut r = Reader::new(body);
    let code = if v5 && !r.is_empty() { r.u8()? } else { crate::reason::SUCCESS };
    let properties = if v5 && !r.is_empty() {
        Properties::decode(&mut r, Context::Disconnect)?
    } else {
        Properties::default()
    };
    if !r.is_empty() {
        return Err(MqttError::malformed("bytes after the DISCONNECT"));
    }
    Ok((code, properties))
}

pub fn expect_flags(flags: u8, expected: u8, packet: &str) -> Result<(), MqttError> {
    if flags != expected {
        return Err(MqttError::malformed(format!("{packet} with reserved flags {flags:#06b}")));
    }
    Ok(())
}

/// CONNACK (3.2). `properties` are written only at level 5.
pub fn put_connack(
    out: &mut Vec<u8>,
    v5: bool,
    session_present: bool,
    code: u8,
    properties: &PropertyWriter,
) {
    let mut body = vec![u8::from(session_present), code];
    if v5 {
        properties.write_to(&mut body);
    }
    put_packet(out, kind::CONNACK << 4, &body);
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP; the reason code is omitted when it is
/// success (5.0 3.4.2.1), and always at levels below 5.
pub fn put_ack(out: &mut Vec<u8>, packet: u8, id: u16, v5: bool, code: u8) {
    let first = (packet << 4) | if packet == kind::PUBREL { 0b0010 } else { 0 };
    let id = id.to_be_bytes();
    if v5 && code != crate::reason::SUCCESS {
        put_packet(out, first, &[id[0], id[1], code]);
    } else {
        put_packet(out, first, &id);
    }
}

/// SUBACK or UNSUBACK with one code per filter (UNSUBACK has none below level 5).
pub fn put_sub_ack(out: &mut Vec<u8>, packet: u8, id: u16, v5: bool, codes: &[u8]) {
    let mut body = id.to_be_bytes().to_vec();
    if v5 {
        body.push(0); // no properties
    }
    if v5 || packet == kind::SUBACK {
        body.extend_from_slice(codes);
    }
    put_packet(out, packet << 4, &body);
}

/// A server DISCONNECT (5.0 3.14). A reason string is always worth sending:
/// some clients (paho-mqtt 2.1) ignore the reason code of a DISCONNECT shorter
/// than three bytes.
pub fn put_disconnect(out: &mut Vec<u8>, code: u8, reason: &str) {
    let mut properties = PropertyWriter::default();
    properties.string(id::REASON_STRING, reason);
    let mut body = vec![code];
    properties.write_to(&mut body);
    put_packet(out, kind::DISCONNECT << 4, &body);
}

/// An outgoing PUBLISH.
pub struct OutgoingPublish<'a> {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: &'a str,
    pub packet_id: Option<u16>,
    pub properties: Option<&'a PropertyWriter>,
    pub payload: &'a [u8],
}

impl OutgoingPublish<'_> {
    fn body_len(&self) -> usize {
        let mut body = 2 + self.topic.len() + self.payload.len();
        if self.packet_id.is_some() {
            body += 2;
        }
        if let Some(properties) = self.properties {
            let len = properties.len();
            body += varint_len(len) + len;
        }
        body
    }

    /// Bytes the whole packet takes on the wire.
    pub fn size(&self) -> usize {
        let body = self.body_len();
        1 + varint_len(body) + body
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        let body = self.body_len();
        out.reserve(1 + varint_len(body) + body);
        out.push(
            (kind::PUBLISH << 4) | if self.dup { 0x08 } else { 0 } | (self.qos << 1) | u8::from(self.retain),
        );
        put_varint(out, body);
        put_binary(out, self.topic.as_bytes());
        if let Some(id) = self.packet_id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        if let Some(properties) = self.properties {
            properties.write_to(out);
        }
        out.extend_from_slice(self.payload);
    }
}
