//! Criterion bench for the route stage's complexity scorer (`pipeline::route::score`):
//! `Features::of` + `Scorer::score` on a 20-turn conversation of about 2,000 tokens
//! (~8 KB of English prose, code blocks and numbers), and on the same bytes sent as user
//! text only (the scorer reads user turns, so that is its worst case). Criterion reports
//! mean and median; the p99 is measured here over 10,000 single timed calls and printed
//! as `scorer p99: X µs`.
//!
//! Also the whole route stage (`Routes::route`) for the same conversation on a pinned
//! model and on a tiered one (score, thresholds, tier lookup), and the difference: what
//! routing adds to a request, printed as `routed - pinned p50/p99`.
//!
//! Run: `cargo bench --bench route`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::backend::Backends;
use sluice::config::{Weights, DEFAULT_BIAS};
use sluice::domain::{ChatRequest, Message, Role, Sampling};
use sluice::metrics::Metrics;
use sluice::pipeline::route::score::{Features, Scorer};
use sluice::pipeline::Routes;

const USER: [&str; 5] = [
    "I'm reviewing a pull request for our billing service and something looks off. The \
     function below is supposed to prorate a monthly plan of $49.99 when a customer \
     upgrades on day 17 of a 30-day cycle, but finance says invoices are off by a few \
     cents. Can you explain why, step by step?\n\n```python\ndef prorate(price, day, days=30):\n    \
     remaining = days - day\n    return round(price * remaining / days, 2)\n```\n\nWe bill in \
     USD and store amounts as floats, which I suspect is part of it. The same helper is \
     used for downgrades and for annual plans ($499 a year), so whatever we change has to \
     keep those invoices identical to what customers were already charged last quarter.",
    "Thanks. Then compare that with storing cents as integers: if 12,000 customers upgrade \
     each month and the average error is 0.4 cents, how many dollars do we lose per year? \
     Show the calculation, and tell me whether banker's rounding would change the total. \
     For context, finance reconciles against Stripe exports every night and flags any \
     invoice whose total differs by more than 1 cent, which has produced 312 tickets since \
     March; I need a number I can put in front of them on Thursday.",
    "Next question. Our Postgres query for the monthly report takes 3.2 s on a table with \
     about 45 million rows:\n\n```sql\nSELECT customer_id, SUM(amount) FROM invoices\nWHERE \
     created_at >= now() - interval '30 days'\nGROUP BY customer_id\nORDER BY 2 DESC LIMIT \
     100;\n```\n\nThere is an index on created_at. What would you change first, and why? \
     The database is Postgres 15 on a db.r6g.xlarge (4 vCPU, 32 GB RAM), shared_buffers is \
     8 GB, and the table grows by roughly 1.5 million rows a month. Vacuum runs nightly and \
     the report is read by about 40 people, mostly on Monday mornings.",
    "Here is the plan I came up with:\n1. add a composite index on (created_at, customer_id, \
     amount)\n2. run ANALYZE on the table\n3. move the report to a materialized view refreshed \
     every 15 minutes\n\nIs the order right? Finally, estimate the index size if each row is \
     roughly 24 bytes of key plus 8 bytes of overhead. I also wonder whether we should \
     partition invoices by month instead: we keep 7 years for audit, but the report only \
     ever reads the last 30 days, and deleting old rows today takes hours and bloats the \
     table until the next vacuum.",
    "One more thing: the on-call team wants an alert when p95 latency of /v1/invoices goes \
     above 250 ms for 5 minutes. Write the Prometheus rule, and explain what happens to the \
     alert if the service restarts halfway through the window. Keep it short, I'll paste it \
     into our runbook. We scrape every 15 s, the histogram has the default buckets \
     (0.005 to 10 s), and the service runs 6 replicas behind an ALB, so please make sure \
     the expression aggregates across pods before taking the quantile rather than after.",
];

const ASSISTANT: [&str; 5] = [
    "The drift comes from binary floating point: 49.99 has no exact representation, so \
     `price * remaining / days` lands a hair below the half-cent and `round` goes the other \
     way from what finance expects. Use `Decimal` with ROUND_HALF_UP, or integer cents, \
     and prorate with integer arithmetic: `price_cents * remaining // days`, then settle \
     the remainder on the last invoice of the cycle.",
    "With integer cents the error disappears entirely. At 12,000 upgrades × 0.4 ¢ × 12 \
     months you lose about $576 a year. Banker's rounding would cut the bias to near zero \
     on average but individual invoices would still differ from finance's spreadsheet, so \
     agree on one rounding rule with them first and encode it in a single function.",
    "The index on created_at helps the filter, but the aggregate still visits 45M heap \
     rows. A covering index lets Postgres do an index-only scan; check `EXPLAIN (ANALYZE, \
     BUFFERS)` before and after, and make sure the visibility map is current (a fresh \
     VACUUM) or the index-only scan will still touch the heap.",
    "The order is right: index, then statistics, then the view. For 45M rows at ~32 bytes \
     each the index is roughly 1.4 GB before B-tree overhead, so budget about 2 GB. Monthly \
     partitions would also make retention a cheap `DROP TABLE` instead of a long DELETE.",
    "```yaml\n- alert: InvoicesLatencyHigh\n  expr: histogram_quantile(0.95, sum by (le) \
     (rate(http_request_duration_seconds_bucket{route=\"/v1/invoices\"}[5m]))) > 0.25\n  \
     for: 5m\n```\nA restart resets the counters; `rate` handles that, so the alert keeps \
     its pending state.",
];

/// 20 turns (10 user, 10 assistant) after a system prompt, about 8 KB in all.
fn conversation() -> ChatRequest {
    let mut messages = vec![Message::text(
        Role::System,
        "You are a senior engineer. Answer precisely and show your work.",
    )];
    for turn in 0..10 {
        messages.push(Message::text(Role::User, USER[turn % USER.len()]));
        messages.push(Message::text(
            Role::Assistant,
            ASSISTANT[turn % ASSISTANT.len()],
        ));
    }
    request(messages)
}

/// The same conversation with every turn sent as user text.
fn all_user() -> ChatRequest {
    let mut r = conversation();
    for m in &mut r.messages {
        if m.role == Role::Assistant {
            m.role = Role::User;
        }
    }
    r
}

fn request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        model: "bench".into(),
        messages,
        tools: Vec::new(),
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: None,
        sampling: Sampling {
            max_tokens: Some(512),
            ..Sampling::default()
        },
        n: 1,
        user: None,
        extra: Default::default(),
    }
}

fn bytes(r: &ChatRequest, role: Option<Role>) -> usize {
    r.messages
        .iter()
        .filter(|m| role.is_none_or(|want| m.role == want))
        .map(|m| m.text_content().len())
        .sum()
}

/// Time `n` single calls and print p50/p99/max.
fn percentiles(label: &str, scorer: &Scorer, r: &ChatRequest, n: usize) {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            black_box(scorer.score(&Features::of(black_box(r))));
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    let at = |q: f64| times[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e6;
    println!(
        "{label}: {} bytes ({} user), score {:.3}",
        bytes(r, None),
        bytes(r, Some(Role::User)),
        scorer.score(&Features::of(r)),
    );
    println!(
        "scorer p99: {:.2} µs  (p50 {:.2} µs, max {:.2} µs, {n} calls) [{label}]",
        at(0.99),
        at(0.50),
        at(1.0)
    );
}

fn score(c: &mut Criterion) {
    let scorer = Scorer::new(DEFAULT_BIAS, &Weights::default());
    let cases = [
        ("20-turn conversation", conversation()),
        ("20-turn conversation, all user text", all_user()),
    ];
    for (label, r) in &cases {
        // Warm up, then the percentile run criterion cannot give.
        for _ in 0..1_000 {
            black_box(scorer.score(&Features::of(black_box(r))));
        }
        percentiles(label, &scorer, r, 10_000);
        c.bench_function(&format!("score {label}"), |b| {
            b.iter(|| black_box(scorer.score(&Features::of(black_box(r)))))
        });
    }
}

/// A catalog with a pinned and a tiered model on one (never contacted) Ollama backend.
fn routes() -> Routes {
    let config = sluice::config::load_str(
        "[backends.up]\nkind = \"ollama\"\nurl = \"http://127.0.0.1:9\"\n\n\
         [[models]]\nname = \"pinned\"\nbackend = \"up\"\n\n\
         [[models]]\nname = \"tiered\"\nbackend = \"up\"\ntiers = [\"q4_K_M\", \"q8_0\", \"fp16\"]\n\
         route.thresholds = [0.3, 0.7]\n",
        Vec::new(),
    )
    .expect("bench config is valid");
    let metrics = Metrics::new().expect("metrics");
    let backends = Backends::from_config(&config, &metrics).expect("backends");
    Routes::new(&config, &backends)
}

fn timed(routes: &Routes, r: &ChatRequest, n: usize) -> Vec<f64> {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            let decision = routes.route(black_box(r), None, false);
            black_box(decision.is_ok());
            drop(decision);
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn route(c: &mut Criterion) {
    let routes = routes();
    let mut pinned = conversation();
    pinned.model = "pinned".into();
    let mut tiered = conversation();
    tiered.model = "tiered".into();
    for r in [&pinned, &tiered] {
        for _ in 0..1_000 {
            black_box(routes.route(black_box(r), None, false).is_ok());
        }
    }
    let n = 10_000;
    let (p, t) = (timed(&routes, &pinned, n), timed(&routes, &tiered, n));
    let at = |v: &[f64], q: f64| v[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "route pinned p50 {:.2} µs p99 {:.2} µs; tiered p50 {:.2} µs p99 {:.2} µs; \
         routed - pinned p50 {:+.2} µs p99 {:+.2} µs",
        at(&p, 0.5),
        at(&p, 0.99),
        at(&t, 0.5),
        at(&t, 0.99),
        at(&t, 0.5) - at(&p, 0.5),
        at(&t, 0.99) - at(&p, 0.99),
    );
    c.bench_function("route pinned", |b| {
        b.iter(|| black_box(routes.route(black_box(&pinned), None, false).is_ok()))
    });
    c.bench_function("route tiered", |b| {
        b.iter(|| black_box(routes.route(black_box(&tiered), None, false).is_ok()))
    });
}

criterion_group!(benches, score, route);
criterion_main!(benches);
