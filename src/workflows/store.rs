//! The durable run store: workflow runs, their steps and artefacts in one SQLite file
//! (WAL). The runner writes each step's state here as the run goes, so a finished run
//! survives a restart or a SIGKILL of sluice; the HTTP API reads runs and artefacts back
//! from here. On open, runs a previous sluice left `running` become `interrupted`.
//! Every call runs its SQLite work on a blocking thread over one shared connection.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};
use serde_json::Value;

use super::record::{
    now_ms, Artifact, ArtifactMeta, RunRecord, RunStatus, StepRecord, StepStatus, Trigger,
};

/// The schema this build writes (`PRAGMA user_version`). A file with a newer one was
/// written by a newer sluice and is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

/// The error given to runs found `running` when the store opens.
/// A step that was running when sluice stopped.
pub const STEP_INTERRUPTED_ERROR: &str = "sluice stopped while this step ran";
/// A step that had not started when sluice stopped.
pub const STEP_NOT_RUN_ERROR: &str = "not run: sluice stopped";
pub const INTERRUPTED_ERROR: &str = "sluice stopped while this run was in progress";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY NOT NULL, workflow TEXT NOT NULL, tenant TEXT NOT NULL,
    trigger TEXT NOT NULL, status TEXT NOT NULL, inputs TEXT NOT NULL, error TEXT,
    created_at INTEGER NOT NULL, finished_at INTEGER);
CREATE INDEX IF NOT EXISTS runs_workflow_created ON runs (workflow, created_at, id);
CREATE INDEX IF NOT EXISTS runs_tenant_created ON runs (tenant, created_at, id);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at, id);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE, name TEXT NOT NULL,
    position INTEGER NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER, output TEXT,
    output_truncated INTEGER NOT NULL, error TEXT,
    PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE, step TEXT NOT NULL,
    name TEXT NOT NULL, content_type TEXT NOT NULL, bytes INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, step));
";

const RUN_COLS: &str =
    "id, workflow, tenant, trigger, status, inputs, error, created_at, finished_at";

/// What went wrong in the run store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("run store: {0}")]
    Sqlite(String),
    #[error("run store: cannot create {path}: {message}")]
    Io { path: String, message: String },
    #[error("run store: worker thread failed: {0}")]
    Join(String),
    #[error(
        "run store: the database has schema version {found}, newer than the {supported} \
         this sluice understands (written by a newer sluice?); upgrade sluice or use \
         another file"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("run store: no run {0}")]
    NoSuchRun(String),
    #[error("run store: unreadable stored value: {0}")]
    Corrupt(String),
    #[error("run store: cannot encode JSON: {0}")]
    Json(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

/// Which runs [`Store::list_runs`] returns.
#[derive(Debug, Default, Clone)]
pub struct RunFilter<'a> {
    /// Only this workflow's runs.
    pub workflow: Option<&'a str>,
    /// Only this tenant's runs.
    pub tenant: Option<&'a str>,
    /// Only runs older than the run with this id (the last id of the previous page). An
    /// id unknown (or not the tenant's) gives an empty list.
    pub before: Option<&'a str>,
}

/// The run store. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Open or create the database at `path` (creating its parent directories), then
    /// mark every run still `running` (a previous sluice stopped or was killed during
    /// it) as `interrupted`, with its pending and running steps. Returns the store and
    /// how many runs it marked.
    pub async fn open(path: &Path) -> Result<(Store, u64), StoreError> {
        let path = path.to_owned();
        let (conn, marked) = tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                })?;
            }
            let mut conn = Connection::open(&path)
                .map_err(|e| StoreError::Sqlite(format!("cannot open {}: {e}", path.display())))?;
            prepare(&mut conn, true)?;
            let marked = interrupt_running(&mut conn, now_ms())?;
            Ok::<_, StoreError>((conn, marked))
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))??;
        Ok((Store::from_conn(conn), marked))
    }

    /// An in-memory store (tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        prepare(&mut conn, false)?;
        Ok(Store::from_conn(conn))
    }

    fn from_conn(conn: Connection) -> Store {
        Store {
            conn: Arc::new(Mutex::new(conn)),
        }
    }

    /// Run `f` on the connection on a blocking thread.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Run `f` in one immediate (write) transaction on a blocking thread.
    async fn write<F>(&self, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            f(&tx)?;
            Ok(tx.commit()?)
        })
        .await
    }

    /// Insert a new run with its steps (in the given order, usually all `Pending`).
    /// `run.artifacts` is ignored: artefacts come through [`Store::put_artifact`].
    pub async fn insert_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = run.clone();
        let inputs = encode(&run.inputs)?;
        self.write(move |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO runs ({RUN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    run.id,
                    run.workflow,
                    run.tenant,
                    run.trigger.as_str(),
                    run.status.as_str(),
                    inputs,
                    run.error,
                    run.created_at,
                    run.finished_at,
                ],
            )?;
            run.steps
                .iter()
                .try_for_each(|step| write_step(tx, &run.id, step))
        })
        .await
    }

    /// Write one step's current state: replaces the step of that name (keeping its
    /// place in the run's order) or appends it after the run's other steps. The output
    /// is stored as given (the runner caps it: `workflows.max_output_bytes`).
    pub async fn update_step(&self, run_id: &str, step: &StepRecord) -> Result<(), StoreError> {
        let (run_id, step) = (run_id.to_owned(), step.clone());
        self.write(move |tx| {
            require_run(tx, &run_id)?;
            write_step(tx, &run_id, &step)
        })
        .await
    }

    /// End a run: its status, error and end time.
    pub async fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
        finished_at: i64,
    ) -> Result<(), StoreError> {
        let (run_id, error) = (run_id.to_owned(), error.map(str::to_owned));
        self.with_conn(move |conn| {
            let changed = conn.execute(
                "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
                params![run_id, status.as_str(), error, finished_at],
            )?;
            if changed == 0 {
                return Err(StoreError::NoSuchRun(run_id));
            }
            Ok(())
        })
        .await
    }

    /// Store an artefact, replacing one of the same run and step. Its stored size is
    /// `data.len()` (`meta.bytes` is not trusted).
    pub async fn put_artifact(&self, run_id: &str, artifact: &Artifact) -> Result<(), StoreError> {
        let (run_id, artifact) = (run_id.to_owned(), artifact.clone());
        self.write(move |tx| {
            require_run(tx, &run_id)?;
            let meta = &artifact.meta;
            tx.execute(
                "INSERT INTO artifacts (run_id, step, name, content_type, bytes, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (run_id, step) DO UPDATE SET name = excluded.name,
                   content_type = excluded.content_type, bytes = excluded.bytes,
                   data = excluded.data",
                params![
                    run_id,
                    meta.step,
                    meta.name,
                    meta.content_type,
                    to_i64(artifact.data.len()),
                    artifact.data,
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// A run with its steps (in their order) and its artefacts' descriptions (no bytes).
    pub async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            let sql = format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1");
            Ok(query_runs(conn, &sql, vec![SqlValue::Text(id)])?.pop())
        })
        .await
    }

    /// Runs newest first (by creation time, then id), as `filter` says, at most `limit`,
    /// each with its steps and artefact descriptions. Three queries, however many runs.
    pub async fn list_runs(
        &self,
        filter: &RunFilter<'_>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let workflow = filter.workflow.map(str::to_owned);
        let tenant = filter.tenant.map(str::to_owned);
        let before = filter.before.map(str::to_owned);
        self.with_conn(move |conn| {
            let mut sql = format!("SELECT {RUN_COLS} FROM runs WHERE 1 = 1");
            let mut args: Vec<SqlValue> = Vec::new();
            if let Some(w) = workflow {
                sql.push_str(" AND workflow = ?");
                args.push(SqlValue::Text(w));
            }
            if let Some(t) = &tenant {
                sql.push_str(" AND tenant = ?");
                args.push(SqlValue::Text(t.clone()));
            }
            if let Some(b) = before {
                let cursor: Option<(i64, String)> = conn
                    .query_row(
                        "SELECT created_at, id FROM runs WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)",
                        params![b, tenant],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let Some((created_at, id)) = cursor else {
                    return Ok(Vec::new());
                };
                sql.push_str(" AND (created_at < ? OR (created_at = ? AND id < ?))");
                args.extend([
                    SqlValue::Integer(created_at),
                    SqlValue::Integer(created_at),
                    SqlValue::Text(id),
                ]);
            }
            sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
            args.push(SqlValue::Integer(to_i64(limit)));
            query_runs(conn, &sql, args)
        })
        .await
    }

    /// The artefact the step `step` of run `run_id` made, with its bytes.
    pub async fn artifact(&self, run_id: &str, step: &str) -> Result<Option<Artifact>, StoreError> {
        let (run_id, step) = (run_id.to_owned(), step.to_owned());
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT step, name, content_type, bytes, data FROM artifacts
                 WHERE run_id = ?1 AND step = ?2",
            )?;
            let mut rows = stmt.query(params![run_id, step])?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            let (meta, data) = (meta_from_row(row)?, row.get(4)?);
            Ok(Some(Artifact { meta, data }))
        })
        .await
    }

    /// Delete finished runs (with their steps and artefacts) beyond the newest `keep`
    /// finished runs of each workflow. Running runs are never deleted and do not count
    /// towards `keep`. Returns how many runs were deleted.
    pub async fn prune(&self, keep: usize) -> Result<u64, StoreError> {
        self.with_conn(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM runs WHERE id IN (
                   SELECT id FROM (
                     SELECT id, ROW_NUMBER() OVER (
                       PARTITION BY workflow ORDER BY created_at DESC, id DESC) AS n
                     FROM runs WHERE status <> ?1)
                   WHERE n > ?2)",
                params![RunStatus::Running.as_str(), to_i64(keep)],
            )?;
            Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
        })
        .await
    }
}

/// Connection settings, the schema-version check and the schema.
fn prepare(conn: &mut Connection, file: bool) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_secs(5))?;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if file {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "run store: WAL unavailable, using this journal mode");
        }
    }
    // NORMAL, not FULL: in WAL mode a commit has reached the WAL file (the OS's page
    // cache) before it returns, so a finished run survives a crash or SIGKILL of
    // sluice; only a power loss or OS crash can lose the last commits, and the database
    // stays consistent either way. FULL would fsync on every step update for that.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    if found < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

/// Mark runs still `running` (and their pending and running steps) `interrupted`.
fn interrupt_running(conn: &mut Connection, now: i64) -> Result<u64, StoreError> {
    let (running, interrupted) = (RunStatus::Running.as_str(), RunStatus::Interrupted.as_str());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The same words a graceful stop writes (`run.rs`), so a killed sluice and a
    // stopped one leave the same record.
    tx.execute(
        "UPDATE steps SET status = ?1, finished_at = ?5,
           error = CASE WHEN status = ?3 THEN ?6 ELSE ?7 END
         WHERE status IN (?2, ?3) AND run_id IN (SELECT id FROM runs WHERE status = ?4)",
        params![
            StepStatus::Interrupted.as_str(),
            StepStatus::Pending.as_str(),
            StepStatus::Running.as_str(),
            running,
            now,
            STEP_INTERRUPTED_ERROR,
            STEP_NOT_RUN_ERROR,
        ],
    )?;
    let marked = tx.execute(
        "UPDATE runs SET status = ?1, error = ?2, finished_at = ?3 WHERE status = ?4",
        params![interrupted, INTERRUPTED_ERROR, now, running],
    )?;
    tx.commit()?;
    Ok(u64::try_from(marked).unwrap_or(u64::MAX))
}

fn require_run(conn: &Connection, run_id: &str) -> Result<(), StoreError> {
    let found = conn
        .query_row("SELECT 1 FROM runs WHERE id = ?1", [run_id], |_| Ok(()))
        .optional()?;
    found.ok_or_else(|| StoreError::NoSuchRun(run_id.to_owned()))
}

/// Upsert one step; a new one goes after the run's existing steps.
fn write_step(conn: &Connection, run_id: &str, step: &StepRecord) -> Result<(), StoreError> {
    let output = step.output.as_ref().map(encode).transpose()?;
    conn.prepare_cached(
        "INSERT INTO steps (run_id, name, position, kind, status, attempts, started_at,
           finished_at, output, output_truncated, error)
         VALUES (?1, ?2, (SELECT COALESCE(MAX(position) + 1, 0) FROM steps WHERE run_id = ?1),
           ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (run_id, name) DO UPDATE SET kind = excluded.kind,
           status = excluded.status, attempts = excluded.attempts,
           started_at = excluded.started_at, finished_at = excluded.finished_at,
           output = excluded.output, output_truncated = excluded.output_truncated,
           error = excluded.error",
    )?
    .execute(params![
        run_id,
        step.name,
        step.kind,
        step.status.as_str(),
        step.attempts,
        step.started_at,
        step.finished_at,
        output,
        step.output_truncated,
        step.error,
    ])?;
    Ok(())
}

/// The runs `sql` (selecting [`RUN_COLS`]) finds, with their steps and artefacts.
fn query_runs(
    conn: &Connection,
    sql: &str,
    args: Vec<SqlValue>,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut runs = Vec::new();
    while let Some(row) = rows.next()? {
        runs.push(run_from_row(row)?);
    }
    drop(rows);
    attach_children(conn, &mut runs)?;
    Ok(runs)
}

/// Fill in the steps and artefact descriptions of `runs` (two queries).
fn attach_children(conn: &Connection, runs: &mut [RunRecord]) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let ids = encode(&Value::from(ids))?;
    let mut steps: HashMap<String, Vec<StepRecord>> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT run_id, name, kind, status, attempts, started_at, finished_at, output,
           output_truncated, error
         FROM steps WHERE run_id IN (SELECT value FROM json_each(?1))
         ORDER BY run_id, position",
    )?;
    let mut rows = stmt.query([&ids])?;
    while let Some(row) = rows.next()? {
        steps
            .entry(row.get(0)?)
            .or_default()
            .push(step_from_row(row)?);
    }
    drop(rows);
    let mut artifacts: HashMap<String, Vec<ArtifactMeta>> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT a.step, a.name, a.content_type, a.bytes, a.run_id
         FROM artifacts a LEFT JOIN steps s ON s.run_id = a.run_id AND s.name = a.step
         WHERE a.run_id IN (SELECT value FROM json_each(?1))
         ORDER BY a.run_id, s.position IS NULL, s.position, a.step",
    )?;
    let mut rows = stmt.query([&ids])?;
    while let Some(row) = rows.next()? {
        artifacts
            .entry(row.get(4)?)
            .or_default()
            .push(meta_from_row(row)?);
    }
    for run in runs.iter_mut() {
        run.steps = steps.remove(&run.id).unwrap_or_default();
        run.artifacts = artifacts.remove(&run.id).unwrap_or_default();
    }
    Ok(())
}

fn run_from_row(row: &Row<'_>) -> Result<RunRecord, StoreError> {
    let inputs: String = row.get(5)?;
    Ok(RunRecord {
        id: row.get(0)?,
        workflow: row.get(1)?,
        tenant: row.get(2)?,
        trigger: parsed(row.get(3)?, Trigger::parse, "trigger")?,
        status: parsed(row.get(4)?, RunStatus::parse, "run status")?,
        inputs: decode(&inputs)?,
        error: row.get(6)?,
        created_at: row.get(7)?,
        finished_at: row.get(8)?,
        steps: Vec::new(),
        artifacts: Vec::new(),
    })
}

/// A step from `run_id, name, kind, status, attempts, started_at, finished_at, output,
/// output_truncated, error`.
fn step_from_row(row: &Row<'_>) -> Result<StepRecord, StoreError> {
    let attempts: i64 = row.get(4)?;
    let output: Option<String> = row.get(7)?;
    Ok(StepRecord {
        name: row.get(1)?,
        kind: row.get(2)?,
        status: parsed(row.get(3)?, StepStatus::parse, "step status")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("step attempts {attempts}")))?,
        started_at: row.get(5)?,
        finished_at: row.get(6)?,
        output: output.as_deref().map(decode).transpose()?,
        output_truncated: row.get(8)?,
        error: row.get(9)?,
    })
}

/// An artefact description from `step, name, content_type, bytes`.
fn meta_from_row(row: &Row<'_>) -> Result<ArtifactMeta, StoreError> {
    let bytes: i64 = row.get(3)?;
    Ok(ArtifactMeta {
        step: row.get(0)?,
        name: row.get(1)?,
        content_type: row.get(2)?,
        bytes: u64::try_from(bytes)
            .map_err(|_| StoreError::Corrupt(format!("artefact size {bytes}")))?,
    })
}

/// `text` read back by `parse` (a status or trigger).
fn parsed<T>(text: String, parse: fn(&str) -> Option<T>, what: &str) -> Result<T, StoreError> {
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} {text:?}")))
}

fn encode(value: &Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Json(e.to_string()))
}

fn decode(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("JSON: {e}")))
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
