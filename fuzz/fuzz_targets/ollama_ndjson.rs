//! The `ollama` backend's NDJSON parser: any body, cut anywhere, gives well-formed events
//! that do not depend on where it was cut (tool-call ids are random, so not compared).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::domain::Event;
use sluice::error::BackendError;
use sluice::fuzzing::ollama_ndjson;
use sluice_fuzz::{check_events, input, pieces};

fn without_ids(events: Vec<Result<Event, BackendError>>) -> Vec<Result<Event, BackendError>> {
    events
        .into_iter()
        .map(|e| match e {
            Ok(Event::ToolCall {
                index,
                id,
                name,
                arguments,
            }) => {
                assert!(id.as_deref().is_some_and(|id| id.starts_with("call_")));
                Ok(Event::ToolCall {
                    index,
                    id: None,
                    name,
                    arguments,
                })
            }
            other => other,
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let input = input(data);
    let whole = ollama_ndjson(vec![input.body.to_vec()]);
    check_events(&whole);
    let chunked = ollama_ndjson(pieces(input.body, &input.cuts));
    check_events(&chunked);
    let mut next = 0;
    for event in &whole {
        if let Ok(Event::ToolCall { index, .. }) = event {
            assert_eq!(*index, next, "tool-call indices count up from 0");
            next += 1;
        }
    }
    assert_eq!(without_ids(whole), without_ids(chunked));
});
