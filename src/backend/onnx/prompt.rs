//! The model's chat template (the Jinja `chat_template` of `tokenizer_config.json`),
//! rendered with minijinja the way Hugging Face `apply_chat_template` renders it:
//! `trim_blocks` and `lstrip_blocks` on, Python string methods, `raise_exception`,
//! and a `tojson` that writes `{"a": 1, "b": 2}` like Python's `json.dumps`.

use minijinja::{context, Environment, Error, ErrorKind, Value};
use serde::Serialize;
use serde_json::json;

use crate::domain::{Message, Tool};

const NAME: &str = "chat";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    pub fn new(source: String, bos: String, eos: String) -> Result<Self, String> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| e.to_string())?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", python_tojson);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(NAME, source)
            .map_err(|e| format!("the chat template does not parse: {e}"))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener.
    pub fn render(&self, messages: &[Message], tools: &[Tool]) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        let messages: Vec<serde_json::Value> = messages.iter().map(message_json).collect();
        let tools: Vec<serde_json::Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name,
                    "description": t.description.clone().unwrap_or_default(),
                    "parameters": t.parameters,
                }})
            })
            .collect();
        let tools = (!tools.is_empty()).then_some(tools);
        template
            .render(context! {
                messages => Value::from(minijinja::value::Serde(messages)),
                tools => Value::from(minijinja::value::Serde(tools)),
                add_generation_prompt => true,
                bos_token => &self.bos,
                eos_token => &self.eos,
            })
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidOperation => e.detail().unwrap_or("invalid request").to_owned(),
                _ => format!("the chat template failed: {e}"),
            })
    }
}

/// One message as Hugging Face templates expect it: string `content`, and tool calls
/// with `arguments` as an object when they are valid JSON (templates `tojson` them).
fn message_json(m: &Message) -> serde_json::Value {
    let role = m.role.as_str();
    let mut out = json!({"role": role, "content": m.text_content()});
    if !m.tool_calls.is_empty() {
        out["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                let arguments = serde_json::from_str::<serde_json::Value>(&c.arguments)
                    .unwrap_or_else(|_| serde_json::Value::String(c.arguments.clone()));
                json!({"id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": arguments}})
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        out["tool_call_id"] = json!(id);
    }
    if let Some(name) = &m.name {
        out["name"] = json!(name);
    }
    out
}

/// `json.dumps(value, ensure_ascii=False)`: `", "` and `": "` separators.
fn python_tojson(value: Value) -> Result<Value, Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let text = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(text))
}

struct PythonFormatter;

/// `", "` between items, nothing before the first.
fn separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, ToolCall};

    fn bundled() -> ChatTemplate {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/sluice-tiny/tokenizer_config.json"
        );
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let source = config["chat_template"].as_str().unwrap().to_owned();
        ChatTemplate::new(source, String::new(), "<|im_end|>".into()).unwrap()
    }

    #[test]
    fn renders_chatml_with_tools_and_history_like_training() {
        let mut call = Message::text(Role::Assistant, "");
        call.tool_calls.push(ToolCall {
            id: "c".into(),
            name: "calculator".into(),
            arguments: r#"{"expression":"12 * 7"}"#.into(),
        });
        let mut result = Message::text(Role::Tool, "84");
        result.tool_call_id = Some("c".into());
        let messages = vec![
            Message::text(Role::System, "S"),
            Message::text(Role::User, "What is 12 * 7?"),
            call,
            result,
        ];
        let tools = vec![Tool {
            name: "calculator".into(),
            description: Some("Evaluate".into()),
            parameters: json!({"type": "object"}),
            strict: None,
        }];
        let text = bundled().render(&messages, &tools).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nS\n# Tools\n- calculator: Evaluate\nCall a tool with \
             <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call><|im_end|>\n\
             <|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n\
             <tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"12 * 7\"}}\
             </tool_call><|im_end|>\n<|im_start|>tool\n84<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_a_clear_error() {
        let t = ChatTemplate::new(
            "{{ raise_exception('Conversation roles must alternate') }}".into(),
            String::new(),
            String::new(),
        )
        .unwrap();
        let err = t.render(&[], &[]).unwrap_err();
        assert_eq!(err, "Conversation roles must alternate");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m['content'].strip() }}{% endfor %}".into(),
            String::new(),
            String::new(),
        )
        .unwrap();
        let text = t
            .render(&[Message::text(Role::User, "  hi  ")], &[])
            .unwrap();
        assert_eq!(text, "hi");
    }
}
