//! Backend for any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, OpenAI):
//! `POST {url}/chat/completions` always streamed upstream (one path), parsed from SSE
//! into domain events; `POST {url}/embeddings`; readiness from `GET {url}/models`.

pub(crate) mod wire;

use async_trait::async_trait;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::upstream::Upstream;
use super::{Backend, Deployment};
use crate::config::BackendConfig;
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;

pub struct OpenAiBackend {
    http: Upstream,
    api_key: Option<SecretString>,
    chat_url: reqwest::Url,
    embed_url: reqwest::Url,
    models_url: reqwest::Url,
}

impl OpenAiBackend {
    pub fn new(name: &str, cfg: &BackendConfig) -> Result<Self, BackendError> {
        let http = Upstream::new(name, cfg)?;
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
        let body = wire::chat_body(&request, deployment);
        let rb = self
            .request(reqwest::Method::POST, &self.chat_url)
            .json(&body);
        let bytes = self.http.stream(rb, cancel).await?;
        Ok(wire::events(self.http.name.clone(), bytes).boxed())
    }

    async fn embed(
        &self,
        request: EmbedRequest,
        deployment: &Deployment,
    ) -> Result<EmbedResponse, BackendError> {
        let body = wire::embed_body(&request, deployment);
        let rb = self
            .request(reqwest::Method::POST, &self.embed_url)
            .json(&body);
        wire::embed_response(&self.http.name, &self.http.body(rb).await?)
    }

    async fn ready(&self) -> Result<(), BackendError> {
        self.http
            .probe(self.request(reqwest::Method::GET, &self.models_url))
            .await
    }
}
