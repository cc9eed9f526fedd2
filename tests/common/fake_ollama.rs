//! A fake Ollama (native API) upstream: `POST /api/chat` as NDJSON
//! (`application/x-ndjson`), `POST /api/embed`, `GET /api/tags`, with lines shaped like
//! the examples in Ollama's `docs/api.md` and `docs/api/errors.mdx`. The upstream model
//! name picks the behaviour:
//! anything else → streams "echo: <last user text>" word by word, then a final
//! `done:true` line with `done_reason`, counts and durations in nanoseconds;
//! `tool-model` → two `get_current_weather` calls, each whole in its own line, arguments
//! as objects; `length` → one word, `done_reason:"length"`; `fail-mid` → one line, then
//! `{"error":...}` with status 200, both in one body chunk; `fail-first` → `{"error":...}` as the very first line;
//! `missing` → HTTP 404 `{"error":"model 'missing' not found"}`; `slow` → a line every
//! 20 ms for a long time, flagging `dropped` when its connection goes away.

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

pub const MODEL_ERROR: &str = "an error was encountered while running the model";

#[derive(Default)]
pub struct Upstream {
    /// Every `/api/chat` and `/api/embed` body received, in order.
    pub requests: Mutex<Vec<Value>>,
    pub chat_calls: AtomicUsize,
    pub tags_calls: AtomicUsize,
    /// Notified when a `slow` stream's connection is dropped.
    pub dropped: Notify,
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

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

pub struct FakeOllama {
    /// Base URL, as configured for an `ollama` backend (`http://127.0.0.1:<port>`).
    pub url: String,
    pub state: Arc<Upstream>,
}

pub async fn start() -> FakeOllama {
    let state = Arc::new(Upstream::default());
    let app = Router::new()
        .route("/api/chat", post(chat))
        .route("/api/embed", post(embed))
        .route("/api/tags", get(tags))
        .with_state(state.clone());
    let addr = super::serve(app).await;
    FakeOllama {
        url: format!("http://{addr}"),
        state,
    }
}

const CREATED_AT: &str = "2023-08-04T08:52:19.385406455-07:00";

/// One streamed line: `{model, created_at, message, done:false}`.
fn line(model: &str, message: Value) -> String {
    let v = json!({ "model": model, "created_at": CREATED_AT, "message": message, "done": false });
    format!("{v}\n")
}

fn text_message(content: &str) -> Value {
    json!({ "role": "assistant", "content": content, "images": null })
}

/// The final line: `done:true`, `done_reason`, token counts, durations in nanoseconds.
fn final_line(model: &str, reason: &str, prompt: u32, eval: u32) -> String {
    let v = json!({
        "model": model, "created_at": "2023-08-04T19:22:45.499127Z",
        "message": { "role": "assistant", "content": "" },
        "done_reason": reason, "done": true,
        "total_duration": 4883583458u64, "load_duration": 1334875,
        "prompt_eval_count": prompt, "prompt_eval_duration": 342546000,
        "eval_count": eval, "eval_duration": 4535599000u64
    });
    format!("{v}\n")
}

fn error_line() -> String {
    format!("{}\n", json!({ "error": MODEL_ERROR }))
}

fn ndjson_stream(
    stream: impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn ndjson(lines: Vec<String>) -> Response {
    ndjson_stream(futures::stream::iter(
        lines.into_iter().map(|l| Ok(Bytes::from(l))),
    ))
}

/// `stream:false`: the lines folded into one `application/json` object of the same shape.
fn single(lines: Vec<String>) -> Response {
    let parsed: Vec<Value> = lines
        .iter()
        .flat_map(|l| l.lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    if let Some(err) = parsed.iter().find(|v| v.get("error").is_some()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(err.clone())).into_response();
    }
    let mut out = parsed.last().cloned().unwrap_or(Value::Null);
    let content: String = parsed
        .iter()
        .filter_map(|v| v["message"]["content"].as_str())
        .collect();
    let calls: Vec<Value> = parsed
        .iter()
        .filter_map(|v| v["message"]["tool_calls"].as_array())
        .flatten()
        .cloned()
        .collect();
    out["message"]["content"] = content.into();
    if !calls.is_empty() {
        out["message"]["tool_calls"] = calls.into();
    }
    Json(out).into_response()
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

struct DropFlag(Arc<Upstream>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.dropped_count.fetch_add(1, Ordering::SeqCst);
        self.0.dropped.notify_waiters();
        self.0.dropped.notify_one();
    }
}

async fn chat(State(state): State<Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    state.chat_calls.fetch_add(1, Ordering::SeqCst);
    state.requests.lock().unwrap().push(body.clone());
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    // Ollama streams unless told `"stream": false`.
    let streaming = body["stream"].as_bool().unwrap_or(true);
    let lines = match model.as_str() {
        "missing" => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "model 'missing' not found" })),
            )
                .into_response()
        }
        "slow" => {
            let flag = DropFlag(state.clone());
            let stream = futures::stream::unfold((0u32, flag), move |(i, flag)| {
                let model = model.clone();
                async move {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if i >= 3000 {
                        return None;
                    }
                    let l = line(&model, text_message(&format!("t{i} ")));
                    Some((Ok::<_, Infallible>(Bytes::from(l)), (i + 1, flag)))
                }
            });
            return ndjson_stream(stream);
        }
        "tool-model" => vec![
            line(
                &model,
                json!({ "role": "assistant", "content": "", "tool_calls": [{ "function": {
                    "index": 0, "name": "get_current_weather",
                    "arguments": { "format": "celsius", "location": "Paris, FR" } } }] }),
            ),
            line(
                &model,
                json!({ "role": "assistant", "content": "", "tool_calls": [{ "function": {
                    "index": 1, "name": "get_current_weather",
                    "arguments": { "format": "celsius", "location": "Tokyo, JP" } } }] }),
            ),
            final_line(&model, "stop", 122, 33),
        ],
        "length" => vec![
            line(&model, text_message("Once")),
            final_line(&model, "length", 26, 1),
        ],
        // Both lines in one write, as a reader meets them when they arrive together.
        "fail-mid" => vec![line(&model, text_message("partial")) + &error_line()],
        "fail-first" => vec![error_line()],
        _ => {
            let text = format!("echo: {}", last_user_text(&body));
            let words: Vec<&str> = text.split(' ').collect();
            let mut lines: Vec<String> = words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let piece = if i == 0 {
                        (*w).to_owned()
                    } else {
                        format!(" {w}")
                    };
                    line(&model, text_message(&piece))
                })
                .collect();
            lines.push(final_line(&model, "stop", 26, words.len() as u32));
            lines
        }
    };
    if streaming {
        ndjson(lines)
    } else {
        single(lines)
    }
}

async fn embed(State(state): State<Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    state.requests.lock().unwrap().push(body.clone());
    if body["model"] == "missing" {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "model 'missing' not found" })),
        )
            .into_response();
    }
    let n = match &body["input"] {
        Value::Array(a) => a.len(),
        _ => 1,
    };
    let embeddings: Vec<Value> = (0..n)
        .map(|i| json!([0.010071029, -0.0017594862, i as f64]))
        .collect();
    Json(json!({
        "model": body["model"], "embeddings": embeddings,
        "total_duration": 14143917, "load_duration": 1019500, "prompt_eval_count": 8 * n
    }))
    .into_response()
}

async fn tags(State(state): State<Arc<Upstream>>) -> Json<Value> {
    state.tags_calls.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "models": [{
        "name": "llama3.2:latest", "model": "llama3.2:latest",
        "modified_at": "2023-12-07T09:32:18.757212583-08:00",
        "size": 3825819519u64,
        "digest": "fe938a131f40e6f6d40083c9f0f430a515233eb2edaa6d72eb85c50d64f2300e",
        "details": { "format": "gguf", "family": "llama", "families": null,
                     "parameter_size": "7B", "quantization_level": "Q4_K_M" }
    }] }))
}
