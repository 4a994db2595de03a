//! The production backend: a `cap_std::fs::Dir` and the files under it.
//!
//! Reaches only paths under the directory it was given (cap-std's
//! guarantee); the one way in from an ambient path is
//! [`CapDir::create_ambient`], which takes cap-std's `AmbientAuthority`
//! token so it can be found with grep. Directory syncs open `.` through
//! the same capability: cap-std's `Dir` handles are `O_PATH`, which
//! cannot be fsynced.

use std::any::Any;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptions};

use super::{check_name, Backend, BackendFile, Entry, EntryKind, LockGuard, OpenMode};

/// A directory of the real file system, reached through a capability.
pub struct CapDir {
    dir: Dir,
}

impl CapDir {
    /// The backend of `dir`.
    pub fn new(dir: Dir) -> CapDir {
        CapDir { dir }
    }

    /// Opens the directory at the ambient `path`, creating it and any
    /// missing ancestors first, each new entry made durable (its parent
    /// fsynced), so a power cut never leaves a store whose directory is
    /// gone although everything beneath it was synced.
    pub fn create_ambient(path: &Path, authority: cap_std::AmbientAuthority) -> io::Result<CapDir> {
        create_ambient_dir(path, authority).map(CapDir::new)
    }
}

/// The directory at the ambient `path` as a capability, created first if
/// missing (see [`CapDir::create_ambient`]): each new directory entry, and
/// the entry of `path` itself, is fsynced in its parent.
pub fn create_ambient_dir(path: &Path, authority: cap_std::AmbientAuthority) -> io::Result<Dir> {
    {
        let mut missing = Vec::new();
        let mut at = Some(path);
        while let Some(p) = at {
            if p.as_os_str().is_empty() || p.exists() {
                break;
            }
            missing.push(p);
            at = p.parent();
        }
        for p in missing.iter().rev() {
            match std::fs::create_dir(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            sync_parent(p)?;
        }
        // Also when it existed: a crash between an earlier create and its
        // sync leaves an entry that may not survive a power cut.
        if missing.is_empty() {
            sync_parent(path)?;
        }
        Dir::open_ambient_dir(path, authority)
    }
}

/// fsyncs the directory holding `path`'s entry.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

impl Backend for CapDir {
    fn dir(&self, name: &str, create: bool) -> io::Result<(Arc<dyn Backend>, bool)> {
        check_name(name)?;
        let mut created = false;
        if create {
            match self.dir.create_dir(name) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let dir = self.dir.open_dir(name)?;
        Ok((Arc::new(CapDir::new(dir)), created))
    }

    fn list(&self) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for entry in self.dir.entries()? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let kind = if entry.file_type()?.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::File
            };
            entries.push(Entry { name, kind });
        }
        Ok(entries)
    }

    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn BackendFile>> {
        check_name(name)?;
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::Write => {
                options.write(true);
            }
            OpenMode::CreateNew => {
                options.write(true).create_new(true);
            }
            OpenMode::CreateOrOpen => {
                options.write(true).create(true);
            }
            OpenMode::Truncate => {
                options.write(true).create(true).truncate(true);
            }
        }
        let file = self.dir.open_with(name, &options)?.into_std();
        Ok(Arc::new(CapFile { file }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        self.dir.remove_file(name)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        self.dir.rename(from, &self.dir, to)
    }

    fn sync(&self) -> io::Result<()> {
        self.dir.open(".")?.into_std().sync_all()
    }

    fn lock(&self, name: &str) -> io::Result<LockGuard> {
        check_name(name)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true);
        let file = self.dir.open_with(name, &options)?.into_std();
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Who holds it, for the message of a process refused it. Best
        // effort: the lock is what excludes, the id only explains.
        let pid = std::process::id().to_string();
        let _ = file
            .set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0));
        // The lock lives as long as the descriptor.
        Ok(Box::new(file) as Box<dyn Any + Send + Sync>)
    }
}

/// A file of a [`CapDir`].
struct CapFile {
    file: File,
}

impl BackendFile for CapFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        // st_blocks counts 512-byte units whatever the file system's block.
        Ok(self.file.metadata()?.blocks() * 512)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return Ok(());
        };
        // SAFETY: sync_file_range on a descriptor we own; no memory is
        // involved. Only starts writeback of dirty pages in the range.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "hole out of range",
            ));
        };
        // SAFETY: fallocate on a descriptor we own; no memory is involved.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                return Err(io::Error::new(io::ErrorKind::Unsupported, e));
            }
            return Err(e);
        }
        Ok(())
    }
}
