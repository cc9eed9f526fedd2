//! What one tier's engine measures about itself, for the router: recent decode step
//! time per batch size, active sequences and cumulative work. The engine thread writes
//! plain atomics after each step; the router reads them without locks
//! ([`TierStats::load`]). Cost is measured, never assumed: on a CPU a 4-bit tier is the
//! fastest at batch 1 and can be the slowest at batch 16, so "cheaper" is read here.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::backend::{TierLoad, TierTotals};

/// Batch-size buckets of the step-time average: 1, 2–3, 4–7, 8–15, 16–31, 32+.
const BUCKETS: usize = 6;

fn bucket(batch: usize) -> usize {
    (usize::BITS - batch.max(1).leading_zeros() - 1).min(BUCKETS as u32 - 1) as usize
}

/// Weight of the newest step in the moving average, as 1/2^SHIFT.
const SHIFT: u32 = 3;

#[derive(Default)]
pub struct TierStats {
    /// Moving average of a decode step's nanoseconds per batch-size bucket; 0 = never seen.
    step_ns: [AtomicU64; BUCKETS],
    /// The latest decode step's nanoseconds (whatever its batch).
    last_step_ns: AtomicU64,
    active: AtomicUsize,
    prefill_ns: AtomicU64,
    prompt_tokens: AtomicU64,
    decode_ns: AtomicU64,
    generated_tokens: AtomicU64,
}

impl TierStats {
    /// After a decode step of `batch` sequences that took `took`.
    pub fn decoded(&self, batch: usize, took: Duration) {
        let ns = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let slot = &self.step_ns[bucket(batch)];
        let old = slot.load(Ordering::Relaxed);
        let new = if old == 0 {
            ns
        } else {
            old - (old >> SHIFT) + (ns >> SHIFT)
        };
        slot.store(new.max(1), Ordering::Relaxed);
        self.last_step_ns.store(ns, Ordering::Relaxed);
        self.decode_ns.fetch_add(ns, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(batch as u64, Ordering::Relaxed);
    }

    /// After prefilling a prompt of `tokens` tokens in `took`.
    pub fn prefilled(&self, tokens: usize, took: Duration) {
        let ns = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.prefill_ns.fetch_add(ns, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
    }

    pub fn set_active(&self, active: usize) {
        self.active.store(active, Ordering::Relaxed);
    }

    /// The step time at `batch`: its bucket's average, else estimated from the closest
    /// bucket measured, pessimistically (from a smaller batch: growing linearly with the
    /// batch, as if rows cost their full price; from a larger one: no faster), so a batch
    /// size never seen does not look cheap.
    fn step_at(&self, batch: usize) -> Option<f64> {
        let want = bucket(batch);
        let (_, from, ns) = (0..BUCKETS)
            .filter_map(|b| {
                let ns = self.step_ns[b].load(Ordering::Relaxed);
                (ns > 0).then_some((b.abs_diff(want), b, ns))
            })
            .min()?;
        let seconds = ns as f64 / 1e9;
        Some(if from < want {
            seconds * (1u64 << (want - from)) as f64
        } else {
            seconds
        })
    }

    /// The tier as the router sees it now; `waiting` comes from the engine's queue.
    pub fn load(&self, waiting: usize, capacity: usize) -> TierLoad {
        let active = self.active.load(Ordering::Relaxed);
        let joined = active + 1;
        let step_seconds = self.step_at(joined);
        let last = self.last_step_ns.load(Ordering::Relaxed);
        TierLoad {
            waiting,
            active,
            capacity,
            recent_step_seconds: (last > 0).then(|| last as f64 / 1e9),
            token_seconds: step_seconds.map(|s| s / joined as f64),
            totals: TierTotals {
                prefill_seconds: self.prefill_ns.load(Ordering::Relaxed) as f64 / 1e9,
                prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
                decode_seconds: self.decode_ns.load(Ordering::Relaxed) as f64 / 1e9,
                generated_tokens: self.generated_tokens.load(Ordering::Relaxed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        let got: Vec<usize> = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 1000]
            .iter()
            .map(|&b| bucket(b))
            .collect();
        assert_eq!(got, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    }

    #[test]
    fn cost_per_token_follows_the_measured_batch() {
        let stats = TierStats::default();
        assert!(
            stats.load(0, 32).token_seconds.is_none(),
            "nothing measured yet"
        );
        stats.decoded(1, Duration::from_millis(10));
        // Idle: a new request would decode alone, at the batch-1 step time.
        let idle = stats.load(0, 32);
        assert!((idle.token_seconds.unwrap() - 0.010).abs() < 1e-9);
        // 15 running: the new one makes 16; batch-16 steps take 40 ms for 16 tokens.
        stats.decoded(16, Duration::from_millis(40));
        stats.set_active(15);
        let busy = stats.load(3, 32);
        assert!((busy.token_seconds.unwrap() - 0.040 / 16.0).abs() < 1e-9);
        assert_eq!((busy.waiting, busy.active), (3, 15));
        assert_eq!(busy.totals.generated_tokens, 17);
        assert!((busy.recent_step_seconds.unwrap() - 0.040).abs() < 1e-9);
    }

    #[test]
    fn unseen_batch_sizes_are_estimated_pessimistically() {
        let stats = TierStats::default();
        stats.decoded(1, Duration::from_millis(20));
        // 12 running, never measured above batch 1: a 13-row step is assumed to cost 8x
        // the batch-1 step (bucket 8-15), i.e. no cheaper per token than batch 1.
        stats.set_active(12);
        let est = stats.load(0, 32).token_seconds.unwrap();
        assert!((est - 0.160 / 13.0).abs() < 1e-9, "{est}");
        // Measured at 16 only: a lone request is assumed no faster than a 16-row step.
        let stats = TierStats::default();
        stats.decoded(16, Duration::from_millis(60));
        assert!((stats.load(0, 32).token_seconds.unwrap() - 0.060).abs() < 1e-9);
    }

    #[test]
    fn the_average_moves_towards_new_steps() {
        let stats = TierStats::default();
        stats.decoded(1, Duration::from_millis(8));
        for _ in 0..64 {
            stats.decoded(1, Duration::from_millis(16));
        }
        let s = stats.load(0, 32).token_seconds.unwrap();
        assert!((s - 0.016).abs() < 0.0005, "{s}");
    }
}
