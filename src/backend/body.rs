//! An upstream response body as a stream of chunks for the HTTP backends' parsers: under
//! the read timeout, holding the request on its pool member until it drops, and handing
//! over together what the upstream sent together.
//!
//! Why the gathering: hyper's client connection task hands a body over one HTTP chunk at
//! a time (each chunk waits for the reader to take the previous one), so an answer that
//! arrived in one read from the socket (a whole streamed answer from a fast upstream, or
//! a burst of tokens) would otherwise reach the parsers, and then the client's socket,
//! one event per task wake-up: one write per event, each a system call that wakes the
//! client. So before handing over, the stream lets the connection task run once more and
//! takes what it decoded meanwhile; then it hands the chunks over one per poll, all
//! ready, and the server joins the frames they become into one write. It never waits for
//! bytes that have not arrived, and copies nothing.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use super::pool::Outstanding;
use super::transport::{ReadError, Response};
use crate::error::BackendError;

/// Most bytes one hand-over gathers: a bound on what is held back, far above a burst of
/// events.
const GATHER_BYTES: usize = 64 * 1024;

/// `response`'s body as a stream of byte runs (the request counted on its pool member
/// until the stream drops) that fails with `Timeout` when the upstream is silent for
/// longer than `read_timeout`. Dropping it drops the upstream connection: that is how a
/// generation is cancelled once it streams (the pipeline's `Observed` owns the stream
/// and drops it with the cancellation), so it watches no token per chunk.
pub(super) fn stream(
    backend: &str,
    response: Response,
    read_timeout: Duration,
    outstanding: Outstanding,
) -> impl Stream<Item = Result<Bytes, BackendError>> + Send + 'static {
    BodyStream::new(
        response.into_chunks(),
        backend,
        read_timeout,
        Some(outstanding),
    )
}

/// A failure while reading a body, as the backend reports it.
trait ReadFailure {
    fn into_error(self, backend: &str, read_timeout: Duration) -> BackendError;
}

impl ReadFailure for ReadError {
    fn into_error(self, backend: &str, read_timeout: Duration) -> BackendError {
        ReadError::into_error(self, backend, read_timeout)
    }
}

impl ReadFailure for BackendError {
    fn into_error(self, _: &str, _: Duration) -> BackendError {
        self
    }
}

type Chunks<E> = dyn Stream<Item = Result<Bytes, E>> + Send;

/// [`stream`]'s stream. Its timer is set up once per response, not per chunk: a wait
/// for the next chunk only notes when it began (silence counts while the stream is asked
/// for more, as a per-read timeout would), and a timer that fires before the silence is
/// long enough moves to the new deadline.
struct BodyStream<E> {
    body: Pin<Box<Chunks<E>>>,
    backend: String,
    read_timeout: Duration,
    /// When the current wait for a chunk began (none while the reader is busy).
    waiting_since: Option<tokio::time::Instant>,
    silence: Pin<Box<tokio::time::Sleep>>,
    /// Chunks taken and not yet handed over, with their total length.
    gathered: VecDeque<Bytes>,
    gathered_bytes: usize,
    /// Whether this gathering has already let the connection task run once.
    yielded: bool,
    /// Chunks being handed over, one per poll, all ready (`gathered` is empty meanwhile).
    handed: VecDeque<Bytes>,
    /// A failure that came after gathered chunks: reported once they are handed over.
    failed: Option<BackendError>,
    done: bool,
    /// Counted on its member for as long as the body streams.
    _outstanding: Option<Outstanding>,
}

impl<E> BodyStream<E> {
    fn new(
        body: Pin<Box<Chunks<E>>>,
        backend: &str,
        read_timeout: Duration,
        outstanding: Option<Outstanding>,
    ) -> Self {
        let now = tokio::time::Instant::now();
        BodyStream {
            body,
            backend: backend.to_owned(),
            read_timeout,
            waiting_since: None,
            silence: Box::pin(tokio::time::sleep_until(now + read_timeout)),
            gathered: VecDeque::new(),
            gathered_bytes: 0,
            yielded: false,
            handed: VecDeque::new(),
            failed: None,
            done: false,
            _outstanding: outstanding,
        }
    }

    /// Start handing over the gathered chunks: the first now, the rest at the next
    /// polls, which find them ready.
    fn hand_over(&mut self) -> Option<Bytes> {
        std::mem::swap(&mut self.gathered, &mut self.handed);
        self.gathered_bytes = 0;
        self.yielded = false;
        self.handed.pop_front()
    }
}

impl<E: ReadFailure> Stream for BodyStream<E> {
    type Item = Result<Bytes, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(chunk) = this.handed.pop_front() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if this.done {
            return Poll::Ready(this.failed.take().map(Err));
        }
        loop {
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.waiting_since = None;
                    this.yielded = false;
                    this.gathered_bytes += chunk.len();
                    this.gathered.push_back(chunk);
                    if this.gathered_bytes >= GATHER_BYTES {
                        return Poll::Ready(this.hand_over().map(Ok));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    let err = e.into_error(&this.backend, this.read_timeout);
                    return match this.hand_over() {
                        Some(chunk) => {
                            this.failed = Some(err);
                            Poll::Ready(Some(Ok(chunk)))
                        }
                        None => Poll::Ready(Some(Err(err))),
                    };
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.hand_over().map(Ok));
                }
                Poll::Pending if this.gathered.is_empty() => break,
                Poll::Pending if !this.yielded => {
                    // Let the connection task (woken by the poll above) decode what it
                    // has already read; a task that wakes itself runs again after the
                    // tasks already queued.
                    this.yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Ready(this.hand_over().map(Ok)),
            }
        }
        let since = *this
            .waiting_since
            .get_or_insert_with(tokio::time::Instant::now);
        loop {
            ready!(this.silence.as_mut().poll(cx));
            let due = since + this.read_timeout;
            if tokio::time::Instant::now() >= due {
                this.done = true;
                return Poll::Ready(Some(Err(BackendError::Timeout {
                    backend: this.backend.clone(),
                    after: this.read_timeout,
                })));
            }
            this.silence.as_mut().reset(due);
        }
    }
}

/// Split `body` at the given offsets (modulo its length): how a test feeds a parser the
/// chunk boundaries a network might produce.
#[cfg(test)]
pub fn split_at(body: &[u8], cuts: Vec<usize>) -> Vec<Result<Bytes, BackendError>> {
    let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % body.len()).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([body.len()]) {
        pieces.push(Ok(Bytes::copy_from_slice(&body[start..c])));
        start = c;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::{mpsc, oneshot};
    use futures::{SinkExt, StreamExt};

    /// A body read the way hyper's client hands it over: a "connection" task sends the
    /// chunks through a one-slot channel, so each waits until the reader took the last.
    /// `wait_before` holds back the chunk at that index until the returned sender fires.
    fn connection(
        chunks: Vec<Result<Bytes, BackendError>>,
        wait_before: Option<usize>,
    ) -> (BodyStream<BackendError>, oneshot::Sender<()>) {
        let (mut tx, rx) = mpsc::channel(0);
        let (go, mut gate) = oneshot::channel::<()>();
        tokio::spawn(async move {
            for (i, chunk) in chunks.into_iter().enumerate() {
                if Some(i) == wait_before {
                    let _ = (&mut gate).await;
                }
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        let body = BodyStream::new(Box::pin(rx), "up", Duration::from_secs(5), None);
        (body, go)
    }

    /// What the server polling the body sees: `R` an item, `P` not ready, `E` the end.
    async fn trace(
        mut body: BodyStream<BackendError>,
    ) -> (String, Vec<Result<Bytes, BackendError>>) {
        let (mut seen, mut items) = (String::new(), Vec::new());
        std::future::poll_fn(|cx| loop {
            match Pin::new(&mut body).poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    seen.push('R');
                    items.push(item);
                }
                Poll::Ready(None) => {
                    seen.push('E');
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    seen.push('P');
                    return Poll::Pending;
                }
            }
        })
        .await;
        (seen, items)
    }

    fn chunks(parts: &[&'static str]) -> Vec<Result<Bytes, BackendError>> {
        parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect()
    }

    #[tokio::test]
    async fn chunks_the_connection_already_has_are_handed_over_together() {
        let parts = ["data: 1\n\n", "data: 2\n\n", "data: 3\n\n", "data: 4\n\n"];
        let (body, _go) = connection(chunks(&parts), None);
        let (seen, items) = trace(body).await;
        // One chunk per poll with a wait between them would be `PRPRPRPRE`: one write
        // to the client per event.
        assert_eq!(seen.trim_start_matches('P'), "RRRRE", "{seen}");
        let got: Vec<Bytes> = items.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, parts.map(|p| Bytes::from_static(p.as_bytes())));
    }

    #[tokio::test]
    async fn a_chunk_is_never_held_back_for_one_that_has_not_arrived() {
        let (mut body, go) = connection(chunks(&["first", "second"]), Some(1));
        // The second chunk is only sent after the first has been handed over.
        assert_eq!(body.next().await.unwrap().unwrap(), "first");
        go.send(()).unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), "second");
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn a_failure_after_gathered_chunks_comes_after_them() {
        let mut parts = chunks(&["a", "b"]);
        parts.push(Err(BackendError::Protocol("reset".into())));
        let (body, _go) = connection(parts, None);
        let (seen, items) = trace(body).await;
        assert_eq!(seen.trim_start_matches('P'), "RRRE", "{seen}");
        assert_eq!(items[0].as_ref().unwrap(), "a");
        assert_eq!(items[1].as_ref().unwrap(), "b");
        assert!(matches!(&items[2], Err(BackendError::Protocol(m)) if m == "reset"));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_longer_than_the_read_timeout_fails_and_chunks_reset_it() {
        let (tx, rx) = mpsc::channel::<Result<Bytes, BackendError>>(0);
        let mut body = BodyStream::new(Box::pin(rx), "up", Duration::from_secs(5), None);
        let mut tx = tx;
        tokio::spawn(async move {
            for part in ["a", "b"] {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let _ = tx.send(Ok(Bytes::from_static(part.as_bytes()))).await;
            }
            // Silent from here on, and the connection stays open.
            std::future::pending::<()>().await;
        });
        let start = tokio::time::Instant::now();
        assert_eq!(body.next().await.unwrap().unwrap(), "a");
        assert_eq!(body.next().await.unwrap().unwrap(), "b");
        let err = body.next().await.unwrap().unwrap_err();
        assert!(matches!(err, BackendError::Timeout { .. }), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(13));
        assert!(body.next().await.is_none());
    }
}
