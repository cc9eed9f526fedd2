//! `sluice route calibrate`: run labelled prompts on every tier of a model, label each
//! with the cheapest tier whose answer is acceptable, and fit the router's thresholds.

pub mod data;
pub mod eval;
pub mod fit;
