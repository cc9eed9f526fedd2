//! `POST /v1/embeddings`: inputs (a string, strings, token ids, or lists of token ids;
//! at most 2,048) to vectors through the model's backend, returned as float arrays or,
//! when asked (the Python SDK's default), base64 little-endian f32.

use std::sync::Arc;

use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput, EncodingFormat};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use serde_json::{json, Value};

use super::extract::OpenAiJson;
use super::layers::labelled;
use super::AppState;
use crate::domain::{EmbedInput, EmbedRequest};
use crate::error::ApiError;
use crate::pipeline::Tenant;

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    OpenAiJson(wire): OpenAiJson<CreateEmbeddingRequest>,
) -> Response {
    let label = state.pipeline.model_label(&wire.model).to_owned();
    let outcome = handle(&state, &tenant, wire).await;
    labelled(label, outcome.map(|body| Json(body).into_response()))
}

/// OpenAI's limit on inputs per request.
const MAX_INPUTS: usize = 2048;

/// The wire's four input shapes as domain inputs, or a 400 for an empty request, an
/// empty input, or more inputs than OpenAI takes.
fn inputs(wire: EmbeddingInput) -> Result<Vec<EmbedInput>, ApiError> {
    let input: Vec<EmbedInput> = match wire {
        EmbeddingInput::String(s) => vec![EmbedInput::Text(s)],
        EmbeddingInput::StringArray(v) => v.into_iter().map(EmbedInput::Text).collect(),
        EmbeddingInput::IntegerArray(ids) => vec![EmbedInput::Tokens(ids)],
        EmbeddingInput::ArrayOfIntegerArray(v) => v.into_iter().map(EmbedInput::Tokens).collect(),
    };
    let empty = |i: &EmbedInput| match i {
        EmbedInput::Text(s) => s.is_empty(),
        EmbedInput::Tokens(ids) => ids.is_empty(),
    };
    if input.is_empty() {
        return Err(ApiError::invalid_request(
            "'input' must be a non-empty string, a non-empty array of strings, or token ids.",
            Some("input"),
        ));
    }
    if let Some(index) = input.iter().position(empty) {
        return Err(ApiError::invalid_request(
            format!("input[{index}] is empty; every input must hold text or token ids."),
            Some("input"),
        ));
    }
    if input.len() > MAX_INPUTS {
        return Err(ApiError::invalid_request(
            format!(
                "'input' has {} items; at most {MAX_INPUTS} inputs are accepted per request.",
                input.len()
            ),
            Some("input"),
        ));
    }
    Ok(input)
}

async fn handle(
    state: &AppState,
    tenant: &Tenant,
    wire: CreateEmbeddingRequest,
) -> Result<Value, ApiError> {
    let input = inputs(wire.input)?;
    if wire.dimensions == Some(0) {
        return Err(ApiError::invalid_request(
            "'dimensions' must be at least 1.",
            Some("dimensions"),
        ));
    }
    let base64 = matches!(wire.encoding_format, Some(EncodingFormat::Base64));
    let request = EmbedRequest {
        model: wire.model.clone(),
        input,
        dimensions: wire.dimensions,
    };
    let out = state.pipeline.embed(tenant, request).await?;
    let data: Vec<Value> = out
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": wire.model,
        "usage": { "prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens },
    }))
}
