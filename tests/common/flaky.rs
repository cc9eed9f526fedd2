//! A scripted, failing OpenAI-compatible and Ollama upstream for the resilience tests:
//! every chat or embeddings call takes the next [`Step`] from a shared script (answer
//! normally once the script is used up) and is counted, so a test can say exactly how
//! many requests reached it. `/v1/models` and `/api/tags` answer 200 unless
//! `probe_fails` is set.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Answer with this error status.
    Status(u16),
    /// Answer 200 and one SSE chunk (NDJSON line for Ollama), then drop the connection.
    BreakAfterFirstChunk,
    /// Answer normally.
    Ok,
}

#[derive(Default)]
pub struct Upstream {
    pub script: Mutex<VecDeque<Step>>,
    /// Chat and embeddings calls received.
    pub calls: AtomicUsize,
    pub probe_fails: AtomicBool,
    /// Readiness probes received (`/v1/models`, `/api/tags`).
    pub probes: AtomicUsize,
    /// The `model` of every call, in order.
    pub models: Mutex<Vec<String>>,
}

pub struct Flaky {
    /// The OpenAI base URL (`.../v1`).
    pub url: String,
    /// The Ollama base URL.
    pub ollama_url: String,
    pub state: Arc<Upstream>,
}

impl Flaky {
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
    pub fn script(&self, steps: &[Step]) {
        self.state
            .script
            .lock()
            .unwrap()
            .extend(steps.iter().copied());
    }
}

pub async fn start(steps: &[Step]) -> Flaky {
    let state = Arc::new(Upstream::default());
    state.script.lock().unwrap().extend(steps.iter().copied());
    let app = Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/embeddings", post(openai_embed))
        .route("/v1/models", get(probe))
        .route("/api/chat", post(ollama_chat))
        .route("/api/tags", get(probe))
        .with_state(state.clone());
    let addr = super::serve(app).await;
    Flaky {
        url: format!("http://{addr}/v1"),
        ollama_url: format!("http://{addr}"),
        state,
    }
}

/// A URL on 127.0.0.1 where nothing listens (a port bound, then closed).
pub fn dead_url(path: &str) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}{path}")
}

fn next(state: &Upstream, body: &Value) -> Step {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    state.models.lock().unwrap().push(model);
    state.script.lock().unwrap().pop_front().unwrap_or(Step::Ok)
}

fn status(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap();
    (
        status,
        Json(json!({"error": {"message": format!("scripted {code}"), "type": "server_error"}})),
    )
        .into_response()
}

async fn probe(State(state): State<Arc<Upstream>>) -> Response {
    state.probes.fetch_add(1, Ordering::SeqCst);
    if state.probe_fails.load(Ordering::SeqCst) {
        return status(503);
    }
    Json(json!({"object": "list", "data": [], "models": []})).into_response()
}

fn stream(parts: Vec<String>, then_break: bool) -> Response {
    let body = async_stream::stream! {
        for p in parts {
            yield Ok::<_, std::io::Error>(Bytes::from(p));
        }
        if then_break {
            // Let the head and the first chunk reach the gateway, then cut the connection.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            yield Err(std::io::Error::other("connection dropped"));
        }
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

fn sse_chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    let v = json!({"id": "chatcmpl-flaky", "object": "chat.completion.chunk", "created": 1,
        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

async fn openai_chat(State(state): State<Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    match next(&state, &body) {
        Step::Status(code) => status(code),
        Step::BreakAfterFirstChunk => stream(
            vec![sse_chunk(
                &model,
                json!({"role": "assistant", "content": "partial"}),
                None,
            )],
            true,
        ),
        Step::Ok => stream(
            vec![
                sse_chunk(
                    &model,
                    json!({"role": "assistant", "content": "served"}),
                    None,
                ),
                sse_chunk(&model, json!({}), Some("stop")),
                "data: [DONE]\n\n".to_owned(),
            ],
            false,
        ),
    }
}

async fn openai_embed(State(state): State<Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    match next(&state, &body) {
        Step::Status(code) => status(code),
        _ => Json(json!({"object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3}}))
        .into_response(),
    }
}

async fn ollama_chat(State(state): State<Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let line = |content: &str, done: bool| {
        let mut v = json!({"model": model, "created_at": "2024-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": content}, "done": done});
        if done {
            v["done_reason"] = json!("stop");
            v["prompt_eval_count"] = json!(3);
            v["eval_count"] = json!(1);
        }
        format!("{v}\n")
    };
    match next(&state, &body) {
        Step::Status(code) => status(code),
        Step::BreakAfterFirstChunk => stream(vec![line("partial", false)], true),
        Step::Ok => stream(vec![line("served", false), line("", true)], false),
    }
}
