//! The benchmark at tiny sizes, so it cannot rot: every workload against
//! every server, and the report it writes.

use std::process::Command;

#[test]
fn every_workload_runs_against_every_server() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_sandport-bench"))
        .arg("smoke")
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("sandport-bench runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "smoke run failed:\n{stdout}\n{stderr}");

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let measurements = results["measurements"].as_array().unwrap();
    let has = |workload: &str, metric: &str, server: &str| {
        measurements.iter().any(|m| {
            m["workload"] == workload
                && m["metric"] == metric
                && m["server"] == server
                && m["value"].as_f64().unwrap() > 0.0
        })
    };
    for workload in ["mqtt-qos0", "mqtt-qos1", "mqtt-fanout"] {
        for server in ["sandport", "mosquitto", "forwarder"] {
            assert!(has(workload, "throughput", server), "{workload} on {server} missing:\n{stdout}");
        }
    }
    // One guest call in 32 is timed, so tiny runs may time none in a
    // workload; across all of them some are.
    assert!(measurements.iter().any(|m| m["metric"] == "guest-cpu-share"), "no guest CPU share:\n{stdout}");
    for server in ["sandport", "mosquitto", "forwarder"] {
        assert!(has("mqtt-latency", "p99", server), "latency on {server} missing");
        assert!(has("mqtt-storm", "connections", server), "storm on {server} missing");
        // A hundred idle clients may fit in memory a server already has.
        let idle = measurements.iter().find(|m| {
            m["workload"] == "mqtt-idle" && m["metric"] == "rss-per-connection" && m["server"] == server
        });
        assert!(idle.is_some_and(|m| m["value"].as_f64().unwrap() >= 0.0), "idle on {server} missing");
    }
    assert!(has("nats", "throughput", "sandport") && has("nats", "throughput", "nats-server"));
    for test in ["ping_inline", "ping_mbulk", "publish"] {
        assert!(has("redis", test, "sandport") && has("redis", test, "redis-server"), "redis {test} missing");
    }
    assert_eq!(results["targets"].as_array().unwrap().len(), 10);
    assert!(stdout.contains("| mqtt-qos0 throughput"), "no table:\n{stdout}");
    let chart = std::fs::read_to_string(out.path().join("chart.svg")).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("sandport"), "chart:\n{chart}");
}
