//! Semantic checks that types alone cannot express; every problem is reported, each
//! with its key path, so `sluice check-config` can list them all at once.

use std::collections::HashSet;

use super::{BackendConfig, BackendKind, Config, ConfigIssue, OnnxTask};

pub(super) fn validate(config: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });

    if config.server.max_body_bytes == 0 {
        issue(
            "server.max_body_bytes".into(),
            "must be greater than 0".into(),
        );
    }

    if config.server.worker_threads == Some(0) {
        issue(
            "server.worker_threads".into(),
            "must be at least 1 (or unset for one per core)".into(),
        );
    }

    if let Some(tls) = &config.server.tls {
        super::tls::validate(tls, &mut issue);
    }

    let mut hashes = HashSet::new();
    for (i, key) in config.auth.keys.iter().enumerate() {
        let path = format!("auth.keys[{i}]");
        if key.tenant.trim().is_empty() {
            issue(format!("{path}.tenant"), "must not be empty".into());
        }
        let hex_ok = key.sha256.len() == 64 && key.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok {
            issue(
                format!("{path}.sha256"),
                "must be 64 hex characters: the SHA-256 of the key (printf %s \"$KEY\" | sha256sum)"
                    .into(),
            );
        } else if !hashes.insert(key.sha256.to_ascii_lowercase()) {
            issue(
                format!("{path}.sha256"),
                "the same key is listed twice".into(),
            );
        }
    }

    for (name, backend) in &config.backends {
        let path = format!("backends.{name}");
        if backend.kind == BackendKind::Onnx {
            validate_onnx(&path, backend, &mut issue);
            continue;
        }
        match backend.url.as_deref().map(reqwest::Url::parse) {
            None if !backend.urls.is_empty() => {}
            None => issue(
                format!("{path}.url"),
                "missing: the backend's base URL (or `urls` for a pool)".into(),
            ),
            Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => {}
            Some(Ok(url)) => issue(
                format!("{path}.url"),
                format!("scheme `{}` is not http or https", url.scheme()),
            ),
            Some(Err(e)) => issue(format!("{path}.url"), format!("not a URL: {e}")),
        }
        for (field, set) in [
            ("task", backend.task.is_some()),
            ("max_wait", backend.max_wait.is_some()),
            ("model_dir", backend.model_dir.is_some()),
            ("tiers", !backend.tiers.is_empty()),
            ("max_batch_size", backend.max_batch_size.is_some()),
            ("max_context", backend.max_context.is_some()),
            ("queue_size", backend.queue_size.is_some()),
            ("threads", backend.threads.is_some()),
            ("ort_library", backend.ort_library.is_some()),
            ("structured", backend.structured.is_some()),
            ("priority", backend.priority.is_some()),
        ] {
            if set {
                issue(
                    format!("{path}.{field}"),
                    "only used by kind = \"onnx\"; remove it".into(),
                );
            }
        }
        if backend.kind == BackendKind::Ollama && backend.api_key.is_some() {
            issue(
                format!("{path}.api_key"),
                "Ollama takes no API key; remove it or use kind = \"openai\"".into(),
            );
        }
        if let Some(key) = &backend.api_key {
            use secrecy::ExposeSecret;
            // It is sent as `Authorization: Bearer <key>`; the key itself is never shown.
            if http::HeaderValue::try_from(format!("Bearer {}", key.expose_secret())).is_err() {
                issue(
                    format!("{path}.api_key"),
                    "holds characters an HTTP header cannot carry (a line break or control character?)".into(),
                );
            }
        }
        for (field, value) in [
            ("connect_timeout", backend.connect_timeout),
            ("request_timeout", backend.request_timeout),
            ("read_timeout", backend.read_timeout),
        ] {
            if value.is_zero() {
                issue(format!("{path}.{field}"), "must be greater than 0".into());
            }
        }
    }

    validate_cache(config, &mut issue);
    super::tools::validate(config, &mut issue);
    super::workflows::validate(config, &mut issue);

    if config.models.is_empty() {
        issue(
            "models".into(),
            "no models configured: add at least one [[models]] entry".into(),
        );
    }
    let mut names = HashSet::new();
    for (i, model) in config.models.iter().enumerate() {
        let path = format!("models[{i}]");
        if model.name.trim().is_empty() {
            issue(format!("{path}.name"), "must not be empty".into());
        } else if !names.insert(model.name.as_str()) {
            issue(
                format!("{path}.name"),
                format!("model `{}` is defined twice", model.name),
            );
        }
        match config.backends.get(&model.backend) {
            None => issue(
                format!("{path}.backend"),
                format!(
                    "no backend named `{}` (defined: {})",
                    model.backend,
                    config
                        .backends
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(b) if b.kind != BackendKind::Ollama && model.keep_alive.is_some() => issue(
                format!("{path}.keep_alive"),
                "keep_alive is an Ollama setting; this model's backend is not Ollama".into(),
            ),
            Some(b) if b.kind != BackendKind::Openai && model.forward_unknown_fields => issue(
                format!("{path}.forward_unknown_fields"),
                "forward_unknown_fields is for OpenAI-compatible upstreams; this model's backend is not kind = \"openai\"".into(),
            ),
            Some(b) if b.kind != BackendKind::Onnx && model.structured.is_some() => issue(
                format!("{path}.structured"),
                "structured is an onnx setting; this model's backend is not kind = \"onnx\"".into(),
            ),
            Some(b) if b.kind != BackendKind::Onnx && model.tier.is_some() => issue(
                format!("{path}.tier"),
                "tier is an onnx setting; this model's backend is not kind = \"onnx\"".into(),
            ),
            Some(b) if b.task() == OnnxTask::Embed && model.tier.is_some() => issue(
                format!("{path}.tier"),
                format!(
                    "backend `{}` serves embeddings (task = \"embed\"), which have no tiers; remove it",
                    model.backend
                ),
            ),
            Some(b) if b.task() == OnnxTask::Embed && model.structured.is_some() => issue(
                format!("{path}.structured"),
                format!(
                    "backend `{}` serves embeddings (task = \"embed\"); structured generation is for chat models; remove it",
                    model.backend
                ),
            ),
            Some(b) => {
                if let Some(tier) = &model.tier {
                    if !b.tiers.is_empty() && !b.tiers.contains(tier) {
                        issue(
                            format!("{path}.tier"),
                            format!(
                                "backend `{}` does not load tier `{tier}` (its tiers: {})",
                                model.backend,
                                b.tiers.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
    super::route::validate(config, &mut issue);
    super::resilience::validate(config, &mut issue);
    issues
}

/// The response cache: positive sizes, a Redis URL, a usable encryption key.
fn validate_cache(config: &Config, issue: &mut impl FnMut(String, String)) {
    use secrecy::ExposeSecret;
    let cache = &config.cache;
    if cache.ttl.is_zero() {
        issue("cache.ttl".into(), "must be greater than 0".into());
    }
    if cache.max_bytes == 0 {
        issue(
            "cache.max_bytes".into(),
            "must be greater than 0 (or set cache.mode = \"off\")".into(),
        );
    }
    if cache.redis_timeout.is_zero() {
        issue(
            "cache.redis_timeout".into(),
            "must be greater than 0".into(),
        );
    }
    if let Some(url) = &cache.redis_url {
        // The parse error names what is wrong, never the URL (it may hold a password).
        match reqwest::Url::parse(url.expose_secret()) {
            Ok(u) if matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix") => {}
            Ok(u) => issue(
                "cache.redis_url".into(),
                format!("scheme `{}` is not redis://", u.scheme()),
            ),
            Err(e) => issue("cache.redis_url".into(), format!("not a URL: {e}")),
        }
    }
    if let Some(ca) = &cache.redis_ca {
        let tls_url = cache
            .redis_url
            .as_ref()
            .is_some_and(|u| u.expose_secret().starts_with("rediss://"));
        if !tls_url {
            issue(
                "cache.redis_ca".into(),
                "only used with a rediss:// (TLS) cache.redis_url".into(),
            );
        }
        if let Err(e) = crate::tls::read_certificates(ca) {
            issue("cache.redis_ca".into(), e);
        }
    }
    if let Some(key) = &cache.encryption_key {
        if let Err(e) = crate::pipeline::cache::redis::parse_encryption_key(key.expose_secret()) {
            issue("cache.encryption_key".into(), e);
        }
        if cache.redis_url.is_none() {
            issue(
                "cache.encryption_key".into(),
                "only used with cache.redis_url (the local cache is in memory)".into(),
            );
        }
    }
}

/// The embedded engine's settings: a model folder, positive sizes, no HTTP fields.
fn validate_onnx(path: &str, backend: &BackendConfig, issue: &mut impl FnMut(String, String)) {
    if backend.model_dir.is_none() {
        issue(
            format!("{path}.model_dir"),
            "missing: the model folder, e.g. \"models/sluice-tiny\"".into(),
        );
    }
    if backend.url.is_some() {
        issue(
            format!("{path}.url"),
            "kind = \"onnx\" runs in-process and takes no url; remove it".into(),
        );
    }
    if backend.api_key.is_some() {
        issue(
            format!("{path}.api_key"),
            "kind = \"onnx\" takes no api_key; remove it".into(),
        );
    }
    for (field, value) in [
        ("max_batch_size", backend.max_batch_size),
        ("max_context", backend.max_context),
        ("queue_size", backend.queue_size),
        ("threads", backend.threads),
    ] {
        if value == Some(0) {
            issue(format!("{path}.{field}"), "must be at least 1".into());
        }
    }
    match backend.task() {
        OnnxTask::Embed => {
            for (field, set, why) in [
                (
                    "tiers",
                    !backend.tiers.is_empty(),
                    "an embedding model is one model.onnx, with no tiers",
                ),
                (
                    "structured",
                    backend.structured.is_some(),
                    "structured generation is for chat models",
                ),
                (
                    "max_context",
                    backend.max_context.is_some(),
                    "an input's limit is the model's max_seq_length",
                ),
            ] {
                if set {
                    issue(
                        format!("{path}.{field}"),
                        format!("not used with task = \"embed\" ({why}); remove it"),
                    );
                }
            }
        }
        OnnxTask::Generate => {
            if backend.max_wait.is_some() {
                issue(
                    format!("{path}.max_wait"),
                    "only used with task = \"embed\" (chat requests join the running batch at once); remove it".into(),
                );
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, tier) in backend.tiers.iter().enumerate() {
        if !seen.insert(tier) {
            issue(
                format!("{path}.tiers[{i}]"),
                format!("tier `{tier}` is listed twice"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let text = r#"
[auth]
keys = [{ tenant = "", sha256 = "abc" }]

[backends.o]
kind = "ollama"
url = "ftp://x"
api_key = "k"
read_timeout = "0s"

[[models]]
name = "a"
backend = "nope"

[[models]]
name = "a"
backend = "o"
forward_unknown_fields = true
"#;
        let err = load_str(text, Vec::new()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|i| i.path.as_str()).collect();
        for expected in [
            "auth.keys[0].tenant",
            "auth.keys[0].sha256",
            "backends.o.url",
            "backends.o.api_key",
            "backends.o.read_timeout",
            "models[0].backend",
            "models[1].name",
            "models[1].forward_unknown_fields",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn an_api_key_that_cannot_be_a_header_is_refused_without_showing_it() {
        let text = "[backends.v]\nkind = \"openai\"\nurl = \"http://127.0.0.1:8000/v1\"\napi_key = \"sk-secret\\nX-Injected: 1\"\n\n[[models]]\nname = \"a\"\nbackend = \"v\"\n";
        let err = load_str(text, Vec::new()).unwrap_err();
        let issue = err.0.iter().find(|i| i.path == "backends.v.api_key");
        assert!(issue.is_some(), "{:?}", err.0);
        assert!(!err.to_string().contains("sk-secret"), "{err}");
    }

    #[test]
    fn an_empty_catalog_is_an_error() {
        let err = load_str("", Vec::new()).unwrap_err();
        assert_eq!(err.0[0].path, "models");
    }

    #[test]
    fn onnx_backends_are_checked_too() {
        let text = r#"
[backends.local]
kind = "onnx"
url = "http://x"
max_batch_size = 0
tiers = ["int4", "int4"]

[backends.http]
kind = "openai"
url = "http://127.0.0.1:8000/v1"
model_dir = "models/sluice-tiny"

[[models]]
name = "a"
backend = "local"
tier = "fp32"

[[models]]
name = "b"
backend = "http"
tier = "int4"
"#;
        let err = load_str(text, Vec::new()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|i| i.path.as_str()).collect();
        for expected in [
            "backends.local.model_dir",
            "backends.local.url",
            "backends.local.max_batch_size",
            "backends.local.tiers[1]",
            "backends.http.model_dir",
            "models[0].tier",
            "models[1].tier",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn embed_backends_refuse_chat_settings() {
        let text = r#"
[backends.embed]
kind = "onnx"
task = "embed"
model_dir = "models/minilm-l6"
tiers = ["fp32"]
structured = true
max_context = 128
max_wait = "2ms"

[backends.chat]
kind = "onnx"
model_dir = "models/sluice-tiny"
max_wait = "2ms"

[backends.http]
kind = "openai"
url = "http://127.0.0.1:8000/v1"
task = "embed"
max_wait = "1ms"

[[models]]
name = "e"
backend = "embed"
tier = "fp32"

[[models]]
name = "s"
backend = "embed"
structured = false
"#;
        let err = load_str(text, Vec::new()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|i| i.path.as_str()).collect();
        for expected in [
            "backends.embed.tiers",
            "backends.embed.structured",
            "backends.embed.max_context",
            "backends.chat.max_wait",
            "backends.http.task",
            "backends.http.max_wait",
            "models[0].tier",
            "models[1].structured",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
        assert!(!paths.contains(&"backends.embed.max_wait"), "{paths:?}");
        assert!(err.to_string().contains("task = \"embed\""), "{err}");
    }

    #[test]
    fn an_embed_backend_loads_with_its_defaults() {
        let text = "[backends.e]\nkind = \"onnx\"\ntask = \"embed\"\nmodel_dir = \"m\"\nmax_wait = \"5ms\"\n\
                    [[models]]\nname = \"e\"\nbackend = \"e\"\n";
        let config = load_str(text, Vec::new()).unwrap();
        let backend = &config.backends["e"];
        assert_eq!(backend.task(), crate::config::OnnxTask::Embed);
        assert_eq!(backend.max_wait, Some(std::time::Duration::from_millis(5)));
        let typo = load_str(&text.replace("\"embed\"", "\"embedding\""), Vec::new()).unwrap_err();
        assert_eq!(typo.0[0].path, "backends.e.task", "{typo}");
    }

    #[test]
    fn http_backends_need_a_url() {
        let err = load_str(
            "[backends.o]\nkind = \"ollama\"\n[[models]]\nname = \"m\"\nbackend = \"o\"\n",
            Vec::new(),
        )
        .unwrap_err();
        assert_eq!(err.0[0].path, "backends.o.url");
    }

    #[test]
    fn cache_settings_are_checked() {
        let text = r#"
[cache]
ttl = "0s"
max_bytes = 0
redis_url = "http://127.0.0.1:6379"
encryption_key = "too-short"

[backends.o]
kind = "ollama"
url = "http://127.0.0.1:11434"

[[models]]
name = "m"
backend = "o"
"#;
        let err = load_str(text, Vec::new()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|i| i.path.as_str()).collect();
        for expected in [
            "cache.ttl",
            "cache.max_bytes",
            "cache.redis_url",
            "cache.encryption_key",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
        // The key is never echoed back.
        assert!(!err.to_string().contains("too-short"), "{err}");
    }
}
