//! backend → fault injection for integration tests: make an embedded engine's thread
//! panic, to check that the gateway then reports not-ready and answers 503 instead of
//! hanging. Hidden from the docs and unreachable from config, requests or the
//! environment: only code linked against the library (the tests in `tests/`) can arm it.
//!
//! Why a process-wide switch: integration tests build the library without `cfg(test)`,
//! so a `cfg`-gated hook would not exist for them, and a config key or request option
//! would let a production client or operator kill an engine. The switch is keyed by
//! backend name, so a test that gives its backend a name of its own cannot disturb
//! other gateways running in the same process. While nothing is armed, the engine pays
//! one relaxed atomic load per scheduling step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Anything armed at all (the fast path for every engine step).
static ARMED: AtomicBool = AtomicBool::new(false);
/// Backends whose engine thread panics at its next scheduling step.
static PANIC_NEXT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Make the engine thread of the embedded backend `backend` panic at its next
/// scheduling step (one of its tiers' threads, whichever steps first), as a bug in the
/// engine would. An idle engine steps when its next request arrives.
#[doc(hidden)]
pub fn panic_engine(backend: &str) {
    let mut armed = PANIC_NEXT.lock().unwrap_or_else(|e| e.into_inner());
    armed.push(backend.to_owned());
    ARMED.store(true, Ordering::Release);
}

/// Whether the engine thread of `backend` must panic now (disarms the hook).
pub(crate) fn take_engine_panic(backend: &str) -> bool {
    if !ARMED.load(Ordering::Relaxed) {
        return false;
    }
    let mut armed = PANIC_NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let Some(at) = armed.iter().position(|b| b == backend) else {
        return false;
    };
    armed.swap_remove(at);
    if armed.is_empty() {
        ARMED.store(false, Ordering::Release);
    }
    true
}
