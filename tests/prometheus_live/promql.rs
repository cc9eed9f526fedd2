//! Just enough PromQL lexing for tests/prometheus_live.rs (no PromQL parser among the
//! dependencies): the vector selectors of an expression, its parts that must return data,
//! and Grafana panel expressions turned into plain PromQL.

use serde_json::Value;

/// Skips a string literal starting at `i` (a quote); returns the index after it.
fn skip_string(s: &[u8], i: usize) -> usize {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() && s[j] != quote {
        j += if s[j] == b'\\' { 2 } else { 1 };
    }
    j + 1
}

/// The vector selectors of `expr` (metric name and `{...}` matchers, no range): the
/// identifiers outside strings and braces that name a sluice metric (or `up`) and are
/// not functions.
pub fn selectors(expr: &str) -> Vec<String> {
    let s = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let (mut out, mut i) = (Vec::new(), 0);
    while i < s.len() {
        match s[i] {
            b'"' | b'\'' | b'`' => i = skip_string(s, i),
            b'{' => i += expr[i..].find('}').unwrap() + 1,
            c if word(c) => {
                let start = i;
                while i < s.len() && word(s[i]) {
                    i += 1;
                }
                let name = &expr[start..i];
                let mut j = i;
                while j < s.len() && s[j] == b' ' {
                    j += 1;
                }
                let is_metric =
                    name.starts_with("sluice_") || name.starts_with("sluice:") || name == "up";
                if is_metric && s.get(j) != Some(&b'(') {
                    let mut selector = name.to_owned();
                    if s.get(j) == Some(&b'{') {
                        let end = j + expr[j..].find('}').unwrap() + 1;
                        selector.push_str(&expr[j..end]);
                        i = end;
                    }
                    out.push(selector);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The parts of `expr` that must return data: split at top-level `or`/`and`/`unless`,
/// each part without a top-level comparison (`> 0.5`), `absent(...)` parts left out.
pub fn parts_with_data(expr: &str) -> Vec<String> {
    let s = expr.as_bytes();
    let (mut parts, mut depth, mut start, mut cut, mut i) = (Vec::new(), 0i32, 0, None, 0);
    let mut push = |from: usize, to: usize, cut: Option<usize>| {
        let mut part = expr[from..cut.unwrap_or(to)].trim();
        // The right side of `x and on (job) y` starts with its matching modifiers.
        for modifier in ["on", "ignoring", "group_left", "group_right"] {
            let Some(rest) = part.strip_prefix(modifier).map(str::trim_start) else {
                continue;
            };
            if rest.starts_with('(') {
                part = rest[rest.find(')').unwrap() + 1..].trim_start();
            } else if modifier.starts_with("group_") {
                part = rest;
            }
        }
        if !part.starts_with("absent(") {
            parts.push(part.to_owned());
        }
    };
    while i < s.len() {
        let c = s[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i = skip_string(s, i);
                continue;
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'>' | b'<' | b'=' | b'!'
                if depth == 0 && cut.is_none() && (c != b'!' || s.get(i + 1) == Some(&b'=')) =>
            {
                cut = Some(i);
            }
            _ if depth == 0 => {
                let prev_ok =
                    i == 0 || !(s[i - 1].is_ascii_alphanumeric() || b"_:".contains(&s[i - 1]));
                let kw = ["or", "and", "unless"].into_iter().find(|k| {
                    expr[i..].starts_with(k)
                        && s.get(i + k.len())
                            .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                });
                if let (true, Some(kw)) = (prev_ok, kw) {
                    push(start, i, cut);
                    (start, cut) = (i + kw.len(), None);
                    i += kw.len();
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    push(start, s.len(), cut);
    parts
}

/// A Grafana panel expression as Prometheus would get it: `$model` and other variables in
/// label values match anything, `$__rate_interval`/`$__interval`/`$__range` are 1m.
pub fn from_grafana(expr: &str) -> String {
    let mut e = expr.to_owned();
    for v in [
        "$__rate_interval",
        "${__rate_interval}",
        "$__interval",
        "${__interval}",
        "$__range",
        "${__range}",
    ] {
        e = e.replace(v, "1m");
    }
    let (s, mut out, mut i) = (e.as_bytes(), String::new(), 0);
    while i < s.len() {
        if s[i] == b'"' {
            let end = skip_string(s, i);
            let literal = &e[i..end];
            if literal.contains('$') || literal.contains("[[") {
                if out.ends_with('=') && !out.ends_with("!=") && !out.ends_with("==") {
                    out.push('~');
                }
                out.push_str("\".*\"");
            } else {
                out.push_str(literal);
            }
            i = end;
        } else {
            out.push(s[i] as char);
            i += 1;
        }
    }
    assert!(!out.contains('$'), "unknown Grafana variable in `{expr}`");
    out
}

/// Expressions of the dashboard's panels (rows included) and its `label_values`
/// variables as `count by (label) (selector)`.
pub fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                    out.push((format!("panel {}", panel["title"]), from_grafana(expr)));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or_default();
        if let Some(args) = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
        {
            let (selector, label) = args.rsplit_once(',').unwrap_or_else(|| {
                panic!(
                    "variable {}: label_values without a metric matches every exporter's labels",
                    var["name"]
                )
            });
            out.push((
                format!("variable {}", var["name"]),
                format!("count by ({}) ({})", label.trim(), from_grafana(selector)),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_the_metrics_an_expression_reads() {
        let expr = r#"histogram_quantile(0.95, sum by (job, le) (rate(sluice_x_bucket{route="/v1", stream="false"}[5m]))) > 0.5 or up{job="sluice"} == 0 or absent(up) or sluice:rec:rate5m"#;
        assert_eq!(
            selectors(expr),
            vec![
                r#"sluice_x_bucket{route="/v1", stream="false"}"#,
                r#"up{job="sluice"}"#,
                "up",
                "sluice:rec:rate5m"
            ]
        );
        assert_eq!(
            selectors(r#"sum(rate(other_total{a="sluice_y"}[1m]))"#),
            Vec::<String>::new()
        );
    }

    #[test]
    fn parts_drop_thresholds_and_absent() {
        let expr = r#"sum by (job) (rate(a{s=~"5..", s!="503"}[5m])) / (b > 0) > 0.05 or up{job="sluice"} == 0 or absent(up{job="sluice"})"#;
        assert_eq!(
            parts_with_data(expr),
            vec![
                r#"sum by (job) (rate(a{s=~"5..", s!="503"}[5m])) / (b > 0)"#,
                r#"up{job="sluice"}"#
            ]
        );
        assert_eq!(
            parts_with_data("x and on (job) y unless ignoring (a) group_left (b) z >= bool 1"),
            vec!["x", "y", "z"]
        );
    }

    #[test]
    fn grafana_variables_become_promql() {
        assert_eq!(
            from_grafana(r#"rate(a{model=~"$model", b="${tier}", c="x"}[$__rate_interval])"#),
            r#"rate(a{model=~".*", b=~".*", c="x"}[1m])"#
        );
    }
}
