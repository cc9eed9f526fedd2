//! The HTTP client of the network tools and what they share around a request: the
//! client itself (the policy resolver, no proxies from the environment, no automatic
//! redirects, no idle connections kept, no decompression), the call's time bound and
//! cancellation, bodies read incrementally up to a cap, and transport errors in words
//! a model can act on (a refused address stays `Refused`).

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Response};

use super::resolve::{AddressRefused, Lookup, LookupFailed, PolicyResolver};
use super::AddressPolicy;
use crate::tools::{CallContext, ToolError};

/// Body cap when the tool sets no `max_bytes`: 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// A client that connects only where `policy` allows names to resolve.
pub fn client(policy: Arc<AddressPolicy>, lookup: Option<Lookup>) -> Result<Client, String> {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PolicyResolver::new(policy, lookup)))
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Run `work` within the tool's `timeout` (capped by the call's deadline), stopping at
/// once when the call is cancelled. Dropping `work` drops its connection.
pub async fn bounded<T>(
    ctx: &CallContext,
    timeout: Option<Duration>,
    work: impl Future<Output = Result<T, ToolError>>,
) -> Result<T, ToolError> {
    let remaining = ctx.remaining();
    let limit = timeout.map_or(remaining, |t| t.min(remaining));
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
        out = tokio::time::timeout(limit, work) => out.unwrap_or(Err(ToolError::TimedOut(limit))),
    }
}

/// A response body, at most the cap.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub bytes: Vec<u8>,
    /// The body went on past the cap (the rest was not read).
    pub cut: bool,
}

/// Read `response`'s body chunk by chunk, stopping at `max` bytes.
pub async fn read_capped(mut response: Response, max: usize) -> Result<Body, ToolError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
        let room = max - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Body { bytes, cut: true });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body { bytes, cut: false })
}

impl Body {
    /// The body as text (invalid UTF-8 replaced; a character split by the cap dropped),
    /// with a note when it was cut.
    pub fn text(&self) -> String {
        let mut bytes = &self.bytes[..];
        if self.cut {
            if let Err(e) = std::str::from_utf8(bytes) {
                if e.error_len().is_none() {
                    bytes = &bytes[..e.valid_up_to()];
                }
            }
        }
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if self.cut {
            text.push_str(&format!(
                "\n[body cut at {} bytes: the rest was not read]",
                self.bytes.len()
            ));
        }
        text
    }

    /// The first `max` characters, on one line, for error messages.
    pub fn excerpt(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let mut out: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some((at, _)) = out.char_indices().nth(max) {
            out.truncate(at);
            out.push('…');
        }
        out
    }
}

/// A transport error as the model should see it.
pub fn classify(err: &reqwest::Error) -> ToolError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    let mut innermost = err.to_string();
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<AddressRefused>() {
            return ToolError::Refused(refused.to_string());
        }
        if let Some(failed) = e.downcast_ref::<LookupFailed>() {
            return ToolError::Failed(failed.to_string());
        }
        innermost = e.to_string();
        source = e.source();
    }
    let place = err
        .url()
        .map(|u| {
            let host = u.host_str().unwrap_or_default();
            match u.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }
        })
        .unwrap_or_default();
    ToolError::Failed(if err.is_connect() {
        format!("cannot connect to {place}: {innermost}")
    } else if err.is_body() || err.is_decode() {
        format!("reading the response from {place} failed: {innermost}")
    } else {
        format!("request to {place} failed: {innermost}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_text_drops_a_split_character_and_says_so() {
        let body = Body {
            bytes: "héllo".as_bytes()[..2].to_vec(),
            cut: true,
        };
        assert_eq!(
            body.text(),
            "h\n[body cut at 2 bytes: the rest was not read]"
        );
        let whole = Body {
            bytes: b"ok \xff".to_vec(),
            cut: false,
        };
        assert_eq!(whole.text(), "ok \u{fffd}");
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        let body = Body {
            bytes: b"no\n  such   page here".to_vec(),
            cut: false,
        };
        assert_eq!(body.excerpt(100), "no such page here");
        assert_eq!(body.excerpt(7), "no such…");
    }
}
