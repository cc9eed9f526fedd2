//! Entry points for the `cargo fuzz` targets in `fuzz/` (not an API: hidden, and free to
//! change with them). Each is a thin wrapper over the code a request or an upstream
//! answer actually runs through, so the parsers can stay private to their modules:
//!
//! - [`chat_request`]: a chat body → `parse` + validation → domain request, then the
//!   upstream bodies the `openai` and `ollama` backends would send for it;
//! - [`openai_sse`] / [`ollama_ndjson`]: upstream stream bodies, in the chunks given,
//!   → domain events;
//! - [`StopMatcher`] and [`ToolCallParser`]: the embedded engine's text post-processing;
//! - the config loader is already public ([`crate::config::load_str`]).

use bytes::Bytes;
use futures::StreamExt;

use crate::backend::onnx::{stop, toolcall};
use crate::backend::{ollama, openai, Deployment};
use crate::domain::{ChatRequest, Event};
use crate::error::{ApiError, BackendError};
use crate::http::extract::{parse_chat, ChatJson};

/// Parse and validate a chat completions body as `POST /v1/chat/completions` does.
pub fn chat_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let ChatJson(wire, extras) = parse_chat(body)?;
    crate::http::chat_request(wire, extras)
}

/// The bodies the `openai` and `ollama` backends would send upstream for `request`.
pub fn upstream_bodies(
    request: &ChatRequest,
) -> (serde_json::Value, Result<serde_json::Value, BackendError>) {
    let deployment = Deployment {
        backend: "fuzz".into(),
        upstream_model: "fuzz-model".into(),
        keep_alive: Some("5m".into()),
        options: serde_json::Map::new(),
        tier: None,
        structured: None,
        // The request's unknown fields go into the OpenAI body too.
        forward_unknown_fields: true,
    };
    (
        openai::wire::chat_body(request, &deployment),
        ollama::wire::chat_body(request, &deployment),
    )
}

/// Domain events from an OpenAI-compatible SSE body arriving in `chunks`.
pub fn openai_sse(chunks: Vec<Vec<u8>>) -> Vec<Result<Event, BackendError>> {
    let stream = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
    futures::executor::block_on(openai::wire::events("fuzz".into(), stream).collect())
}

/// Domain events from an Ollama NDJSON body arriving in `chunks`.
pub fn ollama_ndjson(chunks: Vec<Vec<u8>>) -> Vec<Result<Event, BackendError>> {
    let stream = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
    futures::executor::block_on(ollama::wire::events("fuzz".into(), stream).collect())
}

/// The engine's stop-string matcher.
pub struct StopMatcher(stop::StopMatcher);

/// What one [`StopMatcher::push`] released, and whether generation must end.
pub struct StopStep {
    pub text: String,
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher(stop::StopMatcher::new(stops))
    }

    pub fn push(&mut self, text: &str) -> StopStep {
        match self.0.push(text) {
            stop::StopStep::Continue(text) => StopStep {
                text,
                stopped: false,
            },
            stop::StopStep::Stopped(text) => StopStep {
                text,
                stopped: true,
            },
        }
    }

    pub fn flush(&mut self) -> String {
        self.0.flush()
    }
}

/// One unit of the tool-call parser's output (see `backend/onnx/toolcall.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Call { name: String, arguments: String },
    CallStart { name: String },
    CallArguments(String),
}

impl From<toolcall::Piece> for Piece {
    fn from(piece: toolcall::Piece) -> Self {
        match piece {
            toolcall::Piece::Text(t) => Piece::Text(t),
            toolcall::Piece::Call { name, arguments } => Piece::Call { name, arguments },
            toolcall::Piece::CallStart { name } => Piece::CallStart { name },
            toolcall::Piece::CallArguments(a) => Piece::CallArguments(a),
        }
    }
}

/// The engine's tool-call parser (`streaming` as for a constrained sequence).
pub struct ToolCallParser(toolcall::ToolCallParser);

impl ToolCallParser {
    pub fn new(start_tag: &str, end_tag: &str, streaming: bool) -> Self {
        let parser = toolcall::ToolCallParser::new(start_tag, end_tag);
        ToolCallParser(if streaming {
            parser.streaming()
        } else {
            parser
        })
    }

    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.0.push(text).into_iter().map(Piece::from).collect()
    }

    pub fn finish(&mut self) -> Vec<Piece> {
        self.0.finish().into_iter().map(Piece::from).collect()
    }
}
