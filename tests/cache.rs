//! The response cache and single-flight merging, through the HTTP API in front of the
//! fake OpenAI-compatible upstream (which counts its calls): hits, misses, bypasses,
//! Cache-Control, TTL, the size bound, replays either way, tenant isolation, and 100
//! identical concurrent requests costing one generation.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_openai::{self, FakeOpenAi};
use common::{chat_body, config, metric, parse_chunks, sse_data, streaming, Gateway};
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const KEY_A: &str = "sk-tenant-a";
const KEY_B: &str = "sk-tenant-b";

async fn setup(extra: &str) -> (Gateway, FakeOpenAi) {
    let up = fake_openai::start().await;
    let models = [
        ("gpt", "echo-model"),
        ("slow", "slow-short"),
        ("endless", "slow"),
        ("tools", "tool-model"),
        ("failing", "slow-fail"),
    ];
    let gw = Gateway::start(&config("openai", &up.url, &models, extra)).await;
    (gw, up)
}

fn calls(up: &FakeOpenAi) -> usize {
    up.state.chat_calls.load(Ordering::SeqCst)
}

fn deterministic(model: &str, text: &str) -> Value {
    let mut body = chat_body(model, text);
    body["temperature"] = json!(0);
    body
}

/// POST with optional bearer key and Cache-Control; returns (x-sluice-cache, body).
async fn ask(gw: &Gateway, body: &Value, key: Option<&str>, cc: Option<&str>) -> (String, Value) {
    let mut req = gw.client.post(gw.url("/v1/chat/completions")).json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(cc) = cc {
        req = req.header("cache-control", cc);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let status = resp.headers()["x-sluice-cache"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, resp.json().await.unwrap())
}

/// Content, tool calls (name + arguments) and finish reason of a JSON answer.
fn answer(body: &Value) -> (Value, Value, Value) {
    let choice = &body["choices"][0];
    (
        choice["message"]["content"].clone(),
        choice["message"]["tool_calls"].clone(),
        choice["finish_reason"].clone(),
    )
}

/// The same, assembled from a streamed answer.
fn streamed_answer(data: &[String]) -> (Value, Value, Value, Option<Value>) {
    let mut content = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    let mut usage = None;
    for chunk in parse_chunks(data) {
        if let Some(u) = chunk.usage {
            usage = Some(serde_json::to_value(u).unwrap());
        }
        for choice in chunk.choices {
            content.push_str(choice.delta.content.as_deref().unwrap_or_default());
            for call in choice.delta.tool_calls.unwrap_or_default() {
                let i = call.index as usize;
                if calls.len() <= i {
                    calls.push(json!({"id": call.id, "type": "function",
                        "function": {"name": call.function.as_ref().and_then(|f| f.name.clone()), "arguments": ""}}));
                }
                let args = call.function.and_then(|f| f.arguments).unwrap_or_default();
                let prev = calls[i]["function"]["arguments"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                calls[i]["function"]["arguments"] = json!(prev + &args);
            }
            if let Some(reason) = choice.finish_reason {
                finish = serde_json::to_value(reason).unwrap();
            }
        }
    }
    let content = if content.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(content)
    };
    let calls = if calls.is_empty() {
        Value::Null
    } else {
        json!(calls)
    };
    (content, calls, finish, usage)
}

async fn stream(gw: &Gateway, body: &Value) -> (String, Vec<String>) {
    let resp = gw
        .post("/v1/chat/completions", &streaming(body.clone()))
        .await;
    assert_eq!(resp.status(), 200);
    let status = resp.headers()["x-sluice-cache"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, sse_data(&resp.text().await.unwrap()))
}

#[tokio::test]
async fn a_deterministic_request_misses_then_hits_and_others_bypass() {
    let (gw, up) = setup("").await;
    let body = deterministic("gpt", "What is the capital of France?");
    let (status, first) = ask(&gw, &body, None, None).await;
    assert_eq!(status, "miss");
    let (status, second) = ask(&gw, &body, None, None).await;
    assert_eq!(status, "hit");
    assert_eq!(calls(&up), 1);
    assert_eq!(answer(&first), answer(&second));
    assert_eq!(first["usage"], second["usage"]);
    assert_eq!(second["model"], "gpt");

    // A seed pins the answer down too.
    let mut seeded = chat_body("gpt", "seeded");
    seeded["seed"] = json!(7);
    assert_eq!(ask(&gw, &seeded, None, None).await.0, "miss");
    assert_eq!(ask(&gw, &seeded, None, None).await.0, "hit");

    // Sampling without a seed is not cached by default.
    let random = chat_body("gpt", "Tell me a joke");
    let before = calls(&up);
    for _ in 0..2 {
        assert_eq!(ask(&gw, &random, None, None).await.0, "bypass");
    }
    assert_eq!(calls(&up), before + 2);
    assert_eq!(
        metric(&gw, "sluice_cache_lookups_total{result=\"hit\"}").await,
        2.0
    );
    assert_eq!(
        metric(&gw, "sluice_cache_lookups_total{result=\"bypass\"}").await,
        2.0
    );
    assert!(metric(&gw, "sluice_cache_entries").await >= 2.0);
}

#[tokio::test]
async fn cache_control_no_cache_refreshes_and_no_store_leaves_no_trace() {
    let (gw, up) = setup("").await;
    let body = deterministic("gpt", "fresh please");
    assert_eq!(ask(&gw, &body, None, Some("no-cache")).await.0, "bypass");
    assert_eq!(calls(&up), 1);
    // ...but the fresh answer was stored.
    assert_eq!(ask(&gw, &body, None, None).await.0, "hit");
    assert_eq!(calls(&up), 1);

    let private = deterministic("gpt", "keep this to yourself");
    assert_eq!(ask(&gw, &private, None, Some("no-store")).await.0, "bypass");
    assert_eq!(ask(&gw, &private, None, None).await.0, "miss");
    assert_eq!(calls(&up), 3);
    // no-store also skips a stored answer.
    assert_eq!(ask(&gw, &private, None, Some("no-store")).await.0, "bypass");
    assert_eq!(calls(&up), 4);
}

#[tokio::test]
async fn answers_expire_after_the_ttl() {
    let (gw, up) = setup("[cache]\nttl = \"1s\"\n").await;
    let body = deterministic("gpt", "short-lived");
    assert_eq!(ask(&gw, &body, None, None).await.0, "miss");
    assert_eq!(ask(&gw, &body, None, None).await.0, "hit");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(ask(&gw, &body, None, None).await.0, "miss");
    assert_eq!(calls(&up), 2);
}

#[tokio::test]
async fn the_size_bound_evicts() {
    let (gw, _up) = setup("[cache]\nmax_bytes = 2000\n").await;
    for i in 0..40 {
        let text = format!("question number {i} {}", "padding ".repeat(10));
        ask(&gw, &deterministic("gpt", &text), None, None).await;
    }
    let bytes = metric(&gw, "sluice_cache_bytes").await;
    assert!(bytes > 0.0 && bytes <= 2000.0, "{bytes} bytes cached");
    assert!(metric(&gw, "sluice_cache_evictions_total").await > 0.0);
    let mut hits = 0;
    for i in 0..40 {
        let text = format!("question number {i} {}", "padding ".repeat(10));
        if ask(&gw, &deterministic("gpt", &text), None, None).await.0 == "hit" {
            hits += 1;
        }
    }
    assert!(hits < 40, "every answer survived a 2,000-byte bound");
}

#[tokio::test]
async fn a_hit_replays_either_way_whatever_way_it_was_produced() {
    let (gw, _up) = setup("").await;
    for model in ["gpt", "tools"] {
        // Produced streaming, replayed as JSON and as a stream (with the usage chunk).
        let body = deterministic(model, "first streamed");
        let mut asked = streaming(body.clone());
        asked["stream_options"] = json!({"include_usage": true});
        let resp = gw.post("/v1/chat/completions", &asked).await;
        assert_eq!(resp.headers()["x-sluice-cache"], "miss");
        let original = streamed_answer(&sse_data(&resp.text().await.unwrap()));
        let (status, json_hit) = ask(&gw, &body, None, None).await;
        assert_eq!(status, "hit");
        let (c, t, f) = answer(&json_hit);
        assert_eq!(
            (c, strip_ids(t), f),
            (
                original.0.clone(),
                strip_ids(original.1.clone()),
                original.2.clone()
            )
        );
        let resp = gw.post("/v1/chat/completions", &asked).await;
        assert_eq!(resp.headers()["x-sluice-cache"], "hit");
        let replayed = streamed_answer(&sse_data(&resp.text().await.unwrap()));
        assert_eq!(replayed, original, "{model}");

        // Produced as JSON, replayed as a stream.
        let body = deterministic(model, "first as JSON");
        let (_, original) = ask(&gw, &body, None, None).await;
        let (status, data) = stream(&gw, &body).await;
        assert_eq!(status, "hit");
        let (c, t, f, _) = streamed_answer(&data);
        let (oc, ot, of) = answer(&original);
        assert_eq!((c, strip_ids(t), f), (oc, strip_ids(ot), of), "{model}");
    }
}

/// Tool calls without the `type`/`id` details the two shapes spell differently.
fn strip_ids(calls: Value) -> Value {
    match calls {
        Value::Array(list) => Value::Array(
            list.into_iter()
                .map(|c| json!({"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}))
                .collect(),
        ),
        other => other,
    }
}

#[tokio::test]
async fn a_cancelled_stream_is_not_cached() {
    let (gw, up) = setup("").await;
    let body = streaming(deterministic("slow", "cut me off"));
    let resp = gw.post("/v1/chat/completions", &body).await;
    let mut bytes = resp.bytes_stream();
    bytes.next().await.unwrap().unwrap();
    drop(bytes);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, _) = ask(&gw, &deterministic("slow", "cut me off"), None, None).await;
    assert_eq!(status, "miss");
    assert_eq!(calls(&up), 2);
}

#[tokio::test]
async fn errors_are_not_cached_and_followers_get_the_same_error() {
    let (gw, up) = setup("").await;
    let body = deterministic("failing", "this will break");
    let results = futures::future::join_all((0..5).map(|_| stream(&gw, &body))).await;
    for (_, data) in &results {
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        let message = last["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("crashed"), "{data:?}");
    }
    assert_eq!(calls(&up), 1, "the five requests shared one generation");
    let (status, _) = stream(&gw, &body).await;
    assert_eq!(status, "miss");
    assert_eq!(calls(&up), 2);
}

#[tokio::test]
async fn one_tenants_answer_is_never_served_to_another() {
    let hash = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let keys = format!(
        "[[auth.keys]]\ntenant = \"a\"\nsha256 = \"{}\"\n\n[[auth.keys]]\ntenant = \"b\"\nsha256 = \"{}\"\n",
        hash(KEY_A),
        hash(KEY_B)
    );
    let up = fake_openai::start().await;
    let mut toml = config("openai", &up.url, &[("gpt", "echo-model")], &keys);
    toml.push_str("\n[[models]]\nname = \"public\"\nbackend = \"up\"\nupstream_model = \"echo-model\"\ncache = { shared = true }\n");
    let gw = Gateway::start(&toml).await;

    let body = deterministic("gpt", "our quarterly numbers");
    assert_eq!(ask(&gw, &body, Some(KEY_A), None).await.0, "miss");
    assert_eq!(ask(&gw, &body, Some(KEY_A), None).await.0, "hit");
    assert_eq!(ask(&gw, &body, Some(KEY_B), None).await.0, "miss");
    assert_eq!(calls(&up), 2);

    // A model that opts into a shared namespace shares answers.
    let public = deterministic("public", "opening hours");
    assert_eq!(ask(&gw, &public, Some(KEY_A), None).await.0, "miss");
    assert_eq!(ask(&gw, &public, Some(KEY_B), None).await.0, "hit");
}

#[tokio::test]
async fn modes_always_and_off_per_model() {
    let up = fake_openai::start().await;
    let mut toml = config("openai", &up.url, &[], "[cache]\nmode = \"always\"\n");
    toml.push_str(
        "[[models]]\nname = \"any\"\nbackend = \"up\"\nupstream_model = \"echo-model\"\n\n",
    );
    toml.push_str("[[models]]\nname = \"never\"\nbackend = \"up\"\nupstream_model = \"echo-model\"\ncache = { mode = \"off\" }\n");
    let gw = Gateway::start(&toml).await;
    let sampled = chat_body("any", "sampled but cached");
    assert_eq!(ask(&gw, &sampled, None, None).await.0, "miss");
    assert_eq!(ask(&gw, &sampled, None, None).await.0, "hit");
    let never = deterministic("never", "not cached");
    assert_eq!(ask(&gw, &never, None, None).await.0, "bypass");
    assert_eq!(ask(&gw, &never, None, None).await.0, "bypass");
    assert_eq!(calls(&up), 3);
}

#[tokio::test]
async fn a_hundred_identical_requests_cost_one_generation() {
    let (gw, up) = setup("").await;
    let body = deterministic("slow", "everyone asks this");
    let answers = futures::future::join_all((0..100).map(|i| {
        let gw = &gw;
        let body = body.clone();
        async move {
            if i % 2 == 0 {
                let (_, data) = stream(gw, &body).await;
                let (c, _, f, _) = streamed_answer(&data);
                (c, f)
            } else {
                let (_, json) = ask(gw, &body, None, None).await;
                let (c, _, f) = answer(&json);
                (c, f)
            }
        }
    }))
    .await;
    assert_eq!(calls(&up), 1);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(answers[0].1, "stop");
    assert!(answers[0].0.as_str().unwrap().starts_with("s0 s1"));
    assert_eq!(metric(&gw, "sluice_cache_coalesced_total").await, 99.0);
}

#[tokio::test]
async fn a_follower_that_leaves_does_not_stop_the_others() {
    let (gw, up) = setup("").await;
    let body = streaming(deterministic("slow", "share me"));
    let leaver = {
        let resp = gw.post("/v1/chat/completions", &body).await;
        let mut bytes = resp.bytes_stream();
        bytes.next().await.unwrap().unwrap();
        bytes
    };
    // A second request joins mid-stream (its headers came, so it is subscribed), then
    // the first goes away, then a third joins.
    let second = gw.post("/v1/chat/completions", &body).await;
    drop(leaver);
    let (_, third) = stream(&gw, &body).await;
    let second = sse_data(&second.text().await.unwrap());
    for data in [&second, &third] {
        let (content, _, finish, _) = streamed_answer(data);
        assert_eq!(finish, "stop");
        assert_eq!(content, "s0 s1 s2 s3 s4 s5 s6 s7 s8 ");
    }
    assert_eq!(calls(&up), 1);
}

#[tokio::test]
async fn the_generation_stops_when_every_subscriber_has_gone() {
    let (gw, up) = setup("").await;
    let body = streaming(deterministic("endless", "go on forever"));
    let mut streams = Vec::new();
    for _ in 0..2 {
        let resp = gw.post("/v1/chat/completions", &body).await;
        let mut bytes = resp.bytes_stream();
        bytes.next().await.unwrap().unwrap();
        streams.push(bytes);
    }
    assert_eq!(calls(&up), 1);
    drop(streams.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        up.state.dropped_count.load(Ordering::SeqCst),
        0,
        "one subscriber remains"
    );
    drop(streams.pop());
    tokio::time::timeout(Duration::from_secs(5), async {
        while up.state.dropped_count.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upstream request is dropped once nobody listens");
}
