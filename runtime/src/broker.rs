//! The broker: loads the protocols named in the config, opens the listeners,
//! and shuts everything down gracefully.
//!
//! Start-up is all-or-nothing: every component is read, pinned, compiled and
//! checked against the world before the first listener binds, so a bad
//! protocol never leaves a half-started broker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::{Config, ConfigError};
use crate::kv::Kv;
use crate::mailbox::Kick;
use crate::metrics::ProtocolMetrics;
use crate::net::listener::ListenerTask;
use crate::net::tls::{self, TlsSetupError};
use crate::retained::Retained;
use crate::router::Router;
use crate::sessions::{QueueSettings, Sessions, unix_now};
use crate::signals::ShutdownSignals;
use crate::store::{Snapshot, Store, StoreError};
use crate::wasm::breaker::Breaker;
use crate::wasm::engine::{EpochClock, MAX_FIBER_STACKS, PoolSize, build_engine, epoch_tick};
use crate::wasm::protocol::{LoadError, Protocol, ProtocolEnv, build_linker};

/// Broker version, reported to guests.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Pool slots kept beyond the listeners' caps, for `describe` at load time.
const SPARE_INSTANCES: u32 = 16;

/// State every connection shares.
pub struct BrokerCore {
    /// Subscriptions and fan-out.
    pub router: Router,
    /// Sessions by (protocol, client id).
    pub sessions: Sessions,
    /// Retained messages.
    pub retained: Retained,
    /// Where durable changes go.
    pub store: Arc<Store>,
    /// Unique id of this broker process.
    pub server_id: String,
    /// Users, access rules, failed-login backoff.
    pub auth: Auth,
    next_connection: AtomicU64,
}

impl BrokerCore {
    fn new(store: Arc<Store>, queue: QueueSettings, auth: Auth) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let server_id = format!("SP{:016X}{:08X}", nanos as u64, std::process::id());
        Self {
            router: Router::default(),
            sessions: Sessions::new(
                format!("sandport-{}", &server_id[2..10].to_ascii_lowercase()),
                store.clone(),
                queue,
            ),
            retained: Retained::default(),
            store,
            server_id,
            auth,
            next_connection: AtomicU64::new(1),
        }
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("listener `{listener}`: cannot bind {addr}: {source}")]
    Bind { listener: String, addr: SocketAddr, source: std::io::Error },
    #[error("listener `{listener}`: {source}")]
    Tls { listener: String, source: TlsSetupError },
}

/// A listener that is accepting.
#[derive(Debug, Clone)]
pub struct BoundListener {
    /// Name from the config (or the bind address).
    pub name: String,
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// Protocols served.
    pub protocols: Vec<String>,
}

/// A running broker.
pub struct Broker {
    core: Arc<BrokerCore>,
    protocols: BTreeMap<String, Arc<Protocol>>,
    listeners: Vec<BoundListener>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
    _clock: EpochClock,
}

impl Broker {
    /// Open the store, load every protocol, restore stored state, bind every
    /// listener, and start accepting.
    pub async fn start(config: &Config) -> Result<Broker, StartError> {
        let (store, mut snapshot) = Store::open(&config.storage, &config.resolve(&config.storage.data_dir))?;
        let store = Arc::new(store);
        let queue =
            QueueSettings { max: config.storage.session_queue_max, policy: config.storage.queue_full };
        let core = Arc::new(BrokerCore::new(store.clone(), queue, Auth::new(&config.auth)));
        let instances = config
            .listeners
            .iter()
            .map(|l| l.max_connections.saturating_mul(l.protocols.len() as u32))
            .fold(SPARE_INSTANCES, u32::saturating_add);
        let memory_bytes = config.protocols.values().map(|p| p.limits.memory_bytes).max().unwrap_or(1 << 20);
        if instances > MAX_FIBER_STACKS {
            tracing::info!(
                "the connection caps add up to {instances}; at most {MAX_FIBER_STACKS} connections are served at once"
            );
        }
        let (engine, layout) = build_engine(PoolSize { instances, memory_bytes })
            .map_err(|e| StartError::Engine(format!("{e:#}")))?;
        tracing::debug!(?layout, "guest memory layout");
        let linker = build_linker(&engine).map_err(|e| StartError::Engine(format!("{e:#}")))?;
        let shortest_deadline = config.protocols.values().map(|p| p.limits.call_deadline()).min();
        let tick = epoch_tick(shortest_deadline.unwrap_or(Duration::MAX));
        let clock = EpochClock::start(engine.clone(), tick).map_err(|e| StartError::Engine(e.to_string()))?;

        let mut protocols = BTreeMap::new();
        for (name, protocol_config) in &config.protocols {
            let env = ProtocolEnv {
                name: name.as_str().into(),
                limits: protocol_config.limits.clone(),
                grants: protocol_config.grants.clone(),
                kv: Arc::new(Kv::new(
                    name.as_str().into(),
                    protocol_config.grants.kv_quota_bytes,
                    store.clone(),
                )),
                metrics: ProtocolMetrics::default(),
                connections: Default::default(),
                guest_output_bytes: config.broker.guest_output_bytes,
                settings: protocol_config.settings_text(),
                breaker: Breaker::new(&protocol_config.limits),
            };
            let path = config.resolve(&protocol_config.component);
            let protocol =
                Protocol::load(&engine, &clock, &linker, env, &path, protocol_config.sha256.as_deref())
                    .await?;
            let d = &protocol.description;
            tracing::info!(
                protocol = name,
                guest = %d.name,
                version = %d.version,
                framing = ?d.framing,
                speaks_first = d.speaks_first,
                sha256 = %protocol.sha256,
                "protocol loaded"
            );
            core.sessions.register_kv(protocol.env.name.clone(), protocol.env.kv.clone());
            protocols.insert(name.clone(), Arc::new(protocol));
        }
        restore(&core, &protocols, &mut snapshot);

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut bound = Vec::new();
        let mut tasks = Vec::new();
        for listener_config in &config.listeners {
            let name = listener_config.display_name();
            let tls = match &listener_config.tls {
                Some(tls) => Some(
                    tls::acceptor(tls, |path| config.resolve(path))
                        .map_err(|source| StartError::Tls { listener: name.clone(), source })?,
                ),
                None => None,
            };
            if listener_config.allow_anonymous && !listener_config.bind.ip().is_loopback() {
                tracing::warn!(
                    listener = name,
                    addr = %listener_config.bind,
                    "listener is reachable beyond this machine and admits clients without credentials \
                     (set allow_anonymous = false and configure [[auth.users]])"
                );
            }
            let socket = TcpListener::bind(listener_config.bind).await.map_err(|source| {
                StartError::Bind { listener: name.clone(), addr: listener_config.bind, source }
            })?;
            let addr = socket.local_addr().map_err(|source| StartError::Bind {
                listener: name.clone(),
                addr: listener_config.bind,
                source,
            })?;
            let candidates = listener_config.protocols.iter().map(|p| protocols[p].clone()).collect();
            tracing::info!(listener = name, %addr, protocols = ?listener_config.protocols, "listening");
            bound.push(BoundListener {
                name: name.clone(),
                addr,
                protocols: listener_config.protocols.clone(),
            });
            tasks.push(ListenerTask::new(
                socket,
                name.into(),
                listener_config,
                tls,
                candidates,
                core.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        // Only start accepting once every listener is bound.
        for task in tasks {
            tracker.spawn(task.run());
        }
        let kvs = protocols.values().map(|p| p.env.kv.clone()).collect();
        tracker.spawn(sweep_expired(
            core.clone(),
            kvs,
            Duration::from_millis(config.storage.expiry_sweep_ms),
            shutdown.clone(),
        ));
        Ok(Broker {
            core,
            protocols,
            listeners: bound,
            shutdown,
            tracker,
            grace: Duration::from_millis(config.broker.shutdown_grace_ms),
            _clock: clock,
        })
    }

    /// The bound listeners.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// Address of the listener named `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|l| l.name == name).map(|l| l.addr)
    }

    /// Counters of protocol `name`.
    pub fn metrics(&self, name: &str) -> Option<&ProtocolMetrics> {
        self.protocols.get(name).map(|p| &p.env.metrics)
    }

    /// Shared state (router, sessions).
    pub fn core(&self) -> &Arc<BrokerCore> {
        &self.core
    }

    /// Run until one of `signals` arrives, then shut down.
    pub async fn run_until_signal(self, mut signals: ShutdownSignals) {
        signals.recv().await;
        tracing::info!("shutdown requested");
        self.shutdown().await;
    }

    /// Stop accepting, ask every connection to close, and wait up to the
    /// grace period for them.
    pub async fn shutdown(self) {
        // Cancelled first: a connection registered after the kicks below
        // sees the cancellation when it starts (`Connection::run`).
        self.shutdown.cancel();
        for protocol in self.protocols.values() {
            protocol.env.connections.kick_all(Kick::Shutdown);
        }
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                remaining = self.tracker.len(),
                "grace period over; dropping remaining connections"
            );
        }
        for (name, protocol) in &self.protocols {
            let counters: Vec<String> = protocol
                .env
                .metrics
                .snapshot()
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            tracing::info!(protocol = name, "final counters: {}", counters.join(" "));
        }
    }
}

/// Put what the store held back into the router, sessions and key-value.
fn restore(core: &BrokerCore, protocols: &BTreeMap<String, Arc<Protocol>>, snapshot: &mut Snapshot) {
    let (retained, sessions) = (snapshot.retained.len(), snapshot.sessions.len());
    core.retained.restore(std::mem::take(&mut snapshot.retained));
    core.sessions.restore(&core.router, snapshot);
    let mut by_protocol: BTreeMap<String, Vec<(String, crate::kv::KvEntry)>> = BTreeMap::new();
    for (protocol, key, entry) in std::mem::take(&mut snapshot.kv) {
        by_protocol.entry(protocol).or_default().push((key, entry));
    }
    for (protocol, entries) in by_protocol {
        match protocols.get(&protocol) {
            Some(p) => p.env.kv.restore(entries),
            None => tracing::warn!(
                protocol,
                "stored key-value data of a protocol not in the config is kept but unused"
            ),
        }
    }
    if retained + sessions > 0 {
        tracing::info!(retained, sessions, "restored from storage");
    }
}

/// Remove expired sessions and key-value entries periodically until shutdown.
async fn sweep_expired(
    core: Arc<BrokerCore>,
    kvs: Vec<Arc<Kv>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                core.sessions.sweep(&core.router, unix_now());
                for kv in &kvs {
                    kv.sweep();
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}
