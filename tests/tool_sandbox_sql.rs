//! The `sql_query` sandbox seen from outside: adversarial queries through the public
//! `Tool` API against a copy of `examples/sales.db` in a temporary folder. Every write,
//! attach, file-creating statement, side-effect function and runaway query must come
//! back as a tool error, and the folder (file list and hashes) must be unchanged after.
//! Positive cases check the demo model's queries give what `training/sales_db.py`
//! (`format_result`) gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::config::ToolConfig;
use sluice::tools::sql_query::SqlQuery;
use sluice::tools::{CallContext, Tool, ToolError};

struct Sandbox {
    dir: tempfile::TempDir,
    db: PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sales.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sales.db"),
        &db,
    )
    .unwrap();
    Sandbox { dir, db }
}

fn tool(sb: &Sandbox, extra: &str) -> SqlQuery {
    let cfg: ToolConfig = toml::from_str(&format!(
        "kind = \"sql_query\"\ndatabase = \"{}\"\n{extra}",
        sb.db.display()
    ))
    .unwrap();
    SqlQuery::new("sql_query", &cfg).unwrap()
}

/// Every file in the folder with a hash of its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let hash = blake3::hash(&std::fs::read(e.path()).unwrap());
            (
                e.file_name().to_string_lossy().into_owned(),
                hash.to_hex().to_string(),
            )
        })
        .collect()
}

async fn call(t: &SqlQuery, q: &str) -> Result<String, ToolError> {
    let ctx = CallContext::with_timeout(Duration::from_secs(5));
    t.call(json!({ "query": q }), &ctx).await
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Refused,
    Failed,
    Invalid,
}

#[tokio::test]
async fn writes_attaches_and_side_effects_are_refused() {
    let sb = sandbox();
    let t = tool(&sb, "");
    let before = snapshot(sb.dir.path());
    let d = sb.dir.path().display().to_string();
    // Relative names land in the test's working directory if anything creates them.
    let rel = format!("sluice_sql_attack_{}.db", std::process::id());
    let cases: Vec<(String, Want)> =
        vec![
        ("DELETE FROM orders".into(), Want::Refused),
        ("DELETE FROM orders RETURNING *".into(), Want::Refused),
        ("UPDATE products SET price = 0".into(), Want::Refused),
        ("INSERT INTO customers VALUES (999, 'Eve', 'Nowhere')".into(), Want::Refused),
        ("INSERT INTO customers SELECT * FROM customers".into(), Want::Refused),
        (
            "INSERT INTO products VALUES (1, 'x', 'y', 1) ON CONFLICT(id) DO UPDATE SET price = 0"
                .into(),
            Want::Refused,
        ),
        ("REPLACE INTO products VALUES (1, 'Widget', 'Toys', 0)".into(), Want::Refused),
        ("DROP TABLE orders".into(), Want::Refused),
        ("CREATE TABLE t(x)".into(), Want::Refused),
        ("CREATE TEMP TABLE t(x)".into(), Want::Refused),
        ("CREATE VIEW v AS SELECT 1".into(), Want::Refused),
        ("CREATE INDEX i ON orders(quantity)".into(), Want::Refused),
        (
            "CREATE TRIGGER tr AFTER INSERT ON orders BEGIN DELETE FROM orders; END".into(),
            Want::Refused,
        ),
        ("ALTER TABLE orders ADD COLUMN x INTEGER".into(), Want::Refused),
        ("WITH x AS (SELECT 1) DELETE FROM orders".into(), Want::Refused),
        ("EXPLAIN DELETE FROM orders".into(), Want::Refused),
        ("SELECT 1; DELETE FROM orders".into(), Want::Refused),
        ("SELECT 1; SELECT 2".into(), Want::Refused),
        ("SELECT 1 /* ; */; DROP TABLE orders --".into(), Want::Refused),
        (format!("ATTACH DATABASE '{d}/evil.db' AS evil"), Want::Refused),
        (format!("ATTACH '{rel}' AS evil"), Want::Refused),
        (format!("ATTACH 'file:{d}/evil2.db?mode=rwc' AS e"), Want::Refused),
        ("DETACH DATABASE main".into(), Want::Refused),
        (format!("VACUUM INTO '{d}/copy.db'"), Want::Refused),
        (format!("VACUUM INTO '{rel}'"), Want::Refused),
        ("VACUUM".into(), Want::Refused),
        ("SELECT load_extension('/tmp/evil.so')".into(), Want::Refused),
        ("SELECT load_extension('libc.so.6', 'system')".into(), Want::Refused),
        ("SELECT randomblob(2e9)".into(), Want::Refused),
        ("SELECT zeroblob(1000000000)".into(), Want::Refused),
        ("SELECT length(zeroblob(10))".into(), Want::Refused),
        ("SELECT random()".into(), Want::Refused),
        // Not compiled into the bundled SQLite: "no such function".
        (format!("SELECT writefile('{d}/w.txt', 'x')"), Want::Failed),
        ("SELECT readfile('/etc/passwd')".into(), Want::Failed),
        ("SELECT fts3_tokenizer('simple')".into(), Want::Refused),
        ("PRAGMA writable_schema = 1".into(), Want::Refused),
        ("PRAGMA journal_mode = WAL".into(), Want::Refused),
        ("PRAGMA user_version = 5".into(), Want::Refused),
        ("PRAGMA query_only = 0".into(), Want::Refused),
        ("PRAGMA table_info(orders)".into(), Want::Refused),
        ("REINDEX".into(), Want::Refused),
        ("ANALYZE".into(), Want::Refused),
        ("SAVEPOINT a".into(), Want::Refused),
        ("BEGIN".into(), Want::Refused),
        ("BEGIN IMMEDIATE".into(), Want::Refused),
        ("COMMIT".into(), Want::Refused),
        ("ROLLBACK".into(), Want::Refused),
        // Builds a string past the value limit: stopped by SQLite, not by memory.
        ("SELECT length(printf('%.*c', 2000000000, 'x'))".into(), Want::Failed),
        ("SELEC 1".into(), Want::Failed),
        ("SELECT * FROM nope".into(), Want::Failed),
        ("".into(), Want::Invalid),
        ("-- only a comment".into(), Want::Invalid),
        ("SELECT 1\0; DELETE FROM orders".into(), Want::Invalid),
    ];
    for (q, want) in &cases {
        let got = call(&t, q).await;
        let kind = match &got {
            Err(ToolError::Refused(m)) => {
                assert!(m.contains("only SELECT queries are allowed"), "{q}: {m}");
                Want::Refused
            }
            Err(ToolError::Failed(_)) => Want::Failed,
            Err(ToolError::InvalidArguments(_)) => Want::Invalid,
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(kind, *want, "{q}: {got:?}");
    }
    assert_eq!(snapshot(sb.dir.path()), before, "the folder changed");
    assert!(!Path::new(&rel).exists(), "{rel} was created");
    // The tool still answers after all that, with the data untouched.
    assert_eq!(
        call(&t, "SELECT COUNT(*) FROM orders").await.unwrap(),
        "500"
    );
    assert_eq!(
        call(&t, "SELECT SUM(price) FROM products").await.unwrap(),
        "479"
    );
}

#[tokio::test]
async fn sqlite_errors_carry_its_message() {
    let sb = sandbox();
    let t = tool(&sb, "");
    assert_eq!(
        call(&t, "SELECT * FROM nope").await,
        Err(ToolError::Failed("no such table: nope".into()))
    );
    let syntax = call(&t, "SELEC 1").await;
    assert!(
        matches!(&syntax, Err(ToolError::Failed(m)) if m.contains("syntax error")),
        "{syntax:?}"
    );
    let missing = call(&t, "SELECT nope FROM orders").await;
    assert!(
        matches!(&missing, Err(ToolError::Failed(m)) if m.contains("no such column: nope")),
        "{missing:?}"
    );
}

const BOMB: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

#[tokio::test]
async fn a_recursive_bomb_times_out() {
    let sb = sandbox();
    let t = tool(&sb, "timeout = \"300ms\"");
    let started = Instant::now();
    let got = call(&t, BOMB).await;
    let took = started.elapsed();
    assert!(matches!(got, Err(ToolError::TimedOut(_))), "{got:?}");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The call's own deadline counts when it is sooner than the tool's timeout.
    let t = tool(&sb, "");
    let ctx = CallContext::with_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let got = t.call(json!({ "query": BOMB }), &ctx).await;
    assert!(matches!(got, Err(ToolError::TimedOut(_))), "{got:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A cross join of the orders table with itself four times is stopped just the same.
    let t = tool(&sb, "timeout = \"200ms\"");
    let got = call(
        &t,
        "SELECT count(*) FROM orders a, orders b, orders c, orders d",
    )
    .await;
    assert!(matches!(got, Err(ToolError::TimedOut(_))), "{got:?}");
}

#[tokio::test]
async fn cancelling_stops_a_running_query_at_once() {
    let sb = sandbox();
    let t = tool(&sb, "timeout = \"30s\"");
    let ctx = CallContext::with_timeout(Duration::from_secs(30));
    let args = json!({ "query": BOMB });
    let running = t.call(args, &ctx);
    tokio::pin!(running);
    // Still running after 100 ms: the bomb is busy.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut running)
            .await
            .is_err()
    );
    let cancelled = Instant::now();
    ctx.cancel.cancel();
    assert_eq!(running.await, Err(ToolError::Cancelled));
    assert!(
        cancelled.elapsed() < Duration::from_millis(50),
        "{:?}",
        cancelled.elapsed()
    );
    // The connection it used is usable again.
    assert_eq!(
        call(&t, "SELECT COUNT(*) FROM customers").await.unwrap(),
        "50"
    );
}

#[tokio::test]
async fn row_and_byte_caps_cut_with_a_note() {
    let sb = sandbox();
    let t = tool(&sb, "");
    let all = call(&t, "SELECT id FROM orders ORDER BY id").await.unwrap();
    let (rows, note) = all.split_once(" [cut: ").unwrap();
    assert_eq!(rows.split(", ").count(), 200, "default max_rows");
    assert!(rows.ends_with(", 200"));
    assert!(note.contains("first 200 rows"), "{note}");

    let t = tool(&sb, "max_rows = 5\nmax_bytes = 100");
    assert_eq!(
        call(&t, "SELECT id, quantity FROM orders ORDER BY id").await.unwrap(),
        "1: 2; 2: 6; 3: 4; 4: 2; 5: 3 [cut: only the first 5 rows are shown; use LIMIT, WHERE or an aggregate]"
    );
    assert_eq!(
        call(&t, "SELECT id FROM orders ORDER BY id LIMIT 5")
            .await
            .unwrap(),
        "1, 2, 3, 4, 5"
    );
    let wide = call(&t, "SELECT group_concat(name, ' ') FROM customers")
        .await
        .unwrap();
    let (text, note) = wide.split_once(" [cut: ").unwrap();
    assert_eq!(text.len(), 100);
    assert!(note.contains("longer than 100 bytes"), "{note}");
    // A value built far past max_bytes is cut, not returned whole.
    let big = call(&t, "SELECT printf('%.*c', 1000000, 'x')")
        .await
        .unwrap();
    assert!(big.len() < 300, "{}", big.len());
}

/// The queries sluice-tiny issues, with what `sales_db.run_query` answers for them.
#[tokio::test]
async fn demo_queries_answer_like_the_training_data() {
    let sb = sandbox();
    let t = tool(&sb, "");
    let j_p = "FROM orders JOIN products ON orders.product_id = products.id";
    let j_pc = format!("{j_p} JOIN customers ON orders.customer_id = customers.id");
    let rev = "SUM(orders.quantity * products.price)";
    for (q, want) in [
        ("SELECT COUNT(*) FROM orders".to_owned(), "500"),
        ("SELECT COUNT(*) FROM customers".to_owned(), "50"),
        (format!("SELECT {rev} {j_p}"), "89888"),
        ("SELECT AVG(price) FROM products".to_owned(), "39.92"),
        ("SELECT AVG(price) FROM products WHERE category = 'Toys'".to_owned(), "18.33"),
        ("SELECT name, price FROM products ORDER BY price DESC LIMIT 1".to_owned(), "Table: 120"),
        (
            "SELECT name FROM products WHERE category = 'Toys' ORDER BY name".to_owned(),
            "Kite, Puzzle, Widget",
        ),
        (
            format!("SELECT products.name, {rev} AS total {j_p} GROUP BY products.name ORDER BY total DESC LIMIT 3"),
            "Table: 22800; Drill: 19313; Chair: 11040",
        ),
        (
            "SELECT country, COUNT(*) FROM customers GROUP BY country ORDER BY country".to_owned(),
            "Brazil: 6; Canada: 4; France: 9; Germany: 9; India: 7; Italy: 5; Japan: 4; Spain: 6",
        ),
        ("SELECT name FROM customers WHERE country = 'Atlantis'".to_owned(), "no rows"),
        ("SELECT SUM(quantity) FROM orders WHERE id < 0".to_owned(), "NULL"),
        (format!("SELECT {rev} {j_pc} WHERE customers.country = 'Nowhere'"), "NULL"),
        ("SELECT sql IS NOT NULL FROM sqlite_schema WHERE name = 'orders'".to_owned(), "1"),
    ] {
        assert_eq!(call(&t, &q).await.as_deref(), Ok(want), "{q}");
    }
}

#[tokio::test]
async fn parallel_calls_each_get_their_answer() {
    let sb = sandbox();
    let t = std::sync::Arc::new(tool(&sb, ""));
    let calls = (0..16).map(|i| {
        let t = std::sync::Arc::clone(&t);
        tokio::spawn(async move { call(&t, &format!("SELECT {i} + COUNT(*) FROM products")).await })
    });
    for (i, h) in calls.enumerate() {
        assert_eq!(h.await.unwrap().unwrap(), (12 + i).to_string());
    }
}

#[test]
fn a_missing_or_broken_database_is_a_startup_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let cfg: ToolConfig = toml::from_str(&format!(
        "kind = \"sql_query\"\ndatabase = \"{}\"",
        missing.display()
    ))
    .unwrap();
    let err = SqlQuery::new("sql_query", &cfg).err().unwrap();
    assert!(err.contains("missing.db"), "{err}");
    assert!(!missing.exists(), "opening must not create the file");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, just text").unwrap();
    let cfg: ToolConfig = toml::from_str(&format!(
        "kind = \"sql_query\"\ndatabase = \"{}\"",
        junk.display()
    ))
    .unwrap();
    let err = SqlQuery::new("sql_query", &cfg).err().unwrap();
    assert!(err.contains("junk.db"), "{err}");
}

#[test]
fn spec_is_what_the_model_was_trained_on() {
    let sb = sandbox();
    let spec = tool(&sb, "").spec().clone();
    assert_eq!(
        spec.description,
        "run a read-only SQL query on the sales database"
    );
    assert_eq!(spec.parameters["required"], json!(["query"]));
    assert_eq!(spec.parameters["properties"]["query"]["type"], "string");
    let custom = tool(&sb, "description = \"query the shop\"")
        .spec()
        .description
        .clone();
    assert_eq!(custom, "query the shop");
}

#[tokio::test]
async fn params_are_bound_and_rows_come_back_as_json() {
    let sb = sandbox();
    let t = tool(&sb, "max_rows = 2");
    let before = snapshot(sb.dir.path());
    let ctx = CallContext::with_timeout(Duration::from_secs(5));
    let value = |args| t.call_value(args, &ctx);

    let rows = value(json!({
        "query": "SELECT id, name FROM customers WHERE id IN (?, ?, ?) ORDER BY id",
        "params": [1, 2.0, "3"],
    }))
    .await
    .unwrap();
    assert_eq!(rows["columns"], json!(["id", "name"]));
    assert_eq!(rows["rows"][0]["id"], 1);
    assert_eq!(
        (rows["row_count"].as_u64(), rows["truncated"].as_bool()),
        (Some(2), Some(true))
    );

    let named = value(json!({
        "query": "SELECT count(*) AS n FROM customers WHERE name = :name OR country = :name",
        "params": {"name": "'; DROP TABLE customers; --"},
    }))
    .await
    .unwrap();
    assert_eq!(named["rows"], json!([{"n": 0}]));

    for (params, needle) in [
        (json!([]), "1 placeholder(s) but 0"),
        (json!([1, 2]), "1 placeholder(s) but 2"),
        (json!([[1]]), "params[0]"),
        (json!("1"), "must be a list"),
        (json!({"other": 1}), "no placeholder `:other`"),
    ] {
        let err = value(
            json!({"query": "SELECT * FROM customers WHERE id = ?", "params": params.clone()}),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, ToolError::InvalidArguments(m) if m.contains(needle)),
            "{params}: {err:?}"
        );
    }
    // The model's text answer is unchanged by params support.
    let text = call(&t, "SELECT count(*) FROM customers").await.unwrap();
    assert!(!text.starts_with('{'), "{text}");
    assert_eq!(snapshot(sb.dir.path()), before);
}
