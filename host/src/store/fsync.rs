//! Every fsync the store makes goes through [`Fsyncs`], which counts them.
//!
//! The count is how tests and benchmarks check the durability modes (a put
//! under `Durability::None` makes none; under `Sync` a small constant
//! number whatever the chunk count; under `Batch` concurrent commits share
//! them). Never decides *whether* to sync: callers do, from the store's
//! [`Durability`](super::Durability).

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A shared counter of fsync and fdatasync calls, cheap to clone.
#[derive(Clone, Default)]
pub struct Fsyncs(Arc<AtomicU64>);

impl Fsyncs {
    /// `fdatasync`: the file's bytes and the metadata needed to read them
    /// back (its length), not its directory entry.
    pub fn data(&self, file: &File) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        file.sync_data()
    }

    /// `fsync`: the file's bytes and all its metadata. Used for new files
    /// and for directories (which makes their entries durable).
    pub fn all(&self, file: &File) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        file.sync_all()
    }

    /// Calls made so far, failed ones included.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
