//! One ONNX decoder session with a KV-cache interface, as Hugging Face / Optimum
//! export them: `input_ids`, `attention_mask`, optional `position_ids` and
//! `past_key_values.{i}.key|value` in; `logits` and `present.{i}.key|value` (past +
//! new, Optimum) or `new_key_values.{i}.key|value` (new only, sluice-tiny: the graph
//! never copies the cache) out. Either way the new tokens' entries are the last
//! positions of each output. Layer count, KV heads and head size are read from the
//! session's inputs, so any decoder-only model with this interface runs. A graph with
//! a `last_token_index` input (`int64 [batch]`, what `tools/convert/gguf2onnx.py`
//! writes) is told which position's logits each row needs and returns only those
//! (`[batch, 1, vocab]`), so a long prefill does not compute a vocabulary's worth of
//! logits for every prompt token.

use std::borrow::Cow;
use std::path::Path;

use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

pub struct Decoder {
    session: Session,
    /// Past input names in layer order: key, value, key, value, ...
    past: Vec<String>,
    /// Present output names, same order.
    present: Vec<String>,
    has_position_ids: bool,
    /// Optimum "merged" decoders take a boolean `use_cache_branch`.
    use_cache_branch: bool,
    /// The graph takes `last_token_index` and returns logits for those positions only.
    has_last_index: bool,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// One forward pass over `batch` rows of `seq` new tokens each.
pub struct Step<'a> {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    /// `[batch, past + seq]`: 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    pub position_ids: Vec<i64>,
    /// `2 × layers` tensors `[batch, heads, past, head_dim]`.
    pub past: Vec<SessionInputValue<'a>>,
    /// Per row, the position (within `seq`) whose logits are wanted.
    pub last: Vec<usize>,
}

/// What a step returns: one row of logits per batch row (`batch × vocab`) and the KV
/// outputs, whose last `seq` positions are the new tokens'.
pub struct StepOutput {
    pub logits: Vec<f32>,
    pub vocab: usize,
    pub present: Vec<DynValue>,
}

fn layer_of(name: &str, prefix: &str) -> Option<(usize, bool)> {
    let rest = name.strip_prefix(prefix)?;
    let (layer, kind) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    match kind {
        "key" => Some((layer, false)),
        "value" => Some((layer, true)),
        _ => None,
    }
}

/// Names matching `{prefix}{i}.key|value`, ordered by layer then key before value.
fn kv_names<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Vec<String> {
    let mut found: Vec<((usize, bool), String)> = names
        .filter_map(|n| layer_of(n, prefix).map(|k| (k, n.to_owned())))
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

impl Decoder {
    pub fn open(env: &Environment, path: &Path, threads: usize) -> Result<Self, String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot load {}: {e}", path.display());
        let session = super::runtime::session(env, path, threads, true)?;

        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !inputs.contains(&required) {
                return Err(fail(&format!("the model has no `{required}` input")));
            }
        }
        if !outputs.contains(&"logits") {
            return Err(fail(&"the model has no `logits` output"));
        }
        let past = kv_names(inputs.iter().copied(), "past_key_values.");
        let mut present = kv_names(outputs.iter().copied(), "present.");
        if present.is_empty() {
            present = kv_names(outputs.iter().copied(), "new_key_values.");
        }
        if past.is_empty() || past.len() != present.len() || past.len() % 2 != 0 {
            return Err(fail(
                &"expected matching past_key_values.{i}.key|value inputs and present.{i}.key|value (or new_key_values.{i}.key|value) outputs: a decoder exported with its KV cache",
            ));
        }
        let (kv_heads, head_dim) = session
            .inputs()
            .iter()
            .find(|i| i.name() == past[0])
            .and_then(|i| match i.dtype() {
                ValueType::Tensor { ty, shape, .. } if shape.len() == 4 => {
                    Some((*ty, shape[1], shape[3]))
                }
                _ => None,
            })
            .and_then(|(ty, heads, dim)| {
                (ty == TensorElementType::Float32 && heads > 0 && dim > 0)
                    .then_some((heads as usize, dim as usize))
            })
            .ok_or_else(|| {
                fail(&"past_key_values must be float32 [batch, heads, past, head_dim] with fixed heads and head_dim")
            })?;
        Ok(Decoder {
            has_position_ids: inputs.contains(&"position_ids"),
            use_cache_branch: inputs.contains(&"use_cache_branch"),
            has_last_index: inputs.contains(&"last_token_index"),
            past,
            present,
            kv_heads,
            head_dim,
            session,
        })
    }

    pub fn layers(&self) -> usize {
        self.past.len() / 2
    }

    /// KV tensors per step: a key and a value per layer.
    pub fn kv_tensors(&self) -> usize {
        self.past.len()
    }

    /// An empty cache (`past = 0`) for a prefill of `batch` rows.
    pub fn empty_past(&self, batch: usize) -> ort::Result<Vec<DynValue>> {
        (0..self.past.len())
            .map(|_| {
                Tensor::<f32>::from_array(([batch, self.kv_heads, 0, self.head_dim], Vec::new()))
                    .map(|t| t.into_dyn())
            })
            .collect()
    }

    pub fn run(&mut self, step: Step<'_>) -> ort::Result<StepOutput> {
        let Step {
            batch,
            seq,
            input_ids,
            attention_mask,
            position_ids,
            past,
            last,
        } = step;
        let total = attention_mask.len() / batch.max(1);
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(5 + past.len());
        inputs.push((
            "input_ids".into(),
            Tensor::from_array(([batch, seq], input_ids))?.into(),
        ));
        inputs.push((
            "attention_mask".into(),
            Tensor::from_array(([batch, total], attention_mask))?.into(),
        ));
        if self.has_position_ids {
            inputs.push((
                "position_ids".into(),
                Tensor::from_array(([batch, seq], position_ids))?.into(),
            ));
        }
        if self.use_cache_branch {
            inputs.push((
                "use_cache_branch".into(),
                Tensor::from_array(([1usize], vec![total > seq]))?.into(),
            ));
        }
        if self.has_last_index {
            let index: Vec<i64> = (0..batch)
                .map(|row| last.get(row).map_or(seq as i64 - 1, |&at| at as i64))
                .collect();
            inputs.push((
                "last_token_index".into(),
                Tensor::from_array(([batch], index))?.into(),
            ));
        }
        for (name, value) in self.past.iter().zip(past) {
            inputs.push((Cow::Borrowed(name.as_str()), value));
        }
        let mut outputs = self.session.run(inputs)?;
        let (shape, all) = outputs["logits"].try_extract_tensor::<f32>()?;
        let vocab = shape.last().copied().unwrap_or(0).max(0) as usize;
        let rows_seq = shape.get(1).copied().unwrap_or(1).max(1) as usize;
        let mut logits = Vec::with_capacity(batch * vocab);
        for row in 0..batch {
            let at = last
                .get(row)
                .copied()
                .unwrap_or(rows_seq - 1)
                .min(rows_seq - 1);
            let start = (row * rows_seq + at) * vocab;
            let last = all
                .get(start..start + vocab)
                .ok_or_else(|| ort::Error::new(format!("logits have shape {shape:?}")))?;
            logits.extend_from_slice(last);
        }
        if vocab == 0 {
            return Err(ort::Error::new("the model returned empty logits"));
        }
        let mut present = Vec::with_capacity(self.present.len());
        for name in &self.present {
            present.push(
                outputs
                    .remove(name.as_str())
                    .ok_or_else(|| ort::Error::new(format!("the model did not return `{name}`")))?,
            );
        }
        Ok(StepOutput {
            logits,
            vocab,
            present,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_names_sort_by_layer_number_not_text() {
        let names = [
            "past_key_values.10.key",
            "input_ids",
            "past_key_values.2.value",
            "past_key_values.2.key",
            "past_key_values.10.value",
        ];
        assert_eq!(
            kv_names(names.into_iter(), "past_key_values."),
            [
                "past_key_values.2.key",
                "past_key_values.2.value",
                "past_key_values.10.key",
                "past_key_values.10.value"
            ]
        );
    }
}
