//! A client that stops reading costs the broker at most its outbound
//! buffer: at-most-once deliveries are dropped first, then an at-least-once
//! delivery it cannot take closes it. Everyone else is unaffected.

use sandport_tests::TestBroker;
use sandport_tests::mqtt::{RawClient, connect, publish, publish_qos1, subscribe};

const CONFIG: &str = r#"
    [[listeners]]
    name = "mqtt"
    bind = "127.0.0.1:0"
    protocols = ["mqtt"]

    [protocols.mqtt]
    component = "{mqtt}"
    [protocols.mqtt.limits]
    max_frame_bytes = 8192
    outbound_buffer_bytes = 65536
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_loses_at_most_once_then_is_disconnected() {
    let broker = TestBroker::start(CONFIG).await;
    let addr = broker.addr("mqtt");
    let mut slow = RawClient::connect_small_buffer(addr).await;
    slow.send(&connect("slow", 60, true, None)).await;
    assert_eq!(slow.read(4).await, [0x20, 2, 0, 0]);
    slow.send(&subscribe(1, "flood/#", 1)).await;
    assert_eq!(slow.read(5).await, [0x90, 3, 0, 1, 1]);
    let mut healthy = RawClient::handshake(addr, "healthy").await;
    healthy.send(&subscribe(1, "other", 0)).await;
    healthy.read(5).await;

    // 16 MB at QoS 0: far more than the outbound buffer.
    let mut publisher = RawClient::handshake(addr, "publisher").await;
    let payload = vec![b'x'; 4000];
    for _ in 0..4000 {
        publisher.send(&publish("flood/a", &payload)).await;
    }
    // At-least-once deliveries are not dropped: once the kernel's buffers
    // and ours are full, the next one disconnects the client.
    for id in 1..=4000u16 {
        publisher.send(&publish_qos1("flood/b", id, &payload, false)).await;
        assert_eq!(publisher.read(4).await[..2], [0x40, 2]);
        if broker.counter("mqtt", "slow_consumers") > 0 {
            break;
        }
    }
    broker.wait_counter("mqtt", "slow_consumers", 1).await;
    assert!(broker.counter("mqtt", "deliveries_dropped") > 0);
    // The others carry on.
    publisher.send(&publish("other", b"still here")).await;
    let message = healthy.next_publish(sandport_tests::WAIT).await.unwrap();
    assert_eq!(message.payload, b"still here");
    broker.shutdown().await;
}
