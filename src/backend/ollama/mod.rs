//! Backend for Ollama's native API: `POST /api/chat` (NDJSON stream), `POST /api/embed`,
//! `GET /api/tags` for readiness. The native API, not Ollama's `/v1`, so `num_ctx`,
//! `keep_alive` and the other options reach the model.

pub(crate) mod wire;

use async_trait::async_trait;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::upstream::Upstream;
use super::{Backend, Deployment};
use crate::config::BackendConfig;
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;

pub struct OllamaBackend {
    http: Upstream,
    chat_url: reqwest::Url,
    embed_url: reqwest::Url,
    tags_url: reqwest::Url,
}

impl OllamaBackend {
    pub fn new(name: &str, cfg: &BackendConfig) -> Result<Self, BackendError> {
        let http = Upstream::new(name, cfg)?;
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
        let body = wire::chat_body(&request, deployment)?;
        let rb = self.http.client.post(self.chat_url.clone()).json(&body);
        let bytes = self.http.stream(rb, cancel).await?;
        Ok(wire::events(self.http.name.clone(), bytes).boxed())
    }

    async fn embed(
        &self,
        request: EmbedRequest,
        deployment: &Deployment,
    ) -> Result<EmbedResponse, BackendError> {
        let body = wire::embed_body(&request, deployment)?;
        let rb = self.http.client.post(self.embed_url.clone()).json(&body);
        wire::embed_response(&self.http.name, &self.http.body(rb).await?)
    }

    async fn ready(&self) -> Result<(), BackendError> {
        self.http
            .probe(self.http.client.get(self.tags_url.clone()))
            .await
    }
}
