//! The Prometheus rules and the Grafana dashboard against a live sluice: catches a metric
//! or label renamed in `src/metrics.rs` that an alert or a panel still queries (they
//! would show "No data" or never fire, and promtool's unit tests cannot see that).
//!
//! In-process sluice (an openai backend on a loopback fake upstream with a switchable
//! delay, the embedded engine with the bundled model, a real `redis-server` as the cache's
//! second level, a server tool, a workflow), and a real `prometheus` (Debian's 2.42, from
//! `make ops-tools`) started on a free loopback port with its TSDB in a tempdir. Its
//! config is `prometheus/prometheus.yml` with the intervals set to 1 s and the target set
//! to this gateway; its rules are COPIES of `prometheus/rules/*.yml` in which every `for:`
//! is shortened to 5 s, so an alert can fire within the test. After mixed traffic (chat,
//! long streams, 502, 503, cache hits, an agent run, engine requests, a workflow run):
//! - every rule loads, evaluates without error, and each vector selector in it returns
//!   series; each rule's expression (alerts without their threshold comparison, and each
//!   side of a top-level `or`/`and`/`unless` apart from `absent(...)`) returns data;
//! - every panel expression and `label_values` variable of `grafana/dashboards/sluice.json`
//!   (when present) returns data, Grafana variables replaced (`$model` -> `.*`,
//!   `$__rate_interval` -> `1m`);
//! - long streams leave the non-streaming p95 under 500 ms.
//!
//! Then the fake upstream answers in 600 ms and `SluiceChatLatencyHigh` must fire.

mod common;
#[path = "prometheus_live/promql.rs"]
mod promql;
#[path = "prometheus_live/server.rs"]
mod server;
#[path = "prometheus_live/upstream.rs"]
mod upstream;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{chat_body, streaming, Gateway};
use promql::{dashboard_expressions, parts_with_data, selectors};
use serde_json::{json, Value};
use server::{write_config, Prometheus};

const SHORT_FOR: &str = "5s";
const SLOW: Duration = Duration::from_millis(600);
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

async fn gateway(dir: &Path, upstream: &str, redis: &RedisServer) -> Gateway {
    let toml = format!(
        r#"
[cache]
redis_url = "{redis}"
redis_timeout = "500ms"

[backends.up]
kind = "openai"
url = "{upstream}"
request_timeout = "10s"
read_timeout = "10s"

[backends.local]
kind = "onnx"
model_dir = "{ROOT}/models/sluice-tiny"
tiers = ["int8"]
max_batch_size = 4
queue_size = 16
threads = 1
ort_library = "{ROOT}/.ort/libonnxruntime.so"

[tools.calculator]
kind = "calculator"

[[models]]
name = "gpt"
backend = "up"
upstream_model = "echo"

[[models]]
name = "gpt-broken"
backend = "up"
upstream_model = "fail-500"

[[models]]
name = "gpt-busy"
backend = "up"
upstream_model = "fail-503"

[[models]]
name = "agent"
backend = "up"
upstream_model = "echo"
tools = ["calculator"]

[[models]]
name = "tiny"
backend = "local"
tier = "int8"

[workflows]
store = "{store}"

[[workflows.jobs.hello.steps]]
name = "greet"
template = "hello"
"#,
        redis = redis.url(),
        store = dir.join("runs.db").display(),
    );
    Gateway::start(&toml).await
}

async fn status(gw: &Gateway, path: &str, body: Value) -> (u16, String) {
    let resp = gw.post(path, &body).await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// One round of every kind of request the rules and panels look at.
async fn mixed_traffic(gw: &Gateway, round: u32) {
    let chat = "/v1/chat/completions";
    let cached = json!({"model": "gpt", "temperature": 0, "messages": [{"role": "user", "content": "cached"}]});
    let tiny = json!({"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": format!("hi {round}")}]});
    let requests = [
        (
            "chat",
            chat,
            chat_body("gpt", &format!("fast {round}")),
            200,
        ),
        (
            "long stream",
            chat,
            streaming(chat_body("gpt", &format!("long {round}"))),
            200,
        ),
        ("cacheable chat", chat, cached.clone(), 200),
        ("failing upstream", chat, chat_body("gpt-broken", "x"), 502),
        ("overloaded upstream", chat, chat_body("gpt-busy", "x"), 503),
        (
            "agent run",
            chat,
            chat_body("agent", &format!("2+2? {round}")),
            200,
        ),
        ("embedded engine", chat, streaming(tiny), 200),
        ("workflow", "/v1/workflows/hello/runs", json!({}), 200),
    ];
    let sent = requests
        .iter()
        .map(|(_, path, body, _)| status(gw, path, body.clone()));
    let answers = futures::future::join_all(sent).await;
    for ((what, _, _, want), (got, body)) in requests.iter().zip(answers) {
        assert_eq!(got, *want, "{what}: {body}");
    }
    let resp = gw.post(chat, &cached).await;
    assert_eq!(resp.headers()["x-sluice-cache"], "hit");
}

/// What does not return data yet: rule health, selectors, rule parts, dashboard parts.
async fn missing_data(prom: &Prometheus, dashboard: &[(String, String)]) -> Vec<String> {
    let mut checks: Vec<(String, String)> = Vec::new();
    let mut missing = Vec::new();
    for rule in prom.rules().await {
        let (name, expr) = (
            rule["name"].as_str().unwrap(),
            rule["query"].as_str().unwrap(),
        );
        if rule["health"] != "ok" {
            missing.push(format!(
                "rule {name}: health {} {}",
                rule["health"], rule["lastError"]
            ));
        }
        if rule["type"] == "recording" {
            checks.push((format!("recording rule {name}"), name.to_owned()));
        }
        for part in parts_with_data(expr) {
            checks.push((format!("rule {name}"), part));
        }
        for selector in selectors(expr) {
            checks.push((format!("rule {name}"), selector));
        }
    }
    for (what, expr) in dashboard {
        checks.push((what.clone(), expr.clone()));
        for selector in selectors(expr) {
            checks.push((what.clone(), selector));
        }
    }
    checks.sort_by(|a, b| a.1.cmp(&b.1));
    checks.dedup_by(|a, b| a.1 == b.1);
    for (what, expr) in checks {
        if prom.query(&expr).await.is_empty() {
            missing.push(format!("{what}: no data for `{expr}`"));
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_and_dashboard_query_live_metrics_and_the_latency_alert_fires() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().expect("redis-server is needed: run make redis-server");
    let (upstream_url, upstream) = upstream::start().await;
    let gw = gateway(dir.path(), &upstream_url, &redis).await;
    let rule_count = write_config(dir.path(), &gw.addr.to_string());
    let prom = Prometheus::start(dir.path()).await;
    let loaded = prom.rules().await.len();
    assert_eq!(
        loaded,
        rule_count,
        "rules in prometheus/rules/*.yml vs loaded:\n{}",
        prom.log_tail()
    );
    let dashboard_file = format!("{ROOT}/grafana/dashboards/sluice.json");
    let dashboard = match std::fs::read_to_string(&dashboard_file) {
        Ok(text) => dashboard_expressions(&serde_json::from_str(&text).expect("dashboard is JSON")),
        Err(_) => Vec::new(),
    };

    // Traffic until every expression has data (rates need two scrapes of a counter).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    let missing = loop {
        mixed_traffic(&gw, round).await;
        round += 1;
        if round < 3 {
            continue;
        }
        let missing = missing_data(&prom, &dashboard).await;
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
    };
    assert!(
        missing.is_empty(),
        "{} expressions without data after {round} rounds of traffic:\n{}",
        missing.len(),
        missing.join("\n")
    );
    eprintln!(
        "{loaded} rules and {} dashboard expressions return data ({:?})",
        dashboard.len(),
        started.elapsed()
    );

    // Long streams (0.8 s each) do not count as slow chat answers.
    let streams = "histogram_quantile(0.95, sum by (le) (rate(sluice_http_request_duration_seconds_bucket{model=\"gpt\", stream=\"true\"}[5m])))";
    let value = |r: Vec<Value>| -> f64 {
        let sample = r.first().expect("a sample");
        sample["value"][1].as_str().unwrap().parse().unwrap()
    };
    assert!(
        value(prom.query(streams).await) > 0.5,
        "the streams were long"
    );
    let p95 = value(
        prom.query("sluice:chat_request_duration_seconds:p95_5m{model=\"gpt\"}")
            .await,
    );
    assert!(p95 < 0.5, "non-streaming p95 {p95} s counts the streams");
    let gpt_alerts = |alerts: Vec<Value>| -> Vec<Value> {
        alerts
            .into_iter()
            .filter(|a| a["labels"]["model"] == "gpt")
            .collect()
    };
    let before = gpt_alerts(prom.alerts("SluiceChatLatencyHigh").await);
    assert!(before.is_empty(), "pending or firing already: {before:?}");

    // Now the upstream answers in 600 ms: the alert fires (its `for:` is 5 s here).
    upstream
        .delay_ms
        .store(SLOW.as_millis() as u64, Ordering::SeqCst);
    let drive = async {
        for i in 0.. {
            let slow = (0..4).map(|j| {
                let body = chat_body("gpt", &format!("slow {i} {j}"));
                status(&gw, "/v1/chat/completions", body)
            });
            for (got, body) in futures::future::join_all(slow).await {
                assert_eq!(got, 200, "{body}");
            }
        }
    };
    let firing = async {
        loop {
            let alerts = gpt_alerts(prom.alerts("SluiceChatLatencyHigh").await);
            let fired = alerts
                .into_iter()
                .find(|a| a["state"] == "firing" && a["labels"]["signal"] == "request_duration");
            if let Some(alert) = fired {
                return alert;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let within = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            alert = firing => alert,
            _ = drive => unreachable!("the driver never ends"),
        }
    });
    let Ok(alert) = within.await else {
        let alerts = prom.alerts("SluiceChatLatencyHigh").await;
        panic!("SluiceChatLatencyHigh did not fire for gpt in 60 s; alerts now: {alerts:?}");
    };
    assert_eq!(alert["labels"]["severity"], "warning");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("gpt"),
        "{alert}"
    );
    eprintln!(
        "SluiceChatLatencyHigh fired after {:?} in all",
        started.elapsed()
    );
}
