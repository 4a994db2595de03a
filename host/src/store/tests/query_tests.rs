//! Tests of [`Store::query`]: conditions, order and paging.

use std::sync::Arc;

use cap_std::fs::Dir;

use super::{data, open, put_with, unsynced};
use crate::store::*;

fn meta(tags: &[&str], filename: &str) -> NewMetadata {
    NewMetadata {
        filename: Some(filename.into()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..NewMetadata::default()
    }
}

#[test]
fn conditions_combine_with_and_and_pages_follow_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let a = put_with(
        &store,
        &data(100, 1),
        64,
        meta(&["run:42", "ckpt"], "a.bin"),
    )
    .unwrap();
    let b = put_with(&store, &data(100, 2), 64, meta(&["run:42"], "b.bin")).unwrap();
    let c = put_with(
        &store,
        &data(100, 3),
        64,
        meta(&["run:4", "ckpt"], "ab.bin"),
    )
    .unwrap();
    let run = |conditions: Vec<Condition>, order, after, limit| {
        store
            .query(&Query {
                conditions,
                order,
                after,
                limit,
            })
            .unwrap()
    };
    let tag = |t: &str| Condition::Tag(t.into());
    assert_eq!(
        run(vec![tag("run:42")], Order::OldestFirst, None, 10).ids,
        [a, b]
    );
    assert_eq!(
        run(vec![tag("run:4")], Order::OldestFirst, None, 10).ids,
        [c]
    );
    assert_eq!(
        run(
            vec![tag("ckpt"), tag("run:42")],
            Order::OldestFirst,
            None,
            10
        )
        .ids,
        [a]
    );
    let prefix = Condition::FilenamePrefix("a".into());
    assert_eq!(run(vec![prefix], Order::NewestFirst, None, 10).ids, [c, a]);
    let first = run(vec![], Order::NewestFirst, None, 2);
    assert_eq!((first.ids.as_slice(), first.next), (&[c, b][..], Some(b)));
    let rest = run(vec![], Order::NewestFirst, first.next, 2);
    assert_eq!((rest.ids.as_slice(), rest.next), (&[a][..], None));
    let unknown = ArtifactId::generate();
    let error = store
        .query(&Query {
            after: Some(unknown),
            limit: 1,
            ..Query::default()
        })
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound(_)), "{error}");
    let error = store
        .query(&Query {
            conditions: vec![tag("")],
            limit: 1,
            ..Query::default()
        })
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidArgument(_)), "{error}");
}

#[test]
fn incremental_updates_add_and_remove_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let parent = put_with(&store, &data(100, 1), 64, meta(&[], "p")).unwrap();
    let id = put_with(&store, &data(100, 2), 64, meta(&["a", "b"], "c")).unwrap();
    let updated = store
        .update(
            &id,
            MetadataUpdate {
                remove_tags: vec!["a".into(), "absent".into()],
                add_tags: vec!["b".into(), "c".into(), "c".into()],
                add_links: vec![parent, parent],
                set_custom: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(updated.tags, ["b", "c"]);
    assert_eq!(updated.links, [parent]);
    assert_eq!(updated.custom, [("k".to_string(), "2".to_string())]);
    let missing = ArtifactId::generate();
    let error = store
        .update(
            &id,
            MetadataUpdate {
                add_links: vec![missing],
                ..MetadataUpdate::default()
            },
        )
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidArgument(_)), "{error}");
    let updated = store
        .update(
            &id,
            MetadataUpdate {
                remove_links: vec![parent],
                unset_custom: vec!["k".into()],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    assert!(updated.links.is_empty() && updated.custom.is_empty());
}

// ---------------------------------------------------------------------------
// External links on disk: meta.log format version 2, and the upgrade of a
// version-1 log.
// ---------------------------------------------------------------------------

/// Runs a GC pass that compacts `meta.log` whenever it holds any dead
/// record at all.
fn compact_meta_log(store: &Store) {
    store
        .gc_pass(&GcPolicy {
            meta_log_dead_ratio_min: 0.0,
            ..GcPolicy::full()
        })
        .unwrap();
}

/// Every live artifact's metadata, in commit order.
fn all_metadata(store: &Store) -> Vec<Metadata> {
    store.ids().map(|id| store.metadata(&id).unwrap()).collect()
}

/// The version-1 record layout, written here byte by byte rather than by
/// `format.rs` (which no longer writes it for new logs), so the upgrade is
/// tested against the old layout itself: mutable fields end with the
/// custom pairs, no external links.
mod v1 {
    use crate::store::format::{MetaRecord, MutableFields};

    fn string(out: &mut Vec<u8>, value: &str) {
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }

    fn option(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                string(out, value);
            }
        }
    }

    fn fields(out: &mut Vec<u8>, fields: &MutableFields) {
        assert!(fields.external_links.is_empty(), "version 1 has none");
        option(out, fields.filename.as_deref());
        option(out, fields.content_type.as_deref());
        out.extend_from_slice(&(fields.tags.len() as u32).to_le_bytes());
        for tag in &fields.tags {
            string(out, tag);
        }
        out.extend_from_slice(&(fields.links.len() as u32).to_le_bytes());
        for link in &fields.links {
            out.extend_from_slice(link);
        }
        out.extend_from_slice(&(fields.custom.len() as u32).to_le_bytes());
        for (key, value) in &fields.custom {
            string(out, key);
            string(out, value);
        }
    }

    /// One whole version-1 record: header (magic, length, crc, kind), payload.
    pub fn record(record: &MetaRecord) -> Vec<u8> {
        let mut payload = Vec::new();
        let kind = match record {
            MetaRecord::Commit {
                id,
                size,
                digest,
                created_ms,
                chunks,
                creator,
                fields: f,
                bound: None,
            } => {
                payload.extend_from_slice(id);
                payload.extend_from_slice(&size.to_le_bytes());
                payload.extend_from_slice(digest);
                payload.extend_from_slice(&created_ms.to_le_bytes());
                payload.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
                for (digest, len) in chunks {
                    payload.extend_from_slice(digest);
                    payload.extend_from_slice(&len.to_le_bytes());
                }
                option(&mut payload, creator.as_deref());
                fields(&mut payload, f);
                1
            }
            MetaRecord::Delete { id } => {
                payload.extend_from_slice(id);
                2
            }
            MetaRecord::Update {
                id,
                modified_ms,
                fields: f,
            } => {
                payload.extend_from_slice(id);
                payload.extend_from_slice(&modified_ms.to_le_bytes());
                fields(&mut payload, f);
                3
            }
            MetaRecord::Checkpoint => 4,
            other => panic!("not used in these tests: {other:?}"),
        };
        let len = (payload.len() as u32).to_le_bytes();
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&len);
        hasher.update(&[kind]);
        hasher.update(&payload);
        let mut out = vec![0xFF, 0xB1, 0xFE, 0x4D];
        out.extend_from_slice(&len);
        out.extend_from_slice(&hasher.finalize().to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&payload);
        out
    }

    /// A whole version-1 `meta.log` holding `records`.
    pub fn log(records: &[MetaRecord]) -> Vec<u8> {
        let mut out = b"TBML".to_vec();
        out.extend_from_slice(&[1, 0, 0, 0]);
        for r in records {
            out.extend_from_slice(&record(r));
        }
        out
    }
}

/// The records of a current-version `meta.log`.
fn records_of(log: &[u8]) -> Vec<format::MetaRecord> {
    assert_eq!(
        format::decode_meta_header_version(&log[..8]),
        Ok(format::META_VERSION)
    );
    let mut records = Vec::new();
    let mut at = 8;
    while at < log.len() {
        let header = format::decode_meta_header_record(&log[at..at + 13]).unwrap();
        let end = at + 13 + header.payload_len as usize;
        records.push(format::decode_meta_payload(header.kind, &log[at + 13..end]).unwrap());
        at = end;
    }
    records
}

/// A store whose `meta.log` is version 1, as today's code wrote it before
/// external links: puts (tags, a link, custom pairs, a creator), an update
/// and a delete, then the log rewritten in the old layout. Returns what
/// the store held.
fn version_1_store(dir: &tempfile::TempDir) -> Vec<Metadata> {
    let store = open(dir, StoreOptions::default());
    let a = put_with(
        &store,
        &data(300, 1),
        64,
        NewMetadata {
            filename: Some("a.bin".into()),
            creator: Some("me".into()),
            tags: vec!["run:1".into(), "ckpt".into()],
            custom: vec![("k".into(), "v".into())],
            ..NewMetadata::default()
        },
    )
    .unwrap();
    let b = put_with(
        &store,
        &data(200, 2),
        64,
        NewMetadata {
            links: vec![a],
            ..NewMetadata::default()
        },
    )
    .unwrap();
    let c = put_with(&store, &data(100, 3), 64, meta(&["gone"], "c")).unwrap();
    store
        .update(
            &b,
            MetadataUpdate {
                add_tags: vec!["later".into()],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    store.delete(&c).unwrap();
    let before = all_metadata(&store);
    drop(store);
    let log = std::fs::read(dir.path().join("meta.log")).unwrap();
    std::fs::write(dir.path().join("meta.log"), v1::log(&records_of(&log))).unwrap();
    // Code that wrote version 1 had no catalog tables.
    super::forget_catalog(dir);
    before
}

#[test]
fn a_version_1_log_is_read_as_it_is_and_upgraded_at_the_first_writable_open() {
    // Goal: stores written before external links open and read right,
    // read-only openers read the old log without touching it, and the
    // first writable open upgrades it to version 2 (through the compaction
    // rewrite), after which external links are stored and survive restart
    // and compaction. Method: a real version-1 log (old layout encoded
    // here), compared field by field with what the store held.
    let dir = tempfile::tempdir().unwrap();
    let before = version_1_store(&dir);
    let log_path = dir.path().join("meta.log");
    let old_log = std::fs::read(&log_path).unwrap();
    assert_eq!(old_log[4], 1);

    let backend: Arc<dyn backend::Backend> = Arc::new(backend::cap::CapDir::new(
        Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap(),
    ));
    let reader = Store::open_read_only(backend, StoreOptions::default()).unwrap();
    assert_eq!(all_metadata(&reader), before);
    drop(reader);
    assert_eq!(std::fs::read(&log_path).unwrap(), old_log, "untouched");

    let store = open(&dir, StoreOptions::default());
    let problems = store.recovery_report().problems;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(all_metadata(&store), before);
    assert_eq!(std::fs::read(&log_path).unwrap()[4], format::META_VERSION);

    let a = before[0].id;
    let updated = store
        .update(
            &a,
            MetadataUpdate {
                add_external_links: vec!["run:1".into(), "dataset/ü".into()],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(updated.external_links, ["run:1", "dataset/ü"]);
    let d = put_with(
        &store,
        &data(50, 4),
        64,
        NewMetadata {
            external_links: vec!["user:7".into()],
            ..NewMetadata::default()
        },
    )
    .unwrap();
    let expected = all_metadata(&store);
    assert_eq!(store.metadata(&d).unwrap().external_links, ["user:7"]);
    drop(store);
    let store = open(&dir, StoreOptions::default());
    assert_eq!(all_metadata(&store), expected, "after restart");
    compact_meta_log(&store);
    drop(store);
    let store = open(&dir, StoreOptions::default());
    assert_eq!(all_metadata(&store), expected, "after compaction");
    assert!(store.recovery_report().problems.is_empty());
}

#[test]
fn a_damaged_version_1_log_is_kept_and_refuses_only_external_links() {
    // Goal: a version-1 log whose replay found damage is never rewritten
    // (the damage stays on disk to be reported), yet the store keeps
    // working in version 1: writes without external links land and
    // survive a restart; one with external links gets a clear
    // InvalidArgument and changes nothing. Method: a version-1 log with a
    // flipped byte in a middle record.
    let dir = tempfile::tempdir().unwrap();
    let before = version_1_store(&dir);
    let log_path = dir.path().join("meta.log");
    let mut log = std::fs::read(&log_path).unwrap();
    // Inside the first commit's payload (a digest byte): the records
    // after it stay valid, so this is damage, not a torn tail.
    log[8 + 13 + 20] ^= 0x01;
    std::fs::write(&log_path, &log).unwrap();

    let store = open(&dir, StoreOptions::default());
    let report = store.recovery_report();
    assert!(
        report.problems.iter().any(|p| !p.kind.is_crash_residue()),
        "{report:?}"
    );
    assert_eq!(std::fs::read(&log_path).unwrap()[4], 1, "not upgraded");
    // The first commit is lost to the damage (and with it b's link).
    let live = all_metadata(&store);
    assert_eq!(live.len(), before.len() - 1);
    let error = put_with(
        &store,
        &data(50, 5),
        64,
        NewMetadata {
            external_links: vec!["x".into()],
            ..NewMetadata::default()
        },
    )
    .unwrap_err();
    assert!(matches!(error, StoreError::InvalidArgument(_)), "{error}");
    let error = store
        .update(
            &live[0].id,
            MetadataUpdate {
                add_external_links: vec!["x".into()],
                ..MetadataUpdate::default()
            },
        )
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidArgument(_)), "{error}");
    let e = put_with(&store, &data(50, 6), 64, meta(&["new"], "e")).unwrap();
    let expected = all_metadata(&store);
    assert_eq!(expected.len(), live.len() + 1);
    drop(store);
    let store = open(&dir, StoreOptions::default());
    assert_eq!(all_metadata(&store), expected);
    assert_eq!(store.metadata(&e).unwrap().tags, ["new"]);
}

#[test]
fn external_links_are_checked_against_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    let put_links = |links: Vec<String>| {
        put_with(
            &store,
            &data(10, 1),
            64,
            NewMetadata {
                external_links: links,
                ..NewMetadata::default()
            },
        )
    };
    for bad in [
        vec![String::new()],
        vec!["x".repeat(EXTERNAL_LINK_BYTES_MAX + 1)],
        (0..=EXTERNAL_LINKS_MAX).map(|i| i.to_string()).collect(),
    ] {
        let error = put_links(bad).unwrap_err();
        assert!(matches!(error, StoreError::InvalidArgument(_)), "{error}");
    }
    let most: Vec<String> = (0..EXTERNAL_LINKS_MAX)
        .map(|i| format!("{i:0>width$}", width = EXTERNAL_LINK_BYTES_MAX))
        .collect();
    let id = put_links(most.clone()).unwrap();
    assert_eq!(store.metadata(&id).unwrap().external_links, most);
}

// ---------------------------------------------------------------------------
// Tags, links and external links are sets; custom keys are unique.
// ---------------------------------------------------------------------------

#[test]
fn regression_a_tag_or_link_given_twice_is_stored_once() {
    // The bug (tensor_blob 0.4.0, re-created by the seed): `--tag t --tag
    // t` stored the tags ["t", "t"], and a link given twice was kept twice,
    // so the artifact showed the duplicate in `stat`, and removing the tag
    // once left it tagged. Tags, links and external links are sets: a
    // value given twice is stored once, in the order of first occurrence,
    // at put and at update (replacing or adding).
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    let z = put_with(&store, &data(10, 1), 64, NewMetadata::default()).unwrap();
    let y = put_with(&store, &data(10, 2), 64, NewMetadata::default()).unwrap();
    let id = put_with(
        &store,
        &data(10, 3),
        64,
        NewMetadata {
            tags: vec!["t".into(), "t".into(), "u".into(), "t".into()],
            links: vec![z, y, z],
            external_links: vec!["e".into(), "e".into()],
            ..NewMetadata::default()
        },
    )
    .unwrap();
    let stored = store.metadata(&id).unwrap();
    assert_eq!(stored.tags, ["t", "u"]);
    assert_eq!(stored.links, [z, y]);
    assert_eq!(stored.external_links, ["e"]);
    let updated = store
        .update(
            &id,
            MetadataUpdate {
                tags: Some(vec!["v".into(), "v".into()]),
                links: Some(vec![y, y]),
                external_links: Some(vec!["f".into(), "g".into(), "f".into()]),
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(updated.tags, ["v"]);
    assert_eq!(updated.links, [y]);
    assert_eq!(updated.external_links, ["f", "g"]);
    let updated = store
        .update(
            &id,
            MetadataUpdate {
                remove_tags: vec!["v".into()],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    assert!(updated.tags.is_empty(), "one removal untags");
    assert_eq!(
        store.find_by_tag("t", 1000).unwrap(),
        Vec::<ArtifactId>::new()
    );
}

#[test]
fn a_custom_key_given_twice_is_invalid_at_put_and_at_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    let twice = vec![("k".to_string(), "1".to_string()), ("k".into(), "2".into())];
    let error = put_with(
        &store,
        &data(10, 1),
        64,
        NewMetadata {
            custom: twice.clone(),
            ..NewMetadata::default()
        },
    )
    .unwrap_err();
    assert!(matches!(error, StoreError::InvalidArgument(_)), "{error}");
    assert_eq!(store.ids().count(), 0, "nothing committed");
    let id = put_with(&store, &data(10, 1), 64, NewMetadata::default()).unwrap();
    let error = store
        .update(
            &id,
            MetadataUpdate {
                custom: Some(twice),
                ..MetadataUpdate::default()
            },
        )
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidArgument(_)), "{error}");
    assert!(store.metadata(&id).unwrap().custom.is_empty());
}

#[test]
fn duplicates_written_by_older_code_are_dropped_at_replay() {
    // Goal: records from before the set rule (version 1, as 0.4.0's
    // successor wrote them) may hold a tag, link or custom key twice;
    // replay keeps the first occurrence of each value and the last value
    // of each key. Method: a version-1 log written by hand with such a
    // commit and update.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let z = put_with(&store, &data(10, 1), 64, NewMetadata::default()).unwrap();
    let id = put_with(&store, &data(10, 2), 64, NewMetadata::default()).unwrap();
    drop(store);
    let log = std::fs::read(dir.path().join("meta.log")).unwrap();
    let mut records: Vec<format::MetaRecord> = records_of(&log)
        .into_iter()
        .filter(|r| *r != format::MetaRecord::Checkpoint)
        .collect();
    if let format::MetaRecord::Commit { fields, .. } = &mut records[1] {
        fields.tags = vec!["t".into(), "u".into(), "t".into()];
        fields.links = vec![*z.as_bytes(), *z.as_bytes()];
        fields.custom = vec![("k".into(), "1".into()), ("k".into(), "2".into())];
    }
    records.push(format::MetaRecord::Update {
        id: *z.as_bytes(),
        modified_ms: u64::MAX / 2,
        fields: format::MutableFields {
            tags: vec!["a".into(), "a".into()],
            custom: vec![
                ("x".into(), "1".into()),
                ("y".into(), "2".into()),
                ("x".into(), "3".into()),
            ],
            ..format::MutableFields::default()
        },
    });
    std::fs::write(dir.path().join("meta.log"), v1::log(&records)).unwrap();
    super::forget_catalog(&dir);
    let store = open(&dir, StoreOptions::default());
    assert!(store.recovery_report().problems.is_empty());
    let meta = store.metadata(&id).unwrap();
    assert_eq!(meta.tags, ["t", "u"]);
    assert_eq!(meta.links, [z]);
    assert_eq!(meta.custom, [("k".to_string(), "2".to_string())]);
    let meta = store.metadata(&z).unwrap();
    assert_eq!(meta.tags, ["a"]);
    assert_eq!(
        meta.custom,
        [("x".to_string(), "3".to_string()), ("y".into(), "2".into())]
    );
    assert_eq!(store.find_by_tag("t", 1000).unwrap(), [id]);
}

// ---------------------------------------------------------------------------
// Dangling links: deleting an artifact drops the links to it.
// ---------------------------------------------------------------------------

/// Puts `bytes` as object `name` of `container` (replacing what it held).
fn put_bound(store: &Store, container: &str, name: &str, bytes: &[u8]) -> ArtifactId {
    let mut upload = store.begin_upload();
    let digest = Hash::of(bytes);
    upload.put_chunk(&digest, bytes).unwrap();
    upload.bind_to(Some((container.to_string(), name.to_string())));
    let chunk = ChunkRef {
        digest,
        len: bytes.len() as u32,
    };
    upload
        .commit(
            &[chunk],
            bytes.len() as u64,
            Some(&digest),
            NewMetadata::default(),
        )
        .unwrap()
}

fn links_to(store: &Store, targets: &[ArtifactId], tag: &str) -> ArtifactId {
    put_with(
        store,
        tag.as_bytes(),
        64,
        NewMetadata {
            tags: vec![tag.into()],
            links: targets.to_vec(),
            ..NewMetadata::default()
        },
    )
    .unwrap()
}

#[test]
fn deleting_a_linked_artifact_drops_the_links_to_it_on_every_delete_path() {
    // The bug: deleting Z left "A links to Z" behind, so a later update of
    // A that passed its links back unchanged failed ("link to artifact Z,
    // which does not exist"). Decided: a delete drops every link to the
    // deleted artifact (at apply, so live changes, replay and compaction
    // agree; `modified_ms` unchanged). Method: links to artifacts deleted
    // by id, by replacing a name and by unbinding one; checked live, after
    // a restart and after a `meta.log` compaction.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    store.create_container("c").unwrap();
    let z = put_with(&store, b"z", 64, NewMetadata::default()).unwrap();
    let keep = put_with(&store, b"keep", 64, NewMetadata::default()).unwrap();
    let named = put_bound(&store, "c", "x", b"x1");
    let unbound = put_bound(&store, "c", "y", b"y1");
    let a = links_to(&store, &[z, keep, named, unbound], "a");
    let b = links_to(&store, &[z], "b");
    // An artifact linking to itself, then deleted, leaves nothing behind.
    let own = links_to(&store, &[], "own");
    store
        .update(
            &own,
            MetadataUpdate {
                add_links: vec![own, z],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    let modified_before = std::cell::Cell::new(store.metadata(&a).unwrap().modified_ms);
    store.delete(&z).unwrap();
    store.delete(&own).unwrap();
    put_bound(&store, "c", "x", b"x2"); // replaces (and deletes) `named`
    store.delete_objects("c", &["y".to_string()]).unwrap(); // deletes `unbound`
    assert!(!store.exists(&named).unwrap() && !store.exists(&unbound).unwrap());

    let check = |store: &Store, when: &str| {
        let meta_a = store.metadata(&a).unwrap();
        assert_eq!(meta_a.links, [keep], "{when}");
        assert_eq!(meta_a.modified_ms, modified_before.get(), "{when}");
        assert!(store.metadata(&b).unwrap().links.is_empty(), "{when}");
        for target in [z, named, unbound, own] {
            let page = store
                .query(&Query {
                    conditions: vec![Condition::LinksTo(target)],
                    limit: 10,
                    ..Query::default()
                })
                .unwrap();
            assert!(page.ids.is_empty(), "{when}: links to {target}");
        }
        let report = store.verify_all();
        assert!(report.damaged.is_empty(), "{when}: {:?}", report.damaged);
        // Passing the links back unchanged succeeds.
        let updated = store
            .update(
                &a,
                MetadataUpdate {
                    links: Some(meta_a.links.clone()),
                    ..MetadataUpdate::default()
                },
            )
            .unwrap();
        assert_eq!(updated.links, [keep], "{when}");
        modified_before.set(updated.modified_ms);
    };
    check(&store, "live");
    drop(store);
    let store = open(&dir, StoreOptions::default());
    check(&store, "after restart");
    compact_meta_log(&store);
    drop(store);
    let store = open(&dir, StoreOptions::default());
    check(&store, "after compaction");
}

#[test]
fn verify_reports_a_link_to_an_artifact_that_is_not_live() {
    // Goal: a link that dangles can only come from damage (or a bug) now;
    // verify still reports one. Method: a version-1 log whose commit of
    // the link target is lost to a flipped byte.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let z = put_with(&store, b"z", 64, NewMetadata::default()).unwrap();
    let a = links_to(&store, &[z], "a");
    drop(store);
    let log_path = dir.path().join("meta.log");
    let mut log = std::fs::read(&log_path).unwrap();
    log[8 + 13 + 20] ^= 0x01; // inside z's commit: damage, a's commit follows
    std::fs::write(&log_path, &log).unwrap();
    let store = open(&dir, StoreOptions::default());
    assert!(!store.exists(&z).unwrap());
    assert_eq!(store.metadata(&a).unwrap().links, [z]);
    let report = store.verify_all();
    assert_eq!(report.dangling_links, [(a, z)]);
    assert!(report.damaged.is_empty(), "a's bytes are whole: {report:?}");
    store.verify(&a).unwrap();
    // An update that leaves the links alone still works, and one that
    // removes the dangling link mends it.
    store
        .update(
            &a,
            MetadataUpdate {
                add_tags: vec!["b".into()],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    store
        .update(
            &a,
            MetadataUpdate {
                remove_links: vec![z],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    assert!(store.verify_all().dangling_links.is_empty());
}

/// Three sparse, overlapping tag sets and a `linked-from` set: the
/// intersection (every 30th artifact among those the source links to) is
/// found whole, in both orders and in pages of one, and equals the scan.
#[test]
fn intersections_of_several_sets_find_every_match_in_both_orders() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let mut ids = Vec::new();
    for i in 0..120u32 {
        let mut tags = Vec::new();
        for (every, tag) in [(2, "two"), (3, "three"), (5, "five")] {
            if i % every == 0 {
                tags.push(tag);
            }
        }
        let name = format!("{i}.bin");
        ids.push(put_with(&store, &data(10, u64::from(i)), 64, meta(&tags, &name)).unwrap());
    }
    // The source links to every artifact with an even position among the
    // first 100 (the link set drives, the tags filter it).
    let links: Vec<ArtifactId> = ids[..100].iter().step_by(2).copied().collect();
    let source = put_with(
        &store,
        &data(10, 200),
        64,
        NewMetadata {
            links,
            ..NewMetadata::default()
        },
    )
    .unwrap();
    let tags = || {
        ["two", "three", "five"]
            .map(|t| Condition::Tag(t.into()))
            .to_vec()
    };
    let mut linked = tags();
    linked.push(Condition::LinkedFrom(source));
    let every_30th: Vec<ArtifactId> = ids.iter().step_by(30).copied().collect();
    for (conditions, expected) in [
        (tags(), every_30th.clone()),
        (linked, every_30th[..4].to_vec()),
    ] {
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let mut found = Vec::new();
            let mut after = None;
            loop {
                let query = Query {
                    conditions: conditions.clone(),
                    order,
                    after,
                    limit: 1,
                };
                let page = store.query(&query).unwrap();
                assert_eq!(page, store.query_by_scan(&query).unwrap());
                found.extend(page.ids);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let mut expected = expected.clone();
            if order == Order::NewestFirst {
                expected.reverse();
            }
            assert_eq!(found, expected, "{order:?}");
        }
    }
}

#[test]
fn creation_times_out_of_commit_order_in_an_older_log_still_answer_ranges_exactly() {
    // Goal: a creation-time range is answered from a span of commit
    // positions only while creation times follow commit order; a log
    // written before they were kept so (concurrent commits took their
    // times out of order) is answered from the time postings, exactly, in
    // both orders and across pages; and a new commit never takes a
    // creation time earlier than one already committed. Method: a real
    // store's log rewritten with permuted creation times (some in the
    // future), the catalog file removed as older code would have had it.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    for i in 0..8u64 {
        put_with(&store, &data(40, i), 16, meta(&["t"], "f")).unwrap();
    }
    drop(store);
    let future = crate::store::now_ms() + 3_600_000;
    let times = [50, 10, 40, 20, future, 30, 60, 20];
    let log = std::fs::read(super::meta_log(&dir)).unwrap();
    let mut rewritten = log[..8].to_vec();
    let mut commits = 0;
    for mut record in records_of(&log) {
        if let format::MetaRecord::Commit { created_ms, .. } = &mut record {
            *created_ms = times[commits];
            commits += 1;
        }
        rewritten.extend_from_slice(&format::encode_meta_record(&record));
    }
    assert_eq!(commits, times.len());
    std::fs::write(super::meta_log(&dir), rewritten).unwrap();
    super::forget_catalog(&dir);

    let store = open(&dir, StoreOptions::default());
    let all = all_metadata(&store);
    assert_eq!(all.iter().map(|m| m.created_ms).collect::<Vec<_>>(), times);
    let check = |store: &Store, all: &[Metadata]| {
        for (from_ms, to_ms) in [
            (0, u64::MAX),
            (15, 45),
            (20, 21),
            (0, 20),
            (31, 39),
            (60, future + 1),
        ] {
            for order in [Order::OldestFirst, Order::NewestFirst] {
                let mut want: Vec<ArtifactId> = all
                    .iter()
                    .filter(|m| (from_ms..to_ms).contains(&m.created_ms))
                    .map(|m| m.id)
                    .collect();
                if order == Order::NewestFirst {
                    want.reverse();
                }
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    let page = store
                        .query(&Query {
                            conditions: vec![
                                Condition::Created(TimeRange { from_ms, to_ms }),
                                Condition::Tag("t".into()),
                            ][..1 + usize::from(from_ms == 15)]
                                .to_vec(),
                            after,
                            limit: 2,
                            order,
                        })
                        .unwrap();
                    got.extend(page.ids);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                assert_eq!(got, want, "{from_ms}..{to_ms} {order:?}");
            }
        }
    };
    check(&store, &all);
    // A commit now takes at least the future time already committed.
    let late = put_with(&store, &data(40, 99), 16, meta(&["t"], "g")).unwrap();
    assert!(store.metadata(&late).unwrap().created_ms >= future);
    let all = all_metadata(&store);
    check(&store, &all);
    drop(store);
    let store = open(&dir, StoreOptions::default());
    check(&store, &all);
}
