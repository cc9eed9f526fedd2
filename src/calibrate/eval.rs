//! Calibration, last step: how well a router does on labelled prompts (quality, cost,
//! tier shares, macro-F1 against each prompt's cheapest acceptable tier), the baselines
//! the calibrated router is reported against (length only, random at equal cost, one
//! fixed tier, the oracle) and the Markdown table of the report.

use serde::Serialize;

use super::data::{Labelled, N};
use super::fit::{self, Fit, FitError, FitOptions};
use crate::config::Weights;

/// One labelled prompt as the fit and the evaluation see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub features: [f64; N],
    /// Per tier (cheapest first): the answer is acceptable. The top tier always counts
    /// as acceptable: it is the reference.
    pub ok: Vec<bool>,
    /// Per tier: the measured cost (seconds).
    pub cost: Vec<f64>,
    /// Per tier: the answer equals the top tier's.
    pub same_as_top: Vec<bool>,
}

impl From<&Labelled> for Sample {
    fn from(l: &Labelled) -> Self {
        Sample {
            features: l.features,
            ok: l.ok.clone(),
            cost: l.cost.clone(),
            same_as_top: l.same_as_top.clone(),
        }
    }
}

impl Sample {
    /// Number of tiers.
    pub fn tiers(&self) -> usize {
        self.ok.len()
    }

    /// Whether tier `i`'s answer is acceptable (the top tier's always is).
    pub fn ok_at(&self, i: usize) -> bool {
        i + 1 >= self.tiers() || self.ok.get(i).copied().unwrap_or(false)
    }

    /// Whether tier `i`'s answer is the top tier's (the top tier's always is).
    pub fn same_at(&self, i: usize) -> bool {
        i + 1 >= self.tiers() || self.same_as_top.get(i).copied().unwrap_or(false)
    }

    /// The tier a perfect router picks: the acceptable tier of least *measured* cost
    /// (ties to the less precise). On a CPU a 4-bit tier can cost more than an 8-bit
    /// one, so list order is not cost order.
    pub fn label(&self) -> usize {
        let cost = |i: usize| self.cost.get(i).copied().unwrap_or(f64::INFINITY);
        (0..self.tiers())
            .filter(|&i| self.ok_at(i))
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)))
            .unwrap_or(0)
    }

    /// The least precise tier whose answer is acceptable (list order): what the scorer
    /// learns to predict, since a higher score means "needs a more precise tier".
    pub fn needs(&self) -> usize {
        (0..self.tiers()).find(|&i| self.ok_at(i)).unwrap_or(0)
    }
}

/// Check that samples can be fitted and evaluated: at least one, all with the same
/// number of tiers (returned), one value per tier in each list, finite features, and
/// costs ≥ 0.
pub fn validate(samples: &[Sample]) -> Result<usize, FitError> {
    let k = samples.first().ok_or(FitError::NoSamples)?.tiers();
    for (index, s) in samples.iter().enumerate() {
        let bad = |message: String| Err(FitError::Sample { index, message });
        if k == 0 {
            return bad("no tiers".to_owned());
        }
        let lens = [
            ("ok", s.ok.len()),
            ("cost", s.cost.len()),
            ("same_as_top", s.same_as_top.len()),
        ];
        if let Some((field, len)) = lens.iter().find(|(_, len)| *len != k) {
            return bad(format!("{field} has {len} values for {k} tiers"));
        }
        if let Some(j) = s.features.iter().position(|f| !f.is_finite()) {
            return bad(format!("feature {} is not finite", Weights::NAMES[j]));
        }
        if let Some(t) = s.cost.iter().position(|c| !(c.is_finite() && *c >= 0.0)) {
            return bad(format!(
                "cost[{t}] = {} is not a duration in seconds",
                s.cost[t]
            ));
        }
    }
    Ok(k)
}

/// The samples of a label file.
pub fn samples(labels: &[Labelled]) -> Vec<Sample> {
    labels.iter().map(Sample::from).collect()
}

/// How a router does on a set of samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Eval {
    pub prompts: usize,
    /// Share of prompts whose routed answer is acceptable.
    pub quality: f64,
    /// Share of prompts whose routed answer equals the top tier's.
    pub same_as_top: f64,
    /// Total measured cost of the routed answers (seconds).
    pub cost: f64,
    /// `cost` over the cost of sending everything to the top tier.
    pub cost_vs_top: f64,
    /// Per tier: the share of prompts routed there.
    pub share: Vec<f64>,
    /// Mean F1 over tiers of routed tier vs cheapest acceptable tier (tiers that are
    /// neither a label nor a prediction are left out).
    pub macro_f1: f64,
}

/// Evaluate a deterministic router: `route` gives each sample's tier index (an index
/// past the last tier means the last tier).
pub fn evaluate(samples: &[Sample], route: impl Fn(&Sample) -> usize) -> Eval {
    evaluate_mixed(samples, |_, s| {
        let k = s.tiers().max(1);
        let mut p = vec![0.0; k];
        p[route(s).min(k - 1)] = 1.0;
        p
    })
}

/// Evaluate a router that sends sample `i` to each tier with a probability: the exact
/// expected quality, cost, shares and (expected confusion) macro-F1.
pub fn evaluate_mixed(samples: &[Sample], route: impl Fn(usize, &Sample) -> Vec<f64>) -> Eval {
    let k = samples.first().map_or(0, Sample::tiers);
    let (mut quality, mut same, mut cost, mut top) = (0.0, 0.0, 0.0, 0.0);
    let mut share = vec![0.0; k];
    // confusion[label][predicted]
    let mut confusion = vec![vec![0.0; k]; k];
    for (i, s) in samples.iter().enumerate() {
        let p = route(i, s);
        let label = s.label().min(k.saturating_sub(1));
        top += s.cost.get(k.wrapping_sub(1)).copied().unwrap_or(0.0);
        for (t, &w) in p.iter().enumerate().take(k) {
            quality += w * f64::from(u8::from(s.ok_at(t)));
            same += w * f64::from(u8::from(s.same_at(t)));
            cost += w * s.cost.get(t).copied().unwrap_or(0.0);
            share[t] += w;
            confusion[label][t] += w;
        }
    }
    let n = samples.len().max(1) as f64;
    Eval {
        prompts: samples.len(),
        quality: quality / n,
        same_as_top: same / n,
        cost,
        cost_vs_top: ratio(cost, top),
        share: share.iter().map(|s| s / n).collect(),
        macro_f1: macro_f1(&confusion),
    }
}

fn ratio(cost: f64, top: f64) -> f64 {
    if top > 0.0 {
        cost / top
    } else if cost > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

fn macro_f1(confusion: &[Vec<f64>]) -> f64 {
    let k = confusion.len();
    let f1: Vec<f64> = (0..k)
        .filter_map(|c| {
            let tp = confusion[c][c];
            let labelled: f64 = confusion[c].iter().sum();
            let predicted: f64 = confusion.iter().map(|row| row[c]).sum();
            (labelled + predicted > 0.0).then(|| 2.0 * tp / (labelled + predicted))
        })
        .collect();
    if f1.is_empty() {
        0.0
    } else {
        f1.iter().sum::<f64>() / f1.len() as f64
    }
}

/// The length-only router: the same fit, but the score may only weigh `user_bytes`
/// (feature 0), its weight fitted as the calibrated router's are.
pub fn length_only(samples: &[Sample], quality: f64) -> Result<Fit, FitError> {
    let mut weights = [0.0; N];
    weights[0] = 1.0;
    let mut only_length = [false; N];
    only_length[0] = true;
    let options = FitOptions {
        quality,
        bias: 0.0,
        weights,
        fit_weights: true,
    };
    fit::fit_masked(samples, &options, only_length)
}

/// Random routing at the calibrated router's cost, in exact expectation: every prompt
/// goes to tier i with the router's share of tier i, moved towards the cheapest tier
/// (or the top tier) until the expected cost equals `router.cost`.
pub fn random_at_cost(samples: &[Sample], router: &Eval) -> Eval {
    let k = router.share.len();
    if k == 0 || samples.is_empty() {
        return evaluate(samples, |_| 0);
    }
    let per_tier: Vec<f64> = (0..k)
        .map(|t| {
            samples
                .iter()
                .map(|s| s.cost.get(t).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let expected = |p: &[f64]| p.iter().zip(&per_tier).map(|(a, b)| a * b).sum::<f64>();
    let base = router.share.clone();
    let base_cost = expected(&base);
    // Towards the cheapest or the most expensive fixed tier, whichever closes the gap.
    let cheapest = (0..k)
        .min_by(|&a, &b| per_tier[a].total_cmp(&per_tier[b]))
        .unwrap_or(0);
    let dearest = (0..k)
        .max_by(|&a, &b| per_tier[a].total_cmp(&per_tier[b]))
        .unwrap_or(k - 1);
    let target = if base_cost > router.cost {
        cheapest
    } else {
        dearest
    };
    let gap = per_tier[target] - base_cost;
    let alpha = if gap.abs() > f64::EPSILON * base_cost.abs().max(1.0) {
        ((router.cost - base_cost) / gap).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let p: Vec<f64> = (0..k)
        .map(|t| (1.0 - alpha) * base[t] + if t == target { alpha } else { 0.0 })
        .collect();
    evaluate_mixed(samples, |_, _| p.clone())
}

/// The rows of the report: the calibrated router, then the baselines.
pub fn report(
    samples: &[Sample],
    calibrated: &Fit,
    tiers: &[String],
    quality: f64,
) -> Result<Vec<(String, Eval)>, FitError> {
    let length = length_only(samples, quality)?;
    let mut rows = vec![
        ("calibrated".to_owned(), calibrated.train.clone()),
        ("length only".to_owned(), length.train),
        (
            "random, equal cost".to_owned(),
            random_at_cost(samples, &calibrated.train),
        ),
    ];
    for (i, tier) in tiers.iter().enumerate() {
        rows.push((format!("always {tier}"), evaluate(samples, |_| i)));
    }
    rows.push(("oracle".to_owned(), evaluate(samples, Sample::label)));
    Ok(rows)
}

/// A Markdown table: router, quality, same as top, cost vs top, share per tier, macro-F1.
pub fn table<S: AsRef<str>>(rows: &[(S, Eval)], tiers: &[String]) -> String {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let mut out = String::from("| router | quality | same as top | cost vs top |");
    for t in tiers {
        out.push_str(&format!(" {t} |"));
    }
    out.push_str(" macro-F1 |\n| --- | ---: | ---: | ---: |");
    out.push_str(&" ---: |".repeat(tiers.len() + 1));
    out.push('\n');
    for (name, e) in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |",
            name.as_ref(),
            pct(e.quality),
            pct(e.same_as_top),
            pct(e.cost_vs_top)
        ));
        for i in 0..tiers.len() {
            out.push_str(&format!(
                " {} |",
                pct(e.share.get(i).copied().unwrap_or(0.0))
            ));
        }
        out.push_str(&format!(" {:.3} |\n", e.macro_f1));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// splitmix64 in [0, 1): deterministic test data without a crate.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Tier t (of `costs.len()`) is acceptable iff `f < t + 1`; the top always is.
    pub(crate) fn sample(features: [f64; N], f: f64, costs: &[f64]) -> Sample {
        let k = costs.len();
        let ok: Vec<bool> = (0..k).map(|t| t + 1 == k || f < (t + 1) as f64).collect();
        Sample {
            features,
            same_as_top: ok.clone(),
            ok,
            cost: costs.to_vec(),
        }
    }

    /// `n` prompts whose feature `j` (uniform in [0, 3)) decides the tier; the other
    /// features are noise in [0, 3).
    pub(crate) fn decided_by(j: usize, n: usize, seed: u64) -> Vec<Sample> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| {
                let features: [f64; N] = std::array::from_fn(|_| 3.0 * rng.next());
                sample(features, features[j], &[1.0, 2.0, 4.0])
            })
            .collect()
    }

    fn tiers() -> Vec<String> {
        ["int4", "int8", "fp32"].map(String::from).to_vec()
    }

    fn calibrated(samples: &[Sample], quality: f64) -> Fit {
        let options = FitOptions {
            quality,
            bias: crate::config::DEFAULT_BIAS,
            weights: Weights::default().values(),
            fit_weights: true,
        };
        fit::fit(samples, &options).unwrap()
    }

    #[test]
    fn fixed_tiers_and_the_oracle() {
        let samples = decided_by(3, 300, 5);
        let top = evaluate(&samples, |_| 2);
        assert_eq!(
            (top.quality, top.same_as_top, top.cost_vs_top),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(top.share, vec![0.0, 0.0, 1.0]);
        // Past the last tier means the last tier.
        assert_eq!(evaluate(&samples, |_| 7), top);
        let oracle = evaluate(&samples, Sample::label);
        assert_eq!((oracle.quality, oracle.macro_f1), (1.0, 1.0));
        assert!(oracle.cost_vs_top < 0.6, "{oracle:?}");
        let cheapest = evaluate(&samples, |_| 0);
        assert!((cheapest.quality - 1.0 / 3.0).abs() < 0.1, "{cheapest:?}");
        // Everything on one tier: F1 counts that tier and the tiers that were labels.
        assert!(cheapest.macro_f1 < 0.3, "{cheapest:?}");
        let empty = evaluate(&[], |_| 0);
        assert_eq!((empty.prompts, empty.cost_vs_top), (0, 1.0));
    }

    #[test]
    fn the_calibrated_router_beats_length_and_random_routing() {
        // Feature 3 decides the tier; user_bytes (feature 0) is noise.
        let samples = decided_by(3, 800, 1);
        let fit = calibrated(&samples, 0.95);
        let length = length_only(&samples, 0.95).unwrap();
        assert!(fit.train.quality >= 0.95 && length.train.quality >= 0.95);
        assert!(
            fit.train.cost_vs_top + 0.2 < length.train.cost_vs_top,
            "calibrated {:?}\nlength only {:?}",
            fit.train,
            length.train
        );
        let random = random_at_cost(&samples, &fit.train);
        assert!(
            (random.cost - fit.train.cost).abs() < 1e-9 * fit.train.cost,
            "{random:?}"
        );
        assert!(random.quality + 0.2 < fit.train.quality, "{random:?}");
        assert!(random.macro_f1 < fit.train.macro_f1);
    }

    #[test]
    fn the_report_table_has_a_row_per_router_and_a_column_per_tier() {
        let samples = decided_by(3, 200, 2);
        let fit = calibrated(&samples, 1.0);
        let rows = report(&samples, &fit, &tiers(), 1.0).unwrap();
        let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "calibrated",
                "length only",
                "random, equal cost",
                "always int4",
                "always int8",
                "always fp32",
                "oracle"
            ]
        );
        let table = table(&rows, &tiers());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| router | quality | same as top | cost vs top | int4 | int8 | fp32 | macro-F1 |"
        );
        assert_eq!(
            lines[1],
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        assert_eq!(lines.len(), 2 + rows.len());
        assert!(
            lines[2].starts_with("| calibrated | 100.0% | 100.0% |"),
            "{table}"
        );
        assert!(
            lines[5].starts_with("| always int4 |")
                && lines[5].contains("| 100.0% | 0.0% | 0.0% |"),
            "{table}"
        );
        assert!(lines[8].ends_with("| 1.000 |"), "{table}");
    }
}
