//! Routing on the wire: the `x-sluice-tier` request header that forces a tier, the
//! response headers that say where a request went (`x-sluice-tier`,
//! `x-sluice-route-reason`, `x-sluice-complexity`), and `POST /v1/route`, a dry run
//! that takes a chat body and answers with the decision without generating.

use std::sync::Arc;

use async_openai::types::chat::CreateChatCompletionRequest;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::extract::{ChatJson, SamplingExtras};
use super::layers::labelled;
use super::{convert, AppState};
use crate::error::ApiError;
use crate::pipeline::{Routed, Tenant};

/// Request: forces a tier. Response: the tier served.
pub const TIER: HeaderName = HeaderName::from_static("x-sluice-tier");
/// `scored`, `forced`, `load` or `single`.
pub const REASON: HeaderName = HeaderName::from_static("x-sluice-route-reason");
/// The complexity score in [0, 1], tiered models only.
pub const COMPLEXITY: HeaderName = HeaderName::from_static("x-sluice-complexity");

/// The tier a request forces with `x-sluice-tier`, if any.
pub fn forced_tier(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get(&TIER) {
        None => Ok(None),
        Some(value) => value.to_str().map(|s| Some(s.trim())).map_err(|_| {
            ApiError::invalid_request(
                "the x-sluice-tier header is not a visible ASCII tier name",
                Some("x-sluice-tier"),
            )
        }),
    }
}

/// Format a score the way the header and `/v1/route` report it.
fn score_text(score: f64) -> String {
    format!("{score:.4}")
}

/// Say on `headers` where the request went.
pub fn insert_headers(headers: &mut HeaderMap, routed: &Routed) {
    if let Some(tier) = routed
        .tier
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        headers.insert(TIER, tier);
    }
    headers.insert(REASON, HeaderValue::from_static(routed.reason.as_str()));
    if let Some(score) = routed
        .score
        .and_then(|s| HeaderValue::from_str(&score_text(s)).ok())
    {
        headers.insert(COMPLEXITY, score);
    }
}

/// `POST /v1/route`: the same body as a chat completion; the decision, score and the
/// features that weigh most. Nothing is generated, cached or counted.
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    Extension(_tenant): Extension<Tenant>,
    headers: HeaderMap,
    ChatJson(wire, extras): ChatJson<CreateChatCompletionRequest>,
) -> Response {
    let label = state.pipeline.model_label(&wire.model).to_owned();
    labelled(label, handle(&state, &headers, wire, extras))
}

fn handle(
    state: &AppState,
    headers: &HeaderMap,
    wire: CreateChatCompletionRequest,
    extras: SamplingExtras,
) -> Result<Response, ApiError> {
    let tier = forced_tier(headers)?;
    let request = convert::chat_request(wire, extras)?;
    let decision = state.pipeline.route(&request, tier)?;
    let target = &decision.target;
    let body = json!({
        "object": "sluice.route",
        "model": &*target.served,
        "logical_model": &*target.model,
        "tier": target.tier.as_deref(),
        "reason": decision.reason.as_str(),
        "score": decision.score.map(|s| (s * 1e4).round() / 1e4),
        "scored_tier": decision.scored_tier.as_deref(),
        "tiers": decision.tiers,
        "thresholds": decision.thresholds,
        "top_features": decision.top.iter().map(|(name, weight)| json!({
            "name": name,
            "contribution": (weight * 1e4).round() / 1e4,
        })).collect::<Vec<_>>(),
    });
    let mut response = Json(body).into_response();
    insert_headers(response.headers_mut(), &Routed::from(&decision));
    Ok(response)
}
