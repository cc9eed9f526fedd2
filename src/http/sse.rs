//! Server-sent events framing for streamed chat completions: `data: <json>\n\n` per
//! chunk, `data: [DONE]\n\n` at the end, and on failure one final `data: {"error":...}`
//! event before the stream closes (what the OpenAI SDKs raise as an APIError).

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;

use super::response::Chunks;
use crate::domain::{Event, EventStream, Step};
use crate::error::{ApiError, BackendError};

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Frame one JSON value as an SSE `data:` event.
pub fn frame<T: Serialize>(value: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    buf.get_mut().put_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        // Our own types always serialize; keep the stream well-formed regardless.
        return Bytes::from_static(b"data: {}\n\n");
    }
    let mut buf = buf.into_inner();
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// A step as an SSE comment line: SDKs skip it, proxies see traffic during long tools.
/// Only the tool, outcome and duration: arguments go out only with `x-sluice-trace`.
fn comment(step: &Step) -> Bytes {
    Bytes::from(format!(
        ": sluice_step turn={} tool={} outcome={} duration_ms={:.3}\n\n",
        step.turn, step.tool, step.outcome, step.duration_ms
    ))
}

fn error_frame(e: BackendError) -> Bytes {
    let api: ApiError = e.into();
    frame(&api.body())
}

/// The SSE body for a generation. `first` is an event already taken from `events`.
pub fn body(
    mut chunks: Chunks,
    first: Event,
    mut events: EventStream,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    async_stream::stream! {
        yield Ok(frame(&chunks.role()));
        let mut pending = Some(Ok(first));
        let mut finished = None;
        loop {
            let item = match pending.take() {
                Some(item) => item,
                None => match events.next().await {
                    Some(item) => item,
                    None => break,
                },
            };
            match item {
                Ok(Event::Step(step)) => {
                    if chunks.trace() {
                        yield Ok(frame(&chunks.step(&step)));
                    } else {
                        yield Ok(comment(&step));
                    }
                }
                Ok(Event::Incomplete(why)) => chunks.note_incomplete(why),
                Ok(event @ Event::Finish { usage, .. }) => {
                    yield Ok(frame(&chunks.event(&event, false)));
                    finished = Some(usage.unwrap_or_default());
                    break;
                }
                Ok(event) => {
                    let first_of_call = match &event {
                        Event::ToolCall { index, id, .. } => chunks.start_call(*index, id.as_deref()),
                        _ => false,
                    };
                    yield Ok(frame(&chunks.event(&event, first_of_call)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "generation failed mid-stream");
                    yield Ok(error_frame(e));
                    return;
                }
            }
        }
        match finished {
            Some(usage) => {
                if chunks.include_usage() {
                    yield Ok(frame(&chunks.usage(usage)));
                }
                yield Ok(Bytes::from_static(DONE));
            }
            None => yield Ok(error_frame(BackendError::Protocol(
                "the backend's stream ended before the generation finished".into(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_data_lines_with_a_blank_line() {
        let b = frame(&serde_json::json!({"a": "x\ny"}));
        assert_eq!(&b[..], b"data: {\"a\":\"x\\ny\"}\n\n");
    }
}
