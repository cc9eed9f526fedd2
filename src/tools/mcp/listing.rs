//! An MCP `tools/list` answer as registry entries: the tools `allow_tools` keeps (all
//! when empty; names it lists that the server lacks are warned about), each named
//! `SERVER__tool` (`names`), described by its MCP description (else its title, else the
//! table's `description`), with its `inputSchema` as parameters. A tool whose sluice
//! name is already taken (two MCP names that sanitize alike) is skipped with a warning.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use super::names;
use super::tool::{Link, McpTool};
use crate::config::ToolConfig;
use crate::tools::{Entry, ToolSpec};

/// The entries of server `server` (tool-name prefix `prefix`) for `tools`.
pub fn entries(
    server: &str,
    prefix: &str,
    config: &ToolConfig,
    link: &Arc<Link>,
    tools: Vec<rmcp::model::Tool>,
) -> Vec<Entry> {
    let allow: BTreeSet<&str> = config.allow_tools.iter().map(String::as_str).collect();
    for wanted in &allow {
        if !tools.iter().any(|t| t.name == *wanted) {
            tracing::warn!(
                server = %server,
                "tools.{server}.allow_tools: the MCP server has no tool `{wanted}`"
            );
        }
    }
    let mut taken = BTreeSet::new();
    let mut entries = Vec::new();
    for tool in tools {
        if !allow.is_empty() && !allow.contains(tool.name.as_ref()) {
            continue;
        }
        let Some(name) = names::tool_name(prefix, &tool.name) else {
            tracing::warn!(server = %server, "MCP server lists a tool without a name");
            continue;
        };
        if !taken.insert(name.clone()) {
            tracing::warn!(
                server = %server,
                "MCP tool `{}` is skipped: its sluice name `{name}` is taken by another tool",
                tool.name
            );
            continue;
        }
        let description = tool
            .description
            .as_deref()
            .map(str::to_owned)
            .or_else(|| tool.title.clone())
            .or_else(|| config.description.clone())
            .unwrap_or_else(|| format!("tool `{}` of MCP server `{server}`", tool.name));
        let spec = ToolSpec {
            name,
            description,
            parameters: Value::Object((*tool.input_schema).clone()),
        };
        let mcp = McpTool::new(spec, tool.name.into_owned(), config.timeout, link.clone());
        entries.push(Entry::new(Arc::new(mcp), config, server));
    }
    entries
}
