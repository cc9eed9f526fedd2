//! The Prometheus registry and every metric's name, in one place. Names carry the
//! `sluice_` prefix; labels stay low-cardinality (route, model, status, backend, kind):
//! a model name a client invents is recorded as `unknown`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::error::BackendError;

mod resilience;
pub use resilience::ResilienceMetrics;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

pub struct Metrics {
    registry: Registry,
    /// `sluice_http_requests_total{route, model, status}`
    pub http_requests: IntCounterVec,
    /// `sluice_http_request_duration_seconds{route, model, status, stream}`: until the
    /// last byte; `stream="true"` for SSE answers, so long streams stay out of latency
    /// percentiles of plain requests.
    pub http_duration: HistogramVec,
    /// `sluice_http_requests_in_flight`
    pub in_flight: IntGauge,
    /// `sluice_runtime_alive_tasks`: tokio tasks alive, set when /metrics is rendered (a
    /// steady climb under steady load is a task leak; `make soak` watches it).
    pub runtime_alive_tasks: IntGauge,
    /// `sluice_time_to_first_token_seconds{model, backend}`
    pub time_to_first_token: HistogramVec,
    /// `sluice_inter_token_latency_seconds{model, backend}`: between two streamed chunks
    /// of text after the first.
    pub inter_token: HistogramVec,
    /// `sluice_finish_reasons_total{model, reason=stop|length|tool_calls|content_filter}`:
    /// generations by how they ended.
    pub finish_reasons: IntCounterVec,
    /// `sluice_prompt_tokens{model}`, `sluice_completion_tokens{model}`: lengths per
    /// generation (histograms).
    pub prompt_tokens: HistogramVec,
    pub completion_tokens: HistogramVec,
    /// `sluice_backend_ready{backend}`: 1 when its readiness probe last passed.
    pub backend_ready: IntGaugeVec,
    /// `sluice_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `sluice_input_tokens_total{model}`
    pub input_tokens: IntCounterVec,
    /// `sluice_output_tokens_total{model}`
    pub output_tokens: IntCounterVec,
    /// `sluice_upstream_errors_total{backend, kind}`
    pub upstream_errors: IntCounterVec,
    /// Embedded engine, all labelled `{backend, tier}`:
    /// `sluice_engine_queue_depth`: requests waiting for a batch slot.
    pub engine_queue_depth: IntGaugeVec,
    /// `sluice_engine_queue_capacity`: the most that may wait (`queue_size`); more get 503.
    pub engine_queue_capacity: IntGaugeVec,
    /// `sluice_engine_active_sequences`: sequences in the running batch.
    pub engine_active: IntGaugeVec,
    /// `sluice_engine_batch_size`: sequences decoded per step.
    pub engine_batch_size: HistogramVec,
    /// `sluice_engine_tokens_total{backend, tier, kind=prompt|generated}`; its rate is tokens/s.
    pub engine_tokens: IntCounterVec,
    /// `sluice_engine_step_duration_seconds{backend, tier, phase=prefill|decode}`
    pub engine_step_seconds: HistogramVec,
    /// `sluice_engine_queue_wait_seconds`: time from admission to a batch slot.
    pub engine_queue_wait: HistogramVec,
    /// `sluice_engine_mask_seconds{backend, tier}`: computing one constraint token mask.
    pub engine_mask_seconds: HistogramVec,
    /// `sluice_engine_constrained_total{backend, tier, kind=tools|json|ban}`: sequences
    /// generated under a constraint.
    pub engine_constrained: IntCounterVec,
    /// `sluice_engine_constraint_ended_total{backend, tier}`: generations the constraint
    /// ended (it allowed nothing more, e.g. a JSON schema's closing brace).
    pub engine_constraint_ended: IntCounterVec,
    /// Embedded engine with `task = "embed"`, all labelled `{backend}`:
    /// `sluice_engine_embed_queue_depth`: requests waiting for the batcher.
    pub engine_embed_queue_depth: IntGaugeVec,
    /// `sluice_engine_embed_batch_size`: inputs encoded together in one run.
    pub engine_embed_batch_size: HistogramVec,
    /// `sluice_engine_embed_inputs_total`: inputs embedded; its rate is embeddings/s.
    pub engine_embed_inputs: IntCounterVec,
    /// `sluice_engine_embed_run_seconds`: one encoder run (a padded batch).
    pub engine_embed_run_seconds: HistogramVec,
    /// `sluice_engine_embed_tokens_total{backend, kind=input|padding}`: tokens encoded,
    /// the inputs' own and the padding that evened out a run's rows.
    pub engine_embed_tokens: IntCounterVec,
    /// `sluice_cache_lookups_total{result=hit|miss|bypass}`: chat requests by cache outcome.
    pub cache_lookups: IntCounterVec,
    /// `sluice_cache_entries`, `sluice_cache_bytes`: what the local cache holds.
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    /// `sluice_cache_evictions_total`: entries pushed out by the size bound.
    pub cache_evictions: IntCounter,
    /// `sluice_cache_coalesced_total`: requests that joined an identical one in flight.
    pub cache_coalesced: IntCounter,
    /// `sluice_cache_redis_total{result=hit|miss|error}`: the shared second level.
    pub cache_redis: IntCounterVec,
    /// `sluice_ratelimit_rejections_total{tenant, limit=requests|tokens|concurrency|in_flight}`:
    /// requests refused by a limit (429, or 503 for the global in-flight cap).
    pub ratelimit_rejections: IntCounterVec,
    /// `sluice_ratelimit_fallbacks_total`: decisions made with local limits because the
    /// shared Redis did not answer in time.
    pub ratelimit_fallbacks: IntCounter,
    /// `sluice_route_requests_total{model, tier, reason=scored|forced|load|single}`:
    /// chat requests by the tier that served them.
    pub route_requests: IntCounterVec,
    /// `sluice_route_complexity_score{model}`: complexity scores of tiered models' requests.
    pub route_score: HistogramVec,
    /// `sluice_route_load_moves_total{model, from, to}`: requests the load policy moved
    /// off their scored tier.
    pub route_load_moves: IntCounterVec,
    /// `sluice_tool_calls_total{tool, outcome=ok|invalid|refused|error|timeout|cancelled|unavailable}`:
    /// server tool calls the agent loop ran.
    pub tool_calls: IntCounterVec,
    /// `sluice_tool_duration_seconds{tool}`: one server tool call.
    pub tool_duration: HistogramVec,
    /// `sluice_agent_steps{model}`: tool-calling turns per agent run.
    pub agent_steps: HistogramVec,
    /// `sluice_agent_runs_total{model, outcome=answer|max_steps|deadline|context_length|client_tool|error}`.
    pub agent_runs: IntCounterVec,
    /// `sluice_workflow_runs_total{workflow, outcome=succeeded|failed|interrupted}`.
    pub workflow_runs: IntCounterVec,
    /// `sluice_workflow_runs_running{workflow}`: runs going now.
    pub workflow_running: IntGaugeVec,
    /// `sluice_workflow_step_duration_seconds{kind=tool|model|template|chart, outcome=succeeded|failed}`:
    /// one step, retries included.
    pub workflow_step_seconds: HistogramVec,
    /// `sluice_workflow_schedule_skips_total{workflow, reason=late|busy|limit}`: scheduled
    /// runs not started (sluice was paused or down past the time, the previous run was
    /// still going, or `workflows.max_running` was reached).
    pub workflow_schedule_skips: IntCounterVec,
    /// Retries, fallbacks, pool ejections, breaker state (see `metrics/resilience.rs`).
    pub resilience: ResilienceMetrics,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("sluice_http_requests_total", "HTTP requests answered"),
            &["route", "model", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_http_request_duration_seconds",
                "Time from request to the last byte of the response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "model", "status", "stream"],
        )?;
        let in_flight = IntGauge::new(
            "sluice_http_requests_in_flight",
            "Requests whose response has not finished",
        )?;
        let runtime_alive_tasks = IntGauge::new(
            "sluice_runtime_alive_tasks",
            "Tokio tasks alive when /metrics was rendered",
        )?;
        let time_to_first_token = HistogramVec::new(
            HistogramOpts::new(
                "sluice_time_to_first_token_seconds",
                "Time from routing to the first generated token",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["model", "backend"],
        )?;
        let inter_token = HistogramVec::new(
            HistogramOpts::new(
                "sluice_inter_token_latency_seconds",
                "Time between two streamed pieces of a generation after the first",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                2.5,
            ]),
            &["model", "backend"],
        )?;
        let finish_reasons = IntCounterVec::new(
            Opts::new(
                "sluice_finish_reasons_total",
                "Generations by finish reason",
            ),
            &["model", "reason"],
        )?;
        let token_buckets = || {
            vec![
                8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
                16384.0, 32768.0,
            ]
        };
        let prompt_tokens = HistogramVec::new(
            HistogramOpts::new(
                "sluice_prompt_tokens",
                "Prompt length per generation, in tokens",
            )
            .buckets(token_buckets()),
            &["model"],
        )?;
        let completion_tokens = HistogramVec::new(
            HistogramOpts::new(
                "sluice_completion_tokens",
                "Completion length per generation, in tokens",
            )
            .buckets(token_buckets()),
            &["model"],
        )?;
        let backend_ready = IntGaugeVec::new(
            Opts::new(
                "sluice_backend_ready",
                "1 when the backend's readiness probe last passed, else 0",
            ),
            &["backend"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("sluice_build_info", "The running build; always 1"),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let input_tokens = IntCounterVec::new(
            Opts::new("sluice_input_tokens_total", "Prompt tokens processed"),
            &["model"],
        )?;
        let output_tokens = IntCounterVec::new(
            Opts::new("sluice_output_tokens_total", "Completion tokens generated"),
            &["model"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("sluice_upstream_errors_total", "Failed calls to backends"),
            &["backend", "kind"],
        )?;
        let engine = ["backend", "tier"];
        let engine_queue_depth = IntGaugeVec::new(
            Opts::new(
                "sluice_engine_queue_depth",
                "Requests waiting for a batch slot in the embedded engine",
            ),
            &engine,
        )?;
        let engine_queue_capacity = IntGaugeVec::new(
            Opts::new(
                "sluice_engine_queue_capacity",
                "Requests that may wait for a batch slot (queue_size); more are refused with 503",
            ),
            &engine,
        )?;
        let engine_active = IntGaugeVec::new(
            Opts::new(
                "sluice_engine_active_sequences",
                "Sequences in the embedded engine's running batch",
            ),
            &engine,
        )?;
        let engine_batch_size = HistogramVec::new(
            HistogramOpts::new(
                "sluice_engine_batch_size",
                "Sequences decoded together in one engine step",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            &engine,
        )?;
        let engine_tokens = IntCounterVec::new(
            Opts::new(
                "sluice_engine_tokens_total",
                "Tokens the embedded engine processed (prompt) and generated",
            ),
            &["backend", "tier", "kind"],
        )?;
        let engine_step_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_engine_step_duration_seconds",
                "Duration of one engine run: a prefill of new prompts or a decode step",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["backend", "tier", "phase"],
        )?;
        let engine_queue_wait = HistogramVec::new(
            HistogramOpts::new(
                "sluice_engine_queue_wait_seconds",
                "Time a request waited for a batch slot",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &engine,
        )?;
        let engine_mask_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_engine_mask_seconds",
                "Time to compute one constraint token mask (structured generation)",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.1,
            ]),
            &engine,
        )?;
        let engine_constrained = IntCounterVec::new(
            Opts::new(
                "sluice_engine_constrained_total",
                "Sequences generated under a constraint (tools, json, or a banned tool-call opening)",
            ),
            &["backend", "tier", "kind"],
        )?;
        let engine_constraint_ended = IntCounterVec::new(
            Opts::new(
                "sluice_engine_constraint_ended_total",
                "Generations ended by their constraint (it allowed nothing more)",
            ),
            &engine,
        )?;
        let engine_embed_queue_depth = IntGaugeVec::new(
            Opts::new(
                "sluice_engine_embed_queue_depth",
                "Embedding requests waiting for the embedded engine's batcher",
            ),
            &["backend"],
        )?;
        let engine_embed_batch_size = HistogramVec::new(
            HistogramOpts::new(
                "sluice_engine_embed_batch_size",
                "Inputs encoded together in one embedding run",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["backend"],
        )?;
        let engine_embed_inputs = IntCounterVec::new(
            Opts::new(
                "sluice_engine_embed_inputs_total",
                "Inputs the embedded engine turned into vectors",
            ),
            &["backend"],
        )?;
        let engine_embed_run_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_engine_embed_run_seconds",
                "Duration of one embedding run: encoding a padded batch and pooling it",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["backend"],
        )?;
        let engine_embed_tokens = IntCounterVec::new(
            Opts::new(
                "sluice_engine_embed_tokens_total",
                "Tokens encoded for embeddings: the inputs' own (input) and padding",
            ),
            &["backend", "kind"],
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "sluice_cache_lookups_total",
                "Chat requests by response-cache outcome",
            ),
            &["result"],
        )?;
        let cache_entries = IntGauge::new("sluice_cache_entries", "Answers in the local cache")?;
        let cache_bytes =
            IntGauge::new("sluice_cache_bytes", "Bytes of answers in the local cache")?;
        let cache_evictions = IntCounter::new(
            "sluice_cache_evictions_total",
            "Cached answers evicted to stay within cache.max_bytes",
        )?;
        let cache_coalesced = IntCounter::new(
            "sluice_cache_coalesced_total",
            "Requests that shared an identical request's generation in flight",
        )?;
        let cache_redis = IntCounterVec::new(
            Opts::new(
                "sluice_cache_redis_total",
                "Lookups and failures of the Redis cache level",
            ),
            &["result"],
        )?;
        let ratelimit_rejections = IntCounterVec::new(
            Opts::new(
                "sluice_ratelimit_rejections_total",
                "Requests refused by a rate, token, concurrency or in-flight limit",
            ),
            &["tenant", "limit"],
        )?;
        let ratelimit_fallbacks = IntCounter::new(
            "sluice_ratelimit_fallbacks_total",
            "Limit decisions made locally because the shared Redis did not answer",
        )?;
        let route_requests = IntCounterVec::new(
            Opts::new(
                "sluice_route_requests_total",
                "Chat requests by model, tier served and routing reason",
            ),
            &["model", "tier", "reason"],
        )?;
        let route_score = HistogramVec::new(
            HistogramOpts::new(
                "sluice_route_complexity_score",
                "Complexity scores of requests to tiered models",
            )
            .buckets(vec![
                0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75,
                0.8, 0.85, 0.9, 0.95, 1.0,
            ]),
            &["model"],
        )?;
        let route_load_moves = IntCounterVec::new(
            Opts::new(
                "sluice_route_load_moves_total",
                "Requests the load policy moved from their scored tier to a cheaper one",
            ),
            &["model", "from", "to"],
        )?;
        let tool_calls = IntCounterVec::new(
            Opts::new(
                "sluice_tool_calls_total",
                "Server tool calls run by the agent loop, by outcome",
            ),
            &["tool", "outcome"],
        )?;
        let tool_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_tool_duration_seconds",
                "Time one server tool call took",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["tool"],
        )?;
        let agent_steps = HistogramVec::new(
            HistogramOpts::new(
                "sluice_agent_steps",
                "Tool-calling model turns per agent run",
            )
            .buckets(vec![0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0]),
            &["model"],
        )?;
        let agent_runs = IntCounterVec::new(
            Opts::new(
                "sluice_agent_runs_total",
                "Agent runs (requests with server tools), by how they ended",
            ),
            &["model", "outcome"],
        )?;
        let workflow_runs = IntCounterVec::new(
            Opts::new(
                "sluice_workflow_runs_total",
                "Workflow runs that ended, by outcome",
            ),
            &["workflow", "outcome"],
        )?;
        let workflow_running = IntGaugeVec::new(
            Opts::new("sluice_workflow_runs_running", "Workflow runs going now"),
            &["workflow"],
        )?;
        let workflow_step_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_workflow_step_duration_seconds",
                "Time one workflow step took, retries included",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["kind", "outcome"],
        )?;
        let workflow_schedule_skips = IntCounterVec::new(
            Opts::new(
                "sluice_workflow_schedule_skips_total",
                "Scheduled workflow runs not started, by reason",
            ),
            &["workflow", "reason"],
        )?;
        let resilience = ResilienceMetrics::register(&registry)?;
        registry.register(Box::new(workflow_runs.clone()))?;
        registry.register(Box::new(workflow_running.clone()))?;
        registry.register(Box::new(workflow_step_seconds.clone()))?;
        registry.register(Box::new(workflow_schedule_skips.clone()))?;
        registry.register(Box::new(tool_calls.clone()))?;
        registry.register(Box::new(tool_duration.clone()))?;
        registry.register(Box::new(agent_steps.clone()))?;
        registry.register(Box::new(agent_runs.clone()))?;
        registry.register(Box::new(route_requests.clone()))?;
        registry.register(Box::new(route_score.clone()))?;
        registry.register(Box::new(route_load_moves.clone()))?;
        registry.register(Box::new(cache_lookups.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(cache_evictions.clone()))?;
        registry.register(Box::new(cache_coalesced.clone()))?;
        registry.register(Box::new(cache_redis.clone()))?;
        registry.register(Box::new(ratelimit_rejections.clone()))?;
        registry.register(Box::new(ratelimit_fallbacks.clone()))?;
        registry.register(Box::new(engine_queue_depth.clone()))?;
        registry.register(Box::new(engine_queue_capacity.clone()))?;
        registry.register(Box::new(engine_active.clone()))?;
        registry.register(Box::new(engine_batch_size.clone()))?;
        registry.register(Box::new(engine_tokens.clone()))?;
        registry.register(Box::new(engine_step_seconds.clone()))?;
        registry.register(Box::new(engine_queue_wait.clone()))?;
        registry.register(Box::new(engine_mask_seconds.clone()))?;
        registry.register(Box::new(engine_constrained.clone()))?;
        registry.register(Box::new(engine_constraint_ended.clone()))?;
        registry.register(Box::new(engine_embed_queue_depth.clone()))?;
        registry.register(Box::new(engine_embed_batch_size.clone()))?;
        registry.register(Box::new(engine_embed_inputs.clone()))?;
        registry.register(Box::new(engine_embed_run_seconds.clone()))?;
        registry.register(Box::new(engine_embed_tokens.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(runtime_alive_tasks.clone()))?;
        registry.register(Box::new(time_to_first_token.clone()))?;
        registry.register(Box::new(inter_token.clone()))?;
        registry.register(Box::new(finish_reasons.clone()))?;
        registry.register(Box::new(prompt_tokens.clone()))?;
        registry.register(Box::new(completion_tokens.clone()))?;
        registry.register(Box::new(backend_ready.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(input_tokens.clone()))?;
        registry.register(Box::new(output_tokens.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            inter_token,
            finish_reasons,
            prompt_tokens,
            completion_tokens,
            backend_ready,
            build_info,
            in_flight,
            runtime_alive_tasks,
            time_to_first_token,
            input_tokens,
            output_tokens,
            upstream_errors,
            engine_queue_depth,
            engine_queue_capacity,
            engine_active,
            engine_batch_size,
            engine_tokens,
            engine_step_seconds,
            engine_queue_wait,
            engine_mask_seconds,
            engine_constrained,
            engine_constraint_ended,
            engine_embed_queue_depth,
            engine_embed_batch_size,
            engine_embed_inputs,
            engine_embed_run_seconds,
            engine_embed_tokens,
            cache_lookups,
            cache_entries,
            cache_bytes,
            cache_evictions,
            cache_coalesced,
            cache_redis,
            ratelimit_rejections,
            ratelimit_fallbacks,
            route_requests,
            route_score,
            route_load_moves,
            tool_calls,
            tool_duration,
            agent_steps,
            agent_runs,
            workflow_runs,
            workflow_running,
            workflow_step_seconds,
            workflow_schedule_skips,
            resilience,
        })
    }

    /// Count a failed backend call by kind.
    pub fn upstream_error(&self, backend: &str, error: &BackendError) {
        let kind = match error {
            BackendError::Connect { .. } => "connect",
            BackendError::Timeout { .. } => "timeout",
            BackendError::Upstream { .. } => "status",
            BackendError::Failed { .. } => "failed",
            BackendError::Protocol(_) => "protocol",
            BackendError::InvalidRequest { .. }
            | BackendError::ContextLength { .. }
            | BackendError::InputTooLong { .. }
            | BackendError::ShuttingDown => return,
            BackendError::Overloaded { .. } => "overloaded",
            BackendError::Unavailable { .. } => "unavailable",
        };
        self.upstream_errors
            .with_label_values(&[backend, kind])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
