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
//! // The store computes the whole digest; `Some(&digest)` would be checked.
//! let id = upload.commit(&[chunk], 5, None, NewMetadata::default())?;
//! assert_eq!(store.read_chunk(&store.manifest(&id, 0, 1)?[0].digest)?, bytes);
//! # Ok(())
//! # }
//! ```

pub mod backend;
mod catalog_db;
mod chunk_db;
pub mod compress;
mod db;
pub mod format;
mod fsync;
mod gc;
mod group;
#[doc(hidden)]
pub mod measure;
// The in-memory chunk index and catalog were the store's state before the
// tables (`meta_db`); they stay as the model the tables are tested against
// and as the other side of `measure`, so parts only those use are allowed.
#[allow(dead_code)]
mod index;
#[allow(dead_code)]
mod meta;
mod meta_db;
#[allow(dead_code)]
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

use std::sync::{Arc, Mutex, MutexGuard};

use cap_std::fs::Dir;

use self::backend::Backend;

pub use self::compress::Compression;
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
use self::meta::{Catalog, MetaLog};
use self::meta_db::MetaDb;
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
    /// write the same segment's hint), and none during a punch. Lock
    /// order: `hints` before `meta_log`.
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
    /// `segments/`, for a rebuild of the tables (see [`Inner::tables_to_memory`]).
    segments_dir: Arc<dyn Backend>,
    /// How many times [`Inner::tables_to_memory`] replaced the tables: GC
    /// abandons a step whose view of them predates one.
    tables_rebuilt: std::sync::atomic::AtomicU64,
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
    /// `meta.log`'s length at the last checkpoint of the catalog database
    /// (or at open): [`Inner::maybe_checkpoint`] takes the next one
    /// [`CHECKPOINT_LOG_BYTES`] later.
    checkpointed_log_len: std::sync::atomic::AtomicU64,
    /// The writer lock a reader in place holds (see
    /// [`Store::open_read_only_in_place`]), released when the store closes.
    _writer_lock: Option<backend::LockGuard>,
}

struct State {
    /// The chunk index, the catalog and its indexes, names and holds.
    db: MetaDb,
    segments: Segments,
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
        Store::open_with(dir, options, false, false, &mut None)
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
        Store::open_read_only_with(dir, options, None)
    }

    /// [`Store::open_read_only`] by a reader that holds the store's writer
    /// lock (`lock`, taken with [`Backend::lock`] on the name every writer
    /// takes; kept until the store closes), so no writer changes anything
    /// meanwhile: the catalog database is read in place from its last
    /// checkpoint, as a writer's open would (milliseconds at any scale),
    /// instead of being rebuilt in memory from the segments and the log.
    /// Still writes nothing: what the open replays past the checkpoint is
    /// applied in memory over the file ([`db::OverlayFile`]). A store whose
    /// catalog file is missing or does not match is rebuilt in memory, as
    /// by [`Store::open_read_only`].
    pub fn open_read_only_in_place(
        dir: Arc<dyn Backend>,
        options: StoreOptions,
        lock: backend::LockGuard,
    ) -> Result<Store, StoreError> {
        Store::open_read_only_with(dir, options, Some(lock))
    }

    fn open_read_only_with(
        dir: Arc<dyn Backend>,
        options: StoreOptions,
        mut lock: Option<backend::LockGuard>,
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
            let in_place = lock.is_some();
            let result =
                Store::open_with(Arc::clone(&dir), options.clone(), true, in_place, &mut lock);
            // With the lock held no writer races the open: what it found
            // is so, and a retry would not hold the lock any more.
            if in_place {
                return result;
            }
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

    /// Opens the store; `in_place` (with `read_only`, the writer lock held
    /// in `writer_lock`, which the store then keeps): see
    /// [`Store::open_read_only_in_place`].
    fn open_with(
        dir: Arc<dyn Backend>,
        options: StoreOptions,
        read_only: bool,
        in_place: bool,
        writer_lock: &mut Option<backend::LockGuard>,
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
        // The catalog database lives on file for a writer in the durable
        // modes; otherwise its tables are rebuilt in memory at each open
        // (and a file a durable use left behind would go stale: removed).
        let on_file = !read_only && options.durability.fsyncs();
        if !read_only && !on_file {
            remove_catalog_db(&*dir)?;
        }
        let mut catalog_problems = Vec::new();
        let mut trust_checkpoint = on_file || in_place;
        let built = loop {
            let (mut db, checkpoint) = if in_place {
                open_catalog_in_place(&dir, trust_checkpoint, &mut catalog_problems)?
            } else {
                open_catalog_db(&dir, on_file, trust_checkpoint, &mut catalog_problems)?
            };
            let covered = checkpoint
                .as_ref()
                .map(|c| c.segments.clone())
                .unwrap_or_default();
            let from = checkpoint.as_ref().map_or(0, |c| c.log_len);
            let built = build_state(
                &dir,
                &segments_dir,
                &options,
                &fsyncs,
                read_only,
                segment_bytes_max,
                &mut db,
                &covered,
                from,
            )?;
            match checkpoint.as_ref().and_then(|c| mismatch(c, &built.0, &db)) {
                Some(why) => {
                    catalog_problems.push(Problem::new(
                        ProblemKind::CatalogRebuilt,
                        format!("{CATALOG_DB_NAME}: checkpoint not used ({why}); tables rebuilt"),
                    ));
                    trust_checkpoint = false;
                }
                None => break (db, checkpoint.map(|c| c.log_len), built),
            }
        };
        let (
            db,
            checkpoint_log_len,
            (segments, scanned, mut meta_log, mut replayed, replay_problems, incomplete),
        ) = built;
        let from_checkpoint = checkpoint_log_len.is_some();
        let mut recovery = RecoveryReport {
            truncated_bytes: scanned.truncated_bytes,
            problems: scanned.problems,
        };
        let mut open_stats = scanned.stats;
        open_stats.from_checkpoint = from_checkpoint;
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
        let mut upgraded = false;
        if !read_only && meta_log.version() < format::META_VERSION && !meta_log.damaged() {
            let from = meta_log.version();
            match meta_log.rewrite(gc::Snapshot::records(|after| db.snapshot_page(after))) {
                Ok(_) => upgraded = true,
                Err(error) => {
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
        }
        open_stats.meta_records = replayed.records;
        recovery.truncated_bytes += replayed.truncated_bytes;
        recovery.problems.extend(replayed.problems);
        recovery.problems.extend(replay_problems);
        recovery.problems.extend(catalog_problems);
        // Artifacts a checkpoint covers had every chunk when it was taken,
        // and their segments are there (checked above); of the rest, those
        // the replay found a chunk of missing for (the segments were
        // scanned first) are reported if they are still live.
        let mut check = |artifact: &meta::Artifact| -> Result<(), StoreError> {
            let id = artifact.meta.id;
            let mut lost = None;
            for (i, chunk) in artifact.manifest.chunks.iter().enumerate() {
                if db
                    .chunk(&chunk.digest)?
                    .is_none_or(|e| e.location.is_none())
                {
                    lost = Some((i, chunk.digest));
                    break;
                }
            }
            if let Some((i, digest)) = lost {
                recovery.problems.push(Problem::new(
                    ProblemKind::MissingChunk,
                    format!(
                        "artifact {id} (commit #{}): chunk {i} ({digest}) is in no segment; the artifact reads as corrupted",
                        artifact.seq
                    ),
                ));
            }
            Ok(())
        };
        for id in &incomplete {
            if let Some(artifact) = db.live(id)? {
                check(&artifact)?;
            }
        }

        let meta_log_len = meta_log.len();
        let tables_upgraded = db.upgraded();
        // What a replay past a checkpoint added is bounded (by
        // CHECKPOINT_LOG_BYTES and CHECKPOINT_CHUNKS, which count it
        // towards the next checkpoint): the commit that fills an interval
        // takes one (or the clean close), not the open. A rebuild or an
        // upgrade is checkpointed at once.
        let defer_checkpoint = from_checkpoint && !upgraded && !tables_upgraded;
        let store = Store {
            inner: Arc::new(Inner {
                options,
                state: Mutex::new(State {
                    db,
                    segments,
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
                segments_dir,
                tables_rebuilt: std::sync::atomic::AtomicU64::new(0),
                meta_log_bytes: std::sync::atomic::AtomicU64::new(meta_log_len),
                policy: Mutex::new(tenant_policy),
                policy_write: Mutex::new(()),
                writers_open: std::sync::atomic::AtomicU64::new(0),
                checkpointed_log_len: std::sync::atomic::AtomicU64::new(
                    checkpoint_log_len
                        .filter(|_| defer_checkpoint)
                        .unwrap_or(meta_log_len),
                ),
                _writer_lock: writer_lock.take(),
            }),
        };
        // Best effort, and only if it is missing: opening never needs free
        // space, and an open that finds the reserve writes nothing.
        if !read_only {
            store.inner.ensure_reserve();
        }
        // Whatever this open rebuilt (or upgraded) is checkpointed at
        // once, so the next open does not do it again; an open from a
        // checkpoint writes none (see `defer_checkpoint`).
        if store.inner.options.durability.fsyncs() && !defer_checkpoint {
            let meta_log = lock(&store.inner.meta_log);
            // Best effort: without one the next open rebuilds.
            let _ = store.inner.checkpoint_tables(&meta_log);
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
            artifacts: state.db.totals().map_or(0, |(live, _)| live),
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
            let (file, location, len, stored) = {
                let state = lock(&self.inner.state);
                let entry = state
                    .db
                    .chunk(digest)?
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
                (file, location, entry.len, entry.stored)
            };
            let result = segment::read_payload(
                &*file,
                location.segment,
                location.offset,
                digest,
                len,
                stored,
            );
            attempt += 1;
            if result.is_ok() || attempt >= READ_CHUNK_ATTEMPTS_MAX {
                return result;
            }
            let moved = lock(&self.inner.state)
                .db
                .chunk(digest)?
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
        let artifact = state.db.lookup(id)?.ok_or_else(|| not_found(id))?;
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
        let artifact = state.db.lookup(id)?.ok_or_else(|| not_found(id))?;
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
        let artifact = state.db.lookup(id)?.ok_or_else(|| not_found(id))?;
        Ok(artifact.meta.clone())
    }

    /// Whether artifact `id` exists.
    pub fn exists(&self, id: &ArtifactId) -> Result<bool, StoreError> {
        Ok(lock(&self.inner.state).db.exists(id)?)
    }

    /// Deletes artifact `id`, durably. Chunks it shares with other
    /// artifacts stay; chunks only it used become garbage for [`Store::gc`].
    pub fn delete(&self, id: &ArtifactId) -> Result<(), StoreError> {
        let mut meta_log = lock(&self.inner.meta_log);
        if !self.exists(id)? {
            return Err(not_found(id));
        }
        self.check_writable()?;
        let record = MetaRecord::Delete { id: *id.as_bytes() };
        self.log_append(&mut meta_log, std::slice::from_ref(&record), 0)?;
        let mut state = lock(&self.inner.state);
        self.inner.applied(apply(&mut state.db, record))?;
        drop(state);
        self.inner.maybe_checkpoint(&meta_log);
        Ok(())
    }

    /// Replaces parts of an artifact's mutable metadata, durably, and
    /// returns the result.
    pub fn update(&self, id: &ArtifactId, change: MetadataUpdate) -> Result<Metadata, StoreError> {
        let mut meta_log = lock(&self.inner.meta_log);
        let (fields, created_ms) = {
            let state = lock(&self.inner.state);
            let artifact = state.db.live(id)?.ok_or_else(|| not_found(id))?;
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
                check_links(&state.db, &links)?;
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
            check_links(&state.db, &added)?;
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
        self.inner.applied(apply(&mut state.db, record))?;
        let meta = state.db.live(id)?.ok_or_else(|| not_found(id))?.meta;
        drop(state);
        self.inner.maybe_checkpoint(&meta_log);
        Ok(meta)
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
        let after = match after {
            None => None,
            Some(after) => match state.db.seq_of(after)? {
                Some(seq) => Some(seq),
                None => return Err(not_found(after)),
            },
        };
        let seqs = state.db.live_seqs(after, Order::OldestFirst, limit)?;
        let mut t = state.db.catalog_tables()?;
        let mut ids = Vec::with_capacity(seqs.len());
        for seq in seqs {
            ids.extend(catalog_db::id_at_seq(&mut t, seq)?);
        }
        Ok(ids)
    }

    /// Ids of the artifacts tagged `tag`, in commit order: up to `limit`.
    pub fn find_by_tag(&self, tag: &str, limit: usize) -> Result<Vec<ArtifactId>, StoreError> {
        let mut ids = Vec::new();
        let mut after = None;
        while ids.len() < limit {
            let page = self.query(&Query {
                conditions: vec![Condition::Tag(tag.to_string())],
                order: Order::OldestFirst,
                after,
                limit: (limit - ids.len()).min(QUERY_PAGE_MAX),
            })?;
            ids.extend(page.ids);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(ids)
    }

    /// Totals for this store.
    pub fn stats(&self) -> Stats {
        let state = lock(&self.inner.state);
        let (garbage_chunks, garbage_bytes) = state.db.garbage();
        let (_, live_record_bytes) = state.db.record_bytes();
        let (artifacts, logical_bytes) = state.db.totals().unwrap_or_default();
        let (chunks, physical_bytes) = state.db.referenced();
        let disk_bytes = state.segments.disk_bytes();
        let header_bytes = format::SEGMENT_HEADER_BYTES * state.segments.segments.len() as u64;
        Stats {
            artifacts,
            chunks,
            logical_bytes,
            physical_bytes,
            stored_bytes: state.db.referenced_stored_bytes(),
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
        lock(&self.inner.state).db.check_accounting()
    }

    /// Reads and re-hashes every chunk of artifact `id` and the whole
    /// content: `Corrupted`, naming the artifact and chunk, on any damage.
    /// Its links are [`Store::verify_all`]'s to check.
    pub fn verify(&self, id: &ArtifactId) -> Result<(), StoreError> {
        let (manifest, digest, size) = {
            let state = lock(&self.inner.state);
            let artifact = state.db.live(id)?.ok_or_else(|| not_found(id))?;
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
        let (file, version, len) = lock(&self.inner.meta_log).to_check();
        report.log_problems = match meta::check(&*file, version, len) {
            Ok(problems) => problems,
            Err(error) => vec![Problem::new(
                ProblemKind::Damaged,
                format!("{}: not read to its end ({error})", meta::META_LOG_NAME),
            )],
        };
        for id in self.ids() {
            {
                let state = lock(&self.inner.state);
                if let Ok(Some(artifact)) = state.db.live(&id) {
                    for target in &artifact.meta.links {
                        if !state.db.exists(target).unwrap_or(true) {
                            report.dangling_links.push((id, *target));
                        }
                    }
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

/// The catalog database's file in the store directory (see [`meta_db`]).
pub const CATALOG_DB_NAME: &str = "catalog.redb";

/// Bytes `meta.log` grows by between two checkpoints of the catalog
/// database: what an open after a crash replays at most, about.
const CHECKPOINT_LOG_BYTES: u64 = 2 << 20;

/// Chunks indexed between two checkpoints, at most about: an open after a
/// crash finds them in the segments and indexes them again, each a lookup
/// and an insert at a random place in a table that may not be in memory
/// (about 10 us each at a million chunks), so this bounds that part of
/// the open as the log bytes bound the replay.
const CHECKPOINT_CHUNKS: u64 = 8 << 10;

fn remove_catalog_db(dir: &dyn Backend) -> Result<(), StoreError> {
    match dir.remove(CATALOG_DB_NAME) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(format!("removing {CATALOG_DB_NAME}"), e)),
    }
}

fn new_catalog_db(dir: &dyn Backend) -> Result<MetaDb, db::DbError> {
    let database = db::open(dir, CATALOG_DB_NAME, meta_db::CACHE_BYTES)?;
    MetaDb::new(database, true)
}

/// The catalog database to open the store with, and the checkpoint to
/// trust, if any: in memory unless `on_file`; on file, the existing one if
/// its checkpoint matches `meta.log` (and `trust`), else a new, empty one.
/// A file that cannot be used at all leaves the tables in memory.
fn open_catalog_db(
    dir: &Arc<dyn Backend>,
    on_file: bool,
    trust: bool,
    problems: &mut Vec<Problem>,
) -> Result<(MetaDb, Option<meta_db::Checkpoint>), StoreError> {
    if !on_file {
        return Ok((MetaDb::in_memory()?, None));
    }
    let rebuild = |why: Option<String>, problems: &mut Vec<Problem>| {
        if let Some(why) = why {
            problems.push(Problem::new(
                ProblemKind::CatalogRebuilt,
                format!("{CATALOG_DB_NAME}: {why}; tables rebuilt from the segments and meta.log"),
            ));
        }
        remove_catalog_db(&**dir)?;
        match new_catalog_db(&**dir) {
            Ok(db) => Ok::<_, StoreError>((db, None)),
            Err(error) => {
                problems.push(Problem::new(
                    ProblemKind::CatalogRebuilt,
                    format!("{CATALOG_DB_NAME}: cannot be made ({error}); tables kept in memory until the next open"),
                ));
                let _ = remove_catalog_db(&**dir);
                Ok((MetaDb::in_memory()?, None))
            }
        }
    };
    if !trust {
        return rebuild(None, problems);
    }
    let mut db = match new_catalog_db(&**dir) {
        Ok(db) => db,
        Err(error) => return rebuild(Some(format!("unreadable ({error})")), problems),
    };
    let checkpoint = match db.read_checkpoint() {
        Ok(Some(checkpoint)) => checkpoint,
        // A new store, or one whose last checkpoint was invalidated.
        Ok(None) => {
            drop(db);
            return rebuild(None, problems);
        }
        Err(error) => {
            drop(db);
            return rebuild(Some(format!("checkpoint unreadable ({error})")), problems);
        }
    };
    if meta::fingerprint(&**dir, checkpoint.log_len)? != Some(checkpoint.fingerprint) {
        drop(db);
        return rebuild(
            Some(format!(
                "its checkpoint covers {} bytes of a meta.log that is not there (rewritten or cut since)",
                checkpoint.log_len
            )),
            problems,
        );
    }
    Ok((db, Some(checkpoint)))
}

/// The catalog database for a reader holding the writer lock: the file
/// read in place if its checkpoint matches `meta.log` (and `trust`), else
/// tables in memory, to be rebuilt (a mismatch reported as a writer's
/// open would; a missing file, as older stores have, is not a problem).
fn open_catalog_in_place(
    dir: &Arc<dyn Backend>,
    trust: bool,
    problems: &mut Vec<Problem>,
) -> Result<(MetaDb, Option<meta_db::Checkpoint>), StoreError> {
    let in_memory = |why: Option<String>, problems: &mut Vec<Problem>| {
        if let Some(why) = why {
            problems.push(Problem::new(
                ProblemKind::CatalogRebuilt,
                format!("{CATALOG_DB_NAME}: {why}; tables rebuilt in memory (read-only)"),
            ));
        }
        Ok((MetaDb::in_memory()?, None))
    };
    if !trust {
        return in_memory(None, problems);
    }
    let database = match db::open_in_place(&**dir, CATALOG_DB_NAME, meta_db::CACHE_BYTES) {
        Ok(Some(database)) => database,
        Ok(None) => return in_memory(None, problems),
        Err(error) => return in_memory(Some(format!("unreadable ({error})")), problems),
    };
    let mut db = match MetaDb::new(database, false) {
        Ok(db) => db,
        Err(error) => return in_memory(Some(format!("unreadable ({error})")), problems),
    };
    let checkpoint = match db.read_checkpoint() {
        Ok(Some(checkpoint)) => checkpoint,
        Ok(None) => return in_memory(None, problems),
        Err(error) => return in_memory(Some(format!("checkpoint unreadable ({error})")), problems),
    };
    if meta::fingerprint(&**dir, checkpoint.log_len)? != Some(checkpoint.fingerprint) {
        return in_memory(
            Some(format!(
                "its checkpoint covers {} bytes of a meta.log that is not there (rewritten or cut since)",
                checkpoint.log_len
            )),
            problems,
        );
    }
    Ok((db, Some(checkpoint)))
}

/// Why the files do not match what a checkpoint's tables say, if they
/// do not: a covered segment shorter than covered, or gone while the
/// tables still place chunks in it.
fn mismatch(checkpoint: &meta_db::Checkpoint, segments: &Segments, db: &MetaDb) -> Option<String> {
    for (&id, &len) in &checkpoint.segments {
        match segments.segments.get(&id) {
            Some(segment) if segment.len >= len => {}
            Some(segment) => {
                return Some(format!(
                    "segment {} is {} bytes, the checkpoint covers {len}",
                    segment::segment_name(id),
                    segment.len
                ))
            }
            None if db.segment(id).is_some() => {
                return Some(format!("segment {} is gone", segment::segment_name(id)))
            }
            None => {}
        }
    }
    None
}

/// What [`build_state`] opened and found.
type Built = (
    Segments,
    segment::ScanOutcome,
    MetaLog,
    meta::ReplayOutcome,
    Vec<Problem>,
    Vec<ArtifactId>,
);

/// Opens the segments and `meta.log` into `db`: segments a checkpoint
/// covers (`covered`) and the log before `from` are not read again. Also
/// returns the problems of records that did not apply, and the artifacts
/// whose replayed commit named a chunk no segment holds
/// ([`MetaDb::take_incomplete`]).
#[allow(clippy::too_many_arguments)]
fn build_state(
    dir: &Arc<dyn Backend>,
    segments_dir: &Arc<dyn Backend>,
    options: &StoreOptions,
    fsyncs: &Fsyncs,
    read_only: bool,
    segment_bytes_max: u64,
    db: &mut MetaDb,
    covered: &std::collections::BTreeMap<u64, u64>,
    from: u64,
) -> Result<Built, StoreError> {
    let mut replay_problems = Vec::new();
    let mut db_error: Option<StoreError> = None;
    let mut replay = |db: &mut MetaDb, offset: u64, record: MetaRecord| {
        if db_error.is_some() {
            return;
        }
        match apply(db, record) {
            Ok(()) => {}
            Err(ApplyError::Invalid(problem)) => replay_problems.push(Problem::new(
                ProblemKind::InvalidRecord,
                format!(
                    "{}: record at offset {offset}: {problem}",
                    meta::META_LOG_NAME
                ),
            )),
            Err(ApplyError::Db(error)) => db_error = Some(error.into()),
        }
    };
    let open_segments = |db: &mut MetaDb| {
        // Indexed in batches: each batch opens the tables once, and is
        // sorted (see `MetaDb::insert_found_all`).
        const BATCH: usize = 1 << 16;
        // Grown as records are found, not allocated up front: what an open
        // allocates stays in proportion to the files it reads.
        let mut batch = Vec::new();
        let opened = {
            let mut found = |digest, location, len, stored| {
                batch.push((digest, location, len, stored));
                if batch.len() == BATCH {
                    db.insert_found_all(&mut batch)?;
                    batch.clear();
                }
                Ok(())
            };
            Segments::open(
                Arc::clone(segments_dir),
                segment_bytes_max,
                options.durability,
                fsyncs.clone(),
                read_only,
                covered,
                &mut found,
            )?
        };
        db.insert_found_all(&mut batch)?;
        Ok::<_, StoreError>(opened)
    };
    let ((segments, scanned), (meta_log, replayed)) = if read_only {
        // The log first: every chunk a commit it holds names was synced
        // into a segment before the commit was appended, so the segments
        // listed after it hold them all.
        let mut records = Vec::new();
        let log = MetaLog::open(
            dir,
            options.durability,
            fsyncs.clone(),
            true,
            from,
            |at, r| records.push((at, r)),
        )?;
        let segments = open_segments(db)?;
        for (offset, record) in records {
            replay(db, offset, record);
        }
        (segments, log)
    } else {
        let segments = open_segments(db)?;
        let log = MetaLog::open(
            dir,
            options.durability,
            fsyncs.clone(),
            false,
            from,
            |offset, record| replay(db, offset, record),
        )?;
        (segments, log)
    };
    if let Some(error) = db_error {
        return Err(error);
    }
    let incomplete = db.take_incomplete();
    Ok((
        segments,
        scanned,
        meta_log,
        replayed,
        replay_problems,
        incomplete,
    ))
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
        state.db.cost_bytes()
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
            let live = state.db.totals()?.0 + batch_artifacts;
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

impl Inner {
    /// Passes a live change's result through; a database failure first
    /// puts the store in read-only mode (see [`Inner::db_failed`]). A
    /// record that does not apply was checked under the log lock: a bug.
    fn applied(&self, result: Result<(), ApplyError>) -> Result<(), StoreError> {
        match result {
            Ok(()) => Ok(()),
            Err(ApplyError::Invalid(why)) => panic!("checked under the log lock: {why}"),
            Err(ApplyError::Db(error)) => {
                let error = StoreError::from(error);
                self.db_failed(&error);
                Err(error)
            }
        }
    }

    /// Passes a database result through; a failure first puts the store in
    /// read-only mode (see [`Inner::db_failed`]). For changes.
    fn db<T>(&self, result: Result<T, db::DbError>) -> Result<T, StoreError> {
        result.map_err(|error| {
            let error = StoreError::from(error);
            self.db_failed(&error);
            error
        })
    }

    /// The catalog database failed while a change was applied to it: what
    /// the tables hold may now lag `meta.log`, so nothing more is written
    /// until a reopen, which replays the log past the last durable
    /// checkpoint (or rebuilds the tables).
    fn db_failed(&self, error: &StoreError) {
        let mut failed = lock(&self.failed);
        if failed.is_none() {
            *failed = Some(format!(
                "the catalog database failed ({error}); the store refuses writes until it is reopened"
            ));
        }
    }

    /// After a failed commit of the catalog database (a full disk, a failed
    /// fsync: redb then refuses the file, and the changes since the last
    /// checkpoint went with the transaction), rebuilds the tables in memory
    /// from the segments and `meta.log` as they are now, as a read-only
    /// open would, carries over what only memory knows (holds, pins), and
    /// removes the file, durably, so the next open rebuilds rather than
    /// trusting a checkpoint that GC may since have outdated. The caller
    /// holds the log lock (every record in the log is applied) and the state
    /// lock. If the rebuild fails the tables stay as they are and reads fail
    /// with a typed error; if the removal fails, the caller must make the
    /// store read-only (the file's checkpoint is still true of the disk:
    /// GC punches or removes segments only after a checkpoint that no
    /// longer places chunks there, and a read-only store runs no GC).
    fn tables_to_memory(&self, state: &mut State) -> Result<(), StoreError> {
        let mut db = MetaDb::in_memory()?;
        build_state(
            &self.dir,
            &self.segments_dir,
            &self.options,
            &self.fsyncs,
            true,
            self.options.segment_bytes_max.max(1),
            &mut db,
            &std::collections::BTreeMap::new(),
            0,
        )?;
        db.carry_over(&state.db)?;
        // The old database closes before its file goes.
        drop(std::mem::replace(&mut state.db, db));
        self.tables_rebuilt
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        remove_catalog_db(&*self.dir)?;
        if self.options.durability.fsyncs() {
            self.note_sync(
                self.fsyncs
                    .dir(&*self.dir)
                    .map_err(|e| StoreError::io("syncing the store directory", e)),
            )?;
        }
        Ok(())
    }

    /// Changes whenever the tables are replaced (see [`Inner::tables_to_memory`]).
    fn tables_generation(&self) -> u64 {
        self.tables_rebuilt
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes a checkpoint of the catalog database if `meta.log` grew by
    /// [`CHECKPOINT_LOG_BYTES`] or [`CHECKPOINT_CHUNKS`] chunks were
    /// indexed since the last one. The caller holds the log lock. Best
    /// effort: a failed one only costs the next open a longer replay (and
    /// makes the store read-only, see [`Inner::checkpoint_tables`]).
    fn maybe_checkpoint(&self, meta_log: &MetaLog) {
        let last = self
            .checkpointed_log_len
            .load(std::sync::atomic::Ordering::Relaxed);
        if meta_log.len() >= last + CHECKPOINT_LOG_BYTES
            || lock(&self.state).db.indexed_since_checkpoint() >= CHECKPOINT_CHUNKS
        {
            let _ = self.checkpoint_tables(meta_log);
        }
    }

    /// Commits the catalog database durably as covering `meta.log` up to
    /// its length now and every segment up to its length now, all of which
    /// are synced first. The caller holds the log lock (so the log's length
    /// is the length of what was applied). Nothing on a store that is read
    /// only or keeps its tables in memory.
    fn checkpoint_tables(&self, meta_log: &MetaLog) -> Result<(), StoreError> {
        if !self.options.durability.fsyncs() || lock(&self.failed).is_some() {
            return Ok(());
        }
        if !lock(&self.state).db.on_file() {
            return Ok(());
        }
        // The bulk of the syncing without the state lock; under it, only
        // what was appended meanwhile.
        let plans = lock(&self.state).segments.sync_plans_all();
        self.run_sync_plans(plans)?;
        let fingerprint = meta::fingerprint(&*self.dir, meta_log.len())?.ok_or_else(|| {
            StoreError::Corrupted(format!("{} is shorter than written", meta::META_LOG_NAME))
        })?;
        let mut state = lock(&self.state);
        for plan in state.segments.sync_plans_all() {
            self.note_sync(plan.run(&self.fsyncs))?;
            state.segments.mark_plan_done(&plan);
        }
        let checkpoint = meta_db::Checkpoint {
            log_len: meta_log.len(),
            fingerprint,
            segments: state
                .segments
                .segments
                .iter()
                .map(|(&id, segment)| (id, segment.len))
                .collect(),
        };
        if let Err(error) = state.db.checkpoint(&checkpoint) {
            let error = StoreError::from(error);
            // On a full disk the store goes on with its tables in memory
            // and no file (deletes and GC must still work there; what a
            // checkpoint is for, that no file places a chunk in a hole, then
            // holds too); after any other failure it also stops writing
            // until reopened.
            let in_memory = self.tables_to_memory(&mut state);
            if in_memory.is_ok() && matches!(error, StoreError::NoSpace(_)) {
                return Ok(());
            }
            self.db_failed(&error);
            return Err(error);
        }
        self.checkpointed_log_len
            .store(meta_log.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// A clean close (the last clone of a [`Store`] dropped): checkpoints the
/// active segment, `meta.log` and the catalog database, so the next open
/// reads none of them again and can tell bit rot in their newest records
/// from a torn write. Best effort: a failure here (a full disk) only costs
/// the next open a scan.
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
        if meta_log.checkpoint().is_err() || lock(&self.failed).is_some() {
            return;
        }
        let covered = self
            .checkpointed_log_len
            .load(std::sync::atomic::Ordering::Relaxed);
        if meta_log.len() != covered || !lock(&self.state).segments.sync_plans_all().is_empty() {
            let _ = self.checkpoint_tables(&meta_log);
        }
    }
}

fn not_found(id: &ArtifactId) -> StoreError {
    StoreError::NotFound(format!("artifact {id}"))
}

fn check_links(db: &MetaDb, links: &[ArtifactId]) -> Result<(), StoreError> {
    if links.len() > LINKS_MAX {
        return Err(invalid(format!(
            "{} links, at most {LINKS_MAX}",
            links.len()
        )));
    }
    for link in links {
        if !db.exists(link)? {
            return Err(invalid(format!(
                "link to artifact {link}, which does not exist"
            )));
        }
    }
    Ok(())
}

/// Why a metadata record did not apply.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// It cannot apply (a second commit of an id, a delete of an unknown
    /// one...): ignored at replay; checked before any live change.
    Invalid(String),
    /// The catalog database failed.
    Db(db::DbError),
}

impl From<db::DbError> for ApplyError {
    fn from(error: db::DbError) -> Self {
        ApplyError::Db(error)
    }
}

impl From<String> for ApplyError {
    fn from(why: String) -> Self {
        ApplyError::Invalid(why)
    }
}

/// Applies one metadata record to the catalog and the reference counts.
/// Used for replay at open and, after the record is durable, for live
/// changes, so both paths build the same state.
fn apply(db: &mut MetaDb, record: MetaRecord) -> Result<(), ApplyError> {
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
                if !db.names.containers.contains_key(container) {
                    return Err(format!(
                        "commit of artifact {id} bound in container {container:?}, which does not exist; ignored"
                    )
                    .into());
                }
            }
            if manifest.ends.last().copied().unwrap_or(0) != meta.size {
                return Err(format!(
                    "commit of artifact {id}: chunk lengths do not add up to size {}",
                    meta.size
                )
                .into());
            }
            if !db.insert(meta, Arc::new(manifest))? {
                return Err(format!("second commit of artifact id {id}; ignored").into());
            }
            match bound {
                Some((container, name)) => names::bind(db, &container, &name, id),
                None => Ok(()),
            }
        }
        MetaRecord::Delete { id } => {
            let id = ArtifactId::from_bytes(id);
            if !db.remove(&id)? {
                return Err(format!("delete of artifact {id}, which is not live; ignored").into());
            }
            Ok(())
        }
        MetaRecord::Names { ops } => names::apply_ops(db, ops),
        MetaRecord::Checkpoint => Ok(()),
        MetaRecord::Update {
            id,
            modified_ms,
            fields,
        } => {
            let id = ArtifactId::from_bytes(id);
            match db.update(&id, modified_ms, fields)? {
                Some(_) => Ok(()),
                None => Err(format!("update of artifact {id}, which is not live; ignored").into()),
            }
        }
    }
}
