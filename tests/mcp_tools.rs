//! MCP servers as server tools (`src/tools/mcp/`), against real, unmodified MCP servers
//! from PyPI started by the tests: `mcp-server-time` and `mcp-server-fetch` over stdio,
//! and `tests/mcp/test_server.py` (the official `mcp` SDK) over stdio and streamable
//! HTTP. They live in `tests/mcp/.venv`, made by `tests/mcp/setup.sh`.
//!
//! Every wait polls the registry or `/proc` against a deadline; every process started
//! here is killed on drop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice::config::ToolConfig;
use sluice::tools::mcp::{self, McpServer};
use sluice::tools::{CallContext, Registry, Tool, ToolError};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest any wait here may take.
const WAIT: Duration = Duration::from_secs(20);

fn mcp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// The venv's python, or a failure that says how to make it.
fn python() -> String {
    let python = mcp_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/mcp/setup.sh (make test does)",
        python.display()
    );
    python.display().to_string()
}

fn test_server() -> String {
    mcp_dir().join("test_server.py").display().to_string()
}

fn config(table: Value) -> ToolConfig {
    serde_json::from_value(table).expect("a valid [tools.NAME] table")
}

fn time_server() -> Value {
    json!({
        "kind": "mcp",
        "command": [python(), "-m", "mcp_server_time", "--local-timezone", "UTC"],
    })
}

struct Started {
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    server: McpServer,
}

fn start(name: &str, table: Value) -> Started {
    let registry = Arc::new(Registry::default());
    let shutdown = CancellationToken::new();
    let server = mcp::start(name, &config(table), registry.clone(), shutdown.clone())
        .expect("the MCP server starts");
    Started {
        registry,
        shutdown,
        server,
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_tool(registry: &Registry, name: &str) -> Arc<dyn Tool> {
    wait_until(&format!("tool `{name}`"), || registry.get(name).is_some()).await;
    registry
        .get(name)
        .expect("the tool is registered")
        .tool
        .clone()
}

async fn call(tool: &dyn Tool, arguments: Value) -> Result<String, ToolError> {
    tool.call(arguments, &CallContext::with_timeout(WAIT)).await
}

/// Whether process `pid` is running (a zombie is not).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The fields of `/proc/PID/stat` after the command name (state, ppid, pgrp, ...).
fn stat_fields(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.to_owned()))
        .map(|rest| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The running processes of process group `pgid` other than its leader.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let fields = stat_fields(pid);
        if pid != pgid && fields.get(2) == Some(&pgid.to_string()) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid}");
}

async fn wait_gone(pid: u32) {
    wait_until(&format!("process {pid} to end"), || !alive(pid)).await;
}

/// `test_server.py http` on a loopback port, killed on drop.
struct HttpServer {
    url: String,
    port: u16,
    pid: u32,
    _child: tokio::process::Child,
}

/// On `port`, or a free one when 0.
async fn http_server_on(port: u16, token: Option<&str>) -> HttpServer {
    let mut command = tokio::process::Command::new(python());
    command
        .arg(test_server())
        .args(["http", "--port", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    let mut child = command.spawn().expect("start test_server.py");
    let pid = child.id().expect("a pid");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("test_server.py prints its port in time")
        .expect("read stdout")
        .expect("a PORT line");
    let port: u16 = line
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    HttpServer {
        url: format!("http://127.0.0.1:{port}/mcp"),
        port,
        pid,
        _child: child,
    }
}

async fn http_server(token: Option<&str>) -> HttpServer {
    http_server_on(0, token).await
}

#[tokio::test]
async fn time_server_tools_answer_and_its_child_has_only_the_configured_environment() {
    let mut table = time_server();
    table["env"] = json!({ "SLUICE_MCP_TEST": "1" });
    let s = start("time", table);

    let get = wait_for_tool(&s.registry, "time__get_current_time").await;
    let names = s.registry.names();
    assert_eq!(names, ["time__convert_time", "time__get_current_time"]);
    assert!(s.server.is_connected());
    let spec = get.spec();
    assert!(spec.description.contains("current time"), "{spec:?}");
    assert_eq!(spec.parameters["properties"]["timezone"]["type"], "string");
    let entry = s.registry.get("time__get_current_time").unwrap();
    assert_eq!(&*entry.source, "time");
    assert_eq!(s.registry.resolve(["time"]).unwrap().len(), 2);

    let text = call(&*get, json!({ "timezone": "Europe/Paris" }))
        .await
        .expect("get_current_time answers");
    let answer: Value = serde_json::from_str(&text).expect("the answer is JSON");
    assert_eq!(answer["timezone"], "Europe/Paris");
    let datetime = answer["datetime"].as_str().expect("a datetime");
    assert!(
        datetime.len() >= 19 && datetime.as_bytes()[10] == b'T',
        "{datetime}"
    );

    match call(&*get, json!({ "timezone": "Mars/Olympus_Mons" })).await {
        Err(ToolError::Failed(message)) => {
            assert!(message.contains("Invalid timezone"), "{message}")
        }
        other => panic!("a bad timezone should fail, got {other:?}"),
    }
    assert!(matches!(
        call(&*get, json!("not an object")).await,
        Err(ToolError::InvalidArguments(_))
    ));

    // The child's environment is the table's `env` and nothing of ours.
    let pid = s.server.child_pid().expect("a stdio child");
    assert!(std::env::var_os("PATH").is_some());
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    let vars: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(vars, ["SLUICE_MCP_TEST=1"]);

    s.server.stop().await;
    assert!(!alive(pid), "the child outlived stop()");
    assert!(s.registry.names().is_empty());
    assert!(s.registry.knows("time"), "the source stays declared");
}

#[tokio::test]
async fn allow_tools_exposes_only_the_listed_tools() {
    let mut table = time_server();
    table["allow_tools"] = json!(["get_current_time", "no_such_tool"]);
    let s = start("clock", table);
    wait_for_tool(&s.registry, "clock__get_current_time").await;
    assert_eq!(s.registry.names(), ["clock__get_current_time"]);
}

#[tokio::test]
async fn cancelling_the_shutdown_token_kills_the_process_group() {
    // A wrapper script whose background child ignores stdin: only a kill of the
    // whole group ends it.
    let s = start(
        "wrapped",
        json!({
            "kind": "mcp",
            "command": [
                "/bin/sh", "-c",
                "/bin/sleep 600 & exec \"$0\" -m mcp_server_time --local-timezone UTC",
                python(),
            ],
        }),
    );
    wait_for_tool(&s.registry, "wrapped__get_current_time").await;
    let pid = s.server.child_pid().expect("a stdio child");
    let members = group_members(pid);
    assert_eq!(
        members.len(),
        1,
        "the wrapper's background child runs in the group"
    );
    let sleeper = members[0];
    assert_eq!(
        stat_fields(sleeper)[1],
        pid.to_string(),
        "a child of the server"
    );

    s.shutdown.cancel();
    wait_gone(pid).await;
    wait_gone(sleeper).await;
    wait_until("the tools to leave", || s.registry.names().is_empty()).await;
}

#[tokio::test]
async fn dropping_the_handle_kills_the_child() {
    let s = start("dropped", time_server());
    wait_for_tool(&s.registry, "dropped__get_current_time").await;
    let pid = s.server.child_pid().expect("a stdio child");
    drop(s.server);
    wait_gone(pid).await;
}

#[tokio::test]
async fn start_returns_at_once_and_stop_ends_a_server_that_never_answers() {
    // `sleep` never speaks MCP: the handshake stays pending.
    let s = start(
        "silent",
        json!({ "kind": "mcp", "command": ["/bin/sleep", "600"] }),
    );
    assert!(s.registry.knows("silent"));
    assert!(s.registry.resolve(["silent"]).unwrap().is_empty());
    wait_until("the silent child to start", || {
        s.server.child_pid().is_some()
    })
    .await;
    let pid = s.server.child_pid().unwrap();
    assert!(alive(pid));
    assert!(!s.server.is_connected());
    tokio::time::timeout(WAIT, s.server.stop())
        .await
        .expect("stop() is bounded");
    assert!(!alive(pid), "stop() left the connecting child running");
}

#[tokio::test]
async fn a_server_that_fails_to_start_says_why() {
    let s = start(
        "broken",
        json!({ "kind": "mcp", "command": [python(), "-m", "no_such_mcp_server"] }),
    );
    wait_until("the failure to be reported", || {
        s.server
            .last_error()
            .is_some_and(|e| e.contains("No module named no_such_mcp_server"))
    })
    .await;
    let error = s.server.last_error().unwrap();
    assert!(error.contains("stderr"), "{error}");
    assert!(s.registry.names().is_empty());
    assert!(!s.server.is_connected());
}

#[tokio::test]
async fn a_killed_server_is_unavailable_then_reconnected() {
    let s = start(
        "t",
        json!({ "kind": "mcp", "command": [python(), test_server(), "stdio"] }),
    );
    let add = wait_for_tool(&s.registry, "t__add").await;
    let sleep = wait_for_tool(&s.registry, "t__sleep").await;
    assert_eq!(call(&*add, json!({ "a": 2, "b": 3 })).await.unwrap(), "5");
    let first = s.server.child_pid().expect("a stdio child");

    let in_flight = tokio::spawn(async move { call(&*sleep, json!({ "seconds": 30 })).await });
    sigkill(first);
    wait_until("the tools to leave", || s.registry.get("t__add").is_none()).await;
    match call(&*add, json!({ "a": 1, "b": 1 })).await {
        Err(ToolError::Unavailable(message)) => assert!(message.contains("`t`"), "{message}"),
        other => panic!("a call while down should be unavailable, got {other:?}"),
    }
    let interrupted = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("the in-flight call ends")
        .expect("join");
    assert!(
        matches!(interrupted, Err(ToolError::Unavailable(_))),
        "{interrupted:?}"
    );

    let add = wait_for_tool(&s.registry, "t__add").await;
    let second = s.server.child_pid().expect("a new child");
    assert_ne!(first, second);
    assert_eq!(
        call(&*add, json!({ "a": 20, "b": 22 })).await.unwrap(),
        "42"
    );
}

#[tokio::test]
async fn a_changed_tool_list_is_picked_up() {
    let s = start(
        "g",
        json!({ "kind": "mcp", "command": [python(), test_server(), "stdio"] }),
    );
    let grow = wait_for_tool(&s.registry, "g__grow").await;
    assert!(s.registry.get("g__mul").is_none());
    assert_eq!(call(&*grow, json!({})).await.unwrap(), "grown");
    let mul = wait_for_tool(&s.registry, "g__mul").await;
    assert_eq!(call(&*mul, json!({ "a": 6, "b": 7 })).await.unwrap(), "42");
}

#[tokio::test]
async fn fetch_server_reads_a_loopback_page() {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                axum::response::Html(
                    "<html><head><title>Sluice test page</title></head><body><article>\
                     <h1>Locks and weirs</h1><p>The quick sluice gate opens at dawn.</p>\
                     </article></body></html>",
                )
            }),
        )
        .route("/robots.txt", get(|| async { "User-agent: *\nAllow: /\n" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let site = tokio::spawn(async move { axum::serve(listener, app).await });

    let s = start(
        "fetch",
        json!({
            "kind": "mcp",
            "command": [python(), "-m", "mcp_server_fetch", "--allow-private-ips"],
        }),
    );
    let fetch = wait_for_tool(&s.registry, "fetch__fetch").await;
    let text = call(&*fetch, json!({ "url": format!("http://{addr}/") }))
        .await
        .expect("fetch answers");
    assert!(
        text.contains("The quick sluice gate opens at dawn."),
        "{text}"
    );
    site.abort();
}

#[tokio::test]
async fn streamable_http_server_with_a_bearer_token() {
    let http = http_server(Some("s3cret")).await;
    let s = start(
        "h",
        json!({
            "kind": "mcp",
            "url": http.url,
            "headers": { "Authorization": "Bearer s3cret" },
        }),
    );
    let add = wait_for_tool(&s.registry, "h__add").await;
    assert_eq!(s.server.child_pid(), None);
    assert_eq!(call(&*add, json!({ "a": 2, "b": 40 })).await.unwrap(), "42");
    match call(&*add, json!({ "a": "two", "b": 40 })).await {
        Err(ToolError::Failed(_) | ToolError::InvalidArguments(_)) => {}
        other => panic!("bad arguments should fail, got {other:?}"),
    }
}

#[tokio::test]
async fn a_vanished_http_server_is_noticed_and_reconnected() {
    let http = http_server(None).await;
    let (port, pid) = (http.port, http.pid);
    let s = start("hv", json!({ "kind": "mcp", "url": http.url }));
    let add = wait_for_tool(&s.registry, "hv__add").await;
    drop(http);
    wait_gone(pid).await;

    // The failed call makes the supervisor check the session and withdraw the tools.
    match call(&*add, json!({ "a": 1, "b": 2 })).await {
        Err(ToolError::Unavailable(message)) => assert!(message.contains("`hv`"), "{message}"),
        other => panic!("a call to a vanished server should be unavailable, got {other:?}"),
    }
    wait_until("the tools to leave", || s.registry.get("hv__add").is_none()).await;
    assert!(!s.server.is_connected());

    let _back = http_server_on(port, None).await;
    let add = wait_for_tool(&s.registry, "hv__add").await;
    assert_eq!(call(&*add, json!({ "a": 1, "b": 2 })).await.unwrap(), "3");
}

#[tokio::test]
async fn slow_calls_time_out_and_cancelled_calls_stop_at_once() {
    let http = http_server(None).await;
    let s = start(
        "slow",
        json!({ "kind": "mcp", "url": http.url, "timeout": "300ms" }),
    );
    let sleep = wait_for_tool(&s.registry, "slow__sleep").await;
    // Read the server's count through a session without the 300 ms limit.
    let counter = start("counter", json!({ "kind": "mcp", "url": http.url }));
    let cancelled = wait_for_tool(&counter.registry, "counter__cancelled_sleeps").await;

    let started = Instant::now();
    let out = call(&*sleep, json!({ "seconds": 10 })).await;
    let took = started.elapsed();
    assert_eq!(out, Err(ToolError::TimedOut(Duration::from_millis(300))));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // The context's deadline counts too when it comes first.
    let ctx = CallContext::with_timeout(Duration::from_millis(100));
    assert!(matches!(
        sleep.call(json!({ "seconds": 10 }), &ctx).await,
        Err(ToolError::TimedOut(d)) if d <= Duration::from_millis(100)
    ));

    let ctx = CallContext::with_timeout(WAIT);
    let cancel = ctx.cancel.clone();
    let running = sleep.call(json!({ "seconds": 10 }), &ctx);
    tokio::pin!(running);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut running)
            .await
            .is_err(),
        "the call is in flight"
    );
    cancel.cancel();
    let cancelled_at = Instant::now();
    assert_eq!(running.await, Err(ToolError::Cancelled));
    assert!(cancelled_at.elapsed() < Duration::from_millis(50));

    // Each abandoned call was cancelled on the server (notifications/cancelled).
    let deadline = Instant::now() + WAIT;
    loop {
        let count: u32 = call(&*cancelled, json!({})).await.unwrap().parse().unwrap();
        if count >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server saw {count} cancellations, not 3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tables_that_cannot_work_are_refused() {
    let registry = Arc::new(Registry::default());
    let refuse = |table: Value| {
        mcp::start(
            "bad",
            &config(table),
            registry.clone(),
            CancellationToken::new(),
        )
        .err()
        .expect("refused")
    };
    let both = refuse(json!({ "kind": "mcp", "command": ["x"], "url": "http://127.0.0.1:1/" }));
    assert!(both.contains("`command` and `url`"), "{both}");
    let neither = refuse(json!({ "kind": "mcp" }));
    assert!(neither.contains("`command`"), "{neither}");
    let tls = refuse(json!({ "kind": "mcp", "url": "https://example.com/mcp" }));
    assert!(tls.contains("https"), "{tls}");
    let header = refuse(json!({
        "kind": "mcp", "url": "http://127.0.0.1:1/", "headers": { "Bad Name": "x" }
    }));
    assert!(header.contains("headers.Bad Name"), "{header}");
    assert!(!registry.knows("bad"));
}
