//! The cache stage, after routing: an exact response cache (local moka, optionally a
//! shared second level in Redis) and single-flight merging of identical requests.
//!
//! Policy: with `cache.mode = "deterministic"` (the default) only requests that pin
//! their answer down (`temperature` 0 or a `seed`) are cached and merged; `"always"`
//! caches every answer; `"off"` nothing. A logical model can override the mode and opt
//! into a namespace shared by all tenants; otherwise the tenant is part of the key, so
//! one API key never sees another's answers. The request's `Cache-Control: no-cache`
//! skips the lookup (and the merging) but stores the fresh answer; `no-store` neither
//! reads nor writes. Only generations that finished are stored — never errors, nor
//! streams cut off or cancelled, nor agent runs that used a volatile tool (time, HTTP,
//! MCP) or hit their deadline.

mod flight;
pub mod key;
pub mod redis;
mod replay;
mod store;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use self::flight::{Flights, Joined};
use self::key::Key;
use self::redis::{RedisCache, RedisMetrics};
use self::store::{Answer, Store};
use crate::backend::Deployment;
use crate::config::{CacheMode, Config, ModelCacheConfig};
use crate::domain::{ChatRequest, Completion, EventStream};
use crate::error::BackendError;
use crate::metrics::Metrics;

/// What the client's `Cache-Control` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Directive {
    #[default]
    Default,
    /// Do not answer from the cache (the fresh answer is still stored).
    NoCache,
    /// Neither read nor write the cache.
    NoStore,
}

impl Directive {
    /// From a `Cache-Control` header value: `no-store` wins over `no-cache`.
    pub fn parse(header: &str) -> Self {
        let has = |d: &str| {
            header
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(d))
        };
        if has("no-store") {
            Directive::NoStore
        } else if has("no-cache") {
            Directive::NoCache
        } else {
            Directive::Default
        }
    }
}

/// What the cache did for a request: the `x-sluice-cache` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Bypass,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Bypass => "bypass",
        }
    }
}

/// How one request uses the cache.
pub struct Plan {
    key: Key,
    lookup: bool,
    store: bool,
}

pub struct Cache {
    mode: CacheMode,
    models: HashMap<String, ModelCacheConfig>,
    store: Arc<Store>,
    l2: Option<Arc<RedisCache>>,
    ttl: Duration,
    flights: Flights,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, BackendError> {
        let c = &config.cache;
        let l2 = match &c.redis_url {
            None => None,
            Some(url) => {
                let key = c
                    .encryption_key
                    .as_ref()
                    .map(|k| redis::parse_encryption_key(k.expose_secret()))
                    .transpose()
                    .map_err(BackendError::Protocol)?;
                let counters = RedisMetrics {
                    errors: metrics.cache_redis.with_label_values(&["error"]),
                    hits: metrics.cache_redis.with_label_values(&["hit"]),
                    misses: metrics.cache_redis.with_label_values(&["miss"]),
                };
                let l2 = RedisCache::new(
                    url,
                    key,
                    c.redis_timeout,
                    "sluice:cache:v1:".into(),
                    counters,
                )
                .map_err(BackendError::Protocol)?;
                Some(Arc::new(l2))
            }
        };
        Ok(Cache {
            mode: c.mode,
            models: config
                .models
                .iter()
                .map(|m| (m.name.clone(), m.cache.clone()))
                .collect(),
            store: Arc::new(Store::new(c.max_bytes, c.ttl, metrics.clone())),
            l2,
            ttl: c.ttl,
            flights: Flights::default(),
            metrics,
        })
    }

    /// Whether and how `request` (for logical `model`, routed to `deployment` on
    /// `backend`, with the gateway running `server_tools`) uses the cache; `None` is a
    /// bypass.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        tenant: &str,
        model: &str,
        backend: &str,
        deployment: &Deployment,
        server_tools: &[(&str, [u8; 32])],
        request: &ChatRequest,
        directive: Directive,
    ) -> Option<Plan> {
        let model_cfg = self.models.get(model);
        let mode = model_cfg.and_then(|m| m.mode).unwrap_or(self.mode);
        let s = &request.sampling;
        let cacheable = match mode {
            CacheMode::Off => false,
            CacheMode::Always => true,
            CacheMode::Deterministic => s.temperature == Some(0.0) || s.seed.is_some(),
        };
        if !cacheable || directive == Directive::NoStore {
            return None;
        }
        let namespace = if model_cfg.is_some_and(|m| m.shared) {
            "\u{0}shared"
        } else {
            tenant
        };
        Some(Plan {
            key: key::key(namespace, backend, deployment, server_tools, request),
            lookup: directive == Directive::Default,
            store: true,
        })
    }

    /// The stored answer for `plan`, from this replica's memory or the shared level.
    pub async fn lookup(&self, plan: &Plan) -> Option<EventStream> {
        if !plan.lookup {
            return None;
        }
        if let Some(answer) = self.store.get(&plan.key).await {
            return Some(replay::replay(&answer));
        }
        let bytes = self.l2.as_ref()?.get(&plan.key).await?;
        let answer: Answer = serde_json::from_slice(&bytes).ok()?;
        let answer = Arc::new(answer);
        self.store.insert(plan.key, answer.clone()).await;
        Some(replay::replay(&answer))
    }

    /// Run `start` as the generation for `plan`, or join the identical one in flight.
    /// Returns the events and whether this request joined another.
    pub fn generate<S>(&self, plan: &Plan, start: S) -> (EventStream, bool)
    where
        S: Future<Output = Result<EventStream, BackendError>> + Send + 'static,
    {
        let (store, l2, ttl, key) = (self.store.clone(), self.l2.clone(), self.ttl, plan.key);
        let keep = plan.store;
        let on_done = move |done: Completion| async move {
            // Runs that used a tool whose answers change with time, or that were cut
            // short by their deadline, are not answers to replay.
            let replayable =
                keep && done.incomplete.is_none() && !done.steps.iter().any(|s| s.volatile);
            let Some(answer) = Answer::from_completion(&done).filter(|_| replayable) else {
                return;
            };
            if let (Some(l2), Ok(bytes)) = (&l2, serde_json::to_vec(&answer)) {
                l2.set(&key, &bytes, ttl).await;
            }
            store.insert(key, Arc::new(answer)).await;
        };
        // Requests that skip the lookup want a fresh answer, so they do not merge either.
        match self.flights.join(plan.key, plan.lookup, start, on_done) {
            Joined::Led(events) => (events, false),
            Joined::Followed(events) => {
                self.metrics.cache_coalesced.inc();
                (events, true)
            }
        }
    }

    /// Count a request's outcome.
    pub fn count(&self, status: Status) {
        self.metrics
            .cache_lookups
            .with_label_values(&[status.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_directives() {
        assert_eq!(Directive::parse("no-cache"), Directive::NoCache);
        assert_eq!(Directive::parse("max-age=0, No-Store"), Directive::NoStore);
        assert_eq!(Directive::parse("no-store, no-cache"), Directive::NoStore);
        assert_eq!(Directive::parse("max-age=60"), Directive::Default);
    }
}
