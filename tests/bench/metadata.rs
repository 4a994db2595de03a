//! Metadata call latency through a plugin: `stat`, `exists`, a `list`
//! page, `find-by-tag` and `query`, timed inside a real plugin
//! (`bench-plugin meta CALLS`, run by `tblob run` on a fresh store of 1000
//! artifacts) and printed as nanoseconds per call.
//!
//! `cargo bench -p tensor-blob-host --bench metadata` (release build).
//! `TBLOB_BENCH_CALLS` changes the calls per function (default 20000).
//!
//! Before and after: these calls used to travel plugin -> host -> chunker
//! guest -> host; now the host answers them from the tenant's store. The
//! old path no longer exists in this build, so the "before" side is the
//! same measurement on a build of the old code: set
//! `TBLOB_BENCH_BEFORE_DIR` to a directory holding that build's `tblob`
//! and its `bench-plugin.wasm` (same plugin source, old WIT), and both
//! run here, alternating, in one run, printed with the ratios.

use std::path::{Path, PathBuf};
use std::process::Command;

const CALLS: &[&str] = &["stat", "exists", "list", "find", "query"];

fn main() {
    let calls: u32 = std::env::var("TBLOB_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let reps = 3;
    let after = Build {
        tblob: PathBuf::from(env!("CARGO_BIN_EXE_tblob")),
        plugin: PathBuf::from(tensor_blob_artifacts::BENCH_PLUGIN_WASM_PATH),
    };
    let before = std::env::var_os("TBLOB_BENCH_BEFORE_DIR").map(|dir| {
        let dir = PathBuf::from(dir);
        Build {
            tblob: dir.join("tblob"),
            plugin: dir.join("bench-plugin.wasm"),
        }
    });
    println!(
        "tensor-blob metadata latency through a plugin: {calls} calls each, 1000 artifacts, median of {reps}"
    );
    let mut after_runs = Vec::new();
    let mut before_runs = Vec::new();
    for _ in 0..reps {
        after_runs.push(after.run(calls));
        if let Some(before) = &before {
            before_runs.push(before.run(calls));
        }
    }
    for name in CALLS {
        let after_ns = median(&after_runs, name);
        let before_ns = median(&before_runs, name);
        match (before_ns, after_ns) {
            (Some(b), Some(a)) => println!(
                "{name:7} before (via chunker) {b:9.0} ns   after (host) {a:9.0} ns   before / after {:.2}x",
                b / a
            ),
            (None, Some(a)) => println!("{name:7} after (host) {a:9.0} ns"),
            (Some(b), None) => println!("{name:7} before (via chunker) {b:9.0} ns"),
            (None, None) => println!("{name:7} not measured"),
        }
    }
}

struct Build {
    tblob: PathBuf,
    plugin: PathBuf,
}

impl Build {
    /// One `bench-plugin meta` run on a fresh store: its output line.
    fn run(&self, calls: u32) -> String {
        let store = tempfile::tempdir().unwrap();
        tblob(
            &self.tblob,
            store.path(),
            &[
                "run".as_ref(),
                self.plugin.as_os_str(),
                "meta".as_ref(),
                calls.to_string().as_ref(),
            ],
        )
    }
}

fn tblob(binary: &Path, store: &Path, args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(binary)
        .arg("--store")
        .arg(store)
        .arg("--no-fsync")
        .args(args)
        .env_remove("TBLOB_STORE")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} {args:?}: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The median of field `{name}_ns=` over `runs`, if they have it.
fn median(runs: &[String], name: &str) -> Option<f64> {
    let key = format!("{name}_ns=");
    let mut values: Vec<f64> = runs
        .iter()
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key.as_str()))
                .map(|v| v.parse().unwrap())
        })
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    Some(values[values.len() / 2])
}
