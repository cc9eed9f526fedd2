//! Embeddings on the embedded engine (`task = "embed"`), as a client sees them, with
//! all-MiniLM-L6-v2 converted by `make models` into models/minilm-l6: the vectors match
//! sentence-transformers' own (tests/fixtures/minilm_reference.json, made by
//! loadtest/embed/reference.py), do not depend on which other inputs share their batch,
//! come back the same as floats and as base64, shorten to `dimensions`, and every input
//! the model cannot take gets a 400 that says why.

mod common;

use std::path::Path;

use async_openai::types::embeddings::CreateEmbeddingResponse;
use base64::Engine;
use common::{error_of, metric, Gateway};
use serde_json::{json, Value};

const MODEL: &str = "minilm";
const BACKEND: &str = "mini";

fn model_dir() -> String {
    let dir = format!("{}/models/minilm-l6", env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new(&dir).join("model.onnx").is_file(),
        "{dir}/model.onnx is missing: run `make models` (it converts all-MiniLM-L6-v2 with tools/convert/bert2onnx.py)"
    );
    dir
}

/// A gateway serving models/minilm-l6 as `minilm` on backend `mini` (cache off).
async fn start(max_batch_size: usize, max_wait: &str, queue_size: usize) -> Gateway {
    start_named(BACKEND, max_batch_size, max_wait, queue_size).await
}

async fn start_named(
    backend: &str,
    max_batch_size: usize,
    max_wait: &str,
    queue_size: usize,
) -> Gateway {
    let toml = format!(
        "[cache]\nmode = \"off\"\n\n[backends.{backend}]\nkind = \"onnx\"\ntask = \"embed\"\n\
         model_dir = \"{}\"\nmax_batch_size = {max_batch_size}\nmax_wait = \"{max_wait}\"\n\
         queue_size = {queue_size}\nthreads = 1\nort_library = \"{}/.ort/libonnxruntime.so\"\n\n\
         [[models]]\nname = \"{MODEL}\"\nbackend = \"{backend}\"\n",
        model_dir(),
        env!("CARGO_MANIFEST_DIR"),
    );
    Gateway::start(&toml).await
}

struct Reference {
    texts: Vec<String>,
    vectors: Vec<Vec<f32>>,
    tokens: Vec<u32>,
}

fn decode(b64: &str) -> Vec<f32> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/minilm_reference.json"
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let items = fixture["items"].as_array().unwrap();
    Reference {
        texts: items
            .iter()
            .map(|i| i["text"].as_str().unwrap().to_owned())
            .collect(),
        vectors: items
            .iter()
            .map(|i| decode(i["embedding"].as_str().unwrap()))
            .collect(),
        tokens: items
            .iter()
            .map(|i| i["tokens"].as_u64().unwrap() as u32)
            .collect(),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// POST an embeddings request, expect 200, parse with async-openai's type.
async fn embed(gw: &Gateway, body: &Value) -> CreateEmbeddingResponse {
    let resp = gw.post("/v1/embeddings", body).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn vectors(resp: &CreateEmbeddingResponse) -> Vec<Vec<f32>> {
    resp.data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d.index as usize, i);
            d.embedding.clone()
        })
        .collect()
}

/// The text's token ids as a client's tokenizer gives them: no special tokens, and
/// without the fixed padding to 128 that this model's tokenizer.json asks for.
fn ids_of(text: &str) -> Vec<u32> {
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(format!("{}/tokenizer.json", model_dir())).unwrap();
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).unwrap();
    tokenizer.encode(text, false).unwrap().get_ids().to_vec()
}

#[tokio::test]
async fn vectors_match_sentence_transformers() {
    let gw = start(32, "2ms", 64).await;
    let reference = reference();
    assert_eq!(reference.texts.len(), 100);
    let resp = embed(&gw, &json!({"model": MODEL, "input": reference.texts})).await;
    assert_eq!(resp.model, MODEL);
    let got = vectors(&resp);
    assert_eq!(got.len(), 100);
    for (i, (v, want)) in got.iter().zip(&reference.vectors).enumerate() {
        assert_eq!(v.len(), 384);
        let c = cosine(v, want);
        assert!(c >= 0.999, "{:?}: cosine {c}", reference.texts[i]);
        let norm: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    // Usage: every input's tokens, [CLS] and [SEP] included (as sentence-transformers
    // counts them), in both fields.
    let tokens: u32 = reference.tokens.iter().sum();
    assert_eq!(resp.usage.prompt_tokens, tokens);
    assert_eq!(resp.usage.total_tokens, tokens);
    // 100 inputs with max_batch_size 32: at least 4 runs, all inputs counted.
    let prefix = format!("sluice_engine_embed_inputs_total{{backend=\"{BACKEND}\"}}");
    assert_eq!(metric(&gw, &prefix).await, 100.0);
    let runs = metric(
        &gw,
        &format!("sluice_engine_embed_batch_size_count{{backend=\"{BACKEND}\"}}"),
    )
    .await;
    assert!((4.0..100.0).contains(&runs), "{runs} runs");
}

#[tokio::test]
async fn a_vector_does_not_depend_on_its_batch() {
    let gw = start(32, "20ms", 256).await;
    let reference = reference();
    let probes = [0usize, 13, 57, 90, 99];
    let mut alone = Vec::new();
    for &p in &probes {
        let resp = embed(&gw, &json!({"model": MODEL, "input": reference.texts[p]})).await;
        alone.push(vectors(&resp).remove(0));
    }
    // Inside batches of different sizes, padded with sentences of other lengths.
    for size in [2usize, 7, 32, 64] {
        for (k, &p) in probes.iter().enumerate() {
            let mut input: Vec<&str> = (0..size)
                .map(|j| reference.texts[(p + 1 + j * 7) % 100].as_str())
                .collect();
            let at = (k * 3) % size;
            input[at] = &reference.texts[p];
            let resp = embed(&gw, &json!({"model": MODEL, "input": input})).await;
            let d = max_diff(&vectors(&resp)[at], &alone[k]);
            assert!(
                d <= 1e-5,
                "sentence {p} in a batch of {size}: differs by {d}"
            );
        }
    }
    let padding = metric(
        &gw,
        &format!("sluice_engine_embed_tokens_total{{backend=\"{BACKEND}\",kind=\"padding\"}}"),
    )
    .await;
    assert!(padding > 0.0, "no input was ever padded");

    // Under concurrent requests, batched across requests by the batcher.
    let mut tasks = Vec::new();
    for round in 0..4 {
        for (k, &p) in probes.iter().enumerate() {
            let (client, url) = (gw.client.clone(), gw.url("/v1/embeddings"));
            let text = reference.texts[(p + round) % 100].clone();
            tasks.push(tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .json(&json!({"model": MODEL, "input": [text]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let body: CreateEmbeddingResponse = resp.json().await.unwrap();
                (round, k, body.data[0].embedding.clone())
            }));
        }
    }
    for task in tasks {
        let (round, k, v) = task.await.unwrap();
        if round == 0 {
            let d = max_diff(&v, &alone[k]);
            assert!(d <= 1e-5, "concurrent request {k}: differs by {d}");
        } else {
            let want = &reference.vectors[(probes[k] + round) % 100];
            assert!(cosine(&v, want) >= 0.999);
        }
    }
}

#[tokio::test]
async fn base64_floats_dimensions_and_token_ids_agree() {
    let gw = start(32, "2ms", 64).await;
    let texts = [
        "Why is the sky blue?",
        "Café au lait is coffee with hot milk.",
    ];
    let floats = vectors(&embed(&gw, &json!({"model": MODEL, "input": texts})).await);

    // base64 (the Python SDK's default) carries the same floats, bit for bit.
    let resp: Value = gw
        .post(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": texts, "encoding_format": "base64"}),
        )
        .await
        .json()
        .await
        .unwrap();
    for (i, want) in floats.iter().enumerate() {
        assert_eq!(
            &decode(resp["data"][i]["embedding"].as_str().unwrap()),
            want
        );
    }

    // dimensions: the first n components, renormalised.
    let short = vectors(
        &embed(
            &gw,
            &json!({"model": MODEL, "input": texts, "dimensions": 64}),
        )
        .await,
    );
    for (v, full) in short.iter().zip(&floats) {
        assert_eq!(v.len(), 64);
        let norm: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        assert!(cosine(v, &full[..64]) > 0.99999);
    }
    let same = vectors(
        &embed(
            &gw,
            &json!({"model": MODEL, "input": texts[0], "dimensions": 384}),
        )
        .await,
    );
    assert_eq!(same[0], floats[0]);
    for bad in [0, 385] {
        let body = json!({"model": MODEL, "input": "hi", "dimensions": bad});
        let (status, err) = error_of(gw.post("/v1/embeddings", &body).await).await;
        assert_eq!((status, err["param"].as_str()), (400, Some("dimensions")));
    }
    let body = json!({"model": MODEL, "input": "hi", "dimensions": 385});
    let (_, err) = error_of(gw.post("/v1/embeddings", &body).await).await;
    assert!(err["message"].as_str().unwrap().contains("384"), "{err}");

    // Token ids (without [CLS]/[SEP], as a tokenizer gives them) embed as their text.
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| ids_of(t)).collect();
    let one = embed(&gw, &json!({"model": MODEL, "input": ids[0]})).await;
    let d = max_diff(&one.data[0].embedding, &floats[0]);
    assert!(d <= 1e-6, "{d}");
    let many = embed(&gw, &json!({"model": MODEL, "input": ids})).await;
    for (v, want) in vectors(&many).iter().zip(&floats) {
        assert!(max_diff(v, want) <= 1e-6);
    }
    let text_usage = embed(&gw, &json!({"model": MODEL, "input": texts}))
        .await
        .usage;
    assert_eq!(many.usage.prompt_tokens, text_usage.prompt_tokens);
    assert_eq!(
        many.usage.prompt_tokens as usize,
        ids.iter().map(|i| i.len() + 2).sum::<usize>()
    );
}

#[tokio::test]
async fn inputs_the_model_cannot_take_get_400() {
    let gw = start(32, "2ms", 64).await;
    // The limit is 256 tokens with [CLS] and [SEP]: 254 ids fit, 255 do not.
    let fits = vec![2023u32; 254];
    let resp = embed(&gw, &json!({"model": MODEL, "input": [fits]})).await;
    assert_eq!(resp.usage.prompt_tokens, 256);
    let over = vec![2023u32; 255];
    let body = json!({"model": MODEL, "input": [vec![2023u32; 3], over]});
    let (status, err) = error_of(gw.post("/v1/embeddings", &body).await).await;
    assert_eq!(status, 400);
    assert_eq!(err["param"], "input");
    assert_eq!(err["code"], "context_length_exceeded");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("input[1]") && message.contains("257 tokens"),
        "{message}"
    );
    assert!(
        message.contains("maximum context length is 256 tokens"),
        "{message}"
    );

    let long_text = "the gateway batches many requests together ".repeat(60);
    let body = json!({"model": MODEL, "input": ["short", long_text]});
    let (status, err) = error_of(gw.post("/v1/embeddings", &body).await).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("context_length_exceeded"))
    );
    assert!(
        err["message"].as_str().unwrap().contains("input[1]"),
        "{err}"
    );

    // Token ids outside the vocabulary (30,522 tokens).
    let body = json!({"model": MODEL, "input": [[101, 30522]]});
    let (status, err) = error_of(gw.post("/v1/embeddings", &body).await).await;
    assert_eq!((status, err["param"].as_str()), (400, Some("input")));
    assert!(err["message"].as_str().unwrap().contains("30522"), "{err}");
    let body = json!({"model": MODEL, "input": [-1]});
    let (status, _) = error_of(gw.post("/v1/embeddings", &body).await).await;
    assert_eq!(status, 400);

    // Empty inputs, and more than OpenAI's 2,048.
    for input in [
        json!(""),
        json!([]),
        json!([""]),
        json!(["a", ""]),
        json!([[]]),
    ] {
        let body = json!({"model": MODEL, "input": input});
        let (status, err) = error_of(gw.post("/v1/embeddings", &body).await).await;
        assert_eq!(
            (status, err["param"].as_str()),
            (400, Some("input")),
            "{input}"
        );
    }
    let body = json!({"model": MODEL, "input": vec!["a"; 2049]});
    let (status, err) = error_of(gw.post("/v1/embeddings", &body).await).await;
    assert_eq!(status, 400);
    assert!(err["message"].as_str().unwrap().contains("2048"), "{err}");
    let at_limit = embed(&gw, &json!({"model": MODEL, "input": vec!["a"; 2048]})).await;
    assert_eq!(at_limit.data.len(), 2048);

    // A chat request to an embedding model.
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let (status, err) = error_of(gw.post("/v1/chat/completions", &chat).await).await;
    assert_eq!((status, err["param"].as_str()), (400, Some("model")));
    assert!(
        err["message"].as_str().unwrap().contains("embedding model"),
        "{err}"
    );
    // Nothing of this reached the encoder but the valid requests.
    let inputs = metric(
        &gw,
        &format!("sluice_engine_embed_inputs_total{{backend=\"{BACKEND}\"}}"),
    )
    .await;
    assert_eq!(inputs, 2049.0);
    assert_eq!(gw.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn a_full_queue_answers_503_at_once() {
    // One input per run and room for one waiting request: while the batcher works on
    // one long request (64 inputs of 256 tokens, one run each) and one more waits, a
    // third cannot queue. Six sent together: at most two are held, so some must get
    // 503 — and at once, not after the long work.
    let gw = start(1, "0ms", 1).await;
    let long: Vec<Vec<u32>> = vec![vec![2023u32; 254]; 64];
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (client, url) = (gw.client.clone(), gw.url("/v1/embeddings"));
        let body = json!({"model": MODEL, "input": long});
        tasks.push(tokio::spawn(async move {
            client.post(url).json(&body).send().await.unwrap()
        }));
    }
    // The first answer is a refusal: the long requests are still being embedded.
    let (first, _, pending) = futures::future::select_all(tasks).await;
    let first = first.unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(first.headers()["retry-after"], "1");
    let (_, err) = error_of(first).await;
    assert_eq!(err["code"], "overloaded");
    assert!(err["message"].as_str().unwrap().contains(BACKEND), "{err}");
    // Dropping the waiting clients cancels their work.
    for task in pending {
        task.abort();
    }
}

#[tokio::test]
async fn a_dead_batcher_answers_503_and_turns_not_ready() {
    // Its own backend name: the fault-injection switch is keyed by it.
    let backend = "mini-panic";
    let gw = start_named(backend, 32, "2ms", 16).await;
    let body = json!({"model": MODEL, "input": "hello"});
    embed(&gw, &body).await;
    assert_eq!(gw.get("/readyz").await.status(), 200);
    // The batcher panics at the top of its next loop: before the next request, or right
    // after answering it when the switch flips while it already waits for work.
    sluice::backend::test_hooks::panic_engine(backend);
    let mut resp = gw.post("/v1/embeddings", &body).await;
    if resp.status() == 200 {
        resp = gw.post("/v1/embeddings", &body).await;
    }
    assert_eq!(
        resp.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let (status, err) = error_of(resp).await;
    assert_eq!((status, err["code"].as_str()), (503, Some("overloaded")));
    assert_eq!(gw.get("/readyz").await.status(), 503);
}
