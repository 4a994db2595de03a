//! The durable, crash-safe, content-addressed chunk store of one tenant.
//!
//! A [`Store`] lives in one capability directory (`cap_std::fs::Dir`) and
//! never reaches outside it. Inside:
//!
//! - `segments/NNNNNNNNNNNNNNNN.seg`: append-only chunk records
//!   ([`segment`]), each a crc-checked header with the chunk's BLAKE3 digest,
//!   then the bytes.
//! - `meta.log`: append-only metadata records ([`meta`]): commits (with the
//!   whole manifest), deletes and metadata updates. [`Store::gc`] replaces
//!   it whole (write, fsync, rename) once most of it is dead records.
//!
//! - `segments/NNNNNNNNNNNNNNNN.hint`: a checkpoint of a sealed segment's
//!   records, so open indexes it without reading it.
//!
//! At open, sealed segments are indexed from their hints (or scanned when a
//! hint is missing, torn or stale), the active segment is scanned, and the
//! log is replayed to rebuild the catalog; reference counts are derived from the
//! live manifests, so they cannot drift. Writes go: chunks appended by an
//! [`Upload`] (no fsync), then at commit the whole content is re-hashed from
//! the store (or hashed by the upload itself as the verified chunks went
//! by), the segments holding the chunks are fsynced, the commit
//! record is appended and fsynced, and only then is the artifact visible.
//! Chunks an upload put or was told are present are pinned until it
//! finishes, so [`Store::gc`] never removes them. Every read re-hashes.
//!
//! Durability is chosen per store ([`Durability`]): fsync per commit
//! (`Sync`), group commit (`Batch`, see [`group`]) or none.
//! [`Store::fsync_count`] counts fsyncs; [`Store::open_stats`] says how
//! the open went.
//!
//! Concurrency: one mutex guards the index, catalog and segment appends;
//! hashing, reading chunk bytes and every fsync happen outside it. A second
//! mutex orders metadata log appends (taken before the first, never
//! after). The group-commit queue has its own mutex, never held while
//! another lock is taken.
//!
//! The on-disk format is documented in ARCHITECTURE.md, "On-disk format".
//!
//! ```no_run
//! use tensor_blob_host::store::{Hash, NewMetadata, Store, StoreOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir: cap_std::fs::Dir = todo!();
//! let store = Store::open(dir, StoreOptions::default())?;
//! let bytes = b"hello";
//! let digest = Hash::of(bytes);
//! let mut upload = store.begin_upload();
//! upload.put_chunk(&digest, bytes)?;
//! let chunk = tensor_blob_host::store::ChunkRef { digest, len: 5 };
//! let id = upload.commit(&[chunk], 5, &digest, NewMetadata::default())?;
//! assert_eq!(store.read_chunk(&store.manifest(&id, 0, 1)?[0].digest)?, bytes);
//! # Ok(())
//! # }
//! ```

pub mod backend;
#[cfg_attr(not(test), allow(dead_code))]
mod catalog_db;
#[cfg_attr(not(test), allow(dead_code))]
mod chunk_db;
#[doc(hidden)]
pub mod measure;
// The catalog's move onto it is the next step of issue 10 (ARCHITECTURE.md,
// "The catalog at scale"); until then only its tests use it.
#[cfg_attr(not(test), allow(dead_code))]
mod db;
pub mod format;
mod fsync;
mod gc;
mod group;
mod index;
mod meta;
mod meta_index;
mod names;
mod policy;
mod query;
mod read;
mod segment;
mod types;
mod upload;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;

use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use cap_std::fs::Dir;

use self::backend::Backend;

pub use self::format::{
    CHUNK_BYTES_MAX, CUSTOM_KEY_BYTES_MAX, CUSTOM_PAIRS_MAX, CUSTOM_VALUE_BYTES_MAX,
    EXTERNAL_LINKS_MAX, EXTERNAL_LINK_BYTES_MAX, LINKS_MAX, MANIFEST_CHUNKS_MAX, MANIFEST_PAGE_MAX,
    MISSING_BATCH_MAX, QUERY_CONDITIONS_MAX, QUERY_PAGE_MAX, STRING_BYTES_MAX, TAGS_MAX,
    TAG_BYTES_MAX, UPLOAD_PINS_MAX,
};
pub use self::names::{ContainerInfo, Hold, ObjectInfo, DELETE_OBJECTS_MAX, LIST_OBJECTS_PAGE_MAX};
pub use self::types::{
    ArtifactId, ChunkRef, Condition, Durability, GcPolicy, GcReport, Hash, Metadata,
    MetadataUpdate, NewMetadata, OpenStats, Order, Problem, ProblemKind, Query, QueryPage, Quota,
    QuotaLimit, QuotaUsage, RecoveryReport, Stats, StoreOptions, TenantPolicy, TimeRange,
    VerifyReport,
};
pub use self::upload::Upload;
pub use crate::error::StoreError;

use self::format::MetaRecord;
use self::fsync::Fsyncs;
use self::group::Group;
use self::index::Index;
use self::meta::{Catalog, MetaLog};
use self::segment::Segments;

/// Reads of one chunk [`Store::read_chunk`] tries while GC moves it: GC
/// moves a record at most once per pass, and one pass runs at a time.
const READ_CHUNK_ATTEMPTS_MAX: u32 = 4;

/// Whole opens [`Store::open_read_only`] tries while it races a writer's
/// compaction: each race needs a compaction to finish between two steps of
/// one open, so a few in a row mean something else is wrong.
pub const READ_ONLY_OPEN_ATTEMPTS_MAX: u32 = 8;

/// Name of the segments directory inside the store directory.
const SEGMENTS_DIR: &str = "segments";

/// A file of [`RESERVE_BYTES`] zeros kept so that on a full disk deletes
/// and updates (which append to `meta.log`) still land, and GC can then
/// free space: it is removed when an append to the log finds no space.
/// While it is missing, uploads are refused with `NoSpace` unless it can
/// be made again, so the space it freed goes to deletes, not to new data.
const RESERVE_NAME: &str = "reserve";
/// Size of the space reserve: room for about ten thousand deletes.
pub const RESERVE_BYTES: u64 = 512 << 10;

/// A tenant's chunk store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    options: StoreOptions,
    state: Mutex<State>,
    /// Serialises metadata log appends with the checks they depend on.
    /// Lock order: `meta_log` before `state`.
    meta_log: Mutex<MetaLog>,
    /// One garbage collection at a time.
    gc: Mutex<()>,
    /// One hint write at a time (seals and active-segment checkpoints may
    /// write the same segment's hint).
    hints: Mutex<()>,
    /// Commits waiting for a shared fsync (`Durability::Batch`).
    group: Group,
    fsyncs: Fsyncs,
    recovery: RecoveryReport,
    open_stats: OpenStats,
    /// Set by the first failed fsync, or from the start by a read-only
    /// open: why the store refuses writes until it is reopened (see
    /// [`StoreError::ReadOnly`]). Every write path, the clean close and
    /// checkpoints check it, so a read-only store writes nothing.
    failed: Mutex<Option<String>>,
    /// Opened with [`Store::open_read_only`].
    snapshot: bool,
    /// The store directory, for the space reserve.
    dir: Arc<dyn Backend>,
    /// Whether the space reserve ([`RESERVE_NAME`]) exists.
    reserve_present: Mutex<bool>,
    /// `meta.log`'s length, for quotas without the log lock. Changed only
    /// under the state lock, together with [`State::log_bytes_pending`].
    meta_log_bytes: std::sync::atomic::AtomicU64,
    /// The tenant's policy file as last written or read; `None`: no file,
    /// so `options.quota` applies. A leaf lock: nothing is taken under it.
    policy: Mutex<Option<TenantPolicy>>,
    /// One policy write at a time (file I/O, never under another lock).
    policy_write: Mutex<()>,
    /// Uploads holding a writer slot (see [`Quota::writers_max`]).
    writers_open: std::sync::atomic::AtomicU64,
}

struct State {
    index: Index,
    segments: Segments,
    catalog: Catalog,
    /// Bytes of commit records a group-commit leader has checked against
    /// the quota and is writing to `meta.log`: counted as used until the
    /// append lands (or fails), so chunk puts racing the commit see them.
    log_bytes_pending: u64,
}

/// Locks a mutex. A panic while holding one is a bug in this module; the
/// state is still the best there is, so later calls carry on with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn invalid(message: String) -> StoreError {
    StoreError::InvalidArgument(message)
}

impl Store {
    /// Opens the store in `dir`, creating its layout if `dir` is empty, and
    /// recovers from whatever a crash left: a torn tail of the active
    /// segment or of the metadata log is cut off, damage elsewhere is
    /// stepped over and reported in [`Store::recovery_report`].
    ///
    /// Reaches only files under `dir`.
    pub fn open(dir: Dir, options: StoreOptions) -> Result<Store, StoreError> {
        Store::open_backend(Arc::new(backend::cap::CapDir::new(dir)), options)
    }

    /// [`Store::open`] on any [`Backend`]: the store's directory is `dir`.
    pub fn open_backend(dir: Arc<dyn Backend>, options: StoreOptions) -> Result<Store, StoreError> {
        Store::open_with(dir, options, false)
    }

    /// Opens the store in `dir` for reading only, beside a writer that may
    /// be using it from another process (see ARCHITECTURE.md, "Concurrent
    /// access"). Writes nothing at all: no repair, no truncation, no
    /// leftover removal, no hint, no fsync, no lock; a store that is not
    /// there is `NotFound`, never created.
    ///
    /// The store is a snapshot: what was committed when it opened. The log
    /// is read before the segments (a commit record is appended only once
    /// its chunks are synced, so every chunk it names is found); a torn
    /// tail is taken for an append in progress and left out. An open that
    /// races a compaction of the writer's (a file gone between listing and
    /// opening, or a committed chunk found in no segment) is retried whole,
    /// up to [`READ_ONLY_OPEN_ATTEMPTS_MAX`] times.
    ///
    /// Reads re-hash as always; a chunk the writer has since moved is
    /// still read from the segment this snapshot opened (an unlinked file
    /// stays readable through an open handle); one whose space the writer
    /// freed in place (a full-disk GC) reads as `Corrupted`, never as other
    /// bytes. Every write is refused with [`StoreError::ReadOnly`].
    pub fn open_read_only(
        dir: Arc<dyn Backend>,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        // No store here is an answer, not a race to retry: a writer's first
        // open makes `segments/` and then `meta.log`, neither ever removed.
        let entries = dir
            .list()
            .map_err(|e| StoreError::io("listing the store directory", e))?;
        for (name, kind) in [
            (SEGMENTS_DIR, backend::EntryKind::Dir),
            (meta::META_LOG_NAME, backend::EntryKind::File),
        ] {
            if !entries.iter().any(|e| e.name == name && e.kind == kind) {
                return Err(StoreError::NotFound(format!(
                    "no store here (no {name}): a read-only open creates nothing"
                )));
            }
        }
        let mut attempt = 1;
        loop {
            let result = Store::open_with(Arc::clone(&dir), options.clone(), true);
            let raced = match &result {
                Ok(store) => store
                    .inner
                    .recovery
                    .problems
                    .iter()
                    .any(|problem| problem.kind == ProblemKind::MissingChunk),
                Err(StoreError::Io { source, .. }) => source.kind() == std::io::ErrorKind::NotFound,
                Err(_) => false,
            };
            if !raced || attempt >= READ_ONLY_OPEN_ATTEMPTS_MAX {
                return result;
            }
            // Whatever raced (a compaction's copy and unlink) finishes in
            // moments; a short, growing pause keeps the retries from
            // spinning through it.
            std::thread::sleep(std::time::Duration::from_millis(5 << attempt));
            attempt += 1;
        }
    }

    /// Whether this store was opened with [`Store::open_read_only`].
    pub fn is_snapshot(&self) -> bool {
        self.inner.snapshot
    }

    fn open_with(
        dir: Arc<dyn Backend>,
        options: StoreOptions,
        read_only: bool,
    ) -> Result<Store, StoreError> {
        let fsyncs = Fsyncs::default();
        let (segments_dir, _) = dir
            .dir(SEGMENTS_DIR, !read_only)
            .map_err(|e| StoreError::io(format!("opening {SEGMENTS_DIR}/"), e))?;
        // Synced on every open, not only when `segments/` is new: a crash
        // between a create and its sync leaves an entry that exists but may
        // not survive a power cut, and this repairs it.
        if options.durability.fsyncs() && !read_only {
            fsyncs
                .dir(&*dir)
                .map_err(|e| StoreError::io("syncing the store directory", e))?;
        }
        // Before anything else: a damaged policy must stop the open, not
        // leave the tenant unlimited.
        if !read_only {
            policy::remove_leftover(&*dir)?;
        }
        let tenant_policy = policy::read(&*dir)?;
        let segment_bytes_max = options.segment_bytes_max.max(1);
        let mut index = Index::default();
        let mut catalog = Catalog::default();
        let mut replay_problems = Vec::new();
        let mut replay = |catalog: &mut Catalog, index: &mut Index, offset, record| {
            if let Err(problem) = apply(catalog, index, record) {
                replay_problems.push(Problem::new(
                    ProblemKind::InvalidRecord,
                    format!(
                        "{}: record at offset {offset}: {problem}",
                        meta::META_LOG_NAME
                    ),
                ));
            }
        };
        let open_segments = |index: &mut Index| {
            Segments::open(
                segments_dir,
                segment_bytes_max,
                options.durability,
                fsyncs.clone(),
                read_only,
                index,
            )
        };
        let ((segments, scanned), (mut meta_log, mut replayed)) = if read_only {
            // The log first: every chunk a commit it holds names was synced
            // into a segment before the commit was appended, so the
            // segments listed after it hold them all.
            let mut records = Vec::new();
            let log = MetaLog::open(&dir, options.durability, fsyncs.clone(), true, |at, r| {
                records.push((at, r))
            })?;
            let segments = open_segments(&mut index)?;
            for (offset, record) in records {
                replay(&mut catalog, &mut index, offset, record);
            }
            (segments, log)
        } else {
            let segments = open_segments(&mut index)?;
            let log = MetaLog::open(
                &dir,
                options.durability,
                fsyncs.clone(),
                false,
                |offset, record| replay(&mut catalog, &mut index, offset, record),
            )?;
            (segments, log)
        };
        let mut recovery = RecoveryReport {
            truncated_bytes: scanned.truncated_bytes,
            problems: scanned.problems,
        };
        let mut open_stats = scanned.stats;
        if !replay_problems.is_empty() {
            meta_log.mark_damaged();
        }
        let mut failed = read_only.then(|| {
            "opened read-only, as a snapshot beside any writer process; open it again for writing".to_string()
        });
        // A log of an older format version is upgraded by rewriting it
        // whole, as a compaction does (crash-safe: the old log stays in
        // force until the rename). A damaged one is kept as it is, so its
        // damage stays on disk to be reported; it is appended to in its
        // own version, which refuses what that cannot hold.
        if !read_only && meta_log.version() < format::META_VERSION && !meta_log.damaged() {
            let from = meta_log.version();
            if let Err(error) = meta_log.rewrite(gc::Snapshot::of(&catalog).records()) {
                if meta_log.sync_failed() {
                    failed = Some(format!(
                        "an fsync failed ({error}); the store refuses writes until it is reopened"
                    ));
                }
                replayed.problems.push(Problem::new(
                    ProblemKind::LogNotUpgraded,
                    format!(
                        "{}: format version {from} not upgraded to {} ({error}); the next open tries again",
                        meta::META_LOG_NAME,
                        format::META_VERSION
                    ),
                ));
            }
        }
        open_stats.meta_records = replayed.records;
        recovery.truncated_bytes += replayed.truncated_bytes;
        recovery.problems.extend(replayed.problems);
        recovery.problems.extend(replay_problems);
        for (seq, id) in &catalog.order {
            let artifact = &catalog.artifacts[id];
            let lost = artifact
                .manifest
                .chunks
                .iter()
                .enumerate()
                .find(|(_, chunk)| {
                    index
                        .get(&chunk.digest)
                        .is_none_or(|e| e.location.is_none())
                });
            if let Some((i, chunk)) = lost {
                recovery.problems.push(Problem::new(
                    ProblemKind::MissingChunk,
                    format!(
                        "artifact {id} (commit #{seq}): chunk {i} ({}) is in no segment; the artifact reads as corrupted",
                        chunk.digest
                    ),
                ));
            }
        }

        let meta_log_len = meta_log.len();
        let store = Store {
            inner: Arc::new(Inner {
                options,
                state: Mutex::new(State {
                    index,
                    segments,
                    catalog,
                    log_bytes_pending: 0,
                }),
                meta_log: Mutex::new(meta_log),
                gc: Mutex::new(()),
                hints: Mutex::new(()),
                group: Group::default(),
                fsyncs,
                recovery,
                open_stats,
                failed: Mutex::new(failed),
                snapshot: read_only,
                reserve_present: Mutex::new(reserve_in_place(&*dir)),
                dir,
                meta_log_bytes: std::sync::atomic::AtomicU64::new(meta_log_len),
                policy: Mutex::new(tenant_policy),
                policy_write: Mutex::new(()),
                writers_open: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        // Best effort, and only if it is missing: opening never needs free
        // space, and an open that finds the reserve writes nothing.
        if !read_only {
            store.inner.ensure_reserve();
        }
        Ok(store)
    }

    /// `Err(ReadOnly)` once an fsync has failed: nothing more is written
    /// to this store until it is reopened.
    fn check_writable(&self) -> Result<(), StoreError> {
        match &*lock(&self.inner.failed) {
            Some(why) => Err(StoreError::ReadOnly(why.clone())),
            None => Ok(()),
        }
    }

    /// Whether the store refuses writes (see [`StoreError::ReadOnly`]): an
    /// fsync failed, or it was opened with [`Store::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        lock(&self.inner.failed).is_some()
    }

    /// How [`Store::open`] built the index: segments read from hint files
    /// versus scanned, records indexed and replayed.
    pub fn open_stats(&self) -> OpenStats {
        self.inner.open_stats
    }

    /// fsync and fdatasync calls this store has made since it was opened,
    /// those made by the open itself included.
    pub fn fsync_count(&self) -> u64 {
        self.inner.fsyncs.count()
    }

    /// What [`Store::open`] found and repaired or contained.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner.recovery.clone()
    }

    /// Starts an upload. Nothing it does is visible until it commits.
    ///
    /// Infallible: the upload takes its writer slot (see
    /// [`Quota::writers_max`]) at its first operation, which fails with
    /// `QuotaExceeded` ("writers: ...") if every slot is taken. Use
    /// [`Store::try_begin_upload`] to be refused at once.
    pub fn begin_upload(&self) -> Upload {
        Upload::new(self.clone())
    }

    /// Starts an upload holding one writer slot from now until it commits
    /// or is dropped; `QuotaExceeded` ("writers: ...") if the tenant's
    /// [`Quota::writers_max`] uploads are already open.
    pub fn try_begin_upload(&self) -> Result<Upload, StoreError> {
        let mut upload = Upload::new(self.clone());
        upload.take_writer_slot()?;
        Ok(upload)
    }

    /// The tenant's policy: its policy file's, or with none the store-wide
    /// defaults ([`StoreOptions::quota`], no plugin limits).
    pub fn policy(&self) -> TenantPolicy {
        lock(&self.inner.policy).unwrap_or(TenantPolicy {
            quota: self.inner.options.quota,
            ..TenantPolicy::default()
        })
    }

    /// Replaces the tenant's policy, durably (in the durable modes: written
    /// to a temporary file, synced, renamed into place, the directory
    /// synced), and applies it at once: the next chunk put, commit or
    /// upload start is checked against it. Lowering a limit below what is
    /// in use refuses new writes and keeps what is stored.
    pub fn set_policy(&self, policy: TenantPolicy) -> Result<(), StoreError> {
        self.change_policy(|current| *current = policy)
    }

    /// The tenant's quota (see [`Store::policy`]).
    pub fn quota(&self) -> Quota {
        self.inner.quota()
    }

    /// Replaces the tenant's quota and keeps the rest of its policy; as
    /// [`Store::set_policy`].
    pub fn set_quota(&self, quota: Quota) -> Result<(), StoreError> {
        self.change_policy(|current| current.quota = quota)
    }

    /// Reads, changes and writes the policy under one policy write, so
    /// concurrent changes of different parts are not lost.
    fn change_policy(&self, change: impl FnOnce(&mut TenantPolicy)) -> Result<(), StoreError> {
        self.check_writable()?;
        let durable = self.inner.options.durability.fsyncs();
        let _write = lock(&self.inner.policy_write);
        let mut policy = self.policy();
        change(&mut policy);
        policy::write(&*self.inner.dir, &policy, durable, &self.inner.fsyncs)?;
        // In force from the rename on: that is what a reopen would read.
        *lock(&self.inner.policy) = Some(policy);
        if durable {
            self.inner
                .note_sync(policy::sync_dir(&*self.inner.dir, &self.inner.fsyncs))?;
        }
        Ok(())
    }

    /// What the tenant uses of its quota now.
    pub fn usage(&self) -> QuotaUsage {
        let state = lock(&self.inner.state);
        QuotaUsage {
            bytes: self.inner.cost_bytes(&state),
            artifacts: state.catalog.artifacts.len() as u64,
            writers: self
                .inner
                .writers_open
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Whether `self` and `other` are clones of one open store.
    pub fn same_store(&self, other: &Store) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether any clone of this store other than `self` exists (another
    /// handle, an upload, a chunker): then closing it is not ours to do.
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }

    /// A chunk's bytes, re-hashed: `NotFound` if the store has no such
    /// chunk, `Corrupted` if its stored bytes do not hash to `digest`.
    ///
    /// Safe against a concurrent GC: a read that fails while GC moved the
    /// record (compaction) or dropped it (it was garbage) looks the chunk
    /// up again, so it returns the right bytes from the new place or
    /// `NotFound`; never other bytes (every read is re-hashed), and never
    /// an error caused by GC alone.
    pub fn read_chunk(&self, digest: &Hash) -> Result<Vec<u8>, StoreError> {
        let mut attempt = 0;
        loop {
            let (file, location, len) = {
                let state = lock(&self.inner.state);
                let entry = state
                    .index
                    .get(digest)
                    .ok_or_else(|| StoreError::NotFound(format!("chunk {digest}")))?;
                let location = entry.location.ok_or_else(|| {
                    StoreError::Corrupted(format!(
                        "chunk {digest}: its bytes were lost from every segment"
                    ))
                })?;
                let file = state
                    .segments
                    .handle(location.segment)
                    .expect("indexed chunks are in open segments");
                (file, location, entry.len)
            };
            let result =
                segment::read_payload(&*file, location.segment, location.offset, digest, len);
            attempt += 1;
            if result.is_ok() || attempt >= READ_CHUNK_ATTEMPTS_MAX {
                return result;
            }
            let moved = lock(&self.inner.state)
                .index
                .get(digest)
                .is_none_or(|entry| entry.location != Some(location));
            if !moved {
                return result;
            }
        }
    }

    /// Up to `limit` (clamped to [`MANIFEST_PAGE_MAX`]) manifest entries of
    /// artifact `id` from chunk index `start`; empty past the end.
    pub fn manifest(
        &self,
        id: &ArtifactId,
        start: u64,
        limit: u32,
    ) -> Result<Vec<ChunkRef>, StoreError> {
        let limit = limit.min(MANIFEST_PAGE_MAX) as usize;
        let state = lock(&self.inner.state);
        // A deleted artifact still held (see [`Hold`]) reads on.
        let artifact = state.catalog.lookup(id).ok_or_else(|| not_found(id))?;
        let chunks = &artifact.manifest.chunks;
        let start = usize::try_from(start)
            .unwrap_or(usize::MAX)
            .min(chunks.len());
        let end = start.saturating_add(limit).min(chunks.len());
        Ok(chunks[start..end].to_vec())
    }

    /// The chunk holding byte `offset` of artifact `id`, as (chunk index,
    /// content offset where that chunk starts). `offset` must be below the
    /// artifact's size.
    pub fn locate(&self, id: &ArtifactId, offset: u64) -> Result<(u64, u64), StoreError> {
        let state = lock(&self.inner.state);
        // A deleted artifact still held (see [`Hold`]) reads on.
        let artifact = state.catalog.lookup(id).ok_or_else(|| not_found(id))?;
        if offset >= artifact.meta.size {
            return Err(invalid(format!(
                "artifact {id}: offset {offset} is not below its size {}",
                artifact.meta.size
            )));
        }
        Ok(artifact.manifest.locate(offset))
    }

    /// An artifact's metadata.
    pub fn metadata(&self, id: &ArtifactId) -> Result<Metadata, StoreError> {
        let state = lock(&self.inner.state);
        // A deleted artifact still held (see [`Hold`]) reads on.
        let artifact = state.catalog.lookup(id).ok_or_else(|| not_found(id))?;
        Ok(artifact.meta.clone())
    }

    /// Whether artifact `id` exists.
    pub fn exists(&self, id: &ArtifactId) -> bool {
        lock(&self.inner.state).catalog.artifacts.contains_key(id)
    }

    /// Deletes artifact `id`, durably. Chunks it shares with other
    /// artifacts stay; chunks only it used become garbage for [`Store::gc`].
    pub fn delete(&self, id: &ArtifactId) -> Result<(), StoreError> {
        let mut meta_log = lock(&self.inner.meta_log);
        if !self.exists(id) {
            return Err(not_found(id));
        }
        self.check_writable()?;
        let record = MetaRecord::Delete { id: *id.as_bytes() };
        self.log_append(&mut meta_log, std::slice::from_ref(&record), 0)?;
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        apply(&mut state.catalog, &mut state.index, record).expect("checked under the log lock");
        Ok(())
    }

    /// Replaces parts of an artifact's mutable metadata, durably, and
    /// returns the result.
    pub fn update(&self, id: &ArtifactId, change: MetadataUpdate) -> Result<Metadata, StoreError> {
        let mut meta_log = lock(&self.inner.meta_log);
        let (fields, created_ms) = {
            let state = lock(&self.inner.state);
            let artifact = state
                .catalog
                .artifacts
                .get(id)
                .ok_or_else(|| not_found(id))?;
            let mut fields = Catalog::fields_of(&artifact.meta);
            if let Some(filename) = change.filename {
                fields.filename = filename;
            }
            if let Some(content_type) = change.content_type {
                fields.content_type = content_type;
            }
            if let Some(tags) = change.tags {
                fields.tags = tags;
            }
            if let Some(links) = change.links {
                check_links(&state.catalog, &links)?;
                fields.links = links.iter().map(|id| *id.as_bytes()).collect();
            }
            if let Some(custom) = change.custom {
                if let Some(key) = meta::duplicate_custom_key(&custom) {
                    return Err(invalid(format!(
                        "artifact {id}: custom key {key:?} given twice"
                    )));
                }
                fields.custom = custom;
            }
            fields.tags.retain(|tag| !change.remove_tags.contains(tag));
            for tag in change.add_tags {
                if !fields.tags.contains(&tag) {
                    fields.tags.push(tag);
                }
            }
            let removed: Vec<[u8; 16]> = change
                .remove_links
                .iter()
                .map(|id| *id.as_bytes())
                .collect();
            fields.links.retain(|link| !removed.contains(link));
            let mut added = Vec::new();
            for link in change.add_links {
                if !fields.links.contains(link.as_bytes()) {
                    fields.links.push(*link.as_bytes());
                    added.push(link);
                }
            }
            check_links(&state.catalog, &added)?;
            fields
                .custom
                .retain(|(key, _)| !change.unset_custom.contains(key));
            for (key, value) in change.set_custom {
                match fields.custom.iter_mut().find(|(k, _)| *k == key) {
                    Some(pair) => pair.1 = value,
                    None => fields.custom.push((key, value)),
                }
            }
            if let Some(external_links) = change.external_links {
                fields.external_links = external_links;
            }
            fields
                .external_links
                .retain(|link| !change.remove_external_links.contains(link));
            for link in change.add_external_links {
                if !fields.external_links.contains(&link) {
                    fields.external_links.push(link);
                }
            }
            meta::normalize_fields(&mut fields);
            format::check_metadata_limits(None, &fields)
                .map_err(|e| invalid(format!("artifact {id}: {e}")))?;
            (fields, artifact.meta.created_ms)
        };
        let record = MetaRecord::Update {
            id: *id.as_bytes(),
            modified_ms: now_ms().max(created_ms),
            fields,
        };
        self.check_writable()?;
        self.log_append(&mut meta_log, std::slice::from_ref(&record), 0)?;
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        apply(&mut state.catalog, &mut state.index, record).expect("checked under the log lock");
        Ok(state.catalog.artifacts[id].meta.clone())
    }

    /// Every live artifact id in commit order, fetched with [`Store::list`]
    /// a page at a time (the store lock is held per page, not throughout).
    /// Artifacts deleted meanwhile may be skipped; ones committed meanwhile
    /// come at the end.
    pub fn ids(&self) -> impl Iterator<Item = ArtifactId> + '_ {
        const PAGE: usize = 1024;
        let mut after: Option<ArtifactId> = None;
        let mut page = Vec::new().into_iter();
        std::iter::from_fn(move || loop {
            if let Some(id) = page.next() {
                after = Some(id);
                return Some(id);
            }
            // `after` came from the previous page and the catalog never
            // forgets an id it holds, so `NotFound` cannot happen here.
            let next = self.list(after.as_ref(), PAGE).unwrap_or_default();
            if next.is_empty() {
                return None;
            }
            page = next.into_iter();
        })
    }

    /// Up to `limit` artifact ids in commit order, oldest first, starting
    /// after `after` (which may since have been deleted). An `after` this
    /// store never committed is `NotFound`, not an empty page: a caller
    /// paging with a mistyped or foreign id learns so. (A deleted id is
    /// remembered until a `meta.log` compaction drops it and the store is
    /// reopened.)
    pub fn list(
        &self,
        after: Option<&ArtifactId>,
        limit: usize,
    ) -> Result<Vec<ArtifactId>, StoreError> {
        let state = lock(&self.inner.state);
        let catalog = &state.catalog;
        let from = match after {
            None => Bound::Unbounded,
            Some(after) => match catalog.seq_of.get(after) {
                Some(&seq) => Bound::Excluded(seq),
                None => return Err(not_found(after)),
            },
        };
        Ok(catalog
            .order
            .range((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, id)| *id)
            .collect())
    }

    /// Ids of the artifacts tagged `tag`, in commit order.
    pub fn find_by_tag(&self, tag: &str) -> Vec<ArtifactId> {
        let state = lock(&self.inner.state);
        let catalog = &state.catalog;
        catalog
            .index
            .postings(&meta_index::Key::Tag(tag.to_string()))
            .map(|seqs| seqs.iter().map(|seq| catalog.order[&seq]).collect())
            .unwrap_or_default()
    }

    /// Totals for this store.
    pub fn stats(&self) -> Stats {
        let state = lock(&self.inner.state);
        let (garbage_chunks, garbage_bytes) = state.index.garbage();
        let (_, live_record_bytes) = state.index.record_bytes();
        let disk_bytes = state.segments.disk_bytes();
        let header_bytes = format::SEGMENT_HEADER_BYTES * state.segments.segments.len() as u64;
        Stats {
            artifacts: state.catalog.artifacts.len() as u64,
            chunks: state.index.referenced_chunks(),
            logical_bytes: state.catalog.logical_bytes,
            physical_bytes: state.index.referenced_bytes(),
            disk_bytes,
            garbage_chunks,
            garbage_bytes,
            dead_bytes: disk_bytes.saturating_sub(header_bytes + live_record_bytes),
            live_bytes: live_record_bytes,
            segments: state.segments.segments.len() as u64,
        }
    }

    /// Recounts the index's GC accounting (per-segment live and garbage
    /// bytes, garbage totals) from scratch and compares it with the running
    /// one: `Err` says what drifted. A walk of the whole index under the
    /// store lock: for tests.
    #[doc(hidden)]
    pub fn check_gc_accounting(&self) -> Result<(), String> {
        lock(&self.inner.state).index.check_accounting()
    }

    /// Reads and re-hashes every chunk of artifact `id` and the whole
    /// content: `Corrupted`, naming the artifact and chunk, on any damage.
    /// Its links are [`Store::verify_all`]'s to check.
    pub fn verify(&self, id: &ArtifactId) -> Result<(), StoreError> {
        let (manifest, digest, size) = {
            let state = lock(&self.inner.state);
            let artifact = state
                .catalog
                .artifacts
                .get(id)
                .ok_or_else(|| not_found(id))?;
            (
                Arc::clone(&artifact.manifest),
                artifact.meta.digest,
                artifact.meta.size,
            )
        };
        let mut hasher = blake3::Hasher::new();
        for (i, chunk) in manifest.chunks.iter().enumerate() {
            let bytes = self.read_chunk(&chunk.digest).map_err(|e| match e {
                StoreError::Corrupted(why) => {
                    StoreError::Corrupted(format!("artifact {id}: chunk {i}: {why}"))
                }
                StoreError::NotFound(why) => {
                    StoreError::Corrupted(format!("artifact {id}: chunk {i}: {why} is missing"))
                }
                StoreError::Io { context, source } => StoreError::Io {
                    context: format!("artifact {id}: chunk {i}: {context}"),
                    source,
                },
                other => other,
            })?;
            hasher.update(&bytes);
        }
        let end = manifest.ends.last().copied().unwrap_or(0);
        let actual = Hash::from_bytes(*hasher.finalize().as_bytes());
        if actual != digest || end != size {
            return Err(StoreError::Corrupted(format!(
                "artifact {id}: content hashes to {actual} ({end} bytes), recorded {digest} ({size} bytes)"
            )));
        }
        Ok(())
    }

    /// [`Store::verify`] of every artifact, and a check that every link
    /// is to a live artifact.
    pub fn verify_all(&self) -> VerifyReport {
        let mut report = VerifyReport::default();
        for id in self.ids() {
            {
                let state = lock(&self.inner.state);
                let catalog = &state.catalog;
                if let Some(artifact) = catalog.artifacts.get(&id) {
                    let dangling = artifact
                        .meta
                        .links
                        .iter()
                        .filter(|target| !catalog.artifacts.contains_key(target));
                    report
                        .dangling_links
                        .extend(dangling.map(|target| (id, *target)));
                }
            }
            match self.verify(&id) {
                Ok(()) => report.artifacts_checked += 1,
                // Deleted while we were verifying.
                Err(StoreError::NotFound(_)) => {}
                Err(e) => {
                    report.artifacts_checked += 1;
                    report.damaged.push((id, e.to_string()));
                }
            }
        }
        report
    }

    /// One full GC pass ([`GcPolicy::full`]): compacts every segment at
    /// least half dead, freeing the records of unreferenced, unpinned
    /// chunks, and `meta.log` if it is at least half dead. Never touches a
    /// chunk an upload in progress has put or pinned. What `tblob gc` runs.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        self.gc_pass(&GcPolicy::full())
    }

    /// One incremental GC pass under `policy`: compacts the segments worth
    /// it one at a time, most dead bytes first, until the pass has copied
    /// `policy.pass_copy_bytes_max` bytes. Puts, gets, deletes and readers
    /// carry on meanwhile (see [`Store::read_chunk`]). One pass at a time;
    /// a second caller waits for the first.
    pub fn gc_pass(&self, policy: &GcPolicy) -> Result<GcReport, StoreError> {
        self.check_writable()?;
        let report = gc::run(self, policy);
        self.inner.ensure_reserve();
        report
    }

    /// Appends `records` to the log (durably, in the durable modes). A
    /// failed sync puts the store in read-only mode.
    /// On a full disk a delete or update still lands: the space reserve
    /// is released for it (see [`RESERVE_BYTES`]). `pending_bytes` of
    /// [`State::log_bytes_pending`] are the records' own: released, under
    /// the state lock, in the same step that counts the log's new length,
    /// so a quota check never counts them twice or not at all.
    fn log_append(
        &self,
        meta_log: &mut MetaLog,
        records: &[MetaRecord],
        pending_bytes: u64,
    ) -> Result<(), StoreError> {
        let mut result = meta_log.append_all(records);
        if matches!(result, Err(StoreError::NoSpace(_))) && self.inner.release_reserve() {
            result = meta_log.append_all(records);
        }
        {
            let mut state = lock(&self.inner.state);
            state.log_bytes_pending -= pending_bytes;
            self.inner
                .meta_log_bytes
                .store(meta_log.len(), std::sync::atomic::Ordering::Relaxed);
        }
        if meta_log.sync_failed() {
            return self.inner.note_sync(result);
        }
        result
    }
}

/// Whether the space reserve is there whole: its full length, allocated.
fn reserve_in_place(dir: &dyn Backend) -> bool {
    dir.open(RESERVE_NAME, backend::OpenMode::Read)
        .and_then(|file| Ok(file.len()?.min(file.allocated_bytes()?)))
        .is_ok_and(|bytes| bytes >= RESERVE_BYTES)
}

impl Inner {
    /// What the tenant costs on disk, as quotas count it: every referenced
    /// or pinned chunk's record (header included) and the metadata log
    /// (manifests, metadata, and dead records until GC compacts them).
    fn cost_bytes(&self, state: &State) -> u64 {
        state.index.cost_bytes()
            + state.log_bytes_pending
            + self
                .meta_log_bytes
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The quota in force now: the policy file's, else the store default.
    fn quota(&self) -> Quota {
        lock(&self.policy)
            .map(|policy| policy.quota)
            .unwrap_or(self.options.quota)
    }

    /// Whether a commit record of `record_bytes` may join a batch that
    /// already holds `batch_artifacts` commits of `batch_bytes`: the
    /// artifact count and the bytes quota, checked by the group-commit
    /// leader under the log lock and the state lock, so commits racing for
    /// the last room are decided one at a time against the real totals.
    fn check_commit_quota(
        &self,
        state: &State,
        quota: &Quota,
        batch_artifacts: u64,
        batch_bytes: u64,
        record_bytes: u64,
    ) -> Result<(), StoreError> {
        if let Some(max) = quota.artifacts_max {
            let live = state.catalog.artifacts.len() as u64 + batch_artifacts;
            if live >= max {
                return Err(QuotaLimit::Artifacts.exceeded(format_args!(
                    "{live} of at most {max} artifacts stored or being committed"
                )));
            }
        }
        if let Some(max) = quota.bytes_max {
            let used = self.cost_bytes(state) + batch_bytes;
            if used.saturating_add(record_bytes) > max {
                return Err(QuotaLimit::Bytes.exceeded(format_args!(
                    "commit record of {record_bytes} bytes: {used} of {max} bytes in use"
                )));
            }
        }
        Ok(())
    }

    /// Makes sure the space reserve exists; false if the disk has no room
    /// for it. Never fails otherwise: the reserve only helps.
    fn ensure_reserve(&self) -> bool {
        let mut present = lock(&self.reserve_present);
        if *present {
            return true;
        }
        let written = self
            .dir
            .open(RESERVE_NAME, backend::OpenMode::Truncate)
            .and_then(|file| {
                let zeros = vec![0u8; 64 << 10];
                let mut at = 0;
                while at < RESERVE_BYTES {
                    file.write_all_at(&zeros, at)?;
                    at += zeros.len() as u64;
                }
                Ok(())
            });
        if written.is_err() {
            let _ = self.dir.remove(RESERVE_NAME);
            return false;
        }
        *present = true;
        true
    }

    /// Frees the space reserve so a delete or update can land on a full
    /// disk; false if there was none to free.
    fn release_reserve(&self) -> bool {
        let mut present = lock(&self.reserve_present);
        if !*present {
            return false;
        }
        *present = false;
        self.dir.remove(RESERVE_NAME).is_ok()
    }

    /// Passes `result` through; if it is the failure of a sync, first puts
    /// the store in read-only mode. Every fsync of a segment, `meta.log` or
    /// directory reports here: a failed sync may have dropped pages that a
    /// later sync would not bring back, so nothing may be built on them.
    fn note_sync<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &result {
            let mut failed = lock(&self.failed);
            if failed.is_none() {
                *failed = Some(format!(
                    "an fsync failed ({error}); the store refuses writes until it is reopened"
                ));
            }
        }
        result
    }

    /// Carries out sync plans (without the store lock) and records them.
    /// A failure puts the store in read-only mode.
    fn run_sync_plans(&self, plans: Vec<segment::SyncPlan>) -> Result<(), StoreError> {
        for plan in plans {
            self.note_sync(plan.run(&self.fsyncs))?;
            lock(&self.state).segments.mark_plan_done(&plan);
        }
        Ok(())
    }

    /// After segment `id` was sealed: syncs it and writes its hint file,
    /// without the store lock, from the records kept while it was active
    /// (or, for one sealed by GC's first pass of an opened store, a scan).
    /// A crash before the hint is written only means the next open scans
    /// the segment (and writes the hint then).
    fn finish_seal(&self, id: u64) -> Result<(), StoreError> {
        let _hints = lock(&self.hints);
        let (plan, file, key, len, writer, records) = {
            let mut state = lock(&self.state);
            let Some(segment) = state.segments.segments.get(&id) else {
                // Compacted away meanwhile.
                return Ok(());
            };
            let (file, key, len) = (Arc::clone(&segment.file), segment.key, segment.len);
            (
                state.segments.sync_plan(id),
                file,
                key,
                len,
                state.segments.hint_writer(),
                state.segments.take_sealed_records(id),
            )
        };
        self.run_sync_plans(plan.into_iter().collect())?;
        // A hint is a cache: failing to write one (a full disk, say) only
        // costs the next open a scan, and never fails the caller's write.
        let _ = match records {
            Some(records) => writer.write(id, len, &records),
            None => writer.scan_and_write(&*file, &key, id, len).map(|_| ()),
        };
        Ok(())
    }

    /// Checkpoints the active segment: syncs it and writes a hint covering
    /// it. Durable modes only; nothing on a read-only store.
    fn checkpoint_active(&self) -> Result<(), StoreError> {
        if !self.options.durability.fsyncs() || lock(&self.failed).is_some() {
            return Ok(());
        }
        let _hints = lock(&self.hints);
        let (checkpoint, plan, writer) = {
            let state = lock(&self.state);
            let Some(checkpoint) = state.segments.active_checkpoint() else {
                return Ok(());
            };
            (
                checkpoint,
                state.segments.sync_plan(state.segments.active),
                state.segments.hint_writer(),
            )
        };
        let (id, len, records) = checkpoint;
        self.run_sync_plans(plan.into_iter().collect())?;
        // Best effort, like every hint (see `finish_seal`).
        if writer.write(id, len, &records).is_ok() {
            lock(&self.state).segments.mark_checkpointed(id, len);
        }
        Ok(())
    }
}

/// A clean close (the last clone of a [`Store`] dropped): checkpoints the
/// active segment and `meta.log`, so the next open reads neither and can
/// tell bit rot in their newest records from a torn write. Best effort: a
/// failure here (a full disk) only costs the next open a scan.
impl Drop for Inner {
    fn drop(&mut self) {
        if !self.options.durability.fsyncs() || lock(&self.failed).is_some() {
            return;
        }
        // A checkpoint says everything before it was synced: not after a
        // sync that just failed (which made the store read-only).
        let _ = self.checkpoint_active();
        if lock(&self.failed).is_some() {
            return;
        }
        let mut meta_log = lock(&self.meta_log);
        let _ = meta_log.checkpoint();
    }
}

fn not_found(id: &ArtifactId) -> StoreError {
    StoreError::NotFound(format!("artifact {id}"))
}

fn check_links(catalog: &Catalog, links: &[ArtifactId]) -> Result<(), StoreError> {
    if links.len() > LINKS_MAX {
        return Err(invalid(format!(
            "{} links, at most {LINKS_MAX}",
            links.len()
        )));
    }
    for link in links {
        if !catalog.artifacts.contains_key(link) {
            return Err(invalid(format!(
                "link to artifact {link}, which does not exist"
            )));
        }
    }
    Ok(())
}

/// Applies one metadata record to the catalog and the reference counts.
/// Used for replay at open and, after the record is durable, for live
/// changes, so both paths build the same state.
fn apply(catalog: &mut Catalog, index: &mut Index, record: MetaRecord) -> Result<(), String> {
    match record {
        record @ MetaRecord::Commit { .. } => {
            let meta::Committed {
                meta,
                manifest,
                bound,
            } = meta::committed(record).expect("a commit record");
            let id = meta.id;
            // Checked before anything changes: a bound commit applies whole
            // or not at all.
            if let Some((container, _)) = &bound {
                if !catalog.names.containers.contains_key(container) {
                    return Err(format!(
                        "commit of artifact {id} bound in container {container:?}, which does not exist; ignored"
                    ));
                }
            }
            if manifest.ends.last().copied().unwrap_or(0) != meta.size {
                return Err(format!(
                    "commit of artifact {id}: chunk lengths do not add up to size {}",
                    meta.size
                ));
            }
            let manifest = Arc::new(manifest);
            if !catalog.insert(meta, Arc::clone(&manifest)) {
                return Err(format!("second commit of artifact id {id}; ignored"));
            }
            for chunk in &manifest.chunks {
                index.add_ref(&chunk.digest, chunk.len);
            }
            match bound {
                Some((container, name)) => names::bind(catalog, index, &container, &name, id),
                None => Ok(()),
            }
        }
        MetaRecord::Delete { id } => {
            let id = ArtifactId::from_bytes(id);
            catalog.names.forget_artifact(&id);
            let artifact = catalog
                .remove(&id)
                .ok_or_else(|| format!("delete of artifact {id}, which is not live; ignored"))?;
            names::drop_artifact(catalog, index, artifact);
            Ok(())
        }
        MetaRecord::Names { ops } => names::apply_ops(catalog, index, ops),
        MetaRecord::Checkpoint => Ok(()),
        MetaRecord::Update {
            id,
            modified_ms,
            fields,
        } => {
            let id = ArtifactId::from_bytes(id);
            catalog
                .update(&id, modified_ms, fields)
                .map(|_| ())
                .ok_or_else(|| format!("update of artifact {id}, which is not live; ignored"))
        }
    }
}
