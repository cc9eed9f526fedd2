//! Closed-loop load generator of the mixed-workload benchmark (loadtest/mixed.sh): the
//! held-out prompts of a model, with repeats, through one sluice set-up; and `compare`,
//! which turns the runs of several set-ups into one table against the naive set-up.
//!
//! **run** (the default). `--data FILE.jsonl`: one prompt a line,
//! `{"id": ..., "request": {messages, max_tokens, tools, response_format, ...}, "check": ...}`
//! (`check`, optional, is copied into `--out` for `compare`). The schedule of `--requests` N requests is fixed by
//! `--seed`, so every set-up gets the same sequence: round(`--repeat-share` x N) of the
//! positions (chosen by a seeded shuffle, never the first) repeat a prompt already
//! scheduled; the others are first occurrences, each prompt at most once, in a seeded
//! shuffle of the file (`--order shuffled`, the default: held-out files are grouped by
//! category, and a mixed workload interleaves them; a shorter run is then a random
//! sample, not the first categories) or in the file's order (`--order file`). A repeat
//! draws from the prompts scheduled before it with weight 1/(rank+1)^`--zipf`, where rank
//! is the prompt's popularity (a seeded permutation of all the file's prompts,
//! independent of their order): a few prompts are asked often, most once, as in a real
//! assistant's traffic. `--zipf 0` draws uniformly. N defaults to the most the file allows
//! (every prompt once, plus the repeats); more first occurrences than prompts is an error.
//! Every body is the prompt's `request` with `model` = `--model`, `temperature: 0` and
//! `stream: false`.
//! `--concurrency` C workers, each on its own HTTP/1.1 keep-alive connection
//! (TCP_NODELAY), take the next request of the schedule as soon as their last one is
//! answered, until the schedule is done (or `--max-seconds`, after which nothing more is
//! sent: the run is marked incomplete). Before the clock starts, `--warmup` requests with
//! a prompt not in the file check that the model answers (a failure ends the run).
//!
//! Per request (`--out` JSON, `records`): schedule position, id, repeat, status, when it
//! was sent (ms after the start), latency (send to the last byte), usage.completion_tokens, the `x-sluice-tier`,
//! `x-sluice-route-reason`, `x-sluice-complexity` and `x-sluice-cache` headers ("-" when
//! absent), the body's `model`, the answer's text, its tool calls (name and arguments,
//! the arguments re-serialized with sorted keys when they parse as JSON) and
//! finish_reason. Summary: req/s and tokens/s = answered requests and their completion
//! tokens / wall time (first send to last answer; cache hits count the tokens they
//! deliver, `generated_tokens_per_s` only those of misses and bypasses), p50/p95 latency,
//! counts per tier, route reason and cache status; one line of it on stdout.
//! `--compare NAIVE.json` adds quality retained and the throughput ratio to that line.
//!
//! **compare**: `bench-mixed compare --naive NAIVE.json RUN.json...` prints a markdown
//! table, one row per run (the naive run first): req/s, tokens/s, p50/p95, throughput x
//! naive, quality retained, acceptable, share per tier, route reasons, cache hits, errors.
//! Quality retained = share of the prompt ids the naive run answered whose every answer in
//! the run (repeats included) equals the naive answer: the same text and the same tool
//! calls. Acceptable = share of those ids whose every answer passes the prompt's check
//! (check.rs, the calibration's rules; without a check only the naive answer passes). The
//! naive run's own repeats are checked for equality too (a determinism check). Target:
//! the run labelled `--target` (default `routed`) has >= `--target-speedup` x the naive
//! req/s at >= `--target-quality` retained, without errors; every run's verdict is
//! printed. Exit 0 met, 3 missed, 1 error, 2 bad arguments.
//!
//! Usage: bench-mixed --url http://127.0.0.1:P/v1 --model M --data FILE.jsonl
//!   [--requests N] [--concurrency 16] [--repeat-share 0.3] [--zipf 1] [--seed 1]
//!   [--order shuffled|file]
//!   [--warmup 1] [--timeout-s 600] [--max-seconds 1500] [--label L] [--title TEXT]
//!   [--out FILE.json] [--compare NAIVE.json]
//! bench-mixed compare --naive NAIVE.json RUN.json... [--tiers int4,int8,fp32]
//!   [--target routed] [--target-speedup 4] [--target-quality 0.95] [--title TEXT]

mod check;
mod compare;
mod record;
mod schedule;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice_bench::Conn;

use compare::{retained, Compare};
use record::{load_doc, ms, pct, shares, summarize, Call, Rec, RunDoc, NOT_SENT};
use schedule::{fnv, schedule, Mix};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("compare") => Compare::parse(&args[1..]).map(|c| c.run()),
        _ => Opts::parse(&args).map(run),
    };
    let code = code.unwrap_or_else(|e| {
        eprintln!("bench-mixed: {e}\n(see the header of src/bin/bench-mixed/main.rs)");
        2
    });
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------
// run: options, prompts, load

struct Opts {
    addr: std::net::SocketAddr,
    authority: String,
    path: String,
    model: String,
    data: String,
    prompts: Vec<Prompt>,
    requests: Option<usize>,
    concurrency: usize,
    repeat_share: f64,
    zipf: f64,
    seed: u64,
    shuffled: bool,
    warmup: usize,
    timeout: Duration,
    max_seconds: f64,
    label: String,
    title: String,
    out: Option<String>,
    compare: Option<String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut url = String::new();
        let mut o = Opts {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            authority: String::new(),
            path: String::new(),
            model: String::new(),
            data: String::new(),
            prompts: Vec::new(),
            requests: None,
            concurrency: 16,
            repeat_share: 0.3,
            zipf: 1.0,
            seed: 1,
            shuffled: true,
            warmup: 1,
            timeout: Duration::from_secs(600),
            max_seconds: 1500.0,
            label: "run".into(),
            title: String::new(),
            out: None,
            compare: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().ok_or(format!("{a} needs a value"))?;
            let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{a}: {e}"));
            let int = |v: &str| v.parse::<usize>().map_err(|e| format!("{a}: {e}"));
            match a.as_str() {
                "--url" => url = v.clone(),
                "--model" => o.model = v.clone(),
                "--data" => o.data = v.clone(),
                "--requests" => o.requests = Some(int(v)?).filter(|&n| n > 0),
                "--concurrency" => o.concurrency = int(v)?,
                "--repeat-share" => o.repeat_share = num(v)?,
                "--zipf" => o.zipf = num(v)?,
                "--seed" => o.seed = int(v)? as u64,
                "--order" => {
                    o.shuffled = match v.as_str() {
                        "shuffled" => true,
                        "file" => false,
                        _ => return Err("--order: shuffled or file".into()),
                    }
                }
                "--warmup" => o.warmup = int(v)?,
                "--timeout-s" => o.timeout = Duration::from_secs_f64(num(v)?),
                "--max-seconds" => o.max_seconds = num(v)?,
                "--label" => o.label = v.clone(),
                "--title" => o.title = v.clone(),
                "--out" => o.out = Some(v.clone()),
                "--compare" => o.compare = Some(v.clone()),
                _ => return Err(format!("unknown argument {a}")),
            }
        }
        let server = sluice_bench::loopback(&url)?;
        o.addr = server.addr;
        o.authority = server.authority;
        o.path = format!("{}/chat/completions", server.prefix);
        if o.model.is_empty() || o.data.is_empty() {
            return Err("--url, --model and --data are required".into());
        }
        if !(1..=256).contains(&o.concurrency) {
            return Err("--concurrency: 1..=256".into());
        }
        if !(0.0..1.0).contains(&o.repeat_share) || !(0.0..=4.0).contains(&o.zipf) {
            return Err("--repeat-share in [0, 1), --zipf in [0, 4]".into());
        }
        if !(o.max_seconds > 0.0 && o.max_seconds <= 3600.0) || o.timeout.is_zero() {
            return Err("bounded runs only: 0 < --max-seconds <= 3600, --timeout-s > 0".into());
        }
        o.prompts = load_prompts(&o.data)?;
        Ok(o)
    }
}

/// A prompt of `--data`: its id, its request body (without `model`) and its check.
struct Prompt {
    id: String,
    request: serde_json::Map<String, Value>,
    check: Value,
}

fn load_prompts(file: &str) -> Result<Vec<Prompt>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let mut prompts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{file}:{}: {e}", n + 1))?;
        let id = match &v["id"] {
            Value::String(s) => s.clone(),
            Value::Null => return Err(format!("{file}:{}: no id", n + 1)),
            other => other.to_string(),
        };
        let Some(request) = v["request"].as_object() else {
            return Err(format!("{file}:{}: no request object", n + 1));
        };
        if !seen.insert(id.clone()) {
            return Err(format!("{file}:{}: id {id} appears twice", n + 1));
        }
        prompts.push(Prompt {
            id,
            request: request.clone(),
            check: v["check"].clone(),
        });
    }
    if prompts.is_empty() {
        return Err(format!("{file}: no prompts"));
    }
    Ok(prompts)
}

fn body(o: &Opts, request: &serde_json::Map<String, Value>) -> Bytes {
    let mut b = request.clone();
    b.insert("model".into(), Value::String(o.model.clone()));
    b.insert("temperature".into(), json!(0));
    b.insert("stream".into(), Value::Bool(false));
    Bytes::from(Value::Object(b).to_string())
}

fn header_str(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| "-".into())
}

/// One request; fills the response fields of `rec`. Err = the connection is not reusable.
async fn request(o: &Opts, conn: &mut Conn, body: Bytes, rec: &mut Rec) -> Result<(), String> {
    let req = sluice_bench::json_post(&o.path, &o.authority, body).map_err(|e| e.to_string())?;
    let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
    let h = resp.headers();
    rec.status = resp.status().as_u16();
    rec.tier = header_str(h, "x-sluice-tier");
    rec.reason = header_str(h, "x-sluice-route-reason");
    rec.complexity = header_str(h, "x-sluice-complexity");
    rec.cache = header_str(h, "x-sluice-cache");
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if rec.status != 200 {
        let text = String::from_utf8_lossy(&bytes);
        rec.error = Some(format!(
            "{}: {}",
            rec.status,
            text.chars().take(300).collect::<String>()
        ));
        return Ok(());
    }
    let v: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            rec.error = Some(format!("not JSON: {e}"));
            return Ok(());
        }
    };
    let message = &v["choices"][0]["message"];
    if !message.is_object() {
        rec.error = Some("no choices[0].message".into());
        return Ok(());
    }
    rec.model = v["model"].as_str().unwrap_or("-").to_owned();
    rec.completion_tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    rec.content = message["content"].as_str().unwrap_or("").to_owned();
    rec.finish_reason = v["choices"][0]["finish_reason"]
        .as_str()
        .unwrap_or("-")
        .to_owned();
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let f = &call["function"];
        let args = f["arguments"].as_str().unwrap_or("");
        let arguments = serde_json::from_str::<Value>(args)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| args.to_owned());
        rec.tool_calls.push(Call {
            name: f["name"].as_str().unwrap_or("").to_owned(),
            arguments,
        });
    }
    Ok(())
}

struct Shared {
    o: Opts,
    start: Instant,
    bodies: Vec<Bytes>,
    schedule: Vec<(usize, bool)>,
    next: AtomicUsize,
    done: AtomicUsize,
    deadline: Instant,
}

async fn worker(s: Arc<Shared>) -> Vec<(Rec, Instant)> {
    let mut out = Vec::new();
    let mut conn: Option<Conn> = None;
    loop {
        let seq = s.next.fetch_add(1, Ordering::Relaxed);
        if seq >= s.schedule.len() || Instant::now() >= s.deadline {
            break;
        }
        let (p, repeat) = s.schedule[seq];
        let mut rec = Rec {
            seq,
            id: s.o.prompts[p].id.clone(),
            repeat,
            ..Rec::default()
        };
        let sent = Instant::now();
        rec.sent_ms = (sent - s.start).as_secs_f64() * 1000.0;
        let result = match conn.as_mut() {
            Some(c) => Ok(c),
            None => sluice_bench::connect(s.o.addr)
                .await
                .map(|c| conn.insert(c)),
        };
        let result = match result {
            Ok(c) => {
                tokio::time::timeout(s.o.timeout, request(&s.o, c, s.bodies[p].clone(), &mut rec))
                    .await
                    .unwrap_or_else(|_| Err("timeout".into()))
            }
            Err(e) => Err(e.to_owned()),
        };
        if let Err(e) = result {
            rec.status = 0;
            rec.error = Some(e);
            conn = None;
        }
        let end = Instant::now();
        rec.latency_ms = (end - sent).as_secs_f64() * 1000.0;
        s.done.fetch_add(1, Ordering::Relaxed);
        out.push((rec, end));
    }
    out
}

async fn warmup(o: &Opts) -> Result<(), String> {
    for i in 0..o.warmup {
        let mut req = serde_json::Map::new();
        req.insert(
            "messages".into(),
            json!([{"role": "user", "content": format!("Warm-up {i}: say OK.")}]),
        );
        req.insert("max_tokens".into(), json!(8));
        let mut conn = sluice_bench::connect(o.addr).await.map_err(str::to_owned)?;
        let mut rec = Rec::default();
        tokio::time::timeout(o.timeout, request(o, &mut conn, body(o, &req), &mut rec))
            .await
            .map_err(|_| "timeout".to_owned())??;
        if let Some(e) = rec.error {
            return Err(e);
        }
    }
    Ok(())
}

fn run(o: Opts) -> i32 {
    let mix = Mix {
        share: o.repeat_share,
        zipf: o.zipf,
        seed: o.seed,
        shuffled: o.shuffled,
    };
    let sched = match schedule(o.prompts.len(), o.requests, mix) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench-mixed: {e}");
            return 2;
        }
    };
    let rt = match sluice_bench::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-mixed: {e}");
            return 1;
        }
    };
    if let Err(e) = rt.block_on(warmup(&o)) {
        eprintln!("bench-mixed: warm-up request failed: {e}");
        return 1;
    }
    let repeats = sched.iter().filter(|(_, r)| *r).count();
    let distinct = sched.len() - repeats;
    eprintln!(
        "[bench-mixed] {}: {} requests ({distinct} prompts, {repeats} repeats), concurrency {}",
        o.label,
        sched.len(),
        o.concurrency
    );
    let bodies = o.prompts.iter().map(|p| body(&o, &p.request)).collect();
    let hash = fnv(sched.iter().map(|&(p, _)| o.prompts[p].id.clone()));
    let start = Instant::now();
    let s = Arc::new(Shared {
        deadline: start + Duration::from_secs_f64(o.max_seconds),
        start,
        o,
        bodies,
        schedule: sched,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..s.o.concurrency)
            .map(|_| tokio::spawn(worker(s.clone())))
            .collect();
        let progress = {
            let s = s.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    eprintln!(
                        "[bench-mixed]   {:>5.0} s: {}/{} answered",
                        start.elapsed().as_secs_f64(),
                        s.done.load(Ordering::Relaxed),
                        s.schedule.len()
                    );
                }
            })
        };
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        progress.abort();
        all
    });
    let last = results.iter().map(|(_, end)| *end).max().unwrap_or(start);
    let wall_s = (last - start).as_secs_f64();
    let mut records: Vec<Option<Rec>> = vec![None; s.schedule.len()];
    for (rec, _) in results {
        let seq = rec.seq;
        records[seq] = Some(rec);
    }
    let records: Vec<Rec> = records
        .into_iter()
        .enumerate()
        .map(|(seq, r)| {
            r.unwrap_or_else(|| {
                let (p, repeat) = s.schedule[seq];
                Rec {
                    seq,
                    id: s.o.prompts[p].id.clone(),
                    repeat,
                    error: Some(NOT_SENT.into()),
                    ..Rec::default()
                }
            })
        })
        .collect();
    let o = &s.o;
    let summary = summarize(&records, wall_s);
    let doc = RunDoc {
        label: o.label.clone(),
        title: o.title.clone(),
        model: o.model.clone(),
        data: o.data.clone(),
        concurrency: o.concurrency,
        repeat_share: o.repeat_share,
        zipf: o.zipf,
        seed: o.seed,
        order: if o.shuffled { "shuffled" } else { "file" }.into(),
        schedule_hash: hash,
        checks: o
            .prompts
            .iter()
            .filter(|p| !p.check.is_null())
            .map(|p| (p.id.clone(), p.check.clone()))
            .collect(),
        wall_s,
        complete: summary.not_sent == 0,
        summary,
        records,
    };
    if let Some(e) = doc
        .records
        .iter()
        .find_map(|r| r.error.as_deref().filter(|e| *e != NOT_SENT))
    {
        eprintln!("[bench-mixed]   first error: {e}");
    }
    let mut line = summary_line(&doc);
    if let Some(naive) = &o.compare {
        match load_doc(naive) {
            Ok(n) => {
                let q = retained(&n, &doc);
                line.push_str(&format!(
                    "; vs naive: {:.2}x req/s, quality retained {}",
                    doc.summary.req_per_s / n.summary.req_per_s,
                    pct(q.ids_equal, q.ids)
                ));
            }
            Err(e) => eprintln!("bench-mixed: {e}"),
        }
    }
    println!("{line}");
    if let Some(path) = &o.out {
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("bench-mixed: cannot write {path}: {e}");
            return 1;
        }
    }
    if doc.summary.errors > 0 || !doc.complete {
        1
    } else {
        0
    }
}

fn summary_line(d: &RunDoc) -> String {
    let s = &d.summary;
    format!(
        "[bench-mixed] {}: {} answered, {} errors{} in {:.1} s: {:.2} req/s, {:.1} tokens/s, p50 {}, p95 {}; tiers {}; cache {}",
        d.label,
        s.ok,
        s.errors,
        if s.not_sent > 0 { format!(", {} not sent", s.not_sent) } else { String::new() },
        d.wall_s,
        s.req_per_s,
        s.tokens_per_s,
        ms(s.p50_ms),
        ms(s.p95_ms),
        shares(&s.tiers, s.ok, &[]),
        shares(&s.cache, s.ok, &[]),
    )
}
