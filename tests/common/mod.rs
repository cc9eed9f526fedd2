//! Test support: a real sluice on 127.0.0.1:0 and small upstreams on port 0 that speak
//! the documented Ollama and OpenAI wire formats.

#![allow(dead_code)]

pub mod engine;
pub mod fake_ollama;
pub mod fake_openai;
pub mod flaky;
pub mod redis;
pub mod scripted;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), sluice::RunError>>,
}

impl Gateway {
    /// Start sluice with a TOML config; `{upstream}` in the text is not special, build
    /// the text with the upstream's address yourself.
    pub async fn start(toml: &str) -> Gateway {
        let config = sluice::config::load_str(toml, Vec::new()).expect("test config is valid");
        Gateway::start_with(config).await
    }

    pub async fn start_with(config: sluice::config::Config) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sluice::run(listener, config, async move {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            client: reqwest::Client::new(),
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST JSON to a path.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("gateway answers")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("gateway answers")
    }

    /// Begin graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A config with one backend of `kind` at `url` and logical models `models`
/// (each `(name, upstream_model)`), plus extra TOML appended.
pub fn config(kind: &str, url: &str, models: &[(&str, &str)], extra: &str) -> String {
    let mut s = format!(
        "[backends.up]\nkind = \"{kind}\"\nurl = \"{url}\"\nrequest_timeout = \"2s\"\nread_timeout = \"2s\"\n\n"
    );
    for (name, upstream) in models {
        s.push_str(&format!(
            "[[models]]\nname = \"{name}\"\nbackend = \"up\"\nupstream_model = \"{upstream}\"\n\n"
        ));
    }
    s.push_str(extra);
    s
}

/// Serve an axum app on 127.0.0.1:0.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Parse an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(|d| d.trim().to_owned())
        })
        .collect()
}

/// The chunks before `[DONE]`, which must be there, parsed with async-openai's type.
pub fn parse_chunks(
    data: &[String],
) -> Vec<async_openai::types::chat::CreateChatCompletionStreamResponse> {
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// The same request body with `"stream": true`.
pub fn streaming(mut body: serde_json::Value) -> serde_json::Value {
    body["stream"] = serde_json::json!(true);
    body
}

/// The SSE `data:` payloads of a streamed chat answer, checking status and content type.
pub async fn stream_data(gw: &Gateway, body: &serde_json::Value) -> Vec<String> {
    let resp = gw.post("/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    sse_data(&resp.text().await.unwrap())
}

/// Status and the parsed `error` object of an error response, checking the OpenAI
/// shape (`message`, `type`, `param`, `code`) on the way.
pub async fn error_of(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("error body is JSON");
    let err = body["error"].clone();
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(err["type"].is_string(), "{body}");
    let obj = err.as_object().expect("error is an object");
    assert!(
        obj.contains_key("param") && obj.contains_key("code"),
        "{body}"
    );
    (status, err)
}

/// The value of one sample in the gateway's Prometheus text, by its full
/// name-and-labels prefix (0 when absent).
pub async fn metric(gw: &Gateway, prefix: &str) -> f64 {
    let text = gw.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A user message request body.
pub fn chat_body(model: &str, text: &str) -> serde_json::Value {
    serde_json::json!({ "model": model, "messages": [{ "role": "user", "content": text }] })
}

/// Wait until Redis counts at least `clients` connections. sluice replicas connect to the
/// cache's shared level in the background, and an answer finished before that is not
/// written to Redis, so a test that expects the write waits for the replicas first.
pub async fn wait_for_redis_clients(
    conn: &mut ::redis::aio::MultiplexedConnection,
    clients: usize,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let info: String = ::redis::cmd("INFO")
            .arg("clients")
            .query_async(conn)
            .await
            .unwrap();
        let connected = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if connected >= clients {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {connected} of {clients} clients connected to redis"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
