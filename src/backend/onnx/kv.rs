//! The running batch's KV cache, kept in place. Each of the `2 × layers` tensors is one
//! buffer `[max_rows, heads, cap, head_dim]`; a batch of `rows` sequences is its first
//! `rows` rows, fed to the model as a zero-copy view. Row `r` holds its tokens at
//! positions `0..len_r`; the attention mask hides the rest. After each run the new
//! tokens' keys/values are written at `len_r`, so a step copies only what is new.
//! A sequence that joins is written into the next free row; one that leaves is replaced
//! by the last row. `cap` grows and shrinks in blocks as the longest row changes, so
//! attention reads little padding.

use ort::session::SessionInputValue;
use ort::value::{DynValue, TensorRef};

/// Positions are allocated in blocks of this many.
const BLOCK: usize = 64;

pub struct KvStore {
    /// Allocated once for `max_rows` rows of `limit` positions; the OS maps pages as
    /// they are first written, so memory follows what the batch really holds.
    buffers: Vec<Vec<f32>>,
    max_rows: usize,
    heads: usize,
    head_dim: usize,
    /// Most positions a row can have (the context).
    limit: usize,
    /// Positions per row in the buffers.
    cap: usize,
    /// Rows in use.
    rows: usize,
}

/// `[rows, cap + extra]` attention mask: each row's own positions, then `extra` new ones.
pub fn attention_mask(lens: &[usize], cap: usize, extra: usize) -> Vec<i64> {
    let mut mask = Vec::with_capacity(lens.len() * (cap + extra));
    for &len in lens {
        let len = len.min(cap);
        mask.extend(std::iter::repeat_n(1, len));
        mask.extend(std::iter::repeat_n(0, cap - len));
        mask.extend(std::iter::repeat_n(1, extra));
    }
    mask
}

fn out_of_bounds() -> ort::Error {
    ort::Error::new("KV cache write out of bounds")
}

impl KvStore {
    pub fn new(
        tensors: usize,
        max_rows: usize,
        heads: usize,
        head_dim: usize,
        limit: usize,
    ) -> Self {
        KvStore {
            buffers: (0..tensors)
                .map(|_| vec![0f32; max_rows * heads * limit * head_dim])
                .collect(),
            max_rows,
            heads,
            head_dim,
            limit,
            cap: 0,
            rows: 0,
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    #[cfg(test)]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Zero-copy views of the rows in use, `[rows, heads, cap, head_dim]`, as model inputs.
    pub fn views(&self) -> ort::Result<Vec<SessionInputValue<'_>>> {
        let n = self.rows * self.heads * self.cap * self.head_dim;
        self.buffers
            .iter()
            .map(|b| {
                let data = b.get(..n).ok_or_else(out_of_bounds)?;
                let view = TensorRef::from_array_view((
                    [self.rows, self.heads, self.cap, self.head_dim],
                    data,
                ))?;
                Ok(view.into())
            })
            .collect()
    }

    /// Lay the rows out for at most `longest` tokens plus one more, in whole blocks up
    /// to the context; keeps each row's first `lens[r]` positions.
    fn fit(&self, longest: usize) -> usize {
        let want = (longest + 1).div_ceil(BLOCK) * BLOCK;
        want.min(self.limit.max(longest + 1))
    }

    /// Change the positions per row to what `fit` says, moving rows in place. Grows
    /// when needed; shrinks only when a whole block or more would be saved.
    pub fn reserve(&mut self, longest: usize, lens: &[usize]) {
        let cap = self.fit(longest);
        if cap <= self.cap && cap + BLOCK > self.cap {
            return;
        }
        let (heads, dim, old) = (self.heads, self.head_dim, self.cap);
        let slots = (0..self.rows.min(lens.len())).flat_map(|r| (0..heads).map(move |h| (r, h)));
        let slots: Vec<(usize, usize)> = if cap > old {
            // Moving to higher offsets: last slot first, so nothing is overwritten early.
            slots.rev().collect()
        } else {
            slots.collect()
        };
        for buffer in &mut self.buffers {
            for &(r, h) in &slots {
                let n = lens[r].min(cap).min(old) * dim;
                let from = (r * heads + h) * old * dim;
                let to = (r * heads + h) * cap * dim;
                if to + n <= buffer.len() && from + n <= buffer.len() {
                    buffer.copy_within(from..from + n, to);
                }
            }
        }
        self.cap = cap;
    }

    /// After a decode step: write each row's newest key/value (the last position of
    /// every output tensor) at that row's `lens[r]`.
    pub fn append_last(&mut self, outputs: &[DynValue], lens: &[usize]) -> ort::Result<()> {
        let (heads, dim, cap) = (self.heads, self.head_dim, self.cap);
        for (buffer, output) in self.buffers.iter_mut().zip(outputs) {
            let (shape, data) = output.try_extract_tensor::<f32>()?;
            let positions = shape.get(2).copied().unwrap_or(0).max(0) as usize;
            if positions == 0 {
                return Err(out_of_bounds());
            }
            for (r, &len) in lens.iter().enumerate() {
                if len >= cap {
                    return Err(out_of_bounds());
                }
                for h in 0..heads {
                    let from = ((r * heads + h) * positions + positions - 1) * dim;
                    let to = ((r * heads + h) * cap + len) * dim;
                    let (Some(src), Some(dst)) =
                        (data.get(from..from + dim), buffer.get_mut(to..to + dim))
                    else {
                        return Err(out_of_bounds());
                    };
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }

    /// After a prefill of right-padded prompts: add its rows (row `j` holds `lens[j]`
    /// tokens at positions `0..lens[j]` of every output) after the rows in use.
    pub fn push_rows(&mut self, outputs: &[DynValue], lens: &[usize]) -> ort::Result<()> {
        let (heads, dim, cap) = (self.heads, self.head_dim, self.cap);
        if self.rows + lens.len() > self.max_rows {
            return Err(ort::Error::new("more sequences than max_batch_size"));
        }
        for (buffer, output) in self.buffers.iter_mut().zip(outputs) {
            let (shape, data) = output.try_extract_tensor::<f32>()?;
            let positions = shape.get(2).copied().unwrap_or(0).max(0) as usize;
            for (j, &len) in lens.iter().enumerate() {
                if len > positions || len >= cap {
                    return Err(out_of_bounds());
                }
                let row = self.rows + j;
                for h in 0..heads {
                    let from = (j * heads + h) * positions * dim;
                    let to = (row * heads + h) * cap * dim;
                    let n = len * dim;
                    let (Some(src), Some(dst)) =
                        (data.get(from..from + n), buffer.get_mut(to..to + n))
                    else {
                        return Err(out_of_bounds());
                    };
                    dst.copy_from_slice(src);
                }
            }
        }
        self.rows += lens.len();
        Ok(())
    }

    /// Drop row `r`: the last row moves into its place (as `Vec::swap_remove` does).
    pub fn swap_remove(&mut self, r: usize) {
        if r >= self.rows {
            return;
        }
        let last = self.rows - 1;
        if r != last {
            let row = self.heads * self.cap * self.head_dim;
            for buffer in &mut self.buffers {
                buffer.copy_within(last * row..(last + 1) * row, r * row);
            }
        }
        self.rows = last;
    }

    /// Forget every row (the buffers stay allocated for the next batch).
    pub fn clear(&mut self) {
        self.rows = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_marks_each_rows_own_positions_then_the_new_ones() {
        assert_eq!(
            attention_mask(&[2, 3], 4, 1),
            [1, 1, 0, 0, 1, 1, 1, 1, 0, 1]
        );
        assert_eq!(attention_mask(&[1], 1, 0), [1]);
    }

    #[test]
    fn capacity_grows_in_blocks_and_keeps_rows() {
        let mut kv = KvStore::new(2, 4, 1, 2, 512);
        kv.reserve(10, &[]);
        assert_eq!(kv.cap(), 64);
        // Two rows written by hand, then a grow keeps them in place.
        kv.rows = 2;
        kv.buffers[0][..4].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        kv.buffers[0][128..130].copy_from_slice(&[5.0, 6.0]);
        kv.reserve(64, &[2, 1]);
        assert_eq!(kv.cap(), 128);
        assert_eq!(&kv.buffers[0][..4], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(&kv.buffers[0][256..258], &[5.0, 6.0]);
        // The last row moves into a removed one.
        kv.swap_remove(0);
        assert_eq!(kv.rows(), 1);
        assert_eq!(&kv.buffers[0][..2], &[5.0, 6.0]);
        // Shrinks back when the long rows are gone; never beyond the context.
        kv.reserve(1, &[1]);
        assert_eq!(kv.cap(), 64);
        assert_eq!(&kv.buffers[0][..2], &[5.0, 6.0]);
        kv.reserve(500, &[1]);
        assert_eq!(kv.cap(), 512);
        assert_eq!(&kv.buffers[0][..2], &[5.0, 6.0]);
    }
}
