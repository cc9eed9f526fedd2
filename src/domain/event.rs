//! The stream every backend produces: text deltas, tool-call fragments and one final
//! `Finish`. A non-streaming response is this stream collected by [`collect`].

use std::pin::Pin;

use futures::{Stream, StreamExt};
use serde::Serialize;

use super::{Incomplete, Step, ToolCall};
use crate::error::BackendError;

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    /// The wire name (`stop`, `length`, `tool_calls`, `content_filter`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// Most tool calls one answer may hold. An upstream's tool-call `index` picks a slot,
/// so a larger one (a broken or hostile upstream sending `index: 4294967295`) is a
/// protocol error at the backend, never an allocation.
pub const MAX_TOOL_CALLS: u32 = 128;

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Usage {
    /// Saturates: upstreams report these numbers, and may report nonsense.
    pub fn total(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Add another turn's counts (an agent run's usage sums all its turns).
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
    }
}

/// One step of a generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More assistant text.
    Delta(String),
    /// A fragment of tool call number `index`: the first fragment of a call carries its
    /// `id` (if the engine made one) and `name`; `arguments` fragments are appended.
    ToolCall {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// A tool call the gateway ran in an agent run (never from a backend).
    Step(Box<Step>),
    /// The answer was cut short (comes just before `Finish`).
    Incomplete(Incomplete),
    /// The last event of a successful generation.
    Finish {
        reason: FinishReason,
        usage: Option<Usage>,
    },
}

/// What a backend returns: events until `Finish`, or an error that ends the stream.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, BackendError>> + Send>>;

/// A whole generation, as a non-streaming response needs it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<Usage>,
    /// Tool calls the gateway ran (agent runs).
    pub steps: Vec<Step>,
    pub incomplete: Option<Incomplete>,
}

impl Completion {
    /// Fold one event in.
    pub fn push(&mut self, event: Event) {
        match event {
            Event::Delta(text) => self.content.push_str(&text),
            Event::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                if index >= MAX_TOOL_CALLS {
                    return; // refused by every backend; never allocate for it
                }
                let index = index as usize;
                while self.tool_calls.len() <= index {
                    self.tool_calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                let call = &mut self.tool_calls[index];
                if let Some(id) = id {
                    call.id = id;
                }
                if let Some(name) = name {
                    call.name.push_str(&name);
                }
                call.arguments.push_str(&arguments);
            }
            Event::Step(step) => self.steps.push(*step),
            Event::Incomplete(why) => self.incomplete = Some(why),
            Event::Finish { reason, usage } => {
                self.finish_reason = Some(reason);
                self.usage = usage;
            }
        }
    }
}

/// Collect a stream into a [`Completion`]; the first error ends collection.
/// A stream that ends without `Finish` is an upstream protocol error.
pub async fn collect(mut stream: EventStream) -> Result<Completion, BackendError> {
    let mut completion = Completion::default();
    while let Some(event) = stream.next().await {
        completion.push(event?);
    }
    if completion.finish_reason.is_none() {
        return Err(BackendError::Protocol(
            "upstream stream ended before it finished".into(),
        ));
    }
    Ok(completion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_from_an_upstream_cannot_overflow() {
        let usage = Usage {
            prompt_tokens: u32::MAX,
            completion_tokens: 7,
        };
        assert_eq!(usage.total(), u32::MAX);
        let mut c = Completion::default();
        c.push(Event::ToolCall {
            index: u32::MAX,
            id: Some("x".into()),
            name: Some("f".into()),
            arguments: String::new(),
        });
        assert!(
            c.tool_calls.is_empty(),
            "an index past the bound is never allocated"
        );
    }

    #[tokio::test]
    async fn collects_text_and_tool_call_fragments() {
        let events = vec![
            Ok(Event::Delta("Hel".into())),
            Ok(Event::Delta("lo".into())),
            Ok(Event::ToolCall {
                index: 0,
                id: Some("call_1".into()),
                name: Some("calc".into()),
                arguments: "{\"a\":".into(),
            }),
            Ok(Event::ToolCall {
                index: 0,
                id: None,
                name: None,
                arguments: "1}".into(),
            }),
            Ok(Event::Finish {
                reason: FinishReason::ToolCalls,
                usage: Some(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 4,
                }),
            }),
        ];
        let done = collect(Box::pin(futures::stream::iter(events)))
            .await
            .unwrap();
        assert_eq!(done.content, "Hello");
        assert_eq!(done.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(done.tool_calls[0].id, "call_1");
        assert_eq!(done.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(done.usage.unwrap().total(), 7);
    }

    #[tokio::test]
    async fn a_stream_without_finish_is_an_error() {
        let events = vec![Ok(Event::Delta("partial".into()))];
        assert!(collect(Box::pin(futures::stream::iter(events)))
            .await
            .is_err());
    }
}
