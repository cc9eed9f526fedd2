//! The request pipeline: one function per endpoint runs the stages in order.
//!
//! ```text
//! auth    API key → tenant              (runs first, in http/, before the body is read)
//! limits  in-flight cap and request rates (in http/, before the body is read); after
//!         route: the prompt against tokens per minute, the model's concurrency cap
//! route   logical model → tier (forced, or by complexity score and load) → deployment
//! tools   the server tools the request gets (its model's, `x-sluice-tools`, per tenant)
//! cache   exact cache (local + optional Redis), single-flight join of identical requests
//! agent   server-side tool loop, inside the generation the cache sees (when tools)
//! backend the engine's event stream, observed for metrics, cancelled on drop
//! ```

pub mod agent;
pub mod auth;
pub mod cache;
mod fallback;
mod health;
pub mod limits;
mod observe;
pub mod route;

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::backend::Backends;
use crate::config::{Config, ModelConfig};
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::{ApiError, BackendError};
use crate::metrics::Metrics;
use crate::tools::{Registry, Servers};

pub use agent::{ToolAccess, Toolset};
pub use auth::{Auth, Tenant};
pub use health::{BackendHealth, Readiness};
use route::InFlight;
pub use route::{Decision, Reason, Routes, Target};

/// A generation under way: the events plus what the response needs to name it.
pub struct Generation {
    /// The name responses carry as `model`: `name@tier` for a tiered model.
    pub model: Arc<str>,
    /// Which tier serves it, why, and the complexity score (response headers).
    pub routed: Routed,
    pub events: EventStream,
    /// What the cache did (the `x-sluice-cache` header).
    pub cache: cache::Status,
}

/// What the route stage decided, as the response reports it.
#[derive(Debug, Clone)]
pub struct Routed {
    pub tier: Option<Arc<str>>,
    pub reason: Reason,
    pub score: Option<f64>,
}

impl From<&Decision> for Routed {
    fn from(d: &Decision) -> Self {
        Routed {
            tier: d.target.tier.clone(),
            reason: d.reason,
            score: d.score,
        }
    }
}

/// Start `request` on its backend, observed for metrics and cancelled when dropped.
async fn generate(
    target: Target,
    in_flight: InFlight,
    request: ChatRequest,
    started: Instant,
    metrics: Arc<Metrics>,
    hard_stop: CancellationToken,
) -> Result<EventStream, BackendError> {
    let cancel = CancellationToken::new();
    // The routed deployment, or a fallback when it fails before its first byte.
    let (events, served) = fallback::chat(&target, request, cancel.clone(), &metrics).await?;
    Ok(Box::pin(observe::Observed::new(
        events,
        metrics,
        &served,
        started,
        cancel.drop_guard(),
        hard_stop,
        in_flight,
    )))
}

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot set up server tools: {0}")]
    Tools(String),
    #[error("cannot set up limits: {0}")]
    Limits(String),
}

/// What the client asked for besides the body (its headers).
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked<'a> {
    /// `Cache-Control`.
    pub directive: cache::Directive,
    /// `x-sluice-tier`.
    pub tier: Option<&'a str>,
    /// `x-sluice-tools`: server tools to add to the model's own.
    pub tools: &'a [String],
}

/// Everything the stages need, built once at start-up.
pub struct Pipeline {
    pub auth: Auth,
    pub limits: limits::Limits,
    routes: Routes,
    backends: Backends,
    tools: ToolAccess,
    cache: cache::Cache,
    models: Vec<ModelConfig>,
    metrics: Arc<Metrics>,
    /// Cancelled at the shutdown drain deadline: every generation still running ends.
    hard_stop: CancellationToken,
    /// MCP connections (their child processes die with the pipeline).
    _servers: Servers,
    /// The backends' kept readiness verdicts (`/readyz`).
    health: health::Health,
}

impl Pipeline {
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        hard_stop: CancellationToken,
    ) -> Result<Self, SetupError> {
        let backends = Backends::from_config(config, &metrics)?;
        Self::with_backends(config, backends, metrics, hard_stop)
    }

    /// A pipeline over backends built elsewhere: benchmarks and tests plug in an
    /// in-process engine this way.
    #[doc(hidden)]
    pub fn with_backends(
        config: &Config,
        backends: Backends,
        metrics: Arc<Metrics>,
        hard_stop: CancellationToken,
    ) -> Result<Self, SetupError> {
        let (registry, servers) =
            crate::tools::build(config, &hard_stop).map_err(SetupError::Tools)?;
        Ok(Pipeline {
            auth: Auth::from_config(&config.auth),
            limits: limits::Limits::new(config, metrics.clone()).map_err(SetupError::Limits)?,
            routes: Routes::new(config, &backends),
            tools: ToolAccess::new(config, registry),
            cache: cache::Cache::new(config, metrics.clone())?,
            backends,
            models: config.models.clone(),
            metrics,
            hard_stop,
            _servers: servers,
            health: health::Health::new(config),
        })
    }

    /// The server tools (MCP servers add theirs as they connect).
    pub fn tools(&self) -> &Arc<Registry> {
        self.tools.registry()
    }

    /// Chat: route → server tools → cache (hit, or join an identical request in flight)
    /// → the agent loop when there are server tools → backend. Dropping the returned
    /// events cancels the generation (once every request sharing it has gone).
    pub async fn chat(
        &self,
        tenant: &Tenant,
        request: ChatRequest,
        asked: Asked<'_>,
    ) -> Result<Generation, ApiError> {
        let Asked {
            directive,
            tier,
            tools,
        } = asked;
        let started = Instant::now();
        let decision = self.routes.route(&request, tier, false)?;
        self.count_route(&decision);
        let routed = Routed::from(&decision);
        let target = decision.target;
        // Counted from the decision on (the load policy reads it), until the generation
        // ends; a cache hit or a join of an identical request drops it unused.
        let in_flight = target.enter();
        tracing::debug!(tenant = tenant.as_str(), model = %target.served, reason = routed.reason.as_str(), backend = target.backend.name(), "routed");
        let toolset = self.tools.toolset(tenant, &target.model, &request, tools)?;
        // Tokens per minute and the model's concurrency cap; the charge bills the
        // completion as it streams (a cache hit costs its prompt estimate only).
        let charge = self
            .limits
            .admit_chat(tenant, &target.model, &request)
            .await?;
        let generation = |events, cache| Generation {
            model: target.served.clone(),
            routed: routed.clone(),
            events: charge.wrap(events, cache != cache::Status::Hit),
            cache,
        };
        // The cache key holds the deployment, tier included (an answer is replayed
        // only for the tier that produced it, and reports that tier), and the server
        // tools. Runs that may change the outside world are neither merged nor stored.
        let plan = match &toolset {
            Some(t) if t.has_side_effects() => None,
            _ => self.cache.plan(
                tenant.as_str(),
                &target.model,
                target.backend.name(),
                &target.deployment,
                &toolset.as_ref().map(Toolset::key).unwrap_or_default(),
                &request,
                directive,
            ),
        };
        if let Some(toolset) = toolset {
            let run = agent::Run {
                target: target.clone(),
                request,
                toolset,
                started,
                metrics: self.metrics.clone(),
                hard_stop: self.hard_stop.clone(),
                tenant: tenant.0.clone(),
            };
            // The run enters the tier once per turn; this request's own count ends here.
            drop(in_flight);
            let Some(plan) = plan else {
                self.cache.count(cache::Status::Bypass);
                return Ok(generation(agent::run(run), cache::Status::Bypass));
            };
            return Ok(self
                .cached(
                    &plan,
                    directive,
                    async move { Ok(agent::run(run)) },
                    generation,
                )
                .await);
        }
        let Some(plan) = plan else {
            self.cache.count(cache::Status::Bypass);
            let events = self
                .start(target.clone(), in_flight, request, started)
                .await?;
            return Ok(generation(events, cache::Status::Bypass));
        };
        let start = {
            let (target, metrics, hard_stop) =
                (target.clone(), self.metrics.clone(), self.hard_stop.clone());
            async move { generate(target, in_flight, request, started, metrics, hard_stop).await }
        };
        Ok(self.cached(&plan, directive, start, generation).await)
    }

    /// The cached answer for `plan`, or `start` run as the generation (or joined with
    /// the identical one in flight).
    async fn cached<S>(
        &self,
        plan: &cache::Plan,
        directive: cache::Directive,
        start: S,
        generation: impl FnOnce(EventStream, cache::Status) -> Generation,
    ) -> Generation
    where
        S: std::future::Future<Output = Result<EventStream, BackendError>> + Send + 'static,
    {
        if let Some(events) = self.cache.lookup(plan).await {
            self.cache.count(cache::Status::Hit);
            return generation(events, cache::Status::Hit);
        }
        let status = match directive {
            cache::Directive::Default => cache::Status::Miss,
            _ => cache::Status::Bypass,
        };
        self.cache.count(status);
        let (events, _joined) = self.cache.generate(plan, start);
        generation(events, status)
    }

    /// The route stage alone (`POST /v1/route`): where `request` would go now, with its
    /// score and the features that weigh most. Generates nothing, counts nothing.
    pub fn route(&self, request: &ChatRequest, tier: Option<&str>) -> Result<Decision, ApiError> {
        Ok(self.routes.route(request, tier, true)?)
    }

    fn count_route(&self, decision: &Decision) {
        let target = &decision.target;
        let tier = target.tier.as_deref().unwrap_or("");
        self.metrics
            .route_requests
            .with_label_values(&[&target.model, tier, decision.reason.as_str()])
            .inc();
        if let Some(score) = decision.score {
            self.metrics
                .route_score
                .with_label_values(&[&target.model])
                .observe(score);
        }
        if let Some(from) = &decision.scored_tier {
            self.metrics
                .route_load_moves
                .with_label_values(&[&target.model, from, tier])
                .inc();
        }
    }

    /// A generation outside the cache: its start errors answer the request directly.
    async fn start(
        &self,
        target: Target,
        in_flight: InFlight,
        request: ChatRequest,
        started: Instant,
    ) -> Result<EventStream, ApiError> {
        Ok(generate(
            target,
            in_flight,
            request,
            started,
            self.metrics.clone(),
            self.hard_stop.clone(),
        )
        .await?)
    }

    /// Embeddings: route → backend.
    pub async fn embed(
        &self,
        tenant: &Tenant,
        request: EmbedRequest,
    ) -> Result<EmbedResponse, ApiError> {
        let target = self.routes.get(&request.model)?;
        tracing::debug!(tenant = tenant.as_str(), model = %target.model, "embedding");
        let estimate = limits::estimate_embed_tokens(&request);
        let bill = self.limits.admit_tokens(tenant, estimate).await?;
        let response = fallback::embed(target, request, &self.metrics).await?;
        self.metrics
            .input_tokens
            .with_label_values(&[&target.model])
            .inc_by(u64::from(response.prompt_tokens));
        if let Some(bill) = bill {
            bill.settle(i64::from(response.prompt_tokens) - i64::from(estimate));
        }
        Ok(response)
    }

    /// A tiered model's tiers, cheapest first (`None` for an unknown or pinned model).
    pub fn tiers(&self, model: &str) -> Option<Vec<String>> {
        self.routes.tiers(model)
    }

    /// What a tier's engine has done since start-up, where the backend measures it.
    pub fn tier_totals(&self, model: &str, tier: &str) -> Option<crate::backend::TierTotals> {
        let target = self.routes.tier(model, tier)?;
        target
            .backend
            .tier_load(&target.deployment)
            .map(|load| load.totals)
    }

    /// The catalog, in config order.
    pub fn models(&self) -> &[ModelConfig] {
        &self.models
    }

    /// Bound a client-supplied model name to a safe metric label.
    pub fn model_label<'a>(&self, model: &'a str) -> &'a str {
        self.routes.logical(model).unwrap_or("unknown")
    }
}
