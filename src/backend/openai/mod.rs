//! Backend for any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, OpenAI):
//! `POST {url}/chat/completions` always streamed upstream (one path), parsed from SSE
//! into domain events; `POST {url}/embeddings`; readiness from `GET {url}/models`.
//! Every call goes through the backend's pool, retries and breaker (`upstream.rs`).

mod sse;
pub(crate) mod wire;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::upstream::{json_bytes, with_json, Endpoint, Upstream, UpstreamState};
use super::{Backend, Deployment};
use crate::config::BackendConfig;
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;
use crate::metrics::Metrics;

pub struct OpenAiBackend {
    http: Upstream,
    api_key: Option<SecretString>,
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
            api_key: cfg.api_key.clone(),
            http,
        })
    }

    /// A request with the upstream key, if one is configured.
    fn request(&self, method: reqwest::Method, url: &reqwest::Url) -> reqwest::RequestBuilder {
        let rb = self.http.client.request(method, url.clone());
        match &self.api_key {
            Some(key) => rb.bearer_auth(key.expose_secret()),
            None => rb,
        }
    }

    /// A JSON POST of `body` (serialized once, sent again as is by a retry).
    fn post(&self, url: &reqwest::Url, body: &Bytes) -> reqwest::RequestBuilder {
        with_json(self.request(reqwest::Method::POST, url), body)
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
        let build = |url: &reqwest::Url| self.post(url, &body);
        let bytes = self.http.stream(&self.chat_url, &build, cancel).await?;
        Ok(wire::events(self.http.name.clone(), bytes).boxed())
    }

    async fn embed(
        &self,
        request: EmbedRequest,
        deployment: &Deployment,
    ) -> Result<EmbedResponse, BackendError> {
        let body = json_bytes(&wire::embed_body(&request, deployment))?;
        let build = |url: &reqwest::Url| self.post(url, &body);
        wire::embed_response(
            &self.http.name,
            &self.http.body(&self.embed_url, &build).await?,
        )
    }

    async fn ready(&self) -> Result<(), BackendError> {
        let build = |url: &reqwest::Url| self.request(reqwest::Method::GET, url);
        self.http.probe(&self.models_url, &build).await
    }

    fn upstream_state(&self) -> Option<UpstreamState> {
        Some(self.http.state())
    }
}
