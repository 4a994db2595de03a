//! Tenants: each one a directory `tenants/<name>/` under the store root,
//! with its own [`Store`] and nothing shared with any other tenant.
//!
//! A tenant's store is opened at most once per process (all contexts share
//! the one [`Store`]) and at most once across processes: an exclusive
//! `flock` on `tenants/<name>/LOCK` is held while it is open, so two
//! processes can never append to the same logs.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use cap_std::fs::{Dir, OpenOptions};

use crate::error::StoreError;
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

struct OpenTenant {
    store: Store,
    _lock: std::fs::File,
}

/// The tenants of one store root.
#[derive(Clone)]
pub struct Tenants {
    root: Arc<Dir>,
    options: StoreOptions,
    open: Arc<Mutex<HashMap<String, OpenTenant>>>,
}

impl Tenants {
    /// Tenants under `root`, each opened with `options`.
    pub fn new(root: Dir, options: StoreOptions) -> Self {
        Tenants {
            root: Arc::new(root),
            options,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The store of tenant `name`, created on first use.
    pub fn store(&self, name: &str) -> Result<Store, StoreError> {
        validate_name(name)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tenant) = open.get(name) {
            return Ok(tenant.store.clone());
        }
        let path = format!("tenants/{name}");
        self.root
            .create_dir_all(&path)
            .map_err(|e| io(format!("creating {path}"), e))?;
        let dir = self
            .root
            .open_dir(&path)
            .map_err(|e| io(format!("opening {path}"), e))?;
        let lock = lock(&dir, name)?;
        let store = Store::open(dir, self.options.clone())?;
        open.insert(
            name.to_string(),
            OpenTenant {
                store: store.clone(),
                _lock: lock,
            },
        );
        Ok(store)
    }

    /// Names of the tenants that exist on disk.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let entries = match self.root.read_dir("tenants") {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(io("listing tenants".into(), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io("listing tenants".into(), e))?;
            if let Ok(name) = entry.file_name().into_string() {
                if validate_name(&name).is_ok() {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }
}

fn lock(dir: &Dir, name: &str) -> Result<std::fs::File, StoreError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    let file = dir
        .open_with("LOCK", &options)
        .map_err(|e| io(format!("opening tenant {name} lock"), e))?
        .into_std();
    // A child process forked by any thread of ours holds a copy of this
    // descriptor (and so the lock) until it execs and close-on-exec drops
    // it: microseconds. So a refusal is retried for a bounded while before
    // it is taken to mean that another process has the store open.
    let mut attempts = 0;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        attempts += 1;
        if e.kind() != std::io::ErrorKind::WouldBlock || attempts >= LOCK_ATTEMPTS_MAX {
            return Err(io(format!("tenant {name} is in use by another process"), e));
        }
        std::thread::sleep(LOCK_RETRY_DELAY);
    }
}

fn io(context: String, source: std::io::Error) -> StoreError {
    StoreError::Io { context, source }
}
