//! `http_get` ignores proxies from the environment: with `HTTP_PROXY`, `HTTPS_PROXY`
//! and `ALL_PROXY` (both cases) pointing at the loopback canary, a fetch from the
//! allowed upstream still goes straight there and the canary sees no connection — a
//! proxy would otherwise be a way around the address policy (the proxy connects, not
//! the sandbox). Environment variables are process-wide, so this is the only test in
//! its file (its own process under both `cargo test` and nextest).

mod net_support;

use std::time::Duration;

use net_support::{config, pair, serve, FakeDns};
use serde_json::json;
use sluice::tools::http_get::HttpGet;
use sluice::tools::{CallContext, Tool};

// The default (current-thread) runtime: no other thread is running while the
// environment is changed.
#[tokio::test]
async fn proxy_variables_in_the_environment_are_ignored() {
    let (canary, listener) = pair().await;
    let proxy = canary.url("");
    for var in ["NO_PROXY", "no_proxy", "REQUEST_METHOD"] {
        std::env::remove_var(var);
    }
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        std::env::set_var(var, &proxy);
    }
    serve(
        listener,
        axum::Router::new().route("/", axum::routing::get(|| async { "straight through" })),
    );
    let dns = FakeDns::new(&[("up.test", &[&["127.0.0.2"]])]);
    let cfg = config(
        "http_get",
        "allow_hosts = [\"127.0.0.2\", \"up.test\"]\nallow_addresses = [\"127.0.0.2/32\"]",
    );
    let tool = HttpGet::with_lookup("http_get", &cfg, dns.lookup()).unwrap();
    let ctx = CallContext::with_timeout(Duration::from_secs(5));
    for url in [
        format!("http://127.0.0.2:{}/", canary.port),
        format!("http://up.test:{}/", canary.port),
    ] {
        let page = tool.call(json!({ "url": url }), &ctx).await.unwrap();
        assert!(page.ends_with("straight through"), "{url}: {page}");
    }
    canary.assert_untouched().await;
}
