//! One engine per loaded tier: a dedicated OS thread that owns the ONNX session and
//! runs continuous (iteration-level) batching. Between two decode steps it drops
//! finished or abandoned sequences, admits waiting requests (prefilled together in one
//! run), and rebuilds the batch's KV cache once; then one `Session::run` decodes one
//! token for every active sequence. Requests wait in a bounded queue; when it is full
//! [`EngineHandle::submit`] fails at once with `Overloaded` (503 + `retry-after`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};
use tokenizers::Tokenizer;

use super::decoder::{Decoder, Step};
use super::kv::{attention_mask, merge, KvCache, RowSource};
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
    pub pad_id: u32,
}

/// The async side's handle: submit jobs, see whether the thread still runs.
pub struct EngineHandle {
    jobs: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
    queue_depth: IntGauge,
    pub settings: EngineSettings,
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
            decoder,
            shared,
            settings: settings.clone(),
            metrics,
            rx,
            waiting,
            seqs: Vec::new(),
            kv: KvCache::default(),
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
    kv: KvCache,
}

impl Engine {
    fn run(mut self) {
        loop {
            let Some(new) = self.admit() else {
                return; // every sender is gone: the backend was dropped
            };
            let joined = self.prefill(new);
            self.regroup(joined);
            self.metrics.active.set(self.seqs.len() as i64);
            if !self.seqs.is_empty() {
                self.decode();
            }
        }
    }

    /// Take waiting jobs for the free slots; block while there is nothing to do.
    fn admit(&mut self) -> Option<Vec<Job>> {
        let mut new = Vec::new();
        let running = self.seqs.iter().filter(|s| !s.is_done()).count();
        if running == 0 && !self.seqs.is_empty() {
            // Everything finished: let go of the cache before waiting for work.
            self.seqs.clear();
            self.kv = KvCache::default();
            self.metrics.active.set(0);
        }
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

    fn error(&self, message: String) -> BackendError {
        BackendError::Failed {
            backend: self.settings.backend.clone(),
            message,
        }
    }

    fn vocab(&self) -> Vocab<'_> {
        Vocab {
            tokenizer: &self.shared.tokenizer,
            stop_ids: &self.shared.stop_ids,
            max_context: self.settings.max_context,
            backend: &self.settings.backend,
        }
    }

    /// Run the new prompts together (left-padded) and sample each one's first token.
    fn prefill(&mut self, jobs: Vec<Job>) -> Option<(KvCache, Vec<Sequence>)> {
        if jobs.is_empty() {
            return None;
        }
        let started = Instant::now();
        let lens: Vec<usize> = jobs.iter().map(|j| j.prompt.len()).collect();
        let longest = lens.iter().copied().max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(jobs.len() * longest);
        let mut position_ids = Vec::with_capacity(jobs.len() * longest);
        for job in &jobs {
            let pad = longest - job.prompt.len();
            input_ids.extend(std::iter::repeat_n(self.shared.pad_id as i64, pad));
            input_ids.extend(job.prompt.iter().map(|&t| t as i64));
            position_ids.extend(std::iter::repeat_n(0, pad));
            position_ids.extend(0..job.prompt.len() as i64);
        }
        let mut seqs: Vec<Sequence> = jobs
            .into_iter()
            .map(|job| Sequence::new(job, &self.shared.tool_tags))
            .collect();
        let result = self.decoder.empty_past(seqs.len()).and_then(|past| {
            self.decoder.run(Step {
                batch: seqs.len(),
                seq: longest,
                input_ids,
                attention_mask: attention_mask(&lens, longest, 0),
                position_ids,
                past: &past,
            })
        });
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                let error = self.error(format!("prefill failed: {e}"));
                for seq in &mut seqs {
                    seq.fail(error.clone());
                }
                return None;
            }
        };
        self.metrics
            .prompt_tokens
            .inc_by(lens.iter().sum::<usize>() as u64);
        self.metrics
            .prefill_seconds
            .observe(started.elapsed().as_secs_f64());
        let vocab_size = out.vocab;
        let vocab = self.vocab();
        for (row, seq) in seqs.iter_mut().enumerate() {
            let logits = &mut out.logits[row * vocab_size..(row + 1) * vocab_size];
            seq.step(logits, &vocab);
        }
        self.metrics.generated_tokens.inc_by(seqs.len() as u64);
        let kv = KvCache {
            tensors: out.present,
            past: longest,
        };
        Some((kv, seqs))
    }

    /// Drop finished rows, append the new ones, and rebuild the cache if anything changed.
    fn regroup(&mut self, joined: Option<(KvCache, Vec<Sequence>)>) {
        let leaving = self.seqs.iter().any(Sequence::is_done);
        let (new_kv, new_seqs) = joined.unwrap_or_default();
        if !leaving && new_seqs.is_empty() {
            return;
        }
        if self.seqs.is_empty() && new_seqs.iter().all(|s| !s.is_done()) {
            // Nothing running before: the prefill cache is the batch, no copy needed.
            self.kv = new_kv;
            self.seqs = new_seqs;
            return;
        }
        let old = std::mem::take(&mut self.seqs);
        let mut rows = Vec::new();
        let mut kept = Vec::new();
        let old_kv = std::mem::take(&mut self.kv);
        for (row, seq) in old.into_iter().enumerate() {
            if !seq.is_done() {
                rows.push((true, row, seq.len));
                kept.push(seq);
            }
        }
        for (row, seq) in new_seqs.into_iter().enumerate() {
            if !seq.is_done() {
                rows.push((false, row, seq.len));
                kept.push(seq);
            }
        }
        let sources: Vec<RowSource<'_>> = rows
            .iter()
            .map(|&(old, row, len)| RowSource {
                cache: if old { &old_kv } else { &new_kv },
                row,
                len,
            })
            .collect();
        match merge(&sources, self.decoder.kv_heads, self.decoder.head_dim) {
            Ok(kv) => {
                self.kv = kv;
                self.seqs = kept;
            }
            Err(e) => {
                let error = self.error(format!("cannot rebuild the KV cache: {e}"));
                for seq in &mut kept {
                    seq.fail(error.clone());
                }
            }
        }
    }

    /// One token for every active sequence.
    fn decode(&mut self) {
        let started = Instant::now();
        let batch = self.seqs.len();
        let lens: Vec<usize> = self.seqs.iter().map(|s| s.len).collect();
        let result = self.decoder.run(Step {
            batch,
            seq: 1,
            input_ids: self.seqs.iter().map(|s| s.next as i64).collect(),
            attention_mask: attention_mask(&lens, self.kv.past, 1),
            position_ids: lens.iter().map(|&l| l as i64).collect(),
            past: &self.kv.tensors,
        });
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                let error = self.error(format!("decode step failed: {e}"));
                for seq in &mut self.seqs {
                    seq.fail(error.clone());
                }
                self.seqs.clear();
                self.kv = KvCache::default();
                return;
            }
        };
        self.metrics.batch_size.observe(batch as f64);
        self.metrics
            .decode_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.generated_tokens.inc_by(batch as u64);
        self.kv = KvCache {
            tensors: std::mem::take(&mut out.present),
            past: self.kv.past + 1,
        };
        let vocab_size = out.vocab;
        let vocab = Vocab {
            tokenizer: &self.shared.tokenizer,
            stop_ids: &self.shared.stop_ids,
            max_context: self.settings.max_context,
            backend: &self.settings.backend,
        };
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
