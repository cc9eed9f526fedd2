//! Operational endpoints: `/healthz` (the process answers), `/readyz` (every backend
//! answers its readiness probe) and `/metrics` (Prometheus text; behind
//! `server.metrics_key` when set; the tokio alive-task gauge is read at each scrape).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::error::ApiError;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let checks = state.pipeline.readiness().await;
    let all_ok = checks.iter().all(|(_, r)| r.is_ok());
    let backends: Map<String, Value> = checks
        .into_iter()
        .map(|(name, r)| {
            let v = match r {
                Ok(()) => json!({ "ready": true }),
                Err(e) => json!({ "ready": false, "error": e.to_string() }),
            };
            (name, v)
        })
        .collect();
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        json!({ "status": if all_ok { "ready" } else { "not_ready" }, "backends": backends });
    (status, Json(body))
}

pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(key) = &state.metrics_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compared as SHA-256 digests: the time taken says nothing about the key.
        let digest = |s: &str| Sha256::digest(s.as_bytes());
        if digest(given) != digest(key.expose_secret()) {
            return ApiError::new(
                401,
                "invalid_request_error",
                "/metrics needs `Authorization: Bearer <server.metrics_key>`",
            )
            .with_code("invalid_api_key")
            .into_response();
        }
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let alive = runtime.metrics().num_alive_tasks();
        state
            .metrics
            .runtime_alive_tasks
            .set(i64::try_from(alive).unwrap_or(i64::MAX));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
