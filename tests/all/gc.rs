//! Goal: background GC, as an embedder gets it from `Runtime`: it frees
//! space with no manual call, stops with its runtime, and readers of an
//! artifact deleted and collected under them get the right bytes or a
//! clean not-found.
//! Method: a runtime over a temporary store with small segments, real
//! chunker instances, and waits on the task's own status (a condition
//! variable signalled after each pass) with deadlines; no sleeps.

use std::time::Duration;
use tensor_blob_host::runtime::metadata;

use tensor_blob_host::runtime::{BlobError, WitError};
use tensor_blob_host::store::{Durability, GcPolicy, StoreOptions};

use crate::common::{chunker_component, data, fixed};

/// How long a test waits for the background task before failing.
const DEADLINE: Duration = Duration::from_secs(60);

fn small_segments() -> StoreOptions {
    StoreOptions {
        durability: Durability::None,
        segment_bytes_max: 1 << 20,
        ..StoreOptions::default()
    }
}

fn runtime_with_gc(dir: &std::path::Path, policy: GcPolicy) -> tensor_blob_host::runtime::Runtime {
    let root = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority()).unwrap();
    tensor_blob_host::runtime::Runtime::with_chunker(
        chunker_component().clone(),
        root,
        small_segments(),
    )
    .with_gc(Some(policy))
}

fn quick() -> GcPolicy {
    GcPolicy {
        interval: Duration::from_millis(5),
        pass_copy_bytes_max: 512 << 10,
        ..GcPolicy::default()
    }
}

#[test]
fn background_gc_reclaims_space_with_no_manual_call_and_stops_with_its_runtime() {
    // Goal: with nobody calling `gc`, deleted data's disk space comes back
    // (within 1.5x of live bytes), everything live still reads, and the
    // task stops (and lets go of the tenant) when the runtime is dropped.
    // Method: 12 MiB in 1 MiB segments, 3/4 deleted; wait on the task's
    // status until the store's disk bytes are within 1.5x of its live
    // bytes; read back the rest; drop the runtime and reopen the store
    // root at once (the tenant lock must be free).
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime_with_gc(dir.path(), quick());
    let mut chunker = runtime.chunker("default").unwrap();
    let contents: Vec<Vec<u8>> = (0..12).map(|i| data(1 << 20, 40 + i)).collect();
    let ids: Vec<String> = contents
        .iter()
        .map(|c| chunker.put(c, &fixed(64 << 10)).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        if i % 4 != 0 {
            metadata::delete(chunker.store(), id).unwrap();
        }
    }
    let store = runtime.tenant_store("default").unwrap();
    let maintenance = runtime.maintenance().expect("on");
    let status = maintenance
        .wait_until(DEADLINE, |_| {
            let stats = store.stats();
            stats.disk_bytes * 2 <= stats.physical_bytes * 3
        })
        .unwrap_or_else(|| panic!("no reclaim in time: {:?}", store.stats()));
    assert!(
        status.passes > 0 && status.segments_removed > 0,
        "{status:?}"
    );
    assert!(status.errors.is_empty(), "{status:?}");
    for (i, id) in ids.iter().enumerate().step_by(4) {
        assert_eq!(chunker.get(id).unwrap(), contents[i]);
    }
    assert!(store.verify_all().damaged.is_empty());
    store.check_gc_accounting().unwrap();
    drop((store, chunker));
    drop(runtime);
    let runtime = crate::common::open_runtime(dir.path(), small_segments());
    let mut chunker = runtime.chunker("default").unwrap();
    assert_eq!(chunker.get(&ids[0]).unwrap(), contents[0]);
}

#[test]
fn shutdown_stops_the_task_and_status_says_so() {
    // Goal: an explicit shutdown ends the task; nothing runs after it.
    // Method: wait for a pass, shut down, and check the status reports
    // the task stopped and its pass count no longer moves.
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime_with_gc(dir.path(), quick());
    runtime.tenant_store("default").unwrap();
    let maintenance = runtime.maintenance().unwrap();
    maintenance
        .wait_until(DEADLINE, |status| status.passes >= 2)
        .expect("passes run");
    maintenance.shutdown();
    let stopped = maintenance
        .wait_until(DEADLINE, |status| status.stopped)
        .expect("stopped");
    assert_eq!(maintenance.status().passes, stopped.passes);
    assert!(maintenance
        .wait_until(Duration::from_millis(50), |status| status.passes
            > stopped.passes)
        .is_none());
}

#[test]
fn a_reader_of_an_artifact_deleted_and_collected_gets_right_bytes_or_not_found() {
    // Goal: the documented promise for readers (WIT `reader`): while its
    // artifact is deleted and collected, an open reader returns the right
    // bytes or a clean `not-found`, never other bytes, never another
    // error. Method: a reader on a 4 MiB artifact (its own sealed
    // segments) reads its first chunk; the artifact is deleted and
    // background GC waited on until most of the artifact's chunks are
    // gone; the
    // reader then reads on to the end, each read compared with the
    // original bytes at its offset unless it is not-found.
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime_with_gc(dir.path(), quick());
    let mut chunker = runtime.chunker("default").unwrap();
    let doomed = data(4 << 20, 7);
    let id = chunker.put(&doomed, &fixed(64 << 10)).unwrap();
    // Later data, so the doomed artifact's segments are sealed.
    let keep = data(2 << 20, 8);
    let keep_id = chunker.put(&keep, &fixed(64 << 10)).unwrap();
    let reader = chunker.open_reader(&id, 0).unwrap();
    let first = chunker.reader_read(&reader, 64 << 10).unwrap();
    assert_eq!(first, doomed[..64 << 10]);
    let mut other = runtime.chunker("default").unwrap();
    metadata::delete(other.store(), &id).unwrap();
    let store = runtime.tenant_store("default").unwrap();
    let status = runtime
        .maintenance()
        .unwrap()
        // Its last few chunks share a segment with `keep`, not worth
        // compacting: those stay pending.
        .wait_until(DEADLINE, |_| store.stats().garbage_chunks < 16)
        .unwrap_or_else(|| panic!("not collected: {:?}", store.stats()));
    assert!(status.chunks_removed >= 48, "{status:?}");
    let mut offset = first.len();
    let mut not_found = 0;
    while offset < doomed.len() {
        match chunker.reader_read(&reader, 64 << 10) {
            Ok(bytes) => {
                assert!(!bytes.is_empty(), "no early end");
                assert_eq!(bytes, doomed[offset..offset + bytes.len()], "at {offset}");
                offset += bytes.len();
            }
            Err(BlobError::Blob(WitError::NotFound(_))) => {
                not_found += 1;
                break;
            }
            Err(e) => panic!("a reader of a collected artifact failed with {e}"),
        }
    }
    assert!(
        not_found == 1 || offset == doomed.len(),
        "either not-found or all the right bytes"
    );
    eprintln!(
        "reader after collection: {offset} bytes read, then not-found: {}",
        not_found == 1
    );
    assert_eq!(other.get(&keep_id).unwrap(), keep);
}
