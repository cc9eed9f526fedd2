//! `read_file`: a UTF-8 text file beneath one folder (`[tools.NAME] root`), read when a
//! model calls it in the agent loop.
//!
//! Sandbox:
//! - the root is opened once at start (`cap_std::fs::Dir`); every open goes through it,
//!   so `..`, absolute paths and symlinks that lead outside the root fail in the kernel
//!   (`openat2` with `RESOLVE_BENEATH` where Linux has it, cap-std's own component walk
//!   elsewhere). Absolute paths, `..` components, NUL bytes, empty and overlong paths
//!   are refused before any I/O, with a message saying why.
//! - Symlinks: relative ones whose target stays inside the root are followed; ones
//!   that lead outside (even when swapped in mid-request) and absolute ones (even to a
//!   file inside) are refused. The file is opened once and everything after looks at
//!   the opened handle only (fstat, read): the path is never resolved twice. (When the
//!   open fails, a `stat` through the root only words the error: "is a socket".)
//! - Only regular files: the open is non-blocking, so a FIFO cannot hang the call, and
//!   the handle's type is checked before reading (directories, FIFOs, sockets and
//!   devices are refused).
//! - At most `max_bytes` (default 1 MiB) are read: a longer file is cut on a character
//!   boundary and the result ends with a `[cut: ...]` line saying so.
//! - Text only: content that is not UTF-8, or holds NUL bytes, is refused as binary
//!   (no lossy conversion: a model reading U+FFFD noise would misreport the file).
//! - Not covered by path checks: hard links and bind mounts placed inside the root by
//!   whoever can write there.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, FileType, OpenOptions};
use serde_json::Value;

use super::{one_string_schema, string_arg, CallContext, Tool, ToolError, ToolSpec};
use crate::config::ToolConfig;

pub const DEFAULT_DESCRIPTION: &str = "read a text file beneath the configured folder";
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Longest path accepted (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

pub struct ReadFile {
    spec: ToolSpec,
    root: Arc<Dir>,
    max_bytes: usize,
}

impl ReadFile {
    pub fn new(name: &str, config: &ToolConfig) -> Result<ReadFile, String> {
        let root = config
            .root
            .as_deref()
            .ok_or_else(|| "`root` is required: the folder files are read beneath".to_owned())?;
        let dir = Dir::open_ambient_dir(root, ambient_authority())
            .map_err(|e| format!("root `{}` cannot be opened: {e}", root.display()))?;
        let max_bytes = config.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes == 0 {
            return Err("max_bytes must be at least 1".into());
        }
        Ok(ReadFile {
            spec: ToolSpec {
                name: name.to_owned(),
                description: config
                    .description
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DESCRIPTION.into()),
                parameters: one_string_schema(
                    "path",
                    "the file's path relative to the folder, such as notes/todo.txt",
                ),
            },
            root: Arc::new(dir),
            max_bytes,
        })
    }
}

#[async_trait]
impl Tool for ReadFile {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, ctx: &CallContext) -> Result<String, ToolError> {
        let path = checked_path(string_arg(&arguments, "path")?)?;
        let timeout = ctx.remaining();
        let (root, max_bytes) = (Arc::clone(&self.root), self.max_bytes);
        let work = tokio::task::spawn_blocking(move || read(&root, &path, max_bytes));
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
            joined = work => joined
                .map_err(|e| ToolError::Failed(format!("the read did not finish: {e}")))?,
            () = tokio::time::sleep_until(ctx.deadline) => Err(ToolError::TimedOut(timeout)),
        }
    }
}

/// The path as given, if it is a plain relative path; else why not.
pub fn checked_path(raw: &str) -> Result<PathBuf, ToolError> {
    if raw.trim().is_empty() {
        return Err(ToolError::InvalidArguments(
            "the path is empty: give a file's path relative to the folder".into(),
        ));
    }
    if raw.contains('\0') {
        return Err(ToolError::InvalidArguments(
            "the path contains a NUL character".into(),
        ));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(ToolError::InvalidArguments(format!(
            "the path is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    let path = Path::new(raw);
    for part in path.components() {
        match part {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(ToolError::Refused(format!(
                    "`{raw}` uses `..`: only files beneath the folder can be read"
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ToolError::Refused(format!(
                    "`{raw}` is an absolute path: give a path relative to the folder"
                )))
            }
        }
    }
    Ok(path.to_owned())
}

/// Opens `path` beneath `root` once and reads it through the handle.
fn read(root: &Dir, path: &Path, max_bytes: usize) -> Result<String, ToolError> {
    let shown = path.display();
    let mut options = OpenOptions::new();
    options.read(true);
    // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
    // (cap-std's public door to the flag; cap-fs-ext wraps the same call.)
    options._cap_fs_ext_nonblock(true);
    let mut file = root
        .open_with(path, &options)
        .map_err(|e| match root.metadata(path) {
            // Sockets fail to open (ENXIO): say what the path is instead.
            Ok(m) if !m.is_file() => not_regular(&shown.to_string(), m.file_type()),
            _ => open_error(&shown.to_string(), &e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| ToolError::Failed(format!("`{shown}` cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(not_regular(&shown.to_string(), meta.file_type()));
    }
    let cap = u64::try_from(max_bytes).unwrap_or(u64::MAX);
    let mut bytes =
        Vec::with_capacity(max_bytes.min(usize::try_from(meta.len()).unwrap_or(max_bytes)));
    (&mut file)
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ToolError::Failed(format!("`{shown}` cannot be read: {e}")))?;
    let cut = bytes.len() > max_bytes;
    bytes.truncate(max_bytes);
    let text = text_of(bytes, cut).map_err(|why| {
        ToolError::Refused(format!(
            "`{shown}` is not a text file ({why}): only UTF-8 text can be read"
        ))
    })?;
    if cut {
        let size = match meta.len() {
            n if n > cap => format!("{n} bytes"),
            _ => format!("more than {max_bytes} bytes"),
        };
        return Ok(format!(
            "{text}\n[cut: the file has {size}; only the first {} are shown]",
            text.len()
        ));
    }
    Ok(text)
}

/// The bytes as text; a cut may have split the last character, which is dropped.
fn text_of(mut bytes: Vec<u8>, cut: bool) -> Result<String, &'static str> {
    if bytes.contains(&0) {
        return Err("it holds NUL bytes");
    }
    if let Err(e) = std::str::from_utf8(&bytes) {
        if cut && e.error_len().is_none() {
            bytes.truncate(e.valid_up_to());
        } else {
            return Err("it is not valid UTF-8");
        }
    }
    String::from_utf8(bytes).map_err(|_| "it is not valid UTF-8")
}

fn open_error(shown: &str, e: &io::Error) -> ToolError {
    match e.kind() {
        io::ErrorKind::NotFound => ToolError::Failed(format!("no file `{shown}` in the folder")),
        io::ErrorKind::PermissionDenied => ToolError::Refused(format!(
            "`{shown}` cannot be read: it leads outside the folder (through a symlink) or \
             is not readable"
        )),
        io::ErrorKind::NotADirectory => {
            ToolError::Failed(format!("`{shown}`: a part of the path is not a folder"))
        }
        io::ErrorKind::IsADirectory => ToolError::Refused(format!(
            "`{shown}` is a folder: only regular files can be read"
        )),
        io::ErrorKind::InvalidFilename => {
            ToolError::InvalidArguments(format!("`{shown}` is not a valid file name"))
        }
        _ => ToolError::Failed(format!("`{shown}` cannot be opened: {e}")),
    }
}

fn not_regular(shown: &str, t: FileType) -> ToolError {
    ToolError::Refused(format!(
        "`{shown}` is {}: only regular files can be read",
        kind_of(t)
    ))
}

/// A file type in words for the refusal.
fn kind_of(t: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use cap_std::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}
