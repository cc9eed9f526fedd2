//! `POST /v1/chat/completions` bodies: parse + validation either give a 400 in the OpenAI
//! error shape, or a request that holds the validated limits; a valid request then
//! converts to the bodies the `openai` and `ollama` backends send upstream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::error::BackendError;
use sluice::fuzzing::{chat_request, upstream_bodies};

fuzz_target!(|data: &[u8]| {
    match chat_request(data) {
        Err(e) => {
            assert_eq!(e.status, 400, "{e:?}");
            assert_eq!(e.kind, "invalid_request_error");
            assert!(!e.message.is_empty());
            let body = e.body();
            assert!(body["error"]["message"].is_string());
        }
        Ok(request) => {
            assert!(!request.messages.is_empty());
            assert!(request.sampling.stop.len() <= 4);
            let (openai, ollama) = upstream_bodies(&request);
            assert_eq!(openai["stream"], true);
            assert_eq!(
                openai["messages"].as_array().map(Vec::len),
                Some(request.messages.len())
            );
            match ollama {
                Ok(body) => assert_eq!(
                    body["messages"].as_array().map(Vec::len),
                    Some(request.messages.len())
                ),
                Err(e) => assert!(matches!(e, BackendError::InvalidRequest { .. }), "{e:?}"),
            }
        }
    }
});
