//! Redis workloads, driven by Debian's `redis-benchmark` so the client is
//! the one Redis users know: PING (inline and bulk) and PUBLISH of a 64-byte
//! message, pipelined 16 deep.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};

/// One redis-benchmark test.
pub struct TestRun {
    /// `ping_inline`, `ping_mbulk` or `publish`.
    pub name: &'static str,
    pub requests_per_sec: f64,
    /// CPU time the server spent during the test (from `server_cpu`).
    pub server_cpu: Duration,
}

/// Run the three tests one after the other; `server_cpu` reads the
/// server's CPU time so far.
pub async fn run(
    addr: SocketAddr,
    requests: u64,
    server_cpu: impl Fn() -> anyhow::Result<Duration>,
) -> anyhow::Result<Vec<TestRun>> {
    let port = addr.port().to_string();
    let requests = requests.to_string();
    let base = ["-h", "127.0.0.1", "-p", &port, "-n", &requests, "-c", "50", "-P", "16", "--csv"];
    // Debian's redis-benchmark 7.0 has no PUBLISH test: run it as a command.
    let payload = "x".repeat(64);
    let tests: [(&str, &[&str]); 3] = [
        ("ping_inline", &["-t", "ping_inline"]),
        ("ping_mbulk", &["-t", "ping_mbulk"]),
        ("publish", &["PUBLISH", "bench", &payload]),
    ];
    let mut runs = Vec::new();
    for (name, test) in tests {
        let args: Vec<&str> = base.iter().chain(test).copied().collect();
        let cpu = server_cpu()?;
        let results = benchmark(&args).await?;
        let server_cpu = server_cpu()?.saturating_sub(cpu);
        let requests_per_sec = match results.into_values().collect::<Vec<_>>()[..] {
            [rps] => rps,
            _ => bail!("redis-benchmark {test:?} printed more than one result"),
        };
        runs.push(TestRun { name, requests_per_sec, server_cpu });
    }
    Ok(runs)
}

async fn benchmark(args: &[&str]) -> anyhow::Result<BTreeMap<String, f64>> {
    let output = tokio::process::Command::new("redis-benchmark")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run redis-benchmark (scripts/setup --test installs redis-tools)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("redis-benchmark failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    }
    parse_csv(&stdout)
}

/// `"test","rps",...` rows to test → requests per second.
fn parse_csv(csv: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut results = BTreeMap::new();
    for line in csv.lines().filter(|l| !l.starts_with("\"test\"") && !l.trim().is_empty()) {
        let mut fields = line.split("\",\"").map(|f| f.trim_matches('"'));
        let test = fields.next().context("CSV row without a test")?;
        let rps: f64 = fields.next().context("CSV row without rps")?.parse()?;
        results.insert(test.to_string(), rps);
    }
    anyhow::ensure!(!results.is_empty(), "redis-benchmark printed no results: {csv}");
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_read() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"PING_INLINE\",\"123456.79\",\"0.3\"\n";
        assert_eq!(parse_csv(csv).unwrap()["PING_INLINE"], 123456.79);
    }
}
