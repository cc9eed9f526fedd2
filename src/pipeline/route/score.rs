//! Stage 3, route: the complexity scorer. A pure, deterministic function of a chat
//! request — ten features counted on bytes and words (no tokenizer), weighted by
//! `config::Weights`, squashed to [0, 1] — that the router compares with a tiered
//! model's thresholds to pick a quantization tier.
//!
//! Text features look at the user turns only, never the system prompt, and are counted
//! in one pass over each message's text parts without allocating (`score/text.rs`).
//! Every count only grows when text is appended after a line break, a reasoning step or
//! a turn is added, so with non-negative weights adding to a request never lowers its
//! score.

use crate::config::Weights;
use crate::domain::{ChatRequest, ContentPart, ResponseFormat, Role};

mod text;

use text::TextScan;

pub const FEATURE_COUNT: usize = 10;

/// The features of one request, in `Weights::NAMES` order (already transformed, e.g.
/// `ln(1 + count)`). Definitions: the doc comments of [`Weights`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Features(pub [f64; FEATURE_COUNT]);

impl Features {
    pub fn of(request: &ChatRequest) -> Features {
        let mut scan = TextScan::default();
        let mut turns = 0u64;
        for message in &request.messages {
            match message.role {
                Role::System => continue,
                Role::Assistant | Role::Tool => turns += 1,
                Role::User => {
                    turns += 1;
                    for part in &message.content {
                        if let ContentPart::Text { text } = part {
                            scan.feed(text);
                        }
                    }
                    scan.end_message();
                }
            }
        }
        let c = &scan.counts;
        let schema = match request.response_format {
            Some(ResponseFormat::JsonSchema { .. }) => 1.0,
            Some(ResponseFormat::JsonObject) => 0.5,
            Some(ResponseFormat::Text) | None => 0.0,
        };
        let max_tokens = request
            .sampling
            .max_tokens
            .map_or(0.0, |m| (f64::from(m) / 64.0).ln_1p());
        Features([
            (c.bytes as f64 / 64.0).ln_1p(),
            (turns as f64).ln_1p(),
            (c.code_blocks as f64).ln_1p(),
            (c.digits as f64).ln_1p(),
            (c.operators as f64).ln_1p(),
            (c.reasoning as f64).ln_1p(),
            (request.tools.len() as f64).ln_1p(),
            schema,
            max_tokens,
            (c.non_latin as f64 / 8.0).ln_1p(),
        ])
    }

    /// `(name, value)` pairs in `Weights::NAMES` order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, f64)> {
        Weights::NAMES.into_iter().zip(self.0)
    }
}

/// A logistic model over [`Features`]: `sigmoid(bias + Σ weight × feature)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorer {
    bias: f64,
    weights: [f64; FEATURE_COUNT],
}

impl Scorer {
    /// `config::validate` keeps the bias finite and the weights finite and ≥ 0.
    pub fn new(bias: f64, weights: &Weights) -> Scorer {
        Scorer {
            bias,
            weights: weights.values(),
        }
    }

    pub fn bias(&self) -> f64 {
        self.bias
    }

    pub fn weights(&self) -> [f64; FEATURE_COUNT] {
        self.weights
    }

    /// `sigmoid(bias + Σ w·f)`, in [0, 1]; finite for any input. A `0 × ∞` term counts
    /// as 0, and a sum that is still undefined (non-finite config) scores 0.5.
    pub fn score(&self, features: &Features) -> f64 {
        let z = self.bias
            + self
                .contributions(features)
                .iter()
                .map(|(_, c)| c)
                .sum::<f64>();
        sigmoid(z)
    }

    /// The `n` features contributing most (`w·f`), largest first, zero contributions
    /// left out; ties keep `Weights::NAMES` order.
    pub fn top(&self, features: &Features, n: usize) -> Vec<(&'static str, f64)> {
        let mut out: Vec<_> = self
            .contributions(features)
            .into_iter()
            .filter(|&(_, c)| c != 0.0)
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.truncate(n);
        out
    }

    fn contributions(&self, features: &Features) -> [(&'static str, f64); FEATURE_COUNT] {
        let mut out = [("", 0.0); FEATURE_COUNT];
        let terms = Weights::NAMES.iter().zip(self.weights).zip(features.0);
        for (slot, ((&name, w), f)) in out.iter_mut().zip(terms) {
            let c = w * f;
            *slot = (name, if c.is_nan() { 0.0 } else { c });
        }
        out
    }
}

/// The logistic function, computed without overflow on either side.
fn sigmoid(z: f64) -> f64 {
    if z.is_nan() {
        0.5
    } else if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Message, Sampling, Tool};
    use proptest::prelude::*;

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: None,
            sampling: Sampling::default(),
            n: 1,
            user: None,
            extra: Default::default(),
        }
    }

    fn tool(i: usize) -> Tool {
        Tool {
            name: format!("t{i}"),
            description: None,
            parameters: serde_json::Value::Null,
            strict: None,
        }
    }

    fn user(text: &str) -> ChatRequest {
        request(vec![Message::text(Role::User, text)])
    }

    fn feature(request: &ChatRequest, name: &str) -> f64 {
        Features::of(request)
            .named()
            .find(|&(n, _)| n == name)
            .map_or(f64::NAN, |(_, v)| v)
    }

    fn default_scorer() -> Scorer {
        Scorer::new(crate::config::DEFAULT_BIAS, &Weights::default())
    }

    fn score(request: &ChatRequest) -> f64 {
        default_scorer().score(&Features::of(request))
    }

    const GSM8K: &str = "Natalia sold clips to 48 of her friends in April, and then she sold \
        half as many clips in May. How many clips did Natalia sell altogether in April and \
        May? Explain your reasoning step by step, then give the final answer.";

    #[test]
    fn an_empty_request_scores_sigmoid_of_the_bias() {
        let f = Features::of(&request(Vec::new()));
        assert_eq!(f, Features::default());
        assert!((default_scorer().score(&f) - sigmoid(-3.0)).abs() < 1e-12);
    }

    #[test]
    fn a_word_problem_scores_above_a_greeting() {
        let hi = score(&user("hi there"));
        let word_problem = score(&user(GSM8K));
        assert!(hi < 0.1, "{hi}");
        assert!(word_problem > hi + 0.2, "{word_problem} vs {hi}");
    }

    #[test]
    fn user_bytes_counts_user_text_only() {
        assert_eq!(
            feature(&user("hi there"), "user_bytes"),
            (8.0f64 / 64.0).ln_1p()
        );
        let mut two_parts = user("");
        two_parts.messages[0].content = vec![
            ContentPart::Text { text: "hi ".into() },
            ContentPart::Image {
                url: "https://example.com/cat.png".into(),
            },
            ContentPart::Text {
                text: "there".into(),
            },
        ];
        assert_eq!(Features::of(&two_parts), Features::of(&user("hi there")));
    }

    #[test]
    fn the_system_prompt_is_ignored() {
        let system = format!(
            "You are a careful math tutor. Explain why, step by step, and prove each claim.\n\
             ```python\nx = 1 + 2 * 3\n```\n1. First compute 2024 - 1999.\n{}",
            "Это длинная системная подсказка. ".repeat(200)
        );
        let plain = user(GSM8K);
        let mut with_system = plain.clone();
        with_system
            .messages
            .insert(0, Message::text(Role::System, system));
        assert_eq!(Features::of(&with_system), Features::of(&plain));
        assert_eq!(score(&with_system), score(&plain));
    }

    #[test]
    fn turns_count_user_assistant_and_tool_messages() {
        let r = request(vec![
            Message::text(Role::System, "be brief"),
            Message::text(Role::User, "weather in Paris?"),
            Message::text(Role::Assistant, ""),
            Message::text(Role::Tool, "{\"temp\": 21}"),
            Message::text(Role::User, "and tomorrow?"),
        ]);
        assert_eq!(feature(&r, "turns"), 4f64.ln_1p());
        // Assistant and tool text is not user text.
        assert_eq!(feature(&r, "digits"), 0.0);
    }

    #[test]
    fn tools_schema_and_max_tokens() {
        let mut r = user("hi");
        let before = score(&r);
        r.tools = (0..3).map(tool).collect();
        assert_eq!(feature(&r, "tools"), 3f64.ln_1p());
        r.response_format = Some(ResponseFormat::JsonObject);
        assert_eq!(feature(&r, "schema"), 0.5);
        r.response_format = Some(ResponseFormat::Text);
        assert_eq!(feature(&r, "schema"), 0.0);
        assert_eq!(feature(&r, "max_tokens"), 0.0);
        r.sampling.max_tokens = Some(64);
        assert_eq!(feature(&r, "max_tokens"), 2f64.ln());
        r.sampling.max_tokens = Some(u32::MAX);
        assert!(feature(&r, "max_tokens").is_finite());
        assert!(score(&r) > before);
    }

    #[test]
    fn a_json_schema_raises_the_score() {
        let plain = user("List three primary colours.");
        let mut structured = plain.clone();
        structured.response_format = Some(ResponseFormat::JsonSchema {
            name: "colours".into(),
            schema: serde_json::json!({"type": "array", "items": {"type": "string"}}),
            strict: Some(true),
        });
        assert_eq!(feature(&structured, "schema"), 1.0);
        assert!(score(&structured) > score(&plain));
    }

    #[test]
    fn non_latin_letters_are_counted() {
        assert_eq!(feature(&user("这是一个测试"), "non_latin"), 0.75f64.ln_1p());
        assert_eq!(feature(&user("Привет, мир"), "non_latin"), 1.125f64.ln_1p());
        assert_eq!(
            feature(&user("café naïve Ærøskøbing ｆｕｌｌ"), "non_latin"),
            0.0
        );
        assert_eq!(feature(&user("emoji 🎉🚀 and ← arrows"), "non_latin"), 0.0);
        assert!(score(&user("请一步一步地解释为什么天空是蓝色的")) > score(&user("hi")));
    }

    #[test]
    fn top_lists_the_largest_contributions() {
        let scorer = default_scorer();
        let f = Features::of(&user(GSM8K));
        let top = scorer.top(&f, 3);
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].0, "reasoning");
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        let all = scorer.top(&f, 100);
        assert!(all.iter().all(|&(_, c)| c != 0.0));
        assert!(!all.iter().any(|&(n, _)| n == "tools" || n == "code_blocks"));
        assert!(scorer.top(&f, 0).is_empty());
    }

    #[test]
    fn non_finite_config_still_scores_in_range() {
        let f = Features::of(&user(GSM8K));
        let w = Weights {
            tools: f64::INFINITY, // × 0 tools
            digits: f64::NAN,
            ..Weights::default()
        };
        for bias in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308, -1e308] {
            let s = Scorer::new(bias, &w).score(&f);
            assert!(s.is_finite() && (0.0..=1.0).contains(&s), "{bias}: {s}");
        }
        assert_eq!(Scorer::new(0.0, &w).weights()[6], f64::INFINITY);
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![
            Just(Role::System),
            Just(Role::User),
            Just(Role::Assistant),
            Just(Role::Tool)
        ]
    }

    /// Prompt-like text: markdown, code, numbers, cue words, and arbitrary Unicode.
    pub(super) fn text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9 \n.,;:()+*/=^%<>_`-]{0,40}",
            prop::sample::select(vec![
                "```",
                "\n```\n",
                "\n1. ",
                "2) ",
                " - ",
                "step by step",
                "How many",
                "why",
                "Then",
                "Привет",
                "测试",
                "\r\n",
                "3-4",
                "é",
                "🎉",
                // Endings whose meaning the next byte decides.
                "7 -",
                "\n2.",
                "``",
                " how",
                "step by",
            ])
            .prop_map(str::to_owned),
        ];
        prop::collection::vec(piece, 0..6).prop_map(|p| p.concat())
    }

    fn message() -> impl Strategy<Value = Message> {
        (role(), prop::collection::vec(text(), 0..3)).prop_map(|(role, parts)| Message {
            content: parts
                .into_iter()
                .map(|text| ContentPart::Text { text })
                .collect(),
            ..Message::text(role, "")
        })
    }

    fn any_request() -> impl Strategy<Value = ChatRequest> {
        (
            prop::collection::vec(message(), 0..8),
            0usize..5,
            prop::option::of(any::<u32>()),
            0u8..4,
        )
            .prop_map(|(messages, tools, max_tokens, format)| {
                let mut r = request(messages);
                r.tools = (0..tools).map(tool).collect();
                r.sampling.max_tokens = max_tokens;
                r.response_format = match format {
                    0 => None,
                    1 => Some(ResponseFormat::Text),
                    2 => Some(ResponseFormat::JsonObject),
                    _ => Some(ResponseFormat::JsonSchema {
                        name: "s".into(),
                        schema: serde_json::Value::Null,
                        strict: None,
                    }),
                };
                r
            })
    }

    fn scorers() -> impl Strategy<Value = Scorer> {
        prop_oneof![
            Just(default_scorer()),
            (-10.0f64..10.0, prop::array::uniform10(0.0f64..5.0))
                .prop_map(|(bias, w)| Scorer::new(bias, &Weights::from_values(w))),
        ]
    }

    /// The request with `suffix` appended to its last user message (one is added if
    /// there is none).
    fn appended(mut r: ChatRequest, suffix: &str) -> ChatRequest {
        match r.messages.iter_mut().rev().find(|m| m.role == Role::User) {
            Some(m) => m.content.push(ContentPart::Text {
                text: suffix.into(),
            }),
            None => r.messages.push(Message::text(Role::User, suffix)),
        }
        r
    }

    fn assert_not_lower(before: &ChatRequest, after: &ChatRequest, scorer: &Scorer) {
        let (fb, fa) = (Features::of(before), Features::of(after));
        for ((name, b), (_, a)) in fb.named().zip(fa.named()) {
            assert!(a >= b, "{name} fell from {b} to {a}");
        }
        assert!(scorer.score(&fa) >= scorer.score(&fb));
    }

    proptest! {
        #[test]
        fn never_panics_and_scores_in_range(r in any_request(), scorer in scorers()) {
            let f = Features::of(&r);
            prop_assert!(f.0.iter().all(|v| v.is_finite() && *v >= 0.0), "{f:?}");
            let s = scorer.score(&f);
            prop_assert!(s.is_finite() && (0.0..=1.0).contains(&s));
            prop_assert!(scorer.top(&f, 10).len() <= FEATURE_COUNT);
        }

        #[test]
        fn adding_code_reasoning_or_a_turn_never_lowers_the_score(
            r in any_request(),
            code in prop_oneof![any::<String>(), "[ -~\n]{0,200}"],
            turn in text(),
            scorer in scorers(),
        ) {
            let code = appended(r.clone(), &format!("\n\n```\n{code}\n```"));
            assert_not_lower(&r, &code, &scorer);
            let why = appended(r.clone(), "\n\nThen explain why step by step.");
            assert_not_lower(&r, &why, &scorer);
            prop_assert!(Features::of(&why).0[5] > Features::of(&r).0[5]);
            let mut more = r.clone();
            more.messages.push(Message::text(Role::User, turn));
            assert_not_lower(&r, &more, &scorer);
        }

        #[test]
        fn features_are_deterministic(r in any_request()) {
            prop_assert_eq!(Features::of(&r), Features::of(&r.clone()));
        }
    }
}
