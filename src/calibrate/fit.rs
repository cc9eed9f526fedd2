//! Calibration, the fit: from labelled prompts (per tier: acceptable? at what cost?) to
//! a model's `[models.route]`: optionally the scorer's bias and weights (a logistic
//! regression of "the cheapest tier is not enough", weights kept ≥ 0), then the
//! thresholds that route at the least measured cost while the share of acceptable
//! answers stays at or above the quality target. Pure and deterministic.

use super::data::N;
use super::eval::{evaluate, validate, Eval, Sample};
use crate::config::Weights;

/// What to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Least share of prompts whose routed answer must be acceptable, in (0, 1].
    pub quality: f64,
    /// The scorer's bias and weights: kept as they are, or the fit's starting point.
    pub bias: f64,
    pub weights: [f64; N],
    /// Fit bias and weights too (else only the thresholds).
    pub fit_weights: bool,
}

/// A fitted router: `score = sigmoid(bias + Σ weights·features)`, tier = the first i
/// with `score < thresholds[i]`, else the last. Numbers are already rounded to what
/// [`config_block`] prints, and `train` is measured with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub bias: f64,
    pub weights: [f64; N],
    pub thresholds: Vec<f64>,
    /// How the router does on the samples it was fitted on.
    pub train: Eval,
    /// What the fit could not do as asked (e.g. weights kept because every prompt
    /// needed more than the cheapest tier).
    pub notes: Vec<String>,
}

impl Fit {
    pub fn score(&self, features: &[f64; N]) -> f64 {
        score(self.bias, &self.weights, features)
    }

    pub fn route(&self, features: &[f64; N]) -> usize {
        route(&self.thresholds, self.score(features))
    }
}

/// Samples or options the fit cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("no labelled prompts to fit on")]
    NoSamples,
    #[error("quality target {0} is not in (0, 1]")]
    Quality(f64),
    #[error("starting {0}")]
    Start(String),
    #[error("prompt {index} (0-based): {message}")]
    Sample { index: usize, message: String },
}

/// L2 penalty on the standardised weights (the mean log-loss is the other term).
const L2: f64 = 1e-2;
/// Gradient steps of the weight fit (it stops earlier once converged).
const STEPS: usize = 5000;
/// Fitted logits are scaled into ±this on the samples: f64 tells sigmoid scores
/// apart there, and the router only uses their order.
const MAX_LOGIT: f64 = 12.0;
/// Cut-point tuples the exact threshold search may try before it falls back to a
/// Lagrangian search.
const EXACT_BUDGET: f64 = 5e7;

pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn score(bias: f64, weights: &[f64; N], f: &[f64; N]) -> f64 {
    let s = sigmoid(bias + weights.iter().zip(f).map(|(w, x)| w * x).sum::<f64>());
    if s.is_nan() {
        1.0
    } else {
        s
    }
}

fn route(thresholds: &[f64], score: f64) -> usize {
    thresholds
        .iter()
        .position(|&t| score < t)
        .unwrap_or(thresholds.len())
}

/// Fit a router on `samples` (all with the same number of tiers).
pub fn fit(samples: &[Sample], options: &FitOptions) -> Result<Fit, FitError> {
    fit_masked(samples, options, [true; N])
}

/// [`fit`], with only the features in `mask` weighted (the others get weight 0 when
/// weights are fitted).
pub fn fit_masked(
    samples: &[Sample],
    options: &FitOptions,
    mask: [bool; N],
) -> Result<Fit, FitError> {
    check(samples, options)?;
    let mut notes = Vec::new();
    let (mut bias, mut weights) = (options.bias, options.weights);
    let k = samples[0].tiers();
    if options.fit_weights {
        let y: Vec<f64> = samples
            .iter()
            .map(|s| f64::from(u8::from(s.needs() > 0)))
            .collect();
        let positives = y.iter().sum::<f64>();
        if k < 2 {
            notes.push("one tier: nothing to route, weights kept".to_owned());
        } else if positives == 0.0 || positives == y.len() as f64 {
            let which = if positives == 0.0 {
                "cheapest tier was enough for every"
            } else {
                "cheapest tier was not enough for any"
            };
            notes.push(format!(
                "the {which} prompt: weights kept (nothing to learn them from)"
            ));
        } else {
            (bias, weights) = logistic(samples, &y, options, mask, &mut notes);
        }
        bias = round_sig(bias, 4);
        weights = weights.map(|w| round_sig(w, 4));
    }
    let scores: Vec<f64> = samples
        .iter()
        .map(|s| score(bias, &weights, &s.features))
        .collect();
    let thresholds = fit_thresholds(&scores, samples, options.quality);
    let train = evaluate(samples, |s| {
        route(&thresholds, score(bias, &weights, &s.features))
    });
    Ok(Fit {
        bias,
        weights,
        thresholds,
        train,
        notes,
    })
}

fn check(samples: &[Sample], options: &FitOptions) -> Result<(), FitError> {
    let q = options.quality;
    if !(q > 0.0 && q <= 1.0) {
        return Err(FitError::Quality(q));
    }
    if !options.bias.is_finite() {
        return Err(FitError::Start(format!(
            "bias {} is not finite",
            options.bias
        )));
    }
    if let Some(j) = options
        .weights
        .iter()
        .position(|w| !(w.is_finite() && *w >= 0.0))
    {
        return Err(FitError::Start(format!(
            "weight {} = {} must be finite and ≥ 0",
            Weights::NAMES[j],
            options.weights[j]
        )));
    }
    validate(samples).map(|_| ())
}

/// Logistic regression of `y` on the features: standardised inside, projected onto
/// weights ≥ 0 (accelerated projected gradient with restarts, fixed step 1/L), and
/// returned for raw features. Features that do not vary keep their starting weight.
fn logistic(
    samples: &[Sample],
    y: &[f64],
    options: &FitOptions,
    mask: [bool; N],
    notes: &mut Vec<String>,
) -> (f64, [f64; N]) {
    let n = samples.len() as f64;
    let mean: [f64; N] =
        std::array::from_fn(|j| samples.iter().map(|s| s.features[j]).sum::<f64>() / n);
    let sd: [f64; N] = std::array::from_fn(|j| {
        (samples
            .iter()
            .map(|s| (s.features[j] - mean[j]).powi(2))
            .sum::<f64>()
            / n)
            .sqrt()
    });
    let active: Vec<usize> = (0..N)
        .filter(|&j| mask[j] && sd[j] > 1e-9 * mean[j].abs().max(1.0))
        .collect();
    let kept: Vec<usize> = (0..N)
        .filter(|&j| mask[j] && !active.contains(&j))
        .collect();
    if !kept.is_empty() {
        let names: Vec<&str> = kept.iter().map(|&j| Weights::NAMES[j]).collect();
        notes.push(format!(
            "constant in the data, starting weight kept: {}",
            names.join(", ")
        ));
    }
    let x: Vec<Vec<f64>> = samples
        .iter()
        .map(|s| {
            active
                .iter()
                .map(|&j| (s.features[j] - mean[j]) / sd[j])
                .collect()
        })
        .collect();
    let d = active.len();
    // θ = (bias of the standardised model, its weights); start from the options.
    let mut theta = vec![
        options.bias
            + active
                .iter()
                .map(|&j| options.weights[j] * mean[j])
                .sum::<f64>(),
    ];
    theta.extend(active.iter().map(|&j| options.weights[j] * sd[j]));
    let gradient = |t: &[f64]| {
        let mut g = vec![0.0; d + 1];
        for (row, yi) in x.iter().zip(y) {
            let r = sigmoid(t[0] + row.iter().zip(&t[1..]).map(|(a, b)| a * b).sum::<f64>()) - yi;
            g[0] += r / n;
            for (gj, xj) in g[1..].iter_mut().zip(row) {
                *gj += r * xj / n;
            }
        }
        for (gj, tj) in g[1..].iter_mut().zip(&t[1..]) {
            *gj += L2 * tj;
        }
        g
    };
    let step = 1.0 / (0.25 * (d as f64 + 1.0) + L2);
    let project = |t: &mut Vec<f64>| t[1..].iter_mut().for_each(|v| *v = v.max(0.0));
    project(&mut theta);
    let (mut ahead, mut momentum) = (theta.clone(), 1.0_f64);
    for _ in 0..STEPS {
        let g = gradient(&ahead);
        let mut next: Vec<f64> = ahead.iter().zip(&g).map(|(a, g)| a - step * g).collect();
        project(&mut next);
        let moved: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let uphill = ahead
            .iter()
            .zip(&next)
            .zip(&moved)
            .map(|((a, b), m)| (a - b) * m)
            .sum::<f64>()
            > 0.0;
        let (m_next, beta) = if uphill {
            (1.0, 0.0)
        } else {
            let m_next = (1.0 + (1.0 + 4.0 * momentum * momentum).sqrt()) / 2.0;
            (m_next, (momentum - 1.0) / m_next)
        };
        ahead = next.iter().zip(&moved).map(|(a, m)| a + beta * m).collect();
        theta = next;
        momentum = m_next;
        if moved.iter().map(|m| m * m).sum::<f64>() < 1e-24 {
            break;
        }
    }
    // Only the order of scores matters to the router: keep logits where f64 resolves them.
    let widest = x
        .iter()
        .map(|row| (theta[0] + row.iter().zip(&theta[1..]).map(|(a, b)| a * b).sum::<f64>()).abs())
        .fold(0.0, f64::max);
    let shrink = if widest > MAX_LOGIT {
        MAX_LOGIT / widest
    } else {
        1.0
    };
    let mut weights = [0.0; N];
    let mut bias = theta[0] * shrink;
    for &j in &kept {
        weights[j] = options.weights[j];
        bias -= options.weights[j] * mean[j];
    }
    for (v, &j) in theta[1..].iter().zip(&active) {
        let v = v * shrink;
        if v > 1e-6 {
            weights[j] = v / sd[j];
            bias -= weights[j] * mean[j];
        }
    }
    (bias, weights)
}

/// `x` rounded to `digits` significant digits (exactly as decimal text would be).
fn round_sig(x: f64, digits: usize) -> f64 {
    format!("{:.*e}", digits.saturating_sub(1), x)
        .parse()
        .unwrap_or(x)
}

/// The shortest number (at least 4 significant digits) `t` with `a < t ≤ b`, near the
/// middle: a threshold between two neighbouring scores that survives printing.
fn between(a: f64, b: f64) -> f64 {
    let mid = a + (b - a) / 2.0;
    (4..=17)
        .map(|d| round_sig(mid, d))
        .find(|&t| a < t && t <= b)
        .unwrap_or(b)
}

/// Thresholds for `scores` (one per sample) that minimise the samples' total cost with
/// at least `quality` of them acceptable; ties go to the more precise routing. The
/// search tries every cut between distinct scores (exactly while the tuples of cuts
/// are few, else by Lagrangian relaxation); all-top (thresholds 0) is always feasible.
pub fn fit_thresholds(scores: &[f64], samples: &[Sample], quality: f64) -> Vec<f64> {
    let k = samples.first().map_or(0, Sample::tiers);
    if k < 2 {
        return Vec::new();
    }
    let clean = |s: f64| if s.is_nan() { 1.0 } else { s.clamp(0.0, 1.0) };
    let mut order: Vec<usize> = (0..samples.len().min(scores.len())).collect();
    order.sort_by(|&a, &b| clean(scores[a]).total_cmp(&clean(scores[b])));
    // Groups of equal score, ascending; per tier, prefix sums of cost and ok count.
    let mut values: Vec<f64> = Vec::new();
    let mut cost: Vec<Vec<f64>> = vec![vec![0.0]; k];
    let mut ok: Vec<Vec<usize>> = vec![vec![0]; k];
    for &i in &order {
        let v = clean(scores[i]);
        if values.last() != Some(&v) {
            values.push(v);
            for t in 0..k {
                let (c, o) = (cost[t][values.len() - 1], ok[t][values.len() - 1]);
                cost[t].push(c);
                ok[t].push(o);
            }
        }
        let g = values.len();
        for t in 0..k {
            cost[t][g] += samples[i].cost.get(t).copied().unwrap_or(0.0);
            ok[t][g] += usize::from(samples[i].ok_at(t));
        }
    }
    let m = values.len();
    let eps = 1e-9 * cost.iter().map(|c| c[m]).sum::<f64>().max(1.0);
    let table = Table {
        full_cut: values.last().is_none_or(|&v| v < 1.0),
        required: ((quality * order.len() as f64) - 1e-9).ceil().max(0.0) as usize,
        eps,
        cost,
        ok,
        m,
        k,
    };
    let tuples = (1..k).fold(1.0, |acc, i| acc * (m + i) as f64 / i as f64);
    let cuts = if tuples <= EXACT_BUDGET {
        table.exact()
    } else {
        table.lagrangian()
    };
    cuts.iter()
        .map(|&c| match c {
            0 => 0.0,
            c if c == m => 1.0,
            c => between(values[c - 1], values[c]),
        })
        .collect()
}

/// Per tier, prefix sums over the score groups: `cost[t][c]`, `ok[t][c]` of groups `< c`.
struct Table {
    cost: Vec<Vec<f64>>,
    ok: Vec<Vec<usize>>,
    m: usize,
    k: usize,
    /// Whether a cut after the last group is possible (threshold 1 needs scores < 1).
    full_cut: bool,
    /// Least number of acceptable answers.
    required: usize,
    /// Costs this close are equal.
    eps: f64,
}

impl Table {
    fn segment(&self, tier: usize, from: usize, to: usize) -> (f64, usize) {
        (
            self.cost[tier][to] - self.cost[tier][from],
            self.ok[tier][to] - self.ok[tier][from],
        )
    }

    /// The highest cut a threshold can express.
    fn last_cut(&self) -> usize {
        if self.full_cut {
            self.m
        } else {
            self.m.saturating_sub(1)
        }
    }

    /// Every non-decreasing tuple of cuts; the first (most precise) of equal ones wins.
    fn exact(&self) -> Vec<usize> {
        let mut best = (f64::INFINITY, 0, vec![0; self.k - 1]);
        let mut cuts = Vec::with_capacity(self.k - 1);
        self.walk(0, (0, 0.0, 0), &mut cuts, &mut best);
        best.2
    }

    /// Cuts for tiers `tier..`, the tiers before costing `cost` with `ok` acceptable
    /// answers on the groups before `from`.
    fn walk(
        &self,
        tier: usize,
        (from, cost, ok): (usize, f64, usize),
        cuts: &mut Vec<usize>,
        best: &mut (f64, usize, Vec<usize>),
    ) {
        if tier == self.k - 1 {
            let (c, o) = self.segment(tier, from, self.m);
            let (cost, ok) = (cost + c, ok + o);
            let eps = self.eps;
            if ok >= self.required && (cost < best.0 - eps || (cost <= best.0 + eps && ok > best.1))
            {
                *best = (cost, ok, cuts.clone());
            }
            return;
        }
        for cut in from..=self.last_cut().max(from) {
            let (c, o) = self.segment(tier, from, cut);
            cuts.push(cut);
            self.walk(tier + 1, (cut, cost + c, ok + o), cuts, best);
            cuts.pop();
        }
    }

    /// Least `cost - λ·ok` by dynamic programming, λ bisected to the least that meets
    /// `required`: exact on the convex hull of the cost-quality frontier.
    fn lagrangian(&self) -> Vec<usize> {
        let required = self.required;
        let solve = |lambda: f64| -> (Vec<usize>, usize) {
            let w = |t: usize, c: usize| self.cost[t][c] - lambda * self.ok[t][c] as f64;
            let last = self.last_cut();
            let mut d: Vec<f64> = (0..=self.m).map(|c| w(0, c)).collect();
            let mut back: Vec<Vec<usize>> = Vec::new();
            for t in 1..self.k {
                let (mut best, mut arg) = (f64::INFINITY, 0);
                let mut next = vec![f64::INFINITY; self.m + 1];
                let mut args = vec![0; self.m + 1];
                for c in 0..=self.m {
                    if c <= last && d[c] - w(t, c) < best {
                        (best, arg) = (d[c] - w(t, c), c);
                    }
                    next[c] = best + w(t, c);
                    args[c] = arg;
                }
                back.push(args);
                d = next;
            }
            let mut cuts = vec![0; self.k - 1];
            let mut at = self.m;
            for t in (0..self.k - 1).rev() {
                at = back[t][at];
                cuts[t] = at;
            }
            let ok: usize = (0..self.k)
                .map(|t| {
                    let from = if t == 0 { 0 } else { cuts[t - 1] };
                    let to = if t + 1 == self.k { self.m } else { cuts[t] };
                    self.segment(t, from, to).1
                })
                .sum();
            (cuts, ok)
        };
        let (cuts, ok) = solve(0.0);
        if ok >= required {
            return cuts;
        }
        let (mut lo, mut hi) = (0.0, self.cost.iter().map(|c| c[self.m]).sum::<f64>() + 1.0);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if solve(mid).1 >= required {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let (cuts, ok) = solve(hi);
        if ok >= required {
            cuts
        } else {
            vec![0; self.k - 1]
        }
    }
}

/// The lines to paste into the model's `[[models]]` entry.
pub fn config_block(model: &str, fit: &Fit) -> String {
    let weights: Vec<String> = Weights::NAMES
        .iter()
        .zip(&fit.weights)
        .map(|(n, w)| format!("{n} = {w:?}"))
        .collect();
    let thresholds: Vec<String> = fit.thresholds.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "# [[models]] name = {model:?}: fitted by `sluice route calibrate` (quality {:.1}%, cost {:.1}% of the top tier)\n\
         route.bias = {:?}\nroute.thresholds = [{}]\nroute.weights = {{ {} }}\n",
        100.0 * fit.train.quality,
        100.0 * fit.train.cost_vs_top,
        fit.bias,
        thresholds.join(", "),
        weights.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::eval::tests::{decided_by, sample};
    use proptest::prelude::*;

    fn on_feature_0(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let mut f = [0.0; N];
                f[0] = 3.0 * i as f64 / n as f64;
                sample(f, f[0], &[1.0, 2.0, 4.0])
            })
            .collect()
    }

    fn only_feature_0(quality: f64) -> FitOptions {
        let mut weights = [0.0; N];
        weights[0] = 1.0;
        FitOptions {
            quality,
            bias: -1.5,
            weights,
            fit_weights: false,
        }
    }

    #[test]
    fn full_quality_recovers_the_groups() {
        let samples = on_feature_0(90);
        let fit = fit(&samples, &only_feature_0(1.0)).unwrap();
        let s = |f: f64| sigmoid(-1.5 + f);
        let (below, above) = (29.0 / 30.0, 1.0);
        assert!(
            s(below) < fit.thresholds[0] && fit.thresholds[0] <= s(above),
            "{fit:?}"
        );
        let (below, above) = (59.0 / 30.0, 2.0);
        assert!(
            s(below) < fit.thresholds[1] && fit.thresholds[1] <= s(above),
            "{fit:?}"
        );
        assert_eq!(fit.train.quality, 1.0);
        assert_eq!(fit.train.macro_f1, 1.0);
        assert_eq!(fit.train.cost, 30.0 * (1.0 + 2.0 + 4.0));
        for s in &samples {
            assert_eq!(fit.route(&s.features), s.label());
        }
    }

    #[test]
    fn a_lower_quality_target_is_cheaper() {
        let samples = on_feature_0(90);
        let mut last = f64::INFINITY;
        for q in [1.0, 0.95, 0.9, 0.8, 0.5] {
            let fit = fit(&samples, &only_feature_0(q)).unwrap();
            assert!(fit.train.quality >= q, "{q}: {:?}", fit.train);
            assert!(fit.train.cost <= last, "{q}: {} > {last}", fit.train.cost);
            last = fit.train.cost;
        }
        // 0.9 of 90 lets 9 prompts fail: the cheapest way is the 9 easiest of tier 2's on
        // tier 1 (saving 2 each; 9 of tier 1's on tier 0 would save 1 each).
        let fit = fit(&samples, &only_feature_0(0.9)).unwrap();
        assert_eq!(fit.train.quality, 0.9);
        assert_eq!(fit.train.cost, 210.0 - 18.0);
    }

    #[test]
    fn many_distinct_scores_and_four_tiers_use_the_lagrangian_search() {
        let costs = [1.0, 2.0, 4.0, 8.0];
        let samples: Vec<Sample> = (0..1200)
            .map(|i| {
                let mut f = [0.0; N];
                f[0] = 4.0 * i as f64 / 1200.0;
                sample(f, f[0], &costs)
            })
            .collect();
        let mut options = only_feature_0(1.0);
        options.bias = -2.0;
        let fit = fit(&samples, &options).unwrap();
        assert_eq!(fit.train.quality, 1.0);
        assert_eq!(fit.train.cost, 300.0 * 15.0, "{fit:?}");
    }

    #[test]
    fn fitted_weights_find_the_feature_that_matters() {
        let samples = decided_by(3, 600, 7);
        let start = FitOptions {
            quality: 0.95,
            bias: crate::config::DEFAULT_BIAS,
            weights: Weights::default().values(),
            fit_weights: true,
        };
        let fit = fit(&samples, &start).unwrap();
        assert!(fit.weights.iter().all(|&w| w >= 0.0), "{:?}", fit.weights);
        for (j, w) in fit.weights.iter().enumerate() {
            assert!(j == 3 || *w * 10.0 < fit.weights[3], "{:?}", fit.weights);
        }
        let kept = super::fit(
            &samples,
            &FitOptions {
                fit_weights: false,
                ..start
            },
        )
        .unwrap();
        assert!(fit.train.quality >= 0.95);
        assert!(
            fit.train.cost < kept.train.cost,
            "{:?} vs {:?}",
            fit.train,
            kept.train
        );
    }

    #[test]
    fn a_feature_that_lowers_the_need_gets_weight_zero() {
        let mut samples = decided_by(3, 400, 11);
        for s in &mut samples {
            s.features[5] = 3.0 - s.features[3];
        }
        let options = FitOptions {
            quality: 1.0,
            bias: 0.0,
            weights: [0.5; N],
            fit_weights: true,
        };
        let fit = fit(&samples, &options).unwrap();
        assert_eq!(fit.weights[5], 0.0, "{:?}", fit.weights);
        assert!(fit.weights[3] > 0.0);
    }

    #[test]
    fn unusable_input_is_a_clear_error() {
        let options = only_feature_0(0.9);
        assert_eq!(fit(&[], &options), Err(FitError::NoSamples));
        let samples = on_feature_0(3);
        let err = fit(
            &samples,
            &FitOptions {
                quality: 0.0,
                ..options.clone()
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "quality target 0 is not in (0, 1]");
        let mut bad = samples.clone();
        bad[2].cost.pop();
        let err = fit(&bad, &options).unwrap_err().to_string();
        assert_eq!(err, "prompt 2 (0-based): cost has 2 values for 3 tiers");
        let mut negative = options.clone();
        negative.weights[1] = -1.0;
        assert!(fit(&samples, &negative)
            .unwrap_err()
            .to_string()
            .contains("turns"));
    }

    #[test]
    fn the_config_block_loads_as_the_models_route() {
        let fit = fit(
            &decided_by(3, 200, 3),
            &FitOptions {
                quality: 0.95,
                bias: -3.0,
                weights: Weights::default().values(),
                fit_weights: true,
            },
        )
        .unwrap();
        let block = config_block("smollm2", &fit);
        let text = format!(
            "[backends.o]\nkind = \"ollama\"\nurl = \"http://127.0.0.1:11434\"\n\n[[models]]\nname = \"smollm2\"\n\
             backend = \"o\"\ntiers = [\"int4\", \"int8\", \"fp32\"]\n{block}"
        );
        let config =
            crate::config::load_str(&text, Vec::new()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let route = &config.models[0].route;
        assert_eq!(route.bias, Some(fit.bias));
        assert_eq!(route.thresholds, fit.thresholds);
        assert_eq!(route.weights.map(|w| w.values()), Some(fit.weights));
        // Printed as fitted: 4 significant digits.
        assert!(std::iter::once(&fit.bias)
            .chain(&fit.weights)
            .all(|&x| round_sig(x, 4) == x));
    }

    fn arbitrary_samples() -> impl Strategy<Value = (Vec<Sample>, f64, bool)> {
        (1usize..=4, 0usize..25).prop_flat_map(|(k, n)| {
            let one = (
                proptest::array::uniform10(-1e3f64..1e3),
                proptest::collection::vec(any::<bool>(), k),
                proptest::collection::vec(0.0f64..10.0, k),
            )
                .prop_map(|(features, ok, cost)| Sample {
                    features,
                    same_as_top: ok.clone(),
                    ok,
                    cost,
                });
            (
                proptest::collection::vec(one, n),
                0.01f64..=1.0,
                any::<bool>(),
            )
        })
    }

    /// The cheapest routing meeting `q` over every non-decreasing pair of candidate
    /// thresholds (0, 1, midpoints), the slow way.
    fn brute_force(score: impl Fn(&Sample) -> f64, samples: &[Sample], q: f64) -> f64 {
        let mut sorted: Vec<f64> = samples.iter().map(&score).collect();
        sorted.sort_by(f64::total_cmp);
        let mids = sorted
            .windows(2)
            .filter(|w| w[0] < w[1])
            .map(|w| (w[0] + w[1]) / 2.0);
        let cands: Vec<f64> = [0.0, 1.0].into_iter().chain(mids).collect();
        let mut best = f64::INFINITY;
        for &a in &cands {
            for &b in cands.iter().filter(|&&b| b >= a) {
                let e = evaluate(samples, |s| route(&[a, b], score(s)));
                if e.quality >= q - 1e-9 {
                    best = best.min(e.cost);
                }
            }
        }
        best
    }

    proptest! {
        #[test]
        fn thresholds_are_ordered_in_range_and_feasible((samples, q, fit_weights) in arbitrary_samples()) {
            let options = FitOptions { quality: q, bias: -1.0, weights: [0.01; N], fit_weights };
            let Ok(fit) = fit(&samples, &options) else {
                prop_assert!(samples.is_empty());
                return Ok(());
            };
            let k = samples[0].tiers();
            prop_assert_eq!(fit.thresholds.len(), k - 1);
            prop_assert!(fit.thresholds.windows(2).all(|w| w[0] <= w[1]), "{:?}", fit.thresholds);
            prop_assert!(fit.thresholds.iter().all(|t| (0.0..=1.0).contains(t)));
            prop_assert!(fit.weights.iter().all(|&w| w >= 0.0 && w.is_finite()));
            prop_assert!(fit.train.quality >= q - 1e-9, "{:?}", fit.train);
            prop_assert_eq!(&fit.train, &evaluate(&samples, |s| fit.route(&s.features)));
        }

        #[test]
        fn three_tier_thresholds_are_the_cheapest_that_meet_the_target(
            (samples, q, _) in arbitrary_samples().prop_filter("3 tiers", |(s, _, _)| s.first().is_some_and(|s| s.tiers() == 3)),
            coarse in any::<bool>(),
        ) {
            // Coarse scores make ties between prompts.
            let score = |s: &Sample| {
                let x = sigmoid(s.features[0] / 300.0);
                if coarse { (x * 4.0).round() / 4.0 } else { x }
            };
            let scores: Vec<f64> = samples.iter().map(score).collect();
            let thresholds = fit_thresholds(&scores, &samples, q);
            let e = evaluate(&samples, |s| route(&thresholds, score(s)));
            prop_assert!(e.quality >= q - 1e-9);
            let best = brute_force(score, &samples, q);
            prop_assert!(e.cost <= best + 1e-9, "{} > {best}", e.cost);
        }
    }
}
