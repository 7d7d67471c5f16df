//! Hostile guests stop only their own connection: the broker, other
//! connections of the same protocol and other protocols carry on. Each
//! misbehaviour is counted and logged; refused host calls leave the guest
//! running; a guest that keeps faulting trips its protocol's breaker.

use std::time::Duration;

use sandport_tests::{BrokerProcess, LineClient, TestBroker, guest, sandport_bin, with_guest_paths};

const CONFIG: &str = r#"
    [[listeners]]
    name = "hostile"
    bind = "127.0.0.1:0"
    protocols = ["hostile"]

    [[listeners]]
    name = "loop-open"
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

    [[listeners]]
    name = "greedy-shared"
    bind = "127.0.0.1:0"
    protocols = ["echo", "greedy"]

    [protocols.hostile]
    component = "{hostile}"
    [protocols.hostile.limits]
    call_deadline_ms = 50
    memory_bytes = 8388608
    max_frame_bytes = 65536
    outbound_buffer_bytes = 1048576
    call_input_bytes = 1048576
    frame_timeout_ms = 500
    [protocols.hostile.grants]
    publish = ["wills/#", "flood/#", "ok/#"]
    subscribe = ["ok/#"]

    [protocols.echo]
    component = "{echo}"
    [protocols.greedy]
    component = "{greedy}"
    [protocols.greedy.limits]
    call_deadline_ms = 50
"#;

/// Everyone else still works: another connection of the hostile protocol
/// (made before), a new one, and a connection of another protocol.
async fn others_carry_on(broker: &TestBroker, same_protocol: &mut LineClient) {
    assert_eq!(same_protocol.ask("echo still here").await, "still here");
    let mut newcomer = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(newcomer.ask("echo new").await, "new");
    let mut other_protocol = LineClient::connect(broker.addr("echo")).await;
    assert_eq!(other_protocol.ask("PING").await, "PONG");
}

/// Send `command` on a fresh hostile connection, expect it to be closed and
/// `counter` to move, and check that everyone else still works.
async fn misbehaves(command: &str, counter: &str) {
    let broker = TestBroker::start(CONFIG).await;
    let mut same_protocol = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(same_protocol.ask("echo before").await, "before");

    let mut attacker = LineClient::connect(broker.addr("hostile")).await;
    attacker.send_line(command).await;
    attacker.expect_closed().await;
    broker.wait_counter("hostile", counter, 1).await;

    others_carry_on(&broker, &mut same_protocol).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_in_on_stream_hits_the_deadline() {
    // Before finding any frame, and while handling one.
    misbehaves("frame-loop", "faults_deadline").await;
    misbehaves("loop", "faults_deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_in_on_frames_hits_the_deadline() {
    // The greedy guest's frames are split by the host; it spins on `loop`.
    let broker = TestBroker::start(CONFIG).await;
    let mut bystander = LineClient::connect(broker.addr("greedy-shared")).await;
    assert_eq!(bystander.ask("hello").await, "mine");
    let mut attacker = LineClient::connect(broker.addr("greedy-shared")).await;
    attacker.send_line("loop").await;
    attacker.expect_closed().await;
    broker.wait_counter("greedy", "faults_deadline", 1).await;
    assert_eq!(bystander.ask("still").await, "mine");
    let mut echo = LineClient::connect(broker.addr("echo")).await;
    assert_eq!(echo.ask("PING").await, "PONG");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_in_on_timer_hits_the_deadline() {
    misbehaves("timer-loop", "faults_deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_a_trap() {
    misbehaves("panic", "faults_trap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_is_a_trap() {
    misbehaves("unreachable", "faults_trap").await;
}

/// With guarded memory slots the bound is a guard page, not a check in the
/// guest's code: the fault must still end only this connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_outside_memory_is_a_trap() {
    misbehaves("out-of-bounds", "faults_trap").await;
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
async fn publish_flood_is_stopped_by_the_per_call_budget() {
    misbehaves("publish-flood", "faults_violation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_batch_over_the_per_call_budget_is_a_violation() {
    misbehaves("batch-flood", "faults_violation").await;
    misbehaves("batch-long", "faults_violation").await;
}

/// WASI handles are host memory outside the guest's memory limit: a guest
/// may hold a few, and one that takes handles without end is stopped at
/// the cap, long before its call deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_hoarding_wasi_handles_is_stopped_at_the_cap() {
    let broker = TestBroker::start(CONFIG).await;
    let mut modest = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(modest.ask("handles 100").await, "+OK 100");
    assert_eq!(modest.ask("handles 100").await, "+OK 100");
    drop(modest);
    misbehaves("handles 100000000", "faults_trap").await;
    assert_eq!(broker.counter("hostile", "faults_trap"), 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_is_not_utf8_stops_the_guest() {
    misbehaves("bad-utf8", "faults_trap").await;
    misbehaves("bad-utf8-batch", "faults_trap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_stream_scans_are_violations_or_framing_errors() {
    misbehaves("frame-zero", "faults_violation").await;
    misbehaves("frame-long", "faults_violation").await;
    misbehaves("frame-huge", "framing_errors").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_in_on_deliver_hits_the_deadline() {
    let broker = TestBroker::start(CONFIG).await;
    let mut same_protocol = LineClient::connect(broker.addr("hostile")).await;
    let mut attacker = LineClient::connect(broker.addr("hostile")).await;
    assert!(attacker.ask("deliver-loop ok/bait").await.starts_with("+OK"));
    let mut publisher = LineClient::connect(broker.addr("echo")).await;
    assert!(publisher.ask("PUB ok/bait x").await.starts_with("+OK"));
    attacker.expect_closed().await;
    broker.wait_counter("hostile", "faults_deadline", 1).await;
    others_carry_on(&broker, &mut same_protocol).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_in_on_close_and_on_open_hits_the_deadline() {
    let broker = TestBroker::start(CONFIG).await;
    let mut same_protocol = LineClient::connect(broker.addr("hostile")).await;
    let mut attacker = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(attacker.ask("close-loop").await, "+OK");
    drop(attacker);
    broker.wait_counter("hostile", "faults_deadline", 1).await;
    let mut opener = LineClient::connect(broker.addr("loop-open")).await;
    opener.expect_closed().await;
    broker.wait_counter("hostile", "faults_deadline", 2).await;
    others_carry_on(&broker, &mut same_protocol).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_host_calls_leave_the_guest_running() {
    let broker = TestBroker::start(CONFIG).await;
    let mut client = LineClient::connect(broker.addr("hostile")).await;
    client.send_line("huge-topic").await;
    let line = client.read_line().await.unwrap();
    assert!(line.starts_with("-ERR huge topic: ErrorCode::Invalid topic is longer"), "{line}");
    client.send_line("huge-headers").await;
    let line = client.read_line().await.unwrap();
    assert!(line.starts_with("-ERR huge headers: ErrorCode::Invalid") && line.contains("headers"), "{line}");
    client.send_line("bad-ids").await;
    assert!(client.read_line().await.unwrap().starts_with("-ERR unsubscribe: ErrorCode::Invalid"));
    assert!(client.read_line().await.unwrap().starts_with("-ERR ack: ErrorCode::Invalid"));
    client.send_line("outside-grants").await;
    assert!(client.read_line().await.unwrap().starts_with("-ERR publish: ErrorCode::NotAuthorized"));
    assert!(client.read_line().await.unwrap().starts_with("-ERR subscribe: ErrorCode::NotAuthorized"));
    assert_eq!(client.ask("echo alive").await, "alive");
    broker.shutdown().await;
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
async fn a_probe_that_claims_everything_keeps_to_its_own_port() {
    let broker = TestBroker::start(CONFIG).await;
    // On the port it shares, the greedy guest wins even echo's clients...
    let mut captured = LineClient::connect(broker.addr("greedy-shared")).await;
    assert_eq!(captured.ask("PING").await, "mine");
    // ...but nowhere else: echo's own port and other protocols are untouched.
    let mut echo = LineClient::connect(broker.addr("echo")).await;
    assert_eq!(echo.ask("PING").await, "PONG");
    let mut hostile = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(hostile.ask("echo fine").await, "fine");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_frames_time_out() {
    let broker = TestBroker::start(CONFIG).await;
    let mut slow = LineClient::connect(broker.addr("hostile")).await;
    // Half a line, then a byte now and then: the frame never completes in time.
    slow.send(b"echo never").await;
    // On a slow machine the timeout may already have closed the connection.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.try_send(b"!").await.is_err() {
            break;
        }
    }
    slow.expect_closed().await;
    assert_eq!(broker.counter("hostile", "framing_errors"), 1);
    let mut fine = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(fine.ask("echo quick").await, "quick");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_breaker_refuses_then_recovers() {
    let broker = TestBroker::start(&CONFIG.replace(
        "frame_timeout_ms = 500",
        "frame_timeout_ms = 500\n    max_faults = 3\n    fault_window_ms = 5000\n    fault_backoff_ms = 1500",
    ))
    .await;
    for _ in 0..3 {
        let mut attacker = LineClient::connect(broker.addr("hostile")).await;
        attacker.send_line("panic").await;
        attacker.expect_closed().await;
    }
    broker.wait_counter("hostile", "breaker_trips", 1).await;
    // Open: new connections of the protocol are refused at once...
    let mut refused = LineClient::connect(broker.addr("hostile")).await;
    assert!(refused.expect_closed().await.is_empty());
    assert!(broker.counter("hostile", "connections_refused") >= 1);
    // ...while other protocols carry on.
    let mut echo = LineClient::connect(broker.addr("echo")).await;
    assert_eq!(echo.ask("PING").await, "PONG");
    // After the backoff it closes by itself.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let mut back = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(back.ask("echo recovered").await, "recovered");
    broker.shutdown().await;
}

#[tokio::test]
async fn components_outside_the_world_are_refused_at_load() {
    // An empty component: valid, but it exports no handler.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\x00\x01\x00").unwrap();
    let check = |path: std::path::PathBuf| async move {
        let output =
            tokio::process::Command::new(sandport_bin()).arg("check").arg(path).output().await.unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = check(empty).await;
    assert!(stderr.contains("does not export"), "{stderr}");
    // The clocks are named, with the grant that admits them; the
    // filesystem and sockets, which reach nothing, are not refused.
    let stderr = check(guest("foreign")).await;
    assert!(stderr.contains("wasi:clocks/wall-clock") && stderr.contains("grants.clocks"), "{stderr}");
    assert!(!stderr.contains("wasi:filesystem") && !stderr.contains("wasi:sockets"), "{stderr}");
}

/// The `foreign` guest imports the filesystem, sockets and clocks, as the
/// runtimes of many languages do. Granted the clocks, it loads; it can
/// read the time, but opens no file, reaches no address and resolves no
/// name; and a call that waits on the clock is stopped at ten times its
/// deadline, ending its connection only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_imports_reach_nothing_but_the_granted_clocks() {
    let broker = TestBroker::start(
        r#"
        [[listeners]]
        name = "foreign"
        bind = "127.0.0.1:0"
        protocols = ["foreign"]

        [[listeners]]
        name = "echo"
        bind = "127.0.0.1:0"
        protocols = ["echo"]

        [protocols.foreign]
        component = "{foreign}"
        [protocols.foreign.limits]
        call_deadline_ms = 100
        [protocols.foreign.grants]
        clocks = true

        [protocols.echo]
        component = "{echo}"
        "#,
    )
    .await;
    // An address the guest is told to connect to: nothing may arrive.
    let bait = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();

    let mut client = LineClient::connect(broker.addr("foreign")).await;
    let opened = client.read_line().await.expect("the guest's first line");
    assert!(opened.starts_with("read: ") && !opened.ends_with(" bytes"), "{opened}");
    let manifest = sandport_tests::workspace_root().join("Cargo.toml");
    let read = client.ask(&format!("read {}", manifest.display())).await;
    assert!(read.starts_with("read: ") && !read.ends_with(" bytes"), "{read}");
    let connect = client.ask(&format!("connect {}", bait.local_addr().unwrap())).await;
    assert!(connect.starts_with("connect: ") && connect != "connect: connected", "{connect}");
    let resolve = client.ask("resolve localhost").await;
    assert!(resolve.starts_with("resolve: ") && !resolve.ends_with(" addresses"), "{resolve}");
    assert!(tokio::time::timeout(Duration::from_millis(200), bait.accept()).await.is_err());

    // The granted wall clock tells the time.
    let time = client.ask("time").await;
    let guest_secs: u64 = time.strip_prefix("time: ").and_then(|s| s.parse().ok()).expect(&time);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(guest_secs.abs_diff(now) <= 5, "guest {guest_secs}, host {now}");

    // A call that waits an hour is stopped after 10 × 100 ms.
    let mut sleeper = LineClient::connect(broker.addr("foreign")).await;
    sleeper.read_line().await.expect("the guest's first line");
    let started = std::time::Instant::now();
    sleeper.send_line("sleep 3600").await;
    assert!(sleeper.expect_closed().await.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    broker.wait_counter("foreign", "faults_deadline", 1).await;

    // Everyone else carries on.
    assert!(client.ask("time").await.starts_with("time: "));
    let mut echo = LineClient::connect(broker.addr("echo")).await;
    assert_eq!(echo.ask("ECHO still here").await, "still here");
    broker.shutdown().await;
}

/// A component made the preview 1 way (`wasm32-wasip1` and the adapter, as
/// cargo-component and wasi-libc toolchains make them) imports the
/// filesystem and the wall clock even though it uses neither. Granted the
/// clocks, it loads and serves, and messages cross between it and a
/// `wasm32-wasip2` build of the same guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview1_adapted_component_serves_when_granted_the_clocks() {
    let component = sandport_tests::preview1_echo();
    let output =
        tokio::process::Command::new(sandport_bin()).arg("check").arg(&component).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("wasi:clocks/wall-clock") && stderr.contains("--clocks"), "{stderr}");

    let config = r#"
        [[listeners]]
        name = "adapted"
        bind = "127.0.0.1:0"
        protocols = ["adapted"]

        [[listeners]]
        name = "echo"
        bind = "127.0.0.1:0"
        protocols = ["echo"]

        [protocols.adapted]
        component = "{adapted}"
        [protocols.adapted.grants]
        clocks = true

        [protocols.echo]
        component = "{echo}"
    "#
    .replace("{adapted}", &component.display().to_string());
    let broker = TestBroker::start(&config).await;
    let mut adapted = LineClient::connect(broker.addr("adapted")).await;
    assert_eq!(adapted.ask("PING").await, "PONG");
    assert_eq!(adapted.ask("ECHO made the preview 1 way").await, "made the preview 1 way");
    assert!(adapted.ask("SUB across/#").await.starts_with("+OK"));
    let mut echo = LineClient::connect(broker.addr("echo")).await;
    assert!(echo.ask("SUB across/#").await.starts_with("+OK"));
    broker.wait_subscriptions(2).await;
    assert_eq!(echo.ask("PUB across/a from wasip2").await, "+OK 2");
    assert_eq!(adapted.read_line().await.unwrap(), "MSG across/a from wasip2");
    assert_eq!(echo.read_line().await.unwrap(), "MSG across/a from wasip2");
    assert_eq!(adapted.ask("PUB across/b from wasip1").await, "+OK 2");
    assert_eq!(echo.read_line().await.unwrap(), "MSG across/b from wasip1");
    assert_eq!(adapted.read_line().await.unwrap(), "MSG across/b from wasip1");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_are_held_by_the_caps() {
    let broker = TestBroker::start(
        r#"
        [[listeners]]
        name = "capped"
        bind = "127.0.0.1:0"
        protocols = ["echo"]
        max_connections = 3

        [[listeners]]
        name = "other"
        bind = "127.0.0.1:0"
        protocols = ["echo"]

        [protocols.echo]
        component = "{echo}"
        [protocols.echo.limits]
        max_connections = 4
        "#,
    )
    .await;
    // The listener cap: the fourth client waits in the kernel's backlog,
    // unserved, until a slot frees.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = LineClient::connect(broker.addr("capped")).await;
        assert_eq!(client.ask("PING").await, "PONG");
        held.push(client);
    }
    let mut waiting = LineClient::connect(broker.addr("capped")).await;
    waiting.send_line("PING").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), waiting.read_line()).await.is_err(),
        "served beyond the listener cap"
    );
    drop(held.pop());
    assert_eq!(waiting.read_line().await.unwrap(), "PONG", "served once a slot is free");
    // The protocol cap, across listeners: the fifth echo connection is refused and counted.
    let mut fourth = LineClient::connect(broker.addr("other")).await;
    assert_eq!(fourth.ask("PING").await, "PONG");
    let mut fifth = LineClient::connect(broker.addr("other")).await;
    assert!(fifth.expect_closed().await.is_empty());
    assert_eq!(broker.counter("echo", "connections_refused"), 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_misbehaviour_leaves_a_clear_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.toml");
    let config = CONFIG.replace(
        "frame_timeout_ms = 500",
        "frame_timeout_ms = 500\n    max_faults = 6\n    fault_window_ms = 60000\n    fault_backoff_ms = 60000",
    );
    std::fs::write(&path, with_guest_paths(&format!("[storage]\nengine = \"memory\"\n{config}"))).unwrap();
    let broker = BrokerProcess::start(&path, &["hostile", "echo"]).await;
    let expectations: [(&str, &[&str]); 6] = [
        ("loop", &["guest stopped", "deadline"]),
        ("panic", &["guest stopped", "trap"]),
        ("oom", &["guest stopped", "memory"]),
        ("flood", &["guest stopped", "outbound buffer"]),
        ("publish-flood", &["guest stopped", "passed more than"]),
        ("frame-zero", &["guest stopped", "on-stream handled", "in 0 frames"]),
    ];
    for (command, needles) in expectations {
        let mut attacker = LineClient::connect(broker.addr("hostile")).await;
        attacker.send_line(command).await;
        attacker.expect_closed().await;
        let line = broker.wait_log(needles).await;
        assert!(line.contains("protocol=\"hostile\"") || line.contains("protocol=hostile"), "{line}");
    }
    // The sixth fault tripped the breaker, which says so and then refuses with a reason.
    broker.wait_log(&["crash-loop breaker tripped", "hostile"]).await;
    let mut refused = LineClient::connect(broker.addr("hostile")).await;
    refused.expect_closed().await;
    broker.wait_log(&["connection refused", "crash-loop breaker is open"]).await;
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_text_is_logged_with_control_characters_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.toml");
    std::fs::write(&path, with_guest_paths(&format!("[storage]\nengine = \"memory\"\n{CONFIG}"))).unwrap();
    let broker = BrokerProcess::start(&path, &["hostile", "echo"]).await;
    let mut client = LineClient::connect(broker.addr("hostile")).await;
    assert_eq!(client.ask("forge").await, "+OK");
    // Each would otherwise end its log line early and start a forged one,
    // or reach the operator's terminal as an escape sequence.
    broker.wait_log(&["guest: logged: first line\\nforged: second line \\u{1b}[2J"]).await;
    broker.wait_log(&["guest: printed: \\u{1b}[2J\\r"]).await;
    let mut closing = LineClient::connect(broker.addr("hostile")).await;
    closing.send_line("frame-forge").await;
    closing.expect_closed().await;
    broker.wait_log(&["closing on protocol error: closing\\nforged: a line of its own"]).await;
    broker.terminate().await;
}
