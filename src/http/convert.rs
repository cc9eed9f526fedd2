//! Wire → domain: an OpenAI `CreateChatCompletionRequest` (async-openai's type) becomes
//! a validated [`ChatRequest`]. Out-of-range values and parts no backend can take are
//! 400s whose `param` names the field.

#![allow(deprecated)] // `max_tokens`, `seed`, `user` are deprecated in the spec but sent by clients.

use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestAssistantMessageContentPart, ChatCompletionRequestDeveloperMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessageContent,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, ChatCompletionToolChoiceOption,
    ChatCompletionTools, CreateChatCompletionRequest, ResponseFormat as WireFormat,
    StopConfiguration, ToolChoiceOptions,
};

use super::extract::SamplingExtras;
use crate::domain::{
    ChatRequest, ContentPart, Message, ResponseFormat, Role, Sampling, Tool, ToolCall, ToolChoice,
};
use crate::error::ApiError;

/// OpenAI's limit on `stop` sequences per request.
const MAX_STOP: usize = 4;

fn invalid(message: String, param: &str) -> ApiError {
    ApiError::invalid_request(message, Some(param))
}

/// A JSON Schema field (tool parameters, a response format's schema) that is not an object.
fn not_an_object(param: &str) -> ApiError {
    invalid(
        format!("Invalid type for '{param}': expected a JSON Schema object."),
        param,
    )
    .with_code("invalid_type")
}

/// `value` (as the client wrote it: the `f64` of `extras`, else async-openai's `f32`)
/// if it lies in `lo..=hi`.
fn in_range(
    value: (Option<f64>, Option<f32>),
    lo: f64,
    hi: f64,
    param: &str,
) -> Result<Option<f64>, ApiError> {
    let value = value.0.or(value.1.map(f64::from));
    match value {
        Some(v) if !(lo..=hi).contains(&v) || v.is_nan() => Err(invalid(
            format!("Invalid '{param}': {v} is not between {lo} and {hi}."),
            param,
        )
        .with_code("invalid_value")),
        other => Ok(other),
    }
}

/// Validate and convert a chat request.
/// The domain request from the wire request and the extra sampling fields beside it.
pub fn chat_request(
    wire: CreateChatCompletionRequest,
    extras: SamplingExtras,
) -> Result<ChatRequest, ApiError> {
    if wire.model.trim().is_empty() {
        return Err(invalid("'model' must not be empty.".into(), "model"));
    }
    if wire.messages.is_empty() {
        return Err(invalid(
            "'messages' must contain at least one message.".into(),
            "messages",
        )
        .with_code("empty_array"));
    }
    if wire.logprobs == Some(true) || wire.top_logprobs.is_some() {
        return Err(invalid(
            "logprobs are not supported by this gateway.".into(),
            "logprobs",
        ));
    }
    let messages = wire
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;

    let mut tools = Vec::new();
    for (i, t) in wire.tools.unwrap_or_default().into_iter().enumerate() {
        match t {
            ChatCompletionTools::Function(f) => {
                if f.function.name.trim().is_empty() {
                    return Err(invalid(
                        "A function tool needs a name.".into(),
                        &format!("tools[{i}].function.name"),
                    ));
                }
                if f.function
                    .parameters
                    .as_ref()
                    .is_some_and(|p| !p.is_object())
                {
                    return Err(not_an_object(&format!("tools[{i}].function.parameters")));
                }
                tools.push(Tool {
                    name: f.function.name,
                    description: f.function.description,
                    parameters: f
                        .function
                        .parameters
                        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                    strict: f.function.strict,
                })
            }
            ChatCompletionTools::Custom(_) => {
                return Err(invalid(
                    "Custom tools are not supported; use function tools.".into(),
                    &format!("tools[{i}]"),
                ))
            }
        }
    }

    let tool_choice = match wire.tool_choice {
        None => None,
        Some(ChatCompletionToolChoiceOption::Mode(mode)) => Some(match mode {
            ToolChoiceOptions::None => ToolChoice::None,
            ToolChoiceOptions::Auto => ToolChoice::Auto,
            ToolChoiceOptions::Required => ToolChoice::Required,
        }),
        Some(ChatCompletionToolChoiceOption::Function(named)) => {
            let name = named.function.name;
            if !tools.iter().any(|t| t.name == name) {
                return Err(invalid(
                    format!("tool_choice names function `{name}`, which is not in 'tools'."),
                    "tool_choice",
                ));
            }
            Some(ToolChoice::Function(name))
        }
        Some(_) => {
            return Err(invalid(
                "This tool_choice form is not supported; use \"none\", \"auto\", \"required\" or a named function.".into(),
                "tool_choice",
            ))
        }
    };
    if matches!(tool_choice, Some(ToolChoice::Required)) && tools.is_empty() {
        return Err(invalid(
            "tool_choice \"required\" needs at least one tool in 'tools'.".into(),
            "tool_choice",
        ));
    }

    let response_format = match wire.response_format {
        None => None,
        Some(WireFormat::Text) => Some(ResponseFormat::Text),
        Some(WireFormat::JsonObject) => Some(ResponseFormat::JsonObject),
        Some(WireFormat::JsonSchema { json_schema }) => {
            if !(json_schema.schema.is_object() || json_schema.schema.is_null()) {
                return Err(not_an_object("response_format.json_schema.schema"));
            }
            Some(ResponseFormat::JsonSchema {
                name: json_schema.name,
                schema: json_schema.schema,
                strict: json_schema.strict,
            })
        }
    };

    let max_tokens = match (wire.max_completion_tokens, wire.max_tokens) {
        (Some(n), _) if n < 1 => {
            return Err(invalid(
                "'max_completion_tokens' must be at least 1.".into(),
                "max_completion_tokens",
            ))
        }
        (None, Some(n)) if n < 1 => {
            return Err(invalid(
                "'max_tokens' must be at least 1.".into(),
                "max_tokens",
            ))
        }
        (a, b) => a.or(b),
    };
    let n = u32::from(wire.n.unwrap_or(1));
    if n < 1 {
        return Err(invalid("'n' must be at least 1.".into(), "n"));
    }
    let stop = match wire.stop {
        None => Vec::new(),
        Some(StopConfiguration::String(s)) => vec![s],
        Some(StopConfiguration::StringArray(v)) => v,
    };
    if stop.len() > MAX_STOP {
        return Err(invalid(
            format!(
                "Invalid 'stop': at most {MAX_STOP} stop sequences are allowed, got {}.",
                stop.len()
            ),
            "stop",
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(invalid("Stop sequences must not be empty.".into(), "stop"));
    }
    let sampling = Sampling {
        temperature: in_range(
            (extras.temperature, wire.temperature),
            0.0,
            2.0,
            "temperature",
        )?,
        top_p: in_range((extras.top_p, wire.top_p), 0.0, 1.0, "top_p")?,
        max_tokens,
        stop,
        seed: wire.seed,
        presence_penalty: in_range(
            (extras.presence_penalty, wire.presence_penalty),
            -2.0,
            2.0,
            "presence_penalty",
        )?,
        frequency_penalty: in_range(
            (extras.frequency_penalty, wire.frequency_penalty),
            -2.0,
            2.0,
            "frequency_penalty",
        )?,
        top_k: extras.top_k,
    };
    Ok(ChatRequest {
        model: wire.model,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: wire.parallel_tool_calls,
        response_format,
        sampling,
        n,
        user: wire.user.or(wire.safety_identifier),
        extra: extras.unknown,
    })
}

fn text(t: String) -> Vec<ContentPart> {
    vec![ContentPart::Text { text: t }]
}

fn message(i: usize, m: ChatCompletionRequestMessage) -> Result<Message, ApiError> {
    let content_param = format!("messages[{i}].content");
    let base = |role, content| Message {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    };
    Ok(match m {
        ChatCompletionRequestMessage::System(s) => {
            let content = match s.content {
                ChatCompletionRequestSystemMessageContent::Text(t) => text(t),
                ChatCompletionRequestSystemMessageContent::Array(parts) => parts
                    .into_iter()
                    .map(|p| match p {
                        async_openai::types::chat::ChatCompletionRequestSystemMessageContentPart::Text(t) => {
                            ContentPart::Text { text: t.text }
                        }
                    })
                    .collect(),
            };
            Message {
                name: s.name,
                ..base(Role::System, content)
            }
        }
        ChatCompletionRequestMessage::Developer(d) => {
            let content = match d.content {
                ChatCompletionRequestDeveloperMessageContent::Text(t) => text(t),
                ChatCompletionRequestDeveloperMessageContent::Array(parts) => parts
                    .into_iter()
                    .map(|p| match p {
                        async_openai::types::chat::ChatCompletionRequestDeveloperMessageContentPart::Text(t) => {
                            ContentPart::Text { text: t.text }
                        }
                    })
                    .collect(),
            };
            Message {
                name: d.name,
                ..base(Role::System, content)
            }
        }
        ChatCompletionRequestMessage::User(u) => {
            let content = match u.content {
                ChatCompletionRequestUserMessageContent::Text(t) => text(t),
                ChatCompletionRequestUserMessageContent::Array(parts) => {
                    let mut out = Vec::with_capacity(parts.len());
                    for (j, p) in parts.into_iter().enumerate() {
                        out.push(match p {
                            ChatCompletionRequestUserMessageContentPart::Text(t) => {
                                ContentPart::Text { text: t.text }
                            }
                            ChatCompletionRequestUserMessageContentPart::ImageUrl(img) => {
                                ContentPart::Image {
                                    url: img.image_url.url,
                                }
                            }
                            _ => {
                                return Err(invalid(
                                    "Only text and image_url content parts are supported.".into(),
                                    &format!("messages[{i}].content[{j}].type"),
                                ))
                            }
                        });
                    }
                    out
                }
            };
            Message {
                name: u.name,
                ..base(Role::User, content)
            }
        }
        ChatCompletionRequestMessage::Assistant(a) => {
            let content = match a.content {
                None => Vec::new(),
                Some(ChatCompletionRequestAssistantMessageContent::Text(t)) => text(t),
                Some(ChatCompletionRequestAssistantMessageContent::Array(parts)) => parts
                    .into_iter()
                    .map(|p| match p {
                        ChatCompletionRequestAssistantMessageContentPart::Text(t) => {
                            ContentPart::Text { text: t.text }
                        }
                        ChatCompletionRequestAssistantMessageContentPart::Refusal(r) => {
                            ContentPart::Text { text: r.refusal }
                        }
                    })
                    .collect(),
            };
            let mut tool_calls = Vec::new();
            for (j, call) in a.tool_calls.unwrap_or_default().into_iter().enumerate() {
                match call {
                    ChatCompletionMessageToolCalls::Function(f) => tool_calls.push(ToolCall {
                        id: f.id,
                        name: f.function.name,
                        arguments: f.function.arguments,
                    }),
                    ChatCompletionMessageToolCalls::Custom(_) => {
                        return Err(invalid(
                            "Custom tool calls are not supported.".into(),
                            &format!("messages[{i}].tool_calls[{j}]"),
                        ))
                    }
                }
            }
            if content.is_empty() && tool_calls.is_empty() {
                return Err(invalid(
                    "An assistant message needs 'content' or 'tool_calls'.".into(),
                    &content_param,
                ));
            }
            Message {
                name: a.name,
                tool_calls,
                ..base(Role::Assistant, content)
            }
        }
        ChatCompletionRequestMessage::Tool(t) => {
            let content = match t.content {
                ChatCompletionRequestToolMessageContent::Text(s) => text(s),
                ChatCompletionRequestToolMessageContent::Array(parts) => parts
                    .into_iter()
                    .map(|p| match p {
                        async_openai::types::chat::ChatCompletionRequestToolMessageContentPart::Text(t) => {
                            ContentPart::Text { text: t.text }
                        }
                    })
                    .collect(),
            };
            Message {
                tool_call_id: Some(t.tool_call_id),
                ..base(Role::Tool, content)
            }
        }
        ChatCompletionRequestMessage::Function(_) => {
            return Err(invalid(
                "'function' messages are deprecated and not supported; use 'tool' messages.".into(),
                &format!("messages[{i}].role"),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &str) -> Result<ChatRequest, ApiError> {
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#);
        chat_request(serde_json::from_str(&body).unwrap(), Default::default())
    }

    #[test]
    fn out_of_range_values_name_their_param() {
        for (extra, param) in [
            (r#","temperature":2.5"#, "temperature"),
            (r#","top_p":1.5"#, "top_p"),
            (r#","max_tokens":0"#, "max_tokens"),
            (r#","max_completion_tokens":0"#, "max_completion_tokens"),
            (r#","presence_penalty":3"#, "presence_penalty"),
            (
                r#","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}"#,
                "tool_choice",
            ),
        ] {
            let e = req(extra).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.param.as_deref(), Some(param), "{extra}");
        }
    }

    #[test]
    fn json_schemas_must_be_objects() {
        let e = req(
            r#","tools":[{"type":"function","function":{"name":"f","parameters":[null,null]}}]"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some("tools[0].function.parameters"))
        );
        let e = req(
            r#","response_format":{"type":"json_schema","json_schema":{"name":"n","schema":7}}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some("response_format.json_schema.schema"))
        );
        assert!(req(r#","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#).is_ok());
    }

    #[test]
    fn four_stop_sequences_are_the_limit() {
        let r = req(r#","stop":["a","b","c","d"]"#).unwrap();
        assert_eq!(r.sampling.stop, ["a", "b", "c", "d"]);
        let e = req(r#","stop":["a","b","c","d","e"]"#).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("stop")));
        assert!(e.message.contains("at most 4"), "{}", e.message);
    }

    #[test]
    fn images_and_tools_convert() {
        let body = r#"{"model":"m","messages":[
            {"role":"developer","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"42"}],
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "stop":"END","max_completion_tokens":5,"seed":7}"#;
        let r = chat_request(serde_json::from_str(body).unwrap(), Default::default()).unwrap();
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(
            r.messages[1].images().collect::<Vec<_>>(),
            vec!["data:image/png;base64,AAAA"]
        );
        assert_eq!(r.messages[2].tool_calls[0].arguments, "{\"x\":1}");
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(r.sampling.stop, vec!["END"]);
        assert_eq!(r.sampling.max_tokens, Some(5));
        assert_eq!(r.sampling.seed, Some(7));
        assert_eq!(r.tools[0].name, "f");
    }
}
