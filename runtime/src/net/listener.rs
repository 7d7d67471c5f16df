//! Accept loop of one listener.
//!
//! A permit is taken before `accept`, so at the connection cap new clients
//! wait in the kernel backlog instead of costing the broker memory. Accept
//! errors (such as running out of file descriptors) back off briefly rather
//! than spin.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerCore;
use crate::config;
use crate::net::connection::{self, ListenerInfo};
use crate::wasm::protocol::Protocol;

/// Pause after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One listener's accept loop.
pub struct ListenerTask {
    socket: TcpListener,
    info: Arc<ListenerInfo>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl ListenerTask {
    /// A task accepting on `socket` for the protocols in `candidates`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        socket: TcpListener,
        name: Arc<str>,
        config: &config::Listener,
        tls: Option<TlsAcceptor>,
        candidates: Vec<Arc<Protocol>>,
        core: Arc<BrokerCore>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let info = Arc::new(ListenerInfo {
            name,
            probe_bytes: config.probe_bytes,
            probe_timeout: config.probe_timeout(),
            transport: config.transport,
            tls,
            allow_anonymous: config.allow_anonymous,
            subprotocols: config
                .subprotocols
                .clone()
                .unwrap_or_else(|| candidates.iter().map(|p| p.description.name.clone()).collect()),
            candidates,
            core,
            shutdown: shutdown.clone(),
        });
        let permits = Arc::new(Semaphore::new(config.max_connections as usize));
        Self { socket, info, permits, shutdown, tracker }
    }

    /// Accept until shutdown.
    pub async fn run(self) {
        loop {
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return, // semaphore closed: never happens, but do not spin
                },
                _ = self.shutdown.cancelled() => return,
            };
            let accepted = tokio::select! {
                accepted = self.socket.accept() => accepted,
                _ = self.shutdown.cancelled() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
                    }
                    let info = self.info.clone();
                    self.tracker.spawn(async move {
                        connection::serve(info, stream, peer).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(listener = %self.info.name, "accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}
