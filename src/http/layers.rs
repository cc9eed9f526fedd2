//! Middleware, two layers so a request pays for two wrappers, not four:
//! - `observe`, around every route: the request's id (the client's `x-request-id`, or a
//!   new one) returned on the response, named by every log line (a tracing span) and
//!   current while the handler and the response body run (upstream requests carry it);
//!   the global in-flight cap for `/v1` routes; request count, in-flight gauge and
//!   duration until the response's last byte, by route, model, status and whether it
//!   streamed (a request whose client leaves before the answer counts as status 499).
//! - `admit`, around each `/v1` route: `auth` (stage 1 of the pipeline, before the body
//!   is read, so a bad key is a 401 whatever the body), then the tenant's request rates,
//!   and the `x-ratelimit-*` headers on every `/v1` response.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::AppState;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::pipeline::limits::{Occupancy, RateHeaders};
use crate::request_id::{RequestId, HEADER as REQUEST_ID};

/// Set by handlers on their response: the (bounded) model label for metrics.
#[derive(Clone)]
pub struct ModelLabel(pub String);

/// A handler's outcome as a response labelled with the model it was for.
pub fn labelled(model: String, outcome: Result<Response, ApiError>) -> Response {
    let mut response = outcome.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(ModelLabel(model));
    response
}

/// `auth`, then the tenant's request rates (before the body is read), and the
/// `x-ratelimit-*` headers on the response, refused or not.
pub async fn admit(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let tenant = match state.pipeline.auth.authenticate(header) {
        Ok(tenant) => tenant,
        Err(e) => return ApiError::from(e).into_response(),
    };
    req.extensions_mut().insert(tenant.clone());
    let limits = &state.pipeline.limits;
    let (admitted, mut headers) = limits.admit_request(&tenant).await;
    let mut response = match admitted {
        Ok(()) => {
            let response = next.run(req).await;
            // Tokens as they stand once the request was admitted and started.
            if headers.tokens.is_some() {
                headers.tokens = limits.tokens_now(&tenant);
            }
            response
        }
        Err(e) => e.into_response(),
    };
    add_rate_headers(&mut response, &headers);
    response
}

fn add_rate_headers(response: &mut Response, headers: &RateHeaders) {
    for (name, value) in headers.pairs() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
}

pub async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let id = RequestId::from_header(req.headers().get(REQUEST_ID).map(|v| v.as_bytes()));
    let span = tracing::info_span!("request", id = %id.as_str());
    let answer = id.clone().scope(answer(state, req, next));
    let (mut response, record) = tracing::Instrument::instrument(answer, span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Tracked {
            inner: body,
            id,
            span,
            _record: record,
        }),
    )
}

/// The response, and its [`Record`] unless it was already taken (a shed request).
async fn answer(state: Arc<AppState>, req: Request, next: Next) -> (Response, Option<Record>) {
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
        _occupancy: None,
    };
    state.metrics.in_flight.inc();
    // Load shedding: over `limits.max_in_flight`, API requests get 503 before any work
    // (health and metrics always answer).
    if record.route.starts_with("/v1/") {
        match state.pipeline.limits.enter() {
            Ok(occupancy) => record._occupancy = occupancy,
            Err(e) => {
                record.status = e.status;
                return (e.into_response(), None);
            }
        }
    }
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
    (response, Some(record))
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
    /// This request's place under `limits.max_in_flight`, freed with the record.
    _occupancy: Option<Occupancy>,
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
    /// A response body polled under its request's id and span, that keeps its size hint
    /// (so JSON stays `content-length`) and owns the request's [`Record`].
    struct Tracked {
        #[pin]
        inner: Body,
        id: RequestId,
        span: tracing::Span,
        _record: Option<Record>,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        let inner = this.inner;
        this.id.sync_scope(|| inner.poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
