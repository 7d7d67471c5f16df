//! The example `echo` guest over a raw socket: replies, pub/sub, limits.

use std::time::Duration;

use sandport_tests::{LineClient, TestBroker};

const CONFIG: &str = r#"
    [[listeners]]
    name = "echo"
    bind = "127.0.0.1:0"
    protocols = ["echo"]

    [protocols.echo]
    component = "{echo}"
    [protocols.echo.limits]
    max_frame_bytes = 1024
    [protocols.echo.grants]
    publish = ["chat/#"]
    subscribe = ["chat/#"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_round_trip() {
    let broker = TestBroker::start(CONFIG).await;
    let mut client = LineClient::connect(broker.addr("echo")).await;
    assert_eq!(client.ask("PING").await, "PONG");
    assert_eq!(client.ask("ECHO hello, world").await, "hello, world");
    assert_eq!(client.ask("BOGUS").await, "-ERR unknown command 'BOGUS'");
    // Several commands in one write come back in order.
    client.send(b"PING\nECHO one\nECHO two\n").await;
    assert_eq!(client.read_line().await.unwrap(), "PONG");
    assert_eq!(client.read_line().await.unwrap(), "one");
    assert_eq!(client.read_line().await.unwrap(), "two");
    client.send_line("QUIT").await;
    assert_eq!(client.expect_closed().await, vec!["+BYE"]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_wildcard_subscribers_only_while_subscribed() {
    let broker = TestBroker::start(CONFIG).await;
    let mut alice = LineClient::connect(broker.addr("echo")).await;
    let mut bob = LineClient::connect(broker.addr("echo")).await;
    let subscribed = alice.ask("SUB chat/+/general").await;
    assert!(subscribed.starts_with("+OK "), "{subscribed}");
    let id = subscribed.trim_start_matches("+OK ").to_string();

    assert_eq!(bob.ask("PUB chat/eu/general hi alice").await, "+OK 1");
    assert_eq!(alice.read_line().await.unwrap(), "MSG chat/eu/general hi alice");
    assert_eq!(bob.ask("PUB chat/eu/random not for alice").await, "+OK 0");

    assert_eq!(alice.ask(&format!("UNSUB {id}")).await, "+OK");
    assert_eq!(bob.ask("PUB chat/eu/general gone").await, "+OK 0");
    assert!(alice.ask("UNSUB 999").await.starts_with("-ERR"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_enforced_by_the_host() {
    let broker = TestBroker::start(CONFIG).await;
    let mut client = LineClient::connect(broker.addr("echo")).await;
    let refused = client.ask("PUB admin/x nope").await;
    assert!(refused.starts_with("-ERR") && refused.contains("not granted"), "{refused}");
    let refused = client.ask("SUB #").await;
    assert!(refused.starts_with("-ERR") && refused.contains("not granted"), "{refused}");
    let refused = client.ask("SUB chat/#/x").await;
    assert!(refused.starts_with("-ERR"), "{refused}");
    // The connection is still fine.
    assert_eq!(client.ask("PING").await, "PONG");
    assert_eq!(broker.counter("echo", "publishes"), 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_line_closes_only_that_connection() {
    let broker = TestBroker::start(CONFIG).await;
    let mut bystander = LineClient::connect(broker.addr("echo")).await;
    let mut client = LineClient::connect(broker.addr("echo")).await;
    client.send(&[b'A'; 4096]).await;
    assert!(client.expect_closed().await.is_empty());
    assert_eq!(broker.counter("echo", "framing_errors"), 1);
    assert_eq!(bystander.ask("PING").await, "PONG");
    broker.shutdown().await;
}

/// Shutting down asks every open connection to close at once: a quiet one,
/// a subscribed one and one halfway through a line all end long before the
/// grace period, which is there only for connections slow to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_connections_at_once() {
    let config = format!("[broker]\nshutdown_grace_ms = 60000\n{CONFIG}");
    let broker = TestBroker::start(&config).await;
    let addr = broker.addr("echo");
    let mut quiet = LineClient::connect(addr).await;
    assert_eq!(quiet.ask("PING").await, "PONG");
    let mut subscribed = LineClient::connect(addr).await;
    assert!(subscribed.ask("SUB chat/#").await.starts_with("+OK "));
    let mut halfway = LineClient::connect(addr).await;
    assert_eq!(halfway.ask("PING").await, "PONG");
    halfway.send(b"ECHO not finish").await;

    tokio::time::timeout(Duration::from_secs(10), broker.shutdown())
        .await
        .expect("shutdown waited for the grace period: the connections were not told to close");
    for mut client in [quiet, subscribed, halfway] {
        assert!(client.expect_closed().await.is_empty());
    }
}
