//! sluice's own engine metrics around each cell of the embedded-engine benchmark (see
//! main.rs): GET /metrics before and after a cell, and the difference of the
//! `sluice_engine_*` histogram sums and counts (and of the buckets of
//! `sluice_engine_mask_seconds`). Cells run one after the other and drain completely, so
//! the difference belongs to the one backend the cell used. It explains the client-side
//! numbers (how big the decode batches were, how long a step took, how much of the
//! engine's time went to prefill, how long the structured-generation masks took); a
//! missing or renamed metric gives `None`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::{connect, Target};

/// Sums of the series of interest over their labels, keyed `name`, `name{phase}` (step
/// durations, tokens), `name{kind}` (constrained sequences) or `name{le=BOUND}` (mask
/// histogram buckets).
pub type Snapshot = BTreeMap<String, f64>;

/// The histogram of structured-generation mask times.
const MASK: &str = "sluice_engine_mask_seconds";

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
        let label = |l: &str| {
            let at = series.find(&format!("{l}=\""))? + l.len() + 2;
            Some(&series[at..at + series[at..].find('"')?])
        };
        let key = if name == format!("{MASK}_bucket") {
            match label("le") {
                Some(le) => format!("{name}{{le={le}}}"),
                None => continue,
            }
        } else if !(name.ends_with("_sum") || name.ends_with("_count") || name.ends_with("_total"))
        {
            continue;
        } else if let Some(kind) = label("kind") {
            format!("{name}{{{kind}}}")
        } else {
            match ["prefill", "decode", "generated", "prompt"]
                .iter()
                .find(|p| series.contains(&format!("=\"{p}\"")))
            {
                Some(p) => format!("{name}{{{p}}}"),
                None => name.to_owned(),
            }
        };
        *snap.entry(key).or_default() += value;
    }
    Some(snap)
}

/// `after - before`, series by series.
pub fn delta(before: &Snapshot, after: &Snapshot) -> Snapshot {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// The sum of several deltas (a cell measured in several windows).
pub fn sum(deltas: &[&Snapshot]) -> Snapshot {
    let mut total = Snapshot::new();
    for d in deltas {
        for (k, v) in d.iter() {
            *total.entry(k.clone()).or_default() += v;
        }
    }
    total
}

/// The engine's side of one cell (all of it: warm-up, window and drain).
#[derive(Serialize, Clone)]
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
    /// Structured generation; `None` when the cell computed no mask.
    pub mask: Option<MaskStats>,
}

/// `sluice_engine_mask_seconds` over one cell, and the constraint counters.
#[derive(Serialize, Clone)]
pub struct MaskStats {
    /// Masks computed (one per constrained token).
    pub masks: f64,
    /// sum / count: the mean time of one mask, i.e. per constrained token, microseconds.
    pub mean_us: f64,
    /// Quantiles interpolated linearly inside the histogram's buckets (as Prometheus'
    /// `histogram_quantile`), microseconds; the buckets are coarse (10, 25, 50, 100,
    /// 250, 500 µs, 1, 2.5, 5 ms, ...).
    pub p50_us: f64,
    pub p99_us: f64,
    /// Share of masks at most 1 ms (the `le="0.001"` bucket): exact, not interpolated.
    pub share_le_1ms: f64,
    /// (bound in seconds, cumulative count) of every bucket, +Inf as infinity.
    pub buckets: Vec<(f64, f64)>,
    /// Mask time summed per decode step (all sequences; computed in parallel on rayon's
    /// pool, overlapping the step), microseconds.
    pub per_decode_step_us: f64,
    /// Sequences started under a constraint, by kind (tools, json, ban).
    pub constrained: BTreeMap<String, f64>,
    /// Generations the constraint ended (the grammar was complete).
    pub constraint_ended: f64,
}

impl MaskStats {
    /// The share of masks that took at most `seconds`, when a bucket bound is there.
    pub fn share_le(&self, seconds: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        let (_, n) = self
            .buckets
            .iter()
            .find(|(le, _)| (le - seconds).abs() <= seconds * 1e-9)?;
        (total > 0.0).then(|| n / total)
    }
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside its bucket; the
/// lower bound of the +Inf bucket when it falls there.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return lo;
            }
            let inside = n - below;
            return if inside > 0.0 {
                lo + (le - lo) * (rank - below) / inside
            } else {
                le
            };
        }
        (lo, below) = (le, n);
    }
    lo
}

fn mask_stats(before: &Snapshot, after: &Snapshot, decode_steps: f64) -> Option<MaskStats> {
    let d = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let count = d(&format!("{MASK}_count"));
    let prefix = format!("{MASK}_bucket{{le=");
    let mut buckets: Vec<(f64, f64)> = after
        .keys()
        .filter_map(|k| {
            let le = k.strip_prefix(&prefix)?.strip_suffix('}')?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, d(k)))
        })
        .collect();
    if count <= 0.0 || buckets.is_empty() {
        return None;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let sum = d(&format!("{MASK}_sum"));
    let constrained = after
        .keys()
        .filter_map(|k| {
            let kind = k
                .strip_prefix("sluice_engine_constrained_total{")?
                .strip_suffix('}')?;
            Some((kind.to_owned(), d(k)))
        })
        .collect();
    let mut stats = MaskStats {
        masks: count,
        mean_us: sum / count * 1e6,
        p50_us: quantile(&buckets, 0.50) * 1e6,
        p99_us: quantile(&buckets, 0.99) * 1e6,
        share_le_1ms: f64::NAN,
        buckets,
        per_decode_step_us: if decode_steps > 0.0 {
            sum / decode_steps * 1e6
        } else {
            f64::NAN
        },
        constrained,
        constraint_ended: d("sluice_engine_constraint_ended_total"),
    };
    stats.share_le_1ms = stats.share_le(0.001).unwrap_or(f64::NAN);
    Some(stats)
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
        mask: mask_stats(before, after, dec_n),
    })
}
