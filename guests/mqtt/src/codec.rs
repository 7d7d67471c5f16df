//! MQTT data representations (3.1.1 chapter 1.5, 5.0 chapter 1.5): the
//! cursor that reads them and the functions that write them.
//!
//! The host frames packets (fixed header byte plus varint remaining length),
//! so every decoder here sees exactly one whole packet.

use crate::error::MqttError;

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
    pub const AUTH: u8 = 15;
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

    pub fn u8(&mut self) -> Result<u8, MqttError> {
        let byte = *self.bytes.get(self.at).ok_or_else(|| MqttError::malformed("packet too short"))?;
        self.at += 1;
        Ok(byte)
    }

    pub fn u16(&mut self) -> Result<u16, MqttError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    pub fn u32(&mut self) -> Result<u32, MqttError> {
        Ok(u32::from_be_bytes([self.u8()?, self.u8()?, self.u8()?, self.u8()?]))
    }

    /// A variable byte integer of at most four bytes, minimally encoded or not.
    pub fn varint(&mut self) -> Result<u32, MqttError> {
        let mut value = 0u32;
        for shift in [0, 7, 14, 21] {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(MqttError::malformed("variable byte integer longer than four bytes"))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], MqttError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| MqttError::malformed("packet too short"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// Binary data with a two-byte length.
    pub fn binary(&mut self) -> Result<&'a [u8], MqttError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    /// A UTF-8 string with a two-byte length; U+0000 is not allowed (1.5.3).
    pub fn string(&mut self) -> Result<&'a str, MqttError> {
        let text = std::str::from_utf8(self.binary()?)
            .map_err(|_| MqttError::malformed("string is not valid UTF-8"))?;
        if text.contains('\0') {
            return Err(MqttError::malformed("string contains U+0000"));
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
pub fn split(packet: &[u8]) -> Result<(u8, u8, &[u8]), MqttError> {
    let first = *packet.first().ok_or_else(|| MqttError::malformed("empty packet"))?;
    let mut at = 1;
    // The host checked the length field; skip over it.
    while at < packet.len() && packet[at] & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let body = packet.get(at..).ok_or_else(|| MqttError::malformed("truncated fixed header"))?;
    Ok((first >> 4, first & 0x0f, body))
}

/// Append a variable byte integer.
pub fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

/// Bytes a variable byte integer of `value` takes.
pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Append a packet with the given first byte and body.
pub fn put_packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    put_varint(out, body.len());
    out.extend_from_slice(body);
}

/// Append two-byte-length binary data (a string is the same on the wire).
pub fn put_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for value in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            assert_eq!(Reader::new(&out).varint().unwrap() as usize, value);
        }
        assert!(Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x01]).varint().is_err());
    }

    #[test]
    fn packets_split_after_their_length_field() {
        for len in [0usize, 127, 128, 16_383, 16_384] {
            let mut out = Vec::new();
            put_packet(&mut out, 0x30, &vec![0; len]);
            let (kind, flags, body) = split(&out).unwrap();
            assert_eq!((kind, flags, body.len()), (3, 0, len));
        }
    }

    #[test]
    fn strings_refuse_bad_utf8_and_nul() {
        assert!(Reader::new(b"\x00\x02\xc3\x28").string().is_err());
        assert!(Reader::new(b"\x00\x01\x00").string().is_err());
        assert!(Reader::new(b"\x00\x05ab").string().is_err());
        assert_eq!(Reader::new(b"\x00\x02ab").string().unwrap(), "ab");
    }
}
