//! Plumbing shared by the HTTP backends: the pooled client (TCP_NODELAY on), sending
//! with a time-to-response bound, mapping transport failures to [`BackendError`], and
//! a body stream that enforces the read timeout and stops on cancellation.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::config::BackendConfig;
use crate::error::BackendError;

/// A pooled HTTP client for one backend.
pub fn client(cfg: &BackendConfig) -> Result<reqwest::Client, BackendError> {
    reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(cfg.max_idle_connections)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| BackendError::Protocol(format!("cannot build HTTP client: {e}")))
}

/// Send a request and wait for the response head, bounded by `timeout`. Non-2xx
/// answers become `BackendError::Upstream` with the upstream's own message.
pub async fn send(
    backend: &str,
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, BackendError> {
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => {
            return Err(BackendError::Timeout {
                backend: backend.to_owned(),
                after: timeout,
            })
        }
        Ok(Err(e)) => return Err(transport_error(backend, &e, timeout)),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = tokio::time::timeout(timeout, response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
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

pub fn transport_error(backend: &str, e: &reqwest::Error, timeout: Duration) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout {
            backend: backend.to_owned(),
            after: timeout,
        }
    } else if e.is_connect() {
        BackendError::Connect {
            backend: backend.to_owned(),
            detail: root_cause(e),
        }
    } else {
        BackendError::Protocol(format!("backend `{backend}`: {}", root_cause(e)))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The response body as a stream of chunks that fails with `Timeout` when the upstream
/// is silent for longer than `read_timeout`, and ends when `cancel` fires. Dropping it
/// drops the upstream connection.
pub fn body_stream(
    backend: &str,
    response: reqwest::Response,
    read_timeout: Duration,
    cancel: CancellationToken,
) -> impl Stream<Item = Result<Bytes, BackendError>> + Send + 'static {
    let backend = backend.to_owned();
    let body = response.bytes_stream();
    futures::stream::unfold(
        (Box::pin(body), backend, false),
        move |(mut body, backend, done)| {
            let cancel = cancel.clone();
            async move {
                if done {
                    return None;
                }
                tokio::select! {
                    _ = cancel.cancelled() => None,
                    next = tokio::time::timeout(read_timeout, body.next()) => match next {
                        Err(_) => {
                            let err = BackendError::Timeout { backend: backend.clone(), after: read_timeout };
                            Some((Err(err), (body, backend, true)))
                        }
                        Ok(None) => None,
                        Ok(Some(Ok(bytes))) => Some((Ok(bytes), (body, backend, false))),
                        Ok(Some(Err(e))) => {
                            let err = transport_error(&backend, &e, read_timeout);
                            Some((Err(err), (body, backend, true)))
                        }
                    },
                }
            }
        },
    )
}
