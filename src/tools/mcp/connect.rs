//! Opening one MCP session, with rmcp: a child process spoken to over stdio, or a
//! streamable-HTTP endpoint. [`Target`] is checked from `[tools.NAME]` once at start-up;
//! [`open`] starts a stdio server's process, [`handshake`] runs `initialize` over it (or
//! over HTTP) and returns the running session.
//!
//! The process (see `process`) is handed to the caller, not to rmcp, so that the
//! supervisor can watch it die and end its whole process group whenever the session
//! ends, including while the handshake is still pending.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ServiceExt};
use secrecy::ExposeSecret;
use tokio::sync::Notify;

use super::process::{Pipes, ServerProcess};
use crate::config::{ToolConfig, ToolKind};

/// Where an MCP server is. (No `Debug`: `env` and `headers` may hold secrets.)
#[derive(Clone)]
pub enum Target {
    /// A child process started by sluice.
    Stdio {
        program: String,
        args: Vec<String>,
        env: BTreeMap<String, secrecy::SecretString>,
        cwd: Option<PathBuf>,
    },
    /// A streamable-HTTP endpoint.
    Http {
        url: String,
        headers: HashMap<HeaderName, HeaderValue>,
    },
}

impl Target {
    /// The server `config` describes, or what is wrong with the table (key first).
    pub fn from_config(config: &ToolConfig) -> Result<Target, String> {
        if config.kind != ToolKind::Mcp {
            return Err(format!(
                "kind `{}` is not an MCP server",
                config.kind.as_str()
            ));
        }
        match (config.command.split_first(), &config.url) {
            (Some(_), Some(_)) => Err("`command` and `url` are both set: an MCP server is \
                 either a child process (`command`) or a streamable-HTTP endpoint (`url`)"
                .into()),
            (None, None) => Err("an MCP server needs `command` (a child process spoken to \
                 over stdio) or `url` (a streamable-HTTP endpoint)"
                .into()),
            (Some((program, args)), None) => {
                if program.is_empty() {
                    return Err("command: the program is empty".into());
                }
                Ok(Target::Stdio {
                    program: program.clone(),
                    args: args.to_vec(),
                    env: config.env.clone(),
                    cwd: config.cwd.clone(),
                })
            }
            (None, Some(url)) => http_target(url, config),
        }
    }
}

fn http_target(url: &str, config: &ToolConfig) -> Result<Target, String> {
    // rmcp's HTTP client is built here without TLS (no TLS feature of its reqwest).
    if url.starts_with("https://") {
        return Err(format!(
            "url: `{url}`: https MCP endpoints are not supported by this build (no TLS in \
             the MCP client); use http:// (e.g. through a local TLS-terminating proxy)"
        ));
    }
    if !url.starts_with("http://") {
        return Err(format!("url: `{url}` is not an http:// URL"));
    }
    let mut headers = HashMap::new();
    for (name, value) in &config.headers {
        let key = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("headers.{name}: not a valid HTTP header name"))?;
        let mut value = HeaderValue::from_str(value.expose_secret())
            .map_err(|_| format!("headers.{name}: the value is not a valid HTTP header value"))?;
        value.set_sensitive(true);
        headers.insert(key, value);
    }
    Ok(Target::Http {
        url: url.to_owned(),
        headers,
    })
}

/// sluice's side of an MCP session: who it is, and a signal when the server says its
/// tool list changed.
pub struct Handler {
    info: ClientConfig,
    list_changed: Arc<Notify>,
}

impl Handler {
    pub fn new(list_changed: Arc<Notify>) -> Self {
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("sluice", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
        Handler { info, list_changed }
    }
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }
}

/// What a session runs over, once [`open`]ed.
pub enum Channel {
    /// A started process's stdout and stdin.
    Stdio(Pipes),
    Http {
        url: String,
        headers: HashMap<HeaderName, HeaderValue>,
    },
}

/// Start a stdio server's process (the caller owns it), or just name the endpoint.
pub fn open(server: &str, target: &Target) -> Result<(Option<ServerProcess>, Channel), String> {
    match target {
        Target::Stdio {
            program,
            args,
            env,
            cwd,
        } => {
            let (process, pipes) = ServerProcess::spawn(server, program, args, env, cwd.as_ref())?;
            Ok((Some(process), Channel::Stdio(pipes)))
        }
        Target::Http { url, headers } => Ok((
            None,
            Channel::Http {
                url: url.clone(),
                headers: headers.clone(),
            },
        )),
    }
}

/// Run the `initialize` handshake over `channel`.
pub async fn handshake(
    channel: Channel,
    handler: Handler,
) -> Result<RunningService<RoleClient, Handler>, String> {
    match channel {
        Channel::Stdio(pipes) => handler
            .serve(pipes)
            .await
            .map_err(|e| format!("the MCP handshake failed: {e}")),
        Channel::Http { url, headers } => {
            let transport = StreamableHttpClientTransport::from_config(
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(headers),
            );
            handler
                .serve(transport)
                .await
                .map_err(|e| format!("the MCP handshake with {url} failed: {e}"))
        }
    }
}
