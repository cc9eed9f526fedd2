//! Retry policy of one HTTP backend (`[backends.NAME.retry]`): which failures are
//! retried (a connect error, 502, 503, 429: the upstream did not start an answer, so
//! nothing reached the client), how long to wait (exponential backoff with jitter),
//! and whether the backend's retry budget allows another one now (Envoy's: retries in
//! flight at most `budget_ratio` of active requests, or `min_retries`, whichever is
//! more). A retry is only ever decided before a response was accepted: a 2xx response
//! is returned to the caller at once and never repeated.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::RetryConfig;
use crate::error::BackendError;

pub struct Retry {
    pub config: RetryConfig,
    in_flight: Arc<AtomicUsize>,
}

/// One retry counted against the budget until dropped.
pub struct Token(Arc<AtomicUsize>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The failure a retry is for (the `reason` label), or `None` when it is not retried.
pub fn reason(error: &BackendError) -> Option<&'static str> {
    match error {
        BackendError::Connect { .. } => Some("connect"),
        BackendError::Upstream { status: 502, .. } => Some("502"),
        BackendError::Upstream { status: 503, .. } => Some("503"),
        BackendError::Upstream { status: 429, .. } => Some("429"),
        _ => None,
    }
}

/// A gateway failure (what outlier detection and the breaker count): the upstream
/// could not be reached, did not answer in time, or its proxy said it is down.
pub fn is_gateway_failure(error: &BackendError) -> bool {
    matches!(
        error,
        BackendError::Connect { .. }
            | BackendError::Timeout { .. }
            | BackendError::Upstream {
                status: 502..=504,
                ..
            }
    )
}

impl Retry {
    pub fn new(config: RetryConfig) -> Self {
        Retry {
            config,
            in_flight: Arc::default(),
        }
    }

    /// Leave for one more retry while `active` requests run on the backend, or `None`
    /// when the budget is spent.
    pub fn budget(&self, active: usize) -> Option<Token> {
        let allowed = ((active as f64 * self.config.budget_ratio) as usize)
            .max(self.config.min_retries as usize);
        let mut now = self.in_flight.load(Ordering::Relaxed);
        loop {
            if now >= allowed {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Token(self.in_flight.clone())),
                Err(seen) => now = seen,
            }
        }
    }

    /// The wait before retry number `n` (1 for the first): `backoff · 2^(n-1)` capped at
    /// `max_backoff`, drawn at random between half and all of it.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .config
            .backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.config.max_backoff);
        let half = exp / 2;
        half + half.mul_f64(unit_random())
    }
}

/// A number in [0, 1) from the standard library's per-instance random hash keys.
fn unit_random() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> Retry {
        Retry::new(RetryConfig {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            budget_ratio: 0.5,
            min_retries: 1,
        })
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let r = retry();
        for _ in 0..50 {
            let first = r.backoff(1);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let second = r.backoff(2);
            assert!((100..=200).contains(&second.as_millis()), "{second:?}");
            let late = r.backoff(30);
            assert!((150..=300).contains(&late.as_millis()), "{late:?}");
        }
    }

    #[test]
    fn the_budget_is_a_share_of_active_requests_with_a_minimum() {
        let r = retry();
        let one = r.budget(1).expect("the minimum");
        assert!(r.budget(1).is_none());
        let two = r.budget(4).expect("half of four");
        assert!(r.budget(4).is_none());
        drop(one);
        assert!(r.budget(4).is_some());
        drop(two);
    }

    #[test]
    fn only_failures_before_an_answer_started_are_retried() {
        let up = |status| BackendError::Upstream {
            backend: "b".into(),
            status,
            message: String::new(),
        };
        assert_eq!(reason(&up(503)), Some("503"));
        assert_eq!(reason(&up(429)), Some("429"));
        assert_eq!(reason(&up(500)), None);
        assert_eq!(reason(&BackendError::Protocol("x".into())), None);
        let timeout = BackendError::Timeout {
            backend: "b".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(
            reason(&timeout),
            None,
            "a timed-out call may still be running"
        );
        assert!(is_gateway_failure(&timeout) && is_gateway_failure(&up(504)));
        assert!(!is_gateway_failure(&up(429)) && !is_gateway_failure(&up(500)));
    }
}
