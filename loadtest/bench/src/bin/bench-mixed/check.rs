//! bench-mixed's answer checks (see main.rs, `compare`): a prompt's `check` from the data
//! file, judged with the rules of `sluice route calibrate` (`src/calibrate/data.rs`,
//! `Check::passes`, itself `tools/convert/report_smollm2.py`'s `check()`), so "acceptable"
//! here means what it means to the calibration. A copy, because this cargo project does not
//! depend on the `sluice` crate: keep the two in step. Text checks compare after
//! lower-casing, `’` → `'`, removing thousands commas and collapsing whitespace.

use serde_json::Value;

/// Whether `text` / `tool_calls` (names first) pass `check` (`{"kind", "answers",
/// "labels"}`); None when the check is missing or not understood.
pub fn passes(check: &Value, text: &str, first_tool: Option<&str>) -> Option<bool> {
    let answers: Vec<&str> = check["answers"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let norm: Vec<char> = normalize(text).chars().collect();
    Some(match check["kind"].as_str()? {
        "number" => answers.iter().any(|a| {
            let needle: Vec<char> = normalize(&a.replace(',', "")).chars().collect();
            occurrences(&norm, &needle).into_iter().any(|(start, end)| {
                let before = start.checked_sub(1).map(|i| norm[i]);
                let after = norm.get(end).copied();
                let decimals =
                    after == Some('.') && norm.get(end + 1).is_some_and(char::is_ascii_digit);
                !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
                    && !after.is_some_and(|c| c.is_ascii_digit())
                    && !decimals
            })
        }),
        "contains" => answers.iter().any(|a| {
            let needle: Vec<char> = normalize(a).chars().collect();
            occurrences(&norm, &needle).into_iter().any(|(start, end)| {
                let before = start.checked_sub(1).map(|i| norm[i]);
                !before.is_some_and(is_word) && !norm.get(end).copied().is_some_and(is_word)
            })
        }),
        "label" => {
            let expected = normalize(answers.first()?);
            let first = check["labels"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|label| {
                    let label = normalize(label);
                    first_label(&norm, &label.chars().collect::<Vec<_>>()).map(|at| (at, label))
                })
                .min();
            first.is_some_and(|(_, label)| label == expected)
        }
        "equals" => {
            let got = text.trim().to_lowercase();
            answers.iter().any(|a| a.trim().to_lowercase() == got)
        }
        "tool" => first_tool.is_some_and(|n| Some(&n) == answers.first()),
        _ => return None,
    })
}

/// Lower case, `’` → `'`, thousands commas removed, whitespace collapsed.
fn normalize(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_calibration_rules() {
        let number = json!({"kind": "number", "answers": ["1063"]});
        assert_eq!(passes(&number, "It is 1,063 in total.", None), Some(true));
        assert_eq!(passes(&number, "It is 10630.", None), Some(false));
        assert_eq!(passes(&number, "It is 1063.5", None), Some(false));
        let contains = json!({"kind": "contains", "answers": ["Paris"]});
        assert_eq!(
            passes(&contains, "The capital is  paris.", None),
            Some(true)
        );
        assert_eq!(passes(&contains, "Parisian food", None), Some(false));
        let label =
            json!({"kind": "label", "answers": ["positive"], "labels": ["positive", "negative"]});
        assert_eq!(passes(&label, "Positives, not negative", None), Some(true));
        assert_eq!(passes(&label, "negative, not positive", None), Some(false));
        let tool = json!({"kind": "tool", "answers": ["calculator"]});
        assert_eq!(passes(&tool, "", Some("calculator")), Some(true));
        assert_eq!(passes(&tool, "calculator", None), Some(false));
        assert_eq!(
            passes(&json!({"kind": "vibes", "answers": []}), "", None),
            None
        );
        assert_eq!(passes(&Value::Null, "", None), None);
    }
}
