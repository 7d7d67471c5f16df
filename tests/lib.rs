//! Support for sandport's end-to-end tests.
//!
//! Builds the guest components and the `sandport` binary once per test
//! process (cargo makes repeat builds a no-op), starts brokers in-process on
//! ephemeral loopback ports, and offers small clients for raw sockets and the
//! Debian command-line tools.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use sandport::{Broker, Config};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[path = "mqtt_client.rs"]
pub mod mqtt;

/// How long any single expectation waits before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Guest crates built for the tests, by short name.
const GUESTS: &[&str] = &["echo", "mqtt", "nats", "resp", "hostile", "foreign", "greeter", "greedy", "stuck"];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

fn cargo() -> Command {
    let mut command = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    command.current_dir(workspace_root());
    command
}

fn run_cargo(args: &[&str]) {
    let status = cargo().args(args).status().expect("running cargo");
    assert!(status.success(), "cargo {} failed", args.join(" "));
}

/// Path of guest component `name` (`echo`, `mqtt`, `hostile`, `foreign`),
/// building all guests on first use.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut args = vec!["build", "--target", "wasm32-wasip2", "--profile", "guest"];
        let packages: Vec<String> = GUESTS.iter().map(|g| format!("sandport-guest-{g}")).collect();
        for package in &packages {
            args.extend(["-p", package]);
        }
        run_cargo(&args);
    });
    let path = target_dir().join(format!("wasm32-wasip2/guest/sandport_guest_{name}.wasm"));
    assert!(path.exists(), "guest {name} not found at {}", path.display());
    path
}

/// Path of the echo guest made the way cargo-component and toolchains
/// built on wasi-libc's preview 1 make components: compiled for
/// `wasm32-wasip1` (a core module carrying its WIT), then adapted to WASI
/// 0.2 with the preview 1 reactor adapter. Built on first use.
pub fn preview1_echo() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            run_cargo(&[
                "build",
                "--target",
                "wasm32-wasip1",
                "--profile",
                "guest",
                "-p",
                "sandport-guest-echo",
            ]);
            let directory = target_dir().join("wasm32-wasip1/guest");
            let module = std::fs::read(directory.join("sandport_guest_echo.wasm")).expect("the core module");
            let adapter = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
            let component = wit_component::ComponentEncoder::default()
                .module(&module)
                .and_then(|encoder| encoder.adapter("wasi_snapshot_preview1", adapter))
                .and_then(|encoder| encoder.validate(true).encode())
                .expect("the module adapts to a component");
            let path = directory.join("sandport_guest_echo.component.wasm");
            std::fs::write(&path, component).expect("writing the component");
            path
        })
        .clone()
}

/// Path of the `sandport` binary, built on first use. Built the way
/// `cargo test --workspace` resolves features (dev-dependencies included),
/// so it reuses the test build instead of compiling wasmtime a second time.
pub fn sandport_bin() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| run_cargo(&["build", "--workspace", "--bins", "--tests"]));
    target_dir().join("debug/sandport")
}

/// Replace `{echo}`, `{mqtt}`, `{hostile}` and `{foreign}` in `toml` with
/// the paths of the built guests.
pub fn with_guest_paths(toml: &str) -> String {
    GUESTS.iter().fold(toml.to_string(), |text, name| {
        let placeholder = format!("{{{name}}}");
        if text.contains(&placeholder) {
            text.replace(&placeholder, &guest(name).display().to_string())
        } else {
            text
        }
    })
}

/// Log to the test output (`RUST_LOG` filters; warnings by default).
pub fn init_logging() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// A broker running in this test process.
pub struct TestBroker {
    broker: Option<Broker>,
}

impl TestBroker {
    /// Start a broker from config text (guest placeholders are filled in).
    pub async fn start(toml: &str) -> TestBroker {
        init_logging();
        let mut text = with_guest_paths(toml);
        if !text.contains("[storage]") {
            // In-process brokers keep nothing unless a test asks for storage.
            text = format!("[storage]\nengine = \"memory\"\n{text}");
        }
        let config =
            Config::parse(&text, Path::new("test.toml"), workspace_root()).expect("test config is valid");
        let broker = Broker::start(&config).await.expect("broker starts");
        TestBroker { broker: Some(broker) }
    }

    fn broker(&self) -> &Broker {
        self.broker.as_ref().expect("broker is running")
    }

    /// Address of listener `name`.
    pub fn addr(&self, name: &str) -> std::net::SocketAddr {
        self.broker().local_addr(name).unwrap_or_else(|| panic!("no listener named {name}"))
    }

    /// Value of counter `counter` of protocol `protocol`.
    pub fn counter(&self, protocol: &str, counter: &str) -> u64 {
        let metrics = self.broker().metrics(protocol).expect("protocol exists");
        metrics.get(counter).unwrap_or_else(|| panic!("no counter {counter}"))
    }

    /// Wait until `counter` of `protocol` reaches at least `value`.
    pub async fn wait_counter(&self, protocol: &str, counter: &str, value: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.counter(protocol, counter) < value {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{protocol}.{counter} stayed at {} (wanted {value})",
                self.counter(protocol, counter)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Number of subscriptions in the router.
    pub fn subscriptions(&self) -> usize {
        self.broker().core().router.len()
    }

    /// Wait until the router holds at least `count` subscriptions.
    pub async fn wait_subscriptions(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.subscriptions() < count {
            assert!(tokio::time::Instant::now() < deadline, "only {} subscriptions", self.subscriptions());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Shut the broker down gracefully.
    pub async fn shutdown(mut self) {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await;
        }
    }
}

/// A `sandport run` process, for tests that restart or kill the broker.
pub struct BrokerProcess {
    child: tokio::process::Child,
    addrs: std::collections::HashMap<String, std::net::SocketAddr>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl BrokerProcess {
    /// Run the binary on config file `path`; waits until every listener in
    /// `listeners` is bound.
    pub async fn start(path: &Path, listeners: &[&str]) -> BrokerProcess {
        let mut child = tokio::process::Command::new(sandport_bin())
            .args(["run", "--config"])
            .arg(path)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sandport starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let mut addrs = std::collections::HashMap::new();
        let wanted = listeners.len();
        tokio::time::timeout(WAIT, async {
            while addrs.len() < wanted {
                let line =
                    lines.next_line().await.expect("stderr").unwrap_or_else(|| panic!("sandport exited"));
                if let (Some(name), Some(addr)) = (field(&line, "listener="), field(&line, "addr="))
                    && line.contains("listening")
                {
                    addrs.insert(name.trim_matches('"').to_string(), addr.parse().expect("address"));
                }
            }
        })
        .await
        .expect("listening in time");
        // Keep draining the log so the broker never blocks on a full pipe,
        // and keep it for tests that check what was logged.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        BrokerProcess { child, addrs, log }
    }

    /// Wait until a log line containing every one of `needles` appears; returns it.
    pub async fn wait_log(&self, needles: &[&str]) -> String {
        for _ in 0..200 {
            let found =
                self.log.lock().unwrap().iter().find(|l| needles.iter().all(|n| l.contains(n))).cloned();
            if let Some(line) = found {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line with {needles:?}; log:\n{}", self.log.lock().unwrap().join("\n"));
    }

    /// Address of listener `name`.
    pub fn addr(&self, name: &str) -> std::net::SocketAddr {
        self.addrs[name]
    }

    /// The broker process's resident memory, in bytes.
    pub fn resident_bytes(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Number of file descriptors the broker process holds open (its
    /// sockets among them).
    pub fn open_files(&self) -> usize {
        let pid = self.child.id().expect("running");
        std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc fd").count()
    }

    /// Wait until the broker holds at most `count` file descriptors.
    pub async fn wait_open_files_at_most(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.open_files() > count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the broker still holds {} descriptors (wanted at most {count})",
                self.open_files()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown work at all.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let (ok, _, _) = run_tool("kill", &["-TERM", &pid]).await;
        assert!(ok);
        let status =
            tokio::time::timeout(WAIT, self.child.wait()).await.expect("exits in time").expect("wait");
        assert!(status.success(), "{status:?}");
    }
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|word| word.strip_prefix(name))
}

/// A client for line protocols over a raw socket.
pub struct LineClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl LineClient {
    /// Connect to `addr`.
    pub async fn connect(addr: std::net::SocketAddr) -> LineClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (read, writer) = stream.into_split();
        LineClient { reader: BufReader::new(read), writer }
    }

    /// Send raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.expect("write");
    }

    /// Send `bytes`; a connection the broker already closed is an error,
    /// not a panic.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// Send one line (a `\n` is appended).
    pub async fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes()).await;
    }

    /// Read one line without its `\n`; `None` when the server closed.
    pub async fn read_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
            .await
            .expect("a line within the wait time")
            .ok()?;
        (n > 0).then(|| line.trim_end_matches('\n').to_string())
    }

    /// Read up to and including the next `\n`, as raw bytes (binary-safe).
    pub async fn read_raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        tokio::time::timeout(WAIT, self.reader.read_until(b'\n', &mut line))
            .await
            .expect("bytes within the wait time")
            .expect("read");
        line
    }

    /// Send a line and return the reply line.
    pub async fn ask(&mut self, line: &str) -> String {
        self.send_line(line).await;
        self.read_line().await.expect("a reply before close")
    }

    /// Assert that the server closes the connection (possibly after some
    /// lines, which are returned).
    pub async fn expect_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.read_line().await {
            lines.push(line);
        }
        lines
    }
}

/// Run scenario `name` of the Python script `tests/python/SCRIPT` against
/// `port`; the script prints `ok` when the scenario passes.
pub async fn python_scenario(script: &str, name: &str, port: u16) {
    let script = workspace_root().join("tests/python").join(script);
    let (ok, stdout, stderr) =
        run_tool("python3", &[&script.display().to_string(), name, &port.to_string()]).await;
    assert!(ok && stdout.trim() == "ok", "scenario {name} failed:\n{stdout}\n{stderr}");
}

/// Start a reference server (Debian's nats-server, redis-server...) on a
/// free loopback port; `args` may use `{port}`. Waits until it accepts.
pub async fn reference_server(program: &str, args: &[&str]) -> (tokio::process::Child, std::net::SocketAddr) {
    reference_server_on(free_port(), program, args).await
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// [`reference_server`] on a port the caller chose (for servers configured
/// by a file that names it).
pub async fn reference_server_on(
    port: u16,
    program: &str,
    args: &[&str],
) -> (tokio::process::Child, std::net::SocketAddr) {
    let args: Vec<String> = args.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
    let child = tokio::process::Command::new(program)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{program} did not start");
}

/// A raw conversation: connect, optionally read one greeting line, write
/// each of `writes` (50 ms apart), then collect what arrives until 300 ms of
/// quiet, ending with `<closed>` if the server closed. For comparing a
/// server's exact bytes with a reference server's.
pub async fn converse(addr: std::net::SocketAddr, skip_greeting: bool, writes: &[&[u8]]) -> String {
    use tokio::io::AsyncReadExt;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    if skip_greeting {
        let mut greeting = Vec::new();
        tokio::time::timeout(WAIT, reader.read_until(b'\n', &mut greeting)).await.expect("greeting").unwrap();
    }
    for bytes in writes {
        write.write_all(bytes).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(300), reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                out.extend_from_slice(b"<closed>");
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Run a command-line client with a time limit; returns (status ok, stdout, stderr).
pub async fn run_tool(program: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(program).args(args).kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {} timed out", args.join(" ")))
    .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
