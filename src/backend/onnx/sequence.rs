//! One request inside the engine: its sampler, incremental detokeniser, stop-string
//! matcher and tool-call parser, and the channel its events go out on. The engine
//! feeds it one sampled token at a time; it decides when the generation ends and
//! sends `Delta`, `ToolCall` and the final `Finish` with exact token counts.

use std::time::Instant;

use tokenizers::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::detok::Detokenizer;
use super::sampler::{Sampler, SamplingParams};
use super::stop::{StopMatcher, StopStep};
use super::toolcall::{Piece, ToolCallParser};
use crate::domain::{Event, FinishReason, Usage};
use crate::error::BackendError;

/// Where a sequence's events go.
pub type Events = UnboundedSender<Result<Event, BackendError>>;

/// A request as the engine queue holds it: already tokenised and checked to fit.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Completion tokens allowed (already capped by the context).
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep generating past stop tokens until `max_tokens` (benchmarks, tests).
    pub ignore_eos: bool,
    pub events: Events,
    pub cancel: CancellationToken,
    pub queued_at: Instant,
}

impl Job {
    /// The client went away (or the gateway cut it) while the job waited or ran.
    pub fn abandoned(&self) -> bool {
        self.cancel.is_cancelled() || self.events.is_closed()
    }
}

/// What the engine shares with every sequence.
pub struct Vocab<'a> {
    pub tokenizer: &'a Tokenizer,
    pub stop_ids: &'a [u32],
    pub max_context: usize,
    /// The backend's name, for errors.
    pub backend: &'a str,
}

pub struct Sequence {
    pub job: Job,
    sampler: Sampler,
    detok: Detokenizer,
    stop: StopMatcher,
    tools: ToolCallParser,
    /// Tokens in the KV cache for this row.
    pub len: usize,
    /// The last sampled token, fed at the next decode step.
    pub next: u32,
    generated: usize,
    /// Tool calls sent so far (the next call's index).
    calls: u32,
    finished: bool,
}

impl Sequence {
    pub fn new(mut job: Job, tool_tags: &(String, String)) -> Self {
        let tail_start = job.prompt.len().saturating_sub(4);
        let detok = Detokenizer::new(&job.prompt[tail_start..]);
        let stop = StopMatcher::new(std::mem::take(&mut job.stop));
        Sequence {
            sampler: Sampler::new(job.sampling.clone()),
            detok,
            stop,
            tools: ToolCallParser::new(&tool_tags.0, &tool_tags.1),
            len: job.prompt.len(),
            next: 0,
            generated: 0,
            calls: 0,
            finished: false,
            job,
        }
    }

    /// Done (finished, or its client is gone): the engine drops it at the next step.
    pub fn is_done(&self) -> bool {
        self.finished || self.job.abandoned()
    }

    /// Sample from this row's logits and handle the token.
    pub fn step(&mut self, logits: &mut [f32], vocab: &Vocab<'_>) {
        let token = self.sampler.sample(logits);
        self.generated += 1;
        if !self.job.ignore_eos && vocab.stop_ids.contains(&token) {
            return self.finish(FinishReason::Stop, true, vocab.tokenizer);
        }
        self.next = token;
        let text = match self.detok.push(vocab.tokenizer, token) {
            Ok(text) => text,
            Err(e) => {
                return self.fail(BackendError::Failed {
                    backend: vocab.backend.to_owned(),
                    message: format!("cannot decode token {token}: {e}"),
                })
            }
        };
        match self.stop.push(&text) {
            StopStep::Continue(text) => self.emit_text(&text),
            StopStep::Stopped(text) => {
                self.emit_text(&text);
                return self.finish(FinishReason::Stop, false, vocab.tokenizer);
            }
        }
        let context_full = self.job.prompt.len() + self.generated >= vocab.max_context;
        if self.generated >= self.job.max_tokens || context_full {
            self.finish(FinishReason::Length, true, vocab.tokenizer);
        }
    }

    /// End with an engine error.
    pub fn fail(&mut self, error: BackendError) {
        if !self.finished {
            self.finished = true;
            let _ = self.job.events.send(Err(error));
        }
    }

    fn emit_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let pieces = self.tools.push(text);
        self.emit(pieces);
    }

    fn emit(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            let event = match piece {
                Piece::Text(text) if text.is_empty() => continue,
                Piece::Text(text) => Event::Delta(text),
                Piece::Call { name, arguments } => {
                    self.calls += 1;
                    Event::ToolCall {
                        index: self.calls - 1,
                        id: Some(call_id()),
                        name: Some(name),
                        arguments,
                    }
                }
            };
            if self.job.events.send(Ok(event)).is_err() {
                self.finished = true;
                return;
            }
        }
    }

    /// Release held-back text (unless a stop string cut it), then send `Finish`.
    fn finish(&mut self, reason: FinishReason, flush: bool, tokenizer: &Tokenizer) {
        if flush {
            if let Ok(rest) = self.detok.flush(tokenizer) {
                match self.stop.push(&rest) {
                    StopStep::Continue(text) => {
                        self.emit_text(&text);
                        let held = self.stop.flush();
                        self.emit_text(&held);
                    }
                    StopStep::Stopped(text) => self.emit_text(&text),
                }
            }
        }
        let pieces = self.tools.finish();
        self.emit(pieces);
        let reason = if reason == FinishReason::Stop && self.calls > 0 {
            FinishReason::ToolCalls
        } else {
            reason
        };
        let usage = Usage {
            prompt_tokens: self.job.prompt.len() as u32,
            completion_tokens: self.generated as u32,
        };
        let _ = self.job.events.send(Ok(Event::Finish {
            reason,
            usage: Some(usage),
        }));
        self.finished = true;
    }
}

/// An OpenAI-style tool call id: `call_` and 24 random characters.
fn call_id() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(24);
    format!("call_{id}")
}
