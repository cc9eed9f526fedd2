//! Operational endpoints: `/healthz` (the process answers), `/readyz` (every model has
//! a ready route, from the kept probe verdicts: see `pipeline/health.rs`) and
//! `/metrics` (Prometheus text; behind `server.metrics_key` when set; the tokio
//! alive-task gauge is read at each scrape).

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
use crate::pipeline::BackendHealth;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 with status `ready` (every backend ready) or `degraded` (some backend is not,
/// but every model still has a ready route), 503 `not_ready` otherwise. Never probes.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let report = state.pipeline.readiness_report().await;
    let backends: Map<String, Value> = report
        .backends
        .into_iter()
        .map(|(name, b)| (name, backend_json(b)))
        .collect();
    let models: Map<String, Value> = report
        .models
        .into_iter()
        .map(|(name, ready)| (name, json!({ "ready": ready })))
        .collect();
    let (status, word) = match (report.ready, report.degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    let body = json!({ "status": word, "backends": backends, "models": models });
    (status, Json(body))
}

fn backend_json(b: BackendHealth) -> Value {
    let mut v = json!({ "ready": b.ready });
    if let Some(error) = b.error {
        v["error"] = json!(error);
    }
    if let Some(up) = b.upstream {
        if let Some(breaker) = up.breaker {
            v["breaker"] = json!(breaker.as_str());
        }
        if up.members.len() > 1 {
            v["members"] = up
                .members
                .into_iter()
                .map(|m| {
                    json!({
                        "member": m.label,
                        "probe_ok": m.probe_ok,
                        "ejected": m.ejected,
                        "outstanding": m.outstanding,
                    })
                })
                .collect();
        }
    }
    v
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
