//! The members of one HTTP backend (`urls = [...]`, or `url` as a pool of one): each
//! call goes to the member with the fewest requests outstanding (ties rotate), skipping
//! members the outlier detector ejected and, while others pass, members whose last
//! readiness probe failed. Outlier detection (Envoy's, on gateway failures): after
//! `consecutive_failures` in a row a member is ejected for `base_ejection` times the
//! number of its ejections so far (up to `max_ejection`), never more than
//! `max_ejection_percent` of the pool at once, and never the lone member of a pool of
//! one (the breaker covers that case).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntGauge};
use tokio::time::Instant;

use crate::config::OutlierConfig;
use crate::metrics::ResilienceMetrics;

/// One upstream of the pool.
pub struct Member {
    /// The base URL, without a trailing slash.
    pub base: String,
    /// `host:port`, for metric labels and `/readyz` (never userinfo or path).
    pub label: String,
    outstanding: AtomicUsize,
    /// The last readiness probe passed (true until a probe says otherwise).
    probe_ok: AtomicBool,
    outstanding_gauge: IntGauge,
    ejected_gauge: IntGauge,
    ejections_total: IntCounter,
}

#[derive(Default, Clone, Copy)]
struct Health {
    consecutive: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

/// What `/readyz` shows of a member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberState {
    pub label: String,
    pub probe_ok: bool,
    pub ejected: bool,
    pub outstanding: usize,
}

pub struct Pool {
    backend: String,
    pub members: Vec<Member>,
    health: Mutex<Vec<Health>>,
    outlier: OutlierConfig,
    /// Where the scan for the least-loaded member starts (rotates, to spread ties).
    next: AtomicUsize,
}

/// One request counted on a member until dropped.
pub struct Outstanding {
    pool: Arc<Pool>,
    member: usize,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let m = &self.pool.members[self.member];
        m.outstanding.fetch_sub(1, Ordering::Relaxed);
        m.outstanding_gauge.dec();
    }
}

impl Pool {
    pub fn new(
        backend: &str,
        bases: &[String],
        outlier: OutlierConfig,
        metrics: &ResilienceMetrics,
    ) -> Self {
        let members = bases
            .iter()
            .map(|base| {
                let base = base.trim_end_matches('/').to_owned();
                let label = reqwest::Url::parse(&base)
                    .ok()
                    .and_then(|u| {
                        let host = u.host_str()?.to_owned();
                        Some(match u.port_or_known_default() {
                            Some(port) => format!("{host}:{port}"),
                            None => host,
                        })
                    })
                    .unwrap_or_else(|| "invalid".to_owned());
                let labels = [backend, label.as_str()];
                let ejected_gauge = metrics.member_ejected.with_label_values(&labels);
                ejected_gauge.set(0);
                Member {
                    outstanding: AtomicUsize::new(0),
                    probe_ok: AtomicBool::new(true),
                    outstanding_gauge: metrics.member_outstanding.with_label_values(&labels),
                    ejected_gauge,
                    ejections_total: metrics.ejections.with_label_values(&labels),
                    base,
                    label,
                }
            })
            .collect::<Vec<_>>();
        Pool {
            backend: backend.to_owned(),
            health: Mutex::new(vec![Health::default(); members.len()]),
            members,
            outlier,
            next: AtomicUsize::new(0),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Vec<Health>> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The member for the next call: not ejected, preferably not failing its probe
    /// and not in `avoid` (members a retry already tried), fewest outstanding. `None`
    /// when every member is ejected.
    pub fn pick(&self, avoid: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let mut health = self.health();
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(u8, usize, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if let Some(until) = health[i].ejected_until {
                if now < until {
                    continue;
                }
                health[i].ejected_until = None;
                self.members[i].ejected_gauge.set(0);
                tracing::info!(backend = %self.backend, member = %self.members[i].label, "pool member back from ejection");
            }
            let m = &self.members[i];
            // Lower is better: fresh and probed-ok, then the rest.
            let rank =
                u8::from(avoid.contains(&i)) * 2 + u8::from(!m.probe_ok.load(Ordering::Relaxed));
            let load = m.outstanding.load(Ordering::Relaxed);
            if best.is_none_or(|(r, l, _)| (rank, load) < (r, l)) {
                best = Some((rank, load, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// Count a call on `member` until the returned guard drops.
    pub fn enter(self: &Arc<Self>, member: usize) -> Outstanding {
        let m = &self.members[member];
        m.outstanding.fetch_add(1, Ordering::Relaxed);
        m.outstanding_gauge.inc();
        Outstanding {
            pool: self.clone(),
            member,
        }
    }

    /// Requests in flight on the whole pool.
    pub fn active(&self) -> usize {
        self.members
            .iter()
            .map(|m| m.outstanding.load(Ordering::Relaxed))
            .sum()
    }

    /// A call's outcome on `member`: `failure` for a gateway failure.
    pub fn record(&self, member: usize, failure: bool) {
        let mut health = self.health();
        if !failure {
            health[member].consecutive = 0;
            return;
        }
        health[member].consecutive += 1;
        let threshold = self.outlier.consecutive_failures;
        if threshold == 0 || health[member].consecutive < threshold {
            return;
        }
        let now = Instant::now();
        let ejected = health
            .iter()
            .filter(|h| h.ejected_until.is_some_and(|u| now < u))
            .count();
        if ejected >= self.max_ejected() || health[member].ejected_until.is_some_and(|u| now < u) {
            return;
        }
        let h = &mut health[member];
        h.consecutive = 0;
        h.ejections += 1;
        let time = self
            .outlier
            .base_ejection
            .saturating_mul(h.ejections)
            .min(self.outlier.max_ejection);
        h.ejected_until = Some(now + time);
        let m = &self.members[member];
        m.ejected_gauge.set(1);
        m.ejections_total.inc();
        tracing::warn!(backend = %self.backend, member = %m.label, ejection = ?time, "pool member ejected after consecutive gateway failures");
    }

    /// Members that may be ejected at once.
    fn max_ejected(&self) -> usize {
        let n = self.members.len();
        let pct = self.outlier.max_ejection_percent as usize;
        if n < 2 || pct == 0 {
            0
        } else {
            (n * pct / 100).max(1)
        }
    }

    /// The readiness probe's verdict on `member`.
    pub fn set_probe(&self, member: usize, ok: bool) {
        self.members[member].probe_ok.store(ok, Ordering::Relaxed);
    }

    /// Every member as `/readyz` shows it.
    pub fn state(&self) -> Vec<MemberState> {
        let now = Instant::now();
        let health = self.health();
        self.members
            .iter()
            .zip(health.iter())
            .map(|(m, h)| MemberState {
                label: m.label.clone(),
                probe_ok: m.probe_ok.load(Ordering::Relaxed),
                ejected: h.ejected_until.is_some_and(|u| now < u),
                outstanding: m.outstanding.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// How long until the first ejected member returns (for `retry-after`).
    pub fn next_return(&self) -> std::time::Duration {
        let now = Instant::now();
        self.health()
            .iter()
            .filter_map(|h| h.ejected_until)
            .filter(|u| now < *u)
            .min()
            .map(|u| u - now)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pool(n: usize, pct: u32) -> Arc<Pool> {
        let registry = prometheus::Registry::new();
        let metrics = ResilienceMetrics::register(&registry).unwrap();
        let bases: Vec<String> = (0..n).map(|i| format!("http://h{i}:80/v1/")).collect();
        let outlier = OutlierConfig {
            consecutive_failures: 2,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejection_percent: pct,
        };
        Arc::new(Pool::new("b", &bases, outlier, &metrics))
    }

    #[test]
    fn least_outstanding_wins_and_tries_avoid_the_members_already_tried() {
        let p = pool(3, 50);
        assert_eq!(p.members[0].base, "http://h0:80/v1");
        assert_eq!(p.members[0].label, "h0:80");
        let _a = p.enter(0);
        let _b = p.enter(0);
        let _c = p.enter(1);
        assert_eq!(p.pick(&[]), Some(2));
        assert_eq!(p.pick(&[2]), Some(1));
        p.set_probe(1, false);
        assert_eq!(
            p.pick(&[2]),
            Some(0),
            "a member failing its probe comes last"
        );
        assert_eq!(p.active(), 3);
        drop((_a, _b, _c));
        assert_eq!(p.active(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_grows_with_repeats_and_is_capped_by_percent() {
        let p = pool(2, 50);
        p.record(0, true);
        assert!(!p.state()[0].ejected);
        p.record(0, true);
        assert!(p.state()[0].ejected);
        assert_eq!(p.pick(&[]), Some(1));
        p.record(1, true);
        p.record(1, true);
        assert!(!p.state()[1].ejected, "at most 50% of the pool is ejected");
        assert_eq!(p.next_return(), Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(p.pick(&[1]), Some(0), "back after the base ejection time");
        p.record(0, true);
        p.record(0, true);
        assert_eq!(
            p.next_return(),
            Duration::from_secs(20),
            "second ejection lasts twice as long"
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        p.record(0, true);
        p.record(0, true);
        assert_eq!(
            p.next_return(),
            Duration::from_secs(25),
            "up to max_ejection"
        );
    }

    #[test]
    fn a_lone_member_is_never_ejected() {
        let p = pool(1, 100);
        for _ in 0..10 {
            p.record(0, true);
        }
        assert_eq!(p.pick(&[]), Some(0));
    }
}
