//! backend/onnx → stop strings: cuts generated text at the first of the request's `stop`s.
//!
//! Sits between the detokeniser and the response stream. Text that might be the start of a
//! stop string is held back until the next delta decides it; on a match, the text before
//! the stop string is released and generation ends (the stop string itself is never sent).

pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What may be sent after one `push`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopStep {
    /// Text safe to emit now; generation goes on.
    Continue(String),
    /// The text before the stop string; generation must end.
    Stopped(String),
}

impl StopMatcher {
    /// Empty strings are ignored.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    /// Holds back the longest suffix of the pending text that is a prefix of some stop
    /// string; on a match, cuts at the earliest match. "Earliest" is the match that is
    /// complete first (smallest end, then smallest start), which is where generation would
    /// have stopped had the text come one character at a time, so the result does not
    /// depend on how the text was split into pushes.
    pub fn push(&mut self, text: &str) -> StopStep {
        if self.stops.is_empty() {
            return StopStep::Continue(text.to_owned());
        }
        self.pending.push_str(text);
        let pending = &self.pending;
        let earliest = self
            .stops
            .iter()
            .filter_map(|s| pending.find(s.as_str()).map(|at| (at + s.len(), at)))
            .min();
        if let Some((_, at)) = earliest {
            self.pending.truncate(at);
            return StopStep::Stopped(std::mem::take(&mut self.pending));
        }
        let keep = self
            .stops
            .iter()
            .map(|s| held_back(&self.pending, s))
            .max()
            .unwrap_or(0);
        let rest = self.pending.split_off(self.pending.len() - keep);
        StopStep::Continue(std::mem::replace(&mut self.pending, rest))
    }

    /// At the end: release what was held back.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest proper prefix of `stop` that `text` ends with (always a character
/// boundary of `text`, since the prefix is itself whole characters).
fn held_back(text: &str, stop: &str) -> usize {
    stop.char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .filter(|&i| text.ends_with(&stop[..i]))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    /// Feeds the chunks; returns everything emitted and whether generation was stopped.
    fn run(m: &mut StopMatcher, chunks: &[&str]) -> (String, bool) {
        let mut out = String::new();
        for chunk in chunks {
            match m.push(chunk) {
                StopStep::Continue(text) => out.push_str(&text),
                StopStep::Stopped(text) => {
                    out.push_str(&text);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn no_stops_passes_everything_through() {
        let mut m = matcher(&["", ""]);
        assert_eq!(m.push("abc"), StopStep::Continue("abc".into()));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn stop_inside_one_chunk_cuts_before_it() {
        let mut m = matcher(&["\n\n"]);
        assert_eq!(m.push("one\n\ntwo"), StopStep::Stopped("one".into()));
    }

    #[test]
    fn stop_spanning_many_pushes_is_held_then_dropped() {
        let mut m = matcher(&["END"]);
        assert_eq!(m.push("hello E"), StopStep::Continue("hello ".into()));
        assert_eq!(m.push("N"), StopStep::Continue(String::new()));
        assert_eq!(m.push("D and more"), StopStep::Stopped(String::new()));
    }

    #[test]
    fn false_start_is_released() {
        let mut m = matcher(&["END"]);
        assert_eq!(m.push("EN"), StopStep::Continue(String::new()));
        assert_eq!(m.push("ough"), StopStep::Continue("ENough".into()));
        assert_eq!(m.push("EN"), StopStep::Continue(String::new()));
        assert_eq!(m.flush(), "EN");
    }

    #[test]
    fn earliest_occurrence_wins_among_overlapping_stops() {
        assert_eq!(
            run(&mut matcher(&["cde", "bcdx", "ab"]), &["xa", "bcde"]),
            ("x".into(), true)
        );
        assert_eq!(
            run(&mut matcher(&["bcdx", "cd"]), &["ab", "c", "dx"]),
            ("ab".into(), true)
        );
        // "aab" held as "aa…": the real match starts one byte later.
        assert_eq!(
            run(&mut matcher(&["aab"]), &["a", "a", "a", "b!"]),
            ("a".into(), true)
        );
        // Nested: "bc" is complete before "abcd" is, whatever the chunking.
        assert_eq!(
            run(&mut matcher(&["abcd", "bc"]), &["abcd"]),
            ("a".into(), true)
        );
        assert_eq!(
            run(&mut matcher(&["abcd", "bc"]), &["a", "b", "c"]),
            ("a".into(), true)
        );
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let mut m = matcher(&["日本語です"]);
        assert_eq!(m.push("これは日本"), StopStep::Continue("これは".into()));
        assert_eq!(m.push("人"), StopStep::Continue("日本人".into()));
        // A stop sharing a leading byte with the text is not a prefix match.
        let mut m = matcher(&["é!"]);
        assert_eq!(m.push("caf\u{e8}"), StopStep::Continue("caf\u{e8}".into()));
        assert_eq!(m.push("caf\u{e9}"), StopStep::Continue("caf".into()));
        assert_eq!(m.push("!"), StopStep::Stopped(String::new()));
    }

    /// Splits `text` at the given (rounded-down) char positions.
    fn chunks_of(text: &str, cuts: &[usize]) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([chars.len()]) {
            out.push(chars[start..cut].iter().collect());
            start = cut;
        }
        out
    }

    proptest! {
        #[test]
        fn emitted_text_is_everything_before_the_first_stop(
            text in "[abé日 ]{0,40}",
            stops in prop::collection::vec("[abé日 ]{0,4}", 0..4),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let chunks = chunks_of(&text, &cuts);
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            // The stop that is complete first: smallest end, then smallest start.
            let first = stops
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| text.find(s.as_str()).map(|at| (at + s.len(), at)))
                .min()
                .map(|(_, at)| at);
            let mut m = StopMatcher::new(stops.clone());
            let (out, stopped) = run(&mut m, &refs);
            match first {
                Some(at) => {
                    prop_assert!(stopped);
                    prop_assert_eq!(out, &text[..at]);
                }
                None => {
                    prop_assert!(!stopped);
                    prop_assert_eq!(out, text);
                }
            }
        }
    }
}
