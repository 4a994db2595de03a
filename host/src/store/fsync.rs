//! Every fsync the store makes goes through [`Fsyncs`], which counts them.
//!
//! The count is how tests and benchmarks check the durability modes (a put
//! under `Durability::None` makes none; under `Sync` a small constant
//! number whatever the chunk count; under `Batch` concurrent commits share
//! them). Never decides *whether* to sync: callers do, from the store's
//! [`Durability`](super::Durability).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::backend::{Backend, BackendFile};

/// A shared counter of fsync and fdatasync calls, cheap to clone.
#[derive(Clone, Default)]
pub struct Fsyncs(Arc<AtomicU64>);

impl Fsyncs {
    /// `fdatasync`: the file's bytes and the metadata needed to read them
    /// back (its length), not its directory entry.
    pub fn data(&self, file: &dyn BackendFile) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        file.sync_data()
    }

    /// `fsync`: the file's bytes and all its metadata. Used for new files.
    pub fn all(&self, file: &dyn BackendFile) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        file.sync_all()
    }

    /// A directory's entries (creates, renames, removals in it).
    pub fn dir(&self, dir: &dyn Backend) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        dir.sync()
    }

    /// Calls made so far, failed ones included.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
