//! Templates in workflow steps (minijinja): what a step's prompt, report, chart title,
//! `when` condition and tool arguments are rendered from. The context is `inputs`,
//! `steps.NAME` (`output`, `status`, and for steps that made an artefact `artifact`, its
//! text, and `url`, where to download it), `run` (`id`, `workflow`) and `now` (ISO 8601
//! in the workflows' zone). Undefined names are errors, so a typo fails the step with
//! its name instead of rendering an empty string.
//!
//! Tool arguments keep JSON types: an argument that is one `{{ expression }}` and nothing
//! else becomes the expression's value (a number stays a number, a list a list); other
//! strings with tags render to text. SQL `params` are bound from these values.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// The environment every workflow template renders in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            minijinja::AutoEscape::Html
        } else {
            minijinja::AutoEscape::None
        }
    });
    env.add_filter("thousands", thousands);
    env
}

/// `{{ 12345.5 | thousands }}` → `12,345.50`; integers stay without decimals.
fn thousands(value: minijinja::Value) -> Result<String, minijinja::Error> {
    let Ok(n) = f64::try_from(value.clone()) else {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("thousands: {value} is not a number"),
        ));
    };
    let text = if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    };
    let (sign, rest) = text
        .strip_prefix('-')
        .map_or(("", text.as_str()), |r| ("-", r));
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    Ok(match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    })
}

/// Render `text` against `ctx`. `html` turns on HTML escaping of values.
pub fn render(
    env: &Environment<'_>,
    text: &str,
    ctx: &Value,
    html: bool,
) -> Result<String, String> {
    let name = if html { "step.html" } else { "step.txt" };
    let mut env = env.clone();
    env.add_template_owned(name, text.to_owned())
        .map_err(|e| describe(&e))?;
    let template = env.get_template(name).map_err(|e| describe(&e))?;
    template
        .render(minijinja::Value::from(minijinja::value::Serde(ctx)))
        .map_err(|e| describe(&e))
}

/// Evaluate one expression (`steps.fetch.output.rows`) to a JSON value.
pub fn evaluate(env: &Environment<'_>, expr: &str, ctx: &Value) -> Result<Value, String> {
    let compiled = env.compile_expression(expr).map_err(|e| describe(&e))?;
    let value = compiled
        .eval(minijinja::Value::from(minijinja::value::Serde(ctx)))
        .map_err(|e| describe(&e))?;
    if value.is_undefined() {
        return Err(format!("`{expr}` is undefined"));
    }
    serde_json::to_value(&value).map_err(|e| format!("`{expr}`: {e}"))
}

/// Render every template inside `value` (tool arguments), keeping JSON types.
pub fn render_value(env: &Environment<'_>, value: &Value, ctx: &Value) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => {
            if let Some(expr) = sole_expression(s) {
                evaluate(env, expr, ctx)?
            } else if s.contains("{{") || s.contains("{%") {
                Value::String(render(env, s, ctx, false)?)
            } else {
                value.clone()
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(env, v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(env, v, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// `"{{ expr }}"` (blanks around allowed, no other tags) → `expr`.
fn sole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

/// Whether a rendered `when` condition says "run".
pub fn truthy(rendered: &str) -> bool {
    !matches!(
        rendered.trim().to_ascii_lowercase().as_str(),
        "" | "false" | "0" | "none" | "null" | "no"
    )
}

fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "inputs": {"start": "2026-11-24", "days": 7, "name": "<b>x</b>"},
            "steps": {"fetch": {"output": {"rows": [{"day": "a", "n": 1}, {"day": "b", "n": 2}]}, "status": "succeeded"}},
        })
    }

    #[test]
    fn a_sole_expression_keeps_its_json_type() {
        let env = environment();
        let args = json!({
            "query": "SELECT ? , ?",
            "params": ["{{ inputs.start }}", "{{ inputs.days }}", " {{ steps.fetch.output.rows | length }} "],
            "label": "from {{ inputs.start }} for {{ inputs.days }} days",
        });
        let out = render_value(&env, &args, &ctx()).unwrap();
        assert_eq!(
            out,
            json!({
                "query": "SELECT ? , ?",
                "params": ["2026-11-24", 7, 2],
                "label": "from 2026-11-24 for 7 days",
            })
        );
    }

    #[test]
    fn undefined_names_are_errors_that_name_them() {
        let env = environment();
        let err = render(&env, "{{ steps.fetchh.output }}", &ctx(), false).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        let err = evaluate(&env, "inputs.nope", &ctx()).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn html_escapes_values_markdown_does_not() {
        let env = environment();
        assert_eq!(
            render(&env, "{{ inputs.name }}", &ctx(), true).unwrap(),
            "&lt;b&gt;x&lt;&#x2f;b&gt;"
        );
        assert_eq!(
            render(&env, "{{ inputs.name }}", &ctx(), false).unwrap(),
            "<b>x</b>"
        );
    }

    #[test]
    fn thousands_groups_digits() {
        let env = environment();
        let out = render(
            &env,
            "{{ 1234567 | thousands }} {{ 1234.5 | thousands }} {{ -999 | thousands }}",
            &ctx(),
            false,
        )
        .unwrap();
        assert_eq!(out, "1,234,567 1,234.50 -999");
    }

    #[test]
    fn conditions() {
        for no in ["", " false", "0", "None", "null"] {
            assert!(!truthy(no), "{no:?}");
        }
        for yes in ["true", "1", "gpt", "yes"] {
            assert!(truthy(yes), "{yes:?}");
        }
    }
}
