//! Server-sent events framing for streamed chat completions: `data: <json>\n\n` per
//! chunk, `data: [DONE]\n\n` at the end, and on failure one final `data: {"error":...}`
//! event before the stream closes (what the OpenAI SDKs raise as an APIError). Events
//! ready at the same moment leave in one write ([`coalesce`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

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

/// Largest write [`coalesce`] makes of frames that were ready together.
const COALESCE_BYTES: usize = 16 * 1024;

/// `frames`, with the frames that are ready at the same moment joined into one: what the
/// upstream delivered in one read goes to the client in one write, not one per event
/// (each write to a socket costs a system call and wakes the reader). It never waits
/// for a frame that is not ready, so nothing is delayed.
pub fn coalesce<S>(frames: S) -> impl Stream<Item = Result<Bytes, Infallible>> + Send
where
    S: Stream<Item = Result<Bytes, Infallible>> + Send,
{
    Coalesce {
        frames: Box::pin(frames),
        ended: false,
    }
}

struct Coalesce<S> {
    frames: Pin<Box<S>>,
    ended: bool,
}

impl<S> Stream for Coalesce<S>
where
    S: Stream<Item = Result<Bytes, Infallible>> + Send,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let Some(Ok(first)) = ready!(this.frames.as_mut().poll_next(cx)) else {
            this.ended = true;
            return Poll::Ready(None);
        };
        let mut joined: Option<BytesMut> = None;
        while joined.as_ref().map_or(first.len(), BytesMut::len) < COALESCE_BYTES {
            match this.frames.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(more))) => joined
                    .get_or_insert_with(|| BytesMut::from(&first[..]))
                    .extend_from_slice(&more),
                Poll::Ready(None) => {
                    this.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        Poll::Ready(Some(Ok(joined.map_or(first, BytesMut::freeze))))
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

    #[test]
    fn ready_frames_leave_together_and_a_wait_splits_them() {
        use futures::channel::mpsc;
        use futures::task::noop_waker_ref;
        let (tx, rx) = mpsc::unbounded::<Result<Bytes, Infallible>>();
        let mut out = Box::pin(coalesce(rx));
        let mut cx = Context::from_waker(noop_waker_ref());
        tx.unbounded_send(Ok(Bytes::from_static(b"a"))).unwrap();
        tx.unbounded_send(Ok(Bytes::from_static(b"b"))).unwrap();
        let first = out.as_mut().poll_next(&mut cx);
        assert!(matches!(first, Poll::Ready(Some(Ok(ref b))) if &b[..] == b"ab"));
        assert!(out.as_mut().poll_next(&mut cx).is_pending());
        tx.unbounded_send(Ok(Bytes::from_static(b"c"))).unwrap();
        drop(tx);
        let last = out.as_mut().poll_next(&mut cx);
        assert!(matches!(last, Poll::Ready(Some(Ok(ref b))) if &b[..] == b"c"));
        assert!(matches!(out.as_mut().poll_next(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_long_run_of_ready_frames_is_cut_at_the_size_bound() {
        let frames = (0..40).map(|_| Ok(Bytes::from(vec![b'x'; 1024])));
        let out: Vec<_> = futures::executor::block_on(
            coalesce(futures::stream::iter(frames)).collect::<Vec<_>>(),
        );
        let sizes: Vec<usize> = out.iter().map(|b| b.as_ref().unwrap().len()).collect();
        assert_eq!(sizes, [16 * 1024, 16 * 1024, 8 * 1024]);
    }
}
