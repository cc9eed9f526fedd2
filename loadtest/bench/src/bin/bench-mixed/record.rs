//! bench-mixed's records (see main.rs): one per request of the schedule, the run's summary,
//! the `--out` document that `compare` reads back, and the figures' formatting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub struct Call {
    pub name: String,
    pub arguments: String,
}

#[derive(Serialize, Deserialize, Clone, Default)]
pub struct Rec {
    pub seq: usize,
    pub id: String,
    pub repeat: bool,
    /// HTTP status; 0 when there was no response (transport error, timeout, not sent).
    pub status: u16,
    /// When it was sent, after the run's start.
    pub sent_ms: f64,
    pub latency_ms: f64,
    pub completion_tokens: u64,
    pub tier: String,
    pub reason: String,
    pub complexity: String,
    pub cache: String,
    pub model: String,
    pub content: String,
    pub tool_calls: Vec<Call>,
    pub finish_reason: String,
    pub error: Option<String>,
}

impl Rec {
    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_none()
    }
    pub fn answer(&self) -> (&str, &[Call]) {
        (&self.content, &self.tool_calls)
    }
}

#[derive(Serialize, Deserialize, Default)]
pub struct Summary {
    pub ok: usize,
    pub errors: usize,
    pub not_sent: usize,
    pub req_per_s: f64,
    pub tokens_per_s: f64,
    pub generated_tokens_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub tiers: BTreeMap<String, usize>,
    pub reasons: BTreeMap<String, usize>,
    pub cache: BTreeMap<String, usize>,
}

#[derive(Serialize, Deserialize)]
pub struct RunDoc {
    pub label: String,
    pub title: String,
    pub model: String,
    pub data: String,
    pub concurrency: usize,
    pub repeat_share: f64,
    pub zipf: f64,
    pub seed: u64,
    /// First occurrences: `shuffled` or `file` order.
    #[serde(default)]
    pub order: String,
    /// FNV-1a of the schedule's ids: equal for runs that sent the same sequence.
    pub schedule_hash: String,
    /// The data file's checks by prompt id (`{"kind", "answers", "labels"}`).
    #[serde(default)]
    pub checks: BTreeMap<String, serde_json::Value>,
    pub wall_s: f64,
    pub complete: bool,
    pub summary: Summary,
    pub records: Vec<Rec>,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub fn summarize(records: &[Rec], wall_s: f64) -> Summary {
    let mut s = Summary::default();
    let mut lat = Vec::new();
    let (mut tokens, mut generated) = (0u64, 0u64);
    for r in records {
        if r.ok() {
            s.ok += 1;
            lat.push(r.latency_ms);
            tokens += r.completion_tokens;
            if r.cache != "hit" {
                generated += r.completion_tokens;
            }
            *s.tiers.entry(r.tier.clone()).or_default() += 1;
            *s.reasons.entry(r.reason.clone()).or_default() += 1;
            *s.cache.entry(r.cache.clone()).or_default() += 1;
        } else if r.error.as_deref() == Some(NOT_SENT) {
            s.not_sent += 1;
        } else {
            s.errors += 1;
        }
    }
    lat.sort_by(f64::total_cmp);
    let wall = wall_s.max(1e-9);
    s.req_per_s = s.ok as f64 / wall;
    s.tokens_per_s = tokens as f64 / wall;
    s.generated_tokens_per_s = generated as f64 / wall;
    s.p50_ms = percentile(&lat, 50.0);
    s.p95_ms = percentile(&lat, 95.0);
    s
}

pub const NOT_SENT: &str = "not sent (--max-seconds)";

pub fn load_doc(path: &str) -> Result<RunDoc, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

pub fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / b as f64)
    }
}

pub fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// "int4 40% · int8 35% · fp32 25%": in `order` first, the rest by name.
pub fn shares(counts: &BTreeMap<String, usize>, total: usize, order: &[String]) -> String {
    let mut keys: Vec<&String> = order.iter().filter(|k| counts.contains_key(*k)).collect();
    keys.extend(counts.keys().filter(|k| !order.contains(k)));
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{k} {:.0}%",
                100.0 * counts[*k] as f64 / total.max(1) as f64
            )
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" · ")
    }
}
