//! HTTPS on the listener (`[server.tls]`) with a CA made in the test: TLS 1.3 served,
//! TLS 1.2 refused unless `min_version = "1.2"`, client certificates when `client_ca`
//! is set, certificate reloads (in-process and SIGHUP to the real binary) that new
//! connections see while an old stream finishes, the official Python SDK over https,
//! and the cache's `rediss://` to a TLS redis-server.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use pki::{Issued, Pki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio_rustls::TlsConnector;

/// Bound on every network step of these tests.
const STEP: Duration = Duration::from_secs(10);

/// sluice serving HTTPS in this process, with a reload handle.
struct TlsGateway {
    addr: SocketAddr,
    reload: sluice::tls::ReloadHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), sluice::RunError>>,
}

impl TlsGateway {
    async fn start(toml: &str) -> TlsGateway {
        let config = sluice::config::load_str(toml, Vec::new()).expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reload, reloads) = sluice::tls::reload_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(sluice::run_with_reloads(
            listener, config, shutdown, reloads,
        ));
        TlsGateway {
            addr,
            reload,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Begin graceful shutdown.
    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shut down and wait until `run` returns (it must return Ok).
    async fn stop(mut self) {
        self.shutdown();
        let result = tokio::time::timeout(STEP, self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "graceful stop: {result:?}"
        );
    }
}

/// One backend (`up`, OpenAI-compatible at `upstream`), model `m`, and `[server.tls]`
/// with `server`'s files plus `extra` lines.
fn tls_config(upstream: &str, server: &Issued, extra: &str) -> String {
    common::config(
        "openai",
        upstream,
        &[("m", "m")],
        &format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n{extra}",
            server.cert.display().to_string(),
            server.key.display().to_string()
        ),
    )
}

/// A rustls client trusting `ca` (PEM file), speaking only `versions`, presenting
/// `identity` when given.
fn client_config(
    ca: &Path,
    versions: &[&'static SupportedProtocolVersion],
    identity: Option<&Issued>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    })
}

const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// What a client saw on one new connection.
#[derive(Debug)]
struct Seen {
    version: Option<ProtocolVersion>,
    certificate: Vec<u8>,
    status_line: String,
}

/// `GET /healthz` over a new TLS connection to `addr`.
async fn healthz(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Seen> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
        let (_, session) = tls.get_ref();
        let version = session.protocol_version();
        let certificate = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        let mut buffer = [0u8; 1024];
        while !response.windows(2).any(|w| w == b"\r\n") {
            let n = tls.read(&mut buffer).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            response.extend_from_slice(&buffer[..n]);
        }
        let text = String::from_utf8_lossy(&response);
        let status_line = text.lines().next().unwrap_or_default().to_owned();
        Ok(Seen {
            version,
            certificate,
            status_line,
        })
    };
    tokio::time::timeout(STEP, exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn assert_served(seen: &std::io::Result<Seen>, certificate: &Issued) {
    let seen = seen.as_ref().expect("the TLS exchange succeeds");
    assert_eq!(seen.status_line, "HTTP/1.1 200 OK", "{seen:?}");
    assert!(
        seen.certificate == certificate.der,
        "the server presented another certificate"
    );
}

#[tokio::test]
async fn tls13_is_served_and_tls12_refused_by_default() {
    let pki = Pki::new("sluice test CA");
    let server = pki.server("server", 1);
    let up = common::fake_openai::start().await;
    let gw = TlsGateway::start(&tls_config(&up.url, &server, "")).await;

    let seen = healthz(gw.addr, client_config(&pki.ca_path(), TLS13, None)).await;
    assert_served(&seen, &server);
    assert_eq!(seen.unwrap().version, Some(ProtocolVersion::TLSv1_3));

    let old = healthz(gw.addr, client_config(&pki.ca_path(), TLS12, None)).await;
    assert!(old.is_err(), "a TLS 1.2 client was served: {old:?}");

    // A chat completion over HTTPS with reqwest trusting the CA.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .json(&common::chat_body("m", "over tls"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "echo: over tls");

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", gw.addr))
        .timeout(STEP)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was served: {plain:?}");
    gw.stop().await;
}

#[tokio::test]
async fn tls12_is_accepted_with_min_version_1_2() {
    let pki = Pki::new("sluice test CA");
    let server = pki.server("server", 1);
    let up = common::fake_openai::start().await;
    let gw = TlsGateway::start(&tls_config(&up.url, &server, "min_version = \"1.2\"\n")).await;

    let seen = healthz(gw.addr, client_config(&pki.ca_path(), TLS12, None)).await;
    assert_served(&seen, &server);
    assert_eq!(seen.unwrap().version, Some(ProtocolVersion::TLSv1_2));
    let seen = healthz(gw.addr, client_config(&pki.ca_path(), TLS13, None)).await;
    assert_eq!(seen.unwrap().version, Some(ProtocolVersion::TLSv1_3));
    gw.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_when_client_ca_is_set() {
    let pki = Pki::new("sluice test CA");
    let clients = Pki::new("client CA");
    let strangers = Pki::new("another CA");
    let server = pki.server("server", 1);
    let up = common::fake_openai::start().await;
    let client_ca = format!(
        "client_ca = {:?}\n",
        clients.ca_path().display().to_string()
    );
    let gw = TlsGateway::start(&tls_config(&up.url, &server, &client_ca)).await;

    let anonymous = healthz(gw.addr, client_config(&pki.ca_path(), TLS13, None)).await;
    assert!(
        anonymous.is_err(),
        "served without a client certificate: {anonymous:?}"
    );
    let alice = clients.client("alice");
    let seen = healthz(gw.addr, client_config(&pki.ca_path(), TLS13, Some(&alice))).await;
    assert_served(&seen, &server);
    let mallory = strangers.client("mallory");
    let foreign = healthz(
        gw.addr,
        client_config(&pki.ca_path(), TLS13, Some(&mallory)),
    )
    .await;
    assert!(
        foreign.is_err(),
        "served a certificate of another CA: {foreign:?}"
    );
    gw.stop().await;

    // `optional`: no certificate is fine, a wrong one is not.
    let optional = format!("{client_ca}client_auth = \"optional\"\n");
    let gw = TlsGateway::start(&tls_config(&up.url, &server, &optional)).await;
    let anonymous = healthz(gw.addr, client_config(&pki.ca_path(), TLS13, None)).await;
    assert_served(&anonymous, &server);
    let foreign = healthz(
        gw.addr,
        client_config(&pki.ca_path(), TLS13, Some(&mallory)),
    )
    .await;
    assert!(
        foreign.is_err(),
        "served a certificate of another CA: {foreign:?}"
    );
    gw.stop().await;
}

/// An OpenAI-compatible upstream whose stream sends "before ", then waits for
/// `release`, then "after" and the end.
async fn gated_upstream() -> (String, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let gate = gate.clone();
            async move {
                let chunk = |delta: serde_json::Value, finish: Option<&str>| {
                    let v = json!({
                        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                        "model": "m",
                        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }]
                    });
                    Ok::<_, Infallible>(Bytes::from(format!("data: {v}\n\n")))
                };
                let stream = async_stream::stream! {
                    yield chunk(json!({"role": "assistant", "content": "before "}), None);
                    gate.notified().await;
                    yield chunk(json!({"content": "after"}), None);
                    yield chunk(json!({}), Some("stop"));
                    yield Ok(Bytes::from("data: [DONE]\n\n"));
                };
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(stream))
                    .unwrap()
            }
        }),
    );
    let addr = common::serve(app).await;
    (format!("http://{addr}/v1"), release)
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_while_an_old_stream_finishes() {
    let pki = Pki::new("sluice test CA");
    let first = pki.server("server", 1);
    let (upstream, release) = gated_upstream().await;
    let gw = TlsGateway::start(&tls_config(&upstream, &first, "")).await;

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap())
        .tls_info(true)
        .build()
        .unwrap();
    let mut resp = client
        .post(gw.url("/v1/chat/completions"))
        .json(&common::streaming(common::chat_body("m", "hello")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    assert_eq!(info.peer_certificate(), Some(first.der.as_slice()));
    let mut body = String::new();
    while !body.contains("before") {
        let chunk = tokio::time::timeout(STEP, resp.chunk()).await.unwrap();
        body.push_str(&String::from_utf8_lossy(
            &chunk.unwrap().expect("more body"),
        ));
    }

    // Renewal: new files in place, then the reload.
    let second = pki.server("server", 2);
    gw.reload.reload().await.expect("the new files load");
    let seen = healthz(gw.addr, client_config(&pki.ca_path(), TLS13, None)).await;
    assert_served(&seen, &second);

    // A broken file is refused, and the certificate in use stays.
    std::fs::write(&second.cert, "not a certificate").unwrap();
    let error = gw
        .reload
        .reload()
        .await
        .expect_err("a broken file is refused");
    assert_eq!(error.key, "server.tls.cert");
    assert!(error.message.contains("server.pem"), "{error}");
    let seen = healthz(gw.addr, client_config(&pki.ca_path(), TLS13, None)).await;
    assert_served(&seen, &second);

    // The stream that began before the reload finishes intact on its old session, even
    // through a graceful shutdown that starts before its end.
    let mut gw = gw;
    gw.shutdown();
    release.notify_one();
    while let Some(chunk) = tokio::time::timeout(STEP, resp.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = common::sse_data(&body);
    let chunks = common::parse_chunks(&data);
    let text: String = chunks
        .iter()
        .filter_map(|c| c.choices.first()?.delta.content.clone())
        .collect();
    assert_eq!(text, "before after");
    gw.stop().await;
}

#[test]
fn unreadable_tls_files_are_named_by_check_config() {
    let pki = Pki::new("sluice test CA");
    let server = pki.server("server", 1);
    let missing = pki.dir.path().join("missing.pem");
    let model = common::config("openai", "http://127.0.0.1:9/v1", &[("m", "m")], "");
    let text = format!(
        "{model}[server.tls]\ncert = {:?}\nkey = {:?}\nclient_auth = \"required\"\n",
        missing.display().to_string(),
        server.cert.display().to_string(),
    );
    let err = sluice::config::load_str(&text, Vec::new()).unwrap_err();
    let rendered = err.to_string();
    let paths: Vec<&str> = err.0.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        ["server.tls.client_auth", "server.tls.cert"],
        "{rendered}"
    );
    assert!(rendered.contains("missing.pem"), "{rendered}");

    // A key that is not the certificate's.
    let other = pki.server("other", 2);
    let text = format!(
        "{model}[server.tls]\ncert = {:?}\nkey = {:?}\nmin_version = \"1.1\"\n",
        server.cert.display().to_string(),
        other.key.display().to_string(),
    );
    let err = sluice::config::load_str(&text, Vec::new()).unwrap_err();
    assert_eq!(err.0[0].path, "server.tls.min_version", "{err}");
    let text = text.replace("min_version = \"1.1\"\n", "");
    let err = sluice::config::load_str(&text, Vec::new()).unwrap_err();
    assert_eq!(err.0[0].path, "server.tls.key", "{err}");
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[tokio::test]
async fn the_python_sdk_talks_to_sluice_over_https() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if !python.is_file() {
        eprintln!(
            "SKIPPED: {} is missing (python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt)",
            python.display()
        );
        return;
    }
    let pki = Pki::new("sluice test CA");
    let server = pki.server("server", 1);
    let up = common::fake_openai::start().await;
    let gw = TlsGateway::start(&tls_config(&up.url, &server, "")).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/tls_client.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(gw.url("/v1"))
        .arg(pki.ca_path())
        .arg("m")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the Python client finishes within a minute")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["echo: hello over https", "echo: hello over https"],
        "{stderr}"
    );
    gw.stop().await;
}

/// The real binary, serving HTTPS; SIGTERMed on drop.
struct Binary {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill failed");
    }
}

/// Start `sluice serve` on a free port with `config` (the text gets `listen`).
async fn start_binary(
    dir: &Path,
    config: &str,
    ca: &Path,
    certificate: &Issued,
) -> (Binary, SocketAddr) {
    for attempt in 0..5 {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let path = dir.join("sluice.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("sluice-{attempt}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--listen", &addr.to_string(), "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .env_remove("SLUICE_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the sluice binary starts");
        let mut binary = Binary { child, log };
        // A child process has no in-process signal: poll until it answers over TLS.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = binary.child.try_wait().unwrap() {
                let log = binary.log_text();
                assert!(
                    log.contains("cannot listen on"),
                    "sluice exited ({status}):\n{log}"
                );
                break; // the port was taken: try another
            }
            let seen = healthz(addr, client_config(ca, TLS13, None)).await;
            if seen.is_ok() {
                assert_served(&seen, certificate);
                return (binary, addr);
            }
            assert!(
                Instant::now() < deadline,
                "sluice never answered:\n{}",
                binary.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("sluice could not listen on any of 5 free ports");
}

#[tokio::test]
async fn sighup_makes_the_binary_serve_the_renewed_certificate() {
    let pki = Pki::new("sluice test CA");
    let first = pki.server("server", 1);
    let up = common::fake_openai::start().await;
    let config = tls_config(&up.url, &first, "");
    let (binary, addr) = start_binary(pki.dir.path(), &config, &pki.ca_path(), &first).await;

    let second = pki.server("server", 2);
    binary.signal(libc::SIGHUP);
    // The binary logs each reload; wait for that line (bounded), then connect anew.
    let deadline = Instant::now() + STEP;
    while !binary.log_text().contains("TLS certificates reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            binary.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = healthz(addr, client_config(&pki.ca_path(), TLS13, None)).await;
    assert_served(&seen, &second);

    // SIGHUP with a broken key: logged, and the renewed certificate stays in use.
    std::fs::write(&second.key, "garbage").unwrap();
    binary.signal(libc::SIGHUP);
    let deadline = Instant::now() + STEP;
    while !binary.log_text().contains("TLS reload failed") {
        assert!(
            Instant::now() < deadline,
            "no failure logged:\n{}",
            binary.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(binary.log_text().contains("server.pem") || binary.log_text().contains("server.key"));
    let seen = healthz(addr, client_config(&pki.ca_path(), TLS13, None)).await;
    assert_served(&seen, &second);

    // SIGTERM still shuts it down gracefully.
    let mut binary = binary;
    binary.signal(libc::SIGTERM);
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = binary.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}:\n{}", binary.log_text());
}

/// A redis-server speaking only TLS on a free port, with `server`'s certificate; None
/// when redis-server is not installed.
struct TlsRedis {
    port: u16,
    child: std::process::Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn redis_client(port: u16, ca: &Path) -> redis::aio::MultiplexedConnection {
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(std::fs::read(ca).unwrap()),
    };
    let client =
        redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}/"), certificates).unwrap();
    tokio::time::timeout(STEP, client.get_multiplexed_async_connection())
        .await
        .expect("redis answers in time")
        .expect("a TLS connection to redis")
}

async fn start_tls_redis(pki: &Pki, server: &Issued) -> Option<TlsRedis> {
    let Some(binary) = common::redis::RedisServer::binary() else {
        eprintln!("SKIPPED: redis-server is not on PATH (run `make redis-server`)");
        return None;
    };
    let port = common::redis::free_port();
    let child = std::process::Command::new(binary)
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&server.cert)
        .arg("--tls-key-file")
        .arg(&server.key)
        .arg("--tls-ca-cert-file")
        .arg(pki.ca_path())
        .args(["--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(pki.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let mut redis = TlsRedis { port, child };
    // Ready when a TLS PING answers (a child process has no in-process signal).
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(status) = redis.child.try_wait().unwrap() {
            panic!("redis-server exited ({status}): is it built without TLS?");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let mut conn = redis_client(port, &pki.ca_path()).await;
            let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
            assert_eq!(pong, "PONG");
            return Some(redis);
        }
        assert!(
            Instant::now() < deadline,
            "redis-server never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_cache_shares_answers_through_rediss() {
    let pki = Pki::new("sluice test CA");
    let redis_cert = pki.server("redis", 7);
    let Some(redis) = start_tls_redis(&pki, &redis_cert).await else {
        return;
    };
    let up = common::fake_openai::start().await;
    let cache = format!(
        "[cache]\nredis_url = \"rediss://127.0.0.1:{}/\"\nredis_ca = {:?}\nredis_timeout = \"1s\"\n",
        redis.port,
        pki.ca_path().display().to_string()
    );
    let toml = common::config("openai", &up.url, &[("m", "m")], &cache);
    let first = common::Gateway::start(&toml).await;
    let second = common::Gateway::start(&toml).await;
    let mut body = common::chat_body("m", "shared over TLS");
    body["temperature"] = json!(0);
    // Both replicas and this test connected (the replicas connect in the background).
    let mut conn = redis_client(redis.port, &pki.ca_path()).await;
    common::wait_for_redis_clients(&mut conn, 3).await;

    let resp = first.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-cache"], "miss");
    // The write to Redis follows the answer: wait until Redis holds it.
    let deadline = Instant::now() + STEP;
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("sluice:cache:v1:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first replica never wrote to Redis over TLS"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = second.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sluice-cache"], "hit");
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: shared over TLS"
    );
    assert_eq!(
        up.state
            .chat_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[test]
fn rediss_urls_are_accepted_and_redis_ca_needs_one() {
    let pki = Pki::new("sluice test CA");
    let with = |cache: &str| {
        let text = common::config("openai", "http://127.0.0.1:9/v1", &[("m", "m")], cache);
        sluice::config::load_str(&text, Vec::new())
    };
    let ca = format!("redis_ca = {:?}\n", pki.ca_path().display().to_string());
    let config = with(&format!(
        "[cache]\nredis_url = \"rediss://cache.internal:6380/0\"\n{ca}"
    ))
    .expect("rediss:// with a CA file is valid");
    assert_eq!(config.cache.redis_ca, Some(pki.ca_path()));
    with("[cache]\nredis_url = \"rediss://:pw@cache.internal:6380/0\"\n")
        .expect("rediss:// with the system's trust store is valid");

    let err = with(&format!(
        "[cache]\nredis_url = \"redis://127.0.0.1:6379/0\"\n{ca}"
    ))
    .unwrap_err();
    assert_eq!(err.0[0].path, "cache.redis_ca", "{err}");
    let missing = pki.dir.path().join("nope.pem");
    let err = with(&format!(
        "[cache]\nredis_url = \"rediss://:Hunter2-redis-secret@127.0.0.1:6380/0\"\nredis_ca = {:?}\n",
        missing.display().to_string()
    ))
    .unwrap_err();
    assert_eq!(err.0[0].path, "cache.redis_ca", "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    // The password never reaches the message (a distinctive one: a random tempdir name
    // such as `.tmpw7EKo7` can contain any short string).
    assert!(!err.to_string().contains("Hunter2-redis-secret"), "{err}");
}
