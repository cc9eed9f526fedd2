//! `POST /v1/chat/completions`: parse and validate, run the pipeline, then either stream
//! the events as SSE or collect them into one JSON response.

use std::sync::Arc;

use async_openai::types::chat::CreateChatCompletionRequest;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;

use super::extract::{ChatJson, SamplingExtras};
use super::layers::labelled;
use super::{convert, response, sse, AppState};
use crate::domain::collect;
use crate::error::{ApiError, BackendError};
use crate::pipeline::Tenant;

pub async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    ChatJson(wire, extras): ChatJson<CreateChatCompletionRequest>,
) -> Response {
    let label = state.pipeline.model_label(&wire.model).to_owned();
    labelled(label, handle(&state, &tenant, wire, extras).await)
}

async fn handle(
    state: &AppState,
    tenant: &Tenant,
    wire: CreateChatCompletionRequest,
    extras: SamplingExtras,
) -> Result<Response, ApiError> {
    let stream = wire.stream.unwrap_or(false);
    let include_usage = wire
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let mut request = convert::chat_request(wire)?;
    request.sampling.top_k = extras.top_k;
    let generation = state.pipeline.chat(tenant, request).await?;
    if !stream {
        let mut done = collect(generation.events).await?;
        return Ok(Json(response::completion(&generation.model, &mut done)).into_response());
    }
    // Wait for the first event before committing to a 200: an upstream that fails at
    // once (unknown upstream model, out of memory) still gets a proper error status.
    let mut events = generation.events;
    let first = match events.next().await {
        Some(Ok(event)) => event,
        Some(Err(e)) => return Err(e.into()),
        None => {
            return Err(BackendError::Protocol(
                "the backend closed the stream without answering".into(),
            )
            .into())
        }
    };
    let chunks = response::Chunks::new(generation.model.clone(), include_usage);
    let body = Body::from_stream(sse::body(chunks, first, events));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
