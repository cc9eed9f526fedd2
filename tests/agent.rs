//! The server-side agent loop against a scripted OpenAI-compatible upstream: the model's
//! tool calls are run by the gateway and the client gets one finished answer.

mod common;

use std::time::{Duration, Instant};

use common::scripted::{self, script};
use common::{error_of, metric, parse_chunks, sse_data, Gateway};
use serde_json::{json, Value};

/// Models on the scripted upstream: `agent` (calculator + current_time), `plain` (none),
/// `chain` (calculator, max_steps 2), `quick` (deadline 300ms).
async fn start(extra: &str) -> (Gateway, scripted::Scripted) {
    let up = scripted::start().await;
    let toml = format!(
        r#"
[backends.up]
kind = "openai"
url = "{url}"

[tools.calculator]
kind = "calculator"

[tools.current_time]
kind = "current_time"

[[models]]
name = "agent"
backend = "up"
upstream_model = "scripted"
tools = ["calculator", "current_time"]

[[models]]
name = "plain"
backend = "up"
upstream_model = "scripted"

[[models]]
name = "chain"
backend = "up"
upstream_model = "scripted"
tools = ["calculator"]
agent.max_steps = 2

[[models]]
name = "quick"
backend = "up"
upstream_model = "scripted"
tools = ["calculator"]
agent.deadline = "300ms"
{extra}
"#,
        url = up.url
    );
    (Gateway::start(&toml).await, up)
}

fn body(model: &str, turns: Value) -> Value {
    json!({"model": model, "temperature": 0,
           "messages": [{"role": "user", "content": script(turns, "done")}]})
}

fn calc(expression: &str) -> Value {
    json!({"name": "calculator", "arguments": {"expression": expression}})
}

async fn post_traced(gw: &Gateway, body: &Value) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/chat/completions"))
        .header("x-sluice-trace", "1")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

#[tokio::test]
async fn one_tool_call_is_run_and_the_client_gets_the_answer() {
    let (gw, up) = start("").await;
    let resp = post_traced(&gw, &body("agent", json!([[calc("17 * 23")]]))).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(content(&v), "done [391]");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    // usage sums both turns: 1 message then 3 (user, assistant call, tool result).
    assert_eq!(v["usage"]["prompt_tokens"], 40);
    assert_eq!(v["usage"]["completion_tokens"], 10);
    assert_eq!(v["usage"]["total_tokens"], 50);
    let steps = v["sluice_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["tool"], "calculator");
    assert_eq!(steps[0]["outcome"], "ok");
    assert_eq!(steps[0]["arguments"], r#"{"expression":"17 * 23"}"#);
    // What the model saw: the server tools offered, then its call and the result.
    let requests = up.requests();
    assert_eq!(requests.len(), 2);
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        ["calculator", "current_time"],
        "in the order the model lists them"
    );
    let second = requests[1]["messages"].as_array().unwrap();
    assert_eq!(second[1]["tool_calls"][0]["id"], "call_t0_0");
    assert_eq!(second[2]["role"], "tool");
    assert_eq!(second[2]["tool_call_id"], "call_t0_0");
    assert_eq!(second[2]["content"], "391");
    // Without the trace header the answer is a plain completion.
    let plain: Value = gw
        .post(
            "/v1/chat/completions",
            &body("agent", json!([[calc("2 + 2")]])),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(plain.get("sluice_steps").is_none());
    assert_eq!(content(&plain), "done [4]");
    assert_eq!(
        metric(
            &gw,
            "sluice_tool_calls_total{outcome=\"ok\",tool=\"calculator\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &gw,
            "sluice_agent_runs_total{model=\"agent\",outcome=\"answer\"}"
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn parallel_calls_and_a_three_step_chain() {
    let (gw, up) = start("").await;
    let parallel = json!([[calc("1 + 1"), {"name": "current_time", "arguments": {"timezone": "UTC"}}, calc("3 * 3")]]);
    let v: Value = post_traced(&gw, &body("agent", parallel))
        .await
        .json()
        .await
        .unwrap();
    let text = content(&v);
    assert!(text.starts_with("done [2 | 20"), "{text}");
    assert!(text.ends_with("+00:00 | 9]"), "{text}");
    let steps: Vec<&str> = v["sluice_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tool"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["calculator", "current_time", "calculator"]);
    assert!(v["sluice_steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["turn"] == 1));

    let chain = json!([[calc("1 + 1")], [calc("2 + 2")], [calc("4 + 4")]]);
    let before = up.requests().len();
    let v: Value = post_traced(&gw, &body("agent", chain))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(content(&v), "done [2 | 4 | 8]");
    let turns: Vec<i64> = v["sluice_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["turn"].as_i64().unwrap())
        .collect();
    assert_eq!(turns, [1, 2, 3]);
    assert_eq!(up.requests().len() - before, 4);
    assert_eq!(
        metric(&gw, "sluice_agent_steps_sum{model=\"agent\"}").await,
        4.0
    );
}

#[tokio::test]
async fn tool_errors_go_back_to_the_model_not_to_the_client() {
    let (gw, up) = start("").await;
    let turns = json!([[calc("1 / 0"), {"name": "calculator", "arguments": "{not json"}, {"name": "no_such_tool", "arguments": {}}]]);
    let resp = post_traced(&gw, &body("agent", turns)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let outcomes: Vec<&str> = v["sluice_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["invalid", "invalid", "invalid"]);
    let tool_messages: Vec<String> = up.requests()[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        tool_messages[0],
        "error: invalid arguments: division by zero"
    );
    assert!(
        tool_messages[1].starts_with("error: invalid arguments: the arguments are not valid JSON")
    );
    assert_eq!(
        tool_messages[2],
        "error: invalid arguments: there is no tool named `no_such_tool`"
    );
    assert!(content(&v).contains("division by zero"));
    assert_eq!(
        metric(
            &gw,
            "sluice_tool_calls_total{outcome=\"invalid\",tool=\"calculator\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &gw,
            "sluice_tool_calls_total{outcome=\"invalid\",tool=\"unknown\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn max_steps_ends_with_one_turn_told_to_use_no_tool() {
    let (gw, up) = start("").await;
    let mut b = body("chain", json!([[calc("1 + 1")]]));
    b["messages"][0]["content"] = json!(
        json!({"turns": [[calc("1 + 1")]], "forever": true, "answer": "gave up"}).to_string()
    );
    let v: Value = post_traced(&gw, &b).await.json().await.unwrap();
    assert_eq!(content(&v), "gave up [2 | 2]");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let requests = up.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[..2]
        .iter()
        .all(|r| r.get("tool_choice").is_none() || r["tool_choice"] == "auto"));
    assert_eq!(requests[2]["tool_choice"], "none");
    assert_eq!(
        metric(
            &gw,
            "sluice_agent_runs_total{model=\"chain\",outcome=\"max_steps\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn the_deadline_ends_the_run_with_length_and_an_incomplete_marker() {
    let (gw, _up) = start("").await;
    let mut b = body("quick", json!([]));
    b["messages"][0]["content"] =
        json!(json!({"turns": [[calc("1 + 1")]], "forever": true, "delay_ms": 120}).to_string());
    let t = Instant::now();
    let v: Value = post_traced(&gw, &b).await.json().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["incomplete_details"]["reason"], "deadline");
    assert!(!v["sluice_steps"].as_array().unwrap().is_empty());
    // Streamed: the marker rides on the finish chunk.
    b["stream"] = json!(true);
    let data = common::stream_data(&gw, &b).await;
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["incomplete_details"]["reason"], "deadline");
    assert_eq!(
        metric(
            &gw,
            "sluice_agent_runs_total{model=\"quick\",outcome=\"deadline\"}"
        )
        .await,
        2.0
    );
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn client_tools_are_returned_and_mixed_runs_work() {
    let (gw, up) = start("").await;
    // Only a client tool called: returned as usual.
    let mut b = body(
        "agent",
        json!([[{"name": "get_weather", "arguments": {"city": "Paris"}}]]),
    );
    b["tools"] = weather_tool();
    let v: Value = post_traced(&gw, &b).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(calls[0]["id"], "call_t0_0");
    let first = up.requests()[0].clone();
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["get_weather", "calculator", "current_time"]);

    // Mixed: a server step, then the client's tool; the client sees only its call.
    let mut b = body(
        "agent",
        json!([[calc("6 * 7")], [{"name": "get_weather", "arguments": {"city": "Oslo"}}]]),
    );
    b["tools"] = weather_tool();
    b["stream"] = json!(true);
    let resp = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("x-sluice-trace", "1")
        .json(&b)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let chunks = parse_chunks(&sse_data(&text));
    let finishes: Vec<String> = chunks
        .iter()
        .filter_map(|c| {
            c.choices
                .first()
                .and_then(|ch| ch.finish_reason)
                .map(|f| format!("{f:?}"))
        })
        .collect();
    assert_eq!(finishes, ["ToolCalls"], "one finish_reason, at the end");
    let names: Vec<String> = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .flat_map(|ch| ch.delta.tool_calls.iter().flatten())
        .filter_map(|t| t.function.as_ref().and_then(|f| f.name.clone()))
        .collect();
    assert_eq!(names, ["get_weather"]);
    assert!(text.contains("\"sluice_step\":{"), "{text}");

    // A client tool with the name of a server tool is the client's.
    let mut b = body("agent", json!([[calc("1 + 1")]]));
    b["tools"] = json!([{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]);
    let v: Value = gw
        .post("/v1/chat/completions", &b)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "calculator"
    );
}

#[tokio::test]
async fn streamed_steps_are_sse_comments_and_never_a_finish_reason() {
    let (gw, _up) = start("").await;
    let mut b = body("agent", json!([[calc("17 * 23")], [calc("391 + 9")]]));
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    let resp = gw.post("/v1/chat/completions", &b).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let comments: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(": sluice_step"))
        .collect();
    assert_eq!(comments.len(), 2, "{text}");
    assert!(comments[0].starts_with(": sluice_step turn=1 tool=calculator outcome=ok duration_ms="));
    assert!(
        !text.contains("expression"),
        "arguments only go out with the trace header"
    );
    let chunks = parse_chunks(&sse_data(&text));
    let finishes: Vec<_> = chunks
        .iter()
        .filter_map(|c| c.choices.first().and_then(|ch| ch.finish_reason))
        .collect();
    assert_eq!(finishes.len(), 1);
    let streamed: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|ch| ch.delta.content.clone())
        .collect();
    assert_eq!(streamed, "done [391 | 400]");
    let words = chunks
        .iter()
        .filter(|c| {
            c.choices
                .first()
                .is_some_and(|ch| ch.delta.content.as_deref().is_some_and(|t| !t.is_empty()))
        })
        .count();
    assert!(words >= 3, "the final answer streams token by token");
    let usage = chunks.last().unwrap().usage.clone().unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (10 + 30 + 50, 15)
    );
}

#[tokio::test]
async fn server_tools_are_part_of_the_cache_key_and_volatile_runs_are_not_stored() {
    let (gw, _up) = start("").await;
    let turns = json!([[calc("5 * 5")]]);
    // The same body to a model without server tools and to one with them, on the same
    // deployment: different answers, never shared.
    let plain = gw
        .post("/v1/chat/completions", &body("plain", turns.clone()))
        .await;
    assert_eq!(plain.headers()["x-sluice-cache"], "miss");
    let plain: Value = plain.json().await.unwrap();
    assert_eq!(plain["choices"][0]["finish_reason"], "tool_calls");
    let agent = gw
        .post("/v1/chat/completions", &body("agent", turns.clone()))
        .await;
    assert_eq!(agent.headers()["x-sluice-cache"], "miss");
    assert_eq!(content(&agent.json().await.unwrap()), "done [25]");
    // A calculator-only run is deterministic: the repeat is a hit, steps replayed.
    let again = post_traced(&gw, &body("agent", turns.clone())).await;
    assert_eq!(again.headers()["x-sluice-cache"], "hit");
    let again: Value = again.json().await.unwrap();
    assert_eq!(content(&again), "done [25]");
    assert_eq!(again["sluice_steps"][0]["tool"], "calculator");
    // A run that asked for the time is not stored.
    let timed = json!([[{"name": "current_time", "arguments": {}}]]);
    for _ in 0..2 {
        let r = gw
            .post("/v1/chat/completions", &body("agent", timed.clone()))
            .await;
        assert_eq!(r.headers()["x-sluice-cache"], "miss");
    }
}

#[tokio::test]
async fn requests_add_server_tools_only_where_allowed() {
    let extra = r#"
[tools.calc_public]
kind = "calculator"
public = true
"#;
    let (gw, up) = start(extra).await;
    let send = |tools: &'static str| {
        let b = body(
            "plain",
            json!([[{"name": "calc_public", "arguments": {"expression": "2 * 21"}}]]),
        );
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("x-sluice-tools", tools)
            .json(&b)
            .send()
    };
    let v: Value = send("calc_public").await.unwrap().json().await.unwrap();
    assert_eq!(content(&v), "done [42]");
    let (status, err) = error_of(send("calculator").await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (403, Some("tool_not_allowed"))
    );
    assert_eq!(err["param"], "x-sluice-tools");
    let (status, err) = error_of(send("rm_rf").await.unwrap()).await;
    assert_eq!((status, err["code"].as_str()), (400, Some("unknown_tool")));
    assert_eq!(up.requests().len(), 2, "refused requests reach no model");
}

#[tokio::test]
async fn tenant_keys_allow_their_own_server_tools() {
    use sha2::{Digest, Sha256};
    let sha = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let extra = format!(
        r#"
[[auth.keys]]
tenant = "analysts"
sha256 = "{}"
tools = ["current_time"]

[[auth.keys]]
tenant = "others"
sha256 = "{}"
"#,
        sha("sk-analysts"),
        sha("sk-others")
    );
    let (gw, _up) = start(&extra).await;
    let send = |key: &'static str| {
        let b = body(
            "plain",
            json!([[{"name": "current_time", "arguments": {"timezone": "Asia/Tokyo"}}]]),
        );
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-sluice-tools", "current_time")
            .json(&b)
            .send()
    };
    let v: Value = send("sk-analysts").await.unwrap().json().await.unwrap();
    assert!(content(&v).ends_with("+09:00]"), "{v}");
    let (status, _) = error_of(send("sk-others").await.unwrap()).await;
    assert_eq!(status, 403);
}
