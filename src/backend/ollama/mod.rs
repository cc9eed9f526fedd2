//! Backend for Ollama's native API: `POST /api/chat` (NDJSON stream), `POST /api/embed`,
//! `GET /api/tags` for readiness. The native API, not Ollama's `/v1`, so `num_ctx`,
//! `keep_alive` and the other options reach the model.

mod wire;

use async_trait::async_trait;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{upstream, Backend, Deployment};
use crate::config::BackendConfig;
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;

pub struct OllamaBackend {
    name: String,
    base: String,
    client: reqwest::Client,
    request_timeout: std::time::Duration,
    read_timeout: std::time::Duration,
}

impl OllamaBackend {
    pub fn new(name: &str, cfg: &BackendConfig) -> Result<Self, BackendError> {
        Ok(OllamaBackend {
            name: name.to_owned(),
            base: cfg.url.trim_end_matches('/').to_owned(),
            client: upstream::client(cfg)?,
            request_timeout: cfg.request_timeout,
            read_timeout: cfg.read_timeout,
        })
    }
}

#[async_trait]
impl Backend for OllamaBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        request: ChatRequest,
        deployment: &Deployment,
        cancel: CancellationToken,
    ) -> Result<EventStream, BackendError> {
        let body = wire::chat_body(&request, deployment)?;
        let rb = self
            .client
            .post(format!("{}/api/chat", self.base))
            .json(&body);
        let response = tokio::select! {
            r = upstream::send(&self.name, rb, self.request_timeout) => r?,
            _ = cancel.cancelled() => return Err(BackendError::Protocol("cancelled".into())),
        };
        let bytes = upstream::body_stream(&self.name, response, self.read_timeout, cancel);
        Ok(wire::events(self.name.clone(), bytes).boxed())
    }

    async fn embed(
        &self,
        request: EmbedRequest,
        deployment: &Deployment,
    ) -> Result<EmbedResponse, BackendError> {
        let body = wire::embed_body(&request, deployment);
        let rb = self
            .client
            .post(format!("{}/api/embed", self.base))
            .json(&body);
        let response = upstream::send(&self.name, rb, self.request_timeout).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| upstream::transport_error(&self.name, &e, self.request_timeout))?;
        wire::embed_response(&self.name, &bytes)
    }

    async fn ready(&self) -> Result<(), BackendError> {
        let rb = self.client.get(format!("{}/api/tags", self.base));
        upstream::send(&self.name, rb, std::time::Duration::from_secs(5))
            .await
            .map(|_| ())
    }
}
