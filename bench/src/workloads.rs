//! The workloads, the servers each runs against, and their sizes. Every run
//! gets a freshly started server, so no workload inherits another's state.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::flow::Throughput;
use crate::servers::{Builds, Server, ServerKind, Wire};
use crate::{mqtt_load, nats_load, redis_load};

/// A workload, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// MQTT QoS 0, 64 B, one publisher → one subscriber.
    MqttQos0,
    /// MQTT QoS 1, 64 B, one publisher → one subscriber.
    MqttQos1,
    /// MQTT QoS 0, 64 B, one publisher → 100 subscribers.
    MqttFanout,
    /// MQTT QoS 0 latency (p50, p99) at half of each server's QoS 0 peak.
    MqttLatency,
    /// MQTT CONNECT → CONNACK → DISCONNECT, 32 clients at a time.
    MqttStorm,
    /// 10 000 idle MQTT connections: resident memory per connection, on a
    /// fresh server and again after they all closed and came back.
    MqttIdle,
    /// NATS core PUB → SUB, 64 B.
    Nats,
    /// redis-benchmark PING and PUBLISH (64 B), pipelined 16 deep.
    Redis,
}

impl Workload {
    pub const ALL: [Workload; 8] = [
        Workload::MqttQos0,
        Workload::MqttQos1,
        Workload::MqttFanout,
        Workload::MqttLatency,
        Workload::MqttStorm,
        Workload::MqttIdle,
        Workload::Nats,
        Workload::Redis,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::MqttQos0 => "mqtt-qos0",
            Workload::MqttQos1 => "mqtt-qos1",
            Workload::MqttFanout => "mqtt-fanout",
            Workload::MqttLatency => "mqtt-latency",
            Workload::MqttStorm => "mqtt-storm",
            Workload::MqttIdle => "mqtt-idle",
            Workload::Nats => "nats",
            Workload::Redis => "redis",
        }
    }

    fn wire(self) -> Wire {
        match self {
            Workload::Nats => Wire::Nats,
            Workload::Redis => Wire::Resp,
            _ => Wire::Mqtt,
        }
    }

    /// The servers it runs against: sandport first, then the reference,
    /// then the ceiling where it speaks the workload's protocol.
    pub fn servers(self) -> &'static [ServerKind] {
        match self.wire() {
            Wire::Mqtt => &[ServerKind::Sandport, ServerKind::Mosquitto, ServerKind::Forwarder],
            Wire::Nats => &[ServerKind::Sandport, ServerKind::NatsServer],
            Wire::Resp => &[ServerKind::Sandport, ServerKind::RedisServer],
        }
    }
}

/// How big each workload is.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    pub name: &'static str,
    pub qos0_messages: u64,
    pub qos1_messages: u64,
    pub fanout_messages: u64,
    pub fanout_subscribers: usize,
    /// Messages a publisher may be ahead of its subscribers.
    pub window: u64,
    pub latency_secs: f64,
    pub storm_connections: usize,
    pub storm_concurrency: usize,
    pub idle_connections: usize,
    pub nats_messages: u64,
    pub redis_requests: u64,
    /// Longest any one phase may take before the run fails.
    pub limit: Duration,
    /// Runs of each workload per server; the median is reported.
    pub runs: usize,
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            name: "full",
            qos0_messages: 500_000,
            qos1_messages: 200_000,
            fanout_messages: 20_000,
            fanout_subscribers: 100,
            window: 1_000,
            latency_secs: 5.0,
            storm_connections: 5_000,
            storm_concurrency: 32,
            idle_connections: 10_000,
            nats_messages: 1_000_000,
            redis_requests: 500_000,
            limit: Duration::from_secs(180),
            runs: 3,
        }
    }

    /// Tiny counts: proves every workload and server still works.
    pub fn smoke() -> Scale {
        Scale {
            name: "smoke",
            qos0_messages: 2_000,
            qos1_messages: 1_000,
            fanout_messages: 100,
            fanout_subscribers: 10,
            window: 100,
            latency_secs: 0.5,
            storm_connections: 50,
            storm_concurrency: 4,
            idle_connections: 100,
            nats_messages: 2_000,
            redis_requests: 2_000,
            limit: Duration::from_secs(60),
            runs: 1,
        }
    }
}

/// Whether a bigger value is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Better {
    Higher,
    Lower,
}

/// One figure of one workload on one server.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub workload: &'static str,
    pub metric: String,
    pub server: ServerKind,
    pub value: f64,
    pub unit: &'static str,
    pub better: Better,
}

/// Runs workloads and keeps what they measured.
pub struct Bench {
    pub scale: Scale,
    builds: Builds,
    pub measurements: Vec<Measurement>,
    /// QoS 0 1→1 peak per server, for the latency workload's rate.
    peaks: BTreeMap<ServerKind, f64>,
    /// Run only against these servers (all when empty).
    only: Vec<ServerKind>,
}

impl Bench {
    pub fn new(scale: Scale, builds: Builds, only: Vec<ServerKind>) -> Bench {
        Bench { scale, builds, measurements: Vec::new(), peaks: BTreeMap::new(), only }
    }

    /// Run `workload` against each of its servers.
    pub async fn run(&mut self, workload: Workload) -> anyhow::Result<()> {
        for &kind in workload.servers() {
            if !self.only.is_empty() && !self.only.contains(&kind) {
                continue;
            }
            eprintln!("{:<13} on {}", workload.name(), kind.name());
            let server = Server::start(kind, workload.wire(), &self.builds).await?;
            let cpu_before = server.cpu_time()?;
            let figures = self.measure_median(workload, &server).await;
            let cpu = server.cpu_time()?.saturating_sub(cpu_before);
            let log = server.log_tail(20);
            let counters = server.stop().await?;
            let figures = figures.map_err(|e| {
                e.context(format!("{} on {} (its last log lines:\n{log})", workload.name(), kind.name()))
            })?;
            let mut record = |metric: &str, value: f64, unit: &'static str, better: Better| {
                eprintln!("    {metric:<22} {value:>14.1} {unit}");
                self.measurements.push(Measurement {
                    workload: workload.name(),
                    metric: metric.to_string(),
                    server: kind,
                    value,
                    unit,
                    better,
                });
            };
            for figure in &figures {
                record(&figure.metric, figure.value, figure.unit, figure.better);
            }
            // The guest's share of the server's CPU time during the run.
            if let (Some(&guest_nanos), false) = (counters.get("guest_cpu_nanos"), cpu.is_zero()) {
                let share = guest_nanos as f64 / cpu.as_nanos() as f64;
                record("guest-cpu-share", share * 100.0, "%", Better::Lower);
            }
            if workload == Workload::MqttQos0
                && let Some(peak) = figures.iter().find(|f| f.metric == "throughput")
            {
                self.peaks.insert(kind, peak.value);
            }
        }
        Ok(())
    }

    /// Run a workload `scale.runs` times on the same server and keep the
    /// median of each figure: this machine's run-to-run spread is ±20 %.
    /// Idle connections are measured once: a second run would find the
    /// server's memory already grown.
    async fn measure_median(&mut self, workload: Workload, server: &Server) -> anyhow::Result<Vec<Figure>> {
        let runs = if workload == Workload::MqttIdle { 1 } else { self.scale.runs.max(1) };
        let mut all = Vec::with_capacity(runs);
        for _ in 0..runs {
            all.push(self.measure(workload, server).await?);
        }
        let mut figures = all.pop().unwrap_or_default();
        for (i, figure) in figures.iter_mut().enumerate() {
            let mut values: Vec<f64> = all.iter().filter_map(|run| run.get(i)).map(|f| f.value).collect();
            values.push(figure.value);
            values.sort_by(f64::total_cmp);
            figure.value = values[values.len() / 2];
        }
        Ok(figures)
    }

    async fn measure(&mut self, workload: Workload, server: &Server) -> anyhow::Result<Vec<Figure>> {
        let scale = &self.scale;
        let addr = server.addr();
        Ok(match workload {
            Workload::MqttQos0 | Workload::MqttQos1 | Workload::MqttFanout => {
                let (subscribers, messages, qos) = match workload {
                    Workload::MqttQos0 => (1, scale.qos0_messages, 0),
                    Workload::MqttQos1 => (1, scale.qos1_messages, 1),
                    _ => (scale.fanout_subscribers, scale.fanout_messages, 0),
                };
                let run = mqtt_load::pubsub(addr, subscribers, messages, qos, scale.window, scale.limit);
                pubsub_figures(server, run).await?
            }
            Workload::MqttLatency => {
                let peak = match self.peaks.get(&server.kind) {
                    Some(&peak) => peak,
                    None => {
                        let run =
                            mqtt_load::pubsub(addr, 1, scale.qos0_messages, 0, scale.window, scale.limit);
                        run.await?.deliveries_per_sec()
                    }
                };
                let rate = peak / 2.0;
                let total = ((rate * scale.latency_secs) as u64).max(1);
                let mut samples = mqtt_load::latency(addr, rate, total, scale.limit).await?;
                let (p50, p99) = crate::flow::percentiles(&mut samples);
                vec![
                    Figure::lower("p50", p50, "µs"),
                    Figure::lower("p99", p99, "µs"),
                    Figure::higher("rate", rate, "msg/s"),
                ]
            }
            Workload::MqttStorm => {
                let elapsed =
                    mqtt_load::storm(addr, scale.storm_connections, scale.storm_concurrency).await?;
                let rate = scale.storm_connections as f64 / elapsed.as_secs_f64();
                vec![Figure::higher("connections", rate, "conn/s")]
            }
            Workload::MqttIdle => {
                // One connection first, so pools and buffers that exist once
                // per server are not charged to the idle connections.
                let warm = mqtt_load::open_idle(addr, 1, 1).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let before = (server.rss_bytes()?, server.anon_bytes()?, server.page_table_bytes()?);
                let clients = mqtt_load::open_idle(addr, scale.idle_connections, 64).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let after = (server.rss_bytes()?, server.anon_bytes()?, server.page_table_bytes()?);
                // Then all of them again after they closed: what connections
                // cost in a server whose clients come and go (reused slots,
                // allocator caches), over the same baseline.
                drop(clients);
                tokio::time::sleep(Duration::from_secs(1)).await;
                let clients = mqtt_load::open_idle(addr, scale.idle_connections, 64).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let after_churn = server.rss_bytes()?;
                drop((warm, clients));
                let per = |bytes: u64, base: u64| {
                    bytes.saturating_sub(base) as f64 / scale.idle_connections as f64 / 1024.0
                };
                vec![
                    Figure::lower("rss-per-connection", per(after.0, before.0), "KiB"),
                    Figure::lower("private-per-connection", per(after.1, before.1), "KiB"),
                    Figure::lower("page-tables-per-connection", per(after.2, before.2), "KiB"),
                    Figure::lower("rss-after-churn", per(after_churn, before.0), "KiB"),
                ]
            }
            Workload::Nats => {
                pubsub_figures(
                    server,
                    nats_load::pubsub(addr, scale.nats_messages, scale.window, scale.limit),
                )
                .await?
            }
            Workload::Redis => {
                let mut figures = Vec::new();
                for test in redis_load::run(addr, scale.redis_requests, || server.cpu_time()).await? {
                    figures.push(Figure::higher(test.name, test.requests_per_sec, "req/s"));
                    let metric = format!("{}-cpu-per-request", test.name);
                    figures.push(Figure::cpu_per(&metric, test.server_cpu, scale.redis_requests));
                }
                figures
            }
        })
    }
}

/// Throughput of a pub/sub run, and the server's CPU time per delivery
/// during it.
async fn pubsub_figures(
    server: &Server,
    run: impl Future<Output = anyhow::Result<Throughput>>,
) -> anyhow::Result<Vec<Figure>> {
    let before = server.cpu_time()?;
    let run = run.await?;
    let cpu = server.cpu_time()?.saturating_sub(before);
    Ok(vec![
        Figure::higher("throughput", run.deliveries_per_sec(), "msg/s"),
        Figure::cpu_per("cpu-per-delivery", cpu, run.deliveries),
    ])
}

/// One figure as a workload reports it.
struct Figure {
    metric: String,
    value: f64,
    unit: &'static str,
    better: Better,
}

impl Figure {
    fn higher(metric: &str, value: f64, unit: &'static str) -> Figure {
        Figure { metric: metric.into(), value, unit, better: Better::Higher }
    }

    fn lower(metric: &str, value: f64, unit: &'static str) -> Figure {
        Figure { metric: metric.into(), value, unit, better: Better::Lower }
    }

    /// The server's CPU time per message: what throughput costs it,
    /// whatever share of the two cores the clients left it.
    fn cpu_per(metric: &str, cpu: Duration, messages: u64) -> Figure {
        Figure::lower(metric, cpu.as_secs_f64() * 1e6 / messages.max(1) as f64, "µs")
    }
}
