//! The `sandport` binary: `check`, config errors, and signals.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sandport_tests::{LineClient, WAIT, guest, sandport_bin, with_guest_paths, workspace_root};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn sandport(args: &[&str]) -> (bool, String, String) {
    let bin = sandport_bin();
    let output = tokio::time::timeout(WAIT, Command::new(&bin).args(args).kill_on_drop(true).output())
        .await
        .expect("sandport finished in time")
        .expect("sandport runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn check_prints_what_a_guest_describes() {
    let (ok, stdout, stderr) = sandport(&["check", &path_str(&guest("mqtt"))]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("name: mqtt"), "{stdout}");
    assert!(stdout.contains("framing: Varint"), "{stdout}");
    assert!(stdout.contains("sha256: "), "{stdout}");
}

#[tokio::test]
async fn check_refuses_clocks_unless_granted() {
    let (ok, _, stderr) = sandport(&["check", &path_str(&guest("foreign"))]).await;
    assert!(!ok);
    assert!(stderr.contains("wasi:clocks/monotonic-clock"), "{stderr}");
    assert!(stderr.contains("grants.clocks = true") && stderr.contains("--clocks"), "{stderr}");
    let (ok, stdout, stderr) = sandport(&["check", "--clocks", &path_str(&guest("foreign"))]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("wasi:filesystem/preopens") && stdout.contains("wasi:sockets/tcp"), "{stdout}");
}

#[tokio::test]
async fn check_refuses_a_wrong_pin_before_compiling() {
    let wrong = "0".repeat(64);
    let (ok, _, stderr) = sandport(&["check", &path_str(&guest("echo")), "--sha256", &wrong]).await;
    assert!(!ok);
    assert!(stderr.contains("but the config pins 0000"), "{stderr}");
    // The right pin passes.
    let (ok, stdout, _) = sandport(&["check", &path_str(&guest("echo"))]).await;
    assert!(ok);
    let sha = stdout.lines().find_map(|l| l.strip_prefix("sha256: ")).unwrap().to_string();
    let (ok, _, stderr) = sandport(&["check", &path_str(&guest("echo")), "--sha256", &sha]).await;
    assert!(ok, "{stderr}");
}

#[tokio::test]
async fn check_stops_a_guest_whose_describe_never_returns() {
    let (ok, _, stderr) = sandport(&["check", &path_str(&guest("stuck"))]).await;
    assert!(!ok);
    assert!(stderr.contains("describe() failed: guest call exceeded its deadline"), "{stderr}");
}

#[tokio::test]
async fn check_refuses_files_that_are_not_components() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm not really").unwrap();
    let (ok, _, stderr) = sandport(&["check", &path_str(&garbage)]).await;
    assert!(!ok);
    assert!(stderr.contains("is not a valid component"), "{stderr}");
    let (ok, _, stderr) = sandport(&["check", &path_str(&dir.path().join("missing.wasm"))]).await;
    assert!(!ok);
    assert!(stderr.contains("cannot read component"), "{stderr}");
}

/// Run `sandport run` on `config` and return its stderr; it must fail.
async fn run_fails_with(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, with_guest_paths(config)).unwrap();
    let (ok, _, stderr) = sandport(&["run", "--config", &path_str(&path)]).await;
    assert!(!ok, "expected failure, got success: {stderr}");
    assert!(stderr.contains("bad.toml"), "error names the file: {stderr}");
    stderr
}

const GOOD: &str = r#"
[storage]
engine = "memory"

[[listeners]]
bind = "127.0.0.1:0"
protocols = ["echo"]

[protocols.echo]
component = "{echo}"
"#;

#[tokio::test]
async fn bad_configs_name_the_key() {
    let stderr = run_fails_with(&GOOD.replace("bind =", "bnd =")).await;
    assert!(stderr.contains("bnd"), "{stderr}");
    let stderr =
        run_fails_with(&format!("{GOOD}\n[protocols.echo.limits]\nmax_connections = \"many\"\n")).await;
    assert!(stderr.contains("max_connections"), "{stderr}");
    let stderr = run_fails_with(&GOOD.replace(r#"protocols = ["echo"]"#, r#"protocols = ["ehco"]"#)).await;
    assert!(stderr.contains("listeners[0].protocols") && stderr.contains("ehco"), "{stderr}");
    let stderr = run_fails_with(&format!("{GOOD}\n[protocols.echo.limits]\ncall_deadline_ms = 0\n")).await;
    assert!(stderr.contains("protocols.echo.limits.call_deadline_ms"), "{stderr}");
    let stderr = run_fails_with(&GOOD.replace(r#"engine = "memory""#, r#"engine = "cassandra""#)).await;
    assert!(stderr.contains("engine"), "{stderr}");
    let stderr = run_fails_with(&format!("{GOOD}\n[protocols.echo.settings]\nlevels = [1, 2]\n")).await;
    assert!(stderr.contains("protocols.echo.settings.levels"), "{stderr}");
    let websocket_only =
        GOOD.replace("protocols = [\"echo\"]", "protocols = [\"echo\"]\nsubprotocols = [\"echo\"]");
    let stderr = run_fails_with(&websocket_only).await;
    assert!(stderr.contains("listeners[0].subprotocols"), "{stderr}");
}

#[tokio::test]
async fn settings_a_guest_does_not_know_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let config = GOOD.replace("{echo}", "{mqtt}").replace("echo", "mqtt");
    let config = format!("{config}\n[protocols.mqtt.settings]\nreceive_maximum = 10\ntopic_alias_max = 5\n");
    std::fs::write(&path, with_guest_paths(&config)).unwrap();
    let (ok, _, stderr) = sandport(&["run", "--config", &path_str(&path)]).await;
    assert!(!ok);
    assert!(stderr.contains("unknown setting `protocols.mqtt.settings.topic_alias_max`"), "{stderr}");
    assert!(
        stderr.contains("receive_maximum, topic_alias_maximum, max_keep_alive, connect_timeout_ms"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[tokio::test]
async fn bad_protocols_stop_the_broker_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinned.toml");
    let pinned = format!("{GOOD}sha256 = \"{}\"\n", "a".repeat(64));
    std::fs::write(&path, with_guest_paths(&pinned)).unwrap();
    let (ok, _, stderr) = sandport(&["run", "--config", &path_str(&path)]).await;
    assert!(!ok);
    assert!(stderr.contains("but the config pins aaaa"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");

    let foreign = GOOD.replace("{echo}", "{foreign}");
    std::fs::write(&path, with_guest_paths(&foreign)).unwrap();
    let (ok, _, stderr) = sandport(&["run", "--config", &path_str(&path)]).await;
    assert!(!ok);
    assert!(stderr.contains("wasi:clocks") && !stderr.contains("listening"), "{stderr}");
}

#[tokio::test]
async fn shipped_config_is_valid() {
    let config =
        sandport::Config::load(&workspace_root().join("config/sandport.toml")).expect("shipped config loads");
    let binds: Vec<String> = config.listeners.iter().map(|l| l.bind.to_string()).collect();
    assert!(binds.contains(&"127.0.0.1:1883".to_string()), "{binds:?}");
    assert!(config.protocols.contains_key("mqtt") && config.protocols.contains_key("echo"));
}

/// Start `sandport run` on the echo config; return it with the address of
/// its first listener, read from the "listening" line on stderr.
async fn run_broker(dir: &Path) -> (tokio::process::Child, std::net::SocketAddr) {
    let (child, addr, _) = start_broker(dir, None).await;
    (child, addr)
}

/// [`run_broker`], optionally under a virtual memory limit in KiB
/// (`ulimit -v`); also returns what it logged before listening.
async fn start_broker(
    dir: &Path,
    address_space_kib: Option<u64>,
) -> (tokio::process::Child, std::net::SocketAddr, Vec<String>) {
    let path = dir.join("run.toml");
    std::fs::write(&path, with_guest_paths(GOOD)).unwrap();
    let bin = sandport_bin();
    let mut command = match address_space_kib {
        None => Command::new(&bin),
        Some(kib) => {
            let mut shell = Command::new("sh");
            let script = format!("ulimit -v {kib} && exec \"$0\" \"$@\"");
            shell.args(["-c", &script, &path_str(&bin)]);
            shell
        }
    };
    let mut child = command
        .args(["run", "--config", &path_str(&path)])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, logged) = tokio::time::timeout(WAIT, async {
        let mut logged = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("addr=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse::<std::net::SocketAddr>().unwrap();
                return (addr, logged);
            }
            logged.push(line);
        }
        panic!("sandport exited before listening: {logged:?}");
    })
    .await
    .expect("listening in time");
    // Keep draining stderr so the broker never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr, logged)
}

async fn terminate_and_wait(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().unwrap().to_string();
    let (ok, _, _) = sandport_tests::run_tool("kill", &["-TERM", &pid]).await;
    assert!(ok);
    tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap()
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = run_broker(dir.path()).await;
    let mut client = LineClient::connect(addr).await;
    assert_eq!(client.ask("PING").await, "PONG");

    let status = terminate_and_wait(&mut child).await;
    // The open connection was closed by the shutdown, and the process exited 0.
    assert!(client.expect_closed().await.is_empty());
    assert!(status.success(), "{status:?}");
}

/// A supervisor may signal as soon as the broker says it listens; the
/// handler must already be there, or the default action kills the process.
#[tokio::test]
async fn sigterm_right_after_listening_is_graceful() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, _) = run_broker(dir.path()).await;
        let status = terminate_and_wait(&mut child).await;
        assert!(status.success(), "{status:?}");
    }
}

/// Guest memories normally get guard regions instead of bounds checks,
/// which takes about 4 GiB of address space per slot. A broker whose
/// address space is limited falls back to bounds-checked slots, says so,
/// and serves as usual.
#[tokio::test]
async fn a_limited_address_space_falls_back_to_bounds_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, logged) = start_broker(dir.path(), None).await;
    assert!(!logged.iter().any(|l| l.contains("bounds-checked")), "{logged:?}");

    // 4 TiB: room for the compact slots (about 0.3 TiB here), not for the
    // guarded ones (about 41 TiB).
    let (mut child, addr, logged) = start_broker(dir.path(), Some(4 << 30)).await;
    assert!(logged.iter().any(|l| l.contains("guest memories are bounds-checked")), "{logged:?}");
    let mut client = LineClient::connect(addr).await;
    assert_eq!(client.ask("PING").await, "PONG");
    assert_eq!(client.ask("ECHO guarded or not").await, "guarded or not");
    let status = terminate_and_wait(&mut child).await;
    assert!(status.success(), "{status:?}");
}
