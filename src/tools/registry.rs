//! The tools the gateway can run, by name. Built from `[tools.*]` at start-up; MCP
//! servers replace their own entries (their *source*) whenever they connect, reconnect
//! or announce a changed list, so the set can change while requests run. A request
//! takes a snapshot of the entries it may use ([`Registry::resolve`]) and keeps it for
//! its whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::config::{Approval, ToolConfig};

use super::{Tool, ToolSpec};

/// How the loop treats a tool's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolTraits {
    /// Answers that used it are not cached.
    pub volatile: bool,
    /// It changes the outside world: runs only where side effects are enabled, and
    /// requests that may use it are never merged or cached.
    pub side_effects: bool,
    /// `Client`: its calls go back to the client instead of being run.
    pub approval: Approval,
    /// Its own time limit per call (else `agent.tool_timeout`).
    pub timeout: Option<Duration>,
}

impl ToolTraits {
    pub fn from_config(config: &ToolConfig) -> Self {
        ToolTraits {
            volatile: config.is_volatile(),
            side_effects: config.has_side_effects(),
            approval: config.approval,
            timeout: config.timeout,
        }
    }
}

/// One registered tool.
pub struct Entry {
    pub tool: Arc<dyn Tool>,
    pub traits: ToolTraits,
    /// The `[tools.NAME]` table it comes from (an MCP server's name for its tools).
    pub source: Arc<str>,
    /// A hash of its spec and configuration: part of the cache key of runs that may use
    /// it, so changing a tool's config never replays answers made with the old one.
    pub fingerprint: [u8; 32],
}

impl Entry {
    pub fn new(tool: Arc<dyn Tool>, config: &ToolConfig, source: &str) -> Self {
        let spec = tool.spec();
        let mut h = blake3::Hasher::new();
        for part in [
            source,
            &spec.name,
            &spec.description,
            &spec.parameters.to_string(),
            &format!("{config:?}"),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Entry {
            traits: ToolTraits::from_config(config),
            source: Arc::from(source),
            fingerprint: *h.finalize().as_bytes(),
            tool,
        }
    }

    pub fn spec(&self) -> &ToolSpec {
        self.tool.spec()
    }

    pub fn name(&self) -> &str {
        &self.tool.spec().name
    }
}

/// A name no configured tool or tool server has.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown server tool `{0}`")]
pub struct UnknownTool(pub String);

/// The entries a request may use, in the order named, without duplicates.
pub type Resolved = Vec<Arc<Entry>>;

#[derive(Default)]
pub struct Registry {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    tools: BTreeMap<String, Arc<Entry>>,
    /// Every configured source, connected or not.
    sources: BTreeSet<String>,
}

impl Registry {
    /// Declare a source (a `[tools.NAME]` table) before it has tools, so naming it is
    /// not an error while its MCP server is still connecting.
    pub fn declare(&self, source: &str) {
        self.write().sources.insert(source.to_owned());
    }

    /// Add (or replace) one tool.
    pub fn insert(&self, entry: Entry) {
        let mut state = self.write();
        state.sources.insert(entry.source.to_string());
        state.tools.insert(entry.name().to_owned(), Arc::new(entry));
    }

    /// Replace every tool of `source` with `entries` (empty: the source is down).
    pub fn replace_source(&self, source: &str, entries: Vec<Entry>) {
        let mut state = self.write();
        state.sources.insert(source.to_owned());
        state.tools.retain(|_, e| &*e.source != source);
        for entry in entries {
            state.tools.insert(entry.name().to_owned(), Arc::new(entry));
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.read().tools.get(name).cloned()
    }

    /// Whether `name` is a tool or a source that is configured (now or once connected).
    pub fn knows(&self, name: &str) -> bool {
        let state = self.read();
        state.tools.contains_key(name) || state.sources.contains(name)
    }

    /// The entries `names` stand for, in the order named (a source's tools by name),
    /// each once: each a tool name, or a source's name for all of its tools now. The
    /// order is the order the model is offered them in: a model trained on a tool list
    /// sees it as trained.
    pub fn resolve<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Resolved, UnknownTool> {
        let state = self.read();
        let mut out: Resolved = Vec::new();
        let mut push = |entry: &Arc<Entry>| {
            if !out.iter().any(|e| e.name() == entry.name()) {
                out.push(entry.clone());
            }
        };
        for name in names {
            if let Some(entry) = state.tools.get(name) {
                push(entry);
            } else if state.sources.contains(name) {
                state
                    .tools
                    .values()
                    .filter(|e| &*e.source == name)
                    .for_each(&mut push);
            } else {
                return Err(UnknownTool(name.to_owned()));
            }
        }
        Ok(out)
    }

    /// Every tool's name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().tools.keys().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::calculator::Calculator;

    fn entry(name: &str, source: &str) -> Entry {
        let cfg: ToolConfig = toml::from_str("kind = \"calculator\"").unwrap();
        Entry::new(Arc::new(Calculator::new(name, &cfg)), &cfg, source)
    }

    #[test]
    fn resolves_in_the_order_named_once_each() {
        let r = Registry::default();
        for (name, source) in [
            ("calc", "calc"),
            ("sql", "sql"),
            ("srv__b", "srv"),
            ("srv__a", "srv"),
        ] {
            r.insert(entry(name, source));
        }
        r.declare("down");
        let names = |v: Resolved| v.iter().map(|e| e.name().to_owned()).collect::<Vec<_>>();
        assert_eq!(
            names(r.resolve(["sql", "calc", "sql"]).unwrap()),
            ["sql", "calc"]
        );
        assert_eq!(
            names(r.resolve(["srv", "calc", "srv__a"]).unwrap()),
            ["srv__a", "srv__b", "calc"]
        );
        assert!(
            r.resolve(["down"]).unwrap().is_empty(),
            "a known source with no tools yet"
        );
        assert_eq!(r.resolve(["nope"]).err(), Some(UnknownTool("nope".into())));
        r.replace_source("srv", vec![entry("srv__c", "srv")]);
        assert_eq!(names(r.resolve(["srv"]).unwrap()), ["srv__c"]);
    }
}
