//! Goal: a plugin is as untrusted as the chunker. Whatever it calls, with
//! whatever arguments, it gets a typed error or a bounded answer; it never
//! sees or touches another tenant's artifacts; an upload it abandons never
//! becomes visible; exhausting its memory ends only its own run; and no
//! argument, however large, reaches the chunker unchecked.
//! Method: run the real hostile plugin (guest/components/hostile-plugin)
//! with `tblob run`, in real processes, and read the outcome it prints for
//! each step (`<step>: ok ...` or the WIT error case).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cli::{ok, tblob};
use crate::common::data;

/// The hostile plugin written to `dir`, for `tblob run`.
fn plugin_file(dir: &Path) -> PathBuf {
    let path = dir.join("hostile-plugin.wasm");
    std::fs::write(&path, tensor_blob_artifacts::HOSTILE_PLUGIN_WASM).unwrap();
    path
}

/// Runs the plugin as `tenant`; returns each step's outcome.
fn attack(store: &Path, plugin: &Path, tenant: &str, args: &[&str]) -> BTreeMap<String, String> {
    let mut argv = vec!["--tenant", tenant, "run", plugin.to_str().unwrap()];
    argv.extend_from_slice(args);
    ok(&tblob(store, &argv))
        .lines()
        .map(|line| {
            let (step, outcome) = line.split_once(": ").expect("step: outcome");
            (step.to_string(), outcome.to_string())
        })
        .collect()
}

fn assert_outcomes(outcomes: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
    for (step, want) in expected {
        let got = outcomes
            .get(*step)
            .unwrap_or_else(|| panic!("step {step} missing: {outcomes:?}"));
        assert!(got.starts_with(want), "{step}: got {got:?}, want {want:?}");
    }
    assert_eq!(outcomes.len(), expected.len(), "{outcomes:?}");
}

fn stat_json(store: &Path, tenant: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&tblob(store, &["--tenant", tenant, "stat", "--json"]))).unwrap()
}

#[test]
fn a_plugin_can_neither_see_nor_touch_another_tenants_artifacts() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugin = plugin_file(work.path());
    let secret = data(300_000, 81);
    let file = work.path().join("secret.bin");
    std::fs::write(&file, &secret).unwrap();
    let put = ok(&tblob(
        store.path(),
        &[
            "--tenant",
            "bob",
            "put",
            file.to_str().unwrap(),
            "--tag",
            "secret",
        ],
    ));
    let id = put.trim_end();

    let outcomes = attack(store.path(), &plugin, "mallory", &["foreign", id]);
    assert_outcomes(
        &outcomes,
        &[
            ("exists", "ok false"),
            ("get", "not-found"),
            ("stat", "not-found"),
            ("open-reader", "not-found"),
            ("update", "not-found"),
            ("delete", "not-found"),
            ("put-linking-it", "invalid-argument"),
            ("list", "ok 0 ids"),
            ("list-after-it", "not-found"),
            ("find-by-tag", "ok 0 ids"),
            ("query-links-to-it", "ok 0 ids"),
            ("query-linked-from-it", "ok 0 ids"),
            ("query-tag", "ok 0 ids"),
            ("query-after-it", "not-found"),
            ("query-after-it-newest", "not-found"),
            ("stats", "ok 0 artifacts"),
        ],
    );

    // Bob's artifact is as he left it.
    assert_eq!(
        tblob(store.path(), &["--tenant", "bob", "get", id]).stdout,
        secret
    );
    let meta: serde_json::Value = serde_json::from_str(&ok(&tblob(
        store.path(),
        &["--tenant", "bob", "stat", id, "--json"],
    )))
    .unwrap();
    assert_eq!(meta["filename"], "secret.bin");
    assert_eq!(stat_json(store.path(), "mallory")["artifacts"], 0);
}

#[test]
fn every_oversized_or_invalid_call_gets_a_typed_error() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugin = plugin_file(work.path());
    let outcomes = attack(store.path(), &plugin, "default", &["limits"]);
    assert_outcomes(
        &outcomes,
        &[
            ("open-writers", "invalid-argument after 16"),
            ("open-after-release", "ok writer"),
            ("write-over-16-mib", "invalid-argument"),
            ("put-over-inline-max", "too-large"),
            ("write", "ok"),
            ("finish", "ok "),
            ("finish-again", "closed"),
            ("write-after-finish", "closed"),
            ("write-before-abort", "ok"),
            ("finish-after-abort", "closed"),
            ("read-u32-max", "invalid-argument"),
            ("seek-past-end", "invalid-argument"),
            ("open-reader-past-end", "invalid-argument"),
            ("chunking-fixed-0", "invalid-argument"),
            ("chunking-fixed-4-gib", "invalid-argument"),
            ("chunking-cdc-min-over-max", "invalid-argument"),
            ("filename-1-mib", "invalid-argument"),
            ("tags-100000", "invalid-argument"),
            ("not-an-id", "invalid-argument"),
            ("list-limit-65536", "ok 1 ids"),
            ("list-limit-max", "invalid-argument"),
            ("list-after-unknown", "not-found"),
            ("find-by-empty-tag", "invalid-argument"),
            ("stats", "ok 1 artifacts"),
        ],
    );
    // The one artifact finished is whole; nothing else was stored.
    let id = outcomes["finish"].strip_prefix("ok ").unwrap();
    assert_eq!(tblob(store.path(), &["get", id]).stdout, b"hello");
    assert_eq!(ok(&tblob(store.path(), &["ls"])).lines().count(), 1);
}

/// Regression: the host forwarded a plugin's inline data, option strings
/// and lists, ids and tags to the chunker unchecked. The chunker checks
/// them too, but an argument larger than its free memory trapped it while
/// being copied in, so the plugin got a trap instead of the WIT's typed
/// error. And 16 writers buffering 16 MiB chunks could fill the chunker's
/// memory (512 MiB then) by themselves. The plugin first fills every
/// writer it may hold, then sends 100 MiB arguments (one call may copy at
/// most 128 MiB into the host: more traps in wasmtime, before the host).
#[test]
fn arguments_larger_than_the_chunkers_memory_get_typed_errors() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugin = plugin_file(work.path());
    let bytes = 100usize << 20;
    const _: () =
        assert!(100 << 20 < tensor_blob_host::runtime::limits::PLUGIN_CALL_BYTES_MAX - (1 << 20));
    let outcomes = attack(
        store.path(),
        &plugin,
        "default",
        &["huge", &bytes.to_string()],
    );
    assert_outcomes(
        &outcomes,
        &[
            ("put-small", "ok "),
            ("fill-writers", "ok 16 writers"),
            ("put-huge-filename", "invalid-argument"),
            ("create-writer-huge-filename", "invalid-argument"),
            ("put-huge-custom-value", "invalid-argument"),
            ("update-huge-filename", "invalid-argument"),
            ("find-by-huge-tag", "invalid-argument"),
            ("get-huge-id", "invalid-argument"),
            ("list-after-huge-id", "invalid-argument"),
            ("put-huge-tag-list", "invalid-argument"),
            ("put-huge-data", "too-large"),
            ("get-small", "ok small"),
            ("stats", "ok 1 artifacts"),
        ],
    );
    // The store is intact: the one small artifact, unchanged, and nothing else.
    let id = outcomes["put-small"].strip_prefix("ok ").unwrap();
    assert_eq!(tblob(store.path(), &["get", id]).stdout, b"small");
    let meta: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", id, "--json"]))).unwrap();
    assert!(meta["filename"].is_null(), "{meta}");
    assert_eq!(ok(&tblob(store.path(), &["ls"])).lines().count(), 1);
    assert_eq!(tblob(store.path(), &["verify"]).status.code(), Some(0));
    ok(&tblob(store.path(), &["gc"]));
    assert_eq!(tblob(store.path(), &["get", id]).stdout, b"small");
}

/// Goal: `query` is bounded like every other call: each bound the WIT
/// gives it is a typed error one step past it, 32 conditions with every
/// string at its bound are answered, and a loop of the largest queries
/// over a store of many artifacts ends with bounded pages and leaves the
/// store as it was. Method: seed 5000 artifacts in process (more than the
/// host collects for a filename-prefix or time-range condition, so those
/// walk the store), then run
/// `query-flood` with `tblob run` and compare what it printed and the
/// store (ids, totals, each artifact's metadata) before and after.
#[test]
fn a_query_flood_gets_typed_errors_and_bounded_answers_and_changes_nothing() {
    const ARTIFACTS: usize = 5000;
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugin = plugin_file(work.path());
    {
        let runtime = crate::common::open_runtime(
            store.path(),
            tensor_blob_host::store::StoreOptions {
                durability: tensor_blob_host::store::Durability::None,
                ..tensor_blob_host::store::StoreOptions::default()
            },
        );
        let mut chunker = runtime.chunker("default").unwrap();
        for n in 0..ARTIFACTS {
            let options = tensor_blob_host::runtime::PutOptions {
                filename: Some(format!("f{n}")),
                tags: vec![format!("t{}", n % 7)],
                ..crate::common::options()
            };
            chunker
                .put(format!("seed {n}").as_bytes(), &options)
                .unwrap();
        }
    }
    let ls = |store: &Path| ok(&tblob(store, &["ls", "--json"]));
    let before = (ls(store.path()), stat_json(store.path(), "default"));
    assert_eq!(before.1["artifacts"], ARTIFACTS);

    let outcomes = attack(store.path(), &plugin, "default", &["query-flood", "200"]);
    assert_outcomes(
        &outcomes,
        &[
            ("query-33-conditions", "invalid-argument"),
            ("query-32-conditions-at-bounds", "ok 0 ids"),
            ("query-tag-over", "invalid-argument"),
            ("query-external-over", "invalid-argument"),
            ("query-content-type-over", "invalid-argument"),
            ("query-creator-over", "invalid-argument"),
            ("query-filename-over", "invalid-argument"),
            ("query-filename-prefix-over", "invalid-argument"),
            ("query-custom-key-over", "invalid-argument"),
            ("query-custom-pair-key-over", "invalid-argument"),
            ("query-custom-value-over", "invalid-argument"),
            ("query-empty-tag", "invalid-argument"),
            ("query-empty-external", "invalid-argument"),
            ("query-empty-filename", "invalid-argument"),
            ("query-empty-custom-key", "invalid-argument"),
            ("query-links-to-malformed", "invalid-argument"),
            ("query-limit-65537", "invalid-argument"),
            ("query-limit-max", "invalid-argument"),
            ("query-limit-0", "ok 0 ids, next "),
            ("query-after-malformed", "invalid-argument"),
            ("query-after-unknown", "not-found"),
            ("query-flood", "ok 200 queries, at most 5000 ids"),
            ("stats", "ok 5000 artifacts"),
        ],
    );
    assert_eq!(outcomes["query-flood"], "ok 200 queries, at most 5000 ids");
    // Nothing the queries did changed the store.
    let after = (ls(store.path()), stat_json(store.path(), "default"));
    assert_eq!(after, before);
    assert_eq!(tblob(store.path(), &["verify"]).status.code(), Some(0));
}

#[test]
fn an_abandoned_upload_never_becomes_visible_and_gc_reclaims_it() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugin = plugin_file(work.path());
    // A write makes the (empty) tenant: reading commands create nothing.
    ok(&tblob(store.path(), &["gc"]));
    let empty = stat_json(store.path(), "default");
    let outcomes = attack(store.path(), &plugin, "default", &["abandon", "5000000"]);
    assert_eq!(
        outcomes["abandon"],
        "wrote 5000000 bytes, exiting without finish"
    );
    let after = stat_json(store.path(), "default");
    assert_eq!(after["artifacts"], 0);
    assert_eq!(after["chunks"], 0);
    assert!(after["disk_bytes"].as_u64() > empty["disk_bytes"].as_u64());
    assert_eq!(ok(&tblob(store.path(), &["ls"])), "");
    ok(&tblob(store.path(), &["gc"]));
    assert_eq!(
        stat_json(store.path(), "default")["disk_bytes"],
        empty["disk_bytes"]
    );
}

#[test]
fn a_memory_bomb_ends_only_its_own_run() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugin = plugin_file(work.path());
    let bytes = data(200_000, 82);
    let file = work.path().join("kept.bin");
    std::fs::write(&file, &bytes).unwrap();
    let id = ok(&tblob(store.path(), &["put", file.to_str().unwrap()]));
    let id = id.trim_end();

    let bomb = tblob(
        store.path(),
        &["run", plugin.to_str().unwrap(), "memory-bomb"],
    );
    assert_eq!(bomb.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&bomb.stdout);
    let held = stdout.lines().count();
    assert!((8..=16).contains(&held), "stopped near 1 GiB: {stdout}");
    let stderr = String::from_utf8_lossy(&bomb.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tblob:")).collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    assert_eq!(
        ours[0], "tblob: the plugin exceeded its memory limit of 1024 MiB",
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace:"), "{stderr}");

    assert_eq!(tblob(store.path(), &["get", id]).stdout, bytes);
    assert_eq!(tblob(store.path(), &["verify"]).status.code(), Some(0));
    let outcomes = attack(
        store.path(),
        &plugin,
        "default",
        &["foreign", "0".repeat(32).as_str()],
    );
    assert_eq!(outcomes["stats"], "ok 1 artifacts");
}

#[test]
fn a_plugin_that_spins_is_stopped_at_its_time_limit() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugin = plugin_file(work.path());
    let started = std::time::Instant::now();
    let spin = tblob(
        store.path(),
        &[
            "run",
            "--time-limit",
            "0.5",
            plugin.to_str().unwrap(),
            "spin",
        ],
    );
    let elapsed = started.elapsed();
    assert_eq!(spin.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&spin.stdout), "spin: started\n");
    let stderr = String::from_utf8_lossy(&spin.stderr);
    assert_eq!(
        stderr.trim_end(),
        "tblob: the plugin ran out of time (limit 0.500 s)"
    );
    // Stopped, not run to some other end: well under a minute even on a
    // loaded machine (the limit is wall-clock, checked every 10 ms).
    assert!(elapsed.as_secs() < 60, "{elapsed:?}");

    // A well-behaved run under a limit is unaffected.
    let outcomes = {
        let out = ok(&tblob(
            store.path(),
            &[
                "run",
                "--time-limit",
                "60",
                plugin.to_str().unwrap(),
                "foreign",
                "0".repeat(32).as_str(),
            ],
        ));
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert!(
        outcomes.contains(&"stats: ok 0 artifacts".to_string()),
        "{outcomes:?}"
    );
    let bad = tblob(
        store.path(),
        &["run", "--time-limit", "-1", plugin.to_str().unwrap()],
    );
    assert_eq!(bad.status.code(), Some(2));
}

/// Regression: every trap said "(its memory is limited to 1024 MiB)",
/// whatever its cause and whatever the limit was. Now the message names
/// the limit the plugin ran into, with the limit in force (here set by
/// `--memory-limit`), and a plain trap is only the trap.
#[test]
fn a_trap_names_its_cause_and_the_limit_in_force() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugin = plugin_file(work.path());
    let plugin = plugin.to_str().unwrap();

    let bomb = tblob(
        store.path(),
        &["run", "--memory-limit", "256M", plugin, "memory-bomb"],
    );
    assert_eq!(bomb.status.code(), Some(2));
    // 64 MiB blocks: at most three fit beside the plugin's own memory.
    let held = String::from_utf8_lossy(&bomb.stdout).lines().count();
    assert!(held <= 3, "held {held} blocks under a 256 MiB limit");
    let stderr = String::from_utf8_lossy(&bomb.stderr);
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("tblob:"))
            .collect::<Vec<_>>(),
        ["tblob: the plugin exceeded its memory limit of 256 MiB"],
        "{stderr}"
    );

    let panic = tblob(store.path(), &["run", plugin, "panic"]);
    assert_eq!(panic.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&panic.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tblob:")).collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    assert!(
        ours[0].starts_with("tblob: the plugin trapped: "),
        "{stderr}"
    );
    assert!(!ours[0].contains("memory"), "{stderr}");
    assert!(stderr.contains("panics on purpose"), "{stderr}");

    for bad in ["0", "none", "lots", "-1"] {
        let refused = tblob(
            store.path(),
            &["run", "--memory-limit", bad, plugin, "panic"],
        );
        assert_eq!(refused.status.code(), Some(2), "--memory-limit {bad}");
        assert!(refused.stdout.is_empty());
    }
}

/// Goal: a tenant policy's time limit stops a plugin even when `tblob run`
/// is given none (the engine always has epoch interruption for plugins).
#[test]
fn a_tenant_time_limit_applies_without_a_run_flag() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let plugin = plugin_file(work.path());
    {
        let runtime = crate::common::open_runtime(
            store.path(),
            tensor_blob_host::store::StoreOptions::default(),
        );
        let mut policy = runtime.tenant_policy("default").unwrap();
        policy.plugin_time_limit = Some(std::time::Duration::from_millis(300));
        runtime.set_tenant_policy("default", policy).unwrap();
    }
    let spin = tblob(store.path(), &["run", plugin.to_str().unwrap(), "spin"]);
    assert_eq!(spin.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&spin.stderr).trim_end(),
        "tblob: the plugin ran out of time (limit 0.300 s)"
    );
}
