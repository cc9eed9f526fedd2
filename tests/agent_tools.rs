//! The agent loop with network tools, seen from outside: parallel calls really overlap,
//! a client that goes away stops the tool call under way, side-effect tools run only
//! where enabled (and such runs are neither merged nor cached), and `approval =
//! "client"` hands the call back to the client. The model is the scripted upstream.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use common::scripted::{self, script};
use common::{error_of, Gateway};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A loopback server that accepts connections and never answers; `closed` gets the
/// instant each connection is closed by its client.
async fn silent() -> (String, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = tx.send(Instant::now());
            });
        }
    });
    (format!("http://127.0.0.1:{}/", addr.port()), rx)
}

/// A loopback page answered after `delay`.
async fn slow_page(delay: Duration) -> String {
    let app = Router::new().route(
        "/",
        axum::routing::get(move || async move {
            tokio::time::sleep(delay).await;
            "slow page"
        }),
    );
    let addr = common::serve(app).await;
    format!("http://127.0.0.1:{}/", addr.port())
}

async fn start(extra: &str) -> (Gateway, scripted::Scripted) {
    let up = scripted::start().await;
    let toml = format!(
        r#"
[backends.up]
kind = "openai"
url = "{url}"

[tools.http_get]
kind = "http_get"
allow_hosts = ["127.0.0.1"]
allow_addresses = ["127.0.0.1/32"]
timeout = "10s"

[[models]]
name = "web"
backend = "up"
upstream_model = "scripted"
tools = ["http_get"]
agent.tool_timeout = "10s"
{extra}
"#,
        url = up.url
    );
    (Gateway::start(&toml).await, up)
}

fn get(url: &str) -> Value {
    json!({"name": "http_get", "arguments": {"url": url}})
}

fn body(model: &str, turns: Value) -> Value {
    json!({"model": model, "temperature": 0,
           "messages": [{"role": "user", "content": script(turns, "done")}]})
}

#[tokio::test]
async fn parallel_calls_overlap() {
    let (gw, _up) = start("").await;
    let delay = Duration::from_millis(400);
    let (a, b, c) = (
        slow_page(delay).await,
        slow_page(delay).await,
        slow_page(delay).await,
    );
    let t = Instant::now();
    let v: Value = gw
        .post(
            "/v1/chat/completions",
            &body("web", json!([[get(&a), get(&b), get(&c)]])),
        )
        .await
        .json()
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .matches("slow page")
            .count(),
        3
    );
    // Three 400 ms calls one after another would take 1.2 s.
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_running_tool() {
    let (gw, _up) = start("").await;
    let (url, mut closed) = silent().await;
    for stream in [false, true] {
        let mut b = body("web", json!([[get(&url)]]));
        b["stream"] = json!(stream);
        let request = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .json(&b)
            .send();
        // The tool is running once its connection is open: give up on the answer then.
        let gone = tokio::select! {
            _ = request => panic!("the tool never answers, so neither can the gateway"),
            _ = tokio::time::sleep(Duration::from_millis(300)) => Instant::now(),
        };
        let at = tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the tool's connection is closed")
            .unwrap();
        let after = at.saturating_duration_since(gone);
        assert!(
            after < Duration::from_millis(50),
            "stream={stream}: {after:?}"
        );
    }
}

#[tokio::test]
async fn side_effect_tools_run_only_where_enabled_and_are_never_cached() {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = {
        let received = received.clone();
        Router::new().route(
            "/hook",
            post(move |Json(v): Json<Value>| async move {
                received.lock().unwrap().push(v);
                "queued"
            }),
        )
    };
    let hook = common::serve(app).await;
    let extra = format!(
        r#"
[tools.notify]
kind = "webhook"
description = "notify the on-call team"
url = "http://127.0.0.1:{port}/hook"
allow_addresses = ["127.0.0.1/32"]
parameters = {{ type = "object", properties = {{ text = {{ type = "string" }} }} }}

[tools.ask]
kind = "webhook"
description = "ask a human first"
url = "http://127.0.0.1:{port}/hook"
allow_addresses = ["127.0.0.1/32"]
approval = "client"
public = true

[[models]]
name = "ops"
backend = "up"
upstream_model = "scripted"
tools = ["notify"]
agent.allow_side_effects = true

[[models]]
name = "careful"
backend = "up"
upstream_model = "scripted"
tools = ["ask"]
"#,
        port = hook.port()
    );
    let (gw, up) = start(&extra).await;
    let call = json!([[{"name": "notify", "arguments": {"text": "disk full"}}]]);
    for _ in 0..2 {
        let r = gw
            .post("/v1/chat/completions", &body("ops", call.clone()))
            .await;
        assert_eq!(r.headers()["x-sluice-cache"], "bypass");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "done [queued]");
    }
    assert_eq!(
        received.lock().unwrap().len(),
        2,
        "each request ran the webhook"
    );
    assert_eq!(received.lock().unwrap()[0], json!({"text": "disk full"}));

    // approval = "client": the call goes back to the client, nothing is sent.
    let ask = json!([[{"name": "ask", "arguments": {"question": "restart?"}}]]);
    let v: Value = gw
        .post("/v1/chat/completions", &body("careful", ask))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "ask"
    );
    assert_eq!(received.lock().unwrap().len(), 2);

    // Where side effects are off, a request cannot add the webhook.
    let before = up.requests().len();
    let b = body("web", json!([[{"name": "notify", "arguments": {}}]]));
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("x-sluice-tools", "notify")
        .json(&b)
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(resp).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["code"], "tool_not_allowed");
    assert_eq!(up.requests().len(), before);
}

#[tokio::test]
async fn a_model_listing_a_side_effect_tool_without_enabling_them_is_a_config_error() {
    let toml = r#"
[backends.up]
kind = "openai"
url = "http://127.0.0.1:9/v1"

[tools.notify]
kind = "webhook"
description = "notify"
url = "https://hooks.example.com/x"

[[models]]
name = "m"
backend = "up"
tools = ["notify", "nope"]
"#;
    let err = sluice::config::load_str(toml, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("models[0].tools[0]") && err.contains("side effects"),
        "{err}"
    );
    assert!(
        err.contains("models[0].tools[1]") && err.contains("no [tools.nope]"),
        "{err}"
    );
}

#[tokio::test]
async fn an_mcp_server_s_tools_run_in_the_loop() {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/.venv/bin/python");
    assert!(python.exists(), "run tests/mcp/setup.sh (make test does)");
    let extra = format!(
        r#"
[tools.time]
kind = "mcp"
command = ["{}", "-m", "mcp_server_time", "--local-timezone", "UTC"]
allow_tools = ["get_current_time"]
timeout = "10s"

[[models]]
name = "clock"
backend = "up"
upstream_model = "scripted"
tools = ["time"]
"#,
        python.display()
    );
    let (gw, _up) = start(&extra).await;
    let turns =
        json!([[{"name": "time__get_current_time", "arguments": {"timezone": "Europe/Paris"}}]]);
    // The server connects in the background: until then `clock` has no server tools.
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let resp = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .header("x-sluice-trace", "1")
            .json(&body("clock", turns.clone()))
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        if v["sluice_steps"].as_array().is_some_and(|s| !s.is_empty()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the MCP server's tools never appeared: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["sluice_steps"][0]["tool"], "time__get_current_time");
    assert_eq!(v["sluice_steps"][0]["outcome"], "ok");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.contains("Europe/Paris") && text.contains("datetime"),
        "{text}"
    );
    assert_eq!(
        v["sluice_steps"][0]["volatile"], true,
        "MCP tools are volatile by default"
    );
}
