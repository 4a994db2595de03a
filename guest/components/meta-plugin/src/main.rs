//! Metadata test plugin: drives the host-answered metadata calls of
//! `tensor:blob/blobs` from a real component. The tests in
//! tests/all/plugin_queries.rs read what it prints. Never a real plugin.
//!
//! Modes:
//! - `setup`: puts six artifacts `a`..`f` with chosen tags (with `:`, `/`,
//!   prefixes of each other, non-ASCII), links, external links, content
//!   types, creators, filenames and custom pairs; then updates some (adds
//!   and removes tags, links, external links, custom pairs, a filename)
//!   and deletes `d`, which `f` links to. Prints `NAME=ID` per artifact
//!   (`d` too). The tests hold the same script as their expected state.
//! - `query LIMIT QUERY [-- QUERY]...`: runs each query, paging with
//!   `LIMIT` until `next` is none, and prints `N: [ID ID] [ID] ...` (one
//!   bracket per page) or `N: error KIND`. A query is a list of words:
//!   `newest`, `after ID`, `tag S`, `links-to ID`, `linked-from ID`,
//!   `external S`, `content-type S`, `creator S`, `filename S`,
//!   `filename-prefix S`, `created FROM TO`, `modified FROM TO`,
//!   `custom-key K`, `custom K V`.
//! - `stat ID...`: one `stat ...` line of each artifact's metadata.
//! - `stats`: one `stats ...` line of the tenant's totals.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

include!("../../shared/blobs_support.rs");

use std::collections::BTreeMap;

use tensor::blob::blobs;
use tensor::blob::types::{
    Condition, Error, KeyValue, MetadataUpdate, PutOptions, Query, TimeRange,
};

/// Pages one query may take before the plugin calls the answer unbounded.
const PAGES_MAX: usize = 100_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("query") => {
            let limit = args
                .get(1)
                .and_then(|a| a.parse().ok())
                .expect("query LIMIT");
            for (n, words) in args[2..].split(|word| word == "--").enumerate() {
                println!("{n}: {}", run_query(words, limit));
            }
        }
        Some("stat") => {
            for id in &args[1..] {
                match blobs::stat(id) {
                    Ok(meta) => println!("{}", stat_line(&meta)),
                    Err(error) => println!("stat {id} error {}", kind(&error)),
                }
            }
        }
        Some("stats") => {
            let s = blobs::stats().expect("stats");
            println!(
                "stats artifacts={} chunks={} logical={} physical={} disk={} live={} dead={} garbage={} segments={}",
                s.artifacts,
                s.chunks,
                s.logical_bytes,
                s.physical_bytes,
                s.disk_bytes,
                s.live_bytes,
                s.dead_bytes,
                s.garbage_bytes,
                s.segments
            );
        }
        _ => {
            eprintln!(
                "usage: meta-plugin setup | query LIMIT QUERY [-- QUERY]... | stat ID... | stats"
            );
            std::process::exit(2);
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<KeyValue> {
    items
        .iter()
        .map(|(key, value)| KeyValue {
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect()
}

/// One artifact of the script: (name, filename, content type, creator,
/// tags, links by name, external links, custom pairs).
type Spec = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

const ARTIFACTS: &[Spec] = &[
    (
        "a",
        Some("weights/model.bin"),
        Some("application/x-safetensors"),
        Some("alice"),
        &["model", "model:v1", "ns/weights", "é-ünï"],
        &[],
        &["run:42"],
        &[("epoch", "3"), ("lr", "0.1")],
    ),
    (
        "b",
        Some("weights/model.bin.json"),
        Some("application/json"),
        Some("bob"),
        &["model:v1", "mod"],
        &["a"],
        &["run:42", "user/ñ"],
        &[("epoch", "4")],
    ),
    (
        "c",
        Some("weights/"),
        None,
        Some("alice"),
        &["model"],
        &["a", "b"],
        &[],
        &[("lr", "0.1")],
    ),
    // Deleted by the script: it carries something of every kind the
    // queries ask for, so each index must forget it.
    (
        "d",
        Some("weights/d.bin"),
        Some("application/x-safetensors"),
        Some("alice"),
        &["model", "mod", "日本語"],
        &["c"],
        &["run:42", "dataset/x"],
        &[("lr", "0.1"), ("epoch", "5")],
    ),
    (
        "e",
        Some("wéights/ü.bin"),
        Some("application/x-safetensors"),
        Some("ëve"),
        &["ns/weights/extra", "日本語"],
        &["b"],
        &["dataset/x"],
        &[],
    ),
    (
        "f",
        Some("notes.txt"),
        None,
        Some("alice"),
        &["model"],
        &["d"],
        &[],
        &[("note", "")],
    ),
];

fn setup() {
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    for &(name, filename, content_type, creator, tags, links, external, custom) in ARTIFACTS {
        let options = PutOptions {
            filename: filename.map(str::to_string),
            content_type: content_type.map(str::to_string),
            creator: creator.map(str::to_string),
            tags: strings(tags),
            links: links.iter().map(|link| ids[link].clone()).collect(),
            external_links: strings(external),
            custom: pairs(custom),
            chunking: None,
            compress: None,
        };
        let data = format!("artifact {name}");
        let id = blobs::put(data.as_bytes(), &options).expect("put");
        ids.insert(name, id);
    }
    let changes = [
        (
            "a",
            MetadataUpdate {
                remove_tags: strings(&["model:v1"]),
                add_tags: strings(&["model:v2"]),
                set_custom: pairs(&[("epoch", "5")]),
                ..no_change()
            },
        ),
        (
            "c",
            MetadataUpdate {
                remove_links: vec![ids["a"].clone()],
                add_tags: strings(&["mod"]),
                ..no_change()
            },
        ),
        (
            "e",
            MetadataUpdate {
                filename: Some(Some("wéights/ü.bin.1".into())),
                remove_links: vec![ids["b"].clone()],
                add_links: vec![ids["a"].clone()],
                add_external_links: strings(&["run:42"]),
                ..no_change()
            },
        ),
        (
            "f",
            MetadataUpdate {
                unset_custom: strings(&["note"]),
                set_custom: pairs(&[("lr", "0.2")]),
                ..no_change()
            },
        ),
    ];
    for (name, change) in changes {
        blobs::update(&ids[name], &change).expect("update");
    }
    blobs::delete(&ids["d"]).expect("delete");
    for (name, id) in &ids {
        println!("{name}={id}");
    }
}

/// The query `words` describe (see the module doc), with `limit`.
fn parse_query(words: &[String], limit: u32) -> Query {
    let mut query = Query {
        conditions: Vec::new(),
        newest_first: false,
        after: None,
        limit,
    };
    let mut words = words.iter().cloned();
    let mut next = || words.next();
    while let Some(word) = next() {
        let mut arg = || next().unwrap_or_else(|| panic!("{word} needs an argument"));
        let mut ms = || arg().parse::<u64>().expect("milliseconds");
        let condition = match word.as_str() {
            "newest" => {
                query.newest_first = true;
                continue;
            }
            "after" => {
                query.after = Some(arg());
                continue;
            }
            "tag" => Condition::Tag(arg()),
            "links-to" => Condition::LinksTo(arg()),
            "linked-from" => Condition::LinkedFrom(arg()),
            "external" => Condition::LinksToExternal(arg()),
            "content-type" => Condition::ContentType(arg()),
            "creator" => Condition::Creator(arg()),
            "filename" => Condition::Filename(arg()),
            "filename-prefix" => Condition::FilenamePrefix(arg()),
            "created" => Condition::Created(TimeRange {
                from_ms: ms(),
                to_ms: ms(),
            }),
            "modified" => Condition::Modified(TimeRange {
                from_ms: ms(),
                to_ms: ms(),
            }),
            "custom-key" => Condition::CustomKey(arg()),
            "custom" => Condition::Custom(KeyValue {
                key: arg(),
                value: arg(),
            }),
            other => panic!("unknown query word {other:?}"),
        };
        query.conditions.push(condition);
    }
    query
}

/// Every page of the query, `[ID ...]` each, or `error KIND`.
fn run_query(words: &[String], limit: u32) -> String {
    let mut query = parse_query(words, limit);
    let mut pages = Vec::new();
    loop {
        let page = match blobs::query(&query) {
            Ok(page) => page,
            Err(error) => return format!("error {}", kind(&error)),
        };
        pages.push(format!("[{}]", page.ids.join(" ")));
        match page.next {
            None => return pages.join(" "),
            Some(_) if pages.len() >= PAGES_MAX => return "error unbounded".into(),
            Some(next) => query.after = Some(next),
        }
    }
}

fn stat_line(meta: &blobs::Metadata) -> String {
    let digest: String = meta.digest.iter().map(|b| format!("{b:02x}")).collect();
    let custom: Vec<(&str, &str)> = meta
        .custom
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    format!(
        "stat {} filename={:?} content-type={:?} creator={:?} size={} digest={digest} chunks={} created={} modified={} tags={:?} links={:?} external={:?} custom={custom:?}",
        meta.id,
        meta.filename,
        meta.content_type,
        meta.creator,
        meta.size,
        meta.chunk_count,
        meta.created_ms,
        meta.modified_ms,
        meta.tags,
        meta.links,
        meta.external_links,
    )
}
