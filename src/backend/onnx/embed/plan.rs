//! Which inputs of a collected batch run together. Every row of a run is padded to the
//! run's longest input, and the encoder's work grows with rows × padded length, so one
//! 250-token input among 31 short ones would make all 32 rows cost 250 tokens. The
//! inputs are sorted by length and cut into runs of similar lengths where that saves
//! more padded tokens than a run costs ([`RUN_COST_TOKENS`]); inputs of one length, or
//! of close lengths, stay one run. Padding never changes a vector (the mask removes
//! it), so how a batch is cut does not change any answer.

/// What one extra `Session::run` costs, in padded tokens: the fixed part of a run
/// (dispatch, thread hand-off) plus the worse efficiency of smaller matrices.
pub const RUN_COST_TOKENS: usize = 64;

/// Indices into `lens`, grouped into runs: each run sorted by length, runs by their
/// longest input. Minimises Σ (rows × longest + `run_cost`) over all ways of cutting
/// the sorted list (an O(n²) dynamic programme; n is at most `max_batch_size`).
pub fn runs(lens: &[usize], run_cost: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let n = order.len();
    // best[k]: the cheapest way to run the k shortest inputs; cut[k]: where its last run starts.
    let mut best = vec![0usize; n + 1];
    let mut cut = vec![0usize; n + 1];
    for k in 1..=n {
        let longest = lens[order[k - 1]];
        let (start, cost) = (0..k)
            .map(|j| (j, best[j] + (k - j) * longest + run_cost))
            .min_by_key(|&(j, cost)| (cost, std::cmp::Reverse(k - j)))
            .unwrap_or((0, 0));
        best[k] = cost;
        cut[k] = start;
    }
    let mut out = Vec::new();
    let mut k = n;
    while k > 0 {
        out.push(order[cut[k]..k].to_vec());
        k = cut[k];
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_lengths_stay_one_run() {
        let lens = [12, 9, 14, 10, 11, 13, 12, 9];
        let runs = runs(&lens, RUN_COST_TOKENS);
        assert_eq!(runs.len(), 1);
        let sorted: Vec<usize> = runs[0].iter().map(|&i| lens[i]).collect();
        assert_eq!(sorted, [9, 9, 10, 11, 12, 12, 13, 14]);
    }

    #[test]
    fn one_long_input_runs_apart_from_many_short_ones() {
        let mut lens = vec![10; 31];
        lens.push(250);
        let runs = runs(&lens, RUN_COST_TOKENS);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].len(), 31);
        assert_eq!(runs[1], vec![31]);
    }

    #[test]
    fn every_input_runs_exactly_once() {
        let lens = [5, 200, 7, 64, 3, 128, 90, 8, 256, 30, 31, 2];
        let mut seen: Vec<usize> = runs(&lens, 16).into_iter().flatten().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        assert!(runs(&[], 16).is_empty());
    }

    #[test]
    fn a_free_run_separates_every_length() {
        let lens = [4, 8, 4, 8];
        assert_eq!(runs(&lens, 0), vec![vec![0, 2], vec![1, 3]]);
    }
}
