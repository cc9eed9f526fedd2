//! An embedding model folder on disk (`task = "embed"`): the encoder's `.onnx` file, the
//! tokenizer, and how a vector is made from the encoder's token states. The
//! sentence-transformers files are read as sentence-transformers reads them:
//! `1_Pooling/config.json` (mean or CLS pooling, the vector's size), `modules.json` (a
//! `Normalize` module: L2-normalise), `sentence_bert_config.json` (`max_seq_length`);
//! `sluice-model.json` (what `tools/convert/bert2onnx.py` writes) names the `.onnx` file
//! and fills in what a folder without those files leaves open.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::{Encoding, Token, Tokenizer};

use super::super::model::read_json;

/// How one vector is made from an input's token states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The average over the input's tokens (padding excluded).
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
}

/// Everything the embedding backend loads from its folder.
pub struct EmbedFolder {
    pub model: PathBuf,
    /// Truncation and padding off: an input is never cut, and the batcher pads.
    pub tokenizer: Tokenizer,
    /// The ids the tokenizer puts before and after a text (`[CLS]` … `[SEP]`), put
    /// around token-id inputs too.
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
    /// Token ids the model's embedding matrix has rows for.
    pub vocab_size: usize,
    /// Longest input in tokens, special tokens included.
    pub max_seq_length: usize,
    pub dimensions: usize,
    pub pooling: Pooling,
    pub normalize: bool,
}

fn positive(value: Option<&Value>) -> Option<usize> {
    value
        .and_then(Value::as_u64)
        .filter(|n| *n > 0 && *n < u32::MAX as u64)
        .map(|n| n as usize)
}

/// The pooling `1_Pooling/config.json` asks for; only one of mean or CLS is served.
fn pooling_of(config: &Value) -> Result<Pooling, String> {
    let on = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
    let modes: Vec<&str> = [
        ("mean", "pooling_mode_mean_tokens"),
        ("cls", "pooling_mode_cls_token"),
        ("max", "pooling_mode_max_tokens"),
        ("mean_sqrt_len", "pooling_mode_mean_sqrt_len_tokens"),
        ("weightedmean", "pooling_mode_weightedmean_tokens"),
        ("lasttoken", "pooling_mode_lasttoken"),
    ]
    .into_iter()
    .filter(|(_, key)| on(key))
    .map(|(name, _)| name)
    .collect();
    match modes[..] {
        ["mean"] => Ok(Pooling::Mean),
        ["cls"] => Ok(Pooling::Cls),
        _ => Err(format!(
            "1_Pooling/config.json asks for pooling {modes:?}; the engine does mean or cls pooling"
        )),
    }
}

fn pooling_named(name: &str) -> Result<Pooling, String> {
    match name {
        "mean" => Ok(Pooling::Mean),
        "cls" => Ok(Pooling::Cls),
        other => Err(format!(
            "sluice-model.json: pooling `{other}` is not served (mean or cls)"
        )),
    }
}

/// The ids a single sequence gets before and after it from the tokenizer's
/// post-processor: post-process one placeholder token and see what lands around it.
fn special_frame(tokenizer: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>), String> {
    const PLACEHOLDER: u32 = u32::MAX;
    let one = Encoding::from_tokens(vec![Token::new(PLACEHOLDER, String::new(), (0, 0))], 0);
    let framed = tokenizer
        .post_process(one, None, true)
        .map_err(|e| format!("tokenizer.json: cannot apply its post-processor: {e}"))?;
    let ids = framed.get_ids();
    let at = ids
        .iter()
        .position(|&id| id == PLACEHOLDER)
        .ok_or("tokenizer.json: its post-processor drops the text")?;
    Ok((ids[..at].to_vec(), ids[at + 1..].to_vec()))
}

impl EmbedFolder {
    pub fn load(dir: &Path) -> Result<Self, String> {
        if !dir.is_dir() {
            let cwd = std::env::current_dir().unwrap_or_default();
            return Err(format!(
                "model folder {} does not exist (relative paths start at {}; `make models` builds models/minilm-l6)",
                dir.display(),
                cwd.display()
            ));
        }
        let manifest = read_json(&dir.join("sluice-model.json"))?.unwrap_or(Value::Null);
        let hf_config = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
        let pooling_config = read_json(&dir.join("1_Pooling").join("config.json"))?;
        let modules = read_json(&dir.join("modules.json"))?;
        let st_config = read_json(&dir.join("sentence_bert_config.json"))?.unwrap_or(Value::Null);

        match manifest.get("task").and_then(Value::as_str) {
            Some("embed") => {}
            Some(task) => {
                return Err(format!(
                    "{} holds a `{task}` model (sluice-model.json), not an embedding model; serve it with task = \"generate\"",
                    dir.display()
                ))
            }
            None if pooling_config.is_none() => {
                return Err(format!(
                    "{} is not an embedding model folder: it has neither 1_Pooling/config.json nor a sluice-model.json with task = \"embed\"",
                    dir.display()
                ))
            }
            None => {}
        }

        let pooling = match (
            &pooling_config,
            manifest.get("pooling").and_then(Value::as_str),
        ) {
            (Some(config), _) => pooling_of(config)?,
            (None, Some(name)) => pooling_named(name)?,
            (None, None) => return Err("no pooling: add 1_Pooling/config.json".into()),
        };
        let normalize = match &modules {
            Some(Value::Array(list)) => list.iter().any(|m| {
                m.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("Normalize"))
            }),
            Some(_) => return Err("modules.json is not a list of modules".into()),
            None => manifest
                .get("normalize")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };

        let positions = positive(hf_config.get("max_position_embeddings"));
        let max_seq_length = positive(st_config.get("max_seq_length"))
            .or_else(|| positive(manifest.get("max_seq_length")))
            .or(positions)
            .ok_or("unknown input limit: set max_seq_length in sentence_bert_config.json")?;
        if let Some(positions) = positions.filter(|p| max_seq_length > *p) {
            return Err(format!(
                "max_seq_length {max_seq_length} exceeds the model's {positions} position embeddings"
            ));
        }
        let dimensions = pooling_config
            .as_ref()
            .and_then(|c| positive(c.get("word_embedding_dimension")))
            .or_else(|| positive(manifest.get("dimensions")))
            .or_else(|| positive(hf_config.get("hidden_size")))
            .ok_or("unknown vector size: set word_embedding_dimension in 1_Pooling/config.json")?;

        let model = match manifest.get("model").and_then(Value::as_str) {
            Some(file) => dir.join(file),
            None => ["model.onnx", "onnx/model.onnx"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.exists())
                .unwrap_or_else(|| dir.join("model.onnx")),
        };
        if !model.is_file() {
            return Err(format!("{} is missing", model.display()));
        }

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| format!("cannot load {}: {e}", tok_path.display()))?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("{}: {e}", tok_path.display()))?;
        tokenizer.with_padding(None);
        let (prefix, suffix) = special_frame(&tokenizer)?;
        let vocab_size = positive(hf_config.get("vocab_size"))
            .or_else(|| positive(manifest.get("vocab_size")))
            .unwrap_or_else(|| tokenizer.get_vocab_size(true));
        if prefix.len() + suffix.len() >= max_seq_length {
            return Err(format!(
                "max_seq_length {max_seq_length} leaves no room for text between the special tokens"
            ));
        }
        Ok(EmbedFolder {
            model,
            tokenizer,
            prefix,
            suffix,
            vocab_size,
            max_seq_length,
            dimensions,
            pooling,
            normalize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pooling_follows_the_sentence_transformers_config() {
        let mean = json!({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true});
        assert_eq!(pooling_of(&mean), Ok(Pooling::Mean));
        let cls = json!({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false});
        assert_eq!(pooling_of(&cls), Ok(Pooling::Cls));
        let max = json!({"pooling_mode_max_tokens": true});
        assert!(pooling_of(&max).unwrap_err().contains("max"));
        let both = json!({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true});
        assert!(pooling_of(&both).is_err());
    }

    #[test]
    fn a_chat_model_folder_is_refused_with_the_fix() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/sluice-tiny");
        let err = EmbedFolder::load(&dir).err().unwrap_or_default();
        assert!(err.contains("not an embedding model"), "{err}");
    }

    #[test]
    fn a_missing_folder_says_how_to_make_it() {
        let err = EmbedFolder::load(Path::new("/nonexistent/minilm"))
            .err()
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/minilm"), "{err}");
        assert!(err.contains("make models"), "{err}");
    }
}
