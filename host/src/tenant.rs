//! Tenants: each one a directory `tenants/<name>/` under the store root,
//! with its own [`Store`] and nothing shared with any other tenant.
//!
//! A tenant's store is opened at most once per process (all contexts share
//! the one [`Store`]) and at most once across processes for writing: an
//! exclusive `flock` on `tenants/<name>/LOCK` is held while it is open, so
//! two processes can never append to the same logs. The holder writes its
//! process id into the lock file, so a refused process can say who holds
//! it ([`StoreError::InUse`]). How long a refused open keeps trying is
//! [`Access::lock_wait`].
//!
//! A [`Tenants`] with [`Access::read_only`] takes no lock and creates
//! nothing: each tenant is opened with [`Store::open_read_only`], a
//! snapshot of what was committed at its first use, beside whichever
//! process writes it. An unknown tenant is `NotFound`, never made.
//!
//! At most [`Tenants::open_max`] stores are kept open (default
//! [`TENANTS_OPEN_MAX_DEFAULT`]): past it, the least recently used ones
//! that nobody else holds are closed (cleanly: checkpointed, then
//! unlocked) and reopened on their next use. A store someone still holds
//! (a `Store` clone, an upload, a chunker) is never closed: that would
//! release its lock while it is still written. So the cap is exceeded only
//! while more than that many tenants are in use at once.
//!
//! Each tenant's [`TenantPolicy`] (quota, plugin limits) lives in its own
//! directory, kept by its store (see [`Store::set_policy`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cap_std::fs::Dir;

use crate::error::StoreError;
use crate::store::backend::cap::CapDir;
use crate::store::backend::{Backend, EntryKind, LockGuard, OpenMode};
use crate::store::{Store, StoreOptions, TenantPolicy};

/// Tenant stores a [`Tenants`] keeps open at most, unless more are in use
/// at once (see [`Tenants::set_open_max`]): each open store holds a few
/// file descriptors and its index in memory.
pub const TENANTS_OPEN_MAX_DEFAULT: usize = 256;

/// Longest tenant name, in bytes.
pub const TENANT_NAME_BYTES_MAX: usize = 64;

/// Checks that `name` is 1..=64 bytes of `[a-z0-9_-]`, not starting with
/// `-`: it becomes a directory name, so nothing that could be a path.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let valid = !name.is_empty()
        && name.len() <= TENANT_NAME_BYTES_MAX
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "tenant name {name:?}: use 1 to {TENANT_NAME_BYTES_MAX} characters of a-z, 0-9, _ and -"
        )))
    }
}

/// How long a writer's open keeps retrying a held tenant lock unless told
/// otherwise ([`Access::lock_wait`]): about half a second, far longer than
/// a fork-to-exec window (see [`lock`]).
pub const LOCK_WAIT_DEFAULT: Duration = Duration::from_millis(500);
/// The pause between two tries at a held lock.
const LOCK_RETRY_DELAY: Duration = Duration::from_millis(20);
/// Longest process id text read back from a lock file.
const LOCK_PID_BYTES_MAX: u64 = 20;

/// How a [`Tenants`] opens its tenants' stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Open each store with [`Store::open_read_only`]: no lock, nothing
    /// written or created, every write refused.
    pub read_only: bool,
    /// With `read_only`: a tenant whose writer lock is free is opened with
    /// [`Store::open_read_only_in_place`], holding the lock while open (its
    /// catalog read from its last checkpoint: fast at any scale, where a
    /// snapshot rebuilds it); writers then wait for it as for any holder.
    /// One a writer holds is opened as a snapshot beside it, as without
    /// this. For short-lived readers (the command-line tool's reading
    /// commands); a long-lived one would keep writers out.
    pub reads_in_place: bool,
    /// How long a writer's open waits for a tenant another process holds
    /// before it fails with [`StoreError::InUse`]. At least one try is
    /// always made.
    pub lock_wait: Duration,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            read_only: false,
            reads_in_place: false,
            lock_wait: LOCK_WAIT_DEFAULT,
        }
    }
}

/// Name of the directory holding the tenants, under the store root.
const TENANTS_DIR: &str = "tenants";
/// Name of a tenant's lock file, in its directory.
const LOCK_NAME: &str = "LOCK";

struct OpenTenant {
    store: Store,
    /// `None` for a read-only store, which takes no lock.
    _lock: Option<LockGuard>,
}

/// One tenant's entry in the registry: filled by the first open. Opens of
/// one tenant are serialised by its own mutex, never by the registry's.
type Slot = Arc<Mutex<Option<OpenTenant>>>;

/// A tenant in the registry: its slot and when it was last asked for.
struct Entry {
    slot: Slot,
    used: u64,
}

/// The tenants known to this process, open or being opened.
#[derive(Default)]
struct Registry {
    entries: HashMap<String, Entry>,
    /// Ticks at every [`Tenants::store`] call: the LRU order.
    clock: u64,
}

/// The tenants of one store root.
#[derive(Clone)]
pub struct Tenants {
    root: Arc<dyn Backend>,
    options: StoreOptions,
    access: Access,
    open: Arc<Mutex<Registry>>,
    /// See [`Tenants::set_open_max`].
    open_max: Arc<AtomicUsize>,
}

impl Tenants {
    /// Tenants under the directory `root`, each opened with `options`.
    pub fn new(root: Dir, options: StoreOptions) -> Self {
        Tenants::with_backend(Arc::new(CapDir::new(root)), options)
    }

    /// Tenants under `root`, a directory of any [`Backend`].
    pub fn with_backend(root: Arc<dyn Backend>, options: StoreOptions) -> Self {
        Tenants {
            root,
            options,
            access: Access::default(),
            open: Arc::new(Mutex::new(Registry::default())),
            open_max: Arc::new(AtomicUsize::new(TENANTS_OPEN_MAX_DEFAULT)),
        }
    }

    /// These tenants opened as `access` says (the default: for writing,
    /// waiting [`LOCK_WAIT_DEFAULT`] for a held lock). Set before first
    /// use: stores already open stay as they were opened.
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// How these tenants are opened.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Keeps at most `max` (at least 1) tenant stores open from now on,
    /// shared by every clone of this `Tenants`.
    pub fn set_open_max(&self, max: usize) {
        self.open_max.store(max.max(1), Ordering::Relaxed);
        self.close_unused();
    }

    /// The cap on open stores (see [`Tenants::set_open_max`]).
    pub fn open_max(&self) -> usize {
        self.open_max.load(Ordering::Relaxed)
    }

    /// Tenant stores open now (ones being opened included).
    pub fn open_count(&self) -> usize {
        let registry = self.open.lock().unwrap_or_else(|p| p.into_inner());
        registry
            .entries
            .values()
            .filter(|entry| match entry.slot.try_lock() {
                Ok(slot) => slot.is_some(),
                Err(_) => true,
            })
            .count()
    }

    /// The store of tenant `name`, created on first use, counted as used
    /// now; then closes the least recently used stores nobody holds, past
    /// [`Tenants::open_max`].
    pub fn store(&self, name: &str) -> Result<Store, StoreError> {
        let store = self.open_store(name);
        self.close_unused();
        store
    }

    /// Tenant `name`'s policy (see [`Store::policy`]).
    pub fn policy(&self, name: &str) -> Result<TenantPolicy, StoreError> {
        Ok(self.store(name)?.policy())
    }

    /// Replaces tenant `name`'s policy, durably, in force at once (see
    /// [`Store::set_policy`]).
    pub fn set_policy(&self, name: &str, policy: TenantPolicy) -> Result<(), StoreError> {
        self.store(name)?.set_policy(policy)
    }

    /// Tenant `name`'s slot, marked as used now.
    fn slot(&self, name: &str) -> Slot {
        let mut registry = self.open.lock().unwrap_or_else(|p| p.into_inner());
        registry.clock += 1;
        let used = registry.clock;
        let entry = registry
            .entries
            .entry(name.to_string())
            .or_insert_with(|| Entry {
                slot: Slot::default(),
                used,
            });
        entry.used = used;
        Arc::clone(&entry.slot)
    }

    /// Closes least recently used stores until at most
    /// [`Tenants::open_max`] are known, skipping any in use. Each is closed
    /// under its own slot's lock, so an open of it meanwhile waits, then
    /// opens it afresh once its lock is free.
    fn close_unused(&self) {
        let max = self.open_max();
        let victims: Vec<Slot> = {
            let mut registry = self.open.lock().unwrap_or_else(|p| p.into_inner());
            forget_empty(&mut registry);
            let excess = registry.entries.len().saturating_sub(max);
            if excess == 0 {
                return;
            }
            let mut idle: Vec<(u64, &Slot)> = registry
                .entries
                .values()
                // Another reference to the slot: someone is opening or
                // asking for it right now.
                .filter(|entry| Arc::strong_count(&entry.slot) == 1)
                .filter(|entry| match entry.slot.try_lock() {
                    Ok(slot) => slot.as_ref().is_none_or(|t| !t.store.is_shared()),
                    Err(_) => false,
                })
                .map(|entry| (entry.used, &entry.slot))
                .collect();
            idle.sort_unstable_by_key(|(used, _)| *used);
            idle.into_iter()
                .take(excess)
                .map(|(_, slot)| Arc::clone(slot))
                .collect()
        };
        if victims.is_empty() {
            return;
        }
        for slot in victims {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            // Asked for since it was picked: it is in use again.
            if slot.as_ref().is_some_and(|t| t.store.is_shared()) {
                continue;
            }
            // Store first (its clean close), then the lock.
            drop(slot.take());
        }
        forget_empty(&mut self.open.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The store of tenant `name`, created on first use. The registry's lock
    /// is held only to find the tenant's slot: a tenant whose open is slow
    /// (a scan, fsyncs, lock retries) stalls only callers of that tenant.
    fn open_store(&self, name: &str) -> Result<Store, StoreError> {
        validate_name(name)?;
        let slot = self.slot(name);
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tenant) = &*slot {
            return Ok(tenant.store.clone());
        }
        if self.access.read_only {
            let dir = self.existing_tenant_dir(name)?;
            let store = match self.reader_lock(&*dir, name)? {
                Some(lock) => Store::open_read_only_in_place(dir, self.options.clone(), lock)?,
                None => Store::open_read_only(dir, self.options.clone())?,
            };
            *slot = Some(OpenTenant {
                store: store.clone(),
                _lock: None,
            });
            return Ok(store);
        }
        let dir = self.tenant_dir(name)?;
        let lock = lock(&*dir, name, self.access.lock_wait)?;
        let store = Store::open_backend(dir, self.options.clone())?;
        *slot = Some(OpenTenant {
            store: store.clone(),
            _lock: Some(lock),
        });
        Ok(store)
    }

    /// The writer lock of tenant `name`, for a reader in place, if that is
    /// asked for and no one holds it (one try: a reader never waits). A
    /// tenant with no lock file never had a writer that takes it: none is
    /// created.
    fn reader_lock(&self, dir: &dyn Backend, name: &str) -> Result<Option<LockGuard>, StoreError> {
        if !self.access.reads_in_place {
            return Ok(None);
        }
        let entries = dir
            .list()
            .map_err(|e| io(format!("listing tenant {name}"), e))?;
        if !entries.iter().any(|entry| entry.name == LOCK_NAME) {
            return Ok(None);
        }
        match dir.lock(LOCK_NAME) {
            Ok(guard) => Ok(Some(guard)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(io(format!("locking tenant {name}"), e)),
        }
    }

    /// `tenants/<name>/`, created if missing. In the durable modes both
    /// directory entries are synced on every open, not only when created:
    /// a crash between a create and its sync leaves an entry that exists
    /// but may not survive the next power cut, and this repairs it.
    fn tenant_dir(&self, name: &str) -> Result<Arc<dyn Backend>, StoreError> {
        let durable = self.options.durability.fsyncs();
        let (tenants, _) = self
            .root
            .dir(TENANTS_DIR, true)
            .map_err(|e| io(format!("opening {TENANTS_DIR}/"), e))?;
        let (dir, _) = tenants
            .dir(name, true)
            .map_err(|e| io(format!("opening {TENANTS_DIR}/{name}/"), e))?;
        if durable {
            self.root
                .sync()
                .map_err(|e| io("syncing the store root".into(), e))?;
            tenants
                .sync()
                .map_err(|e| io(format!("syncing {TENANTS_DIR}/"), e))?;
        }
        Ok(dir)
    }

    /// `tenants/<name>/` if it exists; `NotFound` (naming the tenant) if
    /// not. Creates and syncs nothing: for read-only opens.
    fn existing_tenant_dir(&self, name: &str) -> Result<Arc<dyn Backend>, StoreError> {
        let missing = |e: std::io::Error, what: String| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(format!("tenant {name}"))
            } else {
                io(what, e)
            }
        };
        let (tenants, _) = self
            .root
            .dir(TENANTS_DIR, false)
            .map_err(|e| missing(e, format!("opening {TENANTS_DIR}/")))?;
        let (dir, _) = tenants
            .dir(name, false)
            .map_err(|e| missing(e, format!("opening {TENANTS_DIR}/{name}/")))?;
        Ok(dir)
    }

    /// The tenants open in this process with their stores, for background
    /// maintenance (`crate::maintenance`). Never opens one; a tenant whose
    /// open is in progress is left out rather than waited for.
    pub fn open_stores(&self) -> Vec<(String, Store)> {
        let slots: Vec<(String, Slot)> = {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.entries
                .iter()
                .map(|(name, entry)| (name.clone(), Arc::clone(&entry.slot)))
                .collect()
        };
        slots
            .into_iter()
            .filter_map(|(name, slot)| {
                let slot = slot.try_lock().ok()?;
                Some((name, slot.as_ref()?.store.clone()))
            })
            .collect()
    }

    /// Names of the tenants that exist on disk.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let tenants = match self.root.dir(TENANTS_DIR, false) {
            Ok((tenants, _)) => tenants,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(io("listing tenants".into(), e)),
        };
        let entries = tenants
            .list()
            .map_err(|e| io("listing tenants".into(), e))?;
        for entry in entries {
            if entry.kind == EntryKind::Dir && validate_name(&entry.name).is_ok() {
                names.push(entry.name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Drops the registry entries of tenants that are not open and that nobody
/// is asking for (closed by [`Tenants::close_unused`], or whose open
/// failed), so the registry stays the size of what is open.
fn forget_empty(registry: &mut Registry) {
    registry.entries.retain(|_, entry| {
        Arc::strong_count(&entry.slot) > 1
            || entry.slot.try_lock().map_or(true, |slot| slot.is_some())
    });
}

/// Takes tenant `name`'s lock in its directory `dir`, trying for `wait`.
fn lock(dir: &dyn Backend, name: &str, wait: Duration) -> Result<LockGuard, StoreError> {
    // A child process forked by any thread of ours holds a copy of the lock
    // file's descriptor (and so the lock) until it execs and close-on-exec
    // drops it: microseconds. So even the default wait outlasts that, and
    // a refusal at its end means another process has the store open.
    let deadline = Instant::now() + wait;
    loop {
        match dir.lock(LOCK_NAME) {
            Ok(guard) => return Ok(guard),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(StoreError::InUse {
                        tenant: name.to_string(),
                        pid: lock_holder(dir),
                    });
                }
                std::thread::sleep(LOCK_RETRY_DELAY.min(deadline - now));
            }
            Err(e) => return Err(io(format!("locking tenant {name}"), e)),
        }
    }
}

/// The process id the holder of a tenant's lock wrote into its lock file,
/// if there is one to read (the lock file is only ever a few digits).
fn lock_holder(dir: &dyn Backend) -> Option<u32> {
    let file = dir.open(LOCK_NAME, OpenMode::Read).ok()?;
    let len = file.len().ok()?.min(LOCK_PID_BYTES_MAX);
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0).ok()?;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

fn io(context: String, source: std::io::Error) -> StoreError {
    StoreError::io(context, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (found reading the code): the registry held its global
    /// lock through a tenant's whole open (scan, fsyncs, lock retries), so
    /// one slow tenant stalled every other. Method: tenant `a` is held by
    /// another registry (as another process would hold it), so opening it
    /// here spends about half a second retrying its lock before it fails;
    /// meanwhile, from another thread, tenant `b` must open at once: its
    /// open returns before `a`'s gives up.
    #[test]
    fn a_slow_tenant_open_does_not_stall_other_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let root = || Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let holder = Tenants::new(root(), StoreOptions::default());
        let _held = holder.store("a").unwrap();
        let tenants = Tenants::new(root(), StoreOptions::default());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let slow = {
            let tenants = tenants.clone();
            std::thread::spawn(move || {
                started_tx.send(()).unwrap();
                let result = tenants.store("a");
                (result.is_err(), std::time::Instant::now())
            })
        };
        started_rx.recv().unwrap();
        // Give the slow open time to take the registry's lock if it were
        // going to hold it: it retries for about 500 ms.
        std::thread::yield_now();
        tenants.store("b").expect("tenant b opens");
        let b_done = std::time::Instant::now();
        let (a_failed, a_done) = slow.join().unwrap();
        assert!(a_failed, "tenant a is held by the other registry");
        assert!(b_done < a_done, "tenant b waited for tenant a's open");
    }
    /// Goal: a second writer of a held tenant gets `InUse` naming the
    /// holder's pid, after waiting about `lock_wait` and no longer; a
    /// read-only `Tenants` opens the held tenant beside the holder, sees
    /// what it committed, and creates no tenant it does not find.
    /// Method: one `Tenants` holds tenant `a` (as another process would);
    /// a second one with a 100 ms wait, and a read-only third.
    #[test]
    fn writers_exclude_each_other_naming_the_holder_and_readers_do_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let root = || Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let holder = Tenants::new(root(), StoreOptions::default());
        let held = holder.store("a").unwrap();
        let id = put_one(&held, b"committed by the holder");
        let wait = Duration::from_millis(100);
        let writer = Tenants::new(root(), StoreOptions::default()).with_access(Access {
            read_only: false,
            reads_in_place: false,
            lock_wait: wait,
        });
        let started = Instant::now();
        match writer.store("a") {
            Err(StoreError::InUse { tenant, pid }) => {
                assert_eq!(tenant, "a");
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected in-use, got {:?}", other.map(|_| ())),
        }
        let waited = started.elapsed();
        assert!(waited >= wait && waited < wait * 20, "waited {waited:?}");

        let reader = Tenants::new(root(), StoreOptions::default()).with_access(Access {
            read_only: true,
            ..Access::default()
        });
        let snapshot = reader.store("a").unwrap();
        assert!(snapshot.exists(&id).unwrap());
        assert!(matches!(snapshot.delete(&id), Err(StoreError::ReadOnly(_))));
        assert!(matches!(reader.store("b"), Err(StoreError::NotFound(_))));
        assert!(matches!(reader.policy("b"), Err(StoreError::NotFound(_))));
        assert!(!dir.path().join("tenants/b").exists());
    }

    /// Goal: with `reads_in_place`, a read-only `Tenants` opens a tenant no
    /// writer holds in place (from its checkpoint, holding its lock, so a
    /// writer waits and is refused, naming this process), and one a writer
    /// holds as a snapshot beside it, seeing what it committed. Method:
    /// writer and reader registries on one root, as two processes would be.
    #[test]
    fn readers_in_place_hold_the_lock_and_step_aside_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let root = || Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let in_place = Access {
            read_only: true,
            reads_in_place: true,
            ..Access::default()
        };
        let writer = Tenants::new(root(), StoreOptions::default());
        let first = put_one(&writer.store("a").unwrap(), b"first");
        drop(writer);

        let reader = Tenants::new(root(), StoreOptions::default()).with_access(in_place);
        let store = reader.store("a").unwrap();
        assert!(store.open_stats().from_checkpoint);
        assert!(store.exists(&first).unwrap());
        let refused = Tenants::new(root(), StoreOptions::default()).with_access(Access {
            lock_wait: Duration::from_millis(50),
            ..Access::default()
        });
        match refused.store("a") {
            Err(StoreError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected in-use, got {:?}", other.map(|_| ())),
        }
        drop(store);
        drop(reader);

        let writer = Tenants::new(root(), StoreOptions::default());
        let held = writer.store("a").unwrap();
        let second = put_one(&held, b"second");
        let reader = Tenants::new(root(), StoreOptions::default()).with_access(in_place);
        let snapshot = reader.store("a").unwrap();
        assert!(snapshot.is_snapshot());
        assert!(
            !snapshot.open_stats().from_checkpoint,
            "rebuilt beside the writer"
        );
        assert!(snapshot.exists(&first).unwrap() && snapshot.exists(&second).unwrap());
        assert!(matches!(reader.store("b"), Err(StoreError::NotFound(_))));
        assert!(!dir.path().join("tenants/b").exists());
    }

    fn put_one(store: &Store, bytes: &[u8]) -> crate::store::ArtifactId {
        use crate::store::{ChunkRef, Hash, NewMetadata};
        let digest = Hash::of(bytes);
        let mut upload = store.begin_upload();
        upload.put_chunk(&digest, bytes).unwrap();
        let chunk = ChunkRef {
            digest,
            len: bytes.len() as u32,
        };
        upload
            .commit(
                &[chunk],
                bytes.len() as u64,
                Some(&digest),
                NewMetadata::default(),
            )
            .unwrap()
    }

    /// Goal: many tenants do not mean as many open stores, and closing the
    /// least recently used ones loses nothing.
    /// Method: a cap of 8 (with fsyncs off for speed: durability is not the
    /// point); 300 tenants opened in turn, each given one artifact; the
    /// open count is checked after every open, then every tenant is asked
    /// for again (reopened, for all but the last 8) and its artifact must
    /// read back, while the count stays at the cap.
    #[test]
    fn at_most_the_cap_of_tenants_stay_open_and_closed_ones_reopen_whole() {
        const TENANTS: usize = 300;
        const CAP: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let options = StoreOptions {
            durability: crate::store::Durability::None,
            ..StoreOptions::default()
        };
        let tenants = Tenants::new(root, options);
        tenants.set_open_max(CAP);
        let mut ids = Vec::new();
        for i in 0..TENANTS {
            let store = tenants.store(&format!("t{i}")).unwrap();
            ids.push(put_one(&store, format!("tenant {i}").as_bytes()));
            drop(store);
            assert!(tenants.open_count() <= CAP, "{} open", tenants.open_count());
        }
        assert_eq!(tenants.open_count(), CAP);
        for (i, id) in ids.iter().enumerate() {
            let store = tenants.store(&format!("t{i}")).unwrap();
            let chunk = store.manifest(id, 0, 1).unwrap()[0].digest;
            assert_eq!(
                store.read_chunk(&chunk).unwrap(),
                format!("tenant {i}").as_bytes()
            );
            assert_eq!(store.stats().artifacts, 1);
            drop(store);
            assert!(tenants.open_count() <= CAP, "{} open", tenants.open_count());
        }
    }

    /// Goal: a store in use (a clone held outside the registry) is never
    /// closed by the cap: closing it would release its lock while it is
    /// still written, and the next open would be a second store on the
    /// same files. Method: hold tenant `held`, open more tenants than the
    /// cap; asking for `held` again must give the very same store.
    #[test]
    fn a_store_in_use_is_never_closed_by_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let root = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let tenants = Tenants::new(
            root,
            StoreOptions {
                durability: crate::store::Durability::None,
                ..StoreOptions::default()
            },
        );
        tenants.set_open_max(2);
        let held = tenants.store("held").unwrap();
        for i in 0..6 {
            tenants.store(&format!("other{i}")).unwrap();
        }
        assert_eq!(tenants.open_count(), 2);
        put_one(&held, b"written while others came and went");
        assert!(tenants.store("held").unwrap().same_store(&held));
    }
}
