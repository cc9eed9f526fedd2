//! sluice: a self-hosted, OpenAI-compatible LLM inference gateway.
//!
//! ```text
//! client ──HTTP──▶ http/        axum: routes, extractors, OpenAI wire types ⇄ domain types,
//!                                SSE framing, error bodies. Nothing below imports axum.
//!                  pipeline/    one function runs the stages in order:
//!                    auth       API key → tenant (hashed keys from config)
//!                    route      logical model → tier (forced, complexity score, load)
//!                               → deployment → backend
//!                    tools      the server tools this request gets (model, header, key)
//!                    cache      exact cache (local + Redis), single-flight merging
//!                    agent      the server-side tool loop, inside the cached generation
//!                  backend/     one trait; each impl speaks to one kind of engine:
//!                    onnx       embedded ONNX Runtime engine, continuous batching
//!                    ollama     native /api/chat NDJSON
//!                    openai     any OpenAI-compatible upstream
//! tools/       server tools the agent loop runs: calculator, sql_query, http_get (net/:
//!              address policy, resolver), read_file, current_time, webhook, mcp/
//! calibrate/   `sluice route calibrate`: fits a tiered model's router on measured outcomes
//! ```
//!
//! Every backend produces a stream of domain events (`Delta`, `ToolCall`, `Finish`); a
//! non-streaming response is that stream collected. [`run`] serves the whole thing on a
//! listener until `shutdown` resolves, then drains in-flight requests; with
//! `[server.tls]` it serves HTTPS (tls/) and re-reads the certificates on SIGHUP.

pub mod backend;
pub mod calibrate;
pub mod config;
pub mod domain;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod healthcheck;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod request_id;
pub mod tls;
pub mod tools;
pub mod workflows;

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot set up backends: {0}")]
    Backend(#[from] error::BackendError),
    #[error("{0}")]
    Setup(#[from] pipeline::SetupError),
    #[error("cannot set up workflows: {0}")]
    Workflows(String),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting, let in-flight
/// requests finish for up to `server.shutdown_timeout`, and return. With
/// `[server.tls]`, SIGHUP re-reads the certificate files.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    run_with_reloads(listener, config, shutdown, tls::Reloads::sighup()).await
}

/// [`run`], with the TLS certificates re-read when `reloads` says so (a
/// [`tls::ReloadHandle`], see [`tls::reload_channel`]); ignored without `[server.tls]`.
pub async fn run_with_reloads(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloads: tls::Reloads,
) -> Result<(), RunError> {
    // Before anything starts: a certificate that cannot be read stops the start.
    let certificates = match &config.server.tls {
        Some(tls_config) => Some(Arc::new(tls::Certificates::load(tls_config)?)),
        None => None,
    };
    let metrics = Arc::new(Metrics::new()?);
    let hard_stop = tokio_util::sync::CancellationToken::new();
    let pipeline = Arc::new(Pipeline::new(&config, metrics.clone(), hard_stop.clone())?);
    let workflows_stop = tokio_util::sync::CancellationToken::new();
    let workflows = workflows::Workflows::start(
        &config,
        pipeline.tools().clone(),
        metrics.clone(),
        workflows::schedule::Clock::system(),
        workflows_stop.clone(),
    )
    .await
    .map_err(RunError::Workflows)?;
    workflows.attach(&pipeline);
    {
        let (pipeline, stop) = (pipeline.clone(), workflows_stop.clone());
        tokio::spawn(async move {
            pipeline
                .watch_readiness(std::time::Duration::from_secs(10), stop)
                .await
        });
    }
    if pipeline.auth.is_open() {
        tracing::warn!(
            "no [[auth.keys]] configured: the gateway is open to anyone who can reach it"
        );
    }
    let state = Arc::new(AppState {
        pipeline,
        workflows: workflows.clone(),
        metrics,
        started: http::response::now_secs(),
        metrics_key: config.server.metrics_key.clone(),
    });
    let app = http::router(state, config.server.max_body_bytes);
    let addr = listener.local_addr()?;
    let scheme = if certificates.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, models = config.models.len(), "sluice listening on {scheme}://{addr}");

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    // Reloads are served while the server runs, and end with it.
    let (server, _reloader) = spawn_server(listener, app, certificates, reloads, shutdown)?;
    let result = serve_until_drained(
        server,
        stopping_rx,
        config.server.shutdown_timeout,
        hard_stop,
    )
    .await;
    // Runs still going end as interrupted (recorded so); schedules stop.
    workflows_stop.cancel();
    workflows
        .wait_stopped(std::time::Duration::from_secs(5))
        .await;
    result
}

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;
type ReloadTask = tokio_util::task::AbortOnDropHandle<()>;

/// Serve `app` on `listener` until `shutdown`, over TLS when `certificates` is set;
/// then `reloads` are served too, as long as the returned handle lives.
fn spawn_server(
    listener: TcpListener,
    app: axum::Router,
    certificates: Option<Arc<tls::Certificates>>,
    reloads: tls::Reloads,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(ServerTask, Option<ReloadTask>)> {
    let Some(certificates) = certificates else {
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
        return Ok((tokio::spawn(server.into_future()), None));
    };
    let reloader = reloads.spawn(certificates.clone());
    let listener = tls::TlsListener::new(listener, certificates)?;
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    Ok((tokio::spawn(server.into_future()), Some(reloader)))
}

/// Wait for the server; once shutdown starts, give in-flight requests `drain_timeout`.
async fn serve_until_drained(
    mut server: tokio::task::JoinHandle<std::io::Result<()>>,
    stopping_rx: tokio::sync::oneshot::Receiver<()>,
    drain_timeout: std::time::Duration,
    hard_stop: tokio_util::sync::CancellationToken,
) -> Result<(), RunError> {
    tokio::select! {
        result = &mut server => return flatten(result),
        Ok(()) = stopping_rx => {
            tracing::info!(timeout = ?drain_timeout, "shutting down: draining in-flight requests");
        }
    }
    match tokio::time::timeout(drain_timeout, &mut server).await {
        Ok(result) => flatten(result),
        Err(_) => {
            // End every generation still running; their responses finish with a 503-style
            // error, and the connections close. Connections that still linger are abandoned.
            tracing::warn!("shutdown timeout reached: ending the remaining generations");
            hard_stop.cancel();
            match tokio::time::timeout(std::time::Duration::from_secs(5), &mut server).await {
                Ok(result) => flatten(result),
                Err(_) => {
                    server.abort();
                    Ok(())
                }
            }
        }
    }
}

fn flatten(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), RunError> {
    match result {
        Ok(r) => Ok(r?),
        Err(e) => Err(RunError::Io(std::io::Error::other(e))),
    }
}
