//! The `http_get` sandbox, attacked from outside: every refused URL must come back as a
//! tool error *and* leave the loopback canary on 127.0.0.1 (and ::1) untouched — the
//! canary counts connections, so a check that passed in the code but let a connection
//! through still fails here. The allowed upstream is on 127.0.0.2 (`allow_addresses =
//! ["127.0.0.2/32"]`), on the canary's port, so a redirect or a rebinding that lands on
//! 127.0.0.1 lands on the canary. Names resolve through an injected lookup (no DNS),
//! except `localhost`, which goes through the system resolver on purpose.

mod net_support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use net_support::{config, pair, serve, Canary, FakeDns};
use serde_json::json;
use sluice::tools::http_get::HttpGet;
use sluice::tools::{CallContext, Tool, ToolError};
use tokio::sync::watch;

/// The upstream on 127.0.0.2:PORT.
#[derive(Clone)]
struct Up {
    port: u16,
    loops: Arc<AtomicUsize>,
    /// 0 nothing yet, 1 the slow body has started, 2 its connection is gone.
    slow: watch::Sender<u8>,
}

fn found(location: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

fn upstream_app(up: Up) -> Router {
    let p = up.port;
    Router::new()
        .route("/", get(|| async { "hello from upstream" }))
        .route("/hop", get(|| async { Redirect::temporary("/") }))
        .route(
            "/hop-name",
            get(move || async move { found(format!("http://up.test:{p}/")) }),
        )
        .route(
            "/to-canary",
            get(move || async move { found(format!("http://127.0.0.1:{p}/")) }),
        )
        .route(
            "/to-canary-v6",
            get(move || async move { found(format!("http://[::1]:{p}/")) }),
        )
        .route(
            "/to-canary-mapped",
            get(move || async move { found(format!("http://[::ffff:127.0.0.1]:{p}/")) }),
        )
        .route(
            "/to-canary-schemeless",
            get(move || async move { found(format!("//127.0.0.1:{p}/")) }),
        )
        .route(
            "/to-evil",
            get(move || async move { found(format!("http://evil.test:{p}/")) }),
        )
        .route(
            "/to-file",
            get(|| async { found("file:///etc/passwd".into()) }),
        )
        .route(
            "/to-other",
            get(move || async move { found(format!("http://other.test:{p}/")) }),
        )
        .route(
            "/to-creds",
            get(move || async move { found(format!("http://user:pw@127.0.0.2:{p}/")) }),
        )
        .route(
            "/to-metadata",
            get(|| async { found("http://169.254.169.254/latest/meta-data/".into()) }),
        )
        .route(
            "/chain/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    "end of chain".into_response()
                } else {
                    found(format!("/chain/{}", n - 1))
                }
            }),
        )
        .route(
            "/loop",
            get(|State(up): State<Up>| async move {
                up.loops.fetch_add(1, Ordering::SeqCst);
                Redirect::temporary("/loop")
            }),
        )
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "no such page\n  here") }),
        )
        .route("/big", get(|| async { "a".repeat(10_000) }))
        .route(
            "/endless",
            get(|| async {
                let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                axum::body::Body::from_stream(futures::stream::repeat_with(move || {
                    Ok::<_, Infallible>(chunk.clone())
                }))
            }),
        )
        .route(
            "/slow",
            get(|State(up): State<Up>| async move { slow_body(up.slow) }),
        )
        .with_state(up)
}

/// One byte every 100 ms, forever; says when it started and when it was dropped.
fn slow_body(state: watch::Sender<u8>) -> axum::body::Body {
    struct Gone(watch::Sender<u8>);
    impl Drop for Gone {
        fn drop(&mut self) {
            self.0.send_replace(2);
        }
    }
    let stream = futures::stream::unfold((Gone(state), 0u64), |(gone, i)| async move {
        if i > 0 {
            gone.0
                .send_if_modified(|s| std::mem::replace(s, (*s).max(1)) == 0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some((Ok::<_, Infallible>(Bytes::from_static(b".")), (gone, i + 1)))
    });
    axum::body::Body::from_stream(stream)
}

struct Rig {
    canary: Canary,
    port: u16,
    up: Up,
    dns: Arc<FakeDns>,
}

const ALLOW: &str = r#"allow_hosts = ["127.0.0.2", "up.test", "evil.test", "mixed.test", "rebind.test",
  "rebind-hop.test", "localhost", "127.0.0.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "169.254.169.254",
  "100.64.0.1", "10.0.0.1", "64:ff9b::7f00:1"]
allow_addresses = ["127.0.0.2/32"]
"#;

async fn rig() -> Rig {
    let (canary, listener) = pair().await;
    let port = canary.port;
    let (slow, _) = watch::channel(0);
    let up = Up {
        port,
        loops: Arc::new(AtomicUsize::new(0)),
        slow,
    };
    serve(listener, upstream_app(up.clone()));
    let dns = FakeDns::new(&[
        ("up.test", &[&["127.0.0.2"]]),
        ("other.test", &[&["127.0.0.2"]]),
        ("evil.test", &[&["127.0.0.1"]]),
        ("mixed.test", &[&["127.0.0.2", "127.0.0.1"]]),
        ("rebind.test", &[&["127.0.0.2"], &["127.0.0.1"]]),
        ("rebind-hop.test", &[&["127.0.0.2"], &["127.0.0.1"]]),
    ]);
    Rig {
        canary,
        port,
        up,
        dns,
    }
}

impl Rig {
    fn tool(&self, extra: &str) -> HttpGet {
        let timeout = match extra.contains("timeout") {
            true => "",
            false => "timeout = \"3s\"\n",
        };
        let cfg = config("http_get", &format!("{ALLOW}{timeout}{extra}"));
        HttpGet::with_lookup("http_get", &cfg, self.dns.lookup()).expect("valid tool")
    }

    fn up(&self, path: &str) -> String {
        format!("http://127.0.0.2:{}{path}", self.port)
    }
}

async fn fetch(tool: &HttpGet, url: &str) -> Result<String, ToolError> {
    let ctx = CallContext::with_timeout(Duration::from_secs(5));
    tool.call(json!({ "url": url }), &ctx).await
}

/// `url` is refused with a message containing `needle`.
async fn refused(tool: &HttpGet, url: &str, needle: &str) {
    match fetch(tool, url).await {
        Err(ToolError::Refused(m)) => assert!(m.contains(needle), "{url}: `{m}` lacks `{needle}`"),
        other => panic!("{url}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn literal_non_public_addresses_are_refused_without_a_connection() {
    let rig = rig().await;
    let tool = rig.tool("");
    let p = rig.port;
    for (url, needle) in [
        (
            format!("http://127.0.0.1:{p}/"),
            "127.0.0.1 is a loopback address",
        ),
        (format!("http://127.1:{p}/"), "127.0.0.1 is a loopback"),
        (format!("http://2130706433:{p}/"), "127.0.0.1 is a loopback"),
        (format!("http://0x7f000001:{p}/"), "127.0.0.1 is a loopback"),
        (format!("http://0177.0.0.1:{p}/"), "127.0.0.1 is a loopback"),
        (format!("http://0x7f.1:{p}/"), "127.0.0.1 is a loopback"),
        (format!("http://[::1]:{p}/"), "::1 is a loopback"),
        (format!("http://[::ffff:127.0.0.1]:{p}/"), "loopback"),
        (format!("http://[::ffff:7f00:1]:{p}/"), "loopback"),
        (
            format!("http://[64:ff9b::7f00:1]:{p}/"),
            "NAT64 address embedding 127.0.0.1",
        ),
        (
            format!("http://0.0.0.0:{p}/"),
            "0.0.0.0/8 reaches this machine",
        ),
        (format!("http://0:{p}/"), "0.0.0.0/8"),
        (format!("http://[::]:{p}/"), "unspecified"),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "link-local",
        ),
        ("http://100.64.0.1/".into(), "carrier-grade NAT"),
        ("http://10.0.0.1/".into(), "private"),
    ] {
        refused(&tool, &url, needle).await;
    }
    assert_eq!(
        rig.dns.total.load(Ordering::SeqCst),
        0,
        "literals need no lookup"
    );
    rig.canary.assert_untouched().await;
}

#[tokio::test]
async fn names_that_resolve_to_refused_addresses_are_refused() {
    let rig = rig().await;
    let tool = rig.tool("");
    let p = rig.port;
    refused(
        &tool,
        &format!("http://evil.test:{p}/"),
        "`evil.test` resolves to 127.0.0.1, a loopback address",
    )
    .await;
    refused(
        &tool,
        &format!("http://mixed.test:{p}/"),
        "resolves to 127.0.0.1",
    )
    .await;
    // The system resolver: localhost is allowed as a host, but its addresses are not.
    let cfg = config("http_get", &format!("{ALLOW}timeout = \"3s\""));
    let system = HttpGet::new("http_get", &cfg).unwrap();
    refused(
        &system,
        &format!("http://localhost:{p}/"),
        "`localhost` resolves to",
    )
    .await;
    rig.canary.assert_untouched().await;
}

#[tokio::test]
async fn dns_rebinding_is_refused_on_the_lookup_that_connects() {
    let rig = rig().await;
    let tool = rig.tool("");
    let url = format!("http://rebind.test:{}/", rig.port);
    let first = fetch(&tool, &url).await.unwrap();
    assert!(first.ends_with("hello from upstream"), "{first}");
    refused(&tool, &url, "`rebind.test` resolves to 127.0.0.1").await;
    assert_eq!(rig.dns.calls("rebind.test"), 2, "each call resolves again");
    // Within one call: the redirect to the same name resolves again, and is refused.
    let hop = format!("http://rebind-hop.test:{}/hop", rig.port);
    refused(&tool, &hop, "redirect to http://rebind-hop.test:").await;
    assert_eq!(rig.dns.calls("rebind-hop.test"), 2);
    rig.canary.assert_untouched().await;
}

#[tokio::test]
async fn redirects_are_checked_hop_by_hop() {
    let rig = rig().await;
    let tool = rig.tool("");
    for (path, needle) in [
        ("/to-canary", "127.0.0.1 is a loopback address"),
        ("/to-canary-v6", "::1 is a loopback address"),
        ("/to-canary-mapped", "loopback"),
        ("/to-canary-schemeless", "127.0.0.1 is a loopback"),
        ("/to-evil", "`evil.test` resolves to 127.0.0.1"),
        (
            "/to-file",
            "only http and https URLs may be fetched, not `file:`",
        ),
        ("/to-other", "host `other.test` is not allowed"),
        ("/to-creds", "credentials"),
        ("/to-metadata", "169.254.169.254 is a link-local address"),
    ] {
        refused(&tool, &rig.up(path), needle).await;
        refused(&tool, &rig.up(path), "redirect to").await;
    }
    assert_eq!(
        rig.dns.calls("other.test"),
        0,
        "a host that is not allowed is not even looked up"
    );
    rig.canary.assert_untouched().await;
}

#[tokio::test]
async fn redirects_stop_at_max_redirects() {
    let rig = rig().await;
    let tool = rig.tool("max_redirects = 2");
    let ok = fetch(&tool, &rig.up("/chain/2")).await.unwrap();
    assert!(
        ok.contains("url: http://127.0.0.2") && ok.ends_with("end of chain"),
        "{ok}"
    );
    refused(
        &tool,
        &rig.up("/chain/3"),
        "too many redirects: more than 2",
    )
    .await;
    refused(&tool, &rig.up("/loop"), "too many redirects").await;
    assert_eq!(
        rig.up.loops.load(Ordering::SeqCst),
        3,
        "the first request and two redirects"
    );
    rig.canary.assert_untouched().await;
}

#[tokio::test]
async fn urls_with_other_schemes_credentials_or_hosts_are_refused() {
    let rig = rig().await;
    let tool = rig.tool("");
    let p = rig.port;
    for (url, needle) in [
        (format!("http://user:pass@127.0.0.2:{p}/"), "credentials"),
        (format!("http://127.0.0.2@127.0.0.1:{p}/"), "credentials"),
        ("file:///etc/passwd".into(), "not `file:`"),
        (format!("ftp://127.0.0.2:{p}/"), "not `ftp:`"),
        ("data:text/plain,hello".into(), "not `data:`"),
        (
            format!("http://not-listed.test:{p}/"),
            "host `not-listed.test` is not allowed",
        ),
        (format!("http://up.test.evil.test:{p}/"), "is not allowed"),
        (
            format!("http://127.0.0.3:{p}/"),
            "host `127.0.0.3` is not allowed",
        ),
    ] {
        refused(&tool, &url, needle).await;
    }
    assert_eq!(rig.dns.total.load(Ordering::SeqCst), 0);
    rig.canary.assert_untouched().await;
}

#[tokio::test]
async fn allowed_pages_and_redirects_come_back() {
    let rig = rig().await;
    let tool = rig.tool("");
    let page = fetch(&tool, &rig.up("/")).await.unwrap();
    assert_eq!(
        page,
        "HTTP 200 OK\ncontent-type: text/plain; charset=utf-8\n\nhello from upstream"
    );
    let named = fetch(&tool, &format!("http://up.test:{}/hop", rig.port))
        .await
        .unwrap();
    assert!(
        named.contains("url: http://up.test:") && named.ends_with("hello from upstream"),
        "{named}"
    );
    let across = fetch(&tool, &rig.up("/hop-name")).await.unwrap();
    assert!(across.ends_with("hello from upstream"), "{across}");
    match fetch(&tool, &rig.up("/missing")).await {
        Err(ToolError::Failed(m)) => assert!(
            m.starts_with("HTTP 404 Not Found") && m.ends_with("no such page here"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    rig.canary.assert_untouched().await;
}

#[tokio::test]
async fn bodies_are_cut_at_max_bytes() {
    let rig = rig().await;
    let tool = rig.tool("max_bytes = 1000");
    let big = fetch(&tool, &rig.up("/big")).await.unwrap();
    let (_, body) = big.split_once("\n\n").unwrap();
    assert_eq!(
        body,
        format!(
            "{}\n[body cut at 1000 bytes: the rest was not read]",
            "a".repeat(1000)
        )
    );
    let started = Instant::now();
    let endless = fetch(&tool, &rig.up("/endless")).await.unwrap();
    assert!(
        endless.ends_with("[body cut at 1000 bytes: the rest was not read]"),
        "{endless}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    rig.canary.assert_untouched().await;
}

#[tokio::test]
async fn a_body_that_trickles_forever_times_out() {
    let rig = rig().await;
    let tool = rig.tool("timeout = \"500ms\"");
    let started = Instant::now();
    let err = fetch(&tool, &rig.up("/slow")).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, ToolError::TimedOut(Duration::from_millis(500)));
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let mut slow = rig.up.slow.subscribe();
    tokio::time::timeout(Duration::from_secs(3), slow.wait_for(|s| *s == 2))
        .await
        .expect("the connection is closed after the timeout")
        .unwrap();
}

#[tokio::test]
async fn cancelling_mid_body_returns_at_once_and_closes_the_connection() {
    let rig = rig().await;
    let tool = Arc::new(rig.tool(""));
    let ctx = CallContext::with_timeout(Duration::from_secs(5));
    let cancel = ctx.cancel.clone();
    let url = rig.up("/slow");
    let call = tokio::spawn({
        let tool = tool.clone();
        async move { tool.call(json!({ "url": url }), &ctx).await }
    });
    let mut slow = rig.up.slow.subscribe();
    tokio::time::timeout(Duration::from_secs(3), slow.wait_for(|s| *s >= 1))
        .await
        .expect("the body starts")
        .unwrap();
    let cancelled_at = Instant::now();
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .expect("returns at once")
        .unwrap();
    assert_eq!(out, Err(ToolError::Cancelled));
    assert!(cancelled_at.elapsed() < Duration::from_millis(500));
    tokio::time::timeout(Duration::from_secs(3), slow.wait_for(|s| *s == 2))
        .await
        .expect("the server sees the connection closed")
        .unwrap();
}
