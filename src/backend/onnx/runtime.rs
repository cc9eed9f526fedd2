//! Finding and loading the ONNX Runtime shared library, once per process. sluice is
//! built with `ort`'s `load-dynamic`: nothing is downloaded at build time, and the
//! library is looked up at start-up in this order: the backend's `ort_library`, the
//! `ORT_DYLIB_PATH` environment variable, then `.ort/libonnxruntime.so` under the
//! working directory (where `make` unpacks it from the pinned `onnxruntime` wheel).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::error::BackendError;

/// The library file `make ort` writes.
pub const DEFAULT_LIBRARY: &str = ".ort/libonnxruntime.so";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Where the library will be loaded from, and how that was decided (for errors).
fn locate(configured: Option<&Path>) -> (PathBuf, &'static str) {
    if let Some(path) = configured {
        return (path.to_owned(), "the backend's `ort_library`");
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return (PathBuf::from(path), "ORT_DYLIB_PATH");
    }
    (PathBuf::from(DEFAULT_LIBRARY), "the default location")
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
/// Later calls return the same environment whatever `configured` says (a process
/// can hold one ONNX Runtime).
pub fn environment(backend: &str, configured: Option<&Path>) -> Result<Environment, BackendError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env.clone());
    }
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env.clone());
    }
    let (path, source) = locate(configured);
    let fail = |detail: String| BackendError::Failed {
        backend: backend.to_owned(),
        message: detail,
    };
    if !path.exists() {
        return Err(fail(format!(
            "the ONNX Runtime library was not found at {} ({source}). Run `make ort` \
             (it unpacks libonnxruntime.so from the pinned onnxruntime wheel on PyPI into \
             .ort/), or point ORT_DYLIB_PATH or backends.{backend}.ort_library at an \
             existing libonnxruntime.so",
            path.display()
        )));
    }
    let builder = ort::init_from(&path).map_err(|e| {
        fail(format!(
            "cannot load the ONNX Runtime library {} ({source}): {e}",
            path.display()
        ))
    })?;
    let env = builder
        .with_name("sluice")
        .with_telemetry(false)
        .build()
        .map_err(|e| fail(format!("cannot create the ONNX Runtime environment: {e}")))?;
    tracing::info!(library = %path.display(), "loaded ONNX Runtime");
    Ok(ENVIRONMENT.get_or_init(|| env).clone())
}

/// ONNX Runtime intra-op threads per engine: the backend's `threads`, else one per core.
pub fn threads(configured: Option<usize>) -> usize {
    configured.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    })
}

/// An ONNX Runtime session over `path`: full graph optimisation, `threads` intra-op
/// threads, one inter-op thread. `spin = false` lets pool threads sleep between runs
/// instead of spinning (for engines whose runs leave gaps the same cores need).
pub fn session(
    env: &Environment,
    path: &Path,
    threads: usize,
    spin: bool,
) -> Result<Session, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot load {}: {e}", path.display());
    let mut builder = Session::builder(env)
        .map_err(|e| fail(&e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| fail(&e))?
        .with_intra_threads(threads)
        .map_err(|e| fail(&e))?
        .with_inter_threads(1)
        .map_err(|e| fail(&e))?;
    if !spin {
        builder = builder
            .with_intra_op_spinning(false)
            .map_err(|e| fail(&e))?;
    }
    builder.commit_from_file(path).map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_path_wins() {
        let (path, source) = locate(Some(Path::new("/opt/ort/libonnxruntime.so")));
        assert_eq!(path, PathBuf::from("/opt/ort/libonnxruntime.so"));
        assert!(source.contains("ort_library"));
    }

    #[test]
    fn missing_library_says_how_to_fix_it() {
        if ENVIRONMENT.get().is_some() {
            return; // already loaded by another test in this process
        }
        let err = environment("local", Some(Path::new("/nonexistent/libonnxruntime.so")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
        assert!(err.contains("make ort"), "{err}");
        assert!(err.contains("ORT_DYLIB_PATH"), "{err}");
    }
}
