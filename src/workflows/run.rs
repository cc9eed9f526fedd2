//! One workflow run: steps start as soon as everything they depend on has succeeded (or
//! was skipped), so independent steps run at the same time; a failed step marks every
//! step after it `upstream_failed` and the run `failed` with the reason. Each step's
//! state is written to the run store as it changes, so a run interrupted by a crash
//! shows how far it got. The run's `timeout` ends it (steps still running fail, steps
//! not started are `cancelled`); sluice stopping ends it as `interrupted`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Map, Value};

use super::record::{RunRecord, RunStatus, StepRecord, StepStatus};
use super::steps::{self, Made, StepEnv};
use super::store;
use super::{Inner, Job};

/// Why a run ended before all its steps did.
#[derive(Clone, Copy)]
enum Cut {
    TimedOut,
    Stopped,
}

/// Run `record` (already stored) to its end; the ended record is returned and stored.
pub(super) async fn execute(
    inner: &Arc<Inner>,
    job: &Arc<Job>,
    mut record: RunRecord,
    tenant: Arc<str>,
) -> RunRecord {
    let steps_cfg = &job.config.steps;
    let deadline = tokio::time::Instant::now() + job.config.timeout;
    let cancel = inner.stop.child_token();
    let _cancel_on_end = cancel.clone().drop_guard();
    let mut outputs: Map<String, Value> = Map::new();
    let mut started: HashSet<usize> = HashSet::new();
    let mut running = FuturesUnordered::new();
    let mut cut = None;
    loop {
        // Start every step whose dependencies are done; settle those that cannot run.
        for (i, step) in steps_cfg.iter().enumerate() {
            if started.contains(&i) {
                continue;
            }
            let mut ready = true;
            let mut failed_dep = None;
            for dep in &step.depends_on {
                match record
                    .steps
                    .iter()
                    .find(|s| &s.name == dep)
                    .map(|s| s.status)
                {
                    Some(StepStatus::Succeeded | StepStatus::Skipped) => {}
                    Some(StepStatus::Failed | StepStatus::UpstreamFailed) => {
                        failed_dep = Some(dep.clone());
                    }
                    _ => ready = false,
                }
            }
            if let Some(dep) = failed_dep {
                started.insert(i);
                let now = inner.clock.now().as_millisecond();
                let s = &mut record.steps[i];
                s.status = StepStatus::UpstreamFailed;
                s.error = Some(format!(
                    "not run: the step `{dep}` it depends on did not succeed"
                ));
                s.finished_at = Some(now);
                persist(inner, &record.id, s).await;
                continue;
            }
            if !ready {
                continue;
            }
            started.insert(i);
            record.steps[i].status = StepStatus::Running;
            record.steps[i].started_at = Some(inner.clock.now().as_millisecond());
            let env = StepEnv {
                inner: inner.clone(),
                run_id: record.id.clone(),
                workflow: job.name.clone(),
                tenant: tenant.clone(),
                context: context(inner, &record, &outputs),
                cancel: cancel.child_token(),
            };
            let step = step.clone();
            running.push(async move {
                let outcome = steps::run_with_retries(&env, &step).await;
                (i, outcome)
            });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => { cut = Some(Cut::Stopped); break; }
            () = tokio::time::sleep_until(deadline) => { cut = Some(Cut::TimedOut); break; }
            Some((i, outcome)) = running.next() => {
                let s = &mut record.steps[i];
                outcome.apply(s);
                if let Some(made) = &outcome.made {
                    store_artifact(inner, &mut record, made).await;
                }
                let s = &record.steps[i];
                if s.status == StepStatus::Succeeded || s.status == StepStatus::Skipped {
                    outputs.insert(s.name.clone(), outcome.context_entry(&record.id, s));
                }
                let mut stored = record.steps[i].clone();
                cap_output(&mut stored, inner.settings.max_output_bytes);
                record.steps[i].output_truncated = stored.output_truncated;
                persist(inner, &record.id, &stored).await;
            }
        }
    }
    drop(running);
    finish(inner, job, &mut record, cut).await;
    record
}

/// The template context for a step starting now.
fn context(inner: &Inner, record: &RunRecord, outputs: &Map<String, Value>) -> Value {
    let now = inner.clock.now().to_zoned_datetime(inner.zone.clone());
    json!({
        "inputs": record.inputs,
        "steps": outputs,
        "run": {"id": record.id, "workflow": record.workflow},
        "now": now.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        "today": now.date().to_string(),
    })
}

/// Write one step's state; a store that fails is logged, the run goes on.
async fn persist(inner: &Inner, run: &str, step: &StepRecord) {
    if let Err(e) = inner.store.update_step(run, step).await {
        tracing::error!(run, step = %step.name, error = %e, "cannot record a workflow step");
    }
}

async fn store_artifact(inner: &Inner, record: &mut RunRecord, made: &Made) {
    let artifact = made.artifact();
    match inner.store.put_artifact(&record.id, &artifact).await {
        Ok(()) => {
            record.artifacts.retain(|a| a.step != artifact.meta.step);
            record.artifacts.push(artifact.meta);
        }
        Err(e) => {
            tracing::error!(run = %record.id, step = %made.step, error = %e, "cannot store a workflow artefact")
        }
    }
}

/// Cut a stored output to `max` bytes of JSON (the run itself saw it whole).
fn cap_output(step: &mut StepRecord, max: usize) {
    let Some(output) = &step.output else { return };
    let text = output.to_string();
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    step.output = Some(Value::String(text[..end].to_owned()));
    step.output_truncated = true;
}

async fn finish(inner: &Inner, job: &Job, record: &mut RunRecord, cut: Option<Cut>) {
    let now = inner.clock.now().as_millisecond();
    if let Some(cut) = cut {
        let (running_status, running_error, pending_status, pending_error) = match cut {
            Cut::TimedOut => {
                let t = humantime::format_duration(job.config.timeout);
                (
                    StepStatus::Failed,
                    format!("the run's timeout ({t}) passed while this step ran"),
                    StepStatus::Cancelled,
                    format!("not run: the run's timeout ({t}) passed"),
                )
            }
            Cut::Stopped => (
                StepStatus::Interrupted,
                store::STEP_INTERRUPTED_ERROR.to_owned(),
                StepStatus::Interrupted,
                store::STEP_NOT_RUN_ERROR.to_owned(),
            ),
        };
        for s in record.steps.iter_mut() {
            let (status, error) = match s.status {
                StepStatus::Running => (running_status, &running_error),
                StepStatus::Pending => (pending_status, &pending_error),
                _ => continue,
            };
            s.status = status;
            s.error = Some(error.clone());
            s.finished_at = Some(now);
            persist(inner, &record.id, s).await;
        }
    }
    let failed = record
        .steps
        .iter()
        .find(|s| matches!(s.status, StepStatus::Failed));
    let (status, error) = match (cut, failed) {
        (Some(Cut::Stopped), _) => (
            RunStatus::Interrupted,
            Some(store::INTERRUPTED_ERROR.to_owned()),
        ),
        (Some(Cut::TimedOut), _) => (
            RunStatus::Failed,
            Some(format!(
                "the run's timeout ({}) passed",
                humantime::format_duration(job.config.timeout)
            )),
        ),
        (None, Some(s)) => (
            RunStatus::Failed,
            Some(format!(
                "step `{}` failed: {}",
                s.name,
                s.error.as_deref().unwrap_or("no reason given")
            )),
        ),
        (None, None) => (RunStatus::Succeeded, None),
    };
    record.status = status;
    record.error = error;
    record.finished_at = Some(now);
    if let Err(e) = inner
        .store
        .finish_run(&record.id, status, record.error.as_deref(), now)
        .await
    {
        tracing::error!(run = %record.id, error = %e, "cannot record the end of a workflow run");
    }
    inner
        .metrics
        .workflow_runs
        .with_label_values(&[&job.name, status.as_str()])
        .inc();
    let took = Duration::from_millis(u64::try_from(now - record.created_at).unwrap_or(0));
    tracing::info!(workflow = %job.name, run = %record.id, status = status.as_str(), took = ?took, "workflow run ended");
    if status != RunStatus::Interrupted {
        if let Err(e) = inner.store.prune(inner.settings.keep_runs).await {
            tracing::warn!(error = %e, "cannot prune old workflow runs");
        }
    }
}
