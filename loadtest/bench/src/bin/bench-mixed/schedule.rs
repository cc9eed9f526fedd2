//! bench-mixed's schedule (see main.rs): which prompt each position of the run sends, the
//! same sequence for every set-up.

/// splitmix64: a small seeded generator, the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Repeats among `n` requests: round(share x n), never all of them.
fn repeats(n: usize, share: f64) -> usize {
    ((share * n as f64).round() as usize).min(n.saturating_sub(1))
}

/// The most requests `m` prompts allow: every prompt once, plus the repeats (the first
/// occurrences grow by 0 or 1 with each request, so this is where they reach `m`).
pub fn most_requests(m: usize, share: f64) -> usize {
    let mut n = m;
    while n + 1 - repeats(n + 1, share) <= m {
        n += 1;
    }
    n
}

/// How the schedule shapes the traffic (see the header of main.rs).
#[derive(Clone, Copy)]
pub struct Mix {
    /// Share of the requests that repeat an earlier prompt.
    pub share: f64,
    /// Zipf exponent of the repeats' popularity (0: uniform).
    pub zipf: f64,
    pub seed: u64,
    /// First occurrences in a seeded shuffle of the file (true) or in its order.
    pub shuffled: bool,
}

/// The schedule of `requests` (default: the most the `m` prompts allow): for each position
/// (prompt index, is a repeat). See the header of main.rs.
pub fn schedule(m: usize, requests: Option<usize>, mix: Mix) -> Result<Vec<(usize, bool)>, String> {
    let Mix {
        share,
        zipf,
        seed,
        shuffled,
    } = mix;
    let n = requests.unwrap_or_else(|| most_requests(m, share));
    let repeats = repeats(n, share);
    if n - repeats > m {
        return Err(format!(
            "{n} requests with a repeat share of {share} need {} distinct prompts; the data has {m} (at most {} requests)",
            n - repeats,
            most_requests(m, share)
        ));
    }
    let mut rng = Rng(seed);
    let mut is_repeat: Vec<bool> = (0..n).map(|i| i < repeats).collect();
    rng.shuffle(&mut is_repeat);
    if let (Some(true), Some(j)) = (is_repeat.first(), is_repeat.iter().position(|r| !r)) {
        is_repeat.swap(0, j);
    }
    let mut rank = vec![0usize; m];
    let mut popular: Vec<usize> = (0..m).collect();
    rng.shuffle(&mut popular);
    for (r, &p) in popular.iter().enumerate() {
        rank[p] = r;
    }
    // Its own stream, so that the repeat positions and ranks do not depend on the order.
    let mut first: Vec<usize> = (0..m).collect();
    if shuffled {
        Rng(seed ^ 0x5EED_0F0F_F1F7_5EED).shuffle(&mut first);
    }
    let (mut out, mut weights, mut total, mut next_first) = (Vec::new(), Vec::new(), 0.0, 0);
    for rep in is_repeat {
        if rep {
            let mut x = rng.unit() * total;
            let mut k = weights.len() - 1;
            for (j, w) in weights.iter().enumerate() {
                if x < *w {
                    k = j;
                    break;
                }
                x -= w;
            }
            out.push((first[k], true));
        } else {
            let p = first[next_first];
            let w = 1.0 / ((rank[p] + 1) as f64).powf(zipf);
            weights.push(w);
            total += w;
            out.push((p, false));
            next_first += 1;
        }
    }
    Ok(out)
}

/// FNV-1a of a sequence of ids: equal for runs that sent the same schedule.
pub fn fnv(ids: impl Iterator<Item = String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.bytes().chain([0u8]) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(share: f64, zipf: f64, seed: u64, shuffled: bool) -> Mix {
        Mix {
            share,
            zipf,
            seed,
            shuffled,
        }
    }

    #[test]
    fn exact_share_firsts_in_order_repeats_of_earlier_prompts() {
        let s = schedule(100, Some(120), mix(0.3, 1.0, 7, false)).unwrap();
        assert_eq!(s.len(), 120);
        assert_eq!(s.iter().filter(|(_, r)| *r).count(), 36);
        assert!(!s[0].1);
        let mut next = 0;
        for &(p, repeat) in &s {
            if repeat {
                assert!(p < next, "a repeat of a prompt not sent yet");
            } else {
                assert_eq!(p, next);
                next += 1;
            }
        }
        assert_eq!(
            schedule(100, Some(120), mix(0.3, 1.0, 7, false)).unwrap(),
            s
        );
        assert_ne!(
            schedule(100, Some(120), mix(0.3, 1.0, 8, false)).unwrap(),
            s
        );
    }

    #[test]
    fn shuffled_firsts_are_distinct_and_keep_the_repeat_positions() {
        let file = schedule(100, Some(120), mix(0.3, 1.0, 7, false)).unwrap();
        let s = schedule(100, Some(120), mix(0.3, 1.0, 7, true)).unwrap();
        let firsts: Vec<usize> = s.iter().filter(|(_, r)| !r).map(|(p, _)| *p).collect();
        let mut sorted = firsts.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 84);
        assert_ne!(firsts, (0..84).collect::<Vec<_>>());
        let mut sent = std::collections::HashSet::new();
        for (&(p, r), &(_, fr)) in s.iter().zip(&file) {
            assert_eq!(r, fr);
            assert_eq!(
                r,
                !sent.insert(p),
                "a repeat is of a prompt sent before, a first is new"
            );
        }
    }

    #[test]
    fn default_uses_every_prompt_and_too_many_is_an_error() {
        for m in 1..200 {
            for share in [0.0, 0.1, 0.3, 0.5, 0.9] {
                let n = most_requests(m, share);
                let s = schedule(m, None, mix(share, 1.0, 1, true)).unwrap();
                assert_eq!(s.len(), n);
                assert_eq!(
                    s.iter().filter(|(_, r)| !r).count(),
                    m.min(n),
                    "m {m} share {share}"
                );
                assert!(schedule(m, Some(n + 1), mix(share, 1.0, 1, true)).is_err());
            }
        }
        assert!(schedule(10, Some(20), mix(0.3, 1.0, 1, true)).is_err());
    }

    #[test]
    fn zipf_concentrates_repeats_and_zero_spreads_them() {
        let top = |zipf: f64| {
            let s = schedule(1000, Some(1400), mix(0.3, zipf, 3, true)).unwrap();
            let mut counts = std::collections::HashMap::new();
            for (p, r) in s {
                if r {
                    *counts.entry(p).or_insert(0) += 1;
                }
            }
            counts.into_values().max().unwrap()
        };
        assert!(top(1.0) > 3 * top(0.0));
    }
}
