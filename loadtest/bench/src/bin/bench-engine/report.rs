//! The report of the embedded-engine benchmark (see main.rs): per-cell results, the
//! targets, and their rendering as markdown; the same structs are written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::metrics::EngineStats;

#[derive(Serialize, Default, Clone, Copy)]
pub struct Pct {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

pub fn pct(mut v: Vec<f64>) -> Pct {
    if v.is_empty() {
        return Pct {
            n: 0,
            p50_ms: f64::NAN,
            p95_ms: f64::NAN,
            max_ms: f64::NAN,
        };
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Pct {
        n: v.len(),
        p50_ms: at(50.0),
        p95_ms: at(95.0),
        max_ms: v[v.len() - 1],
    }
}

#[derive(Serialize)]
pub struct Cell {
    pub model: String,
    pub batched: bool,
    pub concurrency: usize,
    pub tokens_per_s: f64,
    /// Time to first token of requests sent inside the window.
    pub ttft: Pct,
    /// The same, only prompts without tools (their first delta is plain text).
    pub ttft_no_tools: Pct,
    /// TTFT p50 of each prompt, in PROMPTS order.
    pub ttft_p50_by_prompt_ms: Vec<f64>,
    /// Send to last byte, same requests.
    pub latency: Pct,
    /// Mean time between output tokens after the first, same requests.
    pub inter_token_ms: f64,
    /// Requests that finished inside the window.
    pub completed_in_window: usize,
    /// All requests of the cell, warm-up and drain included.
    pub requests: usize,
    pub errors: BTreeMap<&'static str, u64>,
    /// Successful requests with fewer than max_tokens completion tokens.
    pub short: usize,
    pub prompt_tokens_min: u64,
    pub prompt_tokens_max: u64,
    /// Seconds from the cell's start until the last request in flight finished.
    pub wall_s: f64,
    /// sluice CPU time during the window / window length (cores busy).
    pub sluice_cores: Option<f64>,
    /// sluice's engine metrics over the whole cell.
    pub engine: Option<EngineStats>,
}

#[derive(Serialize)]
pub struct Goal {
    pub name: &'static str,
    /// `>=` or `<=`: how `measured` must compare with `limit`.
    pub op: &'static str,
    pub measured: Option<f64>,
    pub limit: f64,
    /// The two numbers the ratio is made of.
    pub detail: String,
    pub pass: bool,
}

fn find(cells: &[Cell], batched: bool, c: usize) -> Option<&Cell> {
    cells
        .iter()
        .find(|x| x.batched == batched && x.concurrency == c)
}

/// The two targets, from the cells at concurrency 1 and 16 (not met when one is missing).
pub fn goals(cells: &[Cell], min_speedup: f64, max_ttft_ratio: f64) -> Vec<Goal> {
    let mut speedup = Goal {
        name: "tokens/s at c16, batched / max_batch_size=1",
        op: ">=",
        measured: None,
        limit: min_speedup,
        detail: "needs concurrency 16".into(),
        pass: false,
    };
    if let (Some(b), Some(u)) = (find(cells, true, 16), find(cells, false, 16)) {
        let x = b.tokens_per_s / u.tokens_per_s;
        speedup.measured = Some(x).filter(|x| x.is_finite());
        speedup.detail = format!("{:.0} / {:.0} tok/s", b.tokens_per_s, u.tokens_per_s);
        speedup.pass = x.is_finite() && x >= min_speedup;
    }
    let mut ttft = Goal {
        name: "batched TTFT p50, c16 / c1",
        op: "<=",
        measured: None,
        limit: max_ttft_ratio,
        detail: "needs concurrency 1 and 16".into(),
        pass: false,
    };
    if let (Some(b16), Some(b1)) = (find(cells, true, 16), find(cells, true, 1)) {
        let x = b16.ttft.p50_ms / b1.ttft.p50_ms;
        ttft.measured = Some(x).filter(|x| x.is_finite());
        ttft.detail = format!("{:.1} / {:.1} ms", b16.ttft.p50_ms, b1.ttft.p50_ms);
        ttft.pass = x.is_finite() && x <= max_ttft_ratio;
    }
    vec![speedup, ttft]
}

#[derive(Serialize)]
pub struct Report {
    pub title: String,
    pub prompts: usize,
    pub batched_model: String,
    pub unbatched_model: String,
    pub max_tokens: u32,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub concurrency: Vec<usize>,
    pub cells: Vec<Cell>,
    pub targets: Vec<Goal>,
    pub errors: u64,
    pub sluice_vm_hwm_kb: Option<u64>,
    pub sluice_vm_rss_end_kb: Option<u64>,
    pub pass: bool,
    pub run_seconds: f64,
}

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let (pmin, pmax) = r
        .cells
        .iter()
        .filter(|c| c.prompt_tokens_max > 0)
        .fold((u64::MAX, 0), |(a, b), c| {
            (a.min(c.prompt_tokens_min), b.max(c.prompt_tokens_max))
        });
    let _ = writeln!(
        out,
        "\nsluice embedded engine, batching on (`{}`, max_batch_size = 32) vs off (`{}`, max_batch_size = 1){}\n\
         closed loop, streaming, max_tokens {} on average (4/8 to 12/8 of it by prompt, ignore_eos), {} prompts of {}–{} tokens, \
         {} s warm-up + {} s measured per cell, loopback\n",
        r.batched_model,
        r.unbatched_model,
        if r.title.is_empty() { String::new() } else { format!(", {}", r.title) },
        r.max_tokens,
        r.prompts,
        if pmin == u64::MAX { 0 } else { pmin },
        pmax,
        r.warmup_s,
        r.duration_s
    );
    let _ = writeln!(out, "| concurrency | batched tok/s | max_batch_size=1 tok/s | speed-up | batched TTFT p50 / p95 (ms) | unbatched TTFT p50 / p95 (ms) |");
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    for &c in &r.concurrency {
        let (Some(b), Some(u)) = (find(&r.cells, true, c), find(&r.cells, false, c)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {c} | {:.0} | {:.0} | {:.2}× | {:.1} / {:.1} | {:.1} / {:.1} |",
            b.tokens_per_s,
            u.tokens_per_s,
            b.tokens_per_s / u.tokens_per_s,
            b.ttft.p50_ms,
            b.ttft.p95_ms,
            u.ttft.p50_ms,
            u.ttft.p95_ms
        );
    }
    let _ = writeln!(out, "\nPer cell (in run order):\n");
    let _ = writeln!(out, "| concurrency | model | tok/s | TTFT p50 / p95 (ms) | TTFT p50 no tools (ms) | latency p50 / p95 (ms) | ms/token | requests (in window) | errors | short | sluice cores |");
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in &r.cells {
        let errs: Vec<String> = c.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} / {:.1} | {:.1} | {:.0} / {:.0} | {:.2} | {} ({}) | {} | {} | {} |",
            c.concurrency,
            c.model,
            c.tokens_per_s,
            c.ttft.p50_ms,
            c.ttft.p95_ms,
            c.ttft_no_tools.p50_ms,
            c.latency.p50_ms,
            c.latency.p95_ms,
            c.inter_token_ms,
            c.requests,
            c.completed_in_window,
            if errs.is_empty() { "0".into() } else { errs.join(", ") },
            c.short,
            c.sluice_cores.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
        );
    }
    if r.cells.iter().any(|c| c.engine.is_some()) {
        let _ = writeln!(
            out,
            "\nsluice's engine metrics per cell (warm-up and drain included):\n"
        );
        let _ = writeln!(out, "| concurrency | model | decode steps | mean batch | decode step (ms) | decode ms / token | prefill steps | prefill step (ms) | prefill / (prefill + decode) time | queue wait (ms) |");
        let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in &r.cells {
            let Some(e) = c.engine else { continue };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.1} | {:.2} | {:.3} | {:.0} | {:.1} | {:.0}% | {:.1} |",
                c.concurrency,
                c.model,
                e.decode_steps,
                e.mean_batch,
                e.decode_step_ms,
                e.decode_step_ms / e.mean_batch,
                e.prefill_steps,
                e.prefill_step_ms,
                e.prefill_share * 100.0,
                e.queue_wait_ms
            );
        }
    }
    let _ = writeln!(out);
    for t in &r.targets {
        let _ = writeln!(
            out,
            "target: {} = {} ({}), need {} {:.2}  => {}",
            t.name,
            t.measured
                .map(|m| format!("{m:.2}"))
                .unwrap_or_else(|| "n/a".into()),
            t.detail,
            t.op,
            t.limit,
            if t.pass { "PASS" } else { "FAIL" }
        );
    }
    let mb = |kb: Option<u64>| {
        kb.map(|k| format!("{:.1} MB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    };
    let _ = writeln!(
        out,
        "errors: {}; sluice peak RSS (VmHWM) {}, VmRSS at end {}; run {:.0} s  => {}",
        r.errors,
        mb(r.sluice_vm_hwm_kb),
        mb(r.sluice_vm_rss_end_kb),
        r.run_seconds,
        if r.pass { "PASS" } else { "FAIL" }
    );
    out
}
