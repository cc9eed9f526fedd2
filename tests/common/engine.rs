//! Support for tests of the embedded engine: a gateway serving the bundled sluice-tiny
//! model, demo tools, and readers for the engine's metrics.

use serde_json::{json, Value};

pub use super::metric;
use super::Gateway;

/// Where the bundled model lives, whatever the test's working directory.
pub fn model_dir() -> String {
    format!("{}/models/sluice-tiny", env!("CARGO_MANIFEST_DIR"))
}

/// A gateway with one onnx backend `local` loading `tiers`, and models:
/// `tiny` (int4), `tiny-fp32` (fp32, if loaded), `tiny-noeos` (int4, ignore_eos) and
/// `tiny-free` (int4 without structured generation: it samples freely).
/// The response cache is off: these tests are about the engine, so identical requests
/// must really run (and not be answered from the cache or merged).
pub async fn start(tiers: &[&str], max_batch_size: usize, queue_size: usize) -> Gateway {
    let list = tiers
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut toml = format!(
        "[cache]\nmode = \"off\"\n\n[backends.local]\nkind = \"onnx\"\nmodel_dir = \"{}\"\ntiers = [{list}]\n\
         max_batch_size = {max_batch_size}\nqueue_size = {queue_size}\nthreads = 1\n\
         ort_library = \"{}/.ort/libonnxruntime.so\"\n\n",
        model_dir(),
        env!("CARGO_MANIFEST_DIR"),
    );
    if tiers.contains(&"int4") {
        toml.push_str("[[models]]\nname = \"tiny\"\nbackend = \"local\"\ntier = \"int4\"\n\n");
        toml.push_str(
            "[[models]]\nname = \"tiny-noeos\"\nbackend = \"local\"\ntier = \"int4\"\n\
             options = { ignore_eos = true }\n\n",
        );
        toml.push_str(
            "[[models]]\nname = \"tiny-free\"\nbackend = \"local\"\ntier = \"int4\"\n\
             structured = false\n\n",
        );
    }
    if tiers.contains(&"fp32") {
        toml.push_str("[[models]]\nname = \"tiny-fp32\"\nbackend = \"local\"\ntier = \"fp32\"\n\n");
    }
    Gateway::start(&toml).await
}

/// The demo tools, as an OpenAI client sends them.
pub fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "calculator",
            "description": "Evaluate an arithmetic expression",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                           "required": ["expression"]}}},
        {"type": "function", "function": {"name": "sql_query",
            "description": "Run a read-only SQL query on the sales database",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                           "required": ["query"]}}},
        {"type": "function", "function": {"name": "current_time",
            "description": "Current time in a timezone",
            "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                           "required": ["timezone"]}}}
    ])
}

/// A greedy request for `model`, with the demo tools when `with_tools`.
pub fn greedy(model: &str, text: &str, with_tools: bool, max_tokens: u32) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "max_tokens": max_tokens,
    });
    if with_tools {
        body["tools"] = tools();
    }
    body
}

/// POST a non-streaming chat request and return the parsed 200 body.
pub async fn complete(gw: &Gateway, body: &Value) -> Value {
    let resp = gw.post("/v1/chat/completions", body).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// What a user sees of an answer: content, tool calls (name + arguments), finish reason.
pub fn answer(body: &Value) -> (String, Vec<(String, String)>, String) {
    let choice = &body["choices"][0];
    let calls = choice["message"]["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    (
                        c["function"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        c["function"]["arguments"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (
        choice["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        calls,
        choice["finish_reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// What a user sees of a streamed answer (as [`answer`]): deltas joined, tool-call
/// fragments reassembled by `index` the way the OpenAI SDKs do.
pub fn stream_answer(
    chunks: &[async_openai::types::chat::CreateChatCompletionStreamResponse],
) -> (String, Vec<(String, String)>, String) {
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = String::new();
    for choice in chunks.iter().flat_map(|c| c.choices.iter()) {
        content.push_str(choice.delta.content.as_deref().unwrap_or_default());
        for call in choice.delta.tool_calls.iter().flatten() {
            let index = call.index as usize;
            while calls.len() <= index {
                calls.push(Default::default());
            }
            if let Some(f) = &call.function {
                calls[index]
                    .0
                    .push_str(f.name.as_deref().unwrap_or_default());
                calls[index]
                    .1
                    .push_str(f.arguments.as_deref().unwrap_or_default());
            }
        }
        if let Some(reason) = &choice.finish_reason {
            finish = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
        }
    }
    (content, calls, finish)
}

/// Poll a metric until `pred` holds (or fail after 10 s).
pub async fn wait_metric(gw: &Gateway, prefix: &str, pred: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..200 {
        let v = metric(gw, prefix).await;
        if pred(v) {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{prefix} never reached the expected value");
}
