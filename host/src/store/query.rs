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
/// matches fill a page quickly if they begin early in it. A creation-time
/// range needs none of this while creation times follow commit order (the
/// store keeps them so): it is a span of seqs.
const RANGE_DRIVER_MAX: usize = 65_536;

/// A key's postings are counted up to this to order a query's sets (only
/// when there are two or more): past it the order matters little, as the
/// intersection probes the other sets and seeks in one that keeps missing.
const COUNT_MAX: usize = 512;

/// Positions the first set of a query reads in one range.
const STREAM_BATCH: usize = 128;

/// Probes in a row a set may miss before the intersection seeks in it
/// instead (a set sparse next to the first one then skips the stretch).
const PROBE_MISSES: u32 = 8;

/// The candidates one condition names: the sets of all conditions are
/// intersected in the query's order; every condition is then checked on
/// each candidate unless every set is exact, so the sets change speed,
/// never results.
enum Driver {
    /// Some condition matches nothing (the query returns at once).
    Empty,
    /// The postings of a key in the catalog database, and how many there
    /// are (counted up to [`COUNT_MAX`], once there are two sets).
    Postings(catalog_db::Prefix, usize),
    /// Ascending commit positions.
    Seqs(Vec<u64>),
    /// Every live artifact with a seq in `low..=high`.
    Span(u64, u64),
    /// No condition narrows the set: walk every live artifact.
    All,
}

/// `step` from `at` in `order`: the next position to look at.
fn step(at: u64, order: Order) -> Option<u64> {
    match order {
        Order::OldestFirst => at.checked_add(1),
        Order::NewestFirst => at.checked_sub(1),
    }
}

impl Driver {
    fn len(&self) -> usize {
        match self {
            Driver::Empty => 0,
            Driver::Postings(_, n) => *n,
            Driver::Seqs(seqs) => seqs.len(),
            Driver::Span(low, high) => usize::try_from(high - low)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
            Driver::All => usize::MAX,
        }
    }

    /// Up to `limit` positions from `from` on in `order`; `All` and
    /// `Empty` are never read.
    fn read(
        &self,
        t: &mut catalog_db::Tables<'_>,
        from: u64,
        order: Order,
        limit: usize,
    ) -> Result<Vec<u64>, DbError> {
        match self {
            Driver::Postings(prefix, _) => catalog_db::postings_from(t, prefix, from, order, limit),
            Driver::Seqs(seqs) => Ok(match order {
                Order::OldestFirst => {
                    let at = seqs.partition_point(|&seq| seq < from);
                    seqs[at..].iter().take(limit).copied().collect()
                }
                Order::NewestFirst => {
                    let at = seqs.partition_point(|&seq| seq <= from);
                    seqs[..at].iter().rev().take(limit).copied().collect()
                }
            }),
            &Driver::Span(low, high) => match order {
                Order::OldestFirst => {
                    catalog_db::live_seqs_in(t, from.max(low), high, order, limit)
                }
                Order::NewestFirst => {
                    catalog_db::live_seqs_in(t, low, from.min(high), order, limit)
                }
            },
            Driver::All | Driver::Empty => Ok(Vec::new()),
        }
    }

    /// The first position at or beyond `from` in `order`.
    fn seek(
        &self,
        t: &mut catalog_db::Tables<'_>,
        from: u64,
        order: Order,
    ) -> Result<Option<u64>, DbError> {
        Ok(self.read(t, from, order, 1)?.first().copied())
    }

    /// Whether the set holds `seq`, a live artifact's.
    fn contains(&self, t: &mut catalog_db::Tables<'_>, seq: u64) -> Result<bool, DbError> {
        match self {
            Driver::Postings(prefix, _) => catalog_db::has_posting(t, prefix, seq),
            Driver::Seqs(seqs) => Ok(seqs.binary_search(&seq).is_ok()),
            &Driver::Span(low, high) => Ok((low..=high).contains(&seq)),
            Driver::All => Ok(true),
            Driver::Empty => Ok(false),
        }
    }
}

/// The positions of one set read ahead in batches: the set a query's
/// intersection walks (its seeks only move forward in the order).
struct Stream {
    ahead: std::collections::VecDeque<u64>,
    /// The last read ended the set.
    ended: bool,
    /// Nothing read yet.
    fresh: bool,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            ahead: Default::default(),
            ended: false,
            fresh: true,
        }
    }

    /// The first position of `set` at or beyond `from` in `order`; each
    /// call's `from` is at or beyond the one before.
    fn seek(
        &mut self,
        set: &Driver,
        t: &mut catalog_db::Tables<'_>,
        from: u64,
        order: Order,
    ) -> Result<Option<u64>, DbError> {
        let before = |at: u64| match order {
            Order::OldestFirst => at < from,
            Order::NewestFirst => at > from,
        };
        while self.ahead.front().is_some_and(|&at| before(at)) {
            self.ahead.pop_front();
        }
        if let Some(&at) = self.ahead.front() {
            return Ok(Some(at));
        }
        if self.ended && !self.fresh {
            return Ok(None);
        }
        let read = set.read(t, from, order, STREAM_BATCH)?;
        self.fresh = false;
        self.ended = read.len() < STREAM_BATCH;
        self.ahead = read.into();
        Ok(self.ahead.front().copied())
    }
}

/// The positions in every one of some sets, beyond a cursor, in order:
/// the first set (the smallest counted) is read ahead, and each of its
/// positions probed in the others; a set that misses [`PROBE_MISSES`]
/// probes in a row is sought in instead, and the first set moves on to
/// where it points.
struct Intersection<'s> {
    sets: &'s [Driver],
    first: Stream,
    misses: Vec<u32>,
    /// Where the next seek starts; `None`: done.
    from: Option<u64>,
    order: Order,
}

impl<'s> Intersection<'s> {
    fn new(sets: &'s [Driver], after: Option<u64>, order: Order) -> Self {
        let from = match (after, order) {
            (None, Order::OldestFirst) => Some(0),
            (None, Order::NewestFirst) => Some(u64::MAX),
            (Some(after), order) => step(after, order),
        };
        Intersection {
            sets,
            first: Stream::new(),
            misses: vec![0; sets.len()],
            from,
            order,
        }
    }

    fn next(&mut self, t: &mut catalog_db::Tables<'_>) -> Result<Option<u64>, DbError> {
        let order = self.order;
        'search: while let Some(from) = self.from {
            let Some(at) = self.first.seek(&self.sets[0], t, from, order)? else {
                break;
            };
            for (i, set) in self.sets.iter().enumerate().skip(1) {
                if set.contains(t, at)? {
                    self.misses[i] = 0;
                    continue;
                }
                self.misses[i] += 1;
                self.from = if self.misses[i] < PROBE_MISSES {
                    step(at, order)
                } else {
                    self.misses[i] = 0;
                    match step(at, order) {
                        Some(next) => set.seek(t, next, order)?,
                        None => None,
                    }
                };
                continue 'search;
            }
            self.from = step(at, order);
            return Ok(Some(at));
        }
        self.from = None;
        Ok(None)
    }
}

/// The candidate set `condition` alone gives, if it can be had cheaply.
fn driver_of(t: &mut catalog_db::Tables<'_>, condition: &Condition) -> Result<Driver, DbError> {
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
            let Some(source) = catalog_db::lookup(t, source)? else {
                return Ok(Driver::Empty);
            };
            // Links are to live artifacts only (a delete drops them).
            let mut seqs = Vec::with_capacity(source.meta.links.len());
            for id in &source.meta.links {
                seqs.extend(catalog_db::live_seq(t, id)?);
            }
            seqs.sort_unstable();
            return Ok(Driver::Seqs(seqs));
        }
        Condition::FilenamePrefix(prefix) => {
            return Ok(bounded(catalog_db::filename_prefix(
                t,
                prefix,
                RANGE_DRIVER_MAX + 1,
            )?));
        }
        Condition::Created(range) => {
            if catalog_db::created_in_commit_order(t)? {
                return Ok(
                    match catalog_db::created_span(t, range.from_ms, range.to_ms)? {
                        Some((low, high)) => Driver::Span(low, high),
                        None => Driver::Empty,
                    },
                );
            }
            return Ok(bounded(catalog_db::time_range(
                t,
                false,
                range.from_ms,
                range.to_ms,
                RANGE_DRIVER_MAX + 1,
            )?));
        }
        Condition::Modified(range) => {
            return Ok(bounded(catalog_db::time_range(
                t,
                true,
                range.from_ms,
                range.to_ms,
                RANGE_DRIVER_MAX + 1,
            )?));
        }
    };
    // Counted only if there is another set to order it against.
    Ok(Driver::Postings(catalog_db::Prefix::of(&key), 0))
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
        // Opened once for the whole query: each seek and read would
        // otherwise open its table again.
        let mut t = state.db.catalog_tables()?;
        let after = match &query.after {
            None => None,
            Some(after) => match catalog_db::seq_of(&mut t, after)? {
                Some(seq) => Some(seq),
                None => return Err(not_found(after)),
            },
        };
        let mut linked = HashMap::new();
        for condition in &query.conditions {
            if let Condition::LinkedFrom(source) = condition {
                if let Some(artifact) = catalog_db::lookup(&mut t, source)? {
                    linked.insert(*source, artifact.meta.links);
                }
            }
        }
        let empty = QueryPage {
            ids: Vec::new(),
            next: None,
        };
        // Every condition that names a set narrows the candidates; with
        // two or more they are intersected (the first read ahead, probed
        // in the others), so a page costs about one lookup per set per
        // candidate, not a walk of every set.
        let mut sets: Vec<Driver> = Vec::new();
        for condition in query.conditions.iter().filter(|_| !scan) {
            match driver_of(&mut t, condition)? {
                Driver::All => {}
                Driver::Empty => return Ok(empty),
                set => sets.push(set),
            }
        }
        if sets.len() > 1 {
            for set in &mut sets {
                if let Driver::Postings(prefix, n) = set {
                    *n = catalog_db::count(&mut t, prefix, COUNT_MAX)?;
                    if *n == 0 {
                        return Ok(empty);
                    }
                }
            }
        }
        // Every set is exact (a key's postings, a source's live links, the
        // whole of a narrow range): when every condition gave one, a
        // position in all of them matches, and only its id is read.
        let exact = !scan && !query.conditions.is_empty() && sets.len() == query.conditions.len();
        sets.sort_by_key(Driver::len);
        let order = query.order;
        let mut ids = Vec::new();
        let mut more = false;
        if sets.is_empty() {
            let mut walk = Walk {
                after,
                order,
                batch: Vec::new().into_iter(),
                done: false,
            };
            while let Some(seq) = walk.next(&mut t)? {
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
        } else {
            let mut matches = Intersection::new(&sets, after, order);
            while let Some(seq) = matches.next(&mut t)? {
                if !exact {
                    let Some(artifact) = catalog_db::at_seq(&mut t, seq)? else {
                        continue;
                    };
                    if !query
                        .conditions
                        .iter()
                        .all(|c| meets(&linked, &artifact.meta, c))
                    {
                        continue;
                    }
                }
                let Some(id) = catalog_db::id_at_seq(&mut t, seq)? else {
                    continue;
                };
                if ids.len() == query.limit {
                    more = true;
                    break;
                }
                ids.push(id);
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
