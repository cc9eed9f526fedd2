//! Build the registry from `[tools.*]` at start-up: one tool per built-in table, and a
//! connection (in the background) per MCP server, whose tools join the registry once
//! it answers. The returned [`Servers`] own the MCP connections: dropping them (when
//! sluice stops) closes the connections and kills stdio servers' processes.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ToolKind};

use super::{
    calculator, current_time, http_get, mcp, read_file, sql_query, webhook, Entry, Registry, Tool,
};

/// The MCP connections, kept alive as long as the gateway runs.
#[derive(Default)]
pub struct Servers {
    handles: Vec<Box<dyn Send + Sync>>,
}

impl Servers {
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// Every configured tool, or the first one that cannot be set up (its key path and why).
/// MCP connections end when `shutdown` is cancelled or the [`Servers`] are dropped.
pub fn build(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(Arc<Registry>, Servers), String> {
    let registry = Arc::new(Registry::default());
    let mut servers = Servers::default();
    for (name, cfg) in &config.tools {
        let fail = |e: String| format!("tools.{name}: {e}");
        let tool: Arc<dyn Tool> = match cfg.kind {
            ToolKind::Calculator => Arc::new(calculator::Calculator::new(name, cfg)),
            ToolKind::CurrentTime => {
                Arc::new(current_time::CurrentTime::new(name, cfg).map_err(fail)?)
            }
            ToolKind::SqlQuery => Arc::new(sql_query::SqlQuery::new(name, cfg).map_err(fail)?),
            ToolKind::ReadFile => Arc::new(read_file::ReadFile::new(name, cfg).map_err(fail)?),
            ToolKind::HttpGet => Arc::new(http_get::HttpGet::new(name, cfg).map_err(fail)?),
            ToolKind::Webhook => Arc::new(webhook::Webhook::new(name, cfg).map_err(fail)?),
            ToolKind::Mcp => {
                let server = mcp::start(name, cfg, registry.clone(), shutdown.child_token())
                    .map_err(fail)?;
                servers.handles.push(Box::new(server));
                continue;
            }
        };
        registry.insert(Entry::new(tool, cfg, name));
    }
    Ok((registry, servers))
}
