//! backend/onnx → structured generation, step 1: what a request allows the model to
//! write, as an llguidance grammar (its Lark dialect with inline `%json` schemas).
//!
//! Pure: a function of the request's `tools`, `tool_choice`, `parallel_tool_calls` and
//! `response_format` and of the model's tool-call syntax. [`super::constraint`] compiles
//! the result and applies it token by token. The shapes:
//!
//! - no tools offered (or `tool_choice: "none"`), plain text: the tool-call tags are
//!   banned ([`Plan::Ban`] when they are special tokens: two logits, no parser);
//! - tools with `"auto"`: free text, or one or more calls (one if `parallel_tool_calls`
//!   is false) whose name is an offered function and whose arguments match its schema;
//! - `"required"`: calls only; a named function: exactly one call of it;
//! - `response_format` `json_object` / `json_schema`: that JSON instead of free text.
//!
//! A call is written as the model was taught, `OPEN{"name": "f", "arguments": {...}}CLOSE`
//! (Hermes/Qwen style), and JSON with Python's separators `", "` and `": "` and no other
//! whitespace, so the model cannot spend its tokens on blank space.

use serde_json::{json, Value};

use crate::domain::{ResponseFormat, Tool, ToolChoice};

/// One of the tags around a tool call in the model's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// A single special token (its id), e.g. sluice-tiny's `<tool_call>` = 3.
    Special(u32),
    /// Ordinary text the model spells out token by token.
    Text(String),
}

/// How the model writes tool calls; `None` when its template declares no syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSyntax {
    pub open: Tag,
    pub close: Tag,
}

/// What the engine has to enforce for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing to enforce.
    Free,
    /// Never sample these tokens (the special tool-call tags); everything else is free.
    Ban(Vec<u32>),
    /// A grammar for llguidance; `schemas` lists every JSON Schema embedded in it with
    /// the request field it came from, so a schema llguidance refuses can be named.
    Grammar {
        lark: String,
        schemas: Vec<(String, Value)>,
        /// What the grammar constrains, for metrics: `tools` or `json`.
        kind: &'static str,
    },
}

/// The request fields the plan depends on.
pub struct Request<'a> {
    pub tools: &'a [Tool],
    pub tool_choice: Option<&'a ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<&'a ResponseFormat>,
}

/// The plan for `request` on a model with `syntax`.
pub fn plan(request: &Request<'_>, syntax: Option<&ToolSyntax>) -> Plan {
    let json_body = match request.response_format {
        Some(ResponseFormat::JsonObject) => Some((
            "response_format".to_owned(),
            with_options(&json!({"type": "object"}), false),
        )),
        Some(ResponseFormat::JsonSchema { schema, .. }) => Some((
            "response_format.json_schema.schema".to_owned(),
            with_options(schema, false),
        )),
        Some(ResponseFormat::Text) | None => None,
    };
    let choice = request.tool_choice.unwrap_or(&ToolChoice::Auto);
    let calls_allowed = !request.tools.is_empty() && *choice != ToolChoice::None;
    let Some(syntax) = syntax.filter(|_| calls_allowed) else {
        return match (json_body, syntax) {
            (Some(body), _) => json_grammar(body),
            (
                None,
                Some(ToolSyntax {
                    open: Tag::Special(open),
                    close,
                }),
            ) => {
                let mut banned = vec![*open];
                if let Tag::Special(close) = close {
                    banned.push(*close);
                }
                Plan::Ban(banned)
            }
            (
                None,
                Some(ToolSyntax {
                    open: Tag::Text(open),
                    ..
                }),
            ) => Plan::Grammar {
                lark: format!(
                    "start: TEXT?\n{}\n",
                    text_terminal(&Tag::Text(open.clone()))
                ),
                schemas: Vec::new(),
                kind: "tools",
            },
            (None, None) => Plan::Free,
        };
    };

    let mut lark = String::new();
    let mut schemas = Vec::new();
    let mut names = Vec::new();
    for (i, tool) in request.tools.iter().enumerate() {
        let args = if tool.parameters.is_object() {
            tool.parameters.clone()
        } else {
            json!({"type": "object"})
        };
        let lenient = tool.strict != Some(true);
        let schema = with_options(&args, lenient);
        lark.push_str(&format!(
            "call_{i}: {open} WS? {head} args_{i} \"}}\" WS? {close}\nargs_{i}: %json {body}\n",
            open = tag(&syntax.open),
            close = tag(&syntax.close),
            head = literal(&format!(
                "{{\"name\": {}, \"arguments\": ",
                Value::String(tool.name.clone())
            )),
            body = schema,
        ));
        schemas.push((format!("tools[{i}].function.parameters"), schema));
        names.push((tool.name.as_str(), format!("call_{i}")));
    }
    let any_call = names
        .iter()
        .map(|(_, rule)| rule.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    lark.push_str(&format!("call: {any_call}\n"));
    let calls = if request.parallel_tool_calls == Some(false) {
        "calls: call\n"
    } else {
        "calls: call (WS? call)*\n"
    };
    lark.push_str(calls);
    lark.push_str("WS: /[ \\t\\r\\n]+/\n");

    let start = match choice {
        ToolChoice::Function(name) => {
            let rule = names
                .iter()
                .find(|(n, _)| n == name)
                .map_or("call", |(_, rule)| rule.as_str());
            format!("start: WS? {rule}\n")
        }
        ToolChoice::Required => "start: WS? calls\n".to_owned(),
        ToolChoice::Auto | ToolChoice::None => match json_body {
            Some((field, schema)) => {
                lark.push_str(&format!("json_body: %json {schema}\n"));
                schemas.push((field, schema));
                "start: json_body | WS? calls\n".to_owned()
            }
            None => {
                lark.push_str(&text_terminal(&syntax.open));
                lark.push('\n');
                "start: TEXT? | TEXT? calls\n".to_owned()
            }
        },
    };
    Plan::Grammar {
        lark: format!("{start}{lark}"),
        schemas,
        kind: "tools",
    }
}

fn json_grammar((field, schema): (String, Value)) -> Plan {
    Plan::Grammar {
        lark: format!("start: json_body\njson_body: %json {schema}\n"),
        schemas: vec![(field, schema)],
        kind: "json",
    }
}

/// The schema with sluice's JSON layout (and, for a non-strict tool, llguidance's
/// lenient mode: keywords it cannot enforce are ignored instead of refused).
fn with_options(schema: &Value, lenient: bool) -> Value {
    let mut options = json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    });
    if lenient {
        options["lenient"] = Value::Bool(true);
    }
    match schema {
        Value::Object(map) => {
            let mut map = map.clone();
            map.insert("x-guidance".into(), options);
            Value::Object(map)
        }
        // `true`/`false` schemas and anything else: let llguidance judge it.
        other => json!({"allOf": [other], "x-guidance": options}),
    }
}

/// A Lark reference to a tag.
fn tag(tag: &Tag) -> String {
    match tag {
        Tag::Special(id) => format!("<[{id}]>"),
        Tag::Text(text) => literal(text),
    }
}

/// Free text that cannot open a tool call. A special-token opening is never part of
/// ordinary text; a textual one has to be excluded from the terminal.
fn text_terminal(open: &Tag) -> String {
    match open {
        Tag::Special(_) => "TEXT: /(?s:.+)/".to_owned(),
        Tag::Text(text) => format!("TEXT: /(?s:.+)/ & ~/(?s:.*){}(?s:.*)/", regex_escape(text)),
    }
}

/// A Lark string literal (JSON escaping is a subset of what Lark accepts).
fn literal(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$/#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, parameters: Value) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            parameters,
            strict: None,
        }
    }

    fn special() -> ToolSyntax {
        ToolSyntax {
            open: Tag::Special(3),
            close: Tag::Special(4),
        }
    }

    fn plan_for(
        tools: &[Tool],
        choice: Option<ToolChoice>,
        parallel: Option<bool>,
        format: Option<ResponseFormat>,
    ) -> Plan {
        plan(
            &Request {
                tools,
                tool_choice: choice.as_ref(),
                parallel_tool_calls: parallel,
                response_format: format.as_ref(),
            },
            Some(&special()),
        )
    }

    fn lark(plan: &Plan) -> &str {
        match plan {
            Plan::Grammar { lark, .. } => lark,
            other => panic!("not a grammar: {other:?}"),
        }
    }

    #[test]
    fn without_tools_the_special_opening_is_banned() {
        assert_eq!(plan_for(&[], None, None, None), Plan::Ban(vec![3, 4]));
        let tools = [tool("f", json!({"type": "object"}))];
        assert_eq!(
            plan_for(&tools, Some(ToolChoice::None), None, None),
            Plan::Ban(vec![3, 4])
        );
        assert_eq!(
            plan_for(&[], None, None, Some(ResponseFormat::Text)),
            Plan::Ban(vec![3, 4])
        );
    }

    #[test]
    fn a_model_without_tool_syntax_is_free_unless_json_is_asked_for() {
        let request = Request {
            tools: &[],
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: None,
        };
        assert_eq!(plan(&request, None), Plan::Free);
        let json = ResponseFormat::JsonObject;
        let request = Request {
            response_format: Some(&json),
            ..request
        };
        assert!(lark(&plan(&request, None)).starts_with("start: json_body\n"));
    }

    #[test]
    fn a_textual_opening_is_excluded_from_free_text() {
        let syntax = ToolSyntax {
            open: Tag::Text("<function".into()),
            close: Tag::Text("</function>".into()),
        };
        let request = Request {
            tools: &[],
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: None,
        };
        let plan = plan(&request, Some(&syntax));
        assert!(
            lark(&plan).contains("~/(?s:.*)<function(?s:.*)/"),
            "{plan:?}"
        );
    }

    #[test]
    fn auto_allows_text_or_calls_of_offered_tools_only() {
        let tools = [
            tool(
                "calculator",
                json!({"type": "object", "properties": {"expression": {"type": "string"}}}),
            ),
            tool("sql_query", json!({"type": "object"})),
        ];
        let plan = plan_for(&tools, None, None, None);
        let text = lark(&plan);
        assert!(text.starts_with("start: TEXT? | TEXT? calls\n"), "{text}");
        assert!(text.contains(r#"call_0: <[3]> WS? "{\"name\": \"calculator\", \"arguments\": " args_0 "}" WS? <[4]>"#), "{text}");
        assert!(text.contains("call: call_0 | call_1\n"));
        assert!(text.contains("calls: call (WS? call)*\n"));
        let Plan::Grammar { schemas, kind, .. } = &plan else {
            unreachable!()
        };
        assert_eq!(*kind, "tools");
        assert_eq!(schemas[1].0, "tools[1].function.parameters");
        assert_eq!(schemas[0].1["x-guidance"]["lenient"], true);
    }

    #[test]
    fn required_named_and_single_call() {
        let tools = [tool("a", json!({})), tool("b", json!({}))];
        let required = plan_for(&tools, Some(ToolChoice::Required), Some(false), None);
        assert!(lark(&required).starts_with("start: WS? calls\n"));
        assert!(lark(&required).contains("calls: call\n"));
        let named = plan_for(&tools, Some(ToolChoice::Function("b".into())), None, None);
        assert!(lark(&named).starts_with("start: WS? call_1\n"));
    }

    #[test]
    fn strict_tools_and_json_schemas_are_not_lenient() {
        let mut strict = tool("f", json!({"type": "object"}));
        strict.strict = Some(true);
        let Plan::Grammar { schemas, .. } = plan_for(&[strict], None, None, None) else {
            unreachable!()
        };
        assert!(schemas[0].1["x-guidance"].get("lenient").is_none());
        let format = ResponseFormat::JsonSchema {
            name: "x".into(),
            schema: json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
            strict: Some(true),
        };
        let plan = plan_for(&[], None, None, Some(format));
        let Plan::Grammar {
            schemas,
            kind,
            lark,
        } = &plan
        else {
            unreachable!()
        };
        assert_eq!(*kind, "json");
        assert!(lark.starts_with("start: json_body\n"));
        assert_eq!(schemas[0].0, "response_format.json_schema.schema");
        assert_eq!(schemas[0].1["x-guidance"]["key_separator"], ": ");
    }

    #[test]
    fn json_with_tools_is_json_or_calls() {
        let tools = [tool("f", json!({}))];
        let plan = plan_for(&tools, None, None, Some(ResponseFormat::JsonObject));
        assert!(lark(&plan).starts_with("start: json_body | WS? calls\n"));
    }
}
