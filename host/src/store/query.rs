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
use super::meta::Catalog;
use super::meta_index::{range_after, Key, Postings};
use super::types::{Condition, Metadata, Order, Query, QueryPage};
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
/// query; a wider one is left to a walk in commit order, where dense
/// matches fill a page quickly.
const RANGE_DRIVER_MAX: usize = 4096;

/// The candidates one condition names: the sets of all conditions are
/// intersected in the query's order; every condition is then checked on
/// each candidate, so the sets change speed, never results.
enum Driver<'a> {
    /// Some condition matches nothing (the query returns at once).
    Empty,
    Postings(&'a Postings),
    /// Ascending commit positions.
    Seqs(Vec<u64>),
    /// No condition narrows the set: walk every live artifact.
    All,
}

impl Driver<'_> {
    fn len(&self) -> usize {
        match self {
            Driver::Empty => 0,
            Driver::Postings(postings) => postings.len(),
            Driver::Seqs(seqs) => seqs.len(),
            Driver::All => usize::MAX,
        }
    }

    /// The first position at or beyond `from` in `order` (see
    /// [`Postings::seek`]); `All` and `Empty` are never sought.
    fn seek(&self, from: u64, order: Order) -> Option<u64> {
        match self {
            Driver::Postings(postings) => postings.seek(from, order),
            Driver::Seqs(seqs) => match order {
                Order::OldestFirst => {
                    let at = seqs.partition_point(|&seq| seq < from);
                    seqs.get(at).copied()
                }
                Order::NewestFirst => {
                    let at = seqs.partition_point(|&seq| seq <= from);
                    at.checked_sub(1).map(|at| seqs[at])
                }
            },
            Driver::All | Driver::Empty => None,
        }
    }
}

/// The positions in every one of some sets, beyond a cursor, in order.
struct Leapfrog<'s, 'a> {
    sets: &'s [Driver<'a>],
    /// Where the next seek starts; `None`: done.
    from: Option<u64>,
    order: Order,
}

impl<'s, 'a> Leapfrog<'s, 'a> {
    fn new(sets: &'s [Driver<'a>], after: Option<u64>, order: Order) -> Self {
        let from = match (after, order) {
            (None, Order::OldestFirst) => Some(0),
            (None, Order::NewestFirst) => Some(u64::MAX),
            (Some(after), Order::OldestFirst) => after.checked_add(1),
            (Some(after), Order::NewestFirst) => after.checked_sub(1),
        };
        Leapfrog { sets, from, order }
    }
}

impl Iterator for Leapfrog<'_, '_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let mut from = self.from?;
        'search: loop {
            for set in self.sets {
                let Some(at) = set.seek(from, self.order) else {
                    self.from = None;
                    return None;
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
            return Some(from);
        }
    }
}

/// The candidate set `condition` alone gives, if it can be had cheaply.
fn driver_of<'a>(catalog: &'a Catalog, condition: &Condition) -> Driver<'a> {
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
            let Some(source) = catalog.artifacts.get(source) else {
                return Driver::Empty;
            };
            // Links are to live artifacts only (a delete drops them).
            let mut seqs: Vec<u64> = source
                .meta
                .links
                .iter()
                .filter(|id| catalog.artifacts.contains_key(id))
                .filter_map(|id| catalog.seq_of.get(id).copied())
                .collect();
            seqs.sort_unstable();
            return Driver::Seqs(seqs);
        }
        Condition::FilenamePrefix(prefix) => {
            return bounded(catalog.index.filename_prefix(prefix, RANGE_DRIVER_MAX + 1));
        }
        Condition::Created(range) => {
            return bounded(catalog.index.time_range(
                false,
                range.from_ms,
                range.to_ms,
                RANGE_DRIVER_MAX + 1,
            ));
        }
        Condition::Modified(range) => {
            return bounded(catalog.index.time_range(
                true,
                range.from_ms,
                range.to_ms,
                RANGE_DRIVER_MAX + 1,
            ));
        }
    };
    match catalog.index.postings(&key) {
        Some(postings) => Driver::Postings(postings),
        None => Driver::Empty,
    }
}

/// A range's matches as a driver, unless there were too many to collect.
fn bounded<'a>(seqs: Vec<u64>) -> Driver<'a> {
    match seqs.len() {
        0 => Driver::Empty,
        n if n > RANGE_DRIVER_MAX => Driver::All,
        _ => Driver::Seqs(seqs),
    }
}

/// Whether `meta` meets `condition`.
fn meets(catalog: &Catalog, meta: &Metadata, condition: &Condition) -> bool {
    match condition {
        Condition::Tag(tag) => meta.tags.contains(tag),
        Condition::LinksTo(target) => meta.links.contains(target),
        Condition::LinkedFrom(source) => catalog
            .artifacts
            .get(source)
            .is_some_and(|source| source.meta.links.contains(&meta.id)),
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
        let catalog = &state.catalog;
        let after = match &query.after {
            None => None,
            Some(after) => match catalog.seq_of.get(after) {
                Some(&seq) => Some(seq),
                None => return Err(not_found(after)),
            },
        };
        // Every condition that names a set narrows the candidates; with
        // two or more they are intersected by leapfrogging (each set seeks
        // to the largest position any other reached), so a page costs
        // about one seek per set per match, not a walk of the smallest set.
        let mut sets: Vec<Driver> = Vec::new();
        for condition in query.conditions.iter().filter(|_| !scan) {
            match driver_of(catalog, condition) {
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
        sets.sort_by_key(Driver::len);
        let order = query.order;
        let seqs: Box<dyn Iterator<Item = u64> + '_> = match sets.first() {
            None => {
                let range = catalog.order.range(range_after(after, order));
                match order {
                    Order::OldestFirst => Box::new(range.map(|(&seq, _)| seq)),
                    Order::NewestFirst => Box::new(range.rev().map(|(&seq, _)| seq)),
                }
            }
            Some(_) => Box::new(Leapfrog::new(&sets, after, order)),
        };
        let candidates = seqs.map(|seq| &catalog.order[&seq]);
        let mut ids = Vec::new();
        let mut more = false;
        for id in candidates {
            let meta = &catalog.artifacts[id].meta;
            if query.conditions.iter().all(|c| meets(catalog, meta, c)) {
                if ids.len() == query.limit {
                    more = true;
                    break;
                }
                ids.push(*id);
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
