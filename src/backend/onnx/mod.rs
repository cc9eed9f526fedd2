//! The embedded ONNX Runtime engine (`kind = "onnx"`), sluice's default backend. At
//! start-up it loads a model folder ([`model`]), the ONNX Runtime library
//! ([`runtime`]), llguidance over the model's tokenizer ([`constraint`]) and one
//! [`engine`] thread per configured tier. Per request, on a blocking thread (never an
//! async worker), it renders the chat template ([`prompt`]), tokenises, compiles the
//! request's constraint ([`grammar`]: offered tools, `tool_choice`, `response_format`)
//! and checks the context; then it queues a job and the engine thread streams the
//! events back. Encoder models (`task = "embed"`) run on their own engine, [`embed`],
//! which shares only the runtime.

mod callstream;
mod constraint;
mod decoder;
mod detok;
mod embed;
mod engine;
mod grammar;
mod kv;
mod model;
mod priority;
mod prompt;
mod runtime;
mod sampler;
mod sequence;
mod stats;
pub(crate) mod stop;
pub(crate) mod toolcall;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tokenizers::Tokenizer;
use tokio_util::sync::CancellationToken;

pub use self::embed::EmbedBackend;

use self::constraint::{Constraint, Structured};
use self::engine::{EngineHandle, EngineMetrics, EngineSettings, Shared};
use self::model::ModelFolder;
use self::prompt::ChatTemplate;
use self::sampler::SamplingParams;
use self::sequence::Job;
use super::{Backend, Deployment, TierLoad};
use crate::config::{BackendConfig, EnginePriority};
use crate::domain::{
    ChatRequest, EmbedRequest, EmbedResponse, EventStream, ResponseFormat, ToolChoice,
};
use crate::error::BackendError;
use crate::metrics::Metrics;

const DEFAULT_MAX_BATCH: usize = 32;
const DEFAULT_QUEUE: usize = 256;

pub struct OnnxBackend {
    name: String,
    engines: BTreeMap<String, EngineHandle>,
    default_tier: String,
    prep: Arc<Prep>,
    max_context: usize,
}

/// What turns a request into a job; used on blocking threads.
struct Prep {
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    /// llguidance over the model's tokenizer; `None` when `structured = false`.
    structured: Option<Structured>,
}

/// A request ready for the engine.
struct Prepared {
    prompt: Vec<u32>,
    constraint: Option<Constraint>,
}

impl OnnxBackend {
    pub fn new(name: &str, cfg: &BackendConfig, metrics: &Metrics) -> Result<Self, BackendError> {
        let fail = failed(name);
        let dir = model_dir(name, cfg)?;
        let folder = ModelFolder::load(dir).map_err(fail)?;
        let tiers = if cfg.tiers.is_empty() {
            vec![folder.default_tier.clone()]
        } else {
            cfg.tiers.clone()
        };
        for tier in &tiers {
            if !folder.tiers.contains_key(tier) {
                return Err(fail(format!(
                    "{} has no tier `{tier}` (it has: {})",
                    dir.display(),
                    folder.tiers.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let max_context = match cfg.max_context {
            Some(n) if n > folder.context_length => {
                return Err(fail(format!(
                    "max_context {n} exceeds the model's context length {}",
                    folder.context_length
                )))
            }
            Some(n) => n,
            None => folder.context_length,
        };
        let structured = if cfg.structured.unwrap_or(true) {
            Some(
                Structured::new(
                    &folder.tokenizer_json,
                    &folder.tokenizer,
                    &folder.stop_ids,
                    &folder.tool_tags,
                )
                .map_err(fail)?,
            )
        } else {
            None
        };
        let env = runtime::environment(name, cfg.ort_library.as_deref())?;
        let threads = runtime::threads(cfg.threads);

        let mut engines = BTreeMap::new();
        for tier in &tiers {
            let path = &folder.tiers[tier];
            let background = cfg.priority == Some(EnginePriority::Background);
            let decoder = if background {
                priority::on_background_thread(|| decoder::Decoder::open(&env, path, threads))
            } else {
                decoder::Decoder::open(&env, path, threads)
            }
            .map_err(fail)?;
            let settings = EngineSettings {
                backend: name.to_owned(),
                tier: tier.clone(),
                max_batch_size: cfg.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH),
                max_context,
                queue_size: cfg.queue_size.unwrap_or(DEFAULT_QUEUE),
                background,
            };
            let shared = Shared {
                tokenizer: folder.tokenizer.clone(),
                stop_ids: folder.stop_ids.clone(),
                tool_tags: folder.tool_tags.clone(),
            };
            tracing::info!(
                backend = name,
                tier = %tier,
                layers = decoder.layers(),
                kv_heads = decoder.kv_heads,
                head_dim = decoder.head_dim,
                max_batch_size = settings.max_batch_size,
                max_context,
                threads,
                "loaded {}",
                path.display()
            );
            metrics
                .engine_queue_capacity
                .with_label_values(&[name, tier.as_str()])
                .set(i64::try_from(settings.queue_size).unwrap_or(i64::MAX));
            let handle = EngineHandle::start(
                decoder,
                shared,
                settings,
                engine_metrics(metrics, name, tier),
            )
            .map_err(fail)?;
            engines.insert(tier.clone(), handle);
        }
        Ok(OnnxBackend {
            name: name.to_owned(),
            engines,
            default_tier: tiers[0].clone(),
            prep: Arc::new(Prep {
                tokenizer: folder.tokenizer,
                template: folder.template,
                structured,
            }),
            max_context,
        })
    }
}

/// How an embedded engine reports a start-up failure: `Failed` naming the backend.
fn failed(name: &str) -> impl Fn(String) -> BackendError + Copy + '_ {
    move |message| BackendError::Failed {
        backend: name.to_owned(),
        message,
    }
}

/// The backend's `model_dir` (validation makes it present; a clear error if not).
fn model_dir<'a>(name: &str, cfg: &'a BackendConfig) -> Result<&'a std::path::Path, BackendError> {
    cfg.model_dir
        .as_deref()
        .ok_or_else(|| failed(name)("model_dir is not set".into()))
}

impl Prep {
    /// The prompt's token ids and the request's constraint, or a 400 naming what is
    /// wrong with the request. CPU work: runs on a blocking thread.
    fn prepare(&self, request: &ChatRequest, structured: bool) -> Result<Prepared, BackendError> {
        let structured = self.structured.as_ref().filter(|_| structured);
        let invalid = |message: String, param| BackendError::InvalidRequest {
            message,
            param: Some(param),
        };
        if request.messages.iter().any(|m| m.images().next().is_some()) {
            return Err(invalid(
                format!(
                    "model `{}` reads text only; remove the image_url content parts",
                    request.model
                ),
                "messages",
            ));
        }
        if structured.is_none()
            && matches!(
                request.response_format,
                Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
            )
        {
            return Err(invalid(
                "response_format json_object and json_schema need structured generation, which is off for this model (structured = false)".into(),
                "response_format",
            ));
        }
        let constraint = match structured {
            Some(structured) => {
                let plan = grammar::plan(
                    &grammar::Request {
                        tools: &request.tools,
                        tool_choice: request.tool_choice.as_ref(),
                        parallel_tool_calls: request.parallel_tool_calls,
                        response_format: request.response_format.as_ref(),
                    },
                    structured.syntax(),
                );
                structured.compile(plan)?
            }
            None => None,
        };
        let tools = if request.tool_choice == Some(ToolChoice::None) {
            &[][..]
        } else {
            &request.tools[..]
        };
        let text = self
            .template
            .render(&request.messages, tools)
            .map_err(|e| invalid(e, "messages"))?;
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| invalid(format!("cannot tokenise the prompt: {e}"), "messages"))?;
        Ok(Prepared {
            prompt: encoding.get_ids().to_vec(),
            constraint,
        })
    }
}

fn engine_metrics(metrics: &Metrics, backend: &str, tier: &str) -> EngineMetrics {
    let labels = [backend, tier];
    let step = |phase| {
        metrics
            .engine_step_seconds
            .with_label_values(&[backend, tier, phase])
    };
    EngineMetrics {
        queue_depth: metrics.engine_queue_depth.with_label_values(&labels),
        active: metrics.engine_active.with_label_values(&labels),
        batch_size: metrics.engine_batch_size.with_label_values(&labels),
        prompt_tokens: metrics
            .engine_tokens
            .with_label_values(&[backend, tier, "prompt"]),
        generated_tokens: metrics
            .engine_tokens
            .with_label_values(&[backend, tier, "generated"]),
        prefill_seconds: step("prefill"),
        decode_seconds: step("decode"),
        queue_wait_seconds: metrics.engine_queue_wait.with_label_values(&labels),
        mask_seconds: metrics.engine_mask_seconds.with_label_values(&labels),
        constrained: metrics.engine_constrained.clone(),
        constraint_ended: metrics.engine_constraint_ended.with_label_values(&labels),
    }
}

/// Sampling settings: the request's, else the model's `options`, else OpenAI's defaults.
fn sampling(
    request: &ChatRequest,
    options: &serde_json::Map<String, serde_json::Value>,
) -> SamplingParams {
    let option = |key: &str| options.get(key).and_then(serde_json::Value::as_f64);
    let s = &request.sampling;
    // The request's value, else the model's option, narrowed to the sampler's f32.
    let float = |value: Option<f64>, key: &str, default: f32| {
        value.or(option(key)).map_or(default, |v| v as f32)
    };
    SamplingParams {
        temperature: float(s.temperature, "temperature", 1.0),
        top_p: float(s.top_p, "top_p", 1.0),
        top_k: s
            .top_k
            .map(|k| k as usize)
            .or(option("top_k").map(|v| v.max(0.0) as usize))
            .unwrap_or(0),
        presence_penalty: float(s.presence_penalty, "presence_penalty", 0.0),
        frequency_penalty: float(s.frequency_penalty, "frequency_penalty", 0.0),
        seed: s.seed.map(|seed| seed as u64),
    }
}

#[async_trait]
impl Backend for OnnxBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        request: ChatRequest,
        deployment: &Deployment,
        cancel: CancellationToken,
    ) -> Result<EventStream, BackendError> {
        let tier = deployment.tier.as_deref().unwrap_or(&self.default_tier);
        let engine = self.engines.get(tier).ok_or_else(|| BackendError::Failed {
            backend: self.name.clone(),
            message: format!("tier `{tier}` is not loaded"),
        })?;
        let structured = deployment.structured.unwrap_or(true);
        let prep = self.prep.clone();
        let (request, prepared) = tokio::task::spawn_blocking(move || {
            let prepared = prep.prepare(&request, structured);
            (request, prepared)
        })
        .await
        .map_err(|e| BackendError::Failed {
            backend: self.name.clone(),
            message: format!("preparing the prompt failed: {e}"),
        })?;
        let Prepared { prompt, constraint } = prepared?;
        let requested = request.sampling.max_tokens.map(|n| n as usize);
        if prompt.len() >= self.max_context
            || requested.is_some_and(|n| prompt.len() + n > self.max_context)
        {
            return Err(BackendError::ContextLength {
                max_context: self.max_context,
                prompt_tokens: prompt.len(),
                completion_tokens: requested.filter(|_| prompt.len() < self.max_context),
            });
        }
        let max_tokens = requested.unwrap_or(self.max_context - prompt.len());
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        engine.submit(Job {
            sampling: sampling(&request, &deployment.options),
            prompt,
            max_tokens,
            stop: request.sampling.stop.clone(),
            ignore_eos: deployment
                .options
                .get("ignore_eos")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            events,
            cancel,
            queued_at: Instant::now(),
            constraint,
        })?;
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }

    async fn embed(
        &self,
        request: EmbedRequest,
        _deployment: &Deployment,
    ) -> Result<EmbedResponse, BackendError> {
        Err(BackendError::InvalidRequest {
            message: format!(
                "model `{}` is a chat model on the embedded engine, which does not serve embeddings",
                request.model
            ),
            param: Some("model"),
        })
    }

    fn tier_load(&self, deployment: &Deployment) -> Option<TierLoad> {
        let tier = deployment.tier.as_deref().unwrap_or(&self.default_tier);
        self.engines.get(tier).map(EngineHandle::load)
    }

    async fn ready(&self) -> Result<(), BackendError> {
        match self.engines.iter().find(|(_, e)| !e.is_alive()) {
            None => Ok(()),
            Some((tier, _)) => Err(BackendError::Failed {
                backend: self.name.clone(),
                message: format!("the {tier} engine thread has stopped"),
            }),
        }
    }
}
