//! The MQTT guest with the Eclipse Paho Python client (paho-mqtt), MQTT 3.1,
//! 3.1.1 and 5.0: every scenario of `tests/python/mqtt_checks.py` against
//! sandport, the common ones also against Debian's mosquitto in the same
//! run, plus settings, grants, WebSocket and a broker restart.

use std::path::Path;
use std::time::Duration;

use sandport_tests::{
    BrokerProcess, TestBroker, free_port, python_scenario, reference_server_on, with_guest_paths,
};

const CONFIG: &str = r#"
    [[listeners]]
    name = "mqtt"
    bind = "127.0.0.1:0"
    protocols = ["mqtt"]

    [[listeners]]
    name = "ws"
    bind = "127.0.0.1:0"
    protocols = ["mqtt"]
    transport = "websocket"

    [protocols.mqtt]
    component = "{mqtt}"
"#;

/// Run one scenario against a fresh in-process broker.
async fn scenario(name: &str) {
    let broker = TestBroker::start(CONFIG).await;
    python_scenario("mqtt_checks.py", name, broker.addr("mqtt").port()).await;
    broker.shutdown().await;
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            scenario(stringify!($name)).await;
        }
    )*};
}

scenarios!(
    v311_qos_levels,
    v31_pubsub,
    v311_retained,
    v311_will,
    v311_dollar_topics,
    v311_unsubscribe,
    v311_persistent_session,
    v311_takeover,
    v311_empty_client_id,
    shared_subscriptions,
    overlapping_subscriptions,
    keepalive_will,
    v5_qos_levels,
    v5_properties,
    v5_message_expiry,
    v5_session_expiry,
    v5_subscription_ids,
    v5_subscribe_options,
    v5_assigned_client_id,
    v5_topic_alias_from_client,
    v5_maximum_packet_size,
    v5_takeover_reason,
    v5_receive_maximum,
    v5_redelivery_on_reconnect,
    v5_will_delay,
    v5_unsubscribe_codes,
    v5_disconnect_with_will,
);

/// The same scenarios hold for Debian's mosquitto, so they test the
/// specification, not sandport's reading of it. (mosquitto 2.0.11 skips a
/// few MUSTs the scenarios check strictly on sandport; see the script.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_scenarios_also_pass_on_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    let port = free_port();
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
        .unwrap();
    let program = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
    let (_server, _) = reference_server_on(port, program, &["-c", &conf.display().to_string()]).await;
    let script = sandport_tests::workspace_root().join("tests/python/mqtt_checks.py");
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("python3")
            .arg(&script)
            .args(["common", &port.to_string(), "lenient"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("scenarios finish in time")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.trim() == "ok", "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_limits_reach_connack() {
    let broker = TestBroker::start(&format!(
        r#"{CONFIG}
        [protocols.mqtt.limits]
        max_frame_bytes = 65536
        [protocols.mqtt.settings]
        receive_maximum = 20
        topic_alias_maximum = 4
        max_keep_alive = 30
        "#
    ))
    .await;
    python_scenario("mqtt_checks.py", "v5_connack_limits", broker.addr("mqtt").port()).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_back_as_reason_codes() {
    let broker = TestBroker::start(&format!(
        r#"{CONFIG}
        [protocols.mqtt.grants]
        publish = ["allowed/#"]
        subscribe = ["allowed/#"]
        "#
    ))
    .await;
    python_scenario("mqtt_checks.py", "v5_not_authorized", broker.addr("mqtt").port()).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket() {
    let broker = TestBroker::start(CONFIG).await;
    python_scenario("mqtt_checks.py", "websocket", broker.addr("ws").port()).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = dir.path().join("sandport.toml");
    let text = format!("[storage]\nengine = \"embedded\"\ndata_dir = \"{}\"\n{CONFIG}", data.display());
    std::fs::write(&config, with_guest_paths(&text)).unwrap();

    let broker = BrokerProcess::start(&config, &["mqtt"]).await;
    python_scenario("mqtt_checks.py", "restart_before", broker.addr("mqtt").port()).await;
    broker.terminate().await;
    let broker = BrokerProcess::start(&config, &["mqtt"]).await;
    python_scenario("mqtt_checks.py", "restart_after", broker.addr("mqtt").port()).await;
    broker.terminate().await;
}
