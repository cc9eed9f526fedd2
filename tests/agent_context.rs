//! When tool results make the next model turn too long for the model's context (what the
//! embedded engine answers with `ContextLength`), the loop tells the model so in place of
//! the results and lets it try again; if it still does not fit, the answer ends with
//! `finish_reason: "length"` and `incomplete_details.reason = "context_length"`. Never
//! a 400 for a prompt the client did not send. Driven in-process: a backend that refuses
//! conversations over a byte budget, and a tool whose result size the test picks.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;
use sluice::backend::{Backend, Backends, Deployment};
use sluice::config::ToolConfig;
use sluice::domain::{
    collect, ChatRequest, EmbedRequest, EmbedResponse, Event, EventStream, FinishReason,
    Incomplete, Message, Role, Sampling, Usage,
};
use sluice::error::BackendError;
use sluice::metrics::Metrics;
use sluice::pipeline::{Asked, Pipeline, Tenant};
use sluice::tools::{CallContext, Entry, Tool, ToolError, ToolSpec};
use tokio_util::sync::CancellationToken;

/// Calls `big` once, then answers with the tool messages it was given. Refuses any
/// conversation whose text is longer than the budget in the first user message.
#[derive(Default)]
struct Budgeted {
    seen: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl Backend for Budgeted {
    fn name(&self) -> &str {
        "up"
    }

    async fn chat(
        &self,
        request: ChatRequest,
        _deployment: &Deployment,
        _cancel: CancellationToken,
    ) -> Result<EventStream, BackendError> {
        let budget: usize = request.messages[0].text_content().parse().unwrap_or(0);
        let total: usize = request
            .messages
            .iter()
            .map(|m| m.text_content().len())
            .sum();
        let tools: Vec<String> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .map(Message::text_content)
            .collect();
        self.seen.lock().unwrap().push(tools.clone());
        if total > budget {
            return Err(BackendError::ContextLength {
                max_context: budget,
                prompt_tokens: total,
                completion_tokens: None,
            });
        }
        let usage = Some(Usage {
            prompt_tokens: total as u32,
            completion_tokens: 1,
        });
        let events = if tools.is_empty() {
            vec![
                Event::ToolCall {
                    index: 0,
                    id: Some("call_0".into()),
                    name: Some("big".into()),
                    arguments: "{}".into(),
                },
                Event::Finish {
                    reason: FinishReason::ToolCalls,
                    usage,
                },
            ]
        } else {
            vec![
                Event::Delta(format!("saw: {}", tools.join(" | "))),
                Event::Finish {
                    reason: FinishReason::Stop,
                    usage,
                },
            ]
        };
        Ok(Box::pin(futures::stream::iter(events.into_iter().map(Ok))))
    }

    async fn embed(&self, _: EmbedRequest, _: &Deployment) -> Result<EmbedResponse, BackendError> {
        Err(BackendError::Protocol("no embeddings".into()))
    }

    async fn ready(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A tool whose result is `bytes` long.
struct Big(ToolSpec, usize);

#[async_trait]
impl Tool for Big {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }

    async fn call(&self, _: Value, _: &CallContext) -> Result<String, ToolError> {
        Ok("x".repeat(self.1))
    }
}

async fn run(budget: usize, result_bytes: usize) -> (sluice::domain::Completion, Vec<Vec<String>>) {
    let config = sluice::config::load_str(
        r#"
[cache]
mode = "off"

[backends.up]
kind = "openai"
url = "http://127.0.0.1:9/v1"

[tools.big]
kind = "calculator"

[[models]]
name = "agent"
backend = "up"
tools = ["big"]
"#,
        Vec::new(),
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let mut backends = Backends::from_config(&config, &metrics).unwrap();
    let backend = Arc::new(Budgeted::default());
    backends.replace("up", backend.clone());
    let pipeline =
        Pipeline::with_backends(&config, backends, metrics, CancellationToken::new()).unwrap();
    let cfg: ToolConfig = toml::from_str("kind = \"calculator\"").unwrap();
    let spec = ToolSpec {
        name: "big".into(),
        description: "a big result".into(),
        parameters: serde_json::json!({"type": "object"}),
    };
    pipeline
        .tools()
        .insert(Entry::new(Arc::new(Big(spec, result_bytes)), &cfg, "big"));
    let request = ChatRequest {
        model: "agent".into(),
        messages: vec![Message::text(Role::User, budget.to_string())],
        tools: Vec::new(),
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: None,
        sampling: Sampling::default(),
        n: 1,
        user: None,
        extra: Default::default(),
    };
    let generation = pipeline
        .chat(&Tenant::anonymous(), request, Asked::default())
        .await
        .expect("the run starts");
    let done = collect(generation.events)
        .await
        .expect("an answer, not an error");
    let seen = backend.seen.lock().unwrap().clone();
    (done, seen)
}

#[tokio::test]
async fn a_result_too_long_for_the_context_is_replaced_by_a_note_once() {
    let (done, seen) = run(400, 5_000).await;
    assert_eq!(done.finish_reason, Some(FinishReason::Stop));
    assert!(done.incomplete.is_none());
    // Turn 1, turn 2 refused with the 5,000-byte result, turn 2 again with the note.
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1][0].len(), 5_000);
    assert!(
        seen[2][0]
            .starts_with("error: the result (5000 bytes) does not fit in the model's context"),
        "{:?}",
        seen[2]
    );
    assert!(
        done.content
            .starts_with("saw: error: the result (5000 bytes)"),
        "{}",
        done.content
    );
}

#[tokio::test]
async fn a_conversation_that_still_does_not_fit_ends_as_incomplete() {
    // The note itself is over budget: the answer says why it stopped, it is not a 400.
    let (done, seen) = run(60, 5_000).await;
    assert_eq!(done.finish_reason, Some(FinishReason::Length));
    assert_eq!(done.incomplete, Some(Incomplete::ContextLength));
    assert_eq!(done.steps.len(), 1);
    assert_eq!(seen.len(), 3, "one retry only");
}
