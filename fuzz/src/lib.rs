//! Helpers shared by the fuzz targets: how an input names the points where a stream
//! body is cut into network chunks, and the checks every stream of domain events obeys.
//!
//! Input layout for the chunked targets: byte 0 is a flags/count byte (low 4 bits: the
//! number of cuts `k`; the high bits are the target's own flags), then `k` cut offsets
//! as little-endian `u16`s (taken modulo the body length), then the body. A seed with a
//! first byte of 0 is the body as is, in one chunk.

use sluice::domain::{Event, MAX_TOOL_CALLS};
use sluice::error::BackendError;

/// A decoded input: flags (high 4 bits of byte 0), cut offsets, body.
pub struct Input<'a> {
    pub flags: u8,
    pub cuts: Vec<usize>,
    pub body: &'a [u8],
}

pub fn input(data: &[u8]) -> Input<'_> {
    let Some((&head, mut rest)) = data.split_first() else {
        return Input {
            flags: 0,
            cuts: Vec::new(),
            body: &[],
        };
    };
    let mut cuts = Vec::new();
    for _ in 0..(head & 0x0f) {
        if rest.len() < 2 {
            break;
        }
        cuts.push(u16::from_le_bytes([rest[0], rest[1]]) as usize);
        rest = &rest[2..];
    }
    Input {
        flags: head >> 4,
        cuts,
        body: rest,
    }
}

/// `body` cut at `cuts` (modulo its length; empty pieces kept, as a network may send them).
pub fn pieces(body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([body.len()]) {
        out.push(body[start..c].to_vec());
        start = c;
    }
    out
}

/// `text` cut at `cuts`, each rounded down to a char boundary.
pub fn str_pieces<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|c| {
            let mut i = c % (text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        })
        .collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([text.len()]) {
        out.push(&text[start..c]);
        start = c;
    }
    out
}

/// What every backend's event stream obeys: an error or a `Finish` is the last item;
/// at most one `Finish`; tool-call indices below [`MAX_TOOL_CALLS`]; no empty deltas.
pub fn check_events(events: &[Result<Event, BackendError>]) {
    for (i, item) in events.iter().enumerate() {
        let last = i + 1 == events.len();
        match item {
            Err(e) => {
                assert!(last, "items after an error: {events:?}");
                assert!(!e.to_string().is_empty());
            }
            Ok(Event::Finish { .. }) => assert!(last, "items after Finish: {events:?}"),
            Ok(Event::ToolCall { index, .. }) => {
                assert!(*index < MAX_TOOL_CALLS, "tool-call index {index}")
            }
            Ok(Event::Delta(text)) => assert!(!text.is_empty(), "empty delta"),
            Ok(_) => {}
        }
    }
}
