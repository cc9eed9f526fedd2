//! MCP servers as server tools (`[tools.NAME] kind = "mcp"`), with the official Rust SDK
//! `rmcp`. [`start`] declares the registry source `NAME` and returns at once; a
//! background task (`supervise`) connects, lists the server's tools and registers each
//! as `NAME__tool`, so sluice serves while a slow server starts. The tools follow the
//! server: re-listed when it announces a change, withdrawn while it is down, back after
//! a reconnect (with backoff).
//!
//! - `connect`: the two transports (a child process over stdio, or streamable HTTP)
//!   and the handshake;
//! - `process`: a stdio server's process (cleared environment, own process group,
//!   stopped or killed as a group);
//! - `supervise`: the connect / list / watch / reconnect loop;
//! - `listing`: a `tools/list` answer as registry entries (`allow_tools`, names);
//! - `tool`: one MCP tool as a [`Tool`](crate::tools::Tool) (`tools/call`, timeouts,
//!   cancellation, errors);
//! - `content`: a call's result as text for the model;
//! - `names`: `SERVER__tool` names within `[A-Za-z0-9_-]{1,64}`.
//!
//! The returned [`McpServer`] owns the connection: cancelling the shutdown token,
//! calling [`McpServer::stop`] or dropping the handle ends it and a stdio server's
//! processes. Arguments and results are logged at debug level only.

mod connect;
mod content;
mod listing;
mod names;
mod process;
mod supervise;
mod tool;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ToolConfig;
use crate::tools::Registry;

/// A running MCP server connection (connected or still trying).
pub struct McpServer {
    name: String,
    link: Arc<tool::Link>,
    pid: Arc<AtomicU32>,
    last_error: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Start the MCP server of `[tools.NAME]`: check the table, declare the source `name`
/// in `registry` and connect in the background (the tools appear once it answers).
/// Fails only on a table that can never work (both or neither of `command` and `url`,
/// a bad header, a name too long for tool names) or outside a tokio runtime. The
/// connection ends when `shutdown` is cancelled or the handle is stopped or dropped.
pub fn start(
    name: &str,
    config: &ToolConfig,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<McpServer, String> {
    let prefix = names::prefix(name)?;
    let target = connect::Target::from_config(config)?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "MCP servers are started from within the tokio runtime".to_owned())?;
    registry.declare(name);
    let link = Arc::new(tool::Link::new(name));
    let pid = Arc::new(AtomicU32::new(0));
    let last_error = Arc::new(Mutex::new(None));
    let stop = shutdown.child_token();
    let supervisor = supervise::Supervisor {
        name: name.to_owned(),
        prefix,
        config: config.clone(),
        target,
        registry,
        link: link.clone(),
        pid: pid.clone(),
        last_error: last_error.clone(),
        stop: stop.clone(),
    };
    let task = runtime.spawn(supervisor.run());
    Ok(McpServer {
        name: name.to_owned(),
        link,
        pid,
        last_error,
        stop,
        task: Some(task),
    })
}

impl McpServer {
    /// The `[tools.NAME]` it was started from (its registry source).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a session is up and its tools are registered.
    pub fn is_connected(&self) -> bool {
        self.link.is_up()
    }

    /// The process id of a stdio server's current child (connecting or connected).
    pub fn child_pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Why the last attempt failed or the last session ended (with the end of a stdio
    /// server's stderr when it failed to start), until a session is up again.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// End the connection and wait (bounded) until it is closed and a stdio server's
    /// processes are gone.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(server = %self.name, "MCP supervisor task failed: {e}");
            }
        }
    }
}

impl Drop for McpServer {
    /// Ends the connection in the background (see [`McpServer::stop`] to wait for it).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
