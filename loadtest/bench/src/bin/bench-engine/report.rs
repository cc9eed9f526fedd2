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
    /// `batching` (the batching comparison), or the structured workload `tools` / `json`.
    pub workload: &'static str,
    /// Batching cells: the batched model; structured cells: the constrained model.
    pub batched: bool,
    pub concurrency: usize,
    /// Measurement windows (structured cells: interleaved with the other model's).
    pub windows: usize,
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
    /// Mean `usage.completion_tokens` of the successful requests.
    pub mean_completion_tokens: f64,
    /// Successful requests that ended at max_tokens (`finish_reason: length`).
    pub finished_length: usize,
    /// Successful requests whose answer had tool calls.
    pub answers_with_calls: usize,
    /// Structured cells: answers that are what the workload asks for (structured.rs).
    pub valid_answers: Option<usize>,
    /// Seconds from the cell's start until the last request in flight finished.
    pub wall_s: f64,
    /// sluice CPU time during the window / window length (cores busy).
    pub sluice_cores: Option<f64>,
    /// sluice's engine metrics over the whole cell.
    pub engine: Option<EngineStats>,
}

#[derive(Serialize)]
pub struct Goal {
    pub name: String,
    /// `>=` or `<=`: how `measured` must compare with `limit`.
    pub op: &'static str,
    pub measured: Option<f64>,
    pub limit: f64,
    /// The two numbers the ratio is made of.
    pub detail: String,
    pub pass: bool,
}

/// A batching cell.
fn find(cells: &[Cell], batched: bool, c: usize) -> Option<&Cell> {
    find_in(cells, "batching", batched, c)
}

/// A cell of `workload`; `batched` = the batched (or the constrained) model.
fn find_in<'a>(cells: &'a [Cell], workload: &str, batched: bool, c: usize) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|x| x.workload == workload && x.batched == batched && x.concurrency == c)
}

/// The two targets, from the cells at concurrency 1 and 16 (not met when one is missing).
pub fn goals(cells: &[Cell], min_speedup: f64, max_ttft_ratio: f64) -> Vec<Goal> {
    let mut speedup = Goal {
        name: "tokens/s at c16, batched / max_batch_size=1".into(),
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
        name: "batched TTFT p50, c16 / c1".into(),
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

/// The structured-generation targets, per workload: constrained tokens/s at c16 >=
/// `min_ratio` x unconstrained; mask p99 at c32 < `max_mask_ms` (decided by the share of
/// masks in the buckets up to that bound when one is there, else by the interpolated p99).
pub fn structured_goals(cells: &[Cell], min_ratio: f64, max_mask_ms: f64) -> Vec<Goal> {
    let mut goals = Vec::new();
    for kind in crate::structured::KINDS {
        let mut ratio = Goal {
            name: format!("{kind}: tokens/s at c16, constrained / unconstrained"),
            op: ">=",
            measured: None,
            limit: min_ratio,
            detail: "needs structured concurrency 16".into(),
            pass: false,
        };
        if let (Some(on), Some(off)) = (
            find_in(cells, kind, true, 16),
            find_in(cells, kind, false, 16),
        ) {
            let x = on.tokens_per_s / off.tokens_per_s;
            ratio.measured = Some(x).filter(|x| x.is_finite());
            ratio.detail = format!("{:.0} / {:.0} tok/s", on.tokens_per_s, off.tokens_per_s);
            ratio.pass = x.is_finite() && x >= min_ratio;
        }
        let mut mask = Goal {
            name: format!("{kind}: mask time p99 at c32, ms"),
            op: "<",
            measured: None,
            limit: max_mask_ms,
            detail: "needs structured concurrency 32 and the mask histogram".into(),
            pass: false,
        };
        let stats = find_in(cells, kind, true, 32).and_then(|c| {
            Some((
                c.engine.as_ref()?.mask.as_ref()?,
                c.engine.as_ref()?.mean_batch,
            ))
        });
        if let Some((m, batch)) = stats {
            let p99_ms = m.p99_us / 1e3;
            mask.measured = Some(p99_ms).filter(|x| x.is_finite());
            let share = m.share_le(max_mask_ms / 1e3);
            mask.detail = format!(
                "interpolated; {} of {:.0} masks <= {max_mask_ms} ms, mean batch {batch:.1}",
                share.map_or("n/a".into(), |s| format!("{:.2}%", s * 100.0)),
                m.masks
            );
            mask.pass = match share {
                Some(s) => s >= 0.99,
                None => p99_ms < max_mask_ms,
            };
        } else if find_in(cells, kind, true, 32).is_some_and(|c| c.engine.is_some()) {
            // The cell ran, and no full mask was computed: with check-first sampling every
            // sampled token passed the grammar's check (whose cost is in the decode step).
            mask.measured = Some(0.0);
            mask.detail = "no full mask needed: every sampled token passed the check".into();
            mask.pass = true;
        }
        goals.push(ratio);
        goals.push(mask);
    }
    goals
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
    /// The structured-generation models (constraint on / off) and their concurrencies.
    pub structured_model: Option<String>,
    pub free_model: Option<String>,
    pub structured_concurrency: Option<Vec<usize>>,
    pub structured_rounds: usize,
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
        .filter(|c| c.workload == "batching" && c.prompt_tokens_max > 0)
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
    let _ = writeln!(out, "| concurrency | workload | model | tok/s | TTFT p50 / p95 (ms) | TTFT p50 no tools (ms) | latency p50 / p95 (ms) | ms/token | requests (in window) | errors | short | sluice cores |");
    let _ = writeln!(
        out,
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in &r.cells {
        let errs: Vec<String> = c.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.1} / {:.1} | {:.1} | {:.0} / {:.0} | {:.2} | {} ({}) | {} | {} | {} |",
            c.concurrency,
            c.workload,
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
            if c.workload == "batching" { c.short.to_string() } else { "-".into() },
            c.sluice_cores.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
        );
    }
    if r.cells.iter().any(|c| c.engine.is_some()) {
        let _ = writeln!(
            out,
            "\nsluice's engine metrics per cell (warm-up and drain included):\n"
        );
        let _ = writeln!(out, "| concurrency | workload | model | decode steps | mean batch | decode step (ms) | decode ms / token | prefill steps | prefill step (ms) | prefill / (prefill + decode) time | queue wait (ms) |");
        let _ = writeln!(
            out,
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &r.cells {
            let Some(e) = &c.engine else { continue };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.1} | {:.2} | {:.3} | {:.0} | {:.1} | {:.0}% | {:.1} |",
                c.concurrency,
                c.workload,
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
    if let (Some(on), Some(off), Some(conc)) = (
        &r.structured_model,
        &r.free_model,
        &r.structured_concurrency,
    ) {
        render_structured(&mut out, r, on, off, conc);
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

/// The structured-generation comparison and the mask times.
fn render_structured(out: &mut String, r: &Report, on: &str, off: &str, conc: &[usize]) {
    let _ = writeln!(
        out,
        "\nStructured generation: `{on}` (constraint on) vs `{off}` (`structured = false`), the same \
         backend and tier; realistic answers (no ignore_eos); tools: 9 prompts with the 3 demo tools, \
         tool_choice auto, max_tokens 96; json: 6 prompts, response_format json_schema for `{on}` \
         only, max_tokens 192; each pair of cells measured in {} interleaved windows per model \
         ({:.1} s each, after {} s of warm-up)\n",
        r.structured_rounds,
        r.duration_s / r.structured_rounds as f64,
        r.warmup_s
    );
    let _ = writeln!(out, "| concurrency | workload | constrained tok/s | unconstrained tok/s | ratio | tokens / answer (on / off) | valid answers (on / off) | with tool calls (on / off) | cut at max_tokens (on / off) | decode ms / token (on / off) | mean batch (on / off) |");
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let both = |c: usize, kind: &str| {
        Some((
            find_in(&r.cells, kind, true, c)?,
            find_in(&r.cells, kind, false, c)?,
        ))
    };
    let ok = |c: &Cell| c.requests - c.errors.values().sum::<u64>() as usize;
    let per_token = |c: &Cell| {
        c.engine
            .as_ref()
            .map_or(f64::NAN, |e| e.decode_step_ms / e.mean_batch)
    };
    let batch = |c: &Cell| c.engine.as_ref().map_or(f64::NAN, |e| e.mean_batch);
    for &c in conc {
        for kind in crate::structured::KINDS {
            let Some((a, b)) = both(c, kind) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {c} | {kind} | {:.0} | {:.0} | {:.2}× | {:.1} / {:.1} | {}/{} / {}/{} | {} / {} | {} / {} | {:.3} / {:.3} | {:.1} / {:.1} |",
                a.tokens_per_s,
                b.tokens_per_s,
                a.tokens_per_s / b.tokens_per_s,
                a.mean_completion_tokens,
                b.mean_completion_tokens,
                a.valid_answers.unwrap_or(0),
                ok(a),
                b.valid_answers.unwrap_or(0),
                ok(b),
                a.answers_with_calls,
                b.answers_with_calls,
                a.finished_length,
                b.finished_length,
                per_token(a),
                per_token(b),
                batch(a),
                batch(b)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nConstraint masks (`sluice_engine_mask_seconds`, one observation per mask = per constrained \
         token; quantiles interpolated in the buckets; whole cells):\n"
    );
    let _ = writeln!(out, "| concurrency | workload | masks | mean per token (µs) | p50 / p99 (µs) | masks ≤ 1 ms | mask time per decode step (µs) | decode step (ms) | constrained sequences | ended by the grammar |");
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|");
    for &c in conc {
        for kind in crate::structured::KINDS {
            let Some(cell) = find_in(&r.cells, kind, true, c) else {
                continue;
            };
            let Some(e) = &cell.engine else { continue };
            let Some(m) = &e.mask else {
                let _ = writeln!(
                    out,
                    "| {c} | {kind} | 0 | - | - | - | - | {:.2} | - | - |",
                    e.decode_step_ms
                );
                continue;
            };
            let kinds: Vec<String> = m
                .constrained
                .iter()
                .filter(|(_, n)| **n > 0.0)
                .map(|(k, n)| format!("{k} {n:.0}"))
                .collect();
            let _ = writeln!(
                out,
                "| {c} | {kind} | {:.0} | {:.1} | {:.1} / {:.1} | {:.2}% | {:.1} | {:.2} | {} | {:.0} |",
                m.masks,
                m.mean_us,
                m.p50_us,
                m.p99_us,
                m.share_le_1ms * 100.0,
                m.per_decode_step_us,
                e.decode_step_ms,
                kinds.join(", "),
                m.constraint_ended
            );
        }
    }
}
