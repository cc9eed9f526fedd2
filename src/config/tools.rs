//! Server-side tools and the agent loop: `[agent]` limits (overridable per model under
//! `[models.agent]`) and `[tools.NAME]` tables, one per tool the gateway itself can run.
//! Plain data; `tools::Registry` builds the tools, `pipeline::agent` runs the loop.
//!
//! One flat table per tool, like `[backends.*]`: `kind` picks the tool and the keys
//! that belong to other kinds are refused by `validate` with their path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// `[agent]`: limits of one agent run (a request whose model has server tools).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Model turns that may call tools; one more turn with `tool_choice: "none"` follows
    /// when they are used up.
    pub max_steps: u32,
    /// Wall time of a whole run; past it the answer ends with `finish_reason: "length"`
    /// and an `incomplete_details` marker.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Longest one tool call may take (a tool's own `timeout` overrides it).
    #[serde(with = "humantime_serde")]
    pub tool_timeout: Duration,
    /// A tool result longer than this is cut (on a character boundary) before the model
    /// sees it.
    pub max_result_bytes: usize,
    /// Tool calls of one turn run concurrently, at most this many at a time.
    pub parallel_tools: usize,
    /// Tools with side effects (webhooks, MCP servers marked so) run only where this is
    /// true; elsewhere the model is told they are disabled.
    pub allow_side_effects: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_steps: 8,
            deadline: Duration::from_secs(120),
            tool_timeout: Duration::from_secs(10),
            max_result_bytes: 16 * 1024,
            parallel_tools: 4,
            allow_side_effects: false,
        }
    }
}

/// `[models.agent]`: a model's own overrides of `[agent]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelAgentConfig {
    pub max_steps: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub tool_timeout: Option<Duration>,
    pub max_result_bytes: Option<usize>,
    pub parallel_tools: Option<usize>,
    pub allow_side_effects: Option<bool>,
}

impl AgentConfig {
    /// The limits for a model: its overrides over the global ones.
    pub fn merged(&self, model: &ModelAgentConfig) -> AgentConfig {
        AgentConfig {
            max_steps: model.max_steps.unwrap_or(self.max_steps),
            deadline: model.deadline.unwrap_or(self.deadline),
            tool_timeout: model.tool_timeout.unwrap_or(self.tool_timeout),
            max_result_bytes: model.max_result_bytes.unwrap_or(self.max_result_bytes),
            parallel_tools: model.parallel_tools.unwrap_or(self.parallel_tools),
            allow_side_effects: model.allow_side_effects.unwrap_or(self.allow_side_effects),
        }
    }
}

/// Which tool a `[tools.NAME]` table configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    /// Arithmetic: `+ - * / % ^`, parentheses, a few functions. No code execution.
    Calculator,
    /// A read-only SQL query on one SQLite database.
    SqlQuery,
    /// GET of an allow-listed URL.
    HttpGet,
    /// A file beneath `root`.
    ReadFile,
    /// The current date and time in an IANA zone.
    CurrentTime,
    /// POST of the arguments as JSON to `url`, signed (a tool with side effects).
    Webhook,
    /// The tools of an MCP server, exposed as `NAME__tool`.
    Mcp,
}

impl ToolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Calculator => "calculator",
            ToolKind::SqlQuery => "sql_query",
            ToolKind::HttpGet => "http_get",
            ToolKind::ReadFile => "read_file",
            ToolKind::CurrentTime => "current_time",
            ToolKind::Webhook => "webhook",
            ToolKind::Mcp => "mcp",
        }
    }
}

/// Who runs a tool's calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// The gateway runs them.
    #[default]
    Server,
    /// The gateway returns them to the client as `tool_calls` (the client decides).
    Client,
}

/// `[tools.NAME]`: one server tool (or, for `kind = "mcp"`, one MCP server's tools).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    pub kind: ToolKind,
    /// What the model is told the tool does (each kind has a default).
    #[serde(default)]
    pub description: Option<String>,
    /// Requests may add it with `x-sluice-tools` when no API keys are configured.
    #[serde(default)]
    pub public: bool,
    /// `client` returns the tool's calls to the client instead of running them.
    #[serde(default)]
    pub approval: Approval,
    /// The tool changes something outside sluice (always true for webhooks; set it for
    /// MCP servers that write). Such tools run only where `agent.allow_side_effects`.
    #[serde(default)]
    pub side_effects: Option<bool>,
    /// Its answer depends on when it is asked (time, HTTP, webhooks and MCP are by
    /// default): runs that used it are not cached.
    #[serde(default)]
    pub volatile: Option<bool>,
    /// Longest one call may take (default `agent.tool_timeout`); for MCP also the
    /// connect and list timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Size cap: rows' text (sql_query), body (http_get, webhook), file (read_file).
    #[serde(default)]
    pub max_bytes: Option<usize>,

    // --- sql_query ---
    /// The SQLite database file, opened read-only.
    #[serde(default)]
    pub database: Option<PathBuf>,
    /// Rows returned at most (default 200); more are cut with a note.
    #[serde(default)]
    pub max_rows: Option<usize>,
    /// SQL functions allowed beyond the built-in list of pure ones.
    #[serde(default)]
    pub functions: Vec<String>,

    // --- http_get ---
    /// Host names the tool may fetch from (`example.com`, `*.example.org`).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Private, loopback or link-local networks it may connect to anyway (CIDR, e.g.
    /// `127.0.0.1/32`); public addresses of allowed hosts need no entry.
    #[serde(default)]
    pub allow_addresses: Vec<String>,
    /// Redirects followed at most (default 5), each re-checked.
    #[serde(default)]
    pub max_redirects: Option<usize>,

    // --- read_file ---
    /// The directory files are read beneath.
    #[serde(default)]
    pub root: Option<PathBuf>,

    // --- current_time ---
    /// The zone used when the model names none (default UTC).
    #[serde(default)]
    pub default_timezone: Option<String>,

    // --- webhook and mcp (streamable HTTP) ---
    /// The webhook's URL, or an MCP server's streamable-HTTP endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// The webhook's arguments as a JSON Schema (an object schema).
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
    /// Key of the webhook's `x-sluice-signature` HMAC-SHA256 (use `${ENV_VAR}`).
    #[serde(default)]
    pub secret: Option<SecretString>,

    // --- mcp ---
    /// An MCP server started as a child process: program and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// The only environment the child gets (it starts with an empty one; PATH is not
    /// inherited either: give the program's full path or set PATH here).
    #[serde(default)]
    pub env: BTreeMap<String, SecretString>,
    /// The child's working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The server's tools to expose (default all), by their MCP names.
    #[serde(default)]
    pub allow_tools: Vec<String>,
    /// Headers sent to a streamable-HTTP MCP server (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, SecretString>,
}

impl ToolConfig {
    /// Whether calls change the outside world (webhooks always do).
    pub fn has_side_effects(&self) -> bool {
        self.kind == ToolKind::Webhook || self.side_effects.unwrap_or(false)
    }

    /// Whether an answer that used the tool may be cached.
    pub fn is_volatile(&self) -> bool {
        self.volatile.unwrap_or(matches!(
            self.kind,
            ToolKind::CurrentTime | ToolKind::HttpGet | ToolKind::Webhook | ToolKind::Mcp
        ))
    }

    /// The keys each kind uses besides the common ones, for "only used by" errors.
    pub fn set_fields(&self) -> Vec<(&'static str, &'static [ToolKind])> {
        use ToolKind::*;
        let mut out: Vec<(&'static str, &'static [ToolKind])> = Vec::new();
        let mut field = |name, set: bool, kinds: &'static [ToolKind]| {
            if set {
                out.push((name, kinds));
            }
        };
        field("database", self.database.is_some(), &[SqlQuery]);
        field("max_rows", self.max_rows.is_some(), &[SqlQuery]);
        field("functions", !self.functions.is_empty(), &[SqlQuery]);
        field("allow_hosts", !self.allow_hosts.is_empty(), &[HttpGet]);
        field(
            "allow_addresses",
            !self.allow_addresses.is_empty(),
            &[HttpGet, Webhook, Mcp],
        );
        field("max_redirects", self.max_redirects.is_some(), &[HttpGet]);
        field("root", self.root.is_some(), &[ReadFile]);
        field(
            "default_timezone",
            self.default_timezone.is_some(),
            &[CurrentTime],
        );
        field("url", self.url.is_some(), &[Webhook, Mcp]);
        field("parameters", self.parameters.is_some(), &[Webhook]);
        field("secret", self.secret.is_some(), &[Webhook]);
        field("command", !self.command.is_empty(), &[Mcp]);
        field("env", !self.env.is_empty(), &[Mcp]);
        field("cwd", self.cwd.is_some(), &[Mcp]);
        field("allow_tools", !self.allow_tools.is_empty(), &[Mcp]);
        field("headers", !self.headers.is_empty(), &[Mcp]);
        field(
            "max_bytes",
            self.max_bytes.is_some(),
            &[SqlQuery, HttpGet, ReadFile, Webhook],
        );
        out
    }
}

/// A tool or tool-server name: what models see (`[A-Za-z0-9_-]`, at most 64), with
/// `__` kept for MCP tools (`SERVER__tool`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `name` names a configured tool or tool server (`SERVER__tool` for MCP).
pub(super) fn configured(tools: &BTreeMap<String, ToolConfig>, name: &str) -> bool {
    if tools.contains_key(name) {
        return true;
    }
    name.split_once("__").is_some_and(|(server, tool)| {
        !tool.is_empty() && tools.get(server).is_some_and(|t| t.kind == ToolKind::Mcp)
    })
}

pub(super) fn validate(config: &super::Config, issue: &mut impl FnMut(String, String)) {
    let agent = &config.agent;
    check_limits("agent", agent, issue);
    for (name, tool) in &config.tools {
        let path = format!("tools.{name}");
        if !valid_name(name) {
            issue(
                path.clone(),
                "a tool name is 1-48 letters, digits, `_` or `-`, without `__` (kept for MCP tools)"
                    .into(),
            );
        }
        for (field, kinds) in tool.set_fields() {
            if !kinds.contains(&tool.kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                issue(
                    format!("{path}.{field}"),
                    format!("only used by kind = {}; remove it", names.join(" or ")),
                );
            }
        }
        let mut require = |field: &str, set: bool, what: &str| {
            if !set {
                issue(format!("{path}.{field}"), format!("missing: {what}"));
            }
        };
        match tool.kind {
            ToolKind::SqlQuery => require(
                "database",
                tool.database.is_some(),
                "the SQLite file to query",
            ),
            ToolKind::ReadFile => require(
                "root",
                tool.root.is_some(),
                "the folder files are read beneath",
            ),
            ToolKind::HttpGet => require(
                "allow_hosts",
                !tool.allow_hosts.is_empty(),
                "the host names the tool may fetch from",
            ),
            ToolKind::Webhook => {
                require(
                    "url",
                    tool.url.is_some(),
                    "the URL the arguments are POSTed to",
                );
                require(
                    "description",
                    tool.description.is_some(),
                    "what the tool does, for the model",
                );
            }
            ToolKind::Mcp => {
                if tool.command.is_empty() == tool.url.is_none() {
                    issue(
                        path.clone(),
                        "an MCP server needs exactly one of `command` (stdio) or `url` (streamable HTTP)"
                            .into(),
                    );
                }
            }
            ToolKind::CurrentTime => {
                if let Some(zone) = &tool.default_timezone {
                    if let Err(e) = crate::tools::current_time::zone_named(zone) {
                        issue(format!("{path}.default_timezone"), e);
                    }
                }
            }
            ToolKind::Calculator => {}
        }
        if let Some(params) = &tool.parameters {
            if params.get("type").and_then(|t| t.as_str()) != Some("object") {
                issue(
                    format!("{path}.parameters"),
                    "must be a JSON Schema of an object: {type = \"object\", properties = {...}}"
                        .into(),
                );
            }
        }
        for (i, cidr) in tool.allow_addresses.iter().enumerate() {
            if cidr.parse::<ipnet::IpNet>().is_err() && cidr.parse::<std::net::IpAddr>().is_err() {
                issue(
                    format!("{path}.allow_addresses[{i}]"),
                    format!("`{cidr}` is not an address or network (e.g. 127.0.0.1/32)"),
                );
            }
        }
        if tool.timeout.is_some_and(|t| t.is_zero()) {
            issue(format!("{path}.timeout"), "must be greater than 0".into());
        }
        if tool.max_bytes == Some(0) {
            issue(format!("{path}.max_bytes"), "must be greater than 0".into());
        }
    }
    for (i, model) in config.models.iter().enumerate() {
        let path = format!("models[{i}]");
        let limits = agent.merged(&model.agent);
        if model.agent != ModelAgentConfig::default() {
            check_limits(&format!("{path}.agent"), &limits, issue);
        }
        for (j, name) in model.tools.iter().enumerate() {
            if !configured(&config.tools, name) && !is_workflow(config, name) {
                issue(
                    format!("{path}.tools[{j}]"),
                    format!("no [tools.{name}] is configured"),
                );
                continue;
            }
            let table = name.split_once("__").map_or(name.as_str(), |(s, _)| s);
            if let Some(tool) = config.tools.get(table) {
                if tool.has_side_effects()
                    && tool.approval == Approval::Server
                    && !limits.allow_side_effects
                {
                    issue(
                        format!("{path}.tools[{j}]"),
                        format!(
                            "`{name}` has side effects: set agent.allow_side_effects = true for this model, or approval = \"client\" on the tool"
                        ),
                    );
                }
            }
        }
    }
    for (i, key) in config.auth.keys.iter().enumerate() {
        for (j, name) in key.tools.iter().enumerate() {
            if !configured(&config.tools, name) && !is_workflow(config, name) {
                issue(
                    format!("auth.keys[{i}].tools[{j}]"),
                    format!("no [tools.{name}] is configured"),
                );
            }
        }
    }
}

/// Whether `name` is `workflow__NAME` of a declared workflow (the agent may call it).
fn is_workflow(config: &super::Config, name: &str) -> bool {
    name.strip_prefix("workflow__")
        .is_some_and(|w| config.workflows.jobs.contains_key(w))
}

fn check_limits(path: &str, limits: &AgentConfig, issue: &mut impl FnMut(String, String)) {
    if limits.max_steps == 0 {
        issue(format!("{path}.max_steps"), "must be at least 1".into());
    }
    if limits.parallel_tools == 0 {
        issue(
            format!("{path}.parallel_tools"),
            "must be at least 1".into(),
        );
    }
    if limits.max_result_bytes < 256 {
        issue(
            format!("{path}.max_result_bytes"),
            "must be at least 256".into(),
        );
    }
    if limits.deadline.is_zero() {
        issue(format!("{path}.deadline"), "must be greater than 0".into());
    }
    if limits.tool_timeout.is_zero() {
        issue(
            format!("{path}.tool_timeout"),
            "must be greater than 0".into(),
        );
    }
}
