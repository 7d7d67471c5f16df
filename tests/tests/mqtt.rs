//! The MQTT guest with Debian's `mosquitto_pub` / `mosquitto_sub`
//! and with hand-built packets for the protocol's edge cases.

use std::time::Duration;

use sandport_tests::mqtt::{RawClient, connect, packet, publish, put_string, subscribe};
use sandport_tests::{BrokerProcess, LineClient, TestBroker, WAIT, run_tool, with_guest_paths};
use tokio::process::{Child, Command};

const CONFIG: &str = r#"
    [[listeners]]
    name = "mqtt"
    bind = "127.0.0.1:0"
    protocols = ["mqtt"]

    [[listeners]]
    name = "echo"
    bind = "127.0.0.1:0"
    protocols = ["echo"]

    [protocols.mqtt]
    component = "{mqtt}"

    [protocols.echo]
    component = "{echo}"
"#;

fn port(broker: &TestBroker) -> String {
    broker.addr("mqtt").port().to_string()
}

/// Start `mosquitto_sub` printing `topic payload` lines; it exits after `count` messages.
fn mosquitto_sub(broker: &TestBroker, filter: &str, count: usize, extra: &[&str]) -> Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port(broker), "-t", filter, "-v", "-C", &count.to_string()])
        .args(["-W", "10"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub is installed (Debian mosquitto-clients)")
}

async fn mosquitto_pub(broker: &TestBroker, topic: &str, message: &str, extra: &[&str]) {
    let port = port(broker);
    let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-t", topic, "-m", message];
    args.extend_from_slice(extra);
    let (ok, _, stderr) = run_tool("mosquitto_pub", &args).await;
    assert!(ok, "mosquitto_pub failed: {stderr}");
}

async fn output_of(child: Child) -> Vec<String> {
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("mosquitto_sub finished in time")
        .expect("mosquitto_sub ran");
    assert!(output.status.success(), "mosquitto_sub failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_receives_what_mosquitto_pub_sends() {
    let broker = TestBroker::start(CONFIG).await;
    let sub = mosquitto_sub(&broker, "sensors/#", 3, &[]);
    broker.wait_subscriptions(1).await;
    mosquitto_pub(&broker, "sensors/kitchen/temp", "21.5", &[]).await;
    mosquitto_pub(&broker, "other/topic", "not matched", &[]).await;
    mosquitto_pub(&broker, "sensors/hall", "qos one", &["-q", "1"]).await;
    mosquitto_pub(&broker, "sensors", "parent level", &["-q", "1"]).await;
    assert_eq!(
        output_of(sub).await,
        vec!["sensors/kitchen/temp 21.5", "sensors/hall qos one", "sensors parent level"]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_subscription_receives_and_acknowledges() {
    let broker = TestBroker::start(CONFIG).await;
    let sub = mosquitto_sub(&broker, "orders/+", 2, &["-q", "1"]);
    broker.wait_subscriptions(1).await;
    mosquitto_pub(&broker, "orders/1", "first", &["-q", "1"]).await;
    mosquitto_pub(&broker, "orders/2", "second", &["-q", "1"]).await;
    assert_eq!(output_of(sub).await, vec!["orders/1 first", "orders/2 second"]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_between_protocols() {
    let broker = TestBroker::start(CONFIG).await;
    let mut echo = LineClient::connect(broker.addr("echo")).await;
    assert!(echo.ask("SUB bridge/+").await.starts_with("+OK"));
    let sub = mosquitto_sub(&broker, "bridge/from-echo", 1, &[]);
    broker.wait_subscriptions(2).await;

    mosquitto_pub(&broker, "bridge/from-mqtt", "hello echo", &[]).await;
    assert_eq!(echo.read_line().await.unwrap(), "MSG bridge/from-mqtt hello echo");
    assert_eq!(echo.ask("PUB bridge/from-echo hello mqtt").await, "+OK 2");
    assert_eq!(echo.read_line().await.unwrap(), "MSG bridge/from-echo hello mqtt");
    assert_eq!(output_of(sub).await, vec!["bridge/from-echo hello mqtt"]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_messages() {
    let broker = TestBroker::start(CONFIG).await;
    let a = mosquitto_sub(&broker, "$share/workers/jobs/#", 2, &[]);
    let b = mosquitto_sub(&broker, "$share/workers/jobs/#", 2, &[]);
    broker.wait_subscriptions(2).await;
    for i in 0..4 {
        mosquitto_pub(&broker, &format!("jobs/{i}"), "job", &[]).await;
    }
    let (a, b) = (output_of(a).await, output_of(b).await);
    assert_eq!(a.len() + b.len(), 4, "{a:?} {b:?}");
    broker.shutdown().await;
}

// --- hand-built packets -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_level_round_trip() {
    let broker = TestBroker::start(CONFIG).await;
    let mut client = RawClient::handshake(broker.addr("mqtt"), "raw-1").await;
    client.send(&[0xc0, 0]).await; // PINGREQ
    assert_eq!(client.read(2).await, [0xd0, 0]);
    client.send(&subscribe(7, "t/+", 1)).await;
    assert_eq!(client.read(5).await, [0x90, 3, 0, 7, 1], "SUBACK grants QoS 1");
    client.send(&subscribe(8, "t/#/bad", 0)).await;
    assert_eq!(client.read(5).await, [0x90, 3, 0, 8, 0x80], "invalid filter refused");
    client.send(&publish("t/x", b"self")).await;
    let expected = publish("t/x", b"self");
    assert_eq!(client.read(expected.len()).await, expected, "QoS 0 delivery");
    let mut unsubscribe = 9u16.to_be_bytes().to_vec();
    put_string(&mut unsubscribe, "t/+");
    client.send(&packet(0xa2, &unsubscribe)).await;
    assert_eq!(client.read(4).await, [0xb0, 2, 0, 9]);
    client.send(&[0xe0, 0]).await; // DISCONNECT
    assert!(client.closed().await.is_empty());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_close_the_connection() {
    let broker = TestBroker::start(CONFIG).await;
    // Not starting with CONNECT.
    let mut client = RawClient::connect(broker.addr("mqtt")).await;
    client.send(&[0xc0, 0]).await;
    assert!(client.closed().await.is_empty());
    // PUBLISH with QoS 3.
    let mut client = RawClient::handshake(broker.addr("mqtt"), "raw-2").await;
    let mut bad = publish("t", b"x");
    bad[0] = 0x36;
    client.send(&bad).await;
    assert!(client.closed().await.is_empty());
    // Wildcard in a PUBLISH topic.
    let mut client = RawClient::handshake(broker.addr("mqtt"), "raw-3").await;
    client.send(&publish("t/#", b"x")).await;
    assert!(client.closed().await.is_empty());
    // Unsupported protocol level: CONNACK 1, then close.
    let mut client = RawClient::connect(broker.addr("mqtt")).await;
    let mut v5 = connect("raw-4", 60, true, None);
    v5[8] = 9;
    client.send(&v5).await;
    assert_eq!(client.closed().await, [0x20, 2, 0, 1]);
    // A packet announcing more than max_frame_bytes is refused from its header.
    let mut client = RawClient::handshake(broker.addr("mqtt"), "raw-5").await;
    client.send(&[0x30, 0xff, 0xff, 0xff, 0x7f]).await;
    assert!(client.closed().await.is_empty());
    // In one write with a CONNECT, the CONNECT is still answered first.
    let mut client = RawClient::connect(broker.addr("mqtt")).await;
    let mut both = connect("raw-6", 60, true, None);
    both.extend_from_slice(&[0x30, 0xff, 0xff, 0xff, 0x7f]);
    client.send(&both).await;
    assert_eq!(client.closed().await, [0x20, 2, 0, 0]);
    assert_eq!(broker.counter("mqtt", "framing_errors"), 2);
    // Empty client id without clean session: identifier rejected.
    let mut client = RawClient::connect(broker.addr("mqtt")).await;
    client.send(&connect("", 60, false, None)).await;
    assert_eq!(client.closed().await, [0x20, 2, 0, 2]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_abnormal_close_only() {
    let broker = TestBroker::start(CONFIG).await;
    let mut watcher = RawClient::handshake(broker.addr("mqtt"), "watcher").await;
    watcher.send(&subscribe(1, "status/#", 0)).await;
    assert_eq!(watcher.read(5).await, [0x90, 3, 0, 1, 0]);

    // Clean DISCONNECT: the will is discarded.
    let mut polite = RawClient::connect(broker.addr("mqtt")).await;
    polite.send(&connect("polite", 60, true, Some(("status/polite", "gone")))).await;
    assert_eq!(polite.read(4).await, [0x20, 2, 0, 0]);
    polite.send(&[0xe0, 0]).await;
    polite.closed().await;

    // Dropped socket: the will goes out.
    let mut rude = RawClient::connect(broker.addr("mqtt")).await;
    rude.send(&connect("rude", 60, true, Some(("status/rude", "lost")))).await;
    assert_eq!(rude.read(4).await, [0x20, 2, 0, 0]);
    drop(rude);

    let expected = publish("status/rude", b"lost");
    assert_eq!(watcher.read(expected.len()).await, expected);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_client_id_takes_the_session_over() {
    let broker = TestBroker::start(CONFIG).await;
    let mut first = RawClient::handshake(broker.addr("mqtt"), "device-7").await;
    let mut second = RawClient::handshake(broker.addr("mqtt"), "device-7").await;
    assert!(first.closed().await.is_empty(), "the older connection is closed");
    second.send(&[0xc0, 0]).await;
    assert_eq!(second.read(2).await, [0xd0, 0], "the newer one carries on");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_enforced_at_one_and_a_half_periods() {
    let broker = TestBroker::start(CONFIG).await;
    let mut client = RawClient::connect(broker.addr("mqtt")).await;
    client.send(&connect("sleepy", 1, true, None)).await;
    assert_eq!(client.read(4).await, [0x20, 2, 0, 0]);
    let started = tokio::time::Instant::now();
    assert!(client.closed().await.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5), "{waited:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_tools_speak_mqtt5_and_mqtt31() {
    let broker = TestBroker::start(CONFIG).await;
    let format = "%t|%p|%q|%C|%P|%R|%E|%S|%F";
    let sub = mosquitto_sub(
        &broker,
        "five/#",
        2,
        &["-V", "5", "-q", "2", "-F", format, "-D", "subscribe", "subscription-identifier", "5"],
    );
    broker.wait_subscriptions(1).await;
    let properties = [
        "-V",
        "5",
        "-q",
        "2",
        "-D",
        "publish",
        "user-property",
        "k",
        "v",
        "-D",
        "publish",
        "content-type",
        "text/x",
        "-D",
        "publish",
        "response-topic",
        "reply/to",
        "-D",
        "publish",
        "message-expiry-interval",
        "100",
        "-D",
        "publish",
        "payload-format-indicator",
        "1",
    ];
    mosquitto_pub(&broker, "five/a", "hello", &properties).await;
    mosquitto_pub(&broker, "five/b", "from 3.1", &["-V", "31", "-q", "1"]).await;
    let lines = output_of(sub).await;
    assert_eq!(lines[0], "five/a|hello|2|text/x|k:v|reply/to|100|5|1");
    assert_eq!(lines[1], "five/b|from 3.1|1|||||5|");
    broker.shutdown().await;
}

/// More connections at once than calls in flight: each guest keeps the
/// fiber stack of its last call, so a pool sized for calls in flight (it was
/// 2048) refused the connections beyond it.
/// Connections that replace closed ones cost what the first ones did: a
/// freed guest slot must not keep memory its next guest never touches (it
/// once kept 64 KiB of zeroed stack bottom each, doubling the cost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_replace_closed_ones_cost_no_more_memory() {
    const CONNECTIONS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sandport.toml");
    let text = format!("[storage]\nengine = \"memory\"\n{CONFIG}");
    std::fs::write(&config, with_guest_paths(&text)).unwrap();
    let broker = BrokerProcess::start(&config, &["mqtt", "echo"]).await;
    let addr = broker.addr("mqtt");
    // One first, so what exists once per broker is not charged to the rest.
    let _warm = RawClient::handshake(addr, "warm").await;
    let open = |round: &'static str| async move {
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            clients.push(RawClient::handshake(addr, &format!("{round}-{i}")).await);
        }
        clients
    };
    let before = broker.resident_bytes();
    let files_before = broker.open_files();
    let first = open("first").await;
    let first_cost = broker.resident_bytes().saturating_sub(before);
    drop(first);
    // The broker has seen the closes (and freed the instances) once their sockets are gone.
    broker.wait_open_files_at_most(files_before).await;
    let second = open("second").await;
    let second_cost = broker.resident_bytes().saturating_sub(before);
    assert!(first_cost > 0);
    assert!(
        second_cost < first_cost * 3 / 2,
        "{CONNECTIONS} connections cost {} KiB each at first, {} KiB each after replacing closed ones",
        first_cost / 1024 / CONNECTIONS as u64,
        second_cost / 1024 / CONNECTIONS as u64
    );
    drop(second);
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_stay_open_at_once() {
    const CONNECTIONS: usize = 2_100;
    let broker = TestBroker::start(CONFIG).await;
    let addr = broker.addr("mqtt");
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        clients.push(RawClient::handshake(addr, &format!("many-{i}")).await);
    }
    // The first and the last still answer.
    for at in [0, CONNECTIONS - 1] {
        clients[at].send(&[0xc0, 0]).await; // PINGREQ
        assert_eq!(clients[at].read(2).await, [0xd0, 0]);
    }
    assert_eq!(broker.counter("mqtt", "connections_refused"), 0);
    drop(clients);
    broker.shutdown().await;
}
