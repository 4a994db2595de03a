//! Garbage collection: free the records of chunks nothing references or
//! pins by compacting segments that are mostly dead, one at a time, then
//! compact `meta.log` if most of it is deleted artifacts and superseded
//! updates.
//!
//! Marking is implicit: reference counts are derived from live manifests
//! and pins from open uploads, so a chunk with neither is garbage, and the
//! index keeps per-segment accounts of live and garbage bytes as they
//! change ([`super::index`]). A pass therefore never walks the index: it
//! ranks segments by their accounts (a walk of the segments), and compacts
//! one by going through that segment's chunks in batches of
//! [`BATCH_CHUNKS`], taking the store lock per batch (to drop garbage) and
//! per copied chunk (to append it), never while reading chunk bytes or
//! syncing. Compaction copies a sealed segment's live records into the
//! active segment, fsyncs the copies, and only then unlinks the old file.
//! A crash at any point leaves every live chunk in at least one segment
//! (perhaps two, which the next open and GC tidy up). Garbage in a segment
//! not worth compacting stays indexed (and is shown in `Stats` as pending),
//! so a put of the same bytes still finds it. Never removes a pinned
//! chunk, never removes the active segment.

use std::collections::BTreeSet;

use super::format::{
    self, MetaRecord, CHUNK_HEADER_BYTES, META_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use super::index::Location;
use super::meta::{self, Artifact};
use super::types::Hash;
use super::{lock, segment, GcPolicy, GcReport, Inner, State, Store, StoreError};

/// Chunks of one segment looked at per taking of the store lock while GC
/// drops garbage: bounds how long a put or get can wait behind GC.
const BATCH_CHUNKS: usize = 256;

/// Whether `dead_bytes` of `record_bytes` reach `ratio_min`.
fn worth_compacting(record_bytes: u64, dead_bytes: u64, ratio_min: f64) -> bool {
    dead_bytes > 0 && dead_bytes as f64 >= ratio_min * record_bytes as f64
}

/// Segment `id`'s record bytes on disk (holes GC punched excluded) and
/// how many of them are dead (hold no live record).
pub(super) fn segment_bytes(state: &State, id: u64) -> (u64, u64) {
    let Some(segment) = state.segments.segments.get(&id) else {
        return (0, 0);
    };
    let on_disk = segment
        .file
        .allocated_bytes()
        .map_or(segment.len, |allocated| allocated.min(segment.len));
    let record_bytes = on_disk.saturating_sub(SEGMENT_HEADER_BYTES);
    let live_bytes = state.db.segment(id).map_or(0, |a| a.live_bytes());
    (record_bytes, record_bytes.saturating_sub(live_bytes))
}

/// One pass under `policy` (see [`GcPolicy`]).
pub(super) fn run(store: &Store, policy: &GcPolicy) -> Result<GcReport, StoreError> {
    let inner = &store.inner;
    let _one_at_a_time = lock(&inner.gc);
    let mut report = GcReport::default();
    // Disk bytes GC itself adds: copies and the headers of new segments.
    let mut written_bytes = 0u64;
    let mut removed_bytes = 0u64;
    let mut sealed = Vec::new();
    let worth = |state: &State, id: u64| {
        let (record_bytes, dead_bytes) = segment_bytes(state, id);
        worth_compacting(record_bytes, dead_bytes, policy.segment_dead_ratio_min)
    };
    let candidates: Vec<(u64, u64)> = {
        let mut state = lock(&inner.state);
        report.disk_bytes_before = state.segments.disk_bytes();
        let active = state.segments.active;
        let mut punch_active = false;
        if worth(&state, active) {
            // Seal it so its garbage can go too; uploads move on to the next.
            match state.segments.rotate() {
                Ok(id) => {
                    sealed.push(id);
                    written_bytes += SEGMENT_HEADER_BYTES;
                }
                // A full disk cannot take even a new segment's header:
                // free the active segment's garbage in place instead.
                Err(StoreError::NoSpace(_)) => punch_active = true,
                Err(e) => return Err(e),
            }
        }
        if punch_active {
            drop(state);
            punch(store, active, &mut report)?;
            state = lock(&inner.state);
        }
        let active = state.segments.active;
        // A walk of the segments, not of the index: most dead bytes first.
        let mut candidates: Vec<(u64, u64, u64)> = state
            .segments
            .segments
            .keys()
            .filter(|&&id| id != active)
            .filter_map(|&id| {
                let (record_bytes, dead_bytes) = segment_bytes(&state, id);
                worth_compacting(record_bytes, dead_bytes, policy.segment_dead_ratio_min)
                    .then_some((id, dead_bytes, record_bytes - dead_bytes))
            })
            .collect();
        candidates.sort_by_key(|&(id, dead_bytes, _)| (std::cmp::Reverse(dead_bytes), id));
        candidates
            .into_iter()
            .map(|(id, _, live_bytes)| (id, live_bytes))
            .collect()
    };
    let mut outcome = Ok(());
    for (done, &(id, live_bytes)) in candidates.iter().enumerate() {
        // The first segment goes whole whatever its size, so a segment
        // with more live bytes than the budget is still compacted.
        if done > 0 && report.bytes_copied.saturating_add(live_bytes) > policy.pass_copy_bytes_max {
            report.segments_pending = (candidates.len() - done) as u64;
            break;
        }
        outcome = match compact(
            store,
            id,
            &mut report,
            &mut written_bytes,
            &mut removed_bytes,
            &mut sealed,
        ) {
            // No room to copy the live records out: free the garbage in
            // place, so a full disk still gets space back.
            Err(StoreError::NoSpace(_)) => punch(store, id, &mut report),
            other => other,
        };
        if outcome.is_err() {
            break;
        }
    }
    // Segments sealed above get their hints (unless compacted meanwhile).
    let outcome = outcome.and_then(|()| {
        sealed
            .into_iter()
            .try_for_each(|id| store.inner.finish_seal(id))
    });
    report.bytes_reclaimed = removed_bytes.saturating_sub(written_bytes);
    let finish = |report: &mut GcReport| {
        report.disk_bytes_after = lock(&inner.state).segments.disk_bytes();
    };
    if let Err(error) = outcome {
        finish(&mut report);
        return Err(error);
    }
    report.meta_bytes_reclaimed = match compact_meta_log(store, policy) {
        // The old log stays in force; the next GC tries again.
        Err(StoreError::NoSpace(_)) => 0,
        other => other?,
    };
    finish(&mut report);
    Ok(report)
}

/// Punches out the garbage of segment `id` in place (see
/// [`Segments::dead_ranges`](super::segment::Segments::dead_ranges)):
/// first every unsynced copy GC made is synced (a punch may reach the disk
/// before them), then the segment's hint is removed and that removal made
/// durable (a hint listing a punched record would index zeros), then the
/// holes are punched and the segment synced. Needs no free space. Returns
/// the garbage chunks dropped and the bytes punched (what the file's
/// allocation shrank by, so holes punched before are not counted again).
fn punch(store: &Store, id: u64, report: &mut GcReport) -> Result<(), StoreError> {
    let inner = &store.inner;
    // No hint of this segment is written from the records forgotten below
    // until the punch is done or abandoned.
    let _hints = lock(&inner.hints);
    let plans = lock(&inner.state).segments.sync_plans_all();
    inner.run_sync_plans(plans)?;
    let (file, ranges, forgotten, writer) = {
        let mut state = lock(&inner.state);
        let Some(file) = state.segments.handle(id) else {
            return Ok(());
        };
        let mut live: Vec<(u64, u32)> = Vec::new();
        for (digest, location, _, stored) in inner.db(state.db.chunks_in(id))? {
            if !drop_if_garbage(inner, &mut state, report, &digest, location)? {
                live.push((location.offset, stored));
            }
        }
        let (ranges, forgotten) = state.segments.dead_ranges(id, &live);
        state.segments.remove_hint(id)?;
        (file, ranges, forgotten, state.segments.hint_writer())
    };
    inner.note_sync(writer.sync_dir())?;
    // The catalog database's last checkpoint must not place a chunk in a
    // hole: it is taken now, with the garbage dropped. Tables rebuilt from
    // the disk meanwhile index that garbage again: nothing is punched, and
    // the records are put back for the segment's next hint (none can be
    // written meanwhile: the hint lock is held).
    let generation = inner.tables_generation();
    inner.checkpoint_tables(&lock(&inner.meta_log))?;
    if inner.tables_generation() != generation {
        lock(&inner.state).segments.restore_records(id, forgotten);
        return Ok(());
    }
    let allocated = |file: &dyn super::backend::BackendFile| {
        file.allocated_bytes().or_else(|_| file.len()).unwrap_or(0)
    };
    let allocated_before = allocated(&*file);
    let mut punched = 0;
    let mut result = Ok(());
    for (offset, len) in ranges {
        match file.punch_hole(offset, len) {
            Ok(()) => punched += len,
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => break,
            Err(e) => {
                result = Err(StoreError::io(
                    format!("punching a hole in segment {}", segment::segment_name(id)),
                    e,
                ));
                break;
            }
        }
    }
    if punched > 0 {
        report.bytes_punched += allocated_before.saturating_sub(allocated(&*file));
    }
    result?;
    if punched == 0 {
        return Ok(());
    }
    inner.note_sync(inner.fsyncs.data(&*file).map_err(|e| {
        StoreError::io(format!("syncing segment {}", segment::segment_name(id)), e)
    }))?;
    Ok(())
}

/// Rewrites `meta.log` as one commit (and at most one update) per live
/// artifact, in commit order, when its dead share reaches
/// [`GcPolicy::meta_log_dead_ratio_min`] (and it is at least
/// [`GcPolicy::meta_log_bytes_min`] long). The catalog is read out of the
/// tables twice (to measure the live records, then to write them), a page
/// at a time ([`Snapshot`]): a known cost, kept to passes where the log is
/// long enough to matter. Holds the log lock throughout, so no commit,
/// delete or update lands meanwhile; the store lock only while reading a
/// page. A log whose replay
/// found damage is left alone (see [`MetaLog::damaged`](super::meta::MetaLog::damaged)).
/// Returns the bytes freed.
fn compact_meta_log(store: &Store, policy: &GcPolicy) -> Result<u64, StoreError> {
    let inner = &store.inner;
    let mut meta_log = lock(&inner.meta_log);
    if meta_log.damaged() || meta_log.len() < policy.meta_log_bytes_min {
        return Ok(0);
    }
    // Paged out of the tables under the state lock a page at a time: the
    // log lock keeps the catalog as it is meanwhile.
    let records = || Snapshot::records(|after| lock(&inner.state).db.snapshot_page(after));
    let mut live_bytes = 0u64;
    for record in records() {
        live_bytes += format::meta_record_len(&record?);
    }
    let old_len = meta_log.len();
    let record_bytes = old_len - META_HEADER_BYTES;
    if !worth_compacting(
        record_bytes,
        record_bytes.saturating_sub(live_bytes),
        policy.meta_log_dead_ratio_min,
    ) {
        return Ok(0);
    }
    let result = meta_log.rewrite(records());
    inner
        .meta_log_bytes
        .store(meta_log.len(), std::sync::atomic::Ordering::Relaxed);
    let new_len = if meta_log.sync_failed() {
        inner.note_sync(result)?
    } else {
        result?
    };
    // The checkpoint covered the old log: the next open would rebuild.
    inner.checkpoint_tables(&meta_log)?;
    Ok(old_len.saturating_sub(new_len))
}

/// The catalog as a compacted `meta.log` holds it: every container first
/// (the bound commits that follow need them), then each live artifact's
/// commit (with its binding) and update, in commit order. Read a page of
/// [`SNAPSHOT_PAGE`] artifacts at a time, so memory stays bounded by a page
/// whatever the catalog holds; the caller holds the log lock, so nothing in
/// the catalog changes between pages.
pub(super) struct Snapshot;

/// Artifacts a snapshot reads from the tables at once.
pub(super) const SNAPSHOT_PAGE: usize = 1024;

/// One page of a snapshot: the containers on the first (`after` = `None`),
/// then artifacts with their bindings, and the last seq read.
pub(super) type SnapshotPage = (Vec<MetaRecord>, Vec<(Artifact, Option<(String, String)>)>);

impl Snapshot {
    /// The records, reading each page with `page(after)`.
    pub(super) fn records<F>(mut page: F) -> impl Iterator<Item = Result<MetaRecord, StoreError>>
    where
        F: FnMut(Option<u64>) -> Result<SnapshotPage, StoreError>,
    {
        let mut after: Option<u64> = None;
        let mut started = false;
        let mut done = false;
        let mut pending = std::collections::VecDeque::new();
        std::iter::from_fn(move || loop {
            if let Some(record) = pending.pop_front() {
                return Some(Ok(record));
            }
            if done {
                return None;
            }
            let (containers, live) = match page(after) {
                Ok(read) => read,
                Err(error) => {
                    done = true;
                    return Some(Err(error));
                }
            };
            if !started {
                started = true;
                pending.extend(containers);
            }
            done = live.len() < SNAPSHOT_PAGE;
            after = live.last().map(|(artifact, _)| artifact.seq).or(after);
            for (artifact, bound) in &live {
                pending.extend(meta::snapshot_records(artifact, bound.as_ref()));
            }
        })
    }
}

/// Drops `digest` from the index if it is garbage still at `from`,
/// counting it in `report`; whether it was.
/// A failure of the catalog database stops the store's writes (see
/// `Inner::db`): the change may be half applied to its tables.
fn drop_if_garbage(
    inner: &Inner,
    state: &mut State,
    report: &mut GcReport,
    digest: &Hash,
    from: Location,
) -> Result<bool, StoreError> {
    let dropped = inner.db(state.db.remove_garbage(digest, from))?;
    if let Some(len) = dropped {
        report.chunks_removed += 1;
        report.chunk_bytes_removed += u64::from(len);
    }
    Ok(dropped.is_some())
}

/// Moves the live records of sealed segment `id` into the active segment
/// and removes it; its garbage is dropped from the index on the way, in
/// batches. A chunk that fails its hash check stays where it is, with its
/// segment, for `verify` to report.
fn compact(
    store: &Store,
    id: u64,
    report: &mut GcReport,
    written_bytes: &mut u64,
    removed_bytes: &mut u64,
    sealed: &mut Vec<u64>,
) -> Result<(), StoreError> {
    let inner = &store.inner;
    let (chunks, file) = {
        let state = lock(&inner.state);
        let file = state
            .segments
            .handle(id)
            .expect("candidate segments are open");
        (inner.db(state.db.chunks_in(id))?, file)
    };
    let mut written = BTreeSet::new();
    for batch in chunks.chunks(BATCH_CHUNKS) {
        let live: Vec<(Hash, Location, u32, u32)> = {
            let mut state = lock(&inner.state);
            let mut live = Vec::with_capacity(batch.len());
            for &(digest, from, len, stored) in batch {
                if !drop_if_garbage(inner, &mut state, report, &digest, from)? {
                    live.push((digest, from, len, stored));
                }
            }
            live
        };
        for (digest, from, len, stored) in live {
            // Copied as stored (a compressed record stays compressed),
            // after checking it holds the chunk.
            let read = segment::read_verified_record(&*file, id, from.offset, &digest, len, stored);
            let bytes = match read {
                Ok(bytes) => bytes,
                Err(StoreError::Corrupted(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            let mut state = lock(&inner.state);
            // Deleted and unpinned while we read it: no need to copy.
            if drop_if_garbage(inner, &mut state, report, &digest, from)? {
                continue;
            }
            let active_before = state.segments.active;
            let (segment, offset, rotated) = state.segments.append(&digest, &bytes, len)?;
            if segment != active_before {
                *written_bytes += SEGMENT_HEADER_BYTES;
            }
            sealed.extend(rotated);
            let moved = inner.db(state
                .db
                .relocate(&digest, from, Location { segment, offset }))?;
            assert!(moved, "only GC moves or drops chunks, and GC runs alone");
            written.insert(segment);
            let record_bytes = CHUNK_HEADER_BYTES + u64::from(stored);
            *written_bytes += record_bytes;
            report.bytes_copied += record_bytes;
            let writeback = state.segments.take_writeback();
            drop(state);
            if let Some(writeback) = writeback {
                writeback.start();
            }
        }
    }
    // The copies must be durable before the originals go.
    let plans: Vec<_> = {
        let state = lock(&inner.state);
        written
            .into_iter()
            .filter_map(|segment| state.segments.sync_plan(segment))
            .collect()
    };
    store.inner.run_sync_plans(plans)?;
    // The catalog database's last checkpoint must place no chunk in the
    // segment about to go: it is taken now, with the chunks moved. Tables
    // rebuilt from the disk meanwhile index the originals again: the
    // segment stays (a later pass compacts it).
    let generation = inner.tables_generation();
    inner.checkpoint_tables(&lock(&inner.meta_log))?;
    let mut state = lock(&inner.state);
    if inner.tables_generation() != generation {
        return Ok(());
    }
    assert!(
        state.db.segment(id).is_none(),
        "nothing is added to a sealed segment"
    );
    *removed_bytes += state.segments.remove(id)?;
    let writer = state.segments.hint_writer();
    drop(state);
    writer.sync_dir()?;
    report.segments_removed += 1;
    Ok(())
}
