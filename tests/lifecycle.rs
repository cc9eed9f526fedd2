//! Connection lifecycle: a client that disconnects cancels the upstream request, and a
//! graceful shutdown stops accepting while in-flight streams finish (up to the timeout).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{chat_body, config, fake_openai, Gateway};
use futures::StreamExt;

fn stream_body(model: &str) -> serde_json::Value {
    common::streaming(chat_body(model, "go"))
}

#[tokio::test]
async fn client_disconnect_drops_the_upstream_request() {
    let up = fake_openai::start().await;
    let gw = Gateway::start(&config("openai", &up.url, &[("slow", "slow")], "")).await;
    let dropped = up.state.dropped.notified();
    tokio::pin!(dropped);
    dropped.as_mut().enable();

    let resp = gw.post("/v1/chat/completions", &stream_body("slow")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("t2 ") {
        let chunk = body.next().await.expect("stream continues").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(up.state.dropped_count.load(Ordering::SeqCst), 0);
    drop(body); // the client goes away mid-stream

    tokio::time::timeout(Duration::from_secs(10), dropped)
        .await
        .expect("the upstream saw its connection dropped");
    assert_eq!(up.state.dropped_count.load(Ordering::SeqCst), 1);
    // The gateway's in-flight gauge is back to zero.
    let metrics = gw.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("sluice_http_requests_in_flight 1"),
        "only the /metrics request itself: {metrics}"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_streams_finish() {
    let up = fake_openai::start().await;
    let mut gw = Gateway::start(&config("openai", &up.url, &[("short", "slow-short")], "")).await;
    let resp = gw.post("/v1/chat/completions", &stream_body("short")).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));

    gw.shutdown();
    // The stream in flight completes with [DONE] ...
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        rest.contains("s8 ") && rest.ends_with("data: [DONE]\n\n"),
        "{rest}"
    );
    // ... the server returns cleanly, and new connections are refused.
    let result = tokio::time::timeout(Duration::from_secs(10), &mut gw.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))));
    assert!(reqwest::Client::new()
        .get(gw.url("/healthz"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_drain() {
    let up = fake_openai::start().await;
    let extra = "[server]\nshutdown_timeout = \"300ms\"\n";
    let mut gw = Gateway::start(&config("openai", &up.url, &[("slow", "slow")], extra)).await;
    let resp = gw.post("/v1/chat/completions", &stream_body("slow")).await;
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    gw.shutdown();
    // The 60-second stream is cut at the deadline and the server still returns.
    let result = tokio::time::timeout(Duration::from_secs(10), &mut gw.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))));
    // The client is told why, in one final error event ...
    let mut rest = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    let last = common::sse_data(&rest).pop().unwrap();
    assert!(last.contains("\"code\":\"shutting_down\""), "{rest}");
    // ... and the upstream request behind it is dropped.
    tokio::time::timeout(Duration::from_secs(10), async {
        while up.state.dropped_count.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("upstream connection dropped");
}

#[tokio::test]
async fn a_client_gone_before_the_answer_leaves_no_request_in_flight() {
    let up = fake_openai::start().await;
    let gw = Gateway::start(&config("openai", &up.url, &[("hang", "hang")], "")).await;
    let received = up.state.received.notified();
    let dropped = up.state.dropped.notified();
    tokio::pin!(received, dropped);
    received.as_mut().enable();
    dropped.as_mut().enable();

    // A non-streaming request: no header is sent until the upstream answers, which
    // `hang` never does. The client gives up while the handler is still waiting.
    let client = {
        let (http, url) = (gw.client.clone(), gw.url("/v1/chat/completions"));
        tokio::spawn(async move { http.post(url).json(&chat_body("hang", "go")).send().await })
    };
    tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .expect("the upstream got the request");
    let text = gw.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("sluice_http_requests_in_flight 2"),
        "this scrape and the hanging request:\n{text}"
    );
    client.abort();
    tokio::time::timeout(Duration::from_secs(10), dropped)
        .await
        .expect("the gateway dropped the upstream request");
    let text = gw.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("sluice_http_requests_in_flight 1"),
        "only this scrape:\n{text}"
    );
    assert!(
        text.contains("sluice_http_requests_total{model=\"\",route=\"/v1/chat/completions\",status=\"499\"} 1"),
        "{text}"
    );
}
