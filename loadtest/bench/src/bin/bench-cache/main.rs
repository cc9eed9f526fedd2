//! Load generator for the response-cache benchmark (loadtest/cache.sh): how fast sluice
//! answers from its exact response cache, and how that compares with generating.
//!
//! Every request is a non-streaming chat completion `What is N * 7?` with the calculator
//! tool, temperature 0 (so sluice caches it) and `--max-tokens`. In one run, in this order:
//!
//! 1. **Warm-up.** The hit request (N = 12) once — it is generated and fills the cache —
//!    then again until sluice answers it with `x-sluice-cache: hit` (at most 2 s). That
//!    answer (from `"choices"` on) becomes the reference every later hit must equal.
//! 2. **Ratio.** On one connection, one request at a time: `--ratio-hits` hits and
//!    `--ratio-misses` misses, the misses spread evenly among the hits, so both see the
//!    same machine. Target: miss p50 / hit p50 >= `--target-ratio`.
//! 3. **Misses.** For each `--miss-concurrency` C, C workers on their own connections send
//!    new prompts (N counts up from 100) back to back for `--miss-duration` seconds.
//! 4. **Hits.** `--conns` keep-alive connections are opened and used once (pool.rs). For
//!    each `--rates` R (in order): open loop, request i due at start + i/R whether or not
//!    earlier ones have finished (timerfd pacing); a request takes an idle connection or,
//!    if all are busy, waits for one. `--warmup` seconds at R, not measured, then
//!    `--duration` seconds measured; then the requests in flight finish. Latency runs
//!    from the generator sending the request (waiting for a connection included) to the
//!    last body byte; how late the generator sent it after its due time is reported apart
//!    (send lag). A rate passes if every response is a 200 hit with the reference answer,
//!    achieved >= 98% of R and p99 < `--target-p99-us`. Target: some R >= `--target-rps`
//!    passes.
//!
//! A response is an error if its status is not 200, its body is not a chat completion
//! (or, for hits, not the reference answer), or it takes longer than its timeout; a
//! response with the wrong `x-sluice-cache` is counted apart (not hit / not miss). The
//! generator runs on one thread with a small HTTP/1.1 client of its own (client.rs), and
//! reads its own and sluice's (`--sluice-pid`) CPU time from /proc around each phase.
//! Prints a markdown report (report.rs), writes `--json`; exit 0 targets met, 3 missed,
//! 1 error.
//!
//! Usage: bench-cache --url http://127.0.0.1:PORT/v1 [--model sluice-tiny]
//!   [--rates 5000,10000,15000,20000,25000] [--duration 5] [--warmup 1] [--miss-concurrency 1,4]
//!   [--miss-duration 4] [--max-tokens 32] [--ratio-hits 2000] [--ratio-misses 100]
//!   [--timeout-ms 5000] [--miss-timeout-s 30] [--conns 64] [--sluice-pid PID]
//!   [--json FILE] [--target-rps 15000] [--target-p99-us 2000] [--target-ratio 50]
//!   [--title TEXT]

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

mod client;
mod phases;
mod pool;
mod report;

use client::{CacheStatus, Endpoint};
use phases::{fill, hit_rate, misses, ratio, warm_up, Ctx};
use pool::Pool;
use report::{render, Report};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match Opts::parse(&args) {
        Ok(o) => run(o),
        Err(e) => {
            eprintln!("bench-cache: {e}\n(see the header of src/bin/bench-cache/main.rs)");
            2
        }
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------
// Options

pub struct Opts {
    endpoint: Endpoint,
    model: String,
    rates: Vec<f64>,
    duration: f64,
    warmup: f64,
    miss_concurrency: Vec<usize>,
    miss_duration: f64,
    max_tokens: u32,
    ratio_hits: usize,
    ratio_misses: usize,
    timeout: Duration,
    miss_timeout: Duration,
    conns: usize,
    sluice_pid: Option<u32>,
    json: Option<String>,
    target_rps: f64,
    target_p99_us: f64,
    target_ratio: f64,
    title: String,
}

fn list<T: std::str::FromStr>(a: &str, v: &str) -> Result<Vec<T>, String>
where
    T::Err: std::fmt::Display,
{
    v.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<T>().map_err(|e| format!("{a}: {e}")))
        .collect()
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut url = String::new();
        let mut o = Opts {
            endpoint: Endpoint {
                addr: ([127, 0, 0, 1], 0).into(),
                authority: String::new(),
                path: String::new(),
            },
            model: "sluice-tiny".into(),
            rates: vec![5000.0, 10000.0, 15000.0, 20000.0, 25000.0],
            duration: 5.0,
            warmup: 1.0,
            miss_concurrency: vec![1, 4],
            miss_duration: 4.0,
            max_tokens: 32,
            ratio_hits: 2000,
            ratio_misses: 100,
            timeout: Duration::from_secs(5),
            miss_timeout: Duration::from_secs(30),
            conns: 64,
            sluice_pid: None,
            json: None,
            target_rps: 15000.0,
            target_p99_us: 2000.0,
            target_ratio: 50.0,
            title: String::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().ok_or(format!("{a} needs a value"))?;
            let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{a}: {e}"));
            match a.as_str() {
                "--url" => url = v.clone(),
                "--model" => o.model = v.clone(),
                "--rates" => o.rates = list(a, v)?,
                "--duration" => o.duration = num(v)?,
                "--warmup" => o.warmup = num(v)?,
                "--miss-concurrency" => o.miss_concurrency = list(a, v)?,
                "--miss-duration" => o.miss_duration = num(v)?,
                "--max-tokens" => o.max_tokens = num(v)? as u32,
                "--ratio-hits" => o.ratio_hits = num(v)? as usize,
                "--ratio-misses" => o.ratio_misses = num(v)? as usize,
                "--timeout-ms" => o.timeout = Duration::from_secs_f64(num(v)? / 1000.0),
                "--miss-timeout-s" => o.miss_timeout = Duration::from_secs_f64(num(v)?),
                "--conns" => o.conns = num(v)? as usize,
                "--sluice-pid" => o.sluice_pid = Some(num(v)? as u32),
                "--json" => o.json = Some(v.clone()),
                "--target-rps" => o.target_rps = num(v)?,
                "--target-p99-us" => o.target_p99_us = num(v)?,
                "--target-ratio" => o.target_ratio = num(v)?,
                "--title" => o.title = v.clone(),
                _ => return Err(format!("unknown argument {a}")),
            }
        }
        let server = sluice_bench::loopback(&url)?;
        o.endpoint = Endpoint {
            addr: server.addr,
            authority: server.authority,
            path: format!("{}/chat/completions", server.prefix),
        };
        if o.rates.is_empty() || o.rates.iter().any(|&r| !(r > 0.0 && r <= 200_000.0)) {
            return Err("--rates: a list of values in (0, 200000]".into());
        }
        if o.miss_concurrency.iter().any(|&c| c == 0 || c > 64) {
            return Err("--miss-concurrency: values in 1..=64".into());
        }
        let bounded = |s: f64| s > 0.0 && s <= 60.0;
        if !(bounded(o.duration) && bounded(o.miss_duration) && o.warmup >= 0.0 && o.warmup <= 60.0)
        {
            return Err(
                "bounded runs only: 0 < --duration, --miss-duration <= 60 s, --warmup <= 60 s"
                    .into(),
            );
        }
        if o.max_tokens == 0 || o.max_tokens > 256 || o.ratio_hits == 0 || o.ratio_misses == 0 {
            return Err(
                "need 1 <= --max-tokens <= 256, --ratio-hits and --ratio-misses >= 1".into(),
            );
        }
        if o.ratio_hits > 100_000 || o.ratio_misses > 1000 || o.conns == 0 || o.conns > 1000 {
            return Err("bounded runs only: --ratio-hits <= 100000, --ratio-misses <= 1000, 1 <= --conns <= 1000".into());
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------
// The run: phases in order, targets, report

fn run(o: Opts) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-cache: tokio runtime: {e}");
            return 1;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, run_all(o)) {
        Ok(true) => 0,
        Ok(false) => 3,
        Err(e) => {
            eprintln!("bench-cache: {e}");
            1
        }
    }
}

async fn run_all(o: Opts) -> Result<bool, String> {
    let pool = Rc::new(Pool::new(o.endpoint.addr, o.conns));
    let ctx = Rc::new(Ctx {
        o,
        next_n: Cell::new(100),
        pool,
    });
    let (first, reference) = warm_up(&ctx).await?;
    let reference = Rc::new(reference);
    eprintln!(
        "[bench-cache] warm-up: the first request was a {}, then a hit",
        first.as_str()
    );
    if first != CacheStatus::Miss {
        eprintln!(
            "[bench-cache] warning: sluice did not generate the first request: it has served this \
             benchmark before, so the misses may be hits (they are counted apart); use a fresh sluice"
        );
    }

    let ratio = ratio(&ctx, &reference).await;
    eprintln!(
        "[bench-cache] ratio: hit p50 {:.1} µs, miss p50 {:.1} µs => {:.0}x",
        ratio.hits.p50_us, ratio.misses.p50_us, ratio.p50_ratio
    );
    let mut miss_phases = Vec::new();
    for &c in &ctx.o.miss_concurrency {
        let p = misses(ctx.clone(), c).await;
        eprintln!(
            "[bench-cache] misses c{c}: {} ok, {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms",
            p.ok,
            p.rps,
            p.latency.p50_us / 1000.0,
            p.latency.p99_us / 1000.0
        );
        miss_phases.push(p);
    }
    fill(&ctx, &reference).await?;
    let mut hit_phases = Vec::new();
    for &rate in &ctx.o.rates {
        let p = hit_rate(ctx.clone(), &reference, rate).await?;
        eprintln!(
            "[bench-cache] hits {rate:.0}/s: achieved {:.0}/s, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, errors {}, not hit {}, sluice {:.2} cores, loadgen {:.2} cores",
            p.achieved_rps,
            p.latency.p50_us,
            p.latency.p99_us,
            p.latency.p999_us,
            p.errors.values().sum::<u64>(),
            p.not_hit.values().sum::<u64>(),
            p.sluice_cores,
            p.loadgen_cores
        );
        hit_phases.push(p);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let o = &ctx.o;
    let max_rate = hit_phases
        .iter()
        .filter(|p| p.pass)
        .map(|p| p.offered_rps)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let pass_throughput = max_rate.is_some_and(|r| r >= o.target_rps);
    let pass_ratio = ratio.pass
        && miss_phases
            .iter()
            .all(|p| p.errors.is_empty() && p.not_miss.is_empty() && p.ok > 0);
    let report = Report {
        model: o.model.clone(),
        max_tokens: o.max_tokens,
        duration_s: o.duration,
        warmup_s: o.warmup,
        conns: o.conns,
        miss_duration_s: o.miss_duration,
        first_request: first.as_str().to_owned(),
        hit_phases,
        miss_phases,
        ratio,
        max_rate_meeting_p99: max_rate,
        sluice_vm_hwm_kb: o.sluice_pid.and_then(|p| client::status_kb(p, "VmHWM:")),
        target_rps: o.target_rps,
        target_p99_us: o.target_p99_us,
        target_ratio: o.target_ratio,
        pass_throughput,
        pass_ratio,
        pass: pass_throughput && pass_ratio,
    };
    print!("{}", render(&report, &o.title));
    if let Some(path) = &o.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(report.pass)
}
