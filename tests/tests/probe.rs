//! Several protocols on one port: the host probes, or lets a speaks-first
//! protocol greet a silent client. Also guest-driven framing, timers and
//! key-value, which the greeter guest exercises.

use std::time::Duration;

use sandport_tests::{LineClient, TestBroker, run_tool};

const CONFIG: &str = r#"
    [[listeners]]
    name = "shared"
    bind = "127.0.0.1:0"
    protocols = ["mqtt", "echo", "greeter"]
    probe_timeout_ms = 300

    [[listeners]]
    name = "quiet"
    bind = "127.0.0.1:0"
    protocols = ["mqtt", "echo"]
    probe_timeout_ms = 300

    [[listeners]]
    name = "greeter"
    bind = "127.0.0.1:0"
    protocols = ["greeter"]

    [protocols.mqtt]
    component = "{mqtt}"
    [protocols.echo]
    component = "{echo}"
    [protocols.greeter]
    component = "{greeter}"
    [protocols.greeter.limits]
    max_frame_bytes = 64
    [protocols.greeter.grants]
    kv_quota_bytes = 32
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_and_echo_share_a_port() {
    let broker = TestBroker::start(CONFIG).await;
    let port = broker.addr("shared").port().to_string();
    let mut echo = LineClient::connect(broker.addr("shared")).await;
    assert_eq!(echo.ask("PING").await, "PONG");
    assert!(echo.ask("SUB shared/#").await.starts_with("+OK"));
    let (ok, _, stderr) =
        run_tool("mosquitto_pub", &["-h", "127.0.0.1", "-p", &port, "-t", "shared/x", "-m", "via probe"])
            .await;
    assert!(ok, "{stderr}");
    assert_eq!(echo.read_line().await.unwrap(), "MSG shared/x via probe");
    assert_eq!(broker.counter("mqtt", "connections_opened"), 1);
    assert_eq!(broker.counter("echo", "connections_opened"), 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_gets_the_speaks_first_protocol() {
    let broker = TestBroker::start(CONFIG).await;
    let mut client = LineClient::connect(broker.addr("shared")).await;
    let greeting = client.read_line().await.unwrap();
    assert!(greeting.starts_with("HELLO "), "{greeting}");
    assert_eq!(client.ask("ECHO chosen after silence").await, "chosen after silence");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_silent_clients_are_closed() {
    let broker = TestBroker::start(CONFIG).await;
    let mut garbage = LineClient::connect(broker.addr("shared")).await;
    garbage.send(b"\x00\x01\x02 nothing speaks this\n").await;
    assert!(garbage.expect_closed().await.is_empty());
    // No speaks-first protocol on this port: silence ends in a close.
    let started = tokio::time::Instant::now();
    let mut silent = LineClient::connect(broker.addr("quiet")).await;
    assert!(silent.expect_closed().await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_framing_timers_and_key_value() {
    let broker = TestBroker::start(CONFIG).await;
    let mut client = LineClient::connect(broker.addr("greeter")).await;
    assert!(client.read_line().await.unwrap().starts_with("HELLO "));
    // A line split over several writes is framed by the guest.
    client.send(b"ECHO spl").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.send(b"it\nECHO two\n").await;
    assert_eq!(client.read_line().await.unwrap(), "split");
    assert_eq!(client.read_line().await.unwrap(), "two");
    // Many lines in one write, far more bytes than max_frame_bytes (64):
    // the guest gets them in windows of the limit, and answers every one.
    let burst: String = (0..40).map(|i| format!("ECHO line {i:02}\n")).collect();
    client.send(burst.as_bytes()).await;
    for i in 0..40 {
        assert_eq!(client.read_line().await.unwrap(), format!("line {i:02}"));
    }

    assert_eq!(client.ask("TIMER 50").await, "+OK");
    assert_eq!(client.read_line().await.unwrap(), "TICK");

    assert_eq!(client.ask("SET colour blue").await, "+OK");
    let mut other = LineClient::connect(broker.addr("greeter")).await;
    other.read_line().await.unwrap();
    assert_eq!(other.ask("GET colour").await, "blue", "protocol scope is shared");
    assert!(other.ask("SET big 0123456789012345678901234567890123").await.contains("quota"));
    assert_eq!(other.ask("GET missing").await, "(nil)");

    // Past max_frame_bytes without a line end: closed by the host.
    client.send(&[b'x'; 100]).await;
    assert!(client.expect_closed().await.is_empty());
    assert_eq!(broker.counter("greeter", "framing_errors"), 1);
    broker.shutdown().await;
}
