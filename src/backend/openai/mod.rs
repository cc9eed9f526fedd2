//! Backend for any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, OpenAI):
//! `POST {url}/chat/completions` always streamed upstream (one path), parsed from SSE
//! into domain events; `POST {url}/embeddings`; readiness from `GET {url}/models`.
//! Every call goes through the backend's pool, retries and breaker (`upstream.rs`).

mod sse;
pub(crate) mod wire;

use async_trait::async_trait;
use futures::StreamExt;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use super::transport::{self, UpstreamRequest};
use super::upstream::{json_bytes, Endpoint, Upstream, UpstreamState};
use super::{Backend, Deployment};
use crate::config::BackendConfig;
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;
use crate::metrics::Metrics;

pub struct OpenAiBackend {
    http: Upstream,
    /// `Authorization: Bearer <api_key>`, built once.
    auth: Option<http::HeaderValue>,
    chat_url: Endpoint,
    embed_url: Endpoint,
    models_url: Endpoint,
}

impl OpenAiBackend {
    pub fn new(name: &str, cfg: &BackendConfig, metrics: &Metrics) -> Result<Self, BackendError> {
        let http = Upstream::new(name, cfg, metrics)?;
        Ok(OpenAiBackend {
            chat_url: http.endpoint("/chat/completions")?,
            embed_url: http.endpoint("/embeddings")?,
            models_url: http.endpoint("/models")?,
            auth: cfg
                .api_key
                .as_ref()
                .and_then(|k| transport::bearer(k.expose_secret())),
            http,
        })
    }

    /// `request` with the upstream key, if one is configured.
    fn keyed(&self, request: UpstreamRequest) -> UpstreamRequest {
        match &self.auth {
            Some(value) => request.with(http::header::AUTHORIZATION, value.clone()),
            None => request,
        }
    }
}

#[async_trait]
impl Backend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.http.name
    }

    async fn chat(
        &self,
        request: ChatRequest,
        deployment: &Deployment,
        cancel: CancellationToken,
    ) -> Result<EventStream, BackendError> {
        let body = json_bytes(&wire::chat_body(&request, deployment))?;
        let build = || self.keyed(UpstreamRequest::json(&body));
        let bytes = self.http.stream(&self.chat_url, &build, cancel).await?;
        Ok(wire::events(self.http.name.clone(), bytes).boxed())
    }

    async fn embed(
        &self,
        request: EmbedRequest,
        deployment: &Deployment,
    ) -> Result<EmbedResponse, BackendError> {
        let body = json_bytes(&wire::embed_body(&request, deployment))?;
        let build = || self.keyed(UpstreamRequest::json(&body));
        wire::embed_response(
            &self.http.name,
            &self.http.body(&self.embed_url, &build).await?,
        )
    }

    async fn ready(&self) -> Result<(), BackendError> {
        let build = || self.keyed(UpstreamRequest::get());
        self.http.probe(&self.models_url, &build).await
    }

    fn upstream_state(&self) -> Option<UpstreamState> {
        Some(self.http.state())
    }
}
