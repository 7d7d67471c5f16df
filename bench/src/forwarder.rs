//! The ceiling: a native MQTT forwarder with no guest, router, sessions or
//! store. It frames packets, answers CONNECT, SUBSCRIBE and PINGREQ, acks
//! QoS 1, and copies every PUBLISH as is to every subscriber. Whatever the
//! workloads measure on it is what the host's sockets and framing allow.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::mqtt;

/// Outgoing packets taken from the queue per socket write.
const WRITE_BATCH: usize = 256;

/// Serve on `port` until killed.
pub async fn serve(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let subscribers = Arc::new(Subscribers::default());
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        tokio::spawn(connection(socket, subscribers.clone()));
    }
}

async fn connection(socket: TcpStream, subscribers: Arc<Subscribers>) {
    let (mut read, write) = socket.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(writer(write, rx));
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            let packet = match mqtt::next_packet(&mut buf) {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(_) => return,
            };
            let reply: &[u8] = match packet.kind() {
                mqtt::CONNECT => &[0x20, 2, 0, 0],
                mqtt::SUBSCRIBE => {
                    let (id, qos) =
                        (packet.packet_id().unwrap_or(0), packet.body().last().copied().unwrap_or(0));
                    subscribers.add(tx.clone());
                    let [hi, lo] = id.to_be_bytes();
                    let _ = tx.send(Bytes::copy_from_slice(&[0x90, 3, hi, lo, qos]));
                    continue;
                }
                mqtt::PUBLISH => {
                    if let Some(id) = packet.packet_id() {
                        let [hi, lo] = id.to_be_bytes();
                        let _ = tx.send(Bytes::copy_from_slice(&[0x40, 2, hi, lo]));
                    }
                    subscribers.forward(packet.raw.freeze());
                    continue;
                }
                mqtt::PINGREQ => &[0xD0, 0],
                mqtt::DISCONNECT => return,
                _ => continue,
            };
            let _ = tx.send(Bytes::from_static(reply));
        }
        match read.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Write queued packets, as many per write as are waiting.
async fn writer(mut write: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut out = Vec::with_capacity(64 * 1024);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for packet in batch.drain(..) {
            out.extend_from_slice(&packet);
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}

/// Every subscriber's queue; a subscriber gets everything published.
#[derive(Default)]
struct Subscribers(Mutex<Vec<mpsc::UnboundedSender<Bytes>>>);

impl Subscribers {
    fn add(&self, tx: mpsc::UnboundedSender<Bytes>) {
        self.0.lock().unwrap().push(tx);
    }

    /// Queue `packet` for every subscriber, forgetting closed ones.
    fn forward(&self, packet: Bytes) {
        self.0.lock().unwrap().retain(|tx| tx.send(packet.clone()).is_ok());
    }
}
