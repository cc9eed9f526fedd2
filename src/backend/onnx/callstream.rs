//! backend/onnx → tool-call parsing, streaming half: reads a call's body as it is
//! generated, so the function name goes out as soon as it is written and the arguments
//! as they grow (OpenAI's `tool_calls` delta shape), instead of the whole call at the
//! closing tag. Used by [`super::toolcall`] when the sequence is constrained, i.e. the
//! body is known to be `{"name": "...", "arguments": {...}}`.

/// The start of a call body: `{"name": "<name>", "arguments": ` (any JSON whitespace).
#[derive(Debug, PartialEq)]
pub enum Head {
    /// The text so far could still become a head.
    NeedMore,
    /// Not this shape (e.g. `arguments` first): the call is parsed whole at its end.
    NoMatch,
    /// The name, and where the arguments value starts.
    Matched { name: String, args_at: usize },
}

/// Match the head of a call body.
pub fn head(body: &str) -> Head {
    let mut cursor = Cursor { text: body, at: 0 };
    match cursor.head() {
        Ok(name) => Head::Matched {
            name,
            args_at: cursor.at,
        },
        Err(step) => step,
    }
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl Cursor<'_> {
    fn head(&mut self) -> Result<String, Head> {
        self.literal("{")?;
        self.literal("\"name\"")?;
        self.literal(":")?;
        self.whitespace();
        let name = self.string()?;
        self.literal(",")?;
        self.literal("\"arguments\"")?;
        self.literal(":")?;
        self.whitespace();
        // Streamed only when the arguments are an object.
        match self.text[self.at..].chars().next() {
            None => Err(Head::NeedMore),
            Some('{') => Ok(name),
            Some(_) => Err(Head::NoMatch),
        }
    }

    fn whitespace(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start_matches([' ', '\t', '\r', '\n']).len();
    }

    /// Whitespace, then `lit`.
    fn literal(&mut self, lit: &str) -> Result<(), Head> {
        self.whitespace();
        let rest = &self.text[self.at..];
        if rest.starts_with(lit) {
            self.at += lit.len();
            Ok(())
        } else if lit.starts_with(rest) {
            Err(Head::NeedMore)
        } else {
            Err(Head::NoMatch)
        }
    }

    /// A JSON string, decoded.
    fn string(&mut self) -> Result<String, Head> {
        let rest = &self.text[self.at..];
        if rest.is_empty() {
            return Err(Head::NeedMore);
        }
        if !rest.starts_with('"') {
            return Err(Head::NoMatch);
        }
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    let name: String =
                        serde_json::from_str(&rest[..=i]).map_err(|_| Head::NoMatch)?;
                    self.at += i + 1;
                    return if name.is_empty() {
                        Err(Head::NoMatch)
                    } else {
                        Ok(name)
                    };
                }
                _ => {}
            }
        }
        Err(Head::NeedMore)
    }
}

/// Finds where a JSON object or array ends, fed piece by piece.
#[derive(Debug, Default)]
pub struct ValueEnd {
    depth: usize,
    in_string: bool,
    escaped: bool,
    done: bool,
}

impl ValueEnd {
    /// How many bytes of `text` still belong to the value (all of them until it ends).
    pub fn feed(&mut self, text: &str) -> usize {
        if self.done {
            return 0;
        }
        for (i, b) in text.bytes().enumerate() {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.done = true;
                        return i + 1;
                    }
                }
                _ => {}
            }
        }
        text.len()
    }

    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BODY: &str = r#"{"name": "calc\"x", "arguments": {"a": "}{\"", "b": [1, {"c": 2}]}}"#;

    #[test]
    fn head_needs_more_until_the_arguments_open() {
        let at = BODY.find("{\"a\"").unwrap();
        for cut in 0..at {
            assert_eq!(head(&BODY[..cut]), Head::NeedMore, "cut at {cut}");
        }
        assert_eq!(
            head(BODY),
            Head::Matched {
                name: "calc\"x".into(),
                args_at: at
            }
        );
        assert_eq!(
            head("\n {\n\"name\":\"f\" ,\"arguments\" :{}}"),
            Head::Matched {
                name: "f".into(),
                args_at: 29
            }
        );
    }

    #[test]
    fn other_shapes_do_not_match() {
        for body in [
            r#"{"arguments": {}, "name": "f"}"#,
            r#"{"name": "f", "arguments": "{}"}"#,
            r#"{"name": "", "arguments": {}}"#,
            r#"{"name": 3, "arguments": {}}"#,
            "[",
        ] {
            assert_eq!(head(body), Head::NoMatch, "{body}");
        }
    }

    #[test]
    fn value_end_skips_brackets_inside_strings() {
        let args = &BODY[BODY.find("{\"a\"").unwrap()..];
        let mut end = ValueEnd::default();
        let n = end.feed(args);
        assert!(end.is_done());
        assert_eq!(&args[..n], r#"{"a": "}{\"", "b": [1, {"c": 2}]}"#);
        assert_eq!(end.feed("}"), 0);
    }

    proptest! {
        #[test]
        fn value_end_is_the_same_for_any_chunking(cuts in prop::collection::vec(0usize..40, 0..8)) {
            let args = r#"{"q": "x\\\"}é", "n": [[], {}], "s": "]"} tail"#;
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| args.is_char_boundary(c)).collect();
            cuts.sort_unstable();
            let mut end = ValueEnd::default();
            let mut taken = String::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([args.len()]) {
                let piece = &args[start..cut];
                taken.push_str(&piece[..end.feed(piece)]);
                start = cut;
            }
            prop_assert_eq!(taken, r#"{"q": "x\\\"}é", "n": [[], {}], "s": "]"}"#);
        }
    }
}
