//! Criterion bench for the limits stage: what it adds to one admitted chat request of a
//! tenant with every local limit on (requests per second and per minute, tokens per
//! minute, a model concurrency cap): `admit_request` (the middleware's check), then
//! `admit_chat` (prompt estimate, token budget, model slot) and wrapping the events
//! with the charge, then the finish event that settles the bill. Limits are set high
//! enough that every iteration is admitted (the common case). Also the bare
//! `admit_request` of a tenant without limits (the price of the stage when unused).
//!
//! Run: `cargo bench --bench limits`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use sluice::domain::{Event, FinishReason, Usage};
use sluice::metrics::Metrics;
use sluice::pipeline::limits::Limits;
use sluice::pipeline::Tenant;

const CONFIG: &str = r#"
[backends.up]
kind = "openai"
url = "http://127.0.0.1:9/v1"

[[models]]
name = "gpt"
backend = "up"
max_concurrency = 1000000

[limits]
requests_per_second = 1000000000
requests_per_minute = 1000000000
tokens_per_minute = 2000000000
"#;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = sluice::config::load_str(CONFIG, Vec::new()).expect("bench config");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let limits = runtime
        .block_on(async { Limits::new(&config, metrics) })
        .expect("limits");
    let tenant = Tenant::anonymous();
    let request = sluice::http::chat_request(
        serde_json::from_str(
            r#"{"model":"gpt","messages":[{"role":"system","content":"You are terse."},
               {"role":"user","content":"What is the capital of France? Answer in one word."}]}"#,
        )
        .expect("wire request"),
        Default::default(),
    )
    .expect("valid request");

    c.bench_function("limits: admit + charge one chat request", |b| {
        b.to_async(&runtime).iter(|| async {
            let (admitted, headers) = limits.admit_request(&tenant).await;
            black_box((admitted.is_ok(), headers.pairs()));
            let charge = limits
                .admit_chat(&tenant, "gpt", &request)
                .await
                .expect("admitted");
            let events = futures::stream::iter([
                Ok(Event::Delta("Paris".into())),
                Ok(Event::Finish {
                    reason: FinishReason::Stop,
                    usage: Some(Usage {
                        prompt_tokens: 30,
                        completion_tokens: 2,
                    }),
                }),
            ]);
            let mut billed = charge.wrap(Box::pin(events), true);
            while let Some(event) = billed.next().await {
                black_box(event.is_ok());
            }
        })
    });

    let without = CONFIG.split("[limits]").next().unwrap_or_default();
    let open = sluice::config::load_str(without, Vec::new()).expect("bench config");
    {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let unlimited = runtime
            .block_on(async { Limits::new(&open, metrics) })
            .expect("limits");
        c.bench_function("limits: admit_request without limits", |b| {
            b.to_async(&runtime)
                .iter(|| async { black_box(unlimited.admit_request(&tenant).await.0.is_ok()) })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
