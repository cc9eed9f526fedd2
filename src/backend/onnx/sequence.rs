//! One request inside the engine: its constraint (structured generation), sampler,
//! incremental detokeniser, stop-string matcher and tool-call parser, and the channel
//! its events go out on. The engine feeds it one row of logits at a time; it masks them,
//! samples, decides when the generation ends and sends `Delta`, `ToolCall` and the
//! final `Finish` with exact token counts.

use std::time::Instant;

use prometheus::{Histogram, IntCounter};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::constraint::{Commit, Constraint};
use super::detok::Detokenizer;
use super::sampler::{Sampler, SamplingParams};
use super::stop::{StopMatcher, StopStep};
use super::toolcall::{Piece, ToolCallParser};
use crate::domain::{Event, FinishReason, Usage, MAX_TOOL_CALLS};
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
    /// What the request allows the model to write (tools, JSON); `None` = anything.
    pub constraint: Option<Constraint>,
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
    /// Time spent computing constraint masks.
    pub mask_seconds: &'a Histogram,
    /// Generations that ended because their constraint allowed nothing more.
    pub constraint_ended: &'a IntCounter,
}

pub struct Sequence {
    pub job: Job,
    sampler: Sampler,
    /// The logits as the model gave them, while a check-first draw is being checked.
    scratch: Vec<f32>,
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
        let mut tools = ToolCallParser::new(&tool_tags.0, &tool_tags.1);
        if job.constraint.as_ref().is_some_and(|c| c.kind == "tools") {
            tools = tools.streaming();
        }
        let sampler = Sampler::new(job.sampling.clone());
        if let Some(constraint) = &mut job.constraint {
            if sampler.check_first_is_exact() {
                constraint.check_first();
            }
        }
        Sequence {
            sampler,
            scratch: Vec::new(),
            detok,
            stop,
            tools,
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

    /// The constraint, while its next mask is still to be computed.
    pub fn pending_mask(&mut self) -> Option<&mut Constraint> {
        self.job
            .constraint
            .as_mut()
            .filter(|c| c.needs_mask() && !self.finished)
    }

    /// Check-first structured generation: sample from the full logits and keep the token
    /// if the grammar allows it. `false` when it does not: `logits` are as they came and
    /// the constraint now wants its mask (computed by the engine, then [`Sequence::step`]).
    /// Without a check-first constraint this is [`Sequence::step`].
    pub fn try_step(&mut self, logits: &mut [f32], vocab: &Vocab<'_>) -> bool {
        let Some(constraint) = self.job.constraint.as_mut().filter(|c| c.is_check_first()) else {
            self.step(logits, vocab);
            return true;
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(logits);
        let token = self.sampler.pick(logits);
        match constraint.try_commit(token) {
            Ok(Some(commit)) => {
                self.sampler.record(token);
                self.accept(token, commit == Commit::Complete, vocab);
                true
            }
            Ok(None) => {
                logits.copy_from_slice(&self.scratch);
                false
            }
            Err(e) => {
                self.fail(constraint_failed(vocab, &e));
                true
            }
        }
    }

    /// [`Sequence::try_step`], and on a refused token the masked draw right here.
    pub fn step_checked(&mut self, logits: &mut [f32], vocab: &Vocab<'_>) {
        if !self.try_step(logits, vocab) {
            self.step(logits, vocab);
        }
    }

    /// Mask this row's logits, sample from them and handle the token.
    pub fn step(&mut self, logits: &mut [f32], vocab: &Vocab<'_>) {
        let mut complete = false;
        let token = match &mut self.job.constraint {
            None => self.sampler.sample(logits),
            Some(constraint) => {
                let sampled = constraint
                    .apply(logits, vocab.mask_seconds)
                    .map(|()| self.sampler.sample(logits))
                    .and_then(|token| Ok((token, constraint.commit(token)?)));
                match sampled {
                    Ok((token, commit)) => {
                        complete = commit == Commit::Complete;
                        token
                    }
                    Err(e) => return self.fail(constraint_failed(vocab, &e)),
                }
            }
        };
        self.accept(token, complete, vocab);
    }

    /// Handle a sampled (and, if constrained, committed) token; `complete` when the
    /// grammar allows nothing after it.
    fn accept(&mut self, token: u32, complete: bool, vocab: &Vocab<'_>) {
        self.generated += 1;
        if vocab.stop_ids.contains(&token) && (!self.job.ignore_eos || complete) {
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
        if complete {
            vocab.constraint_ended.inc();
            return self.finish(FinishReason::Stop, true, vocab.tokenizer);
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
            if self.finished {
                return;
            }
            let event = match piece {
                Piece::Text(text) if text.is_empty() => continue,
                Piece::Text(text) => Event::Delta(text),
                // As the HTTP backends do: an answer holds at most MAX_TOOL_CALLS calls.
                Piece::Call { .. } | Piece::CallStart { .. } if self.calls >= MAX_TOOL_CALLS => {
                    return self.fail(BackendError::Protocol(format!(
                        "the model wrote more than {MAX_TOOL_CALLS} tool calls in one answer"
                    )));
                }
                Piece::Call { name, arguments } => {
                    self.calls += 1;
                    Event::ToolCall {
                        index: self.calls - 1,
                        id: Some(call_id()),
                        name: Some(name),
                        arguments,
                    }
                }
                Piece::CallStart { name } => {
                    self.calls += 1;
                    Event::ToolCall {
                        index: self.calls - 1,
                        id: Some(call_id()),
                        name: Some(name),
                        arguments: String::new(),
                    }
                }
                Piece::CallArguments(arguments) => Event::ToolCall {
                    index: self.calls.saturating_sub(1),
                    id: None,
                    name: None,
                    arguments,
                },
            };
            if self.job.events.send(Ok(event)).is_err() {
                self.finished = true;
                return;
            }
        }
    }

    /// Release held-back text (unless a stop string cut it), then send `Finish`.
    fn finish(&mut self, reason: FinishReason, flush: bool, tokenizer: &Tokenizer) {
        if self.finished {
            return;
        }
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
        if self.finished {
            return;
        }
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

/// A constraint in a state it cannot leave (a defect): the generation fails.
fn constraint_failed(vocab: &Vocab<'_>, error: &str) -> BackendError {
    BackendError::Failed {
        backend: vocab.backend.to_owned(),
        message: format!("structured generation failed: {error}"),
    }
}

/// An OpenAI-style tool call id: `call_` and 24 random characters.
fn call_id() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(24);
    format!("call_{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    fn tokenizer() -> Tokenizer {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/sluice-tiny/tokenizer.json"
        );
        Tokenizer::from_file(path).unwrap()
    }

    /// Drive a sequence with one-hot logits that force `ids`, collecting its events.
    fn run(ids: &[u32], stop: Vec<String>, max_tokens: usize) -> Vec<Event> {
        run_in(ids, stop, max_tokens, 512)
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    /// [`run`] with a context of `max_context` tokens; errors kept.
    fn run_in(
        ids: &[u32],
        stop: Vec<String>,
        max_tokens: usize,
        max_context: usize,
    ) -> Vec<Result<Event, BackendError>> {
        let tok = tokenizer();
        let vocab_size = tok.get_vocab_size(true);
        let (tx, mut rx) = unbounded_channel();
        let job = Job {
            prompt: vec![1, 5, 6],
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            max_tokens,
            stop,
            ignore_eos: false,
            events: tx,
            cancel: CancellationToken::new(),
            queued_at: Instant::now(),
            constraint: None,
        };
        let tags = ("<tool_call>".to_owned(), "</tool_call>".to_owned());
        let mut seq = Sequence::new(job, &tags);
        let mask_seconds = Histogram::with_opts(prometheus::HistogramOpts::new("m", "m")).unwrap();
        let constraint_ended = IntCounter::new("c", "c").unwrap();
        let vocab = Vocab {
            tokenizer: &tok,
            stop_ids: &[2, 0],
            max_context,
            backend: "local",
            mask_seconds: &mask_seconds,
            constraint_ended: &constraint_ended,
        };
        for &id in ids {
            if seq.is_done() {
                break;
            }
            let mut logits = vec![0.0; vocab_size];
            logits[id as usize] = 10.0;
            seq.step(&mut logits, &vocab);
        }
        drop(seq);
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.push(event);
        }
        events
    }

    fn ids(text: &str) -> Vec<u32> {
        tokenizer().encode(text, false).unwrap().get_ids().to_vec()
    }

    fn deltas(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Delta(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn multibyte_characters_split_across_tokens_stream_whole() {
        let text = "héllo wörld ✓ 日本 🎉 Ünïcödé €100";
        let mut forced = ids(text);
        assert!(
            forced.len() > text.chars().count() / 2,
            "expected byte-level splits"
        );
        forced.push(2);
        let events = run(&forced, Vec::new(), 100);
        let deltas = deltas(&events);
        assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
        assert_eq!(deltas.concat(), text);
        let Some(Event::Finish { reason, usage }) = events.last() else {
            panic!("no finish: {events:?}");
        };
        assert_eq!(*reason, FinishReason::Stop);
        assert_eq!(usage.unwrap().completion_tokens as usize, forced.len());
    }

    #[test]
    fn tool_call_tokens_become_a_tool_call_event() {
        let mut forced = ids("<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"12 * 7\"}}</tool_call>");
        assert_eq!(forced[0], 3, "<tool_call> is one special token");
        forced.push(2);
        let events = run(&forced, Vec::new(), 100);
        assert!(deltas(&events).is_empty(), "{events:?}");
        assert!(
            matches!(
                &events[0],
                Event::ToolCall { index: 0, id: Some(id), name: Some(name), arguments }
                    if id.starts_with("call_") && name == "calculator"
                        && arguments == "{\"expression\":\"12 * 7\"}"
            ),
            "{events:?}"
        );
        assert!(matches!(
            events.last(),
            Some(Event::Finish {
                reason: FinishReason::ToolCalls,
                ..
            })
        ));
    }

    #[test]
    fn two_calls_get_their_own_indexes() {
        let call = "<tool_call>{\"name\": \"current_time\", \"arguments\": {\"timezone\": \"UTC\"}}</tool_call>";
        let mut forced = ids(&format!("{call}{call}"));
        forced.push(2);
        let events = run(&forced, Vec::new(), 100);
        let indexes: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                Event::ToolCall { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(indexes, [0, 1]);
    }

    #[test]
    fn a_call_past_the_tool_call_bound_ends_the_answer_with_an_error() {
        let call = "<tool_call>{\"name\": \"f\"}</tool_call>";
        let mut forced = ids(&call.repeat(MAX_TOOL_CALLS as usize + 1));
        forced.push(2);
        let events = run_in(&forced, Vec::new(), forced.len(), forced.len() + 8);
        let calls = events
            .iter()
            .filter(|e| matches!(e, Ok(Event::ToolCall { .. })))
            .count();
        assert_eq!(calls, MAX_TOOL_CALLS as usize);
        assert!(
            matches!(events.last(), Some(Err(BackendError::Protocol(m))) if m.contains("more than 128")),
            "{:?}",
            events.last()
        );
        assert!(events.iter().all(|e| match e {
            Ok(Event::ToolCall { index, .. }) => *index < MAX_TOOL_CALLS,
            Ok(Event::Finish { .. }) => false,
            _ => true,
        }));
    }

    #[test]
    fn stop_string_and_max_tokens_end_with_the_right_reason() {
        let forced = ids("The answer is 84. Anything else?");
        let events = run(&forced, vec![" Anything".into()], 100);
        assert_eq!(deltas(&events).concat(), "The answer is 84.");
        assert!(matches!(
            events.last(),
            Some(Event::Finish {
                reason: FinishReason::Stop,
                ..
            })
        ));

        let events = run(&forced, Vec::new(), 3);
        let Some(Event::Finish { reason, usage }) = events.last() else {
            panic!("{events:?}");
        };
        assert_eq!(*reason, FinishReason::Length);
        assert_eq!(usage.unwrap().completion_tokens, 3);
        assert_eq!(usage.unwrap().prompt_tokens, 3);
    }
}
