//! Workflow runs on the wire:
//! - `GET /v1/workflows`: the declared workflows, their inputs and next scheduled run;
//! - `POST /v1/workflows/{name}/runs` `{"inputs": {...}, "background": false}`: starts a
//!   run and answers `200` with it once it has ended, or at once `202` with its id (and
//!   `Location`) when `background` is true;
//! - `GET /v1/workflows/{name}/runs?limit=20&before=ID` and `GET /v1/workflows/runs/{id}`;
//! - `GET /v1/workflows/runs/{id}/artifacts/{step}`: a chart's SVG, a report.
//!
//! A tenant sees only its own runs (another tenant's run is a 404, as if it did not exist).
//! Times are unix seconds; step and run durations are milliseconds.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::extract::{OpenAiBytes, OpenAiPath, OpenAiQuery};
use super::AppState;
use crate::error::ApiError;
use crate::pipeline::Tenant;
use crate::workflows::{artifact_url, RunFilter, RunRecord, StoreError, SubmitError, Trigger};

/// Most runs one list answers with.
const MAX_LIMIT: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    inputs: Map<String, Value>,
    #[serde(default)]
    background: bool,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    before: Option<String>,
}

pub async fn list_workflows(State(state): State<Arc<AppState>>) -> Json<Value> {
    let workflows = &state.workflows;
    let data: Vec<Value> = workflows
        .jobs()
        .map(|job| {
            let inputs: Map<String, Value> = job
                .config
                .inputs
                .iter()
                .map(|(name, i)| {
                    (
                        name.clone(),
                        json!({
                            "type": i.kind.as_str(),
                            "description": i.description,
                            "default": i.default,
                            "required": i.required,
                        }),
                    )
                })
                .collect();
            json!({
                "id": job.name,
                "object": "workflow",
                "description": job.config.description,
                "inputs": inputs,
                "steps": job.config.steps.iter().map(|s| json!({
                    "name": s.name,
                    "kind": s.kind().as_str(),
                    "depends_on": s.depends_on,
                })).collect::<Vec<_>>(),
                "schedule": job.config.schedule,
                "next_run_at": workflows.next_fire(job).map(|t| t.as_second()),
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn create_run(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    OpenAiPath(name): OpenAiPath<String>,
    OpenAiBytes(body): OpenAiBytes,
) -> Result<Response, ApiError> {
    let body: RunBody = if body.iter().all(u8::is_ascii_whitespace) {
        RunBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid_request(format!("the body is not a run request: {e}"), None)
        })?
    };
    let started = state
        .workflows
        .submit(&name, body.inputs, tenant.0.clone(), Trigger::Api)
        .await
        .map_err(submit_error)?;
    if body.background {
        let location = format!("/v1/workflows/runs/{}", started.run.id);
        let mut response = (StatusCode::ACCEPTED, Json(view(&started.run))).into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(response);
    }
    let id = started.run.id.clone();
    let run = match started.done.await {
        Ok(run) => run,
        // The gateway stopped first: what the store has is the answer.
        Err(_) => find(&state, &tenant, &id).await?,
    };
    Ok(Json(view(&run)).into_response())
}

pub async fn list_runs(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    OpenAiPath(name): OpenAiPath<String>,
    OpenAiQuery(query): OpenAiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if state.workflows.job(&name).is_none() {
        return Err(unknown_workflow(&name));
    }
    let limit = query.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid_request(
            format!("limit must be between 1 and {MAX_LIMIT}"),
            Some("limit"),
        ));
    }
    let filter = RunFilter {
        workflow: Some(&name),
        tenant: Some(tenant.as_str()),
        before: query.before.as_deref(),
    };
    let mut runs = state
        .workflows
        .list(&filter, limit + 1)
        .await
        .map_err(store_error)?;
    let has_more = runs.len() > limit;
    runs.truncate(limit);
    Ok(Json(json!({
        "object": "list",
        "data": runs.iter().map(view).collect::<Vec<_>>(),
        "has_more": has_more,
        "last_id": runs.last().map(|r| r.id.clone()),
    })))
}

pub async fn get_run(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    OpenAiPath(id): OpenAiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&find(&state, &tenant, &id).await?)))
}

pub async fn get_artifact(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    OpenAiPath((id, step)): OpenAiPath<(String, String)>,
) -> Result<Response, ApiError> {
    find(&state, &tenant, &id).await?;
    let artifact = state
        .workflows
        .artifact(&id, &step)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::new(
                404,
                "invalid_request_error",
                format!("run {id} has no artefact from a step `{step}`"),
            )
            .with_code("artifact_not_found")
        })?;
    let mut response = artifact.data.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&artifact.meta.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{}\"", artifact.meta.name)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    // An SVG or HTML report must not run scripts in the gateway's origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// The caller's run `id`, or 404 (also for another tenant's run).
async fn find(state: &AppState, tenant: &Tenant, id: &str) -> Result<RunRecord, ApiError> {
    match state.workflows.get(id).await.map_err(store_error)? {
        Some(run) if run.tenant == tenant.as_str() => Ok(run),
        _ => Err(ApiError::new(
            404,
            "invalid_request_error",
            format!("no workflow run with id `{id}`"),
        )
        .with_code("run_not_found")),
    }
}

/// A run as the API shows it.
fn view(run: &RunRecord) -> Value {
    let secs = |ms: Option<i64>| ms.map(|ms| ms.div_euclid(1000));
    let took = |a: Option<i64>, b: Option<i64>| Some(b? - a?);
    json!({
        "id": run.id,
        "object": "workflow.run",
        "workflow": run.workflow,
        "status": run.status,
        "trigger": run.trigger,
        "inputs": run.inputs,
        "error": run.error,
        "created_at": secs(Some(run.created_at)),
        "finished_at": secs(run.finished_at),
        "duration_ms": took(Some(run.created_at), run.finished_at),
        "steps": run.steps.iter().map(|s| json!({
            "name": s.name,
            "kind": s.kind,
            "status": s.status,
            "attempts": s.attempts,
            "started_at": secs(s.started_at),
            "finished_at": secs(s.finished_at),
            "duration_ms": took(s.started_at, s.finished_at),
            "output": s.output,
            "output_truncated": s.output_truncated,
            "error": s.error,
        })).collect::<Vec<_>>(),
        "artifacts": run.artifacts.iter().map(|a| json!({
            "step": a.step,
            "name": a.name,
            "content_type": a.content_type,
            "bytes": a.bytes,
            "url": artifact_url(&run.id, &a.step),
        })).collect::<Vec<_>>(),
    })
}

fn unknown_workflow(name: &str) -> ApiError {
    ApiError::new(
        404,
        "invalid_request_error",
        format!("no workflow named `{name}`"),
    )
    .with_code("workflow_not_found")
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Unknown(name) => unknown_workflow(&name),
        SubmitError::BadInput { param, message } => {
            ApiError::invalid_request(message, Some(&param)).with_code("invalid_input")
        }
        SubmitError::Busy(_) => ApiError::new(503, "server_error", e.to_string())
            .with_code("too_many_runs")
            .with_retry_after(std::time::Duration::from_secs(5)),
        SubmitError::Store(e) => store_error(e),
    }
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "workflow run store failed");
    ApiError::new(
        500,
        "server_error",
        "the workflow run store failed; see the gateway's log",
    )
}
