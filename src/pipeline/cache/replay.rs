//! A stored answer played back as the event stream a backend would have produced: an
//! agent run's steps, the text, each tool call (with its original id), then `Finish` with the original usage.
//! `http/` turns it into SSE chunks or one JSON body, whichever the client asked for,
//! whatever way the answer was first produced.

use std::sync::Arc;

use crate::domain::{Event, EventStream};

use super::store::Answer;

pub fn replay(answer: &Arc<Answer>) -> EventStream {
    let mut events = Vec::with_capacity(answer.steps.len() + answer.tool_calls.len() + 2);
    for step in &answer.steps {
        events.push(Ok(Event::Step(Box::new(step.clone()))));
    }
    if !answer.content.is_empty() {
        events.push(Ok(Event::Delta(answer.content.clone())));
    }
    for (index, call) in answer.calls().enumerate() {
        events.push(Ok(Event::ToolCall {
            index: index as u32,
            id: Some(call.id),
            name: Some(call.name),
            arguments: call.arguments,
        }));
    }
    events.push(Ok(Event::Finish {
        reason: answer.finish_reason,
        usage: Some(answer.usage()),
    }));
    Box::pin(futures::stream::iter(events))
}
