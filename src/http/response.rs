//! Domain → wire for chat: a collected [`Completion`] becomes a `chat.completion`
//! object, and events become `chat.completion.chunk` objects (async-openai's types), each
//! carrying the same `id`, `created` and `model`.

#![allow(deprecated)] // `function_call` / `system_fingerprint` are deprecated fields of the types.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_openai::types::chat::{
    ChatChoice, ChatChoiceStream, ChatCompletionMessageToolCall,
    ChatCompletionMessageToolCallChunk, ChatCompletionMessageToolCalls,
    ChatCompletionResponseMessage, ChatCompletionStreamResponseDelta, CompletionUsage,
    CreateChatCompletionResponse, CreateChatCompletionStreamResponse, FinishReason as WireFinish,
    FunctionCall, FunctionCallStream, FunctionType, Role,
};

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

fn finish(reason: FinishReason) -> WireFinish {
    match reason {
        FinishReason::Stop => WireFinish::Stop,
        FinishReason::Length => WireFinish::Length,
        FinishReason::ToolCalls => WireFinish::ToolCalls,
        FinishReason::ContentFilter => WireFinish::ContentFilter,
    }
}

pub fn usage(u: Usage) -> CompletionUsage {
    CompletionUsage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total(),
        prompt_tokens_details: None,
        completion_tokens_details: None,
    }
}

/// The non-streaming response body.
pub fn completion(model: &str, done: Completion) -> CreateChatCompletionResponse {
    let tool_calls: Vec<ChatCompletionMessageToolCalls> = done
        .tool_calls
        .into_iter()
        .map(|c| {
            ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                id: if c.id.is_empty() { new_call_id() } else { c.id },
                function: FunctionCall {
                    name: c.name,
                    arguments: c.arguments,
                },
            })
        })
        .collect();
    let content = if done.content.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(done.content)
    };
    CreateChatCompletionResponse {
        id: new_id(),
        object: "chat.completion".into(),
        created: now_secs(),
        model: model.to_owned(),
        choices: vec![ChatChoice {
            index: 0,
            message: ChatCompletionResponseMessage {
                role: Role::Assistant,
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                ..Default::default()
            },
            finish_reason: Some(finish(done.finish_reason.unwrap_or(FinishReason::Stop))),
            logprobs: None,
        }],
        usage: Some(usage(done.usage.unwrap_or_default())),
        ..Default::default()
    }
}

/// Builds the chunks of one streamed response.
pub struct Chunks {
    id: String,
    created: u32,
    model: Arc<str>,
    /// Tool-call indexes already announced (their first delta carries id, type, name).
    started_calls: Vec<bool>,
}

impl Chunks {
    pub fn new(model: Arc<str>) -> Self {
        Chunks {
            id: new_id(),
            created: now_secs(),
            model,
            started_calls: Vec::new(),
        }
    }

    fn chunk(
        &self,
        choices: Vec<ChatChoiceStream>,
        usage: Option<CompletionUsage>,
    ) -> CreateChatCompletionStreamResponse {
        CreateChatCompletionStreamResponse {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.to_string(),
            choices,
            usage,
            ..Default::default()
        }
    }

    fn delta(
        &self,
        delta: ChatCompletionStreamResponseDelta,
        reason: Option<FinishReason>,
    ) -> CreateChatCompletionStreamResponse {
        self.chunk(
            vec![ChatChoiceStream {
                index: 0,
                delta,
                finish_reason: reason.map(finish),
                logprobs: None,
            }],
            None,
        )
    }

    /// The opening chunk: `{"role":"assistant","content":""}`.
    pub fn role(&self) -> CreateChatCompletionStreamResponse {
        self.delta(
            ChatCompletionStreamResponseDelta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                ..Default::default()
            },
            None,
        )
    }

    /// The chunk for one event (`Finish` gives the chunk with `finish_reason`).
    pub fn event(&mut self, event: Event) -> CreateChatCompletionStreamResponse {
        match event {
            Event::Delta(text) => self.delta(
                ChatCompletionStreamResponseDelta {
                    content: Some(text),
                    ..Default::default()
                },
                None,
            ),
            Event::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let i = index as usize;
                if self.started_calls.len() <= i {
                    self.started_calls.resize(i + 1, false);
                }
                let first = !self.started_calls[i];
                self.started_calls[i] = true;
                let call = ChatCompletionMessageToolCallChunk {
                    index,
                    id: if first {
                        Some(id.unwrap_or_else(new_call_id))
                    } else {
                        id
                    },
                    r#type: first.then_some(FunctionType::Function),
                    function: Some(FunctionCallStream {
                        name: if first {
                            Some(name.unwrap_or_default())
                        } else {
                            name
                        },
                        arguments: Some(arguments),
                    }),
                };
                self.delta(
                    ChatCompletionStreamResponseDelta {
                        tool_calls: Some(vec![call]),
                        ..Default::default()
                    },
                    None,
                )
            }
            Event::Finish { reason, .. } => {
                self.delta(ChatCompletionStreamResponseDelta::default(), Some(reason))
            }
        }
    }

    /// The closing usage chunk (`stream_options.include_usage`): `choices` is empty.
    pub fn usage(&self, u: Usage) -> CreateChatCompletionStreamResponse {
        self.chunk(Vec::new(), Some(usage(u)))
    }
}
