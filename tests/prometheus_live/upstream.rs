//! The fake OpenAI-compatible upstream of tests/prometheus_live.rs, speaking the OpenAI
//! wire format (`chat.completion`, and `chat.completion.chunk` server-sent events as the
//! API reference's streaming examples), with a delay the test can switch.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

/// An OpenAI-compatible upstream. Model `fail-500`/`fail-503` answer that status; a
/// request offering the `calculator` tool gets a call to it (until a tool result is
/// sent back); a user text starting with `long` is ten chunks 80 ms apart; anything else
/// echoes the text. Every answer waits `delay_ms` first.
#[derive(Default)]
pub struct Upstream {
    /// Milliseconds to wait before every answer.
    pub delay_ms: AtomicU64,
}

/// Starts on 127.0.0.1:0; returns the base URL (`.../v1`) and the shared state.
pub async fn start() -> (String, Arc<Upstream>) {
    let state = Arc::new(Upstream::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(state.clone());
    (
        format!("http://{}/v1", crate::common::serve(app).await),
        state,
    )
}

enum Answer {
    Text { pieces: Vec<String>, gap: Duration },
    Calculator,
}

async fn chat(State(up): State<Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    tokio::time::sleep(Duration::from_millis(up.delay_ms.load(Ordering::SeqCst))).await;
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if let Some(status) = model.strip_prefix("fail-") {
        let status = StatusCode::from_bytes(status.as_bytes()).unwrap();
        let error = json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}});
        return (status, Json(error)).into_response();
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let offers_calculator = body["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["function"]["name"] == "calculator"));
    let text = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let answer = if offers_calculator && !messages.iter().any(|m| m["role"] == "tool") {
        Answer::Calculator
    } else if text.starts_with("long") {
        let pieces = (0..10).map(|i| format!("w{i} ")).collect();
        Answer::Text {
            pieces,
            gap: Duration::from_millis(80),
        }
    } else {
        let pieces = format!("echo: {text}")
            .split(' ')
            .map(|w| format!("{w} "))
            .collect();
        Answer::Text {
            pieces,
            gap: Duration::ZERO,
        }
    };
    if body["stream"] == true {
        sse(&model, answer)
    } else {
        Json(completion(&model, answer)).into_response()
    }
}

const CALL: &str = r#"{"expression": "2+2"}"#;

/// A non-streaming `chat.completion` (sluice streams upstream; kept for the wire format).
fn completion(model: &str, answer: Answer) -> Value {
    let (message, finish, n) = match answer {
        Answer::Calculator => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": CALL}}]}),
            "tool_calls",
            5,
        ),
        Answer::Text { pieces, .. } => (
            json!({"role": "assistant", "content": pieces.concat()}),
            "stop",
            pieces.len(),
        ),
    };
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1694268190, "model": model,
           "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
           "usage": {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}})
}

/// The same answer as `chat.completion.chunk` server-sent events, usage and `[DONE]` last.
fn sse(model: &str, answer: Answer) -> Response {
    let chunk = |delta: Value, finish: Option<&str>| {
        let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1694268190,
                       "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let usage = |n: usize| {
        let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1694268190, "model": model,
                       "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": 9 + n}});
        format!("data: {v}\n\ndata: [DONE]\n\n")
    };
    let mut parts = vec![(
        chunk(json!({"role": "assistant", "content": ""}), None),
        Duration::ZERO,
    )];
    match answer {
        Answer::Calculator => {
            let call = json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": CALL}}]});
            parts.push((chunk(call, None), Duration::ZERO));
            parts.push((
                chunk(json!({}), Some("tool_calls")) + &usage(5),
                Duration::ZERO,
            ));
        }
        Answer::Text { pieces, gap } => {
            let n = pieces.len();
            for piece in pieces {
                parts.push((chunk(json!({"content": piece}), None), gap));
            }
            parts.push((chunk(json!({}), Some("stop")) + &usage(n), Duration::ZERO));
        }
    }
    let stream = futures::stream::iter(parts).then(|(part, gap)| async move {
        tokio::time::sleep(gap).await;
        Ok::<_, Infallible>(Bytes::from(part))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}
