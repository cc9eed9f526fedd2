//! Tests of `transport.rs`: which path a member's URL takes, and that both paths send
//! the same request and read answers and failures alike.

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::routing::any;

use super::*;

/// What the test upstream saw of one request.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An upstream on 127.0.0.1 that records each request and answers 200 with a
/// three-part chunked body, or 503 with an OpenAI error on `/fail`.
async fn upstream() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(any(move |req: Request| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .unwrap_or_default();
            let mut headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            headers.sort();
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                headers,
                body: body.to_vec(),
            });
            if parts.uri.path() == "/fail" {
                return axum::response::Response::builder()
                    .status(503)
                    .body(axum::body::Body::from(
                        r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
                    ))
                    .unwrap();
            }
            let parts: Vec<Result<Bytes, std::io::Error>> =
                ["data: a\n\n", "data: b\n\n", "data: [DONE]\n\n"]
                    .into_iter()
                    .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                    .collect();
            axum::response::Response::builder()
                .header(CONTENT_TYPE, "text/event-stream")
                .body(axum::body::Body::from_stream(futures::stream::iter(parts)))
                .unwrap()
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn config() -> BackendConfig {
    toml::from_str(
        r#"kind = "openai"
url = "http://127.0.0.1:1/v1""#,
    )
    .unwrap()
}

fn target(url: &str, direct: bool) -> Target {
    Target::choose(reqwest::Url::parse(url).unwrap(), !direct)
}

/// Send `request` to `url` on the direct path or through reqwest.
async fn send(
    transport: &Transport,
    url: &str,
    direct: bool,
    request: UpstreamRequest,
) -> Result<Response, BackendError> {
    let t = target(url, direct);
    assert_eq!(t.direct.is_some(), direct, "{url}");
    transport
        .send("b", &t, request, Duration::from_secs(5))
        .await
}

async fn body_of(response: Response) -> Vec<u8> {
    let mut chunks = response.into_chunks();
    let mut out = Vec::new();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(_) => panic!("the body failed"),
        }
    }
    out
}

#[test]
fn plain_http_goes_direct_unless_a_proxy_is_set_and_https_goes_through_reqwest() {
    assert!(target("http://127.0.0.1:11434/api/chat", true)
        .direct
        .is_some());
    assert!(target("http://vllm.internal:8000/v1/models", true)
        .direct
        .is_some());
    assert!(target("http://127.0.0.1:11434/api/chat", false)
        .direct
        .is_none());
    assert!(target("https://api.openai.com/v1/models", true)
        .direct
        .is_none());
    assert!(target("http://user:pw@10.0.0.5:8000/v1/models", true)
        .direct
        .is_none());
}

#[tokio::test]
async fn both_paths_send_the_same_request_and_read_the_same_answer() {
    let (base, seen) = upstream().await;
    let transport = Transport::new(&config()).unwrap();
    let body = Bytes::from_static(br#"{"model":"m","temperature":0.3}"#);
    let mut answers = Vec::new();
    for direct in [true, false] {
        let key = bearer("sk-upstream").unwrap();
        let request = UpstreamRequest::json(&body).with(http::header::AUTHORIZATION, key);
        let url = format!("{base}/v1/chat/completions");
        let response = send(&transport, &url, direct, request)
            .await
            .unwrap_or_else(|e| panic!("direct={direct}: {e}"));
        assert_eq!(response.status(), 200);
        answers.push(body_of(response).await);
        let url = format!("{base}/v1/models");
        let get = send(&transport, &url, direct, UpstreamRequest::get())
            .await
            .unwrap();
        assert_eq!(get.status(), 200);
    }
    assert_eq!(answers[0], b"data: a\n\ndata: b\n\ndata: [DONE]\n\n");
    assert_eq!(answers[0], answers[1]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    // The POST: method, path, body and every header alike, the key included.
    assert_eq!(seen[0], seen[2], "direct vs reqwest");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].body, body.to_vec());
    let header = |s: &Seen, name: &str| {
        s.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header(&seen[0], "authorization").as_deref(),
        Some("Bearer sk-upstream")
    );
    assert_eq!(
        header(&seen[0], "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(header(&seen[0], "accept").as_deref(), Some("*/*"));
    // The GET: no body, alike on both paths.
    assert_eq!(seen[1], seen[3], "direct vs reqwest");
    assert_eq!(seen[1].method, "GET");
    assert!(seen[1].body.is_empty());
}

#[tokio::test]
async fn error_answers_and_refused_connections_read_alike_on_both_paths() {
    let (base, _) = upstream().await;
    let transport = Transport::new(&config()).unwrap();
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for direct in [true, false] {
        let response = send(
            &transport,
            &format!("{base}/fail"),
            direct,
            UpstreamRequest::get(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 503);
        let body = body_of(response).await;
        assert_eq!(super::super::upstream::error_message(&body), "overloaded");

        let url = format!("http://{closed}/v1/models");
        match send(&transport, &url, direct, UpstreamRequest::get()).await {
            Err(BackendError::Connect { backend, .. }) => assert_eq!(backend, "b"),
            Err(other) => panic!("direct={direct}: expected a connect error, got {other}"),
            Ok(_) => panic!("direct={direct}: a closed port answered"),
        }
    }
}
