//! Workflows through the HTTP API, against a real gateway and loopback upstreams: steps
//! run in dependency order and independent ones together, templates reach later steps,
//! SQL values are bound (an injection attempt is only data), timeouts and retries, a
//! failed step stops its dependants and the run says why, tenants see only their runs,
//! the agent loop can run a workflow, and the shipped daily sales report agrees with
//! the demo database.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use common::{error_of, metric, Gateway};
use serde_json::{json, Value};
use tokio::sync::Notify;

/// Loopback endpoints for tool steps: `/meet` answers `together` once two requests are
/// in at the same time (`alone` if the second has not come within 5 s); `/flaky`
/// fails twice with 500, then answers `ok`; `/hang` never answers.
#[derive(Default)]
struct Upstream {
    meeting: AtomicUsize,
    met: Notify,
    flaky: AtomicUsize,
}

async fn upstream() -> (String, Arc<Upstream>) {
    let state = Arc::new(Upstream::default());
    let app = Router::new()
        .route("/meet", get(meet))
        .route(
            "/flaky",
            get(|State(s): State<Arc<Upstream>>| async move {
                if s.flaky.fetch_add(1, Ordering::SeqCst) < 2 {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down")
                } else {
                    (axum::http::StatusCode::OK, "ok")
                }
            }),
        )
        .route("/hang", get(std::future::pending::<&'static str>))
        .with_state(state.clone());
    let addr = common::serve(app).await;
    (format!("http://{addr}"), state)
}

async fn meet(State(s): State<Arc<Upstream>>) -> &'static str {
    let arrived = s.met.notified();
    if s.meeting.fetch_add(1, Ordering::SeqCst) + 1 >= 2 {
        s.met.notify_waiters();
        return "together";
    }
    match tokio::time::timeout(Duration::from_secs(5), arrived).await {
        Ok(()) => "together",
        Err(_) => "alone",
    }
}

/// A model that no test calls: a gateway needs one.
const UNUSED_MODEL: &str = "[backends.unused]\nkind = \"openai\"\nurl = \"http://127.0.0.1:9/v1\"\n\n[[models]]\nname = \"unused\"\nbackend = \"unused\"\n";

/// A gateway with the `web` (http_get on loopback) and `sales` (sql_query on
/// `db`) tools, its run store in `dir`, and `workflows` TOML.
async fn gateway(dir: &tempfile::TempDir, db: &str, workflows: &str, extra: &str) -> Gateway {
    let store = dir.path().join("runs.db");
    let toml = format!(
        r#"
[tools.web]
kind = "http_get"
allow_hosts = ["127.0.0.1"]
allow_addresses = ["127.0.0.1/32"]
timeout = "30s"

[tools.sales]
kind = "sql_query"
database = "{db}"

{UNUSED_MODEL}
{extra}

[workflows]
store = "{store}"
{workflows}
"#,
        store = store.display()
    );
    Gateway::start(&toml).await
}

async fn run(gw: &Gateway, name: &str, body: Value) -> Value {
    let resp = gw.post(&format!("/v1/workflows/{name}/runs"), &body).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    resp.json().await.unwrap()
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {run}"))
}

fn sales_db() -> String {
    format!("{}/examples/sales.db", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn independent_steps_run_together_and_dependants_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _up) = upstream().await;
    let gw = gateway(
        &dir,
        &sales_db(),
        &format!(
            r#"
[[workflows.jobs.fan.steps]]
name = "a"
tool = "web"
arguments.url = "{url}/meet"

[[workflows.jobs.fan.steps]]
name = "b"
tool = "web"
arguments.url = "{url}/meet"

[[workflows.jobs.fan.steps]]
name = "join"
depends_on = ["a", "b"]
template = "{{{{ steps.a.output.body }}}} and {{{{ steps.b.output.body }}}} for {{{{ run.workflow }}}}"
"#
        ),
        "",
    )
    .await;
    let run = run(&gw, "fan", json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    // Each /meet answers `together` only if the other step's request was in at the
    // same time: run one after the other, the first would wait 5 s and say `alone`.
    assert_eq!(
        step(&run, "join")["output"],
        "together and together for fan"
    );
    let ms = |s: &str, k: &str| step(&run, s)[k].as_i64().unwrap();
    assert!(ms("join", "started_at") >= ms("a", "finished_at").max(ms("b", "finished_at")));
    assert_eq!(run["artifacts"][0]["name"], "join.md");
}

#[tokio::test]
async fn sql_values_are_bound_so_an_injection_is_only_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sales.db");
    std::fs::copy(sales_db(), &db).unwrap();
    let hash = || blake3::hash(&std::fs::read(&db).unwrap());
    let before = hash();
    let gw = gateway(
        &dir,
        &db.display().to_string(),
        r#"
[workflows.jobs.lookup.inputs.customer]
type = "string"
required = true

[workflows.jobs.lookup.inputs.limit]
type = "integer"
default = 3

[[workflows.jobs.lookup.steps]]
name = "find"
tool = "sales"
arguments.query = "SELECT name, country FROM customers WHERE name = :name LIMIT :limit"
arguments.params = { name = "{{ inputs.customer }}", limit = "{{ inputs.limit }}" }

[[workflows.jobs.lookup.steps]]
name = "count"
depends_on = ["find"]
tool = "sales"
arguments.query = "SELECT count(*) AS n FROM customers WHERE country = ?"
arguments.params = ["{{ steps.find.output.rows[0].country if steps.find.output.rows else 'nowhere' }}"]
"#,
        "",
    )
    .await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (name, country): (String, String) = conn
        .query_row(
            "SELECT name, country FROM customers ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let in_country: i64 = conn
        .query_row(
            "SELECT count(*) FROM customers WHERE country = ?",
            [&country],
            |r| r.get(0),
        )
        .unwrap();
    let customers: i64 = conn
        .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
        .unwrap();
    drop(conn);

    let found = run(&gw, "lookup", json!({"inputs": {"customer": name}})).await;
    assert_eq!(found["status"], "succeeded", "{found}");
    assert_eq!(
        step(&found, "find")["output"]["rows"][0]["country"],
        country.as_str()
    );
    assert_eq!(step(&found, "count")["output"]["rows"][0]["n"], in_country);

    for attack in [
        "x'; DROP TABLE customers; --",
        "' OR '1'='1",
        "x\"; ATTACH DATABASE '/tmp/pwn.db' AS p; --",
    ] {
        let r = run(&gw, "lookup", json!({"inputs": {"customer": attack}})).await;
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(step(&r, "find")["output"]["row_count"], 0, "{attack}: {r}");
        assert_eq!(step(&r, "count")["output"]["rows"][0]["n"], 0);
    }
    assert_eq!(hash(), before, "the database file changed");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let after: i64 = conn
        .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(after, customers);

    // A wrong input type is the caller's error, and nothing runs.
    let resp = gw
        .post(
            "/v1/workflows/lookup/runs",
            &json!({"inputs": {"customer": "a", "limit": "3; DROP"}}),
        )
        .await;
    let (status, err) = error_of(resp).await;
    assert_eq!(
        (status, err["param"].as_str()),
        (400, Some("inputs.limit")),
        "{err}"
    );
    let resp = gw.post("/v1/workflows/lookup/runs", &json!({})).await;
    let (status, err) = error_of(resp).await;
    assert_eq!(
        (status, err["param"].as_str()),
        (400, Some("inputs.customer")),
        "{err}"
    );
}

#[tokio::test]
async fn retries_timeouts_and_a_failed_step_stops_its_dependants() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _up) = upstream().await;
    let gw = gateway(
        &dir,
        &sales_db(),
        &format!(
            r#"
[[workflows.jobs.flaky.steps]]
name = "fetch"
tool = "web"
arguments.url = "{url}/flaky"
retries = 2
retry_delay = "10ms"

[[workflows.jobs.stuck.steps]]
name = "fetch"
tool = "web"
arguments.url = "{url}/hang"
timeout = "200ms"
retries = 1
retry_delay = "10ms"

[[workflows.jobs.stuck.steps]]
name = "report"
depends_on = ["fetch"]
template = "{{{{ steps.fetch.output }}}}"

[[workflows.jobs.stuck.steps]]
name = "other"
template = "independent"

[workflows.jobs.slow]
timeout = "300ms"

[[workflows.jobs.slow.steps]]
name = "fetch"
tool = "web"
arguments.url = "{url}/hang"

[[workflows.jobs.slow.steps]]
name = "after"
depends_on = ["fetch"]
template = "never"
"#
        ),
        "",
    )
    .await;
    let r = run(&gw, "flaky", json!({})).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(step(&r, "fetch")["attempts"], 3);
    assert_eq!(step(&r, "fetch")["output"]["body"], "ok");

    let r = run(&gw, "stuck", json!({})).await;
    assert_eq!(r["status"], "failed");
    let fetch = step(&r, "fetch");
    assert_eq!(
        (fetch["status"].as_str(), fetch["attempts"].as_u64()),
        (Some("failed"), Some(2))
    );
    assert!(
        fetch["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 200ms"),
        "{fetch}"
    );
    let report = step(&r, "report");
    assert_eq!(report["status"], "upstream_failed");
    assert!(
        report["error"].as_str().unwrap().contains("`fetch`"),
        "{report}"
    );
    assert_eq!(step(&r, "other")["status"], "succeeded");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.starts_with("step `fetch` failed: ") && error.contains("timed out"),
        "{error}"
    );

    let r = run(&gw, "slow", json!({})).await;
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"].as_str().unwrap().contains("timeout (300ms)"),
        "{r}"
    );
    assert_eq!(step(&r, "fetch")["status"], "failed");
    assert_eq!(step(&r, "after")["status"], "cancelled");

    assert_eq!(
        metric(
            &gw,
            "sluice_workflow_runs_total{outcome=\"failed\",workflow=\"stuck\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            "sluice_workflow_runs_total{outcome=\"succeeded\",workflow=\"flaky\"}"
        )
        .await,
        1.0
    );
    // The stuck fetch (both tries, one observation); the slow one was cut by its run.
    assert_eq!(
        metric(
            &gw,
            "sluice_workflow_step_duration_seconds_count{kind=\"tool\",outcome=\"failed\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            "sluice_workflow_step_duration_seconds_count{kind=\"tool\",outcome=\"succeeded\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn background_runs_tenants_and_limits() {
    use sha2::{Digest, Sha256};
    let sha = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let dir = tempfile::tempdir().unwrap();
    let (url, _up) = upstream().await;
    let gw = gateway(
        &dir,
        &sales_db(),
        &format!(
            r#"
max_running = 2

[[workflows.jobs.hello.steps]]
name = "say"
template = "hello"

[[workflows.jobs.hang.steps]]
name = "fetch"
tool = "web"
arguments.url = "{url}/hang"
"#
        ),
        &format!(
            "[[auth.keys]]\ntenant = \"a\"\nsha256 = \"{}\"\n\n[[auth.keys]]\ntenant = \"b\"\nsha256 = \"{}\"\n",
            sha("sk-a"),
            sha("sk-b")
        ),
    )
    .await;
    let post = |key: &'static str, name: &'static str, body: Value| {
        gw.client
            .post(gw.url(&format!("/v1/workflows/{name}/runs")))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let get =
        |key: &'static str, path: String| gw.client.get(gw.url(&path)).bearer_auth(key).send();

    let resp = post("sk-a", "hello", json!({})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let done: Value = resp.json().await.unwrap();
    let id = done["id"].as_str().unwrap().to_owned();
    assert_eq!(done["trigger"], "api");

    let resp = post("sk-a", "hang", json!({"background": true}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let bg: Value = resp.json().await.unwrap();
    assert_eq!(bg["status"], "running");
    assert_eq!(
        location,
        format!("/v1/workflows/runs/{}", bg["id"].as_str().unwrap())
    );
    let seen: Value = get("sk-a", location.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["status"], "running");

    // max_running = 2: one more fits, the next is told to come back.
    assert_eq!(
        post("sk-b", "hang", json!({"background": true}))
            .await
            .unwrap()
            .status(),
        202
    );
    let resp = post("sk-b", "hello", json!({})).await.unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    let (status, err) = error_of(resp).await;
    assert_eq!((status, err["code"].as_str()), (503, Some("too_many_runs")));

    // Tenant b sees none of a's runs, not even by id.
    let resp = get("sk-b", format!("/v1/workflows/runs/{id}"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = get("sk-b", format!("/v1/workflows/runs/{id}/artifacts/say"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let list: Value = get("sk-b", "/v1/workflows/hello/runs".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let list: Value = get("sk-a", "/v1/workflows/hello/runs".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["id"], id.as_str());
    let report = get("sk-a", format!("/v1/workflows/runs/{id}/artifacts/say"))
        .await
        .unwrap();
    assert_eq!(
        report.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    assert_eq!(report.text().await.unwrap(), "hello");
    assert_eq!(gw.get("/v1/workflows/hello/runs").await.status(), 401);

    let resp = post("sk-a", "nope", json!({})).await.unwrap();
    assert_eq!(error_of(resp).await.0, 404);
    assert_eq!(
        metric(&gw, "sluice_workflow_runs_running{workflow=\"hang\"}").await,
        2.0
    );
}

#[tokio::test]
async fn the_agent_loop_runs_a_workflow_as_a_tool() {
    let dir = tempfile::tempdir().unwrap();
    let up = common::scripted::start().await;
    let gw = gateway(
        &dir,
        &sales_db(),
        r#"
[workflows.jobs.greet]
description = "greet someone"

[workflows.jobs.greet.inputs.who]
type = "string"
required = true

[[workflows.jobs.greet.steps]]
name = "say"
template = "hello {{ inputs.who }}"
"#,
        &format!(
            r#"
[backends.up]
kind = "openai"
url = "{}"

[[models]]
name = "agent"
backend = "up"
upstream_model = "scripted"
tools = ["workflow__greet"]
"#,
            up.url
        ),
    )
    .await;
    let turns = json!([[{"name": "workflow__greet", "arguments": {"who": "agent"}}]]);
    let body = json!({"model": "agent", "messages": [
        {"role": "user", "content": common::scripted::script(turns, "done")}
    ]});
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.contains("hello agent") && text.contains("succeeded"),
        "{text}"
    );
    // The model was offered the workflow with its inputs as parameters.
    let offered = &up.requests()[0]["tools"][0]["function"];
    assert_eq!(offered["name"], "workflow__greet");
    assert_eq!(offered["parameters"]["required"], json!(["who"]));

    let list: Value = gw
        .get("/v1/workflows/greet/runs")
        .await
        .json()
        .await
        .unwrap();
    let recorded = &list["data"][0];
    assert_eq!(
        (recorded["trigger"].as_str(), recorded["status"].as_str()),
        (Some("agent"), Some("succeeded"))
    );
    assert_eq!(recorded["inputs"]["who"], "agent");
}

#[tokio::test]
async fn the_shipped_daily_sales_report_agrees_with_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let toml = format!(
        r#"
[tools.sql_query]
kind = "sql_query"
database = "{root}/examples/sales.db"

{UNUSED_MODEL}
[workflows]
store = "{store}"
files = ["{root}/workflows/daily_sales_report.toml"]
"#,
        store = dir.path().join("runs.db").display()
    );
    let gw = Gateway::start(&toml).await;
    let conn = rusqlite::Connection::open(format!("{root}/examples/sales.db")).unwrap();
    let expected = |first: &str, last: &str| -> Vec<(String, i64, i64)> {
        let mut stmt = conn
            .prepare(
                "SELECT o.order_date, count(*), sum(o.quantity * p.price) FROM orders o \
                 JOIN products p ON p.id = o.product_id \
                 WHERE o.order_date BETWEEN ?1 AND ?2 GROUP BY o.order_date",
            )
            .unwrap();
        let rows = stmt.query_map([first, last], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
        rows.unwrap().map(Result::unwrap).collect()
    };
    let last_day: String = conn
        .query_row("SELECT max(order_date) FROM orders", [], |r| r.get(0))
        .unwrap();

    for (inputs, first, last) in [
        (json!({}), None, last_day.clone()),
        (
            json!({"start": "2024-06-01", "end": "2024-06-10"}),
            Some("2024-06-01"),
            "2024-06-10".to_owned(),
        ),
    ] {
        let run = run(&gw, "daily_sales_report", json!({"inputs": inputs})).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        let days: Vec<String> = step(&run, "fetch_data")["output"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["day"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(days.last(), Some(&last));
        if first.is_none() {
            assert_eq!(days.len(), 7, "the default is the last 7 days of data");
        }
        let first = days[0].clone();
        let sold = expected(&first, &last);

        // The report's table: one line per day (days without orders as 0), then the total.
        let report = step(&run, "report")["output"].as_str().unwrap().to_owned();
        let table: Vec<Vec<String>> = report
            .lines()
            .filter(|l| l.starts_with("| 20"))
            .map(|l| {
                l.split('|')
                    .map(|c| c.trim().replace(',', ""))
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        assert_eq!(table.len(), days.len(), "{report}");
        for row in &table {
            let (orders, revenue) = sold
                .iter()
                .find(|(d, _, _)| *d == row[0])
                .map_or((0, 0), |(_, o, r)| (*o, *r));
            assert_eq!(
                (
                    row[1].parse::<i64>().unwrap(),
                    row[2].parse::<i64>().unwrap()
                ),
                (orders, revenue),
                "{}",
                row[0]
            );
        }
        let total: i64 = sold.iter().map(|(_, _, r)| r).sum();
        let total_line = report.lines().find(|l| l.contains("**Total**")).unwrap();
        assert!(
            total_line
                .replace(',', "")
                .contains(&format!("**{total}**")),
            "{total_line}"
        );
        assert!(report.contains(&format!("# Daily sales report: {first} to {last}")));
        assert_eq!(step(&run, "summary")["status"], "skipped");

        // The chart: well-formed SVG with one bar per day, each day labelled.
        let id = run["id"].as_str().unwrap();
        let resp = gw
            .get(&format!("/v1/workflows/runs/{id}/artifacts/chart"))
            .await;
        assert_eq!(resp.headers()["content-type"], "image/svg+xml");
        let svg = resp.text().await.unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let bars = doc
            .descendants()
            .filter(|n| {
                n.has_tag_name("rect")
                    && n.attribute("fill") == Some(sluice::workflows::chart::SERIES_COLOR)
            })
            .count();
        assert_eq!(bars, days.len());
        let texts: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        for day in &days {
            assert!(texts.contains(&day.as_str()), "no label {day}");
        }
    }
}

#[test]
fn config_errors_name_the_offending_key() {
    let base = "[tools.sales]\nkind = \"sql_query\"\ndatabase = \"examples/sales.db\"\n\n[workflows]\nstore = \"/tmp/unused.db\"\n";
    let cases = [
        (
            "[[workflows.jobs.w.steps]]\nname = \"a\"\ndepends_on = [\"b\"]\ntemplate = \"x\"\n\n[[workflows.jobs.w.steps]]\nname = \"b\"\ndepends_on = [\"a\"]\ntemplate = \"y\"\n",
            "workflows.jobs.w.steps[0].depends_on",
            "cycle: a → b → a",
        ),
        (
            "[[workflows.jobs.w.steps]]\nname = \"a\"\ndepends_on = [\"nope\"]\ntemplate = \"x\"\n",
            "workflows.jobs.w.steps[0].depends_on[0]",
            "no step is named `nope`",
        ),
        (
            "[[workflows.jobs.w.steps]]\nname = \"a\"\ntool = \"shell\"\n",
            "workflows.jobs.w.steps[0].tool",
            "no [tools.shell]",
        ),
        (
            "[workflows.jobs.w.inputs.day]\ntype = \"date\"\n\n[[workflows.jobs.w.steps]]\nname = \"a\"\ntool = \"sales\"\narguments.query = \"SELECT * FROM orders WHERE order_date = '{{ inputs.day }}'\"\n",
            "workflows.jobs.w.steps[0].arguments.query",
            "bound",
        ),
        (
            "[[workflows.jobs.w.steps]]\nname = \"a\"\ntemplate = \"x\"\n\n[[workflows.jobs.w.steps]]\nname = \"b\"\ntemplate = \"{{ steps.a.output }}\"\n",
            "workflows.jobs.w.steps[1].template",
            "depends_on",
        ),
        (
            "[workflows.jobs.w]\nschedule = \"every morning\"\n\n[[workflows.jobs.w.steps]]\nname = \"a\"\ntemplate = \"x\"\n",
            "workflows.jobs.w.schedule",
            "cron",
        ),
        (
            "[[workflows.jobs.w.steps]]\nname = \"a\"\ntemplate = \"x\"\nprompt = \"y\"\n",
            "workflows.jobs.w.steps[0].prompt",
            "model steps",
        ),
        (
            "[[workflows.jobs.w.steps]]\nname = \"a\"\ntemplate = \"{% if %}\"\n",
            "workflows.jobs.w.steps[0].template",
            "does not compile",
        ),
        (
            "[[workflows.jobs.w.steps]]\nname = \"a\"\nmodel = \"gpt-nope\"\nprompt = \"hi\"\n",
            "workflows.jobs.w.steps[0].model",
            "no model named",
        ),
    ];
    for (toml, path, message) in cases {
        let err = sluice::config::load_str(&format!("{base}{toml}"), Vec::new())
            .expect_err(toml)
            .to_string();
        assert!(
            err.contains(&format!("{path}: ")) && err.contains(message),
            "{toml}\n→ {err}"
        );
    }
    // A deployment's defaults override a workflow's own, and must name real inputs.
    let defaults = "[[workflows.jobs.w.steps]]\nname = \"a\"\ntemplate = \"x\"\n\n[workflows.jobs.w.inputs.who]\ntype = \"string\"\ndefault = \"a\"\n\n[workflows.defaults.w]\n";
    let config = sluice::config::load_str(
        &format!("{base}{UNUSED_MODEL}{defaults}who = \"b\"\n"),
        Vec::new(),
    )
    .unwrap();
    assert_eq!(
        config.workflows.jobs["w"].inputs["who"].default,
        Some(json!("b"))
    );
    let err = sluice::config::load_str(
        &format!("{base}{UNUSED_MODEL}{defaults}whom = \"b\"\n"),
        Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("workflows.defaults.w.whom: "), "{err}");
    // The shipped config and workflow file load.
    let root = env!("CARGO_MANIFEST_DIR");
    let text =
        std::fs::read_to_string(format!("{root}/workflows/daily_sales_report.toml")).unwrap();
    assert!(text.contains("schedule = \"0 7 * * *\""));
}
