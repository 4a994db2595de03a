//! Segment files: append-only chunk records under `segments/`, and the
//! hint files that checkpoint sealed segments' records.
//!
//! Owns appending (with rotation), positional reads that re-hash, fsync
//! bookkeeping (how much of each segment, and whether its directory entry,
//! is known durable), hint files and the recovery scan run at open. Never
//! decides what is live: that is the index's and the metadata log's job.
//! Never rewrites a byte of a segment once written; only the torn tail of
//! the active segment is ever cut, and only at open. Never fsyncs while the
//! caller holds the store lock: rotation only creates the next file, and
//! what must be synced is handed out as a [`SyncPlan`] to run unlocked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::backend::{Backend, BackendFile, EntryKind, OpenMode};
use super::compress;
use super::format::{
    self, HintEntry, RecordKey, CHUNK_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_SALT_BYTES,
};
use super::fsync::{self, Fsyncs};
use super::index::Location;
use super::read::Reader;
use super::types::{Durability, Hash, OpenStats, Problem, ProblemKind};
use crate::error::StoreError;

/// How far the active segment may grow past its last checkpoint (its hint)
/// before it gets a new one: what an open after a crash must scan at most,
/// beyond the unsynced tail. Costs a segment sync and a hint write (about
/// four fsyncs) per 64 MiB appended.
pub const ACTIVE_CHECKPOINT_BYTES: u64 = 64 << 20;

/// In the durable modes, writeback of the active segment is started every
/// this many bytes appended ([`Segments::take_writeback`]), so the disk
/// writes while the put goes on and the commit's fsync waits only for the
/// last few MiB, not the whole artifact.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// One segment file.
pub struct Segment {
    /// Shared with readers, which pread without holding the store lock.
    pub file: Arc<dyn BackendFile>,
    /// Keys the checks of its record headers (from the salt in its header).
    pub key: RecordKey,
    /// Bytes written (the append position). Only grows, except when a
    /// failed append is rolled back.
    pub len: u64,
    /// Bytes known to be on stable storage; `synced_len <= len`.
    pub synced_len: u64,
    /// Whether the file's directory entry is known to be on stable storage.
    pub dir_synced: bool,
}

/// What the recovery scan found, for the store to report.
#[derive(Default)]
pub struct ScanOutcome {
    pub truncated_bytes: u64,
    pub problems: Vec<Problem>,
    pub stats: OpenStats,
}

/// All segment files of one store.
pub struct Segments {
    dir: Arc<dyn Backend>,
    pub segments: BTreeMap<u64, Segment>,
    /// The segment appended to; always a key of `segments`, except in a
    /// read-only open that found no usable segment (it never appends).
    pub active: u64,
    /// Every record of the active segment, in file order: its hint when it
    /// is checkpointed or sealed, without reading it back.
    active_records: Vec<HintEntry>,
    /// Bytes of the active segment its hint file covers (0: none).
    active_hinted_len: u64,
    /// Bytes of the active segment whose writeback was started.
    active_writeback_len: u64,
    /// Records of segments sealed but not yet hinted, by id.
    sealing: BTreeMap<u64, Vec<HintEntry>>,
    segment_bytes_max: u64,
    durability: Durability,
    fsyncs: Fsyncs,
}

/// What to fsync to make one segment durable up to `len`; run it without
/// the store lock, then report it with [`Segments::mark_synced`].
pub struct SyncPlan {
    pub segment: u64,
    file: Arc<dyn BackendFile>,
    pub len: u64,
    /// The segments directory, if the file's entry is not yet durable.
    dir: Option<Arc<dyn Backend>>,
}

/// Writeback to start of a range of the active segment (see
/// [`Segments::take_writeback`]).
pub struct Writeback {
    file: Arc<dyn BackendFile>,
    from: u64,
    len: u64,
}

impl Writeback {
    /// Starts it. A hint to the OS only: what makes the bytes durable is the
    /// fdatasync before a commit, which also reports any write error.
    pub fn start(self) {
        let _ = self.file.start_writeback(self.from, self.len);
    }
}

impl SyncPlan {
    pub fn run(&self, fsyncs: &Fsyncs) -> Result<(), StoreError> {
        fsyncs.data(&*self.file).map_err(io(|| {
            format!("syncing segment {}", segment_name(self.segment))
        }))?;
        if let Some(dir) = &self.dir {
            fsyncs
                .dir(&**dir)
                .map_err(io(|| "syncing segments directory".into()))?;
        }
        Ok(())
    }
}

/// Writes hint files; holds its own handles so it runs without the store
/// lock.
pub struct HintWriter {
    dir: Arc<dyn Backend>,
    durability: Durability,
    fsyncs: Fsyncs,
}

/// A fresh random salt for a new segment's header, from the operating
/// system: unpredictable to guests, so they cannot forge record headers.
fn new_salt() -> Result<[u8; SEGMENT_SALT_BYTES], StoreError> {
    let mut salt = [0u8; SEGMENT_SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|e| {
        StoreError::io(
            "drawing a segment salt",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(salt)
}

/// A segment's file name: its id as 16 decimal digits.
pub fn segment_name(id: u64) -> String {
    format!("{id:016}.seg")
}

/// The name of segment `id`'s hint file.
pub fn hint_name(id: u64) -> String {
    format!("{id:016}.hint")
}

fn hint_temp_name(id: u64) -> String {
    format!("{id:016}.hint.tmp")
}

fn parse_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Wraps an I/O error with its context, built only if there is an error
/// (the scans call this per record).
fn io(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::io(context(), source)
}

/// Reads segment `id`'s hint, if it has one no longer than a segment of
/// `segment_len` bytes could need. `Ok(None)`: no hint (or an unreadable
/// one, described in the `Err` of the inner result).
fn read_hint(dir: &dyn Backend, id: u64, segment_len: u64) -> Result<Option<Vec<u8>>, String> {
    let name = hint_name(id);
    let file = match dir.open(&name, OpenMode::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("opening {name}: {e}")),
    };
    let len = file
        .len()
        .map_err(|e| format!("reading size of {name}: {e}"))?;
    // Checked before allocating: a damaged size never sizes a buffer.
    if len > format::hint_bytes_max(segment_len) {
        return Err(format!("{len} bytes, too long for its segment"));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| format!("reading {name}: {e}"))?;
    Ok(Some(bytes))
}

impl Segments {
    /// Opens every segment under `dir` (the `segments/` directory) and
    /// indexes its records: a sealed segment with a valid hint from the
    /// hint, any other by scanning it (and a sealed one then gets a new
    /// hint). Repairs a torn tail of the active (newest) segment. Creates
    /// the first segment if there is none. In the durable modes, everything
    /// a crashed process may have left unsynced is synced before this
    /// returns, so no new commit depends on bytes that are not durable.
    ///
    /// With `read_only` (a reader beside a writer process, see
    /// `Store::open_read_only`) nothing is written, removed, cut or synced:
    /// a torn tail is left where it is and only ignored (the writer may be
    /// appending to it right now), a segment with a torn header is skipped,
    /// no hint is written, no first segment is created. The result must
    /// then never be appended to.
    pub fn open(
        dir: Arc<dyn Backend>,
        segment_bytes_max: u64,
        durability: Durability,
        fsyncs: Fsyncs,
        read_only: bool,
        covered: &BTreeMap<u64, u64>,
        found: &mut dyn FnMut(Hash, Location, u32, u32) -> Result<(), StoreError>,
    ) -> Result<(Segments, ScanOutcome), StoreError> {
        let mut ids = Vec::new();
        let mut hinted = BTreeSet::new();
        let mut temporaries = Vec::new();
        let entries = dir.list().map_err(io(|| "listing segments".into()))?;
        for entry in entries {
            if entry.kind != EntryKind::File {
                continue;
            }
            let name = entry.name.as_str();
            if let Some(id) = parse_name(name, ".seg") {
                ids.push(id);
            } else if let Some(id) = parse_name(name, ".hint") {
                hinted.insert(id);
            } else if parse_name(name, ".hint.tmp").is_some() {
                temporaries.push(name.to_string());
            }
        }
        ids.sort_unstable();
        if !read_only {
            // A hint write a crash interrupted; the segment is scanned instead.
            for name in temporaries {
                let _ = dir.remove(&name);
            }
            // A hint whose segment is gone (compaction raced the hint write,
            // or a crash fell between the two unlinks) describes nothing.
            for &id in &hinted {
                if ids.binary_search(&id).is_err() {
                    let _ = dir.remove(&hint_name(id));
                }
            }
        }
        let mut outcome = ScanOutcome::default();
        let mut segments = BTreeMap::new();
        let mut hints_to_write = Vec::new();
        let mut active_records = Vec::new();
        let mut active_hinted_len = 0;
        // Byte ranges of each segment to write again before it is synced.
        let mut rewrites: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        let newest = ids.last().copied();
        for &id in &ids {
            let name = segment_name(id);
            let active = Some(id) == newest;
            let mode = if active && !read_only {
                OpenMode::Write
            } else {
                OpenMode::Read
            };
            let file = dir
                .open(&name, mode)
                .map_err(io(|| format!("opening segment {name}")))?;
            let len = file
                .len()
                .map_err(io(|| format!("reading size of segment {name}")))?;
            // A hint covers the whole segment (sealed ones, and the active
            // one after a clean close) or a prefix of it (an active
            // segment's checkpoint); records past it are scanned.
            let mut records = Vec::new();
            let mut hinted_len = 0;
            let mut synced_len = 0;
            // A sealed segment a checkpoint of the catalog database covers
            // whole is in its tables already: neither read nor scanned.
            let covered_len = covered.get(&id).copied().unwrap_or(0).min(len);
            let whole = !active && covered_len == len && len >= SEGMENT_HEADER_BYTES;
            if whole {
                hinted_len = len;
                synced_len = len;
                outcome.stats.segments_from_checkpoint += 1;
            } else if hinted.contains(&id) {
                let hint = read_hint(&*dir, id, len).and_then(|bytes| match bytes {
                    Some(bytes) => format::decode_hint(&bytes, id, len).map(|hint| {
                        records.extend(hint.entries());
                        Some((hint.segment_len, hint.segment_synced))
                    }),
                    None => Ok(None),
                });
                match hint {
                    Ok(Some((covered, synced))) => {
                        hinted_len = covered;
                        // A hint written under Durability::None vouches for
                        // nothing being on disk: such a segment is synced
                        // below like a scanned one.
                        synced_len = if synced { covered } else { 0 };
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        // Removed, not just ignored: once the segment is cut
                        // or grows again, a stale hint could line up with
                        // it by chance and be trusted. (The directory sync
                        // at the end of open makes the removal durable
                        // before anything is appended.) A reader leaves
                        // it: the writer may be replacing it right now.
                        if !read_only {
                            let _ = dir.remove(&hint_name(id));
                        }
                        outcome.problems.push(Problem::new(
                            ProblemKind::HintRejected,
                            format!(
                                "segment {name}: hint {} not used ({reason}); segment scanned",
                                hint_name(id)
                            ),
                        ))
                    }
                }
            }
            // Bytes a checkpoint covers were synced before it was taken.
            synced_len = synced_len.max(covered_len);
            let mut len = len;
            // The header holds the salt every record check is keyed with,
            // so it is read even when a hint spares the records.
            let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
            let header_read = if len >= SEGMENT_HEADER_BYTES {
                file.read_exact_at(&mut header, 0)
                    .map_err(io(|| format!("reading header of segment {name}")))?;
                format::decode_segment_header(&header)
            } else {
                Err(format!("segment is {len} bytes, shorter than its header"))
            };
            let key = match header_read {
                Ok(salt) => RecordKey::from_salt(&salt),
                // Torn while being created (short, or its header never
                // reached the disk): nothing in it was ever synced, since a
                // sync would have taken the header along, so nothing in it
                // was acknowledged. Unless a hint vouches for it.
                Err(reason) if read_only && hinted_len == 0 && header.iter().all(|&b| b == 0) => {
                    // Being created by the writer (or torn by a crash the
                    // writer's next open repairs): nothing in it is committed.
                    outcome.problems.push(Problem::new(
                        ProblemKind::TornHeader,
                        format!("segment {name}: {reason}; skipped (read-only)"),
                    ));
                    continue;
                }
                Err(reason) if !active && hinted_len == 0 && header.iter().all(|&b| b == 0) => {
                    drop(file);
                    let _ = dir.remove(&name);
                    outcome.problems.push(Problem::new(
                        ProblemKind::TornHeader,
                        format!("segment {name}: {reason}; never synced, removed"),
                    ));
                    continue;
                }
                Err(reason) if active && hinted_len == 0 && header.iter().all(|&b| b == 0) => {
                    // Start it again.
                    let salt = new_salt()?;
                    file.set_len(0)
                        .and_then(|()| file.write_all_at(&format::encode_segment_header(&salt), 0))
                        .map_err(io(|| format!("rewriting header of segment {name}")))?;
                    outcome.problems.push(Problem::new(
                        ProblemKind::TornHeader,
                        format!("segment {name}: {reason}; header rewritten"),
                    ));
                    len = SEGMENT_HEADER_BYTES;
                    RecordKey::from_salt(&salt)
                }
                Err(reason) => {
                    // Not ours, from another version, or its header damaged:
                    // keep it, use none of it.
                    outcome.problems.push(Problem::new(
                        ProblemKind::ForeignSegment,
                        format!("segment {name}: {reason}; segment skipped"),
                    ));
                    continue;
                }
            };
            let scan_from = hinted_len.max(SEGMENT_HEADER_BYTES);
            let mut clean = true;
            if scan_from < len {
                outcome.stats.segments_scanned += 1;
                // Whatever is scanned was not vouched for by a hint, so
                // payloads are re-hashed too: a sealed segment without a
                // hint may be one a crash caught before its seal was synced,
                // whose records a power cut tore, and a torn record must
                // never be indexed (a later upload would dedup against it).
                let scanned = scan(&*file, id, &key, scan_from, len, true, !active)?;
                // Known synced: a sealed segment that had a hint (even one
                // now rejected), up to where the scan starts. Past that, or
                // in a segment never hinted, damage is what a power cut
                // leaves of unsynced appends.
                let unsynced = active || hinted_len > 0 || !hinted.contains(&id);
                clean = scanned.problems.is_empty();
                if let Some((at, reason)) = scanned.torn_at {
                    // Past every byte known synced, so nothing acknowledged:
                    // the tail of an append a crash interrupted.
                    outcome.truncated_bytes += len - at;
                    if active {
                        let done = if read_only {
                            // Most likely an append the writer is making
                            // now; the snapshot ends before it, the file
                            // is left.
                            "ignored (read-only)"
                        } else {
                            file.set_len(at)
                                .map_err(io(|| format!("truncating segment {name} at {at}")))?;
                            "truncated"
                        };
                        outcome.problems.push(Problem::new(
                            ProblemKind::TornTail,
                            format!(
                                "segment {name}: torn tail at offset {at} ({reason}); {} bytes {done}",
                                len - at
                            ),
                        ));
                        len = at;
                    } else {
                        // A sealed segment whose last appends a crash cut
                        // short before its seal was synced: the bytes stay
                        // (sealed files are never written), the new hint
                        // leaves them out.
                        outcome.problems.push(Problem::new(
                            ProblemKind::TornTail,
                            format!(
                                "segment {name}: torn tail at offset {at} ({reason}); {} bytes ignored",
                                len - at
                            ),
                        ));
                    }
                }
                if unsynced {
                    // Past every byte known synced, a bad record followed by
                    // a good one is what a power cut leaves of unsynced
                    // appends (they may persist in any order of sectors):
                    // residue. Lost chunks a commit needed still show as
                    // `MissingChunk` damage.
                    outcome
                        .problems
                        .extend(scanned.problems.into_iter().map(|p| {
                            Problem::new(
                                ProblemKind::TornRecord,
                                format!("{} (not known synced: torn by a crash)", p.message),
                            )
                        }));
                } else {
                    outcome.problems.extend(scanned.problems);
                }
                records.extend(scanned.records);
            } else if !whole {
                outcome.stats.segments_from_hints += 1;
            }
            if durability.fsyncs() && !read_only {
                // Past what is known synced, the bytes worth keeping (the
                // header, valid records) are written again before the
                // sync below (see `fsync::rewrite`).
                let known = synced_len.min(len);
                let mut ranges: Vec<(u64, u64)> = Vec::new();
                let spans =
                    std::iter::once((0, SEGMENT_HEADER_BYTES)).chain(records.iter().map(|r| {
                        (
                            r.offset,
                            r.offset + CHUNK_HEADER_BYTES + u64::from(r.payload_len),
                        )
                    }));
                for (start, end) in spans {
                    let (start, end) = (start.max(known), end.min(len));
                    match ranges.last_mut() {
                        _ if start >= end => {}
                        Some(last) if last.1 == start => last.1 = end,
                        _ => ranges.push((start, end)),
                    }
                }
                if !ranges.is_empty() {
                    rewrites.insert(id, ranges);
                }
            }
            // Records a checkpoint covers are in the tables already (the
            // active segment's are still kept below, for its next hint).
            for record in records.iter().filter(|r| r.offset >= covered_len) {
                found(
                    Hash::from_bytes(record.digest),
                    Location {
                        segment: id,
                        offset: record.offset,
                    },
                    record.chunk_len,
                    record.payload_len,
                )?;
                outcome.stats.chunk_records += 1;
            }
            if active {
                active_records = records;
                active_hinted_len = hinted_len;
            } else if clean && hinted_len != len && !read_only {
                // A damaged sealed segment gets no hint, so every open scans
                // and reports the damage again.
                hints_to_write.push((id, len, records));
            }
            segments.insert(
                id,
                Segment {
                    file,
                    key,
                    len,
                    // What a hint vouches for; the rest is unknown: a
                    // crashed process may not have synced it. A reader
                    // never syncs, so it plans none.
                    synced_len: if read_only { len } else { synced_len.min(len) },
                    dir_synced: true,
                },
            );
        }
        let mut store = Segments {
            dir,
            active_records: Vec::new(),
            active_hinted_len: 0,
            active_writeback_len: 0,
            sealing: BTreeMap::new(),
            segments,
            active: 0,
            segment_bytes_max,
            durability,
            fsyncs,
        };
        match newest {
            Some(id) if store.segments.contains_key(&id) => {
                store.active = id;
                store.active_records = active_records;
                store.active_hinted_len = active_hinted_len;
            }
            // A reader creates nothing: with no usable segment `active`
            // names none, which only appends (never made) would look up.
            _ if read_only => {
                store.active = newest.unwrap_or(0);
                return Ok((store, outcome));
            }
            // No segment, or the newest is unusable: begin a fresh one.
            _ => {
                let id = newest.map_or(1, |id| id + 1);
                store.create(id)?;
            }
        }
        if read_only {
            return Ok((store, outcome));
        }
        if durability.fsyncs() {
            // What a crashed process appended without fsync becomes durable
            // before any new commit can depend on it; one directory fsync
            // covers every entry.
            let ids: Vec<u64> = store.segments.keys().copied().collect();
            for id in ids {
                if let Some(plan) = store.sync_plan(id) {
                    if let Some(ranges) = rewrites.get(&id) {
                        if !store.dir.reads_are_durable() {
                            store.rewrite(id, &plan.file, ranges)?;
                        }
                    }
                    store
                        .fsyncs
                        .data(&*plan.file)
                        .map_err(io(|| format!("syncing segment {}", segment_name(id))))?;
                    store.mark_synced(id, plan.len);
                }
            }
            store.sync_dir()?;
            for segment in store.segments.values_mut() {
                segment.dir_synced = true;
            }
        }
        let writer = store.hint_writer();
        // Hints are a cache: a full disk (or any failure) writing one only
        // means the next open scans that segment again. Opening never needs
        // free space.
        for (id, len, records) in hints_to_write {
            match writer.write(id, len, &records) {
                Ok(()) => outcome.stats.hints_written += 1,
                Err(error) => outcome.problems.push(Problem::new(
                    ProblemKind::HintNotWritten,
                    format!(
                        "segment {}: hint not written ({error}); the next open scans it",
                        segment_name(id)
                    ),
                )),
            }
        }
        Ok((store, outcome))
    }

    /// Writes `ranges` of segment `id` again (see `fsync::rewrite`),
    /// through `file` if it is the active one, else a handle opened to
    /// write (sealed segments are otherwise only read).
    fn rewrite(
        &self,
        id: u64,
        file: &Arc<dyn BackendFile>,
        ranges: &[(u64, u64)],
    ) -> Result<(), StoreError> {
        let name = segment_name(id);
        let file = if id == self.active {
            Arc::clone(file)
        } else {
            self.dir
                .open(&name, OpenMode::Write)
                .map_err(io(|| format!("opening segment {name} to rewrite it")))?
        };
        for &(start, end) in ranges {
            fsync::rewrite(&*file, start, end).map_err(io(|| {
                format!("rewriting bytes {start}..{end} of segment {name} before syncing them")
            }))?;
        }
        Ok(())
    }

    /// Creates segment `id` as the new active segment. Neither its header
    /// nor its directory entry is synced here (the store lock is held):
    /// [`Segments::sync_plan`] covers both before any commit depends on it.
    fn create(&mut self, id: u64) -> Result<(), StoreError> {
        let name = segment_name(id);
        let file = self
            .dir
            .open(&name, OpenMode::CreateNew)
            .map_err(io(|| format!("creating segment {name}")))?;
        let salt = new_salt()?;
        if let Err(e) = file.write_all_at(&format::encode_segment_header(&salt), 0) {
            drop(file);
            let _ = self.dir.remove(&name);
            return Err(io(|| format!("writing header of segment {name}"))(e));
        }
        self.segments.insert(
            id,
            Segment {
                file,
                key: RecordKey::from_salt(&salt),
                len: SEGMENT_HEADER_BYTES,
                synced_len: 0,
                dir_synced: false,
            },
        );
        self.active = id;
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        self.fsyncs
            .dir(&*self.dir)
            .map_err(io(|| "syncing segments directory".into()))
    }

    /// Seals the active segment and begins a new one; returns the sealed
    /// id. No fsync (the caller holds the store lock): the caller then runs
    /// [`super::Store::finish_seal`], which syncs it and writes its hint.
    pub fn rotate(&mut self) -> Result<u64, StoreError> {
        let sealed = self.active;
        let records = std::mem::take(&mut self.active_records);
        if let Err(error) = self.create(sealed + 1) {
            self.active_records = records;
            return Err(error);
        }
        self.sealing.insert(sealed, records);
        self.active_hinted_len = 0;
        self.active_writeback_len = 0;
        Ok(sealed)
    }

    /// The records of sealed segment `id` if it was sealed by this process
    /// and not yet hinted (so its hint needs no scan).
    pub fn take_sealed_records(&mut self, id: u64) -> Option<Vec<HintEntry>> {
        self.sealing.remove(&id)
    }

    /// What a checkpoint of the active segment writes, if it has records
    /// its hint does not cover: (id, length, records).
    pub fn active_checkpoint(&self) -> Option<(u64, u64, Vec<HintEntry>)> {
        let segment = &self.segments[&self.active];
        (segment.len > self.active_hinted_len.max(SEGMENT_HEADER_BYTES))
            .then(|| (self.active, segment.len, self.active_records.clone()))
    }

    /// Whether the active segment has grown by [`ACTIVE_CHECKPOINT_BYTES`]
    /// since its last checkpoint.
    pub fn active_checkpoint_due(&self) -> bool {
        let len = self.segments[&self.active].len;
        len - self.active_hinted_len.min(len) >= ACTIVE_CHECKPOINT_BYTES
    }

    /// Records that the active segment `id`'s hint now covers `len` bytes.
    pub fn mark_checkpointed(&mut self, id: u64, len: u64) {
        if id == self.active {
            self.active_hinted_len = self.active_hinted_len.max(len);
        }
    }

    /// Appends one chunk record to the active segment, rotating first if it
    /// would overflow: `payload` is the chunk's `chunk_len` bytes, or fewer
    /// for a compressed payload ([`super::compress`]). Returns (segment, record offset, the segment sealed
    /// by rotating, if any). No fsync.
    pub fn append(
        &mut self,
        digest: &Hash,
        payload: &[u8],
        chunk_len: u32,
    ) -> Result<(u64, u64, Option<u64>), StoreError> {
        let payload_len = u32::try_from(payload.len()).expect("chunk length checked by caller");
        // A payload shorter than its chunk is a compressed one.
        let compressed = payload_len != chunk_len;
        debug_assert!(!compressed || payload_len < chunk_len);
        let record_bytes = CHUNK_HEADER_BYTES + u64::from(payload_len);
        let active = &self.segments[&self.active];
        let mut sealed = None;
        if active.len > SEGMENT_HEADER_BYTES && active.len + record_bytes > self.segment_bytes_max {
            sealed = Some(self.rotate()?);
        }
        let id = self.active;
        let segment = self.segments.get_mut(&id).expect("active segment exists");
        let offset = segment.len;
        // Keyed by the segment it lands in: after a rotation, the new one.
        let header =
            format::encode_chunk_header(&segment.key, digest.as_bytes(), payload_len, compressed);
        let written = segment.file.write_all_at(&header, offset).and_then(|()| {
            segment
                .file
                .write_all_at(payload, offset + CHUNK_HEADER_BYTES)
        });
        if let Err(source) = written {
            // Roll back a partial record so the next append starts clean.
            let _ = segment.file.set_len(offset);
            return Err(StoreError::io(
                format!(
                    "appending chunk {digest} to segment {} at {offset}",
                    segment_name(id)
                ),
                source,
            ));
        }
        segment.len = offset + record_bytes;
        self.active_records.push(HintEntry {
            offset,
            payload_len,
            chunk_len,
            digest: *digest.as_bytes(),
        });
        Ok((id, offset, sealed))
    }

    /// In the durable modes, once [`WRITEBACK_BYTES`] were appended to the
    /// active segment since the last one, the writeback to start of what
    /// is not yet synced: taken under the store lock after an append, run
    /// without it (it may wait for the device's queue).
    pub fn take_writeback(&mut self) -> Option<Writeback> {
        if !self.durability.fsyncs() {
            return None;
        }
        let segment = self.segments.get(&self.active)?;
        let from = self.active_writeback_len.max(segment.synced_len);
        if segment.len < from + WRITEBACK_BYTES {
            return None;
        }
        self.active_writeback_len = segment.len;
        Some(Writeback {
            file: Arc::clone(&segment.file),
            from,
            len: segment.len - from,
        })
    }

    /// The handle of segment `id`, for reading outside the store lock.
    pub fn handle(&self, id: u64) -> Option<Arc<dyn BackendFile>> {
        self.segments.get(&id).map(|s| Arc::clone(&s.file))
    }

    /// What to fsync to make segment `id` durable up to its current length.
    pub fn sync_plan(&self, id: u64) -> Option<SyncPlan> {
        if !self.durability.fsyncs() {
            return None;
        }
        let segment = self.segments.get(&id)?;
        (segment.synced_len < segment.len || !segment.dir_synced).then(|| SyncPlan {
            segment: id,
            file: Arc::clone(&segment.file),
            len: segment.len,
            dir: (!segment.dir_synced).then(|| Arc::clone(&self.dir)),
        })
    }

    /// Plans for every segment with bytes or an entry not yet durable.
    pub fn sync_plans_all(&self) -> Vec<SyncPlan> {
        self.segments
            .keys()
            .filter_map(|&id| self.sync_plan(id))
            .collect()
    }

    /// Records that `plan` was carried out.
    pub fn mark_synced(&mut self, id: u64, len: u64) {
        if let Some(segment) = self.segments.get_mut(&id) {
            assert!(len <= segment.len, "synced past the end");
            segment.synced_len = segment.synced_len.max(len);
            segment.dir_synced = true;
        }
    }

    /// Records that `plan` was carried out.
    pub fn mark_plan_done(&mut self, plan: &SyncPlan) {
        self.mark_synced(plan.segment, plan.len);
    }

    /// Removes sealed segment `id` and its hint: forgets it and unlinks the
    /// files. Open read handles stay valid until dropped. The unlinks are
    /// made durable by the caller, without the store lock, with
    /// [`HintWriter::sync_dir`]; until then a crash may bring the segment
    /// back, which only duplicates records that were copied elsewhere.
    pub fn remove(&mut self, id: u64) -> Result<u64, StoreError> {
        assert!(id != self.active, "the active segment is never removed");
        let Some(segment) = self.segments.remove(&id) else {
            return Ok(0);
        };
        self.sealing.remove(&id);
        // The hint goes first: a hint without its segment is ignored at
        // open, a segment without its hint is merely scanned.
        match self.dir.remove(&hint_name(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("removing {}", hint_name(id)), e)),
        }
        let name = segment_name(id);
        self.dir
            .remove(&name)
            .map_err(io(|| format!("removing segment {name}")))?;
        Ok(segment.len)
    }

    /// Frees the bytes of every record of segment `id` that the index no
    /// longer points at (`live`: the offsets and payload lengths of those it
    /// does, in file order), in place, with `punch_hole`: how GC makes room
    /// on a full disk, where copying live records elsewhere first would
    /// need space it does not have. Returns the ranges to punch, after
    /// forgetting them in the records kept for the segment's next hint
    /// (and those records, for [`Segments::restore_records`]).
    /// The caller removes the segment's hint (durably) before punching: a
    /// hint listing a punched record would index zeros.
    pub fn dead_ranges(
        &mut self,
        id: u64,
        live: &[(u64, u32)],
    ) -> (Vec<(u64, u64)>, Vec<HintEntry>) {
        let Some(segment) = self.segments.get(&id) else {
            return (Vec::new(), Vec::new());
        };
        let mut ranges = Vec::new();
        let mut at = SEGMENT_HEADER_BYTES;
        for &(offset, len) in live {
            if offset > at {
                ranges.push((at, offset - at));
            }
            at = offset + CHUNK_HEADER_BYTES + u64::from(len);
        }
        if segment.len > at {
            ranges.push((at, segment.len - at));
        }
        let live: BTreeSet<u64> = live.iter().map(|&(offset, _)| offset).collect();
        let mut forgotten = Vec::new();
        let mut forget = |records: &mut Vec<HintEntry>| {
            records.retain(|r| {
                let keep = live.contains(&r.offset);
                if !keep {
                    forgotten.push(*r);
                }
                keep
            })
        };
        if id == self.active {
            forget(&mut self.active_records);
            self.active_hinted_len = 0;
        }
        if let Some(records) = self.sealing.get_mut(&id) {
            forget(records);
        }
        (ranges, forgotten)
    }

    /// Puts back the records [`Segments::dead_ranges`] forgot, for a punch
    /// that was abandoned (the records stay, so the segment's next hint
    /// must list them).
    pub fn restore_records(&mut self, id: u64, records: Vec<HintEntry>) {
        let target = if id == self.active {
            Some(&mut self.active_records)
        } else {
            self.sealing.get_mut(&id)
        };
        if let Some(target) = target {
            target.extend(records);
            target.sort_by_key(|r| r.offset);
            target.dedup_by_key(|r| r.offset);
        }
    }

    /// Removes segment `id`'s hint file, if any (see [`Segments::dead_ranges`]).
    pub fn remove_hint(&self, id: u64) -> Result<(), StoreError> {
        match self.dir.remove(&hint_name(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("removing {}", hint_name(id)), e)),
        }
    }

    /// Bytes the segment files occupy: their lengths, less the holes GC
    /// punched on a full disk (what the backend reports allocated, where
    /// that is smaller).
    pub fn disk_bytes(&self) -> u64 {
        self.segments
            .values()
            .map(|s| s.file.allocated_bytes().map_or(s.len, |a| a.min(s.len)))
            .sum()
    }

    /// A writer of hint files that needs no lock.
    pub fn hint_writer(&self) -> HintWriter {
        HintWriter {
            dir: Arc::clone(&self.dir),
            durability: self.durability,
            fsyncs: self.fsyncs.clone(),
        }
    }
}

impl HintWriter {
    /// Makes the entries of the segments directory durable (durable modes).
    pub fn sync_dir(&self) -> Result<(), StoreError> {
        if self.durability.fsyncs() {
            self.fsyncs
                .dir(&*self.dir)
                .map_err(io(|| "syncing segments directory".into()))?;
        }
        Ok(())
    }

    /// Scans sealed segment `id` (`len` bytes, already synced in the
    /// durable modes) and writes its hint. A segment whose scan finds
    /// damage gets no hint.
    pub fn scan_and_write(
        &self,
        file: &dyn BackendFile,
        key: &RecordKey,
        id: u64,
        len: u64,
    ) -> Result<bool, StoreError> {
        let scanned = scan(file, id, key, SEGMENT_HEADER_BYTES, len, false, true)?;
        if scanned.torn_at.is_some() || !scanned.problems.is_empty() {
            return Ok(false);
        }
        self.write(id, len, &scanned.records)?;
        Ok(true)
    }

    /// Writes segment `id`'s hint: to a temporary name, fsynced, renamed
    /// over the old name, directory fsynced. A crash at any point leaves
    /// either no hint, the temporary (removed at open) or a whole hint; a
    /// torn one fails its crc and the segment is scanned instead.
    pub fn write(&self, id: u64, len: u64, records: &[HintEntry]) -> Result<(), StoreError> {
        let synced = self.durability.fsyncs();
        let bytes = format::encode_hint(id, len, synced, records);
        let temp = hint_temp_name(id);
        let written = self
            .dir
            .open(&temp, OpenMode::Truncate)
            .map_err(io(|| format!("creating {temp}")))
            .and_then(|file| {
                file.write_all_at(&bytes, 0)
                    .map_err(io(|| format!("writing {temp}")))?;
                if synced {
                    self.fsyncs
                        .all(&*file)
                        .map_err(io(|| format!("syncing {temp}")))?;
                }
                Ok(())
            })
            .and_then(|()| {
                self.dir
                    .rename(&temp, &hint_name(id))
                    .map_err(io(|| format!("renaming {temp}")))
            });
        if let Err(error) = written {
            // A hint is a cache: without it the segment is scanned.
            let _ = self.dir.remove(&temp);
            return Err(error);
        }
        if synced {
            self.fsyncs
                .dir(&*self.dir)
                .map_err(io(|| "syncing segments directory".into()))?;
        }
        Ok(())
    }
}

/// Reads and verifies the chunk whose record is at (`segment`, `offset`):
/// `payload_len` bytes on disk holding `chunk_len` bytes of chunk (fewer
/// for a compressed record, decompressed here). Runs without the store
/// lock.
pub fn read_payload(
    file: &dyn BackendFile,
    segment: u64,
    offset: u64,
    digest: &Hash,
    chunk_len: u32,
    payload_len: u32,
) -> Result<Vec<u8>, StoreError> {
    let payload = read_stored(file, segment, offset, digest, payload_len)?;
    let decompressed = verify(&payload, segment, offset, digest, chunk_len)?;
    Ok(decompressed.unwrap_or(payload))
}

/// Reads the record at (`segment`, `offset`) as stored, after verifying it
/// holds the chunk (decompressed and hashed): what GC copies, so a
/// compressed record moves without being compressed again.
pub fn read_verified_record(
    file: &dyn BackendFile,
    segment: u64,
    offset: u64,
    digest: &Hash,
    chunk_len: u32,
    payload_len: u32,
) -> Result<Vec<u8>, StoreError> {
    let payload = read_stored(file, segment, offset, digest, payload_len)?;
    verify(&payload, segment, offset, digest, chunk_len)?;
    Ok(payload)
}

/// [`chunk_in`] of the record at (`segment`, `offset`), its failure a
/// `Corrupted` naming the record.
fn verify(
    payload: &[u8],
    segment: u64,
    offset: u64,
    digest: &Hash,
    chunk_len: u32,
) -> Result<Option<Vec<u8>>, StoreError> {
    chunk_in(payload, chunk_len, digest.as_bytes()).map_err(|why| {
        StoreError::Corrupted(format!(
            "chunk {digest}: record in segment {} at offset {offset}: {why}",
            segment_name(segment)
        ))
    })
}

/// Checks that a record's `payload` holds the `chunk_len` bytes hashing to
/// `digest`, the one check of reads, GC's copies and the recovery scan:
/// `None` if the payload is those bytes, else the bytes decompressed from
/// it.
fn chunk_in(payload: &[u8], chunk_len: u32, digest: &[u8; 32]) -> Result<Option<Vec<u8>>, String> {
    let decompressed = if payload.len() == chunk_len as usize {
        None
    } else {
        Some(compress::decompress(payload, chunk_len)?)
    };
    if Hash::of(decompressed.as_deref().unwrap_or(payload)).as_bytes() != digest {
        return Err("its bytes do not hash to its digest".into());
    }
    Ok(decompressed)
}

/// Reads the `payload_len` bytes of the payload of the record at
/// (`segment`, `offset`), as stored, unverified.
fn read_stored(
    file: &dyn BackendFile,
    segment: u64,
    offset: u64,
    digest: &Hash,
    payload_len: u32,
) -> Result<Vec<u8>, StoreError> {
    let mut payload = vec![0u8; payload_len as usize];
    let at = offset + CHUNK_HEADER_BYTES;
    file.read_exact_at(&mut payload, at).map_err(|source| {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            StoreError::Corrupted(format!(
                "chunk {digest}: segment {} ends before offset {at} + {payload_len}",
                segment_name(segment)
            ))
        } else {
            StoreError::io(
                format!(
                    "reading chunk {digest} from segment {} at {offset}",
                    segment_name(segment)
                ),
                source,
            )
        }
    })?;
    Ok(payload)
}

struct Scan {
    records: Vec<HintEntry>,
    /// Bytes of all-zero gaps stepped over: holes GC punched.
    holes_bytes: u64,
    problems: Vec<Problem>,
    /// From here to the end nothing valid was found.
    torn_at: Option<(u64, String)>,
}

/// Walks the records of one segment. Every header's crc is checked; with
/// `verify_payloads` every payload is re-hashed too. All-zero gaps between
/// records (and, in a `sealed` segment, at its end) are holes GC punched.
/// A bad record followed by a valid one is damage in the middle: reported
/// and stepped over. A bad record with nothing valid after it is a torn
/// tail, returned as `torn_at`.
fn scan(
    file: &dyn BackendFile,
    segment: u64,
    key: &RecordKey,
    from: u64,
    len: u64,
    verify_payloads: bool,
    sealed: bool,
) -> Result<Scan, StoreError> {
    let name = segment_name(segment);
    let mut out = Scan {
        records: Vec::new(),
        holes_bytes: 0,
        problems: Vec::new(),
        torn_at: None,
    };
    let mut payload = Vec::new();
    let mut reader = Reader::new(file, len);
    let file = &mut reader;
    let mut at = from;
    while at < len {
        match record_at(file, segment, key, at, len, verify_payloads, &mut payload)? {
            Ok(record) => {
                at += CHUNK_HEADER_BYTES + u64::from(record.payload_len);
                out.records.push(record);
            }
            Err(reason) => {
                let next = next_record(
                    file,
                    segment,
                    key,
                    at + 1,
                    len,
                    verify_payloads,
                    &mut payload,
                )?;
                // Zeros where records were: dead records GC punched out.
                // Between two records, or at the end of a sealed segment.
                let hole_end = match next {
                    Some(next) => Some(next),
                    None if sealed => Some(len),
                    None => None,
                };
                if let Some(end) = hole_end {
                    if all_zero(file, segment, at, end)? {
                        out.holes_bytes += end - at;
                        at = end;
                        continue;
                    }
                }
                match next {
                    Some(next) => {
                        out.problems.push(Problem::new(
                            ProblemKind::Damaged,
                            format!(
                                "segment {name}: bytes {at}..{next} unreadable ({reason}); skipped"
                            ),
                        ));
                        at = next;
                    }
                    None => {
                        out.torn_at = Some((at, reason));
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Checks the record at `at`: Ok(its entry) if valid, Err(reason) if not.
/// A compressed record's length prefix is read and checked; with
/// `verify_payload` its frame is decompressed and hashed too.
fn record_at(
    file: &mut Reader<'_>,
    segment: u64,
    key: &RecordKey,
    at: u64,
    len: u64,
    verify_payload: bool,
    payload: &mut Vec<u8>,
) -> Result<Result<HintEntry, String>, StoreError> {
    if len - at < CHUNK_HEADER_BYTES {
        return Ok(Err(format!("{} bytes, short of a record header", len - at)));
    }
    let mut bytes = [0u8; CHUNK_HEADER_BYTES as usize];
    file.read_exact_at(&mut bytes, at).map_err(io(|| {
        format!("reading segment {} at {at}", segment_name(segment))
    }))?;
    let header = match format::decode_chunk_header(key, &bytes) {
        Ok(header) => header,
        Err(reason) => return Ok(Err(reason)),
    };
    let end = at + CHUNK_HEADER_BYTES + u64::from(header.payload_len);
    if end > len {
        return Ok(Err(format!(
            "record of {} bytes runs past the end",
            header.payload_len
        )));
    }
    let chunk_len = if header.compressed {
        let mut prefix = [0u8; format::ZSTD_PREFIX_BYTES as usize];
        file.read_exact_at(&mut prefix, at + CHUNK_HEADER_BYTES)
            .map_err(io(|| {
                format!("reading segment {} at {at}", segment_name(segment))
            }))?;
        match format::decode_zstd_prefix(header.payload_len, &prefix) {
            Ok(chunk_len) => chunk_len,
            Err(reason) => return Ok(Err(reason)),
        }
    } else {
        header.payload_len
    };
    if verify_payload {
        payload.resize(header.payload_len as usize, 0);
        file.read_exact_at(payload, at + CHUNK_HEADER_BYTES)
            .map_err(io(|| {
                format!("reading segment {} at {at}", segment_name(segment))
            }))?;
        if let Err(why) = chunk_in(payload, chunk_len, &header.digest) {
            return Ok(Err(format!("payload: {why}")));
        }
    }
    Ok(Ok(HintEntry {
        offset: at,
        payload_len: header.payload_len,
        chunk_len,
        digest: header.digest,
    }))
}

/// Whether bytes `from..to` of the segment are all zero.
fn all_zero(file: &mut Reader<'_>, segment: u64, from: u64, to: u64) -> Result<bool, StoreError> {
    const WINDOW_BYTES: u64 = 1 << 20;
    let mut window = Vec::new();
    let mut at = from;
    while at < to {
        let end = (at + WINDOW_BYTES).min(to);
        window.resize((end - at) as usize, 0);
        file.file.read_exact_at(&mut window, at).map_err(io(|| {
            format!("scanning segment {} at {at}", segment_name(segment))
        }))?;
        if window.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at = end;
    }
    Ok(true)
}

/// The offset of the first valid record at or after `from`, if any.
fn next_record(
    file: &mut Reader<'_>,
    segment: u64,
    key: &RecordKey,
    from: u64,
    len: u64,
    verify_payload: bool,
    payload: &mut Vec<u8>,
) -> Result<Option<u64>, StoreError> {
    const WINDOW_BYTES: u64 = 1 << 20;
    let magic = format::CHUNK_RECORD_MAGIC.to_le_bytes();
    let mut window = Vec::new();
    let mut start = from;
    while start + CHUNK_HEADER_BYTES <= len {
        let end = (start + WINDOW_BYTES).min(len);
        window.resize((end - start) as usize, 0);
        file.file.read_exact_at(&mut window, start).map_err(io(|| {
            format!("scanning segment {} at {start}", segment_name(segment))
        }))?;
        for (i, candidate) in window.windows(magic.len()).enumerate() {
            if candidate == magic {
                let at = start + i as u64;
                if record_at(file, segment, key, at, len, verify_payload, payload)?.is_ok() {
                    return Ok(Some(at));
                }
            }
        }
        if end == len {
            break;
        }
        // Overlap so a magic straddling two windows is still seen.
        start = end - (magic.len() as u64 - 1);
    }
    Ok(None)
}
