//! The operational surface: the model catalog, health, readiness and Prometheus metrics.

mod common;

use async_openai::types::models::{ListModelResponse, Model};
use common::{chat_body, config, fake_openai, Gateway};
use serde_json::{json, Value};

#[tokio::test]
async fn models_lists_the_catalog_in_openai_shape() {
    let up = fake_openai::start().await;
    let extra = "[[models]]\nname = \"org/model:7b\"\nbackend = \"up\"\nowned_by = \"acme\"\n";
    let gw = Gateway::start(&config("openai", &up.url, &[("gpt", "gpt-4o-mini")], extra)).await;
    let list: ListModelResponse = gw.get("/v1/models").await.json().await.unwrap();
    assert_eq!(list.object, "list");
    let ids: Vec<_> = list.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, vec!["gpt", "org/model:7b"]);
    assert!(list
        .data
        .iter()
        .all(|m| m.object == "model" && m.created > 0));
    let one: Model = gw
        .get("/v1/models/org/model:7b")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (one.id.as_str(), one.owned_by.as_str()),
        ("org/model:7b", "acme")
    );
}

#[tokio::test]
async fn healthz_and_readyz_report_process_and_backends() {
    let up = fake_openai::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!(
        "http://127.0.0.1:{}/v1",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let gw = Gateway::start(&config("openai", &up.url, &[("gpt", "gpt")], "")).await;
    assert_eq!(gw.get("/healthz").await.status(), 200);
    let resp = gw.get("/readyz").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["backends"]["up"]["ready"], true);

    let extra = format!("[backends.down]\nkind = \"openai\"\nurl = \"{dead}\"\n");
    let gw = Gateway::start(&config("openai", &up.url, &[("gpt", "gpt")], &extra)).await;
    assert_eq!(
        gw.get("/healthz").await.status(),
        200,
        "the process is up even if a backend is not"
    );
    // No model needs `down`: the gateway stays ready and reports it (degraded).
    let resp = gw.get("/readyz").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["backends"]["up"]["ready"], true);
    assert_eq!(body["backends"]["down"]["ready"], false);
    assert!(body["backends"]["down"]["error"].is_string());
    assert_eq!(body["models"]["gpt"]["ready"], true);

    // A model whose only backend is down makes it not ready.
    let extra = format!(
        "[backends.down]\nkind = \"openai\"\nurl = \"{dead}\"\n\n[[models]]\nname = \"lost\"\nbackend = \"down\"\n"
    );
    let gw = Gateway::start(&config("openai", &up.url, &[("gpt", "gpt")], &extra)).await;
    let resp = gw.get("/readyz").await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["models"]["lost"]["ready"], false);
    assert_eq!(body["models"]["gpt"]["ready"], true);
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name_and_labels} not in\n{text}"))
}

#[tokio::test]
async fn metrics_count_requests_tokens_ttft_and_upstream_errors() {
    let up = fake_openai::start().await;
    let gw = Gateway::start(&config(
        "openai",
        &up.url,
        &[("gpt", "gpt-4o-mini"), ("bad", "fail-500")],
        "",
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat_body("gpt", "a b"))
                .await
                .status(),
            200
        );
    }
    let mut stream = chat_body("gpt", "a b");
    stream["stream"] = json!(true);
    gw.post("/v1/chat/completions", &stream)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        gw.post("/v1/chat/completions", &chat_body("bad", "x"))
            .await
            .status(),
        502
    );
    assert_eq!(
        gw.post("/v1/chat/completions", &chat_body("invented-model", "x"))
            .await
            .status(),
        404
    );

    assert_eq!(gw.get("/readyz").await.status(), 200);
    let resp = gw.get("/metrics").await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let ok =
        "sluice_http_requests_total{model=\"gpt\",route=\"/v1/chat/completions\",status=\"200\"}";
    assert_eq!(metric(&text, ok), 3.0);
    let unknown = "sluice_http_requests_total{model=\"unknown\",route=\"/v1/chat/completions\",status=\"404\"}";
    assert_eq!(
        metric(&text, unknown),
        1.0,
        "invented model names do not become labels"
    );
    assert!(!text.contains("invented-model"));
    // Streams are told apart, so long streams stay out of plain-request latency.
    let duration = |stream: &str| {
        format!("sluice_http_request_duration_seconds_count{{model=\"gpt\",route=\"/v1/chat/completions\",status=\"200\",stream=\"{stream}\"}}")
    };
    assert_eq!(metric(&text, &duration("false")), 2.0);
    assert_eq!(metric(&text, &duration("true")), 1.0);
    assert_eq!(
        metric(
            &text,
            "sluice_finish_reasons_total{model=\"gpt\",reason=\"stop\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(&text, "sluice_prompt_tokens_count{model=\"gpt\"}"),
        3.0
    );
    assert_eq!(
        metric(&text, "sluice_prompt_tokens_sum{model=\"gpt\"}"),
        27.0
    );
    assert_eq!(
        metric(&text, "sluice_completion_tokens_sum{model=\"gpt\"}"),
        9.0
    );
    // The fake streams "a b" as more than one piece: gaps between pieces are measured.
    assert!(
        metric(
            &text,
            "sluice_inter_token_latency_seconds_count{backend=\"up\",model=\"gpt\"}"
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "sluice_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert_eq!(metric(&text, "sluice_backend_ready{backend=\"up\"}"), 1.0);
    // The server's own tasks (at least the accept loop and this connection) are alive.
    assert!(metric(&text, "sluice_runtime_alive_tasks ") >= 1.0);
    assert_eq!(
        metric(
            &text,
            "sluice_time_to_first_token_seconds_count{backend=\"up\",model=\"gpt\"}"
        ),
        3.0
    );
    // The fake upstream reports 9 prompt tokens and one completion token per word.
    assert_eq!(
        metric(&text, "sluice_input_tokens_total{model=\"gpt\"}"),
        27.0
    );
    assert_eq!(
        metric(&text, "sluice_output_tokens_total{model=\"gpt\"}"),
        9.0
    );
    assert_eq!(
        metric(
            &text,
            "sluice_upstream_errors_total{backend=\"up\",kind=\"status\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_0_only_for_a_serving_gateway() {
    let up = fake_openai::start().await;
    let gw = Gateway::start(&config("openai", &up.url, &[("gpt", "gpt")], "")).await;
    let run = |args: Vec<String>, listen: Option<String>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("healthcheck")
            .args(args)
            .env_remove("SLUICE__SERVER__LISTEN");
        if let Some(listen) = listen {
            cmd.env("SLUICE__SERVER__LISTEN", listen);
        }
        async move { cmd.output().await.unwrap() }
    };
    let ok = run(vec!["--url".into(), gw.url("/healthz")], None).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The container sets SLUICE__SERVER__LISTEN=0.0.0.0:PORT; the probe goes to loopback.
    let ok = run(vec![], Some(format!("0.0.0.0:{}", gw.addr.port()))).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // A path that is not 200, and nothing listening, are unhealthy.
    let bad = run(vec!["--url".into(), gw.url("/nope")], None).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("status 404"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = run(
        vec![
            "--url".into(),
            format!("http://{closed}/healthz"),
            "--timeout".into(),
            "1".into(),
        ],
        None,
    )
    .await;
    assert_eq!(down.status.code(), Some(1));
}

#[tokio::test]
async fn promtool_finds_nothing_to_lint_in_the_metrics() {
    use tokio::io::AsyncWriteExt;
    let up = fake_openai::start().await;
    let gw = Gateway::start(&config(
        "openai",
        &up.url,
        &[("gpt", "gpt"), ("bad", "fail-500")],
        "",
    ))
    .await;
    let mut stream = chat_body("gpt", "a b c");
    stream["stream"] = json!(true);
    for body in [chat_body("gpt", "a b"), stream, chat_body("bad", "x")] {
        gw.post("/v1/chat/completions", &body)
            .await
            .text()
            .await
            .unwrap();
    }
    assert_eq!(gw.get("/readyz").await.status(), 200);
    let text = gw.get("/metrics").await.text().await.unwrap();
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed: run make ops-tools");
    let mut stdin = promtool.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = promtool.wait_with_output().await.unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );
}

#[tokio::test]
async fn metrics_can_require_a_key() {
    let up = fake_openai::start().await;
    let extra = "[server]\nmetrics_key = \"scrape-secret\"\n";
    let gw = Gateway::start(&config("openai", &up.url, &[("gpt", "gpt")], extra)).await;
    let scrape = |key: Option<&str>| {
        let mut req = gw.client.get(gw.url("/metrics"));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    let resp = scrape(None).await.unwrap();
    let (status, err) = common::error_of(resp).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    assert_eq!(scrape(Some("wrong")).await.unwrap().status(), 401);
    let ok = scrape(Some("scrape-secret")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("sluice_build_info"));
    // Health stays open for probes.
    assert_eq!(gw.get("/healthz").await.status(), 200);
}

/// Log lines written while the test runs (each nextest test is its own process, so the
/// global subscriber is this test's alone).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn request_ids_are_returned_logged_and_sent_upstream() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("sluice=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    let up = fake_openai::start().await;
    let gw = Gateway::start(&config("openai", &up.url, &[("gpt", "echo-model")], "")).await;

    // The client's id comes back and reaches the upstream, streaming or not.
    for stream in [false, true] {
        let mut body = chat_body("gpt", "hello");
        body["stream"] = json!(stream);
        let id = format!("client-id-{stream}");
        let resp = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .header("x-request-id", &id)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-request-id"], id.as_str());
        resp.text().await.unwrap();
        assert_eq!(up.state.request_ids.lock().unwrap().last(), Some(&id));
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let routed: Vec<_> = text.lines().filter(|l| l.contains("routed")).collect();
    assert_eq!(routed.len(), 2, "{text}");
    assert!(routed[0].contains("id=client-id-false"), "{text}");
    assert!(routed[1].contains("id=client-id-true"), "{text}");

    // Without one (or with an unusable one), the gateway makes one, errors included.
    let resp = gw.get("/v1/models/nope").await;
    assert_eq!(resp.status(), 404);
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(made.starts_with("req_") && made.len() == 28, "{made}");
    let resp = gw
        .client
        .get(gw.url("/healthz"))
        .header("x-request-id", "has space")
        .send()
        .await
        .unwrap();
    let other = resp.headers()["x-request-id"].to_str().unwrap();
    assert!(other.starts_with("req_") && other != made, "{other}");
}
