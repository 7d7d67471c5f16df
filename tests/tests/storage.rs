//! The unified store: persistent sessions, queued at-least-once deliveries,
//! retained messages, restarts (graceful and `kill -9`) and bad data dirs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use sandport_tests::mqtt::{RawClient, publish_qos1, subscribe};
use sandport_tests::{BrokerProcess, LineClient, TestBroker, run_tool, sandport_bin, with_guest_paths};

/// Config text for a broker with MQTT and echo listeners storing in `data_dir`.
fn config_text(data_dir: &Path, queue_max: usize) -> String {
    with_guest_paths(&format!(
        r#"
        [storage]
        engine = "embedded"
        data_dir = "{}"
        session_queue_max = {queue_max}
        {MQTT_AND_ECHO}"#,
        data_dir.display()
    ))
}

/// MQTT and echo listeners on ephemeral ports.
const MQTT_AND_ECHO: &str = r#"
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

/// An in-process broker with only MQTT (memory storage).
const MQTT_ONLY: &str = r#"
    [[listeners]]
    name = "mqtt"
    bind = "127.0.0.1:0"
    protocols = ["mqtt"]
    [protocols.mqtt]
    component = "{mqtt}"
"#;

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn setup(queue_max: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = dir.path().join("sandport.toml");
    std::fs::write(&config, config_text(&data, queue_max)).unwrap();
    Setup { _dir: dir, config }
}

async fn start(setup: &Setup) -> BrokerProcess {
    BrokerProcess::start(&setup.config, &["mqtt", "echo"]).await
}

/// Create the offline persistent session `sub` subscribed to `load/#` at QoS 1.
async fn park_subscriber(broker: &BrokerProcess) {
    let (mut sub, present) = RawClient::session(broker.addr("mqtt"), "sub", false).await;
    assert!(!present);
    sub.send(&subscribe(1, "load/#", 1)).await;
    assert_eq!(sub.read(5).await, [0x90, 3, 0, 1, 1]);
    sub.send(&[0xe0, 0]).await;
    sub.closed().await;
}

/// Reconnect `sub` and collect every delivery (acking each) until quiet.
async fn drain_subscriber(broker: &BrokerProcess) -> Vec<Vec<u8>> {
    let (mut sub, present) = RawClient::session(broker.addr("mqtt"), "sub", false).await;
    assert!(present, "the session survived");
    let mut payloads = Vec::new();
    while let Some(message) = sub.next_publish(Duration::from_secs(2)).await {
        assert_eq!(message.qos, 1);
        sub.puback(message.packet_id.unwrap()).await;
        payloads.push(message.payload);
    }
    payloads
}

/// Publish `count` QoS 1 messages, pipelined; returns the payloads acked
/// before the connection ended (or all of them). `progress` counts acks as
/// they arrive.
async fn publish_many(
    addr: std::net::SocketAddr,
    count: u16,
    progress: Arc<AtomicUsize>,
) -> BTreeSet<Vec<u8>> {
    let publisher = RawClient::handshake(addr, "pub").await;
    let (mut reader, mut writer) = publisher.stream.into_split();
    tokio::spawn(async move {
        for id in 1..=count {
            let packet = publish_qos1("load/x", id, format!("m{id}").as_bytes(), false);
            if writer.write_all(&packet).await.is_err() {
                return;
            }
        }
    });
    let mut acked = BTreeSet::new();
    let mut ack = [0u8; 4];
    while acked.len() < usize::from(count) {
        match tokio::time::timeout(Duration::from_secs(5), reader.read_exact(&mut ack)).await {
            Ok(Ok(_)) => {
                assert_eq!(ack[..2], [0x40, 2], "PUBACK");
                acked.insert(format!("m{}", u16::from_be_bytes([ack[2], ack[3]])).into_bytes());
                progress.fetch_add(1, Ordering::Relaxed);
            }
            _ => break,
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_sessions_queues_and_retained() {
    let setup = setup(10_000);
    let broker = start(&setup).await;
    park_subscriber(&broker).await;
    let acked = publish_many(broker.addr("mqtt"), 200, Arc::default()).await;
    assert_eq!(acked.len(), 200);
    let port = broker.addr("mqtt").port().to_string();
    let (ok, _, err) = run_tool(
        "mosquitto_pub",
        &["-h", "127.0.0.1", "-p", &port, "-t", "config/colour", "-m", "blue", "-r", "-q", "1"],
    )
    .await;
    assert!(ok, "{err}");
    broker.terminate().await;

    let broker = start(&setup).await;
    // The offline session's subscription came back too: new messages queue.
    let mut late = RawClient::handshake(broker.addr("mqtt"), "late").await;
    late.send(&publish_qos1("load/after", 1, b"after restart", false)).await;
    assert_eq!(late.read(4).await, [0x40, 2, 0, 1]);
    let mut expected = acked.clone();
    expected.insert(b"after restart".to_vec());
    let received: BTreeSet<Vec<u8>> = drain_subscriber(&broker).await.into_iter().collect();
    assert_eq!(received, expected);
    let port = broker.addr("mqtt").port().to_string();
    let (ok, out, err) = run_tool(
        "mosquitto_sub",
        &["-h", "127.0.0.1", "-p", &port, "-t", "config/#", "-v", "-C", "1", "-W", "5"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "config/colour blue");
    // Acked deliveries are gone for good.
    assert!(drain_subscriber(&broker).await.is_empty());
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() {
    let setup = setup(100_000);
    let broker = start(&setup).await;
    park_subscriber(&broker).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let publishing = tokio::spawn(publish_many(broker.addr("mqtt"), 20_000, progress.clone()));
    // Pull the plug mid-stream, once acknowledgements are flowing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while progress.load(Ordering::Relaxed) < 300 {
        assert!(tokio::time::Instant::now() < deadline, "acknowledgements did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    broker.kill().await;
    let acked = publishing.await.unwrap();
    assert!(acked.len() < 20_000, "the kill came mid-stream");

    let broker = start(&setup).await;
    let received: BTreeSet<Vec<u8>> = drain_subscriber(&broker).await.into_iter().collect();
    eprintln!("acknowledged before kill -9: {}, delivered after restart: {}", acked.len(), received.len());
    let lost: Vec<_> = acked.difference(&received).collect();
    assert!(lost.is_empty(), "{} acknowledged messages lost, e.g. {:?}", lost.len(), lost.first());
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_deliveries_come_back_with_dup() {
    let broker = TestBroker::start(MQTT_ONLY).await;
    let addr = broker.addr("mqtt");
    let (mut sub, _) = RawClient::session(addr, "forgetful", false).await;
    sub.send(&subscribe(1, "jobs/#", 1)).await;
    sub.read(5).await;
    let mut publisher = RawClient::handshake(addr, "producer").await;
    publisher.send(&publish_qos1("jobs/1", 1, b"first", false)).await;
    assert_eq!(publisher.read(4).await, [0x40, 2, 0, 1]);
    let first = sub.next_publish(Duration::from_secs(5)).await.unwrap();
    assert!(!first.dup);
    drop(sub); // never acked

    let (mut sub, present) = RawClient::session(addr, "forgetful", false).await;
    assert!(present);
    let again = sub.next_publish(Duration::from_secs(5)).await.unwrap();
    assert_eq!((again.payload.as_slice(), again.dup), (&b"first"[..], true));
    sub.puback(again.packet_id.unwrap()).await;
    // The session kept its subscription across the reconnect.
    publisher.send(&publish_qos1("jobs/2", 2, b"second", false)).await;
    let second = sub.next_publish(Duration::from_secs(5)).await.unwrap();
    assert_eq!((second.payload.as_slice(), second.dup), (&b"second"[..], false));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_session_discards_the_stored_one() {
    let broker = TestBroker::start(MQTT_ONLY).await;
    let addr = broker.addr("mqtt");
    let (mut sub, _) = RawClient::session(addr, "c", false).await;
    sub.send(&subscribe(1, "t", 1)).await;
    sub.read(5).await;
    sub.send(&[0xe0, 0]).await;
    sub.closed().await;
    assert_eq!(broker.subscriptions(), 1, "the offline session keeps its subscription");
    let (_clean, present) = RawClient::session(addr, "c", true).await;
    assert!(!present);
    assert_eq!(broker.subscriptions(), 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_set_replaced_and_cleared() {
    let broker = TestBroker::start(MQTT_AND_ECHO).await;
    let addr = broker.addr("mqtt");
    let mut publisher = RawClient::handshake(addr, "p").await;
    publisher.send(&publish_qos1("home/lamp", 1, b"on", true)).await;
    publisher.read(4).await;
    publisher.send(&publish_qos1("home/lamp", 2, b"off", true)).await;
    publisher.read(4).await;
    publisher.send(&publish_qos1("home/door", 3, b"open", true)).await;
    publisher.read(4).await;

    let mut sub = RawClient::handshake(addr, "s").await;
    sub.send(&subscribe(1, "home/+", 0)).await;
    sub.read(5).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = sub.next_publish(Duration::from_secs(5)).await.unwrap();
        assert!(m.retain, "stored messages carry RETAIN");
        got.push((m.topic, m.payload));
    }
    got.sort();
    assert_eq!(got, vec![("home/door".into(), b"open".to_vec()), ("home/lamp".into(), b"off".to_vec())]);

    // An empty retained payload clears the topic (and is still forwarded live).
    publisher.send(&publish_qos1("home/door", 4, b"", true)).await;
    publisher.read(4).await;
    let live = sub.next_publish(Duration::from_secs(5)).await.unwrap();
    assert_eq!((live.topic.as_str(), live.retain), ("home/door", false));
    let mut late = LineClient::connect(broker.addr("echo")).await;
    assert!(late.ask("SUB home/#").await.starts_with("+OK"));
    assert_eq!(late.read_line().await.unwrap(), "MSG home/lamp off");
    assert_eq!(late.ask("PING").await, "PONG", "nothing else was retained");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_session_queue_drops_the_oldest() {
    let setup = setup(3);
    let broker = start(&setup).await;
    park_subscriber(&broker).await;
    let acked = publish_many(broker.addr("mqtt"), 5, Arc::default()).await;
    assert_eq!(acked.len(), 5);
    let received = drain_subscriber(&broker).await;
    assert_eq!(received, vec![b"m3".to_vec(), b"m4".to_vec(), b"m5".to_vec()]);
    broker.terminate().await;
}

#[tokio::test]
async fn missing_or_corrupt_data_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("sandport.toml");
    std::fs::write(&config, config_text(&data, 10)).unwrap();
    let run = || async {
        let output = tokio::process::Command::new(sandport_bin())
            .args(["run", "--config"])
            .arg(&config)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run().await;
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!data.exists(), "nothing was created silently");

    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("sandport.redb"), vec![0x5a; 8192]).unwrap();
    let stderr = run().await;
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert_eq!(
        std::fs::read(data.join("sandport.redb")).unwrap(),
        vec![0x5a; 8192],
        "the file is left as it was"
    );
}
