//! Which server tools a request gets: its model's own (`[[models]] tools`), plus any it
//! names in `x-sluice-tools` that its tenant may use (`auth.keys[].tools`, or with no
//! keys configured only tools marked `public`). A tool the client defines itself under
//! the same name wins: the gateway never runs a client's tool. Side-effect tools the
//! gateway would run are left out where `agent.allow_side_effects` is off.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::config::{AgentConfig, Approval, Config};
use crate::domain::ChatRequest;
use crate::error::ApiError;
use crate::pipeline::Tenant;
use crate::tools::{Entry, Registry};

/// The server tools of one request and the limits of its run.
#[derive(Clone)]
pub struct Toolset {
    pub entries: Vec<Arc<Entry>>,
    pub limits: AgentConfig,
}

impl Toolset {
    /// What the cache key holds about the tools: each name with its config's hash.
    pub fn key(&self) -> Vec<(&str, [u8; 32])> {
        self.entries
            .iter()
            .map(|e| (e.name(), e.fingerprint))
            .collect()
    }

    /// The gateway would run a tool that changes the outside world: such runs are
    /// neither merged with identical requests nor cached.
    pub fn has_side_effects(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.traits.side_effects && e.traits.approval == Approval::Server)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        self.entries.iter().find(|e| e.name() == name)
    }
}

pub struct ToolAccess {
    registry: Arc<Registry>,
    agent: AgentConfig,
    /// Logical model → (its tools, its limits).
    models: HashMap<String, (Vec<String>, AgentConfig)>,
    /// Tenant → tools its keys may add.
    tenants: HashMap<String, HashSet<String>>,
    /// Tool names (tables) anyone may add.
    public: HashSet<String>,
}

impl ToolAccess {
    pub fn new(config: &Config, registry: Arc<Registry>) -> Self {
        let mut tenants: HashMap<String, HashSet<String>> = HashMap::new();
        for key in &config.auth.keys {
            tenants
                .entry(key.tenant.clone())
                .or_default()
                .extend(key.tools.iter().cloned());
        }
        ToolAccess {
            registry,
            models: config
                .models
                .iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        (m.tools.clone(), config.agent.merged(&m.agent)),
                    )
                })
                .collect(),
            agent: config.agent.clone(),
            tenants,
            public: config
                .tools
                .iter()
                .filter(|(_, t)| t.public)
                .map(|(name, _)| name.clone())
                .chain(
                    config
                        .workflows
                        .jobs
                        .iter()
                        .filter(|(_, w)| w.public)
                        .map(|(name, _)| format!("workflow__{name}")),
                )
                .collect(),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The tools `request` (for logical `model`) runs with, or `None` for a plain chat.
    /// `asked` are the names from `x-sluice-tools`.
    pub fn toolset(
        &self,
        tenant: &Tenant,
        model: &str,
        request: &ChatRequest,
        asked: &[String],
    ) -> Result<Option<Toolset>, ApiError> {
        let (own, limits) = match self.models.get(model) {
            Some((own, limits)) => (own.as_slice(), limits),
            None => (&[][..], &self.agent),
        };
        if own.is_empty() && asked.is_empty() {
            return Ok(None);
        }
        for name in asked {
            if !self.registry.knows(name) {
                return Err(ApiError::invalid_request(
                    format!("unknown server tool `{name}` in x-sluice-tools"),
                    Some("x-sluice-tools"),
                )
                .with_code("unknown_tool"));
            }
            if !self.may_use(tenant, name) {
                let mut e = ApiError::new(
                    403,
                    "permission_error",
                    format!("this API key may not use the server tool `{name}`"),
                )
                .with_code("tool_not_allowed");
                e.param = Some("x-sluice-tools".into());
                return Err(e);
            }
        }
        let names = own.iter().chain(asked).map(String::as_str);
        let resolved = self.registry.resolve(names).map_err(|e| {
            // Model tools are checked at config load; an MCP tool named singly can be
            // gone while its server reconnects.
            ApiError::new(
                503,
                "server_error",
                format!("{e}: its tool server is not connected"),
            )
            .with_code("tool_unavailable")
        })?;
        let mut entries = Vec::with_capacity(resolved.len());
        for entry in resolved {
            if request.tools.iter().any(|t| t.name == entry.name()) {
                continue;
            }
            let runs_here = entry.traits.approval == Approval::Server;
            if runs_here && entry.traits.side_effects && !limits.allow_side_effects {
                if asked
                    .iter()
                    .any(|a| a == entry.name() || **a == *entry.source)
                {
                    let mut e = ApiError::new(
                        403,
                        "permission_error",
                        format!(
                            "the server tool `{}` has side effects, which are not enabled for model `{model}`",
                            entry.name()
                        ),
                    )
                    .with_code("side_effects_disabled");
                    e.param = Some("x-sluice-tools".into());
                    return Err(e);
                }
                continue;
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(Toolset {
            entries,
            limits: limits.clone(),
        }))
    }

    /// Whether `tenant` may add `name` (a tool, or a tool server's name).
    fn may_use(&self, tenant: &Tenant, name: &str) -> bool {
        let source = self
            .registry
            .get(name)
            .map(|e| e.source.to_string())
            .unwrap_or_else(|| name.to_owned());
        let allowed = |set: &HashSet<String>| set.contains(name) || set.contains(&source);
        allowed(&self.public) || self.tenants.get(tenant.as_str()).is_some_and(allowed)
    }
}
