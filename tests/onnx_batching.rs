//! The embedded engine's continuous batching, through the HTTP API with the bundled
//! sluice-tiny model: batched greedy output equals solo output, slots free on
//! disconnect, many concurrent streams complete, and a full queue answers 503.

mod common;

use std::time::Duration;

use common::engine::{self, answer, complete, greedy, metric, stream_answer, wait_metric};
use common::{parse_chunks, sse_data, streaming};
use futures::StreamExt;
use serde_json::json;

/// Prompts of different lengths, some with tools (longer prompts), some without.
const PROMPTS: &[(&str, bool)] = &[
    ("Hello! Who are you?", false),
    ("What is 12 * 7?", true),
    ("How many orders were placed in March 2024?", true),
    ("What time is it in Tokyo?", true),
    ("Thanks, that's all for today.", false),
    ("What is (1250 - 380) / 6?", true),
];

const ACTIVE: &str = "sluice_engine_active_sequences{backend=\"local\",tier=\"int4\"}";

async fn batched_equals_solo(tier: &str, model: &str) {
    let gw = engine::start(&[tier], 8, 64).await;
    let bodies: Vec<_> = PROMPTS
        .iter()
        .map(|(text, tools)| greedy(model, text, *tools, 40))
        .collect();
    let mut solo = Vec::new();
    for body in &bodies {
        solo.push(answer(&complete(&gw, body).await));
    }
    // Same requests at once, staggered so later ones join a batch already decoding.
    let batched = futures::future::join_all(bodies.iter().enumerate().map(|(i, body)| {
        let gw = &gw;
        async move {
            tokio::time::sleep(Duration::from_millis(3 * i as u64)).await;
            answer(&complete(gw, body).await)
        }
    }))
    .await;
    for (i, (a, b)) in solo.iter().zip(&batched).enumerate() {
        assert_eq!(a, b, "prompt {:?} differs when batched", PROMPTS[i].0);
    }
    // The requests really shared decode steps.
    let prefix =
        format!("sluice_engine_batch_size_bucket{{backend=\"local\",tier=\"{tier}\",le=\"1\"}}");
    let single_steps = metric(&gw, &prefix).await;
    let count = metric(
        &gw,
        &format!("sluice_engine_batch_size_count{{backend=\"local\",tier=\"{tier}\"}}"),
    )
    .await;
    assert!(
        count > single_steps,
        "no step decoded more than one sequence"
    );
}

#[tokio::test]
async fn greedy_output_is_the_same_alone_and_batched_int4() {
    batched_equals_solo("int4", "tiny").await;
}

#[tokio::test]
async fn greedy_output_is_the_same_alone_and_batched_fp32() {
    batched_equals_solo("fp32", "tiny-fp32").await;
}

#[tokio::test]
async fn a_disconnected_stream_frees_its_slot_and_others_continue() {
    let gw = engine::start(&["int4"], 8, 64).await;
    let other = greedy("tiny", "What is 12 * 7?", true, 40);
    let expected = answer(&complete(&gw, &other).await);

    // A long generation (ignore_eos: exactly max_tokens) that the client abandons.
    let long = streaming(greedy("tiny-noeos", "Hello! Who are you?", false, 400));
    let resp = gw.post("/v1/chat/completions", &long).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("a first chunk").unwrap();
    assert!(!first.is_empty());
    wait_metric(&gw, ACTIVE, |v| v == 1.0).await;

    // Another request runs alongside, then the first client goes away.
    let other_task = {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        tokio::spawn(async move {
            let resp = client.post(url).json(&other).send().await.unwrap();
            resp.json::<serde_json::Value>().await.unwrap()
        })
    };
    drop(body);
    assert_eq!(answer(&other_task.await.unwrap()), expected);
    wait_metric(&gw, ACTIVE, |v| v == 0.0).await;
    let generated = metric(
        &gw,
        "sluice_engine_tokens_total{backend=\"local\",kind=\"generated\",tier=\"int4\"}",
    )
    .await;
    assert!(
        generated < 400.0,
        "the abandoned generation ran on to max_tokens ({generated} tokens generated)"
    );
}

#[tokio::test]
async fn sixty_four_concurrent_streams_complete_with_correct_outputs() {
    let gw = engine::start(&["int4"], 32, 64).await;
    let mut expected = Vec::new();
    for (text, tools) in PROMPTS {
        expected.push(answer(
            &complete(&gw, &greedy("tiny", text, *tools, 24)).await,
        ));
    }
    let results = futures::future::join_all((0..64).map(|i| {
        let gw = &gw;
        async move {
            let (text, tools) = PROMPTS[i % PROMPTS.len()];
            let mut body = streaming(greedy("tiny", text, tools, 24));
            body["stream_options"] = json!({"include_usage": true});
            let resp = gw.post("/v1/chat/completions", &body).await;
            assert_eq!(resp.status(), 200);
            let chunks = parse_chunks(&sse_data(&resp.text().await.unwrap()));
            let got = stream_answer(&chunks);
            let usage = chunks
                .last()
                .and_then(|c| c.usage.clone())
                .expect("usage chunk");
            assert!(usage.completion_tokens > 0);
            (i, got)
        }
    }))
    .await;
    for (i, got) in results {
        assert_eq!(got, expected[i % PROMPTS.len()], "stream {i}");
    }
    wait_metric(&gw, ACTIVE, |v| v == 0.0).await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_instead_of_hanging() {
    // One slot, one waiting place.
    let gw = engine::start(&["int4"], 1, 1).await;
    let long = greedy("tiny-noeos", "Hello! Who are you?", false, 400);
    let first = {
        let (client, url, body) = (
            gw.client.clone(),
            gw.url("/v1/chat/completions"),
            long.clone(),
        );
        tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status() })
    };
    wait_metric(&gw, ACTIVE, |v| v == 1.0).await;
    let second = {
        let (client, url, body) = (
            gw.client.clone(),
            gw.url("/v1/chat/completions"),
            long.clone(),
        );
        tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status() })
    };
    wait_metric(
        &gw,
        "sluice_engine_queue_depth{backend=\"local\",tier=\"int4\"}",
        |v| v == 1.0,
    )
    .await;
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        gw.post("/v1/chat/completions", &long),
    )
    .await
    .expect("a full queue answers at once");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let (_, err) = common::error_of(resp).await;
    assert_eq!(err["code"], "overloaded");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
}
