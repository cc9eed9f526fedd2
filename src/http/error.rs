//! Turning an [`ApiError`] into an HTTP response with the OpenAI error body, and the
//! fallbacks for unknown routes and methods, so every failure a client sees has that shape.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, Json(self.body())).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        404,
        "invalid_request_error",
        format!(
            "Unknown request URL: {}. Please check the URL and method.",
            uri.path()
        ),
    )
    .with_code("unknown_url")
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        405,
        "invalid_request_error",
        format!("Method {method} is not allowed for {}.", uri.path()),
    )
    .with_code("method_not_allowed")
}
