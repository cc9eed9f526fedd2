//! `POST /v1/embeddings`: text inputs to vectors through the model's backend, returned
//! as float arrays or, when asked (the Python SDK's default), base64 little-endian f32.

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
use crate::domain::EmbedRequest;
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

async fn handle(
    state: &AppState,
    tenant: &Tenant,
    wire: CreateEmbeddingRequest,
) -> Result<Value, ApiError> {
    let input = match wire.input {
        EmbeddingInput::String(s) => vec![s],
        EmbeddingInput::StringArray(v) => v,
        EmbeddingInput::IntegerArray(_) | EmbeddingInput::ArrayOfIntegerArray(_) => {
            return Err(ApiError::invalid_request(
                "Token-id inputs are not supported; send text.",
                Some("input"),
            ))
        }
    };
    if input.is_empty() || input.iter().any(String::is_empty) {
        return Err(ApiError::invalid_request(
            "'input' must be a non-empty string or a non-empty array of non-empty strings.",
            Some("input"),
        ));
    }
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
