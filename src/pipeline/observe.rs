//! Wraps a backend's event stream to record what the client experiences: time to the
//! first token, the gaps between later pieces (inter-token latency), token counts and
//! lengths, the finish reason and upstream errors. Metric handles are resolved once per
//! generation, not per chunk. Dropping it (client gone) cancels the
//! generation behind it through the held [`DropGuard`]; at the shutdown deadline the
//! stream ends with `ShuttingDown` so the connection can close. It also holds the
//! target's in-flight count (what the load policy reads) until the generation ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use prometheus::Histogram;
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
    /// When the last piece of text or tool call came (None before the first).
    last_token: Option<Instant>,
    inter_token: Histogram,
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
            model: target.model.clone(),
            backend: target.backend.name().to_owned(),
            started,
            last_token: None,
            inter_token: metrics
                .inter_token
                .with_label_values(&[&*target.model, target.backend.name()]),
            stopped: Box::pin(hard_stop.cancelled_owned()),
            ended: false,
            _cancel_on_drop: cancel_on_drop,
            _in_flight: in_flight,
            metrics,
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
                Ok(Event::Delta(_) | Event::ToolCall { .. }) => {
                    let now = Instant::now();
                    match this.last_token {
                        None => this
                            .metrics
                            .time_to_first_token
                            .with_label_values(&[&*this.model, this.backend.as_str()])
                            .observe(now.duration_since(this.started).as_secs_f64()),
                        Some(last) => this
                            .inter_token
                            .observe(now.duration_since(last).as_secs_f64()),
                    }
                    this.last_token = Some(now);
                }
                Ok(Event::Finish { reason, usage }) => {
                    let model = [&*this.model];
                    this.metrics
                        .finish_reasons
                        .with_label_values(&[&*this.model, reason.as_str()])
                        .inc();
                    if let Some(usage) = usage {
                        let (prompt, completion) = (usage.prompt_tokens, usage.completion_tokens);
                        let m = &this.metrics;
                        m.input_tokens
                            .with_label_values(&model)
                            .inc_by(u64::from(prompt));
                        m.output_tokens
                            .with_label_values(&model)
                            .inc_by(u64::from(completion));
                        m.prompt_tokens
                            .with_label_values(&model)
                            .observe(f64::from(prompt));
                        m.completion_tokens
                            .with_label_values(&model)
                            .observe(f64::from(completion));
                    }
                }
                Err(e) => this.metrics.upstream_error(&this.backend, e),
                Ok(_) => {}
            }
        }
        next
    }
}
