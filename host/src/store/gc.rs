//! Garbage collection: drop chunks nothing references or pins, compact
//! segments that are mostly garbage, then compact `meta.log` if most of it
//! is deleted artifacts and superseded updates.
//!
//! Marking is implicit: reference counts are derived from live manifests
//! and pins from open uploads, so a chunk with neither is garbage. Sweeping
//! only forgets index entries; bytes are reclaimed by compaction, which
//! copies a sealed segment's live records into the active segment, fsyncs
//! the copies, and only then unlinks the old file. A crash at any point
//! leaves every live chunk in at least one segment (perhaps two, which the
//! next open and GC tidy up). Never removes a pinned chunk, never removes
//! the active segment, never holds the store lock while reading or hashing
//! chunk bytes.

use std::collections::BTreeSet;

use super::format::{self, CHUNK_HEADER_BYTES, META_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::index::Location;
use super::meta::{self, Artifact};
use super::{lock, segment, GcReport, Store, StoreError};

/// Whether a segment (or the metadata log) with `record_bytes` of records,
/// `live_bytes` of them live, is worth rewriting: all garbage, or more garbage than live.
fn worth_compacting(record_bytes: u64, live_bytes: u64) -> bool {
    let garbage_bytes = record_bytes.saturating_sub(live_bytes);
    garbage_bytes > 0 && (live_bytes == 0 || garbage_bytes > live_bytes)
}

pub(super) fn run(store: &Store) -> Result<GcReport, StoreError> {
    let inner = &store.inner;
    let _one_at_a_time = lock(&inner.gc);
    let mut report = GcReport::default();
    // Disk bytes GC itself adds: copies and the headers of new segments.
    let mut written_bytes = 0u64;
    let mut removed_bytes = 0u64;
    let mut sealed = Vec::new();
    let candidates: Vec<u64> = {
        let mut state = lock(&inner.state);
        report.chunks_removed = state.index.sweep();
        let live = state.index.live_bytes_by_segment();
        let worth = |id: u64, len: u64| {
            worth_compacting(
                len - SEGMENT_HEADER_BYTES,
                live.get(&id).copied().unwrap_or(0),
            )
        };
        let active = state.segments.active;
        let active_len = state.segments.segments[&active].len;
        let mut punch_active = false;
        if worth(active, active_len) {
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
            report.bytes_punched += punch(store, active)?;
            state = lock(&inner.state);
        }
        let active = state.segments.active;
        state
            .segments
            .segments
            .iter()
            .filter(|(&id, segment)| id != active && worth(id, segment.len))
            .map(|(&id, _)| id)
            .collect()
    };
    let outcome = candidates.into_iter().try_for_each(|id| {
        match compact(
            store,
            id,
            &mut report,
            &mut written_bytes,
            &mut removed_bytes,
            &mut sealed,
        ) {
            // No room to copy the live records out: free the garbage in
            // place, so a full disk still gets space back.
            Err(StoreError::NoSpace(_)) => {
                report.bytes_punched += punch(store, id)?;
                Ok(())
            }
            other => other,
        }
    });
    // Segments sealed above get their hints (unless compacted meanwhile).
    let outcome = outcome.and_then(|()| {
        sealed
            .into_iter()
            .try_for_each(|id| store.inner.finish_seal(id))
    });
    report.bytes_reclaimed = removed_bytes.saturating_sub(written_bytes);
    outcome?;
    report.meta_bytes_reclaimed = match compact_meta_log(store) {
        // The old log stays in force; the next GC tries again.
        Err(StoreError::NoSpace(_)) => 0,
        other => other?,
    };
    Ok(report)
}

/// Punches out the garbage of segment `id` in place (see
/// [`Segments::dead_ranges`](super::segment::Segments::dead_ranges)):
/// first every unsynced copy GC made is synced (a punch may reach the disk
/// before them), then the segment's hint is removed and that removal made
/// durable (a hint listing a punched record would index zeros), then the
/// holes are punched and the segment synced. Needs no free space. Returns
/// the bytes punched.
fn punch(store: &Store, id: u64) -> Result<u64, StoreError> {
    let inner = &store.inner;
    let plans = lock(&inner.state).segments.sync_plans_all();
    inner.run_sync_plans(plans)?;
    let (file, ranges, writer) = {
        let mut state = lock(&inner.state);
        let live: Vec<(u64, u32)> = state
            .index
            .chunks_in(id)
            .into_iter()
            .map(|(_, location, len)| (location.offset, len))
            .collect();
        let Some(file) = state.segments.handle(id) else {
            return Ok(0);
        };
        let ranges = state.segments.dead_ranges(id, &live);
        state.segments.remove_hint(id)?;
        (file, ranges, state.segments.hint_writer())
    };
    inner.note_sync(writer.sync_dir())?;
    let mut punched = 0;
    for (offset, len) in ranges {
        match file.punch_hole(offset, len) {
            Ok(()) => punched += len,
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => return Ok(punched),
            Err(e) => {
                return Err(StoreError::io(
                    format!("punching a hole in segment {}", segment::segment_name(id)),
                    e,
                ))
            }
        }
    }
    inner.note_sync(inner.fsyncs.data(&*file).map_err(|e| {
        StoreError::io(format!("syncing segment {}", segment::segment_name(id)), e)
    }))?;
    Ok(punched)
}

/// Rewrites `meta.log` as one commit (and at most one update) per live
/// artifact, in commit order, when that is less than half its size. Holds
/// the log lock throughout, so no commit, delete or update lands meanwhile;
/// the store lock only while copying the catalog out. A log whose replay
/// found damage is left alone (see [`MetaLog::damaged`](super::meta::MetaLog::damaged)).
/// Returns the bytes freed.
fn compact_meta_log(store: &Store) -> Result<u64, StoreError> {
    let inner = &store.inner;
    let mut meta_log = lock(&inner.meta_log);
    if meta_log.damaged() {
        return Ok(0);
    }
    let live: Vec<Artifact> = {
        let state = lock(&inner.state);
        let catalog = &state.catalog;
        catalog
            .order
            .values()
            .map(|id| catalog.artifacts[id].clone())
            .collect()
    };
    let records = || live.iter().flat_map(meta::snapshot_records);
    let live_bytes: u64 = records()
        .map(|record| format::meta_record_len(&record))
        .sum();
    let old_len = meta_log.len();
    if !worth_compacting(old_len - META_HEADER_BYTES, live_bytes) {
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
    Ok(old_len.saturating_sub(new_len))
}

/// Moves the live records of sealed segment `id` into the active segment
/// and removes it. A chunk that fails its hash check stays where it is,
/// with its segment, for `verify` to report.
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
        (state.index.chunks_in(id), file)
    };
    let mut written = BTreeSet::new();
    for (digest, from, len) in chunks {
        let bytes = match segment::read_payload(&*file, id, from.offset, &digest, len) {
            Ok(bytes) => bytes,
            Err(StoreError::Corrupted(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut state = lock(&inner.state);
        let active_before = state.segments.active;
        let (segment, offset, rotated) = state.segments.append(&digest, &bytes)?;
        if segment != active_before {
            *written_bytes += SEGMENT_HEADER_BYTES;
        }
        sealed.extend(rotated);
        let moved = state
            .index
            .relocate(&digest, from, Location { segment, offset });
        assert!(moved, "only GC moves or drops chunks, and GC runs alone");
        written.insert(segment);
        *written_bytes += CHUNK_HEADER_BYTES + u64::from(len);
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
    let mut state = lock(&inner.state);
    assert!(
        state.index.chunks_in(id).is_empty(),
        "nothing is added to a sealed segment"
    );
    *removed_bytes += state.segments.remove(id)?;
    let writer = state.segments.hint_writer();
    drop(state);
    writer.sync_dir()?;
    report.segments_removed += 1;
    Ok(())
}
