//! One workflow step, of each kind, with its timeout and retries:
//! - `tool`: a server tool from the registry, arguments rendered from templates (an
//!   argument that is one `{{ expression }}` keeps its JSON type; sql_query binds
//!   `params`); the output is the tool's JSON (sql_query: columns and row objects);
//! - `model`: a chat completion through the pipeline (routing, cache and limits apply),
//!   recorded under the run's tenant; the output is the answer's text;
//! - `template`: rendered text, also an artefact (`NAME.md`, `.html`, `.txt`);
//! - `chart`: an SVG chart of rows (`data`, `x`, `y`), an artefact `NAME.svg`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::chart::{self, ChartKind, ChartSpec};
use super::record::{Artifact, ArtifactMeta, StepRecord, StepStatus};
use super::template::{evaluate, render, render_value, truthy};
use super::Inner;
use crate::config::{ChartType, StepConfig, StepKind, TextFormat};
use crate::domain::{self, ChatRequest, Message, Role, Sampling};
use crate::pipeline::{Asked, Tenant};
use crate::tools::{CallContext, ToolError};

/// What a step runs with.
pub(super) struct StepEnv {
    pub inner: Arc<Inner>,
    pub run_id: String,
    pub workflow: String,
    pub tenant: Arc<str>,
    /// `inputs`, `steps`, `run`, `now` as of the step's start.
    pub context: Value,
    pub cancel: CancellationToken,
}

/// An artefact a step made.
pub(super) struct Made {
    pub step: String,
    pub file: String,
    pub content_type: &'static str,
    pub data: Vec<u8>,
}

impl Made {
    pub fn artifact(&self) -> Artifact {
        Artifact {
            meta: ArtifactMeta {
                step: self.step.clone(),
                name: self.file.clone(),
                content_type: self.content_type.to_owned(),
                bytes: self.data.len() as u64,
            },
            data: self.data.clone(),
        }
    }
}

/// How a step ended.
pub(super) struct Outcome {
    pub status: StepStatus,
    pub attempts: u32,
    pub started_at: i64,
    pub finished_at: i64,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub made: Option<Made>,
}

impl Outcome {
    pub fn apply(&self, s: &mut StepRecord) {
        s.status = self.status;
        s.attempts = self.attempts;
        s.started_at = Some(self.started_at);
        s.finished_at = Some(self.finished_at);
        s.output = self.output.clone();
        s.error = self.error.clone();
    }

    /// What later steps see as `steps.NAME`.
    pub fn context_entry(&self, run_id: &str, s: &StepRecord) -> Value {
        let mut entry = json!({
            "status": s.status.as_str(),
            "output": self.output.clone().unwrap_or(Value::Null),
        });
        if let Some(made) = &self.made {
            entry["url"] = Value::String(artifact_url(run_id, &made.step));
            if let Ok(text) = std::str::from_utf8(&made.data) {
                entry["artifact"] = Value::String(text.to_owned());
            }
        }
        entry
    }
}

/// Where an artefact is downloaded (relative to the gateway's base URL).
pub fn artifact_url(run_id: &str, step: &str) -> String {
    format!("/v1/workflows/runs/{run_id}/artifacts/{step}")
}

/// A step's result before it is recorded.
struct Done {
    output: Value,
    made: Option<Made>,
}

/// Run `step` with its `when`, timeout and retries.
pub(super) async fn run_with_retries(env: &StepEnv, step: &StepConfig) -> Outcome {
    let clock = env.inner.clock;
    let started_at = clock.now().as_millisecond();
    let began = tokio::time::Instant::now();
    let kind = step.kind();
    let ended = |status, attempts, output, error, made| Outcome {
        status,
        attempts,
        started_at,
        finished_at: clock.now().as_millisecond(),
        output,
        error,
        made,
    };
    if let Some(when) = &step.when {
        match render(&env.inner.env, when, &env.context, false) {
            Ok(text) if !truthy(&text) => {
                return ended(StepStatus::Skipped, 0, None, None, None);
            }
            Ok(_) => {}
            Err(e) => {
                return ended(
                    StepStatus::Failed,
                    0,
                    None,
                    Some(format!("when: {e}")),
                    None,
                );
            }
        }
    }
    let mut attempt = 0;
    let mut delay = step.retry_delay;
    let outcome = loop {
        attempt += 1;
        record_attempt(env, step, attempt, started_at).await;
        let tried = tokio::select! {
            biased;
            () = env.cancel.cancelled() => Err("cancelled".to_owned()),
            r = tokio::time::timeout(step.timeout, run_once(env, step, attempt)) => match r {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {}", humantime::format_duration(step.timeout))),
            },
        };
        match tried {
            Ok(done) => {
                break ended(
                    StepStatus::Succeeded,
                    attempt,
                    Some(done.output),
                    None,
                    done.made,
                )
            }
            Err(e) if attempt > step.retries || env.cancel.is_cancelled() => {
                let error = if attempt > 1 {
                    format!("{e} (after {attempt} tries)")
                } else {
                    e
                };
                break ended(StepStatus::Failed, attempt, None, Some(error), None);
            }
            Err(e) => {
                tracing::info!(workflow = %env.workflow, run = %env.run_id, step = %step.name, attempt, error = %e, retry_in = ?delay, "workflow step failed: retrying");
                tokio::select! {
                    () = env.cancel.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
                delay = delay.saturating_mul(2).min(Duration::from_secs(300));
            }
        }
    };
    env.inner
        .metrics
        .workflow_step_seconds
        .with_label_values(&[kind.as_str(), outcome.status.as_str()])
        .observe(began.elapsed().as_secs_f64());
    outcome
}

/// Record that try `attempt` has started.
async fn record_attempt(env: &StepEnv, step: &StepConfig, attempt: u32, started_at: i64) {
    let record = StepRecord {
        status: StepStatus::Running,
        attempts: attempt,
        started_at: Some(started_at),
        ..StepRecord::pending(&step.name, step.kind().as_str())
    };
    if let Err(e) = env.inner.store.update_step(&env.run_id, &record).await {
        tracing::error!(run = %env.run_id, step = %step.name, error = %e, "cannot record a workflow step");
    }
}

async fn run_once(env: &StepEnv, step: &StepConfig, attempt: u32) -> Result<Done, String> {
    match step.kind() {
        StepKind::Tool => tool(env, step, attempt).await,
        StepKind::Model => model(env, step).await,
        StepKind::Template => template(env, step),
        StepKind::Chart => chart_step(env, step),
    }
}

async fn tool(env: &StepEnv, step: &StepConfig, attempt: u32) -> Result<Done, String> {
    let name = step.tool.as_deref().unwrap_or_default();
    let entry = env.inner.registry.get(name).ok_or_else(|| {
        format!("the tool `{name}` is not available now (an MCP server that is down?)")
    })?;
    let arguments = render_value(
        &env.inner.env,
        &Value::Object(step.arguments.clone()),
        &env.context,
    )
    .map_err(|e| format!("arguments: {e}"))?;
    let ctx = CallContext {
        deadline: tokio::time::Instant::now() + step.timeout,
        cancel: env.cancel.child_token(),
        call_id: format!("{}-{attempt}", step.name),
        run_id: env.run_id.clone(),
        tenant: env.tenant.clone(),
    };
    let _stop = ctx.cancel.clone().drop_guard();
    let began = std::time::Instant::now();
    let result = entry.tool.call_value(arguments, &ctx).await;
    let metrics = &env.inner.metrics;
    let outcome = result.as_ref().map_or_else(ToolError::outcome, |_| "ok");
    metrics.tool_calls.with_label_values(&[name, outcome]).inc();
    metrics
        .tool_duration
        .with_label_values(&[name])
        .observe(began.elapsed().as_secs_f64());
    let output = result.map_err(|e| match e {
        // The tool measures what was left of the step's time (199.9ms of 200ms): in ms.
        ToolError::TimedOut(d) => {
            let ms = Duration::from_millis((d.as_secs_f64() * 1000.0).round() as u64);
            format!("{name}: timed out after {}", humantime::format_duration(ms))
        }
        e => format!("{name}: {e}"),
    })?;
    Ok(Done { output, made: None })
}

async fn model(env: &StepEnv, step: &StepConfig) -> Result<Done, String> {
    let pipeline = env
        .inner
        .pipeline
        .get()
        .and_then(|p| p.upgrade())
        .ok_or_else(|| "no model is reachable (the gateway is stopping)".to_owned())?;
    let text = |t: &Option<String>| -> Result<Option<String>, String> {
        t.as_deref()
            .map(|t| render(&env.inner.env, t, &env.context, false))
            .transpose()
    };
    let model = text(&step.model)
        .map_err(|e| format!("model: {e}"))?
        .unwrap_or_default();
    let model = model.trim().to_owned();
    let mut messages = Vec::new();
    if let Some(system) = text(&step.system).map_err(|e| format!("system: {e}"))? {
        messages.push(Message::text(Role::System, system));
    }
    let prompt = text(&step.prompt)
        .map_err(|e| format!("prompt: {e}"))?
        .unwrap_or_default();
    messages.push(Message::text(Role::User, prompt));
    let request = ChatRequest {
        model,
        messages,
        tools: Vec::new(),
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: None,
        sampling: Sampling {
            max_tokens: step.max_tokens,
            temperature: step.temperature,
            ..Sampling::default()
        },
        n: 1,
        user: None,
        extra: Default::default(),
    };
    let tenant = Tenant(env.tenant.clone());
    let generation = pipeline
        .chat(&tenant, request, Asked::default())
        .await
        .map_err(|e| format!("model: {}", e.message))?;
    drop(pipeline);
    let completion = domain::collect(generation.events)
        .await
        .map_err(|e| format!("model: {e}"))?;
    Ok(Done {
        output: Value::String(completion.content.trim().to_owned()),
        made: None,
    })
}

fn template(env: &StepEnv, step: &StepConfig) -> Result<Done, String> {
    let format = step.format.unwrap_or_default();
    let source = step.template.as_deref().unwrap_or_default();
    let mut text = render(
        &env.inner.env,
        source,
        &env.context,
        format == TextFormat::Html,
    )?;
    // minijinja drops a template's last newline; a report file keeps it.
    if source.ends_with('\n') && !text.ends_with('\n') {
        text.push('\n');
    }
    let made = made(
        env,
        step,
        format!("{}.{}", step.name, format.extension()),
        format.content_type(),
        text.clone().into_bytes(),
    )?;
    Ok(Done {
        output: Value::String(text),
        made: Some(made),
    })
}

fn chart_step(env: &StepEnv, step: &StepConfig) -> Result<Done, String> {
    let ctx = &env.context;
    let data = evaluate(
        &env.inner.env,
        step.data.as_deref().unwrap_or_default(),
        ctx,
    )
    .map_err(|e| format!("data: {e}"))?;
    let (x, y) = (
        step.x.as_deref().unwrap_or_default(),
        step.y.as_deref().unwrap_or_default(),
    );
    let points = points(&data, x, y)?;
    let text = |t: &Option<String>| -> Result<String, String> {
        t.as_deref()
            .map_or(Ok(String::new()), |t| render(&env.inner.env, t, ctx, false))
    };
    let kind = match step.chart {
        Some(ChartType::Line) => ChartKind::Line,
        _ => ChartKind::Bar,
    };
    let mut spec = ChartSpec::new(kind, text(&step.title).map_err(|e| format!("title: {e}"))?);
    spec.x_label = text(&step.x_label).map_err(|e| format!("x_label: {e}"))?;
    spec.y_label = text(&step.y_label).map_err(|e| format!("y_label: {e}"))?;
    let svg = chart::render(&spec, &points).map_err(|e| format!("chart: {e}"))?;
    let made = made(
        env,
        step,
        format!("{}.svg", step.name),
        "image/svg+xml",
        svg.into_bytes(),
    )?;
    Ok(Done {
        output: json!({"points": points.len(), "file": made.file}),
        made: Some(made),
    })
}

/// `(x label, y value)` from a list of row objects.
fn points(data: &Value, x: &str, y: &str) -> Result<Vec<(String, f64)>, String> {
    let rows = match data {
        Value::Array(rows) => rows,
        other => {
            return Err(format!(
                "data must be a list of rows, got {}",
                crate::tools::json_type(other)
            ))
        }
    };
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let label = match row.get(x) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => return Err(format!("data[{i}] has no `{x}`")),
                Some(other) => other.to_string(),
            };
            let value = match row.get(y) {
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
                Some(Value::Null) => Some(0.0),
                _ => None,
            }
            .ok_or_else(|| format!("data[{i}].{y} is not a number"))?;
            Ok((label, value))
        })
        .collect()
}

fn made(
    env: &StepEnv,
    step: &StepConfig,
    file: String,
    content_type: &'static str,
    data: Vec<u8>,
) -> Result<Made, String> {
    let max = env.inner.settings.max_artifact_bytes;
    if data.len() > max {
        return Err(format!(
            "the {} artefact is {} bytes, more than workflows.max_artifact_bytes ({max})",
            file,
            data.len()
        ));
    }
    Ok(Made {
        step: step.name.clone(),
        file,
        content_type,
        data,
    })
}
