//! What the bench tools share: the one loopback endpoint each of them talks to, an
//! HTTP/1.1 connection to it, the JSON request they send, and the serving loop of the
//! ones that are servers.

use std::net::{SocketAddr, ToSocketAddrs};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// A keep-alive HTTP/1.1 client connection.
pub type Conn = SendRequest<Full<Bytes>>;

/// Open a connection (TCP_NODELAY) to `addr`; its driver runs as a task until it closes.
/// Errors are the phase that failed, as the reports count them.
pub async fn connect(addr: SocketAddr) -> Result<Conn, &'static str> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|_| "connect")?;
    tcp.set_nodelay(true).map_err(|_| "connect")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|_| "handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The load generators' runtime: one worker thread, so the generator takes as little
/// CPU from the server it measures as it can.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

/// A JSON `POST` of `body` to `path` on `authority`, as every bench tool sends it.
pub fn json_post(
    path: &str,
    authority: &str,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
}

/// A server on loopback: its address, its `host:port` and the path prefix of its API.
pub struct Loopback {
    pub addr: SocketAddr,
    pub authority: String,
    /// `/v1` of `http://127.0.0.1:PORT/v1`, without a trailing slash.
    pub prefix: String,
}

/// Parse `http://127.0.0.1:PORT/v1`; anything not on loopback is refused, so no
/// benchmark ever sends load off the machine.
pub fn loopback(url: &str) -> Result<Loopback, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or(format!("{url}: expected http://127.0.0.1:PORT/v1"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or(format!("{authority}: no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{url}: the benchmark only talks to loopback"));
    }
    Ok(Loopback {
        addr,
        authority: authority.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// Serve HTTP/1.1 with keep-alive on `listener`, TCP_NODELAY on every connection, each
/// connection in its own task with the service `service` makes for it, until
/// `max_seconds` have passed. `name` prefixes what goes to stderr.
pub async fn serve_http1<F, S, B>(
    name: &str,
    listener: tokio::net::TcpListener,
    max_seconds: u64,
    service: F,
) where
    F: Fn() -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let serve = async {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{name}: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let svc = service();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(max_seconds)) => {
            eprintln!("{name}: --max-seconds {max_seconds} reached, exiting");
        }
    }
}
