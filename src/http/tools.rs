//! The agent loop's request headers: `x-sluice-tools` (server tools to add, comma
//! separated) and `x-sluice-trace` (`1`: steps as `sluice_step` chunks and a
//! `sluice_steps` list in the JSON answer).

use axum::http::HeaderMap;

use crate::error::ApiError;

pub const TOOLS: &str = "x-sluice-tools";
pub const TRACE: &str = "x-sluice-trace";

/// The server tools a request names, in order, without duplicates.
pub fn requested(headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for value in headers.get_all(TOOLS) {
        let text = value.to_str().map_err(|_| {
            ApiError::invalid_request(format!("{TOOLS} must be ASCII tool names"), Some(TOOLS))
        })?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !out.iter().any(|n| n == name) {
                out.push(name.to_owned());
            }
        }
    }
    Ok(out)
}

/// Whether the client asked for the steps in the answer.
pub fn trace(headers: &HeaderMap) -> bool {
    headers
        .get(TRACE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_split_trimmed_and_deduplicated() {
        let mut h = HeaderMap::new();
        h.append(TOOLS, "calculator, sql_query,,".parse().unwrap());
        h.append(TOOLS, "time, calculator".parse().unwrap());
        assert_eq!(requested(&h).unwrap(), ["calculator", "sql_query", "time"]);
        h.insert(TRACE, "1".parse().unwrap());
        assert!(trace(&h));
        assert!(!trace(&HeaderMap::new()));
    }
}
