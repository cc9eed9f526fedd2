//! One tool call the gateway ran during an agent run, as the client sees it: an SSE
//! comment by default, a `sluice_step` chunk and a `sluice_steps` list with
//! `x-sluice-trace: 1`. It never holds the tool's output (that went to the model).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The model turn that asked for it (1 = the first).
    pub turn: u32,
    pub tool: String,
    /// The model's id for the call.
    pub call_id: String,
    /// The arguments as the model wrote them (JSON text).
    pub arguments: String,
    /// `ok`, `invalid`, `refused`, `error`, `timeout`, `cancelled` or `unavailable`.
    pub outcome: String,
    pub duration_ms: f64,
    /// What went wrong, as the model was told (absent when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The tool's answers change with time (the run is not cached).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volatile: bool,
}

/// Why an answer stopped before the model finished it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Incomplete {
    /// The agent run's `deadline` passed.
    Deadline,
    /// Tool results made the conversation too long for the model's context.
    ContextLength,
}

impl Incomplete {
    pub fn as_str(self) -> &'static str {
        match self {
            Incomplete::Deadline => "deadline",
            Incomplete::ContextLength => "context_length",
        }
    }
}
