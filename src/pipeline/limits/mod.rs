//! Stage 2, limits: who may start a request now.
//!
//! - the global in-flight cap (`limits.max_in_flight`): over it, 503 + `retry-after` at
//!   once, before anything else is done (load shedding);
//! - per tenant, requests per second / minute (`governor`'s GCRA), checked before the
//!   body is read, and tokens per minute (`gcra.rs`): the prompt's estimate at admission,
//!   completion tokens as they stream, corrected by the reported usage (`charge.rs`);
//! - per logical model, generations at once (`[[models]] max_concurrency`);
//! - with `limits.shared`, the tenant budgets live in Redis (`shared.rs`) and every
//!   replica draws on them; when Redis does not answer, the local budgets decide.
//!
//! Refusals are 429 in OpenAI's shape with `retry-after`; every `/v1` response carries
//! `x-ratelimit-*` headers for the tenant's limits (`headers.rs`).

mod charge;
pub mod gcra;
pub mod headers;
mod shared;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{clock::Clock, clock::DefaultClock, Quota, RateLimiter};
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use charge::Charge;
use gcra::{Denied, Gcra, Window};
pub use headers::RateHeaders;

use crate::config::{Config, Rates};
use crate::domain::ChatRequest;
use crate::error::ApiError;
use crate::metrics::Metrics;

use super::Tenant;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One request rate of a tenant (per second or per minute).
struct RequestRate {
    limiter: Limiter,
    limit: u32,
    per: &'static str,
    shared: shared::Budget,
}

/// A tenant's budgets.
struct TenantLimits {
    requests: Vec<RequestRate>,
    tokens: Option<(Gcra, shared::Budget)>,
    /// Shared mode: when the Redis token budget was last seen to be whole again.
    shared_tokens_full_at: Mutex<Option<Instant>>,
}

/// Every limit, built once at start-up.
pub struct Limits {
    /// Every configured tenant (None: no limits at all, overrides included).
    tenants: HashMap<Arc<str>, Option<Arc<TenantLimits>>>,
    /// For tenants not in the config (internal callers): the `[limits]` defaults.
    default: Option<Arc<TenantLimits>>,
    max_in_flight: Option<usize>,
    in_flight: Arc<AtomicUsize>,
    shed_retry_after: Duration,
    models: HashMap<String, Arc<Semaphore>>,
    shared: Option<Arc<shared::Shared>>,
    metrics: Arc<Metrics>,
}

/// A request counted against `limits.max_in_flight` until dropped.
pub struct Occupancy(Arc<AtomicUsize>);

impl Drop for Occupancy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, String> {
        let limits = &config.limits;
        let mut names: Vec<&str> = config.auth.keys.iter().map(|k| k.tenant.as_str()).collect();
        names.push("anonymous");
        let tenants = names
            .into_iter()
            .map(|name| {
                let rates = limits.rates_for(name);
                (
                    Arc::from(name),
                    TenantLimits::new(name, rates).map(Arc::new),
                )
            })
            .collect();
        let shared = match (&config.cache.redis_url, limits.shared) {
            (Some(url), true) => Some(Arc::new(shared::Shared::new(
                url.expose_secret(),
                config.cache.redis_ca.as_deref(),
                limits.redis_timeout,
            )?)),
            _ => None,
        };
        Ok(Limits {
            tenants,
            default: TenantLimits::new("*", limits.defaults()).map(Arc::new),
            max_in_flight: limits.max_in_flight,
            in_flight: Arc::new(AtomicUsize::new(0)),
            shed_retry_after: limits.shed_retry_after,
            models: config
                .models
                .iter()
                .filter_map(|m| {
                    let cap = m.max_concurrency?;
                    Some((m.name.clone(), Arc::new(Semaphore::new(cap))))
                })
                .collect(),
            shared,
            metrics,
        })
    }

    fn tenant(&self, tenant: &Tenant) -> Option<&Arc<TenantLimits>> {
        match self.tenants.get(tenant.as_str()) {
            Some(known) => known.as_ref(),
            None => self.default.as_ref(),
        }
    }

    fn rejected(&self, tenant: &Tenant, limit: &str) {
        self.metrics
            .ratelimit_rejections
            .with_label_values(&[tenant.as_str(), limit])
            .inc();
    }

    /// Count one more request in flight, or refuse it (503) at the cap.
    pub fn enter(&self) -> Result<Option<Occupancy>, ApiError> {
        let Some(max) = self.max_in_flight else {
            return Ok(None);
        };
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match admitted {
            Ok(_) => Ok(Some(Occupancy(self.in_flight.clone()))),
            Err(_) => {
                self.metrics
                    .ratelimit_rejections
                    .with_label_values(&["", "in_flight"])
                    .inc();
                Err(ApiError::new(
                    503,
                    "server_error",
                    "the gateway is at its limit of requests in flight; retry shortly",
                )
                .with_code("overloaded")
                .with_retry_after(self.shed_retry_after))
            }
        }
    }

    /// Take one request from the tenant's request rates. The headers report the
    /// tightest rate and the token budget, whether admitted or not.
    pub async fn admit_request(&self, tenant: &Tenant) -> (Result<(), ApiError>, RateHeaders) {
        let Some(t) = self.tenant(tenant) else {
            return (Ok(()), RateHeaders::default());
        };
        let tokens = self.tokens_window(t);
        if t.requests.is_empty() {
            return (Ok(()), RateHeaders::new(None, tokens));
        }
        if let Some(shared) = &self.shared {
            let budgets: Vec<_> = t.requests.iter().map(|r| (&r.shared, 1)).collect();
            match shared.decide(&budgets, false).await {
                Some(decision) => {
                    let window = tightest(decision.windows.iter().copied());
                    let headers = RateHeaders::new(window, tokens);
                    if decision.admitted {
                        return (Ok(()), headers);
                    }
                    self.rejected(tenant, "requests");
                    let per = refused_per(t, &decision.windows);
                    let error = requests_error(tenant, per, window, decision.retry_after);
                    return (Err(error), headers);
                }
                None => self.metrics.ratelimit_fallbacks.inc(),
            }
        }
        let mut windows = Vec::with_capacity(t.requests.len());
        for rate in &t.requests {
            match rate.limiter.check() {
                Ok(snapshot) => windows.push(Window::at(
                    rate.limit,
                    rate.limiter_interval(),
                    rate.limiter_interval()
                        * (rate.limit - snapshot.remaining_burst_capacity().min(rate.limit)),
                )),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    let window = Window {
                        limit: rate.limit,
                        remaining: 0,
                        reset: rate.limiter_interval() * rate.limit,
                    };
                    self.rejected(tenant, "requests");
                    let error = requests_error(tenant, rate.per, Some(window), wait);
                    return (Err(error), RateHeaders::new(Some(window), tokens));
                }
            }
        }
        (
            Ok(()),
            RateHeaders::new(tightest(windows.into_iter()), tokens),
        )
    }

    /// The tenant's token budget as the headers report it.
    fn tokens_window(&self, t: &TenantLimits) -> Option<Window> {
        let (gcra, _) = t.tokens.as_ref()?;
        if self.shared.is_some() {
            if let Ok(Some(full_at)) = t.shared_tokens_full_at.lock().map(|g| *g) {
                let ahead = full_at.saturating_duration_since(Instant::now());
                return Some(Window::at(gcra.limit(), gcra.interval(), ahead));
            }
        }
        Some(gcra.state())
    }

    /// The token budget now (for the headers of a response already admitted).
    pub fn tokens_now(&self, tenant: &Tenant) -> Option<Window> {
        self.tokens_window(self.tenant(tenant)?)
    }

    /// Admit a chat request's prompt against the tenant's tokens per minute, and take a
    /// slot of its model's concurrency cap. The returned charge bills the completion as
    /// it streams (wrap the events with it).
    pub async fn admit_chat(
        &self,
        tenant: &Tenant,
        model: &str,
        request: &ChatRequest,
    ) -> Result<Charge, ApiError> {
        let permit = self.model_permit(tenant, model)?;
        let estimate = estimate_prompt_tokens(request);
        let tokens = self.admit_tokens(tenant, estimate).await?;
        Ok(Charge::new(tokens, estimate, permit))
    }

    /// Charge `estimate` prompt tokens if the tenant's budget holds them.
    pub async fn admit_tokens(
        &self,
        tenant: &Tenant,
        estimate: u32,
    ) -> Result<Option<charge::Bill>, ApiError> {
        let Some(t) = self.tenant(tenant) else {
            return Ok(None);
        };
        let Some((gcra, budget)) = &t.tokens else {
            return Ok(None);
        };
        let bill = charge::Bill::new(t.clone(), self.shared.clone(), self.metrics.clone());
        if let Some(shared) = &self.shared {
            if estimate > gcra.limit() {
                self.rejected(tenant, "tokens");
                return Err(too_large(tenant, estimate, gcra.limit()));
            }
            match shared.decide(&[(budget, i64::from(estimate))], false).await {
                Some(decision) => {
                    bill.note_shared(&decision);
                    if decision.admitted {
                        return Ok(Some(bill));
                    }
                    self.rejected(tenant, "tokens");
                    return Err(tokens_error(tenant, gcra.limit(), decision.retry_after));
                }
                None => self.metrics.ratelimit_fallbacks.inc(),
            }
        }
        match gcra.take(estimate) {
            Ok(_) => Ok(Some(bill)),
            Err(Denied::TooLarge) => {
                self.rejected(tenant, "tokens");
                Err(too_large(tenant, estimate, gcra.limit()))
            }
            Err(Denied::RetryAfter(wait)) => {
                self.rejected(tenant, "tokens");
                Err(tokens_error(tenant, gcra.limit(), wait))
            }
        }
    }

    fn model_permit(
        &self,
        tenant: &Tenant,
        model: &str,
    ) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let Some(semaphore) = self.models.get(model) else {
            return Ok(None);
        };
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                self.rejected(tenant, "concurrency");
                Err(ApiError::new(
                    429,
                    "requests",
                    format!(
                        "model `{model}` is serving as many requests at once as it is allowed to; retry shortly"
                    ),
                )
                .with_code("concurrency_limit_exceeded")
                .with_retry_after(Duration::from_secs(1)))
            }
        }
    }
}

impl RequestRate {
    fn limiter_interval(&self) -> Duration {
        self.shared.interval
    }
}

impl TenantLimits {
    fn new(name: &str, rates: Rates) -> Option<Self> {
        if rates.is_empty() {
            return None;
        }
        let requests = [
            (rates.requests_per_second, Duration::from_secs(1), "second"),
            (rates.requests_per_minute, Duration::from_secs(60), "minute"),
        ]
        .into_iter()
        .filter_map(|(limit, period, per)| {
            let burst = NonZeroU32::new(limit?)?;
            let interval = period / burst.get();
            let quota = Quota::with_period(interval)?.allow_burst(burst);
            Some(RequestRate {
                limiter: RateLimiter::direct(quota).with_middleware(),
                limit: burst.get(),
                per,
                shared: shared::Budget {
                    key: format!("sluice:limits:v1:{name}:requests:{per}"),
                    limit: burst.get(),
                    interval,
                    tolerance: period,
                },
            })
        })
        .collect();
        let tokens = rates.tokens_per_minute.map(|limit| {
            let gcra = Gcra::new(limit, Duration::from_secs(60));
            let budget = shared::Budget {
                key: format!("sluice:limits:v1:{name}:tokens:minute"),
                limit,
                interval: gcra.interval(),
                tolerance: gcra.tolerance(),
            };
            (gcra, budget)
        });
        Some(TenantLimits {
            requests,
            tokens,
            shared_tokens_full_at: Mutex::new(None),
        })
    }
}

/// The window with the fewest requests left.
fn tightest(windows: impl Iterator<Item = Window>) -> Option<Window> {
    windows.min_by_key(|w| (w.remaining, std::cmp::Reverse(w.reset)))
}

fn refused_per(t: &TenantLimits, windows: &[Window]) -> &'static str {
    t.requests
        .iter()
        .zip(windows)
        .find(|(_, w)| w.remaining == 0)
        .map_or("minute", |(r, _)| r.per)
}

/// A rough token count of an embedding request: four bytes per token of text, one per
/// token id given.
pub fn estimate_embed_tokens(request: &crate::domain::EmbedRequest) -> u32 {
    let tokens: usize = request
        .input
        .iter()
        .map(|input| match input {
            crate::domain::EmbedInput::Text(text) => text.len().div_ceil(4),
            crate::domain::EmbedInput::Tokens(ids) => ids.len(),
        })
        .sum();
    u32::try_from(tokens).unwrap_or(u32::MAX).max(1)
}

/// A rough token count of a chat request's prompt: about four bytes per token plus the
/// chat template's few tokens per message. Usage reported afterwards corrects it.
pub fn estimate_prompt_tokens(request: &ChatRequest) -> u32 {
    let bytes: usize = request
        .messages
        .iter()
        .map(|m| {
            m.content
                .iter()
                .map(|p| match p {
                    crate::domain::ContentPart::Text { text } => text.len(),
                    crate::domain::ContentPart::Image { .. } => 256 * 4,
                })
                .sum::<usize>()
                + m.tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.len())
                    .sum::<usize>()
                + 16
        })
        .sum();
    u32::try_from(bytes.div_ceil(4)).unwrap_or(u32::MAX).max(1)
}

fn requests_error(tenant: &Tenant, per: &str, window: Option<Window>, wait: Duration) -> ApiError {
    let limit = window.map_or(0, |w| w.limit);
    ApiError::new(
        429,
        "requests",
        format!(
            "Rate limit reached for requests per {per} for tenant `{}`: limit {limit}. Please try again in {}.",
            tenant.as_str(),
            headers::duration(wait)
        ),
    )
    .with_code("rate_limit_exceeded")
    .with_retry_after(wait)
}

fn tokens_error(tenant: &Tenant, limit: u32, wait: Duration) -> ApiError {
    ApiError::new(
        429,
        "tokens",
        format!(
            "Rate limit reached for tokens per minute for tenant `{}`: limit {limit}. Please try again in {}.",
            tenant.as_str(),
            headers::duration(wait)
        ),
    )
    .with_code("rate_limit_exceeded")
    .with_retry_after(wait)
}

fn too_large(tenant: &Tenant, estimate: u32, limit: u32) -> ApiError {
    ApiError::new(
        429,
        "tokens",
        format!(
            "Request too large for tenant `{}`: about {estimate} prompt tokens, over its limit of {limit} tokens per minute. Send a shorter prompt.",
            tenant.as_str()
        ),
    )
    .with_code("rate_limit_exceeded")
}
