//! backend/onnx → stop strings: cuts generated text at the first of the request's `stop`s.
//!
//! Sits between the detokeniser and the response stream. Text that might be the start of a
//! stop string is held back until the next delta decides it; on a match, the text before
//! the stop string is released and generation ends (the stop string itself is never sent).

pub struct StopMatcher {
    /// `None` when the request has no (non-empty) stop strings.
    automaton: Option<Automaton>,
    /// Held-back text: exactly the text of `state` (a prefix of some stop string).
    pending: String,
    state: usize,
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
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            automaton: (!stops.is_empty()).then(|| Automaton::new(&stops)),
            pending: String::new(),
            state: ROOT,
        }
    }

    /// Holds back the longest suffix of the text so far that is a prefix of some stop
    /// string; on a match, cuts at the earliest match. "Earliest" is the match that is
    /// complete first (smallest end, then smallest start), which is where generation would
    /// have stopped had the text come one character at a time, so the result does not
    /// depend on how the text was split into pushes.
    ///
    /// Each byte of `text` is fed once to an Aho–Corasick automaton of the stop strings,
    /// so a push costs time linear in `text` (amortised), however long the held-back text
    /// or the stop strings are.
    pub fn push(&mut self, text: &str) -> StopStep {
        let Some(automaton) = &self.automaton else {
            return StopStep::Continue(text.to_owned());
        };
        let start = self.pending.len();
        self.pending.push_str(text);
        for (i, &byte) in text.as_bytes().iter().enumerate() {
            self.state = automaton.next(self.state, byte);
            let len = automaton.matched[self.state];
            if len > 0 {
                // A whole stop string starts with a non-continuation byte, so its start
                // is a character boundary of the text.
                self.pending.truncate(start + i + 1 - len);
                self.state = ROOT;
                return StopStep::Stopped(std::mem::take(&mut self.pending));
            }
        }
        // The state's text is the held-back suffix; it starts like a stop string, so on a
        // character boundary.
        let keep = automaton.depth[self.state];
        let rest = self.pending.split_off(self.pending.len() - keep);
        StopStep::Continue(std::mem::replace(&mut self.pending, rest))
    }

    /// At the end: release what was held back.
    pub fn flush(&mut self) -> String {
        self.state = ROOT;
        std::mem::take(&mut self.pending)
    }
}

const ROOT: usize = 0;

/// An Aho–Corasick automaton over the stop strings' bytes. Node `n` stands for a prefix
/// of some stop string, `depth[n]` bytes long; following the input from the root, the
/// current node is the longest suffix of the input that is such a prefix.
struct Automaton {
    /// Trie edges per node (few: at most one per stop string).
    edges: Vec<Vec<(u8, usize)>>,
    /// The node for the longest proper suffix of this node's text (the failure link).
    fail: Vec<usize>,
    depth: Vec<usize>,
    /// Length of the longest stop string this node's text ends with (0: none).
    matched: Vec<usize>,
}

impl Automaton {
    fn new(stops: &[String]) -> Self {
        let mut a = Automaton {
            edges: vec![Vec::new()],
            fail: vec![ROOT],
            depth: vec![0],
            matched: vec![0],
        };
        for stop in stops {
            let mut node = ROOT;
            for &byte in stop.as_bytes() {
                node = match a.edge(node, byte) {
                    Some(child) => child,
                    None => {
                        let child = a.edges.len();
                        a.edges.push(Vec::new());
                        a.fail.push(ROOT);
                        a.depth.push(a.depth[node] + 1);
                        a.matched.push(0);
                        a.edges[node].push((byte, child));
                        child
                    }
                };
            }
            a.matched[node] = stop.len();
        }
        // Breadth first, so a node's failure link (shallower) is settled before it.
        let mut queue = std::collections::VecDeque::from([ROOT]);
        while let Some(node) = queue.pop_front() {
            for i in 0..a.edges[node].len() {
                let (byte, child) = a.edges[node][i];
                if node != ROOT {
                    a.fail[child] = a.next(a.fail[node], byte);
                }
                if a.matched[child] == 0 {
                    a.matched[child] = a.matched[a.fail[child]];
                }
                queue.push_back(child);
            }
        }
        a
    }

    fn edge(&self, node: usize, byte: u8) -> Option<usize> {
        self.edges[node]
            .iter()
            .find(|&&(b, _)| b == byte)
            .map(|&(_, child)| child)
    }

    /// The node after reading `byte` in `node`.
    fn next(&self, mut node: usize, byte: u8) -> usize {
        loop {
            if let Some(child) = self.edge(node, byte) {
                return child;
            }
            if node == ROOT {
                return ROOT;
            }
            node = self.fail[node];
        }
    }
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

    #[test]
    fn a_long_self_overlapping_stop_is_found_after_a_long_false_start() {
        // "aaa…ab": the run of `a`s is held back while it could still start the stop;
        // one `a` too many is released, and the match starts right after it.
        let stop = format!("{}b", "a".repeat(2000));
        let mut m = StopMatcher::new(vec![stop]);
        for _ in 0..2000 {
            assert_eq!(m.push("a"), StopStep::Continue(String::new()));
        }
        assert_eq!(m.push("a"), StopStep::Continue("a".into()));
        assert_eq!(m.push("b and more"), StopStep::Stopped(String::new()));

        let mut m = matcher(&["aaab"]);
        assert_eq!(m.push("aaaaa"), StopStep::Continue("aa".into()));
        assert_eq!(m.push("c"), StopStep::Continue("aaac".into()));
        assert_eq!(m.flush(), "");
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
            stops in prop::collection::vec("[abé日 ]{0,4}", 0..=4),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            check_against_find(&text, &stops, &cuts)?;
        }

        /// Two letters and longer stops: many overlapping prefixes and false starts.
        #[test]
        fn overlapping_stops_cut_at_the_first_complete_one(
            text in "[ab]{0,60}",
            stops in prop::collection::vec("[ab]{1,7}", 1..=4),
            cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            check_against_find(&text, &stops, &cuts)?;
        }
    }

    /// The matcher, fed `text` cut at `cuts`, emits what a plain search of the whole text
    /// says comes before the first complete stop.
    fn check_against_find(
        text: &str,
        stops: &[String],
        cuts: &[usize],
    ) -> Result<(), TestCaseError> {
        let chunks = chunks_of(text, cuts);
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        // The stop that is complete first: smallest end, then smallest start.
        let first = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()).map(|at| (at + s.len(), at)))
            .min()
            .map(|(_, at)| at);
        let mut m = StopMatcher::new(stops.to_vec());
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
        Ok(())
    }
}
