//! Command-line interface: `sandport run`, `sandport check` and `sandport passwd`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::broker::Broker;
use crate::config::{Config, Grants, Limits};
use crate::kv::Kv;
use crate::metrics::ProtocolMetrics;
use crate::signals::ShutdownSignals;
use crate::store::Store;
use crate::wasm::breaker::Breaker;
use crate::wasm::engine::{EpochClock, PoolSize, build_engine, epoch_tick};
use crate::wasm::protocol::{LoadError, Protocol, ProtocolEnv, build_linker};

/// Config used when `run` gets no `--config`.
pub const DEFAULT_CONFIG: &str = "config/sandport.toml";

/// sandport: a message broker whose protocols are WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "sandport", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Run {
        /// Config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Load a guest component, check it against the sandport:protocol world,
    /// and print what it describes.
    Check {
        /// The component (`.wasm`).
        component: PathBuf,
        /// Expected sha256 (hex); checked before compiling.
        #[arg(long)]
        sha256: Option<String>,
        /// Check it as granted the clocks (`grants.clocks = true`).
        #[arg(long)]
        clocks: bool,
    },
    /// Hash a password (or a token) for `password_hash` / `token_hash` in
    /// `[[auth.users]]`. Reads it from the terminal without echo, or the
    /// first line of standard input; prints the argon2id hash.
    Passwd,
}

impl Cli {
    /// Run the chosen command.
    pub async fn execute(self) -> ExitCode {
        match self.command {
            Command::Run { config } => run(&config).await,
            Command::Check { component, sha256, clocks } => {
                let grants = Grants { clocks, ..Grants::default() };
                check(&component, sha256.as_deref(), grants).await
            }
            Command::Passwd => passwd(),
        }
    }
}

async fn run(config_path: &Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before binding: a signal sent once the broker listens must find its handler.
    let signals = match ShutdownSignals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    match Broker::start(&config).await {
        Ok(broker) => {
            broker.run_until_signal(signals).await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn passwd() -> ExitCode {
    use std::io::IsTerminal;
    let read = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("password: ")
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line.trim_end_matches(['\r', '\n']).to_string())
    };
    let secret = match read {
        Ok(secret) if !secret.is_empty() => secret,
        Ok(_) => {
            eprintln!("error: empty password");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: cannot read the password: {e}");
            return ExitCode::FAILURE;
        }
    };
    match crate::auth::password::hash(secret.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot hash: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn check(component: &Path, pin: Option<&str>, grants: Grants) -> ExitCode {
    match describe_component(component, pin, grants).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Load `path` as the broker would for a protocol with `grants`, and
/// report what it is.
pub async fn describe_component(path: &Path, pin: Option<&str>, grants: Grants) -> Result<String, String> {
    let limits = Limits::default();
    let (engine, _) = build_engine(PoolSize { instances: 4, memory_bytes: limits.memory_bytes })
        .map_err(|e| e.to_string())?;
    let linker = build_linker(&engine).map_err(|e| e.to_string())?;
    let name = path.file_stem().map_or("guest".into(), |s| s.to_string_lossy().into_owned());
    let env = ProtocolEnv {
        name: name.as_str().into(),
        kv: Arc::new(Kv::new(name.as_str().into(), 0, Arc::new(Store::memory().0))),
        breaker: Breaker::new(&limits),
        limits,
        grants,
        metrics: ProtocolMetrics::default(),
        connections: Default::default(),
        guest_output_bytes: 16 * 1024,
        settings: Vec::new(),
    };
    // The clock puts the call deadline on describe(), so a guest that loops
    // there fails the check instead of hanging it.
    let clock = EpochClock::start(engine.clone(), epoch_tick(env.limits.call_deadline()))
        .map_err(|e| e.to_string())?;
    let protocol = Protocol::load(&engine, &clock, &linker, env, path, pin).await.map_err(|e| match e {
        LoadError::UngrantedClocks { .. } => format!("{e} (`sandport check --clocks` checks it so)"),
        e => e.to_string(),
    })?;
    let d = &protocol.description;
    Ok(format!(
        "component: {}\nsha256: {}\nname: {}\nversion: {}\nframing: {:?}\nspeaks-first: {}\nsettings: {}\nimports: {}\n",
        path.display(),
        protocol.sha256,
        d.name,
        d.version,
        d.framing,
        d.speaks_first,
        d.settings.join(", "),
        protocol.imports.join(", ")
    ))
}
