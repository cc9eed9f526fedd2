//! bench-mixed's answer checks (see main.rs, `compare`): a prompt's `check` from the data
//! file, judged by the calibration's own rules. This cargo project does not depend on
//! the `sluice` crate, so it compiles `src/calibrate/check.rs` (standard library only)
//! into itself: "acceptable" here is exactly what it is to `sluice route calibrate`.

use serde_json::Value;

#[allow(dead_code)]
#[path = "../../../../../src/calibrate/check.rs"]
mod rules;

use rules::Check;

/// Whether `text` / the first tool call's name pass `check` (`{"kind", "answers",
/// "labels"}`); None when the check is missing or not understood.
pub fn passes(check: &Value, text: &str, first_tool: Option<&str>) -> Option<bool> {
    let strings = |field: &str| -> Option<Vec<String>> {
        Some(
            check[field]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        )
    };
    let answers = strings("answers")?;
    let check = match check["kind"].as_str()? {
        "number" => Check::Number(answers),
        "contains" => Check::Contains(answers),
        "equals" => Check::Equals(answers),
        "label" => Check::Label {
            labels: strings("labels")?,
            expected: answers.first()?.clone(),
        },
        "tool" => Check::Tool(answers.first()?.clone()),
        _ => return None,
    };
    Some(check.passes_text(text, first_tool))
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
