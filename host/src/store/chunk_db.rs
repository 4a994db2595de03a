//! The chunk index in the database: the same entries, totals and
//! per-segment accounts as the in-memory [`Index`](super::index::Index)
//! (the tests below run both on random changes and compare every answer),
//! stored as redb tables ([`super::db`]) so an open reads them instead of
//! rebuilding them from every segment and manifest.
//!
//! Pins are the one part kept in memory only: they belong to uploads in
//! progress, which a crash ends, so they must not outlive the process.
//! The tables therefore hold the index as if nothing were pinned (a chunk
//! no manifest references counts as *unreferenced*), and [`ChunkDb`]
//! keeps in memory what the pins change of that: which chunks are pinned,
//! and the totals of the unreferenced chunks among them. Garbage is
//! unreferenced and not pinned.
//!
//! Tables:
//! - `chunks`: digest -> (segment, offset, chunk length, stored length,
//!   references); segment 0 (no segment has id 0) for a lost placeholder,
//!   a chunk a manifest references but no segment holds. The stored length
//!   is its record's payload: the chunk length, or less when compressed.
//! - `segment_chunks`: (segment, offset) -> (digest, chunk length, stored
//!   length), the records each segment holds in file order (GC's
//!   [`ChunkDb::chunks_in`]).
//! - `accounts`: segment -> (indexed record bytes, unreferenced record
//!   bytes), and `totals`: the running totals. Both are kept in memory
//!   while the store is open and written by [`ChunkDb::flush`], before each
//!   commit of the transaction.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::db::{self, DbError};
use super::format::CHUNK_HEADER_BYTES;
use super::index::{ChunkEntry, Location};
use super::types::Hash;

const CHUNKS: TableDefinition<&[u8; 32], ChunkRow> = TableDefinition::new("chunks");
const SEGMENT_CHUNKS: TableDefinition<(u64, u64), (&[u8; 32], u32, u32)> =
    TableDefinition::new("segment_chunks");
const ACCOUNTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("accounts");
const TOTALS: TableDefinition<&str, u64> = TableDefinition::new("totals");

type ChunkRow = (u64, u64, u32, u32, u64);
type RowsTable<'t> = Table<'t, (u64, u64), (&'static [u8; 32], u32, u32)>;

/// The chunk tables of one write transaction, each opened on its first
/// use and kept open until this is dropped (drop it before the commit):
/// a put touches the same two tables a dozen times, and opening a table
/// is a lookup in the database's table of tables each time.
pub struct Tables<'t> {
    txn: &'t WriteTransaction,
    chunks: Option<Table<'t, &'static [u8; 32], ChunkRow>>,
    rows: Option<RowsTable<'t>>,
}

impl<'t> Tables<'t> {
    pub fn new(txn: &'t WriteTransaction) -> Tables<'t> {
        Tables {
            txn,
            chunks: None,
            rows: None,
        }
    }

    fn chunks(&mut self) -> Result<&mut Table<'t, &'static [u8; 32], ChunkRow>, DbError> {
        db::opened(self.txn, &mut self.chunks, CHUNKS)
    }

    fn rows(&mut self) -> Result<&mut RowsTable<'t>, DbError> {
        db::opened(self.txn, &mut self.rows, SEGMENT_CHUNKS)
    }
}

/// The bytes a chunk's record of `len` payload bytes takes in a segment.
fn record_bytes(len: u32) -> u64 {
    CHUNK_HEADER_BYTES + u64::from(len)
}

/// Running totals; the persisted ones count every unreferenced stored
/// chunk, the in-memory pin correction those of them that are pinned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    referenced_chunks: u64,
    referenced_bytes: u64,
    referenced_stored_bytes: u64,
    unreferenced_chunks: u64,
    unreferenced_payload_bytes: u64,
    indexed_record_bytes: u64,
    unreferenced_record_bytes: u64,
}

const TOTAL_NAMES: [&str; 7] = [
    "referenced_chunks",
    "referenced_bytes",
    "referenced_stored_bytes",
    "unreferenced_chunks",
    "unreferenced_payload_bytes",
    "indexed_record_bytes",
    "unreferenced_record_bytes",
];

impl Totals {
    fn fields(&mut self) -> [&mut u64; 7] {
        [
            &mut self.referenced_chunks,
            &mut self.referenced_bytes,
            &mut self.referenced_stored_bytes,
            &mut self.unreferenced_chunks,
            &mut self.unreferenced_payload_bytes,
            &mut self.indexed_record_bytes,
            &mut self.unreferenced_record_bytes,
        ]
    }
}

/// One segment's account: (indexed record bytes, unreferenced ones).
type Account = (u64, u64);

/// What the index holds in one segment, for GC (as
/// [`SegmentAccount`](super::index::SegmentAccount)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentBytes {
    pub indexed_bytes: u64,
    pub garbage_bytes: u64,
}

impl SegmentBytes {
    /// Bytes of records something references or pins.
    pub fn live_bytes(&self) -> u64 {
        self.indexed_bytes - self.garbage_bytes
    }
}

/// The chunk index over the tables, with its totals and accounts in
/// memory and the pins of the uploads in progress.
#[derive(Default)]
pub struct ChunkDb {
    totals: Totals,
    accounts: HashMap<u64, Account>,
    /// Pins per chunk (absent: none).
    pins: HashMap<Hash, u64>,
    /// Of the unreferenced stored chunks, the pinned ones: chunks, stored
    /// payload bytes, record bytes, and record bytes per segment.
    pinned_unreferenced: (u64, u64, u64),
    pinned_unreferenced_in: HashMap<u64, u64>,
}

/// What one entry adds to the persisted totals and its segment's account.
fn contribution(entry: &ChunkEntry) -> Option<(u64, Totals)> {
    let location = entry.location?;
    let record = record_bytes(entry.stored);
    let mut totals = Totals {
        indexed_record_bytes: record,
        ..Totals::default()
    };
    if entry.refs > 0 {
        totals.referenced_chunks = 1;
        totals.referenced_bytes = u64::from(entry.len);
        totals.referenced_stored_bytes = u64::from(entry.stored);
    } else {
        totals.unreferenced_chunks = 1;
        totals.unreferenced_payload_bytes = u64::from(entry.stored);
        totals.unreferenced_record_bytes = record;
    }
    Some((location.segment, totals))
}

fn stored(entry: &ChunkEntry) -> ChunkRow {
    let (segment, offset) = entry
        .location
        .map_or((0, 0), |location| (location.segment, location.offset));
    (segment, offset, entry.len, entry.stored, entry.refs)
}

impl ChunkDb {
    /// The index the tables hold, nothing pinned (an open, or a new store).
    pub fn open(txn: &WriteTransaction) -> Result<ChunkDb, DbError> {
        let mut db = ChunkDb::default();
        let totals = txn.open_table(TOTALS)?;
        for (name, field) in TOTAL_NAMES.iter().zip(db.totals.fields()) {
            *field = totals.get(*name)?.map_or(0, |value| value.value());
        }
        for entry in txn.open_table(ACCOUNTS)?.range::<u64>(..)? {
            let (segment, account) = entry?;
            db.accounts.insert(segment.value(), account.value());
        }
        Ok(db)
    }

    /// Writes the totals and accounts into the transaction: before each
    /// commit, so the tables hold them as of that commit.
    pub fn flush(&self, t: &mut Tables<'_>) -> Result<(), DbError> {
        let txn = t.txn;
        let mut totals = txn.open_table(TOTALS)?;
        let mut copy = self.totals;
        for (name, field) in TOTAL_NAMES.iter().zip(copy.fields()) {
            totals.insert(*name, *field)?;
        }
        let mut accounts = txn.open_table(ACCOUNTS)?;
        accounts.retain(|segment, _| self.accounts.contains_key(&segment))?;
        for (&segment, &account) in &self.accounts {
            accounts.insert(segment, account)?;
        }
        Ok(())
    }

    pub fn get(&self, t: &mut Tables<'_>, digest: &Hash) -> Result<Option<ChunkEntry>, DbError> {
        let table = t.chunks()?;
        let found = table.get(digest.as_bytes())?.map(|value| value.value());
        Ok(
            found.map(|(segment, offset, len, stored, refs)| ChunkEntry {
                location: (segment != 0).then_some(Location { segment, offset }),
                len,
                stored,
                refs,
                pins: self.pins.get(digest).copied().unwrap_or(0),
            }),
        )
    }

    /// Takes `entry` out of (`add` false) or puts it into the totals,
    /// accounts and pin correction; with `table_rows`, the segment's list
    /// of records too.
    fn account(
        &mut self,
        t: &mut Tables<'_>,
        digest: &Hash,
        entry: &ChunkEntry,
        add: bool,
        table_rows: bool,
    ) -> Result<(), DbError> {
        let Some(segment) = self.count(entry, add) else {
            return Ok(());
        };
        if table_rows {
            let offset = entry.location.expect("a stored chunk").offset;
            let rows = t.rows()?;
            if add {
                let row = (digest.as_bytes(), entry.len, entry.stored);
                let previous = rows.insert((segment, offset), row)?;
                assert!(previous.is_none(), "one indexed record per offset");
            } else {
                let removed = rows.remove((segment, offset))?;
                assert!(
                    removed.is_some_and(|row| row.value().0 == digest.as_bytes()),
                    "the account lists the record"
                );
            }
        }
        Ok(())
    }

    /// The in-memory part of [`ChunkDb::account`]: the totals, accounts
    /// and pin correction. The entry's segment, if it is stored.
    fn count(&mut self, entry: &ChunkEntry, add: bool) -> Option<u64> {
        let (segment, mut delta) = contribution(entry)?;
        let apply = |value: &mut u64, by: u64| {
            *value = if add { *value + by } else { *value - by };
        };
        for (total, by) in self.totals.fields().into_iter().zip(delta.fields()) {
            apply(total, *by);
        }
        let account = self.accounts.entry(segment).or_default();
        apply(&mut account.0, delta.indexed_record_bytes);
        apply(&mut account.1, delta.unreferenced_record_bytes);
        if account.0 == 0 {
            assert_eq!(account.1, 0, "an empty account has no bytes");
            self.accounts.remove(&segment);
        }
        if entry.refs == 0 && entry.pins > 0 {
            let record = record_bytes(entry.stored);
            apply(&mut self.pinned_unreferenced.0, 1);
            apply(&mut self.pinned_unreferenced.1, u64::from(entry.stored));
            apply(&mut self.pinned_unreferenced.2, record);
            let in_segment = self.pinned_unreferenced_in.entry(segment).or_default();
            apply(in_segment, record);
            if *in_segment == 0 {
                self.pinned_unreferenced_in.remove(&segment);
            }
        }
        Some(segment)
    }

    /// Writes `entry` for `digest` (or removes it: `None`), pins included.
    fn store(
        &mut self,
        t: &mut Tables<'_>,
        digest: &Hash,
        entry: Option<&ChunkEntry>,
    ) -> Result<(), DbError> {
        let table = t.chunks()?;
        match entry {
            Some(entry) => {
                table.insert(digest.as_bytes(), stored(entry))?;
                self.set_pins(digest, entry.pins);
            }
            None => {
                table.remove(digest.as_bytes())?;
                self.pins.remove(digest);
            }
        }
        Ok(())
    }

    fn set_pins(&mut self, digest: &Hash, pins: u64) {
        match pins {
            0 => self.pins.remove(digest),
            pins => self.pins.insert(*digest, pins),
        };
    }

    /// As `Index::modify`: applies `change` to the entry of `digest`,
    /// keeping totals and accounts right; a lost placeholder that becomes
    /// garbage is removed.
    fn modify<R>(
        &mut self,
        t: &mut Tables<'_>,
        digest: &Hash,
        change: impl FnOnce(&mut ChunkEntry) -> R,
    ) -> Result<Option<R>, DbError> {
        let Some(before) = self.get(t, digest)? else {
            return Ok(None);
        };
        let mut after = before;
        let result = change(&mut after);
        let moved = before.location != after.location
            || before.len != after.len
            || before.stored != after.stored;
        self.account(
            t,
            digest,
            &before,
            false,
            moved && before.location.is_some(),
        )?;
        self.account(t, digest, &after, true, moved && after.location.is_some())?;
        if after.is_garbage() && after.location.is_none() {
            self.store(t, digest, None)?;
        } else if stored(&before) != stored(&after) {
            self.store(t, digest, Some(&after))?;
        } else if before.pins != after.pins {
            self.set_pins(digest, after.pins);
        }
        Ok(Some(result))
    }

    fn insert(
        &mut self,
        t: &mut Tables<'_>,
        digest: Hash,
        entry: ChunkEntry,
    ) -> Result<(), DbError> {
        self.store(t, &digest, Some(&entry))?;
        self.account(t, &digest, &entry, true, entry.location.is_some())
    }

    /// As [`Index::insert_found`](super::index::Index::insert_found).
    pub fn insert_found(
        &mut self,
        t: &mut Tables<'_>,
        digest: Hash,
        location: Location,
        len: u32,
        stored: u32,
    ) -> Result<bool, DbError> {
        if self.get(t, &digest)?.is_some() {
            return Ok(false);
        }
        let entry = ChunkEntry {
            location: Some(location),
            len,
            stored,
            refs: 0,
            pins: 0,
        };
        self.insert(t, digest, entry)?;
        Ok(true)
    }

    /// As [`Index::insert_put`](super::index::Index::insert_put).
    pub fn insert_put(
        &mut self,
        t: &mut Tables<'_>,
        digest: Hash,
        location: Location,
        len: u32,
        stored: u32,
    ) -> Result<(), DbError> {
        let healed = self.modify(t, &digest, |entry| {
            assert!(entry.location.is_none(), "only a lost chunk is put again");
            entry.location = Some(location);
            entry.len = len;
            entry.stored = stored;
            entry.pins += 1;
        })?;
        if healed.is_none() {
            let entry = ChunkEntry {
                location: Some(location),
                len,
                stored,
                refs: 0,
                pins: 1,
            };
            self.insert(t, digest, entry)?;
        }
        Ok(())
    }

    /// As [`Index::add_ref`](super::index::Index::add_ref).
    pub fn add_ref(
        &mut self,
        t: &mut Tables<'_>,
        digest: &Hash,
        len: u32,
    ) -> Result<bool, DbError> {
        let stored = self.modify(t, digest, |entry| {
            entry.refs += 1;
            entry.location.is_some()
        })?;
        match stored {
            Some(stored) => Ok(stored),
            None => {
                let entry = ChunkEntry {
                    location: None,
                    len,
                    stored: 0,
                    refs: 1,
                    pins: 0,
                };
                self.insert(t, *digest, entry)?;
                Ok(false)
            }
        }
    }

    /// As [`Index::drop_ref`](super::index::Index::drop_ref).
    pub fn drop_ref(&mut self, t: &mut Tables<'_>, digest: &Hash) -> Result<(), DbError> {
        self.modify(t, digest, |entry| {
            assert!(entry.refs > 0, "refcount of {digest} never below zero");
            entry.refs -= 1;
        })?
        .expect("a referenced chunk is indexed");
        Ok(())
    }

    /// As [`Index::pin`](super::index::Index::pin).
    pub fn pin(&mut self, t: &mut Tables<'_>, digest: &Hash) -> Result<bool, DbError> {
        let pinned = self.modify(t, digest, |entry| {
            if entry.location.is_none() {
                return false;
            }
            entry.pins += 1;
            true
        })?;
        Ok(pinned.unwrap_or(false))
    }

    /// As [`Index::unpin`](super::index::Index::unpin).
    pub fn unpin(&mut self, t: &mut Tables<'_>, digest: &Hash) -> Result<(), DbError> {
        self.modify(t, digest, |entry| {
            assert!(entry.pins > 0, "pin count of {digest} never below zero");
            entry.pins -= 1;
        })?
        .expect("a pinned chunk stays indexed: GC never drops pinned chunks");
        Ok(())
    }

    /// As [`Index::relocate`](super::index::Index::relocate).
    pub fn relocate(
        &mut self,
        t: &mut Tables<'_>,
        digest: &Hash,
        from: Location,
        to: Location,
    ) -> Result<bool, DbError> {
        let moved = self.modify(t, digest, |entry| {
            let here = entry.location == Some(from);
            if here {
                entry.location = Some(to);
            }
            here
        })?;
        Ok(moved.unwrap_or(false))
    }

    /// As [`Index::remove_garbage`](super::index::Index::remove_garbage).
    pub fn remove_garbage(
        &mut self,
        t: &mut Tables<'_>,
        digest: &Hash,
        at: Location,
    ) -> Result<Option<u32>, DbError> {
        let Some(entry) = self.get(t, digest)? else {
            return Ok(None);
        };
        if !entry.is_garbage() || entry.location != Some(at) {
            return Ok(None);
        }
        self.account(t, digest, &entry, false, true)?;
        self.store(t, digest, None)?;
        Ok(Some(entry.stored))
    }

    /// Distinct stored chunks referenced by a live manifest, and their bytes.
    pub fn referenced(&self) -> (u64, u64) {
        (self.totals.referenced_chunks, self.totals.referenced_bytes)
    }

    /// As [`Index::referenced_stored_bytes`](super::index::Index::referenced_stored_bytes).
    pub fn referenced_stored_bytes(&self) -> u64 {
        self.totals.referenced_stored_bytes
    }

    /// Bytes of stored chunks pinned by uploads but not referenced.
    #[cfg(test)]
    pub fn pinned_only_bytes(&self) -> u64 {
        self.pinned_unreferenced.1
    }

    /// As [`Index::cost_bytes`](super::index::Index::cost_bytes).
    pub fn cost_bytes(&self) -> u64 {
        self.totals.referenced_stored_bytes
            + self.pinned_unreferenced.1
            + CHUNK_HEADER_BYTES * (self.totals.referenced_chunks + self.pinned_unreferenced.0)
    }

    /// As [`Index::garbage`](super::index::Index::garbage).
    pub fn garbage(&self) -> (u64, u64) {
        (
            self.totals.unreferenced_chunks - self.pinned_unreferenced.0,
            self.totals.unreferenced_payload_bytes - self.pinned_unreferenced.1,
        )
    }

    /// As [`Index::record_bytes`](super::index::Index::record_bytes).
    pub fn record_bytes(&self) -> (u64, u64) {
        let garbage = self.totals.unreferenced_record_bytes - self.pinned_unreferenced.2;
        (
            self.totals.indexed_record_bytes,
            self.totals.indexed_record_bytes - garbage,
        )
    }

    /// What the index holds in `segment` (`None`: nothing).
    pub fn segment(&self, segment: u64) -> Option<SegmentBytes> {
        let &(indexed_bytes, unreferenced) = self.accounts.get(&segment)?;
        let pinned = self
            .pinned_unreferenced_in
            .get(&segment)
            .copied()
            .unwrap_or(0);
        Some(SegmentBytes {
            indexed_bytes,
            garbage_bytes: unreferenced - pinned,
        })
    }

    /// As [`Index::chunks_in`](super::index::Index::chunks_in).
    pub fn chunks_in(
        &self,
        t: &mut Tables<'_>,
        segment: u64,
    ) -> Result<Vec<(Hash, Location, u32, u32)>, DbError> {
        let table = t.rows()?;
        let mut chunks = Vec::new();
        let end = segment
            .checked_add(1)
            .map_or((u64::MAX, u64::MAX), |next| (next, 0));
        for row in table.range((segment, 0)..end)? {
            let (key, value) = row?;
            let (segment, offset) = key.value();
            let (digest, len, stored) = value.value();
            if (segment, offset) == end {
                break; // the range is half-open, except at u64::MAX
            }
            let location = Location { segment, offset };
            chunks.push((Hash::from_bytes(*digest), location, len, stored));
        }
        Ok(chunks)
    }

    /// Recounts every total and account from the tables and the pins, and
    /// compares: `Err` says what drifted. A walk of the whole index, for
    /// tests.
    pub fn check_accounting(&self, t: &mut Tables<'_>) -> Result<(), String> {
        let fail = |error: DbError| error.to_string();
        let mut fresh = ChunkDb::default();
        let mut rows: BTreeMap<(u64, u64), (Hash, u32, u32)> = BTreeMap::new();
        let table = t.chunks().map_err(fail)?;
        for row in table.range::<&[u8; 32]>(..).map_err(|e| fail(e.into()))? {
            let (key, value) = row.map_err(|e| fail(e.into()))?;
            let digest = Hash::from_bytes(*key.value());
            let (segment, offset, len, stored, refs) = value.value();
            let entry = ChunkEntry {
                location: (segment != 0).then_some(Location { segment, offset }),
                len,
                stored,
                refs,
                pins: self.pins.get(&digest).copied().unwrap_or(0),
            };
            if entry.location.is_none() && entry.is_garbage() {
                return Err(format!("lost placeholder {digest} is garbage but kept"));
            }
            if segment != 0 {
                rows.insert((segment, offset), (digest, len, stored));
            }
            fresh
                .pins
                .extend(self.pins.get(&digest).map(|&p| (digest, p)));
            fresh.count(&entry, true);
        }
        if self
            .pins
            .keys()
            .any(|digest| !fresh.pins.contains_key(digest))
        {
            return Err("a pin of a chunk not indexed".into());
        }
        if (fresh.totals, fresh.pinned_unreferenced) != (self.totals, self.pinned_unreferenced) {
            return Err(format!(
                "totals drifted: kept {:?}, recounted {:?}",
                (self.totals, self.pinned_unreferenced),
                (fresh.totals, fresh.pinned_unreferenced)
            ));
        }
        if fresh.accounts != self.accounts
            || fresh.pinned_unreferenced_in != self.pinned_unreferenced_in
        {
            return Err("per-segment accounts drifted".into());
        }
        let listed = t.rows().map_err(fail)?;
        let mut listed_rows = BTreeMap::new();
        for row in listed.range::<(u64, u64)>(..).map_err(|e| fail(e.into()))? {
            let (key, value) = row.map_err(|e| fail(e.into()))?;
            let (digest, len, stored) = value.value();
            listed_rows.insert(key.value(), (Hash::from_bytes(*digest), len, stored));
        }
        if listed_rows != rows {
            return Err("segment record lists drifted".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::backend::sim::SimDisk;
    use crate::store::db;
    use crate::store::index::accounting_tests::stored_of;
    use crate::store::index::Index;

    fn compare(db: &ChunkDb, t: &mut Tables<'_>, index: &Index, digests: &[Hash]) {
        for digest in digests {
            assert_eq!(
                db.get(t, digest).unwrap(),
                index.get(digest).copied(),
                "{digest}"
            );
        }
        assert_eq!(
            db.referenced(),
            (index.referenced_chunks(), index.referenced_bytes())
        );
        assert_eq!(db.pinned_only_bytes(), index.pinned_only_bytes());
        assert_eq!(
            db.referenced_stored_bytes(),
            index.referenced_stored_bytes()
        );
        assert_eq!(db.cost_bytes(), index.cost_bytes());
        assert_eq!(db.garbage(), index.garbage());
        assert_eq!(db.record_bytes(), index.record_bytes());
        for segment in 0..5 {
            let theirs = index.segment(segment).map(|account| SegmentBytes {
                indexed_bytes: account.indexed_bytes,
                garbage_bytes: account.garbage_bytes,
            });
            assert_eq!(db.segment(segment), theirs, "segment {segment}");
            assert_eq!(
                db.segment(segment).map(|a| a.live_bytes()),
                index.segment(segment).map(|a| a.live_bytes())
            );
            assert_eq!(db.chunks_in(t, segment).unwrap(), index.chunks_in(segment));
        }
        assert_eq!(db.check_accounting(t), Ok(()));
    }

    /// Goal: the tables and their in-memory totals answer every question
    /// exactly as the in-memory index does, whatever sequence of changes
    /// happens, and a commit and reopen (which drops every pin, as a crash
    /// ends every upload) keeps the rest.
    /// Method: random finds, puts, refs, pins, unpins, drops, relocations
    /// and garbage removal over a few digests and segments, applied to
    /// both; compare after each; now and then commit, reopen the database,
    /// and unpin everything in the model.
    #[test]
    fn the_tables_answer_as_the_in_memory_index_does() {
        proptest!(ProptestConfig::with_cases(48), |(seed in any::<u64>(), ops in proptest::collection::vec((0u8..9, 0u8..6, 0u64..4, 1u32..50), 1..80))| {
            let mut disk = SimDisk::new(seed);
            let mut database = db::open(disk.root().as_ref(), "catalog.redb", 1 << 20).unwrap();
            let mut txn = db::begin_write(&database, false).unwrap();
            let mut chunk_db = ChunkDb::open(&txn).unwrap();
            let mut index = Index::default();
            let digests: Vec<Hash> = (0..6u8).map(|i| Hash::of(&[i])).collect();
            let mut next_offset = 1000u64;
            for (op, which, segment, len) in ops {
                let digest = digests[which as usize];
                let entry = index.get(&digest).copied();
                next_offset += 100;
                // Segment ids start at 1.
                let at = Location { segment: segment + 1, offset: next_offset };
                if op == 8 {
                        chunk_db.flush(&mut Tables::new(&txn)).unwrap();
                        txn.commit().unwrap();
                        drop(database);
                        disk = disk.crash_keep_all();
                        database = db::open(disk.root().as_ref(), "catalog.redb", 1 << 20).unwrap();
                        txn = db::begin_write(&database, false).unwrap();
                        chunk_db = ChunkDb::open(&txn).unwrap();
                        for digest in &digests {
                            while index.get(digest).is_some_and(|e| e.pins > 0) {
                                index.unpin(digest);
                            }
                        }
                                    } else {
                let mut t = Tables::new(&txn);
                match op {
                    0 => {
                        let stored = stored_of(len);
                        let ours = chunk_db.insert_found(&mut t, digest, at, len, stored).unwrap();
                        prop_assert_eq!(ours, index.insert_found(digest, at, len, stored));
                    }
                    1 if entry.is_none_or(|e| e.location.is_none()) => {
                        chunk_db.insert_put(&mut t, digest, at, len, stored_of(len)).unwrap();
                        index.insert_put(digest, at, len, stored_of(len));
                    }
                    2 => {
                        let ours = chunk_db.add_ref(&mut t, &digest, len).unwrap();
                        prop_assert_eq!(ours, index.add_ref(&digest, len));
                    }
                    3 if entry.is_some_and(|e| e.refs > 0) => {
                        chunk_db.drop_ref(&mut t, &digest).unwrap();
                        index.drop_ref(&digest);
                    }
                    4 => {
                        let ours = chunk_db.pin(&mut t, &digest).unwrap();
                        prop_assert_eq!(ours, index.pin(&digest));
                    }
                    5 if entry.is_some_and(|e| e.pins > 0) => {
                        chunk_db.unpin(&mut t, &digest).unwrap();
                        index.unpin(&digest);
                    }
                    6 => if let Some(from) = entry.and_then(|e| e.location) {
                        let ours = chunk_db.relocate(&mut t, &digest, from, at).unwrap();
                        prop_assert_eq!(ours, index.relocate(&digest, from, at));
                    },
                    7 => if let Some(from) = entry.and_then(|e| e.location) {
                        let ours = chunk_db.remove_garbage(&mut t, &digest, from).unwrap();
                        prop_assert_eq!(ours, index.remove_garbage(&digest, from));
                    },
                    _ => {}
                }}
                compare(&chunk_db, &mut Tables::new(&txn), &index, &digests);
            }
        });
    }
}
