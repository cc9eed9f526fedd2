//! One engine per loaded tier: a dedicated OS thread that owns the ONNX session and
//! runs continuous (iteration-level) batching. Between two decode steps it drops
//! finished or abandoned sequences (their cache rows are reused) and admits waiting
//! requests: each new prompt is prefilled on its own (one `Session::run` per prompt, no
//! padding) and its cache written into a free row; then one `Session::run` decodes one
//! token for every active sequence. Requests wait in a bounded queue; when it is full
//! [`EngineHandle::submit`] fails at once with `Overloaded` (503 + `retry-after`).
//! When the thread ends, by a panic too, the engine's drop guard marks it stopped
//! (`/readyz` turns 503) and answers its running and queued requests with the same 503;
//! later submits are refused at once.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use tokenizers::Tokenizer;

use super::decoder::{Decoder, Step};
use super::kv::{attention_mask, KvStore};
use super::sequence::{Job, Sequence, Vocab};
use super::stats::TierStats;
use crate::backend::test_hooks;
use crate::backend::TierLoad;
use crate::error::BackendError;

/// How one engine runs.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub backend: String,
    pub tier: String,
    pub max_batch_size: usize,
    pub max_context: usize,
    pub queue_size: usize,
    /// The thread runs at background CPU priority (`priority = "background"`).
    pub background: bool,
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
    pub mask_seconds: Histogram,
    /// Labelled backend, tier, kind.
    pub constrained: IntCounterVec,
    pub constraint_ended: IntCounter,
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
    stats: Arc<TierStats>,
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
        let stats = Arc::new(TierStats::default());
        let handle = EngineHandle {
            jobs,
            waiting: waiting.clone(),
            alive: alive.clone(),
            queue_depth: metrics.queue_depth.clone(),
            settings: settings.clone(),
            stats: stats.clone(),
        };
        let engine = Engine {
            alive,
            stats,
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
            // `Engine`'s `Drop` is the thread's guard: it runs whether `run` returns or
            // panics.
            .spawn(move || {
                if engine.settings.background {
                    if let Err(e) = super::priority::lower_current_thread() {
                        tracing::warn!(error = %e, "engine runs at normal priority");
                    }
                }
                engine.run()
            })
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        Ok(handle)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Queue depth, active sequences and measured step times, for the router.
    pub fn load(&self) -> TierLoad {
        self.stats.load(
            self.waiting.load(Ordering::Relaxed),
            self.settings.max_batch_size,
        )
    }

    /// Queue a job, or refuse at once when the queue is full or the thread has stopped.
    pub fn submit(&self, job: Job) -> Result<(), BackendError> {
        if !self.is_alive() {
            return Err(stopped(&self.settings));
        }
        let depth = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        self.queue_depth.set(depth as i64);
        match self.jobs.try_send(job) {
            Ok(()) => {
                // Pairs with the fence in `Engine::drop`: either the guard's drain sees
                // this job (and answers it), or this load sees the thread stopped. In the
                // latter case the job may never be answered, so refuse it here.
                fence(Ordering::SeqCst);
                if self.is_alive() {
                    Ok(())
                } else {
                    Err(stopped(&self.settings))
                }
            }
            Err(e) => {
                let depth = self.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
                self.queue_depth.set(depth as i64);
                Err(match e {
                    TrySendError::Full(_) => BackendError::Overloaded {
                        backend: self.settings.backend.clone(),
                        retry_after: Duration::from_secs(1),
                    },
                    TrySendError::Disconnected(_) => stopped(&self.settings),
                })
            }
        }
    }
}

/// What a request gets from an engine whose thread has stopped: 503 with
/// `retry-after`, so clients and load balancers go to another replica while this one
/// reports not ready. (`Overloaded` is the 503 variant `BackendError` has; the log line
/// from the drop guard says what really happened.)
fn stopped(settings: &EngineSettings) -> BackendError {
    BackendError::Overloaded {
        backend: settings.backend.clone(),
        retry_after: Duration::from_secs(1),
    }
}

struct Engine {
    /// Shared with the handle; cleared by `drop` when the thread ends.
    alive: Arc<AtomicBool>,
    /// What the router reads: step times, active sequences, cumulative work.
    stats: Arc<TierStats>,
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

/// The thread's drop guard: runs when `run` returns (the backend was dropped) and while
/// the thread unwinds from a panic. Nothing here may panic.
impl Drop for Engine {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        // Pairs with the fence in `EngineHandle::submit`.
        fence(Ordering::SeqCst);
        if std::thread::panicking() {
            tracing::error!(
                backend = %self.settings.backend,
                tier = %self.settings.tier,
                running = self.seqs.len(),
                "the engine thread panicked: its requests get 503 and /readyz reports not ready"
            );
        }
        let error = stopped(&self.settings);
        for seq in &mut self.seqs {
            seq.fail(error.clone());
        }
        while let Ok(job) = self.rx.try_recv() {
            let depth = self
                .waiting
                .fetch_sub(1, Ordering::AcqRel)
                .saturating_sub(1);
            self.metrics.queue_depth.set(depth as i64);
            let _ = job.events.send(Err(error.clone()));
        }
        self.metrics.active.set(0);
    }
}

impl Engine {
    fn run(mut self) {
        loop {
            if test_hooks::take_engine_panic(&self.settings.backend) {
                // Stands in for a bug in the engine (see `backend::test_hooks`).
                panic!("engine thread panicked on purpose (test hook)");
            }
            let Some(new) = self.admit() else {
                return; // every sender is gone: the backend was dropped
            };
            self.prefill(new);
            self.drop_done();
            self.metrics.active.set(self.seqs.len() as i64);
            self.stats.set_active(self.seqs.len());
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
            self.stats.set_active(0);
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
        if let Some(constraint) = &job.constraint {
            let labels = [
                &*self.settings.backend,
                &*self.settings.tier,
                constraint.kind,
            ];
            self.metrics.constrained.with_label_values(&labels).inc();
        }
        let mut seq = Sequence::new(job, &self.shared.tool_tags);
        let decoder = &mut self.decoder;
        let mask_seconds = &self.metrics.mask_seconds;
        // The first token's mask is computed on rayon's pool while the prompt runs.
        let result = rayon::in_place_scope(|scope| {
            if let Some(constraint) = seq.pending_mask() {
                scope.spawn(move |_| constraint.prepare(mask_seconds));
            }
            decoder.empty_past(1).and_then(|past| {
                decoder.run(Step {
                    batch: 1,
                    seq: len,
                    input_ids,
                    attention_mask: vec![1; len],
                    position_ids: (0..len as i64).collect(),
                    past: past.iter().map(Into::into).collect(),
                    last: vec![len.saturating_sub(1)],
                })
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
        let took = started.elapsed();
        self.metrics.prefill_seconds.observe(took.as_secs_f64());
        self.stats.prefilled(len, took);
        let vocab = vocab(&self.shared, &self.settings, &self.metrics);
        seq.step_checked(&mut out.logits[..out.vocab], &vocab);
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
        let input_ids = self.seqs.iter().map(|s| s.next as i64).collect();
        let (decoder, kv, mask_seconds) = (&mut self.decoder, &self.kv, &self.metrics.mask_seconds);
        // Constraint masks for the tokens this step samples are computed on rayon's pool,
        // in parallel with each other and with the model run, off the critical path.
        let result = rayon::in_place_scope(|scope| {
            for seq in &mut self.seqs {
                if let Some(constraint) = seq.pending_mask() {
                    scope.spawn(move |_| constraint.prepare(mask_seconds));
                }
            }
            kv.views().and_then(|past| {
                decoder.run(Step {
                    batch,
                    seq: 1,
                    input_ids,
                    attention_mask: attention_mask(&lens, cap, 1),
                    position_ids: lens.iter().map(|&l| l as i64).collect(),
                    past,
                    last: vec![0; batch],
                })
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
        let took = started.elapsed();
        self.metrics.decode_seconds.observe(took.as_secs_f64());
        self.stats.decoded(batch, took);
        self.metrics.generated_tokens.inc_by(batch as u64);
        let vocab_size = out.vocab;
        let vocab = vocab(&self.shared, &self.settings, &self.metrics);
        let mut refused = Vec::new();
        for (row, seq) in self.seqs.iter_mut().enumerate() {
            seq.len += 1;
            if seq.is_done() {
                continue;
            }
            let logits = &mut out.logits[row * vocab_size..(row + 1) * vocab_size];
            if !seq.try_step(logits, &vocab) {
                refused.push(row);
            }
        }
        // Tokens a check-first grammar refused: their masks, in parallel when several,
        // then a draw from the masked logits.
        if refused.len() > 1 {
            let mask_seconds = &self.metrics.mask_seconds;
            rayon::in_place_scope(|scope| {
                for (row, seq) in self.seqs.iter_mut().enumerate() {
                    if refused.binary_search(&row).is_ok() {
                        if let Some(constraint) = seq.pending_mask() {
                            scope.spawn(move |_| constraint.prepare(mask_seconds));
                        }
                    }
                }
            });
        }
        for row in refused {
            let logits = &mut out.logits[row * vocab_size..(row + 1) * vocab_size];
            self.seqs[row].step(logits, &vocab);
        }
    }
}

/// What a sequence needs from its engine to handle a token.
fn vocab<'a>(
    shared: &'a Shared,
    settings: &'a EngineSettings,
    metrics: &'a EngineMetrics,
) -> Vocab<'a> {
    Vocab {
        tokenizer: &shared.tokenizer,
        stop_ids: &shared.stop_ids,
        max_context: settings.max_context,
        backend: &settings.backend,
        mask_seconds: &metrics.mask_seconds,
        constraint_ended: &metrics.constraint_ended,
    }
}
