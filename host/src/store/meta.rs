//! The metadata log (`meta.log`) and the catalog rebuilt from it.
//!
//! [`MetaLog`] appends records and fsyncs them; at open it replays every
//! record, truncating a torn tail and stepping over damage in the middle
//! (a read-only open replays the same way and only stops at a torn tail).
//! [`Catalog`] is the in-memory result: live artifacts with their manifests,
//! commit order and a tag index. Reference counts live in the chunk index
//! and are derived from the catalog's manifests, never stored.
//! The log is the only place metadata is made durable; nothing here touches
//! segment files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::backend::{Backend, BackendFile, OpenMode};
use super::format::{self, MetaRecord, MutableFields, META_HEADER_BYTES, META_RECORD_HEADER_BYTES};
use super::fsync::Fsyncs;
use super::meta_index::{Key, MetaIndex};
use super::read::Reader;
use super::types::{ArtifactId, ChunkRef, Durability, Hash, Metadata, Problem, ProblemKind};
use crate::error::StoreError;

/// File name of the metadata log in the tenant directory.
pub const META_LOG_NAME: &str = "meta.log";

/// File a compaction writes in full before renaming it over `meta.log`. One
/// left by a crash is half written and never read: open removes it.
pub const META_COMPACT_NAME: &str = "meta.log.compact";

/// The append end of `meta.log`.
pub struct MetaLog {
    dir: Arc<dyn Backend>,
    file: Arc<dyn BackendFile>,
    /// Append position; everything before it has been replayed or written.
    len: u64,
    durability: Durability,
    fsyncs: Fsyncs,
    /// Replay stepped over a damaged or invalid record. Such a log is never
    /// compacted, so the damage stays on disk to be reported and examined.
    damaged: bool,
    /// A sync of the log (or of the directory after a rewrite) failed: the
    /// store must write nothing more until reopened.
    sync_failed: bool,
    /// The last record is a [`MetaRecord::Checkpoint`] (or the log is
    /// empty): a clean close has nothing to add.
    checkpointed: bool,
    /// The log's format version (its header's): what its records are
    /// decoded and appended as. [`format::META_VERSION`] for a new or
    /// rewritten log; an older one until the open upgrades it.
    version: u8,
}

/// What replaying the log found.
#[derive(Default)]
pub struct ReplayOutcome {
    pub truncated_bytes: u64,
    pub records: u64,
    pub problems: Vec<Problem>,
}

/// Wraps an I/O error with its context, built only if there is an error
/// (the scans call this per record).
fn io(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::io(context(), source)
}

/// How far a replay got (see [`replay`]).
struct Replayed {
    /// Where the last valid record ends: the log's length to append at.
    end: u64,
    /// Nothing valid from here to the end: a torn tail, and why.
    torn: Option<(u64, String)>,
    /// A damaged or undecodable record was stepped over.
    damaged: bool,
    /// The last record is a checkpoint (or there is none).
    checkpointed: bool,
    /// Where the last checkpoint record ends (the header's end if there is
    /// none): a crashed process may not have synced what follows.
    checkpoint_end: u64,
}

/// Replays the records of a log of `len` bytes (its header checked) in
/// order into `apply`, stepping over damage in the middle (into
/// `outcome`); reads only, so the writer's open and a read-only one share
/// it and differ in what they do about a torn tail.
fn replay(
    file: &dyn BackendFile,
    version: u8,
    from: u64,
    len: u64,
    outcome: &mut ReplayOutcome,
    mut apply: impl FnMut(u64, MetaRecord),
) -> Result<Replayed, StoreError> {
    let from = from.clamp(META_HEADER_BYTES, len.max(META_HEADER_BYTES));
    let mut replayed = Replayed {
        end: len,
        torn: None,
        damaged: false,
        checkpointed: true,
        checkpoint_end: from,
    };
    let mut at = from;
    // One buffer for every payload: replay allocates per record only
    // what the decoded record keeps.
    let mut payload = Vec::new();
    let mut reader = Reader::new(file, len);
    while at < len {
        match record_at(&mut reader, at, len, &mut payload)? {
            Ok(header) => {
                let next = at + META_RECORD_HEADER_BYTES + u64::from(header.payload_len);
                match format::decode_meta_payload_in(version, header.kind, &payload) {
                    Ok(record) => {
                        outcome.records += 1;
                        replayed.checkpointed = record == MetaRecord::Checkpoint;
                        if replayed.checkpointed {
                            replayed.checkpoint_end = next;
                        }
                        apply(at, record)
                    }
                    Err(reason) => {
                        replayed.damaged = true;
                        outcome.problems.push(Problem::new(
                            ProblemKind::InvalidRecord,
                            format!("{META_LOG_NAME}: record at offset {at} undecodable ({reason}); skipped"),
                        ))
                    }
                }
                at = next;
            }
            Err(reason) => {
                match next_record(&mut reader, at + 1, len, &mut payload)? {
                    Some(next) => {
                        replayed.damaged = true;
                        outcome.problems.push(Problem::new(
                        ProblemKind::Damaged,
                        format!("{META_LOG_NAME}: bytes {at}..{next} unreadable ({reason}); skipped"),
                    ));
                        at = next;
                    }
                    None => {
                        replayed.torn = Some((at, reason));
                        break;
                    }
                }
            }
        }
    }
    replayed.end = at.min(len);
    Ok(replayed)
}

/// Re-reads `file` (a `meta.log` of format `version`) up to `len`, the
/// length everything in it was acknowledged at, and returns what is wrong
/// with it: every record whose checksum or decoding fails, and a torn end.
/// An open that resumes from a checkpoint of the catalog database reads
/// only the records past it, so rot in the rest shows here (through
/// `Store::verify_all`); it has no effect on what the store holds (the
/// tables have those records' effect) until the tables must be rebuilt
/// from the log, and a compaction of the log rewrites it from the tables.
pub fn check(file: &dyn BackendFile, version: u8, len: u64) -> Result<Vec<Problem>, StoreError> {
    let mut outcome = ReplayOutcome::default();
    let replayed = replay(
        file,
        version,
        META_HEADER_BYTES,
        len,
        &mut outcome,
        |_, _| {},
    )?;
    if let Some((at, reason)) = replayed.torn {
        outcome.problems.push(Problem::new(
            ProblemKind::Damaged,
            format!("{META_LOG_NAME}: bytes {at}..{len} unreadable ({reason})"),
        ));
    }
    Ok(outcome.problems)
}

impl MetaLog {
    /// The open file, its format version and its length, for [`check`]
    /// without the log lock.
    pub fn to_check(&self) -> (Arc<dyn BackendFile>, u8, u64) {
        (Arc::clone(&self.file), self.version, self.len)
    }

    /// Opens (or creates) `meta.log` in `dir` and hands every valid record,
    /// in order, to `apply` with its offset.
    ///
    /// With `read_only` (a reader beside a writer process) nothing is
    /// created, removed, cut or synced: a missing log is `NotFound`, a log
    /// shorter than its header holds nothing yet, and a torn tail (most
    /// likely an append the writer is making now) is where the replay stops.
    /// The result must then never be appended to.
    /// With `from` past the header (the offset a checkpoint of the catalog
    /// database covers, see [`fingerprint`]), records before it are neither
    /// read nor replayed.
    pub fn open(
        dir: &Arc<dyn Backend>,
        durability: Durability,
        fsyncs: Fsyncs,
        read_only: bool,
        from: u64,
        apply: impl FnMut(u64, MetaRecord),
    ) -> Result<(MetaLog, ReplayOutcome), StoreError> {
        if read_only {
            return MetaLog::open_read_only(dir, durability, fsyncs, from, apply);
        }
        MetaLog::open_to_write(dir, durability, fsyncs, from, apply)
    }

    /// [`MetaLog::open`] with `read_only`.
    fn open_read_only(
        dir: &Arc<dyn Backend>,
        durability: Durability,
        fsyncs: Fsyncs,
        from: u64,
        apply: impl FnMut(u64, MetaRecord),
    ) -> Result<(MetaLog, ReplayOutcome), StoreError> {
        let mut outcome = ReplayOutcome::default();
        let dir = Arc::clone(dir);
        let file = dir
            .open(META_LOG_NAME, OpenMode::Read)
            .map_err(io(|| format!("opening {META_LOG_NAME}")))?;
        let len = file
            .len()
            .map_err(io(|| format!("reading size of {META_LOG_NAME}")))?;
        let mut log = MetaLog {
            dir,
            file,
            len,
            durability,
            fsyncs,
            damaged: false,
            sync_failed: false,
            checkpointed: true,
            version: format::META_VERSION,
        };
        if len < META_HEADER_BYTES {
            // Being created by the writer: nothing in it yet.
            return Ok((log, outcome));
        }
        let mut header = [0u8; META_HEADER_BYTES as usize];
        log.file
            .read_exact_at(&mut header, 0)
            .map_err(io(|| format!("reading header of {META_LOG_NAME}")))?;
        log.version = format::decode_meta_header_version(&header)
            .map_err(|reason| StoreError::Corrupted(format!("{META_LOG_NAME}: {reason}")))?;
        let replayed = replay(&*log.file, log.version, from, len, &mut outcome, apply)?;
        log.damaged = replayed.damaged;
        if let Some((at, reason)) = replayed.torn {
            outcome.truncated_bytes += len - at;
            outcome.problems.push(Problem::new(
                ProblemKind::TornTail,
                format!(
                    "{META_LOG_NAME}: torn tail at offset {at} ({reason}); {} bytes ignored (read-only)",
                    len - at
                ),
            ));
        }
        log.len = replayed.end;
        Ok((log, outcome))
    }

    /// [`MetaLog::open`] for the writer: creates, repairs and syncs.
    fn open_to_write(
        dir: &Arc<dyn Backend>,
        durability: Durability,
        fsyncs: Fsyncs,
        from: u64,
        apply: impl FnMut(u64, MetaRecord),
    ) -> Result<(MetaLog, ReplayOutcome), StoreError> {
        let mut outcome = ReplayOutcome::default();
        match dir.remove(META_COMPACT_NAME) {
            Ok(()) => outcome.problems.push(Problem::new(
                ProblemKind::UnfinishedCompaction,
                format!("{META_COMPACT_NAME}: left by a compaction that did not finish; removed"),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(|| format!("removing {META_COMPACT_NAME}"))(e)),
        }
        let dir = Arc::clone(dir);
        let file = dir
            .open(META_LOG_NAME, OpenMode::CreateOrOpen)
            .map_err(io(|| format!("opening {META_LOG_NAME}")))?;
        let len = file
            .len()
            .map_err(io(|| format!("reading size of {META_LOG_NAME}")))?;
        if len < META_HEADER_BYTES {
            // New, or torn while being created: nothing in it was acknowledged.
            if len > 0 {
                outcome.problems.push(Problem::new(
                    ProblemKind::TornHeader,
                    format!("{META_LOG_NAME}: {len}-byte torn header rewritten"),
                ));
            }
            file.set_len(0)
                .and_then(|()| file.write_all_at(&format::encode_meta_header(), 0))
                .map_err(io(|| format!("writing header of {META_LOG_NAME}")))?;
            if durability.fsyncs() {
                fsyncs
                    .all(&*file)
                    .map_err(io(|| format!("syncing {META_LOG_NAME}")))?;
                fsyncs
                    .dir(&*dir)
                    .map_err(io(|| "syncing the store directory".into()))?;
            }
            let log = MetaLog {
                dir,
                file,
                len: META_HEADER_BYTES,
                durability,
                fsyncs,
                damaged: false,
                sync_failed: false,
                checkpointed: true,
                version: format::META_VERSION,
            };
            return Ok((log, outcome));
        }
        let mut header = [0u8; META_HEADER_BYTES as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(io(|| format!("reading header of {META_LOG_NAME}")))?;
        let version = format::decode_meta_header_version(&header)
            .map_err(|reason| StoreError::Corrupted(format!("{META_LOG_NAME}: {reason}")))?;

        let replayed = replay(&*file, version, from, len, &mut outcome, apply)?;
        if let Some((at, reason)) = replayed.torn {
            file.set_len(at)
                .map_err(io(|| format!("truncating {META_LOG_NAME} at {at}")))?;
            outcome.truncated_bytes += len - at;
            outcome.problems.push(Problem::new(
                ProblemKind::TornTail,
                format!(
                    "{META_LOG_NAME}: torn tail at offset {at} ({reason}); {} bytes truncated",
                    len - at
                ),
            ));
        }
        let (damaged, checkpointed) = (replayed.damaged, replayed.checkpointed);
        let len = replayed.end;
        if durability.fsyncs() {
            // What a crashed process wrote without fsync (and a truncation)
            // is made durable before anything new depends on it: written
            // again, then synced, since a sync that failed in that process
            // may have left it readable but never to be written (see
            // `fsync::rewrite`).
            let start = replayed.checkpoint_end.min(len);
            if !dir.reads_are_durable() {
                super::fsync::rewrite(&*file, start, len).map_err(io(|| {
                    format!("rewriting bytes {start}..{len} of {META_LOG_NAME} before syncing them")
                }))?;
            }
            fsyncs
                .data(&*file)
                .map_err(io(|| format!("syncing {META_LOG_NAME}")))?;
        }
        Ok((
            MetaLog {
                dir,
                file,
                len,
                durability,
                fsyncs,
                damaged,
                sync_failed: false,
                checkpointed,
                version,
            },
            outcome,
        ))
    }

    /// The log's format version (see [`format::META_VERSION`]).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Bytes in the log, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether replay stepped over damage (see [`MetaLog::mark_damaged`]).
    pub fn damaged(&self) -> bool {
        self.damaged
    }

    /// Whether a sync failed: then nothing written since the last good sync
    /// may be relied on, and the store goes read-only.
    pub fn sync_failed(&self) -> bool {
        self.sync_failed
    }

    /// Notes that a replayed record was invalid, so the log is kept as it is.
    pub fn mark_damaged(&mut self) {
        self.damaged = true;
    }

    /// Replaces the whole log by `records`, in the current format version
    /// (so this is also how an older log is upgraded), atomically: they are written to
    /// [`META_COMPACT_NAME`] and (in the durable modes) fsynced, and only
    /// then is that file renamed over `meta.log` and the directory fsynced.
    /// A crash before the rename leaves the old log in force; after it, the
    /// new one. On an error before the rename the old log stays in use.
    /// Returns the new length.
    pub fn rewrite(
        &mut self,
        records: impl Iterator<Item = Result<MetaRecord, StoreError>>,
    ) -> Result<u64, StoreError> {
        let file = match self.write_compacted(records) {
            Ok(file) => file,
            Err(error) => {
                let _ = self.dir.remove(META_COMPACT_NAME);
                return Err(error);
            }
        };
        if let Err(source) = self.dir.rename(META_COMPACT_NAME, META_LOG_NAME) {
            let _ = self.dir.remove(META_COMPACT_NAME);
            return Err(StoreError::io(
                format!("renaming {META_COMPACT_NAME} to {META_LOG_NAME}"),
                source,
            ));
        }
        // The new file is the log now, whatever the directory sync says.
        let (file, len) = file;
        self.file = file;
        self.len = len;
        self.checkpointed = false;
        self.version = format::META_VERSION;
        if self.durability.fsyncs() {
            if let Err(source) = self.fsyncs.dir(&*self.dir) {
                // Until the rename is durable a crash may bring the old log
                // back without anything appended to the new one.
                self.sync_failed = true;
                return Err(StoreError::io("syncing the store directory", source));
            }
        }
        Ok(len)
    }

    /// Writes `records` after a header to a new [`META_COMPACT_NAME`].
    fn write_compacted(
        &self,
        records: impl Iterator<Item = Result<MetaRecord, StoreError>>,
    ) -> Result<(Arc<dyn BackendFile>, u64), StoreError> {
        let file = self
            .dir
            .open(META_COMPACT_NAME, OpenMode::Truncate)
            .map_err(io(|| format!("creating {META_COMPACT_NAME}")))?;
        // Written a megabyte at a time: the live records, never the log.
        const FLUSH_BYTES: usize = 1 << 20;
        let mut buffer = Vec::with_capacity(FLUSH_BYTES * 2);
        buffer.extend_from_slice(&format::encode_meta_header());
        let mut len = 0u64;
        let flush = |buffer: &mut Vec<u8>, len: &mut u64| -> std::io::Result<()> {
            file.write_all_at(buffer, *len)?;
            *len += buffer.len() as u64;
            buffer.clear();
            Ok(())
        };
        // A record that cannot be read (the catalog's tables failed) ends
        // the rewrite: the caller removes the partial file, the old log
        // stays in force.
        for record in records {
            buffer.extend_from_slice(&format::encode_meta_record(&record?));
            if buffer.len() >= FLUSH_BYTES {
                flush(&mut buffer, &mut len)
                    .map_err(io(|| format!("writing {META_COMPACT_NAME}")))?;
            }
        }
        flush(&mut buffer, &mut len).map_err(io(|| format!("writing {META_COMPACT_NAME}")))?;
        if self.durability.fsyncs() {
            self.fsyncs
                .all(&*file)
                .map_err(io(|| format!("syncing {META_COMPACT_NAME}")))?;
        }
        Ok((file, len))
    }

    /// Appends `records` in order with one write and, in the durable
    /// modes, one fsync (group commit). All or none: on an error the log
    /// is cut back to where it was, so none of them is replayed later.
    pub fn append_all(&mut self, records: &[MetaRecord]) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        for record in records {
            if !format::fields_fit_version(self.version, record) {
                return Err(StoreError::InvalidArgument(format!(
                    "external links cannot be stored yet: {META_LOG_NAME} is still format version {} (replay found damage there, so it was not upgraded; see tblob verify)",
                    self.version
                )));
            }
            bytes.extend_from_slice(&format::encode_meta_record_in(self.version, record));
        }
        let at = self.len;
        if let Err(source) = self.file.write_all_at(&bytes, at) {
            // Roll back a partial record so the log stays a clean sequence.
            let _ = self.file.set_len(at);
            return Err(StoreError::io(
                format!("appending to {META_LOG_NAME} at {at}"),
                source,
            ));
        }
        if self.durability.fsyncs() {
            if let Err(source) = self.fsyncs.data(&*self.file) {
                // The record may or may not be on disk: the caller fails the
                // commit and stops writing to the store (see
                // `StoreError::ReadOnly`).
                self.sync_failed = true;
                let _ = self.file.set_len(at);
                return Err(StoreError::io(format!("syncing {META_LOG_NAME}"), source));
            }
        }
        self.len = at + bytes.len() as u64;
        self.checkpointed = records.last() == Some(&MetaRecord::Checkpoint);
        Ok(())
    }

    /// On a clean close: appends a [`MetaRecord::Checkpoint`] and syncs it,
    /// unless the log already ends with one. From then on a damaged record
    /// anywhere before it is reported as damage at open, never cut off as
    /// the torn tail of a crash.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.checkpointed || !self.durability.fsyncs() || self.sync_failed {
            return Ok(());
        }
        self.append_all(&[MetaRecord::Checkpoint])
    }
}

/// The record at `at`: Ok(header) if whole and crc-valid, its payload
/// then in `payload`.
fn record_at(
    reader: &mut Reader<'_>,
    at: u64,
    len: u64,
    payload: &mut Vec<u8>,
) -> Result<Result<format::MetaHeader, String>, StoreError> {
    if len - at < META_RECORD_HEADER_BYTES {
        return Ok(Err(format!("{} bytes, short of a record header", len - at)));
    }
    let mut bytes = [0u8; META_RECORD_HEADER_BYTES as usize];
    reader
        .read_exact_at(&mut bytes, at)
        .map_err(io(|| format!("reading {META_LOG_NAME} at {at}")))?;
    let header = match format::decode_meta_header_record(&bytes) {
        Ok(header) => header,
        Err(reason) => return Ok(Err(reason)),
    };
    // Checked against the bytes present before allocating.
    let available = len - at - META_RECORD_HEADER_BYTES;
    if u64::from(header.payload_len) > available {
        return Ok(Err(format!(
            "record of {} bytes runs past the end",
            header.payload_len
        )));
    }
    payload.resize(header.payload_len as usize, 0);
    reader
        .read_exact_at(payload, at + META_RECORD_HEADER_BYTES)
        .map_err(io(|| format!("reading {META_LOG_NAME} at {at}")))?;
    if let Err(reason) = format::check_meta_crc(&header, payload) {
        return Ok(Err(reason));
    }
    Ok(Ok(header))
}

/// The offset of the first valid record at or after `from`, if any.
fn next_record(
    reader: &mut Reader<'_>,
    from: u64,
    len: u64,
    payload: &mut Vec<u8>,
) -> Result<Option<u64>, StoreError> {
    const WINDOW_BYTES: u64 = 1 << 20;
    let magic = format::META_RECORD_MAGIC.to_le_bytes();
    let mut window = Vec::new();
    let mut start = from;
    while start + META_RECORD_HEADER_BYTES <= len {
        let end = (start + WINDOW_BYTES).min(len);
        window.resize((end - start) as usize, 0);
        reader
            .file
            .read_exact_at(&mut window, start)
            .map_err(io(|| format!("scanning {META_LOG_NAME} at {start}")))?;
        for (i, candidate) in window.windows(magic.len()).enumerate() {
            if candidate == magic {
                let at = start + i as u64;
                if record_at(reader, at, len, payload)?.is_ok() {
                    return Ok(Some(at));
                }
            }
        }
        if end == len {
            break;
        }
        start = end - (magic.len() as u64 - 1);
    }
    Ok(None)
}

/// Bytes of `meta.log` before an offset that [`fingerprint`] hashes.
const FINGERPRINT_BYTES: u64 = 4096;

/// The BLAKE3 of the log's header and of the (up to) 4 KiB before `len`:
/// what a checkpoint of the catalog database records with the offset it
/// covers, so a log rewritten since (a compaction, an upgrade) or cut
/// shorter is never taken for the one it covered. `None` if the log is
/// shorter than `len` or has no header.
pub fn fingerprint(dir: &dyn Backend, len: u64) -> Result<Option<[u8; 32]>, StoreError> {
    let file = match dir.open(META_LOG_NAME, OpenMode::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(|| format!("opening {META_LOG_NAME}"))(e)),
    };
    let file_len = file
        .len()
        .map_err(io(|| format!("reading size of {META_LOG_NAME}")))?;
    if len < META_HEADER_BYTES || file_len < len {
        return Ok(None);
    }
    let start = len.saturating_sub(FINGERPRINT_BYTES).max(META_HEADER_BYTES);
    let mut bytes = vec![0u8; (META_HEADER_BYTES + len - start) as usize];
    let (header, tail) = bytes.split_at_mut(META_HEADER_BYTES as usize);
    file.read_exact_at(header, 0)
        .and_then(|()| file.read_exact_at(tail, start))
        .map_err(io(|| format!("reading {META_LOG_NAME}")))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&bytes);
    Ok(Some(*hasher.finalize().as_bytes()))
}

/// An artifact's chunk list with prefix sums for seeking.
pub struct Manifest {
    pub chunks: Vec<ChunkRef>,
    /// `ends[i]` is the content offset just past chunk `i`.
    pub ends: Vec<u64>,
}

impl Manifest {
    pub fn new(chunks: Vec<ChunkRef>) -> Manifest {
        let mut end = 0u64;
        let ends = chunks
            .iter()
            .map(|chunk| {
                // Cannot overflow: at most MANIFEST_CHUNKS_MAX chunks of at
                // most CHUNK_BYTES_MAX bytes (asserted in format.rs).
                end += u64::from(chunk.len);
                end
            })
            .collect();
        Manifest { chunks, ends }
    }

    /// (chunk index, chunk start) of the chunk holding `offset`, which must
    /// be below the content size.
    pub fn locate(&self, offset: u64) -> (u64, u64) {
        let index = self.ends.partition_point(|&end| end <= offset);
        assert!(index < self.ends.len(), "offset below size");
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        (index as u64, start)
    }
}

/// One live artifact.
#[derive(Clone)]
pub struct Artifact {
    /// Position in commit order.
    pub seq: u64,
    pub meta: Metadata,
    pub manifest: Arc<Manifest>,
}

/// Live artifacts, rebuilt from the log at open and kept in step with it.
#[derive(Default)]
pub struct Catalog {
    pub artifacts: HashMap<ArtifactId, Artifact>,
    /// Commit order of live artifacts.
    pub order: BTreeMap<u64, ArtifactId>,
    /// Commit position of every id ever committed, deleted ones included,
    /// so paging can continue after a deleted id and ids are never reused.
    pub seq_of: HashMap<ArtifactId, u64>,
    /// The query indexes over the live artifacts' metadata.
    pub index: MetaIndex,
    pub logical_bytes: u64,
    /// `wasi:blobstore` containers and object names ([`super::names`]).
    pub names: super::names::Names,
    /// Live [`Hold`](super::Hold)s per artifact (in memory only).
    pub holds: HashMap<ArtifactId, u32>,
    /// Artifacts deleted while held: still readable through their holds,
    /// their chunk references kept until the last hold goes.
    pub retained: HashMap<ArtifactId, Artifact>,
    next_seq: u64,
}

/// The records that rebuild one live artifact at replay: its commit, with
/// the mutable fields it has now, then, if it was modified since, an update
/// that carries the modification time. What a compaction writes.
/// `bound` is the object name bound to it, if any.
pub fn snapshot_records(
    artifact: &Artifact,
    bound: Option<&(String, String)>,
) -> impl Iterator<Item = MetaRecord> {
    let meta = &artifact.meta;
    let fields = Catalog::fields_of(meta);
    let update = (meta.modified_ms != meta.created_ms).then(|| MetaRecord::Update {
        id: *meta.id.as_bytes(),
        modified_ms: meta.modified_ms,
        fields: fields.clone(),
    });
    let commit = MetaRecord::Commit {
        id: *meta.id.as_bytes(),
        size: meta.size,
        digest: *meta.digest.as_bytes(),
        created_ms: meta.created_ms,
        chunks: artifact
            .manifest
            .chunks
            .iter()
            .map(|c| (*c.digest.as_bytes(), c.len))
            .collect(),
        creator: meta.creator.clone(),
        fields,
        bound: bound.cloned(),
    };
    std::iter::once(commit).chain(update)
}

/// Makes the set-valued fields sets: tags, links and external links keep
/// the first occurrence of each value, in order; custom keys are unique,
/// each keeping the place of its first occurrence and the value of its
/// last. Commits and updates are normalized before they are written;
/// replay normalizes again, since records written by older code may hold
/// duplicates.
pub fn normalize_fields(fields: &mut MutableFields) {
    fn dedup<T: Eq + std::hash::Hash + Clone>(values: &mut Vec<T>) {
        let mut seen = HashSet::with_capacity(values.len());
        values.retain(|value| seen.insert(value.clone()));
    }
    dedup(&mut fields.tags);
    dedup(&mut fields.links);
    dedup(&mut fields.external_links);
    if duplicate_custom_key(&fields.custom).is_some() {
        let mut at: HashMap<String, usize> = HashMap::with_capacity(fields.custom.len());
        let mut unique: Vec<(String, String)> = Vec::with_capacity(fields.custom.len());
        for (key, value) in std::mem::take(&mut fields.custom) {
            match at.get(&key) {
                Some(&i) => unique[i].1 = value,
                None => {
                    at.insert(key.clone(), unique.len());
                    unique.push((key, value));
                }
            }
        }
        fields.custom = unique;
    }
}

/// Replaces the mutable fields of `meta` (already normalized) and its
/// modification time.
pub fn set_fields(meta: &mut Metadata, modified_ms: u64, fields: MutableFields) {
    meta.filename = fields.filename;
    meta.content_type = fields.content_type;
    meta.tags = fields.tags;
    meta.links = fields
        .links
        .into_iter()
        .map(ArtifactId::from_bytes)
        .collect();
    meta.custom = fields.custom;
    meta.external_links = fields.external_links;
    meta.modified_ms = modified_ms;
}

/// What a commit record makes: the artifact's metadata (its fields
/// normalized, modified when created), its manifest and the name it is
/// bound to. Checks nothing else.
pub struct Committed {
    pub meta: Metadata,
    pub manifest: Manifest,
    pub bound: Option<(String, String)>,
}

/// [`Committed`] of a commit record; `None` for any other record.
pub fn committed(record: MetaRecord) -> Option<Committed> {
    let MetaRecord::Commit {
        id,
        size,
        digest,
        created_ms,
        chunks,
        creator,
        mut fields,
        bound,
    } = record
    else {
        return None;
    };
    normalize_fields(&mut fields);
    let manifest = Manifest::new(
        chunks
            .into_iter()
            .map(|(digest, len)| ChunkRef {
                digest: Hash::from_bytes(digest),
                len,
            })
            .collect(),
    );
    let mut meta = Metadata {
        id: ArtifactId::from_bytes(id),
        filename: None,
        content_type: None,
        creator,
        size,
        digest: Hash::from_bytes(digest),
        chunk_count: manifest.chunks.len() as u64,
        created_ms,
        modified_ms: created_ms,
        tags: Vec::new(),
        links: Vec::new(),
        external_links: Vec::new(),
        custom: Vec::new(),
    };
    set_fields(&mut meta, created_ms, fields);
    Some(Committed {
        meta,
        manifest,
        bound,
    })
}

/// The first custom key given twice, if any.
pub fn duplicate_custom_key(custom: &[(String, String)]) -> Option<&str> {
    let mut seen = HashSet::with_capacity(custom.len());
    custom
        .iter()
        .find(|(key, _)| !seen.insert(key.as_str()))
        .map(|(key, _)| key.as_str())
}

impl Catalog {
    /// Adds a committed artifact. The caller adds the chunk references.
    /// Returns false (and changes nothing) if the id was ever used before.
    pub fn insert(&mut self, meta: Metadata, manifest: Arc<Manifest>) -> bool {
        let id = meta.id;
        if self.seq_of.contains_key(&id) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(id, seq);
        self.order.insert(seq, id);
        self.index.add(seq, &meta);
        self.logical_bytes += meta.size;
        self.artifacts.insert(
            id,
            Artifact {
                seq,
                meta,
                manifest,
            },
        );
        true
    }

    /// A live artifact, or one deleted while held (still readable).
    pub fn lookup(&self, id: &ArtifactId) -> Option<&Artifact> {
        self.artifacts.get(id).or_else(|| self.retained.get(id))
    }

    /// Removes a live artifact; the caller drops its chunk references.
    ///
    /// Links to it are dropped: every live artifact linking to it loses
    /// that link (its `modified_ms` unchanged), so no link dangles and an
    /// update passing an artifact's links back unchanged never fails on
    /// one. Done here, where every delete path (a delete, a name replaced
    /// or released, replay) ends, so live changes and replay agree.
    pub fn remove(&mut self, id: &ArtifactId) -> Option<Artifact> {
        let artifact = self.artifacts.remove(id)?;
        self.order.remove(&artifact.seq);
        self.index.remove(artifact.seq, &artifact.meta);
        self.logical_bytes -= artifact.meta.size;
        let key = Key::LinksTo(*id);
        let sources: Vec<u64> = self
            .index
            .postings(&key)
            .map(|postings| postings.iter().collect())
            .unwrap_or_default();
        for seq in sources {
            let source = self.order[&seq];
            let source = self.artifacts.get_mut(&source).expect("indexed is live");
            self.index.remove(seq, &source.meta);
            source.meta.links.retain(|link| link != id);
            self.index.add(seq, &source.meta);
        }
        assert!(self.index.postings(&key).is_none(), "no link to it is left");
        Some(artifact)
    }

    /// Replaces the mutable metadata of a live artifact (normalized: see
    /// [`normalize_fields`]).
    pub fn update(
        &mut self,
        id: &ArtifactId,
        modified_ms: u64,
        mut fields: MutableFields,
    ) -> Option<Metadata> {
        normalize_fields(&mut fields);
        let artifact = self.artifacts.get_mut(id)?;
        let seq = artifact.seq;
        self.index.remove(seq, &artifact.meta);
        set_fields(&mut artifact.meta, modified_ms, fields);
        self.index.add(seq, &artifact.meta);
        Some(artifact.meta.clone())
    }

    /// The mutable fields of a metadata record, in on-disk form.
    pub fn fields_of(meta: &Metadata) -> MutableFields {
        MutableFields {
            filename: meta.filename.clone(),
            content_type: meta.content_type.clone(),
            tags: meta.tags.clone(),
            links: meta.links.iter().map(|id| *id.as_bytes()).collect(),
            custom: meta.custom.clone(),
            external_links: meta.external_links.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::types::Hash;

    #[test]
    fn locate_finds_the_chunk_holding_each_offset() {
        let chunks = [3u32, 1, 5]
            .iter()
            .map(|&len| ChunkRef {
                digest: Hash::of(&[len as u8]),
                len,
            })
            .collect();
        let manifest = Manifest::new(chunks);
        let expected = [
            (0, 0),
            (0, 0),
            (0, 0),
            (1, 3),
            (2, 4),
            (2, 4),
            (2, 4),
            (2, 4),
            (2, 4),
        ];
        for (offset, want) in expected.iter().enumerate() {
            assert_eq!(manifest.locate(offset as u64), *want, "offset {offset}");
        }
    }
}
