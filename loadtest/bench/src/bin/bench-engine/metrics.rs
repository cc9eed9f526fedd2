//! sluice's own engine metrics around each cell of the embedded-engine benchmark (see
//! main.rs): GET /metrics before and after a cell, and the difference of the
//! `sluice_engine_*` histogram sums and counts. Cells run one after the other and drain
//! completely, so the difference belongs to the one backend the cell used. It explains
//! the client-side numbers (how big the decode batches were, how long a step took, how
//! much of the engine's time went to prefill); a missing or renamed metric gives `None`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::{connect, Target};

/// Sums of the series of interest, keyed `name` or `name{phase}`.
pub type Snapshot = BTreeMap<String, f64>;

pub async fn scrape(t: &Target) -> Option<Snapshot> {
    let mut sender = connect(t).await.ok()?;
    let req = Request::get("/metrics")
        .header(header::HOST, t.authority.as_str())
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let mut snap = Snapshot::new();
    for line in String::from_utf8_lossy(&body).lines() {
        if !line.starts_with("sluice_engine_") {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if !(name.ends_with("_sum") || name.ends_with("_count") || name.ends_with("_total")) {
            continue;
        }
        let key = match ["prefill", "decode", "generated", "prompt"]
            .iter()
            .find(|p| series.contains(&format!("=\"{p}\"")))
        {
            Some(p) => format!("{name}{{{p}}}"),
            None => name.to_owned(),
        };
        *snap.entry(key).or_default() += value;
    }
    Some(snap)
}

/// The engine's side of one cell (all of it: warm-up, window and drain).
#[derive(Serialize, Clone, Copy)]
pub struct EngineStats {
    pub decode_steps: f64,
    /// Mean decode step, milliseconds.
    pub decode_step_ms: f64,
    /// Mean sequences per decode step.
    pub mean_batch: f64,
    pub prefill_steps: f64,
    pub prefill_step_ms: f64,
    /// Prefill time / (prefill + decode time).
    pub prefill_share: f64,
    /// Mean time from admission to a batch slot, milliseconds.
    pub queue_wait_ms: f64,
    pub prompt_tokens: f64,
    pub generated_tokens: f64,
}

pub fn engine_stats(before: &Snapshot, after: &Snapshot) -> Option<EngineStats> {
    let d = |k: &str| Some(after.get(k)? - before.get(k).copied().unwrap_or(0.0));
    let step = "sluice_engine_step_duration_seconds";
    let (dec_s, dec_n) = (
        d(&format!("{step}_sum{{decode}}"))?,
        d(&format!("{step}_count{{decode}}"))?,
    );
    let (pre_s, pre_n) = (
        d(&format!("{step}_sum{{prefill}}"))?,
        d(&format!("{step}_count{{prefill}}"))?,
    );
    let per = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    Some(EngineStats {
        decode_steps: dec_n,
        decode_step_ms: per(dec_s * 1e3, dec_n),
        mean_batch: per(
            d("sluice_engine_batch_size_sum").unwrap_or(f64::NAN),
            d("sluice_engine_batch_size_count").unwrap_or(f64::NAN),
        ),
        prefill_steps: pre_n,
        prefill_step_ms: per(pre_s * 1e3, pre_n),
        prefill_share: per(pre_s, pre_s + dec_s),
        queue_wait_ms: per(
            d("sluice_engine_queue_wait_seconds_sum").unwrap_or(f64::NAN) * 1e3,
            d("sluice_engine_queue_wait_seconds_count").unwrap_or(f64::NAN),
        ),
        prompt_tokens: d("sluice_engine_tokens_total{prompt}").unwrap_or(f64::NAN),
        generated_tokens: d("sluice_engine_tokens_total{generated}").unwrap_or(f64::NAN),
    })
}
