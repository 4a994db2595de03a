//! Goal: a plugin written in Python, from `wit/` alone, runs on the store:
//! componentize-py (from PyPI) builds `examples/python/app.py` against the
//! `plugin-command` world, `tblob run` runs it in a real process, and what
//! it stored reads back byte for byte through the CLI. Also: every world in
//! `wit/` resolves offline with a non-Rust toolchain (the Rust guests already
//! prove it for wit-bindgen).
//! The plugin also runs on a store in a bucket (a real s3s-fs).
//! Method: componentize-py from PATH, or installed by pip into the target
//! directory when PATH has none (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::cli::{ok, tblob};

const COMPONENTIZE_PY: &str = "0.25.1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A command running componentize-py `COMPONENTIZE_PY`.
fn componentize_py() -> Command {
    static TOOL: OnceLock<Option<PathBuf>> = OnceLock::new();
    // None: the one on PATH has the right version.
    let installed = TOOL.get_or_init(|| {
        let on_path = Command::new("componentize-py").arg("--version").output();
        if let Ok(output) = on_path {
            if String::from_utf8_lossy(&output.stdout).contains(COMPONENTIZE_PY) {
                return None;
            }
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("componentize-py");
        if !dir.join("componentize_py").exists() {
            let status = Command::new("python3")
                .env("PIP_ROOT_USER_ACTION", "ignore")
                .args(["-m", "pip", "install", "--quiet", "--target"])
                .arg(&dir)
                .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
                .status()
                .expect("python3 runs (componentize-py needs it)");
            assert!(status.success(), "pip install componentize-py failed");
        }
        Some(dir)
    });
    match installed {
        None => Command::new("componentize-py"),
        Some(dir) => {
            let mut command = Command::new("python3");
            command
                .env("PYTHONPATH", dir)
                .args(["-c", "import componentize_py; componentize_py.script()"]);
            command
        }
    }
}

fn run_checked(mut command: Command, what: &str) {
    let output = command.output().expect(what);
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The example plugin, built once per test process.
fn python_plugin() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-example.wasm");
        let mut build = componentize_py();
        build
            .current_dir(repo().join("examples/python"))
            .arg("-d")
            .arg(repo().join("wit"))
            .args(["-w", "plugin-command", "componentize", "app", "-o"])
            .arg(&out);
        run_checked(build, "componentize-py componentize");
        out
    })
}

/// The id of the artifact the plugin streamed, from its `id ...` line.
fn printed_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("id "))
        .expect("the plugin prints the id")
        .to_string()
}

fn worlds() -> Vec<String> {
    let source = std::fs::read_to_string(repo().join("wit/tensor-blob.wit")).unwrap();
    source
        .lines()
        .filter_map(|line| line.strip_prefix("world "))
        .map(|rest| rest.trim_end_matches(" {").trim().to_string())
        .collect()
}

#[test]
fn every_world_in_wit_resolves_with_componentize_py() {
    let worlds = worlds();
    for expected in ["plugin", "plugin-command", "chunker"] {
        assert!(worlds.iter().any(|w| w == expected), "{expected} missing");
    }
    for world in worlds {
        let out = tempfile::tempdir().unwrap();
        let mut bindings = componentize_py();
        bindings
            .arg("-d")
            .arg(repo().join("wit"))
            .args(["-w", &world, "bindings"])
            .arg(out.path());
        run_checked(bindings, &format!("bindings for world {world}"));
        assert!(
            out.path().join("wit_world/__init__.py").is_file(),
            "{world}"
        );
    }
}

#[test]
fn the_python_plugin_stores_streams_and_range_reads_through_tblob_run() {
    let store = tempfile::tempdir().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // Hundreds of chunks, twenty writer calls, and a range over several
    // chunks; large enough that the memory limit below stops its upload.
    let content = crate::common::data(20 * 1024 * 1024 + 4321, 77);
    std::fs::write(data_dir.path().join("weights.bin"), &content).unwrap();
    let wasm = python_plugin().to_str().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let grant = format!("{}::/data", data_dir.path().display());

    let output = tblob(
        store.path(),
        &[
            "--cache-dir",
            cache_dir,
            "run",
            wasm,
            "--dir",
            &grant,
            "/data/weights.bin",
        ],
    );
    let stdout = ok(&output);
    assert!(
        stdout.contains("errors typed: not-found, invalid-argument"),
        "{stdout}"
    );
    assert!(stdout.contains(": equal"), "{stdout}");
    assert!(stdout.contains("the link went with it"), "{stdout}");
    let id = printed_id(&stdout);

    // What the plugin stored, read by another process, is the file.
    let got = data_dir.path().join("got.bin");
    ok(&tblob(
        store.path(),
        &["get", &id, "-o", got.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(&got).unwrap(), content);
    let meta: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", &id, "--json"]))).unwrap();
    assert_eq!(meta["filename"], "/data/weights.bin");
    assert_eq!(meta["tags"], serde_json::json!(["large"]));
    assert_eq!(meta["size"], content.len() as u64);
    // Its two small artifacts are deleted; the streamed one stays.
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", "--json"]))).unwrap();
    assert_eq!(stats["artifacts"], 1);

    // componentize-py keeps every uploaded `bytes` alive: a memory limit
    // below the upload's size (the interpreter itself needs 12 to 16 MiB)
    // stops the run with the limit named.
    let refused = tblob(
        store.path(),
        &[
            "--cache-dir",
            cache_dir,
            "run",
            wasm,
            "--memory-limit",
            "24M",
            "--dir",
            &grant,
            "/data/weights.bin",
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("memory limit of 24 MiB"), "{stderr}");
    let after: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", "--json"]))).unwrap();
    // The run stopped mid-upload: its small puts ran (and deleted what
    // they put), the stream did not land.
    assert_eq!(after["artifacts"], 1, "{after}");
    let listing: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&tblob(store.path(), &["ls", "--json"]))).unwrap();
    let streamed = listing
        .iter()
        .filter(|meta| meta["filename"] == "/data/weights.bin")
        .count();
    assert_eq!(streamed, 1, "{listing:?}");
}

/// The same plugin on a store in a bucket (a real s3s-fs on 127.0.0.1):
/// what it streamed, range-read and compared reads back byte for byte
/// from another process.
#[test]
fn the_python_plugin_runs_on_a_store_in_a_bucket() {
    let server = tensor_blob_host::testing::S3Server::start().expect("s3s-fs starts");
    let data_dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let content = crate::common::data(6 * 1024 * 1024 + 17, 78);
    std::fs::write(data_dir.path().join("weights.bin"), &content).unwrap();
    let store = format!("s3://{}/py", tensor_blob_host::testing::S3_BUCKET);
    let endpoint = server.endpoint();
    let cache_dir = cache.path().to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tblob"))
            .args(["--store", &store, "--endpoint", &endpoint])
            .args(["--cache-dir", cache_dir])
            .args(args)
            .envs(server.credentials_env())
            .env_remove("TBLOB_STORE")
            .output()
            .expect("tblob runs")
    };
    let wasm = python_plugin().to_str().unwrap();
    let grant = format!("{}::/data", data_dir.path().display());
    let stdout = ok(&run(&["run", wasm, "--dir", &grant, "/data/weights.bin"]));
    assert!(stdout.contains(": equal"), "{stdout}");
    let id = printed_id(&stdout);
    let got = data_dir.path().join("got.bin");
    ok(&run(&["get", &id, "-o", got.to_str().unwrap()]));
    assert!(std::fs::read(&got).unwrap() == content);
    ok(&run(&["verify"]));
}
