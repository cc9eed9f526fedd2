//! `bench-mixed compare` (see main.rs): the runs of several set-ups against the naive one,
//! as one markdown table with the target's verdict.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::check;
use crate::record::{load_doc, ms, pct, shares, Rec, RunDoc};

pub struct Retained {
    /// Prompt ids the naive run answered.
    pub ids: usize,
    /// ... whose every answer in this run equals the naive one.
    pub ids_equal: usize,
    /// ... whose every answer in this run is acceptable (see [`acceptable`]).
    pub ids_acceptable: usize,
    /// Answered requests of this run (of those ids) equal to the naive answer.
    pub requests: usize,
    pub requests_equal: usize,
}

pub fn naive_answers(naive: &RunDoc) -> HashMap<&str, &Rec> {
    let mut first: HashMap<&str, &Rec> = HashMap::new();
    for r in naive.records.iter().filter(|r| r.ok()) {
        first.entry(r.id.as_str()).or_insert(r);
    }
    first
}

/// The calibration's rule: the answer passes the prompt's check; a prompt without one (or
/// with one this tool does not know) only accepts the naive set-up's answer.
fn acceptable(checks: &BTreeMap<String, Value>, r: &Rec, naive: &Rec) -> bool {
    let first_tool = r.tool_calls.first().map(|c| c.name.as_str());
    checks
        .get(&r.id)
        .and_then(|c| check::passes(c, &r.content, first_tool))
        .unwrap_or_else(|| r.answer() == naive.answer())
}

pub fn retained(naive: &RunDoc, run: &RunDoc) -> Retained {
    let reference = naive_answers(naive);
    // Per id: (answers, equal to the naive one, acceptable).
    let mut per_id: HashMap<&str, (usize, usize, usize)> = HashMap::new();
    let (mut requests, mut requests_equal) = (0, 0);
    for r in &run.records {
        let Some(n) = reference.get(r.id.as_str()) else {
            continue;
        };
        let e = per_id.entry(r.id.as_str()).or_default();
        e.0 += 1; // a failed answer is neither equal nor acceptable
        if r.ok() {
            requests += 1;
            if r.answer() == n.answer() {
                requests_equal += 1;
                e.1 += 1;
            }
            if acceptable(&naive.checks, r, n) {
                e.2 += 1;
            }
        }
    }
    let all = |f: fn(&(usize, usize, usize)) -> bool| per_id.values().filter(|v| f(v)).count();
    Retained {
        ids: reference.len(),
        ids_equal: all(|&(a, e, _)| a > 0 && a == e),
        ids_acceptable: all(|&(a, _, ok)| a > 0 && a == ok),
        requests,
        requests_equal,
    }
}

pub struct Compare {
    naive: String,
    runs: Vec<String>,
    tiers: Vec<String>,
    target: String,
    target_speedup: f64,
    target_quality: f64,
    title: String,
}

impl Compare {
    pub fn parse(args: &[String]) -> Result<Compare, String> {
        let mut c = Compare {
            naive: String::new(),
            runs: Vec::new(),
            tiers: Vec::new(),
            target: "routed".into(),
            target_speedup: 4.0,
            target_quality: 0.95,
            title: String::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if !a.starts_with("--") {
                c.runs.push(a.clone());
                continue;
            }
            let v = it.next().ok_or(format!("{a} needs a value"))?;
            let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{a}: {e}"));
            match a.as_str() {
                "--naive" => c.naive = v.clone(),
                "--tiers" => {
                    c.tiers = v
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "--target" => c.target = v.clone(),
                "--target-speedup" => c.target_speedup = num(v)?,
                "--target-quality" => c.target_quality = num(v)?,
                "--title" => c.title = v.clone(),
                _ => return Err(format!("unknown argument {a}")),
            }
        }
        if c.naive.is_empty() {
            return Err("compare needs --naive NAIVE.json".into());
        }
        Ok(c)
    }

    pub fn run(self) -> i32 {
        let naive = match load_doc(&self.naive) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("bench-mixed: {e}");
                return 1;
            }
        };
        let mut runs = Vec::new();
        for path in self.runs.iter().filter(|p| **p != self.naive) {
            match load_doc(path) {
                Ok(d) => runs.push(d),
                Err(e) => {
                    eprintln!("bench-mixed: {e}");
                    return 1;
                }
            }
        }
        let (md, verdict) = self.render(&naive, &runs);
        print!("{md}");
        match verdict {
            Some(true) => 0,
            _ => 3,
        }
    }

    pub fn render(&self, naive: &RunDoc, runs: &[RunDoc]) -> (String, Option<bool>) {
        let mut md = format!(
            "# Mixed workload: sluice set-ups against the naive one{}\n\n",
            if self.title.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.title)
            }
        );
        let requests = naive.records.len();
        let repeats = naive.records.iter().filter(|r| r.repeat).count();
        md.push_str(&format!(
            "{} requests of `{}` ({} distinct prompts{}, {} repeats: share {}, Zipf exponent {}, seed {}), \
             closed loop with {} clients, temperature 0, non-streaming; set-ups one after another on one machine.\n\n",
            requests, naive.data, requests - repeats,
            if naive.order == "file" { " in the file's order" } else { " in a seeded shuffle" },
            repeats, naive.repeat_share, naive.zipf, naive.seed, naive.concurrency
        ));
        md.push_str("| set-up | req/s | tokens/s | p50 | p95 | throughput × naive | quality retained | acceptable | share per tier | route reasons | cache hits | errors |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|\n");
        let mut verdicts = Vec::new();
        for d in std::iter::once(naive).chain(runs) {
            let s = &d.summary;
            let q = retained(naive, d);
            let ratio = s.req_per_s / naive.summary.req_per_s;
            let hits = s.cache.get("hit").copied().unwrap_or(0);
            md.push_str(&format!(
                "| {} | {:.2} | {:.1} | {} | {} | {:.2}x | {} | {} | {} | {} | {} | {}{} |\n",
                if d.title.is_empty() {
                    &d.label
                } else {
                    &d.title
                },
                s.req_per_s,
                s.tokens_per_s,
                ms(s.p50_ms),
                ms(s.p95_ms),
                ratio,
                pct(q.ids_equal, q.ids),
                pct(q.ids_acceptable, q.ids),
                shares(&s.tiers, s.ok, &self.tiers),
                shares(&s.reasons, s.ok, &[]),
                pct(hits, s.ok),
                s.errors,
                if s.not_sent > 0 {
                    format!(" ({} not sent)", s.not_sent)
                } else {
                    String::new()
                },
            ));
            if !std::ptr::eq(d, naive) {
                let met = ratio >= self.target_speedup
                    && q.ids > 0
                    && q.ids_equal as f64 >= self.target_quality * q.ids as f64
                    && s.errors == 0
                    && s.not_sent == 0;
                verdicts.push((
                    d.label.clone(),
                    ratio,
                    q,
                    met,
                    d.schedule_hash == naive.schedule_hash,
                ));
            }
        }
        md.push_str(
            "\nreq/s and tokens/s: answered requests and their completion tokens (cache hits count the \
             tokens they deliver) over the wall time from the first request sent to the last answer. \
             p50/p95: latency from send to the last byte. Quality retained: share of the prompt ids \
             whose every answer (text and tool calls, repeats included) equals the naive set-up's answer. \
             Acceptable: share of those ids whose every answer passes the prompt's check (the \
             calibration's rules; a prompt without a check accepts only the naive answer); compare \
             it with the naive row. Share per tier, route reasons and cache hits: of the answered requests, from the \
             `x-sluice-tier`, `x-sluice-route-reason` and `x-sluice-cache` headers (`-`: header absent).\n\n",
        );
        let self_check = {
            let first = naive_answers(naive);
            let differ: std::collections::HashSet<&str> = naive
                .records
                .iter()
                .filter(|r| {
                    r.ok()
                        && first
                            .get(r.id.as_str())
                            .is_some_and(|f| f.answer() != r.answer())
                })
                .map(|r| r.id.as_str())
                .collect();
            differ.len()
        };
        md.push_str(&format!(
            "Naive determinism check: {self_check} prompt id(s) answered differently by the naive set-up's own repeats.\n\n"
        ));
        let mut target = None;
        let naive_ok = retained(naive, naive).ids_acceptable;
        for (label, ratio, q, met, same) in &verdicts {
            md.push_str(&format!(
                "- `{label}`: {ratio:.2}x the naive req/s, quality retained {} ({} of {} ids; {} of {} answers), \
                 acceptable {} ids (naive {}){}: target (>= {:.1}x at >= {:.0}%, no errors) **{}**\n",
                pct(q.ids_equal, q.ids),
                q.ids_equal,
                q.ids,
                q.requests_equal,
                q.requests,
                q.ids_acceptable,
                naive_ok,
                if *same { "" } else { ", NOT the naive run's schedule" },
                self.target_speedup,
                self.target_quality * 100.0,
                if *met && *same { "met" } else { "missed" },
            ));
            if *label == self.target {
                target = Some(*met && *same);
            }
        }
        md.push_str(&match target {
            Some(met) => format!(
                "\nTarget (set-up `{}`): **{}**\n",
                self.target,
                if met { "met" } else { "missed" }
            ),
            None => format!(
                "\nTarget not evaluated: no run labelled `{}`.\n",
                self.target
            ),
        });
        (md, target)
    }
}
