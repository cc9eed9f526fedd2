//! A model folder on disk: which `.onnx` file serves which tier, the tokenizer, the
//! chat template, the stop tokens and the context length. `sluice-model.json` (what
//! `training/export.py` writes) is read when present; otherwise the Hugging Face files
//! an Optimum export carries (`config.json`, `generation_config.json`,
//! `tokenizer_config.json`) are used, and every `*.onnx` file becomes a tier named
//! after its file (`model.onnx` → `model`, `model_q4.onnx` → `q4`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::prompt::ChatTemplate;

/// Everything the engines of one folder share.
pub struct ModelFolder {
    /// Tier name → ONNX file.
    pub tiers: BTreeMap<String, PathBuf>,
    pub default_tier: String,
    /// Longest sequence (prompt + completion) the model was built for.
    pub context_length: usize,
    /// Tokens that end a generation (never shown to clients).
    pub stop_ids: Vec<u32>,
    pub tokenizer: Arc<Tokenizer>,
    /// `tokenizer.json` as read, for structured generation's own view of the vocabulary.
    pub tokenizer_json: Vec<u8>,
    pub template: Arc<ChatTemplate>,
    /// The tags around a tool call in the model's output.
    pub tool_tags: (String, String),
}

/// A JSON file of a model folder; `None` when it does not exist.
pub(super) fn read_json(path: &Path) -> Result<Option<Value>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A token given as `"<|im_end|>"` or as `{"content": "<|im_end|>", ...}`.
fn token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// `eos_token_id` as a number or a list of numbers.
fn ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64().map(|n| n as u32))
            .collect(),
        _ => Vec::new(),
    }
}

/// `model_q4.onnx` → `q4`; `model.int8.onnx` → `int8`; `model.onnx` → `model`.
fn tier_name(file: &str) -> String {
    let stem = file.strip_suffix(".onnx").unwrap_or(file);
    match stem
        .strip_prefix("model.")
        .or_else(|| stem.strip_prefix("model_"))
    {
        Some(rest) if !rest.is_empty() => rest.to_owned(),
        _ => stem.to_owned(),
    }
}

impl ModelFolder {
    pub fn load(dir: &Path) -> Result<Self, String> {
        if !dir.is_dir() {
            let cwd = std::env::current_dir().unwrap_or_default();
            return Err(format!(
                "model folder {} does not exist (relative paths start at {})",
                dir.display(),
                cwd.display()
            ));
        }
        let manifest = read_json(&dir.join("sluice-model.json"))?;
        let hf_config = read_json(&dir.join("config.json"))?;
        let generation = read_json(&dir.join("generation_config.json"))?;
        let tok_config = read_json(&dir.join("tokenizer_config.json"))?.ok_or_else(|| {
            format!(
                "{} is missing: it holds the chat template",
                dir.join("tokenizer_config.json").display()
            )
        })?;

        let tok_path = dir.join("tokenizer.json");
        let tokenizer_json = std::fs::read(&tok_path)
            .map_err(|e| format!("cannot read {}: {e}", tok_path.display()))?;
        let tokenizer = Tokenizer::from_bytes(&tokenizer_json)
            .map_err(|e| format!("cannot load {}: {e}", tok_path.display()))?;

        let (tiers, default_tier) = match &manifest {
            Some(m) => manifest_tiers(dir, m)?,
            None => scan_tiers(dir)?,
        };

        let eos = token_text(tok_config.get("eos_token"));
        let bos = token_text(tok_config.get("bos_token"));
        let mut stop_ids = match &manifest {
            Some(m) => ids(m.get("stop_token_ids")),
            None => {
                let from_generation = ids(generation.as_ref().and_then(|g| g.get("eos_token_id")));
                if from_generation.is_empty() {
                    ids(hf_config.as_ref().and_then(|c| c.get("eos_token_id")))
                } else {
                    from_generation
                }
            }
        };
        if let Some(id) = eos.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
        if stop_ids.is_empty() {
            return Err("no stop token: set eos_token in tokenizer_config.json".into());
        }

        let context_length = manifest
            .as_ref()
            .and_then(|m| m.get("context_length"))
            .or_else(|| hf_config.as_ref()?.get("max_position_embeddings"))
            .or_else(|| tok_config.get("model_max_length"))
            .and_then(Value::as_u64)
            .filter(|n| *n > 0 && *n < u32::MAX as u64)
            .ok_or_else(|| {
                "unknown context length: set context_length in sluice-model.json or \
                 max_position_embeddings in config.json"
                    .to_owned()
            })? as usize;

        let template = ChatTemplate::new(
            template_source(&tok_config)?,
            bos.unwrap_or_default(),
            eos.unwrap_or_default(),
        )?;

        let specials = manifest.as_ref().and_then(|m| m.get("special_tokens"));
        let tag = |key: &str, default: &str| {
            specials
                .and_then(|s| s.get(key))
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        let tool_tags = (
            tag("tool_call_start", "<tool_call>"),
            tag("tool_call_end", "</tool_call>"),
        );

        Ok(ModelFolder {
            tiers,
            default_tier,
            context_length,
            stop_ids,
            tokenizer: Arc::new(tokenizer),
            tokenizer_json,
            template: Arc::new(template),
            tool_tags,
        })
    }
}

/// `chat_template` as a string, or the `default` entry of a list of named templates.
fn template_source(tok_config: &Value) -> Result<String, String> {
    match tok_config.get("chat_template") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "chat_template list has no usable entry".into()),
        _ => Err("tokenizer_config.json has no chat_template".into()),
    }
}

fn manifest_tiers(
    dir: &Path,
    manifest: &Value,
) -> Result<(BTreeMap<String, PathBuf>, String), String> {
    let mut tiers = BTreeMap::new();
    if let Some(Value::Object(map)) = manifest.get("tiers") {
        for (name, tier) in map {
            let file = tier
                .get("file")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("sluice-model.json: tiers.{name}.file is missing"))?;
            tiers.insert(name.clone(), dir.join(file));
        }
    }
    let default = manifest
        .get("default_tier")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| tiers.keys().next().cloned())
        .ok_or("sluice-model.json lists no tiers")?;
    Ok((tiers, default))
}

fn scan_tiers(dir: &Path) -> Result<(BTreeMap<String, PathBuf>, String), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut tiers = BTreeMap::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.ends_with(".onnx") {
            tiers.insert(tier_name(&file), entry.path());
        }
    }
    let default = if tiers.contains_key("model") {
        "model".to_owned()
    } else {
        tiers
            .keys()
            .next()
            .cloned()
            .ok_or_else(|| format!("no .onnx file in {}", dir.display()))?
    };
    Ok((tiers, default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_names_follow_file_names() {
        assert_eq!(tier_name("model.onnx"), "model");
        assert_eq!(tier_name("model_q4.onnx"), "q4");
        assert_eq!(tier_name("model.int8.onnx"), "int8");
        assert_eq!(
            tier_name("decoder_model_merged.onnx"),
            "decoder_model_merged"
        );
    }

    #[test]
    fn bundled_model_folder_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/sluice-tiny");
        let folder = ModelFolder::load(&dir).expect("bundled model loads");
        assert_eq!(folder.default_tier, "int4");
        assert_eq!(
            folder.tiers.keys().cloned().collect::<Vec<_>>(),
            ["fp32", "int4", "int8"]
        );
        assert_eq!(folder.context_length, 512);
        assert!(folder.stop_ids.contains(&2));
        assert_eq!(folder.tool_tags.0, "<tool_call>");
    }

    #[test]
    fn missing_folder_names_the_path() {
        let err = ModelFolder::load(Path::new("/nonexistent/model"))
            .err()
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/model"), "{err}");
    }
}
