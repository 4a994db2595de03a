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

/// Bytes [`rewrite`] reads and writes at a time: its memory bound.
const REWRITE_BLOCK_BYTES: u64 = 1 << 20;

/// Writes bytes `start..end` of `file` again, as they read now, so that a
/// following sync covers them.
///
/// Why: a sync that failed may have dropped its dirty pages while the page
/// cache still returns their contents ("fsyncgate"); a later sync then
/// succeeds without writing them, even from another process. So bytes an
/// open finds past the part known synced are not made durable by syncing
/// them: they are written again first, then synced. In place, so it needs
/// no free space. Callers skip it where the backend's reads are durable
/// ([`Backend::reads_are_durable`]: a bucket).
pub fn rewrite(file: &dyn BackendFile, start: u64, end: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; REWRITE_BLOCK_BYTES.min(end.saturating_sub(start)) as usize];
    let mut at = start;
    while at < end {
        let n = REWRITE_BLOCK_BYTES.min(end - at) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        file.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

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
