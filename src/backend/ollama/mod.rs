//! Backend for Ollama's native API: `POST /api/chat` (NDJSON stream), `POST /api/embed`,
//! `GET /api/tags` for readiness. The native API, not Ollama's `/v1`, so `num_ctx`,
//! `keep_alive` and the other options reach the model.

mod wire;

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
}

impl OllamaBackend {
    pub fn new(name: &str, cfg: &BackendConfig) -> Result<Self, BackendError> {
        Ok(OllamaBackend {
            http: Upstream::new(name, cfg)?,
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
        let rb = self
            .http
            .client
            .post(self.http.url("/api/chat"))
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
            .http
            .client
            .post(self.http.url("/api/embed"))
            .json(&body);
        wire::embed_response(&self.http.name, &self.http.body(rb).await?)
    }

    async fn ready(&self) -> Result<(), BackendError> {
        self.http
            .probe(self.http.client.get(self.http.url("/api/tags")))
            .await
    }
}
