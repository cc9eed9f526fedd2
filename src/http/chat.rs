//! `POST /v1/chat/completions`: parse and validate, run the pipeline, then either stream
//! the events as SSE or collect them into one JSON response.

use std::sync::Arc;

use async_openai::types::chat::CreateChatCompletionRequest;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;

use super::extract::{ChatJson, SamplingExtras};
use super::layers::labelled;
use super::{convert, response, route, sse, tools, AppState};
use crate::domain::collect;
use crate::error::{ApiError, BackendError};
use crate::pipeline::cache::Directive;
use crate::pipeline::{Asked, Tenant};

/// `hit`, `miss` or `bypass`: what the response cache did for this request.
const CACHE_STATUS: HeaderName = HeaderName::from_static("x-sluice-cache");

pub async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    headers: HeaderMap,
    ChatJson(wire, extras): ChatJson<CreateChatCompletionRequest>,
) -> Response {
    let label = state.pipeline.model_label(&wire.model).to_owned();
    let directive = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(Directive::parse)
        .unwrap_or_default();
    labelled(
        label,
        handle(&state, &tenant, &headers, wire, extras, directive).await,
    )
}

async fn handle(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    wire: CreateChatCompletionRequest,
    extras: SamplingExtras,
    directive: Directive,
) -> Result<Response, ApiError> {
    let stream = wire.stream.unwrap_or(false);
    let include_usage = wire
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let tier = route::forced_tier(headers)?;
    let server_tools = tools::requested(headers)?;
    let trace = tools::trace(headers);
    let request = convert::chat_request(wire, extras)?;
    let asked = Asked {
        directive,
        tier,
        tools: &server_tools,
    };
    let generation = state.pipeline.chat(tenant, request, asked).await?;
    let cache_header = HeaderValue::from_static(generation.cache.as_str());
    if !stream {
        let mut done = collect(generation.events).await?;
        let body = response::completion(&generation.model, &mut done, trace);
        let mut response = Json(body).into_response();
        response.headers_mut().insert(CACHE_STATUS, cache_header);
        route::insert_headers(response.headers_mut(), &generation.routed);
        return Ok(response);
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
    let chunks = response::Chunks::new(generation.model.clone(), include_usage, trace);
    let body = Body::from_stream(sse::body(chunks, first, events));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(CACHE_STATUS, cache_header);
    route::insert_headers(headers, &generation.routed);
    Ok(response)
}
