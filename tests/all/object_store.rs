//! Goal: the store keeps its bytes in an S3-compatible bucket through the
//! same seam as a disk, and a host that has never seen a tenant opens it
//! from the bucket alone.
//! Method: a real server (`s3s-fs`, started per test on 127.0.0.1), the
//! object backend under the seam's contract (files against a byte model,
//! directory entries, rename, removal, leases), then the whole store
//! through the real chunker: round trips, dedup and sharing, delete, GC
//! and verify, each checked again from a fresh backend instance.

use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::time::Duration;

use tensor_blob_host::runtime::Runtime;
use tensor_blob_host::runtime::{BlobError, WitError};
use tensor_blob_host::store::backend::object::{LeaseOptions, ObjectBackend, ObjectConfig};
use tensor_blob_host::store::backend::{Backend, OpenMode};
use tensor_blob_host::store::{ArtifactId, ChunkRef, Durability, Hash, NewMetadata, StoreOptions};
use tensor_blob_host::testing::{Fault, FaultProxy, S3Server, S3_BUCKET};

use crate::common::{self, data, fixed, options, PseudoRandom};

fn server() -> S3Server {
    S3Server::start().expect("s3s-fs starts (installed by .ci/run)")
}

/// The test bucket at `prefix`, deleting removed files' parts at once.
fn no_grace(server: &S3Server, prefix: &str) -> ObjectConfig {
    ObjectConfig {
        removal_grace: Duration::ZERO,
        ..server.config(prefix)
    }
}

fn backend(server: &S3Server, prefix: &str) -> ObjectBackend {
    ObjectBackend::open(&server.config(prefix), LeaseOptions::default()).expect("backend opens")
}

fn read_all(file: &dyn tensor_blob_host::store::backend::BackendFile) -> Vec<u8> {
    let mut bytes = vec![0u8; file.len().unwrap() as usize];
    file.read_exact_at(&mut bytes, 0).unwrap();
    bytes
}

/// What a fresh host (a new backend on `prefix`) reads of file `d/<name>`.
fn read_fresh(server: &S3Server, prefix: &str, name: &str) -> Vec<u8> {
    let (dir, _) = backend(server, prefix).dir("d", false).unwrap();
    read_all(&*dir.open(name, OpenMode::Read).unwrap())
}

/// A new backend on `prefix`, its directory `d` (created and synced) and a
/// new file `name` in it.
fn new_file(
    server: &S3Server,
    prefix: &str,
    name: &str,
) -> (
    Arc<dyn Backend>,
    Arc<dyn tensor_blob_host::store::backend::BackendFile>,
) {
    let (dir, _) = backend(server, prefix).dir("d", true).unwrap();
    let file = dir.open(name, OpenMode::CreateNew).unwrap();
    dir.sync().unwrap();
    (dir, file)
}

/// Files under `prefix` in the server's data directory (each object is a
/// file there), leaving out the server's own bookkeeping.
fn objects(server: &S3Server, prefix: &str) -> Vec<String> {
    let root = server.data_dir().join(S3_BUCKET);
    let mut found = Vec::new();
    let mut stack = vec![root.join(prefix)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                if !name.contains(".s3s") && !name.ends_with(".json") {
                    found.push(name);
                }
            }
        }
    }
    found.sort();
    found
}

/// `verify_all` finds no damaged artifact and no problem in the logs;
/// its report.
fn assert_verifies_clean(
    store: &tensor_blob_host::store::Store,
) -> tensor_blob_host::store::VerifyReport {
    let verify = store.verify_all();
    assert!(
        verify.damaged.is_empty() && verify.log_problems.is_empty(),
        "{verify:?}"
    );
    verify
}

/// Bytes of the objects under `prefix`, as the server's files hold them.
fn object_bytes(server: &S3Server, prefix: &str) -> u64 {
    objects(server, prefix)
        .iter()
        .map(|key| {
            std::fs::metadata(server.data_dir().join(S3_BUCKET).join(key))
                .unwrap()
                .len()
        })
        .sum()
}

#[test]
fn synced_files_and_entries_are_what_a_fresh_host_finds() {
    let server = server();
    let a = backend(&server, "p");
    let (dir, created) = a.dir("d", true).unwrap();
    assert!(created);
    let f = dir.open("f", OpenMode::CreateNew).unwrap();
    f.write_all_at(b"hello ", 0).unwrap();
    f.write_all_at(b"world", 6).unwrap();
    f.sync_data().unwrap();
    dir.sync().unwrap();
    let g = dir.open("g", OpenMode::CreateNew).unwrap();
    g.write_all_at(b"unsynced entry", 0).unwrap();
    g.sync_data().unwrap();
    assert_eq!(
        dir.open("f", OpenMode::CreateNew).err().map(|e| e.kind()),
        Some(ErrorKind::AlreadyExists)
    );

    let b = backend(&server, "p");
    let (dir_b, created) = b.dir("d", false).unwrap();
    assert!(!created);
    assert_eq!(
        read_all(&*dir_b.open("f", OpenMode::Read).unwrap()),
        b"hello world"
    );
    assert_eq!(
        dir_b.open("g", OpenMode::Read).err().map(|e| e.kind()),
        Some(ErrorKind::NotFound),
        "an entry is durable only after its directory's sync"
    );
    assert_eq!(
        b.dir("missing", false).err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );

    // Rename replaces the target whole; the old name is gone.
    dir.rename("g", "f").unwrap();
    dir.sync().unwrap();
    assert_eq!(read_fresh(&server, "p", "f"), b"unsynced entry");
    let c = backend(&server, "p");
    let (dir_c, _) = c.dir("d", false).unwrap();
    assert!(dir_c.open("g", OpenMode::Read).is_err());
    let names: Vec<String> = dir_c.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["f".to_string()]);
    // A prefix is a separate root.
    let other = backend(&server, "q");
    assert!(other.dir("d", false).is_err());
}

#[test]
fn removed_and_replaced_files_leave_no_objects_behind() {
    let server = server();
    let a = backend(&server, "gone");
    let (dir, _) = a.dir("d", true).unwrap();
    for name in ["x", "y"] {
        let f = dir.open(name, OpenMode::CreateNew).unwrap();
        f.write_all_at(&data(100_000, 1), 0).unwrap();
        f.sync_data().unwrap();
    }
    dir.sync().unwrap();
    let before = objects(&server, "gone");
    assert!(
        before.iter().filter(|k| k.contains("/~f/")).count() >= 2,
        "{before:?}"
    );
    // An open handle keeps a removed file readable until it is dropped;
    // so does one on another host, within the removal grace.
    let held = dir.open("y", OpenMode::Read).unwrap();
    let (elsewhere, _) = backend(&server, "gone").dir("d", false).unwrap();
    let held_elsewhere = elsewhere.open("x", OpenMode::Read).unwrap();
    dir.remove("x").unwrap();
    dir.remove("y").unwrap();
    dir.sync().unwrap();
    assert_eq!(read_all(&*held), data(100_000, 1));
    drop(held);
    assert_eq!(read_all(&*held_elsewhere), data(100_000, 1));
    let kept = objects(&server, "gone");
    assert_eq!(
        kept.iter().filter(|k| k.contains("/~f/")).count(),
        2,
        "parts of removed files stay for the grace: {kept:?}"
    );
    drop((held_elsewhere, elsewhere, dir, a));
    // A writer past the grace (zero here) deletes them at its next sync.
    let z = ObjectBackend::open(&no_grace(&server, "gone"), LeaseOptions::default()).unwrap();
    let (dir, _) = z.dir("d", false).unwrap();
    let f = dir.open("z", OpenMode::CreateNew).unwrap();
    f.sync_data().unwrap();
    dir.sync().unwrap();
    let after = objects(&server, "gone");
    assert!(
        after.iter().all(|k| !k.contains("/~f/")),
        "parts of removed files are deleted: {after:?}"
    );
    // Manifests: the newest and the one before it are kept, no more.
    for round in 0..4 {
        let f = dir.open("z", OpenMode::Truncate).unwrap();
        f.write_all_at(&[round], 0).unwrap();
        f.sync_data().unwrap();
        dir.sync().unwrap();
    }
    let left = objects(&server, "gone/d");
    assert_eq!(
        left.iter().filter(|k| k.contains("/~d/")).count(),
        2,
        "{left:?}"
    );
    assert_eq!(
        left.iter().filter(|k| k.contains("/~f/")).count(),
        1,
        "{left:?}"
    );
}

/// Random writes, length changes, syncs and reads of one file, against a
/// byte model; after each sync a fresh backend reads what was synced.
#[test]
fn a_file_matches_a_byte_model_through_writes_truncations_and_syncs() {
    let server = server();
    let (_dir, file) = new_file(&server, "model", "f");
    let mut rng = fastrand::Rng::with_seed(17);
    let mut model: Vec<u8> = Vec::new();
    for step in 0..300 {
        match rng.u32(0..10) {
            0..=4 => {
                let len = if rng.u32(0..20) == 0 {
                    rng.usize(1..(9 << 20))
                } else {
                    rng.usize(1..5000)
                };
                let at = rng.usize(0..=model.len() + 100);
                let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                file.write_all_at(&bytes, at as u64).unwrap();
                if model.len() < at + len {
                    model.resize(at + len, 0);
                }
                model[at..at + len].copy_from_slice(&bytes);
            }
            5 => {
                let len = rng.usize(0..=model.len() + 1000);
                file.set_len(len as u64).unwrap();
                model.resize(len, 0);
            }
            6 | 7 => {
                file.sync_data().unwrap();
                let synced = read_fresh(&server, "model", "f");
                assert!(
                    synced == model,
                    "step {step}: a fresh host reads what was synced"
                );
            }
            _ => {
                assert_eq!(file.len().unwrap(), model.len() as u64, "step {step}");
                if !model.is_empty() {
                    let from = rng.usize(0..model.len());
                    let to = rng.usize(from..=model.len());
                    let mut buf = vec![0u8; to - from];
                    file.read_exact_at(&mut buf, from as u64).unwrap();
                    assert!(buf == model[from..to], "step {step}: read {from}..{to}");
                }
                let mut past = [0u8; 1];
                assert_eq!(
                    file.read_exact_at(&mut past, model.len() as u64)
                        .err()
                        .map(|e| e.kind()),
                    Some(ErrorKind::UnexpectedEof)
                );
            }
        }
    }
    assert!(read_all(&*file) == model);
}

/// The catalog database's pattern: pages rewritten in place, a few per
/// sync. Parts whose bytes were all written again are deleted, and a file
/// of many small parts is consolidated, so the objects stay bounded.
#[test]
fn scattered_page_writes_keep_the_objects_bounded() {
    let server = server();
    let (_dir, file) = new_file(&server, "pages", "db");
    let page = 4096usize;
    let pages = 256usize;
    let mut model = vec![0u8; page * pages];
    file.set_len(model.len() as u64).unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut most = 0;
    for round in 0..150 {
        for _ in 0..3 {
            // Page 0 (the header) in every commit, others at random.
            for p in [0, rng.usize(1..pages)] {
                let bytes: Vec<u8> = (0..page).map(|_| rng.u8(..)).collect();
                file.write_all_at(&bytes, (p * page) as u64).unwrap();
                model[p * page..(p + 1) * page].copy_from_slice(&bytes);
            }
        }
        file.sync_data().unwrap();
        let count = objects(&server, "pages").len();
        most = most.max(count);
        if round % 50 == 49 {
            assert!(read_fresh(&server, "pages", "db") == model, "round {round}");
        }
    }
    assert!(read_all(&*file) == model);
    // 900 page writes in 150 syncs; without deleting and consolidating,
    // about 450 objects (page 0 in each sync, the rest mostly distinct).
    assert!(most <= 100, "up to {most} objects");
}

#[test]
fn a_sequential_reader_has_each_block_fetched_once_and_ahead() {
    let server = server();
    let (_dir, file) = new_file(&server, "scan", "seg");
    let len = 24usize << 20;
    let bytes = data(len, 11);
    for piece in bytes.chunks(3 << 20) {
        let at = piece.as_ptr() as usize - bytes.as_ptr() as usize;
        file.write_all_at(piece, at as u64).unwrap();
    }
    file.sync_data().unwrap();
    let gets = |b: &ObjectBackend| b.requests().gets.load(std::sync::atomic::Ordering::Relaxed);

    // A scan in reads of uneven sizes, as a get reads chunk records.
    let fresh = backend(&server, "scan");
    let (dir, _) = fresh.dir("d", false).unwrap();
    let seg = dir.open("seg", OpenMode::Read).unwrap();
    let before = gets(&fresh);
    let mut rng = fastrand::Rng::with_seed(5);
    let mut at = 0usize;
    while at < len {
        let n = rng.usize(1..300 << 10).min(len - at);
        let mut buf = vec![0u8; n];
        seg.read_exact_at(&mut buf, at as u64).unwrap();
        assert!(buf == bytes[at..at + n], "bytes at {at}");
        at += n;
    }
    let scan = gets(&fresh) - before;
    // 24 blocks of 1 MiB; none fetched twice.
    assert!(
        (24..=25).contains(&scan),
        "{scan} GETs for a scan of 24 MiB"
    );

    // Scattered small reads fetch their own blocks and nothing ahead.
    let fresh = backend(&server, "scan");
    let (dir, _) = fresh.dir("d", false).unwrap();
    let seg = dir.open("seg", OpenMode::Read).unwrap();
    let before = gets(&fresh);
    for i in 0..12u64 {
        let at = (i * 7 % 24) << 20 | 4096;
        let mut buf = vec![0u8; 4096];
        seg.read_exact_at(&mut buf, at).unwrap();
        assert!(buf == bytes[at as usize..at as usize + 4096]);
    }
    let scattered = gets(&fresh) - before;
    assert!(scattered <= 12, "{scattered} GETs for 12 scattered reads");
}

/// A host reading a file its writer elsewhere consolidates (many small
/// appends, as `meta.log` or a segment of small commits gets): the parts
/// it listed are deleted, and it reads the same bytes from the new ones.
#[test]
fn a_reader_elsewhere_reads_a_file_consolidated_under_it() {
    let server = server();
    let (dir, file) = new_file(&server, "merge", "log");
    let model: Vec<u8> = (0..80).flat_map(|i| data(100, i)).collect();
    let append = |i: usize| {
        file.write_all_at(&model[i * 100..(i + 1) * 100], (i * 100) as u64)
            .unwrap();
        file.sync_data().unwrap();
    };
    (0..50).for_each(append);
    dir.sync().unwrap();
    let (elsewhere, _) = backend(&server, "merge").dir("d", false).unwrap();
    let reader = elsewhere.open("log", OpenMode::Read).unwrap();
    let listed = model[..5000].to_vec();
    (50..80).for_each(append);
    let parts = objects(&server, "merge/d/~f").len();
    assert!(parts < 50, "consolidated: {parts} parts");
    let mut bytes = vec![0u8; listed.len()];
    reader.read_exact_at(&mut bytes, 0).unwrap();
    assert!(bytes == listed, "the bytes this host listed");
    assert!(read_all(&*file) == model);
}

#[test]
fn a_lease_is_exclusive_across_hosts_and_released_on_drop() {
    let server = server();
    let a = backend(&server, "lease");
    let b = backend(&server, "lease");
    let (dir_a, _) = a.dir("t", true).unwrap();
    let (dir_b, _) = b.dir("t", true).unwrap();
    let guard = dir_a.lock("lock").unwrap();
    assert_eq!(
        dir_b.lock("lock").err().map(|e| e.kind()),
        Some(ErrorKind::WouldBlock)
    );
    assert!(dir_b.list().unwrap().iter().any(|e| e.name == "lock"));
    drop(guard);
    let _b_holds = dir_b.lock("lock").unwrap();
    assert_eq!(
        dir_a.lock("lock").err().map(|e| e.kind()),
        Some(ErrorKind::WouldBlock)
    );
}

/// Parts a crash left under file ids no manifest names (uploaded, but the
/// directory never synced) are deleted by the next writer of the
/// directory; named files keep theirs.
#[test]
fn a_writer_sweeps_parts_that_no_manifest_names() {
    let server = server();
    let (dir, kept) = new_file(&server, "sweep", "kept");
    kept.write_all_at(&data(50_000, 1), 0).unwrap();
    kept.sync_data().unwrap();
    let orphan = dir.open("orphan", OpenMode::CreateNew).unwrap();
    orphan.write_all_at(&data(70_000, 2), 0).unwrap();
    orphan.sync_data().unwrap();
    let parts = |server: &S3Server| {
        objects(server, "sweep/d/~f")
            .iter()
            .filter_map(|k| k.split('/').nth(3).map(str::to_string))
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        parts(&server).len(),
        2,
        "both files' parts are in the bucket"
    );
    // The host dies here: no directory sync, no cleanup.
    drop((orphan, kept, dir));

    let (fresh, _) = backend(&server, "sweep").dir("d", false).unwrap();
    assert_eq!(parts(&server).len(), 2, "a reader sweeps nothing");
    let _lease = fresh.lock("lock").unwrap();
    assert_eq!(parts(&server).len(), 1, "the writer swept the orphan");
    assert_eq!(read_fresh(&server, "sweep", "kept"), data(50_000, 1));
    assert!(fresh.open("orphan", OpenMode::Read).is_err());
}

/// A conditional put the server carried out but whose answer was lost is
/// tried again and recognised as the backend's own write: a manifest
/// write and a lease take both succeed, and the lease is really held.
#[test]
fn a_conditional_put_whose_answer_was_lost_is_recognised_as_ours() {
    let server = server();
    let proxy = FaultProxy::start(&server).unwrap();
    let config = through(&server, &proxy, "answers");
    let backend_through = ObjectBackend::open(&config, LeaseOptions::default()).unwrap();
    let (dir, _) = backend_through.dir("d", true).unwrap();
    let file = dir.open("f", OpenMode::CreateNew).unwrap();
    file.write_all_at(b"landed", 0).unwrap();
    file.sync_data().unwrap();
    proxy.set(Fault::LoseAnswer(1));
    dir.sync().expect("the manifest put landed and is ours");
    assert_eq!(proxy.injected(), 1);
    assert_eq!(read_fresh(&server, "answers", "f"), b"landed");

    proxy.set(Fault::LoseAnswer(1));
    let _held = dir.lock("lock").expect("the lease put landed and is ours");
    assert_eq!(proxy.injected(), 2);
    let (rival, _) = backend(&server, "answers").dir("d", false).unwrap();
    assert_eq!(
        rival.lock("lock").err().map(|e| e.kind()),
        Some(ErrorKind::WouldBlock)
    );
}

/// A runtime on `prefix` of the test bucket, 1 MiB segments.
fn s3_runtime(server: &S3Server, prefix: &str, durability: Durability) -> Runtime {
    common::bucket_runtime(
        &server.config(prefix),
        LeaseOptions::default(),
        small_segments(durability),
    )
}

fn small_segments(durability: Durability) -> StoreOptions {
    StoreOptions {
        durability,
        segment_bytes_max: 1 << 20,
        ..StoreOptions::default()
    }
}

#[test]
fn artifacts_round_trip_share_chunks_and_survive_a_fresh_host() {
    let server = server();
    // Removed files' parts deleted at once: the GC below checks the bytes.
    let runtime = common::bucket_runtime(
        &no_grace(&server, "store"),
        LeaseOptions::default(),
        small_segments(Durability::Batch),
    );
    let mut chunker = runtime.chunker("alpha").unwrap();
    let sizes = [0usize, 1, 4095, 1 << 20, 20 << 20];
    let mut ids = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let bytes = data(len, i as u64);
        let id = chunker.put(&bytes, &options()).unwrap();
        assert_eq!(chunker.get(&id).unwrap(), bytes, "{len} bytes");
        ids.push((id, bytes));
    }
    // Two artifacts sharing all but their last chunk; deleting one keeps
    // the other whole.
    let shared = data(64 << 10, 99);
    let mut first = shared.clone();
    first.extend_from_slice(b"first");
    let mut second = shared.clone();
    second.extend_from_slice(b"second");
    let first_id = chunker.put(&first, &fixed(16 << 10)).unwrap();
    let chunks_before = chunker.store().stats().chunks;
    let second_id = chunker.put(&second, &fixed(16 << 10)).unwrap();
    assert_eq!(
        chunker.store().stats().chunks,
        chunks_before + 1,
        "the shared chunks are stored once"
    );
    // A 3 MiB artifact in segments of its own, then deleted with the
    // first: GC removes their chunks and the compacted segments' objects.
    let doomed = data(3 << 20, 7);
    let doomed_id = chunker.put(&doomed, &fixed(64 << 10)).unwrap();
    let keep = data(1 << 20, 8);
    let keep_id = chunker.put(&keep, &fixed(64 << 10)).unwrap();
    ids.push((keep_id, keep));
    for id in [&first_id, &doomed_id] {
        chunker
            .store()
            .delete(&id.parse::<ArtifactId>().unwrap())
            .unwrap();
    }
    let segment_bytes = || object_bytes(&server, "store/tenants/alpha/segments/~f");
    let before = segment_bytes();
    let report = chunker.store().gc().unwrap();
    // (Its last chunks share a segment with `keep`: not worth compacting.)
    assert!(report.chunks_removed >= 40, "{report:?}");
    assert!(report.segments_removed >= 2, "{report:?}");
    let after = segment_bytes();
    assert!(
        before - after >= 2 << 20,
        "segment objects: {before} -> {after} bytes"
    );
    assert_eq!(chunker.get(&second_id).unwrap(), second);
    drop(chunker);
    drop(runtime);

    // Another host: nothing but the bucket.
    let fresh = s3_runtime(&server, "store", Durability::Batch);
    let mut chunker = fresh.chunker("alpha").unwrap();
    for (id, bytes) in &ids {
        assert!(chunker.get(id).unwrap() == *bytes);
    }
    assert_eq!(chunker.get(&second_id).unwrap(), second);
    assert!(
        chunker.get(&first_id).is_err(),
        "a deleted artifact stays deleted"
    );
    let verify = assert_verifies_clean(chunker.store());
    assert_eq!(verify.artifacts_checked, ids.len() as u64 + 1);
    assert_eq!(fresh.tenants().unwrap(), vec!["alpha".to_string()]);
}

#[test]
fn verify_finds_a_damaged_object_and_a_get_returns_none_of_its_bytes() {
    let server = server();
    let runtime = s3_runtime(&server, "damage", Durability::Batch);
    let mut chunker = runtime.chunker("t").unwrap();
    // 1 MiB segments: each artifact in segments of its own.
    let first = data(2 << 20, 1);
    let second = data(2 << 20, 2);
    let first_id = chunker.put(&first, &fixed(64 << 10)).unwrap();
    let second_id = chunker.put(&second, &fixed(64 << 10)).unwrap();
    drop(chunker);
    drop(runtime);

    // The first segment's largest part (file ids sort in creation order),
    // one byte flipped in the middle, in the server's own file of it.
    let segments = "damage/tenants/t/segments/~f";
    let keys = objects(&server, segments);
    let first_file = keys[0].split('/').nth(5).unwrap().to_string();
    let path = |key: &String| server.data_dir().join(S3_BUCKET).join(key);
    let part = keys
        .iter()
        .filter(|k| k.split('/').nth(5) == Some(&first_file))
        .max_by_key(|k| std::fs::metadata(path(k)).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(path(part)).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(path(part), &bytes).unwrap();

    let fresh = s3_runtime(&server, "damage", Durability::Batch);
    let store = fresh.tenant_store("t").unwrap();
    let report = store.verify_all();
    let damaged: Vec<String> = report
        .damaged
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(damaged, vec![first_id.clone()], "{report:?}");
    let mut chunker = fresh.chunker("t").unwrap();
    match chunker.get(&first_id) {
        Err(BlobError::Blob(WitError::Corrupted(_))) => {}
        other => panic!("a get of damaged bytes gave {:?}", other.map(|b| b.len())),
    }
    assert!(
        chunker.get(&second_id).unwrap() == second,
        "the other artifact reads whole"
    );
}

#[test]
fn gc_on_a_bucket_keeps_the_chunks_of_an_upload_in_progress() {
    let server = server();
    let runtime = s3_runtime(&server, "pins", Durability::Batch);
    let store = runtime.tenant_store("t").unwrap();
    let refs = |bytes: &[u8]| -> Vec<ChunkRef> {
        bytes
            .chunks(1000)
            .map(|c| ChunkRef {
                digest: Hash::of(c),
                len: c.len() as u32,
            })
            .collect()
    };
    let old = data(30_000, 13);
    let mut upload = store.begin_upload();
    for chunk in old.chunks(1000) {
        upload.put_chunk(&Hash::of(chunk), chunk).unwrap();
    }
    let old_id = upload
        .commit(&refs(&old), old.len() as u64, None, NewMetadata::default())
        .unwrap();
    // A second upload pins the old artifact's chunks (told present), then
    // the artifact is deleted: only the pin keeps them.
    let new = data(30_000, 14);
    let mut upload = store.begin_upload();
    let old_digests: Vec<Hash> = refs(&old).iter().map(|c| c.digest).collect();
    assert_eq!(upload.missing(&old_digests).unwrap(), vec![false; 30]);
    store.delete(&old_id).unwrap();
    for chunk in new.chunks(1000) {
        upload.put_chunk(&Hash::of(chunk), chunk).unwrap();
    }
    let report = store.gc().unwrap();
    assert_eq!(report.chunks_removed, 0, "{report:?}");
    let mut all = old.clone();
    all.extend_from_slice(&new);
    let id = upload
        .commit(&refs(&all), all.len() as u64, None, NewMetadata::default())
        .unwrap();
    drop(upload);
    drop(store);
    drop(runtime);
    let fresh = s3_runtime(&server, "pins", Durability::Batch);
    let mut chunker = fresh.chunker("t").unwrap();
    assert!(chunker.get(&id.to_string()).unwrap() == all);
    // Once nothing references the old artifact alone, GC may take only
    // what no artifact or upload holds: nothing here.
    assert_eq!(
        fresh
            .tenant_store("t")
            .unwrap()
            .gc()
            .unwrap()
            .chunks_removed,
        0
    );
}

/// A host reading a tenant beside its writer, while the writer deletes an
/// artifact and GC compacts its segments away: with the removal grace the
/// reader reads on (what it opened, deleted or not); without, its read
/// of a compacted segment fails.
#[test]
fn a_reader_on_another_host_reads_on_through_gc_within_the_removal_grace() {
    let server = server();
    for (prefix, config) in [
        ("grace", server.config("grace")),
        ("nograce", no_grace(&server, "nograce")),
    ] {
        let writer = common::bucket_runtime(
            &config,
            LeaseOptions::default(),
            small_segments(Durability::Batch),
        );
        let mut w = writer.chunker("t").unwrap();
        let doomed = data(3 << 20, 7);
        let keep = data(1 << 20, 8);
        let doomed_id = w.put(&doomed, &fixed(64 << 10)).unwrap();
        let keep_id = w.put(&keep, &fixed(64 << 10)).unwrap();
        let reader = common::bucket_reader_runtime(
            &server.config(prefix),
            small_segments(Durability::Batch),
        );
        let mut r = reader.chunker("t").unwrap();
        assert!(r.get(&keep_id).unwrap() == keep, "{prefix}");
        w.store()
            .delete(&doomed_id.parse::<ArtifactId>().unwrap())
            .unwrap();
        let report = w.store().gc().unwrap();
        assert!(report.segments_removed >= 2, "{prefix}: {report:?}");
        let read = r.get(&doomed_id);
        if prefix == "grace" {
            assert!(read.unwrap() == doomed, "the reader reads on");
        } else {
            assert!(read.is_err(), "no grace: a compacted segment is gone");
        }
        assert!(w.get(&keep_id).unwrap() == keep);
    }
    // Past the grace (zero for this writer), a writer's open deletes what
    // was kept for it, without changing anything else.
    let bytes = || object_bytes(&server, "grace/tenants/t/segments/~f");
    let kept = bytes();
    let writer = common::bucket_runtime(
        &no_grace(&server, "grace"),
        LeaseOptions::default(),
        small_segments(Durability::Batch),
    );
    writer.tenant_store("t").unwrap();
    let left = bytes();
    assert!(
        kept - left >= 2 << 20,
        "segment objects: {kept} -> {left} bytes"
    );
}

/// Multipart uploads left unfinished under the store's prefix (by another
/// client, or a tool that crashed; the store itself writes none): at keys
/// of a part and of a newer manifest. Unfinished, they are invisible to
/// LIST and GET, so a fresh host opens, reads, writes, collects and
/// verifies as if they were not there.
#[test]
fn multipart_uploads_left_unfinished_under_the_prefix_change_nothing() {
    use object_store::{ObjectStoreExt, PutPayload};
    let server = server();
    let runtime = s3_runtime(&server, "mpu", Durability::Batch);
    let mut chunker = runtime.chunker("t").unwrap();
    let first = data(1 << 20, 21);
    let first_id = chunker.put(&first, &fixed(64 << 10)).unwrap();
    drop(chunker);
    drop(runtime);

    let config = server.config("mpu");
    let (key, secret) = config.credentials.clone().unwrap();
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(S3_BUCKET)
        .with_endpoint(config.endpoint.clone().unwrap())
        .with_access_key_id(key)
        .with_secret_access_key(secret)
        .with_region("us-east-1")
        .with_allow_http(true)
        .build()
        .unwrap();
    let some_part = objects(&server, "mpu/tenants/t/segments/~f")[0].clone();
    let file_dir = some_part.rsplit_once('/').unwrap().0.to_string();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    for key in [
        format!("{file_dir}/00000000000000ff-0000000000000000-0000000000500000"),
        "mpu/tenants/t/~d/00000000000000ff".to_string(),
    ] {
        tokio.block_on(async {
            let path = object_store::path::Path::parse(&key).unwrap();
            let mut upload = bucket.put_multipart(&path).await.unwrap();
            upload
                .put_part(PutPayload::from(vec![0xAAu8; 5 << 20]))
                .await
                .unwrap();
            // Neither completed nor aborted.
        });
    }

    let fresh = s3_runtime(&server, "mpu", Durability::Batch);
    let mut chunker = fresh.chunker("t").unwrap();
    assert!(chunker.get(&first_id).unwrap() == first);
    let second = data(2 << 20, 22);
    let second_id = chunker.put(&second, &fixed(64 << 10)).unwrap();
    chunker
        .store()
        .delete(&first_id.parse::<ArtifactId>().unwrap())
        .unwrap();
    chunker.store().gc().unwrap();
    drop(chunker);
    drop(fresh);
    let again = s3_runtime(&server, "mpu", Durability::Batch);
    let mut chunker = again.chunker("t").unwrap();
    assert!(chunker.get(&second_id).unwrap() == second);
    assert!(chunker.get(&first_id).is_err());
    assert_verifies_clean(chunker.store());
}

#[test]
fn a_large_put_streams_through_in_bounded_parts() {
    let server = server();
    let backend = Arc::new(backend(&server, "big"));
    let runtime = common::bucket_runtime_on(Arc::clone(&backend), StoreOptions::default());
    let mut chunker = runtime.chunker("t").unwrap();
    let len = 64u64 << 20;
    let id = chunker
        .put_from(&mut PseudoRandom::new(5, len), &options(), &mut |_| {})
        .unwrap();
    let gets = || {
        backend
            .requests()
            .gets
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = gets();
    let mut sink = common::HashSink::default();
    chunker.get_into(&id, &mut sink, &mut |_| {}).unwrap();
    // Each block of 1 MiB (or less, at a part's end) fetched once.
    let got = gets() - before;
    assert!(got <= 64 + 64 / 4 + 4, "{got} GETs to read 64 MiB");
    let mut expected = blake3::Hasher::new();
    let mut source = PseudoRandom::new(5, len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = source.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        expected.update(&buf[..n]);
    }
    assert_eq!(sink.len, len);
    assert_eq!(sink.hasher.finalize(), expected.finalize());
    // No part is larger than the flush bound (4 MiB) plus one write's worth.
    for key in objects(&server, "big") {
        let size = std::fs::metadata(server.data_dir().join(S3_BUCKET).join(&key))
            .unwrap()
            .len();
        assert!(size <= (5 << 20), "{key}: {size} bytes");
    }
}

/// `tblob --store s3://... --endpoint ...`, each command a fresh process:
/// the example plugin's demo, put, ls, get, stat, verify, delete and gc.
#[test]
fn the_cli_runs_on_a_bucket() {
    let server = server();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("notes.txt");
    let bytes = data(300_000, 61);
    std::fs::write(&file, &bytes).unwrap();
    let store = format!("s3://{S3_BUCKET}/cli");
    let endpoint = server.endpoint();
    let tblob = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tblob"))
            .current_dir(work.path())
            .args(["--store", &store, "--endpoint", &endpoint])
            .args(args)
            .envs(server.credentials_env())
            .env_remove("TBLOB_STORE")
            .output()
            .expect("tblob runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let ok = |args: &[&str]| {
        let (code, stdout, stderr) = tblob(args);
        assert_eq!(code, Some(0), "tblob {args:?}: {stderr}");
        stdout
    };
    let (code, _, stderr) = tblob(&["ls"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("no tenant default"), "{stderr}");
    ok(&["demo", "notes.txt"]);
    // Bytes of its own (the demo's artifact stays and would share them).
    let bytes = data(300_000, 62);
    std::fs::write(&file, &bytes).unwrap();
    let id = ok(&["put", file.to_str().unwrap(), "--tag", "a:b"])
        .trim()
        .to_string();
    assert!(ok(&["ls"]).contains(&id));
    let out = work.path().join("back");
    ok(&["get", &id, "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == bytes);
    let stat: serde_json::Value = serde_json::from_str(&ok(&["stat", &id, "--json"])).unwrap();
    assert_eq!(stat["size"], 300_000);
    assert_eq!(stat["tags"][0], "a:b");
    ok(&["verify"]);
    ok(&["rm", &id]);
    let segments = || object_bytes(&server, "cli/tenants/default/segments/~f");
    let before = segments();
    let gc = ok(&["gc"]);
    assert!(gc.contains("removal grace (600 s"), "{gc}");
    assert!(!ok(&["ls"]).contains(&id));
    ok(&["verify"]);
    // The compacted segments are kept for the grace (beside the one GC
    // copied the demo's live records into); a writer with no grace
    // deletes them at its open.
    let kept = segments();
    assert!(kept >= before, "segment objects: {before} -> {kept} bytes");
    ok(&["--removal-grace", "0", "gc"]);
    let after = segments();
    assert!(
        kept - after >= 500_000,
        "segment objects: {kept} -> {after} bytes"
    );
    ok(&["verify"]);
}

/// A runtime over `config` with leases of `lease`, durable commits.
fn runtime_on(config: &ObjectConfig, lease: LeaseOptions) -> Runtime {
    common::bucket_runtime(config, lease, small_segments(Durability::Sync))
}

/// A config that reaches `server` through `proxy`, one connection per
/// request, with quick bounded retries.
fn through(server: &S3Server, proxy: &FaultProxy, prefix: &str) -> ObjectConfig {
    let mut config = server.config(prefix);
    config.endpoint = Some(proxy.endpoint());
    config.reuse_connections = false;
    config.retry_timeout = Duration::from_secs(3);
    config
}

fn short_lease() -> LeaseOptions {
    LeaseOptions {
        term: Duration::from_secs(2),
        skew: Duration::from_millis(500),
    }
}

fn check_from_fresh_host(server: &S3Server, prefix: &str, acked: &[(String, Vec<u8>)]) {
    let fresh = runtime_on(&server.config(prefix), LeaseOptions::default());
    let mut chunker = fresh.chunker("t").unwrap();
    for (id, bytes) in acked {
        assert!(chunker.get(id).unwrap() == *bytes, "{id} reads back");
    }
    let listed = tensor_blob_host::runtime::metadata::list(chunker.store(), None, 1000).unwrap();
    assert_eq!(
        listed.len(),
        acked.len(),
        "nothing unacknowledged is visible"
    );
    assert_verifies_clean(chunker.store());
}

/// Throttling (503 SlowDown) and connection resets are retried and every
/// put is acknowledged; a partition from the bucket fails the put with a
/// typed error within the retry bound, and nothing acknowledged is lost.
#[test]
fn throttling_and_resets_are_retried_and_a_partition_fails_cleanly() {
    let server = server();
    let proxy = FaultProxy::start(&server).unwrap();
    let config = through(&server, &proxy, "faults");
    let runtime = runtime_on(&config, LeaseOptions::default());
    let mut chunker = runtime.chunker("t").unwrap();
    let mut acked = Vec::new();
    for i in 0..12u64 {
        proxy.set(if i % 2 == 0 {
            Fault::SlowDown(2)
        } else {
            Fault::Reset(1)
        });
        let bytes = data(150_000 + i as usize * 1000, 200 + i);
        let id = chunker
            .put(&bytes, &options())
            .unwrap_or_else(|e| panic!("put {i} is retried through the fault: {e}"));
        acked.push((id, bytes));
    }
    assert!(proxy.injected() >= 12, "{} faults met", proxy.injected());

    proxy.set(Fault::Down);
    let started = std::time::Instant::now();
    let error = chunker
        .put(&data(100_000, 300), &options())
        .expect_err("no bucket, no acknowledgement");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "retries are bounded: {:?}",
        started.elapsed()
    );
    let message = error.to_string();
    assert!(message.contains("object store"), "{message}");
    proxy.set(Fault::Pass);
    drop(chunker);
    drop(runtime);
    check_from_fresh_host(&server, "faults", &acked);
}

/// A host cut off from the bucket loses its lease; a second host takes the
/// tenant over once the term is over and finds every acknowledged
/// artifact; the first host, reconnected, acknowledges nothing more.
#[test]
fn a_second_host_takes_over_when_the_first_ones_lease_lapses() {
    let server = server();
    let proxy = FaultProxy::start(&server).unwrap();
    let first = runtime_on(&through(&server, &proxy, "takeover"), short_lease());
    let mut first_chunker = first.chunker("t").unwrap();
    let mut acked = Vec::new();
    for i in 0..3u64 {
        let bytes = data(120_000, 400 + i);
        acked.push((first_chunker.put(&bytes, &options()).unwrap(), bytes));
    }
    // Another host cannot open it for writing while the lease is renewed.
    let rival = runtime_on(
        &server.config("takeover"),
        LeaseOptions {
            term: Duration::from_secs(2),
            skew: Duration::from_millis(500),
        },
    );
    let refused = rival.tenant_store("t");
    assert!(refused.is_err(), "the lease is held");
    drop(rival);

    proxy.set(Fault::Down);
    let second = runtime_on(&server.config("takeover"), short_lease());
    let started = std::time::Instant::now();
    let mut second_chunker = second.chunker("t").expect("taken over after the term");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    for (id, bytes) in &acked {
        assert!(second_chunker.get(id).unwrap() == *bytes);
    }
    let later = data(90_000, 500);
    acked.push((second_chunker.put(&later, &options()).unwrap(), later));

    // The first host is back on the network but no longer holds the lease.
    proxy.set(Fault::Pass);
    let error = first_chunker
        .put(&data(80_000, 501), &options())
        .expect_err("a host whose lease lapsed acknowledges nothing");
    assert!(!error.to_string().is_empty());
    drop(first_chunker);
    drop(first);
    drop(second_chunker);
    drop(second);
    check_from_fresh_host(&server, "takeover", &acked);
}

/// Four scans at once of four files share the read cache (11 blocks, 8
/// fetched ahead in all) without evicting each other's blocks unread.
#[test]
fn concurrent_scans_share_the_read_cache_without_thrashing() {
    let server = server();
    let (dir, _) = backend(&server, "cscan").dir("d", true).unwrap();
    let len = 16usize << 20;
    let mut all = Vec::new();
    for f in 0..4 {
        let file = dir.open(&format!("f{f}"), OpenMode::CreateNew).unwrap();
        let bytes = data(len, 100 + f);
        for piece in bytes.chunks(3 << 20) {
            let at = piece.as_ptr() as usize - bytes.as_ptr() as usize;
            file.write_all_at(piece, at as u64).unwrap();
        }
        file.sync_data().unwrap();
        all.push(bytes);
    }
    dir.sync().unwrap();
    let fresh = backend(&server, "cscan");
    let (dir, _) = fresh.dir("d", false).unwrap();
    let before = fresh
        .requests()
        .gets
        .load(std::sync::atomic::Ordering::Relaxed);
    std::thread::scope(|s| {
        for (f, bytes) in all.iter().enumerate() {
            let file = dir.open(&format!("f{f}"), OpenMode::Read).unwrap();
            s.spawn(move || {
                let mut at = 0usize;
                while at < len {
                    let n = (100 << 10).min(len - at);
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, at as u64).unwrap();
                    assert!(buf == bytes[at..at + n]);
                    at += n;
                }
            });
        }
    });
    let gets = fresh
        .requests()
        .gets
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    // 64 blocks of 1 MiB.
    assert!(gets <= 80, "{gets} GETs for 4 scans of 16 MiB");
}
