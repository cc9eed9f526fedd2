//! `sql_query`: one read-only SELECT on one SQLite database (`[tools.NAME] database`),
//! run by the agent loop when a model calls it. The answer is the rows as text in the
//! format sluice-tiny was trained on (`training/sales_db.py`, `format_result`).
//!
//! Sandbox, in layers:
//! - the file is opened `SQLITE_OPEN_READ_ONLY` with `query_only`, defensive mode and an
//!   untrusted schema;
//! - an authorizer lets a statement prepare only if it is made of SELECT, READ,
//!   recursive CTEs and functions from [`PURE_FUNCTIONS`] (plus `functions` from the
//!   config): ATTACH, PRAGMA, transactions, DDL and DML are denied while preparing;
//! - the prepared statement must be read-only (`sqlite3_stmt_readonly`) and a SELECT:
//!   this stops `VACUUM INTO`, which no authorizer sees;
//! - one statement only: text after the first `;` may only be blanks, comments or `;`;
//! - limits: strings and blobs at most [`value_limit`] bytes, no attached databases;
//!   a progress handler stops the query at the deadline (`timeout`, default 2 s, or the
//!   call's own deadline if sooner) or when the call is cancelled.
//!
//! Values are never spliced into SQL by sluice: workflow steps pass them in `params`,
//! bound to `?` / `:name` placeholders (`rows`), and read rows as JSON (`call_value`).
//!
//! Queries run on tokio's blocking pool with connections from a small idle pool.
//! Output (`format`) is capped at `max_rows` rows (default 200) and `max_bytes` bytes
//! (default 64 KiB); a cut result ends with a note that says so.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{one_string_schema, string_arg, CallContext, Tool, ToolError, ToolSpec};
use crate::config::ToolConfig;

mod format;
mod rows;

use format::Output;
pub use format::{format_float, format_value, python_bytes_repr};
use rows::{Answer, Params, Shape};

/// What sluice-tiny was trained with: keep it word for word.
pub const DEFAULT_DESCRIPTION: &str = "run a read-only SQL query on the sales database";
pub const DEFAULT_MAX_ROWS: usize = 200;
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest query text accepted.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Idle connections kept for the next calls.
const IDLE_CONNECTIONS: usize = 4;
/// VM instructions between two looks at the clock and the cancellation.
const PROGRESS_STEPS: i32 = 1000;

/// Built-in functions a query may call: deterministic, no I/O, output bounded by the
/// input (and by [`value_limit`]). Not here, on purpose: `load_extension`,
/// `randomblob`, `zeroblob`, `random`, `fts3_tokenizer`, `readfile`, `writefile`,
/// `edit`, `sqlite_*`, `changes`, `last_insert_rowid`.
#[rustfmt::skip]
pub const PURE_FUNCTIONS: &[&str] = &[
    // aggregates and window functions
    "count", "sum", "total", "avg", "min", "max", "group_concat", "string_agg",
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag",
    "lead", "first_value", "last_value", "nth_value",
    // scalars
    "abs", "round", "sign", "length", "octet_length", "lower", "upper", "substr",
    "substring", "trim", "ltrim", "rtrim", "replace", "coalesce", "ifnull", "nullif",
    "iif", "if", "instr", "like", "glob", "typeof", "hex", "unhex", "quote", "char",
    "unicode", "concat", "concat_ws", "printf", "format", "likely", "unlikely",
    "likelihood", "soundex",
    // dates
    "date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff",
    // math (when compiled in)
    "ceil", "ceiling", "floor", "trunc", "ln", "log", "log10", "log2", "exp", "pow",
    "power", "sqrt", "mod", "pi",
    // JSON
    "json", "json_extract", "json_array", "json_object", "json_type", "json_valid",
    "json_array_length", "json_quote", "json_group_array", "json_group_object", "->",
    "->>",
];

/// Functions `functions` in the config may never allow: they read or write files,
/// load code or hand out pointers.
const NEVER_FUNCTIONS: &[&str] = &[
    "load_extension",
    "fts3_tokenizer",
    "readfile",
    "writefile",
    "edit",
];

const ONLY_SELECT: &str = "only SELECT queries are allowed";

pub struct SqlQuery {
    spec: ToolSpec,
    shared: Arc<Shared>,
}

/// What the blocking side needs: settings and idle connections.
struct Shared {
    path: PathBuf,
    functions: Arc<BTreeSet<String>>,
    max_rows: usize,
    max_bytes: usize,
    timeout: Duration,
    idle: Mutex<Vec<Sandboxed>>,
}

/// A connection with its authorizer's notes.
struct Sandboxed {
    conn: Connection,
    log: Arc<Mutex<AuthLog>>,
}

/// What the authorizer saw while the current statement was prepared.
#[derive(Default)]
struct AuthLog {
    saw_select: bool,
    denied: Option<String>,
}

impl SqlQuery {
    pub fn new(name: &str, config: &ToolConfig) -> Result<SqlQuery, String> {
        let path = config
            .database
            .as_deref()
            .ok_or_else(|| "`database` is required: the SQLite file to query".to_owned())?;
        let path = std::fs::canonicalize(path)
            .map_err(|e| format!("database `{}` cannot be opened: {e}", path.display()))?;
        let mut functions: BTreeSet<String> =
            PURE_FUNCTIONS.iter().map(|f| (*f).to_owned()).collect();
        for f in &config.functions {
            let f = f.trim().to_ascii_lowercase();
            if NEVER_FUNCTIONS.contains(&f.as_str()) {
                return Err(format!(
                    "functions: `{f}` can never be allowed in sql_query"
                ));
            }
            functions.insert(f);
        }
        let max_rows = config.max_rows.unwrap_or(DEFAULT_MAX_ROWS);
        let max_bytes = config.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_rows == 0 || max_bytes == 0 {
            return Err("max_rows and max_bytes must be at least 1".into());
        }
        let shared = Shared {
            path,
            functions: Arc::new(functions),
            max_rows,
            max_bytes,
            timeout: config.timeout.unwrap_or(DEFAULT_TIMEOUT),
            idle: Mutex::new(Vec::new()),
        };
        // Open one now: a missing or broken file is a start-up error, not a call error.
        let first = shared.open()?;
        shared.put_back(first);
        Ok(SqlQuery {
            spec: ToolSpec {
                name: name.to_owned(),
                description: config
                    .description
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DESCRIPTION.into()),
                parameters: one_string_schema("query", "one SQLite SELECT statement"),
            },
            shared: Arc::new(shared),
        })
    }
}

#[async_trait]
impl Tool for SqlQuery {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, ctx: &CallContext) -> Result<String, ToolError> {
        match self.call_shaped(arguments, ctx, Shape::Text).await? {
            Answer::Text(text) => Ok(text),
            Answer::Rows(rows) => Ok(rows.to_string()),
        }
    }

    /// Rows as JSON for workflow steps: `{"columns", "rows": [{column: value}],
    /// "row_count", "truncated"}`.
    async fn call_value(&self, arguments: Value, ctx: &CallContext) -> Result<Value, ToolError> {
        match self.call_shaped(arguments, ctx, Shape::Rows).await? {
            Answer::Text(text) => Ok(Value::String(text)),
            Answer::Rows(rows) => Ok(rows),
        }
    }
}

impl SqlQuery {
    async fn call_shaped(
        &self,
        arguments: Value,
        ctx: &CallContext,
        shape: Shape,
    ) -> Result<Answer, ToolError> {
        let query = string_arg(&arguments, "query")?.trim().to_owned();
        check_text(&query)?;
        let params = Params::from_arguments(&arguments)?;
        let timeout = self.shared.timeout.min(ctx.remaining());
        let deadline = tokio::time::Instant::now() + timeout;
        // Stops the blocking work when the call is cancelled or this future dropped.
        let stop = ctx.cancel.child_token();
        let _stop_on_drop = stop.clone().drop_guard();
        let shared = Arc::clone(&self.shared);
        let std_deadline = std::time::Instant::now() + timeout;
        let work = tokio::task::spawn_blocking(move || {
            shared.run(&query, &params, shape, std_deadline, &stop, timeout)
        });
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
            joined = work => joined
                .map_err(|e| ToolError::Failed(format!("the query did not finish: {e}")))?,
            () = tokio::time::sleep_until(deadline) => Err(ToolError::TimedOut(timeout)),
        }
    }
}

/// Refusals that need no database: empty, too long, several statements.
fn check_text(query: &str) -> Result<(), ToolError> {
    if query.is_empty() {
        return Err(ToolError::InvalidArguments("the query is empty".into()));
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(ToolError::InvalidArguments(format!(
            "the query is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    if query.contains('\0') {
        return Err(ToolError::InvalidArguments(
            "the query contains a NUL character".into(),
        ));
    }
    if has_second_statement(query) {
        return Err(one_statement());
    }
    Ok(())
}

fn one_statement() -> ToolError {
    ToolError::Refused(format!(
        "send one statement at a time: {ONLY_SELECT}, and nothing may follow the first `;`"
    ))
}

impl Shared {
    /// A connection ready for a call: the idle one or a new one.
    fn take(&self) -> Result<Sandboxed, ToolError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(c) => Ok(c),
            None => self.open().map_err(ToolError::Unavailable),
        }
    }

    fn put_back(&self, c: Sandboxed) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(c);
        }
    }

    /// Opens the database read-only with every guard in place.
    fn open(&self) -> Result<Sandboxed, String> {
        let shown = self.path.display();
        let fail = |e: rusqlite::Error| format!("database `{shown}` cannot be opened: {e}");
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&self.path, flags).map_err(fail)?;
        conn.pragma_update(None, "query_only", true).map_err(fail)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .map_err(fail)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
            .map_err(fail)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, false)
            .map_err(fail)?;
        set_limits(&conn, value_limit(self.max_bytes)).map_err(fail)?;
        // Reads the header and schema: a file that is not a database fails here.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(fail)?;
        let log = Arc::new(Mutex::new(AuthLog::default()));
        let (hook_log, functions) = (Arc::clone(&log), Arc::clone(&self.functions));
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let mut log = hook_log.lock().unwrap_or_else(PoisonError::into_inner);
            match authorize(ctx.action, &functions) {
                Ok(select) => {
                    log.saw_select |= select;
                    Authorization::Allow
                }
                Err(reason) => {
                    log.denied.get_or_insert(reason);
                    Authorization::Deny
                }
            }
        }))
        .map_err(fail)?;
        Ok(Sandboxed { conn, log })
    }

    /// One query on the blocking pool.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        query: &str,
        params: &Params,
        shape: Shape,
        deadline: std::time::Instant,
        stop: &CancellationToken,
        timeout: Duration,
    ) -> Result<Answer, ToolError> {
        let mut c = self.take()?;
        let stopped = {
            let stop = stop.clone();
            move || stop.is_cancelled() || std::time::Instant::now() >= deadline
        };
        c.conn
            .progress_handler(PROGRESS_STEPS, Some(stopped))
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        *c.log.lock().unwrap_or_else(PoisonError::into_inner) = AuthLog::default();
        let out = self.query(&c, query, params, shape);
        self.put_back(c);
        out.map_err(|e| match e {
            Stop::Tool(e) => e,
            Stop::Interrupted if stop.is_cancelled() => ToolError::Cancelled,
            Stop::Interrupted => ToolError::TimedOut(timeout),
        })
    }

    fn query(
        &self,
        c: &Sandboxed,
        query: &str,
        params: &Params,
        shape: Shape,
    ) -> Result<Answer, Stop> {
        let prepared = c.conn.prepare(query);
        let log = std::mem::take(&mut *c.log.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(reason) = log.denied {
            return Err(Stop::Tool(ToolError::Refused(reason)));
        }
        let mut stmt = prepared.map_err(Stop::from_sqlite)?;
        if !stmt.readonly() || !log.saw_select {
            return Err(Stop::Tool(ToolError::Refused(format!(
                "{ONLY_SELECT}: this statement is not a SELECT"
            ))));
        }
        params.bind(&mut stmt).map_err(|e| match e {
            rows::BindError::Tool(e) => Stop::Tool(e),
            rows::BindError::Sqlite(e) => Stop::from_sqlite(e),
        })?;
        let columns = stmt.column_count();
        if shape == Shape::Rows {
            let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
            let mut rows = stmt.raw_query();
            let mut out = rows::JsonRows::new(names, self.max_rows, self.max_bytes);
            while let Some(row) = rows.next().map_err(Stop::from_sqlite)? {
                if !out.push(row).map_err(Stop::from_sqlite)? {
                    break;
                }
            }
            return Ok(Answer::Rows(out.finish()));
        }
        let mut rows = stmt.raw_query();
        let mut out = Output::new(columns, self.max_rows, self.max_bytes);
        while let Some(row) = rows.next().map_err(Stop::from_sqlite)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(format_value(row.get_ref(i).map_err(Stop::from_sqlite)?));
            }
            if !out.push(&values) {
                break;
            }
        }
        Ok(Answer::Text(out.finish()))
    }
}

/// Why a query stopped without rows.
enum Stop {
    Tool(ToolError),
    /// The progress handler stopped it: deadline or cancellation.
    Interrupted,
}

impl Stop {
    fn from_sqlite(e: rusqlite::Error) -> Stop {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::OperationInterrupted => {
                Stop::Interrupted
            }
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == ErrorCode::AuthorizationForStatementDenied =>
            {
                Stop::Tool(ToolError::Refused(format!("{ONLY_SELECT}: not authorized")))
            }
            rusqlite::Error::MultipleStatement => Stop::Tool(one_statement()),
            rusqlite::Error::ExecuteReturnedResults | rusqlite::Error::Empty => Stop::Tool(
                ToolError::InvalidArguments("the query holds no statement".into()),
            ),
            rusqlite::Error::SqliteFailure(_, Some(msg)) => {
                Stop::Tool(ToolError::Failed(msg.clone()))
            }
            _ => Stop::Tool(ToolError::Failed(e.to_string())),
        }
    }
}

/// The authorizer's rule: `Ok(true)` for a SELECT, `Ok(false)` for other allowed parts,
/// `Err(reason)` for anything else.
fn authorize(action: AuthAction<'_>, functions: &BTreeSet<String>) -> Result<bool, String> {
    let what = match action {
        AuthAction::Select => return Ok(true),
        AuthAction::Read { .. } | AuthAction::Recursive => return Ok(false),
        AuthAction::Function { function_name } => {
            if functions.contains(&function_name.to_ascii_lowercase()) {
                return Ok(false);
            }
            return Err(format!(
                "the function `{function_name}` is not allowed: {ONLY_SELECT}, with pure \
                 built-in functions (count, sum, avg, round, date, ...)"
            ));
        }
        AuthAction::Pragma { pragma_name, .. } => {
            return Err(format!(
                "`PRAGMA {pragma_name}` is not allowed: {ONLY_SELECT} (read the schema with \
                 SELECT sql FROM sqlite_schema)"
            ))
        }
        AuthAction::Attach { .. } => "ATTACH",
        AuthAction::Detach { .. } => "DETACH",
        // SQLite asks about its own tables first when a statement changes the schema.
        AuthAction::Insert { table_name } => match table_name {
            "sqlite_master" | "sqlite_temp_master" => "CREATE",
            t if t.starts_with("sqlite_stat") => "ANALYZE",
            _ => "INSERT",
        },
        AuthAction::Update { table_name, .. } => match table_name {
            "sqlite_master" | "sqlite_temp_master" => "ALTER",
            _ => "UPDATE",
        },
        AuthAction::Delete { table_name } => match table_name {
            "sqlite_master" | "sqlite_temp_master" => "DROP",
            _ => "DELETE",
        },
        AuthAction::Transaction { .. } => "a transaction (BEGIN, COMMIT, ROLLBACK)",
        AuthAction::Savepoint { .. } => "SAVEPOINT",
        AuthAction::Reindex { .. } => "REINDEX",
        AuthAction::Analyze { .. } => "ANALYZE",
        AuthAction::AlterTable { .. } => "ALTER TABLE",
        AuthAction::CreateIndex { .. }
        | AuthAction::CreateTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::CreateTrigger { .. }
        | AuthAction::CreateView { .. }
        | AuthAction::CreateVtable { .. } => "CREATE",
        AuthAction::DropIndex { .. }
        | AuthAction::DropTable { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. }
        | AuthAction::DropTrigger { .. }
        | AuthAction::DropView { .. }
        | AuthAction::DropVtable { .. } => "DROP",
        _ => "this statement",
    };
    Err(format!(
        "{what} is not allowed: {ONLY_SELECT} on this read-only database"
    ))
}

/// The largest string or blob a query may build: 8 MiB, or twice `max_bytes`.
pub fn value_limit(max_bytes: usize) -> i32 {
    i32::try_from(max_bytes.saturating_mul(2))
        .unwrap_or(i32::MAX)
        .max(8 << 20)
}

/// Per-connection limits: value size, query length, no attached databases.
fn set_limits(conn: &Connection, value_bytes: i32) -> rusqlite::Result<()> {
    use rusqlite::limits::Limit;
    let sql_bytes = i32::try_from(MAX_QUERY_BYTES).unwrap_or(i32::MAX);
    for (limit, value) in [
        (Limit::SQLITE_LIMIT_LENGTH, value_bytes),
        (Limit::SQLITE_LIMIT_SQL_LENGTH, sql_bytes),
        (Limit::SQLITE_LIMIT_ATTACHED, 0),
    ] {
        conn.set_limit(limit, value)?;
    }
    Ok(())
}

/// Whether something other than blanks, comments and `;` follows the first statement.
pub fn has_second_statement(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut ended = false;
    while i < b.len() {
        let c = b[i];
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            i = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p + 1);
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = find(b, i + 2, b"*/").map_or(b.len(), |p| p + 2);
        } else if ended {
            if !(c == b';' || c.is_ascii_whitespace()) {
                return true;
            }
            i += 1;
        } else if c == b';' {
            ended = true;
            i += 1;
        } else if let Some(close) = match c {
            b'\'' | b'"' | b'`' => Some(c),
            b'[' => Some(b']'),
            _ => None,
        } {
            // A doubled quote inside is two adjacent quoted parts: same result.
            i = find(b, i + 1, &[close]).map_or(b.len(), |p| p + 1);
        } else {
            i += 1;
        }
    }
    false
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool() -> SqlQuery {
        let db = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sales.db");
        let cfg: ToolConfig =
            toml::from_str(&format!("kind = \"sql_query\"\ndatabase = \"{db}\"")).unwrap();
        SqlQuery::new("sql_query", &cfg).unwrap()
    }

    async fn run(tool: &SqlQuery, q: &str) -> Result<String, ToolError> {
        let ctx = CallContext::with_timeout(Duration::from_secs(5));
        tool.call(json!({ "query": q }), &ctx).await
    }

    /// Expected outputs come from `sales_db.run_query` in training/sales_db.py.
    #[tokio::test]
    async fn output_matches_the_training_format() {
        let t = tool();
        for (q, want) in [
            ("SELECT COUNT(*) FROM orders", "500"),
            (
                "SELECT SUM(orders.quantity * products.price) FROM orders JOIN products ON orders.product_id = products.id",
                "89888",
            ),
            ("SELECT AVG(price) FROM products", "39.92"),
            ("SELECT AVG(price) FROM products WHERE category = 'Tools'", "42"),
            ("SELECT AVG(price) FROM products WHERE category = 'Home'", "71.67"),
            ("SELECT avg(quantity) FROM orders", "4.28"),
            (
                "SELECT name FROM products WHERE category = 'Toys' ORDER BY name",
                "Kite, Puzzle, Widget",
            ),
            ("SELECT name, price FROM products ORDER BY price DESC LIMIT 1", "Table: 120"),
            (
                "SELECT country, COUNT(*) FROM customers GROUP BY country ORDER BY country",
                "Brazil: 6; Canada: 4; France: 9; Germany: 9; India: 7; Italy: 5; Japan: 4; Spain: 6",
            ),
            (
                "SELECT products.name, SUM(orders.quantity * products.price) AS total FROM orders JOIN products ON orders.product_id = products.id GROUP BY products.name ORDER BY total DESC LIMIT 3",
                "Table: 22800; Drill: 19313; Chair: 11040",
            ),
            ("SELECT name FROM customers WHERE country = 'Atlantis'", "no rows"),
            ("SELECT NULL", "NULL"),
            ("SELECT SUM(quantity) FROM orders WHERE id < 0", "NULL"),
            ("SELECT NULL, 1, 'x'", "NULL: 1: x"),
            (
                "SELECT 2.0, 2.5, 1.005, 0.125, 0.001, -0.001, 1e20, -0.0, 3.14159, 1e999, -1e999, 0.1+0.2",
                "2: 2.5: 1: 0.12: 0: -0: 100000000000000000000: 0: 3.14: inf: -inf: 0.3",
            ),
            ("SELECT x'00ff41'", "b'\\x00\\xffA'"),
            ("SELECT 1;  -- done\n;", "1"),
        ] {
            assert_eq!(run(&t, q).await.as_deref(), Ok(want), "{q}");
        }
    }

    #[test]
    fn finds_trailing_statements_outside_quotes_and_comments() {
        for (sql, two) in [
            ("SELECT 1", false),
            ("SELECT 1;", false),
            ("SELECT 1; ;\n -- x; DELETE\n /* ; DROP */ ;", false),
            ("SELECT ';DELETE FROM t'", false),
            ("SELECT \"a;b\", [c;d], `e;f` FROM t", false),
            ("SELECT 'it''s;' ; ", false),
            ("SELECT 1; DELETE FROM orders", true),
            ("SELECT 1;/* c */SELECT 2", true),
            ("SELECT 1 -- ;\n; x", true),
        ] {
            assert_eq!(has_second_statement(sql), two, "{sql}");
        }
    }

    #[tokio::test]
    async fn caps_cut_with_a_note() {
        let db = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sales.db");
        let cfg: ToolConfig = toml::from_str(&format!(
            "kind = \"sql_query\"\ndatabase = \"{db}\"\nmax_rows = 3\nmax_bytes = 40"
        ))
        .unwrap();
        let t = SqlQuery::new("sql_query", &cfg).unwrap();
        let rows = run(&t, "SELECT id FROM orders ORDER BY id").await.unwrap();
        assert!(
            rows.starts_with("1, 2, 3 [cut: only the first 3 rows"),
            "{rows}"
        );
        let exact = run(&t, "SELECT id FROM orders ORDER BY id LIMIT 3")
            .await
            .unwrap();
        assert_eq!(exact, "1, 2, 3");
        let long = run(&t, "SELECT group_concat(name) FROM customers")
            .await
            .unwrap();
        let (head, note) = long.split_once(" [cut: ").unwrap();
        assert_eq!(head.len(), 40);
        assert!(note.contains("longer than 40 bytes"), "{long}");
    }

    #[tokio::test]
    async fn blocking_work_stops_when_cancelled() {
        let t = tool();
        let stop = CancellationToken::new();
        let shared = Arc::clone(&t.shared);
        let bomb =
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
        let far = std::time::Instant::now() + Duration::from_secs(30);
        let token = stop.clone();
        let work = tokio::task::spawn_blocking(move || {
            shared.run(
                bomb,
                &Params::None,
                Shape::Text,
                far,
                &token,
                Duration::from_secs(30),
            )
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cancelled_at = std::time::Instant::now();
        stop.cancel();
        assert_eq!(work.await.unwrap(), Err(ToolError::Cancelled));
        assert!(cancelled_at.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn missing_database_names_the_path() {
        let cfg: ToolConfig =
            toml::from_str("kind = \"sql_query\"\ndatabase = \"/nonexistent/x.db\"").unwrap();
        let err = SqlQuery::new("sql_query", &cfg).err().unwrap();
        assert!(err.contains("/nonexistent/x.db"), "{err}");
        let cfg: ToolConfig = toml::from_str(&format!(
            "kind = \"sql_query\"\ndatabase = \"{}\"",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")
        ))
        .unwrap();
        let err = SqlQuery::new("sql_query", &cfg).err().unwrap();
        assert!(
            err.contains("Cargo.toml") && err.contains("not a database"),
            "{err}"
        );
        let cfg: ToolConfig = toml::from_str(&format!(
            "kind = \"sql_query\"\ndatabase = \"{}\"\nfunctions = [\"load_extension\"]",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sales.db")
        ))
        .unwrap();
        assert!(SqlQuery::new("sql_query", &cfg).is_err());
    }

    #[test]
    fn default_description_is_the_trained_one() {
        assert_eq!(
            tool().spec().description,
            "run a read-only SQL query on the sales database"
        );
    }
}
