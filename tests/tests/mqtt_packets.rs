//! MQTT 5.0 and QoS 2 at the byte level: what no client library lets a test
//! do on purpose (resending, dropping mid-exchange, breaking rules), and the
//! exact bytes the server answers with.

use std::time::Duration;

use sandport_tests::mqtt::{
    RawClient, ack, connect, connect_v5, packet, publish_v5, subscribe, subscribe_v5,
};
use sandport_tests::{TestBroker, WAIT};

const CONFIG: &str = r#"
    [[listeners]]
    name = "mqtt"
    bind = "127.0.0.1:0"
    protocols = ["mqtt"]

    [protocols.mqtt]
    component = "{mqtt}"
    [protocols.mqtt.limits]
    max_frame_bytes = 1024
    [protocols.mqtt.settings]
    connect_timeout_ms = 500
    receive_maximum = 2
"#;

const QUIET: Duration = Duration::from_millis(400);

/// Session expiry interval property (0x11) of `secs`.
fn session_expiry(secs: u32) -> Vec<u8> {
    let mut property = vec![0x11];
    property.extend_from_slice(&secs.to_be_bytes());
    property
}

/// A level-5 PUBLISH split into (first byte, topic, packet id, properties, payload).
fn parse_v5_publish(packet: &[u8]) -> (u8, String, Option<u16>, Vec<u8>, Vec<u8>) {
    assert_eq!(packet[0] >> 4, 3, "expected PUBLISH, got {packet:?}");
    let mut at = 1;
    while packet[at] & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let topic_len = usize::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
    let topic = String::from_utf8(packet[at + 2..at + 2 + topic_len].to_vec()).unwrap();
    at += 2 + topic_len;
    let packet_id = ((packet[0] >> 1) & 3 > 0).then(|| {
        at += 2;
        u16::from_be_bytes([packet[at - 2], packet[at - 1]])
    });
    let props_len = usize::from(packet[at]); // short property lists only
    let properties = packet[at + 1..at + 1 + props_len].to_vec();
    (packet[0], topic, packet_id, properties, packet[at + 1 + props_len..].to_vec())
}

/// The reason code of a DISCONNECT packet, after which the server closes.
async fn disconnect_reason(client: &mut RawClient) -> u8 {
    let bytes = client.closed().await;
    assert_eq!(bytes.first(), Some(&0xe0), "DISCONNECT expected, got {bytes:?}");
    bytes[2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_is_published_once_even_across_reconnects() {
    let broker = TestBroker::start(CONFIG).await;
    let mut watcher = RawClient::handshake(broker.addr("mqtt"), "watcher").await;
    watcher.send(&subscribe(1, "q2/#", 2)).await;
    assert_eq!(watcher.read(5).await, [0x90, 3, 0, 1, 2]);

    let (mut publisher, _) =
        RawClient::connect_v5(broker.addr("mqtt"), "pub-q2", true, &session_expiry(60)).await;
    let message = publish_v5("q2/a", 2, 10, false, &[], b"exactly once");
    publisher.send(&message).await;
    assert_eq!(publisher.read(4).await, [0x50, 2, 0, 10], "PUBREC");
    let resent = publish_v5("q2/a", 2, 10, true, &[], b"exactly once");
    publisher.send(&resent).await;
    assert_eq!(publisher.read(4).await, [0x50, 2, 0, 10], "PUBREC again, nothing published again");
    // The connection drops before PUBREL; the session keeps packet id 10.
    drop(publisher);
    let (mut publisher, connack) =
        RawClient::connect_v5(broker.addr("mqtt"), "pub-q2", false, &session_expiry(60)).await;
    assert_eq!(connack[2], 1, "session present");
    publisher.send(&resent).await;
    assert_eq!(publisher.read(4).await, [0x50, 2, 0, 10]);
    publisher.send(&ack(6, 10)).await;
    assert_eq!(publisher.read(4).await, [0x70, 2, 0, 10], "PUBCOMP");
    // Released: the id is free again and a new message with it is published.
    publisher.send(&publish_v5("q2/a", 2, 10, false, &[], b"second")).await;
    assert_eq!(publisher.read(4).await, [0x50, 2, 0, 10]);

    let first = watcher.next_publish(WAIT).await.expect("delivered");
    assert_eq!((first.payload.as_slice(), first.qos), (&b"exactly once"[..], 2));
    let second = watcher.next_publish(WAIT).await.expect("delivered");
    assert_eq!(second.payload, b"second");
    assert!(watcher.next_publish(QUIET).await.is_none(), "no duplicate");
    let id = first.packet_id.unwrap().to_be_bytes();
    watcher.send(&ack(5, first.packet_id.unwrap())).await;
    assert_eq!(watcher.read(4).await, [0x62, 2, id[0], id[1]], "PUBREL");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_qos2_resumes_with_pubrel_after_reconnect() {
    let broker = TestBroker::start(CONFIG).await;
    let (mut receiver, _) =
        RawClient::connect_v5(broker.addr("mqtt"), "recv-q2", true, &session_expiry(60)).await;
    receiver.send(&subscribe_v5(1, "out2/#", 2)).await;
    assert_eq!(receiver.read(6).await, [0x90, 4, 0, 1, 0, 2]);
    let (mut sender, _) = RawClient::connect_v5(broker.addr("mqtt"), "send-q2", true, &[]).await;
    sender.send(&publish_v5("out2/x", 2, 1, false, &[], b"twice?")).await;
    assert_eq!(sender.read(4).await, [0x50, 2, 0, 1]);

    let packet = receiver.packet_within(WAIT).await.expect("PUBLISH");
    let (first, topic, id, _, payload) = parse_v5_publish(&packet);
    assert_eq!((first & 0x0f, topic.as_str(), payload.as_slice()), (0x04, "out2/x", &b"twice?"[..]));
    let id = id.unwrap();
    receiver.send(&ack(5, id)).await;
    let pubrel = receiver.packet_within(WAIT).await.expect("PUBREL");
    assert_eq!(pubrel, [0x62, 2, (id >> 8) as u8, id as u8]);
    // Gone before PUBCOMP: on return the server sends PUBREL again, not the message.
    drop(receiver);
    let (mut receiver, connack) =
        RawClient::connect_v5(broker.addr("mqtt"), "recv-q2", false, &session_expiry(60)).await;
    assert_eq!(connack[2], 1);
    let again = receiver.packet_within(WAIT).await.expect("PUBREL resent");
    assert_eq!(again, pubrel);
    receiver.send(&ack(7, id)).await;
    assert!(receiver.packet_within(QUIET).await.is_none(), "the message is not sent again");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_assigns_topic_aliases_up_to_the_client_maximum() {
    let broker = TestBroker::start(CONFIG).await;
    // Topic alias maximum (0x22) of 2.
    let (mut client, _) = RawClient::connect_v5(broker.addr("mqtt"), "aliases", true, &[0x22, 0, 2]).await;
    client.send(&subscribe_v5(1, "ta/#", 0)).await;
    client.read(6).await;
    for topic in ["ta/one", "ta/one", "ta/two", "ta/three", "ta/three", "ta/two"] {
        client.send(&publish_v5(topic, 0, 0, false, &[], topic.as_bytes())).await;
    }
    let mut seen = Vec::new();
    for _ in 0..6 {
        let packet = client.packet_within(WAIT).await.expect("PUBLISH");
        let (_, topic, _, properties, payload) = parse_v5_publish(&packet);
        seen.push((topic, properties, String::from_utf8(payload).unwrap()));
    }
    let expected = [
        ("ta/one", vec![0x23, 0, 1], "ta/one"),
        ("", vec![0x23, 0, 1], "ta/one"),
        ("ta/two", vec![0x23, 0, 2], "ta/two"),
        ("ta/three", vec![], "ta/three"),
        ("ta/three", vec![], "ta/three"),
        ("", vec![0x23, 0, 2], "ta/two"),
    ];
    let expected: Vec<_> = expected.into_iter().map(|(t, p, m)| (t.to_string(), p, m.to_string())).collect();
    assert_eq!(seen, expected);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_protocol_errors_are_explained_before_the_close() {
    let broker = TestBroker::start(CONFIG).await;
    let addr = broker.addr("mqtt");

    let (mut client, _) = RawClient::connect_v5(addr, "e1", true, &[]).await;
    let mut qos3 = publish_v5("t", 0, 0, false, &[], b"x");
    qos3[0] = 0x36;
    client.send(&qos3).await;
    assert_eq!(disconnect_reason(&mut client).await, 0x81, "malformed packet");

    let (mut client, _) = RawClient::connect_v5(addr, "e2", true, &[]).await;
    client.send(&[0xf0, 0]).await;
    assert_eq!(disconnect_reason(&mut client).await, 0x82, "AUTH without enhanced authentication");

    let (mut client, _) = RawClient::connect_v5(addr, "e3", true, &[]).await;
    client.send(&connect_v5("e3", true, &[])).await;
    assert_eq!(disconnect_reason(&mut client).await, 0x82, "second CONNECT");

    let (mut client, connack) = RawClient::connect_v5(addr, "e4", true, &[]).await;
    assert!(connack.windows(5).any(|w| w == [0x27, 0, 0, 4, 0]), "maximum packet size 1024 announced");
    client.send(&[0x30, 0xd0, 0x0f]).await; // a PUBLISH of 2000 bytes
    assert_eq!(disconnect_reason(&mut client).await, 0x95, "packet too large");

    let (mut client, _) = RawClient::connect_v5(addr, "e5", true, &[]).await;
    client.send(&subscribe_v5(1, "$share/g/t", 0x04)).await;
    assert_eq!(disconnect_reason(&mut client).await, 0x82, "no local on a shared subscription");

    let (mut client, _) = RawClient::connect_v5(addr, "e6", true, &[]).await;
    client.send(&publish_v5("", 0, 0, false, &[0x23, 0, 3], b"x")).await;
    assert_eq!(disconnect_reason(&mut client).await, 0x82, "topic alias never set");

    // Refusals at CONNECT come back in the CONNACK.
    let mut client = RawClient::connect(addr).await;
    client.send(&connect_v5("e7", true, &[0x15, 0, 5, b'S', b'C', b'R', b'A', b'M'])).await;
    let refused = client.closed().await;
    assert_eq!(&refused[..4], [0x20, refused[1], 0, 0x8c], "bad authentication method: {refused:?}");
    let mut client = RawClient::connect(addr).await;
    client.send(&connect_v5("e8", true, &[0x21, 0, 0])).await;
    let refused = client.closed().await;
    assert_eq!(refused[3], 0x82, "receive maximum 0: {refused:?}");

    // 3.1.1 has no DISCONNECT from the server: the connection just closes.
    let mut client = RawClient::handshake(addr, "e9").await;
    client.send(&[0xf0, 0]).await;
    assert!(client.closed().await.is_empty());
    let mut client = RawClient::connect(addr).await;
    client.send(&connect("e10", 60, true, None)).await;
    client.read(4).await;
    client.send(&packet(0x82, &[0, 1])).await; // SUBSCRIBE without filters
    assert!(client.closed().await.is_empty());
    // Each violation is counted (the oversized packet as a framing error);
    // the refusals at CONNECT are answers, not violations, except receive maximum 0.
    assert_eq!(broker.counter("mqtt", "protocol_errors"), 8);
    assert_eq!(broker.counter("mqtt", "framing_errors"), 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_connect_is_closed() {
    let broker = TestBroker::start(CONFIG).await;
    let mut silent = RawClient::connect(broker.addr("mqtt")).await;
    let started = tokio::time::Instant::now();
    assert!(silent.closed().await.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450) && waited < Duration::from_secs(5), "{waited:?}");
    // Once CONNECT arrives the keep-alive (here none) takes over.
    let (mut client, _) = RawClient::connect_v5(broker.addr("mqtt"), "patient", true, &[]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.send(&[0xc0, 0]).await;
    assert_eq!(client.read(2).await, [0xd0, 0], "still connected");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_receive_maximum_is_enforced() {
    let broker = TestBroker::start(CONFIG).await;
    let (mut client, connack) = RawClient::connect_v5(broker.addr("mqtt"), "eager", true, &[]).await;
    assert!(connack.windows(3).any(|w| w == [0x21, 0, 2]), "receive maximum 2 announced: {connack:?}");
    // Two unreleased QoS 2 messages are allowed; a third one is a violation.
    for id in 1..=2u8 {
        client.send(&publish_v5("rm/x", 2, id.into(), false, &[], b"x")).await;
        // PUBREC, success with "no matching subscribers" (0x10).
        assert_eq!(client.read(5).await, [0x50, 3, 0, id, 0x10]);
    }
    client.send(&publish_v5("rm/x", 2, 3, false, &[], b"x")).await;
    assert_eq!(disconnect_reason(&mut client).await, 0x93, "receive maximum exceeded");
    broker.shutdown().await;
}
