//! Goal: `blobs.query` (and `stat`, `stats`) as a real plugin sees them
//! answer exactly what the script that built the store implies: every
//! condition kind, ANDs of them, both orders, paged; the same after the
//! store is reopened; and never anything of another tenant.
//! Method: the metadata test plugin (guest/components/meta-plugin) runs in
//! process against an on-disk store: `setup` puts, updates and deletes a
//! scripted set of artifacts, `query` pages queries built here with a
//! small limit. Each query's pages (ids and order) must equal both the
//! host library's `Store::query` paged the same way on the same store and
//! the pages of the matches of [`final_state`], a model of the script held
//! here, so the test fails if the host and the store agree on a wrong
//! answer.

use std::collections::BTreeMap;

use tensor_blob_host::runtime::Runtime;
use tensor_blob_host::store::{
    ArtifactId, Condition, Metadata, Order, Query, Store, StoreOptions, TimeRange,
};

use crate::common::{self, open_runtime, PluginRun};

/// Page size of every query: small, so most answers take several pages.
const LIMIT: usize = 2;

/// One artifact as the plugin's script leaves it (after its updates).
struct Model {
    name: &'static str,
    filename: Option<&'static str>,
    content_type: Option<&'static str>,
    creator: Option<&'static str>,
    tags: &'static [&'static str],
    links: &'static [&'static str],
    external: &'static [&'static str],
    custom: &'static [(&'static str, &'static str)],
}

/// The live artifacts after `meta-plugin setup`, in commit order: its puts,
/// then its updates, then the delete of `d` (which dropped `d` from the
/// links of `f`). Written from the script, not read from the store.
fn final_state() -> Vec<Model> {
    vec![
        Model {
            name: "a",
            filename: Some("weights/model.bin"),
            content_type: Some("application/x-safetensors"),
            creator: Some("alice"),
            tags: &["model", "ns/weights", "é-ünï", "model:v2"],
            links: &[],
            external: &["run:42"],
            custom: &[("epoch", "5"), ("lr", "0.1")],
        },
        Model {
            name: "b",
            filename: Some("weights/model.bin.json"),
            content_type: Some("application/json"),
            creator: Some("bob"),
            tags: &["model:v1", "mod"],
            links: &["a"],
            external: &["run:42", "user/ñ"],
            custom: &[("epoch", "4")],
        },
        Model {
            name: "c",
            filename: Some("weights/"),
            content_type: None,
            creator: Some("alice"),
            tags: &["model", "mod"],
            links: &["b"],
            external: &[],
            custom: &[("lr", "0.1")],
        },
        Model {
            name: "e",
            filename: Some("wéights/ü.bin.1"),
            content_type: Some("application/x-safetensors"),
            creator: Some("ëve"),
            tags: &["ns/weights/extra", "日本語"],
            links: &["a"],
            external: &["dataset/x", "run:42"],
            custom: &[],
        },
        Model {
            name: "f",
            filename: Some("notes.txt"),
            content_type: None,
            creator: Some("alice"),
            tags: &["model"],
            links: &[],
            external: &[],
            custom: &[("lr", "0.2")],
        },
    ]
}

/// A tenant's store as the script left it: names to ids (`d` included,
/// though deleted), the model, and each live artifact's metadata.
struct Scripted {
    ids: BTreeMap<String, ArtifactId>,
    model: Vec<Model>,
    meta: BTreeMap<&'static str, Metadata>,
}

impl Scripted {
    fn id(&self, name: &str) -> ArtifactId {
        self.ids[name]
    }

    /// Whether model artifact `m` meets `condition`. Times come from the
    /// store's metadata (the script cannot know them); all else from the
    /// model.
    fn meets(&self, m: &Model, condition: &Condition) -> bool {
        let named = |names: &[&str], id: &ArtifactId| {
            names.iter().any(|name| self.ids.get(*name) == Some(id))
        };
        let meta = &self.meta[m.name];
        match condition {
            Condition::Tag(tag) => m.tags.contains(&tag.as_str()),
            Condition::LinksTo(target) => named(m.links, target),
            Condition::LinkedFrom(source) => self
                .model
                .iter()
                .any(|s| self.ids.get(s.name) == Some(source) && s.links.contains(&m.name)),
            Condition::LinksToExternal(entity) => m.external.contains(&entity.as_str()),
            Condition::ContentType(value) => m.content_type == Some(value.as_str()),
            Condition::Creator(value) => m.creator == Some(value.as_str()),
            Condition::Filename(value) => m.filename == Some(value.as_str()),
            Condition::FilenamePrefix(prefix) => m
                .filename
                .is_some_and(|name| name.as_bytes().starts_with(prefix.as_bytes())),
            Condition::Created(range) => (range.from_ms..range.to_ms).contains(&meta.created_ms),
            Condition::Modified(range) => (range.from_ms..range.to_ms).contains(&meta.modified_ms),
            Condition::CustomKey(key) => m.custom.iter().any(|(k, _)| k == key),
            Condition::Custom(key, value) => m.custom.contains(&(key.as_str(), value.as_str())),
        }
    }

    /// The pages the model says `query` (its conditions and order) has.
    fn expected(&self, query: &Query) -> String {
        let mut ids: Vec<ArtifactId> = self
            .model
            .iter()
            .filter(|m| query.conditions.iter().all(|c| self.meets(m, c)))
            .map(|m| self.id(m.name))
            .collect();
        if query.order == Order::NewestFirst {
            ids.reverse();
        }
        pages(ids.chunks(LIMIT).map(<[ArtifactId]>::to_vec).collect())
    }
}

/// Pages as the plugin prints them: `[ID ID] [ID]`, `[]` for no match.
fn pages(pages: Vec<Vec<ArtifactId>>) -> String {
    if pages.is_empty() {
        return "[]".into();
    }
    let pages: Vec<String> = pages
        .iter()
        .map(|page| {
            let ids: Vec<String> = page.iter().map(ArtifactId::to_string).collect();
            format!("[{}]", ids.join(" "))
        })
        .collect();
    pages.join(" ")
}

/// `query` paged by the host library, as the plugin pages it.
fn store_pages(store: &Store, query: &Query) -> String {
    let mut query = Query {
        limit: LIMIT,
        ..query.clone()
    };
    let mut all = Vec::new();
    loop {
        let page = store.query(&query).unwrap();
        all.push(page.ids);
        match page.next {
            None => return pages(all),
            next => query.after = next,
        }
    }
}

/// The plugin's words for `query` (see guest/components/meta-plugin).
fn words(query: &Query) -> Vec<String> {
    let mut words = Vec::new();
    let mut push = |items: &[&str]| words.extend(items.iter().map(|s| s.to_string()));
    if query.order == Order::NewestFirst {
        push(&["newest"]);
    }
    if let Some(after) = &query.after {
        push(&["after", &after.to_string()]);
    }
    for condition in &query.conditions {
        match condition {
            Condition::Tag(s) => push(&["tag", s]),
            Condition::LinksTo(id) => push(&["links-to", &id.to_string()]),
            Condition::LinkedFrom(id) => push(&["linked-from", &id.to_string()]),
            Condition::LinksToExternal(s) => push(&["external", s]),
            Condition::ContentType(s) => push(&["content-type", s]),
            Condition::Creator(s) => push(&["creator", s]),
            Condition::Filename(s) => push(&["filename", s]),
            Condition::FilenamePrefix(s) => push(&["filename-prefix", s]),
            Condition::Created(r) => {
                push(&["created", &r.from_ms.to_string(), &r.to_ms.to_string()])
            }
            Condition::Modified(r) => {
                push(&["modified", &r.from_ms.to_string(), &r.to_ms.to_string()])
            }
            Condition::CustomKey(s) => push(&["custom-key", s]),
            Condition::Custom(k, v) => push(&["custom", k, v]),
        }
    }
    words
}

/// Runs the meta plugin as `tenant`; it must exit 0.
fn meta_plugin(runtime: &Runtime, tenant: &str, args: &[&str]) -> String {
    let PluginRun { stdout, outcome } = common::run_plugin(
        runtime,
        tensor_blob_artifacts::META_PLUGIN_WASM,
        tenant,
        args,
    );
    assert_eq!(outcome, Ok(0), "meta-plugin {args:?}: {stdout}");
    stdout
}

/// Runs `queries` through the plugin's `query` mode; one line each, in order.
fn plugin_pages(runtime: &Runtime, tenant: &str, queries: &[Query]) -> Vec<String> {
    let limit = LIMIT.to_string();
    let mut args: Vec<String> = vec!["query".into(), limit];
    for (n, query) in queries.iter().enumerate() {
        if n > 0 {
            args.push("--".into());
        }
        args.extend(words(query));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = meta_plugin(runtime, tenant, &args);
    let lines: Vec<String> = stdout
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let prefix = format!("{n}: ");
            line.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("line {n}: {line:?}"))
                .to_string()
        })
        .collect();
    assert_eq!(lines.len(), queries.len(), "{stdout}");
    lines
}

/// Runs `meta-plugin setup` as `tenant` and checks the store against the
/// model: the live artifacts, in commit order, and each one's metadata.
fn setup(runtime: &Runtime, tenant: &str) -> Scripted {
    let stdout = meta_plugin(runtime, tenant, &["setup"]);
    let ids: BTreeMap<String, ArtifactId> = stdout
        .lines()
        .map(|line| {
            let (name, id) = line.split_once('=').expect("NAME=ID");
            (name.to_string(), id.parse().unwrap())
        })
        .collect();
    assert_eq!(ids.len(), 6, "{stdout}");
    let store = runtime.tenant_store(tenant).unwrap();
    let model = final_state();
    let live: Vec<ArtifactId> = model.iter().map(|m| ids[m.name]).collect();
    assert_eq!(
        store.ids().collect::<Vec<_>>(),
        live,
        "commit order, d gone"
    );
    assert!(!store.exists(&ids["d"]).unwrap());
    let sorted = |items: &[&str]| {
        let mut items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        items.sort();
        items
    };
    let mut meta = BTreeMap::new();
    for m in &model {
        let got = store.metadata(&ids[m.name]).unwrap();
        let mut tags = got.tags.clone();
        tags.sort();
        assert_eq!(tags, sorted(m.tags), "{}", m.name);
        let mut links: Vec<ArtifactId> = m.links.iter().map(|l| ids[*l]).collect();
        links.sort();
        let mut got_links = got.links.clone();
        got_links.sort();
        assert_eq!(got_links, links, "{}", m.name);
        let mut external = got.external_links.clone();
        external.sort();
        assert_eq!(external, sorted(m.external), "{}", m.name);
        let mut custom = got.custom.clone();
        custom.sort();
        let mut want: Vec<(String, String)> = m
            .custom
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        assert_eq!(custom, want, "{}", m.name);
        assert_eq!(got.filename.as_deref(), m.filename, "{}", m.name);
        assert_eq!(got.content_type.as_deref(), m.content_type, "{}", m.name);
        assert_eq!(got.creator.as_deref(), m.creator, "{}", m.name);
        assert_eq!(got.size, format!("artifact {}", m.name).len() as u64);
        meta.insert(m.name, got);
    }
    // Times as the script makes them: commit order, an update moves
    // `modified` on, a delete of a linked artifact does not (b, and f,
    // whose link to d went, keep theirs: b was never updated).
    let created: Vec<u64> = model.iter().map(|m| meta[m.name].created_ms).collect();
    assert!(created.is_sorted(), "{created:?}");
    for m in &model {
        assert!(meta[m.name].modified_ms >= meta[m.name].created_ms);
    }
    assert_eq!(meta["b"].modified_ms, meta["b"].created_ms);
    Scripted { ids, model, meta }
}

fn query(conditions: Vec<Condition>, order: Order) -> Query {
    Query {
        conditions,
        order,
        after: None,
        limit: LIMIT,
    }
}

/// One query per condition kind (several values each: hits, misses,
/// prefixes of other values, non-ASCII), ANDs of several, none at all;
/// each in both orders. Ids are `ids`'s (another tenant's, for isolation).
fn queries(s: &Scripted, ids: &Scripted) -> Vec<Query> {
    use Condition::*;
    let text = |v: &str| v.to_string();
    let id = |name: &str| ids.id(name);
    let time = |m: &Metadata| m.created_ms;
    let modified = |m: &Metadata| m.modified_ms;
    let range = |from_ms, to_ms| TimeRange { from_ms, to_ms };
    let created_b = time(&s.meta["b"]);
    let created_e = time(&s.meta["e"]);
    let created_c = time(&s.meta["c"]);
    let modified_a = modified(&s.meta["a"]);
    let sets: Vec<Vec<Condition>> = vec![
        vec![Tag(text("model"))],
        vec![Tag(text("model:v1"))],
        vec![Tag(text("model:v2"))],
        vec![Tag(text("mod"))],
        vec![Tag(text("ns/weights"))],
        vec![Tag(text("ns/weights/extra"))],
        vec![Tag(text("日本語"))],
        vec![Tag(text("é-ünï"))],
        vec![Tag(text("absent"))],
        vec![LinksTo(id("a"))],
        vec![LinksTo(id("b"))],
        vec![LinksTo(id("c"))],
        vec![LinksTo(id("d"))],
        vec![LinkedFrom(id("b"))],
        vec![LinkedFrom(id("c"))],
        vec![LinkedFrom(id("e"))],
        vec![LinkedFrom(id("f"))],
        vec![LinkedFrom(id("d"))],
        vec![LinksToExternal(text("run:42"))],
        vec![LinksToExternal(text("user/ñ"))],
        vec![LinksToExternal(text("dataset/x"))],
        vec![ContentType(text("application/x-safetensors"))],
        vec![ContentType(text("application/json"))],
        vec![Creator(text("alice"))],
        vec![Creator(text("ëve"))],
        vec![Filename(text("weights/model.bin"))],
        vec![Filename(text("wéights/ü.bin"))],
        vec![Filename(text("wéights/ü.bin.1"))],
        vec![FilenamePrefix(text("weights/"))],
        vec![FilenamePrefix(text(""))],
        vec![FilenamePrefix(text("wé"))],
        vec![FilenamePrefix(text("weights/model.bin"))],
        vec![Created(range(0, u64::MAX))],
        vec![Created(range(created_b, created_e))],
        vec![Created(range(created_c, created_c + 1))],
        vec![Created(range(created_e, created_b))],
        vec![Modified(range(modified_a, modified_a + 1))],
        vec![Modified(range(0, created_b))],
        vec![CustomKey(text("lr"))],
        vec![CustomKey(text("note"))],
        vec![Custom(text("epoch"), text("5"))],
        vec![Custom(text("epoch"), text("3"))],
        vec![Custom(text("lr"), text("0.1"))],
        vec![Tag(text("model")), Creator(text("alice"))],
        vec![
            LinksToExternal(text("run:42")),
            FilenamePrefix(text("weights/")),
        ],
        vec![
            Tag(text("model")),
            CustomKey(text("lr")),
            ContentType(text("application/x-safetensors")),
        ],
        vec![Tag(text("mod")), LinksTo(id("b"))],
        vec![LinkedFrom(id("b")), Tag(text("model"))],
        vec![Tag(text("model")), Tag(text("mod"))],
        vec![Tag(text("model:v1")), Creator(text("alice"))],
        vec![Created(range(0, u64::MAX)), LinksToExternal(text("run:42"))],
        vec![],
    ];
    let mut queries = Vec::new();
    for conditions in sets {
        queries.push(query(conditions.clone(), Order::OldestFirst));
        queries.push(query(conditions, Order::NewestFirst));
    }
    queries
}

/// The host's metadata of one artifact as the plugin's `stat` prints it.
fn stat_line(meta: &Metadata) -> String {
    let links: Vec<String> = meta.links.iter().map(ArtifactId::to_string).collect();
    let digest: String = meta
        .digest
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "stat {} filename={:?} content-type={:?} creator={:?} size={} digest={digest} chunks={} created={} modified={} tags={:?} links={links:?} external={:?} custom={:?}",
        meta.id,
        meta.filename,
        meta.content_type,
        meta.creator,
        meta.size,
        meta.chunk_count,
        meta.created_ms,
        meta.modified_ms,
        meta.tags,
        meta.external_links,
        meta.custom,
    )
}

/// A runtime over `dir` without background GC, so totals hold still
/// between the plugin's answer and the host's.
fn runtime(dir: &std::path::Path) -> Runtime {
    open_runtime(dir, StoreOptions::default()).with_gc(None)
}

/// Checks every query's pages through the plugin against the host
/// library's and the model's; returns the plugin's lines.
fn check_queries(runtime: &Runtime, tenant: &str, s: &Scripted, queries: &[Query]) -> Vec<String> {
    let got = plugin_pages(runtime, tenant, queries);
    let store = runtime.tenant_store(tenant).unwrap();
    for (n, (query, got)) in queries.iter().zip(&got).enumerate() {
        let expected = s.expected(query);
        assert_eq!(got, &expected, "query {n} {query:?}: plugin vs model");
        assert_eq!(
            store_pages(&store, query),
            expected,
            "query {n} {query:?}: store vs model"
        );
    }
    got
}

#[test]
fn plugin_queries_match_the_store_and_the_script_and_survive_a_reopen() {
    let _reopening = common::reopening();
    let dir = tempfile::tempdir().unwrap();
    let first = runtime(dir.path());
    let s = setup(&first, "default");
    let queries = queries(&s, &s);
    let before = check_queries(&first, "default", &s, &queries);
    // Not vacuous: most queries match something, many span pages.
    let matched = before.iter().filter(|l| *l != "[]").count();
    let paged = before.iter().filter(|l| l.contains("] [")).count();
    assert!(matched > queries.len() / 2 && paged > 10, "{before:?}");

    // stat through the plugin is the host's metadata; d is gone.
    let names: Vec<&str> = ["a", "b", "c", "d", "e", "f"].into();
    let ids: Vec<String> = names.iter().map(|n| s.id(n).to_string()).collect();
    let mut args = vec!["stat"];
    args.extend(ids.iter().map(String::as_str));
    let stdout = meta_plugin(&first, "default", &args);
    let store = first.tenant_store("default").unwrap();
    let expected: Vec<String> = names
        .iter()
        .map(|name| match store.metadata(&s.id(name)) {
            Ok(meta) => stat_line(&meta),
            Err(_) => format!("stat {} error not-found", s.id(name)),
        })
        .collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
    assert!(expected[3].ends_with("error not-found"));

    // stats through the plugin are the store's.
    let stdout = meta_plugin(&first, "default", &["stats"]);
    let t = store.stats();
    assert_eq!(
        stdout.trim_end(),
        format!(
            "stats artifacts={} chunks={} logical={} physical={} disk={} live={} dead={} garbage={} segments={}",
            t.artifacts, t.chunks, t.logical_bytes, t.physical_bytes, t.disk_bytes, t.live_bytes,
            t.dead_bytes, t.garbage_bytes, t.segments
        )
    );
    assert_eq!((t.artifacts, t.chunks), (5, 5));
    assert_eq!(t.logical_bytes, 5 * "artifact a".len() as u64);
    assert!(t.garbage_bytes > 0, "d's chunk is garbage until GC: {t:?}");

    // Closed and reopened: the same pages, from the replayed catalog.
    drop(store);
    drop(first);
    let second = runtime(dir.path());
    let after = check_queries(&second, "default", &s, &queries);
    assert_eq!(after, before);
}

/// Goal: a plugin's queries never reach another tenant's artifacts.
/// Method: tenants A and B both run the script (so B has artifacts with
/// the same tags, names and links of its own); B's queries name A's ids.
/// Every answer is B's own (links to or from A's ids: nothing), and an
/// `after` of A's is `not-found`.
#[test]
fn queries_as_another_tenant_see_none_of_its_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let a = setup(&runtime, "tenant-a");
    let b = setup(&runtime, "tenant-b");
    let queries = queries(&b, &a);
    let got = check_queries(&runtime, "tenant-b", &b, &queries);
    let a_ids: Vec<String> = a.ids.values().map(ArtifactId::to_string).collect();
    for line in &got {
        assert!(!a_ids.iter().any(|id| line.contains(id.as_str())), "{line}");
    }
    // A's ids name nothing in B: every links-to / linked-from is empty.
    for (query, line) in queries.iter().zip(&got) {
        if query
            .conditions
            .iter()
            .any(|c| matches!(c, Condition::LinksTo(_) | Condition::LinkedFrom(_)))
        {
            assert_eq!(line, "[]", "{query:?}");
        }
    }
    // B sees its own artifacts through the other conditions.
    assert!(got.iter().filter(|l| *l != "[]").count() > 20, "{got:?}");

    let mut after = Vec::new();
    for name in ["a", "d", "f"] {
        for order in [Order::OldestFirst, Order::NewestFirst] {
            after.push(Query {
                after: Some(a.id(name)),
                ..query(vec![], order)
            });
            after.push(Query {
                after: Some(a.id(name)),
                ..query(vec![Condition::Tag("model".into())], order)
            });
        }
    }
    let lines = plugin_pages(&runtime, "tenant-b", &after);
    assert!(lines.iter().all(|l| l == "error not-found"), "{lines:?}");
    // The same `after`s in A's own store continue A's walk, from the
    // deleted d's place too.
    let lines = plugin_pages(&runtime, "tenant-a", &after);
    let p = |groups: &[&[&str]]| {
        let ids = |names: &&[&str]| names.iter().map(|name| a.id(name)).collect();
        pages(groups.iter().map(ids).collect())
    };
    let expected = [
        p(&[&["b", "c"], &["e", "f"]]),
        p(&[&["c", "f"]]),
        p(&[]),
        p(&[]),
        p(&[&["e", "f"]]),
        p(&[&["f"]]),
        p(&[&["c", "b"], &["a"]]),
        p(&[&["c", "a"]]),
        p(&[]),
        p(&[]),
        p(&[&["e", "c"], &["b", "a"]]),
        p(&[&["c", "a"]]),
    ];
    assert_eq!(lines, expected);
}
