//! Closed-loop publishing shared by the pub/sub workloads: the publisher
//! stays at most a window of messages ahead of what the subscribers have
//! received, so every server is measured at the rate it can deliver without
//! loss rather than the rate it can buffer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

/// Messages encoded into one socket write.
const WRITE_BATCH: u64 = 256;

/// Result of a throughput run.
pub struct Throughput {
    /// Messages received, over all subscribers.
    pub deliveries: u64,
    pub elapsed: Duration,
}

impl Throughput {
    pub fn deliveries_per_sec(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }
}

/// What the subscribers have received, for the publisher to pace itself.
#[derive(Default)]
pub struct Flow {
    received: AtomicU64,
    arrived: Notify,
}

impl Flow {
    /// A subscriber received `n` more messages.
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.received.fetch_add(n, Ordering::AcqRel);
            self.arrived.notify_one();
        }
    }

    /// Messages received by all subscribers together.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    /// Wait until the subscribers together have `total`, or `limit` passes.
    pub async fn wait_for(&self, total: u64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.received() < total {
            let left = deadline.saturating_duration_since(Instant::now());
            anyhow::ensure!(
                !left.is_zero(),
                "lost messages: {} of {total} deliveries arrived within {limit:?}",
                self.received()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), self.arrived.notified()).await;
        }
        Ok(())
    }
}

/// Read and drop what the server sends a publisher (acks, PINGs), so its
/// socket never fills; abort the task when done.
pub fn drain(mut read: OwnedReadHalf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sink = BytesMut::with_capacity(4096);
        while matches!(read.read_buf(&mut sink).await, Ok(n) if n > 0) {
            sink.clear();
        }
    })
}

/// Publish `total` messages, `encode(buffer, sequence)` appending one, never
/// more than `window` ahead of the slowest-on-average of `subscribers`.
pub async fn publish_windowed(
    write: &mut OwnedWriteHalf,
    flow: &Flow,
    total: u64,
    window: u64,
    subscribers: u64,
    mut encode: impl FnMut(&mut Vec<u8>, u64),
) -> anyhow::Result<()> {
    let mut sent = 0;
    let mut buffer = Vec::with_capacity(64 * 1024);
    while sent < total {
        let delivered = flow.received() / subscribers;
        let room = (delivered + window).saturating_sub(sent).min(total - sent).min(WRITE_BATCH);
        if room == 0 {
            // A permit left by an earlier notify makes this return at once,
            // so an arrival between the check and the wait is not missed.
            let _ = tokio::time::timeout(Duration::from_millis(100), flow.arrived.notified()).await;
            continue;
        }
        for sequence in sent..sent + room {
            encode(&mut buffer, sequence);
        }
        write.write_all(&buffer).await?;
        buffer.clear();
        sent += room;
    }
    Ok(())
}

/// Step of the paced publisher: short, so a step's burst is small next to
/// the latencies measured (tokio's timer cannot go below 1 ms; a thread can).
const PACE_STEP: Duration = Duration::from_micros(100);

/// Publish `total` messages at `rate` per second from a blocking thread in
/// [`PACE_STEP`]s, each stamped with the nanoseconds since `epoch` by
/// `encode(buffer, stamp)`.
pub fn publish_paced(
    mut socket: std::net::TcpStream,
    total: u64,
    rate: f64,
    epoch: Instant,
    mut encode: impl FnMut(&mut Vec<u8>, u64),
) -> std::io::Result<()> {
    use std::io::Write;
    let started = Instant::now();
    let mut sent = 0;
    let mut buffer = Vec::with_capacity(64 * 1024);
    while sent < total {
        std::thread::sleep(PACE_STEP);
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        let stamp = epoch.elapsed().as_nanos() as u64;
        for _ in sent..due {
            encode(&mut buffer, stamp);
        }
        if !buffer.is_empty() {
            socket.write_all(&buffer)?;
            buffer.clear();
        }
        sent = sent.max(due);
    }
    Ok(())
}

/// A 64-byte payload starting with `stamp`.
pub fn stamped_payload(stamp: u64) -> [u8; 64] {
    let mut payload = [b'x'; 64];
    payload[..8].copy_from_slice(&stamp.to_be_bytes());
    payload
}

/// The stamp at the start of a payload.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Latency samples in nanoseconds: (p50, p99) in microseconds.
pub fn percentiles(samples: &mut [u64]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_spread() {
        let mut samples: Vec<u64> = (1..=100).map(|us| us * 1000).collect();
        assert_eq!(percentiles(&mut samples), (51.0, 99.0));
    }

    #[test]
    fn stamps_survive_the_payload() {
        assert_eq!(read_stamp(&stamped_payload(123_456_789)), Some(123_456_789));
    }
}
