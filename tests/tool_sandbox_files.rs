//! The `read_file` sandbox seen from outside: adversarial paths through the public
//! `Tool` API against a temporary root with a canary file next to it (outside). Every
//! escape (`..`, absolute paths, symlinks out, a symlink swapped while reading), every
//! special file (FIFO, socket, device, folder) and every bad argument must come back as
//! a tool error, and the canary's text must never appear in any result.

#![cfg(unix)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::config::ToolConfig;
use sluice::tools::read_file::ReadFile;
use sluice::tools::{CallContext, Tool, ToolError};

struct Tree {
    _base: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    canary: String,
}

/// `base/root` (what the tool sees) and `base/outside/canary.txt` (what it must not).
fn tree() -> Tree {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let canary = format!("CANARY-{}-{:?}", std::process::id(), Instant::now());
    std::fs::write(outside.join("canary.txt"), &canary).unwrap();
    std::fs::write(root.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(root.join("sub/inner.txt"), "inner text").unwrap();
    Tree {
        _base: base,
        root,
        outside,
        canary,
    }
}

fn tool(root: &Path, extra: &str) -> ReadFile {
    let cfg: ToolConfig = toml::from_str(&format!(
        "kind = \"read_file\"\nroot = \"{}\"\n{extra}",
        root.display()
    ))
    .unwrap();
    ReadFile::new("read_file", &cfg).unwrap()
}

async fn read(t: &ReadFile, path: &str) -> Result<String, ToolError> {
    let ctx = CallContext::with_timeout(Duration::from_secs(5));
    t.call(json!({ "path": path }), &ctx).await
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Refused,
    Invalid,
    Failed,
}

fn kind(got: &Result<String, ToolError>) -> Option<Want> {
    match got {
        Err(ToolError::Refused(_)) => Some(Want::Refused),
        Err(ToolError::InvalidArguments(_)) => Some(Want::Invalid),
        Err(ToolError::Failed(_)) => Some(Want::Failed),
        _ => None,
    }
}

#[tokio::test]
async fn escapes_and_special_files_are_refused() {
    let tr = tree();
    let root = &tr.root;
    let canary_abs = tr.outside.join("canary.txt");
    symlink("../outside/canary.txt", root.join("rel_escape")).unwrap();
    symlink(&canary_abs, root.join("abs_escape")).unwrap();
    symlink("../outside", root.join("outdir")).unwrap();
    symlink("../../outside/canary.txt", root.join("sub/deep_escape")).unwrap();
    symlink("/dev/zero", root.join("zero")).unwrap();
    symlink("/etc/passwd", root.join("passwd")).unwrap();
    symlink("/proc/self/environ", root.join("environ")).unwrap();
    symlink("loop", root.join("loop")).unwrap();
    // Absolute targets are refused even when they name a file inside the root.
    symlink(root.join("hello.txt"), root.join("abs_inside")).unwrap();
    std::fs::write(root.join("latin1.txt"), b"caf\xe9 au lait").unwrap();
    std::fs::write(root.join("binary.bin"), b"\x7fELF\x00\x00\x01").unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    let t = tool(root, "");
    let long_component = "a".repeat(300);
    let long_path = "a/".repeat(3000);
    let cases: Vec<(String, Want)> = vec![
        ("../outside/canary.txt".into(), Want::Refused),
        ("a/../../outside/canary.txt".into(), Want::Refused),
        ("sub/../../outside/canary.txt".into(), Want::Refused),
        ("sub/..".into(), Want::Refused),
        ("..".into(), Want::Refused),
        ("/etc/passwd".into(), Want::Refused),
        ("/proc/self/environ".into(), Want::Refused),
        ("/dev/zero".into(), Want::Refused),
        ("//etc/passwd".into(), Want::Refused),
        (canary_abs.display().to_string(), Want::Refused),
        (root.join("hello.txt").display().to_string(), Want::Refused),
        ("rel_escape".into(), Want::Refused),
        ("abs_escape".into(), Want::Refused),
        ("abs_inside".into(), Want::Refused),
        ("outdir/canary.txt".into(), Want::Refused),
        ("sub/deep_escape".into(), Want::Refused),
        ("zero".into(), Want::Refused),
        ("passwd".into(), Want::Refused),
        ("environ".into(), Want::Refused),
        ("fifo".into(), Want::Refused),
        ("socket".into(), Want::Refused),
        ("sub".into(), Want::Refused),
        (".".into(), Want::Refused),
        ("sub/".into(), Want::Refused),
        ("latin1.txt".into(), Want::Refused),
        ("binary.bin".into(), Want::Refused),
        ("loop".into(), Want::Failed),
        ("".into(), Want::Invalid),
        ("   ".into(), Want::Invalid),
        ("hello.txt\0.png".into(), Want::Invalid),
        (long_path, Want::Invalid),
        (long_component, Want::Invalid),
        ("missing.txt".into(), Want::Failed),
        ("hello.txt/x".into(), Want::Failed),
    ];
    for (path, want) in &cases {
        let started = Instant::now();
        let got = read(&t, path).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path}: took {:?}",
            started.elapsed()
        );
        assert_eq!(kind(&got), Some(*want), "{path}: {got:?}");
        let message = got.unwrap_err().to_string();
        assert!(!message.contains(&tr.canary), "{path}: {message}");
    }
    // The refusals say why.
    let fifo = read(&t, "fifo").await.unwrap_err().to_string();
    assert!(
        fifo.contains("FIFO") && fifo.contains("regular files"),
        "{fifo}"
    );
    let abs = read(&t, "/etc/passwd").await.unwrap_err().to_string();
    assert!(abs.contains("absolute path"), "{abs}");
    let up = read(&t, "../outside/canary.txt")
        .await
        .unwrap_err()
        .to_string();
    assert!(up.contains("`..`"), "{up}");
    let link = read(&t, "rel_escape").await.unwrap_err().to_string();
    assert!(link.contains("outside the folder"), "{link}");
    let dir = read(&t, "sub").await.unwrap_err().to_string();
    assert!(
        dir.contains("folder") && dir.contains("regular files"),
        "{dir}"
    );
    // Nothing was opened for writing: the canary is intact.
    assert_eq!(std::fs::read_to_string(&canary_abs).unwrap(), tr.canary);
}

#[tokio::test]
async fn files_beneath_the_root_are_read() {
    let tr = tree();
    symlink("hello.txt", tr.root.join("inside_link")).unwrap();
    symlink("../hello.txt", tr.root.join("sub/up_but_inside")).unwrap();
    let t = tool(&tr.root, "");
    for (path, want) in [
        ("hello.txt", "hello\n"),
        ("./hello.txt", "hello\n"),
        ("sub/inner.txt", "inner text"),
        ("sub/./inner.txt", "inner text"),
        // Symlinks that stay inside the root are followed.
        ("inside_link", "hello\n"),
        ("sub/up_but_inside", "hello\n"),
    ] {
        assert_eq!(read(&t, path).await.as_deref(), Ok(want), "{path}");
    }
    std::fs::write(tr.root.join("empty.txt"), "").unwrap();
    assert_eq!(read(&t, "empty.txt").await.as_deref(), Ok(""));
    std::fs::write(tr.root.join("utf8.txt"), "grüße ✓").unwrap();
    assert_eq!(read(&t, "utf8.txt").await.as_deref(), Ok("grüße ✓"));
}

#[tokio::test]
async fn an_oversize_file_is_cut_with_a_note() {
    let tr = tree();
    // 'é' is two bytes: the cut at 11 bytes falls inside the sixth one.
    std::fs::write(tr.root.join("big.txt"), "é".repeat(5000)).unwrap();
    let t = tool(&tr.root, "max_bytes = 11");
    let got = read(&t, "big.txt").await.unwrap();
    assert_eq!(
        got,
        "ééééé\n[cut: the file has 10000 bytes; only the first 10 are shown]"
    );
    // The default cap is 1 MiB.
    std::fs::write(tr.root.join("huge.txt"), "x".repeat(3 << 20)).unwrap();
    let t = tool(&tr.root, "");
    let got = read(&t, "huge.txt").await.unwrap();
    let (text, note) = got.split_once('\n').unwrap();
    assert_eq!(text.len(), 1 << 20);
    assert!(note.contains("3145728 bytes"), "{note}");
}

/// A thread flips `swap` between a file inside and the canary outside while calls run:
/// cap-std resolves the path once in the kernel, so the canary can never be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_mid_request_never_leaks() {
    let tr = tree();
    let root = tr.root.clone();
    symlink("hello.txt", root.join("swap")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicUsize::new(0));
    let flipper = {
        let (stop, flips, root) = (Arc::clone(&stop), Arc::clone(&flips), root.clone());
        let targets = [
            PathBuf::from("hello.txt"),
            PathBuf::from("../outside/canary.txt"),
            tr.outside.join("canary.txt"),
        ];
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let tmp = root.join("swap.tmp");
                let _ = std::fs::remove_file(&tmp);
                let n = flips.load(Ordering::Relaxed);
                symlink(&targets[n % targets.len()], &tmp).unwrap();
                std::fs::rename(&tmp, root.join("swap")).unwrap();
                flips.store(n + 1, Ordering::Relaxed);
            }
        })
    };
    let t = tool(&root, "");
    let (mut read_ok, mut refused) = (0, 0);
    // At least 2000 calls, and on until the flipper has really been flipping.
    let mut calls = 0;
    while calls < 2000 || (flips.load(Ordering::Relaxed) < 500 && calls < 50_000) {
        calls += 1;
        match read(&t, "swap").await {
            Ok(text) => {
                assert!(!text.contains(&tr.canary), "leaked: {text}");
                assert_eq!(text, "hello\n");
                read_ok += 1;
            }
            Err(e) => {
                assert!(!e.to_string().contains(&tr.canary));
                refused += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(flips.load(Ordering::Relaxed) >= 500);
    // Both sides of the swap were hit: the race was really run.
    assert!(
        read_ok > 0 && refused > 0,
        "{read_ok} read, {refused} refused"
    );
}

#[tokio::test]
async fn a_cancelled_call_returns_at_once() {
    let tr = tree();
    let t = tool(&tr.root, "");
    let ctx = CallContext::with_timeout(Duration::from_secs(5));
    ctx.cancel.cancel();
    let got = t.call(json!({ "path": "hello.txt" }), &ctx).await;
    assert_eq!(got, Err(ToolError::Cancelled));
}

#[tokio::test]
async fn arguments_of_the_wrong_shape_are_refused() {
    let tr = tree();
    let t = tool(&tr.root, "");
    let ctx = CallContext::with_timeout(Duration::from_secs(5));
    for args in [json!({}), json!({ "path": 7 }), json!({ "path": null })] {
        let got = t.call(args.clone(), &ctx).await;
        assert!(
            matches!(got, Err(ToolError::InvalidArguments(_))),
            "{args}: {got:?}"
        );
    }
}

#[test]
fn a_missing_root_is_a_startup_error_naming_it() {
    let base = tempfile::tempdir().unwrap();
    let missing = base.path().join("no-such-folder");
    let cfg: ToolConfig = toml::from_str(&format!(
        "kind = \"read_file\"\nroot = \"{}\"",
        missing.display()
    ))
    .unwrap();
    let err = ReadFile::new("read_file", &cfg).err().unwrap();
    assert!(err.contains("no-such-folder"), "{err}");
    let file = base.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let cfg: ToolConfig = toml::from_str(&format!(
        "kind = \"read_file\"\nroot = \"{}\"",
        file.display()
    ))
    .unwrap();
    let err = ReadFile::new("read_file", &cfg).err().unwrap();
    assert!(err.contains("a-file"), "{err}");
    let cfg: ToolConfig = toml::from_str("kind = \"read_file\"").unwrap();
    assert!(ReadFile::new("read_file", &cfg).is_err());
}

#[test]
fn spec_names_the_path_argument() {
    let tr = tree();
    let spec = tool(&tr.root, "").spec().clone();
    assert_eq!(
        spec.description,
        "read a text file beneath the configured folder"
    );
    assert_eq!(spec.parameters["required"], json!(["path"]));
}
