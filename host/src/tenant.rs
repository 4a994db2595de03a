//! Tenants: each one a directory `tenants/<name>/` under the store root,
//! with its own [`Store`] and nothing shared with any other tenant.
//!
//! A tenant's store is opened at most once per process (all contexts share
//! the one [`Store`]) and at most once across processes: an exclusive
//! `flock` on `tenants/<name>/LOCK` is held while it is open, so two
//! processes can never append to the same logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cap_std::fs::Dir;

use crate::error::StoreError;
use crate::store::backend::cap::CapDir;
use crate::store::backend::{Backend, EntryKind, LockGuard};
use crate::store::{Store, StoreOptions};

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

/// Tries at taking a tenant's lock, [`LOCK_RETRY_DELAY`] apart: about
/// half a second in all, far longer than a fork-to-exec window.
const LOCK_ATTEMPTS_MAX: u32 = 25;
const LOCK_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Name of the directory holding the tenants, under the store root.
const TENANTS_DIR: &str = "tenants";
/// Name of a tenant's lock file, in its directory.
const LOCK_NAME: &str = "LOCK";

struct OpenTenant {
    store: Store,
    _lock: LockGuard,
}

/// One tenant's entry in the registry: filled by the first open. Opens of
/// one tenant are serialised by its own mutex, never by the registry's.
type Slot = Arc<Mutex<Option<OpenTenant>>>;

/// The tenants of one store root.
#[derive(Clone)]
pub struct Tenants {
    root: Arc<dyn Backend>,
    options: StoreOptions,
    open: Arc<Mutex<HashMap<String, Slot>>>,
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
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The store of tenant `name`, created on first use. The registry's lock
    /// is held only to find the tenant's slot: a tenant whose open is slow
    /// (a scan, fsyncs, lock retries) stalls only callers of that tenant.
    pub fn store(&self, name: &str) -> Result<Store, StoreError> {
        validate_name(name)?;
        let slot = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(open.entry(name.to_string()).or_default())
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tenant) = &*slot {
            return Ok(tenant.store.clone());
        }
        let dir = self.tenant_dir(name)?;
        let lock = lock(&*dir, name)?;
        let store = Store::open_backend(dir, self.options.clone())?;
        *slot = Some(OpenTenant {
            store: store.clone(),
            _lock: lock,
        });
        Ok(store)
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

    /// The tenants open in this process with their stores, for background
    /// maintenance (`crate::maintenance`). Never opens one; a tenant whose
    /// open is in progress is left out rather than waited for.
    pub fn open_stores(&self) -> Vec<(String, Store)> {
        let slots: Vec<(String, Slot)> = {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.iter()
                .map(|(name, slot)| (name.clone(), Arc::clone(slot)))
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

fn lock(dir: &dyn Backend, name: &str) -> Result<LockGuard, StoreError> {
    // A child process forked by any thread of ours holds a copy of the lock
    // file's descriptor (and so the lock) until it execs and close-on-exec
    // drops it: microseconds. So a refusal is retried for a bounded while
    // before it is taken to mean that another process has the store open.
    let mut attempts = 0;
    loop {
        match dir.lock(LOCK_NAME) {
            Ok(guard) => return Ok(guard),
            Err(e) => {
                attempts += 1;
                if e.kind() != std::io::ErrorKind::WouldBlock || attempts >= LOCK_ATTEMPTS_MAX {
                    return Err(io(format!("tenant {name} is in use by another process"), e));
                }
                std::thread::sleep(LOCK_RETRY_DELAY);
            }
        }
    }
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
}
