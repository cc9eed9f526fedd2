//! Quantization-tier routing through the HTTP API: sluice-tiny's three tiers behind one
//! logical model (`tiny`), a pinned alias (`tiny-int4`), and an Ollama model whose tiers
//! are tags. What a client sees: forced tiers (`@tier`, `x-sluice-tier`), 400s that
//! list the tiers, the routing headers, `model` naming the tier on JSON and on every
//! SSE chunk, `/v1/route` agreeing with what is served, the cache per tier, and the
//! load policy moving a burst off a saturated tier.

mod common;

use common::engine::{complete, greedy, model_dir};
use common::{error_of, fake_ollama, metric, parse_chunks, stream_data, streaming, Gateway};
use serde_json::{json, Value};

const TIERS: [&str; 3] = ["int4", "int8", "fp32"];

/// `tiny` routes between the three tiers with thresholds 0.2 / 0.6; extra TOML appended.
async fn start(max_batch_size: usize, extra_model: &str, extra: &str) -> Gateway {
    let toml = format!(
        "[cache]\nmode = \"deterministic\"\n\n[backends.local]\nkind = \"onnx\"\nmodel_dir = \"{}\"\n\
         tiers = [\"int4\", \"int8\", \"fp32\"]\nmax_batch_size = {max_batch_size}\nqueue_size = 64\n\
         threads = 1\nort_library = \"{}/.ort/libonnxruntime.so\"\n\n\
         [[models]]\nname = \"tiny\"\nbackend = \"local\"\ntiers = [\"int4\", \"int8\", \"fp32\"]\n\
         route.thresholds = [0.2, 0.6]\n{extra_model}\n\n\
         [[models]]\nname = \"tiny-int4\"\nbackend = \"local\"\ntier = \"int4\"\n\n{extra}",
        model_dir(),
        env!("CARGO_MANIFEST_DIR"),
    );
    Gateway::start(&toml).await
}

/// A short greeting (scores low) and a long multi-step question with numbers and code
/// (scores high).
const EASY: &str = "Hello!";
const HARD: &str = "First, explain step by step why the following function is slow, then \
    compare it with a faster version and prove the result: how many orders of 1250 - 380 \
    items at 6 * 7 each fit in 4096?\n\n```python\ndef f(n):\n    return sum(i * i for i in range(n))\n```\n\
    Finally, calculate (1250 - 380) / 6 and justify each step.";

async fn post(gw: &Gateway, body: &Value, tier_header: Option<&str>) -> reqwest::Response {
    let mut req = gw.client.post(gw.url("/v1/chat/completions")).json(body);
    if let Some(tier) = tier_header {
        req = req.header("x-sluice-tier", tier);
    }
    req.send().await.expect("gateway answers")
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_forced_tier_is_served_and_named_on_json_and_every_chunk() {
    let gw = start(8, "", "").await;
    for tier in TIERS {
        let body = greedy(&format!("tiny@{tier}"), EASY, false, 8);
        let resp = post(&gw, &body, None).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-sluice-tier"), tier);
        assert_eq!(header(&resp, "x-sluice-route-reason"), "forced");
        assert!(header(&resp, "x-sluice-complexity").parse::<f64>().is_ok());
        let text = resp.text().await.unwrap();
        let parsed: async_openai::types::chat::CreateChatCompletionResponse =
            serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.model, format!("tiny@{tier}"));

        // The header forces the same way; streamed chunks all name the tier.
        let resp = post(&gw, &streaming(greedy("tiny", EASY, false, 8)), Some(tier)).await;
        assert_eq!(header(&resp, "x-sluice-tier"), tier);
        assert_eq!(header(&resp, "x-sluice-route-reason"), "forced");
        let data = common::sse_data(&resp.text().await.unwrap());
        let chunks = parse_chunks(&data);
        assert!(!chunks.is_empty());
        assert!(chunks.iter().all(|c| c.model == format!("tiny@{tier}")));
    }
    // Forcing a tier through the name and through the header agree on the answer.
    let by_name = complete(&gw, &greedy("tiny@fp32", HARD, true, 24)).await;
    let by_header: Value = post(&gw, &greedy("tiny", HARD, true, 24), Some("fp32"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_name["choices"], by_header["choices"]);
}

#[tokio::test]
async fn an_unknown_tier_is_a_400_that_lists_the_tiers() {
    let gw = start(8, "", "").await;
    let (status, err) = error_of(post(&gw, &greedy("tiny@int2", EASY, false, 8), None).await).await;
    assert_eq!(status, 400);
    assert_eq!(err["code"], "unknown_tier");
    assert_eq!(err["param"], "model");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("int4, int8, fp32"), "{message}");

    let (status, err) =
        error_of(post(&gw, &greedy("tiny", EASY, false, 8), Some("bf16")).await).await;
    assert_eq!(status, 400);
    assert_eq!(err["param"], "x-sluice-tier");

    // Name and header disagreeing is a client mistake too.
    let (status, _) =
        error_of(post(&gw, &greedy("tiny@int4", EASY, false, 8), Some("fp32")).await).await;
    assert_eq!(status, 400);

    // A pinned alias has exactly its own tier.
    let resp = post(&gw, &greedy("tiny-int4@int4", EASY, false, 8), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-sluice-route-reason"), "single");
    let (status, err) =
        error_of(post(&gw, &greedy("tiny-int4@fp32", EASY, false, 8), None).await).await;
    assert_eq!(status, 400);
    assert!(err["message"].as_str().unwrap().contains("int4"));

    // An unknown model stays a 404, with or without a tier.
    let (status, _) = error_of(post(&gw, &greedy("nope@int4", EASY, false, 8), None).await).await;
    assert_eq!(status, 404);
    // And nothing above reached an engine.
    assert_eq!(
        metric(
            &gw,
            "sluice_engine_tokens_total{backend=\"local\",tier=\"fp32\",kind=\"prompt\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn scored_requests_go_by_complexity_and_the_dry_run_agrees() {
    let gw = start(8, "", "").await;
    let mut served = Vec::new();
    for (text, tools) in [(EASY, false), (HARD, true), ("What is 12 * 7?", true)] {
        let body = greedy("tiny", text, tools, 16);
        let dry: Value = gw.post("/v1/route", &body).await.json().await.unwrap();
        let resp = post(&gw, &body, None).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-sluice-route-reason"), "scored");
        let tier = header(&resp, "x-sluice-tier");
        assert_eq!(dry["tier"], tier, "{dry}");
        assert_eq!(dry["reason"], "scored");
        assert_eq!(
            format!("{:.4}", dry["score"].as_f64().unwrap()),
            header(&resp, "x-sluice-complexity")
        );
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["model"], format!("tiny@{tier}"));
        served.push((tier, dry));
    }
    assert_eq!(served[0].0, "int4", "a greeting goes to the cheapest tier");
    assert_eq!(
        served[1].0, "fp32",
        "the long multi-step question to the most precise"
    );
    let top = served[1].1["top_features"].as_array().unwrap();
    assert!(!top.is_empty() && top.len() <= 5);
    assert_eq!(served[1].1["tiers"], json!(TIERS));
    assert_eq!(served[1].1["thresholds"], json!([0.2, 0.6]));

    // The dry run generated nothing.
    let generated = |tier: &'static str| {
        let gw = &gw;
        async move {
            metric(
                gw,
                &format!("sluice_engine_tokens_total{{backend=\"local\",tier=\"{tier}\",kind=\"prompt\"}}"),
            )
            .await
        }
    };
    let before = generated("fp32").await;
    gw.post("/v1/route", &greedy("tiny", HARD, true, 16)).await;
    assert_eq!(generated("fp32").await, before);

    // Prometheus orders labels by name.
    let scored = |tier: &'static str| {
        let gw = &gw;
        async move {
            metric(
                gw,
                &format!("sluice_route_requests_total{{model=\"tiny\",reason=\"scored\",tier=\"{tier}\"}}"),
            )
            .await
        }
    };
    let int4 = served.iter().filter(|(t, _)| t == "int4").count() as f64;
    assert_eq!(scored("int4").await, int4);
    assert_eq!(scored("fp32").await, 3.0 - int4);
    assert!(metric(&gw, "sluice_route_complexity_score_count{model=\"tiny\"}").await >= 3.0);
}

#[tokio::test]
async fn the_cache_keeps_answers_per_tier_and_reports_the_tier_on_a_hit() {
    let gw = start(8, "", "").await;
    let body = greedy("tiny", HARD, true, 16);
    let first = post(&gw, &body, None).await;
    assert_eq!(header(&first, "x-sluice-cache"), "miss");
    let tier = header(&first, "x-sluice-tier");
    let first: Value = first.json().await.unwrap();
    let again = post(&gw, &body, None).await;
    assert_eq!(header(&again, "x-sluice-cache"), "hit");
    assert_eq!(header(&again, "x-sluice-tier"), tier);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["model"], first["model"]);
    assert_eq!(again["choices"], first["choices"]);
    // The same request forced onto another tier is not answered from that cache entry.
    let other = post(&gw, &body, Some("int4")).await;
    assert_eq!(header(&other, "x-sluice-cache"), "miss");
    assert_eq!(header(&other, "x-sluice-tier"), "int4");
}

/// Generations long enough to keep the single batch slot busy while the burst arrives.
const NOEOS: &str = "options = { ignore_eos = true }";

async fn burst(gw: &Gateway, n: usize) -> Vec<(String, String)> {
    let body = greedy("tiny", HARD, true, 48);
    let resps = futures::future::join_all((0..n).map(|i| {
        let mut body = body.clone();
        // Distinct requests: the cache and single-flight must not merge them.
        body["messages"][0]["content"] = json!(format!("{HARD} ({i})"));
        async move { post(gw, &body, None).await }
    }))
    .await;
    resps
        .iter()
        .map(|r| {
            assert_eq!(r.status(), 200);
            (
                header(r, "x-sluice-tier"),
                header(r, "x-sluice-route-reason"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_saturated_tier_moves_a_burst_to_tiers_that_exist() {
    let load = "[route.load]\nenabled = true\nmax_queue = 0\n";
    let gw = start(1, NOEOS, load).await;
    let got = burst(&gw, 6).await;
    assert!(
        got.iter().all(|(tier, _)| TIERS.contains(&tier.as_str())),
        "{got:?}"
    );
    let moved = got.iter().filter(|(_, reason)| reason == "load").count();
    assert!(moved >= 1, "nothing moved off the busy fp32 tier: {got:?}");
    assert!(got
        .iter()
        .any(|(tier, reason)| tier == "fp32" && reason == "scored"));
    let counted = metric(
        &gw,
        "sluice_route_load_moves_total{from=\"fp32\",model=\"tiny\",to=\"int8\"}",
    )
    .await
        + metric(
            &gw,
            "sluice_route_load_moves_total{from=\"fp32\",model=\"tiny\",to=\"int4\"}",
        )
        .await;
    assert_eq!(counted, moved as f64);
}

#[tokio::test]
async fn without_the_load_policy_a_burst_waits_for_its_tier() {
    let gw = start(1, NOEOS, "").await;
    let got = burst(&gw, 4).await;
    assert!(
        got.iter()
            .all(|(tier, reason)| tier == "fp32" && reason == "scored"),
        "{got:?}"
    );
}

#[tokio::test]
async fn ollama_tiers_are_tags_of_the_upstream_model() {
    let ollama = fake_ollama::start().await;
    let toml = format!(
        "[backends.up]\nkind = \"ollama\"\nurl = \"{}\"\n\n\
         [[models]]\nname = \"llama\"\nbackend = \"up\"\nupstream_model = \"llama3.2:3b-instruct\"\n\
         tiers = [\"q4_K_M\", \"q8_0\", \"fp16\"]\nroute.thresholds = [0.2, 0.6]\n",
        ollama.url
    );
    let gw = Gateway::start(&toml).await;
    let resp = post(&gw, &common::chat_body("llama@fp16", "Hello"), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-sluice-tier"), "fp16");
    assert_eq!(
        ollama.state.last_request()["model"],
        "llama3.2:3b-instruct-fp16"
    );
    let chunks =
        parse_chunks(&stream_data(&gw, &streaming(common::chat_body("llama", "Hi"))).await);
    assert!(
        chunks.iter().all(|c| c.model == "llama@q4_K_M"),
        "a greeting scores low"
    );
    assert_eq!(
        ollama.state.last_request()["model"],
        "llama3.2:3b-instruct-q4_K_M"
    );
}
