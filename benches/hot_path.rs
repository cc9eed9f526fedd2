//! Criterion benches for the per-request pure code on the gateway's hot path: parsing
//! and validating a chat request, its cache key, and framing one streamed chunk as SSE.
//!
//! Run: `cargo bench --bench hot_path`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::domain::Event;
use sluice::http::{extract, response::Chunks, sse};

const REQUEST: &str = r#"{"model":"llama3.2","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the weather like in Boston today? Answer briefly."}],"temperature":0.7,"max_tokens":256,"stream":true,"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"get_current_weather","description":"Get the current weather in a given location","parameters":{"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location"]}}}]}"#;

fn parse_request(c: &mut Criterion) {
    c.bench_function("parse+validate chat request", |b| {
        b.iter(|| {
            let wire: async_openai::types::chat::CreateChatCompletionRequest =
                extract::parse(black_box(REQUEST.as_bytes())).unwrap();
            black_box(sluice::http::chat_request(wire, Default::default()).unwrap())
        })
    });
}

fn cache_key(c: &mut Criterion) {
    let wire: async_openai::types::chat::CreateChatCompletionRequest =
        extract::parse(REQUEST.as_bytes()).unwrap();
    let request = sluice::http::chat_request(wire, Default::default()).unwrap();
    let deployment = sluice::backend::Deployment {
        structured: None,
        forward_unknown_fields: false,
        backend: "local".into(),
        upstream_model: "llama3.2".into(),
        keep_alive: None,
        options: Default::default(),
        tier: None,
    };
    c.bench_function("cache key of a chat request", |b| {
        b.iter(|| {
            black_box(sluice::pipeline::cache::key::key(
                "tenant",
                "local",
                &deployment,
                &[],
                black_box(&request),
            ))
        })
    });
}

fn frame_chunk(c: &mut Criterion) {
    let chunks = Chunks::new(Arc::from("llama3.2"), true, false);
    let event = Event::Delta(" Boston".into());
    c.bench_function("frame one SSE content chunk", |b| {
        b.iter(|| black_box(sse::frame(&chunks.event(black_box(&event), false))))
    });
}

criterion_group!(benches, parse_request, cache_key, frame_chunk);
criterion_main!(benches);
