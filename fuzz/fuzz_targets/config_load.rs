//! The config loader (`sluice::config::load_str`: TOML, `${VAR}` expansion, `SLUICE__`
//! overrides, typed parse, validation): any text gives a config or errors that each
//! carry a message, and loading is deterministic.
//!
//! Lines `#env NAME=VALUE` (TOML comments) give the environment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::load_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `workflows.files` are read from disk: keep the fuzzer away from devices and the like.
    if ["dev/", "proc/", "sys/", "\\u", "\\U", "run/"]
        .iter()
        .any(|s| text.contains(s))
    {
        return;
    }
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#env "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let first = load_str(text, env.clone());
    let again = load_str(text, env);
    match (&first, &again) {
        (Ok(config), Ok(_)) => assert!(!format!("{config:?}").is_empty()),
        (Err(a), Err(b)) => {
            assert!(!a.0.is_empty(), "an error without issues");
            for issue in &a.0 {
                assert!(
                    !issue.message.is_empty(),
                    "issue without a message: {issue:?}"
                );
            }
            assert_eq!(a.0, b.0);
            let _ = a.to_string();
        }
        _ => panic!("loading is not deterministic"),
    }
});
