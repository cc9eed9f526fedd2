//! One engine per loaded tier: a dedicated OS thread that owns the ONNX session and
//! runs continuous (iteration-level) batching. Between two decode steps it drops
//! finished or abandoned sequences (their cache rows are reused), admits waiting
//! requests (prefilled together in one run, written into free cache rows); then one
//! `Session::run` decodes one token for every active sequence. Requests wait in a bounded queue; when it is full
//! [`EngineHandle::submit`] fails at once with `Overloaded` (503 + `retry-after`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};
use tokenizers::Tokenizer;

use super::decoder::{Decoder, Step};
use super::kv::{attention_mask, KvStore};
use super::sequence::{Job, Sequence, Vocab};
use crate::error::BackendError;

/// How one engine runs.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub backend: String,
    pub tier: String,
    pub max_batch_size: usize,
    pub max_context: usize,
    pub queue_size: usize,
}

/// The engine's metric children, already labelled with backend and tier.
#[derive(Clone)]
pub struct EngineMetrics {
    pub queue_depth: IntGauge,
    pub active: IntGauge,
    pub batch_size: Histogram,
    pub prompt_tokens: IntCounter,
    pub generated_tokens: IntCounter,
    pub prefill_seconds: Histogram,
    pub decode_seconds: Histogram,
    pub queue_wait_seconds: Histogram,
}

/// What the model folder gives every engine.
pub struct Shared {
    pub tokenizer: Arc<Tokenizer>,
    pub stop_ids: Vec<u32>,
    pub tool_tags: (String, String),
}

/// The async side's handle: submit jobs, see whether the thread still runs.
pub struct EngineHandle {
    jobs: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
    queue_depth: IntGauge,
    settings: EngineSettings,
}

impl EngineHandle {
    /// Start the engine thread.
    pub fn start(
        decoder: Decoder,
        shared: Shared,
        settings: EngineSettings,
        metrics: EngineMetrics,
    ) -> Result<Self, String> {
        let (jobs, rx) = sync_channel(settings.queue_size);
        let waiting = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let handle = EngineHandle {
            jobs,
            waiting: waiting.clone(),
            alive: alive.clone(),
            queue_depth: metrics.queue_depth.clone(),
            settings: settings.clone(),
        };
        let engine = Engine {
            shared,
            settings: settings.clone(),
            metrics,
            rx,
            waiting,
            seqs: Vec::new(),
            kv: KvStore::new(
                decoder.kv_tensors(),
                settings.max_batch_size,
                decoder.kv_heads,
                decoder.head_dim,
                settings.max_context,
            ),
            decoder,
        };
        std::thread::Builder::new()
            .name(format!("sluice-{}-{}", settings.backend, settings.tier))
            .spawn(move || {
                engine.run();
                alive.store(false, Ordering::Release);
            })
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        Ok(handle)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Queue a job, or refuse at once when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), BackendError> {
        let depth = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        self.queue_depth.set(depth as i64);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                let depth = self.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
                self.queue_depth.set(depth as i64);
                Err(match e {
                    TrySendError::Full(_) => BackendError::Overloaded {
                        backend: self.settings.backend.clone(),
                        retry_after: Duration::from_secs(1),
                    },
                    TrySendError::Disconnected(_) => BackendError::Failed {
                        backend: self.settings.backend.clone(),
                        message: format!("the {} engine has stopped", self.settings.tier),
                    },
                })
            }
        }
    }
}

struct Engine {
    decoder: Decoder,
    shared: Shared,
    settings: EngineSettings,
    metrics: EngineMetrics,
    rx: Receiver<Job>,
    waiting: Arc<AtomicUsize>,
    /// Active sequences; row `i` of `kv` belongs to `seqs[i]`.
    seqs: Vec<Sequence>,
    kv: KvStore,
}

impl Engine {
    fn run(mut self) {
        loop {
            let Some(new) = self.admit() else {
                return; // every sender is gone: the backend was dropped
            };
            self.prefill(new);
            self.drop_done();
            self.metrics.active.set(self.seqs.len() as i64);
            if !self.seqs.is_empty() {
                self.decode();
            }
        }
    }

    /// Take waiting jobs for the free slots; block while there is nothing to do.
    fn admit(&mut self) -> Option<Vec<Job>> {
        self.drop_done();
        if self.seqs.is_empty() {
            self.metrics.active.set(0);
        }
        let mut new = Vec::new();
        let running = self.seqs.len();
        let free = self.settings.max_batch_size.saturating_sub(running);
        while new.len() < free {
            let job = if running == 0 && new.is_empty() {
                match self.rx.recv() {
                    Ok(job) => job,
                    Err(_) => return None,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if running == 0 && new.is_empty() => {
                        return None
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            let depth = self
                .waiting
                .fetch_sub(1, Ordering::AcqRel)
                .saturating_sub(1);
            self.metrics.queue_depth.set(depth as i64);
            self.metrics
                .queue_wait_seconds
                .observe(job.queued_at.elapsed().as_secs_f64());
            if !job.abandoned() {
                new.push(job);
            }
        }
        Some(new)
    }

    /// Drop finished or abandoned sequences and their cache rows.
    fn drop_done(&mut self) {
        for r in (0..self.seqs.len()).rev() {
            if self.seqs[r].is_done() {
                self.seqs.swap_remove(r);
                self.kv.swap_remove(r);
            }
        }
    }

    fn error(&self, message: String) -> BackendError {
        BackendError::Failed {
            backend: self.settings.backend.clone(),
            message,
        }
    }

    fn lens(&self) -> Vec<usize> {
        self.seqs.iter().map(|s| s.len).collect()
    }

    /// Prefill each new prompt on its own (no padding to compute), write its cache into
    /// the next free row and sample its first token.
    fn prefill(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            self.prefill_one(job);
        }
    }

    fn prefill_one(&mut self, job: Job) {
        let started = Instant::now();
        let len = job.prompt.len();
        let input_ids = job.prompt.iter().map(|&t| t as i64).collect();
        let mut seq = Sequence::new(job, &self.shared.tool_tags);
        let result = self.decoder.empty_past(1).and_then(|past| {
            self.decoder.run(Step {
                batch: 1,
                seq: len,
                input_ids,
                attention_mask: vec![1; len],
                position_ids: (0..len as i64).collect(),
                past: past.iter().map(Into::into).collect(),
                last: vec![len.saturating_sub(1)],
            })
        });
        let stored = result.and_then(|out| {
            let lens = self.lens();
            let longest = lens.iter().copied().max().unwrap_or(0).max(len);
            self.kv.reserve(longest, &lens);
            self.kv.push_rows(&out.present, &[len])?;
            Ok(out)
        });
        let mut out = match stored {
            Ok(out) => out,
            Err(e) => return seq.fail(self.error(format!("prefill failed: {e}"))),
        };
        self.metrics.prompt_tokens.inc_by(len as u64);
        self.metrics
            .prefill_seconds
            .observe(started.elapsed().as_secs_f64());
        let vocab = vocab(&self.shared, &self.settings);
        seq.step(&mut out.logits[..out.vocab], &vocab);
        self.metrics.generated_tokens.inc();
        self.seqs.push(seq);
    }

    /// One token for every active sequence.
    fn decode(&mut self) {
        let started = Instant::now();
        let batch = self.seqs.len();
        let lens = self.lens();
        let longest = lens.iter().copied().max().unwrap_or(0);
        self.kv.reserve(longest, &lens);
        let cap = self.kv.cap();
        let result = self.kv.views().and_then(|past| {
            self.decoder.run(Step {
                batch,
                seq: 1,
                input_ids: self.seqs.iter().map(|s| s.next as i64).collect(),
                attention_mask: attention_mask(&lens, cap, 1),
                position_ids: lens.iter().map(|&l| l as i64).collect(),
                past,
                last: vec![0; batch],
            })
        });
        let result = result.and_then(|out| {
            self.kv.append_last(&out.present, &lens)?;
            Ok(out)
        });
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                let error = self.error(format!("decode step failed: {e}"));
                for seq in &mut self.seqs {
                    seq.fail(error.clone());
                }
                self.seqs.clear();
                self.kv.clear();
                return;
            }
        };
        self.metrics.batch_size.observe(batch as f64);
        self.metrics
            .decode_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.generated_tokens.inc_by(batch as u64);
        let vocab_size = out.vocab;
        let vocab = vocab(&self.shared, &self.settings);
        for (row, seq) in self.seqs.iter_mut().enumerate() {
            seq.len += 1;
            if seq.is_done() {
                continue;
            }
            let logits = &mut out.logits[row * vocab_size..(row + 1) * vocab_size];
            seq.step(logits, &vocab);
        }
    }
}

/// What a sequence needs from its engine to handle a token.
fn vocab<'a>(shared: &'a Shared, settings: &'a EngineSettings) -> Vocab<'a> {
    Vocab {
        tokenizer: &shared.tokenizer,
        stop_ids: &shared.stop_ids,
        max_context: settings.max_context,
        backend: &settings.backend,
    }
}
