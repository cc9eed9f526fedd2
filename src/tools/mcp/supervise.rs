//! The background task behind one MCP server: connect, list the tools, register them
//! as the registry source `NAME`, re-list on `notifications/tools/list_changed`, and
//! when the connection or the child process dies, withdraw the tools and reconnect
//! with backoff (0.5 s doubling to 30 s; back to 0.5 s after a session that lasted).
//! A session is lost when it ends, when its process exits, or when a ping goes
//! unanswered: pings follow a call's transport error, and every 15 s for HTTP.
//! It ends when its stop token is cancelled, closing the session (which ends a stdio
//! server's process group) before it returns.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rmcp::model::{ClientRequest, PingRequest};
use rmcp::service::{Peer, RoleClient, RunningService};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connect::{handshake, open, Handler, Target};
use super::listing;
use super::process::ServerProcess;
use super::tool::Link;
use crate::config::ToolConfig;
use crate::tools::Registry;

/// First wait before reconnecting; doubled after each failure.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
/// The shortest time given to start, handshake and list: `timeout` is a call's limit
/// and may be far shorter than a server takes to start.
const MIN_CONNECT: Duration = Duration::from_secs(10);
/// Connect and list limit when the table sets no `timeout`.
const DEFAULT_CONNECT: Duration = Duration::from_secs(30);
/// How often a streamable-HTTP session is pinged while idle (it does not end by itself
/// when the server goes away; a stdio session ends with its process or its stdout).
const HEALTH_INTERVAL: Duration = Duration::from_secs(15);
/// How long a ping may take before the session counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long stopping waits for the session to close (its in-flight answers drained and
/// a stdio server's stdin closed); the process then gets `process::stop`.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

pub struct Supervisor {
    pub name: String,
    pub prefix: String,
    pub config: ToolConfig,
    pub target: Target,
    pub registry: Arc<Registry>,
    pub link: Arc<Link>,
    /// The child's pid while a stdio session is up, else 0.
    pub pid: Arc<AtomicU32>,
    /// Why the last session failed or ended, until the next one is up.
    pub last_error: Arc<Mutex<Option<String>>>,
    pub stop: CancellationToken,
}

impl Supervisor {
    fn connect_timeout(&self) -> Duration {
        self.config
            .timeout
            .unwrap_or(DEFAULT_CONNECT)
            .max(MIN_CONNECT)
    }

    pub async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let up_since = Instant::now();
            match self.session().await {
                Ok(()) => return,
                Err(why) => {
                    if self.stop.is_cancelled() {
                        return;
                    }
                    if up_since.elapsed() >= STABLE {
                        backoff = MIN_BACKOFF;
                    }
                    tracing::warn!(server = %self.name, "MCP server `{}`: {why}; retrying in {backoff:?}", self.name);
                    self.set_last_error(Some(why));
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One session: `Ok` when stopped, else why it ended.
    async fn session(&self) -> Result<(), String> {
        let (mut process, channel) = open(&self.name, &self.target)?;
        let pid = process.as_ref().and_then(ServerProcess::id);
        self.pid.store(pid.unwrap_or(0), Ordering::SeqCst);
        let list_changed = Arc::new(Notify::new());
        let connecting = handshake(channel, Handler::new(list_changed.clone()));
        let limit = self.connect_timeout();
        let service = tokio::select! {
            () = self.stop.cancelled() => Err(None),
            why = exited(&mut process) => Err(Some(format!("{why} during the MCP handshake"))),
            service = tokio::time::timeout(limit, connecting) => match service {
                Ok(Ok(service)) => Ok(service),
                Ok(Err(e)) => Err(Some(e)),
                Err(_) => Err(Some(format!("did not complete the handshake within {limit:?}"))),
            },
        };
        let service = match service {
            Ok(service) => service,
            Err(why) => {
                // The handshake future is gone, and with it the process's stdin.
                let mut why = why;
                if let Some(process) = process.as_mut() {
                    process.stop().await;
                    if let (Some(why), Some(tail)) = (why.as_mut(), process.stderr_tail()) {
                        why.push_str(&format!("; its stderr ends with: {tail}"));
                    }
                }
                self.pid.store(0, Ordering::SeqCst);
                return why.map_or(Ok(()), Err);
            }
        };
        let conn = Connection { service, process };
        let peer = conn.service.peer().clone();
        match self.refresh(&peer).await {
            Ok(count) => {
                tracing::info!(server = %self.name, tools = count, "MCP server connected");
                self.set_last_error(None);
            }
            Err(e) => {
                self.down();
                close(conn).await;
                return Err(e);
            }
        }
        let result = self.serve(conn, &peer, &list_changed).await;
        self.down();
        result
    }

    /// Wait for the session's end, the process's exit or the stop, re-listing when the
    /// server says its list changed; then close both.
    async fn serve(
        &self,
        conn: Connection,
        peer: &Peer<RoleClient>,
        list_changed: &Notify,
    ) -> Result<(), String> {
        let Connection {
            service,
            mut process,
        } = conn;
        let cancel = service.cancellation_token();
        let waiting = service.waiting();
        tokio::pin!(waiting);
        let mut closed = false;
        let mut health =
            tokio::time::interval_at(Instant::now() + HEALTH_INTERVAL, HEALTH_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break Ok(()),
                end = &mut waiting => {
                    closed = true;
                    break Err(match end {
                        Ok(reason) => format!("disconnected ({reason:?})"),
                        Err(e) => format!("session task failed: {e}"),
                    });
                }
                why = exited(&mut process) => break Err(why),
                () = self.link.troubled() => {
                    if let Err(why) = self.ping(peer).await {
                        break Err(why);
                    }
                }
                _ = health.tick(), if process.is_none() => {
                    if let Err(why) = self.ping(peer).await {
                        break Err(why);
                    }
                }
                () = list_changed.notified() => {
                    match self.refresh(peer).await {
                        Ok(count) => tracing::info!(server = %self.name, tools = count, "MCP tool list changed"),
                        Err(e) => tracing::warn!(server = %self.name, "MCP tool list changed but {e}"),
                    }
                }
            }
        };
        // Withdraw the tools first: calls fail fast while the session closes.
        self.down();
        cancel.cancel();
        if !closed
            && tokio::time::timeout(CLOSE_WAIT, &mut waiting)
                .await
                .is_err()
        {
            tracing::warn!(server = %self.name, "MCP session did not close within {CLOSE_WAIT:?}");
        }
        if let Some(process) = process.as_mut() {
            process.stop().await;
        }
        end
    }

    /// Whether the server still answers (`Ok` too when stopping: the loop sees the stop).
    async fn ping(&self, peer: &Peer<RoleClient>) -> Result<(), String> {
        let ping = peer.send_request(ClientRequest::PingRequest(PingRequest::default()));
        tokio::select! {
            () = self.stop.cancelled() => Ok(()),
            answer = tokio::time::timeout(PING_TIMEOUT, ping) => match answer {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("stopped answering (ping: {e})")),
                Err(_) => Err(format!("stopped answering (no answer to a ping within {PING_TIMEOUT:?})")),
            },
        }
    }

    /// List the server's tools and make them the source's entries (the link first, so
    /// a tool is callable as soon as it is visible). Returns how many were registered.
    async fn refresh(&self, peer: &Peer<RoleClient>) -> Result<usize, String> {
        let limit = self.connect_timeout();
        let listed = tokio::select! {
            () = self.stop.cancelled() => return Err("stopping".into()),
            listed = tokio::time::timeout(limit, peer.list_all_tools()) => listed,
        };
        let tools = match listed {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => return Err(format!("cannot list tools: {e}")),
            Err(_) => return Err(format!("did not list its tools within {limit:?}")),
        };
        let entries = listing::entries(&self.name, &self.prefix, &self.config, &self.link, tools);
        let count = entries.len();
        self.link.set(Some(peer.clone()));
        self.registry.replace_source(&self.name, entries);
        Ok(count)
    }

    fn set_last_error(&self, why: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// The server is down: calls fail fast, its tools leave the registry.
    fn down(&self) {
        self.link.set(None);
        self.registry.replace_source(&self.name, Vec::new());
        self.pid.store(0, Ordering::SeqCst);
    }
}

/// A session and, for a stdio server, its process.
struct Connection {
    service: RunningService<RoleClient, Handler>,
    process: Option<ServerProcess>,
}

/// Close a session that will not be used, bounded, and end its process.
async fn close(conn: Connection) {
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.service.cancel()).await;
    if let Some(mut process) = conn.process {
        process.stop().await;
    }
}

/// Until a stdio server's process exits (never for an HTTP server).
async fn exited(process: &mut Option<ServerProcess>) -> String {
    match process {
        Some(process) => process.exited().await,
        None => std::future::pending().await,
    }
}
