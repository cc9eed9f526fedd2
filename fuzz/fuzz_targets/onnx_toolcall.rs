//! The embedded engine's tool-call parser: whatever the model writes, cut anywhere, the
//! output does not depend on the cuts, never has an empty text piece or an unnamed call,
//! and text without any call passes through unchanged.
//!
//! Flags (high bits of byte 0): 1 = streaming mode (constrained sequences); 2 = the body
//! starts with its own tags, `start NUL end NUL text` (else `<tool_call>`/`</tool_call>`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::fuzzing::{Piece, ToolCallParser};
use sluice_fuzz::{input, str_pieces};

fn run(start: &str, end: &str, streaming: bool, chunks: &[&str]) -> Vec<Piece> {
    let mut parser = ToolCallParser::new(start, end, streaming);
    let mut out: Vec<Piece> = Vec::new();
    let mut pieces: Vec<Piece> = chunks.iter().flat_map(|c| parser.push(c)).collect();
    pieces.extend(parser.finish());
    for piece in pieces {
        match (&piece, out.last_mut()) {
            (Piece::Text(t), _) if t.is_empty() => panic!("empty text piece"),
            (Piece::Call { name, .. } | Piece::CallStart { name }, _) if name.is_empty() => {
                panic!("call without a name")
            }
            (Piece::CallStart { .. } | Piece::CallArguments(_), _) if !streaming => {
                panic!("streamed piece outside streaming mode")
            }
            (Piece::Text(t), Some(Piece::Text(last))) => last.push_str(t),
            (Piece::CallArguments(a), Some(Piece::CallArguments(last))) => last.push_str(a),
            _ => out.push(piece),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let input = input(data);
    let Ok(body) = std::str::from_utf8(input.body) else {
        return;
    };
    let streaming = input.flags & 1 != 0;
    let (start, end, text) = if input.flags & 2 != 0 {
        let mut fields = body.splitn(3, '\0');
        let start = fields.next().unwrap_or_default();
        let end = fields.next().unwrap_or_default();
        (start, end, fields.next().unwrap_or_default())
    } else {
        ("<tool_call>", "</tool_call>", body)
    };
    let whole = run(start, end, streaming, &[text]);
    let chunked = run(start, end, streaming, &str_pieces(text, &input.cuts));
    assert_eq!(whole, chunked, "tags {start:?} {end:?}");
    let calls = whole
        .iter()
        .any(|p| matches!(p, Piece::Call { .. } | Piece::CallStart { .. }));
    if !calls {
        let out: String = whole
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(out, text, "text without calls is passed through");
    }
});
