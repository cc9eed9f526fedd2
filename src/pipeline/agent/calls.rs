//! One turn's server tool calls: run concurrently (at most `parallel_tools` at a time,
//! results kept in the model's order), each under its timeout, the run's deadline and
//! the run's cancellation. Every outcome, failures included, becomes a tool message
//! for the model and a [`Step`] for the client; nothing here fails the request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::access::Toolset;
use crate::domain::{Message, Role, Step, ToolCall};
use crate::metrics::Metrics;
use crate::tools::{self, CallContext, Entry, ToolError};

/// A call's result as the model reads it, and the step the client sees.
pub struct Done {
    pub message: Message,
    pub step: Step,
}

/// What every call of a run shares.
pub struct Runner<'a> {
    pub toolset: &'a Toolset,
    pub metrics: &'a Metrics,
    pub deadline: tokio::time::Instant,
    pub cancel: &'a CancellationToken,
    pub run_id: &'a str,
    pub tenant: &'a Arc<str>,
}

impl Runner<'_> {
    /// Run `calls` (all server tools) for model turn `turn`.
    pub async fn run(&self, turn: u32, calls: &[ToolCall]) -> Vec<Done> {
        let parallel = self.toolset.limits.parallel_tools.max(1);
        let pending: Vec<_> = calls.iter().map(|call| self.one(turn, call)).collect();
        futures::stream::iter(pending)
            .buffered(parallel)
            .collect()
            .await
    }

    async fn one(&self, turn: u32, call: &ToolCall) -> Done {
        let started = Instant::now();
        let entry = self.toolset.get(&call.name);
        let result = match entry {
            None => Err(ToolError::InvalidArguments(format!(
                "there is no tool named `{}`",
                call.name
            ))),
            Some(entry) => self.invoke(entry, call).await,
        };
        let elapsed = started.elapsed();
        let tool_label = if entry.is_some() {
            call.name.as_str()
        } else {
            "unknown"
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics
            .tool_calls
            .with_label_values(&[tool_label, outcome])
            .inc();
        self.metrics
            .tool_duration
            .with_label_values(&[tool_label])
            .observe(elapsed.as_secs_f64());
        tracing::debug!(tool = %call.name, outcome, ms = elapsed.as_secs_f64() * 1e3, "tool call");
        let limit = self.toolset.limits.max_result_bytes;
        let (content, error) = match result {
            Ok(text) => (cap(text, limit), None),
            Err(e) => {
                let text = e.to_string();
                (cap(format!("error: {text}"), limit), Some(text))
            }
        };
        Done {
            message: Message {
                role: Role::Tool,
                content: vec![crate::domain::ContentPart::Text { text: content }],
                tool_calls: Vec::new(),
                tool_call_id: Some(call.id.clone()),
                name: Some(call.name.clone()),
            },
            step: Step {
                turn,
                tool: call.name.clone(),
                call_id: call.id.clone(),
                arguments: call.arguments.clone(),
                outcome: outcome.to_owned(),
                duration_ms: elapsed.as_secs_f64() * 1e3,
                error,
                volatile: entry.is_some_and(|e| e.traits.volatile),
            },
        }
    }

    async fn invoke(&self, entry: &Arc<Entry>, call: &ToolCall) -> Result<String, ToolError> {
        let arguments = parse_arguments(&call.arguments)?;
        let timeout = entry
            .traits
            .timeout
            .unwrap_or(self.toolset.limits.tool_timeout);
        let ctx = CallContext {
            deadline: (tokio::time::Instant::now() + timeout).min(self.deadline),
            cancel: self.cancel.child_token(),
            call_id: call.id.clone(),
            run_id: self.run_id.to_owned(),
            tenant: self.tenant.clone(),
        };
        // Dropping the call's future (client gone) must stop blocking work too.
        let _stop = ctx.cancel.clone().drop_guard();
        tools::invoke(
            entry.tool.as_ref(),
            arguments,
            &ctx,
            timeout.min(remaining(self.deadline)),
        )
        .await
    }
}

fn remaining(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now())
}

/// Replace the results of the last turn's calls (the tool messages at the end) that are
/// longer than the note itself by a note that they did not fit in the model's context.
/// Returns whether anything was replaced.
pub fn shrink_last_results(messages: &mut [Message]) -> bool {
    let mut replaced = false;
    for m in messages.iter_mut().rev() {
        if m.role != Role::Tool {
            break;
        }
        let bytes = m.text_content().len();
        let note = format!(
            "error: the result ({bytes} bytes) does not fit in the model's context; ask for less (add a LIMIT, filter, or narrow the question)"
        );
        if bytes > note.len() {
            m.content = vec![crate::domain::ContentPart::Text { text: note }];
            replaced = true;
        }
    }
    replaced
}

/// The model's arguments text as a JSON object (empty text counts as `{}`).
fn parse_arguments(text: &str) -> Result<Value, ToolError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(ToolError::InvalidArguments(format!(
            "the arguments must be a JSON object, got {}",
            tools::json_type(&other)
        ))),
        Err(e) => Err(ToolError::InvalidArguments(format!(
            "the arguments are not valid JSON: {e}"
        ))),
    }
}

/// `text` cut to at most `limit` bytes on a character boundary, with a note.
fn cap(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    const NOTE: &str = "\n[cut: the result was longer than the gateway passes on]";
    let mut end = limit.saturating_sub(NOTE.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(NOTE);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_an_object() {
        assert!(parse_arguments("").unwrap().is_object());
        assert!(parse_arguments(r#"{"a": 1}"#).unwrap().is_object());
        assert!(
            matches!(parse_arguments("[1]"), Err(ToolError::InvalidArguments(m)) if m.contains("array"))
        );
        assert!(
            matches!(parse_arguments("{oops"), Err(ToolError::InvalidArguments(m)) if m.contains("not valid JSON"))
        );
    }

    #[test]
    fn long_results_are_cut_on_a_character_boundary() {
        let text = "é".repeat(1000);
        let out = cap(text, 200);
        assert!(out.len() <= 200);
        assert!(out.ends_with("passes on]"));
        assert_eq!(cap("short".into(), 200), "short");
    }
}
