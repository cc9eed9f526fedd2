//! The `openai` backend's SSE parser: any body, cut anywhere, gives well-formed events;
//! for a UTF-8 body the events do not depend on where it was cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::fuzzing::openai_sse;
use sluice_fuzz::{check_events, input, pieces};

fuzz_target!(|data: &[u8]| {
    let input = input(data);
    let whole = openai_sse(vec![input.body.to_vec()]);
    check_events(&whole);
    let chunked = openai_sse(pieces(input.body, &input.cuts));
    check_events(&chunked);
    // Invalid UTF-8 fails where it is met: a chunked body may send the events before it.
    if std::str::from_utf8(input.body).is_ok() {
        assert_eq!(whole, chunked);
    }
});
