//! The chat request as the pipeline and the backends see it: messages, tools and
//! sampling parameters, already validated by `http/`.

use serde::Serialize;

/// Who wrote a message. `developer` on the wire is folded into `System`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The role's name on the OpenAI and Ollama wires and in chat templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
    },
    /// An image by URL: either `data:<mime>;base64,<data>` or an http(s) URL.
    Image {
        url: String,
    },
}

/// A tool call made by the assistant (in history or in a response).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text, exactly as OpenAI clients send and expect them.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentPart>,
    /// Set on assistant messages that called tools.
    pub tool_calls: Vec<ToolCall>,
    /// Set on tool messages: which call this is the result of.
    pub tool_call_id: Option<String>,
    /// Optional participant name (user/assistant) or tool name.
    pub name: Option<String>,
}

impl Message {
    /// A message with a single text part.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: vec![ContentPart::Text { text: text.into() }],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// All text parts joined: what text-only engines receive.
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let ContentPart::Text { text } = part {
                out.push_str(text);
            }
        }
        out
    }

    /// Image URLs in order.
    pub fn images(&self) -> impl Iterator<Item = &str> {
        self.content.iter().filter_map(|p| match p {
            ContentPart::Image { url } => Some(url.as_str()),
            ContentPart::Text { .. } => None,
        })
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Function(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: serde_json::Value,
        strict: Option<bool>,
    },
}

/// Sampling and length parameters; `None` means "the engine's default".
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sampling {
    /// The float fields are `f64`, as the client's JSON numbers are: HTTP backends
    /// forward them unchanged (`0.3` stays `0.3`); the embedded engine narrows them.
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Not an OpenAI field: vLLM/llama.cpp/Ollama's `top_k`, sent as `extra_body`.
    pub top_k: Option<u32>,
}

/// A validated chat request for one logical model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The logical model name the client asked for.
    pub model: String,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub sampling: Sampling,
    /// Number of choices; the gateway serves 1 and rejects more where a backend cannot.
    pub n: u32,
    pub user: Option<String>,
    /// Top-level body fields neither OpenAI's request nor sluice knows (vLLM's
    /// `chat_template_kwargs`, `min_p`, ...), as the client sent them: forwarded to an
    /// OpenAI-compatible upstream when its model sets `forward_unknown_fields`.
    pub extra: serde_json::Map<String, serde_json::Value>,
}
