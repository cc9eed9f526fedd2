//! Load generator of the agent benchmark (loadtest/agent.sh): does plain chat traffic
//! keep its latency while many server-side agent runs share the engine?
//!
//! Phases, one after another against one sluice (config/sluice.toml):
//!   A        `--plain-requests` plain chat requests to `--plain-model` (a short greeting,
//!            `max_tokens` 24, temperature 0.7, `cache-control: no-store`, non-streaming)
//!            from `--plain-clients` closed-loop clients (or, with `--plain-rate R`, sent
//!            open-loop at R requests/s, each on its own connection), nothing else running;
//!   B<n>     for each n of `--agent-clients` (e.g. 64,8): n closed-loop agent clients
//!            loop runs of `--agent-model` (the held-out tasks of `--tasks`, calculator /
//!            SQL / time questions in file order, temperature 0, `cache-control:
//!            no-store`, `x-sluice-trace: 1`), and once `--warmup` s have passed the same
//!            plain traffic as A is measured beside them; then the agents stop sending and
//!            their runs in flight finish;
//!   A2       A again, to show drift on the shared machine.
//! Per phase: plain p50/p99 latency (full response); during B also the agent runs that
//! finished inside the plain window: runs/s, p50/p99 run latency, mean tool steps per run
//! (from `sluice_steps`), and the engine's mean batch size over the window: the delta of
//! `sluice_engine_batch_size_sum` / `_count` from /metrics (all backends and tiers).
//! Every client has its own keep-alive HTTP/1.1 connection (TCP_NODELAY). Errors (non-200,
//! transport, a request slower than `--timeout-s`) are counted, never retried.
//!
//! Reports the plain p99 ratio B/A (target: <= `--target-p99-ratio`, for the first B
//! phase) and B's mean batch size (> 1), also of the agents' own engine alone
//! (`--agent-backend`, default `agents`: the backend label of sluice-agent's engine). Prints markdown, writes `--json`; exit 0 both
//! met, 3 missed, 1 error, 2 usage.
//!
//! Usage: bench-agent --url http://127.0.0.1:PORT/v1 --tasks FILE [--plain-model sluice-tiny]
//!   [--agent-model sluice-agent] [--plain-clients 4] [--plain-requests 200] [--plain-rate 0]
//!   [--agent-backend agents]
//!   [--agent-clients 64,8] [--warmup 3] [--timeout-s 120] [--max-seconds 600]
//!   [--target-p99-ratio 1.1] [--json FILE]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::{json, Value};
use sluice_bench::{Conn, Loopback};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match Opts::parse(&args) {
        Ok(o) => run(o),
        Err(e) => {
            eprintln!("bench-agent: {e}\n(see the header of src/bin/bench-agent/main.rs)");
            2
        }
    };
    std::process::exit(code);
}

struct Opts {
    server: Loopback,
    tasks: Vec<Value>,
    plain_model: String,
    agent_model: String,
    plain_clients: usize,
    plain_requests: usize,
    /// Open loop: plain requests sent at this fixed rate (req/s); 0 = closed loop.
    plain_rate: f64,
    /// The backend label of the agents' engine (its batch size is reported apart).
    agent_backend: String,
    agent_clients: Vec<usize>,
    warmup: f64,
    timeout: Duration,
    max_seconds: f64,
    target_p99_ratio: f64,
    json: Option<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let (mut url, mut tasks) = (String::new(), String::new());
        let mut o = Opts {
            server: sluice_bench::loopback("http://127.0.0.1:1/v1")?,
            tasks: Vec::new(),
            plain_model: "sluice-tiny".into(),
            agent_model: "sluice-agent".into(),
            plain_clients: 4,
            plain_requests: 200,
            plain_rate: 0.0,
            agent_backend: "agents".into(),
            agent_clients: vec![64, 8],
            warmup: 3.0,
            timeout: Duration::from_secs(120),
            max_seconds: 600.0,
            target_p99_ratio: 1.1,
            json: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().ok_or(format!("{a} needs a value"))?;
            let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{a}: {e}"));
            match a.as_str() {
                "--url" => url = v.clone(),
                "--tasks" => tasks = v.clone(),
                "--plain-model" => o.plain_model = v.clone(),
                "--agent-model" => o.agent_model = v.clone(),
                "--plain-clients" => o.plain_clients = num(v)? as usize,
                "--plain-requests" => o.plain_requests = num(v)? as usize,
                "--plain-rate" => o.plain_rate = num(v)?,
                "--agent-backend" => o.agent_backend = v.clone(),
                "--agent-clients" => {
                    o.agent_clients = v
                        .split(',')
                        .map(|s| s.trim().parse::<usize>().map_err(|e| format!("{a}: {e}")))
                        .collect::<Result<_, _>>()?
                }
                "--warmup" => o.warmup = num(v)?,
                "--timeout-s" => o.timeout = Duration::from_secs_f64(num(v)?),
                "--max-seconds" => o.max_seconds = num(v)?,
                "--target-p99-ratio" => o.target_p99_ratio = num(v)?,
                "--json" => o.json = Some(v.clone()),
                _ => return Err(format!("unknown argument {a}")),
            }
        }
        o.server = sluice_bench::loopback(&url)?;
        let text = std::fs::read_to_string(&tasks).map_err(|e| format!("--tasks {tasks}: {e}"))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let task: Value = serde_json::from_str(line).map_err(|e| format!("{tasks}: {e}"))?;
            o.tasks.push(task["messages"].clone());
        }
        if o.tasks.is_empty() {
            return Err("--tasks: no tasks".into());
        }
        if !(1..=64).contains(&o.plain_clients) || !(1..=10_000).contains(&o.plain_requests) {
            return Err(
                "bounded runs only: --plain-clients 1..=64, --plain-requests 1..=10000".into(),
            );
        }
        if !(0.0..=1000.0).contains(&o.plain_rate) {
            return Err("--plain-rate: 0 (closed loop) ..= 1000 req/s".into());
        }
        if o.agent_clients.is_empty() || o.agent_clients.iter().any(|&c| c == 0 || c > 256) {
            return Err("--agent-clients: a list of values in 1..=256".into());
        }
        if !((0.0..=60.0).contains(&o.warmup) && o.max_seconds > 0.0 && o.max_seconds <= 3600.0) {
            return Err("--warmup 0..=60 s, --max-seconds 0..=3600 s".into());
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------
// Requests

struct Client {
    conn: Option<Conn>,
    server: Arc<Target>,
}

struct Target {
    addr: std::net::SocketAddr,
    authority: String,
    path: String,
    timeout: Duration,
}

impl Client {
    /// One POST; (latency, parsed body) or the failed phase. Reconnects after a failure.
    async fn post(&mut self, body: &Bytes, trace: bool) -> Result<(f64, Value), &'static str> {
        let t = self.server.clone();
        let began = Instant::now();
        let once = async {
            if self.conn.is_none() {
                self.conn = Some(sluice_bench::connect(t.addr).await?);
            }
            let mut req = sluice_bench::json_post(&t.path, &t.authority, body.clone())
                .map_err(|_| "request")?;
            let h = req.headers_mut();
            h.insert("cache-control", http::HeaderValue::from_static("no-store"));
            if trace {
                h.insert("x-sluice-trace", http::HeaderValue::from_static("1"));
            }
            let conn = self.conn.as_mut().ok_or("connect")?;
            let resp = conn.send_request(req).await.map_err(|_| "send")?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|_| "body")?
                .to_bytes();
            if !status.is_success() {
                return Err(if status.as_u16() == 503 || status.as_u16() == 429 {
                    "overloaded"
                } else {
                    "status"
                });
            }
            serde_json::from_slice::<Value>(&bytes).map_err(|_| "json")
        };
        match tokio::time::timeout(t.timeout, once).await {
            Ok(Ok(v)) => Ok((began.elapsed().as_secs_f64(), v)),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err("timeout")
            }
        }
    }
}

fn plain_body(model: &str) -> Bytes {
    Bytes::from(
        json!({"model": model, "messages": [{"role": "user", "content": "Hello! How are you?"}],
               "max_tokens": 24, "temperature": 0.7})
        .to_string(),
    )
}

fn agent_body(model: &str, messages: &Value) -> Bytes {
    Bytes::from(
        json!({"model": model, "messages": messages, "temperature": 0, "max_tokens": 96})
            .to_string(),
    )
}

// ---------------------------------------------------------------------------------------
// Figures

#[derive(Serialize, Clone, Copy, Default)]
struct Pct {
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// Nearest-rank percentiles of latencies in seconds.
fn pct(mut v: Vec<f64>) -> Pct {
    if v.is_empty() {
        return Pct {
            n: 0,
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
        };
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] * 1e3;
    Pct {
        n: v.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

#[derive(Serialize)]
struct Phase {
    name: String,
    agent_clients: usize,
    plain: Pct,
    plain_errors: usize,
    plain_window_s: f64,
    agent_runs: Pct,
    agent_runs_per_s: f64,
    agent_mean_steps: f64,
    agent_errors: usize,
    mean_batch_size: f64,
    /// Mean batch of the agents' own engine (`--agent-backend`), NaN if it ran nothing.
    agent_engine_batch: f64,
}

/// `sluice_engine_batch_size` (sum, count) over all its label sets, and over those of
/// backend `backend` alone.
async fn batch_size(t: &Target, backend: &str) -> Option<((f64, f64), (f64, f64))> {
    let mut conn = sluice_bench::connect(t.addr).await.ok()?;
    let req = http::Request::get("/metrics")
        .header(http::header::HOST, t.authority.as_str())
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = conn.send_request(req).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let (mut sum, mut count) = (0.0, 0.0);
    let (mut own_sum, mut own_count) = (0.0, 0.0);
    let label = format!("backend=\"{backend}\"");
    for line in String::from_utf8_lossy(&body).lines() {
        let value = || {
            line.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let own = line.contains(&label);
        if line.starts_with("sluice_engine_batch_size_sum") {
            sum += value();
            if own {
                own_sum += value();
            }
        } else if line.starts_with("sluice_engine_batch_size_count") {
            count += value();
            if own {
                own_count += value();
            }
        }
    }
    Some(((sum, count), (own_sum, own_count)))
}

/// Mean batch between two (sum, count) readings.
fn mean_between(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> f64 {
    match (before, after) {
        (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => (s1 - s0) / (c1 - c0),
        _ => f64::NAN,
    }
}

// ---------------------------------------------------------------------------------------
// Phases

/// The plain traffic: `requests` spread over `clients` closed-loop clients, or sent at
/// `plain_rate` per second (open loop, each on its own connection, latency from the
/// scheduled send time).
async fn plain_phase(o: &Opts, t: &Arc<Target>) -> (Vec<f64>, usize, f64) {
    let body = plain_body(&o.plain_model);
    let began = Instant::now();
    if o.plain_rate > 0.0 {
        let mut handles = Vec::with_capacity(o.plain_requests);
        for i in 0..o.plain_requests {
            let at = began + Duration::from_secs_f64(i as f64 / o.plain_rate);
            tokio::time::sleep_until(at.into()).await;
            let (body, t) = (body.clone(), t.clone());
            handles.push(tokio::spawn(async move {
                let mut c = Client {
                    conn: None,
                    server: t,
                };
                c.post(&body, false)
                    .await
                    .map(|_| at.elapsed().as_secs_f64())
            }));
        }
        let (mut lat, mut errors) = (Vec::new(), 0);
        for h in handles {
            match h.await {
                Ok(Ok(seconds)) => lat.push(seconds),
                _ => errors += 1,
            }
        }
        return (lat, errors, began.elapsed().as_secs_f64());
    }
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..o.plain_clients {
        let (body, next, t, total) = (body.clone(), next.clone(), t.clone(), o.plain_requests);
        handles.push(tokio::spawn(async move {
            let mut c = Client {
                conn: None,
                server: t,
            };
            let (mut lat, mut errors) = (Vec::new(), 0);
            while next.fetch_add(1, Ordering::Relaxed) < total {
                match c.post(&body, false).await {
                    Ok((s, _)) => lat.push(s),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for h in handles {
        if let Ok((l, e)) = h.await {
            lat.extend(l);
            errors += e;
        }
    }
    (lat, errors, began.elapsed().as_secs_f64())
}

/// One agent run's record: when it finished, how long it took, its steps; or an error.
type Record = (Instant, Result<(f64, usize), &'static str>);

async fn agent_client(
    o_model: String,
    tasks: Arc<Vec<Value>>,
    start: usize,
    stride: usize,
    t: Arc<Target>,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Record>>>,
) {
    let mut c = Client {
        conn: None,
        server: t,
    };
    let mut i = start;
    while !stop.load(Ordering::Relaxed) {
        let body = agent_body(&o_model, &tasks[i % tasks.len()]);
        i += stride;
        let r = c
            .post(&body, true)
            .await
            .map(|(s, v)| (s, v["sluice_steps"].as_array().map_or(0, |a| a.len())));
        if let Ok(mut g) = out.lock() {
            g.push((Instant::now(), r));
        }
    }
}

async fn mixed_phase(o: &Opts, t: &Arc<Target>, agents: usize) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let tasks = Arc::new(o.tasks.clone());
    let handles: Vec<_> = (0..agents)
        .map(|k| {
            tokio::spawn(agent_client(
                o.agent_model.clone(),
                tasks.clone(),
                k,
                agents,
                t.clone(),
                stop.clone(),
                records.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let before = batch_size(t, &o.agent_backend).await;
    let from = Instant::now();
    let (lat, plain_errors, window) = plain_phase(o, t).await;
    let until = Instant::now();
    let after = batch_size(t, &o.agent_backend).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.await; // each finishes its run in flight (bounded by --timeout-s)
    }
    let recs = records.lock().map(|g| g.clone()).unwrap_or_default();
    let inside: Vec<_> = recs
        .iter()
        .filter(|(at, _)| *at >= from && *at <= until)
        .collect();
    let runs: Vec<f64> = inside
        .iter()
        .filter_map(|(_, r)| r.ok().map(|(s, _)| s))
        .collect();
    let steps: usize = inside
        .iter()
        .filter_map(|(_, r)| r.ok().map(|(_, n)| n))
        .sum();
    let agent_errors = recs.iter().filter(|(_, r)| r.is_err()).count();
    let mean_batch = mean_between(before.map(|b| b.0), after.map(|a| a.0));
    let agent_batch = mean_between(before.map(|b| b.1), after.map(|a| a.1));
    Phase {
        name: format!("B{agents}"),
        agent_clients: agents,
        plain: pct(lat),
        plain_errors,
        plain_window_s: window,
        agent_runs_per_s: runs.len() as f64 / (until - from).as_secs_f64(),
        agent_mean_steps: if runs.is_empty() {
            f64::NAN
        } else {
            steps as f64 / runs.len() as f64
        },
        agent_runs: pct(runs),
        agent_errors,
        mean_batch_size: mean_batch,
        agent_engine_batch: agent_batch,
    }
}

async fn alone_phase(o: &Opts, t: &Arc<Target>, name: &str) -> Phase {
    let before = batch_size(t, &o.agent_backend).await;
    let (lat, plain_errors, window) = plain_phase(o, t).await;
    let after = batch_size(t, &o.agent_backend).await;
    Phase {
        name: name.into(),
        agent_clients: 0,
        plain: pct(lat),
        plain_errors,
        plain_window_s: window,
        agent_runs: Pct::default(),
        agent_runs_per_s: 0.0,
        agent_mean_steps: f64::NAN,
        agent_errors: 0,
        mean_batch_size: mean_between(before.map(|b| b.0), after.map(|a| a.0)),
        agent_engine_batch: f64::NAN,
    }
}

#[derive(Serialize)]
struct Report {
    plain_model: String,
    agent_model: String,
    plain_clients: usize,
    plain_requests: usize,
    plain_rate: f64,
    agent_backend: String,
    tasks: usize,
    phases: Vec<Phase>,
    p99_ratio: f64,
    p50_ratio: f64,
    target_p99_ratio: f64,
    p99_target_met: bool,
    batching_met: bool,
    run_seconds: f64,
}

fn log(p: &Phase) {
    eprintln!(
        "[bench-agent] {:<4} plain p50 {:>7.1} ms p99 {:>7.1} ms (n {} err {})  agents {:>3}: {:>5.2} runs/s \
         p50 {:>7.1} ms p99 {:>7.1} ms steps {:.2} err {}  batch {:.2} agents' engine {:.2}",
        p.name, p.plain.p50_ms, p.plain.p99_ms, p.plain.n, p.plain_errors, p.agent_clients,
        p.agent_runs_per_s, p.agent_runs.p50_ms, p.agent_runs.p99_ms, p.agent_mean_steps,
        p.agent_errors, p.mean_batch_size, p.agent_engine_batch
    );
}

async fn run_all(o: &Opts) -> Result<Report, String> {
    let began = Instant::now();
    let t = Arc::new(Target {
        addr: o.server.addr,
        authority: o.server.authority.clone(),
        path: format!("{}/chat/completions", o.server.prefix),
        timeout: o.timeout,
    });
    let mut phases = vec![alone_phase(o, &t, "A").await];
    log(&phases[0]);
    for &n in &o.agent_clients {
        phases.push(mixed_phase(o, &t, n).await);
        log(phases.last().ok_or("no phase")?);
    }
    phases.push(alone_phase(o, &t, "A2").await);
    log(phases.last().ok_or("no phase")?);
    let (a, b) = (&phases[0], &phases[1]);
    if a.plain.n == 0 || b.plain.n == 0 {
        return Err("every plain request failed".into());
    }
    let p99_ratio = b.plain.p99_ms / a.plain.p99_ms;
    Ok(Report {
        plain_model: o.plain_model.clone(),
        agent_model: o.agent_model.clone(),
        plain_clients: o.plain_clients,
        plain_requests: o.plain_requests,
        plain_rate: o.plain_rate,
        agent_backend: o.agent_backend.clone(),
        tasks: o.tasks.len(),
        p99_ratio,
        p50_ratio: b.plain.p50_ms / a.plain.p50_ms,
        target_p99_ratio: o.target_p99_ratio,
        p99_target_met: p99_ratio <= o.target_p99_ratio,
        batching_met: b.mean_batch_size > 1.0
            && (b.agent_engine_batch.is_nan() || b.agent_engine_batch > 1.0),
        phases,
        run_seconds: began.elapsed().as_secs_f64(),
    })
}

fn render(r: &Report) -> String {
    let load = if r.plain_rate > 0.0 {
        format!("sent at {} req/s (open loop)", r.plain_rate)
    } else {
        format!("from {} clients (closed loop)", r.plain_clients)
    };
    let mut s = format!(
        "Plain chat: `{}`, {} requests per phase {} (greeting, max_tokens 24, temperature 0.7, \
         `cache-control: no-store`). Agent runs: `{}` looping over {} held-out tasks (calculator / SQL / time, \
         temperature 0, `cache-control: no-store`).\n\n\
         | phase | agent clients | plain p50 ms | plain p99 ms | plain errors | agent runs/s | run p50 ms | run p99 ms | tool steps/run | agent errors | engine mean batch | `{}` engine batch |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        r.plain_model, r.plain_requests, load, r.agent_model, r.tasks, r.agent_backend
    );
    for p in &r.phases {
        let agent = |v: f64| {
            if p.agent_clients == 0 {
                "—".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        s += &format!(
            "| {} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
            p.name,
            p.agent_clients,
            p.plain.p50_ms,
            p.plain.p99_ms,
            p.plain_errors,
            if p.agent_clients == 0 {
                "—".into()
            } else {
                format!("{:.2}", p.agent_runs_per_s)
            },
            agent(p.agent_runs.p50_ms),
            agent(p.agent_runs.p99_ms),
            if p.agent_clients == 0 {
                "—".into()
            } else {
                format!("{:.2}", p.agent_mean_steps)
            },
            if p.agent_clients == 0 {
                "—".into()
            } else {
                p.agent_errors.to_string()
            },
            p.mean_batch_size,
            if p.agent_engine_batch.is_nan() {
                "—".into()
            } else {
                format!("{:.2}", p.agent_engine_batch)
            }
        );
    }
    s += &format!(
        "\nPlain p99 {} / A: **{:.2}x** (target <= {:.2}x: {}); p50 {:.2}x. Engine mean batch during {}: {:.2} (> 1: {}).\n",
        r.phases[1].name, r.p99_ratio, r.target_p99_ratio,
        if r.p99_target_met { "met" } else { "missed" }, r.p50_ratio, r.phases[1].name,
        r.phases[1].mean_batch_size, if r.batching_met { "yes" } else { "no" }
    );
    for p in r.phases.iter().skip(2).filter(|p| p.agent_clients > 0) {
        s += &format!(
            "Plain p99 {} / A: {:.2}x, p50 {:.2}x.\n",
            p.name,
            p.plain.p99_ms / r.phases[0].plain.p99_ms,
            p.plain.p50_ms / r.phases[0].plain.p50_ms
        );
    }
    if let Some(a2) = r.phases.last() {
        s += &format!(
            "Drift: plain p99 A2 / A {:.2}x, p50 {:.2}x.\n",
            a2.plain.p99_ms / r.phases[0].plain.p99_ms,
            a2.plain.p50_ms / r.phases[0].plain.p50_ms
        );
    }
    s + &format!("Run: {:.0} s.\n", r.run_seconds)
}

fn run(o: Opts) -> i32 {
    let rt = match sluice_bench::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-agent: tokio runtime: {e}");
            return 1;
        }
    };
    let cap = Duration::from_secs_f64(o.max_seconds);
    let report = match rt.block_on(async { tokio::time::timeout(cap, run_all(&o)).await }) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("bench-agent: {e}");
            return 1;
        }
        Err(_) => {
            eprintln!(
                "bench-agent: not finished within --max-seconds {}",
                o.max_seconds
            );
            return 1;
        }
    };
    print!("{}", render(&report));
    if let Some(path) = &o.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => {
                if let Err(e) = std::fs::write(path, j + "\n") {
                    eprintln!("bench-agent: {path}: {e}");
                    return 1;
                }
            }
            Err(e) => {
                eprintln!("bench-agent: {e}");
                return 1;
            }
        }
    }
    if report.p99_target_met && report.batching_met {
        0
    } else {
        3
    }
}
