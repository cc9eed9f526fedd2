//! Domain → wire for chat: a collected [`Completion`] becomes a `chat.completion`
//! object, and events become `chat.completion.chunk` objects, field for field as the
//! OpenAI API sends them (`"content": null` beside tool calls, `"finish_reason": null`
//! and `"logprobs": null` on every chunk, `usage` present only when asked for). The
//! types borrow, so a chunk costs one serialization and no copies. Tests parse the
//! output with async-openai's types.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::domain::{Completion, Event, FinishReason, Incomplete, Step, Usage};

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

/// Why an answer was cut short, as OpenAI's Responses API names it.
#[derive(Serialize)]
struct IncompleteDetails {
    reason: Incomplete,
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
    /// Agent runs cut short by their deadline (`finish_reason` is then `length`).
    #[serde(skip_serializing_if = "Option::is_none")]
    incomplete_details: Option<IncompleteDetails>,
    /// With `x-sluice-trace: 1`: the tool calls the gateway ran, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    sluice_steps: Option<&'a [Step]>,
}

/// Build the non-streaming body. Tool calls without an id (an engine that makes none)
/// get one, so clients can answer them. `trace` adds the agent run's steps.
pub fn completion<'a>(model: &'a str, done: &'a mut Completion, trace: bool) -> ChatCompletion<'a> {
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
        incomplete_details: done.incomplete.map(|reason| IncompleteDetails { reason }),
        sluice_steps: trace.then_some(done.steps.as_slice()),
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
    /// On the chunk with `finish_reason` of an agent run cut short.
    #[serde(skip_serializing_if = "Option::is_none")]
    incomplete_details: Option<IncompleteDetails>,
    /// With `x-sluice-trace: 1`: one tool call the gateway ran (`choices` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    sluice_step: Option<&'a Step>,
}

/// Builds the chunks of one streamed response.
pub struct Chunks {
    id: String,
    created: u32,
    model: Arc<str>,
    include_usage: bool,
    /// `x-sluice-trace: 1`: steps as chunks instead of SSE comments.
    trace: bool,
    /// Set by an `Incomplete` event; reported on the `finish_reason` chunk.
    incomplete: Option<Incomplete>,
    /// Tool-call indexes already announced (their first delta carries id, type, name),
    /// with the id given to each.
    calls: Vec<Option<String>>,
}

impl Chunks {
    pub fn new(model: Arc<str>, include_usage: bool, trace: bool) -> Self {
        Chunks {
            id: new_id(),
            created: now_secs(),
            model,
            include_usage,
            trace,
            incomplete: None,
            calls: Vec::new(),
        }
    }

    /// Whether steps go out as `sluice_step` chunks (else as SSE comments).
    pub fn trace(&self) -> bool {
        self.trace
    }

    /// A step as a chunk with no choices (what SDKs skip, like the usage chunk).
    pub fn step<'a>(&'a self, step: &'a Step) -> Chunk<'a> {
        let mut chunk = self.chunk(Vec::new(), None);
        chunk.usage = None;
        chunk.sluice_step = Some(step);
        chunk
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
            incomplete_details: None,
            sluice_step: None,
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
        if index >= crate::domain::MAX_TOOL_CALLS {
            return false; // backends refuse such an index; never allocate for it
        }
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
            Event::Finish { reason, .. } => {
                let mut chunk = self.delta(Delta::default(), Some(*reason));
                chunk.incomplete_details =
                    self.incomplete.map(|reason| IncompleteDetails { reason });
                chunk
            }
            Event::Step(step) => self.step(step),
            // Folded into the `finish_reason` chunk by `note_incomplete`; never framed.
            Event::Incomplete(_) => self.chunk(Vec::new(), None),
        }
    }

    /// Remember why the answer is cut short, for the `finish_reason` chunk.
    pub fn note_incomplete(&mut self, why: Incomplete) {
        self.incomplete = Some(why);
    }

    /// The closing usage chunk (`stream_options.include_usage`): `choices` is empty.
    pub fn usage(&self, u: Usage) -> Chunk<'_> {
        self.chunk(Vec::new(), Some(u.into()))
    }
}
