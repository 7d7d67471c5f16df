//! Just enough MQTT 3.1.1 for the load clients and the native forwarder:
//! encoders for the packets they send and a reader that splits a byte stream
//! into packets without decoding more than the fixed header.

use bytes::BytesMut;

pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const PINGREQ: u8 = 12;
pub const DISCONNECT: u8 = 14;

/// Append a remaining-length varint.
fn put_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

fn put_str(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
}

/// CONNECT with a clean session and `keep_alive` seconds (0 = none).
pub fn connect(out: &mut Vec<u8>, client_id: &str, keep_alive: u16) {
    let mut body = Vec::with_capacity(16 + client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    out.push(CONNECT << 4);
    put_length(out, body.len());
    out.extend_from_slice(&body);
}

/// SUBSCRIBE to one filter.
pub fn subscribe(out: &mut Vec<u8>, packet_id: u16, filter: &str, qos: u8) {
    out.push(SUBSCRIBE << 4 | 0x02);
    put_length(out, 2 + 2 + filter.len() + 1);
    out.extend_from_slice(&packet_id.to_be_bytes());
    put_str(out, filter.as_bytes());
    out.push(qos);
}

/// PUBLISH; `packet_id` is used for QoS 1 and 2.
pub fn publish(out: &mut Vec<u8>, topic: &str, payload: &[u8], qos: u8, packet_id: u16) {
    out.push(PUBLISH << 4 | qos << 1);
    let id_len = if qos > 0 { 2 } else { 0 };
    put_length(out, 2 + topic.len() + id_len + payload.len());
    put_str(out, topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// PUBACK.
pub fn puback(out: &mut Vec<u8>, packet_id: u16) {
    out.extend_from_slice(&[PUBACK << 4, 2]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

/// DISCONNECT.
pub fn disconnect(out: &mut Vec<u8>) {
    out.extend_from_slice(&[DISCONNECT << 4, 0]);
}

/// One packet split off the stream, kept whole so it can be forwarded as is.
pub struct Packet {
    /// The packet's bytes: fixed header, remaining length, body.
    pub raw: BytesMut,
    /// Where the body starts.
    body_at: usize,
}

impl Packet {
    pub fn kind(&self) -> u8 {
        self.raw[0] >> 4
    }

    pub fn qos(&self) -> u8 {
        (self.raw[0] >> 1) & 3
    }

    pub fn body(&self) -> &[u8] {
        &self.raw[self.body_at..]
    }

    /// Packet id of a PUBACK, SUBSCRIBE, SUBACK, or of a PUBLISH with QoS > 0.
    pub fn packet_id(&self) -> Option<u16> {
        let at = match self.kind() {
            PUBLISH if self.qos() > 0 => 2 + self.topic_len(),
            PUBLISH => return None,
            _ => 0,
        };
        self.body().get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// The payload of a PUBLISH.
    pub fn payload(&self) -> &[u8] {
        let id_len = if self.qos() > 0 { 2 } else { 0 };
        self.body().get(2 + self.topic_len() + id_len..).unwrap_or_default()
    }

    fn topic_len(&self) -> usize {
        self.body().get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
}

/// Split the next complete packet off `buf`; `Err` on a malformed length.
pub fn next_packet(buf: &mut BytesMut) -> anyhow::Result<Option<Packet>> {
    let mut len = 0usize;
    let mut shift = 0;
    let mut at = 1;
    loop {
        let Some(&byte) = buf.get(at) else { return Ok(None) };
        len |= ((byte & 0x7f) as usize) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        anyhow::ensure!(shift <= 21, "malformed MQTT remaining length");
    }
    if buf.len() < at + len {
        return Ok(None);
    }
    Ok(Some(Packet { raw: buf.split_to(at + len), body_at: at }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_the_reader() {
        let mut out = Vec::new();
        publish(&mut out, "a/b", &[7; 200], 1, 42);
        publish(&mut out, "c", b"x", 0, 0);
        let mut buf = BytesMut::from(&out[..]);
        let first = next_packet(&mut buf).unwrap().unwrap();
        assert_eq!((first.kind(), first.qos(), first.packet_id()), (PUBLISH, 1, Some(42)));
        assert_eq!(first.payload(), &[7; 200]);
        let second = next_packet(&mut buf).unwrap().unwrap();
        assert_eq!((second.qos(), second.payload()), (0, &b"x"[..]));
        assert!(next_packet(&mut buf).unwrap().is_none());
    }

    #[test]
    fn a_partial_packet_waits() {
        let mut out = Vec::new();
        connect(&mut out, "client", 0);
        let mut buf = BytesMut::from(&out[..out.len() - 1]);
        assert!(next_packet(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&out[out.len() - 1..]);
        assert_eq!(next_packet(&mut buf).unwrap().unwrap().kind(), CONNECT);
    }
}
