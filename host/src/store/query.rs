//! Metadata queries ([`Store::query`]).
//!
//! Candidates come from the sets conditions name in the catalog's indexes
//! ([`super::meta_index`]): posting sets, the links of a `LinkedFrom`
//! source, narrow filename-prefix or time ranges, intersected by a
//! leapfrog; with none of those the live artifacts are walked in commit
//! order. Every condition is then checked on each candidate's metadata, so
//! the indexes decide the speed, never the result (the scan is the
//! reference the tests hold them to).

use super::format::{
    CUSTOM_KEY_BYTES_MAX, CUSTOM_VALUE_BYTES_MAX, EXTERNAL_LINK_BYTES_MAX, QUERY_CONDITIONS_MAX,
    QUERY_PAGE_MAX, STRING_BYTES_MAX, TAG_BYTES_MAX,
};
use std::collections::HashMap;

use super::catalog_db;
use super::db::DbError;
use super::meta_db::MetaDb;
use super::meta_index::Key;
use super::types::{ArtifactId, Condition, Metadata, Order, Query, QueryPage};
use super::{invalid, lock, not_found, Store, StoreError};

/// Checks a query's limits: `InvalidArgument` names the first one broken.
pub fn check_query(query: &Query) -> Result<(), StoreError> {
    if query.limit > QUERY_PAGE_MAX {
        return Err(invalid(format!(
            "query limit {} over {QUERY_PAGE_MAX}",
            query.limit
        )));
    }
    if query.conditions.len() > QUERY_CONDITIONS_MAX {
        return Err(invalid(format!(
            "{} query conditions, at most {QUERY_CONDITIONS_MAX}",
            query.conditions.len()
        )));
    }
    for condition in &query.conditions {
        let (what, value, max) = match condition {
            Condition::Tag(tag) => ("tag", tag, TAG_BYTES_MAX),
            Condition::LinksToExternal(entity) => {
                ("external link", entity, EXTERNAL_LINK_BYTES_MAX)
            }
            Condition::ContentType(value) => ("content type", value, STRING_BYTES_MAX),
            Condition::Creator(value) => ("creator", value, STRING_BYTES_MAX),
            Condition::Filename(value) => ("filename", value, STRING_BYTES_MAX),
            Condition::FilenamePrefix(value) => {
                if value.len() > STRING_BYTES_MAX {
                    return Err(invalid(format!(
                        "filename prefix of {} bytes, at most {STRING_BYTES_MAX}",
                        value.len()
                    )));
                }
                continue;
            }
            Condition::CustomKey(key) => ("custom key", key, CUSTOM_KEY_BYTES_MAX),
            Condition::Custom(key, value) => {
                if value.len() > CUSTOM_VALUE_BYTES_MAX {
                    return Err(invalid(format!(
                        "custom value of {} bytes, at most {CUSTOM_VALUE_BYTES_MAX}",
                        value.len()
                    )));
                }
                ("custom key", key, CUSTOM_KEY_BYTES_MAX)
            }
            Condition::LinksTo(_)
            | Condition::LinkedFrom(_)
            | Condition::Created(_)
            | Condition::Modified(_) => continue,
        };
        if value.is_empty() || value.len() > max {
            return Err(invalid(format!(
                "{what} of {} bytes in a query, must be 1..={max}",
                value.len()
            )));
        }
    }
    Ok(())
}

/// Largest filename-prefix or time-range match set materialized to drive a
/// query (a range scan of the postings, then a sort: a few milliseconds at
/// this bound); a wider one is left to a walk in commit order, where dense
/// matches fill a page quickly if they begin early in it. Creation times
/// follow commit order, so a narrow range of them is dense in one stretch
/// of it that a walk from the start would take long to reach.
const RANGE_DRIVER_MAX: usize = 65_536;

/// A key's postings are counted up to this to order a query's sets.
const COUNT_MAX: usize = 4096;

/// The candidates one condition names: the sets of all conditions are
/// intersected in the query's order; every condition is then checked on
/// each candidate, so the sets change speed, never results.
enum Driver {
    /// Some condition matches nothing (the query returns at once).
    Empty,
    /// The postings of a key in the catalog database, and how many there
    /// are (counted up to [`COUNT_MAX`]).
    Postings(Key, usize),
    /// Ascending commit positions.
    Seqs(Vec<u64>),
    /// No condition narrows the set: walk every live artifact.
    All,
}

impl Driver {
    fn len(&self) -> usize {
        match self {
            Driver::Empty => 0,
            Driver::Postings(_, n) => *n,
            Driver::Seqs(seqs) => seqs.len(),
            Driver::All => usize::MAX,
        }
    }

    /// The first position at or beyond `from` in `order`; `All` and
    /// `Empty` are never sought.
    fn seek(
        &self,
        t: &mut catalog_db::Tables<'_>,
        from: u64,
        order: Order,
    ) -> Result<Option<u64>, DbError> {
        match self {
            Driver::Postings(key, _) => catalog_db::seek(t, key, from, order),
            Driver::Seqs(seqs) => Ok(match order {
                Order::OldestFirst => {
                    let at = seqs.partition_point(|&seq| seq < from);
                    seqs.get(at).copied()
                }
                Order::NewestFirst => {
                    let at = seqs.partition_point(|&seq| seq <= from);
                    at.checked_sub(1).map(|at| seqs[at])
                }
            }),
            Driver::All | Driver::Empty => Ok(None),
        }
    }
}

/// The positions in every one of some sets, beyond a cursor, in order.
struct Leapfrog<'s> {
    sets: &'s [Driver],
    /// Where the next seek starts; `None`: done.
    from: Option<u64>,
    order: Order,
}

impl<'s> Leapfrog<'s> {
    fn new(sets: &'s [Driver], after: Option<u64>, order: Order) -> Self {
        let from = match (after, order) {
            (None, Order::OldestFirst) => Some(0),
            (None, Order::NewestFirst) => Some(u64::MAX),
            (Some(after), Order::OldestFirst) => after.checked_add(1),
            (Some(after), Order::NewestFirst) => after.checked_sub(1),
        };
        Leapfrog { sets, from, order }
    }

    fn next(&mut self, t: &mut catalog_db::Tables<'_>) -> Result<Option<u64>, DbError> {
        let Some(mut from) = self.from else {
            return Ok(None);
        };
        'search: loop {
            for set in self.sets {
                let Some(at) = set.seek(t, from, self.order)? else {
                    self.from = None;
                    return Ok(None);
                };
                if at != from {
                    // This set has nothing at `from`: every set must reach
                    // `at` (the seek moved only forward in `order`).
                    from = at;
                    continue 'search;
                }
            }
            self.from = match self.order {
                Order::OldestFirst => from.checked_add(1),
                Order::NewestFirst => from.checked_sub(1),
            };
            return Ok(Some(from));
        }
    }
}

/// The candidate set `condition` alone gives, if it can be had cheaply.
fn driver_of(db: &MetaDb, condition: &Condition) -> Result<Driver, DbError> {
    let key = match condition {
        Condition::Tag(tag) => Key::Tag(tag.clone()),
        Condition::LinksTo(target) => Key::LinksTo(*target),
        Condition::LinksToExternal(entity) => Key::External(entity.clone()),
        Condition::ContentType(value) => Key::ContentType(value.clone()),
        Condition::Creator(value) => Key::Creator(value.clone()),
        Condition::Filename(value) => Key::Filename(value.clone()),
        Condition::CustomKey(key) => Key::CustomName(key.clone()),
        Condition::Custom(key, value) => Key::Custom(key.clone(), value.clone()),
        Condition::LinkedFrom(source) => {
            let Some(source) = db.live(source)? else {
                return Ok(Driver::Empty);
            };
            // Links are to live artifacts only (a delete drops them).
            let mut seqs = Vec::with_capacity(source.meta.links.len());
            for id in &source.meta.links {
                seqs.extend(db.live_seq(id)?);
            }
            seqs.sort_unstable();
            return Ok(Driver::Seqs(seqs));
        }
        Condition::FilenamePrefix(prefix) => {
            return Ok(bounded(db.filename_prefix(prefix, RANGE_DRIVER_MAX + 1)?));
        }
        Condition::Created(range) => {
            return Ok(bounded(db.time_range(
                false,
                range.from_ms,
                range.to_ms,
                RANGE_DRIVER_MAX + 1,
            )?));
        }
        Condition::Modified(range) => {
            return Ok(bounded(db.time_range(
                true,
                range.from_ms,
                range.to_ms,
                RANGE_DRIVER_MAX + 1,
            )?));
        }
    };
    Ok(match db.count(&key, COUNT_MAX)? {
        0 => Driver::Empty,
        n => Driver::Postings(key, n),
    })
}

/// A range's matches as a driver, unless there were too many to collect.
fn bounded(seqs: Vec<u64>) -> Driver {
    match seqs.len() {
        0 => Driver::Empty,
        n if n > RANGE_DRIVER_MAX => Driver::All,
        _ => Driver::Seqs(seqs),
    }
}

/// Whether `meta` meets `condition`; `linked` holds the links of every
/// `LinkedFrom` source that is live.
fn meets(
    linked: &HashMap<ArtifactId, Vec<ArtifactId>>,
    meta: &Metadata,
    condition: &Condition,
) -> bool {
    match condition {
        Condition::Tag(tag) => meta.tags.contains(tag),
        Condition::LinksTo(target) => meta.links.contains(target),
        Condition::LinkedFrom(source) => linked
            .get(source)
            .is_some_and(|links| links.contains(&meta.id)),
        Condition::LinksToExternal(entity) => meta.external_links.contains(entity),
        Condition::ContentType(value) => meta.content_type.as_ref() == Some(value),
        Condition::Creator(value) => meta.creator.as_ref() == Some(value),
        Condition::Filename(value) => meta.filename.as_ref() == Some(value),
        Condition::FilenamePrefix(prefix) => meta
            .filename
            .as_ref()
            .is_some_and(|name| name.as_bytes().starts_with(prefix.as_bytes())),
        Condition::Created(range) => (range.from_ms..range.to_ms).contains(&meta.created_ms),
        Condition::Modified(range) => (range.from_ms..range.to_ms).contains(&meta.modified_ms),
        Condition::CustomKey(key) => meta.custom.iter().any(|(k, _)| k == key),
        Condition::Custom(key, value) => meta.custom.iter().any(|(k, v)| k == key && v == value),
    }
}

/// Live artifacts walked in commit order (no condition narrows them).
struct Walk {
    after: Option<u64>,
    order: Order,
    batch: std::vec::IntoIter<u64>,
    done: bool,
}

impl Walk {
    fn next(&mut self, t: &mut catalog_db::Tables<'_>) -> Result<Option<u64>, DbError> {
        loop {
            if let Some(seq) = self.batch.next() {
                self.after = Some(seq);
                return Ok(Some(seq));
            }
            if self.done {
                return Ok(None);
            }
            let batch = catalog_db::live_seqs(t, self.after, self.order, 256)?;
            self.done = batch.len() < 256;
            self.batch = batch.into_iter();
        }
    }
}

impl Store {
    /// The artifacts matching every condition of `query`, a page at a
    /// time, in commit order (or newest first). Paging is stable: pages
    /// continue after the previous page's last id, so an artifact committed
    /// meanwhile appears only after everything already returned (oldest
    /// first) or not at all (newest first), and no live artifact is
    /// skipped or repeated. Errors: `InvalidArgument` for a limit or
    /// condition over its bound, `NotFound` for an `after` never committed.
    pub fn query(&self, query: &Query) -> Result<QueryPage, StoreError> {
        self.query_with(query, false)
    }

    /// [`Self::query`] by a walk of every live artifact, indexes unused:
    /// the reference the indexed answers are tested against.
    #[cfg(test)]
    pub(crate) fn query_by_scan(&self, query: &Query) -> Result<QueryPage, StoreError> {
        self.query_with(query, true)
    }

    fn query_with(&self, query: &Query, scan: bool) -> Result<QueryPage, StoreError> {
        check_query(query)?;
        let state = lock(&self.inner.state);
        let db = &state.db;
        let after = match &query.after {
            None => None,
            Some(after) => match db.seq_of(after)? {
                Some(seq) => Some(seq),
                None => return Err(not_found(after)),
            },
        };
        let mut linked = HashMap::new();
        for condition in &query.conditions {
            if let Condition::LinkedFrom(source) = condition {
                if let Some(artifact) = db.live(source)? {
                    linked.insert(*source, artifact.meta.links);
                }
            }
        }
        // Every condition that names a set narrows the candidates; with
        // two or more they are intersected by leapfrogging (each set seeks
        // to the largest position any other reached), so a page costs
        // about one seek per set per match, not a walk of the smallest set.
        let mut sets: Vec<Driver> = Vec::new();
        for condition in query.conditions.iter().filter(|_| !scan) {
            match driver_of(db, condition)? {
                Driver::All => {}
                Driver::Empty => {
                    return Ok(QueryPage {
                        ids: Vec::new(),
                        next: None,
                    })
                }
                set => sets.push(set),
            }
        }
        // Every set is exact (a key's postings, a source's live links, the
        // whole of a narrow range): when every condition gave one, a
        // position in all of them matches, and only its id is read.
        let exact = !scan && !query.conditions.is_empty() && sets.len() == query.conditions.len();
        sets.sort_by_key(Driver::len);
        let order = query.order;
        let mut leapfrog = Leapfrog::new(&sets, after, order);
        let mut walk = Walk {
            after,
            order,
            batch: Vec::new().into_iter(),
            done: false,
        };
        let mut ids = Vec::new();
        let mut more = false;
        // Opened once for the whole page: each seek and read would
        // otherwise open its table again.
        let mut t = db.catalog_tables()?;
        // One exact key: its postings are the page, read in one range.
        let single = match (exact, sets.as_slice()) {
            (true, [Driver::Postings(key, _)]) => Some(key.clone()),
            _ => None,
        };
        if let Some(key) = &single {
            let seqs =
                catalog_db::postings(&mut t, key, after, order, query.limit.saturating_add(1))?;
            more = seqs.len() > query.limit;
            for &seq in seqs.iter().take(query.limit) {
                ids.extend(catalog_db::id_at_seq(&mut t, seq)?);
            }
        }
        while single.is_none() {
            let seq = if sets.is_empty() {
                walk.next(&mut t)?
            } else {
                leapfrog.next(&mut t)?
            };
            let Some(seq) = seq else { break };
            if exact {
                let Some(id) = catalog_db::id_at_seq(&mut t, seq)? else {
                    continue;
                };
                if ids.len() == query.limit {
                    more = true;
                    break;
                }
                ids.push(id);
                continue;
            }
            let Some(artifact) = catalog_db::at_seq(&mut t, seq)? else {
                continue;
            };
            let meta = &artifact.meta;
            if query.conditions.iter().all(|c| meets(&linked, meta, c)) {
                if ids.len() == query.limit {
                    more = true;
                    break;
                }
                ids.push(meta.id);
            }
        }
        let next = match (more, ids.last()) {
            (false, _) => None,
            (true, Some(last)) => Some(*last),
            // limit 0: nothing returned, so continue where this began.
            (true, None) => query.after,
        };
        Ok(QueryPage { ids, next })
    }
}
