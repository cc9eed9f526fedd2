//! From token states to one vector per input, as sentence-transformers does it: the
//! mean over the input's own tokens (padding excluded) or the `[CLS]` state, then L2
//! normalisation when the model has a `Normalize` module; and the `dimensions` a
//! request asks for: the first `n` components, normalised again (what OpenAI's
//! `text-embedding-3` models do).

use super::encoder::Hidden;
use super::folder::Pooling;

/// The vector of `row`, whose first `len` positions are its tokens.
pub fn pool(hidden: &Hidden<'_>, row: usize, len: usize, pooling: Pooling) -> Vec<f32> {
    let width = hidden.hidden;
    let start = row * hidden.seq * width;
    let token = |p: usize| &hidden.states[start + p * width..start + (p + 1) * width];
    match pooling {
        Pooling::Cls => token(0).to_vec(),
        Pooling::Mean => {
            let len = len.clamp(1, hidden.seq);
            let mut sum = vec![0f64; width];
            for p in 0..len {
                for (acc, x) in sum.iter_mut().zip(token(p)) {
                    *acc += f64::from(*x);
                }
            }
            sum.into_iter().map(|s| (s / len as f64) as f32).collect()
        }
    }
}

/// Scale to unit length (a zero vector stays zero), as `torch.nn.functional.normalize`.
pub fn normalize(vector: &mut [f32]) {
    let norm = vector
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    for x in vector.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
}

/// The first `dimensions` components, back to unit length.
pub fn shorten(vector: &mut Vec<f32>, dimensions: usize) {
    if dimensions < vector.len() {
        vector.truncate(dimensions);
        normalize(vector);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states() -> Vec<f32> {
        // 2 rows × 3 positions × 2 dims; row 1 has one real token then padding.
        vec![
            1.0, 2.0, 3.0, 4.0, 5.0, 6.0, //
            7.0, 8.0, 100.0, 100.0, 100.0, 100.0,
        ]
    }

    #[test]
    fn mean_pooling_ignores_padding() {
        let states = states();
        let hidden = Hidden {
            states: &states,
            seq: 3,
            hidden: 2,
        };
        assert_eq!(pool(&hidden, 0, 3, Pooling::Mean), vec![3.0, 4.0]);
        assert_eq!(pool(&hidden, 1, 1, Pooling::Mean), vec![7.0, 8.0]);
        assert_eq!(pool(&hidden, 0, 3, Pooling::Cls), vec![1.0, 2.0]);
        assert_eq!(pool(&hidden, 1, 1, Pooling::Cls), vec![7.0, 8.0]);
    }

    #[test]
    fn normalised_vectors_have_unit_length() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0; 4];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 4]);
    }

    #[test]
    fn shortened_vectors_are_renormalised() {
        let mut v = vec![0.6, 0.0, 0.8, 0.0];
        shorten(&mut v, 1);
        assert_eq!(v, vec![1.0]);
        let mut full = vec![0.6, 0.8];
        shorten(&mut full, 2);
        assert_eq!(full, vec![0.6, 0.8]);
    }
}
