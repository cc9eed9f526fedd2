//! Closed-loop load generator for the embeddings benchmark (loadtest/embed.sh): sluice's
//! embedded engine against a sentence-transformers server (loadtest/embed/st_server.py),
//! both serving all-MiniLM-L6-v2 on 127.0.0.1, measured side by side in one run.
//!
//! For each `--inputs` N (inputs per request) and each `--concurrency` C, one cell per
//! server, alternating which goes first: C workers, each on its own HTTP/1.1 keep-alive
//! connection (TCP_NODELAY), send `POST /v1/embeddings` back to back with N sentences
//! (taken round-robin from `--sentences`, the 100 of tests/fixtures/minilm_reference.json,
//! each worker from its own offset) and `encoding_format: "base64"`, what the openai
//! SDK sends by default. A cell is `--warmup` s of load, then a `--duration` s window; at
//! its end workers stop sending and the requests in flight finish (bounded by
//! `--timeout-s`), so the next cell starts on an idle server.
//!
//! Per cell: embeddings/s = inputs of the requests completed inside the window / window
//! length; latency p50/p99 over those requests (send to the last byte); errors = any
//! request of the cell that failed (non-200, wrong number of vectors, timeout).
//!
//! Target: at N = 1 and C = 32, sluice's embeddings/s >= `--target-ratio` x the
//! baseline's, sluice's p99 lower, and no errors anywhere. Prints a markdown report,
//! writes `--json` with every cell; exit 0 met, 3 missed, 1 error, 2 bad arguments.
//!
//! Usage: bench-embed --sluice http://127.0.0.1:P/v1 --baseline http://127.0.0.1:Q/v1
//!   --sentences tests/fixtures/minilm_reference.json [--model minilm-l6]
//!   [--inputs 1,32] [--concurrency 1,8,32] [--duration 8] [--warmup 1] [--timeout-s 60]
//!   [--target-ratio 2] [--json FILE] [--title TEXT]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice_bench::Conn;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match Opts::parse(&args) {
        Ok(o) => run(o),
        Err(e) => {
            eprintln!("bench-embed: {e}\n(see the header of src/bin/bench-embed.rs)");
            2
        }
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code);
}

#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    authority: String,
    path: String,
}

struct Opts {
    sluice: Target,
    baseline: Target,
    model: String,
    sentences: Vec<String>,
    inputs: Vec<usize>,
    concurrency: Vec<usize>,
    duration: f64,
    warmup: f64,
    timeout: Duration,
    target_ratio: f64,
    json: Option<String>,
    title: String,
}

fn target(name: &'static str, url: &str) -> Result<Target, String> {
    let server = sluice_bench::loopback(url)?;
    Ok(Target {
        name,
        addr: server.addr,
        authority: server.authority,
        path: format!("{}/embeddings", server.prefix),
    })
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let (mut sluice, mut baseline, mut sentences) = (None, None, None);
        let mut o = Opts {
            sluice: target("sluice", "http://127.0.0.1:1/v1")?,
            baseline: target("sentence-transformers", "http://127.0.0.1:1/v1")?,
            model: "minilm-l6".into(),
            sentences: Vec::new(),
            inputs: vec![1, 32],
            concurrency: vec![1, 8, 32],
            duration: 8.0,
            warmup: 1.0,
            timeout: Duration::from_secs(60),
            target_ratio: 2.0,
            json: None,
            title: String::new(),
        };
        let list = |a: &str, v: &str| {
            v.split(',')
                .map(|s| s.trim().parse::<usize>().map_err(|e| format!("{a}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().ok_or(format!("{a} needs a value"))?;
            let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{a}: {e}"));
            match a.as_str() {
                "--sluice" => sluice = Some(target("sluice", v)?),
                "--baseline" => baseline = Some(target("sentence-transformers", v)?),
                "--sentences" => sentences = Some(v.clone()),
                "--model" => o.model = v.clone(),
                "--inputs" => o.inputs = list(a, v)?,
                "--concurrency" => o.concurrency = list(a, v)?,
                "--duration" => o.duration = num(v)?,
                "--warmup" => o.warmup = num(v)?,
                "--timeout-s" => o.timeout = Duration::from_secs_f64(num(v)?),
                "--target-ratio" => o.target_ratio = num(v)?,
                "--json" => o.json = Some(v.clone()),
                "--title" => o.title = v.clone(),
                _ => return Err(format!("unknown argument {a}")),
            }
        }
        o.sluice = sluice.ok_or("--sluice URL is required")?;
        o.baseline = baseline.ok_or("--baseline URL is required")?;
        let file = sentences.ok_or("--sentences FILE is required")?;
        let fixture: Value = std::fs::read_to_string(&file)
            .map_err(|e| format!("{file}: {e}"))
            .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{file}: {e}")))?;
        o.sentences = fixture["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["text"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if o.sentences.is_empty() {
            return Err(format!("{file}: no items[].text"));
        }
        if o.inputs.iter().any(|&n| n == 0 || n > 2048) {
            return Err("--inputs: values in 1..=2048".into());
        }
        if o.concurrency.iter().any(|&c| c == 0 || c > 256) {
            return Err("--concurrency: values in 1..=256".into());
        }
        if !(o.duration > 0.0 && o.warmup >= 0.0) {
            return Err("--duration must be > 0 and --warmup >= 0".into());
        }
        Ok(o)
    }
}

async fn connect(t: &Target) -> Result<Conn, &'static str> {
    sluice_bench::connect(t.addr).await
}

/// One request: the vectors came back (`inputs` of them) or it failed.
struct Outcome {
    end: Instant,
    latency: Duration,
    inputs: usize,
    ok: bool,
}

async fn request(conn: &mut Conn, t: &Target, body: Bytes, inputs: usize) -> Result<(), String> {
    let req = sluice_bench::json_post(&t.path, &t.authority, body).map_err(|e| e.to_string())?;
    let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let data = v["data"].as_array().ok_or("no data")?;
    let complete = data.len() == inputs
        && data
            .iter()
            .all(|d| d["embedding"].as_str().is_some_and(|s| s.len() == 2048));
    if complete {
        Ok(())
    } else {
        Err(format!("expected {inputs} base64 vectors of 384 floats"))
    }
}

struct CellConfig {
    inputs: usize,
    timeout: Duration,
}

/// One worker: requests back to back until the window ends.
async fn worker(
    t: Target,
    model: String,
    sentences: Vec<String>,
    offset: usize,
    cfg: CellConfig,
    stop: Instant,
) -> (Vec<Outcome>, Option<String>) {
    let mut out = Vec::new();
    let mut conn = match connect(&t).await {
        Ok(c) => c,
        Err(e) => return (out, Some(e.to_owned())),
    };
    let mut next = offset;
    let mut first_error = None;
    while Instant::now() < stop {
        let input: Vec<&str> = (0..cfg.inputs)
            .map(|i| sentences[(next + i) % sentences.len()].as_str())
            .collect();
        next += cfg.inputs;
        let body = json!({"model": model, "input": input, "encoding_format": "base64"});
        let body = Bytes::from(body.to_string());
        let sent = Instant::now();
        let result = tokio::time::timeout(cfg.timeout, request(&mut conn, &t, body, cfg.inputs))
            .await
            .unwrap_or_else(|_| Err("timeout".into()));
        let end = Instant::now();
        let ok = result.is_ok();
        if let Err(e) = result {
            first_error.get_or_insert(e);
            // A failed connection is not reused.
            match connect(&t).await {
                Ok(c) => conn = c,
                Err(_) => break,
            }
        }
        out.push(Outcome {
            end,
            latency: end - sent,
            inputs: cfg.inputs,
            ok,
        });
    }
    (out, first_error)
}

struct Cell {
    server: &'static str,
    inputs: usize,
    concurrency: usize,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: usize,
    errors: usize,
    first_error: Option<String>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn cell(o: &Opts, t: &Target, inputs: usize, concurrency: usize) -> Cell {
    let start = Instant::now();
    let window_start = start + Duration::from_secs_f64(o.warmup);
    let window_end = window_start + Duration::from_secs_f64(o.duration);
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let cfg = CellConfig {
                inputs,
                timeout: o.timeout,
            };
            tokio::spawn(worker(
                t.clone(),
                o.model.clone(),
                o.sentences.clone(),
                w * 37,
                cfg,
                window_end,
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok((out, err)) => {
                outcomes.extend(out);
                if first_error.is_none() {
                    first_error = err;
                }
            }
            Err(e) => first_error = Some(e.to_string()),
        }
    }
    let errors = outcomes.iter().filter(|r| !r.ok).count()
        + usize::from(outcomes.is_empty() && first_error.is_some());
    let inside: Vec<&Outcome> = outcomes
        .iter()
        .filter(|r| r.ok && r.end >= window_start && r.end <= window_end)
        .collect();
    let done: usize = inside.iter().map(|r| r.inputs).sum();
    let mut lat: Vec<f64> = inside
        .iter()
        .map(|r| r.latency.as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    Cell {
        server: t.name,
        inputs,
        concurrency,
        per_s: done as f64 / o.duration,
        p50_ms: percentile(&lat, 50.0),
        p99_ms: percentile(&lat, 99.0),
        requests: inside.len(),
        errors,
        first_error,
    }
}

fn run(o: Opts) -> i32 {
    let rt = match sluice_bench::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-embed: {e}");
            return 1;
        }
    };
    let mut cells: Vec<Cell> = Vec::new();
    let mut flip = false;
    for &inputs in &o.inputs {
        for &c in &o.concurrency {
            let order = if flip {
                [&o.baseline, &o.sluice]
            } else {
                [&o.sluice, &o.baseline]
            };
            flip = !flip;
            for t in order {
                let cell = rt.block_on(cell(&o, t, inputs, c));
                eprintln!(
                    "[bench-embed] {:<22} inputs {:>2}  c {:>2}: {:>8.1} embeddings/s  p50 {:>7.1} ms  p99 {:>7.1} ms  errors {}",
                    cell.server, inputs, c, cell.per_s, cell.p50_ms, cell.p99_ms, cell.errors
                );
                if let Some(e) = &cell.first_error {
                    eprintln!("[bench-embed]   first error: {e}");
                }
                cells.push(cell);
            }
        }
    }
    report(&o, &cells)
}

fn report(o: &Opts, cells: &[Cell]) -> i32 {
    let find = |server: &str, n: usize, c: usize| {
        cells
            .iter()
            .find(|x| x.server == server && x.inputs == n && x.concurrency == c)
    };
    let mut md = String::new();
    md.push_str(&format!(
        "# Embeddings: sluice vs sentence-transformers{}\n\n",
        if o.title.is_empty() {
            String::new()
        } else {
            format!(" ({})", o.title)
        }
    ));
    md.push_str(&format!(
        "Closed loop, {} s window after {} s warm-up per cell, base64 answers. \
         Ratio = sluice / sentence-transformers.\n\n",
        o.duration, o.warmup
    ));
    md.push_str("| inputs/request | clients | sluice emb/s | ST emb/s | ratio | sluice p50 ms | ST p50 ms | sluice p99 ms | ST p99 ms | errors (sluice/ST) |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut json_cells = Vec::new();
    for &n in &o.inputs {
        for &c in &o.concurrency {
            let (Some(s), Some(b)) = (find("sluice", n, c), find("sentence-transformers", n, c))
            else {
                continue;
            };
            md.push_str(&format!(
                "| {n} | {c} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.1} | {:.1} | {}/{} |\n",
                s.per_s,
                b.per_s,
                s.per_s / b.per_s,
                s.p50_ms,
                b.p50_ms,
                s.p99_ms,
                b.p99_ms,
                s.errors,
                b.errors
            ));
        }
    }
    for x in cells {
        json_cells.push(json!({
            "server": x.server, "inputs": x.inputs, "concurrency": x.concurrency,
            "embeddings_per_s": x.per_s, "p50_ms": x.p50_ms, "p99_ms": x.p99_ms,
            "requests": x.requests, "errors": x.errors, "first_error": x.first_error,
        }));
    }
    let errors: usize = cells.iter().map(|x| x.errors).sum();
    let key = (find("sluice", 1, 32), find("sentence-transformers", 1, 32));
    let verdict = match key {
        (Some(s), Some(b)) => {
            let ratio = s.per_s / b.per_s;
            let met = ratio >= o.target_ratio && s.p99_ms < b.p99_ms && errors == 0;
            md.push_str(&format!(
                "\nTarget (1 input per request, 32 clients): sluice >= {:.1}x the embeddings/s \
                 and a lower p99, no errors: {:.2}x, p99 {:.1} vs {:.1} ms, {errors} errors: **{}**\n",
                o.target_ratio,
                ratio,
                s.p99_ms,
                b.p99_ms,
                if met { "met" } else { "missed" }
            ));
            Some(met)
        }
        _ => {
            md.push_str("\nTarget not evaluated: it needs --inputs 1 and --concurrency 32.\n");
            None
        }
    };
    print!("{md}");
    if let Some(path) = &o.json {
        let doc = json!({"title": o.title, "duration_s": o.duration, "warmup_s": o.warmup,
                         "target_ratio": o.target_ratio, "target_met": verdict, "cells": json_cells});
        if let Err(e) = std::fs::write(path, format!("{doc:#}\n")) {
            eprintln!("bench-embed: cannot write {path}: {e}");
            return 1;
        }
    }
    match verdict {
        Some(true) | None if errors == 0 => 0,
        _ => 3,
    }
}
