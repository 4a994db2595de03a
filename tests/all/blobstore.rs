//! Goal: components written for `wasi:blobstore@0.2.0-draft` run
//! unmodified on the store: every function answers as upstream documents
//! (and as our world doc decides where upstream is silent), names are
//! durable, replacing a name releases the old artifact, a copy shares
//! chunks, damage is an error string, and hostile input never traps.
//! Method: the test component guest/components/blobstore-client, built
//! from the pristine upstream WIT alone, run in-process through `Plugin`
//! and as a real process through `tblob run`; its exit code says whether
//! every check it makes held, and the store is inspected afterwards.

use std::path::{Path, PathBuf};

use tensor_blob_host::runtime::plugin::{Plugin, PluginOptions};

use crate::cli::{ok, tblob};
use crate::common::TestStore;

/// Runs the client in-process as tenant `default` with `args`.
fn run(store: &TestStore, args: &[&str]) -> i32 {
    let plugin = Plugin::new(&store.runtime, tensor_blob_artifacts::BLOBSTORE_CLIENT_WASM)
        .expect("the upstream client links");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut argv = vec!["blobstore-client".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let options = PluginOptions {
        args: argv,
        ..PluginOptions::default()
    };
    tokio.block_on(plugin.run("default", &options)).unwrap()
}

fn client_file(dir: &Path) -> PathBuf {
    let path = dir.join("blobstore-client.wasm");
    std::fs::write(&path, tensor_blob_artifacts::BLOBSTORE_CLIENT_WASM).unwrap();
    path
}

#[test]
fn the_upstream_client_passes_every_check_in_process() {
    let store = TestStore::new();
    assert_eq!(
        run(&store, &["all"]),
        0,
        "see the client's FAILED line above"
    );
    let tenant = store.runtime.tenant_store("default").unwrap();
    let report = tenant.verify_all();
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    // What `all` leaves: c1, emptied by `clear`; c2 deleted.
    assert!(tenant.container_exists("c1").unwrap());
    assert!(!tenant.container_exists("c2").unwrap());
    assert_eq!(tenant.list_objects("c1", None, 100).unwrap().len(), 0);
    // Every object went with its name: no artifact is left unbound.
    assert_eq!(tenant.stats().artifacts, 0);
}

#[test]
fn hostile_inputs_get_error_strings_never_traps() {
    let store = TestStore::unsynced();
    assert_eq!(
        run(&store, &["hostile"]),
        0,
        "see the client's FAILED line above"
    );
    let tenant = store.runtime.tenant_store("default").unwrap();
    assert_eq!(tenant.list_objects("h", None, 10).unwrap(), ["o"]);
    assert_eq!(tenant.stats().artifacts, 1);
}

#[test]
fn the_upstream_client_runs_as_a_real_process_through_tblob_run() {
    let store = tempfile::tempdir().unwrap();
    let client = client_file(store.path());
    let client = client.to_str().unwrap();
    assert_eq!(
        ok(&tblob(store.path(), &["run", client, "all"])),
        "ok all\n"
    );
    assert_eq!(
        ok(&tblob(store.path(), &["run", client, "hostile"])),
        "ok hostile\n"
    );
    // Names survive the process: a second run reads what the first wrote.
    ok(&tblob(
        store.path(),
        &["run", client, "put", "k", "obj", "1000000", "5"],
    ));
    assert_eq!(
        ok(&tblob(
            store.path(),
            &["run", client, "check", "k", "obj", "1000000", "5"]
        )),
        "ok 1000000\n"
    );
    assert_eq!(tblob(store.path(), &["verify"]).status.code(), Some(0));
}

#[test]
fn names_survive_a_restart_between_write_and_read() {
    let mut store = TestStore::new();
    assert_eq!(run(&store, &["put", "models", "w.bin", "3000000", "9"]), 0);
    assert_eq!(run(&store, &["put", "models", "x.bin", "10", "1"]), 0);
    store.reopen();
    assert_eq!(
        run(&store, &["check", "models", "w.bin", "3000000", "9"]),
        0
    );
    assert_eq!(run(&store, &["check", "models", "x.bin", "10", "1"]), 0);
    let tenant = store.runtime.tenant_store("default").unwrap();
    assert_eq!(
        tenant.list_objects("models", None, 10).unwrap(),
        ["w.bin", "x.bin"]
    );
}

#[test]
fn replacing_a_name_releases_the_old_artifact_for_gc() {
    // Small segments, so the old artifact's chunks fill sealed segments
    // that GC compacts away.
    let store = TestStore::with_options(tensor_blob_host::store::StoreOptions {
        segment_bytes_max: 1 << 20,
        ..Default::default()
    });
    assert_eq!(run(&store, &["put", "c", "o", "4000000", "1"]), 0);
    let tenant = store.runtime.tenant_store("default").unwrap();
    let old = tenant.object_info("c", "o").unwrap().id;
    let before = tenant.stats();
    assert_eq!(run(&store, &["put", "c", "o", "4000000", "2"]), 0);
    let new = tenant.object_info("c", "o").unwrap().id;
    assert_ne!(old, new);
    assert!(
        !tenant.exists(&old).unwrap(),
        "the replaced artifact is deleted"
    );
    let after = tenant.stats();
    assert_eq!(after.artifacts, 1);
    assert_eq!(after.logical_bytes, 4_000_000);
    assert!(after.garbage_bytes >= before.physical_bytes * 9 / 10);
    tenant.gc().unwrap();
    let collected = tenant.stats();
    assert_eq!(collected.garbage_bytes, 0);
    assert!(collected.disk_bytes < before.disk_bytes + after.physical_bytes / 2);
    assert_eq!(run(&store, &["check", "c", "o", "4000000", "2"]), 0);
}

#[test]
fn a_copy_shares_every_chunk_and_writes_no_bytes() {
    let store = TestStore::new();
    assert_eq!(run(&store, &["put", "c", "o", "5000000", "3"]), 0);
    let tenant = store.runtime.tenant_store("default").unwrap();
    let before = tenant.stats();
    assert_eq!(run(&store, &["copy", "c", "o", "c", "o2"]), 0);
    let after = tenant.stats();
    assert_eq!(after.artifacts, 2);
    assert_eq!(after.logical_bytes, 2 * before.logical_bytes);
    assert_eq!(after.physical_bytes, before.physical_bytes, "no new chunk");
    assert_eq!(after.chunks, before.chunks);
    assert_eq!(run(&store, &["check", "c", "o2", "5000000", "3"]), 0);
    // Deleting the source keeps the copy's chunks.
    tenant.delete_objects("c", &["o".to_string()]).unwrap();
    tenant.gc().unwrap();
    assert_eq!(run(&store, &["check", "c", "o2", "5000000", "3"]), 0);
    assert_eq!(tenant.stats().physical_bytes, before.physical_bytes);
}

#[test]
fn a_damaged_chunk_is_an_error_string_never_wrong_bytes() {
    let store = tempfile::tempdir().unwrap();
    let client = client_file(store.path());
    let client = client.to_str().unwrap();
    ok(&tblob(
        store.path(),
        &["run", client, "put", "c", "o", "2000000", "4"],
    ));
    let segments = store.path().join("tenants/default/segments");
    let segment = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    // The middle of the file is inside some chunk's payload.
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let cat = tblob(store.path(), &["run", client, "cat", "c", "o"]);
    let stdout = String::from_utf8_lossy(&cat.stdout);
    assert!(!cat.status.success(), "{stdout}");
    assert!(stdout.starts_with("error: "), "{stdout}");
    assert!(stdout.contains("corrupted"), "{stdout}");
    assert!(!stdout.contains("ok"), "{stdout}");
}

#[test]
fn a_component_importing_both_interfaces_sees_one_store() {
    let store = tempfile::tempdir().unwrap();
    let plugin = store.path().join("dual-plugin.wasm");
    std::fs::write(&plugin, tensor_blob_artifacts::DUAL_PLUGIN_WASM).unwrap();
    assert_eq!(
        ok(&tblob(store.path(), &["run", plugin.to_str().unwrap()])),
        "ok dual\n"
    );
    assert_eq!(ok(&tblob(store.path(), &["ls"])), "");
}
