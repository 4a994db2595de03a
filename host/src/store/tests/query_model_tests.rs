//! A property test of metadata queries: random sequences of put, update
//! (replacing and incremental), delete, reopen and meta.log compaction,
//! applied to a store and to an in-memory model; after every step every
//! query's full result set, walked a page at a time in both orders, must
//! equal the model's, and the indexed answer must equal the scan's.
//!
//! The values are drawn from small alphabets that collide on purpose: tags
//! and names that are prefixes of each other or hold ':' '/' '=' and
//! non-ASCII letters, custom keys and values that would run together if
//! they were glued into one string (the defect of tensor_blob 0.4.0).

use proptest::prelude::*;

use super::{data, open, put_with, unsynced};
use crate::store::*;

const TAGS: &[&str] = &["run:42", "run:4", "run", "run:42:x", "a/b", "a", "ü", "üx"];
const NAMES: &[&str] = &["a", "ab", "a/b", "b", "ü.bin", "a:b"];
const TYPES: &[&str] = &["application/onnx", "application/onnx+x", "text/plain"];
const CREATORS: &[&str] = &["alice", "alice:bob", "bob"];
const EXTERNAL: &[&str] = &["run:42", "run:4", "user/alice", "dataset:x:y"];
const KEYS: &[&str] = &["k", "k:v", "k=v", "kv"];
const VALUES: &[&str] = &["v", "v:k", "=", "w"];
const PREFIXES: &[&str] = &["", "a", "a/", "ab", "ü", "z"];

#[derive(Clone, Debug)]
enum Op {
    Put {
        tags: Vec<usize>,
        /// Indexes into the live artifacts (modulo their count).
        links: Vec<usize>,
        external: Vec<usize>,
        content_type: Option<usize>,
        creator: Option<usize>,
        filename: Option<usize>,
        custom: Vec<(usize, usize)>,
    },
    /// Incremental changes to one live artifact.
    Update {
        target: usize,
        remove_tags: Vec<usize>,
        add_tags: Vec<usize>,
        remove_links: Vec<usize>,
        add_links: Vec<usize>,
        remove_external: Vec<usize>,
        add_external: Vec<usize>,
        unset_custom: Vec<usize>,
        set_custom: Vec<(usize, usize)>,
        filename: Option<Option<usize>>,
    },
    /// Replaces tags and links wholesale.
    Replace {
        target: usize,
        tags: Vec<usize>,
        links: Vec<usize>,
    },
    Delete {
        target: usize,
    },
    Reopen,
    Compact,
}

fn picks(n: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..n, 0..4)
}

fn pairs() -> impl Strategy<Value = Vec<(usize, usize)>> {
    proptest::collection::vec((0..KEYS.len(), 0..VALUES.len()), 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    let put = (
        picks(TAGS.len()),
        picks(64),
        picks(EXTERNAL.len()),
        proptest::option::of(0..TYPES.len()),
        proptest::option::of(0..CREATORS.len()),
        proptest::option::of(0..NAMES.len()),
        pairs(),
    )
        .prop_map(
            |(tags, links, external, content_type, creator, filename, custom)| Op::Put {
                tags,
                links,
                external,
                content_type,
                creator,
                filename,
                custom,
            },
        );
    let update = (
        (0..64usize, picks(TAGS.len()), picks(TAGS.len())),
        (picks(64), picks(64)),
        (picks(EXTERNAL.len()), picks(EXTERNAL.len())),
        (
            picks(KEYS.len()),
            pairs(),
            proptest::option::of(proptest::option::of(0..NAMES.len())),
        ),
    )
        .prop_map(
            |(
                (target, remove_tags, add_tags),
                (remove_links, add_links),
                (remove_external, add_external),
                (unset_custom, set_custom, filename),
            )| Op::Update {
                target,
                remove_tags,
                add_tags,
                remove_links,
                add_links,
                remove_external,
                add_external,
                unset_custom,
                set_custom,
                filename,
            },
        );
    let replace =
        (0..64usize, picks(TAGS.len()), picks(64)).prop_map(|(target, tags, links)| Op::Replace {
            target,
            tags,
            links,
        });
    prop_oneof![
        6 => put,
        4 => update,
        1 => replace,
        2 => (0..64usize).prop_map(|target| Op::Delete { target }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
    ]
}

/// Pushes each value not already there: the store's set semantics (first
/// occurrence keeps its place).
fn add_all<T: PartialEq + Clone>(set: &mut Vec<T>, values: impl IntoIterator<Item = T>) {
    for value in values {
        if !set.contains(&value) {
            set.push(value);
        }
    }
}

fn strings(alphabet: &[&str], picks: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    add_all(&mut out, picks.iter().map(|&i| alphabet[i].to_string()));
    out
}

/// Live artifacts' metadata in commit order, as the model has it.
#[derive(Default)]
struct Model {
    live: Vec<Metadata>,
    /// Ids deleted so far (a query may page after one).
    deleted: Vec<ArtifactId>,
}

impl Model {
    fn pick(&self, target: usize) -> Option<usize> {
        (!self.live.is_empty()).then(|| target % self.live.len())
    }

    fn ids_at(&self, picks: &[usize]) -> Vec<ArtifactId> {
        let mut out = Vec::new();
        if !self.live.is_empty() {
            add_all(
                &mut out,
                picks.iter().map(|&i| self.live[i % self.live.len()].id),
            );
        }
        out
    }

    fn meets(&self, meta: &Metadata, condition: &Condition) -> bool {
        match condition {
            Condition::Tag(tag) => meta.tags.contains(tag),
            Condition::LinksTo(target) => meta.links.contains(target),
            Condition::LinkedFrom(source) => self
                .live
                .iter()
                .any(|m| m.id == *source && m.links.contains(&meta.id)),
            Condition::LinksToExternal(entity) => meta.external_links.contains(entity),
            Condition::ContentType(value) => meta.content_type.as_deref() == Some(value),
            Condition::Creator(value) => meta.creator.as_deref() == Some(value),
            Condition::Filename(value) => meta.filename.as_deref() == Some(value),
            Condition::FilenamePrefix(prefix) => meta
                .filename
                .as_deref()
                .is_some_and(|name| name.starts_with(prefix.as_str())),
            Condition::Created(range) => (range.from_ms..range.to_ms).contains(&meta.created_ms),
            Condition::Modified(range) => (range.from_ms..range.to_ms).contains(&meta.modified_ms),
            Condition::CustomKey(key) => meta.custom.iter().any(|(k, _)| k == key),
            Condition::Custom(key, value) => {
                meta.custom.iter().any(|(k, v)| k == key && v == value)
            }
        }
    }

    fn answer(&self, conditions: &[Condition], order: Order) -> Vec<ArtifactId> {
        let mut ids: Vec<ArtifactId> = self
            .live
            .iter()
            .filter(|meta| conditions.iter().all(|c| self.meets(meta, c)))
            .map(|meta| meta.id)
            .collect();
        if order == Order::NewestFirst {
            ids.reverse();
        }
        ids
    }

    /// The queries checked after every step: every single condition over
    /// the alphabets and the ids in play, and pairs of them.
    fn queries(&self) -> Vec<Vec<Condition>> {
        let mut single: Vec<Condition> = Vec::new();
        single.extend(TAGS.iter().map(|t| Condition::Tag(t.to_string())));
        single.extend(
            EXTERNAL
                .iter()
                .map(|e| Condition::LinksToExternal(e.to_string())),
        );
        single.extend(TYPES.iter().map(|t| Condition::ContentType(t.to_string())));
        single.extend(CREATORS.iter().map(|c| Condition::Creator(c.to_string())));
        single.extend(NAMES.iter().map(|n| Condition::Filename(n.to_string())));
        single.extend(
            PREFIXES
                .iter()
                .map(|p| Condition::FilenamePrefix(p.to_string())),
        );
        single.extend(KEYS.iter().map(|k| Condition::CustomKey(k.to_string())));
        for key in KEYS {
            single.extend(
                VALUES
                    .iter()
                    .map(|v| Condition::Custom(key.to_string(), v.to_string())),
            );
        }
        for id in self
            .live
            .iter()
            .map(|m| m.id)
            .chain(self.deleted.last().copied())
        {
            single.push(Condition::LinksTo(id));
            single.push(Condition::LinkedFrom(id));
        }
        let mut times: Vec<u64> = self
            .live
            .iter()
            .flat_map(|m| [m.created_ms, m.modified_ms])
            .collect();
        times.sort_unstable();
        if let (Some(&first), Some(&last)) = (times.first(), times.last()) {
            let middle = times[times.len() / 2];
            for (from_ms, to_ms) in [(first, middle), (middle, last + 1), (first, last + 1)] {
                let range = TimeRange { from_ms, to_ms };
                single.push(Condition::Created(range));
                single.push(Condition::Modified(range));
            }
        }
        let mut queries: Vec<Vec<Condition>> = vec![vec![]];
        queries.extend(single.iter().cloned().map(|c| vec![c]));
        let pairs = [
            (
                Condition::Tag("run:42".into()),
                Condition::Tag("run".into()),
            ),
            (
                Condition::Tag("a".into()),
                Condition::FilenamePrefix("a".into()),
            ),
            (
                Condition::CustomKey("k".into()),
                Condition::Creator("alice".into()),
            ),
            (
                Condition::LinksToExternal("run:42".into()),
                Condition::Tag("run:42".into()),
            ),
        ];
        queries.extend(pairs.into_iter().map(|(a, b)| vec![a, b]));
        queries
    }
}

/// Every match of `conditions`, walked `page` ids at a time.
fn walk(store: &Store, conditions: &[Condition], order: Order, page: usize) -> Vec<ArtifactId> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let result = store
            .query(&Query {
                conditions: conditions.to_vec(),
                order,
                after,
                limit: page,
            })
            .unwrap();
        assert!(result.ids.len() <= page);
        ids.extend(&result.ids);
        match result.next {
            None => return ids,
            Some(next) => {
                assert_eq!(Some(&next), result.ids.last(), "next is the page's last id");
                after = Some(next);
            }
        }
    }
}

fn check(store: &Store, model: &Model) {
    let stored: Vec<Metadata> = store.ids().map(|id| store.metadata(&id).unwrap()).collect();
    assert_eq!(stored, model.live, "metadata read back equals the model's");
    // The indexes hold exactly the live artifacts' keys: nothing left
    // behind by a delete, an update or a dropped link.
    let keys: usize = model
        .live
        .iter()
        .map(|m| {
            m.tags.len()
                + m.links.len()
                + m.external_links.len()
                + usize::from(m.content_type.is_some())
                + usize::from(m.creator.is_some())
                + usize::from(m.filename.is_some())
                + 2 * m.custom.len()
        })
        .sum();
    let postings = lock(&store.inner.state).db.postings_len().unwrap();
    // Each live artifact also has its creation and modification times.
    let keys = keys + 2 * model.live.len();
    assert_eq!(postings, keys as u64, "postings in the indexes");
    for conditions in model.queries() {
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let expected = model.answer(&conditions, order);
            assert_eq!(
                walk(store, &conditions, order, 3),
                expected,
                "{conditions:?} {order:?}, pages of 3"
            );
            let whole = Query {
                conditions: conditions.clone(),
                order,
                after: None,
                limit: QUERY_PAGE_MAX,
            };
            let indexed = store.query(&whole).unwrap();
            assert_eq!(indexed.ids, expected, "{conditions:?} {order:?}");
            assert_eq!(indexed.next, None);
            assert_eq!(store.query_by_scan(&whole).unwrap(), indexed);
        }
    }
}

fn compact(store: &Store) {
    store
        .gc_pass(&GcPolicy {
            meta_log_dead_ratio_min: 0.0,
            ..GcPolicy::full()
        })
        .unwrap();
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir, unsynced());
    let mut model = Model::default();
    for (seed, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put {
                tags,
                links,
                external,
                content_type,
                creator,
                filename,
                custom,
            } => {
                let mut pairs: Vec<(String, String)> = Vec::new();
                for (k, v) in custom {
                    match pairs.iter_mut().find(|(key, _)| key == KEYS[k]) {
                        Some(pair) => pair.1 = VALUES[v].to_string(),
                        None => pairs.push((KEYS[k].to_string(), VALUES[v].to_string())),
                    }
                }
                let new = NewMetadata {
                    filename: filename.map(|i| NAMES[i].to_string()),
                    content_type: content_type.map(|i| TYPES[i].to_string()),
                    creator: creator.map(|i| CREATORS[i].to_string()),
                    tags: strings(TAGS, &tags),
                    links: model.ids_at(&links),
                    external_links: strings(EXTERNAL, &external),
                    custom: pairs,
                };
                // Small distinct contents that share chunks with each other.
                let mut bytes = data(96, seed as u64 % 5);
                bytes.extend(data(32, seed as u64));
                let id = put_with(&store, &bytes, 32, new.clone()).unwrap();
                let meta = store.metadata(&id).unwrap();
                assert_eq!(
                    (&meta.tags, &meta.links, &meta.external_links, &meta.custom),
                    (&new.tags, &new.links, &new.external_links, &new.custom)
                );
                model.live.push(meta);
            }
            Op::Update {
                target,
                remove_tags,
                add_tags,
                remove_links,
                add_links,
                remove_external,
                add_external,
                unset_custom,
                set_custom,
                filename,
            } => {
                let Some(at) = model.pick(target) else {
                    continue;
                };
                let change = MetadataUpdate {
                    filename: filename.map(|name| name.map(|i| NAMES[i].to_string())),
                    remove_tags: strings(TAGS, &remove_tags),
                    add_tags: strings(TAGS, &add_tags),
                    remove_links: model.ids_at(&remove_links),
                    add_links: model.ids_at(&add_links),
                    remove_external_links: strings(EXTERNAL, &remove_external),
                    add_external_links: strings(EXTERNAL, &add_external),
                    unset_custom: strings(KEYS, &unset_custom),
                    set_custom: set_custom
                        .iter()
                        .map(|&(k, v)| (KEYS[k].to_string(), VALUES[v].to_string()))
                        .collect(),
                    ..MetadataUpdate::default()
                };
                let meta = &mut model.live[at];
                if let Some(filename) = &change.filename {
                    meta.filename = filename.clone();
                }
                meta.tags.retain(|t| !change.remove_tags.contains(t));
                add_all(&mut meta.tags, change.add_tags.iter().cloned());
                meta.links.retain(|l| !change.remove_links.contains(l));
                add_all(&mut meta.links, change.add_links.iter().copied());
                meta.custom
                    .retain(|(k, _)| !change.unset_custom.contains(k));
                for (key, value) in &change.set_custom {
                    match meta.custom.iter_mut().find(|(k, _)| k == key) {
                        Some(pair) => pair.1 = value.clone(),
                        None => meta.custom.push((key.clone(), value.clone())),
                    }
                }
                meta.external_links
                    .retain(|e| !change.remove_external_links.contains(e));
                add_all(
                    &mut meta.external_links,
                    change.add_external_links.iter().cloned(),
                );
                let id = meta.id;
                let updated = store.update(&id, change).unwrap();
                let meta = &mut model.live[at];
                assert!(updated.modified_ms >= meta.created_ms);
                meta.modified_ms = updated.modified_ms;
                assert_eq!(&updated, meta);
            }
            Op::Replace {
                target,
                tags,
                links,
            } => {
                let Some(at) = model.pick(target) else {
                    continue;
                };
                let tags = strings(TAGS, &tags);
                let links = model.ids_at(&links);
                let id = model.live[at].id;
                let updated = store
                    .update(
                        &id,
                        MetadataUpdate {
                            tags: Some(tags.clone()),
                            links: Some(links.clone()),
                            ..MetadataUpdate::default()
                        },
                    )
                    .unwrap();
                let meta = &mut model.live[at];
                meta.tags = tags;
                meta.links = links;
                meta.modified_ms = updated.modified_ms;
                assert_eq!(&updated, meta);
            }
            Op::Delete { target } => {
                let Some(at) = model.pick(target) else {
                    continue;
                };
                let gone = model.live.remove(at);
                store.delete(&gone.id).unwrap();
                // The links to it are dropped, modification times unchanged.
                for meta in &mut model.live {
                    meta.links.retain(|l| *l != gone.id);
                }
                model.deleted.push(gone.id);
                // Paging continues after a deleted id, in both orders.
                let after = |order| {
                    store
                        .query(&Query {
                            order,
                            after: Some(gone.id),
                            limit: 1,
                            ..Query::default()
                        })
                        .unwrap()
                        .ids
                };
                let next = model.live.get(at).map(|m| m.id);
                let previous = at.checked_sub(1).map(|i| model.live[i].id);
                assert_eq!(after(Order::OldestFirst).first().copied(), next);
                assert_eq!(after(Order::NewestFirst).first().copied(), previous);
            }
            Op::Reopen => {
                drop(store);
                store = open(&dir, unsynced());
            }
            Op::Compact => compact(&store),
        }
        check(&store, &model);
    }
    drop(store);
    let store = open(&dir, unsynced());
    check(&store, &model);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn queries_match_a_model_through_updates_deletes_reopens_and_compaction(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        run(ops);
    }
}

/// The ':' cases by name: values that a string-glued key would confuse.
#[test]
fn colon_and_prefix_values_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    let put = |tags: &[&str], custom: &[(&str, &str)], seed| {
        let new = NewMetadata {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            custom: custom
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NewMetadata::default()
        };
        put_with(&store, &data(64, seed), 32, new).unwrap()
    };
    let a = put(&["run:42"], &[("k:v", "w")], 1);
    let b = put(&["run"], &[("k", "v:w")], 2);
    let c = put(&["run:4"], &[("k", "v")], 3);
    let find = |condition: Condition| {
        store
            .query(&Query {
                conditions: vec![condition],
                limit: 10,
                ..Query::default()
            })
            .unwrap()
            .ids
    };
    assert_eq!(find(Condition::Tag("run:42".into())), [a]);
    assert_eq!(find(Condition::Tag("run".into())), [b]);
    assert_eq!(find(Condition::Tag("run:4".into())), [c]);
    assert!(find(Condition::Tag("run:".into())).is_empty());
    assert_eq!(find(Condition::CustomKey("k".into())), [b, c]);
    assert_eq!(find(Condition::CustomKey("k:v".into())), [a]);
    assert_eq!(find(Condition::Custom("k".into(), "v".into())), [c]);
    assert_eq!(find(Condition::Custom("k".into(), "v:w".into())), [b]);
    assert_eq!(find(Condition::Custom("k:v".into(), "w".into())), [a]);
    assert!(find(Condition::Custom("k:v:w".into(), "".into())).is_empty());
}

/// Paging a tag's matches a few ids at a time while another thread puts
/// and deletes artifacts carrying the tag: no id comes twice, every
/// artifact live throughout comes once, and the order is commit order.
#[test]
fn paging_never_repeats_or_skips_under_concurrent_inserts_and_deletes() {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    let tagged = |seed: u64| {
        let new = NewMetadata {
            tags: vec!["t".into()],
            ..NewMetadata::default()
        };
        put_with(&store, &data(40, seed), 32, new).unwrap()
    };
    let mut stable = Vec::new();
    let mut victims = Vec::new();
    for seed in 0..300 {
        if seed % 3 == 0 {
            victims.push(tagged(seed));
        } else {
            stable.push(tagged(seed));
        }
    }
    let done = AtomicBool::new(false);
    let condition = vec![Condition::Tag("t".into())];
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut seed = 1_000;
            let mut victims = victims.into_iter();
            while !done.load(Ordering::Acquire) {
                tagged(seed);
                seed += 1;
                if let Some(victim) = victims.next() {
                    store.delete(&victim).unwrap();
                }
            }
        });
        // Stops the writer however the reader ends (a failed assertion too).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stop = Stop(&done);
        for order in [Order::OldestFirst, Order::NewestFirst] {
            for _ in 0..3 {
                let ids = walk(&store, &condition, order, 2);
                let unique: HashSet<ArtifactId> = ids.iter().copied().collect();
                assert_eq!(unique.len(), ids.len(), "no id twice");
                for id in &stable {
                    assert!(unique.contains(id), "{id} live throughout, not skipped");
                }
                // Whatever is still live keeps the relative order it has
                // in commit order.
                let live: Vec<ArtifactId> = store.ids().collect();
                let mut expected: Vec<ArtifactId> =
                    live.into_iter().filter(|id| unique.contains(id)).collect();
                if order == Order::NewestFirst {
                    expected.reverse();
                }
                let returned: Vec<ArtifactId> =
                    ids.into_iter().filter(|id| expected.contains(id)).collect();
                assert_eq!(returned, expected, "{order:?}");
            }
        }
    });
}

/// Goal: a filename prefix or time range matching more artifacts than the
/// query engine collects to drive a walk (4096) is answered by the walk in
/// commit order, with the same results as the scan. Method: 4,200
/// artifacts under one prefix, every other one tagged; pages from both
/// ends and the full count.
#[test]
fn wide_prefix_and_time_range_fall_back_to_the_walk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    let mut ids = Vec::new();
    for i in 0..4200u64 {
        let new = NewMetadata {
            filename: Some(format!("f/{i}")),
            tags: if i % 2 == 0 {
                vec!["even".into()]
            } else {
                vec![]
            },
            ..NewMetadata::default()
        };
        ids.push(put_with(&store, &data(8, i), 32, new).unwrap());
    }
    let created: Vec<u64> = [ids[0], ids[4199]]
        .iter()
        .map(|id| store.metadata(id).unwrap().created_ms)
        .collect();
    let wide = [
        vec![Condition::FilenamePrefix("f/".into())],
        vec![Condition::Created(TimeRange {
            from_ms: created[0],
            to_ms: created[1] + 1,
        })],
    ];
    for conditions in wide {
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let page = Query {
                conditions: conditions.clone(),
                order,
                after: None,
                limit: 10,
            };
            let first = store.query(&page).unwrap();
            let expected: Vec<ArtifactId> = match order {
                Order::OldestFirst => ids[..10].to_vec(),
                Order::NewestFirst => ids.iter().rev().take(10).copied().collect(),
            };
            assert_eq!(first.ids, expected, "{conditions:?} {order:?}");
            assert_eq!(first, store.query_by_scan(&page).unwrap());
            assert_eq!(walk(&store, &conditions, order, 1000).len(), 4200);
            let mut with_tag = conditions.clone();
            with_tag.push(Condition::Tag("even".into()));
            assert_eq!(walk(&store, &with_tag, order, 1000).len(), 2100);
        }
    }
}
