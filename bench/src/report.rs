//! What a run produces: a table of absolute figures and ratios on stdout,
//! the targets and whether they were met, `results.json`, and `chart.svg`.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::Serialize;

use crate::servers::ServerKind;
use crate::workloads::{Better, Measurement, Scale};

/// A goal for one figure.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub workload: &'static str,
    pub metric: &'static str,
    /// Ratio to this server's figure, or an absolute bound when `None`.
    pub reference: Option<ServerKind>,
    /// Sandport's ratio (or value) must be at least this (higher-is-better)
    /// or at most this (lower-is-better).
    pub bound: f64,
    /// What was reached, when both figures were measured.
    pub reached: Option<f64>,
    pub met: Option<bool>,
}

/// The goals the benchmark is held to.
fn targets() -> Vec<Target> {
    let ratio = |workload, metric, reference, bound| Target {
        workload,
        metric,
        reference: Some(reference),
        bound,
        reached: None,
        met: None,
    };
    let absolute = |workload, metric, bound| Target {
        workload,
        metric,
        reference: None,
        bound,
        reached: None,
        met: None,
    };
    vec![
        ratio("mqtt-qos0", "throughput", ServerKind::Mosquitto, 1.5),
        ratio("mqtt-fanout", "throughput", ServerKind::Mosquitto, 1.2),
        ratio("mqtt-qos1", "throughput", ServerKind::Mosquitto, 1.2),
        ratio("nats", "throughput", ServerKind::NatsServer, 0.7),
        ratio("redis", "ping_inline", ServerKind::RedisServer, 0.8),
        ratio("redis", "ping_mbulk", ServerKind::RedisServer, 0.8),
        ratio("redis", "publish", ServerKind::RedisServer, 0.8),
        absolute("mqtt-idle", "rss-per-connection", 48.0),
        absolute("mqtt-qos0", "guest-cpu-share", 25.0),
        absolute("mqtt-latency", "p99", 1000.0),
    ]
}

fn find(measurements: &[Measurement], workload: &str, metric: &str, server: ServerKind) -> Option<f64> {
    measurements
        .iter()
        .find(|m| m.workload == workload && m.metric == metric && m.server == server)
        .map(|m| m.value)
}

/// Check each target against the measurements.
pub fn evaluate(measurements: &[Measurement]) -> Vec<Target> {
    let mut targets = targets();
    for target in &mut targets {
        let Some(ours) = find(measurements, target.workload, target.metric, ServerKind::Sandport) else {
            continue;
        };
        let reached = match target.reference {
            Some(reference) => match find(measurements, target.workload, target.metric, reference) {
                Some(theirs) if theirs > 0.0 => ours / theirs,
                _ => continue,
            },
            None => ours,
        };
        let higher = measurements
            .iter()
            .find(|m| m.workload == target.workload && m.metric == target.metric)
            .is_some_and(|m| m.better == Better::Higher);
        target.reached = Some(reached);
        // Ratios are of higher-is-better figures; absolute bounds follow the figure.
        target.met = Some(if target.reference.is_some() || higher {
            reached >= target.bound
        } else {
            reached <= target.bound
        });
    }
    targets
}

/// The table printed at the end of a run.
pub fn table(measurements: &[Measurement], targets: &[Target]) -> String {
    let mut rows = Vec::new();
    let mut seen = Vec::new();
    for m in measurements {
        let key = (m.workload, m.metric.as_str());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let ours = find(measurements, m.workload, &m.metric, ServerKind::Sandport);
        let reference = measurements
            .iter()
            .find(|r| r.workload == m.workload && r.metric == m.metric && is_reference(r.server));
        let ceiling = find(measurements, m.workload, &m.metric, ServerKind::Forwarder);
        let ratio = match (ours, reference) {
            (Some(ours), Some(r)) if r.value > 0.0 => format!("{:.2}x", ours / r.value),
            _ => "-".into(),
        };
        let target = targets.iter().find(|t| t.workload == m.workload && t.metric == m.metric);
        let goal = target.map_or("-".to_string(), |t| {
            let sign = if t.reference.is_some() || m.better == Better::Higher { ">=" } else { "<=" };
            let unit = if t.reference.is_some() { "x" } else { "" };
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "?",
            };
            format!("{sign} {}{unit} {verdict}", t.bound)
        });
        rows.push([
            format!("{} {}", m.workload, m.metric),
            ours.map_or("-".into(), |v| format!("{} {}", number(v), m.unit)),
            reference.map_or("-".into(), |r| format!("{} {}", number(r.value), r.server.name())),
            ratio,
            ceiling.map_or("-".into(), number),
            goal,
        ]);
    }
    let header = ["figure", "sandport", "reference", "ratio", "forwarder", "target"].map(String::from);
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let line = |row: &[String; 6]| {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut text = line(&header);
    text.push_str(&format!("|{}|\n", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")));
    for row in &rows {
        text.push_str(&line(row));
    }
    text
}

fn is_reference(server: ServerKind) -> bool {
    !matches!(server, ServerKind::Sandport | ServerKind::Forwarder)
}

/// Three significant-ish digits without scientific notation.
fn number(value: f64) -> String {
    if value >= 100.0 { format!("{value:.0}") } else { format!("{value:.1}") }
}

#[derive(Serialize)]
struct Results<'a> {
    scale: &'a Scale,
    cpus: usize,
    measurements: &'a [Measurement],
    targets: &'a [Target],
}

/// Write `results.json` and `chart.svg` into `dir`.
pub fn write(
    dir: &Path,
    scale: &Scale,
    measurements: &[Measurement],
    targets: &[Target],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results = Results { scale, cpus, measurements, targets };
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    chart(&dir.join("chart.svg"), measurements)
}

/// Two panels: throughput relative to each reference server (sandport and
/// the native ceiling), and latency at half of peak.
fn chart(path: &Path, measurements: &[Measurement]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(800);

    let mut groups: Vec<(String, Option<f64>, Option<f64>)> = Vec::new();
    for m in measurements.iter().filter(|m| is_reference(m.server) && m.better == Better::Higher) {
        if m.value <= 0.0 || m.metric == "rate" {
            continue;
        }
        let ours = find(measurements, m.workload, &m.metric, ServerKind::Sandport).map(|v| v / m.value);
        let ceiling = find(measurements, m.workload, &m.metric, ServerKind::Forwarder).map(|v| v / m.value);
        let label = if m.metric == "throughput" { m.workload.to_string() } else { m.metric.clone() };
        groups.push((label, ours, ceiling));
    }
    // Ratios run from a fraction to a hundred (the ceiling): a log axis.
    let ratios = groups.iter().flat_map(|g| [g.1, g.2]).flatten();
    let (low, high) = ratios.fold((1.0f64, 1.0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
    let (bottom, top) = (low * 0.5, high * 2.0);
    let mut chart = ChartBuilder::on(&left)
        .caption("Throughput relative to the reference server (= 1, log scale)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..groups.len().max(1) as f64, (bottom..top).log_scale())?;
    chart.configure_mesh().disable_x_mesh().disable_x_axis().y_desc("ratio").draw()?;
    draw_pairs(&mut chart, &groups, bottom, top * 0.8, ["sandport", "native forwarder (ceiling)"])?;
    chart.draw_series(LineSeries::new([(0.0, 1.0), (groups.len() as f64, 1.0)], BLACK))?;

    let servers = [ServerKind::Sandport, ServerKind::Mosquitto, ServerKind::Forwarder];
    let latency = |server, metric| find(measurements, "mqtt-latency", metric, server);
    let pairs: Vec<_> =
        servers.iter().map(|&s| (s.name().to_string(), latency(s, "p50"), latency(s, "p99"))).collect();
    let top = pairs.iter().filter_map(|p| p.2).fold(1.0f64, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&right)
        .caption("MQTT latency at half of peak (µs)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..servers.len() as f64, 0.0..top)?;
    chart.configure_mesh().disable_x_mesh().disable_x_axis().draw()?;
    draw_pairs(&mut chart, &pairs, 0.0, top * 0.97, ["p50", "p99"])?;
    root.present()?;
    Ok(())
}

/// Two bars per group (blue, grey) rising from `bottom`, the group's label
/// at height `label_at`, and a legend naming the two bars.
fn draw_pairs<'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    groups: &[(String, Option<f64>, Option<f64>)],
    bottom: f64,
    label_at: f64,
    names: [&str; 2],
) -> anyhow::Result<()> {
    let colors = [RGBColor(52, 101, 164), RGBColor(170, 170, 170)];
    for (i, (label, first, second)) in groups.iter().enumerate() {
        let x = i as f64;
        for (at, value, color) in [(x + 0.1, first, colors[0]), (x + 0.5, second, colors[1])] {
            if let Some(value) = value {
                chart.draw_series([Rectangle::new([(at, bottom), (at + 0.4, *value)], color.filled())])?;
            }
        }
        chart.draw_series([Text::new(label.clone(), (x + 0.1, label_at), ("sans-serif", 12))])?;
    }
    for (name, color) in names.into_iter().zip(colors) {
        chart
            .draw_series([Rectangle::new([(0.0, bottom), (0.0, bottom)], color.filled())])?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE)
        .draw()?;
    Ok(())
}
