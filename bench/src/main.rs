//! `sandport-bench`: sandport side by side with Debian's mosquitto,
//! nats-server and redis-server, and a native forwarder as the ceiling, on
//! identical loopback workloads in the same run. Prints a table of figures
//! and ratios and writes `results.json` and `chart.svg`.
//!
//! ```text
//! cargo run -p sandport-bench --release -- all      # everything, full size
//! cargo run -p sandport-bench --release -- run mqtt-qos0 nats
//! cargo run -p sandport-bench -- smoke              # tiny sizes: does it all still work?
//! ```

mod flow;
mod forwarder;
mod mqtt;
mod mqtt_load;
mod nats_load;
mod redis_load;
mod report;
mod servers;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::servers::{Builds, ServerKind, guest_path};
use crate::workloads::{Bench, Scale, Workload};

#[derive(Parser)]
#[command(version, about = "Benchmark sandport against mosquitto, nats-server and redis-server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every workload against every server, full size (several minutes).
    All(Output),
    /// Every workload at tiny sizes: checks the harness, not the speed.
    Smoke(Output),
    /// The workloads named.
    Run {
        #[arg(required = true, value_enum)]
        workloads: Vec<Workload>,
        /// Tiny sizes.
        #[arg(long)]
        smoke: bool,
        /// Only these servers (repeat the flag; default: all), e.g. to profile one.
        #[arg(long = "server", value_enum)]
        servers: Vec<ServerKind>,
        #[command(flatten)]
        output: Output,
    },
    /// Run the native forwarder on a loopback port.
    #[command(hide = true)]
    Forwarder { port: u16 },
}

#[derive(Args)]
struct Output {
    /// Directory for results.json and chart.svg.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (workloads, scale, servers, output) = match cli.command {
        Command::All(output) => (Workload::ALL.to_vec(), Scale::full(), Vec::new(), output),
        Command::Smoke(output) => (Workload::ALL.to_vec(), Scale::smoke(), Vec::new(), output),
        Command::Run { workloads, smoke, servers, output } => {
            (workloads, if smoke { Scale::smoke() } else { Scale::full() }, servers, output)
        }
        Command::Forwarder { port } => {
            return match runtime.block_on(forwarder::serve(port)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: forwarder: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match runtime.block_on(bench(workloads, scale, servers, &output.out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(
    mut workloads: Vec<Workload>,
    scale: Scale,
    servers: Vec<ServerKind>,
    out: &Path,
) -> anyhow::Result<()> {
    workloads.sort();
    workloads.dedup();
    let mut bench = Bench::new(scale, build()?, servers);
    for workload in workloads {
        bench.run(workload).await?;
    }
    let targets = report::evaluate(&bench.measurements);
    println!("{}", report::table(&bench.measurements, &targets));
    report::write(out, &bench.scale, &bench.measurements, &targets)?;
    println!("wrote {0}/results.json and {0}/chart.svg", out.display());
    Ok(())
}

/// Build the `sandport` binary, in this binary's profile, and the MQTT,
/// NATS and RESP guests (a no-op when they are current).
fn build() -> anyhow::Result<Builds> {
    let forwarder = std::env::current_exe().context("cannot find the benchmark's own binary")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("bench/ is in the workspace")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let cargo = |args: &[&str], what: &str| {
        let status = Process::new(option_env!("CARGO").unwrap_or("cargo"))
            .current_dir(root)
            .args(args)
            .status()
            .with_context(|| format!("cannot run cargo to build {what}"))?;
        anyhow::ensure!(status.success(), "building {what} failed");
        anyhow::Ok(())
    };
    let profile = if cfg!(debug_assertions) {
        // The way `cargo test --workspace` builds (as the end-to-end tests
        // do), so the smoke test reuses that build instead of compiling
        // wasmtime a second time.
        cargo(&["build", "--workspace", "--bins", "--tests"], "the sandport binary")?;
        "debug"
    } else {
        cargo(&["build", "--release", "-p", "sandport", "--bin", "sandport"], "the sandport binary")?;
        "release"
    };
    cargo(
        &[
            "build",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "guest",
            "-p",
            "sandport-guest-mqtt",
            "-p",
            "sandport-guest-nats",
            "-p",
            "sandport-guest-resp",
        ],
        "the guests",
    )?;
    Ok(Builds {
        sandport: target.join(profile).join("sandport"),
        forwarder,
        mqtt: guest_path(&target, "mqtt"),
        nats: guest_path(&target, "nats"),
        resp: guest_path(&target, "resp"),
    })
}
