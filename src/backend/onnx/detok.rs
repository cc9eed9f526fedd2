//! backend/onnx → detokenisation: turns the engine's generated token ids into text deltas.
//!
//! Incremental decoding à la TGI/vLLM: the ids since `prefix_offset` are decoded twice, once
//! up to `read_offset` (text already emitted) and once up to the newest id; the difference is
//! the new text. While the tail decodes to U+FFFD (a multi-byte character split across
//! tokens) nothing is emitted, so a delta never holds half a character. `prefix_offset`
//! follows `read_offset`, so each push decodes a few tokens only. Special tokens are kept
//! (`skip_special_tokens = false`): the tool-call parser downstream needs `<tool_call>`.

use tokenizers::{Error, Tokenizer};

/// Pending tokens after which the tail is no longer waited for: a UTF-8 character has at
/// most 4 bytes and every byte-level token carries at least one, so this only happens when
/// the model emits invalid bytes (or literal U+FFFD characters) and nothing else.
const MAX_PENDING: usize = 16;
/// Ids before `prefix_offset` are dropped once this many have piled up.
const COMPACT_AFTER: usize = 256;

pub struct Detokenizer {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl Detokenizer {
    /// `prompt_tail`: the last few prompt token ids (may be empty) used as decoding context so
    /// leading-space handling matches; they are never emitted.
    pub fn new(prompt_tail: &[u32]) -> Self {
        Self {
            ids: prompt_tail.to_vec(),
            prefix_offset: 0,
            read_offset: prompt_tail.len(),
        }
    }

    /// Add one generated token; returns the newly completed text ("" while a multi-byte
    /// character is still incomplete, i.e. the decoded tail ends in U+FFFD).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, Error> {
        self.ids.push(id);
        let prefix = self.decode(tokenizer, self.read_offset)?;
        let text = self.decode(tokenizer, self.ids.len())?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') {
            self.advance_to(self.ids.len());
            return Ok(new_suffix(&prefix, &text).to_owned());
        }
        if self.ids.len() - self.read_offset < MAX_PENDING {
            return Ok(String::new());
        }
        // Stuck: emit up to the last token boundary that does not cut a character (decoding
        // the two sides apart gives the same text; a cut inside a valid byte sequence would
        // add U+FFFDs), or, if there is none, everything lossily, so the window stays bounded.
        for end in (self.read_offset + 1..self.ids.len()).rev() {
            let head = self.decode(tokenizer, end)?;
            if head.len() <= prefix.len() || !text.starts_with(&head) {
                continue;
            }
            let tail = tokenizer.decode(self.ids.get(end..).unwrap_or_default(), false)?;
            if text.len() == head.len() + tail.len() && text.ends_with(&tail) {
                self.advance_to(end);
                return Ok(new_suffix(&prefix, &head).to_owned());
            }
        }
        self.advance_to(self.ids.len());
        Ok(new_suffix(&prefix, &text).to_owned())
    }

    /// Text still held back at the end (e.g. an incomplete char at EOS), decoded lossily.
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<String, Error> {
        if self.read_offset >= self.ids.len() {
            return Ok(String::new());
        }
        let prefix = self.decode(tokenizer, self.read_offset)?;
        let text = self.decode(tokenizer, self.ids.len())?;
        self.advance_to(self.ids.len());
        Ok(new_suffix(&prefix, &text).to_owned())
    }

    /// Decodes `ids[prefix_offset..end]`.
    fn decode(&self, tokenizer: &Tokenizer, end: usize) -> Result<String, Error> {
        let window = self.ids.get(self.prefix_offset..end).unwrap_or_default();
        tokenizer.decode(window, false)
    }

    /// The ids up to `end` count as emitted; the ones just emitted become the next context.
    fn advance_to(&mut self, end: usize) {
        self.prefix_offset = self.read_offset;
        self.read_offset = end;
        if self.prefix_offset >= COMPACT_AFTER {
            self.ids.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
    }
}

/// The part of `text` after what `prefix` already covered. Normally `prefix` is a prefix of
/// `text`; if not (context that ended inside a character), cut after the longest common
/// prefix, at a character boundary.
fn new_suffix<'a>(prefix: &str, text: &'a str) -> &'a str {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest;
    }
    let mut common = 0;
    for ((i, a), b) in text.char_indices().zip(prefix.chars()) {
        if a != b {
            break;
        }
        common = i + a.len_utf8();
    }
    text.get(common..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn tokenizer() -> &'static Tokenizer {
        static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
        TOKENIZER.get_or_init(|| {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/sluice-tiny/tokenizer.json"
            );
            Tokenizer::from_file(path).expect("bundled tokenizer loads")
        })
    }

    fn ids(text: &str) -> Vec<u32> {
        tokenizer()
            .encode(text, false)
            .expect("encode")
            .get_ids()
            .to_vec()
    }

    /// Pushes `generated` one id at a time after `tail`; returns every chunk plus the flush.
    fn stream(tail: &[u32], generated: &[u32]) -> Vec<String> {
        let tok = tokenizer();
        let mut detok = Detokenizer::new(tail);
        let mut chunks: Vec<String> = generated
            .iter()
            .map(|&id| detok.push(tok, id).expect("push"))
            .collect();
        chunks.push(detok.flush(tok).expect("flush"));
        chunks
    }

    #[test]
    fn multilingual_text_round_trips_without_half_characters() {
        let text = "Héllo wörld! 你好，世界 🦀🚀 naïve café — ok 42 \u{1F469}\u{200D}\u{1F4BB} end";
        let generated = ids(text);
        // The tiny vocab splits these characters into several byte tokens.
        assert!(generated.len() > text.chars().count() / 2);
        let chunks = stream(&[], &generated);
        assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')), "{chunks:?}");
        // Some token boundaries fall inside a character, so some pushes must return "".
        assert!(chunks.iter().any(String::is_empty));
        assert_eq!(chunks.concat(), text);
    }

    #[test]
    fn prompt_context_is_never_emitted() {
        let prompt = ids("The answer is");
        let generated = ids(" 84. 你好");
        let chunks = stream(&prompt[prompt.len().saturating_sub(3)..], &generated);
        assert_eq!(chunks.concat(), " 84. 你好");
    }

    #[test]
    fn special_tokens_come_out_as_their_text() {
        let tok = tokenizer();
        assert_eq!(tok.id_to_token(3).as_deref(), Some("<tool_call>"));
        let mut generated = ids("ok ");
        generated.push(3);
        generated.extend(ids("{\"name\": \"é\"}"));
        generated.push(4);
        let chunks = stream(&[], &generated);
        assert!(chunks.iter().any(|c| c == "<tool_call>"), "{chunks:?}");
        assert_eq!(
            chunks.concat(),
            "ok <tool_call>{\"name\": \"é\"}</tool_call>"
        );
    }

    #[test]
    fn incomplete_character_is_held_then_flushed_lossily() {
        let tok = tokenizer();
        let crab = ids("🦀");
        assert!(
            crab.len() > 1,
            "the test needs a character split over tokens"
        );
        let mut detok = Detokenizer::new(&[]);
        assert_eq!(detok.push(tok, crab[0]).expect("push"), "");
        assert_eq!(detok.flush(tok).expect("flush"), "\u{FFFD}");
        assert_eq!(detok.flush(tok).expect("flush"), "");
    }

    #[test]
    fn long_generations_keep_a_small_window() {
        let tok = tokenizer();
        let text = "abc déf 你好 🦀 ".repeat(200);
        let mut detok = Detokenizer::new(&[]);
        let mut out = String::new();
        for id in ids(&text) {
            out.push_str(&detok.push(tok, id).expect("push"));
            assert!(detok.ids.len() <= COMPACT_AFTER + MAX_PENDING + 1);
            assert!(detok.ids.len() - detok.prefix_offset <= 2 * MAX_PENDING);
        }
        out.push_str(&detok.flush(tok).expect("flush"));
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_forever_are_emitted_lossily_in_bounded_windows() {
        let tok = tokenizer();
        // The first token of a 4-byte character on its own never completes.
        let lead = ids("🦀")[0];
        assert_eq!(tok.decode(&[lead], false).expect("decode"), "\u{FFFD}");
        let generated = vec![lead; 5 * MAX_PENDING];
        let mut detok = Detokenizer::new(&[]);
        let mut chunks = Vec::new();
        for &id in &generated {
            chunks.push(detok.push(tok, id).expect("push"));
            assert!(detok.ids.len() - detok.prefix_offset <= 2 * MAX_PENDING);
        }
        assert!(
            chunks.iter().filter(|c| !c.is_empty()).count() >= 3,
            "{chunks:?}"
        );
        chunks.push(detok.flush(tok).expect("flush"));
        assert_eq!(
            chunks.concat(),
            tok.decode(&generated, false).expect("decode")
        );
    }

    #[test]
    fn literal_replacement_characters_before_a_split_character_survive() {
        for text in [
            "0\u{FFFD}\u{FFFD}𞺥",
            "0\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}𞺥 ok",
        ] {
            assert_eq!(stream(&[], &ids(text)).concat(), text);
        }
    }

    #[test]
    fn unknown_ids_do_not_break_the_stream() {
        let tok = tokenizer();
        let mut detok = Detokenizer::new(&[]);
        assert_eq!(detok.push(tok, u32::MAX).expect("unknown id"), "");
        let a = ids("a");
        assert_eq!(
            detok.push(tok, a[0]).expect("push after an unknown id"),
            "a"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn chunks_concatenate_to_the_full_decode(text in "\\PC{0,40}", cut in 0usize..8) {
            let tok = tokenizer();
            let all = ids(&text);
            let cut = cut.min(all.len());
            let (tail, generated) = all.split_at(cut);
            let chunks = stream(tail, generated);
            let full = tok.decode(generated, false).expect("decode");
            if cut == 0 {
                prop_assert_eq!(chunks.concat(), full.clone());
                if !full.contains('\u{FFFD}') {
                    prop_assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')), "{:?}", chunks);
                }
            }
            // With context: what the prompt tail decodes to, then the chunks, is everything.
            let context = tok.decode(tail, false).expect("decode");
            if !context.contains('\u{FFFD}') {
                prop_assert_eq!(context + &chunks.concat(), tok.decode(&all, false).expect("decode"));
            }
        }

        #[test]
        fn arbitrary_ids_concatenate_to_the_full_decode(
            generated in prop::collection::vec(0u32..1505, 0..40),
        ) {
            let full = tokenizer().decode(&generated, false).expect("decode");
            prop_assert_eq!(stream(&[], &generated).concat(), full);
        }
    }
}
