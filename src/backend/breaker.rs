//! A circuit breaker over one HTTP backend (`[backends.NAME.breaker]`). Closed, every
//! call goes through and gateway failures are counted; after `failures` in a row (or a
//! `failure_ratio` over the last `window` calls) it opens and refuses calls for
//! `cool_down`; then it half-opens and lets one probe call through while refusing the
//! rest: the probe's success closes it, its failure opens it again. Time is tokio's
//! clock, so tests can pause and advance it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::time::Instant;

use crate::config::BreakerConfig;

/// What the breaker reports (and `sluice_upstream_breaker_state` encodes as 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// `probing`: the one probe call is under way.
    HalfOpen {
        probing: bool,
    },
}

struct Inner {
    phase: Phase,
    consecutive: u32,
    /// Outcomes of the latest calls while closed, `true` = failure.
    window: VecDeque<bool>,
}

pub struct Breaker {
    backend: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    state_gauge: IntGauge,
    opened: IntCounter,
}

/// Leave to make one call; report its outcome with [`Permit::record`]. Dropped without
/// an outcome (the caller gave up), a probe lets the next call probe instead.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    pub fn new(
        backend: &str,
        config: BreakerConfig,
        state_gauge: IntGauge,
        opened: IntCounter,
    ) -> Self {
        state_gauge.set(0);
        Breaker {
            backend: backend.to_owned(),
            config,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive: 0,
                window: VecDeque::new(),
            }),
            state_gauge,
            opened,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now (an open breaker whose cool-down is over reads as half-open).
    pub fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// A call may go ahead, or the breaker refuses it: `Err` holds how long until it
    /// may let a probe through.
    pub fn admit(&self) -> Result<Permit<'_>, Duration> {
        let mut inner = self.lock();
        let probe = match inner.phase {
            Phase::Closed => false,
            Phase::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(until - now);
                }
                true
            }
            Phase::HalfOpen { probing: true } => return Err(Duration::from_secs(1)),
            Phase::HalfOpen { probing: false } => true,
        };
        if probe {
            inner.phase = Phase::HalfOpen { probing: true };
            self.state_gauge.set(BreakerState::HalfOpen.gauge());
        }
        Ok(Permit {
            breaker: self,
            probe,
            recorded: false,
        })
    }

    fn outcome(&self, probe: bool, failure: bool) {
        let mut inner = self.lock();
        match (&inner.phase, probe) {
            (Phase::HalfOpen { .. }, true) if failure => self.open(&mut inner),
            (Phase::HalfOpen { .. }, true) => {
                inner.phase = Phase::Closed;
                inner.consecutive = 0;
                inner.window.clear();
                self.state_gauge.set(BreakerState::Closed.gauge());
                tracing::info!(backend = %self.backend, "circuit breaker closed: the probe call succeeded");
            }
            (Phase::Closed, false) => {
                inner.consecutive = if failure { inner.consecutive + 1 } else { 0 };
                if self.config.failure_ratio.is_some() {
                    inner.window.push_back(failure);
                    while inner.window.len() > self.config.window as usize {
                        inner.window.pop_front();
                    }
                }
                if self.tripped(&inner) {
                    self.open(&mut inner);
                }
            }
            // Calls admitted before the breaker opened report late: ignored.
            _ => {}
        }
    }

    fn tripped(&self, inner: &Inner) -> bool {
        let by_count = self.config.failures > 0 && inner.consecutive >= self.config.failures;
        let by_ratio = self.config.failure_ratio.is_some_and(|ratio| {
            let n = inner.window.len();
            n >= self.config.window as usize && n > 0 && {
                let failed = inner.window.iter().filter(|f| **f).count();
                failed as f64 / n as f64 >= ratio
            }
        });
        by_count || by_ratio
    }

    fn open(&self, inner: &mut Inner) {
        inner.phase = Phase::Open {
            until: Instant::now() + self.config.cool_down,
        };
        inner.consecutive = 0;
        inner.window.clear();
        self.state_gauge.set(BreakerState::Open.gauge());
        self.opened.inc();
        tracing::warn!(backend = %self.backend, cool_down = ?self.config.cool_down, "circuit breaker open: calls are refused until a probe succeeds");
    }

    fn abandon_probe(&self) {
        let mut inner = self.lock();
        if let Phase::HalfOpen { probing: true } = inner.phase {
            inner.phase = Phase::HalfOpen { probing: false };
        }
    }
}

impl Permit<'_> {
    /// The call's outcome: `failure` for a gateway failure (no connection, a timeout,
    /// 502, 503, 504); any other answer shows the upstream is serving.
    pub fn record(mut self, failure: bool) {
        self.recorded = true;
        self.breaker.outcome(self.probe, failure);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.breaker.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, ratio: Option<f64>) -> Breaker {
        let config = BreakerConfig {
            failures,
            failure_ratio: ratio,
            window: 4,
            cool_down: Duration::from_secs(10),
        };
        Breaker::new(
            "b",
            config,
            IntGauge::new("g", "g").unwrap(),
            IntCounter::new("c", "c").unwrap(),
        )
    }

    fn call(b: &Breaker, failure: bool) -> bool {
        match b.admit() {
            Ok(p) => {
                p.record(failure);
                true
            }
            Err(_) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_half_opens_one_probe() {
        let b = breaker(3, None);
        assert!(call(&b, true) && call(&b, true) && call(&b, false));
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a success resets the count"
        );
        for _ in 0..3 {
            assert!(call(&b, true));
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.state_gauge.get(), 1);
        let wait = b.admit().err().expect("open refuses");
        assert_eq!(wait, Duration::from_secs(10));

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.admit().expect("one probe goes through");
        assert_eq!(b.state_gauge.get(), 2);
        assert!(b.admit().is_err(), "only one probe at a time");
        probe.record(true);
        assert_eq!(b.state(), BreakerState::Open, "a failed probe opens again");

        tokio::time::advance(Duration::from_secs(10)).await;
        drop(b.admit().expect("probe"));
        let probe = b
            .admit()
            .expect("an abandoned probe lets the next call probe");
        probe.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.state_gauge.get(), 0);
        assert_eq!(b.opened.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_a_failure_ratio_over_a_full_window() {
        let b = breaker(0, Some(0.5));
        assert!(call(&b, true) && call(&b, false) && call(&b, true));
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "the window is not full yet"
        );
        assert!(call(&b, false));
        assert_eq!(b.state(), BreakerState::Open, "2 of 4 failed");
    }
}
