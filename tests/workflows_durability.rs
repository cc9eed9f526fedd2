//! Workflow runs survive sluice being killed, seen from outside: the real `sluice`
//! binary runs on a loopback port with its run store in a temporary folder. A run that
//! finished before a SIGKILL is still listed after a restart, with the same steps and
//! outputs, and its chart and report download byte for byte as before; a run whose
//! tool call was hanging at the kill is reported `interrupted` (its steps too) with an
//! error saying sluice stopped, and is not started again.

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// How long a started sluice may take to answer `/healthz`.
const START_BOUND: Duration = Duration::from_secs(30);
/// Bound on any one wait for something the test expects to happen.
const WAIT_BOUND: Duration = Duration::from_secs(30);

/// The config: `quick` (a report and a chart, independent) and `slow` (a tool call to
/// a page that never answers, then a report of it). `@LISTEN@`, `@BACKEND@`, `@STORE@`
/// and `@HANG@` are filled in. A model is configured only because sluice needs one; it
/// is never asked.
const CONFIG: &str = r#"
[server]
listen = "@LISTEN@"

[backends.unused]
kind = "openai"
url = "http://@BACKEND@/v1"

[[models]]
name = "unused"
backend = "unused"

[tools.web]
kind = "http_get"
allow_hosts = ["127.0.0.1"]
allow_addresses = ["127.0.0.1/32"]
timeout = "60s"

[workflows]
store = @STORE@

[workflows.jobs.quick]
description = "a greeting and a chart"

[workflows.jobs.quick.inputs.who]
type = "string"
default = "world"

[[workflows.jobs.quick.steps]]
name = "report"
template = "hello {{ inputs.who }}"

[[workflows.jobs.quick.steps]]
name = "chart"
chart = "bar"
data = "[{'d': 'a', 'v': 1}, {'d': 'b', 'v': 2}]"
x = "d"
y = "v"
title = "t"

[workflows.jobs.slow]
description = "a fetch that never ends"

[[workflows.jobs.slow.steps]]
name = "fetch"
tool = "web"
timeout = "60s"
arguments = { url = "http://@HANG@/hang" }

[[workflows.jobs.slow.steps]]
name = "summary"
depends_on = ["fetch"]
template = "got {{ steps.fetch.output }}"
"#;

/// A `sluice serve` child process, SIGKILLed (and reaped) when dropped, so a failing
/// assertion leaves nothing behind; its log is printed when the test panics.
struct Sluice {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    client: reqwest::Client,
}

impl Sluice {
    /// Write the config for a free port and start sluice on it, retrying on another
    /// port if that one was taken meanwhile; returns once `/healthz` answers.
    async fn start(dir: &Path, hang: SocketAddr, generation: u32) -> Sluice {
        for attempt in 0..5 {
            let addr = free_port();
            let config = dir.join("sluice.toml");
            let store = toml::Value::String(dir.join("runs.db").display().to_string());
            let text = CONFIG
                .replace("@LISTEN@", &addr.to_string())
                .replace("@BACKEND@", &free_port().to_string())
                .replace("@STORE@", &store.to_string())
                .replace("@HANG@", &hang.to_string());
            std::fs::write(&config, text).unwrap();
            let log = dir.join(format!("sluice-{generation}-{attempt}.log"));
            let out = File::create(&log).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info")
                .env_remove("SLUICE_CONFIG")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("the sluice binary starts");
            let mut sluice = Sluice {
                child,
                addr,
                log,
                client: reqwest::Client::new(),
            };
            if sluice.ready().await {
                return sluice;
            }
            // It exited because the port was taken: drop (reap) it and try another.
        }
        panic!("sluice could not listen on any of 5 free ports");
    }

    /// Poll `/healthz` (a child process has no in-process signal) until it answers;
    /// false if sluice exited because its port was taken, a panic for anything else.
    async fn ready(&mut self) -> bool {
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log_text();
                if log.contains("cannot listen on") {
                    return false;
                }
                panic!("sluice exited at start-up ({status}):\n{log}");
            }
            let probe = self
                .client
                .get(self.url("/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not answer /healthz within {START_BOUND:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("sluice answers")
    }

    /// GET a JSON body, which must come with 200.
    async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.expect("a JSON body")
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("sluice answers")
    }

    /// An artefact's content type and bytes.
    async fn download(&self, url: &str) -> (String, Vec<u8>) {
        let resp = self.get(url).await;
        assert_eq!(resp.status(), 200, "GET {url}");
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        (content_type, resp.bytes().await.unwrap().to_vec())
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- sluice log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// A loopback port nothing listens on (bound, read, released).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A loopback page at `/hang` that reports each request and never answers it.
async fn hanging_page() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hang",
        get(move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                std::future::pending::<()>().await;
                "never sent"
            }
        }),
    );
    (common::serve(app).await, rx)
}

/// The step named `name` of a run.
fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step `{name}` in {run}"))
}

/// The artefact URL of step `name` of a run.
fn artifact_url(run: &Value, name: &str) -> String {
    run["artifacts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["step"] == name))
        .and_then(|a| a["url"].as_str())
        .unwrap_or_else(|| panic!("no artefact of `{name}` in {run}"))
        .to_owned()
}

#[tokio::test]
async fn finished_run_survives_sigkill_and_the_run_in_progress_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let (hang, mut hang_requests) = hanging_page().await;
    let mut first = Sluice::start(dir.path(), hang, 1).await;

    // A run that finishes: a report and a chart.
    let resp = first.post("/v1/workflows/quick/runs", &json!({})).await;
    assert_eq!(resp.status(), 200);
    let quick: Value = resp.json().await.unwrap();
    assert_eq!(quick["status"], "succeeded", "{quick}");
    assert_eq!(step(&quick, "report")["output"], "hello world", "{quick}");
    assert_eq!(step(&quick, "chart")["status"], "succeeded", "{quick}");
    let quick_id = quick["id"].as_str().unwrap().to_owned();
    let (report_type, report) = first.download(&artifact_url(&quick, "report")).await;
    assert_eq!(report_type, "text/markdown; charset=utf-8");
    assert_eq!(report, b"hello world");
    let (chart_type, chart) = first.download(&artifact_url(&quick, "chart")).await;
    assert_eq!(chart_type, "image/svg+xml");
    assert!(
        String::from_utf8_lossy(&chart).contains("<svg"),
        "not an SVG"
    );
    let quick_stored = first
        .get_json(&format!("/v1/workflows/runs/{quick_id}"))
        .await;

    // A run in progress: its tool call is waiting on a page that never answers.
    let resp = first
        .post("/v1/workflows/slow/runs", &json!({"background": true}))
        .await;
    assert_eq!(resp.status(), 202);
    let slow: Value = resp.json().await.unwrap();
    let slow_id = slow["id"].as_str().expect("the run's id").to_owned();
    tokio::time::timeout(WAIT_BOUND, hang_requests.recv())
        .await
        .expect("the tool step fetches the page")
        .unwrap();
    let running = first
        .get_json(&format!("/v1/workflows/runs/{slow_id}"))
        .await;
    assert_eq!(running["status"], "running", "{running}");
    assert_eq!(step(&running, "fetch")["status"], "running", "{running}");
    assert_eq!(step(&running, "summary")["status"], "pending", "{running}");

    first.kill();
    drop(first);
    let second = Sluice::start(dir.path(), hang, 2).await;

    // The finished run reads back exactly as before the kill.
    let listed = second.get_json("/v1/workflows/quick/runs").await;
    let runs = listed["data"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{listed}");
    assert_eq!(runs[0], quick_stored);
    assert_eq!(runs[0]["status"], "succeeded");
    for name in ["report", "chart"] {
        assert_eq!(step(&runs[0], name)["output"], step(&quick, name)["output"]);
    }
    assert_eq!(
        second.download(&artifact_url(&runs[0], "report")).await,
        (report_type, report)
    );
    assert_eq!(
        second.download(&artifact_url(&runs[0], "chart")).await,
        (chart_type, chart)
    );

    // The run in progress is interrupted, with every step that had not finished.
    let slow = second
        .get_json(&format!("/v1/workflows/runs/{slow_id}"))
        .await;
    assert_eq!(slow["status"], "interrupted", "{slow}");
    let error = slow["error"].as_str().unwrap_or_default();
    assert!(error.contains("sluice stopped"), "{slow}");
    assert!(slow["finished_at"].is_u64(), "{slow}");
    assert_eq!(step(&slow, "fetch")["status"], "interrupted", "{slow}");
    assert_eq!(step(&slow, "summary")["status"], "interrupted", "{slow}");
    // The same words a graceful stop leaves.
    assert_eq!(
        step(&slow, "fetch")["error"],
        "sluice stopped while this step ran"
    );
    assert_eq!(step(&slow, "summary")["error"], "not run: sluice stopped");
    let listed = second.get_json("/v1/workflows/slow/runs").await;
    assert_eq!(listed["data"][0]["id"], slow_id.as_str(), "{listed}");
    assert_eq!(listed["data"][0]["status"], "interrupted", "{listed}");

    // It was not started again: the page was asked once, before the kill.
    assert!(hang_requests.try_recv().is_err(), "the slow run was re-run");
}
