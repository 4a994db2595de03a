//! The catalog in the database: live artifacts, every id ever committed
//! and the query indexes, as redb tables ([`super::db`]). The same
//! operations and answers as the in-memory [`Catalog`](super::meta::Catalog)
//! (the tests below check one against the other on random histories), but
//! nothing is rebuilt at open: the tables are a checkpointed
//! materialization of `meta.log` (ARCHITECTURE.md, "The catalog at scale").
//!
//! Everything here works on a [`WriteTransaction`]: the store reads and
//! changes its state under its state lock, through the one write
//! transaction it keeps open between checkpoints, so a reader sees every
//! change applied so far, committed or not.
//!
//! Tables:
//! - `artifacts`: seq -> the artifact (its `modified_ms`, then its snapshot
//!   commit record in `meta.log`'s encoding, crc included).
//! - `ids`: id -> seq, for every id ever committed (deleted ones too: ids
//!   are never reused, and paging continues after a deleted id).
//! - `postings`: one key per (index key, seq) of a live artifact, no value.
//!   The index key is a kind byte and the value's bytes, each string
//!   escaped (`0x00` as `0x00 0xFF`) and ended by `0x00 0x00`, so no value
//!   of one field or kind can be taken for another and a string's keys sort
//!   by the string (filename prefixes are ranges); the seq is 8 bytes
//!   big-endian, so one key's postings are a range in commit order.
//!   Creation and modification times are keys of their own kinds.
//! - `counters`: the next seq, live artifacts, logical bytes, and whether
//!   creation times follow commit order (the latest creation time, and how
//!   many commits came in earlier than it): then a creation-time range is
//!   a range of seqs.

use std::ops::Bound;
use std::sync::Arc;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::db::{self, corrupt, DbError};
use super::format::{self, MutableFields};
#[cfg(test)]
use super::meta::Catalog;
use super::meta::{
    committed, normalize_fields, set_fields, snapshot_records, Artifact, Committed, Manifest,
};
use super::meta_index::Key;
use super::types::{ArtifactId, Metadata, Order};

const ARTIFACTS: TableDefinition<u64, &[u8]> = TableDefinition::new("artifacts");
const IDS: TableDefinition<u128, u64> = TableDefinition::new("ids");
/// seq -> id of each live artifact: a query's page reads only these.
const SEQ_IDS: TableDefinition<u64, u128> = TableDefinition::new("seq_ids");
const POSTINGS: TableDefinition<&[u8], ()> = TableDefinition::new("postings");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// The catalog tables of one write transaction, each opened on its first
/// use and kept open until this is dropped (drop it before the commit).
pub struct Tables<'t> {
    txn: &'t WriteTransaction,
    artifacts: Option<Table<'t, u64, &'static [u8]>>,
    ids: Option<Table<'t, u128, u64>>,
    seq_ids: Option<Table<'t, u64, u128>>,
    postings: Option<Table<'t, &'static [u8], ()>>,
    counters: Option<Table<'t, &'static str, u64>>,
}

impl<'t> Tables<'t> {
    pub fn new(txn: &'t WriteTransaction) -> Tables<'t> {
        Tables {
            txn,
            artifacts: None,
            ids: None,
            seq_ids: None,
            postings: None,
            counters: None,
        }
    }

    fn artifacts(&mut self) -> Result<&mut Table<'t, u64, &'static [u8]>, DbError> {
        db::opened(self.txn, &mut self.artifacts, ARTIFACTS)
    }

    fn ids(&mut self) -> Result<&mut Table<'t, u128, u64>, DbError> {
        db::opened(self.txn, &mut self.ids, IDS)
    }

    fn seq_ids(&mut self) -> Result<&mut Table<'t, u64, u128>, DbError> {
        db::opened(self.txn, &mut self.seq_ids, SEQ_IDS)
    }

    fn postings(&mut self) -> Result<&mut Table<'t, &'static [u8], ()>, DbError> {
        db::opened(self.txn, &mut self.postings, POSTINGS)
    }

    fn counters(&mut self) -> Result<&mut Table<'t, &'static str, u64>, DbError> {
        db::opened(self.txn, &mut self.counters, COUNTERS)
    }
}

const NEXT_SEQ: &str = "next_seq";
const LIVE: &str = "live";
const LOGICAL_BYTES: &str = "logical_bytes";
/// The latest creation time committed (absent in tables from before it
/// was kept: [`track_created_order`] computes it).
const CREATED_MAX: &str = "created_max";
/// Commits whose creation time was earlier than an earlier commit's.
const CREATED_DISORDER: &str = "created_disorder";

const KIND_TAG: u8 = 1;
const KIND_LINKS_TO: u8 = 2;
const KIND_EXTERNAL: u8 = 3;
const KIND_CONTENT_TYPE: u8 = 4;
const KIND_CREATOR: u8 = 5;
const KIND_FILENAME: u8 = 6;
const KIND_CUSTOM_NAME: u8 = 7;
const KIND_CUSTOM: u8 = 8;
const KIND_CREATED: u8 = 9;
const KIND_MODIFIED: u8 = 10;

fn put_str(out: &mut Vec<u8>, value: &str) {
    for &byte in value.as_bytes() {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// The bytes every posting of `key` starts with.
fn key_prefix(key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    match key {
        Key::Tag(value) => (out.push(KIND_TAG), put_str(&mut out, value)).1,
        Key::LinksTo(id) => {
            out.push(KIND_LINKS_TO);
            out.extend_from_slice(id.as_bytes());
        }
        Key::External(value) => (out.push(KIND_EXTERNAL), put_str(&mut out, value)).1,
        Key::ContentType(value) => (out.push(KIND_CONTENT_TYPE), put_str(&mut out, value)).1,
        Key::Creator(value) => (out.push(KIND_CREATOR), put_str(&mut out, value)).1,
        Key::Filename(value) => (out.push(KIND_FILENAME), put_str(&mut out, value)).1,
        Key::CustomName(name) => (out.push(KIND_CUSTOM_NAME), put_str(&mut out, name)).1,
        Key::Custom(name, value) => {
            out.push(KIND_CUSTOM);
            put_str(&mut out, name);
            put_str(&mut out, value);
        }
    }
    out
}

fn time_prefix(modified: bool, ms: u64) -> Vec<u8> {
    let mut out = vec![if modified {
        KIND_MODIFIED
    } else {
        KIND_CREATED
    }];
    out.extend_from_slice(&ms.to_be_bytes());
    out
}

fn with_seq(mut prefix: Vec<u8>, seq: u64) -> Vec<u8> {
    prefix.extend_from_slice(&seq.to_be_bytes());
    prefix
}

/// The time of a creation or modification posting.
fn time_of_posting(key: &[u8]) -> u64 {
    let time: [u8; 8] = key[1..9].try_into().expect("8 bytes");
    u64::from_be_bytes(time)
}

fn seq_of_posting(key: &[u8]) -> u64 {
    let tail: [u8; 8] = key[key.len() - 8..].try_into().expect("8 bytes");
    u64::from_be_bytes(tail)
}

/// Every posting key of a live artifact at `seq` carrying `meta`.
fn postings_of(seq: u64, meta: &Metadata) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = super::meta_index::keys(meta)
        .map(|key| with_seq(key_prefix(&key), seq))
        .collect();
    keys.push(with_seq(time_prefix(false, meta.created_ms), seq));
    keys.push(with_seq(time_prefix(true, meta.modified_ms), seq));
    keys
}

fn encode_artifact(artifact: &Artifact) -> Vec<u8> {
    let commit = snapshot_records(artifact, None)
        .next()
        .expect("a snapshot starts with its commit");
    let mut out = artifact.meta.modified_ms.to_le_bytes().to_vec();
    out.extend_from_slice(&format::encode_meta_record(&commit));
    out
}

fn decode_artifact(seq: u64, bytes: &[u8]) -> Result<Artifact, DbError> {
    let bad = |why: String| corrupt(format!("catalog database: artifact #{seq}: {why}"));
    let (modified, record) = bytes
        .split_at_checked(8)
        .ok_or_else(|| bad("short value".into()))?;
    let header = format::decode_meta_header_record(record).map_err(bad)?;
    let payload = record
        .get(format::META_RECORD_HEADER_BYTES as usize..)
        .filter(|payload| payload.len() == header.payload_len as usize)
        .ok_or_else(|| bad("record length does not match".into()))?;
    format::check_meta_crc(&header, payload).map_err(bad)?;
    let record = format::decode_meta_payload(header.kind, payload).map_err(bad)?;
    let mut committed = committed(record).ok_or_else(|| bad("not a commit record".into()))?;
    committed.meta.modified_ms = u64::from_le_bytes(modified.try_into().expect("8 bytes"));
    let Committed { meta, manifest, .. } = committed;
    Ok(Artifact {
        seq,
        meta,
        manifest: Arc::new(manifest),
    })
}

fn counter(t: &mut Tables<'_>, name: &str) -> Result<u64, DbError> {
    let table = t.counters()?;
    let value = table.get(name)?.map(|value| value.value()).unwrap_or(0);
    Ok(value)
}

fn add_counter(t: &mut Tables<'_>, name: &str, delta: i128) -> Result<(), DbError> {
    let table = t.counters()?;
    let now = table.get(name)?.map(|value| value.value()).unwrap_or(0);
    let next = u64::try_from(i128::from(now) + delta)
        .map_err(|_| corrupt(format!("catalog database: counter {name} out of range")))?;
    table.insert(name, next)?;
    Ok(())
}

fn set_counter(t: &mut Tables<'_>, name: &str, value: u64) -> Result<(), DbError> {
    t.counters()?.insert(name, value)?;
    Ok(())
}

/// Makes sure the counters say whether creation times follow commit
/// order: tables written before they did are walked once (their creation
/// postings in key order: the seqs rise throughout exactly when they do).
/// Called at open, before anything is inserted; true if it changed the
/// tables (to be checkpointed, so the walk is not made again).
pub fn track_created_order(t: &mut Tables<'_>) -> Result<bool, DbError> {
    if t.counters()?.get(CREATED_MAX)?.is_some() {
        return Ok(false);
    }
    let low = time_prefix(false, 0);
    let high = time_prefix(true, 0);
    let mut last: Option<u64> = None;
    let mut disorder = 0;
    let mut max = 0;
    for entry in t
        .postings()?
        .range::<&[u8]>(low.as_slice()..high.as_slice())?
    {
        let (key, _) = entry?;
        let key = key.value();
        let seq = seq_of_posting(key);
        if last.is_some_and(|last| seq < last) {
            disorder += 1;
        }
        last = Some(seq);
        max = time_of_posting(key);
    }
    set_counter(t, CREATED_MAX, max)?;
    set_counter(t, CREATED_DISORDER, disorder)?;
    Ok(true)
}

/// The latest creation time committed: a commit's is never earlier (see
/// [`created_in_commit_order`]).
pub fn created_max(t: &mut Tables<'_>) -> Result<u64, DbError> {
    counter(t, CREATED_MAX)
}

/// Whether the live artifacts' creation times never decrease in commit
/// order (conservative: a commit that broke it counts until the tables
/// are rebuilt, though it is deleted since).
pub fn created_in_commit_order(t: &mut Tables<'_>) -> Result<bool, DbError> {
    Ok(counter(t, CREATED_DISORDER)? == 0)
}

/// The first and last seq of the live artifacts created in
/// `from_ms..to_ms`, if any.
pub fn created_span(
    t: &mut Tables<'_>,
    from_ms: u64,
    to_ms: u64,
) -> Result<Option<(u64, u64)>, DbError> {
    if from_ms >= to_ms {
        return Ok(None);
    }
    let low = with_seq(time_prefix(false, from_ms), 0);
    let high = with_seq(time_prefix(false, to_ms), 0);
    let table = t.postings()?;
    let mut range = table.range::<&[u8]>(low.as_slice()..high.as_slice())?;
    let Some(first) = range.next() else {
        return Ok(None);
    };
    let first = seq_of_posting(first?.0.value());
    let last = match range.next_back() {
        Some(last) => seq_of_posting(last?.0.value()),
        None => first,
    };
    Ok(Some((first, last)))
}

/// Up to `limit` live seqs in `low..=high`, from `from` on in `order`.
pub fn live_seqs_in(
    t: &mut Tables<'_>,
    low: u64,
    high: u64,
    order: Order,
    limit: usize,
) -> Result<Vec<u64>, DbError> {
    let mut seqs = Vec::new();
    if low > high {
        return Ok(seqs);
    }
    let table = t.seq_ids()?;
    let range = table.range(low..=high)?;
    let mut push = |entry: Result<(redb::AccessGuard<u64>, redb::AccessGuard<u128>), _>| {
        entry.map(|(seq, _)| seqs.push(seq.value()))
    };
    match order {
        Order::OldestFirst => range.take(limit).try_for_each(&mut push)?,
        Order::NewestFirst => range.rev().take(limit).try_for_each(&mut push)?,
    }
    Ok(seqs)
}

/// Stores `artifact` at its seq and indexes it.
fn put_live(t: &mut Tables<'_>, artifact: &Artifact) -> Result<(), DbError> {
    t.artifacts()?
        .insert(artifact.seq, encode_artifact(artifact).as_slice())?;
    t.seq_ids()?.insert(
        artifact.seq,
        u128::from_be_bytes(*artifact.meta.id.as_bytes()),
    )?;
    let postings = t.postings()?;
    for key in postings_of(artifact.seq, &artifact.meta) {
        postings.insert(key.as_slice(), ())?;
    }
    Ok(())
}

/// Un-indexes the live `artifact` (indexed with exactly its metadata).
fn unindex(t: &mut Tables<'_>, artifact: &Artifact) -> Result<(), DbError> {
    let postings = t.postings()?;
    for key in postings_of(artifact.seq, &artifact.meta) {
        postings.remove(key.as_slice())?;
    }
    Ok(())
}

/// Adds a committed artifact, as [`Catalog::insert`]: false (and nothing
/// changed) if the id was ever used before.
pub fn insert(
    t: &mut Tables<'_>,
    meta: Metadata,
    manifest: Arc<Manifest>,
) -> Result<bool, DbError> {
    if seq_of(t, &meta.id)?.is_some() {
        return Ok(false);
    }
    let seq = counter(t, NEXT_SEQ)?;
    add_counter(t, NEXT_SEQ, 1)?;
    t.ids()?
        .insert(u128::from_be_bytes(*meta.id.as_bytes()), seq)?;
    add_counter(t, LIVE, 1)?;
    add_counter(t, LOGICAL_BYTES, i128::from(meta.size))?;
    if meta.created_ms < counter(t, CREATED_MAX)? {
        add_counter(t, CREATED_DISORDER, 1)?;
    } else {
        set_counter(t, CREATED_MAX, meta.created_ms)?;
    }
    put_live(
        t,
        &Artifact {
            seq,
            meta,
            manifest,
        },
    )?;
    Ok(true)
}

/// The commit position of an id ever committed.
pub fn seq_of(t: &mut Tables<'_>, id: &ArtifactId) -> Result<Option<u64>, DbError> {
    let table = t.ids()?;
    let seq = table.get(u128::from_be_bytes(*id.as_bytes()))?;
    Ok(seq.map(|seq| seq.value()))
}

/// The commit position of a live artifact.
pub fn live_seq(t: &mut Tables<'_>, id: &ArtifactId) -> Result<Option<u64>, DbError> {
    match seq_of(t, id)? {
        Some(seq) if is_live(t, seq)? => Ok(Some(seq)),
        _ => Ok(None),
    }
}

/// The live artifact at `seq`.
pub fn at_seq(t: &mut Tables<'_>, seq: u64) -> Result<Option<Artifact>, DbError> {
    let table = t.artifacts()?;
    let value = table.get(seq)?;
    value
        .map(|bytes| decode_artifact(seq, bytes.value()))
        .transpose()
}

/// The id of the live artifact at `seq`, from the small seq -> id table
/// (a page of query results reads nothing else).
pub fn id_at_seq(t: &mut Tables<'_>, seq: u64) -> Result<Option<ArtifactId>, DbError> {
    let id = t.seq_ids()?.get(seq)?.map(|id| id.value());
    Ok(id.map(|id| ArtifactId::from_bytes(id.to_be_bytes())))
}

/// A live artifact.
pub fn lookup(t: &mut Tables<'_>, id: &ArtifactId) -> Result<Option<Artifact>, DbError> {
    match seq_of(t, id)? {
        Some(seq) => at_seq(t, seq),
        None => Ok(None),
    }
}

/// Removes a live artifact, as [`Catalog::remove`]: every live artifact
/// linking to it loses that link (its `modified_ms` unchanged).
pub fn remove(t: &mut Tables<'_>, id: &ArtifactId) -> Result<Option<Artifact>, DbError> {
    let Some(artifact) = lookup(t, id)? else {
        return Ok(None);
    };
    unindex(t, &artifact)?;
    t.artifacts()?.remove(artifact.seq)?;
    t.seq_ids()?.remove(artifact.seq)?;
    add_counter(t, LIVE, -1)?;
    add_counter(t, LOGICAL_BYTES, -i128::from(artifact.meta.size))?;
    let key = Key::LinksTo(*id);
    let sources = postings(t, &key, None, Order::OldestFirst, usize::MAX)?;
    for seq in sources {
        let mut source = at_seq(t, seq)?
            .ok_or_else(|| corrupt(format!("catalog database: posting of #{seq}, not live")))?;
        unindex(t, &source)?;
        source.meta.links.retain(|link| link != id);
        put_live(t, &source)?;
    }
    Ok(Some(artifact))
}

/// Replaces the mutable metadata of a live artifact, as
/// [`Catalog::update`].
pub fn update(
    t: &mut Tables<'_>,
    id: &ArtifactId,
    modified_ms: u64,
    mut fields: MutableFields,
) -> Result<Option<Metadata>, DbError> {
    normalize_fields(&mut fields);
    let Some(mut artifact) = lookup(t, id)? else {
        return Ok(None);
    };
    unindex(t, &artifact)?;
    set_fields(&mut artifact.meta, modified_ms, fields);
    put_live(t, &artifact)?;
    Ok(Some(artifact.meta))
}

/// (live artifacts, their logical bytes).
pub fn totals(t: &mut Tables<'_>) -> Result<(u64, u64), DbError> {
    Ok((counter(t, LIVE)?, counter(t, LOGICAL_BYTES)?))
}

/// The bytes every posting of one key starts with, made once for the many
/// reads of a query.
#[derive(Clone, Debug)]
pub struct Prefix(Vec<u8>);

impl Prefix {
    pub fn of(key: &Key) -> Prefix {
        Prefix(key_prefix(key))
    }
}

/// Up to `limit` seqs of the live artifacts carrying `key`, past `after`
/// in `order`.
pub fn postings(
    t: &mut Tables<'_>,
    key: &Key,
    after: Option<u64>,
    order: Order,
    limit: usize,
) -> Result<Vec<u64>, DbError> {
    let from = match (after, order) {
        (None, Order::OldestFirst) => 0,
        (None, Order::NewestFirst) => u64::MAX,
        (Some(seq), Order::OldestFirst) => match seq.checked_add(1) {
            Some(from) => from,
            None => return Ok(Vec::new()),
        },
        (Some(seq), Order::NewestFirst) => match seq.checked_sub(1) {
            Some(from) => from,
            None => return Ok(Vec::new()),
        },
    };
    postings_from(t, &Prefix::of(key), from, order, limit)
}

/// Up to `limit` seqs of the live artifacts carrying a key, from `from`
/// on in `order` (at or above it oldest first, at or below it newest
/// first).
pub fn postings_from(
    t: &mut Tables<'_>,
    prefix: &Prefix,
    from: u64,
    order: Order,
    limit: usize,
) -> Result<Vec<u64>, DbError> {
    let (low, high) = match order {
        Order::OldestFirst => (from, u64::MAX),
        Order::NewestFirst => (0, from),
    };
    let low = with_seq(prefix.0.clone(), low);
    let high = with_seq(prefix.0.clone(), high);
    let table = t.postings()?;
    let range = table.range::<&[u8]>(low.as_slice()..=high.as_slice())?;
    let mut seqs = Vec::new();
    let mut push = |entry: Result<(redb::AccessGuard<&[u8]>, redb::AccessGuard<()>), _>| {
        entry.map(|(key, _)| seqs.push(seq_of_posting(key.value())))
    };
    match order {
        Order::OldestFirst => range.take(limit).try_for_each(&mut push)?,
        Order::NewestFirst => range.rev().take(limit).try_for_each(&mut push)?,
    }
    Ok(seqs)
}

/// Whether the live artifact at `seq` carries the key (one lookup).
pub fn has_posting(t: &mut Tables<'_>, prefix: &Prefix, seq: u64) -> Result<bool, DbError> {
    let key = with_seq(prefix.0.clone(), seq);
    Ok(t.postings()?.get(key.as_slice())?.is_some())
}

/// Whether the artifact at `seq` is live.
pub fn is_live(t: &mut Tables<'_>, seq: u64) -> Result<bool, DbError> {
    Ok(t.artifacts()?.get(seq)?.is_some())
}

/// How many live artifacts carry `key`, counted up to `max` (a query
/// orders its sets by size; beyond a few thousand the order hardly
/// matters, and counting further would cost a walk).
pub fn count(t: &mut Tables<'_>, prefix: &Prefix, max: usize) -> Result<usize, DbError> {
    let low = with_seq(prefix.0.clone(), 0);
    let high = with_seq(prefix.0.clone(), u64::MAX);
    let table = t.postings()?;
    let mut n = 0;
    for entry in table.range::<&[u8]>(low.as_slice()..=high.as_slice())? {
        entry?;
        n += 1;
        if n >= max {
            break;
        }
    }
    Ok(n)
}

/// Seqs of the live artifacts whose filename starts with `prefix`,
/// ascending; at most `max` of them, as
/// [`MetaIndex::filename_prefix`](super::meta_index::MetaIndex::filename_prefix).
pub fn filename_prefix(t: &mut Tables<'_>, prefix: &str, max: usize) -> Result<Vec<u64>, DbError> {
    let mut start = key_prefix(&Key::Filename(prefix.to_string()));
    start.truncate(start.len() - 2); // the terminator: longer names follow
    let table = t.postings()?;
    let mut seqs = Vec::new();
    let range = table.range::<&[u8]>((Bound::Included(start.as_slice()), Bound::Unbounded))?;
    for entry in range {
        let (key, _) = entry?;
        if !key.value().starts_with(&start) || seqs.len() == max {
            break;
        }
        seqs.push(seq_of_posting(key.value()));
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Seqs of the live artifacts created (or, with `modified`, last
/// modified) in `from_ms..to_ms`, ascending; at most `max` of them.
pub fn time_range(
    t: &mut Tables<'_>,
    modified: bool,
    from_ms: u64,
    to_ms: u64,
    max: usize,
) -> Result<Vec<u64>, DbError> {
    if from_ms >= to_ms {
        return Ok(Vec::new());
    }
    let low = with_seq(time_prefix(modified, from_ms), 0);
    let high = with_seq(time_prefix(modified, to_ms), 0);
    let table = t.postings()?;
    let mut seqs = Vec::new();
    for entry in table
        .range::<&[u8]>(low.as_slice()..high.as_slice())?
        .take(max)
    {
        seqs.push(seq_of_posting(entry?.0.value()));
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Up to `limit` live artifacts' seqs in commit order past `after`.
pub fn live_seqs(
    t: &mut Tables<'_>,
    after: Option<u64>,
    order: Order,
    limit: usize,
) -> Result<Vec<u64>, DbError> {
    let table = t.artifacts()?;
    let range = table.range(super::meta_index::range_after(after, order))?;
    let mut seqs = Vec::new();
    let mut push = |entry: Result<(redb::AccessGuard<u64>, redb::AccessGuard<&[u8]>), _>| {
        entry.map(|(seq, _)| seqs.push(seq.value()))
    };
    match order {
        Order::OldestFirst => range.take(limit).try_for_each(&mut push)?,
        Order::NewestFirst => range.rev().take(limit).try_for_each(&mut push)?,
    }
    Ok(seqs)
}

/// How many postings the tables hold (every key of every live artifact,
/// its two times included), for tests.
#[cfg(test)]
pub fn postings_len(t: &mut Tables<'_>) -> Result<u64, DbError> {
    use redb::ReadableTableMetadata;
    Ok(t.postings()?.len()?)
}

/// Copies an in-memory catalog's artifacts into empty tables, in commit
/// order, keeping their seqs (a store that had none converts to one that
/// has). Holds, names and retained artifacts are not part of it.
#[cfg(test)]
pub fn load(t: &mut Tables<'_>, catalog: &Catalog) -> Result<(), DbError> {
    let ids = t.ids()?;
    for (id, &seq) in &catalog.seq_of {
        ids.insert(u128::from_be_bytes(*id.as_bytes()), seq)?;
    }
    let mut next = 0;
    for (&seq, id) in &catalog.order {
        put_live(t, &catalog.artifacts[id])?;
        next = seq + 1;
    }
    let next = catalog
        .seq_of
        .values()
        .map(|&seq| seq + 1)
        .max()
        .unwrap_or(next);
    let counters = t.counters()?;
    counters.insert(NEXT_SEQ, next)?;
    counters.insert(LIVE, catalog.artifacts.len() as u64)?;
    counters.insert(LOGICAL_BYTES, catalog.logical_bytes)?;
    track_created_order(t).map(drop)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::backend::sim::SimDisk;
    use crate::store::db;
    use crate::store::types::{ChunkRef, Hash};

    /// Values chosen to collide in naive encodings: ':' and '/', NULs,
    /// prefixes of each other, non-ASCII.
    const VALUES: [&str; 9] = ["a", "a:b", "a\0", "a\0b", "ab", "a/b", "a:b/", "é", "a:"];

    fn pick(rng: &mut fastrand::Rng) -> String {
        VALUES[rng.usize(0..VALUES.len())].to_string()
    }

    fn random_fields(rng: &mut fastrand::Rng, live: &[ArtifactId]) -> MutableFields {
        let some = |rng: &mut fastrand::Rng| rng.bool().then(|| pick(rng));
        let mut custom = Vec::new();
        for _ in 0..rng.usize(0..3) {
            custom.push((pick(rng), pick(rng)));
        }
        MutableFields {
            filename: some(rng),
            content_type: some(rng),
            tags: (0..rng.usize(0..4)).map(|_| pick(rng)).collect(),
            links: (0..rng.usize(0..3))
                .filter(|_| !live.is_empty())
                .map(|_| *live[rng.usize(0..live.len())].as_bytes())
                .collect(),
            custom,
            external_links: (0..rng.usize(0..3)).map(|_| pick(rng)).collect(),
        }
    }

    fn every_key() -> Vec<Key> {
        let mut keys = Vec::new();
        for value in VALUES {
            let value = value.to_string();
            keys.push(Key::Tag(value.clone()));
            keys.push(Key::External(value.clone()));
            keys.push(Key::ContentType(value.clone()));
            keys.push(Key::Creator(value.clone()));
            keys.push(Key::Filename(value.clone()));
            keys.push(Key::CustomName(value.clone()));
            for other in VALUES {
                keys.push(Key::Custom(value.clone(), other.to_string()));
            }
        }
        keys
    }

    fn compare(t: &mut Tables<'_>, model: &Catalog, ids: &[ArtifactId], context: &str) {
        let (live, bytes) = totals(t).expect("totals");
        assert_eq!(live, model.artifacts.len() as u64, "{context}: live");
        assert_eq!(bytes, model.logical_bytes, "{context}: bytes");
        for id in ids {
            let ours = lookup(t, id).expect("lookup");
            let theirs = model.artifacts.get(id);
            assert_eq!(
                ours.as_ref().map(|a| (a.seq, &a.meta, &a.manifest.chunks)),
                theirs.map(|a| (a.seq, &a.meta, &a.manifest.chunks)),
                "{context}: artifact {id}"
            );
            assert_eq!(
                seq_of(t, id).expect("seq"),
                model.seq_of.get(id).copied(),
                "{context}: seq of {id}"
            );
        }
        let mut keys = every_key();
        keys.extend(ids.iter().map(|id| Key::LinksTo(*id)));
        for key in &keys {
            let want: Vec<u64> = model
                .index
                .postings(key)
                .map(|p| p.iter().collect())
                .unwrap_or_default();
            let got = postings(t, key, None, Order::OldestFirst, usize::MAX).expect("postings");
            assert_eq!(got, want, "{context}: {key:?}");
            let mut newest = postings(t, key, None, Order::NewestFirst, usize::MAX).expect("p");
            newest.reverse();
            assert_eq!(newest, want, "{context}: {key:?} newest first");
            if let Some(&middle) = want.get(want.len() / 2) {
                let after = postings(t, key, Some(middle), Order::OldestFirst, 2).expect("p");
                let expect: Vec<u64> = want
                    .iter()
                    .copied()
                    .filter(|&s| s > middle)
                    .take(2)
                    .collect();
                assert_eq!(after, expect, "{context}: {key:?} after {middle}");
            }
        }
        for prefix in VALUES.iter().chain(&["a\0b\0", "b"]) {
            assert_eq!(
                filename_prefix(t, prefix, usize::MAX).expect("prefix"),
                model.index.filename_prefix(prefix, usize::MAX),
                "{context}: prefix {prefix:?}"
            );
        }
        for (from, to) in [(0, u64::MAX), (5, 9), (3, 4), (7, 7)] {
            for modified in [false, true] {
                assert_eq!(
                    time_range(t, modified, from, to, usize::MAX).expect("times"),
                    model.index.time_range(modified, from, to, usize::MAX),
                    "{context}: times {from}..{to} {modified}"
                );
            }
        }
        let order: Vec<u64> = model.order.keys().copied().collect();
        assert_eq!(
            live_seqs(t, None, Order::OldestFirst, usize::MAX).expect("live"),
            order,
            "{context}: order"
        );
        let set: BTreeSet<u64> = order.iter().copied().collect();
        assert_eq!(set.len(), order.len());
        // Said to be in commit order: then they are, and a range's span
        // of seqs is exactly its matches.
        if created_in_commit_order(t).expect("order") {
            let created: Vec<u64> = model
                .order
                .values()
                .map(|id| model.artifacts[id].meta.created_ms)
                .collect();
            assert!(created.is_sorted(), "{context}: {created:?}");
            for (from, to) in [(0, u64::MAX), (5, 9), (3, 4), (7, 7)] {
                let want = model.index.time_range(false, from, to, usize::MAX);
                let span = created_span(t, from, to).expect("span");
                assert_eq!(
                    span,
                    want.first().zip(want.last()).map(|(a, b)| (*a, *b)),
                    "{context}"
                );
                if let Some((low, high)) = span {
                    assert_eq!(
                        live_seqs_in(t, low, high, Order::OldestFirst, usize::MAX).expect("live"),
                        want,
                        "{context}"
                    );
                }
            }
        }
    }

    fn at_time(created_ms: u64) -> Metadata {
        let manifest = Manifest::new(Vec::new());
        Metadata {
            id: ArtifactId::generate(),
            filename: None,
            content_type: None,
            creator: None,
            size: 0,
            digest: Hash::of(b""),
            chunk_count: manifest.chunks.len() as u64,
            created_ms,
            modified_ms: created_ms,
            tags: Vec::new(),
            links: Vec::new(),
            external_links: Vec::new(),
            custom: Vec::new(),
        }
    }

    /// Whether creation times follow commit order is kept as commits come
    /// (conservatively: a delete does not restore it), and computed by a
    /// walk for tables written before it was kept, exactly for what is
    /// live.
    #[test]
    fn creation_order_is_kept_and_recomputed_for_older_tables() {
        let cases: [(&[u64], bool); 4] = [
            (&[], true),
            (&[1, 2, 2, 5], true),
            (&[3, 1, 4], false),
            (&[7, 7, 6], false),
        ];
        for (times, ordered) in cases {
            let database = redb::Builder::new()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .expect("db");
            let txn = db::begin_write(&database, false).expect("txn");
            let mut t = Tables::new(&txn);
            track_created_order(&mut t).expect("track");
            let mut ids = Vec::new();
            for &time in times {
                let meta = at_time(time);
                ids.push(meta.id);
                assert!(insert(&mut t, meta, Arc::new(Manifest::new(Vec::new()))).expect("in"));
            }
            assert_eq!(
                created_in_commit_order(&mut t).expect("o"),
                ordered,
                "{times:?}"
            );
            assert_eq!(
                created_max(&mut t).expect("max"),
                times.iter().copied().max().unwrap_or(0)
            );
            // Tables from before the counters: recomputed the same.
            t.counters().expect("c").remove(CREATED_MAX).expect("rm");
            t.counters()
                .expect("c")
                .remove(CREATED_DISORDER)
                .expect("rm");
            assert!(track_created_order(&mut t).expect("track"), "older tables");
            assert_eq!(
                created_in_commit_order(&mut t).expect("o"),
                ordered,
                "{times:?}"
            );
            if !ordered {
                // The commit that broke the order is deleted: the running
                // counter still says disorder, a walk finds order again.
                let breaker = if times == [3, 1, 4] { ids[0] } else { ids[2] };
                remove(&mut t, &breaker).expect("rm");
                assert!(!created_in_commit_order(&mut t).expect("o"));
                t.counters().expect("c").remove(CREATED_MAX).expect("rm");
                track_created_order(&mut t).expect("track");
                assert!(created_in_commit_order(&mut t).expect("o"), "{times:?}");
            }
        }
    }

    /// Random inserts, updates and removes applied to both catalogs give
    /// the same artifacts, ids, postings, prefixes, ranges and totals, in a
    /// transaction, after a commit, and after a reopen.
    #[test]
    fn the_tables_answer_as_the_in_memory_catalog_does() {
        for seed in 0..12u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let disk = SimDisk::new(seed);
            let database = db::open(disk.root().as_ref(), "catalog.redb", 1 << 20).expect("open");
            let mut model = Catalog::default();
            let mut ids: Vec<ArtifactId> = Vec::new();
            let mut txn = db::begin_write(&database, false).expect("txn");
            for step in 0..150 {
                let live: Vec<ArtifactId> = model.artifacts.keys().copied().collect();
                match rng.u8(0..10) {
                    0..=4 => {
                        let id = if rng.u8(0..8) == 0 && !ids.is_empty() {
                            ids[rng.usize(0..ids.len())] // a used id: refused by both
                        } else {
                            ArtifactId::generate()
                        };
                        let fields = random_fields(&mut rng, &live);
                        let mut normalized = fields.clone();
                        normalize_fields(&mut normalized);
                        let chunks: Vec<ChunkRef> = (0..rng.usize(0..4))
                            .map(|i| ChunkRef {
                                digest: Hash::of(&[i as u8, step as u8]),
                                len: rng.u32(1..100),
                            })
                            .collect();
                        let manifest = Arc::new(Manifest::new(chunks));
                        let created = rng.u64(0..10);
                        let meta = Metadata {
                            id,
                            filename: normalized.filename,
                            content_type: normalized.content_type,
                            creator: rng.bool().then(|| pick(&mut rng)),
                            size: manifest.ends.last().copied().unwrap_or(0),
                            digest: Hash::of(&[step as u8]),
                            chunk_count: manifest.chunks.len() as u64,
                            created_ms: created,
                            modified_ms: created,
                            tags: normalized.tags,
                            links: normalized
                                .links
                                .into_iter()
                                .map(ArtifactId::from_bytes)
                                .collect(),
                            external_links: normalized.external_links,
                            custom: normalized.custom,
                        };
                        let ours =
                            insert(&mut Tables::new(&txn), meta.clone(), Arc::clone(&manifest))
                                .expect("in");
                        assert_eq!(
                            ours,
                            model.insert(meta, manifest),
                            "seed {seed} step {step}"
                        );
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                    5..=6 if !live.is_empty() => {
                        let id = live[rng.usize(0..live.len())];
                        let fields = random_fields(&mut rng, &live);
                        let modified = rng.u64(0..12);
                        let ours = update(&mut Tables::new(&txn), &id, modified, fields.clone())
                            .expect("update");
                        assert_eq!(ours, model.update(&id, modified, fields), "seed {seed}");
                    }
                    7..=8 if !live.is_empty() => {
                        let id = live[rng.usize(0..live.len())];
                        let ours = remove(&mut Tables::new(&txn), &id)
                            .expect("remove")
                            .map(|a| a.meta);
                        assert_eq!(ours, model.remove(&id).map(|a| a.meta), "seed {seed}");
                    }
                    _ => {
                        txn.commit().expect("commit");
                        txn = db::begin_write(&database, rng.bool()).expect("txn");
                    }
                }
                if step % 25 == 24 {
                    compare(
                        &mut Tables::new(&txn),
                        &model,
                        &ids,
                        &format!("seed {seed} step {step}"),
                    );
                }
            }
            txn.commit().expect("commit");
            drop(database);
            let disk = disk.crash_keep_all();
            let database = db::open(disk.root().as_ref(), "catalog.redb", 1 << 20).expect("open");
            let txn = db::begin_write(&database, false).expect("txn");
            compare(
                &mut Tables::new(&txn),
                &model,
                &ids,
                &format!("seed {seed} after a reopen"),
            );

            // `load` of the model into empty tables gives the same answers.
            let fresh = SimDisk::new(seed);
            let database = db::open(fresh.root().as_ref(), "catalog.redb", 1 << 20).expect("open");
            let txn = db::begin_write(&database, false).expect("txn");
            load(&mut Tables::new(&txn), &model).expect("load");
            compare(
                &mut Tables::new(&txn),
                &model,
                &ids,
                &format!("seed {seed} loaded"),
            );
        }
    }

    /// Keys of different fields and values never share a prefix that would
    /// let one's postings be read as another's.
    #[test]
    fn index_keys_of_different_values_never_prefix_each_other() {
        let keys = every_key();
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate() {
                if i != j {
                    let (a, b) = (key_prefix(a), key_prefix(b));
                    assert!(!b.starts_with(&a), "{a:?} is a prefix of {b:?}");
                }
            }
        }
    }
}
