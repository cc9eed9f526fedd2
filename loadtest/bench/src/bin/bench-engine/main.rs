//! Closed-loop load generator for the embedded-engine batching benchmark
//! (loadtest/engine.sh).
//!
//! One sluice serves the same ONNX model twice: `--batched` (max_batch_size = 32) and
//! `--unbatched` (max_batch_size = 1), both with `ignore_eos`, so every request generates
//! exactly its `max_tokens`: `--max-tokens` on average, 4/8 to 12/8 of it by prompt
//! (`LENGTH_EIGHTHS`). For each concurrency C (in the order given) it runs one
//! cell per model, alternating which model goes first: C workers, each on its own
//! HTTP/1.1 keep-alive connection (TCP_NODELAY), send streaming chat completions back to
//! back. Prompts are taken round-robin from a fixed list of 9 (three with tools; about
//! 10–115 prompt tokens). A cell is `--warmup` seconds of load, then a `--duration` second
//! measurement window; at the window's end workers stop sending and the requests in
//! flight finish (bounded by `--timeout-s`), so the next cell starts on an idle engine.
//!
//! Per request: TTFT = send to the first SSE chunk whose `choices[0].delta` has non-empty
//! `content` or `tool_calls`; tokens = `usage.completion_tokens` of the final usage chunk.
//! Per cell:
//!   tokens/s = completion tokens generated inside the window / window length, where each
//!              request's completion_tokens are spread evenly over its delta chunks by
//!              arrival time (so requests straddling the window edges count pro rata and
//!              lock-step batches cannot make the count jump);
//!   TTFT     = p50/p95 over requests *sent* inside the window; also the p50 of the
//!              prompts without tools alone (their first delta is a text token, not a
//!              whole tool call) and, in the JSON, the p50 of each prompt;
//!   errors   = any request of the cell (warm-up included) that failed: non-2xx, error
//!              event, no `[DONE]`, no usage, no delta, or slower than `--timeout-s`.
//!
//! Then, with `--structured` and `--free` (two models over one batched backend and tier,
//! structured generation on and off, no `ignore_eos`), the structured-generation cells
//! (structured.rs): for each `--structured-concurrency` C and each workload (`tools`,
//! `json`) one cell per model, each measured in `--structured-rounds` windows of
//! `--duration / rounds` s (each after its own warm-up, followed by its drain)
//! interleaved with the other model's, A B B A A B B A ..., so that drift on a shared
//! machine falls on both; a cell's figures are over its windows together. Per cell also:
//! mean completion tokens per answer, answers cut at max_tokens, valid answers
//! (structured.rs `valid`), and from sluice's `/metrics` the `sluice_engine_mask_seconds`
//! histogram (masks, mean = sum / count, p50/p99 interpolated in its buckets, share <=
//! 1 ms) and the constrained and constraint-ended counters.
//!
//! Targets: at concurrency 16 batched tokens/s >= `--target-speedup` x unbatched, and
//! batched TTFT p50 at 16 <= `--target-ttft-ratio` x batched TTFT p50 at 1; with the
//! structured cells, for each workload constrained tokens/s at 16 >=
//! `--target-structured-ratio` x unconstrained, and mask p99 at 32 <
//! `--target-mask-p99-ms` (from the buckets: the share of masks <= that bound must be >=
//! 99%, so it needs a bucket bound there; 1 ms is one); all with no errors. Prints a
//! markdown report (report.rs), writes `--json` with every cell; exit 0 met, 3 missed, 1
//! error.
//!
//! Usage: bench-engine --url http://127.0.0.1:PORT/v1 [--batched tiny-batched]
//!   [--unbatched tiny-unbatched] [--concurrency 1,4,16,32] [--duration 8] [--warmup 1]
//!   [--max-tokens 64] [--timeout-s 60] [--max-seconds 300] [--sluice-pid PID]
//!   [--json FILE] [--target-speedup 3] [--target-ttft-ratio 2] [--title TEXT]
//!   [--structured tiny-structured --free tiny-free] [--structured-concurrency 16,32]
//!   [--structured-rounds 4]
//!   [--target-structured-ratio 0.9] [--target-mask-p99-ms 1]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice_bench::Conn;

mod metrics;
mod report;
mod structured;
use report::{pct, render, Cell, Report};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match Opts::parse(&args) {
        Ok(o) => run(o),
        Err(e) => {
            eprintln!("bench-engine: {e}\n(see the header of src/bin/bench-engine/main.rs)");
            2
        }
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------
// Options

struct Opts {
    addr: SocketAddr,
    authority: String,
    path: String,
    batched: String,
    unbatched: String,
    concurrency: Vec<usize>,
    duration: f64,
    warmup: f64,
    max_tokens: u32,
    timeout: Duration,
    max_seconds: f64,
    sluice_pid: Option<u32>,
    json: Option<String>,
    target_speedup: f64,
    target_ttft_ratio: f64,
    title: String,
    /// The structured-generation models (constraint on / off); both or neither.
    structured: Option<String>,
    free: Option<String>,
    structured_concurrency: Vec<usize>,
    /// Windows per structured cell, interleaved with the other model's.
    structured_rounds: usize,
    target_structured_ratio: f64,
    target_mask_p99_ms: f64,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut url = String::new();
        let mut o = Opts {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            authority: String::new(),
            path: String::new(),
            batched: "tiny-batched".into(),
            unbatched: "tiny-unbatched".into(),
            concurrency: vec![1, 4, 16, 32],
            duration: 8.0,
            warmup: 1.0,
            max_tokens: 64,
            timeout: Duration::from_secs(60),
            max_seconds: 300.0,
            sluice_pid: None,
            json: None,
            target_speedup: 3.0,
            target_ttft_ratio: 2.0,
            title: String::new(),
            structured: None,
            free: None,
            structured_concurrency: vec![16, 32],
            structured_rounds: 4,
            target_structured_ratio: 0.9,
            target_mask_p99_ms: 1.0,
        };
        let list = |a: &str, v: &str| {
            v.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse::<usize>().map_err(|e| format!("{a}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().ok_or(format!("{a} needs a value"))?;
            let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{a}: {e}"));
            match a.as_str() {
                "--url" => url = v.clone(),
                "--batched" => o.batched = v.clone(),
                "--unbatched" => o.unbatched = v.clone(),
                "--concurrency" => o.concurrency = list(a, v)?,
                "--structured-concurrency" => o.structured_concurrency = list(a, v)?,
                "--structured-rounds" => o.structured_rounds = num(v)? as usize,
                "--structured" => o.structured = Some(v.clone()),
                "--free" => o.free = Some(v.clone()),
                "--target-structured-ratio" => o.target_structured_ratio = num(v)?,
                "--target-mask-p99-ms" => o.target_mask_p99_ms = num(v)?,
                "--duration" => o.duration = num(v)?,
                "--warmup" => o.warmup = num(v)?,
                "--max-tokens" => o.max_tokens = num(v)? as u32,
                "--timeout-s" => o.timeout = Duration::from_secs_f64(num(v)?),
                "--max-seconds" => o.max_seconds = num(v)?,
                "--sluice-pid" => o.sluice_pid = Some(num(v)? as u32),
                "--json" => o.json = Some(v.clone()),
                "--target-speedup" => o.target_speedup = num(v)?,
                "--target-ttft-ratio" => o.target_ttft_ratio = num(v)?,
                "--title" => o.title = v.clone(),
                _ => return Err(format!("unknown argument {a}")),
            }
        }
        let server = sluice_bench::loopback(&url)?;
        o.addr = server.addr;
        o.authority = server.authority;
        o.path = format!("{}/chat/completions", server.prefix);
        if o.concurrency.is_empty() || o.concurrency.iter().any(|&c| c == 0 || c > 256) {
            return Err("--concurrency: a list of values in 1..=256".into());
        }
        if o.structured_concurrency.iter().any(|&c| c == 0 || c > 256) {
            return Err("--structured-concurrency: a list of values in 1..=256".into());
        }
        if !(1..=16).contains(&o.structured_rounds) {
            return Err("--structured-rounds: 1..=16".into());
        }
        if o.structured.is_some() != o.free.is_some() {
            return Err("--structured and --free go together".into());
        }
        if !(o.duration > 0.0 && o.duration <= 120.0 && o.warmup >= 0.0 && o.warmup <= 60.0) {
            return Err("bounded runs only: 0 < --duration <= 120 s, --warmup <= 60 s".into());
        }
        if o.max_tokens == 0 || o.max_tokens > 480 || o.max_seconds <= 0.0 || o.max_seconds > 1800.0
        {
            return Err("need 1 <= --max-tokens <= 480 and 0 < --max-seconds <= 1800".into());
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------
// Request bodies: the demo model's world, some prompts with tools so lengths vary.

/// Six prompts without tools and three with. With tools the first delta is usually a
/// whole tool call, which the engine's parser holds back until the call is complete (about
/// 20 decode steps), so those TTFTs form a separate, slower cluster. An odd count, mostly
/// without tools, puts the TTFT median inside one prompt's own samples instead of on the
/// gap between two prompts (round-robin gives every prompt the same share).
const PROMPTS: [(&str, &[&str]); 9] = [
    ("What is 12 * 7?", &["calculator"]),
    ("Hello! Who are you?", &[]),
    (
        "I run a small online shop and I am putting together the quarterly report for my \
         team. Could you tell me which product brought in the most revenue in the second \
         quarter, and how that compares with the first quarter? A short answer is fine, \
         I only need the numbers for one slide.",
        &[],
    ),
    ("How many orders were placed in March?", &["sql_query"]),
    ("Good morning!", &[]),
    (
        "Please say hello to my colleague Maria, she joined the sales team today.",
        &[],
    ),
    ("Can you work out (348 + 1290) / 6 for me?", &[]),
    (
        "What time is it in Tokyo?",
        &["calculator", "sql_query", "current_time"],
    ),
    (
        "Thanks, that was helpful. Before I go, can you explain in a sentence or two what \
         kinds of questions you can answer for me?",
        &[],
    ),
];

fn tool(name: &str) -> Value {
    let (description, param) = match name {
        "calculator" => ("Evaluate an arithmetic expression", "expression"),
        "sql_query" => ("Run a read-only SQL query on the sales database", "query"),
        _ => ("Current time in a timezone", "timezone"),
    };
    json!({"type": "function", "function": {"name": name, "description": description,
        "parameters": {"type": "object", "properties": {param: {"type": "string"}},
                       "required": [param]}}})
}

/// Each prompt's share of `--max-tokens`, in eighths: from 4/8 to 12/8, mean exactly 1, so
/// answers have different lengths (as real ones do) and the closed-loop clients do not
/// all finish on the same decode step and come back in one synchronized wave, while the
/// total work stays `max_tokens` per request on average.
const LENGTH_EIGHTHS: [u32; 9] = [8, 5, 11, 7, 12, 4, 9, 6, 10];

/// A prompt's `max_tokens` (ignore_eos: exactly what it generates).
fn prompt_tokens(max_tokens: u32, prompt: usize) -> u32 {
    (max_tokens * LENGTH_EIGHTHS[prompt % LENGTH_EIGHTHS.len()] / 8).max(1)
}

/// One request body of a cell's round-robin list.
pub struct Body {
    pub bytes: Bytes,
    /// It carries tools (its first delta may be a whole tool call).
    pub tools: bool,
    /// With `ignore_eos`: exactly how many tokens it generates (fewer is *short*).
    pub exact_tokens: Option<u32>,
}

/// A greedy streaming request with a final usage chunk: what every cell sends.
pub fn greedy_stream(model: &str, text: &str, max_tokens: u32) -> serde_json::Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

/// One body per prompt of the batching cells.
fn bodies(model: &str, max_tokens: u32) -> Vec<Body> {
    PROMPTS
        .iter()
        .enumerate()
        .map(|(i, (text, tools))| {
            let max_tokens = prompt_tokens(max_tokens, i);
            let mut body = greedy_stream(model, text, max_tokens);
            if !tools.is_empty() {
                body["tools"] = tools.iter().map(|t| tool(t)).collect();
            }
            Body {
                bytes: Bytes::from(body.to_string()),
                tools: !tools.is_empty(),
                exact_tokens: Some(max_tokens),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// One request

struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
}

async fn connect(t: &Target) -> Result<Conn, &'static str> {
    sluice_bench::connect(t.addr).await
}

/// What one request produced.
struct Outcome {
    sent: Instant,
    end: Instant,
    first: Option<Instant>,
    /// Arrival time of every chunk with a non-empty delta.
    deltas: Vec<Instant>,
    completion_tokens: u64,
    prompt_tokens: u64,
    /// The prompt carried tools (its first delta may be a whole tool call, held back
    /// by the engine's tool-call parser until the call is complete).
    tools: bool,
    /// Index into the cell's bodies.
    prompt: usize,
    error: Option<&'static str>,
    /// The answer's text and its tool calls (name, arguments), when `keep_text`.
    content: String,
    calls: Vec<(String, String)>,
    /// `finish_reason` of the last choice chunk that had one.
    finish: Option<String>,
}

/// Sends one streaming request on `conn` (reconnecting when needed) and reads the SSE
/// body to the end, recording times into `out`. The caller applies the timeout.
async fn exchange(
    t: &Target,
    conn: &mut Option<Conn>,
    body: Bytes,
    keep_text: bool,
    out: &mut Outcome,
) -> Result<(), &'static str> {
    let mut sender = match conn.take() {
        Some(mut s) if !s.is_closed() => match s.ready().await {
            Ok(()) => s,
            Err(_) => connect(t).await?,
        },
        _ => connect(t).await?,
    };
    let req = sluice_bench::json_post(&t.path, &t.authority, body).map_err(|_| "request")?;
    out.sent = Instant::now();
    let resp = sender.send_request(req).await.map_err(|_| "send")?;
    if !resp.status().is_success() {
        let code = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        *conn = Some(sender);
        return Err(match code {
            429 => "http_429",
            503 => "http_503",
            400..=499 => "http_4xx",
            _ => "http_5xx",
        });
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut done = false;
    let mut usage = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..pos + 2).collect();
            for line in event[..pos].split(|&b| b == b'\n') {
                let Some(payload) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let payload = payload.trim_ascii();
                if payload == b"[DONE]" {
                    done = true;
                    continue;
                }
                let v: Value = serde_json::from_slice(payload).map_err(|_| "bad_json")?;
                if v.get("error").is_some() {
                    return Err("error_event");
                }
                let delta = &v["choices"][0]["delta"];
                let content = delta["content"].as_str().is_some_and(|s| !s.is_empty());
                let calls = delta["tool_calls"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty());
                if content || calls {
                    out.first.get_or_insert(now);
                    out.deltas.push(now);
                    if keep_text {
                        keep(delta, out);
                    }
                }
                if let Some(reason) = v["choices"][0]["finish_reason"].as_str() {
                    out.finish = Some(reason.to_owned());
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    usage = true;
                    out.completion_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
                    out.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
                }
            }
        }
    }
    out.end = Instant::now();
    *conn = Some(sender);
    match (done, usage, out.first.is_some()) {
        (false, _, _) => Err("no_done"),
        (_, false, _) => Err("no_usage"),
        (_, _, false) => Err("no_delta"),
        _ => Ok(()),
    }
}

/// Appends a delta's content and tool-call pieces (by `index`) to the outcome.
fn keep(delta: &Value, out: &mut Outcome) {
    if let Some(text) = delta["content"].as_str() {
        out.content.push_str(text);
    }
    for call in delta["tool_calls"].as_array().into_iter().flatten() {
        let index = call["index"].as_u64().unwrap_or(0) as usize;
        if out.calls.len() <= index {
            out.calls.resize(index + 1, Default::default());
        }
        let f = &call["function"];
        if let Some(name) = f["name"].as_str() {
            out.calls[index].0.push_str(name);
        }
        if let Some(arguments) = f["arguments"].as_str() {
            out.calls[index].1.push_str(arguments);
        }
    }
}

// ---------------------------------------------------------------------------------------
// One cell: one model at one concurrency

async fn worker(
    t: Arc<Target>,
    bodies: Arc<Vec<Body>>,
    keep_text: bool,
    next: Arc<AtomicUsize>,
    stop_sending: Instant,
    timeout: Duration,
) -> Vec<Outcome> {
    let mut conn = None;
    let mut outcomes = Vec::new();
    while Instant::now() < stop_sending {
        let prompt = next.fetch_add(1, Ordering::Relaxed) % bodies.len();
        let (body, tools) = (bodies[prompt].bytes.clone(), bodies[prompt].tools);
        let now = Instant::now();
        let mut out = Outcome {
            sent: now,
            end: now,
            first: None,
            deltas: Vec::with_capacity(80),
            completion_tokens: 0,
            prompt_tokens: 0,
            tools,
            prompt,
            error: None,
            content: String::new(),
            calls: Vec::new(),
            finish: None,
        };
        let exchanged = exchange(&t, &mut conn, body, keep_text, &mut out);
        match tokio::time::timeout(timeout, exchanged).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => out.error = Some(e),
            Err(_) => out.error = Some("timeout"),
        }
        if out.error.is_some() {
            out.end = Instant::now();
            if out.error != Some("http_429") && out.error != Some("http_503") {
                conn = None;
            }
            // A failing server must not turn the closed loop into a busy loop.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        outcomes.push(out);
    }
    outcomes
}

fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What a one-window cell sends (the batching cells).
struct Workload {
    name: &'static str,
    /// The batched model.
    batched: bool,
    bodies: Vec<Body>,
}

/// One measurement window of a cell: `--warmup` s of load, `duration` s measured, then
/// the drain.
struct Window {
    outcomes: Vec<Outcome>,
    ws: Instant,
    we: Instant,
    wall_s: f64,
    /// sluice's `/metrics` over the whole window (warm-up and drain included).
    metrics: Option<metrics::Snapshot>,
    /// sluice's CPU seconds inside the measured part.
    cpu_s: Option<f64>,
}

async fn run_window(
    o: &Opts,
    t: &Arc<Target>,
    bodies: &Arc<Vec<Body>>,
    keep_text: bool,
    c: usize,
    duration: f64,
) -> Window {
    let next = Arc::new(AtomicUsize::new(0));
    let before = metrics::scrape(t).await;
    let start = Instant::now();
    let ws = start + Duration::from_secs_f64(o.warmup);
    let we = ws + Duration::from_secs_f64(duration);
    let cpu = o.sluice_pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(ws.into()).await;
            let a = cpu_secs(pid);
            tokio::time::sleep_until(we.into()).await;
            Some(cpu_secs(pid)? - a?)
        })
    });
    let workers: Vec<_> = (0..c)
        .map(|_| {
            tokio::spawn(worker(
                t.clone(),
                bodies.clone(),
                keep_text,
                next.clone(),
                we,
                o.timeout,
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.extend(w.await.unwrap_or_default());
    }
    let wall_s = start.elapsed().as_secs_f64();
    let metrics = match (before, metrics::scrape(t).await) {
        (Some(a), Some(b)) => Some(metrics::delta(&a, &b)),
        _ => None,
    };
    let cpu_s = match cpu {
        Some(h) => h.await.ok().flatten(),
        None => None,
    };
    Window {
        outcomes,
        ws,
        we,
        wall_s,
        metrics,
        cpu_s,
    }
}

/// One cell in one window.
async fn run_cell(o: &Opts, t: &Arc<Target>, model: &str, w: Workload, c: usize) -> Cell {
    let bodies = Arc::new(w.bodies);
    let keep_text = w.name != "batching";
    let window = run_window(o, t, &bodies, keep_text, c, o.duration).await;
    summarize(model, w.name, w.batched, c, &bodies, vec![window])
}

/// Two structured cells of one workload at one concurrency, interleaved: `rounds`
/// rounds of one window per model, `--duration / rounds` s each, the model that goes
/// first alternating (A B B A ...), so that drift on a shared machine falls on both.
async fn run_pair(
    o: &Opts,
    t: &Arc<Target>,
    kind: &'static str,
    (on, off): (&str, &str),
    c: usize,
    rounds: usize,
) -> (Cell, Cell) {
    let on_bodies = Arc::new(structured::bodies(kind, on, true));
    let off_bodies = Arc::new(structured::bodies(kind, off, false));
    let (mut on_windows, mut off_windows) = (Vec::new(), Vec::new());
    let slice = o.duration / rounds as f64;
    for round in 0..rounds {
        for constrained in [round % 2 == 0, round % 2 != 0] {
            let bodies = if constrained { &on_bodies } else { &off_bodies };
            let window = run_window(o, t, bodies, true, c, slice).await;
            if constrained {
                on_windows.push(window);
            } else {
                off_windows.push(window);
            }
        }
    }
    (
        summarize(on, kind, true, c, &on_bodies, on_windows),
        summarize(off, kind, false, c, &off_bodies, off_windows),
    )
}

/// A cell's figures from its windows (tokens/s over their summed length; TTFT and
/// latency over the requests sent inside them; engine metrics summed over them).
fn summarize(
    model: &str,
    workload: &'static str,
    batched: bool,
    c: usize,
    bodies: &[Body],
    windows: Vec<Window>,
) -> Cell {
    let keep_text = workload != "batching";
    let measured: f64 = windows.iter().map(|w| (w.we - w.ws).as_secs_f64()).sum();
    let mut tokens = 0.0;
    let (mut ttft, mut ttft_plain, mut lat, mut itl) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut by_prompt = vec![Vec::new(); bodies.len()];
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut short, mut completed, mut pmin, mut pmax) = (0, 0, u64::MAX, 0);
    let (mut ok, mut answer_tokens, mut length, mut with_calls, mut valid) = (0, 0, 0, 0, 0);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for w in &windows {
        let (ws, we) = (w.ws, w.we);
        for r in &w.outcomes {
            if let Some(e) = r.error {
                *errors.entry(e).or_default() += 1;
                continue;
            }
            let inside = r.deltas.iter().filter(|&&d| d >= ws && d < we).count();
            tokens += r.completion_tokens as f64 * inside as f64 / r.deltas.len() as f64;
            if bodies[r.prompt]
                .exact_tokens
                .is_some_and(|n| r.completion_tokens < n as u64)
            {
                short += 1;
            }
            ok += 1;
            answer_tokens += r.completion_tokens;
            length += usize::from(r.finish.as_deref() == Some("length"));
            with_calls += usize::from(!r.calls.is_empty());
            valid += usize::from(keep_text && structured::valid(workload, &r.content, &r.calls));
            pmin = pmin.min(r.prompt_tokens);
            pmax = pmax.max(r.prompt_tokens);
            if r.end >= ws && r.end < we {
                completed += 1;
            }
            if r.sent >= ws && r.sent < we {
                let first = r.first.unwrap_or(r.end);
                ttft.push(ms(first - r.sent));
                if !r.tools {
                    ttft_plain.push(ms(first - r.sent));
                }
                by_prompt[r.prompt].push(ms(first - r.sent));
                lat.push(ms(r.end - r.sent));
                if r.completion_tokens > 1 {
                    itl.push(ms(r.end - first) / (r.completion_tokens - 1) as f64);
                }
            }
        }
    }
    let engine = windows
        .iter()
        .map(|w| w.metrics.as_ref())
        .collect::<Option<Vec<_>>>()
        .and_then(|deltas| {
            metrics::engine_stats(&metrics::Snapshot::new(), &metrics::sum(&deltas))
        });
    let sluice_cores = windows
        .iter()
        .map(|w| w.cpu_s)
        .sum::<Option<f64>>()
        .map(|s| s / measured);
    Cell {
        model: model.to_owned(),
        workload,
        batched,
        concurrency: c,
        windows: windows.len(),
        tokens_per_s: tokens / measured,
        ttft: pct(ttft),
        ttft_no_tools: pct(ttft_plain),
        ttft_p50_by_prompt_ms: by_prompt.into_iter().map(|v| pct(v).p50_ms).collect(),
        latency: pct(lat),
        inter_token_ms: if itl.is_empty() {
            f64::NAN
        } else {
            itl.iter().sum::<f64>() / itl.len() as f64
        },
        completed_in_window: completed,
        requests: windows.iter().map(|w| w.outcomes.len()).sum(),
        errors,
        short,
        prompt_tokens_min: if pmin == u64::MAX { 0 } else { pmin },
        prompt_tokens_max: pmax,
        mean_completion_tokens: if ok > 0 {
            answer_tokens as f64 / ok as f64
        } else {
            f64::NAN
        },
        finished_length: length,
        answers_with_calls: with_calls,
        valid_answers: keep_text.then_some(valid),
        wall_s: windows.iter().map(|w| w.wall_s).sum(),
        sluice_cores,
        engine,
    }
}

// ---------------------------------------------------------------------------------------
// The run and the report

fn run(o: Opts) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-engine: tokio runtime: {e}");
            return 1;
        }
    };
    let cap = Duration::from_secs_f64(o.max_seconds);
    match rt.block_on(async { tokio::time::timeout(cap, run_all(&o)).await }) {
        Ok(Ok(true)) => 0,
        Ok(Ok(false)) => 3,
        Ok(Err(e)) => {
            eprintln!("bench-engine: {e}");
            1
        }
        Err(_) => {
            eprintln!(
                "bench-engine: the run did not finish within --max-seconds {}",
                o.max_seconds
            );
            1
        }
    }
}

/// Logs a finished cell; an error when every request of it failed.
fn cell_done(cell: Cell) -> Result<Cell, String> {
    eprintln!(
        "[bench-engine] c={:<3} {:<8} {:<16} {:>7.1} tok/s  TTFT p50 {:>7.1} ms p95 {:>7.1} ms  \
         req {:>4} err {:>2}  sluice {:>4.2} cores  ({:.1} s in {} windows)",
        cell.concurrency,
        cell.workload,
        cell.model,
        cell.tokens_per_s,
        cell.ttft.p50_ms,
        cell.ttft.p95_ms,
        cell.requests,
        cell.errors.values().sum::<u64>(),
        cell.sluice_cores.unwrap_or(f64::NAN),
        cell.wall_s,
        cell.windows
    );
    if cell.requests > 0 && cell.errors.values().sum::<u64>() == cell.requests as u64 {
        return Err(format!(
            "every request of {} at concurrency {} failed: {:?}",
            cell.model, cell.concurrency, cell.errors
        ));
    }
    Ok(cell)
}

async fn run_all(o: &Opts) -> Result<bool, String> {
    let began = Instant::now();
    let t = Arc::new(Target {
        addr: o.addr,
        authority: o.authority.clone(),
        path: o.path.clone(),
    });
    let mut cells = Vec::new();
    for (i, &c) in o.concurrency.iter().enumerate() {
        // Alternate which model goes first, so slow drift on the machine is shared.
        for batched in [i % 2 == 0, i % 2 != 0] {
            let model = if batched { &o.batched } else { &o.unbatched };
            let w = Workload {
                name: "batching",
                batched,
                bodies: bodies(model, o.max_tokens),
            };
            cells.push(cell_done(run_cell(o, &t, model, w, c).await)?);
        }
    }
    if let (Some(on), Some(off)) = (&o.structured, &o.free) {
        for &c in &o.structured_concurrency {
            for kind in structured::KINDS {
                let (a, b) = run_pair(o, &t, kind, (on, off), c, o.structured_rounds).await;
                cells.push(cell_done(a)?);
                cells.push(cell_done(b)?);
            }
        }
    }
    let mut targets = report::goals(&cells, o.target_speedup, o.target_ttft_ratio);
    if o.structured.is_some() {
        targets.extend(report::structured_goals(
            &cells,
            o.target_structured_ratio,
            o.target_mask_p99_ms,
        ));
    }
    let errors: u64 = cells.iter().map(|c| c.errors.values().sum::<u64>()).sum();
    let pass = targets.iter().all(|t| t.pass) && errors == 0;
    let report = Report {
        title: o.title.clone(),
        prompts: PROMPTS.len(),
        batched_model: o.batched.clone(),
        unbatched_model: o.unbatched.clone(),
        max_tokens: o.max_tokens,
        warmup_s: o.warmup,
        duration_s: o.duration,
        concurrency: o.concurrency.clone(),
        structured_model: o.structured.clone(),
        free_model: o.free.clone(),
        structured_concurrency: o
            .structured
            .as_ref()
            .map(|_| o.structured_concurrency.clone()),
        structured_rounds: o.structured_rounds,
        cells,
        targets,
        errors,
        sluice_vm_hwm_kb: o.sluice_pid.and_then(|p| status_kb(p, "VmHWM:")),
        sluice_vm_rss_end_kb: o.sluice_pid.and_then(|p| status_kb(p, "VmRSS:")),
        pass,
        run_seconds: began.elapsed().as_secs_f64(),
    };
    print!("{}", render(&report));
    if let Some(path) = &o.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(pass)
}
