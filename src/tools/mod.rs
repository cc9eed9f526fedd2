//! Server tools: what the gateway itself runs when a model calls it (the agent loop in
//! `pipeline::agent`). A [`Tool`] has a name, a description and a JSON Schema of its
//! arguments, and an async `call` that gets a deadline and a cancellation token; the
//! [`Registry`] holds the configured ones and can change while sluice runs (MCP
//! servers add and remove tools as they connect and reconnect).
//!
//! One file per built-in tool: `calculator`, `sql_query`, `http_get` (with `net`, the
//! address policy and resolver), `read_file`, `current_time`, `webhook`; `mcp/` for MCP
//! servers. Errors are [`ToolError`]s: the loop hands them to the model as the tool's
//! result, never to the client as an HTTP error.

pub mod calculator;
pub mod current_time;
pub mod http_get;
pub mod mcp;
pub mod net;
pub mod read_file;
mod registry;
mod setup;
pub mod sql_query;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use registry::{Entry, Registry, Resolved, ToolTraits, UnknownTool};
pub use setup::{build, Servers};

/// What the model is told about a tool: the `function` of an OpenAI tool definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// `[A-Za-z0-9_-]{1,64}`; MCP tools are `SERVER__tool`.
    pub name: String,
    pub description: String,
    /// A JSON Schema of the arguments object.
    pub parameters: Value,
}

/// What one call may use: time, cancellation and names for logs and idempotency.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The call must have answered by then (the runtime also enforces it).
    pub deadline: Instant,
    /// Cancelled when the client goes away or the run ends: stop at once.
    pub cancel: CancellationToken,
    /// The model's id for this call (`call_...`): unique within a run.
    pub call_id: String,
    /// The agent run's id: with `call_id`, an idempotency key.
    pub run_id: String,
    /// Who the call runs for (workflow runs are recorded under it).
    pub tenant: std::sync::Arc<str>,
}

impl CallContext {
    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// A context for one call from now: tests and benchmarks.
    pub fn with_timeout(timeout: Duration) -> Self {
        CallContext {
            deadline: Instant::now() + timeout,
            cancel: CancellationToken::new(),
            call_id: "call_0".into(),
            run_id: "run_0".into(),
            tenant: std::sync::Arc::from("anonymous"),
        }
    }
}

/// Why a call produced no result. The model reads the message (as `error: ...`), so it
/// says what was wrong in words a model can act on, and never holds secrets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool (bad JSON, wrong type, bad expression).
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The sandbox refused the call (a write, a path outside the root, a host that is
    /// not allowed, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// The tool ran and failed (no such table, HTTP 500, file missing, ...).
    #[error("failed: {0}")]
    Failed(String),
    /// It did not answer in time.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    /// The run ended (client gone, deadline) while it was running.
    #[error("cancelled")]
    Cancelled,
    /// Not runnable now: an MCP server that is down, a side-effect tool not enabled here.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ToolError {
    /// The metric label: `invalid`, `refused`, `error`, `timeout`, `cancelled`,
    /// `unavailable` (a successful call is `ok`).
    pub fn outcome(&self) -> &'static str {
        match self {
            ToolError::InvalidArguments(_) => "invalid",
            ToolError::Refused(_) => "refused",
            ToolError::Failed(_) => "error",
            ToolError::TimedOut(_) => "timeout",
            ToolError::Cancelled => "cancelled",
            ToolError::Unavailable(_) => "unavailable",
        }
    }
}

/// A tool the gateway runs.
#[async_trait]
pub trait Tool: Send + Sync {
    fn spec(&self) -> &ToolSpec;

    /// Run one call. `arguments` is the parsed arguments object. Implementations stop
    /// when `ctx.cancel` fires and should not outlive `ctx.deadline` (the runtime drops
    /// the future then, so blocking work must watch the context itself).
    async fn call(&self, arguments: Value, ctx: &CallContext) -> Result<String, ToolError>;

    /// The same call for a workflow step, which keeps structure: tools whose answer has
    /// one (sql_query's rows) give it as JSON; the rest give their text as a string.
    async fn call_value(&self, arguments: Value, ctx: &CallContext) -> Result<Value, ToolError> {
        self.call(arguments, ctx).await.map(Value::String)
    }
}

/// Run `tool` under `ctx`: its own result, or `TimedOut` / `Cancelled` when the
/// deadline or the cancellation comes first (the call's future is then dropped).
pub async fn invoke(
    tool: &dyn Tool,
    arguments: Value,
    ctx: &CallContext,
    timeout: Duration,
) -> Result<String, ToolError> {
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
        () = tokio::time::sleep_until(ctx.deadline) => Err(ToolError::TimedOut(timeout)),
        out = tool.call(arguments, ctx) => out,
    }
}

/// A string argument, or the error the model should see.
pub fn string_arg<'a>(arguments: &'a Value, name: &str) -> Result<&'a str, ToolError> {
    match arguments.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ToolError::InvalidArguments(format!(
            "`{name}` must be a string, got {}",
            json_type(other)
        ))),
        None => Err(ToolError::InvalidArguments(format!("missing `{name}`"))),
    }
}

/// An optional string argument (`null` counts as absent).
pub fn optional_string_arg<'a>(
    arguments: &'a Value,
    name: &str,
) -> Result<Option<&'a str>, ToolError> {
    match arguments.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string_arg(arguments, name).map(Some),
    }
}

/// A JSON value's type name as JSON Schema spells it.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A string schema for one required argument: the shape most built-ins take.
pub fn one_string_schema(name: &str, description: &str) -> Value {
    serde_json::json!({
        "type": "object",
        "properties": { name: { "type": "string", "description": description } },
        "required": [name],
    })
}
