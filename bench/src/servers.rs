//! The servers under test, each in its own process on free loopback ports so
//! its memory and CPU time can be read from `/proc`: sandport (the
//! workspace's `sandport` binary, as users run it), Debian's mosquitto,
//! nats-server and redis-server, and the native forwarder (this binary,
//! re-executed as `sandport-bench forwarder`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Kernel clock ticks per second in `/proc/PID/stat` (USER_HZ, 100 on Linux).
const CLOCK_TICKS: u64 = 100;

/// How long a server may take to accept its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Most connections the idle workload opens; sizes sandport's caps.
pub const MAX_CONNECTIONS: u32 = 12_000;

/// A server the workloads run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    Sandport,
    Mosquitto,
    NatsServer,
    RedisServer,
    /// Native MQTT forwarder without routing or guests: the ceiling.
    Forwarder,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Sandport => "sandport",
            ServerKind::Mosquitto => "mosquitto",
            ServerKind::NatsServer => "nats-server",
            ServerKind::RedisServer => "redis-server",
            ServerKind::Forwarder => "forwarder",
        }
    }
}

/// A wire protocol a workload speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Mqtt,
    Nats,
    Resp,
}

/// What the benchmark runs: the `sandport` binary and the guest components
/// it loads, which it built, and this binary for the forwarder.
#[derive(Debug, Clone)]
pub struct Builds {
    pub sandport: PathBuf,
    /// Read before building: a debug build of the workspace may replace
    /// this binary, after which `current_exe` names a deleted file.
    pub forwarder: PathBuf,
    pub mqtt: PathBuf,
    pub nats: PathBuf,
    pub resp: PathBuf,
}

/// Sandport's counters from its shutdown log, summed over protocols.
pub type Counters = BTreeMap<String, u64>;

/// A running server.
pub struct Server {
    pub kind: ServerKind,
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Start `kind` speaking `wire` and wait until it accepts connections.
    pub async fn start(kind: ServerKind, wire: Wire, builds: &Builds) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut command = match kind {
            ServerKind::Sandport => {
                let config = dir.path().join("sandport.toml");
                std::fs::create_dir(dir.path().join("data"))?;
                std::fs::write(&config, sandport_config(wire, port, builds))?;
                let mut command = Command::new(&builds.sandport);
                command.arg("run").arg("--config").arg(&config);
                command.env("RUST_LOG", "warn,sandport::broker=info");
                command
            }
            ServerKind::Mosquitto => {
                let config = dir.path().join("mosquitto.conf");
                std::fs::write(&config, mosquitto_config(port))?;
                let mut command = Command::new("mosquitto");
                command.arg("-c").arg(&config);
                command
            }
            ServerKind::NatsServer => {
                let mut command = Command::new("nats-server");
                command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
                command
            }
            ServerKind::RedisServer => {
                let mut command = Command::new("redis-server");
                command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
                command.args(["--appendonly", "no"]).current_dir(dir.path());
                command
            }
            ServerKind::Forwarder => {
                let mut command = Command::new(&builds.forwarder);
                command.args(["forwarder", &port.to_string()]);
                command
            }
        };
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                // A server outlives no benchmark, even one killed by a signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {} (scripts/setup --test installs it)", kind.name()))?;
        let pid = child.id().context("the server exited at once")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().context("stderr is piped")?).lines();
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = Server { kind, child, pid, addr, log, _dir: dir };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}):\n{}", self.kind.name(), self.log.lock().unwrap().join("\n"));
            }
            if TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{} did not accept connections within {START_TIMEOUT:?}", self.kind.name())
    }

    /// The last `n` lines the server logged.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        self.status_bytes("VmRSS:")
    }

    /// The part of [`rss_bytes`](Self::rss_bytes) that is the process's own
    /// anonymous memory: without file pages (such as a guest's data image,
    /// mapped once per instance but one copy in memory) and shared memory.
    pub fn anon_bytes(&self) -> anyhow::Result<u64> {
        self.status_bytes("RssAnon:")
    }

    /// The kernel's page tables for the process: not part of its resident
    /// memory, but memory each mapped page costs (more for sparse mappings,
    /// such as guest memory slots far apart).
    pub fn page_table_bytes(&self) -> anyhow::Result<u64> {
        self.status_bytes("VmPTE:")
    }

    fn status_bytes(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
        let kib: u64 = line.split_whitespace().nth(1).with_context(|| format!("{field} value"))?.parse()?;
        Ok(kib * 1024)
    }

    /// CPU time (user + system) the server process has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name, which may hold spaces, in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')').context("stat format")?.1.split_whitespace().collect();
        let utime: u64 = fields.get(11).context("utime")?.parse()?;
        let stime: u64 = fields.get(12).context("stime")?.parse()?;
        Ok(Duration::from_millis((utime + stime) * 1000 / CLOCK_TICKS))
    }

    /// Stop the server. Sandport gets SIGTERM and its final counters are
    /// returned; the others are killed.
    pub async fn stop(mut self) -> anyhow::Result<Counters> {
        if self.kind != ServerKind::Sandport {
            self.child.kill().await?;
            return Ok(Counters::new());
        }
        let status = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.pid);
        let exited = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        anyhow::ensure!(
            matches!(exited, Ok(Ok(s)) if s.success()),
            "sandport did not exit cleanly: {exited:?}"
        );
        // The log reader may still be catching up with the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(final_counters(&self.log.lock().unwrap()))
    }
}

/// Sum the `final counters: name=value ...` lines sandport logs at shutdown.
fn final_counters(log: &[String]) -> Counters {
    let mut counters = Counters::new();
    for line in log.iter().filter(|l| l.contains("final counters:")) {
        let (_, values) = line.split_once("final counters:").unwrap_or_default();
        for (name, value) in values.split_whitespace().filter_map(|pair| pair.split_once('=')) {
            if let Ok(value) = value.parse::<u64>() {
                *counters.entry(name.to_string()).or_default() += value;
            }
        }
    }
    counters
}

/// A loopback port free right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sandport as shipped (embedded storage with fsync), one listener for
/// `wire`, caps raised for the idle-connection workload.
fn sandport_config(wire: Wire, port: u16, builds: &Builds) -> String {
    let (name, guest) = match wire {
        Wire::Mqtt => ("mqtt", &builds.mqtt),
        Wire::Nats => ("nats", &builds.nats),
        Wire::Resp => ("resp", &builds.resp),
    };
    format!(
        r#"[storage]
engine = "embedded"
data_dir = "data"

[[listeners]]
name = "{name}"
bind = "127.0.0.1:{port}"
protocols = ["{name}"]
max_connections = {MAX_CONNECTIONS}

[protocols.{name}]
component = "{component}"

[protocols.{name}.limits]
max_connections = {MAX_CONNECTIONS}
"#,
        component = guest.display()
    )
}

/// Mosquitto on one loopback listener, with the limits that would make it
/// refuse or queue less than sandport lifted, and Nagle off as in sandport.
fn mosquitto_config(port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
max_inflight_messages 0
max_queued_messages 0
log_dest stderr
log_type error
"
    )
}

/// Path of a built guest component.
pub fn guest_path(target_dir: &Path, name: &str) -> PathBuf {
    target_dir.join(format!("wasm32-wasip2/guest/sandport_guest_{name}.wasm"))
}
