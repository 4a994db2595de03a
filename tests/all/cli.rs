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
