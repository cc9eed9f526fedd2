//! How an upstream request travels. `http://` members (the local-model case: Ollama,
//! vLLM or llama.cpp on the host or the LAN) are sent on hyper-util's pooled client
//! directly. Everything else, `https://` members and any member while a proxy is set in
//! the environment, goes through reqwest, which brings TLS, HTTP/2 and proxies.
//!
//! Why two: reqwest wraps the same hyper-util pool in per-request layers (redirect and
//! retry services, a URL parsed again per response, body wrappers). Measured with
//! `loadtest/cpu.sh HOPS=nginx,hyper,reqwest,sluice`, those layers cost about 6 µs per
//! proxied request, 8–9% of sluice's CPU per request. Both paths send the same request:
//! the backends describe it once as an [`UpstreamRequest`].

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{Method, Uri};
use http_body_util::{BodyDataStream, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::BackendConfig;
use crate::error::BackendError;

/// Proxy variables reqwest reads for `http://` URLs: while one is set, `http://` members
/// go through reqwest too, so they are proxied as before.
const PROXY_VARS: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

/// One request as a backend describes it, whichever path sends it.
pub struct UpstreamRequest {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

impl UpstreamRequest {
    pub fn get() -> Self {
        UpstreamRequest {
            method: Method::GET,
            headers: HeaderMap::new(),
            body: None,
        }
    }

    /// A JSON `POST` of `body` (a cheap clone of the shared bytes).
    pub fn json(body: &Bytes) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        UpstreamRequest {
            method: Method::POST,
            headers,
            body: Some(body.clone()),
        }
    }

    /// With `header` (e.g. the backend's [`bearer`] value, built once) added.
    pub fn with(mut self, name: http::header::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// `Authorization: Bearer <key>`, marked sensitive (never printed by `Debug`); `None` for a
/// key no header can carry, which config validation refuses before a backend is built.
pub fn bearer(key: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {key}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// One member's URL for one endpoint, with the path that sends to it.
pub struct Target {
    pub url: reqwest::Url,
    /// Set when the request goes on hyper-util's client directly.
    direct: Option<Uri>,
}

impl Target {
    pub fn new(url: reqwest::Url) -> Self {
        Target::choose(url, proxy_in_env())
    }

    /// The direct path for `http://` without a proxy or credentials in the URL (which
    /// reqwest turns into basic auth); reqwest otherwise.
    fn choose(url: reqwest::Url, proxy: bool) -> Self {
        let plain = url.scheme() == "http" && url.username().is_empty() && url.password().is_none();
        let direct = (plain && !proxy)
            .then(|| Uri::try_from(url.as_str()).ok())
            .flatten();
        Target { url, direct }
    }
}

fn proxy_in_env() -> bool {
    PROXY_VARS
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Both clients of one backend, with its connection settings.
pub struct Transport {
    direct: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    reqwest: reqwest::Client,
}

impl Transport {
    pub fn new(cfg: &BackendConfig) -> Result<Self, BackendError> {
        let reqwest = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            // A gateway forwards; it does not wander off to wherever an upstream points.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(cfg.max_idle_connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| BackendError::Protocol(format!("cannot build HTTP client: {e}")))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        let direct = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(cfg.max_idle_connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Transport { direct, reqwest })
    }

    /// Send `request` to `target` and wait for the response head (no time bound here:
    /// the caller sets it). `timeout` is only named in the error a timed-out connect
    /// becomes.
    pub async fn send(
        &self,
        backend: &str,
        target: &Target,
        request: UpstreamRequest,
        timeout: Duration,
    ) -> Result<Response, BackendError> {
        let UpstreamRequest {
            method,
            mut headers,
            body,
        } = request;
        let Some(uri) = &target.direct else {
            let mut rb = self
                .reqwest
                .request(method, target.url.clone())
                .headers(headers);
            if let Some(body) = body {
                rb = rb.body(body);
            }
            return rb
                .send()
                .await
                .map(Response::Reqwest)
                .map_err(|e| super::upstream::transport_error(backend, &e, timeout));
        };
        // What reqwest sends by default, so both paths look alike upstream.
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        let mut req = http::Request::new(Full::new(body.unwrap_or_default()));
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;
        self.direct
            .request(req)
            .await
            .map(Response::Direct)
            .map_err(|e| direct_error(backend, &e, timeout))
    }
}

/// A failure of the direct path, classified as reqwest's are (`upstream::transport_error`):
/// a connect that timed out is a timeout, other connect failures are connect errors
/// (retried on another member), the rest protocol errors.
fn direct_error(
    backend: &str,
    e: &hyper_util::client::legacy::Error,
    timeout: Duration,
) -> BackendError {
    // hyper-util's connect timeout and the kernel's both end the chain in an I/O
    // error of kind `TimedOut`.
    let mut timed_out = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        timed_out |= err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        cur = err.source();
    }
    let cause = super::upstream::root_cause(e);
    let connect = e.is_connect();
    super::upstream::classify(backend, connect && timed_out, connect, cause, timeout)
}

/// An upstream's answer, from either path.
pub enum Response {
    Direct(http::Response<hyper::body::Incoming>),
    Reqwest(reqwest::Response),
}

/// A failure while reading an answer's body.
pub enum ReadError {
    Direct(hyper::Error),
    Reqwest(reqwest::Error),
}

/// An answer's body as the byte runs the connection hands over.
pub type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, ReadError>> + Send>>;

impl Response {
    pub fn status(&self) -> http::StatusCode {
        match self {
            Response::Direct(r) => r.status(),
            Response::Reqwest(r) => r.status(),
        }
    }

    pub fn into_chunks(self) -> Chunks {
        match self {
            Response::Direct(r) => {
                Box::pin(BodyDataStream::new(r.into_body()).map(|c| c.map_err(ReadError::Direct)))
            }
            Response::Reqwest(r) => {
                Box::pin(r.bytes_stream().map(|c| c.map_err(ReadError::Reqwest)))
            }
        }
    }
}

impl ReadError {
    pub fn into_error(self, backend: &str, read_timeout: Duration) -> BackendError {
        match self {
            ReadError::Reqwest(e) => super::upstream::transport_error(backend, &e, read_timeout),
            ReadError::Direct(e) => BackendError::Protocol(format!(
                "backend `{backend}`: {}",
                super::upstream::root_cause(&e)
            )),
        }
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
