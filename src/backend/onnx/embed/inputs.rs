//! A request's inputs as the encoder's token ids, checked before they queue; CPU work
//! that runs on a blocking thread. Text is tokenised with the model's tokenizer (its
//! special tokens added, nothing truncated); token-id inputs are taken as the text's
//! tokens, checked against the vocabulary and framed with the same special tokens, so
//! the ids of a text embed exactly as the text does. An input longer than the model's
//! `max_seq_length` (special tokens included) is refused, naming the input and its
//! length, as OpenAI refuses an input over a model's context.

use tokenizers::Tokenizer;

use super::folder::EmbedFolder;
use crate::domain::EmbedInput;
use crate::error::BackendError;

/// The model's view of inputs.
pub struct Inputs {
    tokenizer: Tokenizer,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    vocab_size: usize,
    pub max_seq_length: usize,
}

impl Inputs {
    pub fn new(folder: &EmbedFolder) -> Self {
        Inputs {
            tokenizer: folder.tokenizer.clone(),
            prefix: folder.prefix.clone(),
            suffix: folder.suffix.clone(),
            vocab_size: folder.vocab_size,
            max_seq_length: folder.max_seq_length,
        }
    }

    /// Token ids per input (special tokens included), or a 400 naming the input at fault.
    pub fn prepare(
        &self,
        model: &str,
        inputs: &[EmbedInput],
    ) -> Result<Vec<Vec<u32>>, BackendError> {
        inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                let ids = self.ids(model, index, input)?;
                if ids.len() > self.max_seq_length {
                    return Err(BackendError::InputTooLong {
                        index,
                        tokens: ids.len(),
                        max: self.max_seq_length,
                    });
                }
                Ok(ids)
            })
            .collect()
    }

    fn ids(&self, model: &str, index: usize, input: &EmbedInput) -> Result<Vec<u32>, BackendError> {
        let invalid = |message: String| BackendError::InvalidRequest {
            message,
            param: Some("input"),
        };
        match input {
            EmbedInput::Text(text) => self
                .tokenizer
                .encode_fast(text.as_str(), true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| invalid(format!("input[{index}] cannot be tokenised: {e}"))),
            EmbedInput::Tokens(tokens) => {
                if let Some(bad) = tokens.iter().find(|&&id| id as usize >= self.vocab_size) {
                    return Err(invalid(format!(
                        "input[{index}] has token id {bad}, but model `{model}` has a vocabulary of {} tokens (ids 0 to {})",
                        self.vocab_size,
                        self.vocab_size.saturating_sub(1)
                    )));
                }
                let mut ids =
                    Vec::with_capacity(self.prefix.len() + tokens.len() + self.suffix.len());
                ids.extend_from_slice(&self.prefix);
                ids.extend_from_slice(tokens);
                ids.extend_from_slice(&self.suffix);
                Ok(ids)
            }
        }
    }
}
