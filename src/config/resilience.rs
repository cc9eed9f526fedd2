//! Upstream resilience settings of an HTTP backend (`[backends.NAME.retry]`,
//! `[backends.NAME.outlier]`, `[backends.NAME.breaker]`, `urls = [...]` pools) and of a
//! model (`fallbacks = [{ backend, upstream_model }]`), with their defaults (Envoy's,
//! where Envoy has one) and the checks `validate` runs on them.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::{BackendConfig, BackendKind, Config};

/// Retries of one upstream call, only before the upstream's answer was accepted (a
/// connect error, 502, 503 or 429): never once a 2xx response has started.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries in all, the first included (1 turns retries off).
    pub attempts: u32,
    /// The first backoff; each later one doubles, up to `max_backoff`. Every wait is
    /// drawn at random between half and all of it (jitter).
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Retries in flight at once may be this share of the backend's active requests...
    pub budget_ratio: f64,
    /// ...or this many, whichever is more (Envoy's `min_retry_concurrency`).
    pub min_retries: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 2,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            budget_ratio: 0.2,
            min_retries: 3,
        }
    }
}

/// Passive health of a pool's members (Envoy outlier detection on gateway failures:
/// connect errors, timeouts, 502, 503, 504).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Gateway failures in a row that eject a member (0 never ejects).
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; the n-th ejection of the same member lasts
    /// n times as long (up to `max_ejection`).
    #[serde(with = "humantime_serde")]
    pub base_ejection: Duration,
    #[serde(with = "humantime_serde")]
    pub max_ejection: Duration,
    /// At most this share of the pool is ejected at once (at least one member of a pool
    /// of two or more may always be ejected; a lone member never is).
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// A circuit breaker over the whole backend: open after `failures` gateway failures in
/// a row (or a `failure_ratio` over the last `window` calls), refuse calls for
/// `cool_down`, then let one probe request through (half-open): its success closes
/// the breaker, its failure opens it again. Off unless the table is present.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub failures: u32,
    /// Off when unset.
    pub failure_ratio: Option<f64>,
    pub window: u32,
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            failure_ratio: None,
            window: 20,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// Another deployment of the same logical model, tried in order when the ones before
/// it failed before sending anything (see [`is_fallback_error`]).
///
/// [`is_fallback_error`]: crate::error::BackendError::is_fallback_error
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Key of a `[backends.*]` table.
    pub backend: String,
    /// The model's name on that backend; defaults to the model's `upstream_model`.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Ollama `keep_alive`; defaults to the model's when that backend is Ollama too.
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// Engine options; default to the model's when the backend is of the same kind.
    #[serde(default)]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
}

impl BackendConfig {
    /// The base URLs of an HTTP backend: `urls`, or `url` alone.
    pub fn base_urls(&self) -> Vec<String> {
        match &self.url {
            Some(url) => vec![url.clone()],
            None => self.urls.clone(),
        }
    }
}

/// The resilience keys: pools, retry, outlier and breaker tables, fallbacks.
pub(super) fn validate(config: &Config, issue: &mut impl FnMut(String, String)) {
    for (name, backend) in &config.backends {
        let path = format!("backends.{name}");
        if backend.kind == BackendKind::Onnx {
            for (field, set) in [
                ("urls", !backend.urls.is_empty()),
                ("retry", backend.retry.is_some()),
                ("outlier", backend.outlier.is_some()),
                ("breaker", backend.breaker.is_some()),
            ] {
                if set {
                    issue(
                        format!("{path}.{field}"),
                        "only used by HTTP backends (kind = \"openai\" or \"ollama\"); remove it"
                            .into(),
                    );
                }
            }
            continue;
        }
        validate_backend(&path, backend, issue);
    }
    for (i, model) in config.models.iter().enumerate() {
        let mut seen = HashSet::from([model.backend.as_str()]);
        for (j, fallback) in model.fallbacks.iter().enumerate() {
            let path = format!("models[{i}].fallbacks[{j}]");
            if !model.tiers.is_empty() {
                issue(
                    format!("models[{i}].fallbacks"),
                    "a tiered model cannot have fallbacks (each tier is its own deployment); remove tiers or fallbacks".into(),
                );
                break;
            }
            match config.backends.get(&fallback.backend) {
                None => issue(
                    format!("{path}.backend"),
                    format!("no backend named `{}`", fallback.backend),
                ),
                Some(b) if b.kind != BackendKind::Ollama && fallback.keep_alive.is_some() => issue(
                    format!("{path}.keep_alive"),
                    "keep_alive is an Ollama setting; this fallback's backend is not Ollama".into(),
                ),
                Some(_) if !seen.insert(fallback.backend.as_str()) => issue(
                    format!("{path}.backend"),
                    format!(
                        "backend `{}` is already a deployment of model `{}`",
                        fallback.backend, model.name
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

fn validate_backend(path: &str, backend: &BackendConfig, issue: &mut impl FnMut(String, String)) {
    if backend.url.is_some() && !backend.urls.is_empty() {
        issue(
            format!("{path}.urls"),
            "set either url (one upstream) or urls (a pool), not both".into(),
        );
    }
    let mut seen = HashSet::new();
    for (i, url) in backend.urls.iter().enumerate() {
        let at = format!("{path}.urls[{i}]");
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => issue(
                at.clone(),
                format!("scheme `{}` is not http or https", u.scheme()),
            ),
            Err(e) => issue(at.clone(), format!("not a URL: {e}")),
        }
        if !seen.insert(url.trim_end_matches('/')) {
            issue(at, "listed twice".into());
        }
    }
    if let Some(retry) = &backend.retry {
        if retry.attempts == 0 {
            issue(
                format!("{path}.retry.attempts"),
                "must be at least 1 (the first try; 1 turns retries off)".into(),
            );
        }
        if retry.max_backoff < retry.backoff {
            issue(
                format!("{path}.retry.max_backoff"),
                "must not be less than retry.backoff".into(),
            );
        }
        if !(0.0..=1.0).contains(&retry.budget_ratio) {
            issue(
                format!("{path}.retry.budget_ratio"),
                "must be between 0 and 1 (a share of the backend's active requests)".into(),
            );
        }
    }
    if let Some(outlier) = &backend.outlier {
        if outlier.max_ejection_percent > 100 {
            issue(
                format!("{path}.outlier.max_ejection_percent"),
                "must be between 0 and 100".into(),
            );
        }
        if outlier.base_ejection.is_zero() {
            issue(
                format!("{path}.outlier.base_ejection"),
                "must be greater than 0".into(),
            );
        }
        if outlier.max_ejection < outlier.base_ejection {
            issue(
                format!("{path}.outlier.max_ejection"),
                "must not be less than outlier.base_ejection".into(),
            );
        }
    }
    if let Some(breaker) = &backend.breaker {
        if breaker.failures == 0 && breaker.failure_ratio.is_none() {
            issue(
                format!("{path}.breaker.failures"),
                "must be at least 1 (or set failure_ratio)".into(),
            );
        }
        if let Some(ratio) = breaker.failure_ratio {
            if !(ratio > 0.0 && ratio <= 1.0) {
                issue(
                    format!("{path}.breaker.failure_ratio"),
                    "must be in (0, 1]".into(),
                );
            }
            if breaker.window == 0 {
                issue(
                    format!("{path}.breaker.window"),
                    "must be at least 1 with failure_ratio".into(),
                );
            }
        }
        if breaker.cool_down.is_zero() {
            issue(
                format!("{path}.breaker.cool_down"),
                "must be greater than 0".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    fn paths(text: &str) -> Vec<String> {
        let err = load_str(text, Vec::new()).unwrap_err();
        let mut p: Vec<String> = err.0.iter().map(|i| i.path.clone()).collect();
        p.sort();
        p
    }

    #[test]
    fn a_pool_with_resilience_tables_loads() {
        let text = r#"
[backends.vllm]
kind = "openai"
urls = ["http://a:8000/v1", "http://b:8000/v1"]
retry = { attempts = 3, backoff = "10ms" }
outlier = { consecutive_failures = 2, base_ejection = "5s" }
breaker = { failures = 3, cool_down = "1s" }

[backends.spare]
kind = "ollama"
url = "http://c:11434"

[[models]]
name = "llama"
backend = "vllm"
upstream_model = "meta-llama/Llama-3.1-8B-Instruct"
fallbacks = [{ backend = "spare", upstream_model = "llama3.1:8b" }]
"#;
        let config = load_str(text, Vec::new()).unwrap();
        let b = &config.backends["vllm"];
        assert_eq!(b.base_urls().len(), 2);
        assert_eq!(b.retry.as_ref().unwrap().attempts, 3);
        assert_eq!(b.retry.as_ref().unwrap().max_backoff.as_millis(), 250);
        assert_eq!(b.breaker.as_ref().unwrap().failures, 3);
        assert_eq!(config.models[0].fallbacks[0].backend, "spare");
    }

    #[test]
    fn resilience_problems_name_their_keys() {
        let text = r#"
[backends.p]
kind = "openai"
url = "http://a/v1"
urls = ["http://a/v1", "ftp://b", "http://a/v1/"]
retry = { attempts = 0, budget_ratio = 2.0 }
outlier = { max_ejection_percent = 101 }
breaker = { cool_down = "0s", failure_ratio = 0.0 }

[[models]]
name = "m"
backend = "p"
fallbacks = [{ backend = "nope" }, { backend = "p" }, { backend = "p", keep_alive = "5m" }]
"#;
        assert_eq!(
            paths(text),
            [
                "backends.p.breaker.cool_down",
                "backends.p.breaker.failure_ratio",
                "backends.p.outlier.max_ejection_percent",
                "backends.p.retry.attempts",
                "backends.p.retry.budget_ratio",
                "backends.p.urls",
                "backends.p.urls[1]",
                "backends.p.urls[2]",
                "models[0].fallbacks[0].backend",
                "models[0].fallbacks[1].backend",
                "models[0].fallbacks[2].keep_alive",
            ]
        );
    }
}
