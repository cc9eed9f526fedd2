//! The running batch's KV cache. Rows are left-padded to a common past length so one
//! `Session::run` decodes every sequence; the attention mask hides the padding and
//! each row's `position_ids` count only its own tokens. While the batch does not
//! change, each step's `present` tensors are fed back as the next `past` without a
//! copy; when sequences join or leave, [`merge`] builds the new tensors once from the
//! rows that stay (and the freshly prefilled ones), trimming padding no row needs.

use ort::value::{DynValue, Tensor};

/// The cache of a batch: `2 × layers` tensors `[rows, heads, past, head_dim]`.
#[derive(Default)]
pub struct KvCache {
    pub tensors: Vec<DynValue>,
    /// Columns in every tensor (the longest row's length).
    pub past: usize,
}

/// Row `row` of `cache`, whose last `len` columns are real tokens.
pub struct RowSource<'a> {
    pub cache: &'a KvCache,
    pub row: usize,
    pub len: usize,
}

/// `[rows, past]` attention mask for caches whose rows have these real lengths (plus
/// `extra` new columns of ones).
pub fn attention_mask(lens: &[usize], past: usize, extra: usize) -> Vec<i64> {
    let mut mask = Vec::with_capacity(lens.len() * (past + extra));
    for &len in lens {
        mask.extend(std::iter::repeat_n(0, past - len.min(past)));
        mask.extend(std::iter::repeat_n(1, len.min(past) + extra));
    }
    mask
}

/// A new cache holding `rows` in order, left-padded to the longest of them.
pub fn merge(rows: &[RowSource<'_>], heads: usize, head_dim: usize) -> ort::Result<KvCache> {
    let past = rows.iter().map(|r| r.len).max().unwrap_or(0);
    let Some(first) = rows.first() else {
        return Ok(KvCache::default());
    };
    let tensors = first.cache.tensors.len();
    let row_stride = heads * past * head_dim;
    let mut out = Vec::with_capacity(tensors);
    for t in 0..tensors {
        let mut data = vec![0f32; rows.len() * row_stride];
        for (j, source) in rows.iter().enumerate() {
            let (shape, src) = source.cache.tensors[t].try_extract_tensor::<f32>()?;
            let src_past = shape.get(2).copied().unwrap_or(0).max(0) as usize;
            let len = source.len.min(src_past);
            for h in 0..heads {
                let from = ((source.row * heads + h) * src_past + src_past - len) * head_dim;
                let to = j * row_stride + (h * past + past - len) * head_dim;
                let n = len * head_dim;
                let (Some(src), Some(dst)) = (src.get(from..from + n), data.get_mut(to..to + n))
                else {
                    return Err(ort::Error::new("KV cache row out of bounds"));
                };
                dst.copy_from_slice(src);
            }
        }
        out.push(Tensor::from_array(([rows.len(), heads, past, head_dim], data))?.into_dyn());
    }
    Ok(KvCache { tensors: out, past })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_left_pads_short_rows() {
        assert_eq!(attention_mask(&[2, 3], 3, 1), [0, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(attention_mask(&[1], 1, 0), [1]);
    }
}
