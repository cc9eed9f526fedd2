//! Reading configuration: TOML file → `${ENV_VAR}` expansion → `SLUICE__A__B`
//! overrides → typed [`Config`] (errors carry the key path) → [`validate`](super::validate).

use std::path::Path;

use toml::Value;

use super::Config;

/// One problem, named by its key path (`backends.ollama.url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration could not be used: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration{}", render(.0))]
pub struct ConfigError(pub Vec<ConfigIssue>);

fn render(issues: &[ConfigIssue]) -> String {
    issues.iter().map(|i| format!("\n  - {i}")).collect()
}

impl ConfigError {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError(vec![ConfigIssue {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// Load from a file, with overrides from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one("", format!("cannot read {}: {e}", path.display())))?;
    load_str(&text, std::env::vars())
}

/// Load from TOML text with the given environment (tests pass their own).
pub fn load_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut root: Value = toml::from_str(text).map_err(|e| {
        ConfigError::one("", format!("not valid TOML: {}", e.message().trim()))
            .with_span(text, e.span())
    })?;
    let mut issues = Vec::new();
    expand_env(&mut root, &mut String::new(), &env, &mut issues);
    for (key, value) in &env {
        if let Some(rest) = key.strip_prefix("SLUICE__") {
            if let Err(issue) = apply_override(&mut root, rest, value) {
                issues.push(issue);
            }
        }
    }
    if !issues.is_empty() {
        return Err(ConfigError(issues));
    }
    let mut config: Config = serde_path_to_error::deserialize(root).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::one(path, e.into_inner().message().to_string())
    })?;
    let issues = super::workflows::load_files(&mut config.workflows);
    if !issues.is_empty() {
        return Err(ConfigError(issues));
    }
    let mut issues = super::validate::validate(&config);
    issues.extend(super::limits::validate(&config));
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError(issues))
    }
}

impl ConfigError {
    fn with_span(mut self, text: &str, span: Option<std::ops::Range<usize>>) -> Self {
        if let (Some(span), Some(issue)) = (span, self.0.first_mut()) {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            issue.message = format!("line {line}: {}", issue.message);
        }
        self
    }
}

/// Replace `${NAME}` in every string value with the environment variable `NAME`.
fn expand_env(
    value: &mut Value,
    path: &mut String,
    env: &[(String, String)],
    issues: &mut Vec<ConfigIssue>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand_str(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => issues.push(ConfigIssue {
                path: path.clone(),
                message,
            }),
        },
        Value::Table(table) => {
            for (key, v) in table.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                expand_env(v, path, env, issues);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(v, path, env, issues);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn expand_str(s: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` (write `${NAME}`)".to_string())?;
        let name = &after[..end];
        let found = env.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        match found {
            Some(v) => out.push_str(v),
            None => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `SERVER__LISTEN=...` sets `server.listen`; numeric segments index arrays
/// (`MODELS__0__UPSTREAM_MODEL`). Values that read as TOML booleans or numbers are typed.
fn apply_override(root: &mut Value, key: &str, raw: &str) -> Result<(), ConfigIssue> {
    let segments: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
    let env_path = format!("SLUICE__{key}");
    let bad = |message: String| ConfigIssue {
        path: env_path.clone(),
        message,
    };
    if segments.iter().any(String::is_empty) {
        return Err(bad("empty key segment".into()));
    }
    let mut node = root;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        node = match node {
            Value::Table(table) => {
                if last {
                    table.insert(seg.clone(), typed(raw));
                    return Ok(());
                }
                table
                    .entry(seg.clone())
                    .or_insert_with(|| Value::Table(Default::default()))
            }
            Value::Array(items) => {
                let idx: usize = seg
                    .parse()
                    .map_err(|_| bad(format!("`{seg}` must be an array index")))?;
                let len = items.len();
                let slot = items
                    .get_mut(idx)
                    .ok_or_else(|| bad(format!("index {idx} is out of range ({len} entries)")))?;
                if last {
                    *slot = typed(raw);
                    return Ok(());
                }
                slot
            }
            _ => return Err(bad(format!("`{seg}` is not inside a table"))),
        };
    }
    Ok(())
}

fn typed(raw: &str) -> Value {
    if let Ok(b) = raw.parse::<bool>() {
        return Value::Boolean(b);
    }
    if let Ok(i) = raw.parse::<i64>() {
        return Value::Integer(i);
    }
    if let Ok(f) = raw.parse::<f64>() {
        if raw.contains('.') {
            return Value::Float(f);
        }
    }
    Value::String(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const BASE: &str = r#"
[backends.up]
kind = "openai"
url = "http://127.0.0.1:9/v1"
api_key = "${UP_KEY}"

[[models]]
name = "m"
backend = "up"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_env_references_and_hides_secrets() {
        let c = load_str(BASE, env(&[("UP_KEY", "sk-123")])).unwrap();
        let key = c.backends["up"].api_key.as_ref().unwrap();
        assert_eq!(key.expose_secret(), "sk-123");
        assert!(!format!("{c:?}").contains("sk-123"));
    }

    #[test]
    fn a_redis_password_never_prints() {
        let text = format!("{BASE}\n[cache]\nredis_url = \"redis://:hunter2@127.0.0.1:6379/0\"\n");
        let c = load_str(&text, env(&[("UP_KEY", "k")])).unwrap();
        assert!(c.cache.redis_url.is_some());
        assert!(!format!("{c:?}").contains("hunter2"));
        let bad = format!("{BASE}\n[cache]\nredis_url = \"http://:hunter2@127.0.0.1:6379\"\n");
        let err = load_str(&bad, env(&[("UP_KEY", "k")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cache.redis_url") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_env_reference_names_the_key() {
        let err = load_str(BASE, env(&[])).unwrap_err();
        assert_eq!(err.0[0].path, "backends.up.api_key");
        assert!(err.0[0].message.contains("UP_KEY"));
    }

    #[test]
    fn env_overrides_set_nested_keys_and_array_items() {
        let c = load_str(
            BASE,
            env(&[
                ("UP_KEY", "k"),
                ("SLUICE__SERVER__LISTEN", "127.0.0.1:9999"),
                ("SLUICE__SERVER__MAX_BODY_BYTES", "1000"),
                ("SLUICE__MODELS__0__UPSTREAM_MODEL", "real"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.server.max_body_bytes, 1000);
        assert_eq!(c.models[0].upstream_name(), "real");
    }

    #[test]
    fn unknown_and_mistyped_keys_name_their_path() {
        let err = load_str(
            &format!("{BASE}\n[server]\nlisen = 1\n"),
            env(&[("UP_KEY", "k")]),
        )
        .unwrap_err();
        assert_eq!(err.0[0].path, "server.lisen");
        assert!(err.0[0].message.contains("lisen"), "{}", err);
        let err = load_str(
            &format!("{BASE}\n[server]\nshutdown_timeout = \"soon\"\n"),
            env(&[("UP_KEY", "k")]),
        )
        .unwrap_err();
        assert_eq!(err.0[0].path, "server.shutdown_timeout");
    }

    #[test]
    fn bad_toml_reports_the_line() {
        let err = load_str("[server\nlisten=1", env(&[])).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
