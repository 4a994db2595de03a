//! The store's public value types: digests, artifact ids, manifests,
//! metadata, options and reports. Plain data; no I/O.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Serialize, Serializer};

use super::compress::Compression;
use crate::error::StoreError;

/// A BLAKE3-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash([u8; 32]);

impl Hash {
    /// Wraps 32 digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Hash {
        Hash(bytes)
    }

    /// A digest from a slice, which must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Hash, StoreError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            StoreError::InvalidArgument(format!("a digest is 32 bytes, got {}", bytes.len()))
        })?;
        Ok(Hash(bytes))
    }

    /// The BLAKE3 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Identifies one artifact: 16 bytes, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactId([u8; 16]);

/// Distinguishes ids generated within one process in the same nanosecond.
static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ArtifactId {
    /// Wraps 16 id bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> ArtifactId {
        ArtifactId(bytes)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A fresh id: BLAKE3 of the time, the process id and a process-wide
    /// counter, truncated to 16 bytes. Unique in practice, not secret; the
    /// store also checks a new id against every id it has ever seen.
    pub fn generate() -> ArtifactId {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tensor-blob artifact id");
        hasher.update(&nanos.to_le_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        hasher.update(&ID_COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        ArtifactId(id)
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl FromStr for ArtifactId {
    type Err = StoreError;

    /// Parses 32 hex digits (either case).
    fn from_str(text: &str) -> Result<ArtifactId, StoreError> {
        let invalid =
            || StoreError::InvalidArgument(format!("artifact id {text:?}: expected 32 hex digits"));
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return Err(invalid());
        }
        let mut id = [0u8; 16];
        for (byte, pair) in id.iter_mut().zip(digits.chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or_else(invalid)?;
            let low = hex_value(pair[1]).ok_or_else(invalid)?;
            *byte = high << 4 | low;
        }
        Ok(ArtifactId(id))
    }
}

impl Serialize for ArtifactId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for byte in bytes {
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// One manifest entry: a chunk's digest and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ChunkRef {
    pub digest: Hash,
    pub len: u32,
}

/// Metadata given when an artifact is committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewMetadata {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub creator: Option<String>,
    pub tags: Vec<String>,
    pub links: Vec<ArtifactId>,
    /// Links to things that are not artifacts of this store (a run, a
    /// user, a dataset elsewhere): opaque entity ids, never checked.
    pub external_links: Vec<String>,
    pub custom: Vec<(String, String)>,
}

/// Everything the store knows about one artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Metadata {
    pub id: ArtifactId,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub creator: Option<String>,
    pub size: u64,
    pub digest: Hash,
    pub chunk_count: u64,
    pub created_ms: u64,
    pub modified_ms: u64,
    pub tags: Vec<String>,
    pub links: Vec<ArtifactId>,
    pub external_links: Vec<String>,
    pub custom: Vec<(String, String)>,
}

/// A change to an artifact's mutable metadata, applied atomically: first
/// the replacements (`None` keeps a field, `Some` replaces it whole), then
/// the removals, then the additions (adding a tag or link already there,
/// or removing one that is not, changes nothing; `set_custom` replaces the
/// value of a key it names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataUpdate {
    pub filename: Option<Option<String>>,
    pub content_type: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub links: Option<Vec<ArtifactId>>,
    pub external_links: Option<Vec<String>>,
    pub custom: Option<Vec<(String, String)>>,
    pub remove_tags: Vec<String>,
    pub add_tags: Vec<String>,
    pub remove_links: Vec<ArtifactId>,
    pub add_links: Vec<ArtifactId>,
    pub remove_external_links: Vec<String>,
    pub add_external_links: Vec<String>,
    /// Custom keys to remove.
    pub unset_custom: Vec<String>,
    /// Custom pairs to add, or whose key's value to replace.
    pub set_custom: Vec<(String, String)>,
}

/// One condition of a [`Query`]. A query matches the artifacts that meet
/// every one of its conditions. Values are compared exactly (bytes), never
/// as prefixes or patterns, except [`Condition::FilenamePrefix`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Carries this tag.
    Tag(String),
    /// Links to this artifact (its `links` include the id).
    LinksTo(ArtifactId),
    /// Is one of the artifacts this artifact links to.
    LinkedFrom(ArtifactId),
    /// Its `external_links` include this entity id.
    LinksToExternal(String),
    ContentType(String),
    Creator(String),
    /// Filename equal to this.
    Filename(String),
    /// Filename starting with these bytes (an empty prefix matches every
    /// artifact that has a filename).
    FilenamePrefix(String),
    /// `from_ms <= created_ms < to_ms`.
    Created(TimeRange),
    /// `from_ms <= modified_ms < to_ms`.
    Modified(TimeRange),
    /// Has a custom pair with this key.
    CustomKey(String),
    /// Has this custom pair (key, value).
    Custom(String, String),
}

/// A half-open range of milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: u64,
    pub to_ms: u64,
}

/// The order of a query's results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Commit order, oldest first.
    #[default]
    OldestFirst,
    /// Reverse commit order, newest first.
    NewestFirst,
}

/// A metadata query: the artifacts matching all `conditions` (every
/// artifact if there are none), in `order`, at most `limit` of them,
/// starting after the artifact `after` in that order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub conditions: Vec<Condition>,
    pub order: Order,
    /// Continue after this id (the previous page's `next`). It may have
    /// been deleted since. `NotFound` for an id the store does not know:
    /// never committed, or deleted and then forgotten (a compaction of
    /// `meta.log` keeps only live artifacts, so after one and a reopen the
    /// position of an id deleted before it is gone; start the walk again).
    pub after: Option<ArtifactId>,
    pub limit: usize,
}

/// One page of a query's results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryPage {
    pub ids: Vec<ArtifactId>,
    /// Pass as [`Query::after`] for the next page; `None` when this page
    /// holds the last match.
    pub next: Option<ArtifactId>,
}

/// Totals for one store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Live artifacts.
    pub artifacts: u64,
    /// Distinct chunks referenced by at least one artifact.
    pub chunks: u64,
    /// Sum of artifact sizes.
    pub logical_bytes: u64,
    /// Sum of the lengths of distinct referenced chunks.
    pub physical_bytes: u64,
    /// What [`Stats::physical_bytes`] take on disk: the payloads of their
    /// records, compressed where that shrank them (headers excluded).
    pub stored_bytes: u64,
    /// Bytes the segment files occupy, garbage and headers included, holes
    /// punched by GC on a full disk excluded.
    pub disk_bytes: u64,
    /// Pending garbage: stored chunks nothing references or pins, not yet
    /// collected (GC frees them when it compacts their segment).
    pub garbage_chunks: u64,
    /// Payload bytes of [`Stats::garbage_chunks`], as stored.
    pub garbage_bytes: u64,
    /// Disk bytes of segments that hold no live record: garbage records,
    /// second copies, damaged and torn records (segment headers excluded).
    /// What GC could give back if it compacted every segment.
    pub dead_bytes: u64,
    /// Disk bytes of the records of referenced or pinned chunks, their
    /// headers included: with `dead_bytes` and the segment headers, all of
    /// `disk_bytes`.
    pub live_bytes: u64,
    /// Segment files, the active one included.
    pub segments: u64,
}

/// When the store forces data to stable storage.
///
/// Whatever the mode, a commit, delete or update is applied in memory (made
/// visible) only after its record is written, and in the two durable modes
/// only after it is on stable storage. The store lock is never held across
/// an fsync, so other uploads keep appending chunks meanwhile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync per commit: the segments holding the commit's chunks are
    /// fdatasynced, then its record is appended to `meta.log` and that is
    /// fdatasynced, before the commit returns. Deletes and updates fsync
    /// their record likewise. About two fsyncs per commit, whatever its
    /// chunk count.
    #[default]
    Sync,
    /// Group commit: concurrent commits queue their records; one of them
    /// (the leader) fdatasyncs every segment with unsynced bytes, writes
    /// all queued records to `meta.log` in one append, fdatasyncs it, and
    /// publishes them, in queue order. Each commit returns only after the
    /// fsync covering its record completed, so acknowledged still means
    /// durable; N concurrent commits cost about two fsyncs, not 2N.
    /// Deletes and updates behave as under [`Durability::Sync`].
    Batch,
    /// Never fsync: a crash may lose acknowledged writes (and, since the
    /// kernel may write a manifest back before its chunks, leave artifacts
    /// that read as corrupted). For tests and benchmarks only.
    None,
}

impl Durability {
    /// Whether this mode issues fsyncs at all.
    pub fn fsyncs(self) -> bool {
        self != Durability::None
    }
}

/// How a store is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Size at which the active segment is sealed and a new one begun. A
    /// segment always takes at least one record, whatever this says.
    pub segment_bytes_max: u64,
    /// The quota of a tenant with no policy of its own (see
    /// [`Store::set_policy`](super::Store::set_policy)); the default is
    /// unlimited.
    pub quota: Quota,
    /// How new chunks are stored: zstd level 1 by default, each chunk
    /// stored as it is when it would not shrink (see
    /// [`compress`](super::compress)). Stores written with any setting open
    /// with any other.
    pub compression: Compression,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Sync,
            segment_bytes_max: super::format::SEGMENT_BYTES_MAX_DEFAULT,
            quota: Quota::default(),
            compression: Compression::DEFAULT,
        }
    }
}

/// Limits on what one tenant may store; each `None` is unlimited. Checked
/// atomically against concurrent uploads: when several race for the last
/// room, exactly as many succeed as fit. A refusal is
/// [`StoreError::QuotaExceeded`] whose message starts with the
/// [`QuotaLimit`] it hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Quota {
    /// Everything the tenant costs on disk: the records of every chunk
    /// referenced or pinned by an upload (48-byte headers included) and
    /// `meta.log` (manifests, metadata, and dead records until GC compacts
    /// them). Checked by every chunk put and every commit.
    pub bytes_max: Option<u64>,
    /// Live artifacts (commits in flight count as live).
    pub artifacts_max: Option<u64>,
    /// Size of one artifact. Checked as an upload goes (its chunks put and
    /// found present so far) and exactly at commit.
    pub artifact_bytes_max: Option<u64>,
    /// Uploads open at once (a chunker `writer` and an inline put hold one
    /// each, from `begin-upload` until commit or drop).
    pub writers_max: Option<u64>,
}

/// Which limit of a [`Quota`] a write would cross.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaLimit {
    Bytes,
    Artifacts,
    ArtifactBytes,
    Writers,
}

impl QuotaLimit {
    /// The limit's name, as `QuotaExceeded` messages and the CLI spell it.
    pub fn name(self) -> &'static str {
        match self {
            QuotaLimit::Bytes => "bytes",
            QuotaLimit::Artifacts => "artifacts",
            QuotaLimit::ArtifactBytes => "artifact-bytes",
            QuotaLimit::Writers => "writers",
        }
    }

    /// The `QuotaExceeded` error for this limit: the message starts with
    /// the limit's name and a colon, so callers can tell which it was.
    pub(crate) fn exceeded(self, detail: std::fmt::Arguments<'_>) -> StoreError {
        StoreError::QuotaExceeded(format!("{}: {detail}", self.name()))
    }
}

impl fmt::Display for QuotaLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a tenant is allowed: its quota and its plugins' limits. Kept in
/// the tenant's directory (file `policy`), durably, and applied at once to
/// an open store. A tenant without a policy file gets the store-wide
/// defaults: [`StoreOptions::quota`] and the run's own plugin options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantPolicy {
    pub quota: Quota,
    /// Linear memory a plugin run as this tenant may use; the tighter of
    /// this and the run's own limit applies.
    pub plugin_memory_bytes_max: Option<u64>,
    /// Wall-clock time a plugin run as this tenant may take; the tighter of
    /// this and the run's own limit applies (needs an engine with epoch
    /// interruption). Stored in whole nanoseconds.
    pub plugin_time_limit: Option<std::time::Duration>,
}

/// What a tenant uses of its [`Quota`], counted the way the quota counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QuotaUsage {
    /// See [`Quota::bytes_max`].
    pub bytes: u64,
    /// Live artifacts.
    pub artifacts: u64,
    /// Uploads open now.
    pub writers: u64,
}

/// What [`Store::open`](super::Store::open) found and repaired or contained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from torn tails of the active segment and the metadata log.
    pub truncated_bytes: u64,
    /// Everything found and dealt with, in the order found.
    pub problems: Vec<Problem>,
}

impl RecoveryReport {
    /// Problems that are not what an interrupted write leaves behind:
    /// damage, invalid records, lost chunks, files that are not ours.
    pub fn damage(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|problem| !problem.kind.is_crash_residue())
    }
}

/// One thing [`Store::open`](super::Store::open) found, and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// For people: the file, the offsets, the reason and what was done.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(kind: ProblemKind, message: String) -> Self {
        Problem { kind, message }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The kinds of [`Problem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A record cut short at the end of the active segment or `meta.log`
    /// (a crash while appending): truncated.
    TornTail,
    /// A file torn while being created, shorter than its header: started
    /// again. Nothing in it was acknowledged.
    TornHeader,
    /// A segment's hint file torn, stale or damaged: the segment was
    /// scanned instead, so nothing is lost.
    HintRejected,
    /// An unreadable record past every byte of its segment known to be
    /// synced, with valid records after it: unsynced appends a power cut
    /// tore (sectors persist in any order). Skipped.
    TornRecord,
    /// A hint file could not be written at open (a full disk, say): the
    /// next open scans that segment again. Nothing is lost.
    HintNotWritten,
    /// A `meta.log` compaction a crash cut short: its unfinished file was
    /// removed and the old log kept.
    UnfinishedCompaction,
    /// Bytes in the middle of a file (or a sealed segment's tail) that fail
    /// their checks: skipped, the records in them lost; left on disk.
    Damaged,
    /// A `meta.log` record that is intact but cannot apply (undecodable, a
    /// second commit of one id, a delete or update of an unknown artifact):
    /// ignored.
    InvalidRecord,
    /// A committed artifact has a chunk no segment holds: it stays listed
    /// and reads as corrupted.
    MissingChunk,
    /// A segment with a header that is not ours or from a newer version:
    /// left alone, none of it used.
    ForeignSegment,
    /// A `meta.log` of an older format version could not be rewritten in
    /// the current one at open (a full disk, say): it stays in force, in
    /// its version, and the next open tries again. Nothing is lost.
    LogNotUpgraded,
    /// The catalog database's checkpoint did not match the files (a
    /// segment or `meta.log` changed under it, or the database could not
    /// be read): the tables were rebuilt from the segments and the log.
    /// Nothing is lost.
    CatalogRebuilt,
}

impl ProblemKind {
    /// What an interrupted write (a crash, a kill, a power cut) leaves
    /// behind and the open repairs without losing anything acknowledged,
    /// as opposed to damage.
    pub fn is_crash_residue(self) -> bool {
        matches!(
            self,
            ProblemKind::TornTail
                | ProblemKind::TornHeader
                | ProblemKind::HintRejected
                | ProblemKind::HintNotWritten
                | ProblemKind::TornRecord
                | ProblemKind::UnfinishedCompaction
                | ProblemKind::LogNotUpgraded
                | ProblemKind::CatalogRebuilt
        )
    }
}

/// How [`Store::open`](super::Store::open) built its index, for
/// benchmarks and tests of the hint files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpenStats {
    /// Sealed segments indexed from a valid hint file, without reading
    /// their records.
    pub segments_from_hints: u64,
    /// Segments whose records were read: the active one and sealed ones
    /// with a missing, torn or stale hint.
    pub segments_scanned: u64,
    /// Hint files (re)written at open for scanned sealed segments.
    pub hints_written: u64,
    /// Chunk records indexed (duplicates included).
    pub chunk_records: u64,
    /// Metadata log records replayed.
    pub meta_records: u64,
    /// Sealed segments a checkpoint of the catalog database covered whole:
    /// neither read nor scanned.
    pub segments_from_checkpoint: u64,
    /// The open found a checkpoint of the catalog database and replayed
    /// `meta.log` only past it.
    pub from_checkpoint: bool,
}

/// The result of [`Store::verify_all`](super::Store::verify_all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub artifacts_checked: u64,
    /// Each damaged artifact with what is wrong with it.
    pub damaged: Vec<(ArtifactId, String)>,
    /// (artifact, target) for each link to an artifact that is not live.
    /// A delete drops the links to what it deletes, so one can only come
    /// from damage (the target's commit lost from `meta.log`); the
    /// artifact's own bytes are not affected, and an incremental update
    /// (`remove_links`) can drop it.
    pub dangling_links: Vec<(ArtifactId, ArtifactId)>,
    /// What re-reading `meta.log` found wrong with it (bit rot in records
    /// an open from a checkpoint did not read; see `meta::check`).
    pub log_problems: Vec<Problem>,
}

/// When and how much garbage collection does, for
/// [`Store::gc_pass`](super::Store::gc_pass) and the background task
/// (`crate::maintenance`).
///
/// A pass compacts sealed segments one at a time, the one with the most
/// dead bytes first: it copies a segment's live records into the active
/// segment, syncs the copies, then removes the segment file. A segment is
/// worth it when its dead bytes (garbage, second copies, damage) are at
/// least [`GcPolicy::segment_dead_ratio_min`] of its record bytes; the
/// active segment is sealed first when it is. A pass stops starting new
/// segments once it has copied [`GcPolicy::pass_copy_bytes_max`] bytes (the
/// first segment is always done whole, so a large one still goes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GcPolicy {
    /// Time between two passes of the background task.
    pub interval: std::time::Duration,
    /// Dead bytes / record bytes at which a segment is compacted, in
    /// (0, 1]. 0.5: when at least half of it is dead.
    pub segment_dead_ratio_min: f64,
    /// Most bytes of live records one pass copies (its I/O budget);
    /// `u64::MAX` is no budget.
    pub pass_copy_bytes_max: u64,
    /// Dead share of `meta.log` (deleted artifacts, superseded updates) at
    /// which a pass rewrites it, in (0, 1].
    pub meta_log_dead_ratio_min: f64,
    /// `meta.log` shorter than this is never rewritten by a budgeted pass,
    /// which spares small stores a catalog walk every interval.
    pub meta_log_bytes_min: u64,
}

impl GcPolicy {
    /// Default time between background passes.
    pub const INTERVAL_DEFAULT: std::time::Duration = std::time::Duration::from_secs(30);
    /// Default I/O budget of one pass: 256 MiB, a few seconds of disk
    /// time at most, so a pass never hogs the disk for long.
    pub const PASS_COPY_BYTES_MAX_DEFAULT: u64 = 256 << 20;
    /// Default meta.log size below which budgeted passes leave it alone.
    pub const META_LOG_BYTES_MIN_DEFAULT: u64 = 1 << 20;

    /// One full pass, what [`Store::gc`](super::Store::gc) runs: every
    /// segment at least half dead, no budget, `meta.log` whatever its size.
    pub fn full() -> GcPolicy {
        GcPolicy {
            pass_copy_bytes_max: u64::MAX,
            meta_log_bytes_min: 0,
            ..GcPolicy::default()
        }
    }
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            interval: GcPolicy::INTERVAL_DEFAULT,
            segment_dead_ratio_min: 0.5,
            pass_copy_bytes_max: GcPolicy::PASS_COPY_BYTES_MAX_DEFAULT,
            meta_log_dead_ratio_min: 0.5,
            meta_log_bytes_min: GcPolicy::META_LOG_BYTES_MIN_DEFAULT,
        }
    }
}

/// What one GC pass ([`Store::gc`](super::Store::gc),
/// [`Store::gc_pass`](super::Store::gc_pass)) did. Everything counts
/// work done by this pass only: garbage it left where it was (in segments
/// not worth compacting) is not reported here but stays pending in
/// [`Stats`], so a second pass right after reports nothing new.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Garbage chunks whose records this pass freed (their segment was
    /// compacted away or punched), now forgotten by the index.
    pub chunks_removed: u64,
    /// Payload bytes of [`GcReport::chunks_removed`].
    pub chunk_bytes_removed: u64,
    /// Net disk bytes freed: removed segment files minus what GC wrote
    /// (copied live records and headers of segments it began).
    pub bytes_reclaimed: u64,
    /// Bytes of live records copied out of compacted segments.
    pub bytes_copied: u64,
    /// Segments compacted: their live records copied out, the file removed.
    pub segments_removed: u64,
    /// Segments worth compacting that this pass left for the next one
    /// (its copy budget was spent).
    pub segments_pending: u64,
    /// [`Stats::disk_bytes`] when the pass began and when it ended (other
    /// writes meanwhile included).
    pub disk_bytes_before: u64,
    pub disk_bytes_after: u64,
    /// Bytes `meta.log` shrank by when GC rewrote it without the records
    /// of deleted artifacts and superseded updates (0 if it did not).
    pub meta_bytes_reclaimed: u64,
    /// Bytes of garbage freed in place (holes punched) in segments whose
    /// live records could not be copied out for lack of space.
    pub bytes_punched: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let id = ArtifactId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<ArtifactId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<ArtifactId>().unwrap(), id);
        assert_ne!(ArtifactId::generate(), id);
        for bad in [
            "",
            "abc",
            &text[..31],
            &format!("{}g", &text[..31]),
            &format!("{text}0"),
        ] {
            assert!(matches!(
                bad.parse::<ArtifactId>(),
                Err(StoreError::InvalidArgument(_))
            ));
        }
        // Multi-byte characters must not be split mid-character.
        assert!("é".repeat(16).parse::<ArtifactId>().is_err());
    }

    #[test]
    fn hashes_print_as_hex_and_check_length() {
        let hash = Hash::of(b"");
        assert_eq!(
            hash.to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(format!("{hash:?}"), hash.to_string());
        assert_eq!(Hash::from_slice(hash.as_bytes()).unwrap(), hash);
        assert!(matches!(
            Hash::from_slice(&[0; 31]),
            Err(StoreError::InvalidArgument(_))
        ));
        assert_eq!(serde_json::to_string(&hash).unwrap(), format!("\"{hash}\""));
    }
}
