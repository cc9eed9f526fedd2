//! `workflow__NAME`: a workflow as a server tool, so the agent loop can run it. The
//! model gets the workflow's inputs as the tool's parameters; a call starts a run
//! (recorded like any other, trigger `agent`, under the caller's tenant), waits for it
//! and answers with the run's id, status and the outputs of its final steps (those no
//! other step depends on: the report, typically). A run the caller stops waiting for
//! goes on and is recorded.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{Job, SubmitError, Trigger, Workflows};
use crate::config::{Approval, Config, InputType};
use crate::tools::{CallContext, Entry, Tool, ToolError, ToolSpec, ToolTraits};

/// The registry entry for `job`.
pub(super) fn entry(job: &Arc<Job>, workflows: &Workflows, config: &Config) -> Entry {
    let spec = spec(job);
    let side_effects = job.config.steps.iter().any(|s| {
        s.tool
            .as_deref()
            .map(|t| t.split_once("__").map_or(t, |(server, _)| server))
            .and_then(|t| config.tools.get(t))
            .is_some_and(|t| t.has_side_effects())
    });
    let mut h = blake3::Hasher::new();
    h.update(spec.name.as_bytes());
    h.update(spec.description.as_bytes());
    h.update(format!("{:?}", job.config).as_bytes());
    Entry {
        traits: ToolTraits {
            volatile: true,
            side_effects,
            approval: Approval::Server,
            timeout: Some(job.config.timeout),
        },
        source: Arc::from(spec.name.as_str()),
        fingerprint: *h.finalize().as_bytes(),
        tool: Arc::new(WorkflowTool {
            spec,
            job: job.name.clone(),
            workflows: Arc::downgrade(&workflows.inner),
        }),
    }
}

fn spec(job: &Job) -> ToolSpec {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, input) in &job.config.inputs {
        let mut p = json!({
            "type": match input.kind {
                InputType::Date => "string",
                other => other.as_str(),
            },
        });
        if input.kind == InputType::Date {
            p["format"] = json!("date");
        }
        let mut description = input.description.clone();
        if let Some(default) = &input.default {
            description = format!("{description} (default {default})")
                .trim()
                .to_owned();
        }
        if !description.is_empty() {
            p["description"] = json!(description);
        }
        if input.required && input.default.is_none() {
            required.push(name.clone());
        }
        properties.insert(name.clone(), p);
    }
    let description = if job.config.description.is_empty() {
        format!("run the {} workflow", job.name)
    } else {
        job.config.description.clone()
    };
    ToolSpec {
        name: format!("workflow__{}", job.name),
        description,
        parameters: json!({"type": "object", "properties": properties, "required": required}),
    }
}

struct WorkflowTool {
    spec: ToolSpec,
    job: String,
    workflows: std::sync::Weak<super::Inner>,
}

#[async_trait]
impl Tool for WorkflowTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, ctx: &CallContext) -> Result<String, ToolError> {
        let inner = self
            .workflows
            .upgrade()
            .ok_or_else(|| ToolError::Unavailable("the gateway is stopping".into()))?;
        let workflows = Workflows { inner };
        let inputs = match arguments {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => {
                return Err(ToolError::InvalidArguments(
                    "arguments must be an object".into(),
                ))
            }
        };
        let started = workflows
            .submit(&self.job, inputs, ctx.tenant.clone(), Trigger::Agent)
            .await
            .map_err(|e| match e {
                SubmitError::BadInput { message, .. } => ToolError::InvalidArguments(message),
                SubmitError::Busy(_) => ToolError::Unavailable(e.to_string()),
                other => ToolError::Failed(other.to_string()),
            })?;
        let run_id = started.run.id.clone();
        let run = started
            .done
            .await
            .map_err(|_| ToolError::Failed(format!("run {run_id} did not finish")))?;
        let job = workflows.job(&self.job).cloned();
        let finals: Map<String, Value> = run
            .steps
            .iter()
            .filter(|s| {
                job.as_ref().is_some_and(|j| {
                    !j.config
                        .steps
                        .iter()
                        .any(|o| o.depends_on.contains(&s.name))
                })
            })
            .filter_map(|s| Some((s.name.clone(), s.output.clone()?)))
            .collect();
        Ok(json!({
            "run": run.id,
            "status": run.status.as_str(),
            "error": run.error,
            "outputs": finals,
        })
        .to_string())
    }
}
