//! One ONNX encoder session (BERT-style, as `tools/convert/bert2onnx.py` and Optimum
//! export them): `input_ids`, `attention_mask` and, when the graph has it,
//! `token_type_ids` (int64 `[batch, seq]`) in; `last_hidden_state` (float32
//! `[batch, seq, hidden]`) out. A run takes rows already padded to one length and hands
//! the token states to a reader, so pooling reads them in place.

use std::path::Path;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};

const OUTPUT: &str = "last_hidden_state";

pub struct Encoder {
    session: Session,
    has_token_types: bool,
    /// The output's last dimension when the graph fixes it.
    pub hidden: Option<usize>,
}

/// Token states of one run: row `r`, position `p` is
/// `states[(r * seq + p) * hidden..][..hidden]`.
pub struct Hidden<'a> {
    pub states: &'a [f32],
    pub seq: usize,
    pub hidden: usize,
}

impl Encoder {
    pub fn open(env: &Environment, path: &Path, threads: usize) -> Result<Self, String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot load {}: {e}", path.display());
        // Pool threads sleep between runs instead of spinning: the same cores serve the
        // requests' HTTP and tokenisation, and on a 2-core machine spinning cut
        // throughput at 8 and 32 clients by up to half (loadtest/embed.sh, A/B).
        let session = super::super::runtime::session(env, path, threads, false)?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !inputs.contains(&required) {
                return Err(fail(&format!(
                    "the model has no `{required}` input: an encoder takes input_ids and attention_mask"
                )));
            }
        }
        if let Some(extra) = inputs
            .iter()
            .find(|n| !["input_ids", "attention_mask", "token_type_ids"].contains(n))
        {
            return Err(fail(&format!(
                "the model has an input `{extra}` the encoder does not know (a decoder? serve it with task = \"generate\")"
            )));
        }
        let output = session
            .outputs()
            .iter()
            .find(|o| o.name() == OUTPUT)
            .ok_or_else(|| {
                fail(&"the model has no `last_hidden_state` output (the token states before pooling)")
            })?;
        let hidden = match output.dtype() {
            ValueType::Tensor { ty, shape, .. }
                if *ty == TensorElementType::Float32 && shape.len() == 3 =>
            {
                usize::try_from(shape[2]).ok().filter(|h| *h > 0)
            }
            _ => {
                return Err(fail(
                    &"`last_hidden_state` must be float32 [batch, sequence, hidden]",
                ))
            }
        };
        Ok(Encoder {
            has_token_types: inputs.contains(&"token_type_ids"),
            hidden,
            session,
        })
    }

    /// Encode `batch` rows of `seq` tokens (`input_ids` and `attention_mask` row-major,
    /// padded with id 0 and mask 0) and let `read` look at the token states.
    pub fn run<R>(
        &mut self,
        batch: usize,
        seq: usize,
        input_ids: Vec<i64>,
        attention_mask: Vec<i64>,
        read: impl FnOnce(Hidden<'_>) -> R,
    ) -> ort::Result<R> {
        let ids = Tensor::from_array(([batch, seq], input_ids))?;
        let mask = Tensor::from_array(([batch, seq], attention_mask))?;
        let mut outputs = if self.has_token_types {
            let types = Tensor::from_array(([batch, seq], vec![0i64; batch * seq]))?;
            self.session.run(ort::inputs![
                "input_ids" => ids,
                "attention_mask" => mask,
                "token_type_ids" => types,
            ])?
        } else {
            self.session.run(ort::inputs![
                "input_ids" => ids,
                "attention_mask" => mask,
            ])?
        };
        let value = outputs
            .remove(OUTPUT)
            .ok_or_else(|| ort::Error::new("the model did not return `last_hidden_state`"))?;
        let (shape, states) = value.try_extract_tensor::<f32>()?;
        let hidden = shape.get(2).copied().unwrap_or(0).max(0) as usize;
        if shape.len() != 3 || hidden == 0 || states.len() != batch * seq * hidden {
            return Err(ort::Error::new(format!(
                "`last_hidden_state` has shape {shape:?}, expected [{batch}, {seq}, hidden]"
            )));
        }
        Ok(read(Hidden {
            states,
            seq,
            hidden,
        }))
    }
}
