//! MQTT 3.1.1 packet decoding and encoding (OASIS MQTT 3.1.1, chapter 2-3).
//!
//! The host frames packets (fixed header byte plus varint remaining length),
//! so every function here sees exactly one whole packet.

/// A decoding failure; the connection is closed with this text.
pub type DecodeError = String;

/// Packet type numbers (high nibble of the first byte).
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// Cursor over a packet's bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.bytes.get(self.at).ok_or("packet too short")?;
        self.at += 1;
        Ok(byte)
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or("packet too short")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// Binary data with a two-byte length.
    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    /// A UTF-8 string with a two-byte length; U+0000 is not allowed (1.5.3).
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let text = std::str::from_utf8(self.binary()?).map_err(|_| "string is not valid UTF-8")?;
        if text.contains('\0') {
            return Err("string contains U+0000".into());
        }
        Ok(text)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        self.at = self.bytes.len();
        rest
    }
}

/// Split a whole packet into (type, flags, body).
pub fn split(packet: &[u8]) -> Result<(u8, u8, &[u8]), DecodeError> {
    let first = *packet.first().ok_or("empty packet")?;
    let mut at = 1;
    // The host checked the length field; skip over it.
    while at < packet.len() && packet[at] & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let body = packet.get(at..).ok_or("truncated fixed header")?;
    Ok((first >> 4, first & 0x0f, body))
}

/// Append a varint remaining length.
pub fn put_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Append a packet with the given first byte and body.
pub fn put_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    put_length(out, body.len());
    out.extend_from_slice(body);
}

/// Append a two-byte-length string.
pub fn put_string(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
}

/// Parsed CONNECT payload.
pub struct Connect<'a> {
    pub protocol_name: &'a str,
    pub level: u8,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: &'a str,
    pub will: Option<Will<'a>>,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

/// Will from CONNECT.
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

/// Decode a CONNECT body (3.1).
pub fn connect(body: &[u8]) -> Result<Connect<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let protocol_name = r.string()?;
    let level = r.u8()?;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err("CONNECT reserved flag is set".into());
    }
    let keep_alive = r.u16()?;
    let client_id = r.string()?;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    if will_qos == 3 {
        return Err("will QoS 3".into());
    }
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err("will QoS or retain set without a will".into());
    }
    let will = if will_flag {
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will { topic, payload, qos: will_qos, retain: will_retain })
    } else {
        None
    };
    let has_username = flags & 0x80 != 0;
    let has_password = flags & 0x40 != 0;
    if has_password && !has_username && level <= 4 {
        return Err("password without a user name".into());
    }
    let username = if has_username { Some(r.string()?) } else { None };
    let password = if has_password { Some(r.binary()?) } else { None };
    if !r.is_empty() {
        return Err("bytes after the CONNECT payload".into());
    }
    Ok(Connect {
        protocol_name,
        level,
        clean_session: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_round_trip() {
        for len in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455] {
            let mut out = Vec::new();
            put_packet(&mut out, 0x30, &vec![0; len]);
            let (kind, flags, body) = split(&out).unwrap();
            assert_eq!((kind, flags, body.len()), (3, 0, len));
        }
    }

    #[test]
    fn connect_with_will_and_credentials() {
        let mut body = Vec::new();
        put_string(&mut body, b"MQTT");
        body.extend_from_slice(&[4, 0b1110_0110, 0, 60]);
        put_string(&mut body, b"client");
        put_string(&mut body, b"will/topic");
        put_string(&mut body, b"bye");
        put_string(&mut body, b"user");
        put_string(&mut body, b"pass");
        let c = connect(&body).unwrap();
        assert_eq!((c.level, c.keep_alive, c.client_id, c.clean_session), (4, 60, "client", true));
        let will = c.will.unwrap();
        assert_eq!((will.topic, will.payload, will.qos, will.retain), ("will/topic", &b"bye"[..], 0, true));
        assert_eq!((c.username, c.password), (Some("user"), Some(&b"pass"[..])));
    }

    #[test]
    fn malformed_connects_are_refused() {
        let mut body = Vec::new();
        put_string(&mut body, b"MQTT");
        body.extend_from_slice(&[4, 0b0000_0011, 0, 60]);
        put_string(&mut body, b"c");
        assert!(connect(&body).is_err(), "reserved flag");
        assert!(connect(&body[..5]).is_err(), "truncated");
    }
}
