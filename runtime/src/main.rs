//! The `sandport` binary: logging set-up and the CLI.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use sandport::cli::Cli;
use tracing_subscriber::EnvFilter;

/// jemalloc rather than glibc's malloc: a routed message is allocated on
/// the publisher's worker thread and freed on its subscriber's, and glibc
/// returns such a block to its arena under that arena's lock. With the two
/// connections on different workers, every message then contends for the
/// lock (about 40 futex calls per 1000 NATS messages); jemalloc caches the
/// block in the freeing thread (docs/benchmarks.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli.execute())
}
