//! backend/onnx → sampling: turns one row of logits from the model into the next token id.
//!
//! Applies OpenAI presence/frequency penalties, temperature, top-k and top-p (nucleus) in
//! that order, then draws from the resulting distribution with a per-request ChaCha8 RNG
//! (seeded from the request's `seed`, or from the OS otherwise). Pure CPU work, called by
//! the engine's scheduler thread once per generated token; after the first call it does
//! not allocate. It never panics: NaN logits count as -inf, +inf as the largest float.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Below this temperature the sampler is greedy (argmax).
const GREEDY_BELOW: f32 = 1e-5;
/// Candidates sorted first when looking for the top-p nucleus (grown ×4 while too small).
const NUCLEUS_HEAD: usize = 64;

/// Per-request sampling settings (OpenAI semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 (or < 1e-5) = greedy argmax.
    pub temperature: f32,
    /// 1.0 = off; nucleus sampling over the softmax at `temperature`.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    /// `logit[j] -= presence * (count[j] > 0)`.
    pub presence_penalty: f32,
    /// `logit[j] -= frequency * count[j]`.
    pub frequency_penalty: f32,
    /// Some = reproducible; None = seeded from OS randomness.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

/// Picks tokens for one sequence; keeps the counts the penalties need.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// How often each token id was generated so far (indexed by id, grown on demand).
    counts: Vec<u32>,
    /// The distinct ids generated so far, in first-seen order (penalties cost O(distinct)).
    seen: Vec<u32>,
    /// Scratch: (token id, logit, then softmax weight) of the tokens still in the running.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => os_seeded_rng(),
        };
        Self {
            params,
            rng,
            counts: Vec::new(),
            seen: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// Pick the next token from one row of logits (len = vocab). May modify `logits` in place
    /// (penalties, temperature). Records the chosen token for the penalties. Never panics,
    /// also with NaN/inf logits (treat NaN as -inf; if all are -inf/NaN return 0).
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let id = self.pick(logits);
        self.record(id);
        id
    }

    /// [`Sampler::sample`] without recording the token for the penalties: a draw that
    /// may be taken back (structured generation checks it against its grammar, then
    /// [`Sampler::record`]s it or draws again from masked logits).
    pub fn pick(&mut self, logits: &mut [f32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        self.apply_penalties(logits);
        let temperature = self.params.temperature;
        if temperature.is_nan() || temperature < GREEDY_BELOW {
            argmax(logits)
        } else {
            self.draw(logits, temperature)
        }
    }

    /// Whether a draw from masked logits has the same distribution as a draw from the
    /// full logits kept only if the constraint allows it (else redrawn from the masked
    /// ones): true for greedy and plain temperature sampling, false with top-k/top-p,
    /// whose cut-off depends on which tokens are masked.
    pub fn check_first_is_exact(&self) -> bool {
        let p = &self.params;
        p.temperature.is_nan() || p.temperature < GREEDY_BELOW || (p.top_k == 0 && p.top_p >= 1.0)
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let (presence, frequency) = (self.params.presence_penalty, self.params.frequency_penalty);
        if presence == 0.0 && frequency == 0.0 {
            return;
        }
        for &id in &self.seen {
            let count = self.counts.get(id as usize).copied().unwrap_or(0);
            if let Some(logit) = logits.get_mut(id as usize) {
                if logit.is_finite() {
                    let penalty = presence + frequency * count as f32;
                    // Saturate so a finite logit never turns into -inf (it stays eligible).
                    *logit = (*logit - penalty).max(f32::MIN);
                }
            }
        }
    }

    /// Temperature, top-k, top-p, then one weighted draw.
    fn draw(&mut self, logits: &mut [f32], temperature: f32) -> u32 {
        let inv_t = 1.0 / temperature;
        self.candidates.clear();
        for (i, logit) in logits.iter_mut().enumerate() {
            let x = *logit;
            *logit = if x.is_nan() || x == f32::NEG_INFINITY {
                f32::NEG_INFINITY
            } else {
                (x.clamp(f32::MIN, f32::MAX) * inv_t).clamp(f32::MIN, f32::MAX)
            };
            if *logit > f32::NEG_INFINITY {
                self.candidates.push((i as u32, *logit));
            }
        }
        if self.candidates.is_empty() {
            return 0;
        }
        let top_k = self.params.top_k;
        if top_k > 0 && top_k < self.candidates.len() {
            self.candidates
                .select_nth_unstable_by(top_k - 1, by_weight_desc);
            self.candidates.truncate(top_k);
        }
        // Softmax weights (unnormalised); the largest logit gets weight 1, so total >= 1.
        let max = self.candidates.iter().fold(f32::MIN, |m, &(_, l)| m.max(l));
        let mut total = 0.0f64;
        for candidate in &mut self.candidates {
            candidate.1 = (candidate.1 - max).exp();
            total += f64::from(candidate.1);
        }
        let top_p = self.params.top_p;
        if top_p < 1.0 && self.candidates.len() > 1 {
            total = nucleus(&mut self.candidates, f64::from(top_p.max(0.0)) * total);
        }
        let r = unit_f64(&mut self.rng) * total;
        let mut cumulative = 0.0f64;
        for &(id, weight) in &self.candidates {
            cumulative += f64::from(weight);
            if r < cumulative {
                return id;
            }
        }
        // Rounding left r at (or past) the end: the last candidate with weight > 0.
        self.candidates
            .iter()
            .rev()
            .find(|&&(_, w)| w > 0.0)
            .or(self.candidates.first())
            .map_or(0, |&(id, _)| id)
    }

    pub fn record(&mut self, id: u32) {
        let i = id as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        if self.counts[i] == 0 {
            self.seen.push(id);
        }
        self.counts[i] = self.counts[i].saturating_add(1);
    }
}

/// Keeps the fewest highest-weight candidates whose weights reach `target`; returns their
/// total. Only a head of the list is sorted: it grows until it holds enough mass, so a full
/// vocabulary is selected over in O(n) instead of sorted.
fn nucleus(candidates: &mut Vec<(u32, f32)>, target: f64) -> f64 {
    let len = candidates.len();
    let mut head = NUCLEUS_HEAD.min(len);
    loop {
        if head < len {
            candidates.select_nth_unstable_by(head - 1, by_weight_desc);
        }
        let mass: f64 = candidates[..head].iter().map(|&(_, w)| f64::from(w)).sum();
        if mass >= target || head == len {
            break;
        }
        head = head.saturating_mul(4).min(len);
    }
    candidates[..head].sort_unstable_by(by_weight_desc);
    let mut cumulative = 0.0f64;
    let mut keep = head;
    for (n, &(_, weight)) in candidates[..head].iter().enumerate() {
        cumulative += f64::from(weight);
        if cumulative >= target {
            keep = n + 1;
            break;
        }
    }
    candidates.truncate(keep);
    candidates.iter().map(|&(_, w)| f64::from(w)).sum()
}

/// Highest value first; the lower id wins ties, so the order is total and reproducible.
fn by_weight_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Index of the largest logit, lowest index on ties, NaN ignored; 0 if nothing beats -inf.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &x) in logits.iter().enumerate() {
        if x > best_value {
            best = i;
            best_value = x;
        }
    }
    best as u32
}

/// Uniform in [0, 1) with 53 random bits.
fn unit_f64(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// An RNG seeded from the OS; if the OS source fails, from std's per-process random keys.
fn os_seeded_rng() -> ChaCha8Rng {
    ChaCha8Rng::try_from_os_rng().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        ChaCha8Rng::seed_from_u64(hasher.finish())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }

    fn draws(p: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut sampler = Sampler::new(p);
        (0..n)
            .map(|_| sampler.sample(&mut logits.to_vec()))
            .collect()
    }

    /// A spread-out row whose softmax at t=1 is far from one-hot.
    fn spread() -> Vec<f32> {
        (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect()
    }

    #[test]
    fn greedy_is_argmax_with_lowest_index_on_ties() {
        let mut s = Sampler::new(params(0.0, 1));
        assert_eq!(s.sample(&mut [0.1, 2.0, -1.0, 1.9]), 1);
        assert_eq!(s.sample(&mut [0.5, 3.0, 3.0, 3.0]), 1);
        let mut s = Sampler::new(params(1e-6, 1));
        assert_eq!(s.sample(&mut [0.0, 0.0, 7.0]), 2);
    }

    #[test]
    fn same_seed_same_sequence_different_seed_differs() {
        let row = spread();
        let a = draws(params(1.0, 42), &row, 500);
        assert_eq!(a, draws(params(1.0, 42), &row, 500));
        assert_ne!(a, draws(params(1.0, 43), &row, 500));
        // Not greedy in disguise: many distinct tokens come out.
        let mut distinct = a.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 10, "{distinct:?}");
    }

    #[test]
    fn unseeded_samplers_differ() {
        let row = vec![0.0f32; 1000];
        let p = SamplingParams::default();
        assert_ne!(draws(p.clone(), &row, 20), draws(p, &row, 20));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_equal_greedy() {
        let row = spread();
        let greedy = draws(params(0.0, 7), &row, 1)[0];
        let k1 = SamplingParams {
            top_k: 1,
            ..params(1.5, 7)
        };
        assert!(draws(k1, &row, 200).iter().all(|&t| t == greedy));
        let p0 = SamplingParams {
            top_p: 1e-6,
            ..params(1.5, 7)
        };
        assert!(draws(p0, &row, 200).iter().all(|&t| t == greedy));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let row = [4.0f32, 3.0, 2.0, 1.0, 0.0, -1.0];
        let k3 = SamplingParams {
            top_k: 3,
            ..params(5.0, 3)
        };
        let got = draws(k3, &row, 2000);
        assert!(got.iter().all(|&t| t < 3));
        assert!((0..3).all(|t| got.contains(&t)));
        // softmax(row) ≈ [.64, .24, .09, ..]: top_p 0.8 keeps exactly the first two.
        let p8 = SamplingParams {
            top_p: 0.8,
            ..params(1.0, 3)
        };
        let got = draws(p8, &row, 2000);
        assert!(got.iter().all(|&t| t < 2));
        assert!(got.contains(&0) && got.contains(&1));
    }

    #[test]
    fn frequency_penalty_grows_with_count_presence_does_not() {
        // Token 0 leads by 2.5; each pick of it costs 1.0 with frequency, so after
        // three picks token 1 takes over.
        let row = [3.5f32, 1.0, 0.0];
        let freq = SamplingParams {
            frequency_penalty: 1.0,
            ..params(0.0, 1)
        };
        assert_eq!(draws(freq, &row, 4), vec![0, 0, 0, 1]);
        // Presence costs 1.0 once, however often the token appeared: 0 keeps winning.
        let pres = SamplingParams {
            presence_penalty: 1.0,
            ..params(0.0, 1)
        };
        assert_eq!(draws(pres, &row, 6), vec![0; 6]);
        // A big presence penalty pushes a repeated token below the others right away.
        let pres = SamplingParams {
            presence_penalty: 3.0,
            ..params(0.0, 1)
        };
        assert_eq!(draws(pres, &[3.5, 1.0, 0.9], 3), vec![0, 1, 2]);
    }

    #[test]
    fn penalties_modify_the_row_in_place() {
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 0.5,
            ..params(0.0, 1)
        });
        assert_eq!(s.sample(&mut [1.0, 0.0]), 0);
        assert_eq!(s.sample(&mut [1.0, 0.0]), 0);
        let mut row = [1.0f32, 0.0];
        s.sample(&mut row);
        assert_eq!(row, [0.0, 0.0]);
    }

    #[test]
    fn empirical_distribution_matches_softmax() {
        let row = [1.0f32, 0.0, 2.0, -1.0];
        for temperature in [0.5f32, 1.0, 2.0] {
            let n = 20_000;
            let got = draws(params(temperature, 9), &row, n);
            let weights: Vec<f64> = row
                .iter()
                .map(|&l| f64::from(l / temperature).exp())
                .collect();
            let total: f64 = weights.iter().sum();
            for (id, w) in weights.iter().enumerate() {
                let expected = w / total;
                let seen = got.iter().filter(|&&t| t as usize == id).count() as f64 / n as f64;
                assert!(
                    (seen - expected).abs() < 0.02,
                    "t={temperature} id={id}: {seen} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn nan_and_infinities_never_panic() {
        for t in [0.0f32, 1.0, f32::NAN, f32::INFINITY] {
            let p = SamplingParams {
                top_p: 0.9,
                top_k: 2,
                ..params(t, 5)
            };
            let mut s = Sampler::new(p);
            assert_eq!(s.sample(&mut [f32::NAN, f32::NAN]), 0);
            assert_eq!(s.sample(&mut [f32::NEG_INFINITY; 3]), 0);
            assert_eq!(s.sample(&mut []), 0);
            assert_eq!(s.sample(&mut [f32::NAN, f32::NEG_INFINITY, -3.0]), 2);
            assert_eq!(s.sample(&mut [0.0, f32::INFINITY, f32::NAN]), 1);
        }
    }

    proptest! {
        #[test]
        fn nucleus_keeps_the_same_set_as_a_full_sort(
            weights in prop::collection::vec(0.0f32..1.0, 1..1200),
            top_p in 0.0f64..1.0,
        ) {
            let mut candidates: Vec<(u32, f32)> =
                weights.iter().enumerate().map(|(i, &w)| (i as u32, w)).collect();
            let target = top_p * weights.iter().map(|&w| f64::from(w)).sum::<f64>();
            let mut reference = candidates.clone();
            reference.sort_by(by_weight_desc);
            let mut cumulative = 0.0;
            let keep = reference
                .iter()
                .position(|&(_, w)| {
                    cumulative += f64::from(w);
                    cumulative >= target
                })
                .map_or(reference.len(), |n| n + 1);
            reference.truncate(keep);
            nucleus(&mut candidates, target);
            prop_assert_eq!(candidates, reference);
        }

        #[test]
        fn always_in_range_and_never_an_impossible_token(
            row in prop::collection::vec(
                prop_oneof![
                    4 => -50.0f32..50.0,
                    1 => Just(f32::NEG_INFINITY),
                    1 => Just(f32::NAN),
                    1 => Just(f32::MAX),
                    1 => Just(f32::MIN),
                ],
                1..64,
            ),
            temperature in prop_oneof![Just(0.0f32), 0.01f32..5.0],
            top_p in 0.0f32..=1.0,
            top_k in 0usize..8,
            penalty in -2.0f32..2.0,
            seed in any::<u64>(),
        ) {
            let p = SamplingParams {
                temperature, top_p, top_k,
                presence_penalty: penalty, frequency_penalty: penalty, seed: Some(seed),
            };
            let mut s = Sampler::new(p);
            let any_finite = row.iter().any(|x| x.is_finite());
            for _ in 0..4 {
                let mut logits = row.clone();
                let id = s.sample(&mut logits) as usize;
                prop_assert!(id < row.len());
                if any_finite {
                    prop_assert!(!row[id].is_nan() && row[id] != f32::NEG_INFINITY, "{id} {row:?}");
                }
            }
        }
    }
}
