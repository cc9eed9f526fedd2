//! Backend for Ollama's native API: `POST /api/chat` (NDJSON stream), `POST /api/embed`,
//! `GET /api/tags` for readiness. The native API, not Ollama's `/v1`, so `num_ctx`,
//! `keep_alive` and the other options reach the model. Every call goes through the
//! backend's pool, retries and breaker (`upstream.rs`).

pub(crate) mod wire;

use async_trait::async_trait;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::transport::UpstreamRequest;
use super::upstream::{json_bytes, Endpoint, Upstream, UpstreamState};
use super::{Backend, Deployment};
use crate::config::BackendConfig;
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;
use crate::metrics::Metrics;

pub struct OllamaBackend {
    http: Upstream,
    chat_url: Endpoint,
    embed_url: Endpoint,
    tags_url: Endpoint,
}

impl OllamaBackend {
    pub fn new(name: &str, cfg: &BackendConfig, metrics: &Metrics) -> Result<Self, BackendError> {
        let http = Upstream::new(name, cfg, metrics)?;
        Ok(OllamaBackend {
            chat_url: http.endpoint("/api/chat")?,
            embed_url: http.endpoint("/api/embed")?,
            tags_url: http.endpoint("/api/tags")?,
            http,
        })
    }
}

#[async_trait]
impl Backend for OllamaBackend {
    fn name(&self) -> &str {
        &self.http.name
    }

    async fn chat(
        &self,
        request: ChatRequest,
        deployment: &Deployment,
        cancel: CancellationToken,
    ) -> Result<EventStream, BackendError> {
        let body = json_bytes(&wire::chat_body(&request, deployment)?)?;
        let build = || UpstreamRequest::json(&body);
        let bytes = self.http.stream(&self.chat_url, &build, cancel).await?;
        Ok(wire::events(self.http.name.clone(), bytes).boxed())
    }

    async fn embed(
        &self,
        request: EmbedRequest,
        deployment: &Deployment,
    ) -> Result<EmbedResponse, BackendError> {
        let body = json_bytes(&wire::embed_body(&request, deployment)?)?;
        let build = || UpstreamRequest::json(&body);
        wire::embed_response(
            &self.http.name,
            &self.http.body(&self.embed_url, &build).await?,
        )
    }

    async fn ready(&self) -> Result<(), BackendError> {
        let build = UpstreamRequest::get;
        self.http.probe(&self.tags_url, &build).await
    }

    fn upstream_state(&self) -> Option<UpstreamState> {
        Some(self.http.state())
    }
}
