//! Every failure a client can see has the OpenAI error shape and the right status, and a
//! rejected request changes nothing (the upstream is never called).

mod common;

use std::sync::atomic::Ordering;

use common::{chat_body, config, error_of, fake_openai, sse_data, Gateway};
use serde_json::{json, Value};

async fn setup(extra: &str) -> (Gateway, fake_openai::FakeOpenAi) {
    let up = fake_openai::start().await;
    let models = [
        ("gpt", "gpt-4o-mini"),
        ("f500", "fail-500"),
        ("f429", "fail-429"),
        ("f503", "fail-503"),
        ("fmid", "fail-mid"),
        ("stall", "stall"),
    ];
    let gw = Gateway::start(&config("openai", &up.url, &models, extra)).await;
    (gw, up)
}

async fn post_raw(gw: &Gateway, body: &'static str) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400() {
    let (gw, up) = setup("").await;
    let (status, err) = error_of(post_raw(&gw, "{\"model\": \"gpt\", \"messages\": [").await).await;
    assert_eq!((status, err["code"].as_str()), (400, Some("invalid_json")));
    let (status, err) = error_of(post_raw(&gw, "[1, 2]").await).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = error_of(
        post_raw(
            &gw,
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"max_tokens":"ten"}"#,
        )
        .await,
    )
    .await;
    assert_eq!((status, err["param"].as_str()), (400, Some("max_tokens")));
    let (status, err) =
        error_of(post_raw(&gw, r#"{"messages":[{"role":"user","content":"hi"}]}"#).await).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("model"), "{err}");
    assert_eq!(up.state.chat_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn invalid_values_are_400_naming_the_param() {
    let (gw, up) = setup("").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"temperature": 2.5}), "temperature"),
        (json!({"temperature": -0.1}), "temperature"),
        (json!({"top_p": 1.01}), "top_p"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"max_completion_tokens": 0}), "max_completion_tokens"),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "wizard", "content": "hi"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "42"}]}),
            "messages[0].tool_call_id",
        ),
        (json!({"n": 2}), "n"),
        (json!({"top_k": -1}), "top_k"),
        (json!({"top_k": "ten"}), "top_k"),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
    ];
    for (patch, param) in cases {
        let mut body = chat_body("gpt", "hi");
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, err) = error_of(gw.post("/v1/chat/completions", &body).await).await;
        assert_eq!(status, 400, "{patch}: {err}");
        assert_eq!(err["param"].as_str(), Some(param), "{patch}: {err}");
        assert_eq!(err["type"], "invalid_request_error");
    }
    assert_eq!(up.state.chat_calls.load(Ordering::SeqCst), 0);
    // Nothing else changed: a good request still works.
    assert_eq!(
        gw.post("/v1/chat/completions", &chat_body("gpt", "hi"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn more_than_four_stop_sequences_are_400_naming_stop() {
    let (gw, up) = setup("").await;
    let mut body = chat_body("gpt", "hi");
    body["stop"] = json!(["a", "b", "c", "d", "e"]);
    let (status, err) = error_of(gw.post("/v1/chat/completions", &body).await).await;
    assert_eq!(
        (status, err["param"].as_str()),
        (400, Some("stop")),
        "{err}"
    );
    assert_eq!(err["type"], "invalid_request_error");
    assert!(
        err["message"].as_str().unwrap().contains("at most 4"),
        "{err}"
    );
    assert_eq!(up.state.chat_calls.load(Ordering::SeqCst), 0);

    // Four is OpenAI's limit and is accepted: all four reach the upstream.
    body["stop"] = json!(["a", "b", "c", "d"]);
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.state.last_request()["stop"], json!(["a", "b", "c", "d"]));
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let (gw, up) = setup("").await;
    let (status, err) = error_of(
        gw.post("/v1/chat/completions", &chat_body("gpt-5-ultra", "hi"))
            .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert!(err["message"].as_str().unwrap().contains("gpt-5-ultra"));
    let (status, _) = error_of(
        gw.post("/v1/embeddings", &json!({"model": "nope", "input": "x"}))
            .await,
    )
    .await;
    assert_eq!(status, 404);
    let (status, err) = error_of(gw.get("/v1/models/nope").await).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert_eq!(up.state.chat_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (gw, up) = setup("[server]\nmax_body_bytes = 2048\n").await;
    let big = "x".repeat(4096);
    let (status, err) = error_of(
        gw.post("/v1/chat/completions", &chat_body("gpt", &big))
            .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some("request_too_large"))
    );
    assert_eq!(up.state.chat_calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        gw.post("/v1/chat/completions", &chat_body("gpt", "small"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn api_keys_are_checked_and_401_has_the_openai_shape() {
    use sha2::{Digest, Sha256};
    let hash = hex::encode(Sha256::digest(b"sk-test-key"));
    let (gw, up) = setup(&format!(
        "[[auth.keys]]\ntenant = \"t\"\nsha256 = \"{hash}\"\n"
    ))
    .await;
    let (status, err) = error_of(
        gw.post("/v1/chat/completions", &chat_body("gpt", "hi"))
            .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-wrong")
        .json(&chat_body("gpt", "hi"))
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(resp).await;
    assert_eq!(status, 401);
    assert!(
        !err.to_string().contains("sk-wrong"),
        "the key is not echoed back"
    );
    // 401 comes before body parsing.
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .body("{bad")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = gw.client.get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(up.state.chat_calls.load(Ordering::SeqCst), 0);
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-test-key")
        .json(&chat_body("gpt", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Health and metrics stay open for probes.
    assert_eq!(gw.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn upstream_failures_map_to_gateway_statuses() {
    let (gw, _up) = setup("").await;
    let (status, err) = error_of(
        gw.post("/v1/chat/completions", &chat_body("f500", "hi"))
            .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (502, Some("upstream_error"))
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("error while processing"),
        "{err}"
    );
    let resp = gw
        .post("/v1/chat/completions", &chat_body("f429", "hi"))
        .await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, _) = error_of(resp).await;
    assert_eq!(status, 429);
    let resp = gw
        .post("/v1/chat/completions", &chat_body("f503", "hi"))
        .await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, err) = error_of(resp).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (503, Some("upstream_overloaded"))
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gw = Gateway::start(&config(
        "openai",
        &format!("http://127.0.0.1:{port}/v1"),
        &[("gpt", "gpt")],
        "",
    ))
    .await;
    let (status, err) = error_of(
        gw.post("/v1/chat/completions", &chat_body("gpt", "hi"))
            .await,
    )
    .await;
    assert_eq!(status, 502);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{err}"
    );
    let mut body = chat_body("gpt", "hi");
    body["stream"] = json!(true);
    let (status, _) = error_of(gw.post("/v1/chat/completions", &body).await).await;
    assert_eq!(
        status, 502,
        "a stream that cannot start is a plain error response"
    );
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let up = fake_openai::start().await;
    let toml = format!(
        "[backends.up]\nkind = \"openai\"\nurl = \"{}\"\nrequest_timeout = \"300ms\"\nread_timeout = \"300ms\"\n\n[[models]]\nname = \"hang\"\nbackend = \"up\"\n\n[[models]]\nname = \"stall\"\nbackend = \"up\"\n",
        up.url
    );
    let gw = Gateway::start(&toml).await;
    let (status, err) = error_of(
        gw.post("/v1/chat/completions", &chat_body("hang", "hi"))
            .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (504, Some("upstream_timeout"))
    );
    // Silence after the stream began: non-streaming clients get a 504 ...
    let (status, _) = error_of(
        gw.post("/v1/chat/completions", &chat_body("stall", "hi"))
            .await,
    )
    .await;
    assert_eq!(status, 504);
    // ... streaming clients get the text so far, then one error event.
    let mut body = chat_body("stall", "hi");
    body["stream"] = json!(true);
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    assert!(data.iter().any(|d| d.contains("first")));
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout");
    assert!(!data.contains(&"[DONE]".to_owned()));
}

#[tokio::test]
async fn an_error_mid_stream_is_one_final_error_event() {
    let (gw, _up) = setup("").await;
    let mut body = chat_body("fmid", "hi");
    body["stream"] = json!(true);
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    assert!(data[1].contains("partial"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("upstream model crashed"));
    assert_eq!(data.iter().filter(|d| d.contains("\"error\"")).count(), 1);
    assert!(!data.contains(&"[DONE]".to_owned()));
}

#[tokio::test]
async fn unknown_routes_and_methods_have_the_openai_shape() {
    let (gw, _up) = setup("").await;
    let (status, _) = error_of(gw.get("/v1/completions/legacy").await).await;
    assert_eq!(status, 404);
    let (status, _) = error_of(gw.get("/v1/chat/completions").await).await;
    assert_eq!(status, 405);
}

/// axum's own path, query and body rejections are plain text; sluice's are OpenAI-shaped
/// (found by schemathesis: `?limit=null`, a `%FF` path segment, an oversized run body).
#[tokio::test]
async fn bad_paths_queries_and_run_bodies_have_the_openai_shape() {
    let (gw, _up) = setup("[server]\nmax_body_bytes = 2048\n").await;
    let (status, err) = error_of(gw.get("/v1/workflows/w/runs?limit=ten").await).await;
    assert_eq!((status, err["code"].as_str()), (400, Some("invalid_query")));
    assert!(err["message"].as_str().unwrap().contains("limit"), "{err}");
    let (status, err) = error_of(gw.get("/v1/models/%FF").await).await;
    assert_eq!((status, err["code"].as_str()), (400, Some("invalid_path")));
    let (status, err) = error_of(gw.get("/v1/workflows/runs/%FF/artifacts/chart").await).await;
    assert_eq!((status, err["code"].as_str()), (400, Some("invalid_path")));
    let big = json!({ "inputs": { "x": "y".repeat(4096) } });
    let (status, err) = error_of(gw.post("/v1/workflows/w/runs", &big).await).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some("request_too_large"))
    );
}
