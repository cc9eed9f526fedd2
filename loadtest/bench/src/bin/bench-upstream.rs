//! A fast OpenAI-compatible test upstream for the latency benchmark (loadtest/latency.sh).
//!
//! `POST /v1/chat/completions` answers at once with a fixed completion, either as one
//! JSON `chat.completion` (content-length) or, when the body has `"stream": true`, as
//! SSE `chat.completion.chunk` events (role, `--tokens` content deltas, finish, usage,
//! `[DONE]`) in a chunked body. `GET /v1/models` lists the requested model name. The
//! only per-request work is parsing `model` and `stream` from the body and formatting
//! the answer; HTTP/1.1 keep-alive, TCP_NODELAY on every connection, one thread by
//! default (`--threads`). It exits by itself after `--max-seconds`.
//!
//! Usage: bench-upstream --listen 127.0.0.1:PORT [--threads 1] [--tokens 8] [--max-seconds 900]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde::Deserialize;

struct Opts {
    listen: SocketAddr,
    threads: usize,
    tokens: usize,
    max_seconds: u64,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 1,
        tokens: 8,
        max_seconds: 900,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => o.listen = val()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--threads" => o.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--tokens" => o.tokens = val()?.parse().map_err(|e| format!("--tokens: {e}"))?,
            "--max-seconds" => {
                o.max_seconds = val()?.parse().map_err(|e| format!("--max-seconds: {e}"))?
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

/// The only fields of the request the upstream looks at.
#[derive(Deserialize)]
struct ChatBody<'a> {
    #[serde(borrow, default)]
    model: std::borrow::Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
}

/// A response body made of ready frames, sent with chunked transfer-encoding.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type RespBody = http_body_util::Either<Full<Bytes>, Frames>;

const WORDS: [&str; 8] = [
    "Hello",
    " from",
    " the",
    " bench",
    " upstream",
    ",",
    " fast",
    ".",
];

fn content(tokens: usize) -> String {
    (0..tokens).map(|i| WORDS[i % WORDS.len()]).collect()
}

fn json_escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn completion(model: &str, tokens: usize) -> Bytes {
    let model = json_escape(model);
    let text = json_escape(&content(tokens));
    Bytes::from(format!(
        concat!(
            r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":{},"#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":{}}},"logprobs":null,"finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":12,"completion_tokens":{},"total_tokens":{}}}}}"#
        ),
        model,
        text,
        tokens,
        12 + tokens
    ))
}

fn sse_chunks(model: &str, tokens: usize) -> VecDeque<Bytes> {
    let model = json_escape(model);
    let chunk = |delta: &str, finish: &str| {
        Bytes::from(format!(
            concat!(
                r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":{},"#,
                r#""choices":[{{"index":0,"delta":{},"logprobs":null,"finish_reason":{}}}]}}"#,
                "\n\n"
            ),
            model, delta, finish
        ))
    };
    let mut out = VecDeque::with_capacity(tokens + 4);
    out.push_back(chunk(r#"{"role":"assistant","content":""}"#, "null"));
    for i in 0..tokens {
        let word = json_escape(WORDS[i % WORDS.len()]);
        out.push_back(chunk(&format!(r#"{{"content":{word}}}"#), "null"));
    }
    out.push_back(chunk("{}", r#""stop""#));
    out.push_back(Bytes::from(format!(
        concat!(
            r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":{},"#,
            r#""choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":{},"total_tokens":{}}}}}"#,
            "\n\n"
        ),
        model,
        tokens,
        12 + tokens
    )));
    out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn plain(status: StatusCode, ctype: &'static str, body: Bytes) -> Response<RespBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(http_body_util::Either::Left(Full::new(body)))
        .expect("static response parts are valid")
}

fn error(status: StatusCode, msg: &str) -> Response<RespBody> {
    let body = format!(
        r#"{{"error":{{"message":{},"type":"invalid_request_error","param":null,"code":null}}}}"#,
        json_escape(msg)
    );
    plain(status, "application/json", Bytes::from(body))
}

async fn handle(req: Request<Incoming>, tokens: usize) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path();
    if req.method() == Method::GET && path == "/v1/models" {
        let body = r#"{"object":"list","data":[{"id":"bench-model","object":"model","created":1700000000,"owned_by":"bench"}]}"#;
        return Ok(plain(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(body.as_bytes()),
        ));
    }
    if req.method() != Method::POST || path != "/v1/chat/completions" {
        return Ok(error(StatusCode::NOT_FOUND, "not found"));
    }
    let bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    let body: ChatBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    if body.stream == Some(true) {
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(http_body_util::Either::Right(Frames(sse_chunks(
                &body.model,
                tokens,
            ))))
            .expect("static response parts are valid"));
    }
    Ok(plain(
        StatusCode::OK,
        "application/json",
        completion(&body.model, tokens),
    ))
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-upstream: {e}");
            std::process::exit(2);
        }
    };
    let rt = if opts.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .unwrap_or_else(|e| {
                eprintln!("bench-upstream: cannot listen on {}: {e}", opts.listen);
                std::process::exit(1);
            });
        let addr = listener.local_addr().expect("bound address");
        println!("bench-upstream listening on {addr}");
        let tokens = opts.tokens;
        sluice_bench::serve_http1("bench-upstream", listener, opts.max_seconds, move || {
            service_fn(move |req| handle(req, tokens))
        })
        .await;
    });
}
