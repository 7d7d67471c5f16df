//! MQTT 3.1.1 workloads: publish/subscribe throughput (QoS 0 and 1, one or
//! many subscribers), latency at a fixed rate, a connection storm, and many
//! idle connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::flow::{self, Flow, Throughput};
use crate::mqtt;

const TOPIC: &str = "bench/t";

/// How long one exchange (CONNECT, SUBSCRIBE) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected client and what it has read but not yet used.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    /// Connect and complete CONNECT/CONNACK.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut client = Client { stream, buf: BytesMut::with_capacity(4096) };
        let mut out = Vec::new();
        mqtt::connect(&mut out, client_id, 0);
        client.stream.write_all(&out).await?;
        let connack = client.expect(mqtt::CONNACK).await?;
        anyhow::ensure!(connack.body().get(1) == Some(&0), "CONNACK refused: {:?}", connack.body());
        Ok(client)
    }

    /// Subscribe to `filter` and wait for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> anyhow::Result<()> {
        let mut out = Vec::new();
        mqtt::subscribe(&mut out, 1, filter, qos);
        self.stream.write_all(&out).await?;
        let suback = self.expect(mqtt::SUBACK).await?;
        anyhow::ensure!(suback.body().get(2).is_some_and(|&code| code <= 2), "SUBACK refused");
        Ok(())
    }

    async fn expect(&mut self, kind: u8) -> anyhow::Result<mqtt::Packet> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            loop {
                if let Some(packet) = mqtt::next_packet(&mut self.buf)? {
                    anyhow::ensure!(packet.kind() == kind, "expected packet {kind}, got {}", packet.kind());
                    return Ok(packet);
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    bail!("the server closed the connection");
                }
            }
        })
        .await
        .context("no answer in time")?
    }

    fn split(self) -> (Reader, OwnedWriteHalf) {
        let (read, write) = self.stream.into_split();
        (Reader { read, buf: self.buf }, write)
    }
}

struct Reader {
    read: OwnedReadHalf,
    buf: BytesMut,
}

/// What a subscriber does with each PUBLISH besides counting it.
#[derive(Clone, Copy)]
enum Record {
    Count,
    /// Keep the latency from the stamp in the payload.
    Latency(Instant),
}

/// Read PUBLISHes until `expect` have arrived, acknowledging QoS 1 ones;
/// returns the latency samples (when asked for).
async fn subscriber(
    mut reader: Reader,
    mut write: OwnedWriteHalf,
    flow: Arc<Flow>,
    expect: u64,
    record: Record,
) -> anyhow::Result<Vec<u64>> {
    let mut received = 0;
    let mut samples = Vec::new();
    let mut acks = Vec::new();
    while received < expect {
        if reader.read.read_buf(&mut reader.buf).await? == 0 {
            bail!("the server closed a subscriber after {received} of {expect} messages");
        }
        let mut batch = 0;
        while let Some(packet) = mqtt::next_packet(&mut reader.buf)? {
            if packet.kind() != mqtt::PUBLISH {
                continue;
            }
            batch += 1;
            if let Some(id) = packet.packet_id() {
                mqtt::puback(&mut acks, id);
            }
            if let Record::Latency(epoch) = record {
                let stamp = flow::read_stamp(packet.payload()).context("short payload")?;
                samples.push((epoch.elapsed().as_nanos() as u64).saturating_sub(stamp));
            }
        }
        if !acks.is_empty() {
            write.write_all(&acks).await?;
            acks.clear();
        }
        received += batch;
        flow.add(batch);
    }
    Ok(samples)
}

/// Connect `count` subscribers to `TOPIC` with `qos`; returns their halves.
async fn subscribers(
    addr: SocketAddr,
    count: usize,
    qos: u8,
) -> anyhow::Result<Vec<(Reader, OwnedWriteHalf)>> {
    let mut halves = Vec::with_capacity(count);
    for i in 0..count {
        let mut client = Client::connect(addr, &format!("bench-sub-{i}")).await?;
        client.subscribe(TOPIC, qos).await?;
        halves.push(client.split());
    }
    Ok(halves)
}

/// One publisher, `subscriber_count` subscribers, `total` 64-byte messages
/// at `qos`, the publisher at most `window` messages ahead.
pub async fn pubsub(
    addr: SocketAddr,
    subscriber_count: usize,
    total: u64,
    qos: u8,
    window: u64,
    limit: Duration,
) -> anyhow::Result<Throughput> {
    let flow = Arc::new(Flow::default());
    let mut tasks = Vec::new();
    for (reader, write) in subscribers(addr, subscriber_count, qos).await? {
        tasks.push(tokio::spawn(subscriber(reader, write, flow.clone(), total, Record::Count)));
    }
    let (reader, mut write) = Client::connect(addr, "bench-pub").await?.split();
    let drained = flow::drain(reader.read);
    let payload = flow::stamped_payload(0);
    let started = Instant::now();
    let publish =
        flow::publish_windowed(&mut write, &flow, total, window, subscriber_count as u64, |out, seq| {
            mqtt::publish(out, TOPIC, &payload, qos, (seq % 65_535) as u16 + 1)
        });
    tokio::time::timeout(limit, publish).await.context("publishing took too long")??;
    let expected = total * subscriber_count as u64;
    flow.wait_for(expected, limit).await?;
    let elapsed = started.elapsed();
    for task in tasks {
        task.await??;
    }
    drained.abort();
    Ok(Throughput { deliveries: expected, elapsed })
}

/// One publisher and one subscriber at QoS 0, `rate` messages per second
/// for `total` messages; returns latency samples in nanoseconds.
pub async fn latency(addr: SocketAddr, rate: f64, total: u64, limit: Duration) -> anyhow::Result<Vec<u64>> {
    let epoch = Instant::now();
    let flow = Arc::new(Flow::default());
    let (reader, write) = subscribers(addr, 1, 0).await?.remove(0);
    let task = tokio::spawn(subscriber(reader, write, flow.clone(), total, Record::Latency(epoch)));
    // The publisher paces itself on a thread with a blocking socket; a
    // clone of it reads and drops what the server sends back.
    let socket = Client::connect(addr, "bench-pub").await?.stream.into_std()?;
    socket.set_nonblocking(false)?;
    let mut incoming = socket.try_clone()?;
    let drained = std::thread::spawn(move || std::io::copy(&mut incoming, &mut std::io::sink()));
    let publish = tokio::task::spawn_blocking(move || {
        let result = flow::publish_paced(socket.try_clone()?, total, rate, epoch, |out, stamp| {
            mqtt::publish(out, TOPIC, &flow::stamped_payload(stamp), 0, 0)
        });
        // Closing both directions ends the reading thread.
        let _ = socket.shutdown(std::net::Shutdown::Both);
        result
    });
    tokio::time::timeout(limit, publish).await.context("publishing took too long")???;
    flow.wait_for(total, limit).await?;
    let _ = drained.join();
    task.await?
}

/// `total` connections, `concurrency` at a time, each CONNECT → CONNACK →
/// DISCONNECT; returns how long they took.
pub async fn storm(addr: SocketAddr, total: usize, concurrency: usize) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            mqtt::disconnect(&mut out);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let mut client = Client::connect(addr, &format!("storm-{i}")).await?;
                client.stream.write_all(&out).await?;
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(started.elapsed())
}

/// Open `count` connections (CONNECT without keep-alive) and hold them.
pub async fn open_idle(addr: SocketAddr, count: usize, concurrency: usize) -> anyhow::Result<Vec<Client>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut clients = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(clients);
                }
                clients.push(Client::connect(addr, &format!("idle-{i}")).await?);
            }
        }));
    }
    let mut clients = Vec::with_capacity(count);
    for worker in workers {
        clients.extend(worker.await??);
    }
    Ok(clients)
}
