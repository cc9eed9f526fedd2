//! Workflows: declared multi-step jobs (`[workflows]`, `workflows/*.toml`) that run on
//! demand (`POST /v1/workflows/{name}/runs`), from the agent loop (`workflow__NAME`) or
//! on a cron schedule, each run recorded in a SQLite run store that survives restarts.
//!
//! ```text
//! submit ──▶ inputs checked, run recorded ──▶ run::execute (a task of its own)
//!              steps in dependency order, independent ones at once:
//!                tool      a server tool from the registry (sql_query binds `params`)
//!                model     a chat completion through the pipeline (routing, cache)
//!                template  a minijinja text / Markdown / HTML report   ┐ artefacts in
//!                chart     an SVG bar or line chart (plotters)         ┘ the run store
//!              each step's status, output, timings and error written as it goes
//! ```
//!
//! `record` is the data model, `store` the SQLite store, `template` the templating,
//! `steps` one step of each kind, `run` a whole run, `schedule` the cron scheduler,
//! `chart` the SVG charts and `tool` the `workflow__NAME` tool.

pub mod chart;
pub mod record;
mod run;
pub mod schedule;
mod steps;
pub mod store;
pub mod template;
mod tool;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use serde_json::{Map, Value};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{check_input, Config, WorkflowConfig, WorkflowsConfig};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::tools::Registry;

pub use record::{Artifact, ArtifactMeta, RunRecord, RunStatus, StepRecord, StepStatus, Trigger};
pub use steps::artifact_url;
pub use store::{RunFilter, Store, StoreError};

/// A declared workflow.
pub struct Job {
    pub name: String,
    pub config: WorkflowConfig,
}

/// Why a run was not started.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("no workflow named `{0}`")]
    Unknown(String),
    /// An input is missing, unknown or of the wrong type; `param` is `inputs.NAME`.
    #[error("{message}")]
    BadInput { param: String, message: String },
    #[error("{0} workflow runs are going already (workflows.max_running): try again later")]
    Busy(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run that has started.
pub struct Started {
    /// The run as recorded when it started.
    pub run: RunRecord,
    /// The run as it ended (dropped without a value only if sluice stops first).
    pub done: oneshot::Receiver<RunRecord>,
}

/// The workflows of a running gateway.
#[derive(Clone)]
pub struct Workflows {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: BTreeMap<String, Arc<Job>>,
    settings: WorkflowsConfig,
    store: Store,
    registry: Arc<Registry>,
    /// Set once the pipeline exists (model steps go through it).
    pipeline: OnceLock<Weak<Pipeline>>,
    metrics: Arc<Metrics>,
    env: minijinja::Environment<'static>,
    clock: schedule::Clock,
    zone: jiff::tz::TimeZone,
    /// `workflows.max_running`.
    slots: Arc<Semaphore>,
    /// Runs going per workflow (schedules skip a workflow that is still running).
    going: Mutex<HashMap<String, usize>>,
    /// Cancelled when sluice stops: running runs end as interrupted.
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Workflows {
    /// Open the run store (runs left running by a previous process are marked
    /// interrupted), register `workflow__NAME` tools and start the schedules.
    pub async fn start(
        config: &Config,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        clock: schedule::Clock,
        stop: CancellationToken,
    ) -> Result<Workflows, String> {
        let settings = config.workflows.clone();
        let zone = jiff::tz::TimeZone::get(&settings.timezone)
            .map_err(|e| format!("workflows.timezone: {e}"))?;
        let store = if settings.jobs.is_empty() {
            Store::in_memory()
        } else {
            match Store::open(&settings.store).await {
                Ok((store, interrupted)) => {
                    if interrupted > 0 {
                        tracing::warn!(runs = interrupted, "workflow runs were in progress when sluice last stopped: marked interrupted");
                    }
                    Ok(store)
                }
                Err(e) => Err(e),
            }
        }
        .map_err(|e| format!("workflows.store ({}): {e}", settings.store.display()))?;
        if let Err(e) = store.prune(settings.keep_runs).await {
            tracing::warn!(error = %e, "cannot prune old workflow runs");
        }
        let jobs = settings
            .jobs
            .iter()
            .map(|(name, config)| {
                let job = Job {
                    name: name.clone(),
                    config: config.clone(),
                };
                (name.clone(), Arc::new(job))
            })
            .collect();
        let workflows = Workflows {
            inner: Arc::new(Inner {
                jobs,
                slots: Arc::new(Semaphore::new(settings.max_running)),
                settings,
                store,
                registry: registry.clone(),
                pipeline: OnceLock::new(),
                metrics,
                env: template::environment(),
                clock,
                zone,
                going: Mutex::new(HashMap::new()),
                stop,
                tasks: TaskTracker::new(),
            }),
        };
        for job in workflows.inner.jobs.values() {
            registry.insert(tool::entry(job, &workflows, config));
        }
        workflows.start_schedules()?;
        Ok(workflows)
    }

    /// Model steps need the pipeline, which is built before the workflows.
    pub fn attach(&self, pipeline: &Arc<Pipeline>) {
        let _ = self.inner.pipeline.set(Arc::downgrade(pipeline));
    }

    /// Every workflow, by name.
    pub fn jobs(&self) -> impl Iterator<Item = &Arc<Job>> {
        self.inner.jobs.values()
    }

    pub fn job(&self, name: &str) -> Option<&Arc<Job>> {
        self.inner.jobs.get(name)
    }

    /// When `job`'s schedule fires next, if it has one.
    pub fn next_fire(&self, job: &Job) -> Option<jiff::Timestamp> {
        let schedule = self.schedule_of(job).ok()??;
        schedule.next_after(self.inner.clock.now())
    }

    fn schedule_of(&self, job: &Job) -> Result<Option<schedule::Schedule>, String> {
        let Some(expr) = &job.config.schedule else {
            return Ok(None);
        };
        let zone = job
            .config
            .timezone
            .as_deref()
            .unwrap_or(&self.inner.settings.timezone);
        schedule::Schedule::parse(expr, zone)
            .map(Some)
            .map_err(|e| format!("workflows.jobs.{}.schedule: {e}", job.name))
    }

    fn start_schedules(&self) -> Result<(), String> {
        for job in self.inner.jobs.values() {
            if let Some(schedule) = self.schedule_of(job)? {
                let fire: Arc<dyn schedule::Fire> = Arc::new(Firing(Arc::downgrade(&self.inner)));
                self.inner.tasks.spawn(schedule::run(
                    job.name.clone(),
                    schedule,
                    self.inner.clock,
                    fire,
                    self.inner.stop.child_token(),
                ));
            }
        }
        Ok(())
    }

    /// Start a run of `name` with `inputs` for `tenant`. It runs in its own task: a
    /// caller that goes away does not stop it.
    pub async fn submit(
        &self,
        name: &str,
        inputs: Map<String, Value>,
        tenant: Arc<str>,
        trigger: Trigger,
    ) -> Result<Started, SubmitError> {
        let job = self
            .inner
            .jobs
            .get(name)
            .cloned()
            .ok_or_else(|| SubmitError::Unknown(name.to_owned()))?;
        let inputs = resolve_inputs(&job.config, inputs)?;
        let permit = self
            .inner
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| SubmitError::Busy(self.inner.settings.max_running))?;
        let run = RunRecord {
            id: format!("wfr_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]),
            workflow: job.name.clone(),
            tenant: tenant.to_string(),
            trigger,
            status: RunStatus::Running,
            inputs: Value::Object(inputs),
            error: None,
            created_at: self.inner.clock.now().as_millisecond(),
            finished_at: None,
            steps: job
                .config
                .steps
                .iter()
                .map(|s| StepRecord::pending(&s.name, s.kind().as_str()))
                .collect(),
            artifacts: Vec::new(),
        };
        self.inner.store.insert_run(&run).await?;
        tracing::info!(workflow = %job.name, run = %run.id, trigger = trigger.as_str(), "workflow run started");
        let (tx, done) = oneshot::channel();
        let going = Going::enter(&self.inner, &job.name, permit);
        let (inner, record) = (self.inner.clone(), run.clone());
        self.inner.tasks.spawn(async move {
            let ended = run::execute(&inner, &job, record, tenant).await;
            drop(going);
            let _ = tx.send(ended);
        });
        Ok(Started { run, done })
    }

    /// A run by id, whoever it belongs to (callers check the tenant).
    pub async fn get(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.inner.store.get_run(id).await
    }

    pub async fn list(
        &self,
        filter: &RunFilter<'_>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.store.list_runs(filter, limit).await
    }

    pub async fn artifact(&self, run: &str, step: &str) -> Result<Option<Artifact>, StoreError> {
        self.inner.store.artifact(run, step).await
    }

    /// Wait (up to `timeout`) for running runs to end after `stop` was cancelled.
    pub async fn wait_stopped(&self, timeout: std::time::Duration) {
        self.inner.tasks.close();
        let _ = tokio::time::timeout(timeout, self.inner.tasks.wait()).await;
    }
}

/// One run counted as going (per workflow and in the metric) until dropped.
struct Going {
    inner: Arc<Inner>,
    workflow: String,
    _permit: OwnedSemaphorePermit,
}

impl Going {
    fn enter(inner: &Arc<Inner>, workflow: &str, permit: OwnedSemaphorePermit) -> Going {
        *inner
            .going
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(workflow.to_owned())
            .or_default() += 1;
        inner
            .metrics
            .workflow_running
            .with_label_values(&[workflow])
            .inc();
        Going {
            inner: inner.clone(),
            workflow: workflow.to_owned(),
            _permit: permit,
        }
    }
}

impl Drop for Going {
    fn drop(&mut self) {
        let mut going = self
            .inner
            .going
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = going.get_mut(&self.workflow) {
            *n = n.saturating_sub(1);
        }
        self.inner
            .metrics
            .workflow_running
            .with_label_values(&[&self.workflow])
            .dec();
    }
}

/// What the scheduler calls.
struct Firing(Weak<Inner>);

impl schedule::Fire for Firing {
    fn fire(&self, workflow: &str, scheduled: jiff::Timestamp) -> bool {
        let Some(inner) = self.0.upgrade() else {
            return true;
        };
        let busy = inner
            .going
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(workflow)
            .is_some_and(|n| *n > 0);
        if busy {
            return false;
        }
        let Some(job) = inner.jobs.get(workflow).cloned() else {
            return true;
        };
        let workflows = Workflows {
            inner: inner.clone(),
        };
        let tenant: Arc<str> = Arc::from(job.config.tenant.as_deref().unwrap_or("anonymous"));
        let inputs = job.config.schedule_inputs.clone();
        inner.tasks.spawn(async move {
            match workflows.submit(&job.name, inputs, tenant, Trigger::Schedule).await {
                Ok(_) => {}
                Err(SubmitError::Busy(_)) => {
                    tracing::warn!(workflow = %job.name, scheduled = %scheduled, "scheduled workflow run skipped: workflows.max_running reached");
                    workflows
                        .inner
                        .metrics
                        .workflow_schedule_skips
                        .with_label_values(&[&job.name, "limit"])
                        .inc();
                }
                Err(e) => {
                    tracing::error!(workflow = %job.name, error = %e, "scheduled workflow run could not start")
                }
            }
        });
        true
    }

    fn skipped(
        &self,
        workflow: &str,
        _scheduled: jiff::Timestamp,
        why: schedule::Skip,
        count: u64,
    ) {
        if let Some(inner) = self.0.upgrade() {
            let reason = match why {
                schedule::Skip::Late => "late",
                schedule::Skip::Busy => "busy",
            };
            inner
                .metrics
                .workflow_schedule_skips
                .with_label_values(&[workflow, reason])
                .inc_by(count);
        }
    }
}

/// The inputs of a run: given ones checked, defaults filled in, unknown ones refused.
fn resolve_inputs(
    job: &WorkflowConfig,
    mut given: Map<String, Value>,
) -> Result<Map<String, Value>, SubmitError> {
    let bad = |name: &str, message: String| SubmitError::BadInput {
        param: format!("inputs.{name}"),
        message,
    };
    if let Some(unknown) = given.keys().find(|k| !job.inputs.contains_key(*k)) {
        let known: Vec<&str> = job.inputs.keys().map(String::as_str).collect();
        return Err(bad(
            unknown,
            format!(
                "unknown input `{unknown}` (this workflow takes: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let mut out = Map::new();
    for (name, spec) in &job.inputs {
        let value = match given.remove(name) {
            Some(Value::Null) | None => spec.default.clone().unwrap_or(Value::Null),
            Some(v) => v,
        };
        if value.is_null() && spec.required {
            return Err(bad(name, format!("the input `{name}` is required")));
        }
        check_input(spec.kind, &value).map_err(|e| bad(name, format!("input `{name}`: {e}")))?;
        out.insert(name.clone(), value);
    }
    Ok(out)
}
