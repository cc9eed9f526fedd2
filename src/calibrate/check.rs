//! The answer checks of `sluice route calibrate`: how a prompt's expected answer is
//! judged, with the same rules as `tools/convert/report_smollm2.py`'s `check()`, so a
//! task scores the same in both. Standard library only: `loadtest/mixed.sh`'s
//! bench-mixed includes this very file (`#[path]`), so its "acceptable" column judges
//! answers exactly as the calibration does.

/// How to tell whether an answer is right. Text checks compare after lower-casing,
/// `’` → `'`, removing thousands commas (`1,063` → `1063`) and collapsing whitespace.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// One of the numbers occurs as a whole number (not part of a longer one).
    Number(Vec<String>),
    /// One of the answers occurs as a whole word or phrase.
    Contains(Vec<String>),
    /// Of `labels`, the first to occur (word boundary, optional plural `s`) is `expected`.
    Label {
        labels: Vec<String>,
        expected: String,
    },
    /// The trimmed answer equals one of the answers, ignoring case.
    Equals(Vec<String>),
    /// The answer's first tool call calls this tool.
    Tool(String),
}

impl Check {
    /// Whether an answer with this text and first tool call (its name) is right.
    pub fn passes_text(&self, answer: &str, first_tool: Option<&str>) -> bool {
        let text: Vec<char> = normalize(answer).chars().collect();
        match self {
            Check::Number(answers) => answers.iter().any(|a| {
                let needle: Vec<char> = normalize(&a.replace(',', "")).chars().collect();
                occurrences(&text, &needle).into_iter().any(|(start, end)| {
                    let before = start.checked_sub(1).map(|i| text[i]);
                    let after = text.get(end).copied();
                    let decimals =
                        after == Some('.') && text.get(end + 1).is_some_and(char::is_ascii_digit);
                    !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
                        && !after.is_some_and(|c| c.is_ascii_digit())
                        && !decimals
                })
            }),
            Check::Contains(answers) => answers.iter().any(|a| {
                let needle: Vec<char> = normalize(a).chars().collect();
                occurrences(&text, &needle).into_iter().any(|(start, end)| {
                    let before = start.checked_sub(1).map(|i| text[i]);
                    let after = text.get(end).copied();
                    !before.is_some_and(is_word) && !after.is_some_and(is_word)
                })
            }),
            Check::Label { labels, expected } => {
                let first = labels
                    .iter()
                    .filter_map(|label| {
                        let label = normalize(label);
                        first_label(&text, &label.chars().collect::<Vec<_>>()).map(|at| (at, label))
                    })
                    .min();
                first.is_some_and(|(_, label)| label == normalize(expected))
            }
            Check::Equals(answers) => {
                let got = answer.trim().to_lowercase();
                answers.iter().any(|a| a.trim().to_lowercase() == got)
            }
            Check::Tool(name) => first_tool == Some(name.as_str()),
        }
    }
}

/// Lower case, `’` → `'`, thousands commas removed, whitespace collapsed.
pub fn normalize(text: &str) -> String {
    let chars: Vec<char> = text
        .to_lowercase()
        .replace('\u{2019}', "'")
        .chars()
        .collect();
    let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let kept: String = chars
        .iter()
        .enumerate()
        .filter(|&(i, &c)| {
            let thousands = c == ','
                && i > 0
                && digit(i - 1)
                && (1..=3).all(|k| digit(i + k))
                && !chars.get(i + 4).is_some_and(|&c| is_word(c));
            !thousands
        })
        .map(|(_, &c)| c)
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Python's `\w`: letters, digits and `_`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every (start, end) where `needle` occurs in `text`, overlapping ones included.
fn occurrences(text: &[char], needle: &[char]) -> Vec<(usize, usize)> {
    let n = needle.len();
    if n == 0 || n > text.len() {
        return Vec::new();
    }
    (0..=text.len() - n)
        .filter(|&i| text[i..i + n] == *needle)
        .map(|i| (i, i + n))
        .collect()
}

/// Where `\blabel(s)?\b` first matches.
fn first_label(text: &[char], label: &[char]) -> Option<usize> {
    let boundary = |i: usize| {
        let before = i > 0 && is_word(text[i - 1]);
        let after = text.get(i).is_some_and(|&c| is_word(c));
        before != after
    };
    occurrences(text, label)
        .into_iter()
        .find(|&(start, end)| {
            boundary(start) && (boundary(end) || (text.get(end) == Some(&'s') && boundary(end + 1)))
        })
        .map(|(start, _)| start)
}
