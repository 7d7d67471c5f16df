//! MQTT 5 properties (5.0 section 2.2.2): decoding with the rules on which
//! packet may carry which property and how often, and encoding.

use crate::codec::{Reader, put_binary, put_varint};
use crate::error::MqttError;

/// Property identifiers (5.0 table 2-4).
pub mod id {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
}

/// Which packet the properties belong to; decides what is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Connect,
    Will,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

impl Context {
    fn allows(self, property: u8) -> bool {
        use id::*;
        match self {
            Context::Connect => matches!(
                property,
                SESSION_EXPIRY
                    | RECEIVE_MAXIMUM
                    | MAXIMUM_PACKET_SIZE
                    | TOPIC_ALIAS_MAXIMUM
                    | REQUEST_RESPONSE_INFO
                    | REQUEST_PROBLEM_INFO
                    | USER_PROPERTY
                    | AUTH_METHOD
                    | AUTH_DATA
            ),
            Context::Will => matches!(
                property,
                WILL_DELAY
                    | PAYLOAD_FORMAT
                    | MESSAGE_EXPIRY
                    | CONTENT_TYPE
                    | RESPONSE_TOPIC
                    | CORRELATION_DATA
                    | USER_PROPERTY
            ),
            // A client never sends a subscription identifier in PUBLISH (3.3.4-6).
            Context::Publish => matches!(
                property,
                PAYLOAD_FORMAT
                    | MESSAGE_EXPIRY
                    | TOPIC_ALIAS
                    | RESPONSE_TOPIC
                    | CORRELATION_DATA
                    | USER_PROPERTY
                    | CONTENT_TYPE
            ),
            Context::Ack | Context::Unsubscribe => matches!(property, REASON_STRING | USER_PROPERTY),
            Context::Subscribe => matches!(property, SUBSCRIPTION_ID | USER_PROPERTY),
            Context::Disconnect => {
                matches!(property, SESSION_EXPIRY | REASON_STRING | USER_PROPERTY | SERVER_REFERENCE)
            }
        }
    }
}

/// The properties of one packet. Absent ones are `None`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Properties {
    pub payload_format: Option<u8>,
    pub message_expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub subscription_id: Option<u32>,
    pub session_expiry: Option<u32>,
    pub auth_method: Option<String>,
    pub request_problem_info: Option<u8>,
    pub will_delay: Option<u32>,
    pub request_response_info: Option<u8>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub user: Vec<(String, String)>,
}

fn once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), MqttError> {
    if slot.replace(value).is_some() {
        return Err(MqttError::protocol(format!("{name} given twice")));
    }
    Ok(())
}

fn flag(value: u8, name: &str) -> Result<u8, MqttError> {
    if value > 1 {
        return Err(MqttError::protocol(format!("{name} must be 0 or 1")));
    }
    Ok(value)
}

impl Properties {
    /// Read a property length and the properties after it.
    pub fn decode(r: &mut Reader<'_>, context: Context) -> Result<Self, MqttError> {
        let len = r.varint()? as usize;
        let mut r = Reader::new(r.take(len)?);
        let mut p = Properties::default();
        while !r.is_empty() {
            let property = r.u8()?;
            if !context.allows(property) {
                return Err(MqttError::protocol(format!(
                    "property {property:#04x} is not allowed in {context:?}"
                )));
            }
            match property {
                id::PAYLOAD_FORMAT => {
                    once(&mut p.payload_format, flag(r.u8()?, "payload format indicator")?, "payload format")?
                }
                id::MESSAGE_EXPIRY => once(&mut p.message_expiry, r.u32()?, "message expiry")?,
                id::CONTENT_TYPE => once(&mut p.content_type, r.string()?.to_string(), "content type")?,
                id::RESPONSE_TOPIC => once(&mut p.response_topic, r.string()?.to_string(), "response topic")?,
                id::CORRELATION_DATA => {
                    once(&mut p.correlation_data, r.binary()?.to_vec(), "correlation data")?
                }
                id::SUBSCRIPTION_ID => {
                    let value = r.varint()?;
                    if value == 0 {
                        return Err(MqttError::protocol("subscription identifier 0"));
                    }
                    once(&mut p.subscription_id, value, "subscription identifier")?
                }
                id::SESSION_EXPIRY => once(&mut p.session_expiry, r.u32()?, "session expiry")?,
                id::AUTH_METHOD => {
                    once(&mut p.auth_method, r.string()?.to_string(), "authentication method")?
                }
                id::AUTH_DATA => {
                    r.binary()?;
                }
                id::REQUEST_PROBLEM_INFO => once(
                    &mut p.request_problem_info,
                    flag(r.u8()?, "request problem information")?,
                    "request problem information",
                )?,
                id::WILL_DELAY => once(&mut p.will_delay, r.u32()?, "will delay")?,
                id::REQUEST_RESPONSE_INFO => once(
                    &mut p.request_response_info,
                    flag(r.u8()?, "request response information")?,
                    "request response information",
                )?,
                id::SERVER_REFERENCE => {
                    r.string()?;
                }
                id::REASON_STRING => once(&mut p.reason_string, r.string()?.to_string(), "reason string")?,
                id::RECEIVE_MAXIMUM => {
                    let value = r.u16()?;
                    if value == 0 {
                        return Err(MqttError::protocol("receive maximum 0"));
                    }
                    once(&mut p.receive_maximum, value, "receive maximum")?
                }
                id::TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, r.u16()?, "topic alias maximum")?,
                id::TOPIC_ALIAS => once(&mut p.topic_alias, r.u16()?, "topic alias")?,
                id::USER_PROPERTY => {
                    let name = r.string()?.to_string();
                    let value = r.string()?.to_string();
                    p.user.push((name, value));
                }
                id::MAXIMUM_PACKET_SIZE => {
                    let value = r.u32()?;
                    if value == 0 {
                        return Err(MqttError::protocol("maximum packet size 0"));
                    }
                    once(&mut p.maximum_packet_size, value, "maximum packet size")?
                }
                other => return Err(MqttError::malformed(format!("unknown property {other:#04x}"))),
            }
        }
        Ok(p)
    }
}

/// Builds a property list for an outgoing packet.
#[derive(Default)]
pub struct PropertyWriter {
    bytes: Vec<u8>,
}

impl PropertyWriter {
    pub fn byte(&mut self, property: u8, value: u8) -> &mut Self {
        self.bytes.extend_from_slice(&[property, value]);
        self
    }

    pub fn u16(&mut self, property: u8, value: u16) -> &mut Self {
        self.bytes.push(property);
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u32(&mut self, property: u8, value: u32) -> &mut Self {
        self.bytes.push(property);
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn varint(&mut self, property: u8, value: u32) -> &mut Self {
        self.bytes.push(property);
        put_varint(&mut self.bytes, value as usize);
        self
    }

    pub fn string(&mut self, property: u8, value: &str) -> &mut Self {
        self.binary(property, value.as_bytes())
    }

    pub fn binary(&mut self, property: u8, value: &[u8]) -> &mut Self {
        self.bytes.push(property);
        put_binary(&mut self.bytes, value);
        self
    }

    pub fn user(&mut self, name: &str, value: &str) -> &mut Self {
        self.bytes.push(id::USER_PROPERTY);
        put_binary(&mut self.bytes, name.as_bytes());
        put_binary(&mut self.bytes, value.as_bytes());
        self
    }

    /// Bytes of the properties, without the length in front.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Append the property length and the properties to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        put_varint(out, self.bytes.len());
        out.extend_from_slice(&self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(build: impl FnOnce(&mut PropertyWriter)) -> Vec<u8> {
        let mut writer = PropertyWriter::default();
        build(&mut writer);
        let mut out = Vec::new();
        writer.write_to(&mut out);
        out
    }

    #[test]
    fn publish_properties_round_trip() {
        let bytes = encoded(|w| {
            w.byte(id::PAYLOAD_FORMAT, 1)
                .u32(id::MESSAGE_EXPIRY, 30)
                .string(id::CONTENT_TYPE, "text/plain")
                .string(id::RESPONSE_TOPIC, "reply/here")
                .binary(id::CORRELATION_DATA, b"42")
                .u16(id::TOPIC_ALIAS, 3)
                .user("a", "1")
                .user("a", "2");
        });
        let p = Properties::decode(&mut Reader::new(&bytes), Context::Publish).unwrap();
        assert_eq!(p.payload_format, Some(1));
        assert_eq!(p.message_expiry, Some(30));
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.response_topic.as_deref(), Some("reply/here"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"42"[..]));
        assert_eq!(p.topic_alias, Some(3));
        assert_eq!(p.user, [("a".into(), "1".into()), ("a".into(), "2".into())]);
    }

    #[test]
    fn misplaced_repeated_and_unknown_properties_are_refused() {
        let twice = encoded(|w| {
            w.u32(id::MESSAGE_EXPIRY, 1).u32(id::MESSAGE_EXPIRY, 2);
        });
        assert!(Properties::decode(&mut Reader::new(&twice), Context::Publish).is_err());
        let misplaced = encoded(|w| {
            w.varint(id::SUBSCRIPTION_ID, 5);
        });
        assert!(Properties::decode(&mut Reader::new(&misplaced), Context::Publish).is_err());
        assert!(Properties::decode(&mut Reader::new(&misplaced), Context::Subscribe).is_ok());
        let zero_id = encoded(|w| {
            w.varint(id::SUBSCRIPTION_ID, 0);
        });
        assert!(Properties::decode(&mut Reader::new(&zero_id), Context::Subscribe).is_err());
        let unknown = [2u8, 0x7f, 0];
        let error = Properties::decode(&mut Reader::new(&unknown), Context::Publish).unwrap_err();
        assert_eq!(error.code, crate::reason::PROTOCOL_ERROR);
        assert!(
            Properties::decode(&mut Reader::new(&[5u8, 0x02, 0]), Context::Publish).is_err(),
            "truncated"
        );
    }
}
