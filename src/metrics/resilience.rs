//! The upstream-resilience metrics (declared here, next to `metrics.rs` which registers
//! them): retries, fallbacks, pool ejections and outstanding requests, breaker state.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct ResilienceMetrics {
    /// `sluice_upstream_retries_total{backend, reason=connect|502|503|429}`: attempts
    /// repeated before the first byte.
    pub retries: IntCounterVec,
    /// `sluice_upstream_retry_budget_exhausted_total{backend}`: retries not made because
    /// the retry budget was spent (the error went to the client or to a fallback).
    pub retry_budget_exhausted: IntCounterVec,
    /// `sluice_model_fallbacks_total{model, from, to}`: requests served by a fallback
    /// deployment (`from`, `to`: backend names) after the one before failed.
    pub fallbacks: IntCounterVec,
    /// `sluice_upstream_ejections_total{backend, member}`: pool members ejected by
    /// outlier detection (`member`: host:port).
    pub ejections: IntCounterVec,
    /// `sluice_upstream_member_ejected{backend, member}`: 1 while ejected.
    pub member_ejected: IntGaugeVec,
    /// `sluice_upstream_member_outstanding{backend, member}`: requests in flight on a
    /// pool member (what least-outstanding balancing reads).
    pub member_outstanding: IntGaugeVec,
    /// `sluice_upstream_breaker_state{backend}`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGaugeVec,
    /// `sluice_upstream_breaker_opened_total{backend}`: times the breaker opened.
    pub breaker_opened: IntCounterVec,
}

impl ResilienceMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        Ok(ResilienceMetrics {
            retries: counter(
                "sluice_upstream_retries_total",
                "Upstream attempts repeated before the first byte, by the failure retried",
                &["backend", "reason"],
            )?,
            retry_budget_exhausted: counter(
                "sluice_upstream_retry_budget_exhausted_total",
                "Retries not made because the backend's retry budget was spent",
                &["backend"],
            )?,
            fallbacks: counter(
                "sluice_model_fallbacks_total",
                "Requests served by a fallback deployment after the previous one failed",
                &["model", "from", "to"],
            )?,
            ejections: counter(
                "sluice_upstream_ejections_total",
                "Pool members ejected by outlier detection",
                &["backend", "member"],
            )?,
            member_ejected: gauge(
                "sluice_upstream_member_ejected",
                "1 while a pool member is ejected, else 0",
                &["backend", "member"],
            )?,
            member_outstanding: gauge(
                "sluice_upstream_member_outstanding",
                "Requests in flight on a pool member",
                &["backend", "member"],
            )?,
            breaker_state: gauge(
                "sluice_upstream_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open",
                &["backend"],
            )?,
            breaker_opened: counter(
                "sluice_upstream_breaker_opened_total",
                "Times the circuit breaker opened",
                &["backend"],
            )?,
        })
    }
}
