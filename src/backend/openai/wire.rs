//! OpenAI wire format as the `openai` backend sends and reads it: domain request →
//! request JSON, SSE `chat.completion.chunk` events → domain events. Parsing is lenient
//! (fields some compatible servers omit are optional) so vLLM and llama.cpp both work.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use crate::domain::MAX_TOOL_CALLS;
use bytes::Bytes;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::sse;
use crate::backend::Deployment;
use crate::domain::{
    ChatRequest, ContentPart, EmbedInput, EmbedRequest, EmbedResponse, Event, FinishReason,
    Message, ResponseFormat, ToolChoice, Usage,
};
use crate::error::BackendError;

/// The upstream request body (always streaming, usage included).
pub fn chat_body(req: &ChatRequest, dep: &Deployment) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), dep.upstream_model.clone().into());
    body.insert(
        "messages".into(),
        req.messages.iter().map(message).collect::<Vec<_>>().into(),
    );
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({ "name": t.name, "parameters": t.parameters });
                if let Some(d) = &t.description {
                    f["description"] = d.clone().into();
                }
                if let Some(s) = t.strict {
                    f["strict"] = s.into();
                }
                json!({ "type": "function", "function": f })
            })
            .collect();
        body.insert("tools".into(), tools.into());
    }
    if let Some(choice) = &req.tool_choice {
        let v = match choice {
            ToolChoice::None => json!("none"),
            ToolChoice::Auto => json!("auto"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), v);
    }
    if let Some(p) = req.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), p.into());
    }
    if let Some(format) = &req.response_format {
        let v = match format {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => {
                let mut s = json!({"name": name, "schema": schema});
                if let Some(strict) = strict {
                    s["strict"] = (*strict).into();
                }
                json!({"type": "json_schema", "json_schema": s})
            }
        };
        body.insert("response_format".into(), v);
    }
    let s = &req.sampling;
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    };
    put("temperature", s.temperature.map(Value::from));
    put("top_p", s.top_p.map(Value::from));
    put("max_tokens", s.max_tokens.map(Value::from));
    put("seed", s.seed.map(Value::from));
    put("presence_penalty", s.presence_penalty.map(Value::from));
    put("frequency_penalty", s.frequency_penalty.map(Value::from));
    put("top_k", s.top_k.map(Value::from));
    put("user", req.user.clone().map(Value::from));
    if !s.stop.is_empty() {
        body.insert("stop".into(), s.stop.clone().into());
    }
    // The client's own unknown fields, where the model forwards them, then deployment
    // options (e.g. vLLM's `top_k`), as extra body fields; neither replaces a field
    // sluice sets.
    if dep.forward_unknown_fields {
        for (k, v) in &req.extra {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for (k, v) in &dep.options {
        body.entry(k.clone()).or_insert_with(|| v.clone());
    }
    body.insert("stream".into(), true.into());
    body.insert("stream_options".into(), json!({"include_usage": true}));
    Value::Object(body)
}

fn message(m: &Message) -> Value {
    let role = m.role.as_str();
    let only_text = m
        .content
        .iter()
        .all(|p| matches!(p, ContentPart::Text { .. }));
    let content = if only_text {
        if m.content.is_empty() && !m.tool_calls.is_empty() {
            Value::Null
        } else {
            m.text_content().into()
        }
    } else {
        m.content
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => json!({"type": "text", "text": text}),
                ContentPart::Image { url } => {
                    json!({"type": "image_url", "image_url": {"url": url}})
                }
            })
            .collect::<Vec<_>>()
            .into()
    };
    let mut v = json!({ "role": role, "content": content });
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect::<Vec<_>>()
            .into();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = id.clone().into();
    }
    if let Some(name) = &m.name {
        v["name"] = name.clone().into();
    }
    v
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ChunkToolCall>>,
}

#[derive(Deserialize)]
struct ChunkToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ChunkFunction>,
}

#[derive(Deserialize)]
struct ChunkFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Parser state across SSE events.
struct State {
    backend: String,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
}

type Item = Result<Event, BackendError>;

impl State {
    /// Queue the events of one SSE `data:` payload.
    fn on_data(&mut self, data: &[u8], out: &mut VecDeque<Item>) -> Result<(), BackendError> {
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.done = true;
            out.extend(self.finish_event().map(Ok));
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_slice(data).map_err(|e| {
            BackendError::Protocol(format!(
                "backend `{}` sent an unreadable stream chunk: {e}",
                self.backend
            ))
        })?;
        if let Some(err) = chunk.error {
            return Err(BackendError::Failed {
                backend: self.backend.clone(),
                message: crate::backend::upstream::error_message(
                    json!({ "error": err }).to_string().as_bytes(),
                ),
            });
        }
        for choice in chunk.choices {
            let delta = choice.delta.unwrap_or_default();
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push_back(Ok(Event::Delta(text)));
            }
            for (pos, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let function = call.function.unwrap_or(ChunkFunction {
                    name: None,
                    arguments: None,
                });
                let index = call.index.unwrap_or(pos as u32);
                if index >= MAX_TOOL_CALLS {
                    return Err(BackendError::Protocol(format!(
                        "backend `{}` sent tool call index {index}; an answer holds at most {MAX_TOOL_CALLS} tool calls",
                        self.backend
                    )));
                }
                out.push_back(Ok(Event::ToolCall {
                    index,
                    id: call.id,
                    name: function.name,
                    arguments: function.arguments.unwrap_or_default(),
                }));
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            });
        }
        Ok(())
    }

    fn finish_event(&mut self) -> Option<Event> {
        self.finish.take().map(|reason| Event::Finish {
            reason,
            usage: self.usage.take(),
        })
    }
}

/// Domain events from an upstream SSE body. A stream that ends after a finish reason but
/// without `[DONE]` still finishes; one that ends before any finish reason is an error.
pub fn events<S>(backend: String, bytes: S) -> Events<S>
where
    S: Stream<Item = Result<Bytes, BackendError>> + Send + 'static,
{
    Events {
        bytes: Box::pin(bytes),
        sse: sse::Decoder::default(),
        state: State {
            backend,
            finish: None,
            usage: None,
            done: false,
        },
        queue: VecDeque::new(),
        ended: false,
    }
}

/// The stream [`events`] returns: decodes what each read brings and queues its events.
pub struct Events<S> {
    bytes: Pin<Box<S>>,
    sse: sse::Decoder,
    state: State,
    /// Events decoded and not yet taken.
    queue: VecDeque<Item>,
    /// Nothing more is read: `[DONE]`, an error, or the end of the body.
    ended: bool,
}

impl<S> Stream for Events<S>
where
    S: Stream<Item = Result<Bytes, BackendError>> + Send + 'static,
{
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.queue.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            // Events already in the bytes read come before another read.
            while let Some(data) = this.sse.next_data() {
                if let Err(e) = this.state.on_data(&data, &mut this.queue) {
                    this.queue.push_back(Err(e));
                    this.ended = true;
                }
                this.ended |= this.state.done;
                if this.ended || !this.queue.is_empty() {
                    break;
                }
            }
            if this.ended || !this.queue.is_empty() {
                continue;
            }
            match ready!(this.bytes.as_mut().poll_next(cx)) {
                Some(Ok(bytes)) => this.sse.push(&bytes),
                Some(Err(e)) => {
                    this.queue.push_back(Err(e));
                    this.ended = true;
                }
                None => {
                    // No [DONE]: finish with what we have, if the upstream said it finished.
                    this.queue.extend(this.state.finish_event().map(Ok));
                    this.ended = true;
                }
            }
        }
    }
}

/// The `/embeddings` body: text inputs as strings, token-id inputs as integer arrays
/// (forwarded as they came).
pub fn embed_body(req: &EmbedRequest, dep: &Deployment) -> Value {
    let input: Vec<Value> = req
        .input
        .iter()
        .map(|i| match i {
            EmbedInput::Text(text) => Value::from(text.as_str()),
            EmbedInput::Tokens(ids) => Value::from(ids.clone()),
        })
        .collect();
    let mut body = json!({
        "model": dep.upstream_model,
        "input": input,
        "encoding_format": "float",
    });
    if let Some(d) = req.dimensions {
        body["dimensions"] = d.into();
    }
    body
}

#[derive(Deserialize)]
struct EmbeddingsWire {
    data: Vec<EmbeddingWire>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

#[derive(Deserialize)]
struct EmbeddingWire {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

pub fn embed_response(backend: &str, body: &[u8]) -> Result<EmbedResponse, BackendError> {
    let mut wire: EmbeddingsWire = serde_json::from_slice(body).map_err(|e| {
        BackendError::Protocol(format!(
            "backend `{backend}` sent unreadable embeddings: {e}"
        ))
    })?;
    wire.data.sort_by_key(|d| d.index.unwrap_or(0));
    Ok(EmbedResponse {
        embeddings: wire.data.into_iter().map(|d| d.embedding).collect(),
        prompt_tokens: wire.usage.map(|u| u.prompt_tokens).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn collect(payloads: &[&str]) -> Vec<Result<Event, BackendError>> {
        let text: String = payloads.iter().map(|p| format!("data: {p}\n\n")).collect();
        let bytes = futures::stream::iter(vec![Ok(Bytes::from(text))]);
        futures::executor::block_on(events("up".into(), bytes).collect())
    }

    #[test]
    fn text_then_usage_then_done() {
        let out = collect(&[
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
            "[DONE]",
        ]);
        let out: Vec<Event> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            out,
            vec![
                Event::Delta("Hi".into()),
                Event::Finish {
                    reason: FinishReason::Stop,
                    usage: Some(Usage {
                        prompt_tokens: 5,
                        completion_tokens: 1
                    })
                }
            ]
        );
    }

    #[test]
    fn an_error_payload_mid_stream_is_an_error() {
        let out = collect(&[
            r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"error":{"message":"model crashed","type":"server_error"}}"#,
        ]);
        assert!(
            matches!(&out[1], Err(BackendError::Failed { message, .. }) if message == "model crashed")
        );
    }

    #[test]
    fn a_tool_call_index_past_the_bound_is_a_protocol_error_not_an_allocation() {
        for index in [u32::MAX, MAX_TOOL_CALLS] {
            let chunk = format!(
                r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":{index},"id":"c","type":"function","function":{{"name":"f","arguments":""}}}}]}}}}]}}"#
            );
            let out = collect(&[&chunk]);
            assert!(
                matches!(&out[0], Err(BackendError::Protocol(m)) if m.contains("at most 128")),
                "{index}: {:?}",
                out[0]
            );
        }
        let last = MAX_TOOL_CALLS - 1;
        let chunk = format!(
            r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":{last},"id":"c","type":"function","function":{{"name":"f","arguments":""}}}}]}}}}]}}"#
        );
        assert!(collect(&[&chunk])[0].is_ok());
    }

    proptest::proptest! {
        /// However the network splits the SSE body, the events are the same.
        #[test]
        fn events_do_not_depend_on_chunk_boundaries(cuts in proptest::collection::vec(0usize..600, 0..12)) {
            let body = concat!(
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"été ☕\"}}]}\n\n",
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\"}}]}}]}\n\n",
                "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
                "data: [DONE]\n\n",
            ).as_bytes();
            let pieces = crate::backend::body::split_at(body, cuts);
            let out: Vec<Event> = futures::executor::block_on(
                events("up".into(), futures::stream::iter(pieces)).collect::<Vec<_>>(),
            )
            .into_iter()
            .map(Result::unwrap)
            .collect();
            proptest::prop_assert_eq!(out.len(), 3);
            proptest::prop_assert_eq!(&out[0], &Event::Delta("\u{e9}t\u{e9} \u{2615}".into()));
            let is_call = matches!(&out[1], Event::ToolCall { id: Some(id), arguments, .. } if id == "call_1" && arguments == "{\"x\":");
            proptest::prop_assert!(is_call);
            let is_finish = matches!(out[2], Event::Finish { reason: FinishReason::ToolCalls, usage: Some(Usage { prompt_tokens: 3, completion_tokens: 2 }) });
            proptest::prop_assert!(is_finish);
        }
    }
}
