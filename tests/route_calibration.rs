//! The shipped router calibrations against the labelled data they came from
//! (`tests/data/route/`): refitting the training labels reproduces the shipped
//! `route.*` lines exactly, the stored features are what today's scorer computes, and on
//! the held-out labels the shipped router keeps its quality target and beats a
//! length-only router and random routing at equal cost.

use std::path::{Path, PathBuf};

use sluice::calibrate::data::{self, Labelled, Prompt};
use sluice::calibrate::eval::{self, Eval, Sample};
use sluice::calibrate::fit::{self, FitOptions};
use sluice::calibrate::run;
use sluice::config::Config;
use sluice::pipeline::route::{Features, Scorer};

/// The quality target both shipped calibrations were fitted for (`--quality 0.95`).
const QUALITY: f64 = 0.95;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn data(file: &str) -> PathBuf {
    root().join("tests/data/route").join(file)
}

struct Shipped {
    config: Config,
    train: Vec<Labelled>,
    held: Vec<Labelled>,
    prompts: Vec<Prompt>,
}

fn shipped(model: &str, config: &str) -> Shipped {
    let config = sluice::config::load(&root().join(config)).expect("shipped config loads");
    assert!(config.model(model).is_some_and(|m| !m.tiers.is_empty()));
    let mut prompts = data::read(&data(&format!("{model}.train.jsonl"))).unwrap();
    prompts.extend(data::read(&data(&format!("{model}.heldout.jsonl"))).unwrap());
    Shipped {
        train: data::read_labels(&data(&format!("{model}.labels.jsonl"))).unwrap(),
        held: data::read_labels(&data(&format!("{model}.labels.heldout.jsonl"))).unwrap(),
        config,
        prompts,
    }
}

impl Shipped {
    fn scorer_and_thresholds(&self, model: &str) -> (Scorer, Vec<f64>) {
        let m = self.config.model(model).unwrap();
        let bias = m.route.bias.unwrap_or(self.config.route.bias);
        let weights = m.route.weights.unwrap_or(self.config.route.weights);
        assert_eq!(
            m.route.thresholds.len() + 1,
            m.tiers.len(),
            "the shipped config has calibrated thresholds for `{model}`"
        );
        (Scorer::new(bias, &weights), m.route.thresholds.clone())
    }

    fn route(&self, model: &str, features: &[f64; 10]) -> usize {
        let (scorer, thresholds) = self.scorer_and_thresholds(model);
        let score = scorer.score(&Features(*features));
        thresholds
            .iter()
            .position(|&t| score < t)
            .unwrap_or(thresholds.len())
    }
}

/// Refit the shipped training labels as `sluice route calibrate --labels` does: the
/// thresholds (and bias, weights) must be the shipped ones.
fn refit_reproduces_the_shipped_lines(model: &str, config: &str) {
    let s = shipped(model, config);
    let m = s.config.model(model).unwrap();
    let samples = eval::samples(&s.train);
    let fitted = fit::fit(
        &samples,
        &FitOptions {
            quality: QUALITY,
            bias: m.route.bias.unwrap_or(s.config.route.bias),
            weights: m.route.weights.unwrap_or(s.config.route.weights).values(),
            fit_weights: false,
        },
    )
    .unwrap();
    assert_eq!(fitted.thresholds, m.route.thresholds, "{model}: {fitted:?}");
    assert!(fitted.train.quality >= QUALITY);
}

/// Every label's features are what the scorer computes from its prompt today (a
/// scorer change that would silently invalidate the shipped labels fails here).
fn stored_features_are_current(model: &str, config: &str) {
    let s = shipped(model, config);
    for label in s.train.iter().chain(&s.held) {
        let prompt = s
            .prompts
            .iter()
            .find(|p| p.id == label.id)
            .unwrap_or_else(|| panic!("{model}: no prompt `{}`", label.id));
        let request = run::request(prompt, model).unwrap();
        assert_eq!(
            Features::of(&request).0,
            label.features,
            "{model}: {}",
            label.id
        );
    }
}

/// The shipped router on held-out prompts against the two baselines.
fn held_out(model: &str, config: &str) -> (Eval, Eval, Eval) {
    let s = shipped(model, config);
    let train = eval::samples(&s.train);
    let held = eval::samples(&s.held);
    let calibrated = eval::evaluate(&held, |x: &Sample| s.route(model, &x.features));
    let length = eval::length_only(&train, QUALITY).unwrap();
    let length = eval::evaluate(&held, |x: &Sample| length.route(&x.features));
    let random = eval::random_at_cost(&held, &calibrated);
    eprintln!(
        "{model} held-out:\n{}",
        eval::table(
            &[
                ("calibrated", calibrated.clone()),
                ("length only", length.clone()),
                ("random, equal cost", random.clone()),
            ],
            &s.train[0].tiers
        )
    );
    (calibrated, length, random)
}

#[test]
fn sluice_tiny_refit_reproduces_the_shipped_thresholds() {
    refit_reproduces_the_shipped_lines("sluice-tiny", "config/sluice.toml");
}

#[test]
fn smollm2_refit_reproduces_the_shipped_thresholds() {
    refit_reproduces_the_shipped_lines("smollm2-135m", "config/examples/local-models.toml");
}

#[test]
fn stored_features_match_the_scorer() {
    stored_features_are_current("sluice-tiny", "config/sluice.toml");
    stored_features_are_current("smollm2-135m", "config/examples/local-models.toml");
}

#[test]
fn sluice_tiny_held_out_keeps_quality_at_a_fraction_of_the_cost() {
    let (calibrated, length, random) = held_out("sluice-tiny", "config/sluice.toml");
    assert!(calibrated.quality >= QUALITY, "{calibrated:?}");
    assert!(calibrated.cost_vs_top < 0.6, "{calibrated:?}");
    assert!(calibrated.cost <= length.cost + 1e-9, "{length:?}");
    assert!(calibrated.quality >= random.quality - 1e-9, "{random:?}");
}

#[test]
fn smollm2_held_out_beats_length_only_and_random_routing() {
    let (calibrated, length, random) =
        held_out("smollm2-135m", "config/examples/local-models.toml");
    assert!(calibrated.quality >= QUALITY, "{calibrated:?}");
    assert!(calibrated.cost_vs_top < 1.0, "{calibrated:?}");
    // Better than length alone: both keep the target, the calibrated router for less.
    assert!(length.quality >= QUALITY, "{length:?}");
    assert!(
        calibrated.cost < length.cost,
        "calibrated {calibrated:?}\nlength only {length:?}"
    );
    // Random routing spending the same: lower quality.
    assert!(calibrated.quality > random.quality, "{random:?}");
}
