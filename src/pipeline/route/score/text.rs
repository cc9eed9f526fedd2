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

/// Longest word a [`key`] holds, in letters; longer words are never cues.
const WORD_CAP: u8 = 12;
/// `word_len` of a word that can be no cue (too long, or with a digit, `_` or a
/// non-ASCII letter).
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
    /// The current word's [`key`] (while it is at most `WORD_CAP` ASCII letters).
    word: u64,
    word_len: u8,
    chain: Chain,
    /// Since the last word ended only whitespace or `-` was seen: a multi-word cue
    /// may go on.
    gap_ok: bool,
}

impl TextScan {
    pub fn feed(&mut self, text: &str) {
        let bytes = text.as_bytes();
        self.counts.bytes += bytes.len() as u64;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b.is_ascii_alphabetic() {
                i = self.letters(bytes, i);
            } else if b == b' ' {
                self.space();
                i += 1;
            } else if b.is_ascii() {
                self.ascii(b);
                i += 1;
            } else {
                // `i` is always on a char boundary: it moves by whole chars.
                let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) else {
                    break;
                };
                self.wide(c);
                i += c.len_utf8();
            }
        }
    }

    /// Most bytes: the run of ASCII letters from `bytes[i]` (it may go on with a word
    /// the previous part began) only extends the word's key. Returns where it ends.
    fn letters(&mut self, bytes: &[u8], mut i: usize) -> usize {
        let (mut key, mut len) = (self.word, usize::from(self.word_len));
        while let Some(&b) = bytes.get(i).filter(|b| b.is_ascii_alphabetic()) {
            key = push_key(key, b);
            len += 1;
            i += 1;
        }
        self.dash = false;
        self.prev_operand = false;
        self.lead = Lead::Other;
        // An unmatchable word stays so: its length is already past the cap.
        if len > usize::from(WORD_CAP) {
            self.word_len = UNMATCHABLE;
        } else {
            self.word = key;
            self.word_len = len as u8;
        }
        i
    }

    /// A space, the commonest byte after letters: [`TextScan::ascii`]'s work for it,
    /// on a short path.
    fn space(&mut self) {
        if self.dash {
            self.counts.operators += 1;
            self.dash = false;
        }
        self.end_word();
        self.prev_operand = true;
        self.lead = match self.lead {
            Lead::Marker => {
                self.counts.reasoning += 1;
                Lead::Other
            }
            Lead::Indent => Lead::Indent,
            _ => Lead::Other,
        };
    }

    /// Any ASCII byte but a letter.
    fn ascii(&mut self, b: u8) {
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

    /// The current word holds a digit, `_` or a non-ASCII letter: it is no cue.
    fn spoil_word(&mut self) {
        self.word_len = UNMATCHABLE;
    }

    fn end_word(&mut self) {
        if self.word_len == 0 {
            return;
        }
        let word = if self.word_len == UNMATCHABLE {
            Word::Other
        } else {
            Word::of(self.word)
        };
        let chain = if self.gap_ok { self.chain } else { Chain::None };
        self.chain = match (chain, word) {
            (_, Word::Cue) => {
                self.counts.reasoning += 1;
                Chain::None
            }
            (Chain::Step, Word::By) => Chain::StepBy,
            (Chain::StepBy, Word::Step) => {
                self.counts.reasoning += 1;
                Chain::Step
            }
            (Chain::How, Word::Many) | (Chain::Show, Word::That) | (Chain::What, Word::If) => {
                self.counts.reasoning += 1;
                Chain::None
            }
            (_, Word::Step) => Chain::Step,
            (_, Word::How) => Chain::How,
            (_, Word::Show) => Chain::Show,
            (_, Word::What) => Chain::What,
            _ => Chain::None,
        };
        self.word = 0;
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

/// A word, as far as reasoning cues care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    Other,
    /// A reasoning cue on its own.
    Cue,
    Step,
    By,
    How,
    /// "many" or "much".
    Many,
    Show,
    That,
    What,
    If,
}

/// Every word that matters, lowercase (multi-word cues are chained in `end_word`).
const WORDS: [(&[u8], Word); 29] = [
    (b"explain", Word::Cue),
    (b"why", Word::Cue),
    (b"prove", Word::Cue),
    (b"proof", Word::Cue),
    (b"derive", Word::Cue),
    (b"compare", Word::Cue),
    (b"analyze", Word::Cue),
    (b"analyse", Word::Cue),
    (b"reason", Word::Cue),
    (b"justify", Word::Cue),
    (b"calculate", Word::Cue),
    (b"compute", Word::Cue),
    (b"solve", Word::Cue),
    (b"evaluate", Word::Cue),
    (b"first", Word::Cue),
    (b"then", Word::Cue),
    (b"finally", Word::Cue),
    (b"therefore", Word::Cue),
    (b"hence", Word::Cue),
    (b"thus", Word::Cue),
    (b"step", Word::Step),
    (b"by", Word::By),
    (b"how", Word::How),
    (b"many", Word::Many),
    (b"much", Word::Many),
    (b"show", Word::Show),
    (b"that", Word::That),
    (b"what", Word::What),
    (b"if", Word::If),
];

/// Append an ASCII letter to a word key: 5 bits a letter (`a`/`A` = 1 … `z`/`Z` = 26),
/// so case folds for free and no two words of at most `WORD_CAP` letters share a key.
const fn push_key(key: u64, letter: u8) -> u64 {
    key << 5 | (letter & 0x1F) as u64
}

const fn key(word: &[u8]) -> u64 {
    let (mut k, mut i) = (0, 0);
    while i < word.len() {
        k = push_key(k, word[i]);
        i += 1;
    }
    k
}

/// Open-addressing table of [`WORDS`] by key; slot key 0 (the empty word) is free.
const TABLE_BITS: u32 = 7;
const TABLE: [(u64, Word); 1 << TABLE_BITS] = {
    let mut table = [(0, Word::Other); 1 << TABLE_BITS];
    let mut w = 0;
    while w < WORDS.len() {
        let k = key(WORDS[w].0);
        let mut slot = slot_of(k);
        while table[slot].0 != 0 {
            slot = (slot + 1) % table.len();
        }
        table[slot] = (k, WORDS[w].1);
        w += 1;
    }
    table
};

// Room to spare keeps probes short and guarantees a free slot ends every lookup.
const _: () = assert!(WORDS.len() < TABLE.len() / 2);

const fn slot_of(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - TABLE_BITS)) as usize
}

impl Word {
    /// Look a word key up: one probe for most words.
    fn of(key: u64) -> Word {
        let mut slot = slot_of(key);
        for _ in 0..TABLE.len() {
            match TABLE.get(slot) {
                Some(&(k, word)) if k == key => return word,
                Some(&(0, _)) | None => return Word::Other,
                Some(_) => slot = (slot + 1) % TABLE.len(),
            }
        }
        Word::Other
    }
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

    #[test]
    fn every_listed_word_and_no_other_is_found() {
        for (word, kind) in WORDS {
            assert_eq!(
                Word::of(key(word)),
                kind,
                "{:?}",
                String::from_utf8_lossy(word)
            );
        }
        for other in [
            &b"the"[..],
            b"explains",
            b"whys",
            b"thenc",
            b"stepby",
            b"zzzzzzzzzzzz",
        ] {
            assert_eq!(Word::of(key(other)), Word::Other);
        }
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
