//! Errors: one enum per stage and the single mapping from each of them to an HTTP
//! status and an OpenAI-shaped error body (`{"error":{message,type,param,code}}`).
//! `http/error.rs` turns an [`ApiError`] into a response; nothing here knows axum.

use std::time::Duration;

use serde::Serialize;

/// A failure as the client sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for the `retry-after` header (429 and 503).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        let mut e = ApiError::new(400, "invalid_request_error", message);
        e.param = param.map(str::to_owned);
        e
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after.as_secs().max(1));
        self
    }

    /// The JSON body clients parse.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

/// Authentication stage.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")]
    Missing,
    #[error("Incorrect API key provided.")]
    Invalid,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(401, "invalid_request_error", e.to_string()).with_code("invalid_api_key")
    }
}

/// Routing stage: logical model → deployment.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RouteError {
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    #[error("{message}")]
    Unsupported {
        message: String,
        param: Option<&'static str>,
    },
    /// A forced tier (`model@tier` or `x-sluice-tier`) the model does not have.
    #[error("{}", unknown_tier(model, tier, tiers))]
    UnknownTier {
        model: String,
        tier: String,
        tiers: Vec<String>,
        param: &'static str,
    },
}

fn unknown_tier(model: &str, tier: &str, tiers: &[String]) -> String {
    if tiers.is_empty() {
        format!("model `{model}` has no tiers to choose from, so tier `{tier}` cannot be forced; send the model name alone")
    } else {
        format!(
            "model `{model}` has no tier `{tier}`; its tiers, cheapest first: {}",
            tiers.join(", ")
        )
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match &e {
            RouteError::UnknownModel(_) => {
                ApiError::new(404, "invalid_request_error", e.to_string())
                    .with_code("model_not_found")
            }
            RouteError::Unsupported { param, .. } => {
                ApiError::invalid_request(e.to_string(), *param).with_code("unsupported_value")
            }
            RouteError::UnknownTier { param, .. } => {
                ApiError::invalid_request(e.to_string(), Some(param)).with_code("unknown_tier")
            }
        }
    }
}

/// Talking to an engine.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum BackendError {
    /// The upstream could not be reached at all.
    #[error("could not connect to backend `{backend}`: {detail}")]
    Connect { backend: String, detail: String },
    /// The upstream took longer than the configured time.
    #[error("backend `{backend}` timed out after {after:?}")]
    Timeout { backend: String, after: Duration },
    /// The upstream answered with an error.
    #[error("backend `{backend}` returned {status}: {message}")]
    Upstream {
        backend: String,
        status: u16,
        message: String,
    },
    /// The upstream reported an error inside a response it had started (an Ollama
    /// `{"error":...}` line, an OpenAI-style error event).
    #[error("backend `{backend}` failed: {message}")]
    Failed { backend: String, message: String },
    /// The upstream sent something that does not follow its protocol.
    #[error("{0}")]
    Protocol(String),
    /// The request can never be served by this backend (e.g. context too long).
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    /// Prompt (plus the requested completion) does not fit the model's context.
    #[error("{}", context_message(*max_context, *prompt_tokens, *completion_tokens))]
    ContextLength {
        max_context: usize,
        prompt_tokens: usize,
        /// `max_tokens` as requested, when that is what overflows.
        completion_tokens: Option<usize>,
    },
    /// One embedding input is longer than the model takes.
    #[error(
        "This model's maximum context length is {max} tokens, however input[{index}] has \
         {tokens} tokens (special tokens included). Please reduce the length of the input."
    )]
    InputTooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },
    /// The gateway is shutting down and cut the generation at its drain deadline.
    #[error("the gateway is shutting down; retry on another replica")]
    ShuttingDown,
    /// The engine is at capacity; try again later.
    #[error("backend `{backend}` is overloaded")]
    Overloaded {
        backend: String,
        retry_after: Duration,
    },
    /// The gateway did not call the upstream: its circuit breaker is open, or every
    /// member of its pool is ejected.
    #[error("backend `{backend}` is unavailable: {reason}")]
    Unavailable {
        backend: String,
        reason: String,
        retry_after: Duration,
    },
}

impl BackendError {
    /// May another deployment serve the request instead? Only failures before the
    /// upstream sent anything: no connection, a timeout waiting for its answer, a 5xx
    /// or 429 status, an open breaker, an ejected pool, a full engine queue.
    pub fn is_fallback_error(&self) -> bool {
        match self {
            BackendError::Connect { .. }
            | BackendError::Timeout { .. }
            | BackendError::Overloaded { .. }
            | BackendError::Unavailable { .. } => true,
            BackendError::Upstream { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// OpenAI's wording, so clients that parse it keep working.
fn context_message(max: usize, prompt: usize, completion: Option<usize>) -> String {
    match completion {
        None => format!(
            "This model's maximum context length is {max} tokens. However, your messages \
             resulted in {prompt} tokens. Please reduce the length of the messages."
        ),
        Some(c) => format!(
            "This model's maximum context length is {max} tokens. However, you requested {} \
             tokens ({prompt} in the messages, {c} in the completion). Please reduce the length \
             of the messages or completion.",
            prompt + c
        ),
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let message = e.to_string();
        match e {
            BackendError::Connect { .. }
            | BackendError::Protocol(_)
            | BackendError::Failed { .. } => {
                ApiError::new(502, "api_error", message).with_code("upstream_error")
            }
            BackendError::Timeout { .. } => {
                ApiError::new(504, "api_error", message).with_code("upstream_timeout")
            }
            BackendError::InvalidRequest { param, .. } => ApiError::invalid_request(message, param),
            BackendError::ContextLength { .. } => {
                ApiError::invalid_request(message, Some("messages"))
                    .with_code("context_length_exceeded")
            }
            BackendError::InputTooLong { .. } => ApiError::invalid_request(message, Some("input"))
                .with_code("context_length_exceeded"),
            BackendError::ShuttingDown => ApiError::new(503, "api_error", message)
                .with_code("shutting_down")
                .with_retry_after(Duration::from_secs(1)),
            BackendError::Overloaded { retry_after, .. } => {
                ApiError::new(503, "api_error", message)
                    .with_code("overloaded")
                    .with_retry_after(retry_after)
            }
            BackendError::Unavailable { retry_after, .. } => {
                ApiError::new(503, "api_error", message)
                    .with_code("upstream_unavailable")
                    .with_retry_after(retry_after)
            }
            BackendError::Upstream { status, .. } => match status {
                // The upstream throttles or sheds load: pass it on so clients back off.
                429 => ApiError::new(429, "rate_limit_error", message)
                    .with_code("upstream_rate_limited")
                    .with_retry_after(Duration::from_secs(1)),
                503 => ApiError::new(503, "api_error", message)
                    .with_code("upstream_overloaded")
                    .with_retry_after(Duration::from_secs(1)),
                // A request the upstream rejects as invalid is the client's to fix.
                400 | 413 | 422 => ApiError::invalid_request(message, None),
                _ => ApiError::new(502, "api_error", message).with_code("upstream_error"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::invalid_request("bad temperature", Some("temperature"));
        let body = e.body();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(body["error"]["message"], "bad temperature");
        assert!(body["error"]["code"].is_null());
    }

    #[test]
    fn backend_errors_map_to_gateway_statuses() {
        let connect = BackendError::Connect {
            backend: "b".into(),
            detail: "refused".into(),
        };
        assert_eq!(ApiError::from(connect).status, 502);
        let timeout = BackendError::Timeout {
            backend: "b".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(ApiError::from(timeout).status, 504);
        let busy = BackendError::Upstream {
            backend: "b".into(),
            status: 503,
            message: "queue full".into(),
        };
        let e = ApiError::from(busy);
        assert_eq!((e.status, e.retry_after), (503, Some(1)));
    }
}
