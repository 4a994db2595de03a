//! The store in an S3-compatible bucket, behind the same seam as a disk
//! (ARCHITECTURE.md, "The object-store backend").
//!
//! Under the store's prefix, each directory `<dir>` is:
//! - `<dir>/~d/<seq>`: the directory's manifest, version `seq` (16 hex
//!   digits): which file id each name holds. Written at the directory's
//!   `sync` with a conditional create, so a version is never overwritten
//!   and a second writer is refused.
//! - `<dir>/~f/<file id>/<seq>-<offset>-<len>`: the immutable parts of a
//!   file (see `file`).
//! - `<dir>/~l/<name>`: a lease, the seam's lock (see `lease`).
//! - `<dir>/<name>/...`: a subdirectory, which exists while it has a
//!   manifest.
//!
//! Names starting with `~` are refused, so no entry of the store can
//! collide with these.

mod cache;
mod client;
mod file;
mod lease;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use client::{ObjectConfig, RequestCounts};
pub use lease::LeaseOptions;

use super::{check_name, Backend, BackendFile, Entry, EntryKind, LockGuard, OpenMode};
use client::{Client, PutOutcome};
use file::{Handle, ObjectFile};

/// The manifest format this code writes and reads.
const MANIFEST_FORMAT: u32 = 1;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// What every directory of one backend shares.
struct Shared {
    client: Arc<Client>,
    /// Directories loaded, by key: one state per directory, so every
    /// handle to it sees the same entries.
    dirs: Mutex<HashMap<String, Arc<DirState>>>,
    /// Unique to this backend instance: in file ids, manifests, leases.
    nonce: String,
    counter: AtomicU64,
    lease: LeaseOptions,
    /// See [`ObjectConfig::removal_grace`].
    removal_grace: std::time::Duration,
    /// Blocks of parts read recently or about to be.
    cache: cache::Cache,
}

impl Shared {
    /// A file id never used before: the instance's nonce and a counter.
    fn new_file_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:08x}", self.nonce)
    }

    /// Whether a file removed at `at` (ms since the Unix epoch) is past
    /// the removal grace at `now`.
    fn past_grace(&self, at: u64, now: u64) -> bool {
        let grace = u64::try_from(self.removal_grace.as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(at) >= grace
    }

    /// Fills `buf` with `pieces` of parts, through the read cache.
    fn read_parts(&self, pieces: &[cache::Piece], buf: &mut [u8]) -> io::Result<()> {
        self.cache.read(&self.client, pieces, buf)
    }

    /// Starts fetching `pieces` of parts into the read cache, in order, as
    /// far as its bounds allow (see [`cache::Cache::read_ahead`]).
    fn read_ahead(&self, pieces: &[cache::Piece]) {
        self.cache.read_ahead(&self.client, pieces);
    }
}

/// Who may write under a directory: the leases taken on it and on its
/// ancestors (as loaded through this backend). A write or sync under a
/// lease that lapsed fails.
pub(super) struct Fence {
    lease: Mutex<Option<Arc<lease::Lease>>>,
    parent: Option<Arc<Fence>>,
}

impl Fence {
    fn new(parent: Option<Arc<Fence>>) -> Arc<Fence> {
        Arc::new(Fence {
            lease: Mutex::new(None),
            parent,
        })
    }

    /// `Err` if a lease this directory is written under has lapsed.
    pub(super) fn check(&self) -> io::Result<()> {
        if let Some(lease) = lock(&self.lease).as_ref() {
            lease.check()?;
        }
        match &self.parent {
            Some(parent) => parent.check(),
            None => Ok(()),
        }
    }

    /// Whether a lease is held on this directory or an ancestor.
    fn held(&self) -> bool {
        lock(&self.lease)
            .as_ref()
            .is_some_and(|l| l.check().is_ok())
            || self.parent.as_ref().is_some_and(|p| p.held())
    }
}

/// A directory's manifest.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    format: u32,
    /// The backend instance that wrote it (to recognise our own write when
    /// a retried conditional create finds it).
    writer: String,
    files: BTreeMap<String, String>,
    /// File ids removed and when (ms since the Unix epoch, the writer's
    /// clock): their parts stay for the removal grace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    removed: BTreeMap<String, u64>,
}

struct DirInner {
    /// Name -> file id, with the changes not yet in a manifest.
    entries: BTreeMap<String, String>,
    /// The manifest version `entries` were last written as (or read from).
    version: u64,
    /// Older versions seen, to delete once a newer one is written.
    old_versions: Vec<u64>,
    /// Changes since the manifest was written (a counter, so a sync knows
    /// whether a change raced it).
    changes: u64,
    /// File ids dropped from `entries` since the last manifest write.
    removed: Vec<String>,
    /// File ids removed in a manifest whose parts stay until the removal
    /// grace is over, with when (as in [`Manifest::removed`]).
    graveyard: BTreeMap<String, u64>,
    /// Files with open handles, by file id.
    open: HashMap<String, Weak<ObjectFile>>,
}

struct DirState {
    /// The directory's key (the prefix, then the path).
    key: String,
    fence: Arc<Fence>,
    inner: Mutex<DirInner>,
    /// One manifest write at a time.
    sync_lock: Mutex<()>,
}

fn join(key: &str, name: &str) -> String {
    if key.is_empty() {
        name.to_string()
    } else {
        format!("{key}/{name}")
    }
}

/// Now, in ms since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl DirState {
    /// Lists the manifests of the directory at `key`: (versions, newest
    /// manifest), `None` if there is none.
    fn read_manifest(client: &Client, key: &str) -> io::Result<Option<(Vec<u64>, Manifest)>> {
        // A manifest listed may be deleted before it is read (a writer
        // wrote a newer one): list again.
        for _ in 0..5 {
            let mut versions = Vec::new();
            for object in client.list(&join(key, "~d"))? {
                let name = object.location.filename().unwrap_or_default();
                let version = (name.len() == 16)
                    .then(|| u64::from_str_radix(name, 16).ok())
                    .flatten()
                    .ok_or_else(|| {
                        invalid_data(format!("object store: {}: not a manifest", object.location))
                    })?;
                versions.push(version);
            }
            versions.sort_unstable();
            let Some(&newest) = versions.last() else {
                return Ok(None);
            };
            let manifest_key = join(key, &format!("~d/{newest:016x}"));
            match client.get(&manifest_key) {
                Ok((bytes, _)) => {
                    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                        invalid_data(format!(
                            "object store: {manifest_key}: damaged manifest: {e}"
                        ))
                    })?;
                    if manifest.format != MANIFEST_FORMAT {
                        return Err(invalid_data(format!(
                            "object store: {manifest_key}: manifest format {} (this build reads {MANIFEST_FORMAT})",
                            manifest.format
                        )));
                    }
                    return Ok(Some((versions, manifest)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "object store: {key}: manifests kept changing while read"
        )))
    }

    /// Loads the directory at `key`; with `create`, makes it if missing.
    /// Returns it and whether it was made now.
    fn load(
        shared: &Shared,
        key: String,
        fence: Arc<Fence>,
        create: bool,
    ) -> io::Result<(DirState, bool)> {
        let mut created = false;
        let (versions, manifest) = loop {
            match DirState::read_manifest(&shared.client, &key)? {
                Some(found) => break found,
                None if create => {
                    let empty = Manifest {
                        format: MANIFEST_FORMAT,
                        writer: shared.nonce.clone(),
                        files: BTreeMap::new(),
                        removed: BTreeMap::new(),
                    };
                    let bytes = serde_json::to_vec(&empty).expect("a manifest serialises");
                    let first = join(&key, &format!("~d/{:016x}", 0));
                    // Someone else making it at the same time is as good.
                    if let PutOutcome::Put(_) =
                        shared.client.put_if(&first, Bytes::from(bytes), None)?
                    {
                        created = true;
                    }
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("object store: no directory {key}"),
                    ))
                }
            }
        };
        let newest = *versions.last().expect("a manifest was read");
        let state = DirState {
            key,
            fence,
            inner: Mutex::new(DirInner {
                entries: manifest.files,
                graveyard: manifest.removed,
                version: newest,
                old_versions: versions[..versions.len() - 1].to_vec(),
                changes: 0,
                removed: Vec::new(),
                open: HashMap::new(),
            }),
            sync_lock: Mutex::new(()),
        };
        Ok((state, created))
    }

    fn file_key(&self, id: &str) -> String {
        join(&self.key, &format!("~f/{id}"))
    }

    /// Deletes the parts of every file id under this directory that no
    /// entry names and no handle holds: what a crash between an upload and
    /// a manifest (or between a manifest and its deletes) left. Only a
    /// writer (a lease holder) sweeps.
    fn sweep(&self, shared: &Shared) -> io::Result<()> {
        let ids = shared.client.list_prefixes(&join(&self.key, "~f"))?;
        let dead: Vec<String> = {
            let inner = lock(&self.inner);
            let named: std::collections::HashSet<&String> = inner.entries.values().collect();
            ids.into_iter()
                .filter(|id| {
                    !named.contains(id)
                        && !inner.open.contains_key(id)
                        && !inner.removed.contains(id)
                        && !inner.graveyard.contains_key(id)
                })
                .collect()
        };
        for id in dead {
            let keys = shared
                .client
                .list(&self.file_key(&id))?
                .into_iter()
                .map(|o| o.location.to_string())
                .collect();
            shared.client.delete_all(keys)?;
        }
        Ok(())
    }
}

/// A directory of the store in a bucket.
pub struct ObjectBackend {
    shared: Arc<Shared>,
    dir: Arc<DirState>,
}

impl ObjectBackend {
    /// The store root at `config`'s bucket and prefix (created if the
    /// prefix holds nothing yet), with leases of `lease`'s term.
    pub fn open(config: &ObjectConfig, lease: LeaseOptions) -> io::Result<ObjectBackend> {
        let client = Arc::new(Client::new(config)?);
        let mut seed = Vec::new();
        seed.extend_from_slice(&std::process::id().to_le_bytes());
        seed.extend_from_slice(
            &std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_le_bytes(),
        );
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)
            .map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        seed.extend_from_slice(&random);
        let nonce = blake3::hash(&seed).to_hex()[..16].to_string();
        let shared = Arc::new(Shared {
            client,
            dirs: Mutex::new(HashMap::new()),
            nonce,
            counter: AtomicU64::new(0),
            lease,
            removal_grace: config.removal_grace,
            cache: cache::Cache::default(),
        });
        let key = config.prefix.clone();
        let (state, _) = DirState::load(&shared, key.clone(), Fence::new(None), true)?;
        let dir = Arc::new(state);
        lock(&shared.dirs).insert(key, Arc::clone(&dir));
        Ok(ObjectBackend { shared, dir })
    }

    /// The requests this backend (every directory of it) has made so far.
    pub fn requests(&self) -> &RequestCounts {
        &self.shared.client.counts
    }

    /// The lease settings this backend takes locks with.
    pub fn lease_options(&self) -> LeaseOptions {
        self.shared.lease
    }

    fn handle(&self, file: Arc<ObjectFile>, mode: OpenMode) -> Arc<dyn BackendFile> {
        Arc::new(Handle {
            file,
            writable: mode.writes(),
        })
    }

    /// The open file of id `id`, or it loaded from its parts.
    fn file(&self, inner: &mut DirInner, id: &str) -> io::Result<Arc<ObjectFile>> {
        if let Some(file) = inner.open.get(id).and_then(Weak::upgrade) {
            return Ok(file);
        }
        let file = Arc::new(ObjectFile::load(
            Arc::clone(&self.shared),
            self.dir.file_key(id),
            Arc::clone(&self.dir.fence),
        )?);
        inner.open.retain(|_, f| f.strong_count() > 0);
        inner.open.insert(id.to_string(), Arc::downgrade(&file));
        Ok(file)
    }

    /// Writes the manifest again if files it lists as removed are past
    /// the removal grace, which deletes their parts (see
    /// [`Backend::sync`]): so a writer's open collects them even if it
    /// changes nothing here.
    fn purge_expired(&self) -> io::Result<()> {
        let now = unix_ms();
        {
            let mut inner = lock(&self.dir.inner);
            if !inner
                .graveyard
                .values()
                .any(|&at| self.shared.past_grace(at, now))
            {
                return Ok(());
            }
            inner.changes += 1;
        }
        self.sync()
    }

    /// `NotFound` for file `name` of this directory.
    fn no_file(&self, name: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("object store: no file {}", join(&self.dir.key, name)),
        )
    }

    /// A new empty file named `name` (replacing any entry of that name).
    fn create(&self, inner: &mut DirInner, name: &str) -> Arc<ObjectFile> {
        let id = self.shared.new_file_id();
        let file = Arc::new(ObjectFile::new(
            Arc::clone(&self.shared),
            self.dir.file_key(&id),
            Arc::clone(&self.dir.fence),
        ));
        inner.open.retain(|_, f| f.strong_count() > 0);
        inner.open.insert(id.clone(), Arc::downgrade(&file));
        if let Some(old) = inner.entries.insert(name.to_string(), id) {
            inner.removed.push(old);
        }
        inner.changes += 1;
        file
    }
}

/// A name the store may use: one component, not starting with `~`.
fn check(name: &str) -> io::Result<()> {
    check_name(name)?;
    if name.starts_with('~') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?}: names starting with '~' are the object store's own"),
        ));
    }
    Ok(())
}

impl Backend for ObjectBackend {
    fn reads_are_durable(&self) -> bool {
        true
    }

    fn dir(&self, name: &str, create: bool) -> io::Result<(Arc<dyn Backend>, bool)> {
        check(name)?;
        let key = join(&self.dir.key, name);
        let mut dirs = lock(&self.shared.dirs);
        if let Some(dir) = dirs.get(&key) {
            // A directory nobody writes through this backend is read again,
            // so a reader sees what writers elsewhere did since.
            // (Only one nobody else holds: a holder may write through it.)
            if Arc::strong_count(dir) > 1 || lock(&dir.inner).changes > 0 {
                return Ok((
                    Arc::new(ObjectBackend {
                        shared: Arc::clone(&self.shared),
                        dir: Arc::clone(dir),
                    }),
                    false,
                ));
            }
        }
        let (state, created) = DirState::load(
            &self.shared,
            key.clone(),
            Fence::new(Some(Arc::clone(&self.dir.fence))),
            create,
        )?;
        let dir = Arc::new(state);
        dirs.insert(key, Arc::clone(&dir));
        drop(dirs);
        let backend = ObjectBackend {
            shared: Arc::clone(&self.shared),
            dir,
        };
        if backend.dir.fence.held() {
            backend.dir.sweep(&self.shared)?;
            // Housekeeping: a failure leaves them for the next sync.
            let _ = backend.purge_expired();
        }
        Ok((Arc::new(backend), created))
    }

    fn list(&self) -> io::Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = lock(&self.dir.inner)
            .entries
            .keys()
            .map(|name| Entry {
                name: name.clone(),
                kind: EntryKind::File,
            })
            .collect();
        for object in self.shared.client.list(&join(&self.dir.key, "~l"))? {
            if let Some(name) = object.location.filename() {
                entries.push(Entry {
                    name: name.to_string(),
                    kind: EntryKind::File,
                });
            }
        }
        for name in self.shared.client.list_prefixes(&self.dir.key)? {
            if !name.starts_with('~') {
                entries.push(Entry {
                    name,
                    kind: EntryKind::Dir,
                });
            }
        }
        Ok(entries)
    }

    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn BackendFile>> {
        check(name)?;
        let mut inner = lock(&self.dir.inner);
        let existing = inner.entries.get(name).cloned();
        let file = match (mode, existing) {
            (OpenMode::Read | OpenMode::Write | OpenMode::CreateOrOpen, Some(id)) => {
                self.file(&mut inner, &id)?
            }
            (OpenMode::Read | OpenMode::Write, None) => return Err(self.no_file(name)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("object store: {} exists", join(&self.dir.key, name)),
                ))
            }
            (OpenMode::CreateNew | OpenMode::CreateOrOpen | OpenMode::Truncate, _) => {
                self.create(&mut inner, name)
            }
        };
        Ok(self.handle(file, mode))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        check(name)?;
        let mut inner = lock(&self.dir.inner);
        let id = inner
            .entries
            .remove(name)
            .ok_or_else(|| self.no_file(name))?;
        inner.removed.push(id);
        inner.changes += 1;
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check(from)?;
        check(to)?;
        let mut inner = lock(&self.dir.inner);
        let id = inner
            .entries
            .remove(from)
            .ok_or_else(|| self.no_file(from))?;
        if let Some(old) = inner.entries.insert(to.to_string(), id) {
            inner.removed.push(old);
        }
        inner.changes += 1;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let _one = lock(&self.dir.sync_lock);
        let (manifest, version, changes, removed, expired, old) = {
            let inner = lock(&self.dir.inner);
            if inner.changes == 0 {
                return Ok(());
            }
            // Files removed now join the graveyard; those whose grace is
            // over leave it, and their parts go once it is written.
            let now = unix_ms();
            let mut graveyard = inner.graveyard.clone();
            for id in &inner.removed {
                graveyard.insert(id.clone(), now);
            }
            let expired: Vec<String> = graveyard
                .extract_if(.., |_, &mut at| self.shared.past_grace(at, now))
                .map(|(id, _)| id)
                .collect();
            let manifest = Manifest {
                format: MANIFEST_FORMAT,
                writer: self.shared.nonce.clone(),
                files: inner.entries.clone(),
                removed: graveyard,
            };
            (
                manifest,
                inner.version + 1,
                inner.changes,
                inner.removed.clone(),
                expired,
                inner.old_versions.clone(),
            )
        };
        self.dir.fence.check()?;
        let bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let key = join(&self.dir.key, &format!("~d/{version:016x}"));
        match self.shared.client.put_if(&key, Bytes::from(bytes), None)? {
            PutOutcome::Put(_) => {}
            PutOutcome::Conflict => {
                // Ours if a retried request had landed; anyone else's means
                // a second writer.
                let (found, _) = self.shared.client.get(&key)?;
                if serde_json::from_slice::<Manifest>(&found).ok().as_ref() != Some(&manifest) {
                    return Err(io::Error::other(format!(
                        "object store: {key} was written by another host: this host no longer holds the store"
                    )));
                }
            }
        }
        self.dir.fence.check()?;
        let doomed: Vec<Arc<ObjectFile>>;
        let mut dead_ids = Vec::new();
        {
            let mut inner = lock(&self.dir.inner);
            inner.old_versions = vec![inner.version];
            inner.version = version;
            inner.changes -= changes;
            inner.removed.retain(|id| !removed.contains(id));
            inner.graveyard = manifest.removed.clone();
            doomed = expired
                .iter()
                .filter_map(|id| match inner.open.get(id).and_then(Weak::upgrade) {
                    Some(file) => Some(file),
                    None => {
                        dead_ids.push(id.clone());
                        None
                    }
                })
                .collect();
        }
        for file in doomed {
            file.delete_on_drop.store(true, Ordering::Release);
        }
        // What is left after a failure here is garbage the next sweep takes.
        let mut keys: Vec<String> = old
            .iter()
            .map(|v| join(&self.dir.key, &format!("~d/{v:016x}")))
            .collect();
        for id in dead_ids {
            keys.extend(
                self.shared
                    .client
                    .list(&self.dir.file_key(&id))?
                    .into_iter()
                    .map(|o| o.location.to_string()),
            );
        }
        self.shared.client.delete_all(keys)?;
        Ok(())
    }

    fn lock(&self, name: &str) -> io::Result<LockGuard> {
        check(name)?;
        let guard = lease::take(
            &self.shared.client,
            join(&self.dir.key, &format!("~l/{name}")),
            // Unique per take: a second take in this process is refused
            // like anyone else's.
            self.shared.new_file_id(),
            self.shared.lease,
        )?;
        *lock(&self.dir.fence.lease) = Some(Arc::clone(guard.lease()));
        self.dir.sweep(&self.shared)?;
        // Housekeeping: a failure leaves them for the next sync.
        let _ = self.purge_expired();
        Ok(Box::new(guard))
    }
}
