//! Billing a generation as it streams: completion tokens are charged to the tenant's
//! token budget every few events (whatever the budget holds: they were generated), the
//! prompt estimate taken at admission is corrected by the usage the engine reports, and
//! the model's concurrency slot is held until the stream ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use tokio::sync::OwnedSemaphorePermit;

use super::shared::{Decision, Shared};
use super::TenantLimits;
use crate::domain::{Event, EventStream};
use crate::error::BackendError;
use crate::metrics::Metrics;

/// Completion tokens are charged in batches of this many (a Redis round trip each when
/// the limits are shared).
const BATCH: i64 = 8;

/// Where a tenant's tokens are charged.
pub struct Bill {
    tenant: Arc<TenantLimits>,
    shared: Option<Arc<Shared>>,
    metrics: Arc<Metrics>,
}

impl Bill {
    pub(super) fn new(
        tenant: Arc<TenantLimits>,
        shared: Option<Arc<Shared>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Bill {
            tenant,
            shared,
            metrics,
        }
    }

    /// Remember when the shared budget is whole again (for the headers).
    pub(super) fn note_shared(&self, decision: &Decision) {
        note_shared(&self.tenant, decision);
    }

    /// Settle the difference between what was estimated and what was used.
    pub fn settle(&self, n: i64) {
        self.charge(n);
    }

    /// Charge `n` tokens (negative: give back) whatever the budget holds.
    fn charge(&self, n: i64) {
        if n == 0 {
            return;
        }
        let Some((gcra, budget)) = &self.tenant.tokens else {
            return;
        };
        let Some(shared) = self.shared.clone() else {
            gcra.charge(n);
            return;
        };
        let (tenant, budget, metrics) = (self.tenant.clone(), budget.clone(), self.metrics.clone());
        // Off the stream's path: a slow Redis delays nobody's tokens.
        tokio::spawn(async move {
            match shared.decide(&[(&budget, n)], true).await {
                Some(decision) => note_shared(&tenant, &decision),
                None => {
                    metrics.ratelimit_fallbacks.inc();
                    if let Some((gcra, _)) = &tenant.tokens {
                        gcra.charge(n);
                    }
                }
            }
        });
    }
}

fn note_shared(tenant: &TenantLimits, decision: &Decision) {
    if let (Some(window), Ok(mut full_at)) = (
        decision.windows.first(),
        tenant.shared_tokens_full_at.lock(),
    ) {
        *full_at = Some(Instant::now() + window.reset);
    }
}

/// What a generation owes: its bill (if the tenant has a token budget), the prompt
/// estimate already charged, and its model's concurrency slot.
pub struct Charge {
    bill: Option<Bill>,
    estimate: u32,
    permit: Option<OwnedSemaphorePermit>,
}

impl Charge {
    pub(super) fn new(
        bill: Option<Bill>,
        estimate: u32,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Charge {
            bill,
            estimate,
            permit,
        }
    }

    /// Nothing to charge, no slot held.
    pub fn none() -> Self {
        Charge::new(None, 0, None)
    }

    /// `events`, charging the completion as it streams when `generated` (a cache hit
    /// costs its prompt estimate only) and holding the model slot until they end.
    pub fn wrap(self, events: EventStream, generated: bool) -> EventStream {
        if self.permit.is_none() && (self.bill.is_none() || !generated) {
            return events;
        }
        let bill = if generated { self.bill } else { None };
        Box::pin(Billed {
            inner: events,
            bill,
            estimate: i64::from(self.estimate),
            charged: 0,
            pending: 0,
            _permit: self.permit,
        })
    }
}

pin_project_lite::pin_project! {
    struct Billed {
        #[pin]
        inner: EventStream,
        bill: Option<Bill>,
        estimate: i64,
        // completion tokens charged so far, and counted but not yet charged
        charged: i64,
        pending: i64,
        _permit: Option<OwnedSemaphorePermit>,
    }

    impl PinnedDrop for Billed {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(bill) = this.bill.take() {
                bill.charge(*this.pending);
            }
        }
    }
}

impl Stream for Billed {
    type Item = Result<Event, BackendError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let item = futures::ready!(this.inner.poll_next(cx));
        let Some(Ok(event)) = &item else {
            return Poll::Ready(item);
        };
        match event {
            Event::Delta(_) | Event::ToolCall { .. } => {
                *this.pending += 1;
                if *this.pending >= BATCH {
                    if let Some(bill) = this.bill.as_ref() {
                        bill.charge(*this.pending);
                    }
                    *this.charged += std::mem::take(this.pending);
                }
            }
            Event::Finish { usage, .. } => {
                // The reported usage settles the bill: completion tokens beyond (or short
                // of) the events counted, and the prompt beyond its estimate.
                let owed = match usage {
                    Some(u) => {
                        i64::from(u.completion_tokens) - *this.charged
                            + (i64::from(u.prompt_tokens) - *this.estimate)
                    }
                    None => *this.pending,
                };
                if let Some(bill) = this.bill.take() {
                    bill.charge(owed);
                }
                *this.charged += owed;
                *this.pending = 0;
            }
            _ => {}
        }
        Poll::Ready(item)
    }
}
