//! Wraps a backend's event stream to record what the client experiences: time to the
//! first token, token counts and upstream errors. Dropping it (client gone) cancels the
//! generation behind it through the held [`DropGuard`]; at the shutdown deadline the
//! stream ends with `ShuttingDown` so the connection can close. It also holds the
//! target's in-flight count (what the load policy reads) until the generation ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use crate::domain::{Event, EventStream};
use crate::error::BackendError;
use crate::metrics::Metrics;
use crate::pipeline::route::{InFlight, Target};

pub struct Observed {
    inner: EventStream,
    metrics: std::sync::Arc<Metrics>,
    model: std::sync::Arc<str>,
    backend: String,
    started: Instant,
    first_token_seen: bool,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
    _cancel_on_drop: DropGuard,
    _in_flight: InFlight,
}

impl Observed {
    pub fn new(
        inner: EventStream,
        metrics: std::sync::Arc<Metrics>,
        target: &Target,
        started: Instant,
        cancel_on_drop: DropGuard,
        hard_stop: CancellationToken,
        in_flight: InFlight,
    ) -> Self {
        Observed {
            inner,
            metrics,
            model: target.model.clone(),
            backend: target.backend.name().to_owned(),
            started,
            first_token_seen: false,
            stopped: Box::pin(hard_stop.cancelled_owned()),
            ended: false,
            _cancel_on_drop: cancel_on_drop,
            _in_flight: in_flight,
        }
    }
}

impl Stream for Observed {
    type Item = Result<Event, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if this.stopped.as_mut().poll(cx).is_ready() {
            this.ended = true;
            return Poll::Ready(Some(Err(BackendError::ShuttingDown)));
        }
        let next = this.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(item)) = &next {
            match item {
                Ok(Event::Delta(_) | Event::ToolCall { .. }) if !this.first_token_seen => {
                    this.first_token_seen = true;
                    this.metrics
                        .time_to_first_token
                        .with_label_values(&[&*this.model, this.backend.as_str()])
                        .observe(this.started.elapsed().as_secs_f64());
                }
                Ok(Event::Finish {
                    usage: Some(usage), ..
                }) => {
                    this.metrics
                        .input_tokens
                        .with_label_values(&[&*this.model])
                        .inc_by(u64::from(usage.prompt_tokens));
                    this.metrics
                        .output_tokens
                        .with_label_values(&[&*this.model])
                        .inc_by(u64::from(usage.completion_tokens));
                }
                Err(e) => this.metrics.upstream_error(&this.backend, e),
                Ok(_) => {}
            }
        }
        next
    }
}
