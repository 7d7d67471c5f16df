//! Hostile guests stop only their own connection: the broker, other
//! connections of the same protocol and other protocols carry on.

use sandport_tests::{LineClient, TestBroker};

const CONFIG: &str = r#"
    [[listeners]]
    name = "hostile"
    bind = "127.0.0.1:0"
    protocols = ["hostile"]

    [[listeners]]
    name = "echo"
    bind = "127.0.0.1:0"
    protocols = ["echo"]

    [[listeners]]
    name = "shared"
    bind = "127.0.0.1:0"
    protocols = ["hostile", "echo"]
    probe_timeout_ms = 500

    [protocols.hostile]
    component = "{hostile}"
    [protocols.hostile.limits]
    call_deadline_ms = 50
    memory_bytes = 8388608
    outbound_buffer_bytes = 1048576

    [protocols.echo]
    component = "{echo}"
"#;

/// Send `command` on a fresh hostile connection, expect it to be closed and
/// `counter` to move, and check that everyone else still works.
async fn misbehaves(command: &str, counter: &str) {
    let broker = TestBroker::start(CONFIG).await;
    let mut same_protocol = LineClient::connect(broker.addr("hostile")).await;
    let mut other_protocol = LineClient::connect(broker.addr("echo")).await;
    assert_eq!(same_protocol.ask("echo before").await, "before");

    let mut attacker = LineClient::connect(broker.addr("hostile")).await;
    attacker.send_line(command).await;
    attacker.expect_closed().await;
    broker.wait_counter("hostile", counter, 1).await;

    assert_eq!(same_protocol.ask("echo after").await, "after");
    assert_eq!(other_protocol.ask("PING").await, "PONG");
    let mut newcomer = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(newcomer.ask("echo new").await, "new");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_deadline() {
    misbehaves("loop", "faults_deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_trap() {
    misbehaves("panic", "faults_trap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_refused() {
    misbehaves("oom", "faults_memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_overflow_is_a_trap() {
    misbehaves("recurse", "faults_trap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_flood_is_stopped() {
    misbehaves("flood", "faults_violation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_guests_do_not_starve_other_connections() {
    let broker = TestBroker::start(CONFIG).await;
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let mut attacker = LineClient::connect(broker.addr("hostile")).await;
        attacker.send_line("loop").await;
        attackers.push(attacker);
    }
    // While four guests spin (on two worker threads), others are served.
    let mut bystander = LineClient::connect(broker.addr("echo")).await;
    for _ in 0..5 {
        assert_eq!(bystander.ask("PING").await, "PONG");
    }
    for attacker in &mut attackers {
        attacker.expect_closed().await;
    }
    assert_eq!(broker.counter("hostile", "faults_deadline"), 4);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_probe_drops_that_candidate_only() {
    let broker = TestBroker::start(CONFIG).await;
    // The hostile guest spins in probe; it is stopped, and echo still gets
    // to decide (it does not match either, so the connection is closed).
    let mut client = LineClient::connect(broker.addr("shared")).await;
    client.send_line("loop-probe").await;
    client.expect_closed().await;
    assert_eq!(broker.counter("hostile", "faults_deadline"), 1);
    // A real echo client on the same port is unaffected.
    let mut echo = LineClient::connect(broker.addr("shared")).await;
    assert_eq!(echo.ask("PING").await, "PONG");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_after_a_trap() {
    let broker = TestBroker::start(CONFIG).await;
    let mut watcher = LineClient::connect(broker.addr("echo")).await;
    assert!(watcher.ask("SUB wills/#").await.starts_with("+OK"));
    let mut victim = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(victim.ask("will wills/victim crashed").await, "+OK");
    victim.send_line("panic").await;
    victim.expect_closed().await;
    assert_eq!(watcher.read_line().await.unwrap(), "MSG wills/victim crashed");
    broker.shutdown().await;
}
