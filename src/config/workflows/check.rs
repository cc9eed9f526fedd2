//! Checks of `[workflows]` and the workflows it declares, each problem reported with the
//! path of the offending key: names, unknown or duplicate steps, cycles, references to
//! steps a step does not depend on, unknown tools and models, keys of another kind,
//! templates that do not compile, schedules and zones, and template tags in SQL text.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{StepConfig, StepKind, WorkflowConfig, WorkflowsConfig};
use crate::config::ToolKind;

/// Where a workflow's keys live, for error paths.
fn prefix(config: &WorkflowsConfig, name: &str) -> String {
    match config.from_files.get(name) {
        Some(&i) => format!("workflows.files[{i}] ({}): ", config.files[i].display()),
        None => format!("workflows.jobs.{name}."),
    }
}

pub(in crate::config) fn validate(
    config: &crate::config::Config,
    issue: &mut impl FnMut(String, String),
) {
    let wf = &config.workflows;
    if let Err(e) = jiff::tz::TimeZone::get(&wf.timezone) {
        issue(
            "workflows.timezone".into(),
            format!("unknown time zone: {e}"),
        );
    }
    for (key, value) in [
        ("max_output_bytes", wf.max_output_bytes),
        ("max_artifact_bytes", wf.max_artifact_bytes),
        ("keep_runs", wf.keep_runs),
        ("max_running", wf.max_running),
    ] {
        if value == 0 {
            issue(format!("workflows.{key}"), "must be greater than 0".into());
        }
    }
    let models: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    for (name, job) in &wf.jobs {
        let base = prefix(wf, name);
        let mut at = |path: &str, message: String| issue(format!("{base}{path}"), message);
        if !valid_name(name) {
            at("", format!("`{name}` is not a workflow name: use letters, digits, `_` and `-` (at most 48)"));
        } else if name == "runs" {
            at(
                "",
                "`runs` is reserved (GET /v1/workflows/runs/{id})".into(),
            );
        }
        validate_job(config, job, &models, &mut at);
    }
}

fn valid_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn validate_job(
    config: &crate::config::Config,
    job: &WorkflowConfig,
    models: &[&str],
    at: &mut impl FnMut(&str, String),
) {
    if let Some(expr) = &job.schedule {
        let zone = job
            .timezone
            .as_deref()
            .unwrap_or(&config.workflows.timezone);
        if let Err(e) = croner::parser::CronParser::builder().build().parse(expr) {
            at(
                "schedule",
                format!("not a cron expression (minute hour day month weekday): {e}"),
            );
        }
        if job.timezone.is_some() && jiff::tz::TimeZone::get(zone).is_err() {
            at("timezone", format!("unknown time zone `{zone}`"));
        }
    }
    if job.timeout.is_zero() {
        at("timeout", "must be greater than 0".into());
    }
    for (input, spec) in &job.inputs {
        if let Some(default) = &spec.default {
            if let Err(e) = super::check_input(spec.kind, default) {
                at(&format!("inputs.{input}.default"), e);
            }
        }
    }
    for key in job.schedule_inputs.keys() {
        if !job.inputs.contains_key(key) {
            at(
                &format!("schedule_inputs.{key}"),
                "not one of the workflow's inputs".into(),
            );
        }
    }
    if job.steps.is_empty() {
        at("steps", "a workflow needs at least one step".into());
    }
    let index: HashMap<&str, usize> = job
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for (i, step) in job.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        if !valid_name(&step.name) {
            at(
                &format!("{path}.name"),
                format!(
                    "`{}` is not a step name: letters, digits, `_`, `-`",
                    step.name
                ),
            );
        }
        if index.get(step.name.as_str()) != Some(&i) {
            at(
                &format!("{path}.name"),
                format!("another step is named `{}`", step.name),
            );
        }
        for (j, dep) in step.depends_on.iter().enumerate() {
            if !index.contains_key(dep.as_str()) {
                at(
                    &format!("{path}.depends_on[{j}]"),
                    format!("no step is named `{dep}`"),
                );
            } else if dep == &step.name {
                at(
                    &format!("{path}.depends_on[{j}]"),
                    "a step cannot depend on itself".into(),
                );
            }
        }
        if step.timeout.is_zero() {
            at(&format!("{path}.timeout"), "must be greater than 0".into());
        }
        validate_step(config, step, models, &path, at);
    }
    if let Some(cycle) = find_cycle(&job.steps, &index) {
        let names: Vec<&str> = cycle.iter().map(|&i| job.steps[i].name.as_str()).collect();
        at(
            &format!("steps[{}].depends_on", cycle[0]),
            format!(
                "steps depend on each other in a cycle: {}",
                names.join(" → ")
            ),
        );
        return;
    }
    for (i, step) in job.steps.iter().enumerate() {
        let before = ancestors(&job.steps, &index, i);
        for (key, text) in step_texts(step) {
            for name in referenced_steps(&text) {
                if !before.contains(name) {
                    at(
                        &format!("steps[{i}].{key}"),
                        format!("refers to steps.{name}, which is not a step this one depends on (add it to depends_on)"),
                    );
                }
            }
        }
    }
}

fn validate_step(
    config: &crate::config::Config,
    step: &StepConfig,
    models: &[&str],
    path: &str,
    at: &mut impl FnMut(&str, String),
) {
    let kinds = [
        ("tool", step.tool.is_some()),
        ("model", step.model.is_some()),
        ("template", step.template.is_some()),
        ("chart", step.chart.is_some()),
    ];
    let set: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
    if set.len() != 1 {
        at(
            path,
            format!(
                "a step is exactly one of tool, model, template or chart (this one sets {})",
                if set.is_empty() {
                    "none".to_owned()
                } else {
                    set.join(", ")
                }
            ),
        );
        return;
    }
    let kind = step.kind();
    let belongs: [(&str, bool, StepKind); 12] = [
        ("arguments", !step.arguments.is_empty(), StepKind::Tool),
        ("prompt", step.prompt.is_some(), StepKind::Model),
        ("system", step.system.is_some(), StepKind::Model),
        ("max_tokens", step.max_tokens.is_some(), StepKind::Model),
        ("temperature", step.temperature.is_some(), StepKind::Model),
        ("format", step.format.is_some(), StepKind::Template),
        ("data", step.data.is_some(), StepKind::Chart),
        ("x", step.x.is_some(), StepKind::Chart),
        ("y", step.y.is_some(), StepKind::Chart),
        ("title", step.title.is_some(), StepKind::Chart),
        ("x_label", step.x_label.is_some(), StepKind::Chart),
        ("y_label", step.y_label.is_some(), StepKind::Chart),
    ];
    for (key, present, owner) in belongs {
        if present && owner != kind {
            at(
                &format!("{path}.{key}"),
                format!(
                    "belongs to {} steps, not {} steps",
                    owner.as_str(),
                    kind.as_str()
                ),
            );
        }
    }
    let mut template = |key: &str, text: &Option<String>| {
        if let Some(text) = text {
            if let Err(e) = compile(text) {
                at(&format!("{path}.{key}"), e);
            }
        }
    };
    template("when", &step.when);
    template("prompt", &step.prompt);
    template("system", &step.system);
    template("template", &step.template);
    template("title", &step.title);
    template("x_label", &step.x_label);
    template("y_label", &step.y_label);
    match kind {
        StepKind::Tool => {
            let tool = step.tool.as_deref().unwrap_or_default();
            if tool.starts_with("workflow__") {
                at(
                    &format!("{path}.tool"),
                    "a workflow step cannot run another workflow".into(),
                );
            } else if !crate::config::tools::configured(&config.tools, tool) {
                at(
                    &format!("{path}.tool"),
                    format!("no [tools.{tool}] is configured"),
                );
            }
            let is_sql = config
                .tools
                .get(tool)
                .is_some_and(|t| t.kind == ToolKind::SqlQuery);
            for (key, value) in &step.arguments {
                check_templates(value, &format!("{path}.arguments.{key}"), at);
            }
            if is_sql {
                if let Some(Value::String(query)) = step.arguments.get("query") {
                    if query.contains("{{") || query.contains("{%") {
                        at(&format!("{path}.arguments.query"), "SQL text may not hold template tags: write `?` (or `:name`) in the query and put the values in arguments.params, which are bound, never spliced".into());
                    }
                } else {
                    at(
                        &format!("{path}.arguments.query"),
                        "a sql_query step needs the query text".into(),
                    );
                }
            }
        }
        StepKind::Model => {
            let model = step.model.as_deref().unwrap_or_default();
            if model.contains("{{") {
                if let Err(e) = compile(model) {
                    at(&format!("{path}.model"), e);
                }
            } else if !models.contains(&model.split('@').next().unwrap_or(model)) {
                at(
                    &format!("{path}.model"),
                    format!("no model named `{model}` in [[models]]"),
                );
            }
            if step.prompt.is_none() {
                at(
                    &format!("{path}.prompt"),
                    "a model step needs a prompt".into(),
                );
            }
        }
        StepKind::Template => {}
        StepKind::Chart => {
            for (key, value) in [("data", &step.data), ("x", &step.x), ("y", &step.y)] {
                if value.is_none() {
                    at(
                        &format!("{path}.{key}"),
                        "a chart step needs data, x and y".into(),
                    );
                }
            }
            if let Some(data) = &step.data {
                if let Err(e) = minijinja::Environment::new().compile_expression(data) {
                    at(&format!("{path}.data"), format!("not an expression: {e}"));
                }
            }
        }
    }
}

fn compile(text: &str) -> Result<(), String> {
    let env = minijinja::Environment::new();
    env.template_from_str(text)
        .map(|_| ())
        .map_err(|e| format!("template does not compile: {e}"))
}

fn check_templates(value: &Value, path: &str, at: &mut impl FnMut(&str, String)) {
    match value {
        Value::String(s) if s.contains("{{") || s.contains("{%") => {
            if let Err(e) = compile(s) {
                at(path, e);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_templates(v, &format!("{path}[{i}]"), at);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                check_templates(v, &format!("{path}.{k}"), at);
            }
        }
        _ => {}
    }
}

/// Every step `i` depends on, directly or not (by name).
fn ancestors<'a>(
    steps: &'a [StepConfig],
    index: &HashMap<&str, usize>,
    i: usize,
) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    let mut todo = vec![i];
    while let Some(j) = todo.pop() {
        for dep in &steps[j].depends_on {
            if let Some(&k) = index.get(dep.as_str()) {
                if seen.insert(steps[k].name.as_str()) {
                    todo.push(k);
                }
            }
        }
    }
    seen
}

/// The template strings of a step with their keys.
fn step_texts(step: &StepConfig) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        ("when", &step.when),
        ("model", &step.model),
        ("prompt", &step.prompt),
        ("system", &step.system),
        ("template", &step.template),
        ("data", &step.data),
        ("title", &step.title),
        ("x_label", &step.x_label),
        ("y_label", &step.y_label),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_owned(), v.clone()?)))
    .collect();
    if !step.arguments.is_empty() {
        out.push((
            "arguments".into(),
            Value::Object(step.arguments.clone()).to_string(),
        ));
    }
    out
}

/// The step names a template refers to as `steps.NAME` or `steps["NAME"]`.
fn referenced_steps(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("steps") {
        let before_ok = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'));
        let after = &rest[at + 5..];
        rest = after;
        if !before_ok {
            continue;
        }
        let name = if let Some(tail) = after.strip_prefix('.') {
            tail.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .next()
        } else if let Some(tail) = after
            .strip_prefix("[\"")
            .or_else(|| after.strip_prefix("['"))
        {
            tail.split(['"', '\'']).next()
        } else {
            None
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            out.push(name);
        }
    }
    out
}

/// A cycle through `depends_on` (step indexes, first repeated at the end), if any.
fn find_cycle(steps: &[StepConfig], index: &HashMap<&str, usize>) -> Option<Vec<usize>> {
    // 0 = unseen, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; steps.len()];
    let mut path = Vec::new();
    fn visit(
        i: usize,
        steps: &[StepConfig],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for dep in &steps[i].depends_on {
            let Some(&j) = index.get(dep.as_str()) else {
                continue;
            };
            if j == i {
                continue;
            }
            if state[j] == 1 {
                let from = path.iter().position(|&p| p == j).unwrap_or(0);
                let mut cycle = path[from..].to_vec();
                cycle.push(j);
                return Some(cycle);
            }
            if state[j] == 0 {
                if let Some(c) = visit(j, steps, index, state, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    (0..steps.len()).find_map(|i| {
        if state[i] == 0 {
            visit(i, steps, index, &mut state, &mut path)
        } else {
            None
        }
    })
}
