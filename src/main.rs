//! The `sluice` binary: parse the command line, set up logging, load the config, bind
//! and call [`sluice::run`]. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// With `--features mimalloc`, mimalloc instead of glibc's malloc: about 13% less CPU per
/// proxied request, and 60–130 MB more RSS with the embedded engine, so it is not the
/// default (`loadtest/README.md`, "What was cut").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "OpenAI-compatible LLM inference gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, env = "SLUICE_CONFIG", default_value = "config/sluice.toml")]
        config: PathBuf,
        /// Listen address; overrides `server.listen` and SLUICE__SERVER__LISTEN.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Log format.
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        log_format: String,
    },
    /// Check a configuration file and list every problem found.
    CheckConfig {
        #[arg(long, env = "SLUICE_CONFIG", default_value = "config/sluice.toml")]
        config: PathBuf,
    },
    /// Exit 0 when the gateway on this host answers /healthz with 200, else 1 (for a
    /// container HEALTHCHECK: slim images have no curl).
    Healthcheck {
        /// What to probe; default: SLUICE__SERVER__LISTEN's port on loopback, else
        /// http://127.0.0.1:8080/healthz.
        #[arg(long)]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Quantization-tier routing tools.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Run prompts on every tier of a model, label each with the cheapest tier whose
    /// answer is acceptable, fit the router and print its config block and a
    /// quality/cost table.
    Calibrate {
        #[arg(long, env = "SLUICE_CONFIG", default_value = "config/sluice.toml")]
        config: PathBuf,
        #[command(flatten)]
        options: sluice::calibrate::Options,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Healthcheck { url, timeout } => {
            let listen = std::env::var("SLUICE__SERVER__LISTEN").ok();
            let url = sluice::healthcheck::target(url.as_deref(), listen.as_deref());
            match sluice::healthcheck::probe(&url, std::time::Duration::from_secs(timeout)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match sluice::config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: OK ({} models, {} backends)",
                    config.display(),
                    c.models.len(),
                    c.backends.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::FAILURE
            }
        },
        Command::Route {
            command: RouteCommand::Calibrate { config, options },
        } => {
            init_tracing("text");
            let run = || -> anyhow::Result<String> {
                let config = sluice::config::load(&config)
                    .with_context(|| format!("loading {}", config.display()))?;
                let runtime =
                    tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
                Ok(
                    runtime.block_on(sluice::calibrate::calibrate(config, &options, &|line| {
                        eprintln!("{line}")
                    }))?,
                )
            };
            match run() {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve {
            config,
            listen,
            log_format,
        } => {
            init_tracing(&log_format);
            match serve(config, listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(config_path: PathBuf, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut config = sluice::config::load(&config_path)
        .with_context(|| format!("loading {}", config_path.display()))?;
    if let Some(addr) = listen {
        config.server.listen = addr;
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // `server.worker_threads`, else tokio's own TOKIO_WORKER_THREADS, else the default.
    let from_env = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    match config.server.worker_threads {
        Some(n) => _ = runtime.worker_threads(n),
        None if from_env => {}
        None => _ = runtime.worker_threads(DEFAULT_WORKER_THREADS),
    }
    runtime
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve_on(config))
}

/// Async worker threads unless `server.worker_threads` says otherwise. One: a request
/// and its upstream connection then stay on one thread. With one per core, tokio's
/// workers wake each other for every hand-over between a client connection's task and
/// an upstream connection's task: 13 context switches per proxied request instead of 2,
/// and twice the added latency at 50–2,000 req/s (`loadtest/README.md`). One worker
/// proxies about 14,000 requests/s; blocking work (prompt rendering and tokenizing,
/// SQLite, files) runs on the blocking pool and the engines on their own threads.
const DEFAULT_WORKER_THREADS: usize = 1;

/// Pending connections the kernel queues for accept; tokio's default (128) overflows
/// when many clients connect at once under load, and dropped SYNs cost them a second.
const LISTEN_BACKLOG: u32 = 4096;

async fn serve_on(config: sluice::config::Config) -> anyhow::Result<()> {
    let addr = config.server.listen;
    let listener = (|| {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    })()
    .with_context(|| format!("cannot listen on {addr}"))?;
    sluice::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
