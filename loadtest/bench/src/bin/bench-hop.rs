//! The floor of sluice's own HTTP stack, for the CPU benchmark (loadtest/cpu.sh): a bare
//! reverse-proxy hop built from the same crates sluice's proxy path uses underneath, and
//! nothing else.
//!
//! Every request is forwarded to `--upstream` as it came (method, path and query, headers
//! but the hop-by-hop ones, the body streamed through unread); the answer comes back the
//! same way, so a streamed SSE answer passes frame by frame. Server side:
//! `hyper::server::conn::http1` with keep-alive; client side: hyper-util's pooled legacy
//! client (the pool reqwest wraps), HTTP/1.1 keep-alive and TCP_NODELAY on both. It runs on
//! a tokio multi-thread runtime with one worker, as cpu.sh runs sluice. It parses no JSON,
//! keeps no metrics and writes no log, so what it costs per request is what hyper, hyper-util
//! and tokio cost for one server exchange plus one client exchange: the part of sluice's
//! cost that no change inside sluice can remove while it stays on these crates. It exits by
//! itself after `--max-seconds`.
//!
//! `--client reqwest` sends through reqwest instead, built as sluice builds its upstream
//! client (rustls, TCP_NODELAY, no redirects), with the bodies passed through the same way:
//! the difference between the two is what reqwest's own layers cost per request.
//!
//! Usage: bench-hop --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT
//!        [--client hyper|reqwest] [--max-seconds 900]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

struct Opts {
    listen: SocketAddr,
    upstream: SocketAddr,
    reqwest: bool,
    max_seconds: u64,
}

fn parse_args() -> Result<Opts, String> {
    let mut listen = None;
    let mut upstream = None;
    let mut max_seconds = 900;
    let mut reqwest = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = Some(val()?.parse().map_err(|e| format!("--listen: {e}"))?),
            "--upstream" => {
                let addr: SocketAddr = val()?.parse().map_err(|e| format!("--upstream: {e}"))?;
                if !addr.ip().is_loopback() {
                    return Err("--upstream: the benchmark only talks to loopback".into());
                }
                upstream = Some(addr)
            }
            "--client" => match val()?.as_str() {
                "hyper" => reqwest = false,
                "reqwest" => reqwest = true,
                other => return Err(format!("--client: {other} (hyper, reqwest)")),
            },
            "--max-seconds" => {
                max_seconds = val()?.parse().map_err(|e| format!("--max-seconds: {e}"))?
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Opts {
        listen: listen.ok_or("--listen is required")?,
        upstream: upstream.ok_or("--upstream is required")?,
        reqwest,
        max_seconds,
    })
}

/// The client the hop forwards through. One per process, cloned per connection: the size
/// of the hyper variant costs nothing that matters here.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Upstream {
    Hyper(Client<HttpConnector, Incoming>),
    Reqwest(reqwest::Client),
}

type RespBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

fn bad_gateway(e: impl std::fmt::Display) -> Response<RespBody> {
    let body = Full::new(Bytes::from(format!(
        r#"{{"error":{{"message":"bench-hop: {e}","type":"upstream_error","param":null,"code":null}}}}"#
    )));
    let mut resp = Response::new(body.map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

async fn forward(
    client: Upstream,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{upstream}{path}");
    for h in &HOP_BY_HOP {
        parts.headers.remove(h);
    }
    let answer = match client {
        Upstream::Hyper(client) => {
            parts.uri = match Uri::try_from(url) {
                Ok(u) => u,
                Err(e) => return Ok(bad_gateway(e)),
            };
            match client.request(Request::from_parts(parts, body)).await {
                Ok(resp) => resp.map(|b| b.map_err(Into::into).boxed()),
                Err(e) => return Ok(bad_gateway(e)),
            }
        }
        Upstream::Reqwest(client) => {
            let sent = client
                .request(parts.method, url)
                .headers(parts.headers)
                .body(reqwest::Body::wrap(body))
                .send()
                .await;
            match sent {
                Ok(resp) => http::Response::<reqwest::Body>::from(resp)
                    .map(|b| b.map_err(Into::into).boxed()),
                Err(e) => return Ok(bad_gateway(e)),
            }
        }
    };
    let (mut parts, body) = answer.into_parts();
    for h in &HOP_BY_HOP {
        parts.headers.remove(h);
    }
    Ok(Response::from_parts(parts, body))
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-hop: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .unwrap_or_else(|e| {
                eprintln!("bench-hop: cannot listen on {}: {e}", opts.listen);
                std::process::exit(1);
            });
        println!("bench-hop listening on {}", opts.listen);
        let client = if opts.reqwest {
            let built = reqwest::Client::builder()
                .tcp_nodelay(true)
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(90))
                .build();
            match built {
                Ok(c) => Upstream::Reqwest(c),
                Err(e) => {
                    eprintln!("bench-hop: cannot build the reqwest client: {e}");
                    std::process::exit(1);
                }
            }
        } else {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            Upstream::Hyper(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build(connector),
            )
        };
        let upstream = opts.upstream;
        sluice_bench::serve_http1("bench-hop", listener, opts.max_seconds, move || {
            let client = client.clone();
            service_fn(move |req| forward(client.clone(), upstream, req))
        })
        .await;
    });
}
