//! When an embedded engine's thread dies (a panic, made on purpose through
//! `sluice::backend::test_hooks`), the gateway says so instead of hanging: the requests
//! it was running or holding get 503 with `retry-after`, `/readyz` turns 503, and new
//! requests are refused with 503 at once.

mod common;

use std::time::Duration;

use common::engine::{greedy, model_dir};
use common::{error_of, Gateway};
use tokio::time::{timeout, Instant};

/// A backend name no other test uses: the panic hook is keyed by it.
const BACKEND: &str = "doomed";

/// One int4 engine running one sequence at a time (so the others queue), and a model
/// that ignores EOS (so a generation is still running when the thread panics).
async fn start() -> Gateway {
    let toml = format!(
        "[cache]\nmode = \"off\"\n\n[backends.{BACKEND}]\nkind = \"onnx\"\nmodel_dir = \"{}\"\n\
         tiers = [\"int4\"]\nmax_batch_size = 1\nqueue_size = 8\nthreads = 1\n\
         ort_library = \"{}/.ort/libonnxruntime.so\"\n\n\
         [[models]]\nname = \"tiny-noeos\"\nbackend = \"{BACKEND}\"\ntier = \"int4\"\n\
         options = {{ ignore_eos = true }}\n",
        model_dir(),
        env!("CARGO_MANIFEST_DIR"),
    );
    Gateway::start(&toml).await
}

/// A request refused because the engine is gone: 503, `retry-after`, OpenAI shape.
async fn assert_unavailable(resp: reqwest::Response, what: &str) {
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, err) = error_of(resp).await;
    assert_eq!(status, 503, "{what}: {err}");
    assert_eq!(err["code"], "overloaded", "{what}: {err}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{what}");
}

#[tokio::test]
async fn a_panicked_engine_answers_503_and_turns_not_ready() {
    let gw = start().await;
    assert_eq!(gw.get("/readyz").await.status(), 200);

    // The engine thread panics at its next step: after the first request's first token,
    // while that request runs and the others wait in its queue (or arrive after).
    sluice::backend::test_hooks::panic_engine(BACKEND);
    let body = greedy("tiny-noeos", "Hello! Who are you?", false, 100);
    let answers = timeout(
        Duration::from_secs(30),
        futures::future::join_all((0..3).map(|_| gw.post("/v1/chat/completions", &body))),
    )
    .await
    .expect("requests to a dead engine are answered, not left hanging");
    for (i, resp) in answers.into_iter().enumerate() {
        assert_unavailable(resp, &format!("request {i} in flight at the panic")).await;
    }

    // Readiness follows within a second.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let resp = gw.get("/readyz").await;
        if resp.status() == 503 {
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["backends"][BACKEND]["ready"], false, "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {} a second after the engine thread died",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A new request is refused at once.
    let resp = timeout(
        Duration::from_secs(5),
        gw.post("/v1/chat/completions", &body),
    )
    .await
    .expect("a new request is refused at once");
    assert_unavailable(resp, "a request after the panic").await;
}
