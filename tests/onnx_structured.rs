//! Structured generation on the embedded engine, as a client sees it: no tool call that
//! was not offered, arguments that validate against the offered schema (checked here
//! with the `jsonschema` crate, not with the code under test), `tool_choice`,
//! `parallel_tool_calls`, `response_format` JSON, streamed call deltas, and greedy text
//! unchanged by the machinery. `tiny-free` is the same model with `structured = false`:
//! where it breaks a rule, it shows the rule is really being tested.

mod common;

use common::engine::{self, answer, complete, greedy, metric, stream_answer};
use common::{error_of, parse_chunks, stream_data, streaming, Gateway};
use futures::future::join_all;
use serde_json::{json, Value};

type Answer = (String, Vec<(String, String)>, String);

/// The answers to `bodies`, all sent at once (the engine batches them).
async fn answers(gw: &Gateway, bodies: Vec<Value>) -> Vec<Answer> {
    join_all(
        bodies
            .iter()
            .map(|b| async move { answer(&complete(gw, b).await) }),
    )
    .await
}

fn chat(model: &str, text: &str, seed: u64, max_tokens: u32) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "temperature": 1.0,
        "seed": seed,
        "max_tokens": max_tokens,
    })
}

/// Offered tools with stricter schemas than the model was trained on, and without
/// `current_time`, which the model knows and would like to call.
fn offered() -> Value {
    json!([
        {"type": "function", "function": {"name": "calculator",
            "description": "Evaluate an arithmetic expression",
            "parameters": {"type": "object", "additionalProperties": false,
                "properties": {"expression": {"type": "string", "pattern": "^[0-9 +*/().-]{1,40}$"}},
                "required": ["expression"]}}},
        {"type": "function", "function": {"name": "sql_query",
            "description": "Run a read-only SQL query on the sales database",
            "parameters": {"type": "object", "additionalProperties": false,
                "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 160}},
                "required": ["query"]}}},
        {"type": "function", "function": {"name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "additionalProperties": false,
                "properties": {
                    "city": {"type": "string", "minLength": 1, "maxLength": 30},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 7}, "maxItems": 3}},
                "required": ["city", "unit"]}}}
    ])
}

const PROMPTS: [&str; 5] = [
    "What is 12 * 7?",
    "How many orders were placed in March?",
    "What time is it in Tokyo?",
    "Hello! Who are you?",
    "What is the total revenue of the North region?",
];

/// Calls that break the offered tools' rules: unknown name, or arguments that are not
/// JSON or do not validate. Answers cut off by `max_tokens` (finish `length`) are
/// incomplete by definition, as with OpenAI, and not judged.
fn violations(answers: &[Answer], tools: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for (_, calls, _) in answers.iter().filter(|(_, _, finish)| finish != "length") {
        for (name, arguments) in calls {
            let Some(tool) = tools
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["function"]["name"] == name.as_str())
            else {
                found.push(format!("not offered: {name}({arguments})"));
                continue;
            };
            let validator = jsonschema::validator_for(&tool["function"]["parameters"]).unwrap();
            match serde_json::from_str::<Value>(arguments) {
                Ok(args) if validator.is_valid(&args) => {}
                _ => found.push(format!("invalid arguments: {name}({arguments})")),
            }
        }
    }
    found
}

#[tokio::test]
async fn without_tools_no_sampled_answer_is_a_tool_call() {
    let gw = engine::start(&["int4"], 32, 512).await;
    // The report's request, streamed.
    let mut report = chat("tiny", "Hello number 30", 30, 32);
    report["temperature"] = json!(0.7);
    let chunks = parse_chunks(&stream_data(&gw, &streaming(report)).await);
    let (_, calls, finish) = stream_answer(&chunks);
    assert!(calls.is_empty() && finish != "tool_calls", "{calls:?}");

    let sweep = |model: &'static str| {
        (0..200)
            .map(|seed| chat(model, &format!("Hello number {seed}"), seed, 32))
            .collect::<Vec<_>>()
    };
    let constrained = answers(&gw, sweep("tiny")).await;
    for (seed, (content, calls, finish)) in constrained.iter().enumerate() {
        assert!(calls.is_empty(), "seed {seed}: {calls:?}");
        // Nor half a call as text: both tags are out of reach.
        assert!(!content.contains("tool_call>"), "seed {seed}: {content:?}");
        assert_ne!(finish, "tool_calls", "seed {seed}");
    }
    // Sampling freely, the same requests do call tools nobody offered.
    let free = answers(&gw, sweep("tiny-free")).await;
    assert!(
        free.iter().any(|(_, calls, _)| !calls.is_empty()),
        "the unconstrained model never called a tool: the sweep proves nothing"
    );
}

#[tokio::test]
async fn sampled_tool_calls_use_offered_tools_with_valid_arguments() {
    let gw = engine::start(&["int4"], 32, 1024).await;
    let bodies = |model: &'static str, n: u64| {
        (0..n)
            .map(|seed| {
                let mut body = chat(model, PROMPTS[seed as usize % PROMPTS.len()], seed, 128);
                body["tools"] = offered();
                // Nucleus sampling masks every token first; plain temperature sampling
                // checks the sampled token and masks only when it is refused.
                if seed % 2 == 1 {
                    body["top_p"] = json!(0.95);
                }
                body
            })
            .collect::<Vec<_>>()
    };
    let constrained = answers(&gw, bodies("tiny", 500)).await;
    let calls: usize = constrained.iter().map(|(_, c, _)| c.len()).sum();
    assert!(calls >= 100, "only {calls} tool calls in 500 answers");
    let cut = constrained.iter().filter(|(_, _, f)| f == "length").count();
    assert!(cut < 25, "{cut} of 500 answers hit max_tokens");
    assert_eq!(violations(&constrained, &offered()), Vec::<String>::new());
    for (_, calls, finish) in &constrained {
        if !calls.is_empty() && finish != "length" {
            assert_eq!(finish, "tool_calls");
        }
    }
    let free = answers(&gw, bodies("tiny-free", 100)).await;
    assert!(
        !violations(&free, &offered()).is_empty(),
        "the unconstrained model kept to the schemas: the test proves nothing"
    );
}

#[tokio::test]
async fn tool_choice_required_named_none_and_one_call_at_most() {
    let gw = engine::start(&["int4"], 32, 512).await;
    let with = |text: &str, choice: Value, parallel: Option<bool>, seed: u64| {
        let mut body = chat("tiny", text, seed, 64);
        body["tools"] = offered();
        body["tool_choice"] = choice;
        if let Some(parallel) = parallel {
            body["parallel_tool_calls"] = json!(parallel);
        }
        body
    };

    // "required" on a greeting: a call all the same.
    let required = answers(
        &gw,
        (0..20)
            .map(|s| with("Hello! Who are you?", json!("required"), None, s))
            .collect(),
    )
    .await;
    for (content, calls, finish) in &required {
        assert!(!calls.is_empty() && content.is_empty(), "{content:?}");
        assert_eq!(finish, "tool_calls");
    }
    assert_eq!(violations(&required, &offered()), Vec::<String>::new());

    // A named function on an arithmetic question: exactly that function, once.
    let named = json!({"type": "function", "function": {"name": "sql_query"}});
    let forced = answers(
        &gw,
        (0..20)
            .map(|s| with("What is 12 * 7?", named.clone(), None, s))
            .collect(),
    )
    .await;
    for (_, calls, _) in &forced {
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].0, "sql_query");
    }
    assert_eq!(violations(&forced, &offered()), Vec::<String>::new());

    // "none": tools are in the prompt, but the answer is text.
    let none = answers(
        &gw,
        (0..20)
            .map(|s| with("What is 12 * 7?", json!("none"), None, s))
            .collect(),
    )
    .await;
    for (content, calls, finish) in &none {
        assert!(calls.is_empty() && !content.is_empty(), "{calls:?}");
        assert!(!content.contains("tool_call>"), "{content:?}");
        assert_ne!(finish, "tool_calls");
    }

    // parallel_tool_calls false: one call at most, even when calls are required.
    let single = answers(
        &gw,
        (0..40)
            .map(|s| with(PROMPTS[s as usize % 5], json!("required"), Some(false), s))
            .collect(),
    )
    .await;
    for (_, calls, _) in &single {
        assert_eq!(calls.len(), 1, "{calls:?}");
    }
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "mood": {"enum": ["happy", "sad", "curious"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 16},
                    "zip": {"type": "integer", "minimum": 0, "maximum": 99999}
                },
                "required": ["city", "zip"],
                "additionalProperties": false
            }
        },
        "required": ["name", "mood", "tags", "address"],
        "additionalProperties": false
    })
}

#[tokio::test]
async fn response_format_json_object_and_json_schema_give_valid_json() {
    let gw = engine::start(&["int4"], 32, 512).await;
    let object = answers(
        &gw,
        (0..30)
            .map(|seed| {
                let mut body = chat("tiny", PROMPTS[seed as usize % 5], seed, 200);
                body["response_format"] = json!({"type": "json_object"});
                body
            })
            .collect(),
    )
    .await;
    for (content, calls, finish) in &object {
        assert!(calls.is_empty());
        if finish == "stop" {
            let value: Value =
                serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
            assert!(value.is_object(), "{content}");
        } else {
            assert_eq!(finish, "length");
        }
    }
    assert!(object.iter().any(|(_, _, f)| f == "stop"));

    let validator = jsonschema::validator_for(&schema()).unwrap();
    let format = json!({"type": "json_schema",
        "json_schema": {"name": "profile", "strict": true, "schema": schema()}});
    let profiles = answers(
        &gw,
        (0..30)
            .map(|seed| {
                let mut body = chat("tiny", "Describe yourself.", seed, 200);
                body["response_format"] = format.clone();
                body
            })
            .collect(),
    )
    .await;
    for (content, _, finish) in &profiles {
        assert_eq!(finish, "stop", "{content}");
        let value: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(validator.is_valid(&value), "{content}");
    }
    // The schema's closing brace ended those generations (no stop token needed).
    let ended = metric(
        &gw,
        "sluice_engine_constraint_ended_total{backend=\"local\",tier=\"int4\"}",
    )
    .await;
    assert!(ended >= 30.0, "{ended}");
    let json_runs = metric(
        &gw,
        "sluice_engine_constrained_total{backend=\"local\",kind=\"json\",tier=\"int4\"}",
    )
    .await;
    assert_eq!(json_runs, 60.0);
    let masks = metric(
        &gw,
        "sluice_engine_mask_seconds_count{backend=\"local\",tier=\"int4\"}",
    )
    .await;
    assert!(masks > 60.0, "{masks}");
}

#[tokio::test]
async fn schemas_that_cannot_be_enforced_get_a_400_naming_the_keyword() {
    let gw = engine::start(&["int4"], 8, 64).await;
    let mut body = greedy("tiny", "Hello", false, 10);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x",
        "schema": {"type": "array", "items": {"type": "integer"}, "uniqueItems": true}}});
    let (status, err) = error_of(gw.post("/v1/chat/completions", &body).await).await;
    assert_eq!(
        (status, err["param"].as_str()),
        (400, Some("response_format"))
    );
    assert!(
        err["message"].as_str().unwrap().contains("uniqueItems"),
        "{err}"
    );

    // A strict tool's schema must be enforced in full...
    let mut tool = json!({"type": "function", "function": {"name": "f", "strict": true,
        "parameters": {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": true}}}}});
    let mut body = greedy("tiny", "Hello", false, 10);
    body["tools"] = json!([tool.clone()]);
    let (status, err) = error_of(gw.post("/v1/chat/completions", &body).await).await;
    assert_eq!((status, err["param"].as_str()), (400, Some("tools")));
    assert!(
        err["message"].as_str().unwrap().contains("uniqueItems"),
        "{err}"
    );
    // ...a non-strict one is enforced as far as the library can.
    tool["function"]["strict"] = json!(false);
    body["tools"] = json!([tool]);
    complete(&gw, &body).await;
}

#[tokio::test]
async fn streamed_tool_call_deltas_reassemble_to_the_non_streamed_answer() {
    let gw = engine::start(&["int4"], 32, 128).await;
    let mut checked_calls = 0;
    for seed in 0..12 {
        let mut body = chat("tiny", PROMPTS[seed as usize % 5], seed, 64);
        body["tools"] = offered();
        let whole = answer(&complete(&gw, &body).await);
        let chunks = parse_chunks(&stream_data(&gw, &streaming(body)).await);
        assert_eq!(stream_answer(&chunks), whole, "seed {seed}");
        // A call's name goes out once, in its first delta, and its arguments in pieces.
        let deltas: Vec<_> = chunks
            .iter()
            .flat_map(|c| c.choices.iter())
            .flat_map(|c| c.delta.tool_calls.iter().flatten())
            .collect();
        for call in &whole.1 {
            checked_calls += 1;
            let first = deltas
                .iter()
                .find(|d| d.function.as_ref().and_then(|f| f.name.as_deref()) == Some(&call.0))
                .expect("a delta with the name");
            assert!(first
                .id
                .as_deref()
                .is_some_and(|id| id.starts_with("call_")));
        }
        let named = deltas
            .iter()
            .filter(|d| d.function.as_ref().is_some_and(|f| f.name.is_some()))
            .count();
        assert_eq!(named, whole.1.len(), "seed {seed}");
        if !whole.1.is_empty() {
            assert!(deltas.len() > 2 * whole.1.len(), "arguments not streamed");
        }
    }
    assert!(checked_calls > 0);
}

#[tokio::test]
async fn greedy_text_is_the_same_with_the_machinery_on_and_off() {
    let gw = engine::start(&["int4"], 8, 64).await;
    for text in [
        "Hello! Who are you?",
        "Tell me about sluice.",
        "Thanks, that helps.",
        "What can you do?",
    ] {
        let free = answer(&complete(&gw, &greedy("tiny-free", text, false, 48)).await);
        assert!(
            free.1.is_empty(),
            "pick a prompt the free model answers in text"
        );
        let on = answer(&complete(&gw, &greedy("tiny", text, false, 48)).await);
        assert_eq!(on, free, "{text}");
    }
}
