//! `sluice route calibrate`: fit a tiered model's router on the user's own prompts.
//!
//! ```text
//! check.rs the answer checks (number, contains, label, equals, tool)
//! data.rs  prompts.jsonl (a chat body + an optional checker per line), label files
//! run.rs   every prompt on every tier through the pipeline; cost measured by the engine
//! fit.rs   weights (optional logistic regression, ≥ 0) and thresholds: the lowest
//!          measured cost whose share of acceptable answers meets the quality target
//! eval.rs  quality / cost / macro-F1 tables, against length-only and random routing
//! ```
//!
//! A prompt's answer on a tier is acceptable when it equals the most precise tier's or
//! passes the line's checker. Labels can be written (`--write-labels`) and refitted
//! later without running the engine again (`--labels`).

pub mod check;
pub mod data;
pub mod eval;
pub mod fit;
pub mod run;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{CacheMode, Config, Weights};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// What can stop a calibration.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("{0}")]
    Data(#[from] data::DataError),
    #[error("{0}")]
    Fit(#[from] fit::FitError),
    #[error("cannot start the model's backends: {0}")]
    Backend(#[from] crate::error::BackendError),
    #[error("{0}")]
    Setup(#[from] crate::pipeline::SetupError),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("model `{0}` is not a tiered model in this config (give it `tiers = [...]`)")]
    NotTiered(String),
    #[error("prompt `{id}`: {message}")]
    Prompt { id: String, message: String },
    #[error("{0}")]
    Usage(String),
}

/// The command line's choices (`sluice route calibrate --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The tiered model to calibrate (default: the config's first tiered model).
    #[arg(long)]
    pub model: Option<String>,
    /// Prompts to run (JSON lines: `request`, optional `check`).
    #[arg(long, conflicts_with = "labels", required_unless_present = "labels")]
    pub data: Option<PathBuf>,
    /// Labels written by an earlier run (`--write-labels`): refit without the engine.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Held-out prompts (or labels, with --labels) to evaluate the fitted router on.
    #[arg(long)]
    pub holdout: Option<PathBuf>,
    /// Share of answers that must stay acceptable (equal to the most precise tier's,
    /// or passing the line's check).
    #[arg(long, default_value_t = 0.95)]
    pub quality: f64,
    /// Also fit the scorer's weights (non-negative logistic regression).
    #[arg(long)]
    pub fit_weights: bool,
    /// Prompts in flight at once on each tier.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Write the measured labels here (held-out ones beside it, `.heldout.jsonl`).
    #[arg(long)]
    pub write_labels: Option<PathBuf>,
}

/// Run (or load) the labels, fit, and return the report: the config block to paste and
/// the quality/cost tables. `progress` receives one line per tier run.
pub async fn calibrate(
    mut config: Config,
    options: &Options,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String, CalibrateError> {
    if !(options.quality > 0.0 && options.quality <= 1.0) {
        return Err(CalibrateError::Usage(format!(
            "--quality {} is not in (0, 1]",
            options.quality
        )));
    }
    let model = options
        .model
        .clone()
        .or_else(|| {
            let tiered = config.models.iter().find(|m| !m.tiers.is_empty());
            tiered.map(|m| m.name.clone())
        })
        .ok_or_else(|| {
            CalibrateError::Usage(
                "the config has no tiered model (`tiers = [...]`) to calibrate".into(),
            )
        })?;
    let model = model.as_str();
    let model_cfg = config
        .model(model)
        .filter(|m| !m.tiers.is_empty())
        .cloned()
        .ok_or_else(|| CalibrateError::NotTiered(model.to_owned()))?;
    let bias = model_cfg.route.bias.unwrap_or(config.route.bias);
    let weights: Weights = model_cfg.route.weights.unwrap_or(config.route.weights);

    // Only the model's own backend, fresh answers, no routing by load.
    config.cache.mode = CacheMode::Off;
    config.cache.redis_url = None;
    config.route.load.enabled = false;
    config.models.retain(|m| m.name == model);
    config.backends.retain(|name, _| *name == model_cfg.backend);

    let (train, holdout) = match (&options.labels, &options.data) {
        (Some(labels), None) => (
            data::read_labels(labels)?,
            match &options.holdout {
                Some(path) => Some(data::read_labels(path)?),
                None => None,
            },
        ),
        (None, Some(prompts)) => {
            let pipeline =
                Pipeline::new(&config, Arc::new(Metrics::new()?), CancellationToken::new())?;
            let tiers = pipeline
                .tiers(model)
                .ok_or_else(|| CalibrateError::NotTiered(model.to_owned()))?;
            let measure = |path: PathBuf| {
                let (pipeline, tiers) = (&pipeline, &tiers);
                async move {
                    let prompts = data::read(&path)?;
                    progress(&format!("{}: {} prompts", path.display(), prompts.len()));
                    run::measure(
                        pipeline,
                        model,
                        tiers,
                        &prompts,
                        options.concurrency,
                        progress,
                    )
                    .await
                }
            };
            let train = measure(prompts.clone()).await?;
            let holdout = match &options.holdout {
                Some(path) => Some(measure(path.clone()).await?),
                None => None,
            };
            if let Some(out) = &options.write_labels {
                data::write_labels(out, &train)?;
                if let Some(holdout) = &holdout {
                    data::write_labels(&heldout_path(out), holdout)?;
                }
            }
            (train, holdout)
        }
        _ => {
            return Err(CalibrateError::Usage(
                "give exactly one of --data (prompts to run) and --labels (labels to refit)".into(),
            ))
        }
    };
    report(
        model,
        options,
        &model_cfg.tiers,
        bias,
        weights,
        &train,
        holdout.as_deref(),
    )
}

/// `labels.jsonl` → `labels.heldout.jsonl`.
fn heldout_path(out: &std::path::Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{stem}.heldout.jsonl"))
}

/// Fit on `train`; the config block and tables (train, and held-out when given).
fn report(
    model: &str,
    options: &Options,
    tiers: &[String],
    bias: f64,
    weights: Weights,
    train: &[data::Labelled],
    holdout: Option<&[data::Labelled]>,
) -> Result<String, CalibrateError> {
    if let Some(bad) = train
        .iter()
        .chain(holdout.unwrap_or_default())
        .find(|l| l.tiers != tiers)
    {
        return Err(CalibrateError::Usage(format!(
            "label `{}` is for tiers [{}], the model has [{}]",
            bad.id,
            bad.tiers.join(", "),
            tiers.join(", ")
        )));
    }
    let samples = eval::samples(train);
    let fitted = fit::fit(
        &samples,
        &fit::FitOptions {
            quality: options.quality,
            bias,
            weights: weights.values(),
            fit_weights: options.fit_weights,
        },
    )?;
    let mut out = format!(
        "# sluice route calibrate: model `{}`, quality target {:.1}%, {} training prompts\n\n",
        model,
        options.quality * 100.0,
        train.len()
    );
    out.push_str("Paste under the model's [[models]] entry:\n\n```toml\n");
    out.push_str(&fit::config_block(model, &fitted));
    out.push_str("```\n\n## Training prompts\n\n");
    out.push_str(&eval::table(
        &eval::report(&samples, &fitted, tiers, options.quality)?,
        tiers,
    ));
    for note in &fitted.notes {
        out.push_str(&format!("\n- {note}"));
    }
    if let Some(holdout) = holdout {
        let held = eval::samples(holdout);
        out.push_str(&format!("\n\n## Held-out prompts ({})\n\n", held.len()));
        out.push_str(&eval::table(
            &held_out(&samples, &held, &fitted, tiers, options.quality)?,
            tiers,
        ));
    }
    out.push('\n');
    Ok(out)
}

/// The routers fitted on the training prompts, judged on held-out ones: calibrated,
/// length-only, random at the calibrated router's held-out cost, each tier alone, and
/// the oracle.
fn held_out(
    train: &[eval::Sample],
    held: &[eval::Sample],
    fitted: &fit::Fit,
    tiers: &[String],
    quality: f64,
) -> Result<Vec<(String, eval::Eval)>, CalibrateError> {
    let calibrated = eval::evaluate(held, |s| fitted.route(&s.features));
    let length = eval::length_only(train, quality)?;
    let mut rows = vec![
        ("calibrated".to_owned(), calibrated.clone()),
        (
            "length only".to_owned(),
            eval::evaluate(held, |s| length.route(&s.features)),
        ),
        (
            "random, equal cost".to_owned(),
            eval::random_at_cost(held, &calibrated),
        ),
    ];
    for (i, tier) in tiers.iter().enumerate() {
        rows.push((format!("always {tier}"), eval::evaluate(held, |_| i)));
    }
    rows.push((
        "oracle".to_owned(),
        eval::evaluate(held, eval::Sample::label),
    ));
    Ok(rows)
}
