//! Operational endpoints: `/healthz` (the process answers), `/readyz` (every backend
//! answers its readiness probe) and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};

use super::AppState;

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

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
