//! The report of the response-cache benchmark (see main.rs): latency distributions, one
//! struct per phase, the targets, and their rendering as markdown; the same structs are
//! written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// A latency distribution in microseconds.
#[derive(Serialize, Clone, Default)]
pub struct Dist {
    pub n: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// From nanosecond samples (sorted in place).
pub fn dist(v: &mut [u64]) -> Dist {
    if v.is_empty() {
        let nan = f64::NAN;
        return Dist {
            n: 0,
            mean_us: nan,
            p50_us: nan,
            p90_us: nan,
            p99_us: nan,
            p999_us: nan,
            max_us: nan,
        };
    }
    v.sort_unstable();
    let at = |p: f64| {
        let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[i.clamp(1, v.len()) - 1] as f64 / 1000.0
    };
    Dist {
        n: v.len(),
        mean_us: v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0,
        p50_us: at(50.0),
        p90_us: at(90.0),
        p99_us: at(99.0),
        p999_us: at(99.9),
        max_us: v[v.len() - 1] as f64 / 1000.0,
    }
}

/// One fixed-rate phase of identical requests (the hit workload).
#[derive(Serialize)]
pub struct HitPhase {
    pub offered_rps: f64,
    pub planned: u64,
    pub ok: usize,
    /// Successful responses / (first send to last response).
    pub achieved_rps: f64,
    /// From the generator sending it (before waiting for a pool connection, if all were
    /// busy) to the last body byte.
    pub latency: Dist,
    /// How late the generator sent each request after its due time.
    pub dispatch_lag: Dist,
    pub errors: BTreeMap<String, u64>,
    /// Successful responses whose `x-sluice-cache` was not `hit`, by value.
    pub not_hit: BTreeMap<String, u64>,
    pub sluice_cores: f64,
    pub sluice_cpu_us_per_req: f64,
    pub loadgen_cores: f64,
    pub loadgen_cpu_us_per_req: f64,
    /// sluice's context switches (all threads) per request.
    pub sluice_ctx_switches_per_req: f64,
    /// Connections opened during the phase (replacing closed ones).
    pub reconnects: usize,
    /// Requests that waited for a free pool connection.
    pub queued: u64,
    pub pass: bool,
}

/// A closed loop of new prompts (the miss workload).
#[derive(Serialize)]
pub struct MissPhase {
    pub concurrency: usize,
    pub ok: usize,
    pub rps: f64,
    pub latency: Dist,
    pub errors: BTreeMap<String, u64>,
    /// Successful responses whose `x-sluice-cache` was not `miss`, by value.
    pub not_miss: BTreeMap<String, u64>,
    pub completion_tokens_mean: f64,
    pub sluice_cores: f64,
}

/// Hits and misses one at a time on one connection, interleaved.
#[derive(Serialize)]
pub struct Ratio {
    pub hits: Dist,
    pub misses: Dist,
    pub miss_completion_tokens_mean: f64,
    pub errors: BTreeMap<String, u64>,
    pub wrong_status: u64,
    /// miss p50 / hit p50.
    pub p50_ratio: f64,
    pub pass: bool,
}

#[derive(Serialize)]
pub struct Report {
    pub model: String,
    pub max_tokens: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub conns: usize,
    pub miss_duration_s: f64,
    /// `x-sluice-cache` of the very first request (the one that fills the cache).
    pub first_request: String,
    pub hit_phases: Vec<HitPhase>,
    pub miss_phases: Vec<MissPhase>,
    pub ratio: Ratio,
    /// Highest offered rate that met every per-rate condition (see HitPhase::pass).
    pub max_rate_meeting_p99: Option<f64>,
    pub sluice_vm_hwm_kb: Option<u64>,
    pub target_rps: f64,
    pub target_p99_us: f64,
    pub target_ratio: f64,
    pub pass_throughput: bool,
    pub pass_ratio: bool,
    pub pass: bool,
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

pub fn render(r: &Report, title: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nsluice response cache benchmark: model `{}`, `What is N * 7?` with the calculator tool, temperature 0, max_tokens {}{}\n",
        r.model,
        r.max_tokens,
        if title.is_empty() { String::new() } else { format!(" ({title})") }
    );
    let _ = writeln!(
        o,
        "**Hits**: one identical request, open loop at fixed rates over {} keep-alive connections, {} s measured per rate after {} s at that rate; the first request was a {}.\n",
        r.conns, r.duration_s, r.warmup_s, r.first_request
    );
    let _ = writeln!(
        o,
        "| offered req/s | achieved req/s | ok | errors | not hit | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | send lag p99 µs | sluice cores | sluice CPU µs/req | sluice ctx sw/req | loadgen cores | queued | p99 < {:.0} µs |",
        r.target_p99_us
    );
    let _ = writeln!(
        o,
        "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for p in &r.hit_phases {
        let _ = writeln!(
            o,
            "| {:.0} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {} | {} |",
            p.offered_rps,
            p.achieved_rps,
            p.ok,
            counts(&p.errors),
            counts(&p.not_hit),
            p.latency.p50_us,
            p.latency.p90_us,
            p.latency.p99_us,
            p.latency.p999_us,
            p.latency.max_us,
            p.dispatch_lag.p99_us,
            p.sluice_cores,
            p.sluice_cpu_us_per_req,
            p.sluice_ctx_switches_per_req,
            p.loadgen_cores,
            p.queued,
            if p.pass { "yes" } else { "no" }
        );
    }
    let _ = writeln!(
        o,
        "\n**Misses**: a new prompt every request (N counts up), closed loop, {} s per concurrency; each answer is generated by the embedded model.\n",
        r.miss_duration_s
    );
    let _ = writeln!(
        o,
        "| concurrency | req/s | ok | errors | not miss | p50 ms | p90 ms | p99 ms | max ms | tokens/answer | sluice cores |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|");
    for p in &r.miss_phases {
        let _ = writeln!(
            o,
            "| {} | {:.1} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} |",
            p.concurrency,
            p.rps,
            p.ok,
            counts(&p.errors),
            counts(&p.not_miss),
            p.latency.p50_us / 1000.0,
            p.latency.p90_us / 1000.0,
            p.latency.p99_us / 1000.0,
            p.latency.max_us / 1000.0,
            p.completion_tokens_mean,
            p.sluice_cores
        );
    }
    let q = &r.ratio;
    let _ = writeln!(
        o,
        "\n**Hit vs miss at concurrency 1**: one request at a time on one connection, {} hits and {} misses interleaved.\n",
        q.hits.n, q.misses.n
    );
    let _ = writeln!(
        o,
        "| request | n | p50 µs | p90 µs | p99 µs | mean µs | max µs |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, d) in [("hit", &q.hits), ("miss", &q.misses)] {
        let _ = writeln!(
            o,
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            d.n, d.p50_us, d.p90_us, d.p99_us, d.mean_us, d.max_us
        );
    }
    let _ = writeln!(
        o,
        "\nmisses generated {:.1} tokens on average; errors {}, responses with the wrong x-sluice-cache {}",
        q.miss_completion_tokens_mean,
        counts(&q.errors),
        q.wrong_status
    );
    let mb = r
        .sluice_vm_hwm_kb
        .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into());
    let _ = writeln!(o, "sluice peak RSS (VmHWM): {mb}\n");
    let best = r
        .max_rate_meeting_p99
        .map(|v| format!("{v:.0} req/s"))
        .unwrap_or_else(|| "none of the rates".into());
    let _ = writeln!(
        o,
        "target: hits >= {:.0} req/s with p99 < {:.0} µs (every response a hit, no errors, achieved >= 98% of offered): highest rate meeting it {best}  => {}",
        r.target_rps,
        r.target_p99_us,
        verdict(r.pass_throughput)
    );
    let _ = writeln!(
        o,
        "target: miss p50 / hit p50 at concurrency 1 >= {:.0}: {:.0} ({:.1} µs / {:.1} µs)  => {}",
        r.target_ratio,
        q.p50_ratio,
        q.misses.p50_us,
        q.hits.p50_us,
        verdict(r.pass_ratio)
    );
    o
}
