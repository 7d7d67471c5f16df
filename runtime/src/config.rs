//! The broker config file: its schema, defaults and validation.
//!
//! The file is TOML. Every table rejects unknown keys, and every error names
//! the file and the key (TOML syntax and type errors come with the line from
//! the `toml` crate; cross-reference errors name the key path themselves).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::topic;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Broker-wide settings.
    #[serde(default)]
    pub broker: BrokerSettings,
    /// Where and how messages are stored.
    #[serde(default)]
    pub storage: Storage,
    /// Sockets the broker accepts on.
    #[serde(default, rename = "listeners")]
    pub listeners: Vec<Listener>,
    /// Protocol guests by name.
    #[serde(default)]
    pub protocols: BTreeMap<String, ProtocolConfig>,
    /// Users, their access rules, and what anonymous clients may do.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Directory relative paths are resolved against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[broker]`: settings that are not per protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// How long shutdown waits for connections to finish, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Bytes of stdout/stderr a guest may write per connection before the rest is dropped.
    pub guest_output_bytes: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self { shutdown_grace_ms: 5_000, guest_output_bytes: 16 * 1024 }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Storage engine.
    pub engine: StorageEngine,
    /// Directory of the embedded database, relative to the config file. It
    /// must exist: a missing directory is an error, never a silent reset.
    pub data_dir: PathBuf,
    /// fsync every commit. Off trades durability on power loss for speed.
    pub fsync: bool,
    /// Extra wait, in microseconds, before a commit to gather more changes
    /// into it (group commit). Changes arriving during a commit always share
    /// the next one.
    pub commit_delay_us: u64,
    /// Most at-least-once deliveries queued per session.
    pub session_queue_max: usize,
    /// What happens when a session's queue is full.
    pub queue_full: QueueFullPolicy,
    /// How often expired sessions are removed, in milliseconds.
    pub expiry_sweep_ms: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            engine: StorageEngine::Embedded,
            data_dir: PathBuf::from("data"),
            fsync: true,
            commit_delay_us: 0,
            session_queue_max: 10_000,
            queue_full: QueueFullPolicy::DropOldest,
            expiry_sweep_ms: 1_000,
        }
    }
}

/// Storage engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageEngine {
    /// A redb database file under `data_dir`.
    Embedded,
    /// Everything in memory; nothing survives a restart.
    Memory,
}

/// Policy for a full session queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueFullPolicy {
    /// Drop the oldest queued delivery to make room.
    DropOldest,
    /// Drop the new delivery.
    Refuse,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Name used in logs and passed to guests; defaults to the bind address.
    #[serde(default)]
    pub name: Option<String>,
    /// Address to bind, e.g. `127.0.0.1:1883`.
    pub bind: SocketAddr,
    /// Protocols served here. With more than one the host probes each connection.
    pub protocols: Vec<String>,
    /// Most connections open on this listener; further clients wait in the
    /// kernel's backlog (a permit is taken before `accept`).
    #[serde(default = "default_listener_connections")]
    pub max_connections: u32,
    /// Most bytes read while probing for the protocol.
    #[serde(default = "default_probe_bytes")]
    pub probe_bytes: usize,
    /// How long to wait for probe bytes; after this silence a speaks-first
    /// protocol wins, or the connection is closed.
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// What carries the protocol's bytes on this listener.
    #[serde(default)]
    pub transport: ListenerTransport,
    /// WebSocket subprotocols accepted in the handshake (for example
    /// `mqtt`); default: the names of the listener's protocols.
    #[serde(default)]
    pub subprotocols: Option<Vec<String>>,
    /// Admit clients that present no credentials (under `[auth.anonymous]`).
    #[serde(default = "default_true")]
    pub allow_anonymous: bool,
    /// TLS on this listener (under WebSocket too, when both are set).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_true() -> bool {
    true
}

/// `[listeners.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates are checked against;
    /// a verified client certificate's common name becomes the user.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate (needs `client_ca`).
    #[serde(default)]
    pub require_client_cert: bool,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Users defined in the config (`[[auth.users]]`).
    pub users: Vec<UserConfig>,
    /// A TOML file of `[[users]]` entries, relative to the config file.
    pub users_file: Option<PathBuf>,
    /// What clients without credentials may do, where a listener admits them.
    pub anonymous: AclConfig,
    /// Failed authentications from one address before it must wait.
    pub max_failures: u32,
    /// First wait after `max_failures`; doubles with each further failure.
    pub backoff_initial_ms: u64,
    /// Longest wait.
    pub backoff_max_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            users_file: None,
            anonymous: AclConfig::default(),
            max_failures: 5,
            backoff_initial_ms: 1000,
            backoff_max_ms: 60_000,
        }
    }
}

/// One user (`[[auth.users]]`, or `[[users]]` in a users file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user name clients give (MQTT user name, NATS user, Redis user;
    /// Redis `AUTH password` alone means user `default`).
    pub name: String,
    /// Argon2id PHC string from `sandport passwd`.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Argon2id PHC string of a bearer token (NATS `auth_token`).
    #[serde(default)]
    pub token_hash: Option<String>,
    /// Topics the user may publish to; `#` when absent.
    #[serde(default = "everything")]
    pub publish: Vec<String>,
    /// Filters within which the user may subscribe; `#` when absent.
    #[serde(default = "everything")]
    pub subscribe: Vec<String>,
}

fn everything() -> Vec<String> {
    vec!["#".into()]
}

impl UserConfig {
    /// The user's access rules.
    pub fn acl(&self) -> AclConfig {
        AclConfig { publish: self.publish.clone(), subscribe: self.subscribe.clone() }
    }
}

/// Topic access rules: canonical filters in which `%u` stands for the user
/// name and `%c` for the client id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// Topics the client may publish to (and name in a will).
    pub publish: Vec<String>,
    /// Filters within which the client may subscribe, and topics it may receive.
    pub subscribe: Vec<String>,
}

impl Default for AclConfig {
    fn default() -> Self {
        Self { publish: everything(), subscribe: everything() }
    }
}

/// A users file: `[[users]]` entries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserConfig>,
}

/// `transport` of a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerTransport {
    /// The protocol's bytes straight on the TCP connection.
    #[default]
    Tcp,
    /// An HTTP upgrade to WebSocket (RFC 6455); the protocol's bytes travel in
    /// binary messages.
    Websocket,
}

fn default_listener_connections() -> u32 {
    10_000
}

fn default_probe_bytes() -> usize {
    64
}

fn default_probe_timeout_ms() -> u64 {
    2_000
}

impl Listener {
    /// The listener's name for logs.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.bind.to_string())
    }

    /// The probe timeout.
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }
}

/// One `[protocols.NAME]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Path of the component, relative to the config file.
    pub component: PathBuf,
    /// Expected sha256 of the component file, hex. Checked before compiling.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// What the guest may do.
    #[serde(default)]
    pub grants: Grants,
    /// Protocol-specific settings passed to every connection's guest
    /// (`connection-info.settings`). Only the names the guest lists in
    /// `describe` are accepted; values are strings, numbers or booleans.
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

impl ProtocolConfig {
    /// The settings as name/value text, in name order.
    pub fn settings_text(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
            .collect()
    }
}

/// `[protocols.NAME.limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most simultaneous connections of this protocol.
    pub max_connections: u32,
    /// Most linear memory one guest instance may grow to.
    pub memory_bytes: usize,
    /// Longest a single guest call may run, in milliseconds.
    pub call_deadline_ms: u64,
    /// Largest inbound frame; refused from its header, before it is buffered.
    pub max_frame_bytes: u32,
    /// Most bytes of deliveries queued towards one client, and most bytes a
    /// guest may send in one call. Beyond it at-most-once deliveries are
    /// dropped, an at-least-once one closes a slow consumer, and a guest that
    /// sends more is stopped.
    pub outbound_buffer_bytes: usize,
    /// Most bytes a guest may pass to the host in one call (publish payloads,
    /// topics, keys), against floods.
    pub call_input_bytes: usize,
    /// Longest a started frame may take to arrive completely (against
    /// clients that trickle bytes to hold connections open).
    pub frame_timeout_ms: u64,
    /// Guest faults (traps, deadlines, memory, violations) within
    /// `fault_window_ms` that trip the crash-loop breaker.
    pub max_faults: u32,
    pub fault_window_ms: u64,
    /// How long a tripped breaker refuses new connections of the protocol.
    pub fault_backoff_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            memory_bytes: 16 * 1024 * 1024,
            call_deadline_ms: 100,
            max_frame_bytes: 1024 * 1024,
            outbound_buffer_bytes: 4 * 1024 * 1024,
            call_input_bytes: 16 * 1024 * 1024,
            frame_timeout_ms: 30_000,
            max_faults: 20,
            fault_window_ms: 10_000,
            fault_backoff_ms: 30_000,
        }
    }
}

impl Limits {
    /// The per-call deadline.
    pub fn call_deadline(&self) -> Duration {
        Duration::from_millis(self.call_deadline_ms)
    }
}

/// `[protocols.NAME.grants]`: what the guest may do beyond its own
/// instance: the canonical topic filters it may use, its key-value quota,
/// and whether it may read the clocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    /// A publish topic must match one of these filters.
    pub publish: Vec<String>,
    /// A subscription filter must be covered by one of these filters.
    pub subscribe: Vec<String>,
    /// Bytes of key-value data the protocol may keep (keys plus values).
    pub kv_quota_bytes: usize,
    /// Whether the guest may import `wasi:clocks` (the wall clock, and a
    /// monotonic clock it can also wait on). Without it a component that
    /// imports them is refused at load.
    pub clocks: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
            kv_quota_bytes: 1024 * 1024,
            clocks: false,
        }
    }
}

/// Check user entries; `key` is where they sit (`auth.users` or `users`).
fn validate_users(users: &[UserConfig], key: &str) -> Result<(), (String, String)> {
    let mut names = std::collections::HashSet::new();
    for (i, user) in users.iter().enumerate() {
        let at = |field: &str| format!("{key}[{i}].{field}");
        if user.name.is_empty() || user.name.contains(['/', '+', '#', '\0']) || user.name == "anonymous" {
            return Err((at("name"), "must be non-empty, without / + # or NUL, and not `anonymous`".into()));
        }
        if !names.insert(user.name.as_str()) {
            return Err((at("name"), format!("user `{}` is defined twice", user.name)));
        }
        for (field, hash) in [("password_hash", &user.password_hash), ("token_hash", &user.token_hash)] {
            if let Some(hash) = hash
                && let Err(e) = crate::auth::password::check_phc(hash)
            {
                return Err((at(field), e));
            }
        }
        validate_acl(&user.acl(), &format!("{key}[{i}]"))?;
    }
    Ok(())
}

/// Check access rules: each must be a valid filter once `%u`/`%c` are filled in.
fn validate_acl(acl: &AclConfig, key: &str) -> Result<(), (String, String)> {
    for (field, patterns) in [("publish", &acl.publish), ("subscribe", &acl.subscribe)] {
        for (j, pattern) in patterns.iter().enumerate() {
            let filled = pattern.replace("%u", "user").replace("%c", "client");
            if let Err(e) = topic::validate_filter(&filled) {
                return Err((
                    format!("{key}.{field}[{j}]"),
                    format!("`{pattern}` is not a valid filter: {e}"),
                ));
            }
        }
    }
    Ok(())
}

/// A config file that cannot be used. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Self::parse(&text, path, base_dir)
    }

    /// Parse and validate config text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path, base_dir: PathBuf) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), source: Box::new(e) })?;
        config.base_dir = base_dir;
        config.validate().map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        })?;
        if let Some(file) = config.auth.users_file.clone() {
            let file = config.resolve(&file);
            let text = std::fs::read_to_string(&file)
                .map_err(|source| ConfigError::Read { path: file.clone(), source })?;
            let users: UsersFile = toml::from_str(&text)
                .map_err(|e| ConfigError::Parse { path: file.clone(), source: Box::new(e) })?;
            validate_users(&users.users, "users").map_err(|(key, message)| ConfigError::Invalid {
                path: file.clone(),
                key,
                message,
            })?;
            config.auth.users.extend(users.users);
            let mut names = std::collections::HashSet::new();
            if let Some(user) = config.auth.users.iter().find(|u| !names.insert(u.name.as_str())) {
                return Err(ConfigError::Invalid {
                    path: file,
                    key: "users".into(),
                    message: format!("user `{}` is defined twice (here and in the config)", user.name),
                });
            }
        }
        Ok(config)
    }

    /// Resolve a path from the config against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_owned() } else { self.base_dir.join(path) }
    }

    /// Cross-field checks serde cannot express. Returns the key path and why.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.listeners.is_empty() {
            return Err(("listeners".into(), "at least one listener is needed".into()));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            let key = |field: &str| format!("listeners[{i}].{field}");
            if listener.protocols.is_empty() {
                return Err((key("protocols"), "lists no protocol".into()));
            }
            for name in &listener.protocols {
                if !self.protocols.contains_key(name) {
                    return Err((key("protocols"), format!("unknown protocol `{name}`")));
                }
            }
            if listener.max_connections == 0 {
                return Err((key("max_connections"), "must be at least 1".into()));
            }
            if listener.probe_bytes == 0 || listener.probe_bytes > 4096 {
                return Err((key("probe_bytes"), "must be between 1 and 4096".into()));
            }
            if listener.subprotocols.is_some() && listener.transport != ListenerTransport::Websocket {
                return Err((key("subprotocols"), "only applies with transport = \"websocket\"".into()));
            }
            if listener.subprotocols.as_ref().is_some_and(Vec::is_empty) {
                return Err((key("subprotocols"), "lists no subprotocol".into()));
            }
        }
        validate_users(&self.auth.users, "auth.users")?;
        validate_acl(&self.auth.anonymous, "auth.anonymous")?;
        if self.auth.max_failures == 0 {
            return Err(("auth.max_failures".into(), "must be at least 1".into()));
        }
        if self.auth.backoff_initial_ms == 0 || self.auth.backoff_max_ms < self.auth.backoff_initial_ms {
            return Err((
                "auth.backoff_max_ms".into(),
                "backoff_initial_ms must be at least 1 and at most backoff_max_ms".into(),
            ));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Some(tls) = &listener.tls
                && tls.require_client_cert
                && tls.client_ca.is_none()
            {
                return Err((
                    format!("listeners[{i}].tls.require_client_cert"),
                    "needs client_ca to check certificates against".into(),
                ));
            }
        }
        for (name, protocol) in &self.protocols {
            for (setting, value) in &protocol.settings {
                if matches!(value, toml::Value::Array(_) | toml::Value::Table(_) | toml::Value::Datetime(_)) {
                    return Err((
                        format!("protocols.{name}.settings.{setting}"),
                        "must be a string, number or boolean".into(),
                    ));
                }
            }
        }
        if self.storage.session_queue_max == 0 {
            return Err(("storage.session_queue_max".into(), "must be at least 1".into()));
        }
        if self.storage.expiry_sweep_ms == 0 {
            return Err(("storage.expiry_sweep_ms".into(), "must be at least 1".into()));
        }
        for (name, protocol) in &self.protocols {
            let key = |field: &str| format!("protocols.{name}.{field}");
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err((format!("protocols.{name}"), "names use a-z, 0-9, - and _".into()));
            }
            if let Some(pin) = &protocol.sha256
                && (pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err((key("sha256"), "must be 64 hex digits".into()));
            }
            let limits = &protocol.limits;
            if limits.max_connections == 0 {
                return Err((key("limits.max_connections"), "must be at least 1".into()));
            }
            if limits.memory_bytes < 64 * 1024 || limits.memory_bytes > 4 << 30 {
                return Err((key("limits.memory_bytes"), "must be between 64 KiB and 4 GiB".into()));
            }
            if limits.call_deadline_ms == 0 || limits.call_deadline_ms > 60_000 {
                return Err((key("limits.call_deadline_ms"), "must be between 1 and 60000".into()));
            }
            if limits.frame_timeout_ms == 0 {
                return Err((key("limits.frame_timeout_ms"), "must be at least 1".into()));
            }
            if limits.max_faults == 0 || limits.fault_window_ms == 0 || limits.fault_backoff_ms == 0 {
                return Err((
                    key("limits.max_faults"),
                    "max_faults, fault_window_ms and fault_backoff_ms must be at least 1".into(),
                ));
            }
            if limits.max_frame_bytes < 16 {
                return Err((key("limits.max_frame_bytes"), "must be at least 16".into()));
            }
            if limits.outbound_buffer_bytes < limits.max_frame_bytes as usize {
                return Err((
                    key("limits.outbound_buffer_bytes"),
                    "must be at least limits.max_frame_bytes".into(),
                ));
            }
            for (field, filters) in [
                ("grants.publish", &protocol.grants.publish),
                ("grants.subscribe", &protocol.grants.subscribe),
            ] {
                for filter in filters {
                    topic::validate_filter(filter).map_err(|e| (key(field), format!("`{filter}`: {e}")))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), PathBuf::new())
    }

    const MINIMAL: &str = r#"
        [[listeners]]
        bind = "127.0.0.1:0"
        protocols = ["echo"]
        [protocols.echo]
        component = "echo.wasm"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        let echo = &config.protocols["echo"];
        assert_eq!(echo.limits.max_connections, 10_000);
        assert_eq!(echo.grants.publish, vec!["#".to_string()]);
        assert_eq!(config.storage.engine, StorageEngine::Embedded);
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("component =", "max_conns = 3\ncomponent =");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("test.toml"), "{err}");
        assert!(err.contains("max_conns"), "{err}");
    }

    #[test]
    fn unknown_protocol_reference_is_named() {
        let text = MINIMAL.replace(r#"protocols = ["echo"]"#, r#"protocols = ["nope"]"#);
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("listeners[0].protocols"), "{err}");
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn bad_grant_filter_is_named() {
        let text = format!("{MINIMAL}\n[protocols.echo.grants]\npublish = [\"a/#/b\"]\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("protocols.echo.grants.publish"), "{err}");
    }

    #[test]
    fn bad_pin_is_named() {
        let text = MINIMAL.replace("component =", "sha256 = \"abc\"\ncomponent =");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("protocols.echo.sha256"), "{err}");
    }
}
