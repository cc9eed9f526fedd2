//! Backend for any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, OpenAI):
//! `POST {url}/chat/completions` always streamed upstream (one path), parsed from SSE
//! into domain events; `POST {url}/embeddings`; readiness from `GET {url}/models`.

mod wire;

use async_trait::async_trait;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::{upstream, Backend, Deployment};
use crate::config::BackendConfig;
use crate::domain::{ChatRequest, EmbedRequest, EmbedResponse, EventStream};
use crate::error::BackendError;

pub struct OpenAiBackend {
    name: String,
    base: String,
    api_key: Option<SecretString>,
    client: reqwest::Client,
    request_timeout: std::time::Duration,
    read_timeout: std::time::Duration,
}

impl OpenAiBackend {
    pub fn new(name: &str, cfg: &BackendConfig) -> Result<Self, BackendError> {
        Ok(OpenAiBackend {
            name: name.to_owned(),
            base: cfg.url.trim_end_matches('/').to_owned(),
            api_key: cfg.api_key.clone(),
            client: upstream::client(cfg)?,
            request_timeout: cfg.request_timeout,
            read_timeout: cfg.read_timeout,
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.post(format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => rb.bearer_auth(key.expose_secret()),
            None => rb,
        }
    }
}

#[async_trait]
impl Backend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        request: ChatRequest,
        deployment: &Deployment,
        cancel: CancellationToken,
    ) -> Result<EventStream, BackendError> {
        let body = wire::chat_body(&request, deployment);
        let response = tokio::select! {
            r = upstream::send(&self.name, self.post("/chat/completions").json(&body), self.request_timeout) => r?,
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
        let response = upstream::send(
            &self.name,
            self.post("/embeddings").json(&body),
            self.request_timeout,
        )
        .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| upstream::transport_error(&self.name, &e, self.request_timeout))?;
        wire::embed_response(&self.name, &bytes)
    }

    async fn ready(&self) -> Result<(), BackendError> {
        let mut rb = self.client.get(format!("{}/models", self.base));
        if let Some(key) = &self.api_key {
            rb = rb.bearer_auth(key.expose_secret());
        }
        upstream::send(
            &self.name,
            rb,
            self.request_timeout.min(std::time::Duration::from_secs(5)),
        )
        .await
        .map(|_| ())
    }
}
