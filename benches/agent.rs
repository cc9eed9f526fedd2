//! What the agent loop costs, measured in-process (no sockets) through the whole
//! pipeline (`Pipeline::chat` + collecting the events), with a scripted backend that
//! answers at once and a no-op server tool:
//!
//! - per step: an agent run of 10 tool-calling turns minus a run that answers at once,
//!   divided by 10. It holds one backend call, the tool call, the messages the next turn
//!   carries and the bookkeeping: an upper bound on the loop's own overhead. Printed as
//!   `agent step p50/p99` (target p99 < 0.3 ms);
//! - server tools configured but not called: a model with three server tools that
//!   answers without calling one, minus the same request to a model without tools,
//!   printed as `tools configured, not called: +p50/+p99` (target < 50 µs).
//!
//! Run: `cargo bench --bench agent`

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Value;
use sluice::backend::{Backend, Backends, Deployment};
use sluice::config::ToolConfig;
use sluice::domain::{
    collect, ChatRequest, EmbedRequest, EmbedResponse, Event, EventStream, FinishReason, Message,
    Role, Sampling, Usage,
};
use sluice::error::BackendError;
use sluice::metrics::Metrics;
use sluice::pipeline::{Asked, Pipeline, Tenant};
use sluice::tools::{CallContext, Entry, Tool, ToolError, ToolSpec};
use tokio_util::sync::CancellationToken;

const STEPS: usize = 10;

/// Calls `noop` until the conversation holds `steps` tool results (the first user
/// message says how many), then answers.
struct Scripted;

#[async_trait]
impl Backend for Scripted {
    fn name(&self) -> &str {
        "up"
    }

    async fn chat(
        &self,
        request: ChatRequest,
        _deployment: &Deployment,
        _cancel: CancellationToken,
    ) -> Result<EventStream, BackendError> {
        let wanted: usize = request.messages[0].text_content().parse().unwrap_or(0);
        let done = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .count();
        let usage = Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 2,
        });
        let events = if done < wanted {
            vec![
                Ok(Event::ToolCall {
                    index: 0,
                    id: Some(format!("call_{done}")),
                    name: Some("noop".into()),
                    arguments: "{}".into(),
                }),
                Ok(Event::Finish {
                    reason: FinishReason::ToolCalls,
                    usage,
                }),
            ]
        } else {
            vec![
                Ok(Event::Delta("done".into())),
                Ok(Event::Finish {
                    reason: FinishReason::Stop,
                    usage,
                }),
            ]
        };
        Ok(Box::pin(futures::stream::iter(events)))
    }

    async fn embed(&self, _: EmbedRequest, _: &Deployment) -> Result<EmbedResponse, BackendError> {
        Err(BackendError::Protocol("no embeddings".into()))
    }

    async fn ready(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

struct Noop(ToolSpec);

#[async_trait]
impl Tool for Noop {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }

    async fn call(&self, _arguments: Value, _ctx: &CallContext) -> Result<String, ToolError> {
        Ok("ok".into())
    }
}

const CONFIG: &str = r#"
[cache]
mode = "off"

[backends.up]
kind = "openai"
url = "http://127.0.0.1:9/v1"

[agent]
max_steps = 64

[tools.noop]
kind = "calculator"

[tools.calculator]
kind = "calculator"

[tools.current_time]
kind = "current_time"

[[models]]
name = "plain"
backend = "up"

[[models]]
name = "agent"
backend = "up"
tools = ["noop"]

[[models]]
name = "configured"
backend = "up"
tools = ["noop", "calculator", "current_time"]
"#;

fn pipeline(rt: &tokio::runtime::Runtime) -> Pipeline {
    let config = sluice::config::load_str(CONFIG, Vec::new()).expect("bench config");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let mut backends = Backends::from_config(&config, &metrics).expect("backends");
    backends.replace("up", Arc::new(Scripted));
    let _guard = rt.enter();
    let pipeline = Pipeline::with_backends(&config, backends, metrics, CancellationToken::new())
        .expect("pipeline");
    let cfg: ToolConfig = toml::from_str("kind = \"calculator\"").expect("tool config");
    let spec = ToolSpec {
        name: "noop".into(),
        description: "does nothing".into(),
        parameters: serde_json::json!({"type": "object", "properties": {}}),
    };
    pipeline
        .tools()
        .insert(Entry::new(Arc::new(Noop(spec)), &cfg, "noop"));
    pipeline
}

fn request(model: &str, steps: usize) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![Message::text(Role::User, steps.to_string())],
        tools: Vec::new(),
        tool_choice: None,
        parallel_tool_calls: None,
        response_format: None,
        sampling: Sampling::default(),
        n: 1,
        user: None,
        extra: Default::default(),
    }
}

async fn once(p: &Pipeline, tenant: &Tenant, model: &str, steps: usize) -> Duration {
    let t = Instant::now();
    let generation = p
        .chat(tenant, request(model, steps), Asked::default())
        .await
        .expect("chat");
    let done = collect(generation.events).await.expect("answer");
    assert_eq!(done.steps.len(), if model == "plain" { 0 } else { steps });
    t.elapsed()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// `n` runs of each (model, steps), interleaved so drift hits both alike; µs.
fn timed(
    rt: &tokio::runtime::Runtime,
    p: &Pipeline,
    a: (&str, usize),
    b: (&str, usize),
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    let tenant = Tenant::anonymous();
    let (mut xs, mut ys) = (Vec::with_capacity(n), Vec::with_capacity(n));
    rt.block_on(async {
        for _ in 0..n {
            xs.push(once(p, &tenant, a.0, a.1).await.as_secs_f64() * 1e6);
            ys.push(once(p, &tenant, b.0, b.1).await.as_secs_f64() * 1e6);
        }
    });
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    (xs, ys)
}

fn agent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let p = pipeline(&rt);
    let tenant = Tenant::anonymous();
    let mut group = c.benchmark_group("agent");
    group.bench_function("run, 10 steps", |b| {
        b.to_async(&rt).iter(|| once(&p, &tenant, "agent", STEPS))
    });
    group.bench_function("run, answers at once", |b| {
        b.to_async(&rt).iter(|| once(&p, &tenant, "agent", 0))
    });
    group.bench_function("plain, no server tools", |b| {
        b.to_async(&rt).iter(|| once(&p, &tenant, "plain", 0))
    });
    group.bench_function("tools configured, not called", |b| {
        b.to_async(&rt).iter(|| once(&p, &tenant, "configured", 0))
    });
    group.finish();

    let n = 5_000;
    let (runs, direct) = timed(&rt, &p, ("agent", STEPS), ("agent", 0), n);
    let step = |q| (percentile(&runs, q) - percentile(&direct, q)) / STEPS as f64;
    println!(
        "agent step p50 {:.1} µs p99 {:.1} µs  (run of {STEPS} steps p50 {:.1} / p99 {:.1} µs; \
         answer at once p50 {:.1} / p99 {:.1} µs; {n} runs each)",
        step(0.5),
        step(0.99),
        percentile(&runs, 0.5),
        percentile(&runs, 0.99),
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
    );
    let (configured, plain) = timed(&rt, &p, ("configured", 0), ("plain", 0), n);
    println!(
        "tools configured, not called: {:+.1} µs p50, {:+.1} µs p99  (configured p50 {:.1} / \
         p99 {:.1} µs; plain p50 {:.1} / p99 {:.1} µs)",
        percentile(&configured, 0.5) - percentile(&plain, 0.5),
        percentile(&configured, 0.99) - percentile(&plain, 0.99),
        percentile(&configured, 0.5),
        percentile(&configured, 0.99),
        percentile(&plain, 0.5),
        percentile(&plain, 0.99),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = agent
}
criterion_main!(benches);
