//! Replays the fuzz inputs through the same entry points the cargo-fuzz targets use, so a
//! plain `cargo test` on stable keeps every fixed crasher fixed without nightly or
//! libFuzzer: `fuzz/regressions/<target>/` holds inputs that once crashed, and
//! `fuzz/corpus/<target>/` the seeds, which must keep passing too.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Every file in `dir`, sorted so failures are reported in a stable order.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input of `target` and names each one that panics.
fn replay(target: &str) {
    let (_, run) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = inputs(&fuzz.join("corpus").join(target));
    assert!(!seeds.is_empty(), "{target} has no seed corpus");
    let crashers = inputs(&fuzz.join("regressions").join(target));
    let mut failed = Vec::new();
    for path in seeds.iter().chain(&crashers) {
        let data = std::fs::read(path).expect("a readable input");
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target} panicked on {failed:#?}");
}

#[test]
fn every_target_is_replayed() {
    let mut names: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut files: Vec<String> = inputs(&dir)
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .collect();
    files.sort_unstable();
    assert_eq!(names, files, "fuzz/fuzz_targets and TARGETS disagree");
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*
    };
}

replay_tests!(
    socks4,
    socks5,
    http_proxy,
    forward_spec,
    ssh_config,
    ssh_option,
    authorized_keys,
    certificate,
    server_config,
    address,
    key_options,
    ssh_session,
);
