//! Tests of the name index (`wasi:blobstore` containers and object names):
//! it replays at open, survives `meta.log` compaction and a read-only
//! open, a replacing commit is atomic at every crash point of its record,
//! and every dropped binding releases its artifact.

use std::collections::BTreeMap;

use super::{chunk_refs, data, get, open, unsynced};
use crate::store::backend::cap::CapDir;
use crate::store::*;

/// Puts `bytes` (fixed 4 KiB chunks) as object `name` of `container`.
fn put_bound(
    store: &Store,
    container: &str,
    name: &str,
    bytes: &[u8],
) -> Result<ArtifactId, StoreError> {
    let mut upload = store.begin_upload();
    let chunks = chunk_refs(bytes, 4096);
    for chunk in bytes.chunks(4096) {
        upload.put_chunk(&Hash::of(chunk), chunk)?;
    }
    upload.bind_to(Some((container.to_string(), name.to_string())));
    upload.commit(
        &chunks,
        bytes.len() as u64,
        Some(&Hash::of(bytes)),
        NewMetadata::default(),
    )
}

/// Every (container, name) -> bytes of the store, plus empty containers.
fn image(store: &Store, containers: &[&str]) -> BTreeMap<(String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    for container in containers {
        if !store.container_exists(container).unwrap() {
            continue;
        }
        out.insert((container.to_string(), String::new()), Vec::new());
        for name in store.list_objects(container, None, 1000).unwrap() {
            let id = store.object_info(container, &name).unwrap().id;
            out.insert(
                (container.to_string(), name.clone()),
                get(store, &id).unwrap(),
            );
        }
    }
    out
}

const CONTAINERS: &[&str] = &["a", "b", "c", "gone"];

/// A store with some of everything: replaced, moved, copied, deleted and
/// cleared names, in three containers and one deleted one.
fn populate(store: &Store) {
    for container in CONTAINERS {
        store.create_container(container).unwrap();
    }
    for round in 0..6u64 {
        put_bound(store, "a", "x", &data(9000, round)).unwrap();
    }
    put_bound(store, "a", "y", &data(5000, 10)).unwrap();
    put_bound(store, "b", "z", &data(100, 11)).unwrap();
    put_bound(store, "gone", "w", &data(100, 12)).unwrap();
    put_bound(store, "c", "v", &data(100, 13)).unwrap();
    store.move_object(("a", "y"), ("b", "y2")).unwrap();
    store.copy_object(("a", "x"), ("b", "xc")).unwrap();
    store.copy_object(("b", "z"), ("b", "xc")).unwrap();
    store.copy_object(("a", "x"), ("c", "x")).unwrap();
    store.delete_objects("c", &["x".to_string()]).unwrap();
    store.delete_container("gone").unwrap();
    store.clear_container("c").unwrap();
}

#[test]
fn the_name_index_replays_compacts_and_opens_read_only_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    populate(&store);
    let before = image(&store, CONTAINERS);
    assert_eq!(
        before.keys().cloned().collect::<Vec<_>>(),
        [
            ("a", ""),
            ("a", "x"),
            ("b", ""),
            ("b", "xc"),
            ("b", "y2"),
            ("b", "z"),
            ("c", "")
        ]
        .map(|(c, n)| (c.to_string(), n.to_string()))
    );
    assert_eq!(before[&("a".into(), "x".into())], data(9000, 5));
    assert_eq!(before[&("b".into(), "xc".into())], data(100, 11));
    // One artifact per name, none unbound.
    assert_eq!(store.stats().artifacts, 4);
    drop(store);

    let store = open(&dir, StoreOptions::default());
    assert!(store.recovery_report().problems.is_empty());
    assert_eq!(image(&store, CONTAINERS), before, "replayed at open");
    let created = store.container_info("a").unwrap().created_ms;

    // Compaction keeps every container and binding.
    let log_before = std::fs::metadata(dir.path().join("meta.log"))
        .unwrap()
        .len();
    let report = store
        .gc_pass(&GcPolicy {
            meta_log_bytes_min: 0,
            ..GcPolicy::full()
        })
        .unwrap();
    assert!(report.meta_bytes_reclaimed > 0, "{report:?}");
    let log_after = std::fs::metadata(dir.path().join("meta.log"))
        .unwrap()
        .len();
    assert!(log_after < log_before);
    assert_eq!(image(&store, CONTAINERS), before, "after compaction");
    drop(store);
    let store = open(&dir, StoreOptions::default());
    assert!(store.recovery_report().problems.is_empty());
    assert_eq!(image(&store, CONTAINERS), before, "compacted log replayed");
    assert_eq!(store.container_info("a").unwrap().created_ms, created);
    assert_eq!(store.stats().artifacts, 4);

    // A read-only open beside the writer sees the same.
    let root =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let reader = Store::open_read_only(
        std::sync::Arc::new(CapDir::new(root)),
        StoreOptions::default(),
    )
    .unwrap();
    assert_eq!(image(&reader, CONTAINERS), before, "read-only open");
    assert!(matches!(
        reader.create_container("new"),
        Err(StoreError::ReadOnly(_))
    ));
}

#[test]
fn a_replacing_commit_cut_anywhere_leaves_the_old_object_or_the_new_never_neither() {
    // Goal: commit + bind + release of the old artifact are one record, so
    // a crash leaves exactly one of the two objects and no unbound
    // artifact. Method: cut `meta.log` at every offset inside the
    // replacing record (what a torn append leaves) and reopen.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    store.create_container("c").unwrap();
    let old = data(10_000, 1);
    let new = data(12_000, 2);
    put_bound(&store, "c", "o", &old).unwrap();
    let meta_log = dir.path().join("meta.log");
    let len_before = std::fs::metadata(&meta_log).unwrap().len() as usize;
    put_bound(&store, "c", "o", &new).unwrap();
    drop(store);
    let full = std::fs::read(&meta_log).unwrap();
    for cut in len_before..=full.len() {
        std::fs::write(&meta_log, &full[..cut]).unwrap();
        let store = open(&dir, unsynced());
        let info = store.object_info("c", "o").unwrap();
        let want = if cut == full.len() { &new } else { &old };
        assert_eq!(&get(&store, &info.id).unwrap(), want, "cut at {cut}");
        assert_eq!(store.stats().artifacts, 1, "cut at {cut}: one artifact");
        assert_eq!(store.list_objects("c", None, 10).unwrap(), ["o"]);
        drop(store);
    }
}

#[test]
fn every_dropped_binding_releases_its_artifact_and_delete_by_id_drops_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    store.create_container("c").unwrap();
    let first = put_bound(&store, "c", "o", &data(8192, 1)).unwrap();
    let second = put_bound(&store, "c", "o", &data(8192, 2)).unwrap();
    assert!(
        !store.exists(&first).unwrap(),
        "replace deletes the old artifact"
    );
    let (garbage_chunks, _) = (store.stats().garbage_chunks, ());
    assert_eq!(garbage_chunks, 2);
    // Deleting by id (tensor:blob/blobs.delete) drops the name with it.
    store.delete(&second).unwrap();
    assert!(!store.has_object("c", "o").unwrap());
    let third = put_bound(&store, "c", "p", &data(100, 3)).unwrap();
    store.move_object(("c", "p"), ("c", "q")).unwrap();
    assert_eq!(store.object_info("c", "q").unwrap().id, third);
    store.delete_container("c").unwrap();
    assert!(!store.exists(&third).unwrap());
    assert_eq!(store.stats().artifacts, 0);
    drop(store);
    let store = open(&dir, unsynced());
    assert_eq!(store.stats().artifacts, 0);
    assert!(!store.container_exists("c").unwrap());
}

#[test]
fn a_bound_commit_needs_its_container_and_names_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    assert!(matches!(
        put_bound(&store, "nope", "o", b"bytes"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.stats().artifacts, 0, "nothing stored");
    store.create_container("c").unwrap();
    assert!(matches!(
        store.create_container("c"),
        Err(StoreError::InvalidArgument(_))
    ));
    let long = "n".repeat(format::OBJECT_NAME_BYTES_MAX + 1);
    assert!(matches!(
        store.has_object("c", &long),
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.create_container(""),
        Err(StoreError::InvalidArgument(_))
    ));
    let many: Vec<String> = (0..=DELETE_OBJECTS_MAX).map(|i| i.to_string()).collect();
    assert!(matches!(
        store.delete_objects("c", &many),
        Err(StoreError::InvalidArgument(_))
    ));
}

#[test]
fn a_hold_keeps_a_deleted_artifact_readable_until_it_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    store.create_container("c").unwrap();
    let bytes = data(20_000, 4);
    let id = put_bound(&store, "c", "o", &bytes).unwrap();
    let hold = store.hold(&id).unwrap();
    store.delete_objects("c", &["o".to_string()]).unwrap();
    assert!(!store.exists(&id).unwrap());
    store.gc().unwrap();
    assert_eq!(get(&store, &id).unwrap(), bytes, "held bytes read on");
    assert_eq!(store.stats().garbage_chunks, 0);
    drop(hold);
    assert!(store.manifest(&id, 0, 1).is_err());
    assert_eq!(store.stats().garbage_chunks, 5);
}

#[test]
fn on_the_simulated_disk_a_replace_is_old_or_new_after_any_failed_sync_and_power_cut() {
    // Goal: an acknowledged replace survives a power cut; an unacknowledged
    // one leaves the old object, whole; never neither, never an unbound
    // artifact. Method: on the simulated disk (Sync durability), fail the
    // n-th sync of a replacing put (n = 1 .. past the last one the replace
    // makes), cut the power, reopen from the image, compare.
    use crate::store::backend::sim::{Fault, FaultOp, SimDisk};
    let old = data(40_000, 1);
    let new = data(30_000, 2);
    let mut acknowledged_once = false;
    let mut refused_once = false;
    for seed in 0..8u64 {
        for nth in 1..=4u64 {
            let disk = SimDisk::new(seed * 16 + nth);
            let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
            store.create_container("c").unwrap();
            put_bound(&store, "c", "o", &old).unwrap();
            disk.fail_op(FaultOp::Sync, nth, Fault::Eio);
            let acknowledged = put_bound(&store, "c", "o", &new).is_ok();
            acknowledged_once |= acknowledged;
            refused_once |= !acknowledged;
            let image = disk.crash();
            drop(store);
            let store = Store::open_backend(image.root(), StoreOptions::default()).unwrap();
            let context = format!("seed {seed}, sync {nth} failed, acknowledged {acknowledged}");
            let problems: Vec<_> = store
                .recovery_report()
                .problems
                .into_iter()
                .filter(|p| !p.kind.is_crash_residue())
                .collect();
            assert!(problems.is_empty(), "{context}: {problems:?}");
            let info = store.object_info("c", "o").expect(&context);
            let bytes = get(&store, &info.id).expect(&context);
            if acknowledged {
                assert_eq!(bytes, new, "{context}");
            } else {
                assert!(bytes == old || bytes == new, "{context}: neither");
            }
            assert_eq!(store.stats().artifacts, 1, "{context}: one artifact");
        }
    }
    assert!(acknowledged_once, "some run got past every injected fault");
    assert!(refused_once, "some injected fault failed the replace");
}

#[test]
fn name_records_count_against_the_bytes_quota_but_releases_always_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    store.create_container("c").unwrap();
    put_bound(&store, "c", "o", &data(5000, 1)).unwrap();
    let used = store.usage().bytes;
    store
        .set_quota(Quota {
            bytes_max: Some(used),
            ..Quota::default()
        })
        .unwrap();
    match store.create_container("d") {
        Err(StoreError::QuotaExceeded(message)) => {
            assert!(message.starts_with("bytes"), "{message}")
        }
        other => panic!("expected a bytes quota error, got {other:?}"),
    }
    assert!(!store.container_exists("d").unwrap());
    store.delete_objects("c", &["o".to_string()]).unwrap();
    store.delete_container("c").unwrap();
    assert_eq!(store.stats().artifacts, 0);
}

/// Goal: a `meta.log` compaction reads the catalog a page at a time (so
/// its memory is bounded by a page, not the catalog) and still writes
/// every live artifact, update and binding, whatever page they fall on.
/// Method: more than two pages of artifacts (every third deleted, every
/// fifth updated), then the names of `populate` bound past the first page;
/// metadata, names and bytes compared before, after the compaction, and
/// after a reopen of the compacted log.
#[test]
fn a_compaction_over_many_snapshot_pages_keeps_every_artifact_and_binding() {
    use crate::store::gc::SNAPSHOT_PAGE;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    let count = 3 * SNAPSHOT_PAGE as u64 + 300;
    let mut ids = Vec::new();
    for i in 0..count {
        let bytes = data(64, 5000 + i);
        let digest = Hash::of(&bytes);
        let mut upload = store.begin_upload();
        upload.put_chunk(&digest, &bytes).unwrap();
        let chunk = ChunkRef {
            digest,
            len: bytes.len() as u32,
        };
        let meta = NewMetadata {
            tags: vec![format!("t{}", i % 7)],
            ..NewMetadata::default()
        };
        ids.push(upload.commit(&[chunk], 64, Some(&digest), meta).unwrap());
    }
    for (i, id) in ids.iter().enumerate() {
        if i % 3 == 0 {
            store.delete(id).unwrap();
        } else if i % 5 == 0 {
            store
                .update(
                    id,
                    MetadataUpdate {
                        add_tags: vec!["updated".into()],
                        ..MetadataUpdate::default()
                    },
                )
                .unwrap();
        }
    }
    populate(&store);
    let everything = |store: &Store| {
        let metadata: Vec<Metadata> = store.ids().map(|id| store.metadata(&id).unwrap()).collect();
        (metadata, image(store, CONTAINERS))
    };
    let before = everything(&store);
    assert!(before.0.len() > 2 * SNAPSHOT_PAGE, "{}", before.0.len());
    let report = store
        .gc_pass(&GcPolicy {
            meta_log_bytes_min: 0,
            meta_log_dead_ratio_min: 0.0,
            ..GcPolicy::full()
        })
        .unwrap();
    assert!(report.meta_bytes_reclaimed > 0, "{report:?}");
    assert_eq!(everything(&store), before, "after the compaction");
    drop(store);
    let store = open(&dir, unsynced());
    assert!(store.recovery_report().problems.is_empty());
    assert_eq!(everything(&store), before, "the compacted log replayed");
}
