//! What a client sees of the embedded engine's answers, through the HTTP API with the
//! bundled sluice-tiny model: seeded sampling, stop strings, max_tokens, tool calls
//! (never raw tags), exact usage, and clear 400s for requests that cannot be served.

mod common;

use common::engine::{self, answer, complete, greedy, metric};
use common::{error_of, parse_chunks, stream_data, streaming};
use serde_json::json;

fn sampled(seed: u64) -> serde_json::Value {
    json!({
        "model": "tiny-noeos",
        "messages": [{"role": "user", "content": "Hello! Who are you?"}],
        "temperature": 1.3,
        "top_p": 0.95,
        "seed": seed,
        "max_tokens": 48,
    })
}

#[tokio::test]
async fn the_same_seed_gives_the_same_text() {
    let gw = engine::start(&["int4"], 8, 64).await;
    let a = answer(&complete(&gw, &sampled(7)).await).0;
    let b = answer(&complete(&gw, &sampled(7)).await).0;
    assert_eq!(a, b);
    // ...also when streamed, and whatever runs beside it.
    let (seven, other) = (streaming(sampled(7)), sampled(99));
    let (streamed, _) = futures::join!(stream_data(&gw, &seven), complete(&gw, &other));
    let text: String = parse_chunks(&streamed)
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert_eq!(text, a);
    let mut others = Vec::new();
    for seed in [1, 2, 3] {
        others.push(answer(&complete(&gw, &sampled(seed)).await).0);
    }
    assert!(
        others.iter().any(|o| *o != a),
        "different seeds all gave {a:?}"
    );
}

#[tokio::test]
async fn top_k_one_samples_the_greedy_answer_whatever_the_seed() {
    let gw = engine::start(&["int4"], 8, 64).await;
    let greedy_text =
        answer(&complete(&gw, &greedy("tiny", "Hello! Who are you?", false, 40)).await).0;
    for seed in [1, 2, 3] {
        let mut body = greedy("tiny", "Hello! Who are you?", false, 40);
        body["temperature"] = json!(1.5);
        body["seed"] = json!(seed);
        body["top_k"] = json!(1);
        assert_eq!(
            answer(&complete(&gw, &body).await).0,
            greedy_text,
            "seed {seed}"
        );
    }
}

#[tokio::test]
async fn max_tokens_ends_with_length_and_exact_usage() {
    let gw = engine::start(&["int4"], 8, 64).await;
    let body = complete(&gw, &greedy("tiny", "Hello! Who are you?", false, 3)).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let full = complete(&gw, &greedy("tiny", "Hello! Who are you?", false, 100)).await;
    assert_eq!(full["choices"][0]["finish_reason"], "stop");
    let prompt_tokens = full["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        body["usage"]["prompt_tokens"].as_u64().unwrap(),
        prompt_tokens
    );
    assert!(full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with(body["choices"][0]["message"]["content"].as_str().unwrap()));
}

#[tokio::test]
async fn a_stop_string_cuts_the_answer_and_ends_with_stop() {
    let gw = engine::start(&["int4"], 8, 64).await;
    let full = answer(&complete(&gw, &greedy("tiny", "Hello! Who are you?", false, 60)).await).0;
    assert!(full.len() > 8, "{full:?}");
    // Stop at the second word, wherever the tokens split it.
    let cut = full.find(' ').expect("more than one word") + 1;
    let stop: String = full[cut..].chars().take(3).collect();
    let mut body = greedy("tiny", "Hello! Who are you?", false, 60);
    body["stop"] = json!(["never-appears", stop]);
    for streamed in [false, true] {
        let text = if streamed {
            parse_chunks(&stream_data(&gw, &streaming(body.clone())).await)
                .iter()
                .flat_map(|c| c.choices.iter())
                .filter_map(|c| c.delta.content.clone())
                .collect::<String>()
        } else {
            let got = complete(&gw, &body).await;
            assert_eq!(got["choices"][0]["finish_reason"], "stop");
            answer(&got).0
        };
        assert_eq!(text, full[..cut], "streamed: {streamed}");
    }
}

#[tokio::test]
async fn tool_calls_come_out_as_tool_calls_never_as_tags() {
    let gw = engine::start(&["int4"], 8, 64).await;
    let body = greedy("tiny", "What is 12 * 7?", true, 60);
    let got = complete(&gw, &body).await;
    let message = &got["choices"][0]["message"];
    assert_eq!(got["choices"][0]["finish_reason"], "tool_calls", "{got}");
    assert!(message["content"].is_null(), "{got}");
    let call = &message["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "calculator");
    let args: serde_json::Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args["expression"].as_str().unwrap().replace(' ', ""),
        "12*7"
    );

    let chunks = parse_chunks(&stream_data(&gw, &streaming(body)).await);
    let mut saw_call = false;
    for chunk in &chunks {
        for choice in &chunk.choices {
            let content = choice.delta.content.as_deref().unwrap_or_default();
            assert!(!content.contains("<tool_call>") && !content.contains("</tool_call>"));
            assert!(!content.contains('<'), "partial tag leaked: {content:?}");
            saw_call |= choice.delta.tool_calls.is_some();
        }
    }
    assert!(saw_call);
    // The name once, then the arguments in pieces: together the non-streamed call.
    let streamed = engine::stream_answer(&chunks);
    assert_eq!(streamed, answer(&got));
    let last = chunks.last().unwrap();
    assert_eq!(
        serde_json::to_value(last.choices[0].finish_reason).unwrap(),
        "tool_calls"
    );

    // The answer after the tool result is text that uses it.
    let mut follow = greedy("tiny", "What is 12 * 7?", true, 60);
    follow["messages"] = json!([
        {"role": "user", "content": "What is 12 * 7?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "calculator", "arguments": "{\"expression\": \"12 * 7\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "84"}
    ]);
    let (content, calls, finish) = answer(&complete(&gw, &follow).await);
    assert!(calls.is_empty());
    assert_eq!(finish, "stop");
    assert!(content.contains("84"), "{content:?}");
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_a_400_with_the_counts() {
    let gw = engine::start(&["int4"], 8, 64).await;
    let long = "Tell me about widgets and puzzles. ".repeat(120);
    let resp = gw
        .post("/v1/chat/completions", &greedy("tiny", &long, false, 10))
        .await;
    let (status, err) = error_of(resp).await;
    assert_eq!(status, 400);
    assert_eq!(err["code"], "context_length_exceeded");
    assert_eq!(err["param"], "messages");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("maximum context length is 512 tokens"),
        "{message}"
    );

    // Fits alone, but not with the completion asked for.
    let resp = gw
        .post(
            "/v1/chat/completions",
            &greedy("tiny", "Hello!", false, 600),
        )
        .await;
    let (status, err) = error_of(resp).await;
    assert_eq!(status, 400);
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("600 in the completion"));
    // Nothing ran.
    assert_eq!(
        metric(
            &gw,
            "sluice_engine_tokens_total{backend=\"local\",kind=\"prompt\",tier=\"int4\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn requests_the_engine_cannot_serve_get_clear_400s() {
    let gw = engine::start(&["int4"], 8, 64).await;
    let image = json!({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let (status, err) = error_of(gw.post("/v1/chat/completions", &image).await).await;
    assert_eq!((status, err["param"].as_str()), (400, Some("messages")));

    // JSON output needs structured generation (on by default, off for `tiny-free`).
    let mut json_mode = greedy("tiny-free", "Hello", false, 10);
    json_mode["response_format"] = json!({"type": "json_object"});
    let (status, err) = error_of(gw.post("/v1/chat/completions", &json_mode).await).await;
    assert_eq!(
        (status, err["param"].as_str()),
        (400, Some("response_format"))
    );

    let embed = json!({"model": "tiny", "input": "hello"});
    let (status, err) = error_of(gw.post("/v1/embeddings", &embed).await).await;
    assert_eq!((status, err["param"].as_str()), (400, Some("model")));
}

#[tokio::test]
async fn engine_metrics_and_readiness_are_exposed() {
    let gw = engine::start(&["int4", "fp32"], 8, 64).await;
    assert_eq!(gw.get("/readyz").await.status(), 200);
    complete(&gw, &greedy("tiny", "Hello!", false, 5)).await;
    complete(&gw, &greedy("tiny-fp32", "Hello!", false, 5)).await;
    let text = gw.get("/metrics").await.text().await.unwrap();
    for name in [
        "sluice_engine_queue_depth{backend=\"local\",tier=\"int4\"}",
        "sluice_engine_active_sequences{backend=\"local\",tier=\"fp32\"}",
        "sluice_engine_batch_size_count{backend=\"local\",tier=\"int4\"}",
        "sluice_engine_tokens_total{backend=\"local\",kind=\"generated\",tier=\"fp32\"} 5",
        "sluice_engine_step_duration_seconds_count{backend=\"local\",phase=\"prefill\",tier=\"int4\"} 1",
        "sluice_time_to_first_token_seconds_count{backend=\"local\",model=\"tiny\"} 1",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
}

#[tokio::test]
async fn a_generation_stops_at_the_context_with_length() {
    let toml = format!(
        "[backends.local]\nkind = \"onnx\"\nmodel_dir = \"{}\"\ntiers = [\"int4\"]\n\
         max_context = 64\nthreads = 1\nort_library = \"{}/.ort/libonnxruntime.so\"\n\n\
         [[models]]\nname = \"tiny-noeos\"\nbackend = \"local\"\noptions = {{ ignore_eos = true }}\n",
        engine::model_dir(),
        env!("CARGO_MANIFEST_DIR"),
    );
    let gw = common::Gateway::start(&toml).await;
    let mut body = greedy("tiny-noeos", "Hello! Who are you?", false, 1);
    body.as_object_mut().unwrap().remove("max_tokens");
    let got = complete(&gw, &body).await;
    assert_eq!(got["choices"][0]["finish_reason"], "length");
    let usage = &got["usage"];
    assert_eq!(usage["total_tokens"], 64, "{usage}");
    // Asking for more than fits is refused up front.
    body["max_tokens"] = json!(60);
    let (status, err) = error_of(gw.post("/v1/chat/completions", &body).await).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("context_length_exceeded"))
    );
}
