//! Tests of [`Store::open_read_only`]: it writes nothing (not even with a
//! crash's leftovers and torn tails there to repair), sees what was
//! committed when it opened, refuses every write with a typed error, and
//! never returns wrong bytes while a writer deletes and compacts beside it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{data, get, open, put, put_with, segment_files, unsynced};
use crate::store::backend::cap::CapDir;
use crate::store::backend::Backend;
use crate::store::*;

fn backend(dir: &tempfile::TempDir) -> Arc<dyn Backend> {
    let dir = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    Arc::new(CapDir::new(dir))
}

fn open_read_only(dir: &tempfile::TempDir, options: StoreOptions) -> Result<Store, StoreError> {
    Store::open_read_only(backend(dir), options)
}

/// Every directory and file under `root`, with each file's bytes.
fn image(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                out.insert(name, None);
                stack.push(path);
            } else {
                out.insert(name, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

/// Every write API of a read-only store must refuse with `ReadOnly`.
fn assert_refuses_writes(store: &Store, live: &ArtifactId) {
    let read_only = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::ReadOnly(_)) => {}
        other => panic!("{what} on a read-only store: {other:?}"),
    };
    let bytes = b"refused";
    let mut upload = store.begin_upload();
    read_only(upload.put_chunk(&Hash::of(bytes), bytes), "put_chunk");
    read_only(
        put_with(store, bytes, 4, NewMetadata::default()).map(|_| ()),
        "put",
    );
    read_only(store.delete(live), "delete");
    read_only(
        store
            .update(
                live,
                MetadataUpdate {
                    filename: Some(Some("renamed".into())),
                    ..MetadataUpdate::default()
                },
            )
            .map(|_| ()),
        "update",
    );
    read_only(store.gc().map(|_| ()), "gc");
    read_only(store.set_quota(Quota::default()), "set_quota");
    assert!(store.is_snapshot());
}

/// Goal: a read-only open writes nothing, whatever it finds: not the
/// repairs a writer's open makes (cutting torn tails, removing a crash's
/// leftovers, writing hints, syncing), not a lock file, not a reserve.
/// Method: a durable store with sealed segments (one left without its
/// hint), then a crash's residue added by hand: torn tails on the active
/// segment and on `meta.log`, a half-written hint, a hint of a segment that
/// is gone, an unfinished log compaction and policy write, no space
/// reserve. The whole directory (listing and every byte) is compared
/// before and after a read-only open that reads, verifies and tries to
/// write everything; then a writer's open must still find the residue to
/// repair (the reader left it), and the same artifacts.
#[test]
fn a_read_only_open_writes_nothing() {
    read_only_open_writes_nothing(false);
}

/// The same of a reader in place ([`Store::open_read_only_in_place`]),
/// which reads the catalog file from its checkpoint and replays past it
/// in memory: the lock it is handed is taken before the image.
#[test]
fn a_read_only_open_in_place_writes_nothing() {
    read_only_open_writes_nothing(true);
}

fn read_only_open_writes_nothing(in_place: bool) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Sync,
        segment_bytes_max: 4096,
        ..StoreOptions::default()
    };
    let store = open(&dir, options.clone());
    let contents: Vec<Vec<u8>> = (0..6).map(|i| data(3000, 100 + i)).collect();
    let ids: Vec<ArtifactId> = contents.iter().map(|c| put(&store, c, 500)).collect();
    drop(store);
    let segments = segment_files(&dir);
    assert!(segments.len() >= 3, "{segments:?}");
    let root = dir.path();
    std::fs::remove_file(segments[0].with_extension("hint")).unwrap();
    append(segments.last().unwrap(), &[0xA5; 37]);
    append(&root.join("meta.log"), &[0x5A; 11]);
    std::fs::write(root.join("segments/0000000000000001.hint.tmp"), b"half").unwrap();
    std::fs::write(root.join("segments/0000000000000099.hint"), b"orphan").unwrap();
    std::fs::write(root.join("meta.log.compact"), b"unfinished").unwrap();
    std::fs::write(root.join("policy.tmp"), b"unfinished").unwrap();
    std::fs::remove_file(root.join("reserve")).unwrap();
    let lock = in_place.then(|| backend(&dir).lock("LOCK").unwrap());
    let before = image(root);

    let reader = match lock {
        Some(lock) => Store::open_read_only_in_place(backend(&dir), options.clone(), lock),
        None => open_read_only(&dir, options.clone()),
    }
    .unwrap();
    assert_eq!(reader.open_stats().from_checkpoint, in_place);
    for (id, content) in ids.iter().zip(&contents) {
        assert_eq!(&get(&reader, id).unwrap(), content);
        reader.verify(id).unwrap();
    }
    assert_eq!(reader.verify_all().damaged, Vec::new());
    assert_eq!(reader.stats().artifacts, ids.len() as u64);
    assert_eq!(reader.fsync_count(), 0);
    assert_eq!(
        reader.recovery_report().damage().count(),
        0,
        "{:?}",
        reader.recovery_report()
    );
    assert_refuses_writes(&reader, &ids[0]);
    drop(reader);
    assert_eq!(image(root), before, "a read-only open changed the store");

    let writer = open(&dir, options);
    let report = writer.recovery_report();
    assert_eq!(report.truncated_bytes, 37 + 11, "{report:?}");
    for (id, content) in ids.iter().zip(&contents) {
        assert_eq!(&get(&writer, id).unwrap(), content);
    }
    drop(writer);
    assert!(!root.join("meta.log.compact").exists());
    assert!(!root.join("policy.tmp").exists());
}

/// Goal: a read-only store is a snapshot of what was committed when it
/// opened, beside a writer that goes on; a new read-only open sees the
/// writer's later commits and deletes. Method: a writer store and read-only
/// stores on one directory (the store itself takes no lock; tenants do);
/// commits and a delete after the first read-only open must not show in it
/// and must show in the next.
#[test]
fn a_read_only_store_is_a_snapshot_of_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(&dir, unsynced());
    let first = data(5000, 1);
    let first_id = put(&writer, &first, 700);
    let before = open_read_only(&dir, unsynced()).unwrap();
    let second = data(5000, 2);
    let second_id = put(&writer, &second, 700);
    writer.delete(&first_id).unwrap();

    assert_eq!(get(&before, &first_id).unwrap(), first);
    assert!(!before.exists(&second_id).unwrap());
    assert_eq!(before.stats().artifacts, 1);

    let after = open_read_only(&dir, unsynced()).unwrap();
    assert!(!after.exists(&first_id).unwrap());
    assert_eq!(get(&after, &second_id).unwrap(), second);
    assert_refuses_writes(&after, &second_id);
    // The writer is unaffected by its readers.
    let third = data(100, 3);
    let third_id = put(&writer, &third, 50);
    assert_eq!(get(&writer, &third_id).unwrap(), third);
}

/// Goal: a read-only open of a directory that holds no store says so and
/// creates nothing (not `segments/`, not `meta.log`). Method: an empty
/// directory; then one with only `segments/` (a writer's first open cut
/// short).
#[test]
fn a_read_only_open_of_no_store_is_not_found_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    match open_read_only(&dir, unsynced()) {
        Err(StoreError::NotFound(message)) => assert!(message.contains("no store"), "{message}"),
        other => panic!("expected not-found, got {:?}", other.map(|_| ())),
    }
    assert_eq!(image(dir.path()), BTreeMap::new());
    std::fs::create_dir(dir.path().join("segments")).unwrap();
    let before = image(dir.path());
    assert!(matches!(
        open_read_only(&dir, unsynced()),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(image(dir.path()), before);
}

/// Goal: readers never see wrong bytes while a writer puts, deletes and
/// compacts (segments and `meta.log`) beside them: every read either
/// returns exactly what was put or fails cleanly (`NotFound` for an
/// artifact deleted and collected since the snapshot, `Corrupted` for a
/// chunk whose space was freed in place), and every open succeeds.
/// Method: a writer thread cycling put / delete / full GC over a small set
/// of artifacts whose bytes follow from their filename (so a reader can
/// check what it reads without sharing anything with the writer); the test
/// thread opens read-only snapshots over and over and reads and verifies
/// every artifact in each, until the writer has done enough rounds.
#[test]
fn readers_beside_a_compacting_writer_never_see_wrong_bytes() {
    const ROUNDS: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        segment_bytes_max: 16 << 10,
        ..unsynced()
    };
    let writer = open(&dir, options.clone());
    let content = |seed: u64| data(2000 + (seed as usize % 7) * 900, seed);
    let named = |seed: u64| NewMetadata {
        filename: Some(seed.to_string()),
        ..NewMetadata::default()
    };
    let done = Arc::new(AtomicBool::new(false));
    let writing = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut live = std::collections::VecDeque::new();
            for seed in 0..ROUNDS {
                live.push_back(put_with(&writer, &content(seed), 512, named(seed)).unwrap());
                if live.len() > 4 {
                    writer.delete(&live.pop_front().unwrap()).unwrap();
                }
                writer.gc().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let (mut reads, mut snapshots, mut failed) = (0u64, 0u64, 0u64);
    while !done.load(Ordering::SeqCst) || snapshots == 0 {
        let reader = open_read_only(&dir, options.clone()).expect("read-only open");
        snapshots += 1;
        for id in reader.ids().collect::<Vec<_>>() {
            let seed: u64 = reader
                .metadata(&id)
                .unwrap()
                .filename
                .unwrap()
                .parse()
                .unwrap();
            match get(&reader, &id) {
                Ok(bytes) => {
                    assert!(bytes == content(seed), "artifact {id}: wrong bytes");
                    reads += 1;
                }
                Err(StoreError::NotFound(_) | StoreError::Corrupted(_)) => failed += 1,
                Err(other) => panic!("artifact {id}: {other}"),
            }
            match reader.verify(&id) {
                Ok(()) | Err(StoreError::NotFound(_) | StoreError::Corrupted(_)) => {}
                Err(other) => panic!("verify {id}: {other}"),
            }
        }
    }
    writing.join().unwrap();
    eprintln!("{snapshots} snapshots, {reads} artifacts read whole, {failed} reads refused");
    assert!(reads > 0, "no read succeeded in {snapshots} snapshots");
}

/// Goal: the same as [`a_read_only_open_writes_nothing`], judged by the
/// simulated disk, which counts every write, sync, directory sync, rename,
/// remove, create and punch (an fsync changes no byte, so a directory
/// image alone cannot show one). Method: a durable store on a `SimDisk`
/// with torn tails added to its active segment and `meta.log`; the disk's
/// counters, paths and every file's bytes before and after a read-only
/// open that reads, verifies and tries every write. (Checked to fail with
/// a writer's open in its place.)
#[test]
fn a_read_only_open_makes_no_write_sync_or_directory_change_on_the_simulated_disk() {
    read_only_open_changes_nothing_on_the_simulated_disk(false);
}

#[test]
fn a_read_only_open_in_place_makes_no_write_sync_or_directory_change_on_the_simulated_disk() {
    read_only_open_changes_nothing_on_the_simulated_disk(true);
}

fn read_only_open_changes_nothing_on_the_simulated_disk(in_place: bool) {
    use crate::store::backend::sim::SimDisk;
    use crate::store::backend::OpenMode;
    let disk = SimDisk::new(41);
    let options = StoreOptions {
        durability: Durability::Sync,
        segment_bytes_max: 4096,
        ..StoreOptions::default()
    };
    let store = Store::open_backend(disk.root(), options.clone()).unwrap();
    let contents: Vec<Vec<u8>> = (0..4).map(|i| data(3000, 200 + i)).collect();
    let ids: Vec<ArtifactId> = contents.iter().map(|c| put(&store, c, 500)).collect();
    drop(store);
    let root = disk.root();
    let (segments, _) = root.dir("segments", false).unwrap();
    let mut names: Vec<String> = segments
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    for (dir, name) in [
        (&segments, names.last().unwrap().as_str()),
        (&root, "meta.log"),
    ] {
        let file = dir.open(name, OpenMode::Write).unwrap();
        file.write_all_at(&[0x77; 29], file.len().unwrap()).unwrap();
    }
    let counters = |disk: &SimDisk| {
        let s = disk.stats();
        [
            s.writes,
            s.syncs,
            s.dir_syncs,
            s.renames,
            s.removes,
            s.creates,
            s.punches,
        ]
    };
    let contents_of = |disk: &SimDisk| -> Vec<(String, Option<Vec<u8>>)> {
        disk.paths()
            .into_iter()
            .map(|p| (p.clone(), disk.read(&p)))
            .collect()
    };
    let lock = in_place.then(|| disk.root().lock("LOCK").unwrap());
    let (counted, files) = (counters(&disk), contents_of(&disk));

    let reader = match lock {
        Some(lock) => Store::open_read_only_in_place(disk.root(), options, lock),
        None => Store::open_read_only(disk.root(), options),
    }
    .unwrap();
    assert_eq!(reader.open_stats().from_checkpoint, in_place);
    for (id, content) in ids.iter().zip(&contents) {
        assert_eq!(&get(&reader, id).unwrap(), content);
    }
    assert_eq!(reader.verify_all().damaged, Vec::new());
    assert_refuses_writes(&reader, &ids[1]);
    drop(reader);
    assert_eq!(
        counters(&disk),
        counted,
        "writes, syncs, renames, removes, creates, punches"
    );
    assert_eq!(contents_of(&disk), files);
}

/// Goal: a reader in place reads the catalog from its checkpoint, replays
/// what the log holds past it (here a writer that crashed after more
/// commits, a delete and an update), answers as that writer did, holds the
/// writer lock while open; and a catalog file that is not there leaves it
/// rebuilding in memory, with the same answers. Method: a real store, the
/// writer forgotten instead of closed (no checkpoint of its last changes).
#[test]
fn a_reader_in_place_resumes_from_the_checkpoint_and_answers_as_the_writer_did() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Sync,
        segment_bytes_max: 8192,
        ..StoreOptions::default()
    };
    let tagged = |tag: &str| NewMetadata {
        tags: vec![tag.into()],
        ..NewMetadata::default()
    };
    let store = open(&dir, options.clone());
    let mut contents = Vec::new();
    for i in 0..5 {
        let bytes = data(3000, 300 + i);
        contents.push((
            put_with(&store, &bytes, 500, tagged("early")).unwrap(),
            bytes,
        ));
    }
    drop(store);
    let store = open(&dir, options.clone());
    for i in 0..2 {
        let bytes = data(3000, 400 + i);
        contents.push((
            put_with(&store, &bytes, 500, tagged("late")).unwrap(),
            bytes,
        ));
    }
    store.delete(&contents[0].0).unwrap();
    contents.remove(0);
    store
        .update(
            &contents[0].0,
            MetadataUpdate {
                add_tags: vec!["changed".into()],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    let answers = |store: &Store| {
        let ids: Vec<ArtifactId> = store.ids().collect();
        let tags: Vec<Vec<ArtifactId>> = ["early", "late", "changed"]
            .iter()
            .map(|tag| store.find_by_tag(tag, 100).unwrap())
            .collect();
        let metadata: Vec<Metadata> = ids.iter().map(|id| store.metadata(id).unwrap()).collect();
        (ids, tags, metadata, store.stats().artifacts)
    };
    let expected = answers(&store);
    assert_eq!(expected.1[2], [contents[0].0]);
    std::mem::forget(store);

    let lock = backend(&dir).lock("LOCK").unwrap();
    let reader = Store::open_read_only_in_place(backend(&dir), options.clone(), lock).unwrap();
    let stats = reader.open_stats();
    assert!(stats.from_checkpoint, "{stats:?}");
    assert_eq!(
        stats.meta_records, 4,
        "2 commits, a delete, an update: {stats:?}"
    );
    assert_eq!(answers(&reader), expected);
    for (id, bytes) in &contents {
        assert_eq!(&get(&reader, id).unwrap(), bytes);
    }
    assert_refuses_writes(&reader, &contents[1].0);
    let held = backend(&dir).lock("LOCK");
    assert_eq!(
        held.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::WouldBlock),
        "the reader holds the writer lock"
    );
    drop(reader);

    super::forget_catalog(&dir);
    let lock = backend(&dir).lock("LOCK").unwrap();
    let reader = Store::open_read_only_in_place(backend(&dir), options, lock).unwrap();
    assert!(!reader.open_stats().from_checkpoint);
    assert_eq!(answers(&reader), expected);
    assert!(reader.recovery_report().damage().next().is_none());
}
