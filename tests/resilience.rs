//! Upstream resilience end to end: a real sluice in front of scripted upstreams on
//! 127.0.0.1:0 — a pool that keeps answering with a dead or failing member, retries
//! before the first byte only, fallbacks to another deployment, the circuit breaker
//! opening and half-opening, and `/readyz` from kept state.

mod common;

use std::time::{Duration, Instant};

use common::flaky::{self, dead_url, Step};
use common::{chat_body, sse_data, streaming, Gateway};
use serde_json::{json, Value};

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics(gw: &Gateway) -> String {
    gw.get("/metrics").await.text().await.unwrap()
}

async fn readyz(gw: &Gateway) -> (u16, Value) {
    let resp = gw.get("/readyz").await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn member(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
}

/// One `up` backend with `backend_toml` lines, model `m` on it (and `model_extra` lines).
fn one_backend(kind: &str, backend_toml: &str, model_extra: &str) -> String {
    format!(
        "[backends.up]\nkind = \"{kind}\"\nrequest_timeout = \"2s\"\nread_timeout = \"2s\"\n{backend_toml}\n\n\
         [[models]]\nname = \"m\"\nbackend = \"up\"\nupstream_model = \"real\"\n{model_extra}\n"
    )
}

#[tokio::test]
async fn a_pool_with_one_dead_member_keeps_answering() {
    let alive = flaky::start(&[]).await;
    let dead = dead_url("/v1");
    let toml = one_backend(
        "openai",
        &format!("urls = [\"{dead}\", \"{}\"]", alive.url),
        "",
    );
    let gw = Gateway::start(&toml).await;
    for i in 0..6 {
        let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
        assert_eq!(resp.status(), 200, "request {i}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "served");
    }
    assert_eq!(alive.calls(), 6);
    let (status, body) = readyz(&gw).await;
    // `/readyz` answers from the background probe's verdicts: polling it probes nothing.
    let probes = alive.state.probes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(probes >= 1);
    for _ in 0..5 {
        assert_eq!(readyz(&gw).await.0, 200);
    }
    assert_eq!(
        alive.state.probes.load(std::sync::atomic::Ordering::SeqCst),
        probes
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["status"], "ready",
        "one member answering is enough: {body}"
    );
    let members = body["backends"]["up"]["members"].as_array().unwrap();
    assert_eq!(members[0]["member"], member(&dead));
    assert_eq!(members[0]["probe_ok"], false, "{body}");
    assert_eq!(members[1]["probe_ok"], true, "{body}");
}

#[tokio::test]
async fn a_failing_member_is_ejected_and_its_failures_are_retried_on_the_other() {
    let bad = flaky::start(&[Step::Status(503); 10]).await;
    let good = flaky::start(&[]).await;
    let toml = one_backend(
        "openai",
        &format!(
            "urls = [\"{}\", \"{}\"]\nretry = {{ attempts = 2, backoff = \"1ms\" }}\n\
             outlier = {{ consecutive_failures = 2, base_ejection = \"60s\" }}",
            bad.url, good.url
        ),
        "",
    );
    let gw = Gateway::start(&toml).await;
    for i in 0..6 {
        let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
        assert_eq!(resp.status(), 200, "request {i}");
    }
    assert_eq!(bad.calls(), 2, "ejected after two failures in a row");
    assert_eq!(good.calls(), 6);
    let text = metrics(&gw).await;
    let bad_member = member(&bad.url);
    let labels = format!("{{backend=\"up\",member=\"{bad_member}\"}}");
    assert_eq!(
        metric(&text, &format!("sluice_upstream_ejections_total{labels}")),
        1.0
    );
    assert_eq!(
        metric(&text, &format!("sluice_upstream_member_ejected{labels}")),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "sluice_upstream_retries_total{backend=\"up\",reason=\"503\"}"
        ),
        2.0
    );
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["backends"]["up"]["members"][0]["ejected"], true,
        "{body}"
    );
}

#[tokio::test]
async fn retriable_statuses_are_retried_for_chat_streams_embeddings_and_ollama() {
    let up = flaky::start(&[Step::Status(503), Step::Status(429)]).await;
    let retry = "retry = { attempts = 3, backoff = \"1ms\" }";
    let gw = Gateway::start(&one_backend(
        "openai",
        &format!("url = \"{}\"\n{retry}", up.url),
        "",
    ))
    .await;
    let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.calls(), 3, "two failures, then the answer");

    up.script(&[Step::Status(502)]);
    let body = gw
        .post("/v1/chat/completions", &streaming(chat_body("m", "hi")))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        sse_data(&body).last().map(String::as_str),
        Some("[DONE]"),
        "{body}"
    );
    assert_eq!(up.calls(), 5);

    up.script(&[Step::Status(503)]);
    let resp = gw
        .post("/v1/embeddings", &json!({"model": "m", "input": "hello"}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.calls(), 7);

    // A 500 is the upstream's own failure, not a gateway one: not retried.
    up.script(&[Step::Status(500)]);
    let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(up.calls(), 8);

    let text = metrics(&gw).await;
    for (reason, n) in [("503", 2.0), ("429", 1.0), ("502", 1.0)] {
        let name = format!("sluice_upstream_retries_total{{backend=\"up\",reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &name), n, "{name}");
    }

    // The Ollama kind goes through the same retries.
    let ollama = flaky::start(&[Step::Status(503)]).await;
    let gw = Gateway::start(&one_backend(
        "ollama",
        &format!("url = \"{}\"\n{retry}", ollama.ollama_url),
        "",
    ))
    .await;
    let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(ollama.calls(), 2);
}

#[tokio::test]
async fn a_stream_that_fails_after_its_first_byte_is_never_retried_nor_moved() {
    let up = flaky::start(&[Step::BreakAfterFirstChunk, Step::BreakAfterFirstChunk]).await;
    let spare = flaky::start(&[]).await;
    let toml = format!(
        "{}\n[backends.spare]\nkind = \"openai\"\nurl = \"{}\"\n",
        one_backend(
            "openai",
            &format!(
                "url = \"{}\"\nretry = {{ attempts = 5, backoff = \"1ms\" }}",
                up.url
            ),
            "fallbacks = [{ backend = \"spare\" }]",
        ),
        spare.url
    );
    let gw = Gateway::start(&toml).await;
    let resp = gw
        .post("/v1/chat/completions", &streaming(chat_body("m", "hi")))
        .await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let data = sse_data(&body);
    assert!(data.iter().any(|d| d.contains("partial")), "{body}");
    assert!(
        data.last().unwrap().contains("\"error\""),
        "the client sees the failure: {body}"
    );
    assert_eq!(up.calls(), 1, "exactly one upstream request");

    let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(up.calls(), 2, "not retried either when collected");
    assert_eq!(spare.calls(), 0, "no fallback after the first byte");
    let text = metrics(&gw).await;
    assert_eq!(
        metric(&text, "sluice_upstream_retries_total{backend=\"up\""),
        0.0
    );
}

#[tokio::test]
async fn a_fallback_serves_when_the_first_deployment_fails() {
    let spare = flaky::start(&[]).await;
    let toml = format!(
        "[backends.primary]\nkind = \"openai\"\nurl = \"{}\"\n\n\
         [backends.spare]\nkind = \"ollama\"\nurl = \"{}\"\n\n\
         [[models]]\nname = \"m\"\nbackend = \"primary\"\nupstream_model = \"big\"\n\
         fallbacks = [{{ backend = \"spare\", upstream_model = \"small:8b\" }}]\n",
        dead_url("/v1"),
        spare.ollama_url
    );
    let gw = Gateway::start(&toml).await;
    let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "m", "the logical model's name");
    assert_eq!(body["choices"][0]["message"]["content"], "served");
    assert_eq!(*spare.state.models.lock().unwrap(), ["small:8b"]);
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "sluice_model_fallbacks_total{from=\"primary\",model=\"m\",to=\"spare\"}"
        ),
        1.0
    );
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 200, "the fallback is a ready route: {body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["backends"]["primary"]["ready"], false);
    assert_eq!(body["models"]["m"]["ready"], true);
}

/// Poll `/readyz` until the breaker reports `state` (bounded).
async fn breaker_becomes(gw: &Gateway, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = readyz(gw).await;
        if body["backends"]["up"]["breaker"] == state {
            return body;
        }
        assert!(Instant::now() < deadline, "breaker never {state}: {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_breaker_opens_half_opens_for_one_probe_and_closes() {
    let up = flaky::start(&[Step::Status(503); 3]).await;
    let toml = one_backend(
        "openai",
        &format!(
            "url = \"{}\"\nretry = {{ attempts = 1 }}\nbreaker = {{ failures = 2, cool_down = \"300ms\" }}",
            up.url
        ),
        "",
    );
    let gw = Gateway::start(&toml).await;
    for _ in 0..2 {
        let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
        assert_eq!(resp.status(), 503);
    }
    let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "upstream_unavailable", "{err}");
    assert_eq!(up.calls(), 2, "an open breaker sends nothing upstream");
    let text = metrics(&gw).await;
    assert_eq!(
        metric(&text, "sluice_upstream_breaker_state{backend=\"up\"}"),
        1.0
    );
    let (status, body) = readyz(&gw).await;
    assert_eq!(
        (status, &body["status"]),
        (503, &json!("not_ready")),
        "{body}"
    );
    assert_eq!(body["backends"]["up"]["breaker"], "open");

    // Half-open: one probe; it fails (the third scripted 503), so the breaker reopens.
    breaker_becomes(&gw, "half_open").await;
    let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(up.calls(), 3);
    breaker_becomes(&gw, "open").await;

    // The next probe succeeds and closes it.
    breaker_becomes(&gw, "half_open").await;
    let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.calls(), 4);
    let body = breaker_becomes(&gw, "closed").await;
    assert_eq!(body["status"], "ready");
    let text = metrics(&gw).await;
    assert_eq!(
        metric(&text, "sluice_upstream_breaker_state{backend=\"up\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "sluice_upstream_breaker_opened_total{backend=\"up\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn an_open_breaker_sends_requests_to_the_fallback_without_calling_upstream() {
    let primary = flaky::start(&[Step::Status(503)]).await;
    let spare = flaky::start(&[]).await;
    let toml = format!(
        "{}\n[backends.spare]\nkind = \"openai\"\nurl = \"{}\"\n",
        one_backend(
            "openai",
            &format!(
                "url = \"{}\"\nretry = {{ attempts = 1 }}\nbreaker = {{ failures = 1, cool_down = \"60s\" }}",
                primary.url
            ),
            "fallbacks = [{ backend = \"spare\", upstream_model = \"spare-model\" }]",
        ),
        spare.url
    );
    let gw = Gateway::start(&toml).await;
    for _ in 0..3 {
        let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
        assert_eq!(resp.status(), 200);
        let resp = gw
            .post("/v1/embeddings", &json!({"model": "m", "input": "hello"}))
            .await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(primary.calls(), 1, "the breaker opened after the first 503");
    assert_eq!(spare.calls(), 6);
    assert!(spare
        .state
        .models
        .lock()
        .unwrap()
        .iter()
        .all(|m| m == "spare-model"));
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "sluice_model_fallbacks_total{from=\"up\",model=\"m\",to=\"spare\"}"
        ),
        6.0
    );
    let (status, body) = readyz(&gw).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("degraded")),
        "{body}"
    );
    assert_eq!(body["backends"]["up"]["breaker"], "open");
    assert_eq!(body["backends"]["up"]["error"], "circuit breaker open");
}
