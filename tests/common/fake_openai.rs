//! A fake OpenAI-compatible upstream (chunks shaped like the OpenAI API reference's
//! streaming examples). The upstream model name picks the behaviour:
//! anything else → streams "echo: <last user text>" word by word;
//! `tool-model` → a streamed `get_current_weather` tool call; `fail-500`, `fail-429`, `fail-503` →
//! error statuses; `fail-mid` → an error event after one chunk; `slow-short` → ten chunks 50 ms apart; `slow` → a chunk every
//! 20 ms for a long time, flagging `dropped` when its connection goes away; `hang` →
//! never answers; `stall` → one chunk, then silence.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Upstream {
    /// Every chat/embeddings request body received, in order.
    pub requests: Mutex<Vec<Value>>,
    /// Authorization headers received.
    pub auth_headers: Mutex<Vec<String>>,
    /// `x-request-id` headers received with chat requests.
    pub request_ids: Mutex<Vec<String>>,
    pub chat_calls: AtomicUsize,
    /// Notified when a `slow` stream's or a `hang` request's connection is dropped.
    pub dropped: Notify,
    /// Notified when a chat request arrives.
    pub received: Notify,
    pub dropped_count: AtomicUsize,
}

impl Upstream {
    pub fn last_request(&self) -> Value {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or(Value::Null)
    }
}

pub struct FakeOpenAi {
    pub url: String,
    pub state: Arc<Upstream>,
}

pub async fn start() -> FakeOpenAi {
    let state = Arc::new(Upstream::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .with_state(state.clone());
    let addr = super::serve(app).await;
    FakeOpenAi {
        url: format!("http://{addr}/v1"),
        state,
    }
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    let v = json!({
        "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": model, "system_fingerprint": "fp_44709d6fcb",
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]
    });
    format!("data: {v}\n\n")
}

fn usage_chunk(model: &str, prompt: u32, completion: u32) -> String {
    let v = json!({
        "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
        "model": model, "choices": [],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion }
    });
    format!("data: {v}\n\n")
}

fn sse(parts: Vec<String>) -> Response {
    let stream = futures::stream::iter(
        parts
            .into_iter()
            .map(|p| Ok::<_, Infallible>(Bytes::from(p))),
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
            _ => String::new(),
        })
        .unwrap_or_default()
}

struct DropFlag(Arc<Upstream>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.dropped_count.fetch_add(1, Ordering::SeqCst);
        self.0.dropped.notify_waiters();
        self.0.dropped.notify_one();
    }
}

async fn chat(
    State(state): State<Arc<Upstream>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.chat_calls.fetch_add(1, Ordering::SeqCst);
    state.requests.lock().unwrap().push(body.clone());
    state.received.notify_waiters();
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        state.auth_headers.lock().unwrap().push(auth.to_owned());
    }
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        state.request_ids.lock().unwrap().push(id.to_owned());
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    match model.as_str() {
        "fail-500" => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}})),
            )
                .into_response()
        }
        "fail-429" => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})),
            )
                .into_response()
        }
        "fail-503" => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"message": "The engine is currently overloaded, please try again later", "type": "server_error", "param": null, "code": null}})),
            )
                .into_response()
        }
        "hang" => {
            let _flag = DropFlag(state.clone());
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::NO_CONTENT.into_response();
        }
        _ => {}
    }
    let role = chunk(&model, json!({"role": "assistant", "content": ""}), None);
    match model.as_str() {
        "tool-model" => sse(vec![
            role,
            chunk(
                &model,
                json!({"tool_calls": [{"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function", "function": {"name": "get_current_weather", "arguments": ""}}]}),
                None,
            ),
            chunk(
                &model,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\": "}}]}),
                None,
            ),
            chunk(
                &model,
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Boston, MA\"}"}}]}),
                None,
            ),
            chunk(&model, json!({}), Some("tool_calls")),
            usage_chunk(&model, 82, 18),
            "data: [DONE]\n\n".into(),
        ]),
        "fail-mid" => sse(vec![
            role,
            chunk(&model, json!({"content": "partial"}), None),
            format!(
                "data: {}\n\n",
                json!({"error": {"message": "upstream model crashed", "type": "server_error"}})
            ),
        ]),
        "stall" => {
            let first = Bytes::from(role + &chunk(&model, json!({"content": "first"}), None));
            let stream = futures::stream::once(async move { Ok::<_, Infallible>(first) }).chain(
                futures::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(Bytes::new())
                }),
            );
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        "slow-short" => {
            let stream = futures::stream::iter(0..10).then(move |i| {
                let model = model.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let c = if i < 9 {
                        chunk(&model, json!({"content": format!("s{i} ")}), None)
                    } else {
                        chunk(&model, json!({}), Some("stop")) + "data: [DONE]\n\n"
                    };
                    Ok::<_, Infallible>(Bytes::from(c))
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        "slow-fail" => {
            let stream = futures::stream::iter(0..6).then(move |i| {
                let model = model.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let c = if i < 5 {
                        chunk(&model, json!({"content": format!("f{i} ")}), None)
                    } else {
                        format!(
                            "data: {}\n\n",
                            json!({"error": {"message": "upstream model crashed", "type": "server_error"}})
                        )
                    };
                    Ok::<_, Infallible>(Bytes::from(c))
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        "slow" => {
            let flag = DropFlag(state.clone());
            let model2 = model.clone();
            let stream = futures::stream::unfold((0u32, flag), move |(i, flag)| {
                let model = model2.clone();
                async move {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if i >= 3000 {
                        return None;
                    }
                    let c = chunk(&model, json!({"content": format!("t{i} ")}), None);
                    Some((Ok::<_, Infallible>(Bytes::from(c)), (i + 1, flag)))
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        _ => {
            let text = format!("echo: {}", last_user_text(&body));
            let mut parts = vec![role];
            for (i, word) in text.split(' ').enumerate() {
                let piece = if i == 0 {
                    word.to_owned()
                } else {
                    format!(" {word}")
                };
                parts.push(chunk(&model, json!({"content": piece}), None));
            }
            parts.push(chunk(&model, json!({}), Some("stop")));
            if body["stream_options"]["include_usage"] == true {
                parts.push(usage_chunk(&model, 9, text.split(' ').count() as u32));
            }
            parts.push("data: [DONE]\n\n".into());
            sse(parts)
        }
    }
}

use futures::StreamExt;

async fn embeddings(State(state): State<Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    state.requests.lock().unwrap().push(body.clone());
    let inputs: Vec<Value> = match &body["input"] {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, _)| json!({"object": "embedding", "index": i, "embedding": [0.0023064255, -0.009327292, i as f64]}))
        .collect();
    Json(json!({
        "object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": 8 * inputs.len(), "total_tokens": 8 * inputs.len()}
    }))
    .into_response()
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1686935002, "owned_by": "openai"}]}),
    )
}
