//! Domain → wire for chat: a collected [`Completion`] becomes a `chat.completion`
//! object, and events become `chat.completion.chunk` objects, field for field as the
//! OpenAI API sends them (`"content": null` beside tool calls, `"finish_reason": null`
//! and `"logprobs": null` on every chunk, `usage` present only when asked for). The
//! types borrow, so a chunk costs one serialization and no copies. Tests parse the
//! output with async-openai's types.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::domain::{Completion, Event, FinishReason, Usage};

pub fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

pub fn new_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

fn new_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

#[derive(Serialize)]
pub struct WireUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<Usage> for WireUsage {
    fn from(u: Usage) -> Self {
        WireUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
        }
    }
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
}

#[derive(Serialize)]
struct WireChoice<'a> {
    index: u32,
    message: WireMessage<'a>,
    logprobs: Option<()>,
    finish_reason: FinishReason,
}

/// The non-streaming response body.
#[derive(Serialize)]
pub struct ChatCompletion<'a> {
    id: String,
    object: &'static str,
    created: u32,
    model: &'a str,
    choices: [WireChoice<'a>; 1],
    usage: WireUsage,
    system_fingerprint: Option<&'a str>,
}

/// Build the non-streaming body. Tool calls without an id (an engine that makes none)
/// get one, so clients can answer them.
pub fn completion<'a>(model: &'a str, done: &'a mut Completion) -> ChatCompletion<'a> {
    for call in &mut done.tool_calls {
        if call.id.is_empty() {
            call.id = new_call_id();
        }
    }
    let tool_calls: Vec<WireToolCall<'a>> = done
        .tool_calls
        .iter()
        .map(|c| WireToolCall {
            id: &c.id,
            kind: "function",
            function: WireFunction {
                name: &c.name,
                arguments: &c.arguments,
            },
        })
        .collect();
    let content =
        (!done.content.is_empty() || tool_calls.is_empty()).then_some(done.content.as_str());
    ChatCompletion {
        id: new_id(),
        object: "chat.completion",
        created: now_secs(),
        model,
        choices: [WireChoice {
            index: 0,
            message: WireMessage {
                role: "assistant",
                content,
                refusal: None,
                tool_calls,
            },
            logprobs: None,
            finish_reason: done.finish_reason.unwrap_or(FinishReason::Stop),
        }],
        usage: done.usage.unwrap_or_default().into(),
        system_fingerprint: None,
    }
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    /// Only on the opening chunk, as OpenAI sends it: `"refusal": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<FinishReason>,
}

/// One `chat.completion.chunk`.
#[derive(Serialize)]
pub struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u32,
    model: &'a str,
    system_fingerprint: Option<&'a str>,
    choices: Vec<ChunkChoice<'a>>,
    /// `null` on every chunk but the last when usage was asked for; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<WireUsage>>,
}

/// Builds the chunks of one streamed response.
pub struct Chunks {
    id: String,
    created: u32,
    model: Arc<str>,
    include_usage: bool,
    /// Tool-call indexes already announced (their first delta carries id, type, name),
    /// with the id given to each.
    calls: Vec<Option<String>>,
}

impl Chunks {
    pub fn new(model: Arc<str>, include_usage: bool) -> Self {
        Chunks {
            id: new_id(),
            created: now_secs(),
            model,
            include_usage,
            calls: Vec::new(),
        }
    }

    fn chunk<'a>(&'a self, choices: Vec<ChunkChoice<'a>>, usage: Option<WireUsage>) -> Chunk<'a> {
        Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: None,
            choices,
            usage: self.include_usage.then_some(usage),
        }
    }

    fn delta<'a>(&'a self, delta: Delta<'a>, finish_reason: Option<FinishReason>) -> Chunk<'a> {
        self.chunk(
            vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            None,
        )
    }

    pub fn include_usage(&self) -> bool {
        self.include_usage
    }

    /// The opening chunk: `{"role":"assistant","content":"","refusal":null}`.
    pub fn role(&self) -> Chunk<'_> {
        self.delta(
            Delta {
                role: Some("assistant"),
                content: Some(""),
                refusal: Some(None),
                tool_calls: None,
            },
            None,
        )
    }

    /// Note a tool-call fragment; true when it is the call's first (which must carry
    /// `id`, `type` and `name`).
    pub fn start_call(&mut self, index: u32, id: Option<&str>) -> bool {
        let i = index as usize;
        if self.calls.len() <= i {
            self.calls.resize(i + 1, None);
        }
        if self.calls[i].is_some() {
            return false;
        }
        self.calls[i] = Some(id.map(str::to_owned).unwrap_or_else(new_call_id));
        true
    }

    /// The chunk for one event (`Finish` gives the chunk with `finish_reason`). For a
    /// tool call, call [`Chunks::start_call`] first.
    pub fn event<'a>(&'a self, event: &'a Event, first_of_call: bool) -> Chunk<'a> {
        match event {
            Event::Delta(text) => self.delta(
                Delta {
                    content: Some(text),
                    ..Delta::default()
                },
                None,
            ),
            Event::ToolCall {
                index,
                name,
                arguments,
                ..
            } => {
                let id = self.calls.get(*index as usize).and_then(|c| c.as_deref());
                let call = ToolCallDelta {
                    index: *index,
                    id: if first_of_call { id } else { None },
                    kind: first_of_call.then_some("function"),
                    function: FunctionDelta {
                        name: if first_of_call {
                            Some(name.as_deref().unwrap_or_default())
                        } else {
                            None
                        },
                        arguments,
                    },
                };
                self.delta(
                    Delta {
                        tool_calls: Some([call]),
                        ..Delta::default()
                    },
                    None,
                )
            }
            Event::Finish { reason, .. } => self.delta(Delta::default(), Some(*reason)),
        }
    }

    /// The closing usage chunk (`stream_options.include_usage`): `choices` is empty.
    pub fn usage(&self, u: Usage) -> Chunk<'_> {
        self.chunk(Vec::new(), Some(u.into()))
    }
}
