//! The embedded database on the storage seam: redb over a [`BackendFile`].
//!
//! redb reads and writes its file only through [`redb::StorageBackend`];
//! [`SeamFile`] implements that trait over one of our backend files, so
//! the database's every byte and fsync go through the seam like the
//! segments' and `meta.log`'s do, and the simulated disk judges what a
//! power cut may leave of it. This is the base of the catalog at scale
//! (ARCHITECTURE.md, "The catalog at scale").
//!
//! What the store relies on, and `tests` below checks on the simulated
//! disk, under power cuts at every point and injected I/O faults:
//! - A commit made durable (the default durability, with quick repair on)
//!   that returned `Ok` survives any later power cut whole.
//! - A power cut leaves the state of one commit, never a mix: the last
//!   durable one, or one being made durable at the moment of the cut.
//!   Non-durable commits since the last durable one are lost whole.
//! - The open after a power cut is quick: with quick repair, redb saves its
//!   allocator state in each durable commit instead of rebuilding it by
//!   walking the file (measured: 0.5-3 ms against 149 ms for a full repair
//!   of a 285 MB file).
//! - An I/O error is an error, never a panic, and never a state that was
//!   not committed.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::backend::{Backend, BackendFile, OpenMode};

/// One backend file as redb's storage.
pub struct SeamFile {
    file: Arc<dyn BackendFile>,
}

impl SeamFile {
    pub fn new(file: Arc<dyn BackendFile>) -> SeamFile {
        SeamFile { file }
    }
}

impl fmt::Debug for SeamFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeamFile").finish_non_exhaustive()
    }
}

impl redb::StorageBackend for SeamFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        // redb grows its file with `set_len` and relies on the sync that
        // ends a commit for the new length too: `sync_data` covers the
        // length needed to read the bytes (the seam's contract).
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
}

/// A database file read in place and never written: redb's writes (its
/// open's housekeeping, a reader's replay of what the checkpoint does not
/// cover) land in memory over the file, in blocks, and are gone when it
/// closes. For a reader that holds the store's writer lock, so nothing
/// changes the file under it (ARCHITECTURE.md, "Concurrent access").
/// Memory grows with what is written, never with the file.
pub struct OverlayFile {
    file: Arc<dyn BackendFile>,
    state: std::sync::Mutex<Overlay>,
}

struct Overlay {
    /// Written blocks, by index.
    blocks: std::collections::BTreeMap<u64, Box<[u8]>>,
    /// The length redb sees.
    len: u64,
    /// Bytes of the file below this are visible where no block covers
    /// them; above it (cut by a `set_len`, perhaps grown again) zeros.
    file_visible: u64,
}

const OVERLAY_BLOCK: u64 = 4096;

impl OverlayFile {
    pub fn new(file: Arc<dyn BackendFile>) -> io::Result<OverlayFile> {
        let len = file.len()?;
        Ok(OverlayFile {
            file,
            state: std::sync::Mutex::new(Overlay {
                blocks: Default::default(),
                len,
                file_visible: len,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills `out` with what the file shows at `offset`, below `visible`.
    fn read_file(&self, visible: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let from_file = visible.saturating_sub(offset).min(out.len() as u64) as usize;
        let (file_part, zeros) = out.split_at_mut(from_file);
        if !file_part.is_empty() {
            self.file.read_exact_at(file_part, offset)?;
        }
        zeros.fill(0);
        Ok(())
    }
}

impl fmt::Debug for OverlayFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OverlayFile").finish_non_exhaustive()
    }
}

impl redb::StorageBackend for OverlayFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state();
        let end = offset + out.len() as u64;
        if end > state.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the database",
            ));
        }
        self.read_file(state.file_visible, offset, out)?;
        let first = offset / OVERLAY_BLOCK;
        let last = end.div_ceil(OVERLAY_BLOCK);
        for (&index, block) in state.blocks.range(first..last) {
            let start = index * OVERLAY_BLOCK;
            let from = offset.max(start);
            let to = end.min(start + OVERLAY_BLOCK);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&block[(from - start) as usize..(to - start) as usize]);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state();
        if len < state.len {
            state.file_visible = state.file_visible.min(len);
            let keep = len.div_ceil(OVERLAY_BLOCK);
            state.blocks.split_off(&keep);
            // What a later growth shows past `len` is zeros.
            if !len.is_multiple_of(OVERLAY_BLOCK) {
                if let Some(block) = state.blocks.get_mut(&(len / OVERLAY_BLOCK)) {
                    block[(len % OVERLAY_BLOCK) as usize..].fill(0);
                }
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state();
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let index = at / OVERLAY_BLOCK;
            let start = index * OVERLAY_BLOCK;
            if !state.blocks.contains_key(&index) {
                let mut block = vec![0u8; OVERLAY_BLOCK as usize].into_boxed_slice();
                self.read_file(state.file_visible, start, &mut block)?;
                state.blocks.insert(index, block);
            }
            let to = end.min(start + OVERLAY_BLOCK);
            let block = state.blocks.get_mut(&index).expect("inserted above");
            block[(at - start) as usize..(to - start) as usize]
                .copy_from_slice(&data[(at - offset) as usize..(to - offset) as usize]);
            at = to;
        }
        state.len = state.len.max(end);
        Ok(())
    }
}

/// Opens the database file `name` in `dir` in place, for a reader that
/// holds the store's writer lock: the file is only read (see
/// [`OverlayFile`]). `None` if there is no such file.
pub fn open_in_place(
    dir: &dyn Backend,
    name: &str,
    cache_bytes: usize,
) -> Result<Option<redb::Database>, DbError> {
    let file = match dir.open(name, OpenMode::Read) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create_with_backend(OverlayFile::new(file)?)?;
    Ok(Some(db))
}

/// Why the database could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("catalog database: {0}")]
    Io(#[from] io::Error),
    #[error("catalog database: {0}")]
    Redb(#[from] redb::Error),
}

/// Damage found in what the database holds: `Corrupted` to the caller.
pub fn corrupt(what: impl Into<String>) -> DbError {
    DbError::Io(io::Error::new(io::ErrorKind::InvalidData, what.into()))
}

impl From<DbError> for crate::error::StoreError {
    fn from(error: DbError) -> Self {
        use crate::error::StoreError;
        const CONTEXT: &str = "catalog database";
        match error {
            DbError::Io(source) if source.kind() == io::ErrorKind::InvalidData => {
                StoreError::Corrupted(format!("{CONTEXT}: {source}"))
            }
            DbError::Io(source) => StoreError::io(CONTEXT, source),
            DbError::Redb(redb::Error::Io(source)) => StoreError::io(CONTEXT, source),
            DbError::Redb(redb::Error::Corrupted(why)) => {
                StoreError::Corrupted(format!("{CONTEXT}: {why}"))
            }
            DbError::Redb(other) => StoreError::io(CONTEXT, io::Error::other(other)),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(error: $t) -> DbError {
                DbError::Redb(error.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Opens (creating it if missing) the database file `name` in `dir` for
/// reading and writing. A new file's directory entry is synced before the
/// database is initialised in it, so a durable commit never sits in a file
/// a power cut may unlink.
pub fn open(dir: &dyn Backend, name: &str, cache_bytes: usize) -> Result<redb::Database, DbError> {
    let existed = dir.list()?.iter().any(|entry| entry.name == name);
    let file = dir.open(name, OpenMode::CreateOrOpen)?;
    if !existed {
        dir.sync()?;
    }
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create_with_backend(SeamFile::new(file))?;
    Ok(db)
}

/// Begins a write transaction whose commit is durable when `durable`, and
/// otherwise only visible (lost whole by a power cut). Durable commits save
/// the allocator state (quick repair), so the open after a crash does not
/// walk the file.
pub fn begin_write(db: &redb::Database, durable: bool) -> Result<redb::WriteTransaction, DbError> {
    let mut txn = db.begin_write()?;
    if durable {
        txn.set_quick_repair(true);
    } else {
        txn.set_durability(redb::Durability::None)?;
    }
    Ok(txn)
}

/// Opens `definition` into `slot` unless it is open already.
pub(super) fn opened<'a, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'t redb::WriteTransaction,
    slot: &'a mut Option<redb::Table<'t, K, V>>,
    definition: redb::TableDefinition<K, V>,
) -> Result<&'a mut redb::Table<'t, K, V>, DbError> {
    if slot.is_none() {
        *slot = Some(txn.open_table(definition)?);
    }
    Ok(slot.as_mut().expect("opened above"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

    use super::*;
    use crate::store::backend::sim::{Fault, FaultOp, SimDisk};

    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("t");
    const CACHE: usize = 1 << 20;

    type State = BTreeMap<u64, Vec<u8>>;

    fn read_state(db: &redb::Database) -> Result<State, DbError> {
        let txn = db.begin_read()?;
        let table = match txn.open_table(TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(State::new()),
            Err(error) => return Err(error.into()),
        };
        let mut state = State::new();
        for entry in table.range::<u64>(..)? {
            let (key, value) = entry?;
            state.insert(key.value(), value.value().to_vec());
        }
        assert_eq!(table.len()?, state.len() as u64);
        Ok(state)
    }

    /// One transaction of random inserts, overwrites and removes, applied
    /// to `model` as well; `Ok` once it committed.
    fn random_commit(
        db: &redb::Database,
        rng: &mut fastrand::Rng,
        model: &mut State,
        durable: bool,
    ) -> Result<(), DbError> {
        let txn = begin_write(db, durable)?;
        let mut next = model.clone();
        {
            let mut table = txn.open_table(TABLE)?;
            for _ in 0..rng.usize(1..40) {
                let key = rng.u64(0..400);
                if rng.u8(0..4) == 0 {
                    table.remove(key)?;
                    next.remove(&key);
                } else {
                    // Values up to a few pages, so commits span many sectors.
                    let value: Vec<u8> = (0..rng.usize(0..9000)).map(|_| rng.u8(..)).collect();
                    table.insert(key, value.as_slice())?;
                    next.insert(key, value);
                }
            }
        }
        txn.commit()?;
        *model = next;
        Ok(())
    }

    /// Random commits, durable and not, with power cuts at random points
    /// and sometimes I/O faults: after each cut the database opens and holds
    /// exactly the last durable state or the one whose commit was cut.
    #[test]
    fn a_power_cut_leaves_the_last_durable_commit_whole() {
        for seed in 0..40u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut disk = SimDisk::new(seed);
            // What a power cut may leave: the last durable state, plus the
            // state a commit in flight (failed or cut) would have made.
            let mut durable = State::new();
            let mut pending: Option<State> = None;
            let mut cuts = 0;
            while cuts < 6 {
                let db = match open(disk.root().as_ref(), "catalog.redb", CACHE) {
                    Ok(db) => db,
                    Err(error) => panic!("seed {seed}: open after a cut: {error}"),
                };
                let found = read_state(&db).expect("read after open");
                if found != durable && Some(&found) != pending.as_ref() {
                    panic!(
                        "seed {seed}, cut {cuts}: found {} keys, durable state has {}",
                        found.len(),
                        durable.len()
                    );
                }
                durable = found.clone();
                pending = None;
                let mut model = found;
                if rng.u8(0..3) == 0 {
                    let op = [FaultOp::Write, FaultOp::Sync, FaultOp::Read][rng.usize(0..3)];
                    let fault = [Fault::Eio, Fault::ShortWrite, Fault::NoSpace][rng.usize(0..3)];
                    disk.fail_op(op, rng.u64(0..60), fault);
                }
                for _ in 0..rng.usize(1..25) {
                    let make_durable = rng.u8(0..3) == 0;
                    let before = model.clone();
                    match random_commit(&db, &mut rng, &mut model, make_durable) {
                        Ok(()) if make_durable => {
                            durable = model.clone();
                            pending = None;
                        }
                        Ok(()) => {}
                        Err(_) => {
                            // A failed commit may or may not have become
                            // the durable state; nothing more is written
                            // to a database that saw an I/O error.
                            let mut attempted = before;
                            std::mem::swap(&mut attempted, &mut model);
                            pending = Some(attempted);
                            break;
                        }
                    }
                }
                // Non-durable commits are visible to readers at once.
                disk.clear_faults();
                if pending.is_none() {
                    assert_eq!(read_state(&db).expect("read"), model, "seed {seed}");
                }
                disk = disk.crash();
                drop(db);
                cuts += 1;
            }
        }
    }

    /// The failed-commit branch above keeps the model at the state before
    /// the failure; this checks the simulated disk really fails commits
    /// there (so that branch runs) and that a read error is an error.
    #[test]
    fn an_io_error_in_a_commit_is_an_error_and_the_next_open_recovers() {
        let disk = SimDisk::new(7);
        let db = open(disk.root().as_ref(), "catalog.redb", CACHE).expect("open");
        let mut rng = fastrand::Rng::with_seed(7);
        let mut model = State::new();
        random_commit(&db, &mut rng, &mut model, true).expect("first commit");
        let committed = model.clone();
        disk.fail_op(FaultOp::Sync, 0, Fault::Eio);
        assert!(random_commit(&db, &mut rng, &mut model, true).is_err());
        drop(db);
        let disk = disk.crash();
        let db = open(disk.root().as_ref(), "catalog.redb", CACHE).expect("reopen");
        assert_eq!(read_state(&db).expect("read"), committed);

        // A read error surfaces as an error, not a panic or other bytes.
        drop(db);
        let disk = disk.crash_keep_all();
        disk.fail_op(FaultOp::Read, 0, Fault::Eio);
        match open(disk.root().as_ref(), "catalog.redb", CACHE) {
            Err(_) => {}
            Ok(db) => assert!(read_state(&db).is_err() || read_state(&db).unwrap() == committed),
        }
    }

    /// The real backend runs the same commits and reopen.
    #[test]
    fn the_real_backend_keeps_commits_across_a_reopen() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = crate::store::backend::cap::CapDir::create_ambient(
            temp.path(),
            cap_std::ambient_authority(),
        )
        .expect("dir");
        let mut rng = fastrand::Rng::with_seed(3);
        let mut model = State::new();
        {
            let db = open(&dir, "catalog.redb", CACHE).expect("open");
            for round in 0..21 {
                random_commit(&db, &mut rng, &mut model, round % 4 == 3).expect("commit");
            }
            // The last commit was not durable; a clean close keeps it.
        }
        let db = open(&dir, "catalog.redb", CACHE).expect("reopen");
        assert_eq!(read_state(&db).expect("read"), model);
    }

    /// A database opened in place takes commits, durable or not, and reads
    /// them back, across many pages and a shrink of the file redb may make,
    /// while the file itself is never written: every byte of it stays as it
    /// was, and the simulated disk counts no write to it.
    #[test]
    fn a_database_opened_in_place_works_in_memory_and_leaves_its_file_as_it_was() {
        for seed in 0..8u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let disk = SimDisk::new(seed);
            let mut model = State::new();
            {
                let db = open(disk.root().as_ref(), "catalog.redb", CACHE).expect("open");
                for _ in 0..rng.usize(1..20) {
                    random_commit(&db, &mut rng, &mut model, true).expect("commit");
                }
            }
            let read = |disk: &SimDisk| {
                let file = disk
                    .root()
                    .open("catalog.redb", OpenMode::Read)
                    .expect("file");
                let mut bytes = vec![0u8; file.len().expect("len") as usize];
                file.read_exact_at(&mut bytes, 0).expect("read");
                bytes
            };
            let before = read(&disk);
            let writes = |disk: &SimDisk| {
                disk.stats()
                    .write_bytes_per_file
                    .get("catalog.redb")
                    .copied()
                    .unwrap_or(0)
            };
            let written = writes(&disk);
            let db = open_in_place(disk.root().as_ref(), "catalog.redb", CACHE)
                .expect("in place")
                .expect("there");
            assert_eq!(read_state(&db).expect("read"), model, "seed {seed}");
            for _ in 0..rng.usize(5..40) {
                let durable = rng.bool();
                random_commit(&db, &mut rng, &mut model, durable).expect("commit");
                assert_eq!(read_state(&db).expect("read"), model, "seed {seed}");
            }
            drop(db);
            assert_eq!(read(&disk), before, "seed {seed}: the file changed");
            assert_eq!(writes(&disk), written, "seed {seed}: written to");
            assert!(open_in_place(disk.root().as_ref(), "other.redb", CACHE)
                .expect("missing")
                .is_none());
        }
    }

    /// The overlay reads what was written over the file, zeros past a cut,
    /// and the file below: the same bytes a plain file would hold.
    #[test]
    fn the_overlay_reads_as_a_file_would() {
        use redb::StorageBackend;
        for seed in 0..20u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let disk = SimDisk::new(seed);
            let file = disk.root().open("f", OpenMode::CreateOrOpen).expect("f");
            let mut model: Vec<u8> = (0..rng.usize(0..20_000)).map(|_| rng.u8(..)).collect();
            file.write_all_at(&model, 0).expect("write");
            let original = model.clone();
            let overlay = OverlayFile::new(Arc::clone(&file)).expect("overlay");
            for _ in 0..200 {
                match rng.u8(0..4) {
                    0 => {
                        let len = rng.u64(0..30_000);
                        overlay.set_len(len).expect("set_len");
                        model.resize(len as usize, 0);
                    }
                    1 | 2 => {
                        let at = rng.usize(0..model.len() + 100);
                        let data: Vec<u8> = (0..rng.usize(0..9000)).map(|_| rng.u8(..)).collect();
                        overlay.write(at as u64, &data).expect("write");
                        if model.len() < at + data.len() {
                            model.resize(at + data.len(), 0);
                        }
                        model[at..at + data.len()].copy_from_slice(&data);
                    }
                    _ => {}
                }
                assert_eq!(overlay.len().expect("len"), model.len() as u64);
                let at = rng.usize(0..=model.len());
                let len = rng.usize(0..=model.len() - at);
                let mut out = vec![0xAA; len];
                overlay.read(at as u64, &mut out).expect("read");
                assert_eq!(out, model[at..at + len], "seed {seed} at {at}+{len}");
            }
            let mut out = vec![0u8; model.len()];
            overlay.read(0, &mut out).expect("read");
            assert_eq!(out, model);
            let mut bytes = vec![0u8; original.len()];
            file.read_exact_at(&mut bytes, 0).expect("read");
            assert_eq!(bytes, original, "the file below is untouched");
        }
    }
}
