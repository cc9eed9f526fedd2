//! The micro-batcher: one OS thread that owns the encoder session and embeds the
//! inputs of concurrent requests together. Requests wait in a bounded queue; when it is
//! full [`BatcherHandle::submit`] fails at once with `Overloaded` (503 + `retry-after`).
//! The thread takes what is waiting, up to `max_batch_size` inputs (a request with more
//! is spread over consecutive batches), and while the batch is not full it waits at
//! most `max_wait` for more — and only as long as the batch is smaller than the one
//! before, so a lone client never waits and a steady crowd fills each batch. The batch
//! is cut into runs of similar lengths ([`plan`](super::plan)), each padded to its
//! longest input and encoded by one `Session::run` (the encoder's pool threads sleep
//! between runs rather than spin: the same cores serve HTTP and tokenisation); the token
//! states are pooled in place and a request gets its vectors as soon as the run with its
//! last input is done. A request
//! whose client has gone is dropped before it costs a run. When the thread ends, by a
//! panic too, its guard marks it stopped (`/readyz` turns 503) and every waiting
//! request gets 503.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::oneshot;

use super::encoder::Encoder;
use super::folder::Pooling;
use super::{plan, pooling};
use crate::backend::test_hooks;
use crate::error::BackendError;

/// One request: its inputs' token ids (special tokens included) and where the
/// vectors go, in input order.
pub struct Job {
    pub inputs: Vec<Vec<u32>>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, BackendError>>,
}

#[derive(Debug, Clone)]
pub struct BatcherSettings {
    pub backend: String,
    pub max_batch_size: usize,
    pub max_wait: Duration,
    pub queue_size: usize,
    pub pooling: Pooling,
    pub normalize: bool,
}

/// The batcher's metric children, labelled with the backend.
#[derive(Clone)]
pub struct BatcherMetrics {
    pub queue_depth: IntGauge,
    pub batch_size: Histogram,
    pub inputs: IntCounter,
    pub run_seconds: Histogram,
    pub input_tokens: IntCounter,
    pub padding_tokens: IntCounter,
}

/// The async side's handle.
pub struct BatcherHandle {
    jobs: SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
    queue_depth: IntGauge,
    backend: String,
}

/// What a request gets when the batcher cannot take it (full queue or stopped thread).
pub fn overloaded(backend: &str) -> BackendError {
    BackendError::Overloaded {
        backend: backend.to_owned(),
        retry_after: Duration::from_secs(1),
    }
}

impl BatcherHandle {
    pub fn start(
        encoder: Encoder,
        settings: BatcherSettings,
        metrics: BatcherMetrics,
    ) -> Result<Self, String> {
        let (jobs, rx) = sync_channel(settings.queue_size);
        let waiting = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let handle = BatcherHandle {
            jobs,
            waiting: waiting.clone(),
            alive: alive.clone(),
            queue_depth: metrics.queue_depth.clone(),
            backend: settings.backend.clone(),
        };
        let batcher = Batcher {
            encoder,
            name: format!("sluice-{}-embed", settings.backend),
            settings,
            metrics,
            rx,
            waiting,
            alive,
            pending: Vec::new(),
        };
        std::thread::Builder::new()
            .name(batcher.name.clone())
            // `Batcher`'s `Drop` is the thread's guard, on return and on panic.
            .spawn(move || batcher.run())
            .map_err(|e| format!("cannot start the batcher thread: {e}"))?;
        Ok(handle)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Queue a request, or refuse at once when the queue is full or the thread stopped.
    /// (A request queued just as the thread dies is answered too: its reply sender is
    /// dropped with the queue, which the waiting side reads as 503.)
    pub fn submit(&self, job: Job) -> Result<(), BackendError> {
        if !self.is_alive() {
            return Err(overloaded(&self.backend));
        }
        let depth = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        self.queue_depth.set(depth as i64);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                let depth = self.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
                self.queue_depth.set(depth as i64);
                match e {
                    TrySendError::Full(_) | TrySendError::Disconnected(_) => {
                        Err(overloaded(&self.backend))
                    }
                }
            }
        }
    }
}

/// A request taken from the queue: its vectors so far.
struct Pending {
    inputs: Vec<Vec<u32>>,
    /// Taken when the request is answered.
    reply: Option<oneshot::Sender<Result<Vec<Vec<f32>>, BackendError>>>,
    /// Inputs handed to a batch so far (they are taken in order).
    next: usize,
    /// Inputs whose vectors are in `out`.
    done: usize,
    out: Vec<Vec<f32>>,
    error: Option<BackendError>,
}

impl Pending {
    fn left(&self) -> usize {
        self.inputs.len() - self.next
    }

    /// Answered already, or nobody is waiting for the answer any more.
    fn gone(&self) -> bool {
        self.reply.as_ref().is_none_or(oneshot::Sender::is_closed)
    }
}

/// One input of the current batch: which request, which of its inputs.
#[derive(Clone, Copy)]
struct Slot {
    pending: usize,
    input: usize,
}

struct Batcher {
    encoder: Encoder,
    name: String,
    settings: BatcherSettings,
    metrics: BatcherMetrics,
    rx: Receiver<Job>,
    waiting: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
    pending: Vec<Pending>,
}

/// The thread's guard: runs when `run` returns (the backend was dropped) and while the
/// thread unwinds from a panic. Dropping the queue and the pending requests drops their
/// reply senders, which their waiting requests answer with 503. Nothing here may panic.
impl Drop for Batcher {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        if std::thread::panicking() {
            tracing::error!(
                thread = %self.name,
                pending = self.pending.len(),
                "the embedding batcher panicked: its requests get 503 and /readyz reports not ready"
            );
        }
        for reply in self.pending.drain(..).filter_map(|p| p.reply) {
            let _ = reply.send(Err(overloaded(&self.settings.backend)));
        }
        self.metrics.queue_depth.set(0);
    }
}

impl Batcher {
    fn run(mut self) {
        // Inputs in the last batch: how many the next one waits for (at most max_wait).
        let mut expected = 1;
        loop {
            if test_hooks::take_engine_panic(&self.settings.backend) {
                // Stands in for a bug in the batcher (see `backend::test_hooks`).
                panic!("embedding batcher panicked on purpose (test hook)");
            }
            if !self.collect(expected) {
                return; // every sender is gone: the backend was dropped
            }
            let batch = self.take_batch();
            if batch.is_empty() {
                continue;
            }
            expected = batch.len();
            self.encode(&batch);
            self.pending.retain(|p| !p.gone());
        }
    }

    fn accept(&mut self, job: Job) {
        let depth = self
            .waiting
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        self.metrics.queue_depth.set(depth as i64);
        let n = job.inputs.len();
        self.pending.push(Pending {
            inputs: job.inputs,
            reply: Some(job.reply),
            next: 0,
            done: 0,
            out: vec![Vec::new(); n],
            error: None,
        });
    }

    fn inputs_waiting(&self) -> usize {
        self.pending.iter().map(Pending::left).sum()
    }

    /// Gather requests until a batch's worth of inputs waits, `expected` inputs wait, or
    /// `max_wait` has passed since the first one. Blocks while there is nothing to do;
    /// false when the queue is closed and nothing is left.
    fn collect(&mut self, expected: usize) -> bool {
        let max = self.settings.max_batch_size;
        let wanted = expected.clamp(1, max);
        loop {
            self.pending.retain(|p| !p.gone());
            if self.inputs_waiting() > 0 {
                break;
            }
            match self.rx.recv() {
                Ok(job) => self.accept(job),
                Err(_) => return false,
            }
        }
        let deadline = Instant::now() + self.settings.max_wait;
        loop {
            while self.inputs_waiting() < max {
                match self.rx.try_recv() {
                    Ok(job) => self.accept(job),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if self.inputs_waiting() >= wanted || now >= deadline {
                return true;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(job) => self.accept(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return true,
            }
        }
    }

    /// Up to `max_batch_size` inputs, oldest requests first.
    fn take_batch(&mut self) -> Vec<Slot> {
        self.pending.retain(|p| !p.gone());
        let mut batch = Vec::new();
        for (index, p) in self.pending.iter_mut().enumerate() {
            let room = self.settings.max_batch_size - batch.len();
            let take = p.left().min(room);
            batch.extend((p.next..p.next + take).map(|input| Slot {
                pending: index,
                input,
            }));
            p.next += take;
            if batch.len() == self.settings.max_batch_size {
                break;
            }
        }
        batch
    }

    /// Encode the batch, run by run (shortest inputs first), pool every input's vector
    /// into its request, and answer each request as soon as its last input is done.
    fn encode(&mut self, batch: &[Slot]) {
        let lens: Vec<usize> = batch
            .iter()
            .map(|s| self.pending[s.pending].inputs[s.input].len())
            .collect();
        for run in plan::runs(&lens, plan::RUN_COST_TOKENS) {
            let slots: Vec<Slot> = run.iter().map(|&i| batch[i]).collect();
            let lens: Vec<usize> = run.iter().map(|&i| lens[i]).collect();
            let seq = lens.iter().copied().max().unwrap_or(0).max(1);
            let rows = slots.len();
            let mut input_ids = vec![0i64; rows * seq];
            let mut attention_mask = vec![0i64; rows * seq];
            for (row, slot) in slots.iter().enumerate() {
                let ids = &self.pending[slot.pending].inputs[slot.input];
                for (p, &id) in ids.iter().enumerate() {
                    input_ids[row * seq + p] = i64::from(id);
                    attention_mask[row * seq + p] = 1;
                }
            }
            let started = Instant::now();
            let (pooling, normalize) = (self.settings.pooling, self.settings.normalize);
            let result = self
                .encoder
                .run(rows, seq, input_ids, attention_mask, |hidden| {
                    (0..rows)
                        .map(|row| {
                            let mut v = pooling::pool(&hidden, row, lens[row], pooling);
                            if normalize {
                                pooling::normalize(&mut v);
                            }
                            v
                        })
                        .collect::<Vec<_>>()
                });
            let tokens: usize = lens.iter().sum();
            match result {
                Ok(vectors) => {
                    self.metrics
                        .run_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.batch_size.observe(rows as f64);
                    self.metrics.inputs.inc_by(rows as u64);
                    self.metrics.input_tokens.inc_by(tokens as u64);
                    self.metrics
                        .padding_tokens
                        .inc_by((rows * seq - tokens) as u64);
                    for (slot, vector) in slots.iter().zip(vectors) {
                        let p = &mut self.pending[slot.pending];
                        p.out[slot.input] = vector;
                        p.done += 1;
                    }
                }
                Err(e) => {
                    let error = BackendError::Failed {
                        backend: self.settings.backend.clone(),
                        message: format!("encoding failed: {e}"),
                    };
                    tracing::error!(thread = %self.name, %error, rows, seq, "encoder run failed");
                    for slot in &slots {
                        self.pending[slot.pending].error = Some(error.clone());
                    }
                }
            }
            self.answer_finished();
        }
    }

    /// Answer every request whose inputs are all done, or that failed. (They leave
    /// `pending` after the batch: its slots point into it.)
    fn answer_finished(&mut self) {
        for p in &mut self.pending {
            if p.error.is_none() && p.done < p.inputs.len() {
                continue;
            }
            if let Some(reply) = p.reply.take() {
                let answer = match p.error.take() {
                    Some(error) => Err(error),
                    None => Ok(std::mem::take(&mut p.out)),
                };
                let _ = reply.send(answer);
            }
        }
    }
}
