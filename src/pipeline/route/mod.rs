//! Stage 3, route: the logical model a client named → its deployment and backend.
//! (The complexity-scored choice of a quantization tier will plug in here.)

pub mod score;

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::{Backend, Backends, Deployment};
use crate::config::Config;
use crate::error::RouteError;

/// A resolved target for one request.
#[derive(Clone)]
pub struct Target {
    pub model: Arc<str>,
    pub deployment: Arc<Deployment>,
    pub backend: Arc<dyn Backend>,
}

/// The model catalog, resolved once at start-up.
#[derive(Clone, Default)]
pub struct Routes {
    by_model: HashMap<String, Target>,
}

impl Routes {
    pub fn new(config: &Config, backends: &Backends) -> Self {
        let mut by_model = HashMap::new();
        for model in &config.models {
            // validate() guarantees the backend exists.
            if let Some(backend) = backends.get(&model.backend) {
                by_model.insert(
                    model.name.clone(),
                    Target {
                        model: Arc::from(model.name.as_str()),
                        deployment: Arc::new(Deployment::from_model(model)),
                        backend: backend.clone(),
                    },
                );
            }
        }
        Routes { by_model }
    }

    /// Resolve a chat request's model; `n` other than 1 is refused since every
    /// backend streams a single choice.
    pub fn resolve(&self, model: &str, n: u32) -> Result<&Target, RouteError> {
        let target = self
            .by_model
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_owned()))?;
        if n != 1 {
            return Err(RouteError::Unsupported {
                message: format!(
                    "n={n} is not supported for model `{model}`: its backend generates one choice per request; send n separate requests instead"
                ),
                param: Some("n"),
            });
        }
        Ok(target)
    }

    pub fn get(&self, model: &str) -> Result<&Target, RouteError> {
        self.by_model
            .get(model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_owned()))
    }

    /// Is `model` a configured logical model? (Used to bound metric label values.)
    pub fn contains(&self, model: &str) -> bool {
        self.by_model.contains_key(model)
    }
}
