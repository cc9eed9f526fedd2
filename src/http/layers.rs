//! Middleware: `auth` (stage 1 of the pipeline, run before the body is read so a bad key
//! is a 401 whatever the body) and `observe` (request count, in-flight gauge and duration
//! until the response's last byte, by route, model, status and whether it streamed; a
//! request whose client leaves before the answer counts as status 499).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::AppState;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Set by handlers on their response: the (bounded) model label for metrics.
#[derive(Clone)]
pub struct ModelLabel(pub String);

/// A handler's outcome as a response labelled with the model it was for.
pub fn labelled(model: String, outcome: Result<Response, ApiError>) -> Response {
    let mut response = outcome.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(ModelLabel(model));
    response
}

pub async fn auth(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.pipeline.auth.authenticate(header) {
        Ok(tenant) => {
            req.extensions_mut().insert(tenant);
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Counted in flight from here; if the client goes away before the handler answers,
    // this future is dropped and the record says 499 (client closed) instead.
    let mut record = Record {
        metrics: state.metrics.clone(),
        route,
        model: String::new(),
        status: CLIENT_CLOSED,
        stream: false,
        started: Instant::now(),
    };
    state.metrics.in_flight.inc();
    let response = next.run(req).await;
    record.model = response
        .extensions()
        .get::<ModelLabel>()
        .map(|m| m.0.clone())
        .unwrap_or_default();
    record.status = response.status().as_u16();
    record.stream = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Metered {
            inner: body,
            _record: record,
        }),
    )
}

/// nginx's status for a request whose client closed the connection before the answer.
const CLIENT_CLOSED: u16 = 499;

/// One request in flight; recorded (count, duration, in-flight decrement) when the
/// response body is finished or dropped, or when the request is dropped unanswered.
struct Record {
    metrics: Arc<Metrics>,
    route: String,
    model: String,
    status: u16,
    stream: bool,
    started: Instant,
}

impl Drop for Record {
    fn drop(&mut self) {
        let status = self.status.to_string();
        let labels = [self.route.as_str(), &self.model, &status];
        self.metrics.http_requests.with_label_values(&labels).inc();
        let stream = if self.stream { "true" } else { "false" };
        self.metrics
            .http_duration
            .with_label_values(&[labels[0], labels[1], labels[2], stream])
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.in_flight.dec();
    }
}

pin_project_lite::pin_project! {
    /// A body that keeps its size hint (so JSON stays `content-length`) and owns a [`Record`].
    struct Metered {
        #[pin]
        inner: Body,
        _record: Record,
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
