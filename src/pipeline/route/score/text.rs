//! Stage 3, route: the complexity scorer's text pass. One scan over the user turns'
//! text — fed part by part, without allocating, ASCII lowercased on the fly — counts
//! bytes, fenced code blocks, digits, operators, reasoning cues and non-Latin letters
//! for `score::Features` (definitions: the doc comments of `config::Weights`).
//!
//! Every count only grows when text is appended after a line break, so adding to a
//! request never lowers its score.

/// Counts over the user turns' text.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) struct Counts {
    pub bytes: u64,
    pub code_blocks: u64,
    pub digits: u64,
    pub operators: u64,
    pub reasoning: u64,
    pub non_latin: u64,
}

/// Where the current line is, as far as it matters: a fence (```` ``` ````) or a
/// numbered step (`1.` / `2)` then a space) must open the line, after indentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lead {
    /// Only spaces, tabs or `\r` so far.
    #[default]
    Indent,
    /// `n` backticks after the indentation.
    Ticks(u8),
    /// `n` digits after the indentation.
    Digits(u8),
    /// Digits then `.` or `)`: a step if whitespace follows.
    Marker,
    /// Anything else: nothing more to find on this line.
    Other,
}

/// The partial multi-word cue the last word(s) started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Chain {
    #[default]
    None,
    Step,
    StepBy,
    How,
    Show,
    What,
}

/// Longest cue word, in bytes; longer words are never cues.
const WORD_CAP: usize = 12;
/// `word_len` of a word that can be no cue (too long, or with a non-ASCII letter).
const UNMATCHABLE: u8 = u8::MAX;

/// One pass over a message's text, fed part by part (the same counts as feeding the
/// parts joined), then [`TextScan::end_message`].
#[derive(Debug, Clone, Default)]
pub(super) struct TextScan {
    pub counts: Counts,
    lead: Lead,
    in_block: bool,
    /// A `-` with a digit or space before it, waiting for the byte after it.
    dash: bool,
    /// The last byte was a digit or a space (what may stand before an operator `-`).
    prev_operand: bool,
    /// The current word, ASCII-lowercased (its first `WORD_CAP` bytes).
    word: [u8; WORD_CAP],
    word_len: u8,
    chain: Chain,
    /// Since the last word ended only whitespace or `-` was seen: a multi-word cue
    /// may go on.
    gap_ok: bool,
}

impl TextScan {
    pub fn feed(&mut self, text: &str) {
        self.counts.bytes += text.len() as u64;
        for c in text.chars() {
            if c.is_ascii() {
                self.ascii(c as u8);
            } else {
                self.wide(c);
            }
        }
    }

    fn ascii(&mut self, b: u8) {
        if b.is_ascii_alphabetic() {
            self.push_letter(b.to_ascii_lowercase());
            self.dash = false;
            self.prev_operand = false;
            self.lead = Lead::Other;
            return;
        }
        let operand = b.is_ascii_digit() || b == b' ';
        if self.dash && operand {
            self.counts.operators += 1;
        }
        self.dash = false;
        if b.is_ascii_digit() || b == b'_' {
            self.spoil_word();
        } else {
            self.end_word();
            if !(b.is_ascii_whitespace() || b == b'-') {
                self.gap_ok = false;
            }
        }
        match b {
            b'0'..=b'9' => self.counts.digits += 1,
            b'+' | b'*' | b'/' | b'=' | b'^' | b'%' | b'<' | b'>' => self.counts.operators += 1,
            b'-' => self.dash = self.prev_operand && self.lead != Lead::Indent,
            _ => {}
        }
        self.prev_operand = operand;
        self.lead = match (self.lead, b) {
            (Lead::Marker, b' ' | b'\t' | b'\r' | b'\n') => {
                self.counts.reasoning += 1;
                if b == b'\n' {
                    Lead::Indent
                } else {
                    Lead::Other
                }
            }
            (_, b'\n') => Lead::Indent,
            (Lead::Indent, b' ' | b'\t' | b'\r') => Lead::Indent,
            (Lead::Indent, b'`') => Lead::Ticks(1),
            (Lead::Ticks(2), b'`') => {
                self.in_block = !self.in_block;
                if self.in_block {
                    self.counts.code_blocks += 1;
                }
                Lead::Other
            }
            (Lead::Ticks(n), b'`') => Lead::Ticks(n + 1),
            (Lead::Indent, b'0'..=b'9') => Lead::Digits(1),
            (Lead::Digits(n), b'0'..=b'9') if n < 2 => Lead::Digits(n + 1),
            (Lead::Digits(_), b'.' | b')') => Lead::Marker,
            _ => Lead::Other,
        };
    }

    fn wide(&mut self, c: char) {
        self.dash = false;
        self.prev_operand = false;
        if c.is_alphanumeric() {
            self.spoil_word();
            if c.is_alphabetic() && !is_latin(c) {
                self.counts.non_latin += 1;
            }
        } else {
            self.end_word();
            if !c.is_whitespace() {
                self.gap_ok = false;
            }
        }
        self.lead = match self.lead {
            Lead::Marker if c.is_whitespace() => {
                self.counts.reasoning += 1;
                Lead::Other
            }
            Lead::Indent if c.is_whitespace() => Lead::Indent,
            _ => Lead::Other,
        };
    }

    /// Append a lowercase ASCII letter to the current word.
    fn push_letter(&mut self, b: u8) {
        match self.word.get_mut(usize::from(self.word_len)) {
            Some(slot) => {
                *slot = b;
                self.word_len += 1;
            }
            None => self.word_len = UNMATCHABLE,
        }
    }

    /// The current word holds a digit, `_` or a non-ASCII letter: it is no cue.
    fn spoil_word(&mut self) {
        self.word_len = UNMATCHABLE;
    }

    fn end_word(&mut self) {
        if self.word_len == 0 {
            return;
        }
        let word = self
            .word
            .get(..usize::from(self.word_len))
            .unwrap_or_default();
        if is_cue(word) {
            self.counts.reasoning += 1;
        }
        let chain = if self.gap_ok { self.chain } else { Chain::None };
        self.chain = match (chain, word) {
            (Chain::Step, b"by") => Chain::StepBy,
            (Chain::StepBy, b"step") => {
                self.counts.reasoning += 1;
                Chain::Step
            }
            (Chain::How, b"many" | b"much") | (Chain::Show, b"that") | (Chain::What, b"if") => {
                self.counts.reasoning += 1;
                Chain::None
            }
            (_, b"step") => Chain::Step,
            (_, b"how") => Chain::How,
            (_, b"show") => Chain::Show,
            (_, b"what") => Chain::What,
            _ => Chain::None,
        };
        self.word_len = 0;
        self.gap_ok = true;
    }

    /// The message's text is over: a word in progress counts, a `-` or step marker
    /// with nothing after it does not.
    pub fn end_message(&mut self) {
        self.end_word();
        let counts = self.counts;
        *self = TextScan {
            counts,
            ..TextScan::default()
        };
    }
}

/// Single-word reasoning cues, lowercase (multi-word ones are chained in `end_word`).
fn is_cue(word: &[u8]) -> bool {
    matches!(
        word,
        b"explain"
            | b"why"
            | b"prove"
            | b"proof"
            | b"derive"
            | b"compare"
            | b"analyze"
            | b"analyse"
            | b"reason"
            | b"justify"
            | b"calculate"
            | b"compute"
            | b"solve"
            | b"evaluate"
            | b"first"
            | b"then"
            | b"finally"
            | b"therefore"
            | b"hence"
            | b"thus"
    )
}

/// Letters of the Latin script: Latin-1, Latin Extended A–G, IPA, phonetic
/// extensions, Latin Extended Additional and fullwidth Latin.
fn is_latin(c: char) -> bool {
    matches!(
        u32::from(c),
        0x80..=0x2FF
            | 0x1D00..=0x1DBF
            | 0x1E00..=0x1EFF
            | 0x2C60..=0x2C7F
            | 0xA720..=0xA7FF
            | 0xAB30..=0xAB6F
            | 0xFB00..=0xFB06
            | 0xFF21..=0xFF3A
            | 0xFF41..=0xFF5A
            | 0x10780..=0x107BF
            | 0x1DF00..=0x1DFFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::route::score::tests::text;
    use proptest::prelude::*;

    fn scan_parts(parts: &[&str]) -> Counts {
        let mut scan = TextScan::default();
        for part in parts {
            scan.feed(part);
        }
        scan.end_message();
        scan.counts
    }

    fn scan(text: &str) -> Counts {
        scan_parts(&[text])
    }

    /// Each text's count, as a table.
    fn check(count: fn(&Counts) -> u64, cases: &[(&str, u64)]) {
        for &(text, want) in cases {
            assert_eq!(count(&scan(text)), want, "in {text:?}");
        }
    }

    #[test]
    fn bytes_are_utf8_bytes() {
        check(|c| c.bytes, &[("hi there", 8), ("", 0), ("é🎉", 6)]);
    }

    #[test]
    fn code_blocks_are_fenced_blocks_at_line_start() {
        let two = "Why?\n```rust\nlet x: u8 = 300;\n```\nand:\n  ````\nfoo()\n  ````\n";
        check(
            |c| c.code_blocks,
            &[
                (two, 2),
                ("see ```inline``` code", 0),
                ("``\n`", 0),
                ("fix it:\n```\nint main() {", 1), // an unclosed fence still opens a block
            ],
        );
    }

    #[test]
    fn digits_are_ascii_digits() {
        let cases = [
            ("In 2023, 45 of 120 apples (3.5%) were red.", 11),
            ("٣ apples", 0),
        ];
        check(|c| c.digits, &cases);
    }

    #[test]
    fn operators_include_a_minus_only_between_digits_or_spaces() {
        check(
            |c| c.operators,
            &[
                ("x = 3 + 4 * (2 - 1) / 5", 5),
                ("a well-known state-of-the-art model", 0),
                ("- first bullet\n  - nested bullet", 0),
                ("pages 2-3, 10 -4 and x -y", 2),
                ("a^2 % b < c >= d", 5),
                ("ends with 3 -", 0),
            ],
        );
    }

    #[test]
    fn reasoning_cues_match_whole_words_in_any_case() {
        check(
            |c| c.reasoning,
            &[
                ("Explain WHY, step by step.", 3),
                ("Go step-by-step", 1),
                ("How many apples? What if there were 3? Show that n > 2.", 3),
                ("Compare, analyse and analyze; derive, prove, justify.", 6),
                ("thenceforth anywhy explained reasonable", 0),
                ("step, by step; how\tmany", 1),
                ("the reason_code and why2 and éwhy", 0),
                ("«why» — “then”", 2),
            ],
        );
    }

    #[test]
    fn numbered_steps_at_line_start_are_reasoning_cues() {
        check(
            |c| c.reasoning,
            &[
                (
                    "Do this:\n1. read the file\n2) parse it\n  3. print\n10.\n",
                    4,
                ),
                ("pi is 3.14\nversion 1. is out\n2024. was a year\n1.x", 0),
            ],
        );
    }

    #[test]
    fn non_latin_letters_are_letters_outside_the_latin_script() {
        check(
            |c| c.non_latin,
            &[
                ("这是一个测试", 6),
                ("Привет, мир", 9),
                ("Γειά σου", 7),
                ("café naïve Ærøskøbing ｆｕｌｌ", 0),
                ("emoji 🎉🚀, arrows ←, digits ٣", 0),
            ],
        );
    }

    /// Every count, as an array to compare field by field.
    fn all(c: Counts) -> [u64; 6] {
        [
            c.bytes,
            c.code_blocks,
            c.digits,
            c.operators,
            c.reasoning,
            c.non_latin,
        ]
    }

    proptest! {
        #[test]
        fn splitting_text_into_parts_changes_nothing(
            t in text(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let bounds: Vec<usize> = t.char_indices().map(|(i, _)| i).chain([t.len()]).collect();
            let mut at: Vec<usize> = cuts.iter().map(|i| bounds[i.index(bounds.len())]).collect();
            at.extend([0, t.len()]);
            at.sort_unstable();
            let parts: Vec<&str> = at.windows(2).map(|w| &t[w[0]..w[1]]).collect();
            prop_assert_eq!(parts.concat(), t.clone());
            prop_assert_eq!(scan_parts(&parts), scan(&t));
        }

        #[test]
        fn text_after_a_line_break_never_lowers_a_count(a in text(), b in text()) {
            let (before, after) = (all(scan(&a)), all(scan(&format!("{a}\n{b}"))));
            for (b, a) in before.iter().zip(after) {
                prop_assert!(a >= *b, "{before:?} -> {after:?}");
            }
        }
    }
}
