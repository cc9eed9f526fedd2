//! Plumbing shared by the HTTP backends: [`Upstream`] holds the pooled clients
//! (`transport.rs`: hyper-util directly for `http://`, reqwest otherwise; TCP_NODELAY on),
//! the timeouts and the resilience of the backend's calls (its [`Pool`] of members,
//! [`Retry`] policy and optional [`Breaker`], applied in `call.rs`); sends with a
//! time-to-response bound, maps transport failures to [`BackendError`], and streams
//! bodies (`body.rs`) under the read timeout until dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::breaker::{Breaker, BreakerState};
use super::pool::{MemberState, Pool};
use super::retry::Retry;
use super::transport::{Chunks, Response, Target, Transport, UpstreamRequest};
use crate::config::BackendConfig;
use crate::error::BackendError;
use crate::metrics::{Metrics, ResilienceMetrics};

/// One backend's HTTP side: its name (for errors), members, client, timeouts and
/// resilience policies.
pub struct Upstream {
    pub name: String,
    pub(super) transport: Transport,
    pub(super) pool: Arc<Pool>,
    pub(super) retry: Retry,
    pub(super) breaker: Option<Breaker>,
    pub(super) metrics: ResilienceMetrics,
    pub(super) request_timeout: Duration,
    read_timeout: Duration,
}

/// One path under every member's base URL, parsed once at start-up.
pub struct Endpoint(pub(super) Vec<Target>);

/// Builds the request for one attempt (called per attempt and per probed member: each
/// sends a fresh copy).
pub type Build<'a> = &'a (dyn Fn() -> UpstreamRequest + Send + Sync);

/// The backend's pool and breaker as `/readyz` shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamState {
    pub breaker: Option<BreakerState>,
    pub members: Vec<MemberState>,
}

impl Upstream {
    pub fn new(name: &str, cfg: &BackendConfig, metrics: &Metrics) -> Result<Self, BackendError> {
        let transport = Transport::new(cfg)?;
        let m = &metrics.resilience;
        let breaker = cfg.breaker.clone().map(|b| {
            Breaker::new(
                name,
                b,
                m.breaker_state.with_label_values(&[name]),
                m.breaker_opened.with_label_values(&[name]),
            )
        });
        Ok(Upstream {
            name: name.to_owned(),
            pool: Arc::new(Pool::new(
                name,
                &cfg.base_urls(),
                cfg.outlier.clone().unwrap_or_default(),
                m,
            )),
            retry: Retry::new(cfg.retry.clone().unwrap_or_default()),
            breaker,
            metrics: m.clone(),
            transport,
            request_timeout: cfg.request_timeout,
            read_timeout: cfg.read_timeout,
        })
    }

    /// An endpoint under every member's base URL.
    pub fn endpoint(&self, path: &str) -> Result<Endpoint, BackendError> {
        let urls = self
            .pool
            .members
            .iter()
            .map(|m| {
                reqwest::Url::parse(&format!("{}{path}", m.base))
                    .map(Target::new)
                    .map_err(|e| {
                        BackendError::Protocol(format!(
                            "backend `{}`: bad URL {}{path}: {e}",
                            self.name, m.base
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Endpoint(urls))
    }

    /// Send (with retries, on the pool, through the breaker) and stream the response
    /// body; gives up when `cancel` fires before the answer starts (after that, dropping
    /// the stream cancels). Once the answer is accepted nothing is retried: a failure
    /// later in the body reaches the caller as a stream error.
    pub async fn stream(
        &self,
        endpoint: &Endpoint,
        build: Build<'_>,
        cancel: CancellationToken,
    ) -> Result<impl Stream<Item = Result<Bytes, BackendError>> + Send + 'static, BackendError>
    {
        let (response, outstanding) = tokio::select! {
            r = self.call(endpoint, build) => r?,
            _ = cancel.cancelled() => return Err(BackendError::Protocol("cancelled".into())),
        };
        Ok(super::body::stream(
            &self.name,
            response,
            self.read_timeout,
            outstanding,
        ))
    }

    /// Send (as [`Self::stream`]) and read the whole response body (at most
    /// [`MAX_BODY_BYTES`]).
    pub async fn body(&self, endpoint: &Endpoint, build: Build<'_>) -> Result<Bytes, BackendError> {
        let (response, _outstanding) = self.call(endpoint, build).await?;
        let read = read_capped(response.into_chunks(), MAX_BODY_BYTES);
        match tokio::time::timeout(self.request_timeout, read).await {
            Err(_) => Err(BackendError::Timeout {
                backend: self.name.clone(),
                after: self.request_timeout,
            }),
            Ok(Err(e)) => Err(e.into_error(&self.name, self.request_timeout)),
            Ok(Ok((_, true))) => Err(BackendError::Protocol(format!(
                "backend `{}` answered with more than {MAX_BODY_BYTES} bytes",
                self.name
            ))),
            Ok(Ok((body, false))) => Ok(body),
        }
    }

    /// A readiness probe of every member at once: any 2xx within five seconds. Each
    /// member's verdict steers the pool; the backend is ready when one member is.
    pub async fn probe(&self, endpoint: &Endpoint, build: Build<'_>) -> Result<(), BackendError> {
        let timeout = self.request_timeout.min(Duration::from_secs(5));
        let probes = endpoint
            .0
            .iter()
            .map(|target| send(&self.transport, &self.name, target, build(), timeout));
        let results = futures::future::join_all(probes).await;
        let mut first_error = None;
        for (i, result) in results.into_iter().enumerate() {
            self.pool.set_probe(i, result.is_ok());
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if self.pool.members.len() > 1 && first_error.is_some() {
            let ok = self.pool.state().iter().filter(|m| m.probe_ok).count();
            if ok > 0 {
                return Ok(());
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The pool and breaker now.
    pub fn state(&self) -> UpstreamState {
        UpstreamState {
            breaker: self.breaker.as_ref().map(Breaker::state),
            members: self.pool.state(),
        }
    }
}

/// A request body as JSON bytes: serialized once, sent again as is by a retry.
pub(super) fn json_bytes(body: &impl serde::Serialize) -> Result<Bytes, BackendError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| BackendError::Protocol(format!("cannot encode the request: {e}")))
}

/// Largest whole response read from an upstream (embeddings): more is a protocol error.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Of an error response, only this much is read.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Read a body up to `max` bytes; `true` when it was longer (and cut there).
async fn read_capped(
    mut chunks: Chunks,
    max: usize,
) -> Result<(Bytes, bool), super::transport::ReadError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > max {
            body.extend_from_slice(&chunk[..max - body.len()]);
            return Ok((body.freeze(), true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), false))
}

/// Send a request to `target` and wait for the response head, bounded by `timeout`.
/// Non-2xx answers become `BackendError::Upstream` with the upstream's own message.
pub(super) async fn send(
    transport: &Transport,
    backend: &str,
    target: &Target,
    mut request: UpstreamRequest,
    timeout: Duration,
) -> Result<Response, BackendError> {
    // The upstream's logs can be matched with ours.
    if let Some(id) = crate::request_id::RequestId::current() {
        if let Ok(value) = http::HeaderValue::from_str(id.as_str()) {
            request.headers.insert(crate::request_id::HEADER, value);
        }
    }
    let sent = transport.send(backend, target, request, timeout);
    let response = match tokio::time::timeout(timeout, sent).await {
        Err(_) => {
            return Err(BackendError::Timeout {
                backend: backend.to_owned(),
                after: timeout,
            })
        }
        Ok(result) => result?,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    // Only the start of an error body is read: enough for its message.
    let read = read_capped(response.into_chunks(), MAX_ERROR_BODY_BYTES);
    let body = tokio::time::timeout(timeout, read)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|(body, _)| body)
        .unwrap_or_default();
    Err(BackendError::Upstream {
        backend: backend.to_owned(),
        status: status.as_u16(),
        message: error_message(&body),
    })
}

/// The upstream's error text: `{"error":"..."}` (Ollama), `{"error":{"message":...}}`
/// (OpenAI), or the raw body.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(s) = v["error"].as_str() {
            return s.to_owned();
        }
        if let Some(s) = v["error"]["message"].as_str() {
            return s.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "no error message".to_owned()
    } else {
        text.chars().take(500).collect()
    }
}

pub(super) fn transport_error(
    backend: &str,
    e: &reqwest::Error,
    timeout: Duration,
) -> BackendError {
    classify(
        backend,
        e.is_timeout(),
        e.is_connect(),
        root_cause(e),
        timeout,
    )
}

/// A transport failure as the pipeline sees it, whichever client met it: a timeout, a
/// connect failure (retried on another member), or else a protocol error. `timeout` is
/// the bound named in a timeout's message.
pub(super) fn classify(
    backend: &str,
    timed_out: bool,
    connect: bool,
    cause: String,
    timeout: Duration,
) -> BackendError {
    if timed_out {
        BackendError::Timeout {
            backend: backend.to_owned(),
            after: timeout,
        }
    } else if connect {
        BackendError::Connect {
            backend: backend.to_owned(),
            detail: cause,
        }
    } else {
        BackendError::Protocol(format!("backend `{backend}`: {cause}"))
    }
}

pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
