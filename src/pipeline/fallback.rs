//! Stage between route and backend: ordered fallbacks. A model may list other
//! deployments of itself (`fallbacks = [{ backend, upstream_model }]`); when the routed
//! deployment fails before its first byte (no connection, a timeout waiting for its
//! answer, a 5xx or 429, an open breaker, an ejected pool, a full engine queue; after
//! that backend's own retries), the next one is tried, in order. Once a deployment has
//! accepted the request and started answering, its stream is the answer: a failure
//! later reaches the client as it is, never a second generation. The response keeps the
//! model's name; `sluice_model_fallbacks_total{model, from, to}` counts the moves.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::route::Target;
use crate::backend::{Backends, Deployment};
use crate::config::{BackendKind, Config, ModelConfig};
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;
use crate::metrics::Metrics;

/// The fallback targets of a pinned model, in config order (validate() checked that
/// their backends exist).
pub fn targets(config: &Config, model: &ModelConfig, backends: &Backends) -> Arc<[Target]> {
    let primary_kind = config.backends.get(&model.backend).map(|b| b.kind);
    let name: Arc<str> = Arc::from(model.name.as_str());
    model
        .fallbacks
        .iter()
        .filter_map(|fb| {
            let backend = backends.get(&fb.backend)?.clone();
            let kind = config.backends.get(&fb.backend)?.kind;
            let same_kind = Some(kind) == primary_kind;
            let deployment = Deployment {
                backend: fb.backend.clone(),
                upstream_model: fb
                    .upstream_model
                    .clone()
                    .unwrap_or_else(|| model.upstream_name().to_owned()),
                keep_alive: fb.keep_alive.clone().or_else(|| {
                    (kind == BackendKind::Ollama)
                        .then(|| model.keep_alive.clone())
                        .flatten()
                }),
                options: fb.options.clone().unwrap_or_else(|| {
                    if same_kind {
                        model.options.clone()
                    } else {
                        serde_json::Map::new()
                    }
                }),
                tier: None,
                structured: None,
                // Only to another OpenAI-compatible deployment, like `options`.
                forward_unknown_fields: same_kind && model.forward_unknown_fields,
            };
            Some(Target {
                model: name.clone(),
                served: name.clone(),
                tier: None,
                deployment: Arc::new(deployment),
                backend,
                in_flight: Arc::default(),
                fallbacks: Arc::from([]),
            })
        })
        .collect()
}

/// Start `request` on `target`, or on its fallbacks in order; the target that answers
/// comes back with its events.
pub async fn chat(
    target: &Target,
    request: ChatRequest,
    cancel: CancellationToken,
    metrics: &Metrics,
) -> Result<(EventStream, Target), BackendError> {
    let stopped = || cancel.is_cancelled();
    in_order(target, request, metrics, stopped, |t, request| {
        t.backend.chat(request, &t.deployment, cancel.clone())
    })
    .await
}

/// Embed on `target`, or on its fallbacks in order.
pub async fn embed(
    target: &Target,
    request: EmbedRequest,
    metrics: &Metrics,
) -> Result<EmbedResponse, BackendError> {
    let (response, _) = in_order(
        target,
        request,
        metrics,
        || false,
        |t, request| t.backend.embed(request, &t.deployment),
    )
    .await?;
    Ok(response)
}

/// `call` on `target`, then on each fallback while the failure is one to fall back on
/// (and `stopped` says the caller is still there); the answer and the target that gave it.
async fn in_order<'a, R, T, Fut>(
    target: &'a Target,
    request: R,
    metrics: &Metrics,
    stopped: impl Fn() -> bool,
    call: impl Fn(&'a Target, R) -> Fut,
) -> Result<(T, Target), BackendError>
where
    R: Clone,
    Fut: std::future::Future<Output = Result<T, BackendError>>,
{
    let mut request = Some(request);
    let mut current = target;
    let mut rest = target.fallbacks.iter();
    loop {
        let next = rest.next();
        // A copy only when a fallback may need the request again.
        let this = match next {
            Some(_) => request.clone(),
            None => request.take(),
        }
        .ok_or_else(|| BackendError::Protocol("no request left to send".into()))?;
        match call(current, this).await {
            Ok(answer) => return Ok((answer, current.clone())),
            Err(e) => {
                metrics.upstream_error(current.backend.name(), &e);
                match next {
                    Some(fb) if e.is_fallback_error() && !stopped() => {
                        moved(metrics, target, current, fb, &e);
                        current = fb;
                    }
                    _ => return Err(e),
                }
            }
        }
    }
}

fn moved(metrics: &Metrics, model: &Target, from: &Target, to: &Target, error: &BackendError) {
    metrics
        .resilience
        .fallbacks
        .with_label_values(&[&*model.model, from.backend.name(), to.backend.name()])
        .inc();
    tracing::warn!(model = %model.model, from = from.backend.name(), to = to.backend.name(), error = %error, "falling back to the next deployment");
}
