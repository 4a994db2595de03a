//! The store's state over the database: the chunk index ([`ChunkDb`]),
//! the catalog and its query indexes ([`catalog_db`]) in redb tables, and
//! beside them, in memory, what only lives while the store is open (pins,
//! holds, artifacts deleted while held) and the name index.
//!
//! One write transaction stays open between checkpoints: every change the
//! store applies (a replayed or a live record, a chunk put, a GC move) goes
//! into it, and every read reads it, so readers see every change applied so
//! far. `meta.log` is what a commit waits for; the transaction is committed
//! only at a checkpoint ([`MetaDb::checkpoint`]), durably, with the log
//! offset and segment lengths it covers, so an open reads the tables and
//! replays only the log past that offset (ARCHITECTURE.md, "The catalog at
//! scale").
//!
//! Holds: a deleted artifact that a [`Hold`](super::Hold) keeps readable
//! has its chunk references dropped like any other, and its chunks pinned
//! instead, in memory; so the tables never count a reference that a
//! restart (which ends every hold) would not find in `meta.log`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redb::{ReadableDatabase, TableDefinition, WriteTransaction};

use super::catalog_db;
use super::chunk_db::{self, ChunkDb, SegmentBytes};
use super::db::{self, corrupt, DbError};
use super::format::MutableFields;
use super::index::{ChunkEntry, Location};
use super::meta::{Artifact, Manifest};
use super::names::Names;
use super::types::{ArtifactId, Hash, Metadata, Order};

/// The store's own rows: the checkpoint and the name index as of it.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const CHECKPOINT: &str = "checkpoint";
const NAMES: &str = "names";

/// Cache of the database's pages, and the buffer its dirty pages wait in
/// until a checkpoint commits them (redb writes a page out early only when
/// the buffer is full).
pub const CACHE_BYTES: usize = 256 << 20;

/// The store's state in the database and in memory.
pub struct MetaDb {
    /// Declared before `db`: dropped (aborted) before the database closes.
    txn: Option<WriteTransaction>,
    db: redb::Database,
    chunks: ChunkDb,
    pub names: Names,
    /// Live holds per artifact (in memory only).
    pub holds: HashMap<ArtifactId, u32>,
    /// Artifacts deleted while held: readable through their holds, their
    /// chunks (those it pinned) pinned until the last hold goes.
    pub retained: HashMap<ArtifactId, (Artifact, Vec<Hash>)>,
    /// Pins uploads hold, per chunk (the tables count them too; this is
    /// what a rebuild places again).
    upload_pins: HashMap<Hash, u32>,
    /// On a file that outlives the process (checkpoints mean something).
    on_file: bool,
    /// The open added to the tables what older code did not keep (see
    /// [`catalog_db::track_created_order`]): worth a checkpoint.
    upgraded: bool,
    /// Chunks indexed since the last checkpoint (or open): what an open
    /// after a crash finds in the segments and indexes again.
    indexed_since_checkpoint: u64,
    /// Artifacts inserted with a chunk no segment held, while the log is
    /// replayed into new tables (`None` once `build_state` took them at
    /// the end of it): what an open checks, instead of every chunk of
    /// every artifact.
    incomplete: Option<Vec<ArtifactId>>,
}

/// What a checkpoint covers: `meta.log` up to `log_len` (whose last 4 KiB
/// hash to `fingerprint`), and each segment up to its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub log_len: u64,
    pub fingerprint: [u8; 32],
    pub segments: BTreeMap<u64, u64>,
}

/// 2: the catalog's `seq_ids` table (a file of version 1 lacks it and is
/// rebuilt); 3: chunk rows hold stored lengths beside chunk lengths
/// (compression; an older file is rebuilt).
const CHECKPOINT_VERSION: u8 = 3;

impl Checkpoint {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![CHECKPOINT_VERSION];
        out.extend_from_slice(&self.log_len.to_le_bytes());
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&(self.segments.len() as u64).to_le_bytes());
        for (&id, &len) in &self.segments {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let (&version, rest) = bytes.split_first()?;
        if version != CHECKPOINT_VERSION {
            return None;
        }
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(rest.get(at..at + 8)?.try_into().ok()?))
        };
        let log_len = u64_at(0)?;
        let fingerprint: [u8; 32] = rest.get(8..40)?.try_into().ok()?;
        let count = usize::try_from(u64_at(40)?).ok()?;
        if rest.len() != 48 + count.checked_mul(16)? {
            return None;
        }
        let mut segments = BTreeMap::new();
        for i in 0..count {
            segments.insert(u64_at(48 + 16 * i)?, u64_at(56 + 16 * i)?);
        }
        Some(Checkpoint {
            log_len,
            fingerprint,
            segments,
        })
    }
}

/// The name index as stored at a checkpoint: containers with their
/// creation time and objects (name -> id in hex).
fn encode_names(names: &Names) -> Vec<u8> {
    let containers: BTreeMap<&str, (u64, BTreeMap<&str, String>)> = names
        .containers
        .iter()
        .map(|(name, entry)| {
            let objects = entry
                .objects
                .iter()
                .map(|(object, id)| (object.as_str(), id.to_string()))
                .collect();
            (name.as_str(), (entry.created_ms, objects))
        })
        .collect();
    serde_json::to_vec(&containers).expect("maps of strings serialize")
}

fn decode_names(bytes: &[u8]) -> Result<Names, DbError> {
    let containers: BTreeMap<String, (u64, BTreeMap<String, String>)> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("names at checkpoint: {e}")))?;
    let mut names = Names::default();
    for (container, (created_ms, objects)) in containers {
        let mut entry = super::names::Container {
            created_ms,
            objects: BTreeMap::new(),
        };
        for (object, id) in objects {
            let id: ArtifactId = id
                .parse()
                .map_err(|_| corrupt(format!("names at checkpoint: bad id {id:?}")))?;
            names.bound.insert(id, (container.clone(), object.clone()));
            entry.objects.insert(object, id);
        }
        names.containers.insert(container, entry);
    }
    Ok(names)
}

fn open_txn(txn: &Option<WriteTransaction>) -> Result<&WriteTransaction, DbError> {
    txn.as_ref().ok_or_else(|| {
        DbError::Io(std::io::Error::other(
            "its last commit failed; the store must be reopened",
        ))
    })
}

impl MetaDb {
    /// The state in `db` (empty tables for a new one), with a write
    /// transaction open on it.
    pub fn new(db: redb::Database, on_file: bool) -> Result<MetaDb, DbError> {
        let txn = db::begin_write(&db, on_file)?;
        let chunks = ChunkDb::open(&txn)?;
        let upgraded = catalog_db::track_created_order(&mut catalog_db::Tables::new(&txn))?;
        Ok(MetaDb {
            txn: Some(txn),
            db,
            chunks,
            names: Names::default(),
            holds: HashMap::new(),
            retained: HashMap::new(),
            upload_pins: HashMap::new(),
            on_file,
            upgraded,
            indexed_since_checkpoint: 0,
            incomplete: Some(Vec::new()),
        })
    }

    /// Tables in memory only, rebuilt at each open (read-only opens, and
    /// stores without durability).
    pub fn in_memory() -> Result<MetaDb, DbError> {
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(redb::backends::InMemoryBackend::new())?;
        MetaDb::new(db, false)
    }

    pub fn on_file(&self) -> bool {
        self.on_file
    }

    /// Whether opening these tables added what older code did not keep.
    pub fn upgraded(&self) -> bool {
        self.upgraded
    }

    /// Chunks indexed since the last checkpoint (see
    /// `Inner::maybe_checkpoint`).
    pub fn indexed_since_checkpoint(&self) -> u64 {
        self.indexed_since_checkpoint
    }

    /// The last durable checkpoint and the name index as of it, if the
    /// tables hold one (read from the last committed state).
    pub fn read_checkpoint(&mut self) -> Result<Option<Checkpoint>, DbError> {
        let read = self.db.begin_read()?;
        let table = match read.open_table(STATE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let Some(bytes) = table.get(CHECKPOINT)? else {
            return Ok(None);
        };
        let Some(checkpoint) = Checkpoint::decode(bytes.value()) else {
            return Ok(None);
        };
        let names = match table.get(NAMES)? {
            Some(bytes) => decode_names(bytes.value())?,
            None => Names::default(),
        };
        self.names = names;
        Ok(Some(checkpoint))
    }

    /// The open write transaction: none after a commit failed (redb then
    /// refuses the file until it is opened again; see
    /// `Inner::tables_to_memory`).
    fn txn(&self) -> Result<&WriteTransaction, DbError> {
        open_txn(&self.txn)
    }

    /// Commits everything applied so far, durably, as covering
    /// `checkpoint`, and opens the next transaction.
    pub fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), DbError> {
        {
            let txn = open_txn(&self.txn)?;
            self.chunks.flush(&mut chunk_db::Tables::new(txn))?;
            let mut state = txn.open_table(STATE)?;
            state.insert(CHECKPOINT, checkpoint.encode().as_slice())?;
            state.insert(NAMES, encode_names(&self.names).as_slice())?;
        }
        open_txn(&self.txn)?;
        let txn = self.txn.take().expect("checked just above");
        txn.commit()?;
        self.indexed_since_checkpoint = 0;
        self.txn = Some(db::begin_write(&self.db, self.on_file)?);
        Ok(())
    }

    // The chunk index.

    pub fn chunk(&self, digest: &Hash) -> Result<Option<ChunkEntry>, DbError> {
        self.chunks
            .get(&mut chunk_db::Tables::new(self.txn()?), digest)
    }

    fn chunk_op<R>(
        &mut self,
        op: impl FnOnce(&mut ChunkDb, &mut chunk_db::Tables<'_>) -> Result<R, DbError>,
    ) -> Result<R, DbError> {
        let txn = open_txn(&self.txn)?;
        op(&mut self.chunks, &mut chunk_db::Tables::new(txn))
    }

    /// Indexes records an open found in the segments (a digest already
    /// indexed keeps its entry), with the tables opened once per run of
    /// them (an open indexes millions). Each: digest, location, chunk
    /// length, stored length.
    ///
    /// In digest order: the chunk table's keys are random, so records in
    /// file order touch its pages at random; sorted, a batch walks them
    /// once, in order. Where one digest is found twice, the first found
    /// (in file order) still wins: the sort is stable.
    pub fn insert_found_all(
        &mut self,
        found: &mut [(Hash, Location, u32, u32)],
    ) -> Result<(), DbError> {
        found.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let inserted = self.chunk_op(|c, t| {
            let mut inserted = 0;
            for &(digest, location, len, stored) in &*found {
                inserted += u64::from(c.insert_found(t, digest, location, len, stored)?);
            }
            Ok(inserted)
        })?;
        self.indexed_since_checkpoint += inserted;
        Ok(())
    }

    /// A chunk an upload wrote (`len` bytes in a payload of `stored`),
    /// pinned for it.
    pub fn insert_put(
        &mut self,
        digest: Hash,
        location: Location,
        len: u32,
        stored: u32,
    ) -> Result<(), DbError> {
        self.chunk_op(|c, t| c.insert_put(t, digest, location, len, stored))?;
        self.indexed_since_checkpoint += 1;
        *self.upload_pins.entry(digest).or_default() += 1;
        Ok(())
    }

    /// An upload's pin (counted in memory too, see [`MetaDb::carry_over`]).
    pub fn pin(&mut self, digest: &Hash) -> Result<bool, DbError> {
        let pinned = self.chunk_op(|c, t| c.pin(t, digest))?;
        if pinned {
            *self.upload_pins.entry(*digest).or_default() += 1;
        }
        Ok(pinned)
    }

    pub fn unpin(&mut self, digest: &Hash) -> Result<(), DbError> {
        self.chunk_op(|c, t| c.unpin(t, digest))?;
        if let Some(count) = self.upload_pins.get_mut(digest) {
            *count -= 1;
            if *count == 0 {
                self.upload_pins.remove(digest);
            }
        }
        Ok(())
    }

    /// Takes over what only memory holds from `old`, tables rebuilt from
    /// the disk without it: holds, artifacts deleted while held, and every
    /// pin (an upload's or a retained artifact's) placed again, so each
    /// later unpin finds its pin.
    pub fn carry_over(&mut self, old: &MetaDb) -> Result<(), DbError> {
        self.holds = old.holds.clone();
        self.retained = old.retained.clone();
        let retained: Vec<Hash> = self
            .retained
            .values()
            .flat_map(|(_, pinned)| pinned.iter().copied())
            .collect();
        let uploads = old.upload_pins.clone();
        let pins = retained
            .iter()
            .map(|digest| (*digest, 1))
            .chain(uploads.iter().map(|(digest, &n)| (*digest, n)));
        for (digest, n) in pins {
            for _ in 0..n {
                if !self.chunk_op(|c, t| c.pin(t, &digest))? {
                    return Err(DbError::Io(std::io::Error::other(format!(
                        "pinned chunk {digest} not found in the segments again"
                    ))));
                }
            }
        }
        self.upload_pins = uploads;
        Ok(())
    }

    pub fn relocate(
        &mut self,
        digest: &Hash,
        from: Location,
        to: Location,
    ) -> Result<bool, DbError> {
        self.chunk_op(|c, t| c.relocate(t, digest, from, to))
    }

    pub fn remove_garbage(&mut self, digest: &Hash, at: Location) -> Result<Option<u32>, DbError> {
        self.chunk_op(|c, t| c.remove_garbage(t, digest, at))
    }

    pub fn chunks_in(&self, segment: u64) -> Result<Vec<(Hash, Location, u32, u32)>, DbError> {
        self.chunks
            .chunks_in(&mut chunk_db::Tables::new(self.txn()?), segment)
    }

    pub fn segment(&self, segment: u64) -> Option<SegmentBytes> {
        self.chunks.segment(segment)
    }

    pub fn referenced(&self) -> (u64, u64) {
        self.chunks.referenced()
    }

    pub fn referenced_stored_bytes(&self) -> u64 {
        self.chunks.referenced_stored_bytes()
    }

    pub fn cost_bytes(&self) -> u64 {
        self.chunks.cost_bytes()
    }

    pub fn garbage(&self) -> (u64, u64) {
        self.chunks.garbage()
    }

    pub fn record_bytes(&self) -> (u64, u64) {
        self.chunks.record_bytes()
    }

    pub fn check_accounting(&self) -> Result<(), String> {
        self.chunks.check_accounting(&mut chunk_db::Tables::new(
            self.txn().map_err(|e| e.to_string())?,
        ))
    }

    // The catalog.

    /// A live artifact.
    pub fn live(&self, id: &ArtifactId) -> Result<Option<Artifact>, DbError> {
        catalog_db::lookup(&mut catalog_db::Tables::new(self.txn()?), id)
    }

    /// A live artifact, or one deleted while held (still readable).
    pub fn lookup(&self, id: &ArtifactId) -> Result<Option<Artifact>, DbError> {
        if let Some((artifact, _)) = self.retained.get(id) {
            return Ok(Some(artifact.clone()));
        }
        self.live(id)
    }

    #[cfg(test)]
    pub fn postings_len(&self) -> Result<u64, DbError> {
        catalog_db::postings_len(&mut catalog_db::Tables::new(self.txn()?))
    }

    pub fn exists(&self, id: &ArtifactId) -> Result<bool, DbError> {
        Ok(self.live_seq(id)?.is_some())
    }

    /// The commit position of a live artifact.
    pub fn live_seq(&self, id: &ArtifactId) -> Result<Option<u64>, DbError> {
        catalog_db::live_seq(&mut catalog_db::Tables::new(self.txn()?), id)
    }

    /// The commit position of an id ever committed.
    pub fn seq_of(&self, id: &ArtifactId) -> Result<Option<u64>, DbError> {
        catalog_db::seq_of(&mut catalog_db::Tables::new(self.txn()?), id)
    }

    /// The catalog tables, opened once for a run of reads (a query).
    pub fn catalog_tables(&self) -> Result<catalog_db::Tables<'_>, DbError> {
        Ok(catalog_db::Tables::new(self.txn()?))
    }

    /// Whether `id` was ever committed (ids are never reused).
    pub fn ever_committed(&self, id: &ArtifactId) -> Result<bool, DbError> {
        Ok(self.seq_of(id)?.is_some())
    }

    /// (live artifacts, their logical bytes).
    pub fn totals(&self) -> Result<(u64, u64), DbError> {
        catalog_db::totals(&mut catalog_db::Tables::new(self.txn()?))
    }

    /// Adds a committed artifact and its chunk references: false (and
    /// nothing changed) if its id was ever used.
    pub fn insert(&mut self, meta: Metadata, manifest: Arc<Manifest>) -> Result<bool, DbError> {
        let id = meta.id;
        let txn = open_txn(&self.txn)?;
        if !catalog_db::insert(
            &mut catalog_db::Tables::new(txn),
            meta,
            Arc::clone(&manifest),
        )? {
            return Ok(false);
        }
        let mut t = chunk_db::Tables::new(txn);
        let mut complete = true;
        for chunk in &manifest.chunks {
            complete &= self.chunks.add_ref(&mut t, &chunk.digest, chunk.len)?;
        }
        if let (false, Some(incomplete)) = (complete, &mut self.incomplete) {
            incomplete.push(id);
        }
        Ok(true)
    }

    /// The artifacts inserted since the tables were opened with a chunk
    /// no segment held when they were (an open scans the segments before
    /// it replays the log, so none comes later); from then on, none are
    /// kept.
    pub fn take_incomplete(&mut self) -> Vec<ArtifactId> {
        self.incomplete.take().unwrap_or_default()
    }

    /// Removes a live artifact (dropping every link to it) and its name;
    /// drops its chunk references, or pins its chunks if a hold keeps it.
    pub fn remove(&mut self, id: &ArtifactId) -> Result<bool, DbError> {
        self.names.forget_artifact(id);
        let txn = open_txn(&self.txn)?;
        let Some(artifact) = catalog_db::remove(&mut catalog_db::Tables::new(txn), id)? else {
            return Ok(false);
        };
        let held = self.holds.contains_key(id);
        let mut pinned = Vec::new();
        let mut t = chunk_db::Tables::new(txn);
        for chunk in &artifact.manifest.chunks {
            if held && self.chunks.pin(&mut t, &chunk.digest)? {
                pinned.push(chunk.digest);
            }
            self.chunks.drop_ref(&mut t, &chunk.digest)?;
        }
        if held {
            self.retained.insert(*id, (artifact, pinned));
        }
        Ok(true)
    }

    /// Ends the last hold of `id`: a retained artifact's pins go.
    pub fn release_retained(&mut self, id: &ArtifactId) -> Result<(), DbError> {
        if let Some((_, pinned)) = self.retained.remove(id) {
            let txn = open_txn(&self.txn)?;
            let mut t = chunk_db::Tables::new(txn);
            for digest in &pinned {
                self.chunks.unpin(&mut t, digest)?;
            }
        }
        Ok(())
    }

    pub fn update(
        &mut self,
        id: &ArtifactId,
        modified_ms: u64,
        fields: MutableFields,
    ) -> Result<Option<Metadata>, DbError> {
        catalog_db::update(
            &mut catalog_db::Tables::new(self.txn()?),
            id,
            modified_ms,
            fields,
        )
    }

    /// The latest creation time committed: the floor of the next one's.
    pub fn created_max(&self) -> Result<u64, DbError> {
        catalog_db::created_max(&mut catalog_db::Tables::new(self.txn()?))
    }

    /// Up to `limit` live artifacts' seqs in `order` past `after`.
    pub fn live_seqs(
        &self,
        after: Option<u64>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<u64>, DbError> {
        catalog_db::live_seqs(
            &mut catalog_db::Tables::new(self.txn()?),
            after,
            order,
            limit,
        )
    }

    /// A page of the catalog as a compacted `meta.log` holds it (see
    /// [`gc::Snapshot`](super::gc::Snapshot)): the containers with the
    /// first page (`after` = `None`), then up to
    /// [`SNAPSHOT_PAGE`](super::gc::SNAPSHOT_PAGE) live artifacts past
    /// `after`, each with its binding.
    pub fn snapshot_page(
        &self,
        after: Option<u64>,
    ) -> Result<super::gc::SnapshotPage, crate::error::StoreError> {
        let containers = match after {
            None => super::names::snapshot_records(&self.names),
            Some(_) => Vec::new(),
        };
        let live = self
            .live_page(after, super::gc::SNAPSHOT_PAGE)?
            .into_iter()
            .map(|artifact| {
                let bound = self.names.bound.get(&artifact.meta.id).cloned();
                (artifact, bound)
            })
            .collect();
        Ok((containers, live))
    }

    /// Up to `limit` live artifacts in commit order past `after`.
    pub fn live_page(&self, after: Option<u64>, limit: usize) -> Result<Vec<Artifact>, DbError> {
        let mut t = catalog_db::Tables::new(self.txn()?);
        let seqs = catalog_db::live_seqs(&mut t, after, Order::OldestFirst, limit)?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            out.extend(catalog_db::at_seq(&mut t, seq)?);
        }
        Ok(out)
    }
}
