//! The one door to an engine. A [`Backend`] takes a domain request and a cancellation
//! token and returns a stream of domain events; each implementation speaks to one kind
//! of engine. Adding an engine touches no other stage: implement the trait and add a
//! `BackendKind` arm in [`build`].

mod body;
mod breaker;
mod call;
pub(crate) mod ollama;
pub(crate) mod onnx;
pub(crate) mod openai;
mod pool;
mod retry;
#[doc(hidden)]
pub mod test_hooks;
mod transport;
mod upstream;

pub use breaker::BreakerState;
pub use pool::MemberState;
pub use upstream::UpstreamState;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendConfig, BackendKind, Config, ModelConfig, OnnxTask};
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;
use crate::metrics::Metrics;

/// Where a logical model runs: which backend, under which name, with which options.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub backend: String,
    pub upstream_model: String,
    /// Ollama `keep_alive`.
    pub keep_alive: Option<String>,
    /// Engine options (Ollama `options`, or extra body fields for OpenAI-compatible servers,
    /// or sampling defaults such as `top_k` for the embedded engine).
    pub options: serde_json::Map<String, serde_json::Value>,
    /// The quantization tier on an embedded engine; `None` = its default.
    pub tier: Option<String>,
    /// Structured generation on an embedded engine; `None` = the backend's setting.
    pub structured: Option<bool>,
    /// Forward the request's unknown body fields (`ChatRequest::extra`) upstream.
    pub forward_unknown_fields: bool,
}

impl Deployment {
    pub fn from_model(model: &ModelConfig) -> Self {
        Deployment {
            backend: model.backend.clone(),
            upstream_model: model.upstream_name().to_owned(),
            keep_alive: model.keep_alive.clone(),
            options: model.options.clone(),
            tier: model.tier.clone(),
            structured: model.structured,
            forward_unknown_fields: model.forward_unknown_fields,
        }
    }
}

/// An inference engine.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The backend's configured name (for errors, logs and metric labels).
    fn name(&self) -> &str;

    /// Start a generation. Dropping the returned stream, or cancelling `cancel`,
    /// stops the work behind it.
    async fn chat(
        &self,
        request: ChatRequest,
        deployment: &Deployment,
        cancel: CancellationToken,
    ) -> Result<EventStream, BackendError>;

    /// Embed texts; backends without embeddings answer `InvalidRequest`.
    async fn embed(
        &self,
        request: EmbedRequest,
        deployment: &Deployment,
    ) -> Result<EmbedResponse, BackendError>;

    /// Is the engine reachable and serving?
    async fn ready(&self) -> Result<(), BackendError>;

    /// How busy the engine serving `deployment` is and what a token costs there now;
    /// `None` when the backend cannot tell (remote engines).
    fn tier_load(&self, _deployment: &Deployment) -> Option<TierLoad> {
        None
    }

    /// An HTTP backend's pool members and breaker (`/readyz`); `None` for others.
    fn upstream_state(&self) -> Option<UpstreamState> {
        None
    }
}

/// One tier's engine as the router sees it at this moment (measured by the engine).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TierLoad {
    /// Requests queued for a batch slot.
    pub waiting: usize,
    /// Sequences being decoded.
    pub active: usize,
    /// Sequences decoded together at most (`max_batch_size`).
    pub capacity: usize,
    /// The latest decode step's duration.
    pub recent_step_seconds: Option<f64>,
    /// Engine seconds per generated token if one more request joined now: the step time
    /// measured at that batch size divided by the batch.
    pub token_seconds: Option<f64>,
    pub totals: TierTotals,
}

/// Cumulative work of a tier's engine since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TierTotals {
    pub prefill_seconds: f64,
    pub prompt_tokens: u64,
    pub decode_seconds: f64,
    pub generated_tokens: u64,
}

/// All configured backends by name.
#[derive(Clone, Default)]
pub struct Backends {
    by_name: HashMap<String, Arc<dyn Backend>>,
}

impl Backends {
    /// Build every backend in the config.
    pub fn from_config(config: &Config, metrics: &Metrics) -> Result<Self, BackendError> {
        let mut by_name = HashMap::new();
        for (name, cfg) in &config.backends {
            by_name.insert(name.clone(), build(name, cfg, metrics)?);
        }
        Ok(Backends { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.by_name.get(name)
    }

    /// Put `backend` under `name`, replacing what config built there: benchmarks plug in
    /// an in-process engine this way (see `Pipeline::with_backends`).
    #[doc(hidden)]
    pub fn replace(&mut self, name: &str, backend: Arc<dyn Backend>) {
        self.by_name.insert(name.to_owned(), backend);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<dyn Backend>)> {
        self.by_name.iter()
    }
}

fn build(
    name: &str,
    cfg: &BackendConfig,
    metrics: &Metrics,
) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(match cfg.kind {
        BackendKind::Openai => Arc::new(openai::OpenAiBackend::new(name, cfg, metrics)?),
        BackendKind::Ollama => Arc::new(ollama::OllamaBackend::new(name, cfg, metrics)?),
        BackendKind::Onnx => match cfg.task() {
            OnnxTask::Generate => Arc::new(onnx::OnnxBackend::new(name, cfg, metrics)?),
            OnnxTask::Embed => Arc::new(onnx::EmbedBackend::new(name, cfg, metrics)?),
        },
    })
}
