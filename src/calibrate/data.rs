//! Calibration data, read before and written after `sluice route calibrate` runs a
//! model's tiers: the prompt file (one chat request per line, optionally with a check
//! of its answer, parsed here and judged by [`super::check`]), and the label file (per prompt: features, and per tier whether the answer was
//! acceptable, what it cost, and whether it equals the top tier's).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::check::Check;

/// Number of complexity features (`crate::config::Weights::NAMES`).
pub const N: usize = crate::config::Weights::NAMES.len();

/// One line of the prompt file.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub id: String,
    /// Where the prompt comes from (a task file, a log), for the report.
    pub source: Option<String>,
    pub category: Option<String>,
    /// An OpenAI chat-completions body without `model` (the runner sets it per tier).
    pub request: Map<String, Value>,
    /// How to tell a right answer; without one, only the top tier's answer is right.
    pub check: Option<Check>,
}

/// What a tier answered: its text and its tool calls (name, arguments JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    pub tool_calls: Vec<(String, String)>,
}

/// One line of the label file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labelled {
    pub id: String,
    /// The request's complexity features, in `Weights::NAMES` order.
    pub features: [f64; N],
    /// The model's tiers, cheapest first.
    pub tiers: Vec<String>,
    /// Per tier: the answer is acceptable (see [`label`]).
    pub ok: Vec<bool>,
    /// Per tier: seconds the request took.
    pub cost: Vec<f64>,
    /// Per tier: completion tokens.
    pub tokens: Vec<u64>,
    /// Per tier: the answer equals the top tier's (text and tool calls).
    pub same_as_top: Vec<bool>,
}

/// A data file that cannot be used; line errors name the line and the field.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{name}:{line}: {}{message}", field_prefix(.field))]
    Line {
        name: String,
        line: usize,
        field: String,
        message: String,
    },
    #[error("{name}: no {what} in the file")]
    Empty { name: String, what: &'static str },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// Read a prompt file (JSON lines; blank lines are skipped).
pub fn read(path: &Path) -> Result<Vec<Prompt>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parse prompt lines; `name` is the file name used in error messages.
pub fn parse(text: &str, name: &str) -> Result<Vec<Prompt>, DataError> {
    let mut prompts = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, value) in json_lines(text, name)? {
        let err = |field: &str, message: String| DataError::Line {
            name: name.to_owned(),
            line,
            field: field.to_owned(),
            message,
        };
        let prompt = prompt(value).map_err(|(field, message)| err(&field, message))?;
        if let Some(first) = seen.insert(prompt.id.clone(), line) {
            return Err(err(
                "id",
                format!("{:?} is also the id on line {first}", prompt.id),
            ));
        }
        prompts.push(prompt);
    }
    if prompts.is_empty() {
        return Err(DataError::Empty {
            name: name.to_owned(),
            what: "prompts",
        });
    }
    Ok(prompts)
}

/// The non-blank lines of a JSON-lines text, parsed, with their 1-based numbers.
fn json_lines(text: &str, name: &str) -> Result<Vec<(usize, Value)>, DataError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(raw).map_err(|e| DataError::Line {
            name: name.to_owned(),
            line: i + 1,
            field: String::new(),
            message: format!("not valid JSON: {}", json_message(&e)),
        })?;
        out.push((i + 1, value));
    }
    Ok(out)
}

/// serde_json's message with the column, without its "line 1" (the file's line is named).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} (column {})", e.column()),
        None => text,
    }
}

type FieldError = (String, String);

fn bad<T>(field: &str, message: impl Into<String>) -> Result<T, FieldError> {
    Err((field.to_owned(), message.into()))
}

fn prompt(value: Value) -> Result<Prompt, FieldError> {
    let Value::Object(mut obj) = value else {
        return bad("", "expected a JSON object");
    };
    const FIELDS: [&str; 5] = ["id", "source", "category", "request", "check"];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return bad(k, format!("unknown field (expected {})", FIELDS.join(", ")));
    }
    let id = match obj.remove("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) => return bad("id", "must not be empty"),
        Some(_) => return bad("id", "expected a string"),
        None => return bad("id", "missing"),
    };
    let source = optional_string(&mut obj, "source")?;
    let category = optional_string(&mut obj, "category")?;
    let request = match obj.remove("request") {
        Some(Value::Object(r)) => r,
        Some(_) => return bad("request", "expected a chat-completions body (an object)"),
        None => return bad("request", "missing"),
    };
    if request.contains_key("model") {
        return bad(
            "request.model",
            "leave it out: the runner sets each tier's model",
        );
    }
    match request.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => {}
        Some(_) => return bad("request.messages", "expected a non-empty array"),
        None => return bad("request.messages", "missing"),
    }
    let check = match obj.remove("check") {
        None | Some(Value::Null) => None,
        Some(v) => Some(check(v)?),
    };
    Ok(Prompt {
        id,
        source,
        category,
        request,
        check,
    })
}

fn optional_string(obj: &mut Map<String, Value>, key: &str) -> Result<Option<String>, FieldError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => bad(key, "expected a string"),
    }
}

const KINDS: &str = "number, contains, label, equals, tool";

fn check(value: Value) -> Result<Check, FieldError> {
    let Value::Object(mut obj) = value else {
        return bad(
            "check",
            "expected an object like {\"kind\": \"number\", \"answers\": [\"63\"]}",
        );
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["kind", "answers", "labels"].contains(&k.as_str()))
    {
        return bad(
            &format!("check.{k}"),
            "unknown field (expected kind, answers, labels)",
        );
    }
    let kind = match obj.remove("kind") {
        Some(Value::String(s)) => s,
        Some(_) => return bad("check.kind", format!("expected a string ({KINDS})")),
        None => return bad("check.kind", format!("missing ({KINDS})")),
    };
    if !["number", "contains", "label", "equals", "tool"].contains(&kind.as_str()) {
        return bad(
            "check.kind",
            format!("unknown kind {kind:?} (expected {KINDS})"),
        );
    }
    let answers = strings(obj.remove("answers"), "check.answers")?;
    let labels = obj.remove("labels");
    if kind != "label" && labels.is_some() {
        return bad(
            "check.labels",
            format!("only a `label` check has labels (this is `{kind}`)"),
        );
    }
    let one = |what: &str| -> Result<String, FieldError> {
        match answers.as_slice() {
            [a] => Ok(a.clone()),
            _ => bad(
                "check.answers",
                format!("a `{kind}` check has exactly one answer ({what})"),
            ),
        }
    };
    Ok(match kind.as_str() {
        "number" => {
            for (i, a) in answers.iter().enumerate() {
                if a.replace(',', "").trim().parse::<f64>().is_err() {
                    return bad(
                        &format!("check.answers[{i}]"),
                        format!("{a:?} is not a number"),
                    );
                }
            }
            Check::Number(answers)
        }
        "contains" => Check::Contains(answers),
        "equals" => Check::Equals(answers),
        "tool" => Check::Tool(one("the tool's name")?),
        _ => {
            let expected = one("the right label")?;
            let labels = strings(labels, "check.labels")?;
            if !labels
                .iter()
                .any(|l| super::check::normalize(l) == super::check::normalize(&expected))
            {
                return bad(
                    "check.answers[0]",
                    format!("{expected:?} is not one of the labels {labels:?}"),
                );
            }
            Check::Label { labels, expected }
        }
    })
}

/// A non-empty array of non-blank strings.
fn strings(value: Option<Value>, field: &str) -> Result<Vec<String>, FieldError> {
    let Some(Value::Array(items)) = value else {
        return bad(field, "expected a non-empty array of strings");
    };
    if items.is_empty() {
        return bad(field, "expected a non-empty array of strings");
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if !s.trim().is_empty() => Ok(s),
            Value::String(_) => bad(&format!("{field}[{i}]"), "must not be blank"),
            other => bad(
                &format!("{field}[{i}]"),
                format!("expected a string, not {other}"),
            ),
        })
        .collect()
}

impl Check {
    /// Whether `answer` is right.
    pub fn passes(&self, answer: &Answer) -> bool {
        self.passes_text(
            &answer.text,
            answer.tool_calls.first().map(|(name, _)| name.as_str()),
        )
    }
}

/// Per tier: `ok` (the answer equals the top (last) tier's, or passes `check`) and
/// `same_as_top` (equals the top tier's answer exactly, text and tool calls).
pub fn label(answers: &[Answer], check: Option<&Check>) -> (Vec<bool>, Vec<bool>) {
    let Some(top) = answers.last() else {
        return (Vec::new(), Vec::new());
    };
    let same: Vec<bool> = answers.iter().map(|a| a == top).collect();
    let ok = answers
        .iter()
        .zip(&same)
        .map(|(a, &same)| same || check.is_some_and(|c| c.passes(a)))
        .collect();
    (ok, same)
}

/// Read a label file.
pub fn read_labels(path: &Path) -> Result<Vec<Labelled>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_labels(&text, &path.display().to_string())
}

/// Parse label lines: every line has the same tiers, one value per tier in each list,
/// finite features and costs ≥ 0, and a unique id.
pub fn parse_labels(text: &str, name: &str) -> Result<Vec<Labelled>, DataError> {
    let mut out: Vec<Labelled> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line = i + 1;
        let err = |field: String, message: String| DataError::Line {
            name: name.to_owned(),
            line,
            field,
            message,
        };
        let mut de = serde_json::Deserializer::from_str(raw);
        let l: Labelled = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            err(field, json_message(e.inner()))
        })?;
        check_labelled(&l).map_err(|(f, m)| err(f, m))?;
        if let Some(first) = out.first().filter(|f| f.tiers != l.tiers) {
            return Err(err(
                "tiers".into(),
                format!(
                    "{:?} differ from the first line's {:?}",
                    l.tiers, first.tiers
                ),
            ));
        }
        if let Some(first) = seen.insert(l.id.clone(), line) {
            return Err(err(
                "id".into(),
                format!("{:?} is also the id on line {first}", l.id),
            ));
        }
        out.push(l);
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            name: name.to_owned(),
            what: "labelled prompts",
        });
    }
    Ok(out)
}

fn check_labelled(l: &Labelled) -> Result<(), (String, String)> {
    let k = l.tiers.len();
    if k == 0 {
        return Err(("tiers".into(), "expected at least one tier".into()));
    }
    for (field, len) in [
        ("ok", l.ok.len()),
        ("cost", l.cost.len()),
        ("tokens", l.tokens.len()),
        ("same_as_top", l.same_as_top.len()),
    ] {
        if len != k {
            return Err((field.into(), format!("{len} values for {k} tiers")));
        }
    }
    if let Some(i) = l.features.iter().position(|f| !f.is_finite()) {
        return Err((format!("features[{i}]"), "not a finite number".into()));
    }
    if let Some(i) = l.cost.iter().position(|c| !c.is_finite() || *c < 0.0) {
        return Err((
            format!("cost[{i}]"),
            format!("{} is not a duration in seconds", l.cost[i]),
        ));
    }
    Ok(())
}

/// The label file's text: one JSON object per line.
pub fn labels_to_jsonl(labels: &[Labelled]) -> Result<String, DataError> {
    let mut out = String::new();
    for (i, l) in labels.iter().enumerate() {
        check_labelled(l).map_err(|(field, message)| DataError::Line {
            name: "labels".into(),
            line: i + 1,
            field,
            message,
        })?;
        // Plain data with finite numbers: serialising cannot fail.
        out.push_str(&serde_json::to_string(l).unwrap_or_default());
        out.push('\n');
    }
    Ok(out)
}

/// Write a label file.
pub fn write_labels(path: &Path, labels: &[Labelled]) -> Result<(), DataError> {
    let text = labels_to_jsonl(labels)?;
    std::fs::write(path, text).map_err(|source| DataError::Write {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Answer {
        Answer {
            text: s.into(),
            tool_calls: vec![],
        }
    }

    fn one(line: &str) -> Result<Vec<Prompt>, DataError> {
        parse(line, "prompts.jsonl")
    }

    fn check_of(json: &str) -> Check {
        let line = format!(
            r#"{{"id":"a","request":{{"messages":[{{"role":"user","content":"q"}}]}},"check":{json}}}"#
        );
        one(&line).unwrap().remove(0).check.unwrap()
    }

    #[test]
    fn a_prompt_line_parses() {
        let line = r#"{"id": "arith-001", "source": "tools/convert/tasks/smollm2_tasks.jsonl", "request": {"messages": [{"role":"user","content":"What is 40 + 23? Answer with just the number."}], "max_tokens": 32}, "check": {"kind": "number", "answers": ["63"]}}"#;
        let prompts = one(&format!("\n{line}\n\n")).unwrap();
        assert_eq!(prompts.len(), 1);
        assert_eq!(prompts[0].id, "arith-001");
        assert_eq!(prompts[0].request["max_tokens"], 32);
        assert_eq!(prompts[0].check, Some(Check::Number(vec!["63".into()])));
    }

    #[test]
    fn parse_errors_name_the_line_and_the_field() {
        let req = r#""request":{"messages":[{"role":"user","content":"q"}]}"#;
        let cases = r#"
{"id":"b",REQ,"check":{"kind":"foo","answers":["1"]}} => check.kind: unknown kind "foo" (expected number, contains, label, equals, tool)
{"id":"b","request":{"messages":[]}} => request.messages: expected a non-empty array
{"id":"b","request":{"model":"x","messages":[{"role":"user","content":"q"}]}} => request.model: leave it out
{REQ} => id: missing
{"id":"a",REQ} => id: "a" is also the id on line 1
{"id":"b","prompt":"q"} => prompt: unknown field
{"id":"b",REQ,"check":{"kind":"number","answers":["sixty"]}} => check.answers[0]: "sixty" is not a number
{"id":"b",REQ,"check":{"kind":"label","answers":["maybe"],"labels":["yes","no"]}} => check.answers[0]: "maybe" is not one of the labels
{"id":"b",REQ,"check":{"kind":"contains","answers":[]}} => check.answers: expected a non-empty array
{"id":"b",REQ,"check":{"kind":"tool","answers":["a","b"]}} => check.answers: a `tool` check has exactly one answer
{"id":"b",REQ,"check":{"kind":"equals","answers":["x"],"labels":["x"]}} => check.labels: only a `label` check
{not json => not valid JSON: key must be a string (column 2)"#;
        for case in cases.lines().filter(|l| !l.is_empty()) {
            let (bad, expected) = case.split_once(" => ").unwrap();
            let text = format!("{{\"id\":\"a\",{req}}}\n\n{}\n", bad.replace("REQ", req));
            let err = one(&text).unwrap_err().to_string();
            let expected = format!("prompts.jsonl:3: {expected}");
            assert!(err.starts_with(&expected), "{err}\n  expected: {expected}");
        }
        let empty = one("\n  \n").unwrap_err().to_string();
        assert_eq!(empty, "prompts.jsonl: no prompts in the file");
    }

    #[test]
    fn the_shipped_prompt_and_label_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/route");
        let mut prompts = 0;
        for path in std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".labels") {
                read_labels(&path).unwrap_or_else(|e| panic!("{e}"));
            } else if name.ends_with(".jsonl") {
                prompts += read(&path).unwrap_or_else(|e| panic!("{e}")).len();
            }
        }
        assert!(prompts > 100, "{prompts} prompts in {}", dir.display());
    }

    #[test]
    fn number_finds_whole_numbers_only() {
        let c = check_of(r#"{"kind":"number","answers":["1063"]}"#);
        for ok in "The answer is 1,063.|1063|= 1063!|x 1063 y|-1063".split('|') {
            assert!(c.passes(&text(ok)), "{ok}");
        }
        for bad in "10630|11063|1063.5|3.1063|106 3|one thousand".split('|') {
            assert!(!c.passes(&text(bad)), "{bad}");
        }
        let c = check_of(r#"{"kind":"number","answers":["1,000,000"]}"#);
        assert!(c.passes(&text("About 1,000,000 people.")));
        assert!(!c.passes(&text("1,000,0000")));
    }

    #[test]
    fn contains_matches_whole_phrases_ignoring_case_and_spacing() {
        let c = check_of(r#"{"kind":"contains","answers":["New  York", "nyc"]}"#);
        assert!(c.passes(&text("It is in new\n york, of course.")));
        assert!(c.passes(&text("NYC.")));
        assert!(!c.passes(&text("Newark, New Yorkshire")));
        let c = check_of(r#"{"kind":"contains","answers":["paris"]}"#);
        assert!(c.passes(&text("The capital of France is Paris.")));
        assert!(!c.passes(&text("Parisian food")));
        let c = check_of(r#"{"kind":"contains","answers":["don't"]}"#);
        assert!(c.passes(&text("I don\u{2019}t know")));
    }

    #[test]
    fn label_takes_the_first_label_mentioned() {
        let c =
            check_of(r#"{"kind":"label","answers":["positive"],"labels":["positive","negative"]}"#);
        assert!(c.passes(&text("Positive.")));
        assert!(c.passes(&text("positives outweigh the negatives")));
        assert!(!c.passes(&text("Negative, not positive.")));
        assert!(!c.passes(&text("nonpositive")));
        assert!(!c.passes(&text("I cannot tell.")));
    }

    #[test]
    fn equals_tool_and_labelling() {
        let c = check_of(r#"{"kind":"equals","answers":["Yes"]}"#);
        assert!(c.passes(&text("  yes\n")));
        assert!(!c.passes(&text("yes.")));
        let c = check_of(r#"{"kind":"tool","answers":["get_weather"]}"#);
        let call = |n: &str| Answer {
            text: String::new(),
            tool_calls: vec![(n.into(), "{}".into())],
        };
        assert!(c.passes(&call("get_weather")));
        assert!(!c.passes(&call("search")));
        assert!(!c.passes(&text("get_weather")));

        let number = check_of(r#"{"kind":"number","answers":["63"]}"#);
        let answers = [text("64"), text("It is 63."), text("63")];
        assert_eq!(
            label(&answers, Some(&number)),
            (vec![false, true, true], vec![false, false, true])
        );
        // Without a check only the top tier's answer counts; with one, equal to the top counts too.
        assert_eq!(label(&answers, None).0, vec![false, false, true]);
        let wrong = [text("64"), text("64"), text("64")];
        assert_eq!(label(&wrong, Some(&number)).0, vec![true, true, true]);
        assert_eq!(label(&[], None), (vec![], vec![]));
    }

    fn labelled(id: &str) -> Labelled {
        Labelled {
            id: id.into(),
            features: [0.5; N],
            tiers: vec!["int4".into(), "fp32".into()],
            ok: vec![false, true],
            cost: vec![0.1, 0.4],
            tokens: vec![12, 9],
            same_as_top: vec![false, true],
        }
    }

    #[test]
    fn labels_round_trip_and_errors_name_the_field() {
        let labels = vec![labelled("a"), labelled("b")];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.jsonl");
        write_labels(&path, &labels).unwrap();
        assert_eq!(read_labels(&path).unwrap(), labels);

        let good = labels_to_jsonl(&labels[..1]).unwrap();
        let mut short = labelled("b");
        short.cost.pop();
        let mut other = labelled("b");
        other.tiers[0] = "int8".into();
        let json = |l: &Labelled| serde_json::to_string(l).unwrap();
        let cases = [
            (
                json(&short),
                "labels.jsonl:2: cost: 1 values for 2 tiers".to_owned(),
            ),
            (
                json(&other),
                "labels.jsonl:2: tiers: [\"int8\", \"fp32\"] differ".to_owned(),
            ),
            (
                json(&labelled("a")),
                "labels.jsonl:2: id: \"a\" is also the id on line 1".to_owned(),
            ),
            (
                json(&labelled("b")).replace("[0.5,", "[\"x\","),
                "labels.jsonl:2: features[0]: invalid type".to_owned(),
            ),
            (
                json(&labelled("b")).replace("\"ok\"", "\"okay\""),
                "labels.jsonl:2: okay: unknown field `okay`, expected one of `id`".to_owned(),
            ),
        ];
        for (line, expected) in cases {
            let err = parse_labels(&format!("{good}{line}\n"), "labels.jsonl")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&expected), "{err}\n  expected: {expected}");
        }
        let mut nan = labelled("a");
        nan.cost[1] = f64::NAN;
        assert!(labels_to_jsonl(&[nan])
            .unwrap_err()
            .to_string()
            .contains("cost[1]"));
    }

    proptest::proptest! {
        #[test]
        fn normalize_is_idempotent_and_a_number_finds_itself(s in "[ a-zA-Z0-9,.\\n]{0,40}", n in 0u64..10_000_000) {
            let once = crate::calibrate::check::normalize(&s);
            proptest::prop_assert_eq!(crate::calibrate::check::normalize(&once), once.clone());
            let check = Check::Number(vec![n.to_string()]);
            let (inside, longer) = (format!("so {n}."), format!("{n}7"));
            proptest::prop_assert!(check.passes(&text(&inside)));
            proptest::prop_assert!(!check.passes(&text(&longer)));
        }
    }
}
