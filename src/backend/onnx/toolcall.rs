//! backend/onnx → tool-call parsing: splits the model's streamed text into plain text and
//! Hermes/Qwen-style calls `<tool_call>{"name": "...", "arguments": {...}}</tool_call>`.
//!
//! Sits after the detokeniser (which keeps special tokens as text). Text that could be the
//! start of a tag is held back, so no part of a tag is ever streamed as content. A call whose
//! JSON is broken comes out as its raw text, tags included, so the user can see what the
//! model did. Whitespace that only separates calls (or precedes the first one) is dropped.
//!
//! In streaming mode (a constrained sequence, whose calls are known to be well formed) a
//! call goes out in pieces: [`Piece::CallStart`] as soon as its name is written, then
//! [`Piece::CallArguments`] as the arguments grow ([`super::callstream`]).

use serde_json::Value;

use super::callstream::{head, Head, ValueEnd};

/// One unit of output, in generation order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// `arguments` is a JSON text (an object serialised with serde_json, or the model's
    /// string as is).
    Call {
        name: String,
        arguments: String,
    },
    /// Streaming mode: a new call, named; its arguments follow.
    CallStart {
        name: String,
    },
    /// Streaming mode: more of the current call's arguments (a JSON text when joined).
    CallArguments(String),
}

/// Where a streamed call is.
enum Streamed {
    /// Head not written yet.
    Head,
    /// Not the expected shape: parsed whole at its end tag.
    Whole,
    /// Name sent; arguments sent up to byte `sent` of the body.
    Arguments { sent: usize, end: ValueEnd },
}

pub struct ToolCallParser {
    start_tag: String,
    end_tag: String,
    /// Between a start tag and its end tag.
    in_call: bool,
    /// Outside a call: text held back (a trailing whitespace run and/or a partial start tag).
    /// Inside a call: the call's body so far.
    buf: String,
    /// Whitespace dropped before the current start tag; given back if the call is malformed.
    pre_ws: String,
    calls_seen: usize,
    /// Stream calls in pieces (see the module header).
    stream: bool,
    streamed: Streamed,
}

impl ToolCallParser {
    /// E.g. `"<tool_call>"`, `"</tool_call>"`. With an empty tag, all text is plain text.
    pub fn new(start_tag: &str, end_tag: &str) -> Self {
        Self {
            start_tag: start_tag.to_owned(),
            end_tag: end_tag.to_owned(),
            in_call: false,
            buf: String::new(),
            pre_ws: String::new(),
            calls_seen: 0,
            stream: false,
            streamed: Streamed::Head,
        }
    }

    /// Send calls in pieces as they are generated (for constrained sequences).
    pub fn streaming(mut self) -> Self {
        self.stream = true;
        self
    }

    /// Never emits any part of a tag as Text: holds back a suffix that could start the start
    /// tag (and a trailing whitespace run, released with the next non-whitespace text).
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.start_tag.is_empty() || self.end_tag.is_empty() {
            push_text(&mut out, text.to_owned());
            return out;
        }
        // Inside a call, the end tag can only be in the new text or straddle its start.
        let mut from = floor_boundary(&self.buf, self.buf.len().saturating_sub(self.end_tag.len()));
        self.buf.push_str(text);
        loop {
            if self.in_call {
                let found = self
                    .buf
                    .get(from..)
                    .and_then(|tail| tail.find(&self.end_tag));
                if self.stream {
                    let visible = match found {
                        Some(i) => i + from,
                        None => self.buf.len() - held_back(&self.buf, &self.end_tag),
                    };
                    self.stream_body(visible, &mut out);
                }
                let Some(at) = found.map(|i| i + from) else {
                    break;
                };
                let rest = self.buf.split_off(at + self.end_tag.len());
                self.buf.truncate(at);
                let body = std::mem::replace(&mut self.buf, rest);
                self.close_call(&body, true, &mut out);
            } else if let Some(at) = self.buf.find(&self.start_tag) {
                let rest = self.buf.split_off(at + self.start_tag.len());
                self.buf.truncate(at);
                let before = std::mem::replace(&mut self.buf, rest);
                let text = before.trim_end();
                self.pre_ws = before[text.len()..].to_owned();
                push_text(&mut out, text.to_owned());
                self.in_call = true;
            } else {
                let partial_tag = held_back(&self.buf, &self.start_tag);
                let ready = self.buf[..self.buf.len() - partial_tag].trim_end().len();
                let rest = self.buf.split_off(ready);
                push_text(&mut out, std::mem::replace(&mut self.buf, rest));
                break;
            }
            from = 0;
        }
        out
    }

    /// End of generation: flush held text; an unclosed call whose buffered JSON parses is
    /// still a Call, otherwise its raw text (with the start tag) becomes Text.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let buf = std::mem::take(&mut self.buf);
        if self.in_call {
            self.in_call = false;
            // The model may have been cut off inside the end tag.
            let body = &buf[..buf.len() - held_back(&buf, &self.end_tag)];
            if parse_call(body).is_some() {
                self.close_call(body, false, &mut out);
            } else {
                self.close_call(&buf, false, &mut out);
            }
        } else if self.calls_seen > 0 {
            push_text(&mut out, buf.trim_end().to_owned());
        } else {
            push_text(&mut out, buf);
        }
        out
    }

    /// How many Calls were emitted so far.
    #[cfg(test)]
    pub fn calls(&self) -> usize {
        self.calls_seen
    }

    /// Streaming mode: send what `buf[..visible]` (the call body so far) adds.
    fn stream_body(&mut self, visible: usize, out: &mut Vec<Piece>) {
        let body = &self.buf[..visible];
        if let Streamed::Head = self.streamed {
            match head(body) {
                Head::NeedMore => return,
                Head::NoMatch => self.streamed = Streamed::Whole,
                Head::Matched { name, args_at } => {
                    self.calls_seen += 1;
                    out.push(Piece::CallStart { name });
                    self.streamed = Streamed::Arguments {
                        sent: args_at,
                        end: ValueEnd::default(),
                    };
                }
            }
        }
        if let Streamed::Arguments { sent, end } = &mut self.streamed {
            let new = &body[*sent..];
            let n = end.feed(new);
            if n > 0 {
                out.push(Piece::CallArguments(new[..n].to_owned()));
            }
            *sent = visible;
        }
    }

    /// Emits the call in `body`, or, if it is not a valid call, its raw text.
    fn close_call(&mut self, body: &str, closed: bool, out: &mut Vec<Piece>) {
        self.in_call = false;
        let pre_ws = std::mem::take(&mut self.pre_ws);
        if let Streamed::Arguments { .. } = std::mem::replace(&mut self.streamed, Streamed::Head) {
            return; // already sent
        }
        match parse_call(body) {
            Some((name, arguments)) => {
                self.calls_seen += 1;
                out.push(Piece::Call { name, arguments });
            }
            None => {
                let end = if closed { self.end_tag.as_str() } else { "" };
                push_text(out, format!("{pre_ws}{}{body}{end}", self.start_tag));
            }
        }
    }
}

/// `{"name": string, "arguments" | "parameters": object | string}`, whitespace around it
/// allowed; missing arguments mean `{}`.
fn parse_call(body: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(body.trim()).ok()?;
    let object = value.as_object()?;
    let name = object
        .get("name")?
        .as_str()
        .filter(|n| !n.is_empty())?
        .to_owned();
    let arguments = match object.get("arguments").or_else(|| object.get("parameters")) {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => serde_json::to_string(other).ok()?,
    };
    Some((name, arguments))
}

fn push_text(out: &mut Vec<Piece>, text: String) {
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
}

/// Length of the longest proper prefix of `tag` that `text` ends with.
fn held_back(text: &str, tag: &str) -> usize {
    tag.char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .filter(|&i| text.ends_with(&tag[..i]))
        .max()
        .unwrap_or(0)
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CALL: &str = r#"<tool_call>
{"name": "get_weather", "arguments": {"city": "Zürich"}}
</tool_call>"#;

    fn weather() -> Piece {
        call("get_weather", r#"{"city":"Zürich"}"#)
    }

    fn call(name: &str, arguments: &str) -> Piece {
        Piece::Call {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn text(s: &str) -> Piece {
        Piece::Text(s.into())
    }

    /// Runs the chunks through a fresh parser (finish included); adjacent Texts merged.
    fn parse(chunks: &[&str]) -> Vec<Piece> {
        let mut parser = ToolCallParser::new("<tool_call>", "</tool_call>");
        let mut pieces: Vec<Piece> = chunks.iter().flat_map(|c| parser.push(c)).collect();
        pieces.extend(parser.finish());
        let calls = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Call { .. }))
            .count();
        assert_eq!(parser.calls(), calls);
        merge(pieces)
    }

    fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        for piece in pieces {
            match (out.last_mut(), piece) {
                (_, Piece::Text(t)) if t.is_empty() => panic!("empty Text emitted"),
                (Some(Piece::Text(last)), Piece::Text(t)) => last.push_str(&t),
                (_, piece) => out.push(piece),
            }
        }
        out
    }

    /// Every split of `input` into three chunks at char boundaries gives `expected`.
    fn assert_all_splits(input: &str, expected: &[Piece]) {
        let bounds: Vec<usize> = input
            .char_indices()
            .map(|(i, _)| i)
            .chain([input.len()])
            .collect();
        for (n, &i) in bounds.iter().enumerate() {
            for &j in &bounds[n..] {
                let got = parse(&[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(got, expected, "split at {i} and {j} of {input:?}");
            }
        }
    }

    #[test]
    fn plain_text_streams_unchanged_and_at_once() {
        let mut parser = ToolCallParser::new("<tool_call>", "</tool_call>");
        assert_eq!(parser.push("The answer "), vec![text("The answer")]);
        assert_eq!(parser.push("is 84."), vec![text(" is 84.")]);
        assert_eq!(parser.push(" a<b and <tool"), vec![text(" a<b and")]);
        assert_eq!(parser.push("s>"), vec![text(" <tools>")]);
        assert_eq!(parser.push("\n"), vec![]);
        assert_eq!(parser.finish(), vec![text("\n")]);
        assert_eq!(parser.calls(), 0);
    }

    #[test]
    fn one_call_at_every_split() {
        assert_all_splits(CALL, &[weather()]);
        assert_all_splits(&format!("\n {CALL}\n"), &[weather()]);
    }

    #[test]
    fn two_calls_back_to_back() {
        let input = format!("{CALL}\n{CALL}");
        assert_eq!(parse(&[&input]), vec![weather(), weather()]);
        assert_all_splits(&format!("{CALL}\n\n{CALL}\n"), &[weather(), weather()]);
    }

    #[test]
    fn text_around_calls_with_multibyte_characters() {
        let input = format!("Je vérifie 日本の天気 🌦\n{CALL}\nVoilà ✓\n");
        let expected = [
            text("Je vérifie 日本の天気 🌦"),
            weather(),
            text("\nVoilà ✓"),
        ];
        assert_all_splits(&input, &expected);
    }

    #[test]
    fn malformed_json_comes_out_raw() {
        for body in [
            r#"{"name": "f", "arguments": {"#,
            r#"{"arguments": {}}"#,
            r#"{"name": 3}"#,
            "[1]",
            "",
        ] {
            let input = format!("Hi \n<tool_call>{body}</tool_call>\n");
            assert_all_splits(
                &input,
                &[text(&format!("Hi \n<tool_call>{body}</tool_call>\n"))],
            );
        }
    }

    #[test]
    fn malformed_call_after_a_good_one_keeps_its_text() {
        let input = format!("{CALL}\n<tool_call>oops</tool_call>");
        assert_eq!(
            parse(&[&input]),
            vec![weather(), text("\n<tool_call>oops</tool_call>")]
        );
    }

    #[test]
    fn unclosed_call_at_finish() {
        let good = r#"<tool_call>{"name": "f", "arguments": {"x": 1}}"#;
        assert_eq!(parse(&[good]), vec![call("f", r#"{"x":1}"#)]);
        assert_eq!(parse(&[good, "\n</tool_ca"]), vec![call("f", r#"{"x":1}"#)]);
        let cut = r#"ok <tool_call>{"name": "f", "argu"#;
        assert_eq!(parse(&[cut]), vec![text(cut)]);
    }

    #[test]
    fn string_arguments_parameters_key_and_no_arguments() {
        let s = r#"<tool_call>{"name": "f", "arguments": "{\"a\": 1}"}</tool_call>"#;
        assert_eq!(parse(&[s]), vec![call("f", r#"{"a": 1}"#)]);
        let p = r#"<tool_call>{"name": "g", "parameters": {"b": [true, null]}}</tool_call>"#;
        assert_eq!(parse(&[p]), vec![call("g", r#"{"b":[true,null]}"#)]);
        let none = r#"<tool_call>{"name": "h"}</tool_call>"#;
        assert_eq!(parse(&[none]), vec![call("h", "{}")]);
    }

    #[test]
    fn whitespace_only_text_is_dropped_once_calls_are_involved() {
        assert_eq!(
            parse(&["\n\n", CALL, "\n", CALL, "\n\n"]),
            vec![weather(), weather()]
        );
        // Without a call, whitespace is content like any other.
        assert_eq!(parse(&["\n\n", " "]), vec![text("\n\n ")]);
    }

    #[test]
    fn empty_tags_mean_plain_text() {
        let mut parser = ToolCallParser::new("", "");
        assert_eq!(parser.push(CALL), vec![text(CALL)]);
        assert_eq!(parser.finish(), vec![]);
    }

    /// A text segment without tags, or a call.
    fn segment() -> impl Strategy<Value = (String, Option<Piece>)> {
        prop_oneof![
            "[a-c<>/_ \n é日{}\"]{1,12}".prop_map(|t| (t, None)),
            ("[a-z]{1,6}", 0u8..10).prop_map(|(name, x)| {
                let raw = format!(
                    r#"<tool_call>{{"name":"{name}","arguments":{{"x":{x}}}}}</tool_call>"#
                );
                (raw, Some(call(&name, &format!(r#"{{"x":{x}}}"#))))
            }),
        ]
    }

    /// Splits `s` at the given positions, rounded down to char boundaries.
    fn split(s: &str, cuts: &[usize]) -> Vec<String> {
        let mut cuts: Vec<usize> = cuts
            .iter()
            .map(|c| floor_boundary(s, c % (s.len() + 1)))
            .collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([s.len()]) {
            out.push(s[start..cut].to_owned());
            start = cut;
        }
        out
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_result(
            segments in prop::collection::vec(segment(), 0..6),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let input: String = segments.iter().map(|(raw, _)| raw.as_str()).collect();
            let whole = parse(&[&input]);
            let chunks = split(&input, &cuts);
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            prop_assert_eq!(&parse(&refs), &whole);
            // Every generated call comes out, in order; no tag leaks into the text.
            let expected: Vec<&Piece> = segments.iter().filter_map(|(_, c)| c.as_ref()).collect();
            let got: Vec<&Piece> = whole.iter().filter(|p| matches!(p, Piece::Call { .. })).collect();
            prop_assert_eq!(&got, &expected);
            for piece in &whole {
                if let Piece::Text(t) = piece {
                    prop_assert!(!t.contains("tool_call"), "{:?}", t);
                }
            }
            // Without calls the text is passed through exactly.
            if expected.is_empty() {
                prop_assert_eq!(whole, if input.is_empty() { vec![] } else { vec![text(&input)] });
            }
        }
    }
}
