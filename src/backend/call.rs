//! One upstream call with the backend's resilience: ask the breaker, pick a pool
//! member, send, record the outcome for outlier detection and the breaker, and retry
//! a retriable failure (connect error, 502, 503, 429) on another member after a
//! backoff while attempts and the retry budget last. The loop ends as soon as a 2xx
//! answer is accepted: its body is the caller's, and nothing after that is retried.

use super::pool::Outstanding;
use super::retry::{self, is_gateway_failure};
use super::transport::Response;
use super::upstream::{send, Build, Endpoint, Upstream};
use crate::error::BackendError;

impl Upstream {
    /// The accepted response and its request counted on the member that gave it.
    pub(super) async fn call(
        &self,
        endpoint: &Endpoint,
        build: Build<'_>,
    ) -> Result<(Response, Outstanding), BackendError> {
        let mut tried: Vec<usize> = Vec::new();
        // The retry in flight, counted against the budget until its attempt ends.
        let mut _token: Option<retry::Token> = None;
        // A retry the breaker or the pool refuses ends with the failure it was for.
        let mut last: Option<BackendError> = None;
        // Why this attempt is a retry (counted once it is sent).
        let mut retrying: Option<&'static str> = None;
        let mut attempt: u32 = 1;
        loop {
            let permit = match &self.breaker {
                None => None,
                Some(b) => match b.admit() {
                    Ok(permit) => Some(permit),
                    Err(wait) => {
                        return Err(last.unwrap_or_else(|| BackendError::Unavailable {
                            backend: self.name.clone(),
                            reason: "its circuit breaker is open after repeated failures".into(),
                            retry_after: wait,
                        }))
                    }
                },
            };
            let Some(member) = self.pool.pick(&tried) else {
                return Err(last.unwrap_or_else(|| BackendError::Unavailable {
                    backend: self.name.clone(),
                    reason: "every member of its pool is ejected after repeated failures".into(),
                    retry_after: self.pool.next_return(),
                }));
            };
            if let Some(reason) = retrying.take() {
                self.metrics
                    .retries
                    .with_label_values(&[&self.name, reason])
                    .inc();
            }
            let outstanding = self.pool.enter(member);
            let target = &endpoint.0[member];
            let result = send(
                &self.transport,
                &self.name,
                target,
                build(),
                self.request_timeout,
            )
            .await;
            let failure = result.as_ref().err().is_some_and(is_gateway_failure);
            self.pool.record(member, failure);
            if let Some(permit) = permit {
                permit.record(failure);
            }
            let error = match result {
                Ok(response) => return Ok((response, outstanding)),
                Err(e) => e,
            };
            drop(outstanding);
            _token = None;
            let Some(reason) = retry::reason(&error) else {
                return Err(error);
            };
            if attempt >= self.retry.config.attempts {
                return Err(error);
            }
            let Some(token) = self.retry.budget(self.pool.active()) else {
                self.metrics
                    .retry_budget_exhausted
                    .with_label_values(&[&self.name])
                    .inc();
                return Err(error);
            };
            _token = Some(token);
            retrying = Some(reason);
            tracing::debug!(backend = %self.name, member = %self.pool.members[member].label, attempt, reason, "retrying upstream call");
            tokio::time::sleep(self.retry.backoff(attempt)).await;
            if !tried.contains(&member) {
                tried.push(member);
            }
            last = Some(error);
            attempt += 1;
        }
    }
}
