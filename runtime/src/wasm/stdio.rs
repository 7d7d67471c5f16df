//! Guest stdout and stderr: turned into log lines, bounded per connection.
//!
//! Guests have no console. What they print (a Rust panic message, say) is
//! useful to operators, so each complete line becomes a `tracing` event
//! tagged with the protocol and connection; past a byte budget the rest is
//! dropped so a chatty guest cannot flood the log.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::wasm::guest_text::GuestText;

/// Longest single log line taken from a guest.
const MAX_LINE: usize = 1024;

/// Where one guest's output stream goes.
#[derive(Clone)]
pub struct GuestOutput {
    inner: Arc<Mutex<OutputState>>,
}

struct OutputState {
    protocol: Arc<str>,
    connection: u64,
    stream: &'static str,
    line: Vec<u8>,
    budget: usize,
}

impl GuestOutput {
    /// Output for `stream` ("stdout"/"stderr") of one connection's guest.
    pub fn new(protocol: Arc<str>, connection: u64, stream: &'static str, budget: usize) -> Self {
        let state = OutputState { protocol, connection, stream, line: Vec::new(), budget };
        Self { inner: Arc::new(Mutex::new(state)) }
    }

    fn write(&self, bytes: &[u8]) {
        let mut state = self.inner.lock();
        let take = bytes.len().min(state.budget);
        state.budget -= take;
        for &byte in &bytes[..take] {
            if byte == b'\n' {
                state.emit();
            } else if state.line.len() < MAX_LINE {
                state.line.push(byte);
            }
        }
    }
}

impl OutputState {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        tracing::warn!(
            protocol = %self.protocol,
            conn = self.connection,
            stream = self.stream,
            "guest: {}",
            GuestText(&text)
        );
        self.line.clear();
    }
}

impl Drop for OutputState {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
