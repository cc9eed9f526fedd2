//! `webhook` against a loopback receiver that records what arrives: a POST whose JSON
//! body is the arguments, `idempotency-key: run:call`, a signature checked here with an
//! HMAC computed independently of the tool, redirects not followed (the target sees
//! nothing), failures and timeouts as tool errors, and the address policy of `net`
//! (the loopback canary on 127.0.0.1 sees no connection). The receiver is on
//! 127.0.0.2, allowed by `allow_addresses`.

mod net_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use hmac::{Hmac, Mac};
use net_support::{config, pair, serve, Canary, FakeDns};
use serde_json::{json, Value};
use sha2::Sha256;
use sluice::tools::webhook::Webhook;
use sluice::tools::{CallContext, Tool, ToolError};

const SECRET: &str = "whsec_test_secret";

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(
    State(log): State<Log>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path().to_owned();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        method,
        headers,
        body,
    });
    match path.as_str() {
        "/hook" => (StatusCode::OK, "queued as #42").into_response(),
        "/empty" => StatusCode::NO_CONTENT.into_response(),
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "database\non fire").into_response(),
        "/redirect" => (StatusCode::FOUND, [(header::LOCATION, "/target")]).into_response(),
        "/to-canary" => {
            // The canary: the receiver's port on 127.0.0.1.
            let to = format!("http://{}/", host.replace("127.0.0.2", "127.0.0.1"));
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
        }
        "/big" => "b".repeat(5_000).into_response(),
        "/hang" => std::future::pending().await,
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

struct Receiver {
    canary: Canary,
    port: u16,
    log: Log,
}

async fn receiver() -> Receiver {
    let (canary, listener) = pair().await;
    let log = Log::default();
    serve(
        listener,
        Router::new().fallback(any(record)).with_state(log.clone()),
    );
    Receiver {
        port: canary.port,
        canary,
        log,
    }
}

impl Receiver {
    fn tool(&self, path: &str, extra: &str) -> Webhook {
        let lines = format!(
            "url = \"http://127.0.0.2:{}{path}\"\ndescription = \"tell the team\"\n\
             parameters = {{ type = \"object\", properties = {{ text = {{ type = \"string\" }} }} }}\n\
             allow_addresses = [\"127.0.0.2/32\"]\n{extra}",
            self.port
        );
        Webhook::new("notify", &config("webhook", &lines)).expect("valid webhook")
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

fn ctx() -> CallContext {
    let mut ctx = CallContext::with_timeout(Duration::from_secs(5));
    ctx.run_id = "run_7".into();
    ctx.call_id = "call_3".into();
    ctx
}

/// The signature verified from scratch: `t=<unix>,v1=<hex HMAC-SHA256("<t>.<body>")>`.
fn verify(header: &str, body: &[u8], secret: &str) -> u64 {
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("signature header shape: {header}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("the signature verifies");
    t.parse().unwrap()
}

#[tokio::test]
async fn posts_the_arguments_signed_with_an_idempotency_key() {
    let rx = receiver().await;
    let tool = rx.tool("/hook", &format!("secret = \"{SECRET}\""));
    assert_eq!(tool.spec().description, "tell the team");
    let args = json!({"text": "deploy done", "nested": {"n": [1, 2.5, null]}});
    let out = tool.call(args.clone(), &ctx()).await.unwrap();
    assert_eq!(out, "queued as #42");
    // The gateway retrying the same call sends the same key.
    tool.call(args.clone(), &ctx()).await.unwrap();

    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.path, "/hook");
        assert_eq!(s.headers["content-type"], "application/json");
        assert_eq!(s.headers["idempotency-key"], "run_7:call_3");
        assert_eq!(serde_json::from_slice::<Value>(&s.body).unwrap(), args);
        let sig = s.headers["x-sluice-signature"].to_str().unwrap();
        let t = verify(sig, &s.body, SECRET);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(t) <= 60, "timestamp {t} vs now {now}");
        let mut forged = Hmac::<Sha256>::new_from_slice(b"another secret").unwrap();
        forged.update(format!("{t}.").as_bytes());
        forged.update(&s.body);
        assert_ne!(
            sig,
            format!("t={t},v1={}", hex::encode(forged.finalize().into_bytes()))
        );
    }
    rx.canary.assert_untouched().await;
}

#[tokio::test]
async fn without_a_secret_nothing_is_signed_and_empty_answers_say_the_status() {
    let rx = receiver().await;
    let out = rx.tool("/empty", "").call(json!({}), &ctx()).await.unwrap();
    assert_eq!(out, "HTTP 204 No Content");
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].headers.contains_key("x-sluice-signature"));
    assert_eq!(&seen[0].body[..], b"{}");
}

#[tokio::test]
async fn redirects_are_failures_and_are_not_followed() {
    let rx = receiver().await;
    for path in ["/redirect", "/to-canary"] {
        let err = rx
            .tool(path, "")
            .call(json!({"text": "x"}), &ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ToolError::Failed(ref m) if m.contains("redirects are not followed")),
            "{path}: {err:?}"
        );
    }
    let paths: Vec<String> = rx.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        ["/redirect", "/to-canary"],
        "the redirect targets saw nothing"
    );
    rx.canary.assert_untouched().await;
}

#[tokio::test]
async fn error_statuses_fail_with_an_excerpt_and_answers_are_capped() {
    let rx = receiver().await;
    let err = rx
        .tool("/fail", "")
        .call(json!({}), &ctx())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ToolError::Failed(
            "the webhook answered HTTP 500 Internal Server Error: database on fire".into()
        )
    );
    let big = rx
        .tool("/big", "max_bytes = 100")
        .call(json!({}), &ctx())
        .await
        .unwrap();
    assert_eq!(
        big,
        format!(
            "{}\n[body cut at 100 bytes: the rest was not read]",
            "b".repeat(100)
        )
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let rx = receiver().await;
    let tool = rx.tool("/hang", "timeout = \"300ms\"");
    let started = Instant::now();
    let err = tool.call(json!({}), &ctx()).await.unwrap_err();
    assert_eq!(err, ToolError::TimedOut(Duration::from_millis(300)));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn non_object_arguments_send_nothing() {
    let rx = receiver().await;
    let err = rx
        .tool("/hook", "")
        .call(json!(["a"]), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments(_)), "{err:?}");
    assert!(rx.seen().is_empty());
}

#[tokio::test]
async fn the_address_policy_applies_to_the_webhook_url() {
    let rx = receiver().await;
    let p = rx.port;
    // A literal loopback URL is a configuration error, naming the key.
    let literal = config(
        "webhook",
        &format!("url = \"http://127.0.0.1:{p}/hook\"\ndescription = \"d\""),
    );
    let err = Webhook::new("notify", &literal).err().unwrap();
    assert!(
        err.starts_with("url: 127.0.0.1 is a loopback address"),
        "{err}"
    );
    // Names are judged when they resolve, on every call.
    let dns = FakeDns::new(&[("hooks.test", &[&["127.0.0.2"], &["127.0.0.1"]])]);
    let named = config(
        "webhook",
        &format!(
            "url = \"http://hooks.test:{p}/hook\"\ndescription = \"d\"\nallow_addresses = [\"127.0.0.2/32\"]"
        ),
    );
    let tool = Webhook::with_lookup("notify", &named, dns.lookup()).unwrap();
    assert_eq!(tool.call(json!({}), &ctx()).await.unwrap(), "queued as #42");
    let err = tool.call(json!({}), &ctx()).await.unwrap_err();
    assert!(
        matches!(err, ToolError::Refused(ref m) if m.contains("`hooks.test` resolves to 127.0.0.1, a loopback address")),
        "{err:?}"
    );
    // And through the system resolver: localhost is loopback.
    let local = config(
        "webhook",
        &format!("url = \"http://localhost:{p}/hook\"\ndescription = \"d\""),
    );
    let err = Webhook::new("notify", &local)
        .unwrap()
        .call(json!({}), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ToolError::Refused(ref m) if m.contains("`localhost` resolves to")),
        "{err:?}"
    );
    assert_eq!(rx.seen().len(), 1);
    rx.canary.assert_untouched().await;
}

#[test]
fn configuration_errors_name_the_key() {
    for (lines, needle) in [
        ("description = \"d\"", "url: a webhook needs"),
        ("url = \"not a url\"\ndescription = \"d\"", "url: not an absolute URL"),
        ("url = \"file:///tmp/x\"\ndescription = \"d\"", "url: only http and https"),
        ("url = \"http://u:p@example.com/\"\ndescription = \"d\"", "url: URLs with credentials"),
        ("url = \"http://169.254.169.254/\"\ndescription = \"d\"", "url: 169.254.169.254 is a link-local"),
        ("url = \"https://example.com/\"", "description: a webhook needs"),
        ("url = \"https://example.com/\"\ndescription = \"d\"\nparameters = { type = \"string\" }", "parameters: must be"),
        ("url = \"https://example.com/\"\ndescription = \"d\"\nparameters = [1]", "parameters: must be"),
        ("url = \"https://example.com/\"\ndescription = \"d\"\nallow_addresses = [\"10.0.0.0/40\"]", "allow_addresses[0]"),
    ] {
        let err = Webhook::new("w", &config("webhook", lines)).err().unwrap_or_else(|| panic!("{lines}: accepted"));
        assert!(err.starts_with(needle), "{lines}: {err}");
    }
    let ok = config(
        "webhook",
        "url = \"https://example.com/hook\"\ndescription = \"d\"",
    );
    let tool = Webhook::new("w", &ok).unwrap();
    assert_eq!(tool.spec().parameters["type"], "object");
}
