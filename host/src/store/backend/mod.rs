//! The storage seam: everything the store needs from the place its bytes
//! live, and nothing more. Every byte the store reads or writes, every
//! fsync, rename, directory listing and lock goes through these two traits;
//! no `File`, `Dir` or path escapes them (`grep -n 'std::fs\|cap_std' src/store`
//! finds only this module's production backend, [`cap`]).
//!
//! Backends:
//! - [`cap::CapDir`]: the production one, a `cap_std::fs::Dir` and the files
//!   under it. The default.
//! - [`sim::SimDisk`]: an in-memory disk, deterministic from a seed, that
//!   records every write, sync, rename and directory sync, can cut the power
//!   (producing an image a real disk could be left with) and injects faults.
//!   It is the judge of what the store may assume of a disk; the real
//!   backend passes the same tests.
//!
//! An object-store backend fits the same seam (ARCHITECTURE.md, "The
//! storage seam"): the store only ever appends to a file, cuts back a tail
//! it wrote, replaces a whole file by rename, and removes whole files, and
//! sealed segments and hints are never written again once synced.
//!
//! # The contract (what every backend guarantees, and all the store assumes)
//!
//! - `BackendFile::write_all_at` / `set_len` change what reads return at
//!   once, but are durable only after a successful `sync_data` (bytes and
//!   the length needed to read them) or `sync_all` (all of the file's
//!   metadata) of that file. Until then a power cut may keep each unsynced
//!   write whole, lose it, or keep any subset of its 512-byte sectors, and
//!   an unsynced length change may or may not survive. Synced bytes are
//!   never changed by a power cut.
//! - A failed `sync_*` proves nothing, and neither does a later successful
//!   one: the writes it should have made durable may be gone ("fsyncgate").
//!   The store never acknowledges anything that depended on a failed sync
//!   and writes nothing more to a store that saw one until it is reopened.
//! - A new directory entry (a created file or directory, or the target of a
//!   rename) and a removal are durable only after a successful
//!   [`Backend::sync`] of the directory holding them; before that a power
//!   cut may or may not keep them. A file's own `sync_*` never makes its
//!   directory entry durable.
//! - `rename` replaces the target atomically: after a power cut the target
//!   name holds either the old file or the new one, whole as far as each was
//!   synced, never a mix.
//! - Writes may fail with `ErrorKind::StorageFull` (no space), a short write
//!   (some prefix written, then an error), or any other I/O error; reads may
//!   fail too. None of these changes bytes that were written before.
//! - `punch_hole` frees the space of a byte range inside a file, which then
//!   reads as zeros; the file's length does not change. It may fail with
//!   `ErrorKind::Unsupported`.
//! - `lock` takes an exclusive lock held until the guard is dropped, against
//!   other holders in this process and in other processes; it fails at once
//!   with `ErrorKind::WouldBlock` if someone holds it.

pub mod cap;
pub mod object;
pub mod sim;

use std::any::Any;
use std::io;
use std::sync::Arc;

/// How [`Backend::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading only.
    Read,
    /// An existing file, for reading and appending.
    Write,
    /// A new file (`AlreadyExists` if the name is taken), for reading and
    /// writing.
    CreateNew,
    /// The file if it exists, else a new empty one, for reading and writing.
    CreateOrOpen,
    /// A new empty file replacing any file of that name, for writing: used
    /// only for temporary files that are renamed into place.
    Truncate,
}

impl OpenMode {
    /// Whether the file may be written through the handle.
    pub fn writes(self) -> bool {
        self != OpenMode::Read
    }
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
}

/// One directory entry, as [`Backend::list`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
}

/// A guard that holds a lock taken with [`Backend::lock`] until dropped.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// One directory of a backend. Names are single path components (no `/`,
/// never `.` or `..`); a backend may refuse anything else.
pub trait Backend: Send + Sync {
    /// Subdirectory `name`; with `create`, made if missing (the new entry is
    /// durable only after [`Backend::sync`] of `self`). Returns it and
    /// whether it was created now.
    fn dir(&self, name: &str, create: bool) -> io::Result<(Arc<dyn Backend>, bool)>;
    /// The entries of this directory, in no particular order.
    fn list(&self) -> io::Result<Vec<Entry>>;
    /// Opens file `name` as `mode` says.
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn BackendFile>>;
    /// Removes file `name` (`NotFound` if there is none). Handles already
    /// open keep working until dropped.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames file `from` to `to` in this directory, replacing `to`
    /// atomically if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes this directory's entries durable: every create, rename and
    /// removal in it before the call survives a power cut.
    fn sync(&self) -> io::Result<()>;
    /// Takes the exclusive lock named `name` in this directory (creating its
    /// lock file if needed), or fails with `WouldBlock` if it is held. A
    /// backend shared between processes writes the taker's process id
    /// (decimal) into the lock file, for messages about who holds it.
    fn lock(&self, name: &str) -> io::Result<LockGuard>;
    /// Whether what a file of this directory reads back is durable
    /// already: no cache between reads and storage that a failed sync could
    /// leave ahead of it (a bucket: a part is readable only once its PUT
    /// landed, and then it is durable). Then bytes an open finds past the
    /// part known synced need not be written again before they are synced
    /// (see `fsync::rewrite`). Defaults to `false`, as for a disk.
    fn reads_are_durable(&self) -> bool {
        false
    }
}

/// An open file of a backend. All offsets are absolute; nothing keeps a
/// cursor, so one handle is shared by concurrent readers.
// `len` is a file's length, not a collection's: no `is_empty` to go with it.
#[allow(clippy::len_without_is_empty)]
pub trait BackendFile: Send + Sync {
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Bytes of storage the file occupies: its length less punched holes
    /// (rounded to the backend's blocks). Defaults to the length.
    fn allocated_bytes(&self) -> io::Result<u64> {
        self.len()
    }
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. On an error some prefix may have
    /// been written.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Cuts the file to (or extends it with zeros to) `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Starts writing `len` bytes from `offset` back to storage without
    /// waiting for it or promising anything (`sync_file_range` with
    /// `SYNC_FILE_RANGE_WRITE`): a hint that makes a later
    /// [`BackendFile::sync_data`] shorter. Never a durability step: a
    /// backend may do nothing (the default), and a simulated disk must
    /// not treat it as a sync.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Makes the file's bytes and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's bytes and all its metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Frees the space of `len` bytes from `offset`, which then read as
    /// zeros; the length is unchanged. `Unsupported` where the backend
    /// cannot.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;
}

/// `InvalidInput` unless `name` is one path component: not empty, not `.`
/// or `..`, no `/` or NUL. Every backend checks the names it is given.
pub fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single path component"),
        ));
    }
    Ok(())
}

/// Whether an I/O error means the disk is full.
pub fn is_no_space(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull || error.raw_os_error() == Some(libc::ENOSPC)
}
