//! The `x-ratelimit-*` headers, named and formatted as OpenAI sends them:
//! `x-ratelimit-limit-requests: 60`, `x-ratelimit-remaining-requests: 59`,
//! `x-ratelimit-reset-requests: 1s` (Go-style durations: `20ms`, `1.5s`, `6m0s`), and the
//! same three for `-tokens`.

use std::time::Duration;

use super::gcra::Window;

/// What a response reports of its tenant's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// The request rate with the fewest requests left.
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

impl RateHeaders {
    pub fn new(requests: Option<Window>, tokens: Option<Window>) -> Self {
        RateHeaders { requests, tokens }
    }

    /// Header names and values, requests first.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(6);
        let mut add = |names: [&'static str; 3], window: Option<Window>| {
            if let Some(w) = window {
                out.push((names[0], w.limit.to_string()));
                out.push((names[1], w.remaining.to_string()));
                out.push((names[2], duration(w.reset)));
            }
        };
        add(
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            self.requests,
        );
        add(
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
            self.tokens,
        );
        out
    }
}

/// A duration as OpenAI's reset headers write it (Go's `time.Duration` format, to the
/// millisecond): `0s`, `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let seconds = if frac == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openais() {
        let cases = [
            (0, "0s"),
            (20, "20ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (360_000, "6m0s"),
            (3_723_000, "1h2m3s"),
            (61_250, "1m1.25s"),
        ];
        for (ms, want) in cases {
            assert_eq!(duration(Duration::from_millis(ms)), want);
        }
    }

    #[test]
    fn only_configured_limits_are_reported() {
        let w = Window {
            limit: 60,
            remaining: 59,
            reset: Duration::from_secs(1),
        };
        let pairs = RateHeaders::new(Some(w), None).pairs();
        assert_eq!(
            pairs,
            vec![
                ("x-ratelimit-limit-requests", "60".to_string()),
                ("x-ratelimit-remaining-requests", "59".to_string()),
                ("x-ratelimit-reset-requests", "1s".to_string()),
            ]
        );
        assert!(RateHeaders::default().pairs().is_empty());
    }
}
