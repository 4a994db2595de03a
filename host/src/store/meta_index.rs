//! The metadata indexes [`Catalog`](super::meta::Catalog) keeps for
//! [`Store::query`](super::Store::query): exact-match posting sets keyed by
//! typed keys, filenames in byte order (for prefixes), and creation and
//! modification times in order (for ranges).
//!
//! Kept in step by `Catalog::insert`, `remove` and `update`, the only ways
//! an artifact enters, leaves or changes, so replay, live changes and a
//! compacted log all build the same indexes. Only live artifacts are
//! indexed (one deleted while held is not). Nothing here is stored: the
//! indexes are derived from `meta.log` at open.
//!
//! Keys are an enum of field kinds with owned values, never strings glued
//! together, so no value of one field can be taken for another or for a
//! different value of its own field, whatever bytes it holds (':' , '/',
//! a prefix of another value).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use super::types::{ArtifactId, Metadata, Order};

/// One exact-match key: a field and a value of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Tag(String),
    /// The artifact's `links` include this id.
    LinksTo(ArtifactId),
    /// The artifact's `external_links` include this entity id.
    External(String),
    ContentType(String),
    Creator(String),
    Filename(String),
    /// The artifact has a custom pair with this key.
    CustomName(String),
    /// The artifact has this custom pair (key, value).
    Custom(String, String),
}

/// The commit positions (seq) of the live artifacts carrying one key, in
/// ascending order. Most keys (a filename, a link target, a run's tag)
/// are carried by one artifact, so that case is a bare number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Postings {
    One(u64),
    /// Two or more, never fewer (`remove` turns a set of one into `One`).
    Many(BTreeSet<u64>),
}

impl Postings {
    /// How many artifacts carry the key (at least one).
    pub fn len(&self) -> usize {
        match self {
            Postings::One(_) => 1,
            Postings::Many(set) => set.len(),
        }
    }

    fn insert(&mut self, seq: u64) {
        match self {
            Postings::One(one) if *one == seq => {}
            Postings::One(one) => *self = Postings::Many(BTreeSet::from([*one, seq])),
            Postings::Many(set) => {
                set.insert(seq);
            }
        }
    }

    /// Removes `seq`; whether the key is now carried by nothing.
    fn remove(&mut self, seq: u64) -> bool {
        match self {
            Postings::One(one) => *one == seq,
            Postings::Many(set) => {
                set.remove(&seq);
                assert!(!set.is_empty(), "a set of postings holds two or more");
                if set.len() == 1 {
                    let last = *set.first().expect("one left");
                    *self = Postings::One(last);
                }
                false
            }
        }
    }

    /// The positions after `after` in `order` (all of them without one).
    pub fn walk(&self, after: Option<u64>, order: Order) -> Box<dyn Iterator<Item = u64> + '_> {
        match self {
            Postings::One(one) => {
                let one = *one;
                Box::new(std::iter::once(one).filter(move |&seq| beyond(seq, after, order)))
            }
            Postings::Many(set) => {
                let range = set.range(range_after(after, order));
                match order {
                    Order::OldestFirst => Box::new(range.copied()),
                    Order::NewestFirst => Box::new(range.rev().copied()),
                }
            }
        }
    }

    /// The first position at or beyond `from` in `order` (at or above it
    /// oldest first, at or below it newest first): one step of a
    /// leapfrog intersection.
    pub fn seek(&self, from: u64, order: Order) -> Option<u64> {
        match (self, order) {
            (Postings::One(one), Order::OldestFirst) => (*one >= from).then_some(*one),
            (Postings::One(one), Order::NewestFirst) => (*one <= from).then_some(*one),
            (Postings::Many(set), Order::OldestFirst) => set.range(from..).next().copied(),
            (Postings::Many(set), Order::NewestFirst) => set.range(..=from).next_back().copied(),
        }
    }

    /// Every position, ascending.
    pub fn iter(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        self.walk(None, Order::OldestFirst)
    }
}

/// Whether `seq` comes after `after` in `order`.
pub fn beyond(seq: u64, after: Option<u64>, order: Order) -> bool {
    match (after, order) {
        (None, _) => true,
        (Some(after), Order::OldestFirst) => seq > after,
        (Some(after), Order::NewestFirst) => seq < after,
    }
}

/// The positions after `after` in `order`, as a range over ascending seqs.
pub fn range_after(after: Option<u64>, order: Order) -> (Bound<u64>, Bound<u64>) {
    match (after, order) {
        (None, _) => (Bound::Unbounded, Bound::Unbounded),
        (Some(seq), Order::OldestFirst) => (Bound::Excluded(seq), Bound::Unbounded),
        (Some(seq), Order::NewestFirst) => (Bound::Unbounded, Bound::Excluded(seq)),
    }
}

/// The indexes over the live artifacts' metadata.
#[derive(Default)]
pub struct MetaIndex {
    /// Every exact key but filenames.
    exact: HashMap<Key, Postings>,
    /// Filenames in byte order: exact lookups and prefix ranges.
    filenames: BTreeMap<String, Postings>,
    /// (created_ms, seq) of every live artifact.
    created: BTreeSet<(u64, u64)>,
    /// (modified_ms, seq) of every live artifact.
    modified: BTreeSet<(u64, u64)>,
}

/// The exact keys `meta` carries (its filename included). Distinct, since
/// the set-valued fields are sets and custom keys unique.
pub(super) fn keys(meta: &Metadata) -> impl Iterator<Item = Key> + '_ {
    let tags = meta.tags.iter().cloned().map(Key::Tag);
    let links = meta.links.iter().copied().map(Key::LinksTo);
    let external = meta.external_links.iter().cloned().map(Key::External);
    let content_type = meta.content_type.iter().cloned().map(Key::ContentType);
    let creator = meta.creator.iter().cloned().map(Key::Creator);
    let filename = meta.filename.iter().cloned().map(Key::Filename);
    let custom = meta.custom.iter().flat_map(|(key, value)| {
        [
            Key::CustomName(key.clone()),
            Key::Custom(key.clone(), value.clone()),
        ]
    });
    tags.chain(links)
        .chain(external)
        .chain(content_type)
        .chain(creator)
        .chain(filename)
        .chain(custom)
}

impl MetaIndex {
    /// Indexes the live artifact at `seq`.
    pub fn add(&mut self, seq: u64, meta: &Metadata) {
        for key in keys(meta) {
            match key {
                Key::Filename(name) => {
                    self.filenames
                        .entry(name)
                        .and_modify(|postings| postings.insert(seq))
                        .or_insert(Postings::One(seq));
                }
                key => {
                    self.exact
                        .entry(key)
                        .and_modify(|postings| postings.insert(seq))
                        .or_insert(Postings::One(seq));
                }
            }
        }
        self.created.insert((meta.created_ms, seq));
        self.modified.insert((meta.modified_ms, seq));
    }

    /// Un-indexes the artifact at `seq`, indexed with exactly `meta`.
    pub fn remove(&mut self, seq: u64, meta: &Metadata) {
        for key in keys(meta) {
            match key {
                Key::Filename(name) => {
                    if let Some(postings) = self.filenames.get_mut(&name) {
                        if postings.remove(seq) {
                            self.filenames.remove(&name);
                        }
                    }
                }
                key => {
                    if let Some(postings) = self.exact.get_mut(&key) {
                        if postings.remove(seq) {
                            self.exact.remove(&key);
                        }
                    }
                }
            }
        }
        self.created.remove(&(meta.created_ms, seq));
        self.modified.remove(&(meta.modified_ms, seq));
    }

    /// The artifacts carrying `key`; `None` if none does.
    pub fn postings(&self, key: &Key) -> Option<&Postings> {
        match key {
            Key::Filename(name) => self.filenames.get(name),
            key => self.exact.get(key),
        }
    }

    /// Positions of the artifacts whose filename starts with `prefix`,
    /// ascending; at most `max` of them (then some are left out: the caller
    /// only asks to learn whether the set is small). O(n · log n) for the n
    /// returned.
    pub fn filename_prefix(&self, prefix: &str, max: usize) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .filenames
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(name, _)| name.as_bytes().starts_with(prefix.as_bytes()))
            .flat_map(|(_, postings)| postings.iter())
            .take(max)
            .collect();
        seqs.sort_unstable();
        seqs
    }

    /// Positions of the artifacts created (or, with `modified`, last
    /// modified) in `from_ms..to_ms`, ascending; at most `max` of them, as
    /// for [`Self::filename_prefix`].
    pub fn time_range(&self, modified: bool, from_ms: u64, to_ms: u64, max: usize) -> Vec<u64> {
        if from_ms >= to_ms {
            return Vec::new();
        }
        let times = if modified {
            &self.modified
        } else {
            &self.created
        };
        let mut seqs: Vec<u64> = times
            .range((from_ms, 0)..(to_ms, 0))
            .map(|&(_, seq)| seq)
            .take(max)
            .collect();
        seqs.sort_unstable();
        seqs
    }

    /// Counts for tests: (exact keys, filenames, postings in all).
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize, usize) {
        let postings = self
            .exact
            .values()
            .chain(self.filenames.values())
            .map(Postings::len)
            .sum();
        (self.exact.len(), self.filenames.len(), postings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postings_stay_sorted_and_collapse_to_one() {
        let mut postings = Postings::One(5);
        postings.insert(2);
        postings.insert(9);
        postings.insert(5);
        assert_eq!(postings.iter().collect::<Vec<_>>(), [2, 5, 9]);
        assert_eq!(
            postings
                .walk(Some(5), Order::OldestFirst)
                .collect::<Vec<_>>(),
            [9]
        );
        assert_eq!(
            postings
                .walk(Some(9), Order::NewestFirst)
                .collect::<Vec<_>>(),
            [5, 2]
        );
        assert!(!postings.remove(5));
        assert!(!postings.remove(2));
        assert_eq!(postings, Postings::One(9));
        assert_eq!(
            postings.walk(Some(9), Order::OldestFirst).count(),
            0,
            "nothing after the cursor"
        );
        assert_eq!(
            postings
                .walk(Some(10), Order::NewestFirst)
                .collect::<Vec<_>>(),
            [9]
        );
        assert!(postings.remove(9));
    }
}
