//! `[limits]`: per-tenant request and token rates, the global in-flight cap (load
//! shedding), and whether replicas share their counts through Redis. Plain data;
//! `pipeline::limits` enforces it. Per-model concurrency caps sit on `[[models]]`
//! (`max_concurrency`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigIssue;

/// One tenant's rates. Unset means no limit of that kind; in `[limits.tenants.NAME]`,
/// unset inherits the `[limits]` default and `0` lifts it for that tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    /// Requests per second (GCRA: a burst of this many, then one every 1/N s).
    #[serde(default)]
    pub requests_per_second: Option<u32>,
    /// Requests per minute (a burst of this many, then one every 60/N s).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Prompt plus completion tokens per minute: the prompt is charged when the request is
    /// admitted (an estimate from its text), completion tokens as they stream, and the
    /// estimate is corrected by the usage the engine reports.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
}

impl Rates {
    /// `self` with the unset fields taken from `defaults`; a `0` means none.
    pub fn over(self, defaults: Rates) -> Rates {
        let pick = |own: Option<u32>, default: Option<u32>| match own.or(default) {
            Some(0) | None => None,
            some => some,
        };
        Rates {
            requests_per_second: pick(self.requests_per_second, defaults.requests_per_second),
            requests_per_minute: pick(self.requests_per_minute, defaults.requests_per_minute),
            tokens_per_minute: pick(self.tokens_per_minute, defaults.tokens_per_minute),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests_per_second.is_none()
            && self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests the gateway serves at once, over every tenant and route; more get 503
    /// with `retry-after` at once (load shedding). Unset: no cap.
    pub max_in_flight: Option<usize>,
    /// `retry-after` of a 503 from `max_in_flight`.
    #[serde(with = "humantime_serde")]
    pub shed_retry_after: Duration,
    /// Every tenant's rates (`anonymous` too, when no keys are configured).
    pub requests_per_second: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    /// Per-tenant overrides, by the tenant name of `[[auth.keys]]`.
    pub tenants: BTreeMap<String, Rates>,
    /// Count in the Redis of `cache.redis_url`, so every replica behind it enforces one
    /// limit (an atomic GCRA script). When Redis cannot answer within `redis_timeout`,
    /// each replica falls back to its own local counts (`sluice_ratelimit_fallbacks_total`).
    pub shared: bool,
    /// Longest wait for the shared counts before deciding locally.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_in_flight: None,
            shed_retry_after: Duration::from_secs(1),
            requests_per_second: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            tenants: BTreeMap::new(),
            shared: false,
            redis_timeout: Duration::from_millis(50),
        }
    }
}

impl LimitsConfig {
    /// The `[limits]` defaults as rates.
    pub fn defaults(&self) -> Rates {
        Rates {
            requests_per_second: self.requests_per_second,
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
        }
    }

    /// The rates `tenant` gets.
    pub fn rates_for(&self, tenant: &str) -> Rates {
        self.tenants
            .get(tenant)
            .copied()
            .unwrap_or_default()
            .over(self.defaults())
    }

    pub(super) fn validate(
        &self,
        tenants: &[&str],
        has_redis: bool,
        issue: &mut impl FnMut(String, String),
    ) {
        if self.max_in_flight == Some(0) {
            issue(
                "limits.max_in_flight".into(),
                "must be at least 1 (or unset for no cap)".into(),
            );
        }
        for (field, value) in [
            ("requests_per_second", self.requests_per_second),
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
        ] {
            if value == Some(0) {
                issue(
                    format!("limits.{field}"),
                    "must be at least 1 (or unset for no limit)".into(),
                );
            }
        }
        for name in self.tenants.keys() {
            if !tenants.is_empty() && !tenants.contains(&name.as_str()) {
                issue(
                    format!("limits.tenants.{name}"),
                    format!("no [[auth.keys]] entry has tenant = \"{name}\""),
                );
            }
        }
        if self.shared && !has_redis {
            issue(
                "limits.shared".into(),
                "needs cache.redis_url: the shared counts live in that Redis".into(),
            );
        }
        if self.redis_timeout.is_zero() {
            issue(
                "limits.redis_timeout".into(),
                "must be greater than 0".into(),
            );
        }
    }
}

/// The issues of `[limits]` and of every `[[models]] max_concurrency`.
pub(super) fn validate(config: &super::Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });
    let mut tenants: Vec<&str> = config.auth.keys.iter().map(|k| k.tenant.as_str()).collect();
    if tenants.is_empty() {
        tenants.push("anonymous");
    }
    config
        .limits
        .validate(&tenants, config.cache.redis_url.is_some(), &mut issue);
    for (i, model) in config.models.iter().enumerate() {
        if model.max_concurrency == Some(0) {
            issue(
                format!("models[{i}].max_concurrency"),
                "must be at least 1 (or unset for no cap)".into(),
            );
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_rates_inherit_defaults_and_zero_lifts_a_limit() {
        let config: LimitsConfig = toml::from_str(
            r#"
            requests_per_minute = 60
            tokens_per_minute = 1000
            [tenants.batch]
            requests_per_minute = 600
            tokens_per_minute = 0
            "#,
        )
        .unwrap();
        let batch = config.rates_for("batch");
        assert_eq!(batch.requests_per_minute, Some(600));
        assert_eq!(batch.tokens_per_minute, None);
        let other = config.rates_for("web");
        assert_eq!(other.requests_per_minute, Some(60));
        assert_eq!(other.tokens_per_minute, Some(1000));
        assert!(LimitsConfig::default().rates_for("x").is_empty());
    }
}
