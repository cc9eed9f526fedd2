//! Workflows: `[workflows]` (the run store, time zone, limits, files to load) and the
//! declared jobs, inline under `[workflows.jobs.NAME]` or one per file named in
//! `workflows.files`. A job is a DAG of `[[steps]]`, each one of four kinds, told apart
//! by the key that names it: `tool = "..."`, `model = "..."`, `template = "..."` or
//! `chart = "bar" | "line"`. Plain data; `workflows::` runs them.
//!
//! `validate` reports, each with the path of the offending key: unknown or duplicate
//! steps, cycles, unknown tools and models, keys of another kind, templates that do not
//! compile, bad schedules and zones, and SQL text with template tags in it (values reach
//! SQL only as bound `params`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::ConfigIssue;

mod check;
pub(super) use check::validate;

/// `[workflows]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowsConfig {
    /// The SQLite file that holds every run (created with its folder when missing).
    pub store: PathBuf,
    /// IANA zone of schedules and of `now()` in templates.
    pub timezone: String,
    /// Workflow files to load (TOML, one workflow each, named by `name` or the file stem).
    pub files: Vec<PathBuf>,
    /// A step's output is stored up to this many bytes of JSON (cut beyond, marked).
    pub max_output_bytes: usize,
    /// Largest artefact (chart, report) a step may make.
    pub max_artifact_bytes: usize,
    /// Finished runs kept per workflow; older ones are deleted at start-up and as new
    /// runs finish.
    pub keep_runs: usize,
    /// Runs that may go at once; more get 503 with `retry-after` (schedules skip).
    pub max_running: usize,
    /// This deployment's input defaults, by workflow: `[workflows.defaults.NAME]
    /// summary_model = "llama3.2:3b"` overrides the workflow's own `default`.
    pub defaults: BTreeMap<String, serde_json::Map<String, Value>>,
    /// Inline workflows by name (and, after loading, those from `files`).
    pub jobs: BTreeMap<String, WorkflowConfig>,
    /// Workflows read from `files`: name → index in `files` (for error paths).
    #[serde(skip)]
    pub from_files: BTreeMap<String, usize>,
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        WorkflowsConfig {
            store: PathBuf::from("data/workflow-runs.db"),
            timezone: "UTC".into(),
            files: Vec::new(),
            max_output_bytes: 64 * 1024,
            max_artifact_bytes: 4 * 1024 * 1024,
            keep_runs: 1000,
            max_running: 8,
            defaults: BTreeMap::new(),
            jobs: BTreeMap::new(),
            from_files: BTreeMap::new(),
        }
    }
}

/// One workflow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// In a workflow file: its name (default: the file stem). Not used inline.
    #[serde(default)]
    pub name: Option<String>,
    /// What it does: shown in the API and told to models that may call it as a tool.
    #[serde(default)]
    pub description: String,
    /// What a run takes (`POST ... {"inputs": {...}}`), by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputConfig>,
    /// Cron expression (5 fields, e.g. `0 7 * * *`) in `timezone`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The inputs scheduled runs get.
    #[serde(default)]
    pub schedule_inputs: serde_json::Map<String, Value>,
    /// Zone of `schedule` (default `workflows.timezone`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Longest a whole run may take.
    #[serde(default = "default_run_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The agent loop may call it as `workflow__NAME` without an API key listing it.
    #[serde(default)]
    pub public: bool,
    /// The tenant scheduled runs are recorded under (only it sees them): default
    /// `anonymous`, which is every caller when no API keys are configured.
    #[serde(default)]
    pub tenant: Option<String>,
    pub steps: Vec<StepConfig>,
}

fn default_run_timeout() -> Duration {
    Duration::from_secs(600)
}

/// The type of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Date => "date",
        }
    }
}

/// `[inputs.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    #[serde(rename = "type")]
    pub kind: InputType,
    #[serde(default)]
    pub description: String,
    /// Used when a run does not give it; without one the input is `null` (or, when
    /// `required`, the run is refused).
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub required: bool,
}

/// Which kind a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Tool,
    Model,
    Template,
    Chart,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Tool => "tool",
            StepKind::Model => "model",
            StepKind::Template => "template",
            StepKind::Chart => "chart",
        }
    }
}

/// `chart = "bar" | "line"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartType {
    Bar,
    Line,
}

/// What a template step's text is (its artefact's type).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    #[default]
    Markdown,
    Html,
    Text,
}

impl TextFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            TextFormat::Markdown => "text/markdown; charset=utf-8",
            TextFormat::Html => "text/html; charset=utf-8",
            TextFormat::Text => "text/plain; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            TextFormat::Markdown => "md",
            TextFormat::Html => "html",
            TextFormat::Text => "txt",
        }
    }
}

/// `[[steps]]`: one step. Strings marked *template* are minijinja templates over
/// `inputs`, `steps.NAME.output` and `now`; an argument that is one `{{ expression }}`
/// and nothing else keeps the expression's JSON type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub name: String,
    /// Steps that must have succeeded (or been skipped) first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Template: the step runs only when it renders to something other than empty,
    /// `false`, `0`, `none` or `null`; otherwise it is skipped (output `null`).
    #[serde(default)]
    pub when: Option<String>,
    /// Longest one try may take.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Tries after a failed one.
    #[serde(default)]
    pub retries: u32,
    /// Wait before the first retry; doubles for each next one.
    #[serde(default = "default_retry_delay", with = "humantime_serde")]
    pub retry_delay: Duration,

    // --- tool ---
    /// A server tool (`[tools.NAME]`, `SERVER__tool` of an MCP server).
    #[serde(default)]
    pub tool: Option<String>,
    /// The call's arguments; string values are templates.
    #[serde(default)]
    pub arguments: serde_json::Map<String, Value>,

    // --- model ---
    /// A model from the catalog (template): a chat completion through the normal
    /// pipeline (routing, cache).
    #[serde(default)]
    pub model: Option<String>,
    /// The user message (template).
    #[serde(default)]
    pub prompt: Option<String>,
    /// A system message (template).
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,

    // --- template ---
    /// A text, Markdown or HTML report (template); also saved as an artefact.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub format: Option<TextFormat>,

    // --- chart ---
    /// An SVG chart of rows, saved as an artefact.
    #[serde(default)]
    pub chart: Option<ChartType>,
    /// An expression that gives the rows: a list of objects (e.g.
    /// `steps.fetch_data.output.rows`).
    #[serde(default)]
    pub data: Option<String>,
    /// The column (key) of the x axis labels, and of the y values.
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    /// Title and axis names (templates).
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub x_label: Option<String>,
    #[serde(default)]
    pub y_label: Option<String>,
}

fn default_step_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_retry_delay() -> Duration {
    Duration::from_secs(1)
}

impl StepConfig {
    /// The kind, once `validate` has checked that exactly one kind key is set.
    pub fn kind(&self) -> StepKind {
        if self.tool.is_some() {
            StepKind::Tool
        } else if self.model.is_some() {
            StepKind::Model
        } else if self.chart.is_some() {
            StepKind::Chart
        } else {
            StepKind::Template
        }
    }
}

/// Read `workflows.files` into `workflows.jobs`, then apply `workflows.defaults`.
pub(super) fn load_files(config: &mut WorkflowsConfig) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let files = config.files.clone();
    for (i, file) in files.iter().enumerate() {
        let path = format!("workflows.files[{i}]");
        let mut issue = |message: String| {
            issues.push(ConfigIssue {
                path: path.clone(),
                message: format!("{}: {message}", file.display()),
            })
        };
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                issue(format!("cannot read: {e}"));
                continue;
            }
        };
        let job: WorkflowConfig = match parse_file(&text) {
            Ok(job) => job,
            Err(message) => {
                issue(message);
                continue;
            }
        };
        let name = job.name.clone().or_else(|| stem(file)).unwrap_or_default();
        if config.jobs.contains_key(&name) {
            issue(format!("a workflow named `{name}` is already defined"));
            continue;
        }
        config.from_files.insert(name.clone(), i);
        config.jobs.insert(name, job);
    }
    for (name, values) in &config.defaults {
        let path = format!("workflows.defaults.{name}");
        let Some(job) = config.jobs.get_mut(name) else {
            issues.push(ConfigIssue {
                path,
                message: format!("no workflow named `{name}`"),
            });
            continue;
        };
        for (input, value) in values {
            match job.inputs.get_mut(input) {
                Some(spec) => spec.default = Some(value.clone()),
                None => issues.push(ConfigIssue {
                    path: format!("{path}.{input}"),
                    message: format!("the workflow `{name}` has no input `{input}`"),
                }),
            }
        }
    }
    issues
}

fn parse_file(text: &str) -> Result<WorkflowConfig, String> {
    let value: toml::Value = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(line) => format!("line {line}: {}", e.message().trim()),
            None => e.message().trim().to_owned(),
        }
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.into_inner().message())
    })
}

fn stem(file: &Path) -> Option<String> {
    Some(file.file_stem()?.to_string_lossy().into_owned())
}

/// Whether `value` fits an input of type `kind`; the message says why not.
pub fn check_input(kind: InputType, value: &Value) -> Result<(), String> {
    let ok = match (kind, value) {
        (_, Value::Null) => true,
        (InputType::String, Value::String(_)) => true,
        (InputType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (InputType::Number, Value::Number(_)) => true,
        (InputType::Boolean, Value::Bool(_)) => true,
        (InputType::Date, Value::String(s)) => {
            return s
                .parse::<jiff::civil::Date>()
                .map(|_| ())
                .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("must be a {}", kind.as_str()))
    }
}
