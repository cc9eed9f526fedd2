//! The extractors: the JSON body, read under the configured size limit (413 past it)
//! and parsed so that malformed JSON and wrong field types are 400s in the OpenAI error
//! shape, with `param` naming the offending field; and the URL path and query string,
//! whose rejections are OpenAI-shaped 400s too (axum's own are plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// `Json<T>` with OpenAI-shaped rejections.
pub struct OpenAiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OpenAiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse(&body(req, state).await?).map(OpenAiJson)
    }
}

/// The raw body under the size limit, with OpenAI-shaped rejections (413 past it).
pub struct OpenAiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for OpenAiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        body(req, state).await.map(OpenAiBytes)
    }
}

/// `Path<T>` with an OpenAI-shaped rejection (a segment that is not UTF-8 once decoded).
pub struct OpenAiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for OpenAiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(OpenAiPath(value)),
            Err(rejection) => Err(url_error(
                rejection.status(),
                format!("Invalid URL path: {}", rejection.body_text()),
                "invalid_path",
            )),
        }
    }
}

/// `Query<T>` with an OpenAI-shaped rejection (`?limit=ten`).
pub struct OpenAiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for OpenAiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(OpenAiQuery(value)),
            Err(rejection) => Err(url_error(
                rejection.status(),
                format!("Invalid query string: {}", rejection.body_text()),
                "invalid_query",
            )),
        }
    }
}

/// A rejected URL part: a 400 the client fixes, unless axum says the fault is ours.
fn url_error(status: StatusCode, message: String, code: &'static str) -> ApiError {
    if status.is_server_error() {
        ApiError::new(status.as_u16(), "server_error", message)
    } else {
        ApiError::invalid_request(message, None).with_code(code)
    }
}

pub use super::extras::SamplingExtras;

/// A chat request body: the OpenAI request, plus [`SamplingExtras`] when it has any.
pub struct ChatJson<T>(pub T, pub SamplingExtras);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ChatJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_chat(&body(req, state).await?)
    }
}

/// Parse a chat request body: the request, and its [`SamplingExtras`].
pub fn parse_chat<T: DeserializeOwned>(bytes: &[u8]) -> Result<ChatJson<T>, ApiError> {
    let wire = parse(bytes)?;
    // The first parse checked the body's shape and types; this one reads what the
    // OpenAI type leaves out (full-precision floats, extra and unknown fields).
    let extras = parse(bytes)?;
    Ok(ChatJson(wire, extras))
}

/// The body under the size limit.
async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                413,
                "invalid_request_error",
                "Request body is larger than this server accepts (server.max_body_bytes).",
            )
            .with_code("request_too_large")
        } else {
            ApiError::invalid_request(
                format!("Could not read the request body: {}", rejection.body_text()),
                None,
            )
        }
    })
}

/// Parse a JSON body into `T`, explaining failures the way a client can act on.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| explain(bytes, e))?;
    // Trailing garbage after the JSON value is malformed JSON too.
    de.end().map_err(|e| {
        ApiError::invalid_request(
            format!("We could not parse the JSON body of your request ({e}). The API expects a JSON payload."),
            None,
        )
        .with_code("invalid_json")
    })?;
    Ok(value)
}

fn explain(bytes: &[u8], err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::invalid_request(
            format!(
                "We could not parse the JSON body of your request ({inner}). The API expects a JSON payload."
            ),
            None,
        )
        .with_code("invalid_json");
    }
    // Point at the field a person would fix; serde loses the path inside tagged enums.
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        if !value.is_object() {
            return ApiError::invalid_request("The request body must be a JSON object.", None);
        }
        if let Some(e) = check_messages(&value) {
            return e;
        }
    }
    let param = (path != "." && !path.is_empty()).then_some(path);
    let message = match &param {
        Some(p) => format!("Invalid value for '{p}': {inner}"),
        None => format!("Invalid request: {inner}"),
    };
    ApiError::invalid_request(message, param.as_deref())
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn check_messages(body: &Value) -> Option<ApiError> {
    let messages = body.get("messages")?;
    let Some(items) = messages.as_array() else {
        return Some(ApiError::invalid_request(
            "'messages' must be an array of message objects.",
            Some("messages"),
        ));
    };
    for (i, m) in items.iter().enumerate() {
        let param = format!("messages[{i}].role");
        match m.get("role").map(|r| r.as_str()) {
            None => {
                return Some(ApiError::invalid_request(
                    format!("Missing required parameter: '{param}'."),
                    Some(&param),
                ))
            }
            Some(Some(role)) if ROLES.contains(&role) => {}
            Some(_) => {
                return Some(ApiError::invalid_request(
                    format!(
                        "Invalid value for '{param}': {}. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.",
                        m["role"]
                    ),
                    Some(&param),
                ))
            }
        }
        if m["role"] == "tool" && !m["tool_call_id"].is_string() {
            let param = format!("messages[{i}].tool_call_id");
            return Some(ApiError::invalid_request(
                format!("Missing required parameter: '{param}'."),
                Some(&param),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_openai::types::chat::CreateChatCompletionRequest;

    fn err(body: &str) -> ApiError {
        parse::<CreateChatCompletionRequest>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn malformed_json_is_invalid_json() {
        let e = err("{\"model\": ");
        assert_eq!((e.status, e.code), (400, Some("invalid_json")));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e =
            err(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#);
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = err(r#"{"model":"m","messages":"hi"}"#);
        assert_eq!(e.param.as_deref(), Some("messages"));
    }

    #[test]
    fn unknown_role_names_the_message() {
        let e = err(
            r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"robot","content":"hi"}]}"#,
        );
        assert_eq!(e.param.as_deref(), Some("messages[1].role"));
    }
}
