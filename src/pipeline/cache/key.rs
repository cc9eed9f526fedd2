//! The cache key: a blake3 hash of a canonical form of everything that changes the
//! answer — the namespace (tenant, or `shared`), the resolved deployment (backend,
//! upstream model, tier, engine options), the server tools the gateway runs for it
//! (each name with a hash of its spec and config), messages, tools, tool choice,
//! response format and every sampling field. What does not change the answer (`stream`,
//! `stream_options`, `user`, the logical model name, key order and whitespace in the
//! JSON body) is not part of it. Objects are hashed with sorted keys, so a client's
//! key order (e.g. in a tool's JSON schema) never matters.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::backend::Deployment;
use crate::domain::{ChatRequest, Message, ResponseFormat, ToolChoice};

pub type Key = [u8; 32];

/// What is hashed, borrowed from the request: serialised straight into the hasher.
#[derive(Serialize)]
struct Form<'a> {
    v: u8,
    namespace: &'a str,
    backend: &'a str,
    upstream_model: &'a str,
    tier: Option<&'a str>,
    options: CanonicalMap<'a>,
    /// The client's unknown body fields, when the deployment forwards them upstream.
    extra: Option<CanonicalMap<'a>>,
    /// (name, fingerprint) of each server tool, sorted by name.
    server_tools: &'a [(&'a str, [u8; 32])],
    messages: &'a [Message],
    /// (name, description, parameters, strict)
    tools: Vec<(&'a str, Option<&'a str>, Canonical<'a>, Option<bool>)>,
    tool_choice: &'a Option<ToolChoice>,
    parallel_tool_calls: Option<bool>,
    /// (kind, schema name, schema, strict)
    response_format: Option<FormatForm<'a>>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u32>,
    max_tokens: Option<u32>,
    stop: &'a [String],
    seed: Option<i64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    n: u32,
}

/// A response format as (kind, schema name, schema, strict).
type FormatForm<'a> = (
    &'a str,
    Option<&'a str>,
    Option<Canonical<'a>>,
    Option<bool>,
);

/// A JSON value written with object keys sorted, whatever order the client sent.
struct Canonical<'a>(&'a Value);

impl Serialize for Canonical<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => CanonicalMap(map).serialize(s),
            Value::Array(items) => {
                let mut out = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&Canonical(v))?;
                }
                out.end()
            }
            scalar => scalar.serialize(s),
        }
    }
}

/// A JSON object written with its keys sorted.
struct CanonicalMap<'a>(&'a Map<String, Value>);

impl Serialize for CanonicalMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&String, &Value)> = self.0.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            out.serialize_entry(k, &Canonical(v))?;
        }
        out.end()
    }
}

/// The key of `request` served by `deployment` on `backend` with `server_tools`, in
/// namespace `namespace`.
pub fn key(
    namespace: &str,
    backend: &str,
    deployment: &Deployment,
    server_tools: &[(&str, [u8; 32])],
    request: &ChatRequest,
) -> Key {
    let s = &request.sampling;
    let form = Form {
        // 3: sampling floats as f64, and forwarded unknown fields.
        v: 3,
        namespace,
        backend,
        upstream_model: &deployment.upstream_model,
        tier: deployment.tier.as_deref(),
        options: CanonicalMap(&deployment.options),
        extra: deployment
            .forward_unknown_fields
            .then_some(CanonicalMap(&request.extra)),
        server_tools,
        messages: &request.messages,
        tools: request
            .tools
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.description.as_deref(),
                    Canonical(&t.parameters),
                    t.strict,
                )
            })
            .collect(),
        tool_choice: &request.tool_choice,
        parallel_tool_calls: request.parallel_tool_calls,
        response_format: request.response_format.as_ref().map(|f| match f {
            ResponseFormat::Text => ("text", None, None, None),
            ResponseFormat::JsonObject => ("json_object", None, None, None),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => (
                "json_schema",
                Some(name.as_str()),
                Some(Canonical(schema)),
                *strict,
            ),
        }),
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        max_tokens: s.max_tokens,
        stop: &s.stop,
        seed: s.seed,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        n: request.n,
    };
    let mut hasher = blake3::Hasher::new();
    // Writing into a hasher cannot fail, and these types always serialise.
    let _ = serde_json::to_writer(&mut hasher, &form);
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::convert_for_tests as convert;
    use proptest::prelude::*;
    use serde_json::json;

    fn deployment() -> Deployment {
        Deployment {
            backend: "local".into(),
            upstream_model: "m".into(),
            keep_alive: None,
            options: Default::default(),
            tier: Some("int8".into()),
            structured: None,
            forward_unknown_fields: false,
        }
    }

    fn key_of(body: &str) -> Key {
        key("tenant-a", "local", &deployment(), &[], &convert(body))
    }

    const BASE: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,
        "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}}}]}"#;

    #[test]
    fn fields_that_do_not_change_the_answer_do_not_change_the_key() {
        let base = key_of(BASE);
        let same = [
            r#"{"stream":true,"stream_options":{"include_usage":true},"user":"u-7","model":"m","temperature":0,"messages":[{"content":"hi","role":"user"}],
                "tools":[{"function":{"parameters":{"properties":{"b":{"type":"integer"},"a":{"type":"string"}},"type":"object"},"name":"f"},"type":"function"}]}"#,
            "{\n  \"model\": \"m\",\n  \"messages\": [ { \"role\": \"user\", \"content\": \"hi\" } ],\n  \"temperature\": 0.0,\n  \"tools\": [{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},\"b\":{\"type\":\"integer\"}}}}}]\n}",
        ];
        for body in same {
            assert_eq!(key_of(body), base, "{body}");
        }
    }

    #[test]
    fn unknown_fields_change_the_key_only_where_they_are_forwarded() {
        let plain = convert(BASE);
        let mut v: Value = serde_json::from_str(BASE).unwrap();
        v["min_p"] = json!(0.05);
        let with_min_p = convert(&v.to_string());
        let dropped = deployment();
        assert_eq!(
            key("tenant-a", "local", &dropped, &[], &with_min_p),
            key("tenant-a", "local", &dropped, &[], &plain)
        );
        let forwarded = Deployment {
            forward_unknown_fields: true,
            ..deployment()
        };
        assert_ne!(
            key("tenant-a", "local", &forwarded, &[], &with_min_p),
            key("tenant-a", "local", &forwarded, &[], &plain)
        );
    }

    #[test]
    fn fields_that_change_the_answer_change_the_key() {
        let base = key_of(BASE);
        let with = |field: &str| {
            let mut v: Value = serde_json::from_str(BASE).unwrap();
            let extra: Value = serde_json::from_str(field).unwrap();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            key_of(&v.to_string())
        };
        for field in [
            r#"{"messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"messages":[{"role":"system","content":"hi"}]}"#,
            r#"{"temperature":0.5}"#,
            r#"{"top_p":0.9}"#,
            r#"{"max_tokens":5}"#,
            r#"{"stop":["x"]}"#,
            r#"{"seed":1}"#,
            r#"{"presence_penalty":0.1}"#,
            r#"{"frequency_penalty":0.1}"#,
            r#"{"tool_choice":"none"}"#,
            r#"{"tools":[]}"#,
            r#"{"response_format":{"type":"json_object"}}"#,
        ] {
            assert_ne!(with(field), base, "{field}");
        }
        let request = convert(BASE);
        assert_ne!(key("tenant-b", "local", &deployment(), &[], &request), base);
        assert_ne!(key("tenant-a", "other", &deployment(), &[], &request), base);
        let mut tier = deployment();
        tier.tier = Some("fp32".into());
        assert_ne!(key("tenant-a", "local", &tier, &[], &request), base);
        // The same deployment with server tools (sluice-agent beside sluice-tiny), and
        // the same tool with another configuration, are other answers.
        let calc = [("calculator", [1u8; 32])];
        let with_tools = key("tenant-a", "local", &deployment(), &calc, &request);
        assert_ne!(with_tools, base);
        let reconfigured = [("calculator", [2u8; 32])];
        assert_ne!(
            key("tenant-a", "local", &deployment(), &reconfigured, &request),
            with_tools
        );
    }

    proptest! {
        /// Any permutation of an object's keys hashes the same.
        #[test]
        fn key_order_never_matters(entries in proptest::collection::btree_map("[a-z]{1,6}", 0i64..100, 1..8), seed in any::<u64>()) {
            let mut forward = serde_json::Map::new();
            for (k, v) in &entries {
                forward.insert(k.clone(), json!(v));
            }
            let mut keys: Vec<&String> = entries.keys().collect();
            // A deterministic shuffle from the seed.
            let n = keys.len();
            for i in (1..n).rev() {
                let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
                keys.swap(i, j);
            }
            let mut shuffled = serde_json::Map::new();
            for k in keys {
                shuffled.insert(k.clone(), json!(entries[k]));
            }
            let hash = |v: &Value| serde_json::to_vec(&Canonical(v)).unwrap();
            prop_assert_eq!(hash(&Value::Object(forward)), hash(&Value::Object(shuffled)));
        }

        /// Different message texts never collide.
        #[test]
        fn different_texts_give_different_keys(a in "[a-z0-9 ]{1,40}", b in "[a-z0-9 ]{1,40}") {
            prop_assume!(a != b);
            let body = |t: &str| json!({"model": "m", "messages": [{"role": "user", "content": t}]}).to_string();
            prop_assert_ne!(key_of(&body(&a)), key_of(&body(&b)));
        }
    }
}
