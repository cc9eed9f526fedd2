//! Domain types shared by every stage: what `http/` converts the wire format into,
//! what `pipeline/` routes, and what `backend/` implementations consume and produce.
//! Nothing here knows JSON bodies or axum.

mod chat;
mod embed;
mod event;
mod step;

pub use chat::{
    ChatRequest, ContentPart, Message, ResponseFormat, Role, Sampling, Tool, ToolCall, ToolChoice,
};
pub use embed::{EmbedInput, EmbedRequest, EmbedResponse};
pub use event::{collect, Completion, Event, EventStream, FinishReason, Usage, MAX_TOOL_CALLS};
pub use step::{Incomplete, Step};
