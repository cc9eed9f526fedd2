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
use std::sync::atomic::{AtomicBool, Ordering};
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
                    url.expose_secret(),
                    key,
                    c.redis_timeout,
                    "sluice:cache:v1:".into(),
                    counters,
                    c.redis_ca.as_deref(),
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
        // A request whose lookup missed just before an identical flight stored its answer
        // and ended gets here after that flight is gone: its own flight (registered by
        // now, so later requests join it) looks in the store again before generating.
        // Requests that skip the lookup want a fresh answer, so they do not merge either.
        let recheck = plan.lookup.then(|| store.clone());
        let replayed = Arc::new(AtomicBool::new(false));
        let start = {
            let replayed = replayed.clone();
            async move {
                if let Some(answer) = match recheck {
                    Some(store) => store.get(&key).await,
                    None => None,
                } {
                    replayed.store(true, Ordering::Relaxed);
                    return Ok(replay::replay(&answer));
                }
                start.await
            }
        };
        let keep = plan.store;
        // Runs before the flight is released: the local store first, so an identical
        // request either joins the flight or finds the answer; Redis after the release.
        let on_done = move |done: Completion| async move {
            // Runs that used a tool whose answers change with time, or that were cut
            // short by their deadline, are not answers to replay; nor is one that was
            // itself a replay of the store.
            let replayable = keep
                && !replayed.load(Ordering::Relaxed)
                && done.incomplete.is_none()
                && !done.steps.iter().any(|s| s.volatile);
            let answer = Arc::new(Answer::from_completion(&done).filter(|_| replayable)?);
            store.insert(key, answer.clone()).await;
            Some(async move {
                if let (Some(l2), Ok(bytes)) = (&l2, serde_json::to_vec(&*answer)) {
                    l2.set(&key, &bytes, ttl).await;
                }
            })
        };
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
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;
    use tokio::time::timeout;

    use super::flight::Pause;
    use super::*;
    use crate::domain::{collect, Event, FinishReason, Usage};

    /// Long enough for anything that ends at all; the tests assert an end, not a speed.
    const BOUND: Duration = Duration::from_secs(10);

    fn cache(flights: Flights) -> Cache {
        let metrics = Arc::new(Metrics::new().unwrap());
        let ttl = Duration::from_secs(60);
        Cache {
            mode: CacheMode::Deterministic,
            models: HashMap::new(),
            store: Arc::new(Store::new(1 << 20, ttl, metrics.clone())),
            l2: None,
            ttl,
            flights,
            metrics,
        }
    }

    fn plan() -> Plan {
        Plan {
            key: [7; 32],
            lookup: true,
            store: true,
        }
    }

    fn finish() -> Result<Event, BackendError> {
        Ok(Event::Finish {
            reason: FinishReason::Stop,
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
            }),
        })
    }

    /// A backend that counts its generations and answers "hello", after `gate` (when
    /// given) lets it finish.
    fn backend(
        generations: &Arc<AtomicUsize>,
        gate: Option<Arc<Notify>>,
    ) -> impl Future<Output = Result<EventStream, BackendError>> + Send + 'static {
        let generations = generations.clone();
        async move {
            generations.fetch_add(1, Ordering::SeqCst);
            let events: EventStream = Box::pin(async_stream::stream! {
                yield Ok(Event::Delta("hello".into()));
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                yield finish();
            });
            Ok(events)
        }
    }

    /// What the pipeline does with a cacheable request: the stored answer, or the
    /// generation (its own or the identical one in flight), collected.
    async fn ask<S>(cache: &Cache, start: S) -> Result<Completion, BackendError>
    where
        S: Future<Output = Result<EventStream, BackendError>> + Send + 'static,
    {
        if let Some(events) = cache.lookup(&plan()).await {
            return collect(events).await;
        }
        collect(cache.generate(&plan(), start).0).await
    }

    #[tokio::test]
    async fn a_request_arriving_as_the_generation_completes_does_not_generate_again() {
        let pause = Arc::new(Pause::new());
        let cache = Arc::new(cache(Flights::paused(pause.clone())));
        let generations = Arc::new(AtomicUsize::new(0));
        let first = tokio::spawn({
            let (cache, generations) = (cache.clone(), generations.clone());
            async move { ask(&cache, backend(&generations, None)).await }
        });
        // The generation has finished and the flight is between its completion steps.
        pause.reached.notified().await;
        let second = timeout(BOUND, ask(&cache, backend(&generations, None)))
            .await
            .expect("the second request is answered while the first flight completes")
            .unwrap();
        assert_eq!(second.content, "hello");
        assert_eq!(
            generations.load(Ordering::SeqCst),
            1,
            "an identical request arriving then either joins the flight or hits the store"
        );
        pause.resume.notify_one();
        let first = timeout(BOUND, first).await.unwrap().unwrap().unwrap();
        assert_eq!(first, second);
        assert_eq!(generations.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_that_missed_before_the_answer_was_stored_does_not_generate_again() {
        let cache = cache(Flights::default());
        let generations = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let (first, joined) = cache.generate(&plan(), backend(&generations, Some(gate.clone())));
        assert!(!joined);
        // A second request looks the answer up while the first is still generating...
        assert!(cache.lookup(&plan()).await.is_none());
        // ...the first finishes (its stream ends when the flight is over)...
        gate.notify_one();
        let first = timeout(BOUND, collect(first)).await.unwrap().unwrap();
        // ...and only then does the second reach the single-flight stage.
        let (second, _) = cache.generate(&plan(), backend(&generations, None));
        let second = timeout(BOUND, collect(second)).await.unwrap().unwrap();
        assert_eq!(first, second);
        assert_eq!(generations.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_generation_ends_every_subscriber_with_an_error() {
        let cache = cache(Flights::default());
        let generations = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let panicking = {
            let (generations, gate) = (generations.clone(), gate.clone());
            async move {
                generations.fetch_add(1, Ordering::SeqCst);
                let events: EventStream = Box::pin(async_stream::stream! {
                    yield Ok(Event::Delta("half an ans".into()));
                    gate.notified().await;
                    panic!("a bug in the generation");
                });
                Ok(events)
            }
        };
        let (leader, joined) = cache.generate(&plan(), panicking);
        assert!(!joined);
        let (follower, joined) = cache.generate(&plan(), backend(&generations, None));
        assert!(joined, "the second request joins the first's flight");
        gate.notify_one();
        for events in [follower, leader] {
            let ended = timeout(BOUND, collect(events))
                .await
                .expect("a subscriber of a flight whose task panicked is not left waiting");
            assert!(
                matches!(ended, Err(BackendError::Protocol(ref m)) if m.contains("internal")),
                "{ended:?}"
            );
        }
        // Nothing was stored and the dead flight is gone: the next identical request
        // generates afresh.
        let third = timeout(BOUND, ask(&cache, backend(&generations, None)))
            .await
            .expect("the next identical request does not join the dead flight")
            .unwrap();
        assert_eq!(third.content, "hello");
        assert_eq!(generations.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cache_control_directives() {
        assert_eq!(Directive::parse("no-cache"), Directive::NoCache);
        assert_eq!(Directive::parse("max-age=0, No-Store"), Directive::NoStore);
        assert_eq!(Directive::parse("no-store, no-cache"), Directive::NoStore);
        assert_eq!(Directive::parse("max-age=60"), Directive::Default);
    }
}
