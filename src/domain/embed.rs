//! Embedding requests and responses in domain form.

/// One thing to embed: text, or token ids a client already produced with the model's
/// tokenizer (the OpenAI API's integer-array inputs).
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

impl EmbedInput {
    /// The text, when this input is text.
    pub fn text(&self) -> Option<&str> {
        match self {
            EmbedInput::Text(text) => Some(text),
            EmbedInput::Tokens(_) => None,
        }
    }
}

/// Inputs to embed for one logical model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub model: String,
    pub input: Vec<EmbedInput>,
    pub dimensions: Option<u32>,
}

/// One vector per input, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResponse {
    pub embeddings: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}
