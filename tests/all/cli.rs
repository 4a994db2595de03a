//! Goal: the `tblob` command-line contract, in real processes: every
//! invocation is a fresh process, so each test also proves that data and
//! metadata survive a reopen.
//! Method: run the built binary against a temporary store directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::data;

pub(crate) fn tblob(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tblob"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("TBLOB_STORE")
        .output()
        .expect("tblob runs")
}

pub(crate) fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "tblob failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn put(store: &Path, file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["put", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let stdout = ok(&tblob(store, &args));
    let id = stdout.trim_end().to_string();
    assert_eq!(stdout, format!("{id}\n"), "put prints only the id");
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    id
}

fn segment_files(store: &Path) -> Vec<PathBuf> {
    let dir = store.join("tenants/default/segments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn put_get_stat_ls_rm_across_processes() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("checkpoint.bin");
    let bytes = data(5 << 20, 31);
    std::fs::write(&file, &bytes).unwrap();
    let id = put(
        store.path(),
        &file,
        &["--tag", "ckpt", "--content-type", "application/x-test"],
    );

    let out = work.path().join("out.bin");
    ok(&tblob(
        store.path(),
        &["get", &id, "-o", out.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let stdout = tblob(store.path(), &["get", &id]);
    assert!(stdout.status.success());
    assert_eq!(
        stdout.stdout, bytes,
        "get to stdout writes exactly the bytes"
    );

    let meta: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", &id, "--json"]))).unwrap();
    assert_eq!(meta["filename"], "checkpoint.bin");
    assert_eq!(meta["size"], bytes.len() as u64);
    assert_eq!(meta["digest"], blake3::hash(&bytes).to_hex().as_str());
    assert_eq!(meta["tags"][0], "ckpt");

    let list: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["ls", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let stats: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", "--json"]))).unwrap();
    assert_eq!(stats["artifacts"], 1);
    assert_eq!(stats["logical_bytes"], bytes.len() as u64);

    assert_eq!(tblob(store.path(), &["exists", &id]).status.code(), Some(0));
    ok(&tblob(store.path(), &["rm", &id]));
    assert_eq!(tblob(store.path(), &["exists", &id]).status.code(), Some(1));
}

#[test]
fn empty_file_and_fixed_chunking() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let empty = work.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let id = put(store.path(), &empty, &[]);
    let got = tblob(store.path(), &["get", &id]);
    assert!(got.status.success());
    assert!(got.stdout.is_empty());

    let file = work.path().join("f");
    let bytes = data(100_000, 32);
    std::fs::write(&file, &bytes).unwrap();
    let id = put(
        store.path(),
        &file,
        &["--chunking", "fixed", "--chunk-size", "4096"],
    );
    let meta: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", &id, "--json"]))).unwrap();
    assert_eq!(meta["chunk_count"], 25);
    assert_eq!(tblob(store.path(), &["get", &id]).stdout, bytes);
}

#[test]
fn errors_are_one_line_and_never_a_panic() {
    let store = tempfile::tempdir().unwrap();
    for args in [
        vec!["get", "not-an-id"],
        vec!["get", "00000000000000000000000000000000"],
        vec!["rm", "00000000000000000000000000000000"],
        vec!["put", "/definitely/not/here"],
        vec!["--tenant", "../escape", "ls"],
    ] {
        let output = tblob(store.path(), &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("tblob: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"));
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn verify_catches_a_flipped_byte_and_get_refuses_the_damaged_artifact() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let damaged_bytes = data(400_000, 41);
    let intact_bytes = data(400_000, 42);
    std::fs::write(work.path().join("a"), &damaged_bytes).unwrap();
    std::fs::write(work.path().join("b"), &intact_bytes).unwrap();
    let damaged = put(store.path(), &work.path().join("a"), &[]);
    let intact = put(store.path(), &work.path().join("b"), &[]);
    assert_eq!(tblob(store.path(), &["verify"]).status.code(), Some(0));

    // Find a stretch of the first artifact in the segment file, flip a byte.
    let needle = &damaged_bytes[200_000..200_064];
    let mut flipped = false;
    for segment in segment_files(store.path()) {
        let mut bytes = std::fs::read(&segment).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at + 10] ^= 0x01;
            std::fs::write(&segment, &bytes).unwrap();
            flipped = true;
            break;
        }
    }
    assert!(flipped, "artifact bytes found in a segment");

    let verify = tblob(store.path(), &["verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(verify.stdout).unwrap(),
        format!("{damaged}\n")
    );
    assert_eq!(
        tblob(store.path(), &["verify", &intact]).status.code(),
        Some(0)
    );

    let out = work.path().join("out");
    let get = tblob(
        store.path(),
        &["get", &damaged, "-o", out.to_str().unwrap()],
    );
    assert_eq!(get.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&get.stderr).contains("corrupt"));
    assert!(!out.exists(), "no partial output under the target name");
    assert!(std::fs::read_dir(work.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("partial")));
    assert_eq!(tblob(store.path(), &["get", &intact]).stdout, intact_bytes);
}

/// A damaged metadata record loses that record's artifact, but is never
/// dropped silently: `verify` reports it and fails, while every other
/// artifact still lists, reads and verifies.
#[test]
fn verify_reports_a_damaged_metadata_record_and_the_rest_still_reads() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let contents: Vec<Vec<u8>> = (0..3).map(|i| data(50_000, 60 + i)).collect();
    let mut ids = Vec::new();
    let mut record_starts = Vec::new();
    let meta_log = store.path().join("tenants/default/meta.log");
    for (i, content) in contents.iter().enumerate() {
        let file = work.path().join(format!("f{i}"));
        std::fs::write(&file, content).unwrap();
        record_starts.push(std::fs::metadata(&meta_log).map_or(0, |m| m.len()));
        ids.push(put(store.path(), &file, &[]));
    }
    // Damage the middle commit's record (a byte in its payload).
    let mut bytes = std::fs::read(&meta_log).unwrap();
    bytes[record_starts[1] as usize + 40] ^= 0x10;
    std::fs::write(&meta_log, &bytes).unwrap();

    let verify = tblob(store.path(), &["verify"]);
    assert_eq!(verify.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        stderr.contains("store damage") && stderr.contains("meta.log"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8(verify.stdout).unwrap(), "");
    let listed = ok(&tblob(store.path(), &["ls"]));
    assert!(
        listed.contains(&ids[0]) && listed.contains(&ids[2]),
        "{listed}"
    );
    assert!(!listed.contains(&ids[1]), "{listed}");
    for i in [0, 2] {
        assert_eq!(tblob(store.path(), &["get", &ids[i]]).stdout, contents[i]);
        // The artifact itself is intact (nothing on stdout), but the store
        // has damage: verify counts it (issue 9: this exited 0).
        let verify = tblob(store.path(), &["verify", &ids[i]]);
        assert_eq!(verify.status.code(), Some(1));
        assert!(verify.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&verify.stderr);
        assert_eq!(
            stderr.matches("tblob: store damage: meta.log").count(),
            1,
            "{stderr}"
        );
    }
}

/// Regression (issue 9): on a damaged store the exit codes and stderr
/// followed no rule: `verify` of an unknown id printed it as damaged and
/// exited 1, `verify ID` exited 0 although the open found damage, and the
/// lock error printed its OS cause twice. The rule now (README, `--help`):
/// 0 success, 1 "no" (`exists` absent, `verify` found damage), 2 an error
/// in one stderr line; damage found at open is one warning line, once,
/// before a command's own output, and `verify` lists it and fails.
#[test]
fn exit_codes_and_stderr_follow_one_rule() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f");
    std::fs::write(&file, data(10_000, 70)).unwrap();
    let meta_log = store.path().join("tenants/default/meta.log");
    let first = put(store.path(), &file, &[]);
    let second_at = std::fs::metadata(&meta_log).unwrap().len() as usize;
    std::fs::write(&file, data(10_000, 71)).unwrap();
    let second = put(store.path(), &file, &[]);
    std::fs::write(&file, data(10_000, 72)).unwrap();
    let third = put(store.path(), &file, &[]);
    let unknown = "0123456789abcdef0123456789abcdef";
    let code = |args: &[&str]| tblob(store.path(), args).status.code();
    let one_error_line = |args: &[&str], needle: &str| {
        let output = tblob(store.path(), args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("tblob: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    };

    // An intact store.
    assert_eq!(code(&["verify"]), Some(0));
    assert_eq!(code(&["verify", &first]), Some(0));
    assert_eq!(code(&["exists", &first]), Some(0));
    assert_eq!(code(&["exists", unknown]), Some(1));
    one_error_line(&["verify", unknown], "not found");
    one_error_line(&["verify", "nope"], "invalid argument");
    one_error_line(&["exists", "nope"], "invalid argument");
    for args in [vec!["ls"], vec!["stat"], vec!["stat", &first]] {
        let output = tblob(store.path(), &args);
        assert_eq!(output.status.code(), Some(0));
        assert!(output.stderr.is_empty(), "{args:?}");
    }

    // Damage the second commit's record: the open steps over it.
    let mut bytes = std::fs::read(&meta_log).unwrap();
    bytes[second_at + 40] ^= 0x10;
    std::fs::write(&meta_log, &bytes).unwrap();
    let warning = "tblob: warning: store damage: 1 problem(s) found opening tenant default; \
                   `tblob verify` lists them\n";
    for args in [
        vec!["ls"],
        vec!["stat"],
        vec!["stat", &first],
        vec!["get", &third],
        vec!["quota", "show"],
    ] {
        let output = tblob(store.path(), &args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&output.stderr), warning, "{args:?}");
        assert!(!output.stdout.is_empty(), "{args:?}");
    }
    let exists = tblob(store.path(), &["exists", &third]);
    assert_eq!(exists.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&exists.stderr), warning);
    assert_eq!(code(&["exists", &second]), Some(1));
    // An error after the warning is still one line of its own.
    let output = tblob(store.path(), &["verify", unknown]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("tblob: store damage: meta.log"),
        "{stderr}"
    );
    assert_eq!(lines[1], format!("tblob: not found: artifact {unknown}"));
    for args in [vec!["verify"], vec!["verify", &first]] {
        let output = tblob(store.path(), &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}: no artifact is damaged");
        let stderr = String::from_utf8(output.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{stderr}");
        assert!(
            lines[0].starts_with("tblob: store damage: meta.log"),
            "{stderr}"
        );
        assert!(lines[1].ends_with("0 damaged; 1 problems found in the store files"));
    }

    // A lock that fails for another reason than a holder: its OS error once.
    let lock = store.path().join("tenants/default/LOCK");
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    let output = tblob(store.path(), &["put", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("locking tenant default"), "{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");

    let help = ok(&tblob(store.path(), &["--help"]));
    assert!(
        help.contains("Exit codes:") && help.contains("store damage"),
        "{help}"
    );
}

/// Regression (issue 9): `tblob ls` printed filenames raw, so a newline
/// in a name split its entry over two lines. Text output escapes control
/// characters (and backslashes, so the escaping reads back); `--json`
/// stays exact.
#[test]
fn text_output_escapes_control_characters_and_json_stays_exact() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f");
    std::fs::write(&file, b"bytes").unwrap();
    let name = "two\nlines\\and\ttab\u{1b}[31m";
    let escaped = "two\\nlines\\\\and\\ttab\\u{1b}[31m";
    let id = put(
        store.path(),
        &file,
        &[
            "--name",
            name,
            "--tag",
            "t\rag",
            "--content-type",
            "a\u{7f}b",
        ],
    );
    let plain = put(store.path(), &file, &["--name", "plain"]);

    let listed = ok(&tblob(store.path(), &["ls"]));
    assert_eq!(
        listed,
        format!("{id}             5  {escaped}\n{plain}             5  plain\n")
    );
    let stat = ok(&tblob(store.path(), &["stat", &id]));
    assert!(
        stat.contains(&format!("filename:     {escaped}\n")),
        "{stat}"
    );
    assert!(stat.contains("tags:         t\\rag\n"), "{stat}");
    assert!(stat.contains("content-type: a\\u{7f}b\n"), "{stat}");
    assert!(!stat.contains('\u{1b}') && !stat.contains('\r'), "{stat}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["ls", "--json"]))).unwrap();
    assert_eq!(json[0]["filename"], name);
    let meta: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", &id, "--json"]))).unwrap();
    assert_eq!(meta["tags"][0], "t\rag");
    assert_eq!(meta["content_type"], "a\u{7f}b");
}

#[test]
fn demo_and_run_execute_the_example_plugin() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("notes.txt"), data(70_000, 51)).unwrap();
    let demo = Command::new(env!("CARGO_BIN_EXE_tblob"))
        .current_dir(work.path())
        .args([
            "--store",
            store.path().to_str().unwrap(),
            "demo",
            "notes.txt",
        ])
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );

    let run = tblob(
        store.path(),
        &[
            "run",
            tensor_blob_artifacts::EXAMPLE_PLUGIN_WASM_PATH,
            "--dir",
            &format!("{}::/in", work.path().display()),
            "/in/notes.txt",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", "--json"]))).unwrap();
    assert_eq!(stats["artifacts"], 2);
    // Same file twice: the second put added no physical bytes.
    assert_eq!(stats["physical_bytes"], 70_000);
}

#[test]
fn a_store_open_in_another_process_is_refused_not_shared() {
    // Two processes appending to one tenant's logs would interleave records;
    // the second writer must get a clear error instead (a reader is let in:
    // see `concurrent.rs`).
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f");
    std::fs::write(&file, b"bytes").unwrap();
    let runtime = crate::common::open_runtime(
        store.path(),
        tensor_blob_host::store::StoreOptions::default(),
    );
    let _held = runtime.tenant_store("default").unwrap();
    let output = tblob(store.path(), &["put", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "tblob: tenant default is in use by another process (pid {})\n",
            std::process::id()
        )
    );
    assert!(tblob(store.path(), &["ls"]).status.success());
    // Another tenant of the same root is independent.
    assert!(tblob(
        store.path(),
        &["--tenant", "other", "put", file.to_str().unwrap()]
    )
    .status
    .success());
}

fn quota_json(store: &Path, tenant: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&tblob(
        store,
        &["--tenant", tenant, "quota", "show", "--json"],
    )))
    .unwrap()
}

/// Goal: `tblob quota set` and `quota show` across processes: sizes with
/// suffixes, limits not named kept, `none` clearing one, enforcement in a
/// later process with a one-line `quota exceeded: <limit>` error, and
/// tenants kept apart. Method: real processes on a temporary store.
#[test]
fn quota_set_and_show_across_processes() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    ok(&tblob(
        store.path(),
        &[
            "quota",
            "set",
            "--bytes",
            "10M",
            "--artifacts",
            "2",
            "--writers",
            "4",
        ],
    ));
    let shown = quota_json(store.path(), "default");
    assert_eq!(shown["quota"]["bytes_max"], 10 << 20);
    assert_eq!(shown["quota"]["artifacts_max"], 2);
    assert_eq!(shown["quota"]["writers_max"], 4);
    assert!(shown["quota"]["artifact_bytes_max"].is_null());
    assert_eq!(shown["usage"]["artifacts"], 0);

    ok(&tblob(
        store.path(),
        &["quota", "set", "--artifact-bytes", "4K"],
    ));
    let shown = quota_json(store.path(), "default");
    assert_eq!(shown["quota"]["artifact_bytes_max"], 4096);
    assert_eq!(shown["quota"]["artifacts_max"], 2, "limits not named stay");

    let small = work.path().join("small.bin");
    std::fs::write(&small, data(4096, 91)).unwrap();
    let big = work.path().join("big.bin");
    std::fs::write(&big, data(8192, 92)).unwrap();
    put(store.path(), &small, &[]);
    let refused = tblob(store.path(), &["put", big.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("quota exceeded: artifact-bytes"),
        "{stderr}"
    );

    ok(&tblob(
        store.path(),
        &["quota", "set", "--artifact-bytes", "none"],
    ));
    put(store.path(), &big, &[]);
    let refused = tblob(store.path(), &["put", big.to_str().unwrap(), "--tag", "x"]);
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert!(stderr.contains("quota exceeded: artifacts"), "{stderr}");

    let text = ok(&tblob(store.path(), &["quota", "show"]));
    assert!(text.contains("artifacts:       2 of 2"), "{text}");
    assert!(text.contains("artifact-bytes:  unlimited"), "{text}");
    let shown = quota_json(store.path(), "default");
    let used = shown["usage"]["bytes"].as_u64().unwrap();
    assert!(used > 4096 + 8192, "usage counts what is stored: {used}");

    // Another tenant has its own (no) quota. `quota show` only reads: it
    // does not make the tenant, a put does.
    let unknown = tblob(store.path(), &["--tenant", "other", "quota", "show"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(!store.path().join("tenants/other").exists());
    ok(&tblob(
        store.path(),
        &["--tenant", "other", "put", big.to_str().unwrap()],
    ));
    assert!(quota_json(store.path(), "other")["quota"]["artifacts_max"].is_null());

    for bad in ["12Q", "", "-1", "99999999999T"] {
        let output = tblob(store.path(), &["quota", "set", "--bytes", bad]);
        assert_eq!(output.status.code(), Some(2), "--bytes {bad:?} accepted");
    }
    assert_eq!(
        quota_json(store.path(), "default")["quota"]["bytes_max"],
        10 << 20
    );
}

/// Goal: a quota set by one process is still in force after another
/// process holding the tenant is killed (SIGKILL) mid-put, and the killed
/// put left nothing visible. Method: `quota set`, then a `put -` whose
/// stdin is kept open (it holds the tenant's lock and has sent chunks),
/// killed once it has read its input; then `quota show` and a put over
/// the limit in fresh processes.
#[test]
fn a_quota_stays_in_force_after_a_writer_is_killed() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    ok(&tblob(store.path(), &["quota", "set", "--artifacts", "1"]));
    let mut child = {
        let _spawning = crate::common::spawning();
        Command::new(env!("CARGO_BIN_EXE_tblob"))
            .arg("--store")
            .arg(store.path())
            .args(["put", "-"])
            .env_remove("TBLOB_STORE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        // Accepted by the pipe only as fast as the put reads it.
        stdin.write_all(&data(8 << 20, 93)).unwrap();
        stdin.flush().unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let shown = quota_json(store.path(), "default");
    assert_eq!(shown["quota"]["artifacts_max"], 1);
    assert_eq!(
        shown["usage"]["artifacts"], 0,
        "the killed put left nothing"
    );
    let file = work.path().join("one.bin");
    std::fs::write(&file, data(1000, 94)).unwrap();
    put(store.path(), &file, &[]);
    let refused = tblob(
        store.path(),
        &["put", file.to_str().unwrap(), "--tag", "again"],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("quota exceeded: artifacts"));
}

/// The first number in `line` after `word` (e.g. "freed 3 garbage" → 3).
fn number_after(text: &str, word: &str) -> u64 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} in {text:?}"));
    text[at + word.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("a number after {word:?} in {text:?}"))
}

#[test]
fn gc_reports_what_it_did_and_a_second_pass_finds_nothing_new() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.bin");
    let small = work.path().join("small.bin");
    std::fs::write(&big, data(6 << 20, 71)).unwrap();
    let small_bytes = data(300 << 10, 72);
    std::fs::write(&small, &small_bytes).unwrap();
    let big_id = put(store.path(), &big, &[]);
    let small_id = put(store.path(), &small, &[]);
    ok(&tblob(store.path(), &["rm", &big_id]));

    let stat = ok(&tblob(store.path(), &["stat"]));
    assert!(
        stat.contains("garbage"),
        "stat shows pending garbage: {stat}"
    );

    let first = ok(&tblob(store.path(), &["gc"]));
    assert!(number_after(&first, "freed") > 0, "{first}");
    assert!(number_after(&first, "compacted") >= 1, "{first}");
    let before = number_after(&first, "disk bytes:");
    let after = number_after(&first, "before,");
    assert!(after < before, "disk bytes fall: {first}");
    assert!(
        after < 2 << 20,
        "the 6 MiB of garbage left the disk: {first}"
    );

    let second = ok(&tblob(store.path(), &["gc"]));
    assert_eq!(number_after(&second, "freed"), 0, "{second}");
    assert_eq!(number_after(&second, "compacted"), 0, "{second}");
    assert_eq!(number_after(&second, "reclaimed"), 0, "{second}");
    assert_eq!(number_after(&second, "disk bytes:"), after, "{second}");
    assert_eq!(number_after(&second, "pending:"), 0, "{second}");

    let out = work.path().join("out.bin");
    ok(&tblob(
        store.path(),
        &["get", &small_id, "-o", out.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), small_bytes);
}

/// Regression: the compiled-component cache lived in `<store>/cache`, so
/// every new store (every test suite's) compiled the chunker again. Now it
/// is per user ($TBLOB_CACHE_DIR here), shared by every store, and nothing
/// of it lands in the store directory; `--no-cache` uses none.
#[test]
fn the_compile_cache_is_per_user_not_per_store() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("user-cache");
    let file = work.path().join("small.bin");
    std::fs::write(&file, data(10_000, 33)).unwrap();
    let put_with = |store: &Path, extra: &[&str], cache: &Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_tblob"))
            .arg("--store")
            .arg(store)
            .args(extra)
            .args(["put", file.to_str().unwrap()])
            .env_remove("TBLOB_STORE")
            .env("TBLOB_CACHE_DIR", cache)
            .output()
            .expect("tblob runs");
        ok(&output);
    };
    // Compiled entries only: wasmtime's cache worker also writes usage
    // statistics (`*.stats`) and cleanup markers (`.cleanup*`) on its own.
    let count = |dir: &Path| {
        walk(dir)
            .iter()
            .filter(|path| {
                let name = path.file_name().unwrap().to_string_lossy();
                !name.ends_with(".stats") && !name.starts_with('.')
            })
            .count()
    };

    let first = work.path().join("first");
    put_with(&first, &[], &cache);
    assert!(!first.join("cache").exists());
    let cached = count(&cache);
    assert!(cached > 0, "nothing cached in {}", cache.display());
    // A second, new store reuses the entry: nothing new is compiled.
    let second = work.path().join("second");
    put_with(&second, &[], &cache);
    assert!(!second.join("cache").exists());
    assert_eq!(count(&cache), cached);

    let elsewhere = work.path().join("elsewhere");
    let third = work.path().join("third");
    put_with(&third, &["--no-cache"], &elsewhere);
    assert!(!elsewhere.exists());
    put_with(
        &third,
        &["--cache-dir", elsewhere.to_str().unwrap()],
        &cache,
    );
    assert_eq!(count(&elsewhere), cached);
    assert!(!third.join("cache").exists());
}

/// Every file under `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

// ---- Metadata commands: find, tag/untag, link/unlink, update, stats ----

/// A successful command's stdout, its stderr required empty.
fn quiet(store: &Path, args: &[&str]) -> String {
    let output = tblob(store, args);
    let stdout = ok(&output);
    assert!(
        output.stderr.is_empty(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `tblob find ARGS`: the ids printed, one per line, with nothing on stderr.
fn find(store: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["find"];
    all.extend_from_slice(args);
    let stdout = quiet(store, &all);
    stdout.lines().map(str::to_string).collect()
}

fn stat_json(store: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(&quiet(store, &["stat", id, "--json"])).unwrap()
}

/// A command that must fail with exit 2, one `tblob: ` line holding
/// `needle` on stderr, and nothing on stdout.
fn refused(store: &Path, args: &[&str], needle: &str) {
    let output = tblob(store, args);
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    assert!(output.stdout.is_empty(), "{args:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.starts_with("tblob: ") && stderr.contains(needle),
        "{args:?}: {stderr:?} should hold {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

/// Puts a small file of its own (distinct bytes per `seed`) with `extra`.
fn put_small(store: &Path, work: &Path, seed: u64, extra: &[&str]) -> String {
    let file = work.join(format!("f{seed}"));
    std::fs::write(&file, data(1000 + seed as usize, 900 + seed)).unwrap();
    put(store, &file, extra)
}

/// Goal: `tblob find` answers each kind of condition, and their AND, with
/// exactly the right ids in commit order, where values are prefixes of
/// each other or hold ':', '/' and '=' (the seed matched tags by string
/// prefix, so `run:4` also found `run:42`); the answers are the same in
/// a later process after `meta.log` was compacted.
/// Method: five artifacts whose tags, types, creators, names, custom pairs
/// and links overlap on purpose; every query's output compared with the
/// ids it must print, then `tblob gc` (which rewrites `meta.log`, half of
/// it dead) and every query again.
#[test]
fn find_answers_each_condition_with_exactly_the_right_ids() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let w = work.path();
    let a = put_small(
        s,
        w,
        1,
        &[
            "--tag",
            "run:4",
            "--tag",
            "ckpt",
            "--content-type",
            "application/onnx",
            "--creator",
            "alice",
            "--set",
            "epoch=1",
            "--name",
            "model-a.onnx",
        ],
    );
    let b = put_small(
        s,
        w,
        2,
        &[
            "--tag",
            "run:42",
            "--tag",
            "ckpt",
            "--content-type",
            "application/onnx",
            "--creator",
            "bob",
            "--set",
            "epoch=2",
            "--name",
            "model-b.onnx",
            "--link",
            &a,
        ],
    );
    let c = put_small(
        s,
        w,
        3,
        &[
            "--tag",
            "run",
            "--tag",
            "4",
            "--content-type",
            "text/plain",
            "--creator",
            "alice",
            "--set",
            "epoch:1=",
            "--name",
            "model",
            "--link",
            &a,
            "--link",
            &b,
        ],
    );
    let d = put_small(
        s,
        w,
        4,
        &[
            "--tag",
            "run:4/x",
            "--content-type",
            "application/onnx+zip",
            "--creator",
            "alice:x",
            "--set",
            "epoch=1=2",
            "--name",
            "model-a.onnx.bak",
        ],
    );
    let e = put_small(s, w, 5, &["--name", "other"]);
    // Junk whose records make `meta.log` mostly dead, so gc rewrites it.
    let junk = put_small(s, w, 6, &["--tag", "junk"]);
    for round in 0..12 {
        quiet(s, &["tag", &junk, &format!("round-{round}")]);
    }
    ok(&tblob(s, &["rm", &junk]));
    // A later change to `e` only: its modified time moves, its created
    // time does not.
    let e_meta: serde_json::Value =
        serde_json::from_str(&quiet(s, &["tag", &e, "late", "--json"])).unwrap();

    let all = [&a, &b, &c, &d, &e];
    let times: Vec<(u64, u64)> = all
        .iter()
        .map(|id| {
            let meta = stat_json(s, id);
            (
                meta["created_ms"].as_u64().unwrap(),
                meta["modified_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    let when = |keep: &dyn Fn(u64, u64) -> bool| -> Vec<String> {
        all.iter()
            .zip(&times)
            .filter(|(_, (created, modified))| keep(*created, *modified))
            .map(|(id, _)| id.to_string())
            .collect()
    };
    let c_created = times[2].0.to_string();
    let e_modified = e_meta["modified_ms"].as_u64().unwrap();
    let e_modified_text = e_modified.to_string();

    let ids = |list: &[&String]| -> Vec<String> { list.iter().map(|s| s.to_string()).collect() };
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (vec![], ids(&all)),
        (vec!["--tag", "run:4"], ids(&[&a])),
        (vec!["--tag", "run:42"], ids(&[&b])),
        (vec!["--tag", "run"], ids(&[&c])),
        (vec!["--tag", "4"], ids(&[&c])),
        (vec!["--tag", "run:4/x"], ids(&[&d])),
        (vec!["--tag", "ckpt"], ids(&[&a, &b])),
        (vec!["--tag", "ckpt", "--tag", "run:4"], ids(&[&a])),
        (vec!["--tag", "ckpt", "--tag", "nope"], ids(&[])),
        (vec!["--tag", "junk"], ids(&[])),
        (vec!["--type", "application/onnx"], ids(&[&a, &b])),
        (vec!["--type", "application/onnx+zip"], ids(&[&d])),
        (vec!["--type", "application"], ids(&[])),
        (vec!["--creator", "alice"], ids(&[&a, &c])),
        (vec!["--creator", "alice:x"], ids(&[&d])),
        (vec!["--name", "model"], ids(&[&c])),
        (vec!["--name", "model-a.onnx"], ids(&[&a])),
        (vec!["--name-prefix", "model"], ids(&[&a, &b, &c, &d])),
        (vec!["--name-prefix", "model-a.onnx"], ids(&[&a, &d])),
        (vec!["--name-prefix", "z"], ids(&[])),
        (vec!["--custom-key", "epoch"], ids(&[&a, &b, &d])),
        (vec!["--custom-key", "epoch:1"], ids(&[&c])),
        (vec!["--custom", "epoch=1"], ids(&[&a])),
        (vec!["--custom", "epoch=1=2"], ids(&[&d])),
        (vec!["--custom", "epoch:1="], ids(&[&c])),
        (vec!["--custom", "epoch="], ids(&[])),
        (vec!["--links-to", &a], ids(&[&b, &c])),
        (vec!["--links-to", &b], ids(&[&c])),
        (vec!["--links-to", &c], ids(&[])),
        (vec!["--linked-from", &c], ids(&[&a, &b])),
        (vec!["--linked-from", &b], ids(&[&a])),
        (vec!["--linked-from", &a], ids(&[])),
        (vec!["--links-to", &a, "--tag", "ckpt"], ids(&[&b])),
        (
            vec![
                "--links-to",
                &a,
                "--creator",
                "alice",
                "--custom-key",
                "epoch:1",
            ],
            ids(&[&c]),
        ),
        (vec!["--tag", "late"], ids(&[&e])),
        (
            vec!["--created-since", &c_created],
            when(&|cr, _| cr >= times[2].0),
        ),
        (
            vec!["--created-before", &c_created],
            when(&|cr, _| cr < times[2].0),
        ),
        (
            vec![
                "--created-since",
                &c_created,
                "--created-before",
                &c_created,
            ],
            ids(&[]),
        ),
        (
            vec!["--modified-since", &e_modified_text],
            when(&|_, m| m >= e_modified),
        ),
        (
            vec!["--modified-before", &e_modified_text],
            when(&|_, m| m < e_modified),
        ),
    ];
    // The modified range holds `e` and not the older artifacts (changed
    // only at their commit, before `e`'s tag).
    assert!(when(&|_, m| m >= e_modified).contains(&e));
    assert!(!when(&|_, m| m >= e_modified).contains(&a));
    let run_all = || -> Vec<Vec<String>> {
        cases
            .iter()
            .map(|(args, expected)| {
                let got = find(s, args);
                assert_eq!(&got, expected, "find {args:?}");
                got
            })
            .collect()
    };
    let before = run_all();

    let mut newest = ids(&all);
    newest.reverse();
    assert_eq!(find(s, &["--newest-first"]), newest);
    let json: serde_json::Value =
        serde_json::from_str(&quiet(s, &["find", "--tag", "ckpt", "--json"])).unwrap();
    assert_eq!(json, serde_json::json!({ "ids": [a, b], "next": null }));

    let gc = quiet(s, &["gc"]);
    assert!(
        number_after(&gc, "segment bytes and") > 0,
        "gc rewrote meta.log: {gc}"
    );
    assert_eq!(run_all(), before, "the same answers after compaction");
}

/// The next-page cursor `find --limit` reports: stderr's last line in text
/// mode, `next` in JSON (null on the last page).
fn find_page(store: &Path, args: &[&str]) -> (Vec<String>, Option<String>) {
    let mut all = vec!["find"];
    all.extend_from_slice(args);
    let output = tblob(store, &all);
    let stdout = ok(&output);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let next = match stderr.as_str() {
        "" => None,
        line => {
            let cursor = line
                .strip_prefix("tblob: next page: --after ")
                .and_then(|rest| rest.strip_suffix('\n'))
                .unwrap_or_else(|| panic!("{args:?}: stderr {line:?}"));
            Some(cursor.to_string())
        }
    };
    (stdout.lines().map(str::to_string).collect(), next)
}

/// Goal: paging `find` with `--limit` and `--after` covers every match
/// exactly once, in order, oldest first or newest first, in text and in
/// JSON, and the last page says there is no next one (also when it ends
/// exactly at the limit).
/// Method: seven artifacts, six of them tagged; every page size from 1 to
/// 8 followed to the end and concatenated.
#[test]
fn find_pages_cover_every_match_exactly_once() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let mut tagged = Vec::new();
    let mut everything = Vec::new();
    for seed in 0..7 {
        let extra: &[&str] = if seed == 3 { &[] } else { &["--tag", "p"] };
        let id = put_small(s, work.path(), seed, extra);
        if seed != 3 {
            tagged.push(id.clone());
        }
        everything.push(id);
    }
    for (conditions, expected) in [(vec![], &everything), (vec!["--tag", "p"], &tagged)] {
        for newest_first in [false, true] {
            let mut expected = expected.clone();
            if newest_first {
                expected.reverse();
            }
            for limit in 1..=8usize {
                let limit_text = limit.to_string();
                let mut base = conditions.clone();
                base.extend(["--limit", &limit_text]);
                if newest_first {
                    base.push("--newest-first");
                }
                let mut seen = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let mut args: Vec<String> = base.iter().map(|a| a.to_string()).collect();
                    if let Some(after) = &after {
                        args.extend(["--after".to_string(), after.clone()]);
                    }
                    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                    let (page, next) = find_page(s, &argv);
                    assert!(page.len() <= limit, "{args:?}");
                    seen.extend(page.clone());
                    match next {
                        Some(next) => {
                            assert_eq!(page.len(), limit, "{args:?}: only full pages go on");
                            assert_eq!(page.last(), Some(&next), "{args:?}");
                            after = Some(next);
                        }
                        None => break,
                    }
                    assert!(seen.len() <= expected.len(), "{args:?}: pages repeat");
                }
                assert_eq!(seen, expected, "{base:?}");
            }
        }
    }
    // JSON: the same pages, the cursor in `next`.
    let page = |after: Option<&str>| -> serde_json::Value {
        let mut args = vec!["find", "--tag", "p", "--limit", "3", "--json"];
        if let Some(after) = after {
            args.extend(["--after", after]);
        }
        serde_json::from_str(&quiet(s, &args)).unwrap()
    };
    let first = page(None);
    assert_eq!(first["ids"], serde_json::json!(tagged[..3]));
    assert_eq!(first["next"], tagged[2]);
    let second = page(Some(&tagged[2]));
    assert_eq!(second["ids"], serde_json::json!(tagged[3..]));
    assert_eq!(
        second["next"],
        serde_json::Value::Null,
        "ends exactly at the limit"
    );
    // A cursor that was deleted since still continues after itself.
    ok(&tblob(s, &["rm", &tagged[2]]));
    assert_eq!(find(s, &["--tag", "p", "--after", &tagged[2]]), tagged[3..]);
}

/// Goal: `tag`, `untag`, `link`, `unlink` and `update` each change what
/// they say and nothing else, print the new metadata in `stat`'s formats
/// (text and `--json`), treat tags and links as sets, and what they print
/// is what a later process reads.
/// Method: two artifacts changed step by step; after each step the printed
/// JSON is compared with the expected fields and with `stat --json`.
#[test]
fn tag_untag_link_unlink_update_print_the_new_metadata() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let a = put_small(s, work.path(), 1, &["--name", "a.bin", "--set", "keep=1"]);
    let b = put_small(s, work.path(), 2, &[]);
    let original = stat_json(s, &a);
    let mut expected = original.clone();
    let mut last_modified = original["modified_ms"].as_u64().unwrap();
    let mut step = |args: &[&str], change: &dyn Fn(&mut serde_json::Value)| {
        let mut all = args.to_vec();
        all.push("--json");
        let printed: serde_json::Value = serde_json::from_str(&quiet(s, &all)).unwrap();
        change(&mut expected);
        let modified = printed["modified_ms"].as_u64().unwrap();
        assert!(modified >= last_modified, "{args:?}");
        last_modified = modified;
        expected["modified_ms"] = printed["modified_ms"].clone();
        assert_eq!(printed, expected, "{args:?}");
        assert_eq!(
            stat_json(s, &a),
            printed,
            "{args:?}: a new process reads it"
        );
    };
    step(&["tag", &a, "t1", "run:4"], &|m| {
        m["tags"] = serde_json::json!(["t1", "run:4"])
    });
    step(&["tag", &a, "t1", "run:42"], &|m| {
        m["tags"] = serde_json::json!(["t1", "run:4", "run:42"])
    });
    step(&["untag", &a, "run:4", "never-there"], &|m| {
        m["tags"] = serde_json::json!(["t1", "run:42"])
    });
    step(&["link", &a, &b], &|m| m["links"] = serde_json::json!([b]));
    step(&["link", &a, &b], &|m| m["links"] = serde_json::json!([b]));
    step(&["unlink", &a, &b], &|m| m["links"] = serde_json::json!([]));
    step(
        &[
            "update",
            &a,
            "--name",
            "new name.bin",
            "--content-type",
            "x/y",
            "--set",
            "k=v",
            "--set",
            "eq=a=b",
        ],
        &|m| {
            m["filename"] = "new name.bin".into();
            m["content_type"] = "x/y".into();
            m["custom"] = serde_json::json!([["keep", "1"], ["k", "v"], ["eq", "a=b"]]);
        },
    );
    step(
        &[
            "update",
            &a,
            "--no-name",
            "--unset",
            "k",
            "--set",
            "eq=c",
            "--set",
            "k2=",
        ],
        &|m| {
            m["filename"] = serde_json::Value::Null;
            m["custom"] = serde_json::json!([["keep", "1"], ["eq", "c"], ["k2", ""]]);
        },
    );
    step(
        &["update", &a, "--no-content-type", "--unset", "nope"],
        &|m| m["content_type"] = serde_json::Value::Null,
    );
    // Text output is `stat`'s.
    let printed = quiet(s, &["tag", &a, "t1"]);
    assert_eq!(printed, quiet(s, &["stat", &a]));
    assert!(
        printed.contains("\ntags:         t1, run:42\n"),
        "{printed}"
    );
    // What was not touched stays.
    let now = stat_json(s, &a);
    for field in [
        "id",
        "size",
        "digest",
        "chunk_count",
        "created_ms",
        "creator",
    ] {
        assert_eq!(now[field], original[field], "{field}");
    }
    assert_eq!(stat_json(s, &b)["links"], serde_json::json!([]));
}

/// Goal: every metadata command refuses an unknown id, a malformed id and
/// bad arguments with exit 2 and one stderr line, changes nothing, and a
/// metadata change on a path without a store creates none.
/// Method: each bad invocation in turn, then the artifact's metadata and
/// the store's file list compared with before.
#[test]
fn metadata_commands_refuse_unknown_ids_and_bad_arguments() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let a = put_small(s, work.path(), 1, &["--tag", "t"]);
    let before = stat_json(s, &a);
    let unknown = "0123456789abcdef0123456789abcdef";
    let not_found = format!("not found: artifact {unknown}");
    for args in [
        vec!["tag", unknown, "t"],
        vec!["untag", unknown, "t"],
        vec!["link", unknown, &a],
        vec!["unlink", unknown, &a],
        vec!["link", unknown, "entity", "--external"],
        vec!["update", unknown, "--name", "n"],
        vec!["find", "--after", unknown],
    ] {
        refused(s, &args, &not_found);
    }
    refused(s, &["link", &a, unknown], "which does not exist");
    for (args, needle) in [
        (
            vec!["tag", "nope", "t"],
            "invalid argument: artifact id \"nope\"",
        ),
        (
            vec!["link", &a, "nope"],
            "invalid argument: TARGET \"nope\"",
        ),
        (vec!["tag", &a, ""], "invalid argument"),
        (vec!["update", &a, "--set", "novalue"], "expected KEY=VALUE"),
        (vec!["update", &a, "--set", "=v"], "expected KEY=VALUE"),
        (
            vec!["update", &a, "--set", "k=1", "--set", "k=2"],
            "given twice",
        ),
        (vec!["update", &a], "nothing to change"),
        (
            vec!["update", &a, "--name", "x", "--no-name"],
            "invalid argument",
        ),
        (vec!["tag", &a], "invalid argument"),
        (vec!["find", "--limit", "0"], "invalid argument"),
        (vec!["find", "--limit", "65537"], "invalid argument"),
        (vec!["find", "--limit", "x"], "invalid argument"),
        (
            vec!["find", "--links-to", "nope"],
            "invalid argument: --links-to",
        ),
        (
            vec!["find", "--linked-from", "nope"],
            "invalid argument: --linked-from",
        ),
        (vec!["find", "--after", "nope"], "invalid argument: --after"),
        (
            vec!["find", "--name", "x", "--name-prefix", "y"],
            "invalid argument",
        ),
        (vec!["find", "--custom", "bad"], "expected KEY=VALUE"),
        (vec!["find", "--created-since", "-1"], "invalid argument"),
        (vec!["find", "--bogus"], "invalid argument"),
        (vec!["find", "--tag", ""], "invalid argument"),
    ] {
        refused(s, &args, needle);
    }
    assert_eq!(stat_json(s, &a), before, "nothing changed");

    // A put with bad metadata creates nothing; neither does a change on a
    // path that holds no store.
    let fresh = work.path().join("fresh");
    let file = work.path().join("f1");
    for (args, needle) in [
        (
            vec!["put", file.to_str().unwrap(), "--set", "k"],
            "expected KEY=VALUE",
        ),
        (
            vec![
                "put",
                file.to_str().unwrap(),
                "--set",
                "k=1",
                "--set",
                "k=2",
            ],
            "given twice",
        ),
        (
            vec!["put", file.to_str().unwrap(), "--external", ""],
            "external link",
        ),
        (
            vec!["put", file.to_str().unwrap(), "--link", "nope"],
            "--link",
        ),
        (vec!["tag", unknown, "t"], "no store at"),
        (vec!["update", unknown, "--name", "n"], "no store at"),
    ] {
        refused(&fresh, &args, needle);
        assert!(!fresh.exists(), "{args:?} created a store");
    }
}

/// Goal: `put --creator` and `--set` record what they say (beside the
/// default creator `tblob VERSION` without it).
#[test]
fn put_records_creator_and_custom_pairs() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let a = put_small(
        s,
        work.path(),
        1,
        &[
            "--creator",
            "trainer:7",
            "--set",
            "run=42",
            "--set",
            "eq=a=b",
            "--set",
            "empty=",
        ],
    );
    let meta = stat_json(s, &a);
    assert_eq!(meta["creator"], "trainer:7");
    assert_eq!(
        meta["custom"],
        serde_json::json!([["run", "42"], ["eq", "a=b"], ["empty", ""]])
    );
    let b = put_small(s, work.path(), 2, &[]);
    assert!(stat_json(s, &b)["creator"]
        .as_str()
        .unwrap()
        .starts_with("tblob "));
    assert_eq!(find(s, &["--creator", "trainer:7"]), [a.as_str()]);
    assert_eq!(find(s, &["--custom", "eq=a=b"]), [a]);
}

/// Goal: links to external entity ids (`put --external`, `link
/// --external`) are stored, shown by `stat`, removed by `unlink
/// --external`, and found by `find --external` exactly, with ':' and '/'
/// in the ids and ids that are prefixes of each other.
#[test]
fn external_links_are_stored_and_found_exactly() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let a = put_small(
        s,
        work.path(),
        1,
        &["--external", "run:4", "--external", "user/alice"],
    );
    let b = put_small(s, work.path(), 2, &["--external", "run:42"]);
    assert_eq!(
        stat_json(s, &a)["external_links"],
        serde_json::json!(["run:4", "user/alice"])
    );
    assert!(quiet(s, &["stat", &a]).contains("\nexternal:     run:4, user/alice\n"));
    assert_eq!(find(s, &["--external", "run:4"]), [a.as_str()]);
    assert_eq!(find(s, &["--external", "run:42"]), [b.as_str()]);
    assert_eq!(find(s, &["--external", "run"]), Vec::<String>::new());
    let printed: serde_json::Value = serde_json::from_str(&quiet(
        s,
        &["link", &b, "run:4", "run:4", "--external", "--json"],
    ))
    .unwrap();
    assert_eq!(
        printed["external_links"],
        serde_json::json!(["run:42", "run:4"])
    );
    assert_eq!(find(s, &["--external", "run:4"]), [a.clone(), b.clone()]);
    quiet(s, &["unlink", &a, "run:4", "--external"]);
    assert_eq!(find(s, &["--external", "run:4"]), [b.as_str()]);
    assert_eq!(find(s, &["--external", "user/alice"]), [a]);
}

/// Regression (tensor_blob 0.4.0, re-created by the seed): tags and links
/// were lists, so `put --tag t --tag t` stored `["t", "t"]` and a link
/// given twice was kept twice, and `find --tag t` could print the id
/// twice. Tags and links are sets: each is stored once, in first-given
/// order.
#[test]
fn a_tag_or_link_given_twice_is_stored_once() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let a = put_small(s, work.path(), 1, &[]);
    let b = put_small(
        s,
        work.path(),
        2,
        &[
            "--tag", "t", "--tag", "u", "--tag", "t", "--link", &a, "--link", &a,
        ],
    );
    let meta = stat_json(s, &b);
    assert_eq!(meta["tags"], serde_json::json!(["t", "u"]));
    assert_eq!(meta["links"], serde_json::json!([a]));
    assert_eq!(find(s, &["--tag", "t"]), [b.as_str()]);
    assert_eq!(find(s, &["--links-to", &a]), [b]);
}

/// Goal: `tblob stats` prints the store's totals (the same as `stat`
/// without an id), in text and JSON, and they follow puts and deletes.
#[test]
fn stats_prints_the_store_totals() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let file = work.path().join("f");
    let bytes = data(200_000, 5);
    std::fs::write(&file, &bytes).unwrap();
    let a = put(s, &file, &["--chunking", "fixed", "--chunk-size", "65536"]);
    let _b = put(s, &file, &["--chunking", "fixed", "--chunk-size", "65536"]);
    let stats: serde_json::Value = serde_json::from_str(&quiet(s, &["stats", "--json"])).unwrap();
    assert_eq!(stats["artifacts"], 2);
    assert_eq!(stats["chunks"], 4);
    assert_eq!(stats["logical_bytes"], 2 * bytes.len() as u64);
    assert_eq!(stats["physical_bytes"], bytes.len() as u64);
    assert_eq!(stats["dedup_ratio"], 2.0);
    assert_eq!(stats["garbage_chunks"], 0);
    assert!(stats["disk_bytes"].as_u64().unwrap() > bytes.len() as u64);
    // Live and dead record bytes and the segment headers make up the disk.
    let field = |name: &str| stats[name].as_u64().unwrap();
    assert!(field("live_bytes") > bytes.len() as u64);
    assert!(field("segments") >= 1);
    assert_eq!(
        field("live_bytes")
            + field("dead_bytes")
            + field("segments") * tensor_blob_host::store::format::SEGMENT_HEADER_BYTES,
        field("disk_bytes"),
        "{stats}"
    );
    let text = quiet(s, &["stats"]);
    assert_eq!(text, quiet(s, &["stat"]));
    assert_eq!(number_after(&text, "artifacts:"), 2, "{text}");
    assert_eq!(number_after(&text, "physical bytes:"), bytes.len() as u64);
    assert!(text.contains("dedup ratio:    2.000"), "{text}");
    for field in [
        "live bytes:",
        "dead bytes:",
        "disk bytes:",
        "garbage:",
        "segments:",
    ] {
        number_after(&text, field);
    }
    // Deleting one copy frees nothing: the other shares every chunk.
    ok(&tblob(s, &["rm", &a]));
    let stats: serde_json::Value = serde_json::from_str(&quiet(s, &["stats", "--json"])).unwrap();
    assert_eq!(stats["artifacts"], 1);
    assert_eq!(stats["chunks"], 4);
    assert_eq!(stats["garbage_chunks"], 0);
    assert_eq!(stats["logical_bytes"], bytes.len() as u64);
}

/// Goal: compressible files are stored compressed unless `put
/// --no-compress` says not to, `stats` tells stored from physical bytes,
/// and both come back byte for byte. Method: text-like and random files,
/// each put once with and once without compression (different contents,
/// so no dedup), stats in JSON and text, gets compared.
#[test]
fn put_compresses_unless_told_not_to_and_stats_tell_stored_bytes() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let text = |seed: u64| -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let words = ["alpha ", "beta ", "gamma ", "delta\n", "epsilon "];
        let mut out = Vec::new();
        while out.len() < 300_000 {
            out.extend_from_slice(words[rng.usize(..words.len())].as_bytes());
        }
        out.truncate(300_000);
        out
    };
    let stored = |s: &Path| -> (u64, u64) {
        let stats: serde_json::Value =
            serde_json::from_str(&quiet(s, &["stats", "--json"])).unwrap();
        (
            stats["stored_bytes"].as_u64().unwrap(),
            stats["physical_bytes"].as_u64().unwrap(),
        )
    };
    let files: Vec<(PathBuf, Vec<u8>)> = [text(1), text(2), data(100_000, 3)]
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let file = work.path().join(format!("f{i}"));
            std::fs::write(&file, &bytes).unwrap();
            (file, bytes)
        })
        .collect();
    let compressed = put(s, &files[0].0, &[]);
    let (after_one, physical) = stored(s);
    assert_eq!(physical, files[0].1.len() as u64);
    assert!(
        after_one < physical / 3,
        "text stored compressed: {after_one} of {physical}"
    );
    let plain = put(s, &files[1].0, &["--no-compress"]);
    let (after_two, _) = stored(s);
    assert_eq!(
        after_two,
        after_one + files[1].1.len() as u64,
        "stored as it is"
    );
    let random = put(s, &files[2].0, &[]);
    let (after_three, physical) = stored(s);
    assert_eq!(
        after_three,
        after_two + 100_000,
        "random bytes do not shrink"
    );
    let text_out = quiet(s, &["stats"]);
    assert_eq!(
        number_after(&text_out, "stored bytes:"),
        after_three,
        "{text_out}"
    );
    assert!(text_out.contains("compression ratio"), "{text_out}");
    assert_eq!(physical, 700_000);
    for (id, (_, bytes)) in [compressed, plain, random].iter().zip(&files) {
        let out = work.path().join(format!("{id}.out"));
        ok(&tblob(s, &["get", id, "-o", out.to_str().unwrap()]));
        assert_eq!(&std::fs::read(&out).unwrap(), bytes);
    }
    ok(&tblob(s, &["verify"]));
}

/// Goal: `find` and `stats` are reading commands: they run while another
/// process writes the tenant and see what it committed, while `tag`,
/// `link` and `update` are writes, refused while the tenant is in use.
/// Method: this test process holds the tenant open for writing (a
/// `Runtime`), changes an artifact through `Store::update`, and runs the
/// commands meanwhile.
#[test]
fn find_and_stats_run_beside_a_writer_and_changes_wait_for_it() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let s = store.path();
    let a = put_small(s, work.path(), 1, &["--tag", "before"]);
    let runtime = crate::common::open_runtime(s, tensor_blob_host::store::StoreOptions::default());
    let held = runtime.tenant_store("default").unwrap();
    assert_eq!(find(s, &["--tag", "before"]), [a.as_str()]);
    held.update(
        &a.parse().unwrap(),
        tensor_blob_host::store::MetadataUpdate {
            add_tags: vec!["during".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(find(s, &["--tag", "during"]), [a.as_str()]);
    let stats: serde_json::Value = serde_json::from_str(&quiet(s, &["stats", "--json"])).unwrap();
    assert_eq!(stats["artifacts"], 1);
    let in_use = "tenant default is in use by another process";
    refused(s, &["tag", &a, "t"], in_use);
    refused(s, &["untag", &a, "before"], in_use);
    refused(s, &["link", &a, "e", "--external"], in_use);
    refused(s, &["update", &a, "--name", "n"], in_use);
    drop(held);
    drop(runtime);
    let printed: serde_json::Value =
        serde_json::from_str(&quiet(s, &["tag", &a, "after", "--json"])).unwrap();
    assert_eq!(
        printed["tags"],
        serde_json::json!(["before", "during", "after"])
    );
}
