//! backend/onnx → structured generation, step 2: the per-sequence constraint.
//!
//! [`Structured`] is built once per model folder: llguidance's `ParserFactory` over the
//! model's tokenizer (through `toktrie_hf_tokenizers`) and the model's tool-call
//! syntax. Per request, on a blocking thread of the async side, it compiles the
//! [`Plan`] from [`super::grammar`] into a [`Constraint`] (a schema llguidance cannot
//! enforce is a 400 naming the field). Compiled grammars are kept in a small cache keyed
//! by the grammar's hash: an agent sends the same tools with every request, and a copy of
//! a compiled parser costs far less than compiling it again.
//!
//! Two ways to apply it on the engine side:
//! - check first (greedy and plain temperature sampling, where it is exact): the token
//!   sampled from the full logits is checked against the grammar and committed if allowed
//!   (microseconds); only a refused token costs a full mask, computed for all refused rows
//!   of a step in parallel on rayon's pool, and a draw from the masked logits. Drawing
//!   from the full distribution and keeping an allowed token, else drawing from the
//!   masked one, gives exactly the masked distribution.
//! - mask first (top-k / top-p, whose cut-off depends on the mask): each mask is
//!   computed by [`Constraint::prepare`] on rayon's pool while the model runs the step
//!   that produces the logits, applied by [`Constraint::apply`] just before sampling.
//!
//! Either way [`Constraint::commit`] (or [`Constraint::try_commit`]) advances the grammar
//! with the sampled token.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv};
use llguidance::{Matcher, ParserFactory};
use prometheus::Histogram;
use tokenizers::Tokenizer;

use super::grammar::{Plan, Tag, ToolSyntax};
use crate::error::BackendError;

/// The model's side of structured generation, shared by its engines.
pub struct Structured {
    factory: ParserFactory,
    syntax: Option<ToolSyntax>,
    /// Fresh parsers of recently compiled grammars, by the grammar text's BLAKE3 hash.
    compiled: moka::sync::Cache<[u8; 32], Arc<Mutex<Matcher>>>,
}

/// Compiled grammars kept for reuse.
const COMPILED_GRAMMARS: u64 = 256;

impl Structured {
    /// `tokenizer_json` is the model's `tokenizer.json`; `stop_ids` end a generation.
    pub fn new(
        tokenizer_json: &[u8],
        tokenizer: &Tokenizer,
        stop_ids: &[u32],
        tool_tags: &(String, String),
    ) -> Result<Self, String> {
        let mut bytes = toktrie_hf_tokenizers::ByteTokenizer::from_json_bytes(tokenizer_json)
            .map_err(|e| format!("structured generation: cannot read the tokenizer: {e}"))?;
        let vocab = bytes.tokrx_info().vocab_size;
        let stops: Vec<u32> = stop_ids.iter().copied().filter(|&id| id < vocab).collect();
        if !stops.is_empty() {
            bytes.set_eos_tokens(&stops);
        }
        let env: TokEnv = bytes
            .into_tok_env(None)
            .map_err(|e| format!("structured generation: {e}"))?;
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| format!("structured generation: {e}"))?;
        factory.quiet();
        Ok(Structured {
            factory,
            syntax: tool_syntax(tokenizer, tool_tags),
            compiled: moka::sync::Cache::new(COMPILED_GRAMMARS),
        })
    }

    pub fn syntax(&self) -> Option<&ToolSyntax> {
        self.syntax.as_ref()
    }

    /// Compile a plan; `None` when there is nothing to enforce.
    pub fn compile(&self, plan: Plan) -> Result<Option<Constraint>, BackendError> {
        let (lark, schemas, kind) = match plan {
            Plan::Free => return Ok(None),
            Plan::Ban(tokens) => return Ok(Some(Constraint::ban(tokens))),
            Plan::Grammar {
                lark,
                schemas,
                kind,
            } => (lark, schemas, kind),
        };
        let key = *blake3::hash(lark.as_bytes()).as_bytes();
        let fresh = match self.compiled.get(&key) {
            Some(prototype) => Ok(prototype),
            None => self
                .factory
                .create_parser(TopLevelGrammar::from_lark(lark))
                .map(|parser| {
                    let prototype = Arc::new(Mutex::new(Matcher::new(Ok(parser))));
                    self.compiled.insert(key, prototype.clone());
                    prototype
                }),
        };
        match fresh {
            Ok(prototype) => {
                let matcher = match prototype.lock() {
                    Ok(matcher) => matcher.deep_clone(),
                    Err(poisoned) => poisoned.into_inner().deep_clone(),
                };
                Ok(Some(Constraint {
                    inner: Inner::Grammar {
                        matcher: Box::new(matcher),
                        mask: None,
                    },
                    kind,
                    check_first: false,
                    want_mask: true,
                }))
            }
            // Find the schema at fault, so the error can name its field.
            Err(whole) => Err(self.blame(&schemas).unwrap_or_else(|| {
                invalid(
                    format!("cannot build a grammar for this request: {whole}"),
                    "response_format",
                )
            })),
        }
    }

    fn blame(&self, schemas: &[(String, serde_json::Value)]) -> Option<BackendError> {
        schemas.iter().find_map(|(field, schema)| {
            let alone = TopLevelGrammar::from_json_schema(schema.clone());
            self.factory.create_parser(alone).err().map(|e| {
                invalid(
                    format!("{field}: this JSON Schema cannot be enforced: {e}"),
                    if field.starts_with("tools") {
                        "tools"
                    } else {
                        "response_format"
                    },
                )
            })
        })
    }
}

fn invalid(message: String, param: &'static str) -> BackendError {
    BackendError::InvalidRequest {
        message,
        param: Some(param),
    }
}

/// The tags as llguidance sees them: one special token each, or text. `None` when the
/// model has no tool-call syntax (an empty tag).
fn tool_syntax(tokenizer: &Tokenizer, (open, close): &(String, String)) -> Option<ToolSyntax> {
    if open.is_empty() || close.is_empty() {
        return None;
    }
    let special = |text: &str| {
        let id = tokenizer.token_to_id(text)?;
        let added = tokenizer.get_added_tokens_decoder();
        added
            .get(&id)
            .filter(|t| t.special)
            .map(|_| Tag::Special(id))
    };
    Some(ToolSyntax {
        open: special(open).unwrap_or_else(|| Tag::Text(open.clone())),
        close: special(close).unwrap_or_else(|| Tag::Text(close.clone())),
    })
}

/// What committing a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Continue,
    /// The grammar is complete and allows nothing more: the generation ends here.
    Complete,
}

/// One sequence's constraint.
pub struct Constraint {
    inner: Inner,
    /// `tools`, `json` or `ban`, for metrics.
    pub kind: &'static str,
    /// Check-first mode: the sampled token is checked, and the mask computed only when it
    /// is refused (see [`Constraint::check_first`]).
    check_first: bool,
    /// The next token needs a full mask (always, unless in check-first mode and the
    /// sampled token has not been refused yet).
    want_mask: bool,
}

enum Inner {
    Ban(Vec<u32>),
    Grammar {
        matcher: Box<Matcher>,
        /// The mask for the next token, once computed.
        mask: Option<Result<SimpleVob, String>>,
    },
}

impl Constraint {
    fn ban(tokens: Vec<u32>) -> Self {
        Constraint {
            inner: Inner::Ban(tokens),
            kind: "ban",
            check_first: false,
            want_mask: false,
        }
    }

    /// Check-first mode (a grammar, and sampling where it is exact): the token sampled
    /// from the full logits is checked against the grammar ([`Constraint::try_commit`],
    /// a few microseconds) and only a refused one costs a full mask and a second draw.
    /// Most tokens of a constrained answer are ones the model would pick anyway.
    pub fn check_first(&mut self) {
        if let Inner::Grammar { .. } = self.inner {
            self.check_first = true;
            self.want_mask = false;
        }
    }

    pub fn is_check_first(&self) -> bool {
        self.check_first && !self.want_mask
    }

    /// Check-first mode: commit `token` if the grammar allows it (`None` if it does not:
    /// then the next [`Constraint::prepare`] computes the full mask).
    pub fn try_commit(&mut self, token: u32) -> Result<Option<Commit>, String> {
        let Inner::Grammar { matcher, .. } = &mut self.inner else {
            return Ok(Some(Commit::Continue));
        };
        if matcher
            .try_consume_tokens(&[token])
            .map_err(|e| e.to_string())?
            == 0
        {
            self.want_mask = true;
            return Ok(None);
        }
        Ok(Some(if matcher.is_stopped() {
            Commit::Complete
        } else {
            Commit::Continue
        }))
    }

    /// Compute the next token's mask (if not yet done); the time goes to `seconds`.
    /// Safe to call from any thread; the engine calls it on rayon's pool.
    pub fn prepare(&mut self, seconds: &Histogram) {
        if let Inner::Grammar { matcher, mask } = &mut self.inner {
            if mask.is_none() {
                let started = Instant::now();
                *mask = Some(matcher.compute_mask().map_err(|e| e.to_string()));
                seconds.observe(started.elapsed().as_secs_f64());
            }
        }
    }

    /// Set every logit the constraint forbids to -inf. An error means the grammar is in
    /// a state it cannot leave (a defect, reported as a failed generation).
    pub fn apply(&mut self, logits: &mut [f32], seconds: &Histogram) -> Result<(), String> {
        self.prepare(seconds);
        match &mut self.inner {
            Inner::Ban(tokens) => {
                for &token in tokens.iter() {
                    if let Some(logit) = logits.get_mut(token as usize) {
                        *logit = f32::NEG_INFINITY;
                    }
                }
                Ok(())
            }
            Inner::Grammar { mask, .. } => {
                let mask = match mask.take() {
                    Some(Ok(mask)) => mask,
                    Some(Err(e)) => return Err(e),
                    None => return Err("no mask".into()),
                };
                if mask.is_zero() {
                    return Err("the grammar allows no token".into());
                }
                let known = mask.len().min(logits.len());
                mask.iter_unset_entries(|i| {
                    if i < known {
                        logits[i] = f32::NEG_INFINITY;
                    }
                });
                for logit in &mut logits[known..] {
                    *logit = f32::NEG_INFINITY;
                }
                Ok(())
            }
        }
    }

    /// Advance past the sampled token (a stop token included).
    pub fn commit(&mut self, token: u32) -> Result<Commit, String> {
        match &mut self.inner {
            Inner::Ban(_) => Ok(Commit::Continue),
            Inner::Grammar { matcher, mask } => {
                *mask = None;
                self.want_mask = !self.check_first;
                matcher.consume_token(token).map_err(|e| e.to_string())?;
                Ok(if matcher.is_stopped() {
                    Commit::Complete
                } else {
                    Commit::Continue
                })
            }
        }
    }

    /// A grammar (not a single banned token): its mask is worth computing in parallel.
    pub fn needs_mask(&self) -> bool {
        self.want_mask && matches!(&self.inner, Inner::Grammar { mask: None, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::onnx::grammar::{plan, Request};
    use crate::domain::{Tool, ToolChoice};
    use serde_json::json;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/sluice-tiny");

    fn model() -> (Structured, Tokenizer) {
        let path = format!("{DIR}/tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path).unwrap();
        let json = std::fs::read(&path).unwrap();
        let tags = ("<tool_call>".to_owned(), "</tool_call>".to_owned());
        let structured = Structured::new(&json, &tokenizer, &[2, 0], &tags).unwrap();
        (structured, tokenizer)
    }

    fn histogram() -> Histogram {
        Histogram::with_opts(prometheus::HistogramOpts::new("m", "m")).unwrap()
    }

    fn calculator() -> Tool {
        Tool {
            name: "calculator".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}},
                "required": ["expression"]}),
            strict: None,
        }
    }

    fn compile(structured: &Structured, tools: &[Tool], choice: ToolChoice) -> Constraint {
        let request = Request {
            tools,
            tool_choice: Some(&choice),
            parallel_tool_calls: None,
            response_format: None,
        };
        structured
            .compile(plan(&request, structured.syntax()))
            .unwrap()
            .unwrap()
    }

    /// Feed `text`'s tokens; the index of the first one the constraint forbids.
    fn first_forbidden(c: &mut Constraint, tok: &Tokenizer, text: &str) -> Option<usize> {
        let seconds = histogram();
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        for (i, &id) in ids.iter().enumerate() {
            let mut logits = vec![0.0; tok.get_vocab_size(true)];
            c.apply(&mut logits, &seconds).unwrap();
            if logits[id as usize] == f32::NEG_INFINITY {
                return Some(i);
            }
            c.commit(id).unwrap();
        }
        None
    }

    fn allows(c: &mut Constraint, token: u32) -> bool {
        let mut logits = vec![0.0; 1505];
        c.apply(&mut logits, &histogram()).unwrap();
        logits[token as usize] > f32::NEG_INFINITY
    }

    #[test]
    fn the_tags_are_the_models_special_tokens() {
        let (structured, _) = model();
        assert_eq!(
            structured.syntax(),
            Some(&ToolSyntax {
                open: Tag::Special(3),
                close: Tag::Special(4)
            })
        );
    }

    #[test]
    fn an_offered_call_is_allowed_token_by_token_then_the_stop_token() {
        let (structured, tok) = model();
        let mut c = compile(&structured, &[calculator()], ToolChoice::Required);
        let call = r#"<tool_call>{"name": "calculator", "arguments": {"expression": "12 * 7"}}</tool_call>"#;
        assert_eq!(first_forbidden(&mut c, &tok, call), None);
        assert!(allows(&mut c, 2), "<|im_end|> after a complete call");
    }

    #[test]
    fn unoffered_names_bad_arguments_and_text_are_forbidden() {
        let (structured, tok) = model();
        let tools = [calculator()];
        for text in [
            r#"<tool_call>{"name": "sql_query", "arguments": {"query": "SELECT 1"}}</tool_call>"#,
            r#"<tool_call>{"name": "calculator", "arguments": {"expr": "1"}}</tool_call>"#,
            r#"<tool_call>{"name": "calculator", "arguments": {"expression": 12}}</tool_call>"#,
            "The answer is 84.",
        ] {
            let mut c = compile(&structured, &tools, ToolChoice::Required);
            assert!(first_forbidden(&mut c, &tok, text).is_some(), "{text}");
        }
        // With "auto", text is fine but the stop token is not allowed inside a call.
        let mut c = compile(&structured, &tools, ToolChoice::Auto);
        assert_eq!(first_forbidden(&mut c, &tok, "The answer is 84."), None);
        let mut c = compile(&structured, &tools, ToolChoice::Auto);
        assert_eq!(
            first_forbidden(&mut c, &tok, r#"<tool_call>{"name":"#),
            None
        );
        assert!(!allows(&mut c, 2));
    }

    #[test]
    fn without_tools_only_the_tags_are_banned() {
        let (structured, _) = model();
        let mut c = compile(&structured, &[], ToolChoice::Auto);
        assert_eq!(c.kind, "ban");
        let mut logits = vec![1.0; 1505];
        c.apply(&mut logits, &histogram()).unwrap();
        assert_eq!(logits[3], f32::NEG_INFINITY);
        assert_eq!(logits[4], f32::NEG_INFINITY);
        assert_eq!(logits.iter().filter(|l| **l == 1.0).count(), 1503);
        assert!(!c.needs_mask());
    }

    #[test]
    fn textual_tags_are_kept_out_of_free_text_and_spelled_in_calls() {
        let path = format!("{DIR}/tokenizer.json");
        let tok = Tokenizer::from_file(&path).unwrap();
        let tags = ("[CALL]".to_owned(), "[/CALL]".to_owned());
        let structured =
            Structured::new(&std::fs::read(&path).unwrap(), &tok, &[2, 0], &tags).unwrap();
        assert_eq!(
            structured.syntax().map(|s| &s.open),
            Some(&Tag::Text("[CALL]".into()))
        );
        let mut none = compile(&structured, &[], ToolChoice::Auto);
        assert_eq!(first_forbidden(&mut none, &tok, "Hello [CAL"), None);
        let mut none = compile(&structured, &[], ToolChoice::Auto);
        assert!(first_forbidden(&mut none, &tok, "Hello [CALL] x").is_some());
        let call = r#"[CALL]{"name": "calculator", "arguments": {"expression": "1"}}[/CALL]"#;
        let mut auto = compile(&structured, &[calculator()], ToolChoice::Auto);
        assert_eq!(first_forbidden(&mut auto, &tok, call), None);
        assert!(allows(&mut auto, 2));
    }

    #[test]
    fn a_closed_json_schema_completes_the_generation() {
        let (structured, tok) = model();
        let request = Request {
            tools: &[],
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: Some(&crate::domain::ResponseFormat::JsonSchema {
                name: "x".into(),
                schema: json!({"type": "object", "properties": {"ok": {"type": "boolean"}},
                    "required": ["ok"], "additionalProperties": false}),
                strict: Some(true),
            }),
        };
        let mut c = structured
            .compile(plan(&request, structured.syntax()))
            .unwrap()
            .unwrap();
        let ids = tok
            .encode(r#"{"ok": true}"#, false)
            .unwrap()
            .get_ids()
            .to_vec();
        let (last, head) = ids.split_last().unwrap();
        for &id in head {
            c.apply(&mut vec![0.0; 1505], &histogram()).unwrap();
            assert_eq!(c.commit(id), Ok(Commit::Continue));
        }
        c.apply(&mut vec![0.0; 1505], &histogram()).unwrap();
        assert_eq!(c.commit(*last), Ok(Commit::Complete));
    }
}
