//! Loading a protocol guest: pin check, compile, world check, describe.
//!
//! Everything that can be wrong with a component is found here, before any
//! listener opens: the file, its sha256 pin, its imports (only the allowed
//! world), its exports, and the framing it declares.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::config::{Grants, Limits};
use crate::kv::Kv;
use crate::metrics::ProtocolMetrics;
use crate::net::framing::{self, Framing};
use crate::registry::ConnectionRegistry;
use crate::wasm::bindings::{Protocol as World, ProtocolPre as WorldPre};
use crate::wasm::breaker::{Breaker, Tripped};
use crate::wasm::engine::EpochClock;
use crate::wasm::guest::{Fault, Guest};
use crate::wasm::state::GuestState;
use crate::wasm::world;

/// Longest protocol name a guest may report.
const MAX_PROTOCOL_NAME: usize = 64;

/// Most setting names a guest may declare.
const MAX_SETTINGS: usize = 64;

/// Everything host calls need to know about a protocol, shared by all its
/// connections.
pub struct ProtocolEnv {
    /// Name from the config (`[protocols.NAME]`).
    pub name: Arc<str>,
    /// Resource limits.
    pub limits: Limits,
    /// What its guests may do.
    pub grants: Grants,
    /// Its key-value store.
    pub kv: Arc<Kv>,
    /// Its counters.
    pub metrics: ProtocolMetrics,
    /// Its open connections.
    pub connections: ConnectionRegistry,
    /// Log bytes a guest may print per connection.
    pub guest_output_bytes: usize,
    /// `[protocols.NAME.settings]` as name/value text.
    pub settings: Vec<(String, String)>,
    /// Refuses new connections while the guest keeps faulting.
    pub breaker: Breaker,
}

impl ProtocolEnv {
    /// Count a guest fault and feed the crash-loop breaker.
    pub fn record_fault(&self, fault: &Fault) {
        ProtocolMetrics::bump(fault.counter(&self.metrics));
        if let Tripped::Open(backoff) = self.breaker.fault(std::time::Instant::now()) {
            ProtocolMetrics::bump(&self.metrics.breaker_trips);
            tracing::warn!(
                protocol = %self.name,
                backoff_ms = backoff.as_millis() as u64,
                "crash-loop breaker tripped: {} guest faults within {} ms; new connections are refused until the backoff ends",
                self.limits.max_faults,
                self.limits.fault_window_ms
            );
        }
    }
}

/// What `describe` returned, validated.
#[derive(Debug, Clone)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub framing: Framing,
    pub speaks_first: bool,
    /// Setting names the guest understands.
    pub settings: Vec<String>,
}

/// A loaded protocol, ready to serve connections.
pub struct Protocol {
    /// Shared host-side state.
    pub env: Arc<ProtocolEnv>,
    /// The guest's own description.
    pub description: Description,
    /// Hex sha256 of the component file.
    pub sha256: String,
    /// The component's imports, all within the allowed world.
    pub imports: Vec<String>,
    /// Connection permits (`limits.max_connections`).
    pub permits: Arc<Semaphore>,
    engine: Engine,
    pre: WorldPre<GuestState>,
    deadline_ticks: u32,
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("protocol `{protocol}`: cannot read component {}: {source}", path.display())]
    Read { protocol: String, path: PathBuf, source: std::io::Error },
    #[error("protocol `{protocol}`: {} has sha256 {actual}, but the config pins {expected}", path.display())]
    PinMismatch { protocol: String, path: PathBuf, expected: String, actual: String },
    #[error("protocol `{protocol}`: {} is not a valid component: {message}", path.display())]
    Compile { protocol: String, path: PathBuf, message: String },
    #[error(
        "protocol `{protocol}`: {} imports {}, outside the sandport:protocol world \
         (guests may import sandport:protocol/host and WASI 0.2's cli, io, random, filesystem \
         and sockets, and its clocks when granted)",
        path.display(),
        imports.join(", ")
    )]
    ForbiddenImport { protocol: String, path: PathBuf, imports: Vec<String> },
    #[error(
        "protocol `{protocol}`: {} imports {}, which it may use only when granted: \
         set `protocols.{protocol}.grants.clocks = true`",
        path.display(),
        imports.join(", ")
    )]
    UngrantedClocks { protocol: String, path: PathBuf, imports: Vec<String> },
    #[error("protocol `{protocol}`: {} does not export `{}`", path.display(), world::HANDLER_EXPORT)]
    MissingExport { protocol: String, path: PathBuf },
    #[error("protocol `{protocol}`: {} does not fit the sandport:protocol world: {message}", path.display())]
    Link { protocol: String, path: PathBuf, message: String },
    #[error("protocol `{protocol}`: describe() failed: {message}")]
    Describe { protocol: String, message: String },
    #[error(
        "protocol `{protocol}`: unknown setting `protocols.{protocol}.settings.{setting}` (the guest understands: {})",
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )]
    UnknownSetting { protocol: String, setting: String, known: Vec<String> },
}

/// The linker every guest is instantiated with: WASI (restricted by the
/// import check) and the sandport host interface.
pub fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<GuestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    World::add_to_linker::<GuestState, HasSelf<GuestState>>(&mut linker, |state| state)?;
    crate::wasm::borrowed::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Protocol {
    /// Load the component at `path` for protocol `env.name`, checking `pin`
    /// first; `clock` sets the unit of its call deadline.
    pub async fn load(
        engine: &Engine,
        clock: &EpochClock,
        linker: &Linker<GuestState>,
        env: ProtocolEnv,
        path: &Path,
        pin: Option<&str>,
    ) -> Result<Self, LoadError> {
        let protocol = env.name.to_string();
        let path_buf = path.to_owned();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            protocol: protocol.clone(),
            path: path_buf.clone(),
            source,
        })?;
        let sha256 = sha256_hex(&bytes);
        if let Some(expected) = pin
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(LoadError::PinMismatch {
                protocol,
                path: path_buf,
                expected: expected.to_ascii_lowercase(),
                actual: sha256,
            });
        }
        let component = Component::from_binary(engine, &bytes).map_err(|e| LoadError::Compile {
            protocol: protocol.clone(),
            path: path_buf.clone(),
            message: format!("{e:#}"),
        })?;
        let imports = world::imports(engine, &component);
        let refused = world::refused_imports(&imports, &env.grants);
        if !refused.forbidden.is_empty() {
            return Err(LoadError::ForbiddenImport { protocol, path: path_buf, imports: refused.forbidden });
        }
        if !refused.ungranted.is_empty() {
            return Err(LoadError::UngrantedClocks { protocol, path: path_buf, imports: refused.ungranted });
        }
        if !world::exports_handler(engine, &component) {
            return Err(LoadError::MissingExport { protocol, path: path_buf });
        }
        let link_error = |e: wasmtime::Error| LoadError::Link {
            protocol: protocol.clone(),
            path: path_buf.clone(),
            message: format!("{e:#}"),
        };
        let pre =
            WorldPre::new(linker.instantiate_pre(&component).map_err(link_error)?).map_err(link_error)?;

        let env = Arc::new(env);
        let mut protocol = Self {
            permits: Arc::new(Semaphore::new(env.limits.max_connections as usize)),
            deadline_ticks: clock.deadline_ticks(env.limits.call_deadline()),
            env,
            description: Description {
                name: String::new(),
                version: String::new(),
                framing: Framing::Guest,
                speaks_first: false,
                settings: Vec::new(),
            },
            sha256,
            imports,
            engine: engine.clone(),
            pre,
        };
        protocol.description = protocol.describe().await?;
        let known = &protocol.description.settings;
        if let Some((setting, _)) = protocol.env.settings.iter().find(|(name, _)| !known.contains(name)) {
            return Err(LoadError::UnknownSetting {
                protocol: protocol.env.name.to_string(),
                setting: setting.clone(),
                known: known.clone(),
            });
        }
        Ok(protocol)
    }

    /// Call the guest's `describe` in a fresh instance and validate it.
    async fn describe(&self) -> Result<Description, LoadError> {
        let describe_error =
            |message: String| LoadError::Describe { protocol: self.env.name.to_string(), message };
        let mut guest = self.instantiate(0).await.map_err(|f| describe_error(f.to_string()))?;
        let info = guest.describe().await.map_err(|f| describe_error(f.to_string()))?;
        if info.name.is_empty() || info.name.len() > MAX_PROTOCOL_NAME {
            return Err(describe_error(format!("name must be 1 to {MAX_PROTOCOL_NAME} bytes")));
        }
        let framing = framing::from_declared(&info.framing).map_err(|e| describe_error(e.to_string()))?;
        let mut version = info.version;
        version.truncate(version.floor_char_boundary(MAX_PROTOCOL_NAME));
        if info.settings.len() > MAX_SETTINGS || info.settings.iter().any(|s| s.len() > MAX_PROTOCOL_NAME) {
            return Err(describe_error(format!(
                "at most {MAX_SETTINGS} settings of 1 to {MAX_PROTOCOL_NAME} bytes"
            )));
        }
        Ok(Description {
            name: info.name,
            version,
            framing,
            speaks_first: info.speaks_first,
            settings: info.settings,
        })
    }

    /// A fresh guest instance for connection `connection` (0 = none yet).
    pub async fn instantiate(&self, connection: u64) -> Result<Guest, Fault> {
        Guest::instantiate(
            &self.engine,
            &self.pre,
            GuestState::new(self.env.clone(), connection),
            self.deadline_ticks,
        )
        .await
    }
}
