//! The embedded engine's stop matcher, against a plain search: fed the text in any
//! chunks, it releases exactly the text before the first complete stop string (the one
//! that ends first), stops there, and never releases any part of a stop string.
//!
//! Body: UTF-8, fields separated by NUL: the generated text, then the stop strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::fuzzing::StopMatcher;
use sluice_fuzz::{input, str_pieces};

fuzz_target!(|data: &[u8]| {
    let input = input(data);
    let Ok(body) = std::str::from_utf8(input.body) else {
        return;
    };
    let mut fields = body.split('\0');
    let text = fields.next().unwrap_or_default();
    let stops: Vec<String> = fields.take(8).map(str::to_owned).collect();

    let first = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at + s.len(), at)))
        .min()
        .map(|(_, at)| at);

    let mut matcher = StopMatcher::new(stops.clone());
    let mut out = String::new();
    let mut stopped = false;
    for piece in str_pieces(text, &input.cuts) {
        let step = matcher.push(piece);
        out.push_str(&step.text);
        if step.stopped {
            stopped = true;
            break;
        }
    }
    if !stopped {
        out.push_str(&matcher.flush());
    }
    match first {
        Some(at) => {
            assert!(stopped, "stop at {at} not found");
            assert_eq!(out, &text[..at]);
        }
        None => {
            assert!(!stopped, "stopped without a stop string");
            assert_eq!(out, text);
        }
    }
});
