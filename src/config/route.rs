//! Routing settings: the complexity scorer's weights (global `[route]`, overridable per
//! model under `[models.route]`), each tiered model's thresholds, and the load policy.
//! Plain data; `pipeline::route` turns it into a scorer and a router.

use std::time::Duration;

use serde::Deserialize;

/// `[route]`: defaults for every tiered model, and the load policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// The scorer's intercept: the score of an empty request is `sigmoid(bias)`.
    pub bias: f64,
    /// The scorer's feature weights (see [`Weights`]).
    pub weights: Weights,
    /// Moving a request to a tier that is cheaper at the moment when its own is busy.
    pub load: LoadPolicy,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            bias: DEFAULT_BIAS,
            weights: Weights::default(),
            load: LoadPolicy::default(),
        }
    }
}

/// The documented default intercept: a one-line question scores about 0.05.
pub const DEFAULT_BIAS: f64 = -3.0;

/// `[route.load]`: off by default (see README, "Quantization tiers": the benchmark
/// measured whether it pays).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadPolicy {
    pub enabled: bool,
    /// A tier with more requests than this waiting for a batch slot is busy.
    pub max_queue: usize,
    /// A tier whose recent decode step took longer than this is busy (unset: queue only).
    #[serde(with = "humantime_serde")]
    pub max_step_time: Option<Duration>,
}

impl Default for LoadPolicy {
    fn default() -> Self {
        LoadPolicy {
            enabled: false,
            max_queue: 4,
            max_step_time: None,
        }
    }
}

/// A tiered model's own routing: `[models.route]`. What `sluice route calibrate` prints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// Overrides `route.bias`.
    #[serde(default)]
    pub bias: Option<f64>,
    /// Overrides `route.weights` (missing fields keep their documented defaults).
    #[serde(default)]
    pub weights: Option<Weights>,
    /// One upper bound per tier but the last, non-decreasing, each in [0, 1]: a request
    /// whose score is below `thresholds[i]` goes to `tiers[i]` (the first such i), any
    /// other to the last tier. Unset: evenly spaced (uncalibrated).
    #[serde(default)]
    pub thresholds: Vec<f64>,
}

/// Weight of each complexity feature; the score is
/// `sigmoid(bias + Σ weight × feature)`. Every weight must be ≥ 0, so adding to a
/// request (a code block, a reasoning step, a turn) never lowers its score. Features are
/// counted on bytes and words of the user turns (never the system prompt), most as
/// `ln(1 + count)`; see `pipeline::route::score`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// `ln(1 + bytes / 64)` of the user turns' text.
    pub user_bytes: f64,
    /// `ln(1 + turns)`: user and assistant messages (tool results included).
    pub turns: f64,
    /// `ln(1 + fenced code blocks)` in user turns: a line opening (after indentation)
    /// with three or more backticks starts or ends a block; an unclosed block counts.
    pub code_blocks: f64,
    /// `ln(1 + digits)` in user turns (ASCII `0`–`9`).
    pub digits: f64,
    /// `ln(1 + operators)` in user turns: `+ * / = ^ % < >`, and a `-` with a digit or
    /// a space on each side that is not a list bullet opening its line.
    pub operators: f64,
    /// `ln(1 + reasoning cues)` in user turns: whole words in any case — explain, why,
    /// prove, proof, derive, compare, analyze/analyse, reason, justify, calculate,
    /// compute, solve, evaluate, first, then, finally, therefore, hence, thus — the
    /// phrases "step by step" (or step-by-step), "how many"/"how much", "show that",
    /// "what if", and numbered steps: a line opening with 1–2 digits, `.` or `)`, then
    /// whitespace.
    pub reasoning: f64,
    /// `ln(1 + tools offered)`.
    pub tools: f64,
    /// 1 with a `response_format` JSON schema, 0.5 with `json_object`, else 0.
    pub schema: f64,
    /// `ln(1 + max_tokens / 64)` when the request bounds its answer, else 0.
    pub max_tokens: f64,
    /// `ln(1 + letters outside the Latin script / 8)` in user turns (alphabetic
    /// characters outside ASCII and the Latin blocks: CJK, Cyrillic, Greek, Arabic…).
    pub non_latin: f64,
}

impl Weights {
    /// Feature names, in the order of [`Weights::values`].
    pub const NAMES: [&'static str; 10] = [
        "user_bytes",
        "turns",
        "code_blocks",
        "digits",
        "operators",
        "reasoning",
        "tools",
        "schema",
        "max_tokens",
        "non_latin",
    ];

    pub fn values(&self) -> [f64; 10] {
        [
            self.user_bytes,
            self.turns,
            self.code_blocks,
            self.digits,
            self.operators,
            self.reasoning,
            self.tools,
            self.schema,
            self.max_tokens,
            self.non_latin,
        ]
    }

    pub fn from_values(v: [f64; 10]) -> Self {
        Weights {
            user_bytes: v[0],
            turns: v[1],
            code_blocks: v[2],
            digits: v[3],
            operators: v[4],
            reasoning: v[5],
            tools: v[6],
            schema: v[7],
            max_tokens: v[8],
            non_latin: v[9],
        }
    }
}

impl Default for Weights {
    /// Hand-set, uncalibrated: long, code-bearing, numeric, multi-step requests score
    /// high. `sluice route calibrate` fits a model's own.
    fn default() -> Self {
        Weights {
            user_bytes: 0.5,
            turns: 0.3,
            code_blocks: 0.8,
            digits: 0.3,
            operators: 0.3,
            reasoning: 0.8,
            tools: 0.4,
            schema: 0.6,
            max_tokens: 0.3,
            non_latin: 0.5,
        }
    }
}

/// Routing checks, each problem with its key path: tier names, thresholds, weights.
pub(super) fn validate(config: &super::Config, issue: &mut impl FnMut(String, String)) {
    use super::{BackendKind, OnnxTask};
    check_scorer(
        "route",
        Some(config.route.bias),
        &config.route.weights,
        issue,
    );
    if config.route.load.max_step_time.is_some_and(|d| d.is_zero()) {
        issue(
            "route.load.max_step_time".into(),
            "must be greater than 0 (or unset to look at the queue only)".into(),
        );
    }
    for (i, model) in config.models.iter().enumerate() {
        let path = format!("models[{i}]");
        if model.name.contains('@') {
            issue(
                format!("{path}.name"),
                "must not contain `@`: clients force a tier with `name@tier`".into(),
            );
        }
        let route = &model.route;
        let routed =
            route.bias.is_some() || route.weights.is_some() || !route.thresholds.is_empty();
        if model.tiers.is_empty() {
            if routed {
                issue(
                    format!("{path}.route"),
                    "routing settings need `tiers` to route between; add tiers or remove route"
                        .into(),
                );
            }
            continue;
        }
        if model.tier.is_some() {
            issue(
                format!("{path}.tier"),
                "a model either pins one tier (`tier`) or routes between several (`tiers`), not both".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (t, tier) in model.tiers.iter().enumerate() {
            let ok = !tier.is_empty() && tier.bytes().all(|b| b.is_ascii_graphic() && b != b'@');
            if !ok {
                issue(
                    format!("{path}.tiers[{t}]"),
                    format!("`{tier}` is not a tier name: visible ASCII without `@`"),
                );
            } else if !seen.insert(tier) {
                issue(
                    format!("{path}.tiers[{t}]"),
                    format!("tier `{tier}` is listed twice"),
                );
            }
        }
        if let Some(backend) = config.backends.get(&model.backend) {
            if backend.kind == BackendKind::Onnx && backend.task() == OnnxTask::Embed {
                issue(
                    format!("{path}.tiers"),
                    format!(
                        "backend `{}` serves embeddings, which have no tiers; remove it",
                        model.backend
                    ),
                );
            } else if backend.kind == BackendKind::Onnx {
                for (t, tier) in model.tiers.iter().enumerate() {
                    if !backend.tiers.contains(tier) {
                        issue(
                            format!("{path}.tiers[{t}]"),
                            format!(
                                "backend `{}` does not load tier `{tier}`; list it in backends.{}.tiers (now: [{}])",
                                model.backend,
                                model.backend,
                                backend.tiers.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        check_scorer(
            &format!("{path}.route"),
            route.bias,
            &route.weights.unwrap_or_default(),
            issue,
        );
        let thresholds = &route.thresholds;
        if thresholds.is_empty() {
            continue;
        }
        if thresholds.len() + 1 != model.tiers.len() {
            issue(
                format!("{path}.route.thresholds"),
                format!(
                    "needs {} values, one per tier but the last (tiers: {})",
                    model.tiers.len() - 1,
                    model.tiers.join(", ")
                ),
            );
        } else if thresholds.iter().any(|t| !(0.0..=1.0).contains(t)) {
            issue(
                format!("{path}.route.thresholds"),
                "every threshold is a score in [0, 1]".into(),
            );
        } else if thresholds.windows(2).any(|w| w[0] > w[1]) {
            issue(
                format!("{path}.route.thresholds"),
                "must not decrease: tiers go from cheapest to most precise".into(),
            );
        }
    }
}

fn check_scorer(
    path: &str,
    bias: Option<f64>,
    weights: &Weights,
    issue: &mut impl FnMut(String, String),
) {
    if bias.is_some_and(|b| !b.is_finite()) {
        issue(format!("{path}.bias"), "must be a finite number".into());
    }
    for (name, w) in Weights::NAMES.iter().zip(weights.values()) {
        if !w.is_finite() || w < 0.0 {
            issue(
                format!("{path}.weights.{name}"),
                "must be a finite number ≥ 0 (a negative weight would let adding to a request lower its score)".into(),
            );
        }
    }
}
