//! The `openai` backend end to end: a real sluice in front of a fake OpenAI-compatible
//! upstream, responses parsed with async-openai's types.

mod common;

use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, CreateChatCompletionResponse, FinishReason,
};
use common::{chat_body, config, fake_openai, parse_chunks, sse_data, stream_data, Gateway};
use serde_json::json;

async fn setup(extra: &str) -> (Gateway, fake_openai::FakeOpenAi) {
    let up = fake_openai::start().await;
    let models = [
        ("gpt", "gpt-4o-mini"),
        ("tools", "tool-model"),
        ("f500", "fail-500"),
        ("f429", "fail-429"),
        ("fmid", "fail-mid"),
        ("slow", "slow"),
        ("hang", "hang"),
        ("stall", "stall"),
    ];
    let gw = Gateway::start(&config("openai", &up.url, &models, extra)).await;
    (gw, up)
}

/// Fields OpenAI's API does not define (vLLM's `chat_template_kwargs`, `min_p`, guided
/// decoding) reach the upstream untouched for a model with `forward_unknown_fields`, and
/// are dropped for the others; they are part of the cache key only where forwarded.
#[tokio::test]
async fn unknown_fields_reach_the_upstream_where_the_model_forwards_them() {
    let (gw, up) = setup(
        "[[models]]\nname = \"vllm\"\nbackend = \"up\"\nupstream_model = \"gpt-4o-mini\"\n\
         forward_unknown_fields = true\noptions = { min_p = 0.1, repetition_penalty = 1.1 }\n",
    )
    .await;
    let extra = json!({
        "chat_template_kwargs": {"enable_thinking": false},
        "min_p": 0.05,
        "guided_choice": ["yes", "no"],
        "big": 12345678901234567890u64
    });
    let body = |model: &str, min_p: f64| {
        let mut body = chat_body(model, "hello");
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body["min_p"] = json!(min_p);
        body
    };
    assert_eq!(
        gw.post("/v1/chat/completions", &body("vllm", 0.05))
            .await
            .status(),
        200
    );
    let sent = up.state.last_request();
    assert_eq!(sent["chat_template_kwargs"], extra["chat_template_kwargs"]);
    assert_eq!(sent["guided_choice"], extra["guided_choice"]);
    assert_eq!(sent["big"].to_string(), "12345678901234567890");
    // The client's value wins over the deployment's option; other options still apply.
    assert_eq!(sent["min_p"].to_string(), "0.05");
    assert_eq!(sent["repetition_penalty"].to_string(), "1.1");
    // Another value of a forwarded field is another answer, not a cache hit.
    let calls = up
        .state
        .chat_calls
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        gw.post("/v1/chat/completions", &body("vllm", 0.2))
            .await
            .status(),
        200
    );
    assert_eq!(
        up.state
            .chat_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        calls + 1
    );
    assert_eq!(up.state.last_request()["min_p"].to_string(), "0.2");

    // A model without the setting drops them.
    assert_eq!(
        gw.post("/v1/chat/completions", &body("gpt", 0.05))
            .await
            .status(),
        200
    );
    let sent = up.state.last_request();
    for key in ["chat_template_kwargs", "min_p", "guided_choice", "big"] {
        assert!(sent.get(key).is_none(), "{key} in {sent}");
    }
}

/// Numbers reach the upstream as the client wrote them: `0.3` stays `0.3`, not the
/// `0.30000001192092896` an `f32` on the way would make of it, streamed or not.
#[tokio::test]
async fn sampling_numbers_reach_the_upstream_as_written() {
    let (gw, up) = setup("").await;
    for stream in [false, true] {
        let body = json!({
            "model": "gpt", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
            "temperature": 0.3, "top_p": 0.95, "presence_penalty": 0.1, "frequency_penalty": -1.7
        });
        assert_eq!(gw.post("/v1/chat/completions", &body).await.status(), 200);
        let sent = up.state.last_request();
        for (key, written) in [
            ("temperature", "0.3"),
            ("top_p", "0.95"),
            ("presence_penalty", "0.1"),
            ("frequency_penalty", "-1.7"),
        ] {
            assert_eq!(sent[key].to_string(), written, "{key} in {sent}");
        }
    }
}

#[tokio::test]
async fn non_streaming_completion_has_the_openai_shape() {
    let (gw, up) = setup("").await;
    let resp = gw
        .post("/v1/chat/completions", &chat_body("gpt", "hello there"))
        .await;
    assert_eq!(resp.status(), 200);
    let body: CreateChatCompletionResponse = resp.json().await.unwrap();
    assert_eq!(body.object, "chat.completion");
    assert_eq!(body.model, "gpt");
    assert!(body.id.starts_with("chatcmpl-"));
    let choice = &body.choices[0];
    assert_eq!(choice.message.content.as_deref(), Some("echo: hello there"));
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    let usage = body.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (9, 3, 12)
    );
    // The upstream got the deployment's model name and a streaming request.
    let sent = up.state.last_request();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["stream"], true);
}

#[tokio::test]
async fn streaming_sends_chunks_usage_last_and_done() {
    let (gw, _up) = setup("").await;
    let mut body = chat_body("gpt", "one two");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks = parse_chunks(&data);
    let id = &chunks[0].id;
    assert!(chunks
        .iter()
        .all(|c| &c.id == id && c.model == "gpt" && c.object == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert_eq!(text, "echo: one two");
    // The usage chunk is last, with empty choices; every other chunk has usage null.
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    assert_eq!(last.usage.as_ref().unwrap().total_tokens, 12);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.usage.is_none()));
    let raw: serde_json::Value = serde_json::from_str(&data[0]).unwrap();
    assert!(raw.as_object().unwrap().contains_key("usage") && raw["usage"].is_null());
    let finish: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.finish_reason)
        .collect();
    assert_eq!(finish, vec![FinishReason::Stop]);
}

#[tokio::test]
async fn streaming_without_include_usage_has_no_usage_chunk() {
    let (gw, _up) = setup("").await;
    let mut body = chat_body("gpt", "x");
    body["stream"] = json!(true);
    let data = stream_data(&gw, &body).await;
    let chunks = parse_chunks(&data);
    assert!(chunks
        .iter()
        .all(|c| !c.choices.is_empty() && c.usage.is_none()));
}

#[tokio::test]
async fn tool_calls_come_back_whole_or_streamed() {
    let (gw, up) = setup("").await;
    let mut body = chat_body("tools", "weather in Boston?");
    body["tools"] = json!([{"type": "function", "function": {"name": "get_current_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]);
    body["tool_choice"] = json!("auto");
    let resp: CreateChatCompletionResponse = gw
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    let choice = &resp.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    let Some(calls) = &choice.message.tool_calls else {
        panic!("no tool calls")
    };
    let ChatCompletionMessageToolCalls::Function(call) = &calls[0] else {
        panic!()
    };
    assert_eq!(call.id, "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_eq!(call.function.name, "get_current_weather");
    assert_eq!(call.function.arguments, "{\"location\": \"Boston, MA\"}");
    let raw: serde_json::Value = gw
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    let message = raw["choices"][0]["message"].as_object().unwrap();
    assert!(
        message.contains_key("content") && message["content"].is_null(),
        "{raw}"
    );
    assert_eq!(message["tool_calls"][0]["type"], "function");
    let sent = up.state.last_request();
    assert_eq!(sent["tools"][0]["function"]["name"], "get_current_weather");
    assert_eq!(sent["tool_choice"], "auto");

    body["stream"] = json!(true);
    let data = stream_data(&gw, &body).await;
    let chunks = parse_chunks(&data);
    let deltas: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.tool_calls.clone())
        .flatten()
        .collect();
    assert_eq!(
        deltas[0].id.as_deref(),
        Some("call_DdmO9pD3xa9XTPNJ32zg2hcA")
    );
    assert_eq!(
        deltas[0].function.as_ref().unwrap().name.as_deref(),
        Some("get_current_weather")
    );
    let args: String = deltas
        .iter()
        .filter_map(|d| d.function.as_ref()?.arguments.clone())
        .collect();
    assert_eq!(args, "{\"location\": \"Boston, MA\"}");
    assert!(deltas[1..].iter().all(|d| d.id.is_none() && d.index == 0));
}

#[tokio::test]
async fn request_parameters_reach_the_upstream() {
    let (gw, up) = setup("").await;
    let body = json!({
        "model": "gpt",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}
        ],
        "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 7, "stop": ["END"], "seed": 42,
        "presence_penalty": 0.5, "frequency_penalty": 0.25, "user": "u-1", "top_k": 5,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
        "parallel_tool_calls": false,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    });
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status(), 200);
    let sent = up.state.last_request();
    assert_eq!(sent["temperature"].as_f64().unwrap() as f32, 0.2);
    assert_eq!(sent["top_p"].as_f64().unwrap() as f32, 0.9);
    assert_eq!(sent["max_tokens"], 7);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["seed"], 42);
    assert_eq!(sent["user"], "u-1");
    assert_eq!(sent["top_k"], 5);
    assert_eq!(sent["parallel_tool_calls"], false);
    assert_eq!(sent["response_format"]["json_schema"]["name"], "answer");
    assert_eq!(
        sent["messages"][1]["content"][1]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );
}

#[tokio::test]
async fn upstream_api_key_and_options_are_sent() {
    let up = fake_openai::start().await;
    let toml = format!(
        "[backends.up]\nkind = \"openai\"\nurl = \"{}\"\napi_key = \"sk-upstream\"\n\n[[models]]\nname = \"gpt\"\nbackend = \"up\"\noptions = {{ top_k = 40 }}\n",
        up.url
    );
    let gw = Gateway::start(&toml).await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat_body("gpt", "hi"))
            .await
            .status(),
        200
    );
    assert_eq!(
        up.state.auth_headers.lock().unwrap()[0],
        "Bearer sk-upstream"
    );
    assert_eq!(up.state.last_request()["top_k"], 40);
}

#[tokio::test]
async fn embeddings_are_forwarded() {
    let (gw, up) = setup("").await;
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "gpt", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: async_openai::types::embeddings::CreateEmbeddingResponse = resp.json().await.unwrap();
    assert_eq!(body.data.len(), 2);
    assert_eq!(body.data[1].index, 1);
    assert_eq!(body.data[1].embedding[2], 1.0);
    assert_eq!(body.usage.prompt_tokens, 16);
    assert_eq!(up.state.last_request()["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn token_id_inputs_are_forwarded_as_sent() {
    let (gw, up) = setup("").await;
    for input in [json!([9906, 1917]), json!([[9906, 1917], [15339]])] {
        let resp = gw
            .post("/v1/embeddings", &json!({"model": "gpt", "input": input}))
            .await;
        assert_eq!(resp.status(), 200);
        let sent = up.state.last_request();
        let want = if input[0].is_array() {
            input.clone()
        } else {
            json!([input])
        };
        assert_eq!(sent["input"], want);
    }
}

#[tokio::test]
async fn base64_embeddings_decode_to_the_same_floats() {
    let (gw, _up) = setup("").await;
    let resp: serde_json::Value = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "gpt", "input": "a", "encoding_format": "base64"}),
        )
        .await
        .json()
        .await
        .unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(resp["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, vec![0.0023064255, -0.009327292, 0.0]);
}

/// An upstream whose answers are huge: an endless error page, a 65 MiB embeddings body, and
/// a stream whose tool call claims index 4294967295.
async fn huge_upstream() -> String {
    use axum::http::StatusCode;
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(|body: axum::Json<serde_json::Value>| async move {
                if body["stream"] == json!(true) {
                    let chunk = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                        {"index": 4294967295u32, "id": "c", "type": "function",
                         "function": {"name": "f", "arguments": ""}}]}}]});
                    let sse = format!("data: {chunk}\n\ndata: [DONE]\n\n");
                    return ([("content-type", "text/event-stream")], sse).into_response();
                }
                // An error page that never ends.
                let endless = futures::stream::repeat_with(|| {
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from(vec![b'x'; 64 * 1024]))
                });
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::body::Body::from_stream(endless),
                )
                    .into_response()
            }),
        )
        .route(
            "/v1/embeddings",
            post(|| async {
                (
                    [("content-type", "application/json")],
                    vec![b' '; 65 * 1024 * 1024],
                )
            }),
        );
    use axum::response::IntoResponse;
    format!("http://{}/v1", common::serve(app).await)
}

#[tokio::test]
async fn huge_or_hostile_upstream_answers_are_bounded_errors() {
    let url = huge_upstream().await;
    let gw = Gateway::start(&config("openai", &url, &[("m", "m")], "")).await;
    let resp = gw.post("/v1/chat/completions", &chat_body("m", "hi")).await;
    let (status, err) = common::error_of(resp).await;
    assert_eq!(status, 502);
    let message = err["message"].as_str().unwrap();
    assert!(
        message.len() <= 70 * 1024,
        "the error body was read whole: {} bytes",
        message.len()
    );

    let resp = gw
        .post("/v1/embeddings", &json!({"model": "m", "input": "hi"}))
        .await;
    let (status, err) = common::error_of(resp).await;
    assert_eq!(status, 502, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("more than"),
        "{err}"
    );

    // A tool-call index near u32::MAX is a protocol error (before the first byte: a
    // 502), not an allocation that aborts the process.
    let resp = gw
        .post(
            "/v1/chat/completions",
            &common::streaming(chat_body("m", "hi")),
        )
        .await;
    let (status, err) = common::error_of(resp).await;
    assert_eq!(status, 502);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("at most 128 tool calls"),
        "{err}"
    );
    assert_eq!(gw.get("/healthz").await.status(), 200);
}
