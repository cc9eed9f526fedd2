//! Rate limits as a client sees them: request rates refuse exactly what is over the
//! limit (also under concurrency), `x-ratelimit-*` headers count down, streamed tokens
//! are charged while they stream, model concurrency caps and the global in-flight cap
//! refuse with `retry-after`, tenants get their own budgets, and replicas behind one
//! Redis enforce one limit (and fall back to local limits when Redis dies).

mod common;

use std::time::Duration;

use common::fake_openai;
use common::redis::RedisServer;
use common::{chat_body, config, error_of, metric, streaming, Gateway};
use futures::StreamExt;
use sha2::{Digest, Sha256};

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn number(resp: &reqwest::Response, name: &str) -> u64 {
    header(resp, name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

async fn gateway(extra: &str) -> (Gateway, fake_openai::FakeOpenAi) {
    let up = fake_openai::start().await;
    let toml = config(
        "openai",
        &up.url,
        &[("gpt", "echo-model"), ("slow", "slow")],
        extra,
    );
    (Gateway::start(&toml).await, up)
}

#[tokio::test]
async fn exactly_n_of_m_concurrent_requests_pass_a_limit_of_n() {
    let (gw, up) = gateway("[limits]\nrequests_per_minute = 5\n").await;
    let body = chat_body("gpt", "hello");
    let requests = (0..12).map(|_| gw.post("/v1/chat/completions", &body));
    let responses = futures::future::join_all(requests).await;
    let mut ok = 0;
    for resp in responses {
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
                assert!((1..=13).contains(&retry), "retry-after {retry}");
                assert_eq!(number(&resp, "x-ratelimit-remaining-requests"), 0);
                let (_, err) = error_of(resp).await;
                assert_eq!(err["type"], "requests");
                assert_eq!(err["code"], "rate_limit_exceeded");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(
        up.state
            .chat_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        5,
        "refused requests never reach the upstream"
    );
    assert_eq!(
        metric(
            &gw,
            "sluice_ratelimit_rejections_total{limit=\"requests\",tenant=\"anonymous\"}"
        )
        .await,
        7.0
    );
}

#[tokio::test]
async fn headers_count_down_on_every_v1_response() {
    let (gw, _up) = gateway("[limits]\nrequests_per_minute = 4\ntokens_per_minute = 1000\n").await;
    for expected in (0..4).rev() {
        let resp = gw.get("/v1/models").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(number(&resp, "x-ratelimit-limit-requests"), 4);
        assert_eq!(number(&resp, "x-ratelimit-remaining-requests"), expected);
        let reset = header(&resp, "x-ratelimit-reset-requests").unwrap();
        assert!(reset.ends_with('s'), "{reset}");
        assert_eq!(number(&resp, "x-ratelimit-limit-tokens"), 1000);
        assert_eq!(number(&resp, "x-ratelimit-remaining-tokens"), 1000);
    }
    let resp = gw.get("/v1/models").await;
    assert_eq!(resp.status(), 429);
    // Health and metrics are neither limited nor labelled.
    let health = gw.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert!(header(&health, "x-ratelimit-limit-requests").is_none());
}

#[tokio::test]
async fn token_limits_charge_the_prompt_at_admission_and_streamed_tokens_as_they_stream() {
    let (gw, _up) = gateway("[limits]\ntokens_per_minute = 200\n").await;
    // A stream of `t0 t1 ...` chunks that goes on until dropped: its tokens are charged
    // while it streams, not at its end.
    let resp = gw
        .post("/v1/chat/completions", &streaming(chat_body("slow", "go")))
        .await;
    assert_eq!(resp.status(), 200);
    let admitted = number(&resp, "x-ratelimit-remaining-tokens");
    assert!(
        (190..200).contains(&admitted),
        "prompt estimate charged: {admitted}"
    );
    let mut body = resp.bytes_stream();
    let mut chunks = 0;
    while chunks < 41 {
        let bytes = body.next().await.unwrap().unwrap();
        chunks += String::from_utf8_lossy(&bytes).matches("data: ").count();
    }
    let during = number(&gw.get("/v1/models").await, "x-ratelimit-remaining-tokens");
    assert!(
        during + 32 <= admitted,
        "at least 32 streamed tokens charged mid-stream: {admitted} → {during}"
    );
    drop(body);
    // A prompt larger than what is left is refused with the tokens type and a wait.
    let long = "word ".repeat(4 * (during as usize + 10) / 5);
    let resp = gw
        .post("/v1/chat/completions", &chat_body("gpt", &long))
        .await;
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "retry-after").is_some());
    let (_, err) = error_of(resp).await;
    assert_eq!(err["type"], "tokens");
    // A prompt over the whole per-minute budget can never pass: no retry-after.
    let huge = "word ".repeat(400);
    let resp = gw
        .post("/v1/chat/completions", &chat_body("gpt", &huge))
        .await;
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "retry-after").is_none());
    let (_, err) = error_of(resp).await;
    assert!(
        err["message"].as_str().unwrap().contains("too large"),
        "{err}"
    );
}

#[tokio::test]
async fn reported_usage_settles_the_token_bill() {
    let (gw, _up) = gateway("[limits]\ntokens_per_minute = 1000\n").await;
    // The fake reports 9 prompt tokens and one completion token per echoed word.
    let text = "alpha ".repeat(60);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &streaming(chat_body("gpt", text.trim())),
        )
        .await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let left = number(&gw.get("/v1/models").await, "x-ratelimit-remaining-tokens");
    // 9 prompt + 61 completion ("echo:" and 60 words) = 70, give or take a token that
    // came back while the test ran.
    assert!((929..=931).contains(&left), "remaining {left}");
}

#[tokio::test]
async fn model_concurrency_cap_refuses_with_retry_after_until_a_slot_frees() {
    let extra = "";
    let up = fake_openai::start().await;
    let mut toml = config("openai", &up.url, &[], extra);
    toml.push_str("[[models]]\nname = \"slow\"\nbackend = \"up\"\nupstream_model = \"slow\"\nmax_concurrency = 2\n");
    let gw = Gateway::start(&toml).await;
    let body = streaming(chat_body("slow", "go"));
    let first = gw.post("/v1/chat/completions", &body).await;
    let second = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(third.status(), 429);
    assert_eq!(header(&third, "retry-after").as_deref(), Some("1"));
    let (_, err) = error_of(third).await;
    assert_eq!(err["code"], "concurrency_limit_exceeded");
    drop(first);
    // The slot frees when the client's stream is gone.
    let mut admitted = None;
    for _ in 0..100 {
        let resp = gw.post("/v1/chat/completions", &body).await;
        if resp.status() == 200 {
            admitted = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted.is_some(), "a freed slot admits the next request");
}

#[tokio::test]
async fn the_global_in_flight_cap_sheds_api_requests_with_503_but_not_health() {
    let (gw, _up) = gateway("[limits]\nmax_in_flight = 1\nshed_retry_after = \"2s\"\n").await;
    let held = gw
        .post("/v1/chat/completions", &streaming(chat_body("slow", "go")))
        .await;
    assert_eq!(held.status(), 200);
    let resp = gw
        .post("/v1/chat/completions", &chat_body("gpt", "hi"))
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("2"));
    let (_, err) = error_of(resp).await;
    assert_eq!(err["code"], "overloaded");
    assert_eq!(gw.get("/healthz").await.status(), 200);
    assert_eq!(gw.get("/metrics").await.status(), 200);
    drop(held);
    let mut status = 0;
    for _ in 0..100 {
        status = gw.get("/v1/models").await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "the place frees when the stream ends");
}

fn sha(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[tokio::test]
async fn each_tenant_draws_on_its_own_budget_with_overrides() {
    let keys = format!(
        "[[auth.keys]]\ntenant = \"web\"\nsha256 = \"{}\"\n\n[[auth.keys]]\ntenant = \"batch\"\nsha256 = \"{}\"\n\n\
         [limits]\nrequests_per_minute = 2\n[limits.tenants.batch]\nrequests_per_minute = 0\n",
        sha("sk-web"),
        sha("sk-batch")
    );
    let (gw, _up) = gateway(&keys).await;
    let send = |key: &'static str| gw.client.get(gw.url("/v1/models")).bearer_auth(key).send();
    assert_eq!(send("sk-web").await.unwrap().status(), 200);
    assert_eq!(send("sk-web").await.unwrap().status(), 200);
    assert_eq!(send("sk-web").await.unwrap().status(), 429);
    for _ in 0..5 {
        let resp = send("sk-batch").await.unwrap();
        assert_eq!(resp.status(), 200, "0 lifts the default for batch");
        assert!(header(&resp, "x-ratelimit-limit-requests").is_none());
    }
}

#[tokio::test]
async fn a_limit_override_for_an_unknown_tenant_is_a_config_error() {
    let toml = "[[auth.keys]]\ntenant = \"web\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
                [limits]\nshared = true\n[limits.tenants.wbe]\nrequests_per_minute = 1\n";
    let err = sluice::config::load_str(toml, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.tenants.wbe"), "{err}");
    assert!(err.contains("limits.shared"), "{err}");
}

async fn shared_gateway(redis: &RedisServer, up: &fake_openai::FakeOpenAi, rpm: u32) -> Gateway {
    let extra = format!(
        "[[auth.keys]]\ntenant = \"app\"\nsha256 = \"{}\"\n\n[[auth.keys]]\ntenant = \"warm\"\nsha256 = \"{}\"\n\n\
         [cache]\nmode = \"off\"\nredis_url = \"{}\"\n\n\
         [limits]\nrequests_per_minute = {rpm}\nshared = true\nredis_timeout = \"100ms\"\n\
         [limits.tenants.warm]\nrequests_per_minute = 100000\n",
        sha("sk-app"),
        sha("sk-warm"),
        redis.url()
    );
    Gateway::start(&config("openai", &up.url, &[("gpt", "echo-model")], &extra)).await
}

async fn get_as(gw: &Gateway, key: &str, path: &str) -> reqwest::Response {
    gw.client
        .get(gw.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// Wait until a replica decides in Redis: a request of the `warm` tenant no longer
/// counts a fallback to local limits.
async fn until_shared(gw: &Gateway) {
    for _ in 0..250 {
        let before = metric(gw, "sluice_ratelimit_fallbacks_total").await;
        assert_eq!(get_as(gw, "sk-warm", "/v1/models").await.status(), 200);
        if metric(gw, "sluice_ratelimit_fallbacks_total").await == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("shared limits never connected to redis");
}

#[tokio::test]
async fn two_replicas_behind_one_redis_enforce_one_limit_and_fall_back_when_it_dies() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = fake_openai::start().await;
    let a = shared_gateway(&redis, &up, 6).await;
    let b = shared_gateway(&redis, &up, 6).await;
    until_shared(&a).await;
    until_shared(&b).await;
    let fallbacks = metric(&a, "sluice_ratelimit_fallbacks_total").await
        + metric(&b, "sluice_ratelimit_fallbacks_total").await;
    // Twelve at once, half to each replica.
    let requests =
        (0..12).map(|i| get_as(if i % 2 == 0 { &a } else { &b }, "sk-app", "/v1/models"));
    let mut passed = 0;
    for resp in futures::future::join_all(requests).await {
        match resp.status().as_u16() {
            200 => passed += 1,
            429 => {}
            s => panic!("status {s}"),
        }
    }
    let after = metric(&a, "sluice_ratelimit_fallbacks_total").await
        + metric(&b, "sluice_ratelimit_fallbacks_total").await;
    assert_eq!(after, fallbacks, "every decision was made in Redis");
    assert_eq!(passed, 6, "one limit of 6 over both replicas");

    // Redis dies: each replica decides with its own local limits; nothing fails.
    redis.kill();
    for _ in 0..3 {
        let resp = get_as(&a, "sk-app", "/v1/models").await;
        assert_eq!(resp.status(), 200, "a's local budget is untouched");
    }
    assert!(metric(&a, "sluice_ratelimit_fallbacks_total").await >= fallbacks + 3.0);
    // A replica that starts while Redis is down serves from local limits too.
    let c = shared_gateway(&redis, &up, 100).await;
    for _ in 0..5 {
        let resp = c
            .client
            .post(c.url("/v1/chat/completions"))
            .bearer_auth("sk-app")
            .json(&chat_body("gpt", "still here"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert!(metric(&c, "sluice_ratelimit_fallbacks_total").await >= 5.0);
}
