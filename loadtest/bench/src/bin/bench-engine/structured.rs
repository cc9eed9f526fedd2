//! The structured-generation cells of the embedded-engine benchmark (see main.rs): the
//! same prompts sent to a model with the constraint on (`--structured`, llguidance) and
//! to one with it off (`--free`, `structured = false`) on the same backend and tier.
//! Two workloads, each at every `--structured-concurrency`:
//!
//! - `tools`: 9 prompts of the demo world with the three demo tools (the schemas of
//!   tests/common/engine.rs `tools()`) and `tool_choice: "auto"`; 7 are answered with a
//!   call, 2 with text;
//! - `json`: 6 prompts with `response_format: json_schema` (nested objects, arrays of
//!   enums and of objects, enums, required fields, bounded strings and integers, so the
//!   grammar completes). The unconstrained model gets the same messages without
//!   `response_format` (sluice refuses JSON formats when `structured = false`).
//!
//! No `ignore_eos`: answers end where the model (or the completed grammar) ends them, so
//! the comparison is generated tokens per second, and the two sides' answer lengths are
//! reported next to it.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::Body;

/// The structured workloads, in run order.
pub const KINDS: [&str; 2] = ["tools", "json"];

/// `max_tokens` of the tool prompts (training/evaluate.py decodes 96 new tokens).
const TOOLS_MAX_TOKENS: u32 = 96;
/// `max_tokens` of the JSON prompts: the schema's longest answer is about 150 tokens
/// (digits are single tokens), so the constrained answer always completes.
const JSON_MAX_TOKENS: u32 = 192;

/// Tool prompts: calculator, sql_query and current_time questions and two without a
/// tool (with tools offered the constrained model may still answer in text).
const TOOL_PROMPTS: [&str; 9] = [
    "What is 12 * 7?",
    "How many orders were placed in March?",
    "What time is it in Tokyo?",
    "Hello! Who are you?",
    "Can you work out (348 + 1290) / 6 for me?",
    "How many customers are there in France?",
    "what's the time in Berlin right now",
    "What is 15% of 2400?",
    "Which product brought in the most revenue in the second quarter?",
];

/// JSON prompts (the model was never trained on JSON answers: under the constraint it
/// writes schema-valid JSON of dubious content, unconstrained it answers in prose).
const JSON_PROMPTS: [&str; 6] = [
    "Summarise the orders of the first quarter by month as JSON.",
    "What is 12 * 7? Answer in JSON.",
    "How many orders were placed in March? Reply with a JSON object.",
    "What time is it in Tokyo? Give the answer as JSON.",
    "Which tools would you use to find the best-selling product? Answer as JSON.",
    "Describe the sales database in JSON.",
];

/// The three demo tools, as tests/common/engine.rs `tools()` offers them.
pub fn demo_tools() -> Value {
    let tool = |name: &str, description: &str, param: &str| {
        json!({"type": "function", "function": {"name": name, "description": description,
            "parameters": {"type": "object", "properties": {param: {"type": "string"}},
                           "required": [param]}}})
    };
    json!([
        tool(
            "calculator",
            "Evaluate an arithmetic expression",
            "expression"
        ),
        tool(
            "sql_query",
            "Run a read-only SQL query on the sales database",
            "query"
        ),
        tool("current_time", "Current time in a timezone", "timezone"),
    ])
}

/// The json_schema of the `json` workload.
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "topic": {"type": "string", "enum": ["arithmetic", "sales", "time", "greeting"]},
            "answer": {
                "type": "object",
                "properties": {
                    "summary": {"type": "string", "maxLength": 48},
                    "value": {"type": "integer", "minimum": 0, "maximum": 100000},
                    "unit": {"type": "string",
                             "enum": ["orders", "customers", "euros", "hours", "none"]}
                },
                "required": ["summary", "value", "unit"],
                "additionalProperties": false
            },
            "tools": {
                "type": "array",
                "items": {"type": "string", "enum": ["calculator", "sql_query", "current_time"]},
                "minItems": 1,
                "maxItems": 3
            },
            "breakdown": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "month": {"type": "string", "enum": ["January", "February", "March",
                                                             "April", "May", "June"]},
                        "count": {"type": "integer", "minimum": 0, "maximum": 9999}
                    },
                    "required": ["month", "count"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["topic", "answer", "tools", "breakdown"],
        "additionalProperties": false
    })
}

/// The bodies of workload `kind` for `model`; `constrained` adds `response_format` to the
/// JSON prompts (the tool prompts are the same for both models).
pub fn bodies(kind: &str, model: &str, constrained: bool) -> Vec<Body> {
    let (prompts, max_tokens): (&[&str], u32) = match kind {
        "tools" => (&TOOL_PROMPTS, TOOLS_MAX_TOKENS),
        _ => (&JSON_PROMPTS, JSON_MAX_TOKENS),
    };
    prompts
        .iter()
        .map(|text| {
            let mut body = crate::greedy_stream(model, text, max_tokens);
            if kind == "tools" {
                body["tools"] = demo_tools();
                body["tool_choice"] = json!("auto");
            } else if constrained {
                body["response_format"] = json!({"type": "json_schema",
                    "json_schema": {"name": "summary", "strict": true, "schema": schema()}});
            }
            Body {
                bytes: Bytes::from(body.to_string()),
                tools: kind == "tools",
                exact_tokens: None,
            }
        })
        .collect()
}

/// Whether an answer is what the workload asks for: for `tools`, every call names an
/// offered tool and its arguments are a JSON object with the tool's one required string
/// (text answers count as valid); for `json`, the content is a JSON object with the
/// schema's required keys. Counted for both models (the unconstrained one is not asked
/// for JSON, so its JSON count shows what the constraint adds).
pub fn valid(kind: &str, content: &str, calls: &[(String, String)]) -> bool {
    if kind == "tools" {
        let tools = demo_tools();
        return calls.iter().all(|(name, arguments)| {
            let Some(tool) = tools
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["function"]["name"] == name.as_str())
            else {
                return false;
            };
            let param = tool["function"]["parameters"]["required"][0]
                .as_str()
                .unwrap_or_default();
            serde_json::from_str::<Value>(arguments).is_ok_and(|a| a[param].is_string())
        });
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(content) else {
        return false;
    };
    schema()["required"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|k| k.as_str().is_some_and(|k| map.contains_key(k)))
}
