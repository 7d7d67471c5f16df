//! The process signals that ask the broker to shut down (SIGINT, SIGTERM).
//!
//! Handlers are installed before the broker binds its listeners: a
//! supervisor may send SIGTERM as soon as it sees the broker listening, and a
//! signal that arrives before its handler exists would kill the process with
//! the default action instead of shutting down gracefully.

use std::io;

/// Installed shutdown-signal handlers.
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Install the handlers now. Must be called inside a tokio runtime.
    pub fn install() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(ShutdownSignals {})
        }
    }

    /// Wait for the first shutdown signal since installation.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
