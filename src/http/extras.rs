//! What a chat body holds beside the OpenAI request type (async-openai's
//! `CreateChatCompletionRequest`): sampling fields beyond OpenAI's own that vLLM,
//! llama.cpp and Ollama's OpenAI API accept (clients send them with `extra_body`),
//! OpenAI's float fields at full precision, and every top-level field neither OpenAI's
//! request nor sluice knows, for the upstreams whose model forwards them.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The top-level fields of OpenAI's chat request (async-openai 0.43's
/// `CreateChatCompletionRequest`): anything else in a body is [`SamplingExtras::unknown`].
const OPENAI_FIELDS: [&str; 37] = [
    "messages",
    "model",
    "modalities",
    "verbosity",
    "reasoning_effort",
    "max_completion_tokens",
    "frequency_penalty",
    "presence_penalty",
    "web_search_options",
    "top_logprobs",
    "response_format",
    "audio",
    "store",
    "stream",
    "stop",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "prediction",
    "seed",
    "stream_options",
    "service_tier",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "function_call",
    "functions",
    "metadata",
    "prompt_cache_options",
    "moderation",
    "top_k",
];

/// See the module header. async-openai reads OpenAI's float fields into `f32`, which
/// would turn a client's `0.3` into `0.30000001192092896` on the way to the upstream;
/// read here as `f64` they are forwarded as the client wrote them.
#[derive(Debug, Default, PartialEq)]
pub struct SamplingExtras {
    /// Sample only among the `top_k` most likely tokens (0 = off).
    pub top_k: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Fields neither OpenAI's request nor sluice knows, in the client's order.
    pub unknown: Map<String, Value>,
}

impl<'de> Deserialize<'de> for SamplingExtras {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ExtrasVisitor)
    }
}

struct ExtrasVisitor;

impl<'de> Visitor<'de> for ExtrasVisitor {
    type Value = SamplingExtras;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat completion request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SamplingExtras, A::Error> {
        let mut out = SamplingExtras::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::TopK => out.top_k = map.next_value()?,
                Key::Temperature => out.temperature = map.next_value()?,
                Key::TopP => out.top_p = map.next_value()?,
                Key::PresencePenalty => out.presence_penalty = map.next_value()?,
                Key::FrequencyPenalty => out.frequency_penalty = map.next_value()?,
                Key::OpenAi => {
                    map.next_value::<IgnoredAny>()?;
                }
                Key::Unknown(name) => {
                    let value = map.next_value::<Value>()?;
                    out.unknown.insert(name, value);
                }
            }
        }
        Ok(out)
    }
}

/// A top-level key, told apart without allocating: only an unknown one is kept.
enum Key {
    TopK,
    Temperature,
    TopP,
    PresencePenalty,
    FrequencyPenalty,
    OpenAi,
    Unknown(String),
}

impl Key {
    fn of(name: &str) -> Option<Key> {
        Some(match name {
            "top_k" => Key::TopK,
            "temperature" => Key::Temperature,
            "top_p" => Key::TopP,
            "presence_penalty" => Key::PresencePenalty,
            "frequency_penalty" => Key::FrequencyPenalty,
            k if OPENAI_FIELDS.contains(&k) => Key::OpenAi,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Key, E> {
        Ok(Key::of(name).unwrap_or_else(|| Key::Unknown(name.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, name: String) -> Result<Key, E> {
        Ok(Key::of(&name).unwrap_or(Key::Unknown(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_keep_their_written_value_and_unknown_fields_keep_their_order() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.3,
            "top_p":0.95,"min_p":0.05,"top_k":40,"chat_template_kwargs":{"enable_thinking":false},
            "logprobs":true,"guided_choice":["a","b"]}"#;
        let extras: SamplingExtras = serde_json::from_str(body).unwrap();
        assert_eq!(extras.temperature, Some(0.3));
        assert_eq!(extras.top_p, Some(0.95));
        assert_eq!(extras.top_k, Some(40));
        let keys: Vec<&str> = extras.unknown.keys().map(String::as_str).collect();
        assert_eq!(keys, ["min_p", "chat_template_kwargs", "guided_choice"]);
        assert_eq!(
            Value::Object(extras.unknown).to_string(),
            r#"{"min_p":0.05,"chat_template_kwargs":{"enable_thinking":false},"guided_choice":["a","b"]}"#
        );
    }

    #[test]
    fn a_body_without_extras_has_none() {
        let extras: SamplingExtras =
            serde_json::from_str(r#"{"model":"m","messages":[],"stream":true}"#).unwrap();
        assert_eq!(extras, SamplingExtras::default());
    }
}
