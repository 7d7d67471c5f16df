//! Host calls beyond pub/sub, through the greeter guest: key-value with
//! conditions, counters and time to live; connection names, listing and
//! closing; broker-wide subscription counts.

use std::time::Duration;

use sandport_tests::{LineClient, TestBroker, WAIT};

const CONFIG: &str = r#"
    [[listeners]]
    name = "greeter"
    bind = "127.0.0.1:0"
    protocols = ["greeter"]

    [[listeners]]
    name = "echo"
    bind = "127.0.0.1:0"
    protocols = ["echo"]

    [protocols.greeter]
    component = "{greeter}"
    [protocols.echo]
    component = "{echo}"
"#;

/// Connect and return the client and its connection id from the greeting.
async fn greeter(broker: &TestBroker) -> (LineClient, u64) {
    let mut client = LineClient::connect(broker.addr("greeter")).await;
    let hello = client.read_line().await.unwrap();
    let id = hello.trim_start_matches("HELLO ").parse().unwrap();
    (client, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_conditions_counters_and_expiry() {
    let broker = TestBroker::start(CONFIG).await;
    let (mut a, _) = greeter(&broker).await;
    assert_eq!(a.ask("SETNX lock a").await, "1");
    assert_eq!(a.ask("SETNX lock b").await, "0");
    assert_eq!(a.ask("GET lock").await, "a");
    assert_eq!(a.ask("INCR hits").await, "1");
    let (mut b, _) = greeter(&broker).await;
    assert_eq!(b.ask("INCR hits").await, "2", "counters are shared by the protocol's connections");
    assert!(b.ask("INCR lock").await.starts_with("-ERR"), "not an integer");
    assert_eq!(b.ask("TTL hits").await, "-1");
    assert_eq!(b.ask("TTL nothing").await, "-2");
    assert_eq!(b.ask("SETPX soon 100 x").await, "+OK");
    let ttl: u64 = b.ask("TTL soon").await.parse().unwrap();
    assert!(ttl <= 100, "{ttl}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(b.ask("GET soon").await, "(nil)");
    assert_eq!(b.ask("SET user:1 ann").await, "+OK");
    assert_eq!(b.ask("SET user:2 bob").await, "+OK");
    assert_eq!(b.ask("COUNT user:").await, "2");
    assert_eq!(b.ask("CLEAR user:").await, "2");
    assert_eq!(b.ask("COUNT ").await, "2", "lock and hits remain");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_named_listed_and_closed_on_request() {
    let broker = TestBroker::start(CONFIG).await;
    let (mut admin, admin_id) = greeter(&broker).await;
    let (mut victim, victim_id) = greeter(&broker).await;
    assert_eq!(victim.ask("NAME worker-7").await, "+OK");
    let listed = admin.ask("LIST").await;
    assert!(listed.contains(&format!("{admin_id}:-")), "{listed}");
    assert!(listed.contains(&format!("{victim_id}:worker-7")), "{listed}");
    assert_eq!(admin.ask(&format!("KILL {victim_id}")).await, "+OK");
    assert!(victim.expect_closed().await.is_empty());
    assert!(admin.ask("KILL 999999").await.starts_with("-ERR"));
    // The victim leaves the list once its task has ended.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = admin.ask("LIST").await;
        if listed == format!("{admin_id}:-") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still listed: {listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_counts_span_protocols() {
    let broker = TestBroker::start(CONFIG).await;
    let mut one = LineClient::connect(broker.addr("echo")).await;
    let mut two = LineClient::connect(broker.addr("echo")).await;
    assert!(one.ask("SUB news/+").await.starts_with("+OK"));
    assert!(two.ask("SUB news/+").await.starts_with("+OK"));
    assert!(two.ask("SUB alerts/#").await.starts_with("+OK"));
    let (mut greeter, _) = greeter(&broker).await;
    assert_eq!(greeter.ask("SUBS").await, "alerts/#=1 news/+=2");
    broker.shutdown().await;
}
