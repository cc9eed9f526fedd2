//! Readiness: `watch_readiness` probes every backend in the background (every 10 s)
//! and keeps the verdicts; `/readyz` answers from them (the in-process engines, whose
//! check costs nothing, are asked live), combined with each HTTP backend's breaker and
//! pool state, so a readiness poll never fans out to the upstreams. The gateway is
//! ready when every model has a ready route: its deployment or one of its fallbacks.
//! A backend that no model needs, or that a fallback covers, shows in the report
//! (status `degraded`) without making the gateway unready.

use std::collections::{BTreeMap, HashSet};
use std::sync::RwLock;

use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::backend::{BreakerState, UpstreamState};
use crate::config::{BackendKind, Config};
use crate::error::BackendError;

/// Every backend's probe verdict, by name.
type Verdicts = Vec<(String, Result<(), BackendError>)>;

/// The kept probe verdicts.
#[derive(Default)]
pub struct Health {
    /// The latest probe of every backend, `None` before the first.
    probed: RwLock<Option<Verdicts>>,
    /// One probe round at a time; `/readyz` before the first round waits for it.
    round: tokio::sync::Mutex<()>,
    /// Backends asked live on every `/readyz` (in-process engines).
    live: HashSet<String>,
}

impl Health {
    pub fn new(config: &Config) -> Self {
        Health {
            live: config
                .backends
                .iter()
                .filter(|(_, b)| b.kind == BackendKind::Onnx)
                .map(|(name, _)| name.clone())
                .collect(),
            ..Health::default()
        }
    }
}

/// One backend as `/readyz` reports it.
#[derive(Debug, Clone)]
pub struct BackendHealth {
    pub ready: bool,
    /// Why not ready: the probe's error, the open breaker, the ejected pool.
    pub error: Option<String>,
    pub upstream: Option<UpstreamState>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// Every model has a ready route.
    pub ready: bool,
    /// Some backend is not ready (the gateway may still be).
    pub degraded: bool,
    pub backends: BTreeMap<String, BackendHealth>,
    pub models: BTreeMap<String, bool>,
}

impl Pipeline {
    /// Probe every backend now, concurrently; sets `sluice_backend_ready` and keeps the
    /// verdicts for [`Pipeline::readiness_report`].
    pub async fn readiness(&self) -> Verdicts {
        let _round = self.health.round.lock().await;
        self.probe_round().await
    }

    async fn probe_round(&self) -> Verdicts {
        let checks = self
            .backends
            .iter()
            .map(|(name, b)| async move { (name.clone(), b.ready().await) });
        let mut out = futures::future::join_all(checks).await;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, result) in &out {
            self.metrics
                .backend_ready
                .with_label_values(&[name])
                .set(i64::from(result.is_ok()));
        }
        *self
            .health
            .probed
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(out.clone());
        out
    }

    /// Probe every backend every `every` until `stop`, so `sluice_backend_ready` and
    /// `/readyz` are current without `/readyz` probing anything itself.
    pub async fn watch_readiness(&self, every: std::time::Duration, stop: CancellationToken) {
        loop {
            self.readiness().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    fn probed(&self) -> Option<Verdicts> {
        self.health
            .probed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The readiness report from the kept verdicts (the first call before any probe
    /// round waits for one), the breakers and pools, and live in-process engines.
    pub async fn readiness_report(&self) -> Readiness {
        let probed = match self.probed() {
            Some(p) => p,
            None => {
                let _round = self.health.round.lock().await;
                match self.probed() {
                    Some(p) => p,
                    None => self.probe_round().await,
                }
            }
        };
        let mut backends = BTreeMap::new();
        for (name, result) in probed {
            let Some(backend) = self.backends.get(&name) else {
                continue;
            };
            let result = if self.health.live.contains(&name) {
                backend.ready().await
            } else {
                result
            };
            let upstream = backend.upstream_state();
            let mut error = result.err().map(|e| e.to_string());
            if let Some(state) = &upstream {
                if state.breaker == Some(BreakerState::Open) {
                    error.get_or_insert_with(|| "circuit breaker open".to_owned());
                }
                if !state.members.is_empty() && state.members.iter().all(|m| m.ejected) {
                    error.get_or_insert_with(|| "every pool member is ejected".to_owned());
                }
            }
            backends.insert(
                name,
                BackendHealth {
                    ready: error.is_none(),
                    error,
                    upstream,
                },
            );
        }
        let is_ready = |name: &str| backends.get(name).is_some_and(|b| b.ready);
        let models: BTreeMap<String, bool> = self
            .models
            .iter()
            .map(|m| {
                let routable =
                    is_ready(&m.backend) || m.fallbacks.iter().any(|f| is_ready(&f.backend));
                (m.name.clone(), routable)
            })
            .collect();
        Readiness {
            ready: models.values().all(|r| *r),
            degraded: backends.values().any(|b| !b.ready),
            backends,
            models,
        }
    }
}
