//! WebSocket transport (RFC 6455) for any protocol.
//!
//! The host answers the HTTP upgrade, picks a subprotocol the listener
//! accepts (`mqtt` for MQTT over WebSocket), and then bridges: the payload of
//! each binary message the client sends is written into a pipe, and whatever
//! the connection writes to the pipe goes out as a binary message. The
//! connection task reads the other end of the pipe like a TCP socket, so
//! probing, framing and guests need not know about WebSocket at all.
//!
//! Text messages are refused (MQTT-6.0.0-1: control packets travel in binary
//! frames); pings are answered by the WebSocket layer.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// Bytes buffered in the pipe between the bridge and the connection task.
const PIPE_BYTES: usize = 64 * 1024;

/// Largest chunk read from the pipe into one outgoing message.
const OUT_CHUNK: usize = 16 * 1024;

/// How long the closing handshake may take once the connection ended.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a WebSocket upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("no WebSocket upgrade within {0:?}")]
    Timeout(Duration),
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[from] tungstenite::Error),
}

/// Answer the upgrade on `stream` (TCP or TLS) within `timeout` and start
/// the bridge; returns the connection's end of the pipe and the chosen
/// subprotocol.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    subprotocols: &[String],
    max_message_bytes: usize,
    timeout: Duration,
) -> Result<(DuplexStream, Option<String>), UpgradeError> {
    let mut chosen = None;
    // The callback's signature is tungstenite's; its error is an HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let offered = offered_subprotocols(request);
        if offered.is_empty() {
            return Ok(response);
        }
        match offered.iter().find(|o| subprotocols.iter().any(|s| s.eq_ignore_ascii_case(o))) {
            Some(pick) => {
                if let Ok(value) = HeaderValue::from_str(pick) {
                    response.headers_mut().insert("sec-websocket-protocol", value);
                }
                chosen = Some(pick.clone());
                Ok(response)
            }
            None => {
                let mut refusal = ErrorResponse::new(Some(format!(
                    "none of the offered subprotocols ({}) is served here; accepted: {}",
                    offered.join(", "),
                    subprotocols.join(", ")
                )));
                *refusal.status_mut() = StatusCode::BAD_REQUEST;
                Err(refusal)
            }
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes));
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let ws = tokio::time::timeout(timeout, upgrade).await.map_err(|_| UpgradeError::Timeout(timeout))??;
    let (near, far) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(bridge(ws, far));
    Ok((near, chosen))
}

/// The subprotocols a client offers, in its order of preference.
fn offered_subprotocols(request: &Request) -> Vec<String> {
    request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Move bytes between the WebSocket and the pipe until either side ends.
async fn bridge<S: AsyncRead + AsyncWrite + Unpin + Send>(ws: WebSocketStream<S>, pipe: DuplexStream) {
    let (mut ws_out, mut ws_in) = ws.split();
    let (mut pipe_in, mut pipe_out) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(message) = ws_in.next().await {
            match message {
                Ok(Message::Binary(bytes)) => {
                    if pipe_out.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Ok(Message::Text(_)) => {
                    tracing::info!("closing WebSocket: text message where binary is required");
                    return;
                }
                Ok(Message::Close(_)) => return,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(e) => {
                    tracing::debug!("WebSocket read failed: {e}");
                    return;
                }
            }
        }
    };
    let outbound = async {
        let mut chunk = vec![0u8; OUT_CHUNK];
        loop {
            match pipe_in.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::Binary(bytes::Bytes::copy_from_slice(&chunk[..n]));
                    if ws_out.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws_out.close()).await;
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_subprotocols_are_split_and_trimmed() {
        let request = Request::builder()
            .header("Sec-WebSocket-Protocol", "mqttv3.1, mqtt")
            .header("Sec-WebSocket-Protocol", "other")
            .body(())
            .unwrap();
        assert_eq!(offered_subprotocols(&request), ["mqttv3.1", "mqtt", "other"]);
    }
}
