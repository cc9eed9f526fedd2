//! `http_get`: GET of a URL the model names, inside the network sandbox of `net`.
//! Arguments `{"url": "https://..."}`. Only http and https, no credentials in the URL,
//! only hosts in `allow_hosts` (any port), only addresses the address policy allows
//! (public ones, plus `allow_addresses`), checked for IP literals before sending and
//! for names in the resolver, so the connected address is the checked one.
//!
//! Redirects (301, 302, 303, 307, 308) are followed by hand, at most `max_redirects`
//! (default 5), each hop checked again like the first URL. Proxies from the environment
//! are ignored. The body is read up to `max_bytes` (default 1 MiB) and cut there; the
//! whole call, slow bodies included, is bounded by the tool's `timeout` and the call's
//! deadline, and a cancelled call drops its connection at once.
//!
//! The result: `HTTP 200 OK`, the content type, the final URL when redirected, a blank
//! line and the body as text. A non-2xx answer is a `Failed` error with the status
//! and a short excerpt of the body.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Client, StatusCode, Url};
use serde_json::Value;

use super::net::fetch::{self, DEFAULT_MAX_BYTES};
use super::net::resolve::Lookup;
use super::net::target::{self, HostRules};
use super::net::AddressPolicy;
use super::{one_string_schema, string_arg, CallContext, Tool, ToolError, ToolSpec};
use crate::config::ToolConfig;

/// Redirects followed when the tool sets no `max_redirects`.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;
/// Longest URL accepted, in bytes.
const MAX_URL_LEN: usize = 8 * 1024;
/// Characters of the body quoted in an error.
const EXCERPT: usize = 200;

pub struct HttpGet {
    spec: ToolSpec,
    hosts: HostRules,
    policy: Arc<AddressPolicy>,
    client: Client,
    max_redirects: usize,
    max_bytes: usize,
    timeout: Option<Duration>,
}

impl HttpGet {
    pub fn new(name: &str, config: &ToolConfig) -> Result<HttpGet, String> {
        Self::build(name, config, None)
    }

    /// As [`HttpGet::new`], with names resolved by `lookup` instead of DNS (tests: a
    /// name that resolves to loopback, or rebinds).
    #[doc(hidden)]
    pub fn with_lookup(name: &str, config: &ToolConfig, lookup: Lookup) -> Result<HttpGet, String> {
        Self::build(name, config, Some(lookup))
    }

    fn build(name: &str, config: &ToolConfig, lookup: Option<Lookup>) -> Result<HttpGet, String> {
        let hosts = HostRules::new(&config.allow_hosts)?;
        let policy = Arc::new(AddressPolicy::new(&config.allow_addresses)?);
        let max_bytes = config.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes == 0 {
            return Err("max_bytes: must be at least 1".into());
        }
        Ok(HttpGet {
            spec: ToolSpec {
                name: name.to_owned(),
                description: config.description.clone().unwrap_or_else(|| {
                    format!(
                        "fetch a web page or API response by URL (GET); allowed hosts: {}",
                        config.allow_hosts.join(", ")
                    )
                }),
                parameters: one_string_schema("url", "an absolute http or https URL"),
            },
            client: fetch::client(policy.clone(), lookup)?,
            hosts,
            policy,
            max_redirects: config.max_redirects.unwrap_or(DEFAULT_MAX_REDIRECTS),
            max_bytes,
            timeout: config.timeout,
        })
    }

    /// GET `url`, following allowed redirects.
    async fn fetch(&self, first: Url) -> Result<Fetched, ToolError> {
        let mut url = first;
        let mut hops = 0;
        loop {
            target::check(&url, Some(&self.hosts), &self.policy)
                .map_err(|e| on_hop(e, hops, &url))?;
            let response = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| on_hop(fetch::classify(&e), hops, &url))?;
            let status = response.status();
            if is_followed(status) {
                let next = next_url(&url, &response)?;
                if hops == self.max_redirects {
                    return Err(ToolError::Refused(format!(
                        "too many redirects: more than {} (the next was to {next})",
                        self.max_redirects
                    )));
                }
                hops += 1;
                url = next;
                continue;
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown")
                .to_owned();
            let body = fetch::read_capped(response, self.max_bytes).await?;
            if !status.is_success() {
                return Err(ToolError::Failed(format!(
                    "HTTP {status} from {url}: {}",
                    body.excerpt(EXCERPT)
                )));
            }
            return Ok(Fetched {
                status,
                content_type,
                redirected_to: (hops > 0).then_some(url),
                body: body.text(),
            });
        }
    }

    /// The URL from a call's arguments.
    fn url(arguments: &Value) -> Result<Url, ToolError> {
        let raw = string_arg(arguments, "url")?.trim();
        if raw.len() > MAX_URL_LEN {
            return Err(ToolError::InvalidArguments(format!(
                "`url` is longer than {MAX_URL_LEN} bytes"
            )));
        }
        Url::parse(raw).map_err(|e| {
            ToolError::InvalidArguments(format!("`url` is not an absolute URL ({e}): `{raw}`"))
        })
    }
}

/// A successful answer.
struct Fetched {
    status: StatusCode,
    content_type: String,
    /// Where redirects led, if any.
    redirected_to: Option<Url>,
    body: String,
}

impl Fetched {
    /// What the model reads: status, type, final URL, a blank line, the body.
    fn text(self) -> String {
        let mut out = format!(
            "HTTP {}\ncontent-type: {}\n",
            self.status, self.content_type
        );
        if let Some(url) = &self.redirected_to {
            out.push_str(&format!("url: {url}\n"));
        }
        out.push('\n');
        out.push_str(&self.body);
        out
    }

    /// What a workflow step gets: the same as JSON, with `json` parsed from a JSON body.
    fn value(self) -> Value {
        let json = if self.content_type.contains("json") {
            serde_json::from_str::<Value>(&self.body).ok()
        } else {
            None
        };
        serde_json::json!({
            "status": self.status.as_u16(),
            "content_type": self.content_type,
            "url": self.redirected_to.map(|u| u.to_string()),
            "body": self.body,
            "json": json,
        })
    }
}

fn is_followed(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Where a redirect points, resolved against the URL that answered.
fn next_url(url: &Url, response: &reqwest::Response) -> Result<Url, ToolError> {
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| ToolError::Failed(format!("HTTP {status} from {url} without a Location")))?;
    let location = location
        .to_str()
        .map_err(|_| ToolError::Failed(format!("HTTP {status} from {url}: unreadable Location")))?;
    url.join(location).map_err(|e| {
        ToolError::Failed(format!(
            "HTTP {status} from {url} to an invalid URL `{location}`: {e}"
        ))
    })
}

/// Say which redirect a refusal or failure happened on.
fn on_hop(err: ToolError, hops: usize, url: &Url) -> ToolError {
    if hops == 0 {
        return err;
    }
    match err {
        ToolError::Refused(m) => ToolError::Refused(format!("redirect to {url}: {m}")),
        ToolError::Failed(m) => ToolError::Failed(format!("redirect to {url}: {m}")),
        other => other,
    }
}

#[async_trait]
impl Tool for HttpGet {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, ctx: &CallContext) -> Result<String, ToolError> {
        let url = Self::url(&arguments)?;
        let fetched = fetch::bounded(ctx, self.timeout, self.fetch(url)).await?;
        Ok(fetched.text())
    }

    /// `{"status", "content_type", "url" (after redirects), "body", "json"}`.
    async fn call_value(&self, arguments: Value, ctx: &CallContext) -> Result<Value, ToolError> {
        let url = Self::url(&arguments)?;
        let fetched = fetch::bounded(ctx, self.timeout, self.fetch(url)).await?;
        Ok(fetched.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> ToolConfig {
        toml::from_str(&format!("kind = \"http_get\"\n{toml}")).unwrap()
    }

    #[test]
    fn config_errors_name_the_key() {
        for (toml, needle) in [
            ("", "allow_hosts:"),
            ("allow_hosts = [\"a.com\", \"x/y\"]", "allow_hosts[1]"),
            (
                "allow_hosts = [\"a.com\"]\nallow_addresses = [\"nope\"]",
                "allow_addresses[0]",
            ),
            ("allow_hosts = [\"a.com\"]\nmax_bytes = 0", "max_bytes"),
        ] {
            let err = HttpGet::new("http_get", &config(toml)).err().unwrap();
            assert!(err.contains(needle), "{toml}: {err}");
        }
        assert!(HttpGet::new("http_get", &config("allow_hosts = [\"a.com\"]")).is_ok());
    }

    #[tokio::test]
    async fn arguments_are_checked_before_anything_is_sent() {
        let tool = HttpGet::new("http_get", &config("allow_hosts = [\"a.com\"]")).unwrap();
        let ctx = CallContext::with_timeout(Duration::from_secs(1));
        for (args, needle) in [
            (serde_json::json!({}), "missing `url`"),
            (serde_json::json!({"url": 3}), "must be a string"),
            (serde_json::json!({"url": "a.com/x"}), "not an absolute URL"),
        ] {
            let err = tool.call(args.clone(), &ctx).await.unwrap_err();
            assert!(
                matches!(err, ToolError::InvalidArguments(ref m) if m.contains(needle)),
                "{args}: {err:?}"
            );
        }
    }
}
