//! CPU priority of an embedded engine (`priority = "background"` on an onnx backend):
//! its engine threads and ONNX Runtime's thread pools run under Linux's `SCHED_IDLE`
//! policy, so they use only CPU time that normal-priority threads leave idle. Serve
//! latency-tolerant work (agent runs, batch jobs) from such a backend and interactive
//! chat on the same cores keeps its latency. No privilege is needed to lower a thread's
//! priority; threads inherit it from the thread that creates them, which is why the
//! decoder's session (and with it ORT's intra-op pool) is created on a thread that has
//! already been lowered.

/// Put the calling thread under `SCHED_IDLE` (threads it creates inherit it).
#[cfg(target_os = "linux")]
pub fn lower_current_thread() -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` with pid 0 changes only the calling thread, and
    // `param` is a valid, initialised struct that outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot lower the engine thread's CPU priority: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Elsewhere: the lowest nice value for the calling thread's process share.
#[cfg(not(target_os = "linux"))]
pub fn lower_current_thread() -> Result<(), String> {
    Err("priority = \"background\" needs Linux (SCHED_IDLE)".into())
}

/// Run `f` on a new thread lowered to background priority and return its result:
/// whatever threads `f` creates (ONNX Runtime's pools) are background threads too.
pub fn on_background_thread<T: Send>(
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                lower_current_thread()?;
                f()
            })
            .join()
            .map_err(|_| "the engine's loader thread panicked".to_owned())?
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lowered_threads_and_their_children_are_sched_idle() {
        let policies = on_background_thread(|| {
            // SAFETY: pid 0 asks about the calling thread.
            let own = unsafe { libc::sched_getscheduler(0) };
            let child = std::thread::spawn(|| unsafe { libc::sched_getscheduler(0) })
                .join()
                .map_err(|_| "child panicked".to_owned())?;
            Ok((own, child))
        })
        .unwrap();
        assert_eq!(policies, (libc::SCHED_IDLE, libc::SCHED_IDLE));
        // SAFETY: as above; this test thread was never lowered.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
