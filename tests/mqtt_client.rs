//! A minimal MQTT 3.1.1 and 5.0 client over a raw socket, for tests that
//! need byte-level control (malformed packets, exact flags, packet ids).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

/// Append a two-byte-length string.
pub fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A packet with `first` byte and `body`.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
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
    out.extend_from_slice(body);
    out
}

/// CONNECT with level 4.
pub fn connect(client_id: &str, keep_alive: u16, clean: bool, will: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4];
    let mut flags = if clean { 0x02 } else { 0 };
    if will.is_some() {
        flags |= 0x04;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_string(&mut body, client_id);
    if let Some((topic, message)) = will {
        put_string(&mut body, topic);
        put_string(&mut body, message);
    }
    packet(0x10, &body)
}

/// Append a variable byte integer.
pub fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        out.push(if value > 0 { byte | 0x80 } else { byte });
        if value == 0 {
            return;
        }
    }
}

/// CONNECT with level 5 and raw `properties` (without their length).
pub fn connect_v5(client_id: &str, clean: bool, properties: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, if clean { 0x02 } else { 0 }, 0, 60];
    put_varint(&mut body, properties.len());
    body.extend_from_slice(properties);
    put_string(&mut body, client_id);
    packet(0x10, &body)
}

/// A level-5 PUBLISH with raw `properties` (without their length).
pub fn publish_v5(
    topic: &str,
    qos: u8,
    packet_id: u16,
    dup: bool,
    properties: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    put_varint(&mut body, properties.len());
    body.extend_from_slice(properties);
    body.extend_from_slice(payload);
    packet(0x30 | if dup { 0x08 } else { 0 } | (qos << 1), &body)
}

/// A level-5 SUBSCRIBE to one filter with an options byte and no properties.
pub fn subscribe_v5(packet_id: u16, filter: &str, options: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(0);
    put_string(&mut body, filter);
    body.push(options);
    packet(0x82, &body)
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (`kind` 4 to 7) without reason code.
pub fn ack(kind: u8, packet_id: u16) -> Vec<u8> {
    let first = (kind << 4) | if kind == 6 { 0b0010 } else { 0 };
    packet(first, &packet_id.to_be_bytes())
}

/// SUBSCRIBE to one filter.
pub fn subscribe(packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    put_string(&mut body, filter);
    body.push(qos);
    packet(0x82, &body)
}

/// PUBLISH at QoS 0.
pub fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// PUBLISH at QoS 1 with `packet_id` (and RETAIN if asked).
pub fn publish_qos1(topic: &str, packet_id: u16, payload: &[u8], retain: bool) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, topic);
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x32 | u8::from(retain), &body)
}

/// A received PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub dup: bool,
    pub retain: bool,
    pub packet_id: Option<u16>,
}

/// A client connection.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    /// Open a TCP connection.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient { stream: TcpStream::connect(addr).await.expect("connect") }
    }

    /// Open a TCP connection whose receive buffer is tiny, so a client that
    /// does not read pushes back on the broker quickly.
    pub async fn connect_small_buffer(addr: SocketAddr) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        RawClient { stream: socket.connect(addr).await.expect("connect") }
    }

    /// Connect and complete CONNECT/CONNACK; returns the client and the session-present flag.
    pub async fn session(addr: SocketAddr, client_id: &str, clean: bool) -> (RawClient, bool) {
        let mut client = RawClient::connect(addr).await;
        client.send(&connect(client_id, 60, clean, None)).await;
        let connack = client.read(4).await;
        assert_eq!((connack[0], connack[1], connack[3]), (0x20, 2, 0), "CONNACK accepted");
        (client, connack[2] == 1)
    }

    /// Connect at level 5; returns the client and the whole CONNACK packet.
    pub async fn connect_v5(
        addr: SocketAddr,
        client_id: &str,
        clean: bool,
        properties: &[u8],
    ) -> (RawClient, Vec<u8>) {
        let mut client = RawClient::connect(addr).await;
        client.send(&connect_v5(client_id, clean, properties)).await;
        let connack = client.packet_within(WAIT).await.expect("CONNACK");
        assert_eq!((connack[0], connack.get(3)), (0x20, Some(&0)), "CONNACK accepted: {connack:?}");
        (client, connack)
    }

    /// Connect with a clean session.
    pub async fn handshake(addr: SocketAddr, client_id: &str) -> RawClient {
        Self::session(addr, client_id, true).await.0
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Read exactly `n` bytes.
    pub async fn read(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(WAIT, self.stream.read_exact(&mut buf))
            .await
            .expect("reply in time")
            .expect("reply");
        buf
    }

    /// Read one whole packet, or `None` if nothing arrives within `wait`
    /// or the server closed.
    pub async fn packet_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let mut first = [0u8; 1];
        match tokio::time::timeout(wait, self.stream.read_exact(&mut first)).await {
            Ok(Ok(_)) => {}
            _ => return None,
        }
        let mut out = vec![first[0]];
        let mut len = 0usize;
        for shift in 0..4 {
            let byte = self.read(1).await[0];
            out.push(byte);
            len |= usize::from(byte & 0x7f) << (7 * shift);
            if byte & 0x80 == 0 {
                break;
            }
        }
        out.extend(self.read(len).await);
        Some(out)
    }

    /// Read the next PUBLISH (skipping nothing: another packet type fails).
    pub async fn next_publish(&mut self, wait: Duration) -> Option<Published> {
        let packet = self.packet_within(wait).await?;
        assert_eq!(packet[0] >> 4, 3, "expected PUBLISH, got {packet:?}");
        let header = packet[0];
        let mut at = 1;
        while packet[at] & 0x80 != 0 {
            at += 1;
        }
        at += 1;
        let topic_len = usize::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
        let topic = String::from_utf8(packet[at + 2..at + 2 + topic_len].to_vec()).unwrap();
        at += 2 + topic_len;
        let qos = (header >> 1) & 3;
        let packet_id = (qos > 0).then(|| {
            let id = u16::from_be_bytes([packet[at], packet[at + 1]]);
            at += 2;
            id
        });
        Some(Published {
            topic,
            payload: packet[at..].to_vec(),
            qos,
            dup: header & 0x08 != 0,
            retain: header & 0x01 != 0,
            packet_id,
        })
    }

    /// Acknowledge a QoS 1 delivery.
    pub async fn puback(&mut self, packet_id: u16) {
        let mut ack = vec![0x40, 2];
        ack.extend_from_slice(&packet_id.to_be_bytes());
        self.send(&ack).await;
    }

    /// Wait for the server to close; returns the bytes it sent first.
    pub async fn closed(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest)).await.expect("closed in time").ok();
        rest
    }
}
