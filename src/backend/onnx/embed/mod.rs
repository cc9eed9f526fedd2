//! The embedded engine for embedding models (`kind = "onnx"`, `task = "embed"`), e.g.
//! all-MiniLM-L6-v2 as `tools/convert/bert2onnx.py` writes it. At start-up it loads the
//! model folder ([`folder`]), the ONNX Runtime library and the encoder session
//! ([`encoder`]), and starts the micro-batcher thread ([`batcher`]). Per request, on a
//! blocking thread (never an async worker), it tokenises and checks the inputs
//! ([`inputs`]); then they queue, the batcher embeds them together with other
//! requests' inputs ([`plan`], [`pooling`]) and the request shortens the vectors to the
//! `dimensions` it asked for. Chat requests to such a model get a 400.

mod batcher;
mod encoder;
mod folder;
mod inputs;
mod plan;
mod pooling;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use self::batcher::{BatcherHandle, BatcherMetrics, BatcherSettings, Job};
use self::encoder::Encoder;
use self::folder::EmbedFolder;
use self::inputs::Inputs;
use super::runtime;
use crate::backend::{Backend, Deployment};
use crate::config::BackendConfig;
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;
use crate::metrics::Metrics;

const DEFAULT_MAX_BATCH: usize = 32;
const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(2);
const DEFAULT_QUEUE: usize = 256;

pub struct EmbedBackend {
    name: String,
    batcher: BatcherHandle,
    inputs: Arc<Inputs>,
    dimensions: usize,
}

impl EmbedBackend {
    pub fn new(name: &str, cfg: &BackendConfig, metrics: &Metrics) -> Result<Self, BackendError> {
        let fail = super::failed(name);
        let dir = super::model_dir(name, cfg)?;
        let folder = EmbedFolder::load(dir).map_err(fail)?;
        let env = runtime::environment(name, cfg.ort_library.as_deref())?;
        let threads = runtime::threads(cfg.threads);
        let encoder = Encoder::open(&env, &folder.model, threads).map_err(fail)?;
        if let Some(hidden) = encoder.hidden.filter(|h| *h != folder.dimensions) {
            return Err(fail(format!(
                "{} returns {hidden}-dimensional token states, but the folder says {} dimensions",
                folder.model.display(),
                folder.dimensions
            )));
        }
        let settings = BatcherSettings {
            backend: name.to_owned(),
            max_batch_size: cfg.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH),
            max_wait: cfg.max_wait.unwrap_or(DEFAULT_MAX_WAIT),
            queue_size: cfg.queue_size.unwrap_or(DEFAULT_QUEUE),
            pooling: folder.pooling,
            normalize: folder.normalize,
        };
        tracing::info!(
            backend = name,
            dimensions = folder.dimensions,
            max_seq_length = folder.max_seq_length,
            pooling = ?folder.pooling,
            normalize = folder.normalize,
            max_batch_size = settings.max_batch_size,
            max_wait = ?settings.max_wait,
            threads,
            "loaded {} (embeddings)",
            folder.model.display()
        );
        let batcher = BatcherHandle::start(encoder, settings, batcher_metrics(metrics, name))
            .map_err(fail)?;
        Ok(EmbedBackend {
            name: name.to_owned(),
            batcher,
            inputs: Arc::new(Inputs::new(&folder)),
            dimensions: folder.dimensions,
        })
    }
}

fn batcher_metrics(metrics: &Metrics, backend: &str) -> BatcherMetrics {
    let labels = [backend];
    BatcherMetrics {
        queue_depth: metrics.engine_embed_queue_depth.with_label_values(&labels),
        batch_size: metrics.engine_embed_batch_size.with_label_values(&labels),
        inputs: metrics.engine_embed_inputs.with_label_values(&labels),
        run_seconds: metrics.engine_embed_run_seconds.with_label_values(&labels),
        input_tokens: metrics
            .engine_embed_tokens
            .with_label_values(&[backend, "input"]),
        padding_tokens: metrics
            .engine_embed_tokens
            .with_label_values(&[backend, "padding"]),
    }
}

#[async_trait]
impl Backend for EmbedBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        request: ChatRequest,
        _deployment: &Deployment,
        _cancel: CancellationToken,
    ) -> Result<EventStream, BackendError> {
        Err(BackendError::InvalidRequest {
            message: format!(
                "model `{}` is an embedding model (backend `{}` has task = \"embed\"); it serves /v1/embeddings, not chat completions",
                request.model, self.name
            ),
            param: Some("model"),
        })
    }

    async fn embed(
        &self,
        request: EmbedRequest,
        _deployment: &Deployment,
    ) -> Result<EmbedResponse, BackendError> {
        let dimensions = match request.dimensions.map(|d| d as usize) {
            Some(d) if d == 0 || d > self.dimensions => {
                return Err(BackendError::InvalidRequest {
                    message: format!(
                        "model `{}` has {} dimensions: 'dimensions' must be between 1 and {}",
                        request.model, self.dimensions, self.dimensions
                    ),
                    param: Some("dimensions"),
                })
            }
            d => d,
        };
        if request.input.is_empty() {
            return Ok(EmbedResponse {
                embeddings: Vec::new(),
                prompt_tokens: 0,
            });
        }
        let inputs = self.inputs.clone();
        let ids =
            tokio::task::spawn_blocking(move || inputs.prepare(&request.model, &request.input))
                .await
                .map_err(|e| BackendError::Failed {
                    backend: self.name.clone(),
                    message: format!("preparing the inputs failed: {e}"),
                })??;
        let tokens: usize = ids.iter().map(Vec::len).sum();
        let (reply, answer) = oneshot::channel();
        self.batcher.submit(Job { inputs: ids, reply })?;
        // Dropping this future (the client went away) closes `answer`: the batcher then
        // skips the request's remaining inputs.
        let mut embeddings = answer
            .await
            .map_err(|_| batcher::overloaded(&self.name))??;
        if let Some(d) = dimensions {
            for v in &mut embeddings {
                pooling::shorten(v, d);
            }
        }
        Ok(EmbedResponse {
            embeddings,
            prompt_tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        })
    }

    async fn ready(&self) -> Result<(), BackendError> {
        if self.batcher.is_alive() {
            Ok(())
        } else {
            Err(BackendError::Failed {
                backend: self.name.clone(),
                message: "the embedding batcher thread has stopped".into(),
            })
        }
    }
}
