//! A tiered logical model: its tiers from cheapest to most precise, each a deployment
//! on the model's backend, and the scored choice between them (thresholds on the
//! complexity score). Which name a tier has upstream depends on the backend: an
//! embedded-engine tier is an ONNX file of the model folder; an Ollama or
//! OpenAI-compatible tier is a tag, `<upstream_model>-<tier>`.

use std::sync::Arc;

use super::score::Scorer;
use super::Target;
use crate::backend::{Backend, Deployment};
use crate::config::{BackendKind, ModelConfig, RouteConfig};

/// One tier: its name and where it runs.
#[derive(Clone)]
pub struct Tier {
    pub name: Arc<str>,
    pub target: Target,
}

/// A logical model that routes between tiers.
#[derive(Clone)]
pub struct Tiered {
    /// Cheapest first, most precise last; never empty.
    pub tiers: Vec<Tier>,
    pub scorer: Scorer,
    /// `tiers.len() - 1` non-decreasing bounds in [0, 1].
    pub thresholds: Vec<f64>,
}

impl Tiered {
    pub fn new(
        model: &ModelConfig,
        backend: &Arc<dyn Backend>,
        kind: BackendKind,
        route: &RouteConfig,
    ) -> Self {
        let logical: Arc<str> = Arc::from(model.name.as_str());
        let tiers = model
            .tiers
            .iter()
            .map(|tier| {
                let mut deployment = Deployment::from_model(model);
                deployment.tier = Some(tier.clone());
                if kind != BackendKind::Onnx {
                    deployment.upstream_model = format!("{}-{tier}", model.upstream_name());
                }
                Tier {
                    name: Arc::from(tier.as_str()),
                    target: Target {
                        model: logical.clone(),
                        served: Arc::from(format!("{}@{tier}", model.name)),
                        tier: Some(Arc::from(tier.as_str())),
                        deployment: Arc::new(deployment),
                        backend: backend.clone(),
                        in_flight: Arc::default(),
                        fallbacks: Arc::from([]),
                    },
                }
            })
            .collect::<Vec<_>>();
        let bias = model.route.bias.unwrap_or(route.bias);
        let weights = model.route.weights.unwrap_or(route.weights);
        let thresholds = if model.route.thresholds.is_empty() {
            even_thresholds(tiers.len())
        } else {
            model.route.thresholds.clone()
        };
        Tiered {
            tiers,
            scorer: Scorer::new(bias, &weights),
            thresholds,
        }
    }

    /// The tier a score selects: the first whose threshold the score is below, else
    /// the most precise.
    pub fn by_score(&self, score: f64) -> usize {
        self.thresholds
            .iter()
            .position(|&t| score < t)
            .unwrap_or(self.tiers.len() - 1)
    }

    pub fn find(&self, tier: &str) -> Option<usize> {
        self.tiers.iter().position(|t| &*t.name == tier)
    }

    pub fn names(&self) -> Vec<String> {
        self.tiers.iter().map(|t| t.name.to_string()).collect()
    }
}

/// Uncalibrated default: the score range split evenly, `[1/k, 2/k, ...]`.
pub fn even_thresholds(tiers: usize) -> Vec<f64> {
    (1..tiers).map(|i| i as f64 / tiers as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_thresholds_split_the_range() {
        assert_eq!(even_thresholds(1), Vec::<f64>::new());
        assert_eq!(even_thresholds(2), vec![0.5]);
        let three = even_thresholds(3);
        assert!((three[0] - 1.0 / 3.0).abs() < 1e-12 && (three[1] - 2.0 / 3.0).abs() < 1e-12);
    }
}
