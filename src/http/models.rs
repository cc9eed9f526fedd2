//! `GET /v1/models` and `GET /v1/models/{id}`: the logical model catalog in the OpenAI
//! shape (async-openai's `Model` / `ListModelResponse`).

use std::sync::Arc;

use async_openai::types::models::{ListModelResponse, Model};
use axum::extract::State;
use axum::Json;

use super::extract::OpenAiPath;
use super::AppState;
use crate::config::ModelConfig;
use crate::error::{ApiError, RouteError};

fn model(m: &ModelConfig, created: u32) -> Model {
    Model {
        id: m.name.clone(),
        object: "model".into(),
        created,
        owned_by: m.owned_by.clone(),
        shutdown_date: None,
    }
}

pub async fn list(State(state): State<Arc<AppState>>) -> Json<ListModelResponse> {
    Json(ListModelResponse {
        object: "list".into(),
        data: state
            .pipeline
            .models()
            .iter()
            .map(|m| model(m, state.started))
            .collect(),
    })
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    OpenAiPath(id): OpenAiPath<String>,
) -> Result<Json<Model>, ApiError> {
    state
        .pipeline
        .models()
        .iter()
        .find(|m| m.name == id)
        .map(|m| Json(model(m, state.started)))
        .ok_or_else(|| RouteError::UnknownModel(id).into())
}
