//! Ollama's native wire format: domain request → `/api/chat` body (tool-call arguments
//! as objects, images as bare base64, sampling in `options`), NDJSON lines → domain
//! events (tool calls get an `id`, `index` and JSON-string arguments; usage from
//! `prompt_eval_count` / `eval_count`; an `{"error":...}` line ends the stream).

use crate::domain::MAX_TOOL_CALLS;
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::backend::Deployment;
use crate::domain::{
    ChatRequest, ContentPart, EmbedRequest, EmbedResponse, Event, FinishReason, ResponseFormat,
    Role, ToolChoice, Usage,
};
use crate::error::BackendError;

/// The `/api/chat` body. Fails with `InvalidRequest` for what Ollama cannot take
/// (remote image URLs, tool-call arguments that are not JSON).
pub fn chat_body(req: &ChatRequest, dep: &Deployment) -> Result<Value, BackendError> {
    let invalid = |message: String, param: &'static str| BackendError::InvalidRequest {
        message,
        param: Some(param),
    };
    // Tool results name their tool in Ollama; OpenAI history names the call id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = m.role.as_str();
        let mut out = json!({ "role": role, "content": m.text_content() });
        let mut images = Vec::new();
        for part in &m.content {
            if let ContentPart::Image { url } = part {
                let data = url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                    .map(|(_, data)| data)
                    .ok_or_else(|| {
                        invalid(
                            format!("messages[{i}]: Ollama accepts images only as base64 data URLs (data:image/png;base64,...)"),
                            "messages",
                        )
                    })?;
                images.push(Value::from(data));
            }
        }
        if !images.is_empty() {
            out["images"] = images.into();
        }
        if !m.tool_calls.is_empty() {
            let mut calls = Vec::new();
            for (j, c) in m.tool_calls.iter().enumerate() {
                let args: Value = if c.arguments.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&c.arguments).map_err(|e| {
                        invalid(
                            format!("messages[{i}].tool_calls[{j}].function.arguments is not valid JSON: {e}"),
                            "messages",
                        )
                    })?
                };
                call_names.insert(c.id.as_str(), c.name.as_str());
                calls.push(json!({ "function": { "name": c.name, "arguments": args } }));
            }
            out["tool_calls"] = calls.into();
        }
        if m.role == Role::Tool {
            let name = m.name.as_deref().or_else(|| {
                m.tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.get(id).copied())
            });
            if let Some(name) = name {
                out["tool_name"] = name.into();
            }
        }
        messages.push(out);
    }

    let mut body = json!({
        "model": dep.upstream_model,
        "messages": messages,
        "stream": true,
    });
    let tools: Vec<Value> = match &req.tool_choice {
        Some(ToolChoice::None) => Vec::new(),
        Some(ToolChoice::Function(only)) => req
            .tools
            .iter()
            .filter(|t| &t.name == only)
            .map(tool)
            .collect(),
        _ => req.tools.iter().map(tool).collect(),
    };
    if !tools.is_empty() {
        body["tools"] = tools.into();
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => body["format"] = "json".into(),
        Some(ResponseFormat::JsonSchema { schema, .. }) => body["format"] = schema.clone(),
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(k) = &dep.keep_alive {
        body["keep_alive"] = keep_alive(k);
    }
    let mut options: Map<String, Value> = dep.options.clone();
    let s = &req.sampling;
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            options.insert(k.into(), v);
        }
    };
    put("temperature", s.temperature.map(Value::from));
    put("top_p", s.top_p.map(Value::from));
    put("num_predict", s.max_tokens.map(Value::from));
    put("seed", s.seed.map(Value::from));
    put("presence_penalty", s.presence_penalty.map(Value::from));
    put("frequency_penalty", s.frequency_penalty.map(Value::from));
    put("top_k", s.top_k.map(Value::from));
    if !s.stop.is_empty() {
        options.insert("stop".into(), s.stop.clone().into());
    }
    if !options.is_empty() {
        body["options"] = Value::Object(options);
    }
    Ok(body)
}

fn tool(t: &crate::domain::Tool) -> Value {
    let mut f = json!({ "name": t.name, "parameters": t.parameters });
    if let Some(d) = &t.description {
        f["description"] = d.clone().into();
    }
    json!({ "type": "function", "function": f })
}

/// Ollama takes `keep_alive` as a duration string or a number of seconds.
fn keep_alive(k: &str) -> Value {
    k.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| k.into())
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u32>,
    #[serde(default)]
    eval_count: Option<u32>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    tool_calls: Vec<LineToolCall>,
}

#[derive(Deserialize)]
struct LineToolCall {
    function: LineFunction,
}

#[derive(Deserialize)]
struct LineFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

struct State {
    backend: String,
    buf: BytesMut,
    tool_calls: u32,
    finished: bool,
}

impl State {
    fn on_line(&mut self, line: &[u8]) -> Result<Vec<Event>, BackendError> {
        let line: Line = serde_json::from_slice(line).map_err(|e| {
            BackendError::Protocol(format!(
                "backend `{}` sent an unreadable NDJSON line: {e}",
                self.backend
            ))
        })?;
        if let Some(err) = line.error {
            let message = err
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| err.to_string());
            return Err(BackendError::Failed {
                backend: self.backend.clone(),
                message,
            });
        }
        let mut out = Vec::new();
        if let Some(msg) = line.message {
            if !msg.content.is_empty() {
                out.push(Event::Delta(msg.content));
            }
            for call in msg.tool_calls {
                if self.tool_calls >= MAX_TOOL_CALLS {
                    return Err(BackendError::Protocol(format!(
                        "backend sent more than {MAX_TOOL_CALLS} tool calls in one answer"
                    )));
                }
                let arguments = match call.function.arguments {
                    Value::Null => "{}".to_owned(),
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.push(Event::ToolCall {
                    index: self.tool_calls,
                    id: Some(format!("call_{}", uuid::Uuid::new_v4().simple())),
                    name: Some(call.function.name),
                    arguments,
                });
                self.tool_calls += 1;
            }
        }
        if line.done {
            self.finished = true;
            let reason = match line.done_reason.as_deref() {
                _ if self.tool_calls > 0 => FinishReason::ToolCalls,
                Some("length") => FinishReason::Length,
                _ => FinishReason::Stop,
            };
            out.push(Event::Finish {
                reason,
                usage: Some(Usage {
                    prompt_tokens: line.prompt_eval_count.unwrap_or(0),
                    completion_tokens: line.eval_count.unwrap_or(0),
                }),
            });
        }
        Ok(out)
    }

    /// Events from the complete lines now in the buffer. Lines that arrived in the same
    /// chunk before an error line still count; the error is the last item, and ends it.
    fn drain(&mut self) -> Vec<Result<Event, BackendError>> {
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(pos + 1);
            let line = line.trim_ascii();
            if line.is_empty() || self.finished {
                continue;
            }
            match self.on_line(line) {
                Ok(events) => out.extend(events.into_iter().map(Ok)),
                Err(e) => {
                    self.finished = true;
                    out.push(Err(e));
                }
            }
        }
        out
    }
}

/// Domain events from an NDJSON body.
pub fn events(
    backend: String,
    bytes: impl Stream<Item = Result<Bytes, BackendError>> + Send + 'static,
) -> impl Stream<Item = Result<Event, BackendError>> + Send + 'static {
    let state = State {
        backend,
        buf: BytesMut::new(),
        tool_calls: 0,
        finished: false,
    };
    futures::stream::unfold(
        (Box::pin(bytes), state, false),
        |(mut bytes, mut state, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let items = match bytes.next().await {
                    Some(Ok(chunk)) => {
                        state.buf.extend_from_slice(&chunk);
                        state.drain()
                    }
                    Some(Err(e)) => {
                        state.finished = true;
                        vec![Err(e)]
                    }
                    None => {
                        // A last line without a trailing newline.
                        state.buf.extend_from_slice(b"\n");
                        let tail = state.drain();
                        if tail.is_empty() {
                            return None;
                        }
                        return Some((futures::stream::iter(tail), (bytes, state, true)));
                    }
                };
                if !items.is_empty() {
                    let end = state.finished;
                    return Some((futures::stream::iter(items), (bytes, state, end)));
                }
                if state.finished {
                    return None;
                }
            }
        },
    )
    .flatten()
}

/// The `/api/embed` body, or a 400 for token-id inputs: Ollama embeds text only.
pub fn embed_body(req: &EmbedRequest, dep: &Deployment) -> Result<Value, BackendError> {
    let input = req
        .input
        .iter()
        .map(|i| i.text().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| BackendError::InvalidRequest {
            message: format!(
                "model `{}` is served by Ollama, whose /api/embed takes text only; send the input as strings, not token ids",
                req.model
            ),
            param: Some("input"),
        })?;
    let mut body = json!({ "model": dep.upstream_model, "input": input });
    if let Some(d) = req.dimensions {
        body["dimensions"] = d.into();
    }
    if let Some(k) = &dep.keep_alive {
        body["keep_alive"] = keep_alive(k);
    }
    if !dep.options.is_empty() {
        body["options"] = Value::Object(dep.options.clone());
    }
    Ok(body)
}

#[derive(Deserialize)]
struct EmbedWire {
    embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    prompt_eval_count: Option<u32>,
}

pub fn embed_response(backend: &str, body: &[u8]) -> Result<EmbedResponse, BackendError> {
    let wire: EmbedWire = serde_json::from_slice(body).map_err(|e| {
        BackendError::Protocol(format!(
            "backend `{backend}` sent unreadable embeddings: {e}"
        ))
    })?;
    Ok(EmbedResponse {
        embeddings: wire.embeddings,
        prompt_tokens: wire.prompt_eval_count.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> Vec<Result<Event, BackendError>> {
        let items: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Bytes::from(c.to_string())))
            .collect();
        futures::executor::block_on(events("o".into(), futures::stream::iter(items)).collect())
    }

    #[test]
    fn lines_split_across_chunks_and_final_counts() {
        let out = run(&[
            "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"message\":{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}\n{\"model\":\"llama3.2\",\"message\":{\"role\":\"assis",
            "tant\",\"content\":\" sky\"},\"done\":false}\n",
            "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":4883583458,\"load_duration\":1334875,\"prompt_eval_count\":26,\"prompt_eval_duration\":342546000,\"eval_count\":282,\"eval_duration\":4535599000}\n",
        ]);
        let out: Vec<Event> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(out[0], Event::Delta("The".into()));
        assert_eq!(out[1], Event::Delta(" sky".into()));
        assert_eq!(
            out[2],
            Event::Finish {
                reason: FinishReason::Stop,
                usage: Some(Usage {
                    prompt_tokens: 26,
                    completion_tokens: 282
                })
            }
        );
    }

    #[test]
    fn tool_calls_get_ids_and_string_arguments() {
        let out = run(&[
            "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_current_weather\",\"arguments\":{\"format\":\"celsius\",\"location\":\"Paris, FR\"}}}]},\"done\":false}\n",
            "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":10,\"eval_count\":5}\n",
        ]);
        match &out[0] {
            Ok(Event::ToolCall {
                index,
                id,
                name,
                arguments,
            }) => {
                assert_eq!(*index, 0);
                assert!(id.as_deref().unwrap().starts_with("call_"));
                assert_eq!(name.as_deref(), Some("get_current_weather"));
                let args: Value = serde_json::from_str(arguments).unwrap();
                assert_eq!(args["location"], "Paris, FR");
            }
            other => panic!("expected a tool call, got {other:?}"),
        }
        assert!(matches!(
            out[1],
            Ok(Event::Finish {
                reason: FinishReason::ToolCalls,
                ..
            })
        ));
    }

    #[test]
    fn an_error_line_ends_the_stream_with_its_message() {
        let out = run(&[
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"a\"},\"done\":false}\n",
            "{\"error\":\"an error was encountered while running the model\"}\n",
        ]);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[1], Err(BackendError::Failed { message, .. }) if message.contains("running the model"))
        );
    }

    #[test]
    fn text_in_the_same_chunk_as_an_error_line_is_kept() {
        let out = run(&[concat!(
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"a\"},\"done\":false}\n",
            "{\"error\":\"an error was encountered while running the model\"}\n",
            "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"b\"},\"done\":false}\n",
        )]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Ok(Event::Delta("a".into())));
        assert!(matches!(&out[1], Err(BackendError::Failed { .. })));
    }

    proptest::proptest! {
        /// However the network splits the NDJSON body, the events are the same.
        #[test]
        fn events_do_not_depend_on_chunk_boundaries(cuts in proptest::collection::vec(0usize..400, 0..12)) {
            let body = concat!(
                "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Café ☕\"},\"done\":false}\n",
                "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}]},\"done\":false}\n",
                "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":4,\"eval_count\":2}\n",
            ).as_bytes();
            let pieces = crate::backend::body::split_at(body, cuts);
            let out: Vec<Event> = futures::executor::block_on(
                events("o".into(), futures::stream::iter(pieces)).collect::<Vec<_>>(),
            )
            .into_iter()
            .map(Result::unwrap)
            .collect();
            proptest::prop_assert_eq!(out.len(), 3);
            proptest::prop_assert_eq!(&out[0], &Event::Delta("Caf\u{e9} \u{2615}".into()));
            let is_call = matches!(&out[1], Event::ToolCall { arguments, .. } if arguments == "{\"x\":1}");
            proptest::prop_assert!(is_call);
            let is_finish = matches!(out[2], Event::Finish { reason: FinishReason::ToolCalls, usage: Some(Usage { prompt_tokens: 4, completion_tokens: 2 }) });
            proptest::prop_assert!(is_finish);
        }
    }
}
