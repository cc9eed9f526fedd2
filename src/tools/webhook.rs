//! `webhook`: a tool declared in config (`[tools.NAME] kind = "webhook"`, `url`,
//! `description`, `parameters` as a JSON Schema object, optional `secret`) whose call
//! POSTs the model's arguments, as JSON, to `url`. A tool with side effects: the loop
//! runs it only where `agent.allow_side_effects` is on.
//!
//! The request:
//! - `content-type: application/json`; the body is the arguments object.
//! - `idempotency-key: <run_id>:<call_id>` — the same for every attempt at one call, so
//!   the receiver can drop a repeat (bytes outside printable ASCII, and `%`, are
//!   percent-encoded).
//! - with `secret`: `x-sluice-signature: t=<unix seconds>,v1=<hex>`, where `<hex>` is
//!   the lowercase hex HMAC-SHA256, keyed with the secret's UTF-8 bytes, of the bytes
//!   `<t>.<body>` (the timestamp as sent, a dot, the exact body). Receivers recompute
//!   it, compare in constant time and refuse stale timestamps (Stripe's scheme).
//!
//! Same network sandbox as `http_get` (`net`): the URL's address, literal or resolved,
//! must be public or inside `allow_addresses`; proxies are ignored; no redirect is
//! followed (a 3xx is a failure). The answer is read up to `max_bytes` (default 1 MiB)
//! within the tool's `timeout`. The result is the response body on 2xx (`HTTP 204 No
//! Content` when empty), else a `Failed` error with the status and an excerpt. Errors
//! never quote the URL, which may carry a token.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

use super::net::fetch::{self, DEFAULT_MAX_BYTES};
use super::net::resolve::Lookup;
use super::net::{target, AddressPolicy};
use super::{CallContext, Tool, ToolError, ToolSpec};
use crate::config::ToolConfig;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-sluice-signature";
/// The idempotency header.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Characters of the answer quoted in an error.
const EXCERPT: usize = 200;

pub struct Webhook {
    spec: ToolSpec,
    url: Url,
    policy: Arc<AddressPolicy>,
    client: Client,
    secret: Option<SecretString>,
    max_bytes: usize,
    timeout: Option<Duration>,
}

impl Webhook {
    pub fn new(name: &str, config: &ToolConfig) -> Result<Webhook, String> {
        Self::build(name, config, None)
    }

    /// As [`Webhook::new`], with names resolved by `lookup` instead of DNS (tests).
    #[doc(hidden)]
    pub fn with_lookup(name: &str, config: &ToolConfig, lookup: Lookup) -> Result<Webhook, String> {
        Self::build(name, config, Some(lookup))
    }

    fn build(name: &str, config: &ToolConfig, lookup: Option<Lookup>) -> Result<Webhook, String> {
        let policy = Arc::new(AddressPolicy::new(&config.allow_addresses)?);
        let raw = config
            .url
            .as_deref()
            .ok_or("url: a webhook needs the URL it posts to")?;
        let url = Url::parse(raw).map_err(|e| format!("url: not an absolute URL ({e})"))?;
        target::check(&url, None, &policy).map_err(|e| match e {
            ToolError::Refused(m) => format!("url: {m} (allow_addresses can allow it)"),
            other => format!("url: {other}"),
        })?;
        let description = config
            .description
            .clone()
            .filter(|d| !d.trim().is_empty())
            .ok_or("description: a webhook needs a description (what the model is told it does)")?;
        let parameters = match &config.parameters {
            None => serde_json::json!({"type": "object", "properties": {}}),
            Some(p) if p.get("type").and_then(Value::as_str) == Some("object") => p.clone(),
            Some(_) => {
                return Err(
                    "parameters: must be a JSON Schema of an object ({\"type\": \"object\", \"properties\": {...}})"
                        .into(),
                )
            }
        };
        let max_bytes = config.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes == 0 {
            return Err("max_bytes: must be at least 1".into());
        }
        Ok(Webhook {
            spec: ToolSpec {
                name: name.to_owned(),
                description,
                parameters,
            },
            client: fetch::client(policy.clone(), lookup)?,
            url,
            policy,
            secret: config.secret.clone(),
            max_bytes,
            timeout: config.timeout,
        })
    }

    async fn post(&self, body: Vec<u8>, ctx: &CallContext) -> Result<String, ToolError> {
        target::check(&self.url, None, &self.policy)?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                IDEMPOTENCY_HEADER,
                idempotency_key(&ctx.run_id, &ctx.call_id),
            );
        if let Some(secret) = &self.secret {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret.expose_secret().as_bytes(), t, &body)?,
            );
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| fetch::classify(&e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ToolError::Failed(format!(
                "the webhook answered HTTP {status}; redirects are not followed"
            )));
        }
        let answer = fetch::read_capped(response, self.max_bytes).await?;
        if !status.is_success() {
            return Err(ToolError::Failed(format!(
                "the webhook answered HTTP {status}: {}",
                answer.excerpt(EXCERPT)
            )));
        }
        if answer.bytes.is_empty() {
            return Ok(format!("HTTP {status}"));
        }
        Ok(answer.text())
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> Result<String, ToolError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|e| ToolError::Failed(format!("cannot sign the request: {e}")))?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "t={t},v1={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// `<run_id>:<call_id>`, percent-encoding what a header value cannot hold.
pub fn idempotency_key(run_id: &str, call_id: &str) -> String {
    let mut out = String::with_capacity(run_id.len() + call_id.len() + 1);
    for (i, part) in [run_id, call_id].into_iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        for &b in part.as_bytes() {
            if b.is_ascii_graphic() && b != b'%' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

#[async_trait]
impl Tool for Webhook {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, ctx: &CallContext) -> Result<String, ToolError> {
        if !arguments.is_object() {
            return Err(ToolError::InvalidArguments(
                "the arguments must be a JSON object".into(),
            ));
        }
        let body = serde_json::to_vec(&arguments).map_err(|e| {
            ToolError::InvalidArguments(format!("cannot encode the arguments: {e}"))
        })?;
        fetch::bounded(ctx, self.timeout, self.post(body, ctx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature(b"whsec_test", 1_700_000_000, br#"{"a":1}"#).unwrap(),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn idempotency_keys_are_stable_header_values() {
        assert_eq!(idempotency_key("run_1", "call_2"), "run_1:call_2");
        assert_eq!(idempotency_key("r 1", "c%\n"), "r%201:c%25%0A");
    }
}
