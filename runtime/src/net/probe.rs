//! Choosing the protocol of a connection on a shared port.
//!
//! Each candidate guest gets its own fresh instance and is asked `probe` on
//! the bytes read so far (at most `probe_bytes`, within `probe_timeout`).
//! The highest-confidence match wins once no candidate needs more bytes; a
//! tie goes to the one listed first. If the client stays silent, a
//! speaks-first protocol (NATS greets before the client writes) wins. The
//! winner's instance serves the connection; the others are dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::wasm::bindings::types::ProbeResult;
use crate::wasm::guest::Guest;
use crate::wasm::protocol::Protocol;

/// The chosen protocol, its instance, and the bytes already read.
pub struct Chosen {
    pub protocol: Arc<Protocol>,
    pub guest: Guest,
    pub buffered: BytesMut,
}

/// Why no protocol was chosen.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no protocol matched the first {0} bytes")]
    NoMatch(usize),
    #[error("client sent nothing within {0:?} and no protocol here speaks first")]
    Silent(Duration),
    #[error("client closed the connection while probing")]
    Closed,
    #[error("read failed while probing: {0}")]
    Io(#[from] std::io::Error),
    #[error("no guest instance available: {0}")]
    Instantiate(String),
}

struct Candidate {
    protocol: Arc<Protocol>,
    guest: Guest,
    verdict: ProbeResult,
}

/// Pick the protocol for `stream` among `candidates` (in config order).
pub async fn choose(
    stream: &mut (impl AsyncRead + Unpin),
    candidates: &[Arc<Protocol>],
    connection: u64,
    probe_bytes: usize,
    probe_timeout: Duration,
) -> Result<Chosen, ProbeError> {
    if let [only] = candidates {
        let guest = only.instantiate(connection).await.map_err(|f| ProbeError::Instantiate(f.to_string()))?;
        return Ok(Chosen { protocol: only.clone(), guest, buffered: BytesMut::new() });
    }

    let mut live = Vec::with_capacity(candidates.len());
    for protocol in candidates {
        match protocol.instantiate(connection).await {
            Ok(guest) => {
                live.push(Candidate { protocol: protocol.clone(), guest, verdict: ProbeResult::NeedMore })
            }
            Err(fault) => {
                tracing::warn!(protocol = %protocol.env.name, "cannot instantiate for probing: {fault}")
            }
        }
    }
    if live.is_empty() {
        return Err(ProbeError::Instantiate("every candidate failed".into()));
    }

    let deadline = Instant::now() + probe_timeout;
    let mut buffer = BytesMut::with_capacity(probe_bytes);
    loop {
        let read = tokio::time::timeout_at(deadline, read_some(stream, &mut buffer, probe_bytes)).await;
        let timed_out = match read {
            Ok(Ok(0)) => return Err(ProbeError::Closed),
            Ok(Ok(_)) => false,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => true,
        };
        if timed_out && buffer.is_empty() {
            return pick_speaks_first(live, probe_timeout);
        }
        if !timed_out {
            ask(&mut live, &buffer).await;
        }
        let undecided = live.iter().any(|c| matches!(c.verdict, ProbeResult::NeedMore));
        if timed_out || !undecided || buffer.len() >= probe_bytes {
            return pick_best(live, buffer);
        }
    }
}

async fn read_some(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut BytesMut,
    limit: usize,
) -> std::io::Result<usize> {
    let mut chunk = vec![0u8; limit - buffer.len()];
    let n = stream.read(&mut chunk).await?;
    buffer.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Ask every undecided candidate about `prefix`; faulty guests drop out.
async fn ask(live: &mut Vec<Candidate>, prefix: &[u8]) {
    for candidate in live.iter_mut() {
        if !matches!(candidate.verdict, ProbeResult::NeedMore) {
            continue;
        }
        match candidate.guest.probe(prefix).await {
            Ok(verdict) => candidate.verdict = verdict,
            Err(fault) => {
                candidate.protocol.env.record_fault(&fault);
                tracing::warn!(protocol = %candidate.protocol.env.name, "probe failed: {fault}");
                candidate.verdict = ProbeResult::NoMatch;
            }
        }
    }
    live.retain(|c| !matches!(c.verdict, ProbeResult::NoMatch));
}

fn pick_best(live: Vec<Candidate>, buffered: BytesMut) -> Result<Chosen, ProbeError> {
    let mut best: Option<(u8, Candidate)> = None;
    for candidate in live {
        if let ProbeResult::Matched(confidence) = candidate.verdict
            && best.as_ref().is_none_or(|(b, _)| confidence > *b)
        {
            best = Some((confidence, candidate));
        }
    }
    match best {
        Some((_, c)) => Ok(Chosen { protocol: c.protocol, guest: c.guest, buffered }),
        None => Err(ProbeError::NoMatch(buffered.len())),
    }
}

fn pick_speaks_first(live: Vec<Candidate>, waited: Duration) -> Result<Chosen, ProbeError> {
    live.into_iter()
        .find(|c| c.protocol.description.speaks_first)
        .map(|c| Chosen { protocol: c.protocol, guest: c.guest, buffered: BytesMut::new() })
        .ok_or(ProbeError::Silent(waited))
}
