//! A scripted OpenAI-compatible upstream for the agent loop: the first user message is
//! a JSON script saying which tool calls the model makes on each turn, and the fake
//! streams them as the OpenAI API does (chunks with `tool_calls` deltas, then
//! `finish_reason: "tool_calls"`, then a usage chunk). Once the script is used up (or
//! when the request says `tool_choice: "none"`) it answers with text that quotes every
//! tool result it was given, so tests can see what reached the model.
//!
//! ```json
//! {"turns": [[{"name": "calculator", "arguments": {"expression": "2+2"}}], ...],
//!  "answer": "done", "forever": false, "delay_ms": 0}
//! ```
//! `forever`: repeat the last turn's calls on every turn. `delay_ms`: wait before
//! answering each turn. Usage per turn: 10 prompt tokens per message, 5 completion.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Default)]
pub struct Upstream {
    /// Every request body, in order.
    pub requests: Mutex<Vec<Value>>,
}

pub struct Scripted {
    pub url: String,
    pub state: Arc<Upstream>,
}

impl Scripted {
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }
}

pub async fn start() -> Scripted {
    let state = Arc::new(Upstream::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(state.clone());
    let addr = super::serve(app).await;
    Scripted {
        url: format!("http://{addr}/v1"),
        state,
    }
}

/// A script as the first user message.
pub fn script(turns: Value, answer: &str) -> String {
    json!({"turns": turns, "answer": answer}).to_string()
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let v = json!({
        "id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "scripted", "system_fingerprint": null,
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]
    });
    format!("data: {v}\n\n")
}

fn usage(prompt: u64, completion: u64) -> String {
    let v = json!({
        "id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "scripted", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    });
    format!("data: {v}\n\n")
}

async fn chat(State(state): State<Arc<Upstream>>, Json(body): Json<Value>) -> Response {
    state.requests.lock().unwrap().push(body.clone());
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let first_user = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("{}");
    let script: Value = serde_json::from_str(first_user).unwrap_or(json!({}));
    if let Some(ms) = script["delay_ms"].as_u64() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let done_turns = messages
        .iter()
        .filter(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .count();
    let turns = script["turns"].as_array().cloned().unwrap_or_default();
    let forever = script["forever"].as_bool().unwrap_or(false);
    let calls = if body["tool_choice"] == "none" {
        None
    } else if done_turns < turns.len() {
        Some(turns[done_turns].clone())
    } else if forever {
        turns.last().cloned()
    } else {
        None
    };
    let mut parts = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    match calls {
        Some(calls) => {
            for (i, call) in calls
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let args = match &call["arguments"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let (head, tail) = args.split_at(args.len() / 2);
                parts.push(chunk(
                    json!({"tool_calls": [{"index": i, "id": format!("call_t{done_turns}_{i}"), "type": "function",
                        "function": {"name": call["name"], "arguments": head}}]}),
                    None,
                ));
                parts.push(chunk(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": tail}}]}),
                    None,
                ));
            }
            parts.push(chunk(json!({}), Some("tool_calls")));
        }
        None => {
            let results: Vec<String> = messages
                .iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap_or("").to_owned())
                .collect();
            let answer = script["answer"].as_str().unwrap_or("done");
            let text = format!("{answer} [{}]", results.join(" | "));
            for word in text.split_inclusive(' ') {
                parts.push(chunk(json!({"content": word}), None));
            }
            parts.push(chunk(json!({}), Some("stop")));
        }
    }
    parts.push(usage(10 * messages.len() as u64, 5));
    parts.push("data: [DONE]\n\n".into());
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
