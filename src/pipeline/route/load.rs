//! The load policy (`[route.load]`), on the engines' measured cost per token *now*:
//!
//! - **Up**: a more precise tier that is not busy and costs less per token at this
//!   moment serves the request instead — better and cheaper. On a CPU a full-precision
//!   tier decoding a large batch adds a row almost for free (its step is bound by reading
//!   the weights), while a quantized tier that is idle pays a whole step for one token.
//! - **Away**: when the scored tier is busy — more requests queued than `max_queue`, or
//!   its latest decode step slower than `max_step_time` — the request goes to the most
//!   precise tier that is not busy and costs less per token now.
//!
//! Only tiers of the same model are candidates, so a move never lands on a tier that does
//! not exist; with nothing cheaper the request stays.

use crate::backend::TierLoad;
use crate::config::LoadPolicy;

/// Is this tier over the policy's bounds?
fn busy(policy: &LoadPolicy, load: &TierLoad) -> bool {
    load.waiting > policy.max_queue
        || policy
            .max_step_time
            .zip(load.recent_step_seconds)
            .is_some_and(|(bound, step)| step > bound.as_secs_f64())
}

/// Is `other` cheaper than `chosen` right now? By measured seconds per token when both
/// are measured, else by queue length.
fn cheaper(other: &TierLoad, chosen: &TierLoad) -> bool {
    match (other.token_seconds, chosen.token_seconds) {
        (Some(o), Some(c)) => o < c,
        _ => other.waiting < chosen.waiting,
    }
}

/// The tier to move to, if any. `loads[i]` is tier i's load (cheapest tier first);
/// `None` where the backend cannot tell, which never moves.
pub fn moved(policy: &LoadPolicy, loads: &[Option<TierLoad>], chosen: usize) -> Option<usize> {
    if !policy.enabled {
        return None;
    }
    let current = loads.get(chosen).copied().flatten()?;
    let up = loads
        .iter()
        .enumerate()
        .skip(chosen + 1)
        .rev()
        .find_map(|(i, load)| {
            let load = load.as_ref()?;
            let measured = load.token_seconds.zip(current.token_seconds);
            (!busy(policy, load) && measured.is_some_and(|(o, c)| o < c)).then_some(i)
        });
    if up.is_some() {
        return up;
    }
    if !busy(policy, &current) {
        return None;
    }
    loads
        .iter()
        .enumerate()
        .rev()
        .filter(|&(i, _)| i != chosen)
        .find_map(|(i, load)| {
            let load = load.as_ref()?;
            (!busy(policy, load) && cheaper(load, &current)).then_some(i)
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> LoadPolicy {
        LoadPolicy {
            enabled: true,
            max_queue: 4,
            max_step_time: Some(Duration::from_millis(100)),
        }
    }

    fn load(waiting: usize, token_ms: f64, step_ms: f64) -> Option<TierLoad> {
        Some(TierLoad {
            waiting,
            active: 8,
            recent_step_seconds: Some(step_ms / 1e3),
            token_seconds: Some(token_ms / 1e3),
            ..TierLoad::default()
        })
    }

    #[test]
    fn an_idle_tier_keeps_its_requests() {
        let loads = [load(0, 1.0, 10.0), load(0, 2.0, 10.0), load(0, 5.0, 10.0)];
        assert_eq!(moved(&policy(), &loads, 2), None);
        assert_eq!(moved(&policy(), &loads, 0), None, "the cheapest stays");
    }

    #[test]
    fn a_more_precise_tier_that_is_cheaper_now_takes_the_request() {
        // fp32 batching 12 rows: 4.5 ms a token; int8 idle: a whole 11 ms step per token.
        let loads = [load(0, 9.0, 8.0), load(0, 11.0, 11.0), load(2, 4.5, 59.0)];
        assert_eq!(moved(&policy(), &loads, 0), Some(2));
        assert_eq!(moved(&policy(), &loads, 1), Some(2));
        // Not when the precise tier is busy, nor without a measurement on both sides.
        let busy = [load(0, 9.0, 8.0), load(9, 4.5, 59.0)];
        assert_eq!(moved(&policy(), &busy, 0), None);
        let unmeasured = [
            load(0, 9.0, 8.0),
            Some(TierLoad {
                token_seconds: None,
                ..TierLoad::default()
            }),
        ];
        assert_eq!(moved(&policy(), &unmeasured, 0), None);
    }

    #[test]
    fn a_queued_tier_sends_to_the_most_precise_cheaper_one() {
        let loads = [load(0, 1.0, 10.0), load(0, 2.0, 10.0), load(9, 5.0, 10.0)];
        assert_eq!(moved(&policy(), &loads, 2), Some(1));
    }

    #[test]
    fn a_slow_step_counts_as_busy() {
        let loads = [load(0, 1.0, 10.0), load(0, 3.0, 150.0)];
        assert_eq!(moved(&policy(), &loads, 1), Some(0));
    }

    #[test]
    fn never_to_a_tier_that_is_busy_or_dearer_now() {
        // int4 is the dearest per token at this batch size (as measured on CPU), int8
        // is queued too: stay.
        let loads = [load(0, 9.0, 10.0), load(7, 2.0, 10.0), load(9, 5.0, 10.0)];
        assert_eq!(moved(&policy(), &loads, 2), None);
        // A cheaper *and* more precise tier is fine to move up to.
        let loads = [load(9, 5.0, 10.0), load(0, 2.0, 10.0)];
        assert_eq!(moved(&policy(), &loads, 0), Some(1));
    }

    #[test]
    fn off_unknown_or_single_never_moves() {
        let loads = [load(0, 1.0, 10.0), load(9, 5.0, 10.0)];
        let off = LoadPolicy {
            enabled: false,
            ..policy()
        };
        assert_eq!(moved(&off, &loads, 1), None);
        assert_eq!(moved(&policy(), &[None, None], 1), None);
        assert_eq!(moved(&policy(), &[load(9, 5.0, 10.0)], 0), None);
        assert_eq!(moved(&policy(), &loads, 5), None, "out of range stays put");
    }
}
