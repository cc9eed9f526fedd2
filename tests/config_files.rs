//! Every shipped config file parses and validates, and the CLI's `check-config` lists
//! every problem of a bad one with its key path.

use std::path::Path;
use std::process::Command;

fn toml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// Secrets referenced as `${VAR}` in the examples.
fn example_env() -> Vec<(String, String)> {
    ["VLLM_API_KEY", "OPENAI_API_KEY"]
        .iter()
        .map(|k| (k.to_string(), "test-secret".to_string()))
        .collect()
}

#[test]
fn every_file_in_config_parses() {
    let mut files = Vec::new();
    toml_files(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .as_path(),
        &mut files,
    );
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if let Err(e) = sluice::config::load_str(&text, example_env()) {
            panic!("{}: {e}", file.display());
        }
    }
}

#[test]
fn the_default_config_listens_on_8080() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sluice.toml"))
            .unwrap();
    let config = sluice::config::load_str(&text, Vec::new()).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn check_config_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[backends.a]\nkind = \"ollama\"\nurl = \"not a url\"\n\n[[models]]\nname = \"m\"\nbackend = \"missing\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backends.a.url"), "{stderr}");
    assert!(stderr.contains("models[0].backend"), "{stderr}");

    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sluice.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("serve") && help.contains("check-config"),
        "{help}"
    );
}
