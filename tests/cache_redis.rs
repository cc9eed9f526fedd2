//! The cache's shared second level against a real `redis-server` (installed by
//! `make test`): two sluice replicas share answers through it, values are encrypted when
//! a key is set, and a Redis that dies mid-test costs nothing but the shared level.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fake_openai;
use common::redis::RedisServer;
use common::{chat_body, config, metric, Gateway};
use serde_json::{json, Value};

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn cache_section(redis: &RedisServer) -> String {
    format!(
        "[cache]\nredis_url = \"{}\"\nencryption_key = \"{KEY_HEX}\"\nredis_timeout = \"100ms\"\n",
        redis.url()
    )
}

fn deterministic(text: &str) -> Value {
    let mut body = chat_body("gpt", text);
    body["temperature"] = json!(0);
    body
}

async fn ask(gw: &Gateway, body: &Value) -> (String, Value) {
    let resp = gw.post("/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 200);
    let status = resp.headers()["x-sluice-cache"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_second_replica_gets_a_hit_written_by_the_first() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = fake_openai::start().await;
    let toml = config(
        "openai",
        &up.url,
        &[("gpt", "echo-model")],
        &cache_section(&redis),
    );
    let first = Gateway::start(&toml).await;
    let second = Gateway::start(&toml).await;

    let body = deterministic("shared between replicas");
    // Both replicas and this test connected (the replicas connect in the background).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    common::wait_for_redis_clients(&mut conn, 3).await;
    let (status, original) = ask(&first, &body).await;
    assert_eq!(status, "miss");
    // The write to Redis follows the answer: wait until Redis holds it (asking the second
    // replica before that would be a miss, and a second upstream call).
    let deadline = Instant::now() + Duration::from_secs(5);
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
            "the first replica never wrote to Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, replayed) = ask(&second, &body).await;
    assert_eq!(
        status, "hit",
        "the second replica hits the first one's answer"
    );
    assert_eq!(
        replayed["choices"][0]["message"],
        original["choices"][0]["message"]
    );
    assert_eq!(up.state.chat_calls.load(Ordering::SeqCst), 1);
    assert!(metric(&second, "sluice_cache_redis_total{result=\"hit\"}").await >= 1.0);
}

#[tokio::test]
async fn a_redis_outage_degrades_to_the_local_cache() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = fake_openai::start().await;
    let toml = config(
        "openai",
        &up.url,
        &[("gpt", "echo-model")],
        &cache_section(&redis),
    );
    let gw = Gateway::start(&toml).await;

    let kept = deterministic("asked before the outage");
    assert_eq!(ask(&gw, &kept).await.0, "miss");
    redis.kill();

    // New questions are answered (a miss in both levels), promptly.
    for i in 0..5 {
        let started = Instant::now();
        let (status, answer) = ask(&gw, &deterministic(&format!("during the outage {i}"))).await;
        assert_eq!(status, "miss");
        assert!(answer["choices"][0]["message"]["content"].is_string());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // What this replica holds is still served.
    assert_eq!(ask(&gw, &kept).await.0, "hit");
    assert!(metric(&gw, "sluice_cache_redis_total{result=\"error\"}").await >= 1.0);
}
