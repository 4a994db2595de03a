//! Tests of incremental GC: per-segment accounting, budgeted passes,
//! truthful reports, and reads racing compaction.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{data, get, open, put, segment_files, unsynced};
use crate::store::*;

/// Small segments, so a few artifacts span many of them.
fn small_segments() -> StoreOptions {
    StoreOptions {
        segment_bytes_max: 16 * 1024,
        ..unsynced()
    }
}

/// Twenty 6000-byte artifacts of 1000-byte chunks over many 16 KiB
/// segments; then every artifact but each fourth is deleted.
fn mostly_deleted(store: &Store) -> Vec<(ArtifactId, Vec<u8>)> {
    let contents: Vec<Vec<u8>> = (0..20).map(|i| data(6000, 500 + i)).collect();
    let ids: Vec<ArtifactId> = contents.iter().map(|c| put(store, c, 1000)).collect();
    let mut kept = Vec::new();
    for (i, (id, content)) in ids.into_iter().zip(contents).enumerate() {
        if i % 4 == 3 {
            kept.push((id, content));
        } else {
            store.delete(&id).unwrap();
        }
    }
    kept
}

#[test]
fn a_budgeted_pass_compacts_one_segment_at_a_time_and_a_second_full_pass_reports_nothing() {
    // Goal: `gc_pass` stays within its copy budget (one segment with live
    // records per pass when the budget is tiny, the first always whole), repeated passes
    // finish the job, reports count only what each pass did, and once
    // nothing is left a pass reports nothing (the old `tblob gc` repeated
    // "removed 94 chunks" forever). Method: many small segments, 3/4 of
    // the artifacts deleted; budgeted passes until none is pending, each
    // report checked against the stats before and after it; then two full
    // passes, the second all zeros; the accounting recounted throughout.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, small_segments());
    let kept = mostly_deleted(&store);
    let garbage_before = store.stats();
    assert_eq!(garbage_before.garbage_chunks, 15 * 6);
    assert_eq!(garbage_before.garbage_bytes, 15 * 6000);
    store.check_gc_accounting().unwrap();
    let policy = GcPolicy {
        pass_copy_bytes_max: 1,
        ..GcPolicy::default()
    };
    let mut passes = 0;
    let mut freed = 0;
    loop {
        let before = store.stats();
        let report = store.gc_pass(&policy).unwrap();
        let after = store.stats();
        store.check_gc_accounting().unwrap();
        passes += 1;
        // All-garbage segments cost no copies; of the others, the budget
        // lets one through (a 16 KiB segment's live records at most).
        assert!(report.bytes_copied <= 16 * 1024, "over budget: {report:?}");
        assert_eq!(report.disk_bytes_before, before.disk_bytes);
        assert_eq!(report.disk_bytes_after, after.disk_bytes);
        assert_eq!(
            before.garbage_chunks - after.garbage_chunks,
            report.chunks_removed,
            "{report:?}"
        );
        assert_eq!(
            before.garbage_bytes - after.garbage_bytes,
            report.chunk_bytes_removed
        );
        assert_eq!(
            before.disk_bytes - after.disk_bytes,
            report.bytes_reclaimed,
            "{report:?}"
        );
        freed += report.chunks_removed;
        for (id, content) in &kept {
            assert_eq!(&get(&store, id).unwrap(), content);
        }
        if report.segments_pending == 0 {
            break;
        }
        assert!(passes < 100, "passes make progress");
    }
    assert!(passes > 2, "a tiny budget takes several passes: {passes}");
    assert!(freed > 0);
    let full = store.gc().unwrap();
    let again = store.gc().unwrap();
    assert_eq!(
        GcReport {
            disk_bytes_before: 0,
            disk_bytes_after: 0,
            ..again
        },
        GcReport::default(),
        "nothing new after {full:?}"
    );
    let stats = store.stats();
    assert_eq!(again.disk_bytes_before, stats.disk_bytes);
    assert_eq!(again.disk_bytes_after, stats.disk_bytes);
    assert!(
        stats.disk_bytes < garbage_before.disk_bytes / 2,
        "{garbage_before:?} -> {stats:?}"
    );
    assert!(segment_files(&dir).len() < 12);
    drop(store);
    // What is pending after a reopen is what was pending before it.
    let store = open(&dir, small_segments());
    assert_eq!(store.stats(), stats);
    assert_eq!(store.gc().unwrap().chunks_removed, 0);
    for (id, content) in &kept {
        assert_eq!(&get(&store, id).unwrap(), content);
    }
}

#[test]
fn the_segment_with_most_garbage_goes_first() {
    // Goal: a budgeted pass spends its budget where it frees most.
    // Method: two sealed segments worth compacting, one with much more
    // garbage; a pass with a budget of one segment must remove that one.
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreOptions {
            // Ten 3548-byte records and the header fit; the eleventh not.
            segment_bytes_max: 36_000,
            ..unsynced()
        },
    );
    // Segment 1: ten artifacts, 9 deleted. Segment 2: ten, 6 deleted.
    let first: Vec<ArtifactId> = (0..10).map(|i| put(&store, &data(3500, i), 3500)).collect();
    let second: Vec<ArtifactId> = (0..10)
        .map(|i| put(&store, &data(3500, 100 + i), 3500))
        .collect();
    put(&store, &data(3500, 999), 3500);
    assert!(segment_files(&dir).len() >= 3);
    for id in &first[..9] {
        store.delete(id).unwrap();
    }
    for id in &second[..6] {
        store.delete(id).unwrap();
    }
    let report = store
        .gc_pass(&GcPolicy {
            pass_copy_bytes_max: 1,
            ..GcPolicy::default()
        })
        .unwrap();
    assert_eq!(
        (report.segments_removed, report.chunks_removed),
        (1, 9),
        "{report:?}"
    );
    assert_eq!(report.segments_pending, 1);
    assert_eq!(get(&store, &first[9]).unwrap(), data(3500, 9));
}

#[test]
fn reads_racing_deletes_and_compaction_get_the_right_bytes_or_not_found() {
    // Goal: the promise for readers open while GC runs: a chunk of a live
    // artifact always reads back right, even while compaction moves it;
    // a chunk of an artifact deleted meanwhile reads back right or, once
    // collected, is a clean `NotFound`; never other bytes, never another
    // error. Method: reader threads loop over the digests of live and
    // doomed artifacts with `read_chunk` while the main thread deletes
    // the doomed ones and runs GC passes over tiny segments, so records
    // move and vanish under the readers; the readers stop when told (a
    // flag), and each asserts every result it saw.
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreOptions {
            segment_bytes_max: 8 * 1024,
            ..unsynced()
        },
    );
    let live: Vec<Vec<u8>> = (0..8).map(|i| data(4000, 700 + i)).collect();
    let doomed: Vec<Vec<u8>> = (0..24).map(|i| data(4000, 800 + i)).collect();
    for content in &live {
        put(&store, content, 500);
    }
    let doomed_ids: Vec<ArtifactId> = doomed.iter().map(|c| put(&store, c, 500)).collect();
    let chunks = |contents: &[Vec<u8>]| -> Vec<(Hash, Vec<u8>)> {
        contents
            .iter()
            .flat_map(|c| c.chunks(500).map(|b| (Hash::of(b), b.to_vec())))
            .collect()
    };
    let (live_chunks, doomed_chunks) = (chunks(&live), chunks(&doomed));
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let (mut reads, mut not_found) = (0u64, 0u64);
                    while !done.load(Ordering::Relaxed) {
                        for (digest, bytes) in &live_chunks {
                            assert_eq!(&store.read_chunk(digest).unwrap(), bytes);
                            reads += 1;
                        }
                        for (digest, bytes) in &doomed_chunks {
                            match store.read_chunk(digest) {
                                Ok(read) => assert_eq!(&read, bytes),
                                Err(StoreError::NotFound(_)) => not_found += 1,
                                Err(e) => panic!("a read racing GC failed: {e}"),
                            }
                            reads += 1;
                        }
                    }
                    (reads, not_found)
                })
            })
            .collect();
        let policy = GcPolicy {
            pass_copy_bytes_max: 4096,
            ..GcPolicy::default()
        };
        for (i, id) in doomed_ids.iter().enumerate() {
            store.delete(id).unwrap();
            if i % 3 == 2 {
                store.gc_pass(&policy).unwrap();
            }
        }
        store.gc().unwrap();
        done.store(true, Ordering::Relaxed);
        for reader in readers {
            let (reads, _) = reader.join().unwrap();
            assert!(reads > 0);
        }
    });
    // Doomed chunks still indexed are pending garbage (in segments not
    // worth compacting); the rest were collected.
    let mut still_there = 0;
    for (digest, bytes) in &doomed_chunks {
        match store.read_chunk(digest) {
            Ok(read) => {
                assert_eq!(&read, bytes);
                still_there += 1;
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(store.stats().garbage_chunks, still_there);
    assert!(
        still_there < doomed_chunks.len() as u64 / 2,
        "most were collected while the readers ran: {still_there}"
    );
    store.check_gc_accounting().unwrap();
}
