//! Stage 3, route: the model a client named → a tier → its deployment and backend.
//!
//! A pinned model (no `tiers`) has one deployment (reason `single`). A tiered model
//! lists its tiers cheapest first; a request gets the tier it forces (`model@tier` or
//! the `x-sluice-tier` header, reason `forced`), else the one its complexity score
//! selects ([`score`], thresholds in [`tiers`], reason `scored`), which the load policy
//! ([`load`], off by default) may move to a tier that is cheaper right now (`load`).

mod load;
pub mod score;
mod tiers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::backend::{Backend, Backends, Deployment, TierLoad};
use crate::config::{BackendKind, Config, LoadPolicy};
use crate::domain::ChatRequest;
use crate::error::RouteError;

pub use score::{Features, Scorer};
pub use tiers::even_thresholds;
use tiers::Tiered;

/// A resolved target for one request.
#[derive(Clone)]
pub struct Target {
    /// The logical model (metric label, cache settings).
    pub model: Arc<str>,
    /// The name responses carry as `model`: `smollm2-135m@int8` for a tier of a tiered
    /// model, the model's own name for a pinned one.
    pub served: Arc<str>,
    /// The tier served, where there is one.
    pub tier: Option<Arc<str>>,
    pub deployment: Arc<Deployment>,
    pub backend: Arc<dyn Backend>,
    /// Generations started on this target and not yet finished. The engine's queue
    /// only sees a request once its prompt is prepared; the load policy counts from the
    /// routing decision on, so a burst that arrives at once is seen at once.
    pub in_flight: Arc<AtomicUsize>,
    /// Other deployments of the model, in order, for when this one fails before its
    /// first byte (`[[models]] fallbacks`; empty for most models and every tier).
    pub fallbacks: Arc<[Target]>,
}

impl Target {
    /// Count a generation on this target until the guard drops.
    pub fn enter(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    /// The backend's measured load, with requests routed here but not yet queued in
    /// the engine counted as waiting.
    fn load(&self) -> Option<TierLoad> {
        let mut load = self.backend.tier_load(&self.deployment)?;
        let routed = self.in_flight.load(Ordering::Relaxed);
        load.waiting = load
            .waiting
            .max(routed.saturating_sub(load.capacity.max(load.active)));
        Some(load)
    }
}

/// One generation counted on its target (see [`Target::in_flight`]).
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a request went where it did (`x-sluice-route-reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The complexity score chose the tier.
    Scored,
    /// The client chose it: `model@tier` or `x-sluice-tier`.
    Forced,
    /// The scored tier was busy; a tier cheaper at that moment serves it.
    Load,
    /// The model has one deployment.
    Single,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Scored => "scored",
            Reason::Forced => "forced",
            Reason::Load => "load",
            Reason::Single => "single",
        }
    }
}

/// Where one request goes, and why.
#[derive(Clone)]
pub struct Decision {
    pub target: Target,
    pub reason: Reason,
    /// The complexity score (tiered models only).
    pub score: Option<f64>,
    /// The tier the score selected, when the load policy moved the request elsewhere.
    pub scored_tier: Option<Arc<str>>,
    /// The features contributing most to the score, largest first (when explained).
    pub top: Vec<(&'static str, f64)>,
    /// The model's tiers, cheapest first, and its thresholds (when explained; empty for
    /// a pinned model).
    pub tiers: Vec<String>,
    pub thresholds: Vec<f64>,
}

enum Entry {
    Pinned(Target),
    Tiered(Tiered),
}

/// The model catalog, resolved once at start-up.
#[derive(Clone, Default)]
pub struct Routes {
    by_model: HashMap<String, Arc<Entry>>,
    load: LoadPolicy,
}

impl Routes {
    pub fn new(config: &Config, backends: &Backends) -> Self {
        let mut by_model = HashMap::new();
        for model in &config.models {
            // validate() guarantees the backend exists.
            let (Some(backend), Some(backend_cfg)) = (
                backends.get(&model.backend),
                config.backends.get(&model.backend),
            ) else {
                continue;
            };
            let entry = if model.tiers.is_empty() {
                let tier = match backend_cfg.kind {
                    BackendKind::Onnx => model
                        .tier
                        .clone()
                        .or_else(|| backend_cfg.tiers.first().cloned()),
                    _ => None,
                };
                Entry::Pinned(Target {
                    model: Arc::from(model.name.as_str()),
                    served: Arc::from(model.name.as_str()),
                    tier: tier.map(Arc::from),
                    deployment: Arc::new(Deployment::from_model(model)),
                    backend: backend.clone(),
                    in_flight: Arc::default(),
                    fallbacks: super::fallback::targets(config, model, backends),
                })
            } else {
                Entry::Tiered(Tiered::new(model, backend, backend_cfg.kind, &config.route))
            };
            by_model.insert(model.name.clone(), Arc::new(entry));
        }
        Routes {
            by_model,
            load: config.route.load.clone(),
        }
    }

    /// The entry for `model`, and the tier it names after `@` if any.
    fn entry<'a>(&self, model: &'a str) -> Result<(&Entry, Option<&'a str>), RouteError> {
        if let Some(entry) = self.by_model.get(model) {
            return Ok((entry, None));
        }
        model
            .rsplit_once('@')
            .and_then(|(base, tier)| self.by_model.get(base).map(|e| (&**e, Some(tier))))
            .ok_or_else(|| RouteError::UnknownModel(model.to_owned()))
    }

    /// Route a chat request: `header_tier` is the `x-sluice-tier` header. `explain`
    /// fills in the top features (for `/v1/route`). `n` other than 1 is refused since
    /// every backend streams a single choice.
    pub fn route(
        &self,
        request: &ChatRequest,
        header_tier: Option<&str>,
        explain: bool,
    ) -> Result<Decision, RouteError> {
        let model = request.model.as_str();
        let (entry, named_tier) = self.entry(model)?;
        if request.n != 1 {
            return Err(RouteError::Unsupported {
                message: format!(
                    "n={} is not supported for model `{model}`: its backend generates one choice per request; send n separate requests instead",
                    request.n
                ),
                param: Some("n"),
            });
        }
        let forced = match (named_tier, header_tier) {
            (Some(a), Some(b)) if a != b => {
                return Err(RouteError::Unsupported {
                    message: format!(
                        "the model name forces tier `{a}` but the x-sluice-tier header asks for `{b}`; send one"
                    ),
                    param: Some("model"),
                })
            }
            (Some(tier), _) => Some((tier, "model")),
            (None, Some(tier)) => Some((tier, "x-sluice-tier")),
            (None, None) => None,
        };
        match entry {
            Entry::Pinned(target) => self.pinned(target, forced),
            Entry::Tiered(tiered) => Ok(self.tiered(tiered, request, forced, explain)?),
        }
    }

    fn pinned(
        &self,
        target: &Target,
        forced: Option<(&str, &'static str)>,
    ) -> Result<Decision, RouteError> {
        if let Some((tier, param)) = forced {
            if target.tier.as_deref() != Some(tier) {
                return Err(RouteError::UnknownTier {
                    model: target.model.to_string(),
                    tier: tier.to_owned(),
                    tiers: target.tier.iter().map(|t| t.to_string()).collect(),
                    param,
                });
            }
        }
        Ok(Decision {
            target: target.clone(),
            reason: Reason::Single,
            score: None,
            scored_tier: None,
            top: Vec::new(),
            tiers: Vec::new(),
            thresholds: Vec::new(),
        })
    }

    fn tiered(
        &self,
        tiered: &Tiered,
        request: &ChatRequest,
        forced: Option<(&str, &'static str)>,
        explain: bool,
    ) -> Result<Decision, RouteError> {
        let features = Features::of(request);
        let score = tiered.scorer.score(&features);
        let scored = tiered.by_score(score);
        let (chosen, reason, scored_tier) = match forced {
            Some((tier, param)) => {
                let i = tiered.find(tier).ok_or_else(|| RouteError::UnknownTier {
                    model: request
                        .model
                        .split('@')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    tier: tier.to_owned(),
                    tiers: tiered.names(),
                    param,
                })?;
                (i, Reason::Forced, None)
            }
            None => {
                let loads = if self.load.enabled {
                    tiered.tiers.iter().map(|t| t.target.load()).collect()
                } else {
                    Vec::new()
                };
                match load::moved(&self.load, &loads, scored) {
                    Some(i) => (i, Reason::Load, Some(tiered.tiers[scored].name.clone())),
                    None => (scored, Reason::Scored, None),
                }
            }
        };
        Ok(Decision {
            target: tiered.tiers[chosen].target.clone(),
            reason,
            score: Some(score),
            scored_tier,
            // What only the dry run reports; not built for every request.
            top: if explain {
                tiered.scorer.top(&features, 5)
            } else {
                Vec::new()
            },
            tiers: if explain { tiered.names() } else { Vec::new() },
            thresholds: if explain {
                tiered.thresholds.clone()
            } else {
                Vec::new()
            },
        })
    }

    /// The target for a non-chat request (embeddings): a pinned model's deployment, or
    /// a tiered model's most precise tier.
    pub fn get(&self, model: &str) -> Result<&Target, RouteError> {
        match &**self
            .by_model
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_owned()))?
        {
            Entry::Pinned(target) => Ok(target),
            Entry::Tiered(tiered) => tiered
                .tiers
                .last()
                .map(|t| &t.target)
                .ok_or_else(|| RouteError::UnknownModel(model.to_owned())),
        }
    }

    /// A tiered model's tiers, cheapest first (`None` for an unknown or pinned model).
    pub fn tiers(&self, model: &str) -> Option<Vec<String>> {
        match &**self.by_model.get(model)? {
            Entry::Tiered(tiered) => Some(tiered.names()),
            Entry::Pinned(_) => None,
        }
    }

    /// One tier of a tiered model.
    pub fn tier(&self, model: &str, tier: &str) -> Option<&Target> {
        match &**self.by_model.get(model)? {
            Entry::Tiered(tiered) => tiered.find(tier).map(|i| &tiered.tiers[i].target),
            Entry::Pinned(_) => None,
        }
    }

    /// The logical model a (possibly `@tier`-suffixed) name refers to, if configured.
    /// (Used to bound metric label values.)
    pub fn logical<'a>(&self, model: &'a str) -> Option<&'a str> {
        if self.by_model.contains_key(model) {
            return Some(model);
        }
        model
            .rsplit_once('@')
            .map(|(base, _)| base)
            .filter(|base| self.by_model.contains_key(*base))
    }
}
