//! One MCP server tool as a sluice [`Tool`]: its spec comes from the server's listing
//! (`SERVER__tool`, the MCP description, `inputSchema` as parameters) and each call is
//! a `tools/call` over the server's current connection, the [`Link`] that `supervise`
//! fills when it connects and empties when the connection is lost.
//!
//! A call that finds the link empty (server starting, down or reconnecting), or whose
//! connection is lost while it waits, is `Unavailable` (a transport error also tells
//! the supervisor to check the session). Past the table's `timeout` or the context's
//! deadline it is `TimedOut`, on the context's cancellation `Cancelled`: in both the
//! request future is dropped, and rmcp then sends the server `notifications/cancelled`.
//! The server's `isError` results are `Failed`, its invalid-params errors
//! `InvalidArguments`.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{CallToolRequestParams, ErrorCode};
use rmcp::service::{Peer, RoleClient, ServiceError};
use serde_json::Value;
use tokio::sync::Notify;

use super::content;
use crate::tools::{json_type, CallContext, Tool, ToolError, ToolSpec};

/// The live connection to one MCP server, shared by its tools; empty while it is down.
pub struct Link {
    server: Arc<str>,
    peer: RwLock<Option<Peer<RoleClient>>>,
    /// Signalled when a call met a transport error: the supervisor checks the session
    /// (an HTTP session does not end by itself when the server goes away).
    trouble: Notify,
}

impl Link {
    pub fn new(server: &str) -> Self {
        Link {
            server: Arc::from(server),
            peer: RwLock::new(None),
            trouble: Notify::new(),
        }
    }

    /// Until a call reports a transport error.
    pub async fn troubled(&self) {
        self.trouble.notified().await;
    }

    /// Connected (`Some`) or down (`None`).
    pub fn set(&self, peer: Option<Peer<RoleClient>>) {
        *self.peer.write().unwrap_or_else(PoisonError::into_inner) = peer;
    }

    pub fn current(&self) -> Option<Peer<RoleClient>> {
        self.peer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_up(&self) -> bool {
        self.peer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn unavailable(&self, why: &str) -> ToolError {
        ToolError::Unavailable(format!("MCP server `{}` {why}", self.server))
    }
}

/// A tool of an MCP server.
pub struct McpTool {
    spec: ToolSpec,
    /// Its name on the server (the spec's name is `SERVER__` + a sanitized form of it).
    remote: String,
    /// `[tools.SERVER] timeout`: the longest one call may take.
    timeout: Option<Duration>,
    link: Arc<Link>,
}

impl McpTool {
    pub fn new(spec: ToolSpec, remote: String, timeout: Option<Duration>, link: Arc<Link>) -> Self {
        McpTool {
            spec,
            remote,
            timeout,
            link,
        }
    }
}

#[async_trait]
impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, ctx: &CallContext) -> Result<String, ToolError> {
        let arguments = match arguments {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => {
                return Err(ToolError::InvalidArguments(format!(
                    "the arguments must be an object, got {}",
                    json_type(&other)
                )))
            }
        };
        let Some(peer) = self.link.current() else {
            return Err(self
                .link
                .unavailable("is not connected (it is starting or reconnecting)"));
        };
        let limit = match self.timeout {
            Some(t) => t.min(ctx.remaining()),
            None => ctx.remaining(),
        };
        tracing::debug!(tool = %self.spec.name, call_id = %ctx.call_id, ?arguments, "MCP tools/call");
        let params = CallToolRequestParams::new(self.remote.clone()).with_arguments(arguments);
        let outcome = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
            () = tokio::time::sleep(limit) => return Err(ToolError::TimedOut(limit)),
            outcome = peer.call_tool(params) => outcome,
        };
        let out = match outcome {
            Ok(result) => content::render(&result),
            Err(e) => Err(self.error(e, limit)),
        };
        tracing::debug!(tool = %self.spec.name, call_id = %ctx.call_id, ?out, "MCP tools/call answered");
        out
    }
}

impl McpTool {
    fn error(&self, e: ServiceError, limit: Duration) -> ToolError {
        match e {
            ServiceError::McpError(e) if e.code == ErrorCode::INVALID_PARAMS => {
                ToolError::InvalidArguments(e.message.into_owned())
            }
            ServiceError::McpError(e) => ToolError::Failed(e.message.into_owned()),
            ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
                self.link.trouble.notify_one();
                self.link
                    .unavailable("lost the connection before answering (it is being reconnected)")
            }
            ServiceError::Timeout { .. } => ToolError::TimedOut(limit),
            ServiceError::Cancelled { .. } => ToolError::Cancelled,
            other => ToolError::Failed(format!(
                "MCP server `{}` answered unexpectedly: {other}",
                self.link.server
            )),
        }
    }
}
