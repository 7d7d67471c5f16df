//! Why a packet ends the connection, with the MQTT 5 reason code to tell
//! the client (3.1.1 has no way to say it: the connection just closes).

use crate::reason;

/// A protocol violation; the connection is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttError {
    /// MQTT 5 reason code for the server's DISCONNECT (or CONNACK).
    pub code: u8,
    /// Text for the log and the reason string.
    pub text: String,
}

impl MqttError {
    pub fn new(code: u8, text: impl Into<String>) -> Self {
        Self { code, text: text.into() }
    }

    /// The packet cannot be parsed as the specification says (0x81).
    pub fn malformed(text: impl Into<String>) -> Self {
        Self::new(reason::MALFORMED_PACKET, text)
    }

    /// The packet parses but breaks a protocol rule (0x82).
    pub fn protocol(text: impl Into<String>) -> Self {
        Self::new(reason::PROTOCOL_ERROR, text)
    }
}

impl std::fmt::Display for MqttError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}
