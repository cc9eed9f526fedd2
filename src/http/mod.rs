//! The only place that knows axum: routes, extractors, OpenAI wire types ⇄ domain
//! types, SSE framing and error bodies. Handlers convert and call the pipeline.

mod chat;
mod convert;
pub use convert::chat_request;
mod embeddings;
mod error;
pub mod extract;
pub mod extras;
mod health;
mod layers;
mod models;
pub mod response;
mod route;
pub mod sse;
mod tools;
mod workflows;

/// A chat request body as `http/` turns it into the domain request (for other modules' tests).
#[cfg(test)]
pub fn convert_for_tests(body: &str) -> crate::domain::ChatRequest {
    let extract::ChatJson(wire, extras) =
        extract::parse_chat(body.as_bytes()).expect("test body parses");
    convert::chat_request(wire, extras).expect("test body is valid")
}

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;

use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::workflows::Workflows;

/// Shared by every handler.
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub workflows: Workflows,
    pub metrics: Arc<Metrics>,
    /// Unix time the gateway started (`created` of catalog models).
    pub started: u32,
    /// `server.metrics_key`: what `/metrics` asks for, if anything.
    pub metrics_key: Option<secrecy::SecretString>,
}

/// The whole HTTP surface.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/route", post(route::dry_run))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get))
        .route("/v1/workflows", get(workflows::list_workflows))
        .route(
            "/v1/workflows/{name}/runs",
            post(workflows::create_run).get(workflows::list_runs),
        )
        .route("/v1/workflows/runs/{id}", get(workflows::get_run))
        .route(
            "/v1/workflows/runs/{id}/artifacts/{step}",
            get(workflows::get_artifact),
        )
        // Auth, then the tenant's limits.
        .route_layer(from_fn_with_state(state.clone(), layers::admit));
    Router::new()
        .merge(v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(from_fn_with_state(state.clone(), layers::observe))
        .with_state(state)
}
