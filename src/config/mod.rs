//! Typed configuration. `load` reads the TOML file, expands `${ENV_VAR}` references,
//! applies `SLUICE__SECTION__KEY` overrides and deserializes with key paths in errors;
//! `validate` then reports every remaining problem at once, each naming its key.

mod limits;
mod load;
mod resilience;
mod route;
mod tls;
mod tools;
mod validate;
mod workflows;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

pub use limits::{LimitsConfig, Rates};
pub use load::{load, load_str, ConfigError, ConfigIssue};
pub use resilience::{BreakerConfig, FallbackConfig, OutlierConfig, RetryConfig};
pub use route::{LoadPolicy, ModelRoute, RouteConfig, Weights, DEFAULT_BIAS};
pub use tls::{ClientAuth, TlsConfig, TlsVersion};
pub use tools::{AgentConfig, Approval, ModelAgentConfig, ToolConfig, ToolKind};
pub use workflows::{
    check_input, ChartType, InputConfig, InputType, StepConfig, StepKind, TextFormat,
    WorkflowConfig, WorkflowsConfig,
};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    /// Named upstream engines.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendConfig>,
    /// The model catalog: logical names that clients use.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// The complexity scorer's defaults and the load policy for tiered models.
    #[serde(default)]
    pub route: RouteConfig,
    /// Limits of the server-side agent loop.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Server tools by name (`[tools.NAME]`): the gateway runs their calls itself.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolConfig>,
    /// Declared multi-step jobs, their schedules and the run store.
    #[serde(default)]
    pub workflows: WorkflowsConfig,
    /// Rate limits per tenant, the global in-flight cap, shared counts in Redis.
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long in-flight requests may run on after SIGTERM / ctrl-c.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Async runtime worker threads (unset: `TOKIO_WORKER_THREADS`, else 1, which proxies
    /// with the least CPU and latency; more for over ~10,000 requests/s per replica).
    pub worker_threads: Option<usize>,
    /// When set, `GET /metrics` answers only `Authorization: Bearer <metrics_key>` (401
    /// otherwise): metrics name models, tenants' tools and traffic. Put it in an
    /// environment variable: `metrics_key = "${SLUICE_METRICS_KEY}"`.
    pub metrics_key: Option<SecretString>,
    /// `[server.tls]`: serve HTTPS instead of plain HTTP.
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            metrics_key: None,
            shutdown_timeout: Duration::from_secs(30),
            worker_threads: None,
            tls: None,
        }
    }
}

/// Which answers the response cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Every answer.
    Always,
    /// Only answers the request pins down: `temperature` 0 or a `seed`.
    Deterministic,
    /// None (and no coalescing of identical requests).
    Off,
}

/// The response cache and single-flight merging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub mode: CacheMode,
    /// How long an answer is served from the cache.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Memory for cached answers (their text and tool calls), in bytes.
    pub max_bytes: u64,
    /// Optional shared second level, e.g. `redis://127.0.0.1:6379/0`. A secret: it may
    /// hold a password (`redis://:pw@host`), so `Debug` and logs never show it.
    pub redis_url: Option<SecretString>,
    /// 32 bytes as 64 hex characters or base64; encrypts values in Redis (AES-256-GCM).
    /// Put it in an environment variable: `encryption_key = "${SLUICE_CACHE_KEY}"`.
    pub encryption_key: Option<SecretString>,
    /// Longest wait for one Redis round trip before answering without it.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// With a `rediss://` URL: PEM certificates of the CA that signed the Redis server's
    /// certificate, trusted instead of the system's store (for a private CA).
    pub redis_ca: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            mode: CacheMode::Deterministic,
            ttl: Duration::from_secs(600),
            max_bytes: 256 * 1024 * 1024,
            redis_url: None,
            encryption_key: None,
            redis_timeout: Duration::from_millis(50),
            redis_ca: None,
        }
    }
}

/// A logical model's own cache settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCacheConfig {
    /// Overrides `cache.mode` for this model.
    #[serde(default)]
    pub mode: Option<CacheMode>,
    /// One namespace for every tenant: answers are shared across API keys. Only for
    /// models whose answers hold nothing tenant-specific.
    #[serde(default)]
    pub shared: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys; with none configured the gateway is open.
    #[serde(default)]
    pub keys: Vec<ApiKeyConfig>,
}

/// One API key, stored as the hex SHA-256 of the key so the config holds no secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub tenant: String,
    /// `printf %s "$KEY" | sha256sum`
    pub sha256: String,
    /// Server tools this key's requests may add with `x-sluice-tools` (tool names, or
    /// an MCP server's name for all its tools).
    #[serde(default)]
    pub tools: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Ollama's native API (`/api/chat`, `/api/embed`, `/api/tags`).
    Ollama,
    /// Any OpenAI-compatible server (`/chat/completions` under `url`).
    Openai,
    /// The embedded ONNX Runtime engine serving a model folder (continuous batching).
    Onnx,
}

/// What an `onnx` backend's model does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnnxTask {
    /// A decoder that generates text: chat completions (continuous batching).
    #[default]
    Generate,
    /// An encoder that turns text into vectors: `/v1/embeddings` (micro-batching).
    Embed,
}

/// The CPU priority of an embedded engine's threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnginePriority {
    #[default]
    Normal,
    /// Linux `SCHED_IDLE`: only CPU time normal threads leave idle. For latency-tolerant
    /// work (agent runs) beside interactive chat on the same cores.
    Background,
}

/// An upstream engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub kind: BackendKind,
    /// Base URL: `http://127.0.0.1:11434` for Ollama, `http://host:8000/v1` for
    /// OpenAI-compatible. Required for those kinds; not used by `onnx`.
    #[serde(default)]
    pub url: Option<String>,
    /// A pool of base URLs serving the same models, instead of `url`: each request goes
    /// to the member with the fewest requests outstanding (see `config/resilience.rs`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Retries before the first byte (`[backends.NAME.retry]`; on by default: 2 tries).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Ejection of failing pool members (`[backends.NAME.outlier]`; on by default).
    #[serde(default)]
    pub outlier: Option<OutlierConfig>,
    /// Circuit breaker (`[backends.NAME.breaker]`; off unless present).
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// Bearer key sent upstream (openai kind only).
    #[serde(default)]
    pub api_key: Option<SecretString>,
    /// Time to establish the TCP connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time until the upstream's response starts (headers): includes queueing and prefill.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest silence allowed between two chunks of a streaming response.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Upstream connections kept idle per host.
    #[serde(default = "default_pool_idle")]
    pub max_idle_connections: usize,

    // --- kind = "onnx" only ---
    /// `generate` (default: a chat model) or `embed` (an embedding model such as
    /// all-MiniLM-L6-v2, served on `/v1/embeddings`).
    #[serde(default)]
    pub task: Option<OnnxTask>,
    /// The model folder: `sluice-model.json` (or `config.json`), `tokenizer.json`,
    /// `tokenizer_config.json` and the `.onnx` files (for `task = "embed"`: `model.onnx`,
    /// `tokenizer.json` and the sentence-transformers pooling files). Relative paths
    /// start at the working directory.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Tiers to load (e.g. `["int4", "fp32"]`); each gets its own engine thread.
    /// Empty means the model's default tier.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Sequences decoded together in one step (default 32; 1 turns batching off). With
    /// `task = "embed"`: inputs encoded together in one run (default 32).
    #[serde(default)]
    pub max_batch_size: Option<usize>,
    /// `task = "embed"` only: how long a batch that is not full may wait for more inputs
    /// (default 2ms).
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
    /// Longest sequence, prompt plus completion, in tokens (default and upper bound:
    /// the model's context length).
    #[serde(default)]
    pub max_context: Option<usize>,
    /// Requests waiting for a batch slot per tier (with `task = "embed"`: for the
    /// batcher) before new ones get 503 (default 256).
    #[serde(default)]
    pub queue_size: Option<usize>,
    /// ONNX Runtime intra-op threads per engine (default: one per CPU core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Path of `libonnxruntime.so`; else `ORT_DYLIB_PATH`, else `.ort/` under the
    /// working directory (where `make` puts it).
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    /// Structured generation: tool calls limited to the offered tools and valid against
    /// their schemas, `tool_choice`, `response_format` JSON (default true). `false`
    /// samples freely and parses afterwards (and refuses `response_format` JSON).
    #[serde(default)]
    pub structured: Option<bool>,
    /// `background`: the engine's threads (and ONNX Runtime's pools) use only CPU time
    /// that normal-priority work leaves idle (default `normal`).
    #[serde(default)]
    pub priority: Option<EnginePriority>,
}

impl BackendConfig {
    /// What an `onnx` backend serves (`generate` when unset).
    pub fn task(&self) -> OnnxTask {
        self.task.unwrap_or_default()
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_pool_idle() -> usize {
    256
}

/// A logical model clients ask for, mapped to a deployment on a backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients send as `model`.
    pub name: String,
    /// Key of a `[backends.*]` table.
    pub backend: String,
    /// The model's name on the backend (e.g. `llama3.2:3b`); defaults to `name`.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// `owned_by` in `/v1/models`.
    #[serde(default = "default_owned_by")]
    pub owned_by: String,
    /// Ollama `keep_alive` (e.g. "10m", "-1" to keep loaded, "0" to unload).
    #[serde(default)]
    pub keep_alive: Option<String>,
    /// The quantization tier to serve (onnx backends, e.g. "int4"); defaults to the
    /// backend's first listed tier. A model with `tier` is pinned to it.
    #[serde(default)]
    pub tier: Option<String>,
    /// The tiers to route between, cheapest first, most precise last: onnx tier names
    /// (`["int4", "int8", "fp32"]`), or for Ollama / OpenAI-compatible backends the
    /// suffixes of the upstream model's tags (`["q4_K_M", "q8_0", "fp16"]` with
    /// `upstream_model = "llama3.2:3b-instruct"` serve `llama3.2:3b-instruct-q4_K_M`, ...).
    /// Each request gets one, by complexity score, unless it forces one (`model@tier`
    /// or the `x-sluice-tier` header).
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Thresholds and scorer overrides for `tiers` (what `sluice route calibrate` prints).
    #[serde(default)]
    pub route: ModelRoute,
    /// Cache settings for this model (mode, shared namespace).
    #[serde(default)]
    pub cache: ModelCacheConfig,
    /// Options sent with every request: Ollama `options` (e.g. `num_ctx`), or extra body
    /// fields for OpenAI-compatible servers (e.g. vLLM's `top_k`).
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// OpenAI-compatible backends: forward the top-level request fields neither OpenAI's
    /// API nor sluice knows (vLLM's `chat_template_kwargs`, `min_p`, guided decoding, ...)
    /// to the upstream as the client sent them. Off by default: such fields are dropped.
    #[serde(default)]
    pub forward_unknown_fields: bool,
    /// Overrides the onnx backend's `structured` for this model.
    #[serde(default)]
    pub structured: Option<bool>,
    /// Server tools the gateway runs for this model (names of `[tools.*]` tables, or
    /// `SERVER__tool` for one tool of an MCP server): requests get an answer from a
    /// model that used them.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Overrides of `[agent]` for this model.
    #[serde(default)]
    pub agent: ModelAgentConfig,
    /// Generations of this model at once, over every tenant; more get 429 with
    /// `retry-after` (code `concurrency_limit_exceeded`). Unset: no cap.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Other deployments of this model, tried in order when the one before failed
    /// before its first byte (connect error, 5xx, 429, breaker open).
    #[serde(default)]
    pub fallbacks: Vec<FallbackConfig>,
}

fn default_owned_by() -> String {
    "sluice".to_owned()
}

impl ModelConfig {
    pub fn upstream_name(&self) -> &str {
        self.upstream_model.as_deref().unwrap_or(&self.name)
    }
}

impl Config {
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }
}
