//! What a workflow run leaves behind: the run, each step's status, output, timings and
//! error, and the artefacts (chart SVG, report) its steps made. The runner writes these
//! to the [`super::store::Store`] as the run goes; the HTTP API serves them as JSON.
//! Times are unix milliseconds.

use serde::Serialize;
use serde_json::Value;

/// Where a run stands. `Interrupted`: sluice stopped (or was killed) while it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

/// Where a step stands. `Skipped`: its `when` condition was false. `UpstreamFailed`: a
/// step it depends on failed, so it never ran. `Cancelled`: the run's timeout passed
/// before it could start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    UpstreamFailed,
    Cancelled,
    Interrupted,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `POST /v1/workflows/{name}/runs`.
    Api,
    /// Its cron schedule.
    Schedule,
    /// The agent loop called `workflow__NAME`.
    Agent,
}

macro_rules! names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// The name stored and shown (snake_case).
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }

            /// The value named `s`, as [`Self::as_str`] writes it.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($name => Some($ty::$variant),)* _ => None }
            }
        }
    };
}

names!(RunStatus { Running => "running", Succeeded => "succeeded", Failed => "failed", Interrupted => "interrupted" });
names!(StepStatus {
    Pending => "pending", Running => "running", Succeeded => "succeeded", Failed => "failed",
    Skipped => "skipped", UpstreamFailed => "upstream_failed", Cancelled => "cancelled",
    Interrupted => "interrupted",
});
names!(Trigger { Api => "api", Schedule => "schedule", Agent => "agent" });

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        self != RunStatus::Running
    }
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// `wfr_` and 24 hex digits.
    pub id: String,
    pub workflow: String,
    /// Who started it (`anonymous` without keys, `scheduler` for schedules); a tenant
    /// sees only its own runs.
    pub tenant: String,
    pub trigger: Trigger,
    pub status: RunStatus,
    /// The inputs after defaults were applied.
    pub inputs: Value,
    /// Why it failed or was interrupted.
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// In the workflow's order (config order of `steps`).
    pub steps: Vec<StepRecord>,
    pub artifacts: Vec<ArtifactMeta>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub name: String,
    /// `tool`, `model`, `template` or `chart`.
    pub kind: String,
    pub status: StepStatus,
    /// Tries made (0 before it starts; more than 1 after retries).
    pub attempts: u32,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// What later steps see as `steps.NAME.output` (capped: see `output_truncated`).
    pub output: Option<Value>,
    /// The stored output was cut to the store's size cap (steps of the same run saw it
    /// whole).
    pub output_truncated: bool,
    pub error: Option<String>,
}

impl StepRecord {
    /// A step that has not started.
    pub fn pending(name: &str, kind: &str) -> StepRecord {
        StepRecord {
            name: name.to_owned(),
            kind: kind.to_owned(),
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            output: None,
            output_truncated: false,
            error: None,
        }
    }
}

/// An artefact's description; its bytes are fetched on their own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactMeta {
    /// The step that made it: the key to download it by.
    pub step: String,
    /// A file name for downloads (`chart.svg`, `report.md`).
    pub name: String,
    pub content_type: String,
    pub bytes: u64,
}

/// An artefact with its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub meta: ArtifactMeta,
    pub data: Vec<u8>,
}

/// Unix milliseconds now (wall clock).
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
