//! The `ollama` backend end to end: a real sluice in front of a fake Ollama speaking the
//! native API (`/api/chat` NDJSON, `/api/embed`, `/api/tags`); responses parsed with
//! async-openai's types, and what reached Ollama read back from the fake.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse, FinishReason,
};
use common::{
    chat_body, config, error_of, fake_ollama, parse_chunks, stream_data, streaming, Gateway,
};
use futures::StreamExt;
use serde_json::{json, Value};

async fn setup(extra: &str) -> (Gateway, fake_ollama::FakeOllama) {
    let up = fake_ollama::start().await;
    let models = [
        ("llama", "llama3.2"),
        ("tools", "tool-model"),
        ("length", "length"),
        ("fmid", "fail-mid"),
        ("ffirst", "fail-first"),
        ("missing", "missing"),
        ("slow", "slow"),
    ];
    let gw = Gateway::start(&config("ollama", &up.url, &models, extra)).await;
    (gw, up)
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_current_weather",
        "description": "Get the current weather for a location",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string"},
            "format": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        }, "required": ["location", "format"]}
    }}])
}

#[tokio::test]
async fn non_streaming_completion_from_ndjson() {
    let (gw, up) = setup("").await;
    let resp = gw
        .post("/v1/chat/completions", &chat_body("llama", "hello there"))
        .await;
    assert_eq!(resp.status(), 200);
    let body: CreateChatCompletionResponse = resp.json().await.unwrap();
    assert_eq!(body.object, "chat.completion");
    assert_eq!(body.model, "llama");
    assert!(body.id.starts_with("chatcmpl-"));
    let choice = &body.choices[0];
    assert_eq!(choice.message.content.as_deref(), Some("echo: hello there"));
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    // Usage comes from the final line's prompt_eval_count / eval_count.
    let usage = body.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (26, 3, 29)
    );
    let sent = up.state.last_request();
    assert_eq!(sent["model"], "llama3.2");
    assert_eq!(sent["stream"], true);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "hello there"}])
    );
    assert!(sent.get("options").is_none() && sent.get("format").is_none());
}

#[tokio::test]
async fn streaming_sends_chunks_usage_last_and_done() {
    let (gw, _up) = setup("").await;
    let mut body = streaming(chat_body("llama", "one two"));
    body["stream_options"] = json!({"include_usage": true});
    let data = stream_data(&gw, &body).await;
    let chunks = parse_chunks(&data);
    let id = &chunks[0].id;
    assert!(id.starts_with("chatcmpl-"));
    assert!(chunks.iter().all(|c| &c.id == id
        && c.model == "llama"
        && c.object == "chat.completion.chunk"
        && c.created == chunks[0].created));
    let text: String = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert_eq!(text, "echo: one two");
    // More than one content chunk: the answer is streamed, not sent in one piece.
    let pieces = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty()))
        .count();
    assert_eq!(pieces, 3);
    let finish: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.finish_reason)
        .collect();
    assert_eq!(finish, vec![FinishReason::Stop]);
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    let usage = last.usage.as_ref().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (26, 3, 29)
    );
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.usage.is_none()));

    // Without include_usage there is no usage chunk.
    let data = stream_data(&gw, &streaming(chat_body("llama", "x"))).await;
    assert!(parse_chunks(&data)
        .iter()
        .all(|c| !c.choices.is_empty() && c.usage.is_none()));
}

#[tokio::test]
async fn done_reason_length_becomes_finish_reason_length() {
    let (gw, _up) = setup("").await;
    let body: CreateChatCompletionResponse = gw
        .post("/v1/chat/completions", &chat_body("length", "tell a story"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body.choices[0].finish_reason, Some(FinishReason::Length));
    assert_eq!(body.choices[0].message.content.as_deref(), Some("Once"));
}

#[tokio::test]
async fn tool_calls_come_back_in_openai_form() {
    let (gw, up) = setup("").await;
    let mut body = chat_body("tools", "What is the weather today in Paris and Tokyo?");
    body["tools"] = weather_tool();
    let resp: CreateChatCompletionResponse = gw
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    let choice = &resp.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    let calls: Vec<_> = choice
        .message
        .tool_calls
        .as_ref()
        .expect("tool calls")
        .iter()
        .map(|c| match c {
            ChatCompletionMessageToolCalls::Function(f) => f.clone(),
            other => panic!("not a function call: {other:?}"),
        })
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.id.starts_with("call_")));
    assert_ne!(calls[0].id, calls[1].id);
    assert_eq!(calls[0].function.name, "get_current_weather");
    // Arguments are a JSON string holding Ollama's object.
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(args, json!({"format": "celsius", "location": "Paris, FR"}));
    let args: Value = serde_json::from_str(&calls[1].function.arguments).unwrap();
    assert_eq!(args["location"], "Tokyo, JP");
    assert_eq!(usage_total(&resp), 155);
    // The tools reached Ollama in its own shape.
    let sent = up.state.last_request();
    assert_eq!(sent["tools"][0]["type"], "function");
    assert_eq!(sent["tools"][0]["function"]["name"], "get_current_weather");
    assert_eq!(
        sent["tools"][0]["function"]["parameters"]["required"],
        json!(["location", "format"])
    );

    // Streamed: each call is one delta with index, id, type, name and whole arguments.
    let data = stream_data(&gw, &streaming(body)).await;
    let chunks = parse_chunks(&data);
    let deltas: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.tool_calls.clone())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 2);
    for (i, d) in deltas.iter().enumerate() {
        assert_eq!(d.index, i as u32);
        assert!(d.id.as_deref().unwrap().starts_with("call_"));
        assert!(d.r#type.is_some());
        let f = d.function.as_ref().unwrap();
        assert_eq!(f.name.as_deref(), Some("get_current_weather"));
        let args: Value = serde_json::from_str(f.arguments.as_deref().unwrap()).unwrap();
        assert_eq!(args["format"], "celsius");
    }
    assert_ne!(deltas[0].id, deltas[1].id);
    let finish: Vec<_> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.finish_reason)
        .collect();
    assert_eq!(finish, vec![FinishReason::ToolCalls]);
}

fn usage_total(resp: &CreateChatCompletionResponse) -> u32 {
    resp.usage.as_ref().unwrap().total_tokens
}

#[tokio::test]
async fn tool_call_history_reaches_ollama_with_object_arguments_and_tool_name() {
    let (gw, up) = setup("").await;
    let mut body = json!({
        "model": "llama",
        "messages": [
            {"role": "user", "content": "What is the weather today in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {
                    "name": "get_current_weather",
                    "arguments": "{\"format\":\"celsius\",\"location\":\"Paris, FR\"}"}},
                {"id": "call_def", "type": "function", "function": {
                    "name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_def", "content": "14:00"},
            {"role": "tool", "tool_call_id": "call_abc", "content": "22°C"}
        ],
        "tools": weather_tool()
    });
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let sent = up.state.last_request();
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[1]["role"], "assistant");
    let calls = msgs[1]["tool_calls"].as_array().unwrap();
    assert_eq!(calls[0]["function"]["name"], "get_current_weather");
    assert_eq!(
        calls[0]["function"]["arguments"],
        json!({"format": "celsius", "location": "Paris, FR"})
    );
    assert_eq!(calls[1]["function"]["arguments"], json!({}));
    // Each tool result names its tool, found through the call id.
    assert_eq!(msgs[2]["role"], "tool");
    assert_eq!(msgs[2]["tool_name"], "get_time");
    assert_eq!(msgs[2]["content"], "14:00");
    assert_eq!(msgs[3]["tool_name"], "get_current_weather");
    assert_eq!(msgs[3]["content"], "22°C");

    // Arguments that are not JSON cannot become an object: a 400, and nothing is sent.
    let before = up.state.request_count();
    body["messages"][1]["tool_calls"][0]["function"]["arguments"] = json!("{\"location\": Paris");
    let (status, error) = error_of(gw.post("/v1/chat/completions", &body).await).await;
    assert_eq!(status, 400);
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"].as_str().unwrap().contains("arguments"),
        "{error}"
    );
    assert_eq!(up.state.request_count(), before);
}

#[tokio::test]
async fn images_reach_ollama_as_bare_base64() {
    let (gw, up) = setup("").await;
    let mut body = json!({
        "model": "llama",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is in this image?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAG0AAABmCAYAAADBPx+VAAAACXBIWXMAAAsT"}}
        ]}]
    });
    let resp: CreateChatCompletionResponse = gw
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        resp.choices[0].message.content.as_deref(),
        Some("echo: what is in this image?")
    );
    let sent = up.state.last_request();
    assert_eq!(sent["messages"][0]["content"], "what is in this image?");
    assert_eq!(
        sent["messages"][0]["images"],
        json!(["iVBORw0KGgoAAAANSUhEUgAAAG0AAABmCAYAAADBPx+VAAAACXBIWXMAAAsT"])
    );

    // Ollama cannot fetch URLs: a remote image is the client's to fix.
    let before = up.state.request_count();
    body["messages"][0]["content"][1]["image_url"]["url"] = json!("https://example.com/cat.png");
    let (status, error) = error_of(gw.post("/v1/chat/completions", &body).await).await;
    assert_eq!(status, 400);
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].as_str().unwrap().contains("base64"));
    assert_eq!(up.state.request_count(), before);
}

/// Numbers reach Ollama as the client wrote them: `0.3` is `0.3` in `options`, not the
/// `0.30000001192092896` an `f32` on the way would make of it.
#[tokio::test]
async fn sampling_numbers_reach_ollama_as_written() {
    let (gw, up) = setup("").await;
    let body = json!({
        "model": "llama", "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3, "top_p": 0.95, "presence_penalty": 0.1, "frequency_penalty": -1.7
    });
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status(), 200);
    let options = up.state.last_request()["options"].clone();
    for (key, written) in [
        ("temperature", "0.3"),
        ("top_p", "0.95"),
        ("presence_penalty", "0.1"),
        ("frequency_penalty", "-1.7"),
    ] {
        assert_eq!(options[key].to_string(), written, "{key} in {options}");
    }
}

#[tokio::test]
async fn sampling_options_keep_alive_and_format_reach_ollama() {
    let up = fake_ollama::start().await;
    let toml = format!(
        "[backends.up]\nkind = \"ollama\"\nurl = \"{}\"\n\n\
         [[models]]\nname = \"llama\"\nbackend = \"up\"\nupstream_model = \"llama3.2\"\n\
         keep_alive = \"10m\"\noptions = {{ num_ctx = 8192, top_k = 20 }}\n\n\
         [[models]]\nname = \"pinned\"\nbackend = \"up\"\nupstream_model = \"llama3.2\"\nkeep_alive = \"-1\"\n",
        up.url
    );
    let gw = Gateway::start(&toml).await;
    let body = json!({
        "model": "llama",
        "messages": [{"role": "user", "content": "Respond using JSON"}],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 7, "seed": 42, "stop": ["END", "user:"],
        "presence_penalty": 0.5, "frequency_penalty": 0.25, "top_k": 3,
        "response_format": {"type": "json_object"}
    });
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status(), 200);
    let sent = up.state.last_request();
    let options = &sent["options"];
    assert_eq!(options["num_ctx"], 8192);
    // The request's top_k (an extra body field) wins over the model's configured one.
    assert_eq!(options["top_k"], 3);
    assert_eq!(options["temperature"].as_f64().unwrap() as f32, 0.2);
    assert_eq!(options["top_p"].as_f64().unwrap() as f32, 0.9);
    assert_eq!(options["num_predict"], 7);
    assert_eq!(options["seed"], 42);
    assert_eq!(options["stop"], json!(["END", "user:"]));
    assert_eq!(options["presence_penalty"].as_f64().unwrap() as f32, 0.5);
    assert_eq!(options["frequency_penalty"].as_f64().unwrap() as f32, 0.25);
    // Sampling lives in `options`, not at the top level where Ollama ignores it.
    assert!(sent.get("temperature").is_none() && sent.get("max_tokens").is_none());
    assert_eq!(sent["keep_alive"], "10m");
    assert_eq!(sent["format"], "json");

    // A JSON schema is sent as the format itself; max_completion_tokens → num_predict.
    let schema = json!({"type": "object", "properties": {"age": {"type": "integer"},
        "available": {"type": "boolean"}}, "required": ["age", "available"]});
    let body = json!({
        "model": "pinned",
        "messages": [{"role": "user", "content": "Ollama is 22 years old"}],
        "max_completion_tokens": 5,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}}
    });
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status(), 200);
    let sent = up.state.last_request();
    assert_eq!(sent["format"], schema);
    assert_eq!(sent["options"], json!({"num_predict": 5}));
    // Seconds go as a number: -1 keeps the model loaded.
    assert_eq!(sent["keep_alive"], -1);
}

#[tokio::test]
async fn an_error_line_mid_stream_is_one_final_sse_error_event() {
    let (gw, _up) = setup("").await;
    let data = stream_data(&gw, &streaming(chat_body("fmid", "go"))).await;
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let (last, before) = data.split_last().unwrap();
    let error: Value = serde_json::from_str(last).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(fake_ollama::MODEL_ERROR), "{message}");
    assert!(error["error"]["type"].is_string());
    // The text that came before the error was delivered as ordinary chunks.
    let text: String = before
        .iter()
        .map(|d| serde_json::from_str::<CreateChatCompletionStreamResponse>(d).unwrap())
        .flat_map(|c| c.choices)
        .filter_map(|c| c.delta.content)
        .collect();
    assert_eq!(text, "partial");

    // Not streamed, the same answer is a 502 with Ollama's message.
    let (status, error) = error_of(
        gw.post("/v1/chat/completions", &chat_body("fmid", "go"))
            .await,
    )
    .await;
    assert_eq!(status, 502);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains(fake_ollama::MODEL_ERROR));
}

#[tokio::test]
async fn an_error_as_the_first_line_is_a_502_json_error() {
    let (gw, _up) = setup("").await;
    for body in [
        chat_body("ffirst", "go"),
        streaming(chat_body("ffirst", "go")),
    ] {
        let resp = gw.post("/v1/chat/completions", &body).await;
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let (status, error) = error_of(resp).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(error["type"], "api_error");
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains(fake_ollama::MODEL_ERROR));
    }
}

#[tokio::test]
async fn ollama_404_is_a_502_with_ollamas_message() {
    let (gw, _up) = setup("").await;
    for body in [
        chat_body("missing", "hi"),
        streaming(chat_body("missing", "hi")),
    ] {
        let (status, error) = error_of(gw.post("/v1/chat/completions", &body).await).await;
        assert_eq!(status, 502, "{body}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("model 'missing' not found"),
            "{error}"
        );
    }
    let (status, error) = error_of(
        gw.post("/v1/embeddings", &json!({"model": "missing", "input": "a"}))
            .await,
    )
    .await;
    assert_eq!(status, 502);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("model 'missing' not found"));
}

#[tokio::test]
async fn token_id_inputs_are_refused_before_reaching_ollama() {
    let up = fake_ollama::start().await;
    let toml = format!(
        "[backends.up]\nkind = \"ollama\"\nurl = \"{}\"\n\n[[models]]\nname = \"embed\"\nbackend = \"up\"\n",
        up.url
    );
    let gw = Gateway::start(&toml).await;
    for input in [json!([9906, 1917]), json!([[9906], [1917]])] {
        let body = json!({"model": "embed", "input": input});
        let (status, error) = error_of(gw.post("/v1/embeddings", &body).await).await;
        assert_eq!((status, error["param"].as_str()), (400, Some("input")));
        assert!(
            error["message"].as_str().unwrap().contains("text only"),
            "{error}"
        );
    }
    assert!(up.state.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn embeddings_go_through_api_embed() {
    let up = fake_ollama::start().await;
    let toml = format!(
        "[backends.up]\nkind = \"ollama\"\nurl = \"{}\"\n\n\
         [[models]]\nname = \"embed\"\nbackend = \"up\"\nupstream_model = \"all-minilm\"\nkeep_alive = \"5m\"\n",
        up.url
    );
    let gw = Gateway::start(&toml).await;
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "embed", "input": ["Why is the sky blue?", "Why is the grass green?"]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: async_openai::types::embeddings::CreateEmbeddingResponse = resp.json().await.unwrap();
    assert_eq!(body.model, "embed");
    assert_eq!(body.data.len(), 2);
    assert_eq!(body.data[1].index, 1);
    assert_eq!(
        body.data[0].embedding,
        vec![0.010071029, -0.0017594862, 0.0]
    );
    assert_eq!(body.data[1].embedding[2], 1.0);
    assert_eq!(body.usage.prompt_tokens, 16);
    let sent = up.state.last_request();
    assert_eq!(sent["model"], "all-minilm");
    assert_eq!(
        sent["input"],
        json!(["Why is the sky blue?", "Why is the grass green?"])
    );
    assert_eq!(sent["keep_alive"], "5m");
    assert_eq!(up.state.chat_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn readyz_follows_api_tags() {
    let (gw, up) = setup("").await;
    let resp = gw.get("/readyz").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["backends"]["up"]["ready"], true);
    assert!(up.state.tags_calls.load(Ordering::SeqCst) >= 1);

    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = Gateway::start(&config(
        "ollama",
        &format!("http://127.0.0.1:{closed}"),
        &[("llama", "llama3.2")],
        "",
    ))
    .await;
    let resp = gw.get("/readyz").await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["backends"]["up"]["ready"], false);
    assert!(body["backends"]["up"]["error"].is_string());
}

#[tokio::test]
async fn client_disconnect_drops_the_ollama_connection() {
    let (gw, up) = setup("").await;
    let resp = gw
        .post("/v1/chat/completions", &streaming(chat_body("slow", "go")))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    // Wait until tokens are flowing, then hang up.
    let mut seen = String::new();
    while !seen.contains("t1 ") {
        let chunk = body.next().await.expect("stream open").unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(up.state.dropped_count.load(Ordering::SeqCst), 0);
    drop(body);
    tokio::time::timeout(Duration::from_secs(10), up.state.dropped.notified())
        .await
        .expect("the Ollama stream was dropped after the client left");
    assert_eq!(up.state.dropped_count.load(Ordering::SeqCst), 1);
}
