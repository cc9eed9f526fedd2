//! The server-side agent loop, run inside the generation the cache and single-flight
//! see: model turn → the server tools it called (run concurrently) → tool messages →
//! the next turn, until the model answers, calls a tool the client owns, uses up
//! `max_steps`, or the run's `deadline` passes.
//!
//! What the client sees is one ordinary completion: the final answer streams token by
//! token; intermediate turns never show a `finish_reason`; each tool call is a `Step`
//! event (an SSE comment, or a `sluice_step` chunk with `x-sluice-trace: 1`); `usage`
//! sums every turn. Calls to tools the client defined (or tools with `approval =
//! "client"`) end the loop and go back as `tool_calls`, as any completion would. At
//! `max_steps` one last turn runs with `tool_choice: "none"`; past the deadline the
//! answer ends with `finish_reason: "length"` and `incomplete_details`. When tool results
//! make the next turn too long for the model's context, they are replaced once by an
//! error saying so (the model can ask for less); if it still does not fit, the answer
//! ends with `length` and `incomplete_details.reason = "context_length"`. Dropping the
//! stream (client gone) cancels the turn or the tool calls under way.

pub mod access;
mod calls;

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub use access::{ToolAccess, Toolset};

use super::route::Target;
use crate::config::Approval;
use crate::domain::{
    ChatRequest, Completion, Event, EventStream, FinishReason, Incomplete, Message, Role, Tool,
    ToolCall, ToolChoice, Usage,
};
use crate::error::BackendError;
use crate::metrics::Metrics;

/// Everything one run needs.
pub struct Run {
    pub target: Target,
    pub request: ChatRequest,
    pub toolset: Toolset,
    pub started: Instant,
    pub metrics: Arc<Metrics>,
    pub hard_stop: CancellationToken,
    /// Who asked: tools that record runs (workflows) record it.
    pub tenant: Arc<str>,
}

/// How a run ended (the `outcome` label of `sluice_agent_runs_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answer,
    MaxSteps,
    Deadline,
    ContextLength,
    ClientTool,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Answer => "answer",
            Outcome::MaxSteps => "max_steps",
            Outcome::Deadline => "deadline",
            Outcome::ContextLength => "context_length",
            Outcome::ClientTool => "client_tool",
            Outcome::Error => "error",
        }
    }
}

/// What the next backend event brought.
enum Next {
    Event(Event),
    Failed(BackendError),
    Deadline,
}

/// Counts the run's outcome and steps when it ends, however it ends (also when the
/// client goes away mid-run: then nothing is counted as an answer).
struct Tally {
    metrics: Arc<Metrics>,
    model: Arc<str>,
    steps: u32,
    outcome: Option<Outcome>,
}

impl Drop for Tally {
    fn drop(&mut self) {
        let Some(outcome) = self.outcome else { return };
        self.metrics
            .agent_runs
            .with_label_values(&[&self.model, outcome.as_str()])
            .inc();
        self.metrics
            .agent_steps
            .with_label_values(&[&self.model])
            .observe(f64::from(self.steps));
    }
}

/// The tools as the model sees them: the client's own, then the server's.
fn offered_tools(request: &ChatRequest, toolset: &Toolset) -> Vec<Tool> {
    let mut tools = request.tools.clone();
    tools.extend(toolset.entries.iter().map(|e| {
        let spec = e.spec();
        Tool {
            name: spec.name.clone(),
            description: Some(spec.description.clone()),
            parameters: spec.parameters.clone(),
            strict: None,
        }
    }));
    tools
}

/// Start a run; its events are the answer's.
pub fn run(run: Run) -> EventStream {
    Box::pin(async_stream::stream! {
        let Run { target, request, toolset, started, metrics, hard_stop, tenant } = run;
        let limits = toolset.limits.clone();
        let cancel = hard_stop.child_token();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let deadline = tokio::time::Instant::now() + limits.deadline;
        let run_id = format!("run_{}", uuid::Uuid::new_v4().simple());
        let mut tally = Tally { metrics: metrics.clone(), model: target.model.clone(), steps: 0, outcome: None };
        let tools = offered_tools(&request, &toolset);
        let runner = calls::Runner { toolset: &toolset, metrics: &metrics, deadline, cancel: &cancel, run_id: &run_id, tenant: &tenant };
        let mut messages = request.messages.clone();
        let mut usage = Usage::default();
        let mut turn = 0u32;
        let mut retry = false;
        loop {
            if !retry {
                turn += 1;
            }
            let retried = std::mem::take(&mut retry);
            let last = tally.steps >= limits.max_steps;
            let tool_choice = if last {
                Some(ToolChoice::None)
            } else if turn == 1 {
                request.tool_choice.clone()
            } else {
                // A forced choice holds for the first turn only, or it would loop.
                request.tool_choice.as_ref().map(|_| ToolChoice::Auto)
            };
            let turn_request = ChatRequest {
                messages: messages.clone(),
                tools: tools.clone(),
                tool_choice,
                ..request.clone()
            };
            let start = super::generate(
                target.clone(),
                target.enter(),
                turn_request,
                started,
                metrics.clone(),
                hard_stop.clone(),
            );
            let started_turn = tokio::select! {
                started = start => Some(started),
                () = tokio::time::sleep_until(deadline) => None,
            };
            let too_long = |e: &BackendError| turn > 1 && matches!(e, BackendError::ContextLength { .. });
            let mut events = match started_turn {
                Some(Ok(events)) => events,
                // Tool results made the conversation too long for the model: tell it so
                // in their place, once, and let it ask for less.
                Some(Err(e)) if too_long(&e) && !retried && calls::shrink_last_results(&mut messages) => {
                    retry = true;
                    continue;
                }
                Some(Err(e)) if too_long(&e) => {
                    tally.outcome = Some(Outcome::ContextLength);
                    yield Ok(Event::Incomplete(Incomplete::ContextLength));
                    yield Ok(Event::Finish { reason: FinishReason::Length, usage: Some(usage) });
                    return;
                }
                Some(Err(e)) => {
                    tally.outcome = Some(Outcome::Error);
                    yield Err(e);
                    return;
                }
                None => {
                    tally.outcome = Some(Outcome::Deadline);
                    yield Ok(Event::Incomplete(Incomplete::Deadline));
                    yield Ok(Event::Finish { reason: FinishReason::Length, usage: Some(usage) });
                    return;
                }
            };
            let mut done = Completion::default();
            loop {
                let next = tokio::select! {
                    next = events.next() => match next {
                        Some(Ok(event)) => Next::Event(event),
                        Some(Err(e)) => Next::Failed(e),
                        None => Next::Failed(BackendError::Protocol(
                            "the backend's stream ended before the turn finished".into(),
                        )),
                    },
                    () = tokio::time::sleep_until(deadline) => Next::Deadline,
                };
                match next {
                    Next::Event(Event::Delta(text)) => {
                        done.content.push_str(&text);
                        yield Ok(Event::Delta(text));
                    }
                    Next::Event(Event::Finish { reason, usage: turn_usage }) => {
                        done.finish_reason = Some(reason);
                        usage.add(turn_usage.unwrap_or_default());
                        break;
                    }
                    Next::Event(event @ Event::ToolCall { .. }) => done.push(event),
                    Next::Event(Event::Step(_) | Event::Incomplete(_)) => {}
                    Next::Failed(e) => {
                        tally.outcome = Some(Outcome::Error);
                        yield Err(e);
                        return;
                    }
                    Next::Deadline => {
                        tally.outcome = Some(Outcome::Deadline);
                        yield Ok(Event::Incomplete(Incomplete::Deadline));
                        yield Ok(Event::Finish { reason: FinishReason::Length, usage: Some(usage) });
                        return;
                    }
                }
            }
            drop(events);
            let reason = done.finish_reason.unwrap_or(FinishReason::Stop);
            if done.tool_calls.is_empty() || last {
                // An answer (or, on the last turn, calls the model was told not to make:
                // dropped, the text stands).
                tally.outcome = Some(if last { Outcome::MaxSteps } else { Outcome::Answer });
                let reason = if reason == FinishReason::ToolCalls { FinishReason::Stop } else { reason };
                yield Ok(Event::Finish { reason, usage: Some(usage) });
                return;
            }
            for (i, call) in done.tool_calls.iter_mut().enumerate() {
                if call.id.is_empty() {
                    call.id = format!("call_{turn}_{i}");
                }
            }
            let client_calls: Vec<&ToolCall> = done
                .tool_calls
                .iter()
                .filter(|c| runs_on_client(&request, &toolset, c))
                .collect();
            if !client_calls.is_empty() {
                // The client runs these; server calls of the same turn are left for the
                // model to make again once the client has answered.
                tally.outcome = Some(Outcome::ClientTool);
                for (index, call) in client_calls.into_iter().enumerate() {
                    yield Ok(Event::ToolCall {
                        index: index as u32,
                        id: Some(call.id.clone()),
                        name: Some(call.name.clone()),
                        arguments: call.arguments.clone(),
                    });
                }
                yield Ok(Event::Finish { reason: FinishReason::ToolCalls, usage: Some(usage) });
                return;
            }
            tally.steps += 1;
            let results = runner.run(turn, &done.tool_calls).await;
            messages.push(Message {
                role: Role::Assistant,
                content: if done.content.is_empty() {
                    Vec::new()
                } else {
                    vec![crate::domain::ContentPart::Text { text: std::mem::take(&mut done.content) }]
                },
                tool_calls: std::mem::take(&mut done.tool_calls),
                tool_call_id: None,
                name: None,
            });
            for result in results {
                yield Ok(Event::Step(Box::new(result.step)));
                messages.push(result.message);
            }
            if tokio::time::Instant::now() >= deadline {
                tally.outcome = Some(Outcome::Deadline);
                yield Ok(Event::Incomplete(Incomplete::Deadline));
                yield Ok(Event::Finish { reason: FinishReason::Length, usage: Some(usage) });
                return;
            }
        }
    })
}

/// Whether a call goes back to the client: one of the client's own tools, or a server
/// tool with `approval = "client"`. A name nobody offered stays on the server, where
/// the model is told there is no such tool.
fn runs_on_client(request: &ChatRequest, toolset: &Toolset, call: &ToolCall) -> bool {
    if request.tools.iter().any(|t| t.name == call.name) {
        return true;
    }
    toolset
        .get(&call.name)
        .is_some_and(|e| e.traits.approval == Approval::Client)
}
