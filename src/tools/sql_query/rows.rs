//! `sql_query`'s bound parameters and its JSON answer. Workflow steps pass values in
//! `params` (a list for `?` / `?NNN`, an object for `:name` / `@name` / `$name`); they
//! are bound with `sqlite3_bind_*`, never spliced into the SQL text, so a value such as
//! `'; DROP TABLE sales; --` is only ever compared as data. Workflow steps read rows as
//! JSON objects (`call_value`); the model reads the training-data text format.

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Statement;
use serde_json::{Map, Value};

use super::format_value;
use crate::tools::{json_type, ToolError};

/// Most values one call may bind.
const MAX_PARAMS: usize = 256;

/// Which answer the caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// The text the model was trained on.
    Text,
    /// Rows as JSON objects.
    Rows,
}

#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    Text(String),
    Rows(Value),
}

/// The values to bind.
#[derive(Debug, Default)]
pub(super) enum Params {
    #[default]
    None,
    Positional(Vec<SqlValue>),
    Named(Vec<(String, SqlValue)>),
}

pub(super) enum BindError {
    Tool(ToolError),
    Sqlite(rusqlite::Error),
}

impl Params {
    /// `params` from a call's arguments (absent or `null`: none).
    pub(super) fn from_arguments(arguments: &Value) -> Result<Params, ToolError> {
        match arguments.get("params") {
            None | Some(Value::Null) => Ok(Params::None),
            Some(Value::Array(items)) => {
                check_count(items.len())?;
                let values = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| sql_value(v).map_err(|t| bad(&format!("params[{i}]"), t)))
                    .collect::<Result<_, _>>()?;
                Ok(Params::Positional(values))
            }
            Some(Value::Object(map)) => {
                check_count(map.len())?;
                let values = map
                    .iter()
                    .map(|(k, v)| {
                        let value = sql_value(v).map_err(|t| bad(&format!("params.{k}"), t))?;
                        let name = if k.starts_with([':', '@', '$']) {
                            k.clone()
                        } else {
                            format!(":{k}")
                        };
                        Ok((name, value))
                    })
                    .collect::<Result<_, ToolError>>()?;
                Ok(Params::Named(values))
            }
            Some(other) => Err(ToolError::InvalidArguments(format!(
                "`params` must be a list (for ?) or an object (for :name), got {}",
                json_type(other)
            ))),
        }
    }

    /// Bind every value to `stmt`; the placeholders and the values must match.
    pub(super) fn bind(&self, stmt: &mut Statement<'_>) -> Result<(), BindError> {
        let wanted = stmt.parameter_count();
        let mismatch = |given: usize| {
            BindError::Tool(ToolError::InvalidArguments(format!(
                "the query has {wanted} placeholder(s) but {given} value(s) were given in `params`"
            )))
        };
        match self {
            Params::None if wanted == 0 => Ok(()),
            Params::None => Err(mismatch(0)),
            Params::Positional(values) => {
                if values.len() != wanted {
                    return Err(mismatch(values.len()));
                }
                for (i, v) in values.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, v)
                        .map_err(BindError::Sqlite)?;
                }
                Ok(())
            }
            Params::Named(values) => {
                if values.len() != wanted {
                    return Err(mismatch(values.len()));
                }
                for (name, v) in values {
                    let index = stmt
                        .parameter_index(name)
                        .map_err(BindError::Sqlite)?
                        .ok_or_else(|| {
                            BindError::Tool(ToolError::InvalidArguments(format!(
                                "the query has no placeholder `{name}`"
                            )))
                        })?;
                    stmt.raw_bind_parameter(index, v)
                        .map_err(BindError::Sqlite)?;
                }
                Ok(())
            }
        }
    }
}

fn check_count(n: usize) -> Result<(), ToolError> {
    if n > MAX_PARAMS {
        return Err(ToolError::InvalidArguments(format!(
            "at most {MAX_PARAMS} values may be bound, got {n}"
        )));
    }
    Ok(())
}

fn bad(path: &str, got: &'static str) -> ToolError {
    ToolError::InvalidArguments(format!(
        "`{path}` must be a string, number, boolean or null, got {got}"
    ))
}

fn sql_value(v: &Value) -> Result<SqlValue, &'static str> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => return Err(json_type(other)),
    })
}

/// Rows collected as JSON objects, within the row and byte caps.
pub(super) struct JsonRows {
    columns: Vec<String>,
    rows: Vec<Value>,
    bytes: usize,
    max_rows: usize,
    max_bytes: usize,
    truncated: bool,
}

impl JsonRows {
    pub(super) fn new(columns: Vec<String>, max_rows: usize, max_bytes: usize) -> Self {
        JsonRows {
            columns,
            rows: Vec::new(),
            bytes: 0,
            max_rows,
            max_bytes,
            truncated: false,
        }
    }

    /// Add a row; false (and marked truncated) when a cap is reached.
    pub(super) fn push(&mut self, row: &rusqlite::Row<'_>) -> rusqlite::Result<bool> {
        if self.rows.len() >= self.max_rows {
            self.truncated = true;
            return Ok(false);
        }
        let mut object = Map::with_capacity(self.columns.len());
        for (i, name) in self.columns.iter().enumerate() {
            let value = match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::from(n),
                ValueRef::Real(f) => {
                    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                }
                ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                blob @ ValueRef::Blob(_) => Value::String(format_value(blob)),
            };
            object.insert(name.clone(), value);
        }
        let row = Value::Object(object);
        let size = row.to_string().len();
        if self.bytes + size > self.max_bytes {
            self.truncated = true;
            return Ok(false);
        }
        self.bytes += size;
        self.rows.push(row);
        Ok(true)
    }

    pub(super) fn finish(self) -> Value {
        serde_json::json!({
            "columns": self.columns,
            "row_count": self.rows.len(),
            "rows": self.rows,
            "truncated": self.truncated,
        })
    }
}
