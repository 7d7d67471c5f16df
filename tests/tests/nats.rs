//! The NATS guest with the official Python client (nats-py) and raw
//! protocol lines; one test crosses from MQTT to NATS byte for byte.

use std::time::Duration;

use sandport_tests::mqtt::{RawClient, publish};
use sandport_tests::{LineClient, TestBroker, converse, python_scenario, reference_server, run_tool};

const CONFIG: &str = r#"
    [[listeners]]
    name = "nats"
    bind = "127.0.0.1:0"
    protocols = ["nats"]

    [[listeners]]
    name = "mqtt"
    bind = "127.0.0.1:0"
    protocols = ["mqtt"]

    [protocols.nats]
    component = "{nats}"
    [protocols.nats.limits]
    max_frame_bytes = 69632    # max_payload 65530 plus a control line

    [protocols.mqtt]
    component = "{mqtt}"
"#;

/// Run one scenario of `tests/python/nats_checks.py` against the broker.
async fn scenario(name: &str) {
    let broker = TestBroker::start(CONFIG).await;
    python_scenario("nats_checks.py", name, broker.addr("nats").port()).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_pub_sub() {
    scenario("pubsub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_wildcards() {
    scenario("wildcards").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_queue_groups() {
    scenario("queue_groups").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_request_reply_and_no_responders() {
    scenario("request_reply").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_headers() {
    scenario("headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_unsubscribe_with_max() {
    scenario("unsub_max").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_no_echo() {
    scenario("no_echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_ping_info_and_payload_limit() {
    scenario("ping_and_info").await;
}

/// A raw client past the INFO line.
async fn raw(broker: &TestBroker) -> LineClient {
    let mut client = LineClient::connect(broker.addr("nats")).await;
    let info = client.read_line().await.unwrap();
    assert!(info.starts_with("INFO {") && info.ends_with("}\r"), "{info}");
    client
}

/// A quiet client subscribed to `subject` with sid `sid`, once the
/// broker has the subscription.
async fn subscriber(broker: &TestBroker, subject: &str, sid: u32) -> LineClient {
    let mut client = raw(broker).await;
    client.send(format!("CONNECT {{\"verbose\":false}}\r\nSUB {subject} {sid}\r\nPING\r\n").as_bytes()).await;
    assert_eq!(client.read_line().await.unwrap(), "PONG\r");
    client
}

/// A `PUB` of `payload` to `subject`.
fn pub_op(subject: &str, payload: &str) -> String {
    format!("PUB {subject} {}\r\n{payload}\r\n", payload.len())
}

/// Send `pubs` from a new quiet client in one write, and wait until the
/// broker has handled them (a PING answered after them).
async fn publish_pipelined(broker: &TestBroker, pubs: &str) {
    let mut publisher = raw(broker).await;
    publisher.send(format!("CONNECT {{\"verbose\":false}}\r\n{pubs}PING\r\n").as_bytes()).await;
    assert_eq!(publisher.read_line().await.unwrap(), "PONG\r");
}

/// Read the next delivery and check it is `payload` on `subject` for `sid`.
async fn expect_msg(client: &mut LineClient, subject: &str, sid: u32, payload: &str) {
    assert_eq!(client.read_line().await.unwrap(), format!("MSG {subject} {sid} {}\r", payload.len()));
    assert_eq!(client.read_line().await.unwrap(), format!("{payload}\r"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_protocol_lines() {
    let broker = TestBroker::start(CONFIG).await;
    let mut client = raw(&broker).await;
    client.send(b"CONNECT {\"verbose\":true}\r\n").await;
    assert_eq!(client.read_line().await.unwrap(), "+OK\r");
    client.send(b"ping\r\n").await;
    assert_eq!(client.read_line().await.unwrap(), "PONG\r");
    client.send(b"SUB foo..bar 1\r\n").await;
    assert_eq!(client.read_line().await.unwrap(), "-ERR 'Invalid Subject'\r");
    client.send(b"SUB foo.* 1\r\nPUB foo.x 5\r\nhello\r\n").await;
    assert_eq!(client.read_line().await.unwrap(), "+OK\r");
    assert_eq!(client.read_line().await.unwrap(), "+OK\r");
    assert_eq!(client.read_line().await.unwrap(), "MSG foo.x 1 5\r");
    assert_eq!(client.read_line().await.unwrap(), "hello\r");
    // Counted when the guest's call ends, which is before its output is sent.
    assert_eq!(broker.counter("nats", "publishes"), 1);
    client.send(b"BOGUS\r\n").await;
    assert_eq!(client.expect_closed().await, vec!["-ERR 'Unknown Protocol Operation'\r"]);

    let mut big = raw(&broker).await;
    big.send(b"PUB foo 70000\r\n").await;
    assert_eq!(big.expect_closed().await, vec!["-ERR 'Maximum Payload Violation'\r"]);
    assert_eq!(broker.counter("nats", "publishes"), 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_to_nats_byte_for_byte() {
    let broker = TestBroker::start(CONFIG).await;
    let mut nats = subscriber(&broker, "bridge.>", 9).await;
    // Every byte value, twice, so CR, LF and NUL all cross.
    let payload: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, &payload).unwrap();
    let port = broker.addr("mqtt").port().to_string();
    let file = file.display().to_string();
    let (ok, _, stderr) =
        run_tool("mosquitto_pub", &["-h", "127.0.0.1", "-p", &port, "-t", "bridge/binary", "-f", &file])
            .await;
    assert!(ok, "{stderr}");
    assert_eq!(nats.read_line().await.unwrap(), format!("MSG bridge.binary 9 {}\r", payload.len()));
    let mut received = Vec::new();
    while received.len() < payload.len() + 2 {
        let line = tokio::time::timeout(Duration::from_secs(5), nats.read_raw_line()).await.unwrap();
        received.extend(line);
    }
    assert_eq!(&received[..payload.len()], payload.as_slice());
    assert_eq!(&received[payload.len()..], b"\r\n");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_like_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nats.conf");
    std::fs::write(&config, "max_payload: 65530\n").unwrap();
    let config = config.display().to_string();
    let (_reference, reference) =
        reference_server("nats-server", &["-c", &config, "-a", "127.0.0.1", "-p", "{port}"]).await;
    let broker = TestBroker::start(CONFIG).await;
    let sessions: &[&[&[u8]]] = &[
        &[
            b"CONNECT {\"verbose\":true}\r\n",
            b"ping\r\n",
            b"SUB foo..bar 1\r\n",
            b"SUB foo.* 1\r\nPUB foo.x 5\r\nhello\r\n",
            b"BOGUS\r\n",
        ],
        &[b"CONNECT {}\r\n", b"PUB foo 70000\r\n"],
        &[b"CONNECT {}\r\n", b"PUB foo\r\n"],
        &[b"CONNECT {}\r\n", b"PUB foo.* 2\r\nhi\r\n", b"PING\r\n"],
        &[b"CONNECT {\"verbose\":true}\r\n", b"UNSUB 99\r\n", b"PUB a 2\r\nhiX\r\n"],
        &[
            b"CONNECT {\"verbose\":false}\r\n",
            b"SUB q.> 1\r\nSUB q.> 2\r\nUNSUB 2\r\nPUB q.a 1\r\nx\r\nPING\r\n",
        ],
        &[b"CONNECT {bad json\r\n"],
        // Before CONNECT: nats-server's defaults (verbose, pedantic).
        &[b"SUB foo 1\r\nPUB foo.* 1\r\nx\r\nPING\r\n"],
        // Not pedantic: publish subjects are not checked.
        &[
            b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n",
            b"PUB foo..bar 1\r\na\r\nPUB b.* 1\r\nb\r\nPING\r\n",
        ],
        // Not pedantic: `*` and `>` published are plain tokens, which only
        // wildcard subscriptions match.
        &[
            b"CONNECT {\"verbose\":false}\r\n",
            b"SUB a.b 1\r\nSUB a.* 2\r\nPUB a.* 1\r\nx\r\nPUB a.b.> 1\r\ny\r\nPING\r\n",
        ],
        &[b"CONNECT {\"verbose\":false}\r\n", b"SUB > 3\r\nPUB a.> 1\r\ny\r\nPUB * 1\r\nz\r\nPING\r\n"],
        // Empty tokens: routed to nobody, not even `>`.
        &[
            b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n",
            b"SUB a.*.b 1\r\nSUB > 2\r\nPUB a..b 1\r\nx\r\nPUB .a 1\r\ny\r\nPUB a. 1\r\nz\r\nPING\r\n",
        ],
        // Operations that take arguments, sent bare.
        &[b"CONNECT {}\r\n", b"PUB\r\n"],
        &[b"CONNECT {}\r\n", b"UNSUB\r\n"],
        // An empty header block is no header block.
        &[b"CONNECT {\"verbose\":false,\"headers\":true}\r\n", b"SUB h 1\r\nHPUB h 0 2\r\nhi\r\nPING\r\n"],
        // A sid already in use keeps its subscription.
        &[
            b"CONNECT {\"verbose\":false}\r\n",
            b"SUB a 1\r\nSUB b 1\r\nPUB a 1\r\nx\r\nPUB b 1\r\ny\r\nPING\r\n",
        ],
        // Any word is a queue name; HPUB needs headers announced in CONNECT.
        &[
            b"CONNECT {\"verbose\":true}\r\n",
            b"SUB a q.* 1\r\nSUB b > 2\r\nHPUB a 12 12\r\nNATS/1.0\r\n\r\n\r\n",
        ],
        // `+` and `#` are ordinary subject characters in NATS.
        &[b"CONNECT {\"verbose\":false}\r\n", b"SUB c++.#.> 1\r\nPUB c++.#.x 1\r\nz\r\nPING\r\n"],
        // A publisher's PUBs arriving together are published in one host
        // call and answered in order: a refused subject among them, a PING
        // between them, then an HPUB the connection did not announce.
        &[
            b"CONNECT {\"verbose\":true,\"pedantic\":true}\r\n",
            b"PUB a 1\r\nx\r\nPUB a.* 1\r\nx\r\nPUB b 2\r\nyz\r\nPING\r\nPUB c 1\r\nz\r\nPUB d 0\r\n\r\n",
            b"PUB e 1\r\nz\r\nPUB f 1\r\nz\r\nHPUB g 12 12\r\nNATS/1.0\r\n\r\n\r\nPUB h 1\r\nz\r\n",
        ],
        // Operations split anywhere across writes: in a verb, a payload,
        // between CR and LF.
        &[
            b"CONNECT {\"verbose\":false}\r\nSUB s.> 7\r\nPU",
            b"B s.a 11\r\nhello",
            b" world\r",
            b"\nPUB s.b 3\r\nab",
            b"c\r\nPI",
            b"NG\r\n",
        ],
    ];
    for lines in sessions {
        let expected = converse(reference, true, lines).await;
        let actual = converse(broker.addr("nats"), true, lines).await;
        assert_eq!(actual, expected, "session {lines:?}");
    }
    // A payload near max_payload arriving over several reads: the guest
    // says how many bytes the PUB needs and the host waits for them.
    let payload = "p".repeat(60_000);
    let big = format!("CONNECT {{\"verbose\":false}}\r\nSUB big 1\r\nPUB big 60000\r\n{payload}\r\nPING\r\n");
    let big = big.as_bytes();
    let writes: [&[u8]; 4] = [&big[..50], &big[50..20_000], &big[20_000..59_000], &big[59_000..]];
    let expected = converse(reference, true, &writes).await;
    let actual = converse(broker.addr("nats"), true, &writes).await;
    assert!(
        expected.starts_with("MSG big 1 60000\r\npppp") && expected.ends_with("PONG\r\n"),
        "{expected:.40}"
    );
    assert_eq!(actual, expected);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_queue_and_mqtt_shared_subscription_balance_together() {
    use sandport_tests::mqtt::{RawClient, subscribe};
    let broker = TestBroker::start(CONFIG).await;
    let mut nats = raw(&broker).await;
    nats.send(b"CONNECT {\"verbose\":false}\r\nSUB work workers 1\r\nPING\r\n").await;
    assert_eq!(nats.read_line().await.unwrap(), "PONG\r");
    let mut mqtt = RawClient::handshake(broker.addr("mqtt"), "worker").await;
    mqtt.send(&subscribe(1, "$share/workers/work", 0)).await;
    assert_eq!(mqtt.read(5).await, [0x90, 3, 0, 1, 0]);

    let mut publisher = raw(&broker).await;
    publisher.send(b"CONNECT {\"verbose\":false}\r\n").await;
    for i in 0..10 {
        publisher.send(format!("PUB work 1\r\n{i}\r\n").as_bytes()).await;
    }
    publisher.send(b"PING\r\n").await;
    assert_eq!(publisher.read_line().await.unwrap(), "PONG\r");

    // One group, two members from two protocols: each message once, shared.
    let mut mqtt_count = 0;
    while mqtt.next_publish(Duration::from_millis(500)).await.is_some() {
        mqtt_count += 1;
    }
    nats.send(b"PING\r\n").await;
    let mut nats_count = 0;
    loop {
        let line = nats.read_line().await.unwrap();
        if line == "PONG\r" {
            break;
        }
        if line.starts_with("MSG work 1 1") {
            nats_count += 1;
        }
    }
    assert_eq!(mqtt_count + nats_count, 10, "mqtt {mqtt_count} + nats {nats_count}");
    assert!(mqtt_count > 0 && nats_count > 0, "mqtt {mqtt_count} + nats {nats_count}");
    broker.shutdown().await;
}

/// PUBs pipelined in one write, some to subjects nobody subscribed, reach
/// a subscriber on another connection all and in order.
/// A subscription without wildcards is answered with its own subject, a
/// wildcard one with the subject mapped back from the topic: both must be
/// the subject as published, escapes included, from NATS or from MQTT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_and_wildcard_subscribers_see_the_subject_as_published() {
    let broker = TestBroker::start(CONFIG).await;
    let subjects = ["plain.subject", "a/b.c", "x+y.#.z%2F", "é.ü"];
    let mut literal = Vec::new();
    for (sid, subject) in (0u32..).zip(subjects) {
        literal.push(subscriber(&broker, subject, sid).await);
    }
    let mut wildcard = subscriber(&broker, ">", 99).await;
    let pubs: String = subjects.iter().map(|subject| pub_op(subject, subject)).collect();
    publish_pipelined(&broker, &pubs).await;
    for ((sid, subject), client) in (0u32..).zip(subjects).zip(&mut literal) {
        expect_msg(client, subject, sid, subject).await;
    }
    for subject in subjects {
        expect_msg(&mut wildcard, subject, 99, subject).await;
    }
    // The MQTT topic `m/a%2Fb` is the NATS subject `m.a/b`.
    let mut from_mqtt = subscriber(&broker, "m.a/b", 7).await;
    let mut mqtt = RawClient::handshake(broker.addr("mqtt"), "publisher").await;
    mqtt.send(&publish("m/a%2Fb", b"hi")).await;
    expect_msg(&mut from_mqtt, "m.a/b", 7, "hi").await;
    expect_msg(&mut wildcard, "m.a/b", 99, "hi").await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_reach_a_subscriber_in_order() {
    let broker = TestBroker::start(CONFIG).await;
    let mut subscriber = subscriber(&broker, "p.>", 1).await;
    let unsubscribed = |i: &usize| i % 7 == 3;
    let pubs: String = (0..300)
        .map(|i| pub_op(&format!("{}.{i}", if unsubscribed(&i) { "q" } else { "p" }), &i.to_string()))
        .collect();
    publish_pipelined(&broker, &pubs).await;
    for i in (0..300).filter(|i| !unsubscribed(i)) {
        expect_msg(&mut subscriber, &format!("p.{i}"), 1, &i.to_string()).await;
    }
    assert_eq!(broker.counter("nats", "publishes"), 300);
    subscriber.send(b"PING\r\n").await;
    assert_eq!(subscriber.read_line().await.unwrap(), "PONG\r");
    broker.shutdown().await;
}

/// A read of 16 KiB holds about 1 500 of these short PUBs, more than one
/// `publish-batch` call takes: the guest must split the run, and every
/// message still arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_one_publish_batch_is_split() {
    let broker = TestBroker::start(CONFIG).await;
    let mut subscriber = subscriber(&broker, "p", 1).await;
    // Mostly empty PUBs (11 bytes each), every hundredth numbered.
    let payload = |i: usize| if i.is_multiple_of(100) { i.to_string() } else { String::new() };
    let pubs: String = (0..5000).map(|i| pub_op("p", &payload(i))).collect();
    publish_pipelined(&broker, &pubs).await;
    for i in 0..5000 {
        expect_msg(&mut subscriber, "p", 1, &payload(i)).await;
    }
    assert_eq!(broker.counter("nats", "faults_violation"), 0);
    assert_eq!(broker.counter("nats", "publishes"), 5000);
    broker.shutdown().await;
}
