//! NATS core workload: one publisher, one subscriber, 64-byte messages,
//! spoken raw so the client costs the same against every server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::flow::{self, Flow, Throughput};

const SUBJECT: &str = "bench.t";

/// Connect, skip INFO, send CONNECT and wait for the PONG of a PING.
async fn connect(addr: SocketAddr, then: &str) -> anyhow::Result<(OwnedReadHalf, OwnedWriteHalf, BytesMut)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.into_split();
    let hello = format!("CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\n{then}PING\r\n");
    write.write_all(hello.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(at) = find(&buf, b"PONG\r\n") {
                buf.advance(at + 6);
                return anyhow::Ok(());
            }
            if let Some(at) = find(&buf, b"-ERR") {
                bail!("server refused: {}", String::from_utf8_lossy(&buf[at..]));
            }
            if read.read_buf(&mut buf).await? == 0 {
                bail!("the server closed the connection");
            }
        }
    })
    .await
    .context("no PONG in time")??;
    Ok((read, write, buf))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Count the MSGs in `buf`, leaving a partial one; answers PINGs into `pongs`.
fn count_messages(buf: &mut BytesMut, pongs: &mut Vec<u8>) -> anyhow::Result<u64> {
    let mut count = 0;
    while let Some(end) = find(buf, b"\r\n") {
        let line = &buf[..end];
        if line.starts_with(b"MSG ") {
            let size: usize = std::str::from_utf8(line)?
                .rsplit(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .context("MSG without a size")?;
            if buf.len() < end + 2 + size + 2 {
                break;
            }
            buf.advance(end + 2 + size + 2);
            count += 1;
            continue;
        }
        if line.starts_with(b"-ERR") {
            bail!("server error: {}", String::from_utf8_lossy(line));
        }
        if line == b"PING" {
            pongs.extend_from_slice(b"PONG\r\n");
        }
        buf.advance(end + 2);
    }
    Ok(count)
}

/// `total` 64-byte messages from one publisher to one subscriber.
pub async fn pubsub(
    addr: SocketAddr,
    total: u64,
    window: u64,
    limit: Duration,
) -> anyhow::Result<Throughput> {
    let flow = Arc::new(Flow::default());
    let (mut read, mut sub_write, mut buf) = connect(addr, &format!("SUB {SUBJECT} 1\r\n")).await?;
    let counted = flow.clone();
    let subscriber = tokio::spawn(async move {
        let mut received = 0;
        let mut pongs = Vec::new();
        while received < total {
            let n = count_messages(&mut buf, &mut pongs)?;
            received += n;
            counted.add(n);
            if !pongs.is_empty() {
                sub_write.write_all(&pongs).await?;
                pongs.clear();
            }
            if received < total && read.read_buf(&mut buf).await? == 0 {
                bail!("the server closed the subscriber after {received} of {total} messages");
            }
        }
        anyhow::Ok(())
    });
    let (pub_read, mut write, _) = connect(addr, "").await?;
    let drained = flow::drain(pub_read);
    let payload = flow::stamped_payload(0);
    let started = Instant::now();
    let header = format!("PUB {SUBJECT} {}\r\n", payload.len());
    let publish = flow::publish_windowed(&mut write, &flow, total, window, 1, |out, _| {
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(b"\r\n");
    });
    tokio::time::timeout(limit, publish).await.context("publishing took too long")??;
    flow.wait_for(total, limit).await?;
    let elapsed = started.elapsed();
    subscriber.await??;
    drained.abort();
    Ok(Throughput { deliveries: total, elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_whole() {
        let mut buf = BytesMut::from(&b"MSG a 1 3\r\nabc\r\nPING\r\nMSG a 1 3\r\nab"[..]);
        let mut pongs = Vec::new();
        assert_eq!(count_messages(&mut buf, &mut pongs).unwrap(), 1);
        assert_eq!(pongs, b"PONG\r\n");
        buf.extend_from_slice(b"c\r\n");
        assert_eq!(count_messages(&mut buf, &mut pongs).unwrap(), 1);
        assert!(buf.is_empty());
    }
}
