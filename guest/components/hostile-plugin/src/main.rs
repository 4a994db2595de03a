//! Hostile plugin for host tests: `hostile-plugin ATTACK [ARG]` attacks the
//! `tensor:blob/blobs` imports from the plugin side and prints one line per
//! step, `<step>: <outcome>`, where an outcome is `ok ...` or the WIT error
//! case (`not-found`, `invalid-argument`, `closed`, ...). The tests in
//! tests/all/hostile_plugin.rs read those lines. Never a real plugin.
//!
//! Attacks:
//! - `foreign ID`: every call that takes an id, on ID (another tenant's),
//!   queries among them (links to it, linked from it, paging after it);
//! - `limits`: a flood of open handles, oversized writes and reads, use of
//!   finished and aborted writers, invalid options;
//! - `huge BYTES`: fills the chunker's memory (every writer it may hold,
//!   each buffering the most it can), then makes every call that takes a
//!   string, a list or inline data with one argument of BYTES, to see that
//!   the host refuses it before it reaches the chunker;
//! - `query-flood ROUNDS`: queries past every bound (33 conditions, each
//!   string one byte over its bound, empty ones, limits over 65536,
//!   malformed and unknown `after`s), 32 conditions with every string at
//!   its bound, then ROUNDS queries of the largest page over the store,
//!   each answer checked to be bounded and to end;
//! - `abandon BYTES`: writes BYTES to a writer and exits without finishing;
//! - `memory-bomb`: grows its memory until the host refuses;
//! - `spin`: loops forever, calling nothing;
//! - `panic`: panics at once (a plain trap, no limit involved);
//! - `noop`: returns at once, printing nothing (start-up benchmarks).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

include!("../../shared/blobs_support.rs");

use tensor::blob::blobs;
use tensor::blob::types::{
    CdcParams, Chunking, Condition, Error, KeyValue, MetadataUpdate, PutOptions, Query, QueryPage,
    TimeRange,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("foreign") => foreign(args.get(2).expect("foreign ID")),
        Some("limits") => limits(),
        Some("query-flood") => query_flood(
            args.get(2)
                .and_then(|a| a.parse().ok())
                .expect("query-flood ROUNDS"),
        ),
        Some("huge") => huge(
            args.get(2)
                .and_then(|a| a.parse().ok())
                .expect("huge BYTES"),
        ),
        Some("abandon") => abandon(
            args.get(2)
                .and_then(|a| a.parse().ok())
                .expect("abandon BYTES"),
        ),
        Some("memory-bomb") => memory_bomb(),
        Some("spin") => spin(),
        Some("panic") => panic!("hostile-plugin panics on purpose"),
        Some("noop") => {}
        _ => {
            eprintln!(
                "usage: hostile-plugin foreign ID | limits | query-flood ROUNDS | huge BYTES | abandon BYTES | memory-bomb | spin | panic | noop"
            );
            std::process::exit(2);
        }
    }
}

/// Prints `step: ok <what>` or `step: <error case>`.
fn report<T>(step: &str, result: Result<T, Error>, what: impl FnOnce(&T) -> String) -> Option<T> {
    match result {
        Ok(value) => {
            println!("{step}: ok {}", what(&value));
            Some(value)
        }
        Err(error) => {
            println!("{step}: {}", kind(&error));
            None
        }
    }
}

fn options() -> PutOptions {
    PutOptions {
        filename: None,
        content_type: None,
        creator: None,
        tags: Vec::new(),
        links: Vec::new(),
        external_links: Vec::new(),
        custom: Vec::new(),
        chunking: None,
        compress: None,
    }
}

/// Everything that takes an id, on an id this tenant does not have.
fn foreign(id: &str) {
    let id = id.to_string();
    report("exists", blobs::exists(&id), |b| b.to_string());
    report("get", blobs::get(&id), |b| format!("{} bytes", b.len()));
    report("stat", blobs::stat(&id), |m| m.id.clone());
    report("open-reader", blobs::open_reader(&id, 0), |_| {
        "reader".into()
    });
    let rename = MetadataUpdate {
        filename: Some(Some("stolen".into())),
        ..no_change()
    };
    report("update", blobs::update(&id, &rename), |m| m.id.clone());
    report("delete", blobs::delete(&id), |()| String::new());
    let linked = PutOptions {
        links: vec![id.clone()],
        ..options()
    };
    report("put-linking-it", blobs::put(b"link", &linked), |id| {
        id.clone()
    });
    report("list", blobs::list(None, 1000), |ids| {
        format!("{} ids", ids.len())
    });
    report("list-after-it", blobs::list(Some(&id), 1000), |ids| {
        format!("{} ids", ids.len())
    });
    report("find-by-tag", blobs::find_by_tag("secret"), |ids| {
        format!("{} ids", ids.len())
    });
    let by = |condition: Condition| Query {
        conditions: vec![condition],
        ..query()
    };
    report(
        "query-links-to-it",
        blobs::query(&by(Condition::LinksTo(id.clone()))),
        page_size,
    );
    report(
        "query-linked-from-it",
        blobs::query(&by(Condition::LinkedFrom(id.clone()))),
        page_size,
    );
    report(
        "query-tag",
        blobs::query(&by(Condition::Tag("secret".into()))),
        page_size,
    );
    for (step, newest_first) in [("query-after-it", false), ("query-after-it-newest", true)] {
        let after = Query {
            after: Some(id.clone()),
            newest_first,
            ..query()
        };
        report(step, blobs::query(&after), page_size);
    }
    report("stats", blobs::stats(), |s| {
        format!("{} artifacts", s.artifacts)
    });
}

/// A query of every artifact, oldest first, the largest page.
fn query() -> Query {
    Query {
        conditions: Vec::new(),
        newest_first: false,
        after: None,
        limit: QUERY_LIMIT_MAX,
    }
}

/// The largest `limit` the WIT allows, and the most conditions.
const QUERY_LIMIT_MAX: u32 = 65536;
const QUERY_CONDITIONS_MAX: usize = 32;

fn page_size(page: &QueryPage) -> String {
    format!("{} ids", page.ids.len())
}

/// A condition of each kind that takes a string, named, its string `extra`
/// bytes past the kind's bound (`extra` 0: at it).
fn string_conditions(extra: usize) -> Vec<(&'static str, Condition)> {
    let s = |bound: usize| "q".repeat(bound + extra);
    vec![
        ("tag", Condition::Tag(s(256))),
        ("external", Condition::LinksToExternal(s(256))),
        ("content-type", Condition::ContentType(s(4096))),
        ("creator", Condition::Creator(s(4096))),
        ("filename", Condition::Filename(s(4096))),
        ("filename-prefix", Condition::FilenamePrefix(s(4096))),
        ("custom-key", Condition::CustomKey(s(256))),
        (
            "custom-pair-key",
            Condition::Custom(KeyValue {
                key: s(256),
                value: "v".into(),
            }),
        ),
        (
            "custom-value",
            Condition::Custom(KeyValue {
                key: "k".into(),
                value: s(4096),
            }),
        ),
    ]
}

/// Every bound of `query`, then a flood of the largest queries.
fn query_flood(rounds: usize) {
    let with = |conditions: Vec<Condition>| Query {
        conditions,
        ..query()
    };
    let many = vec![Condition::Tag("t".into()); QUERY_CONDITIONS_MAX + 1];
    report("query-33-conditions", blobs::query(&with(many)), page_size);
    let at_bounds: Vec<Condition> = string_conditions(0)
        .into_iter()
        .map(|(_, condition)| condition)
        .cycle()
        .take(QUERY_CONDITIONS_MAX)
        .collect();
    report(
        "query-32-conditions-at-bounds",
        blobs::query(&with(at_bounds)),
        page_size,
    );
    for (what, condition) in string_conditions(1) {
        let step = format!("query-{what}-over");
        report(&step, blobs::query(&with(vec![condition])), page_size);
    }
    let empty = [
        ("query-empty-tag", Condition::Tag(String::new())),
        (
            "query-empty-external",
            Condition::LinksToExternal(String::new()),
        ),
        ("query-empty-filename", Condition::Filename(String::new())),
        (
            "query-empty-custom-key",
            Condition::CustomKey(String::new()),
        ),
    ];
    for (step, condition) in empty {
        report(step, blobs::query(&with(vec![condition])), page_size);
    }
    let malformed = "../../etc/passwd".to_string();
    report(
        "query-links-to-malformed",
        blobs::query(&with(vec![Condition::LinksTo(malformed.clone())])),
        page_size,
    );
    for (step, limit) in [
        ("query-limit-65537", QUERY_LIMIT_MAX + 1),
        ("query-limit-max", u32::MAX),
    ] {
        report(step, blobs::query(&Query { limit, ..query() }), page_size);
    }
    report(
        "query-limit-0",
        blobs::query(&Query {
            limit: 0,
            ..query()
        }),
        |page| format!("{} ids, next {}", page.ids.len(), page.next.is_some()),
    );
    report(
        "query-after-malformed",
        blobs::query(&Query {
            after: Some(malformed),
            ..query()
        }),
        page_size,
    );
    report(
        "query-after-unknown",
        blobs::query(&Query {
            after: Some("0123456789abcdef0123456789abcdef".into()),
            ..query()
        }),
        page_size,
    );

    // The flood: the largest pages, walking the whole store with every
    // condition the host cannot narrow by an index.
    let everything = TimeRange {
        from_ms: 0,
        to_ms: u64::MAX,
    };
    let shapes = [
        with(Vec::new()),
        Query {
            newest_first: true,
            ..query()
        },
        with(vec![Condition::FilenamePrefix(String::new())]),
        with(vec![Condition::Created(everything); QUERY_CONDITIONS_MAX]),
        with(vec![
            Condition::Modified(everything),
            Condition::FilenamePrefix(String::new()),
        ]),
    ];
    let mut most = 0;
    let outcome = (0..rounds).try_for_each(|round| {
        let page = blobs::query(&shapes[round % shapes.len()])?;
        let full = page.ids.len() == QUERY_LIMIT_MAX as usize;
        if page.ids.len() > QUERY_LIMIT_MAX as usize || (page.next.is_some() && !full) {
            // More than a page, or a cursor after a page that was not full.
            return Err(Error::TooLarge(format!(
                "round {round}: {} ids, next {:?}",
                page.ids.len(),
                page.next
            )));
        }
        most = most.max(page.ids.len());
        Ok(())
    });
    report("query-flood", outcome, |()| {
        format!("{rounds} queries, at most {most} ids")
    });
    report("stats", blobs::stats(), |s| {
        format!("{} artifacts", s.artifacts)
    });
}

fn limits() {
    // A flood of open writers: the host caps them.
    let mut writers = Vec::new();
    loop {
        match blobs::create_writer(&options()) {
            Ok(writer) => writers.push(writer),
            Err(error) => {
                println!("open-writers: {} after {}", kind(&error), writers.len());
                break;
            }
        }
        if writers.len() > 10_000 {
            println!("open-writers: ok unbounded");
            break;
        }
    }
    drop(writers);
    report(
        "open-after-release",
        blobs::create_writer(&options()),
        |_| "writer".into(),
    );

    // Oversized calls: one byte over the documented 16 MiB.
    let writer = blobs::create_writer(&options()).expect("a writer");
    let big = vec![7u8; (16 << 20) + 1];
    report("write-over-16-mib", writer.write(&big), |()| String::new());
    drop(big);
    report("put-over-inline-max", oversized_put(), |id| id.clone());

    // Use after finish and abort.
    let writer = blobs::create_writer(&options()).expect("a writer");
    report("write", writer.write(b"hello"), |()| String::new());
    let id = report("finish", writer.finish(), |id| id.clone()).expect("finished");
    report("finish-again", writer.finish(), |id| id.clone());
    report("write-after-finish", writer.write(b"more"), |()| {
        String::new()
    });
    let aborted = blobs::create_writer(&options()).expect("a writer");
    report("write-before-abort", aborted.write(b"doomed"), |()| {
        String::new()
    });
    aborted.abort();
    report("finish-after-abort", aborted.finish(), |id| id.clone());

    // Oversized and out-of-range reads.
    let reader = blobs::open_reader(&id, 0).expect("a reader");
    report("read-u32-max", reader.read(u32::MAX), |b| {
        format!("{} bytes", b.len())
    });
    report("seek-past-end", reader.seek(u64::MAX), |()| String::new());
    report(
        "open-reader-past-end",
        blobs::open_reader(&id, u64::MAX),
        |_| "reader".into(),
    );

    // Options the host must refuse.
    let bad_chunking = [
        ("chunking-fixed-0", Chunking::Fixed(0)),
        ("chunking-fixed-4-gib", Chunking::Fixed(u32::MAX)),
        (
            "chunking-cdc-min-over-max",
            Chunking::ContentDefined(CdcParams {
                min: 1 << 20,
                avg: 1 << 16,
                max: 1 << 12,
            }),
        ),
    ];
    for (step, chunking) in bad_chunking {
        let options = PutOptions {
            chunking: Some(chunking),
            ..options()
        };
        report(step, blobs::put(b"data", &options), |id| id.clone());
    }
    let long = PutOptions {
        filename: Some("x".repeat(1 << 20)),
        ..options()
    };
    report("filename-1-mib", blobs::put(b"data", &long), |id| {
        id.clone()
    });
    let many_tags = PutOptions {
        tags: (0..100_000).map(|i| format!("t{i}")).collect(),
        ..options()
    };
    report("tags-100000", blobs::put(b"data", &many_tags), |id| {
        id.clone()
    });
    report("not-an-id", blobs::get("../../etc/passwd"), |b| {
        format!("{} bytes", b.len())
    });
    report("list-limit-65536", blobs::list(None, 65536), |ids| {
        format!("{} ids", ids.len())
    });
    report("list-limit-max", blobs::list(None, u32::MAX), |ids| {
        format!("{} ids", ids.len())
    });
    let unknown = "0123456789abcdef0123456789abcdef".to_string();
    report(
        "list-after-unknown",
        blobs::list(Some(&unknown), 10),
        |ids| format!("{} ids", ids.len()),
    );
    report("find-by-empty-tag", blobs::find_by_tag(""), |ids| {
        format!("{} ids", ids.len())
    });
    report("stats", blobs::stats(), |s| {
        format!("{} artifacts", s.artifacts)
    });
}

/// Writers with the largest fixed chunks, opened until the host refuses,
/// each left buffering as much as the chunker ever holds for one: a window
/// less one byte, in a buffer grown to two windows.
fn fill_writers() -> Vec<blobs::Writer> {
    const CHUNK: u32 = 16 << 20;
    let largest = PutOptions {
        chunking: Some(Chunking::Fixed(CHUNK)),
        ..options()
    };
    let piece = vec![9u8; CHUNK as usize - 1];
    let mut writers = Vec::new();
    let outcome = loop {
        let writer = match blobs::create_writer(&largest) {
            Ok(writer) => writer,
            Err(Error::InvalidArgument(_)) if !writers.is_empty() => break Ok(()),
            Err(error) => break Err(error),
        };
        // One byte past a window cuts a chunk and doubles the buffer; the
        // second piece then fills it again.
        let filled = writer
            .write(&piece)
            .and_then(|()| writer.write(&[1]))
            .and_then(|()| writer.write(&piece));
        if let Err(error) = filled {
            break Err(error);
        }
        writers.push(writer);
        if writers.len() > 1000 {
            break Ok(());
        }
    };
    report("fill-writers", outcome, |()| {
        format!("{} writers", writers.len())
    });
    writers
}

/// One argument of `bytes` bytes in each call that takes a string, a list
/// or inline data, while the chunker's memory is as full as its writers
/// can make it. The host must answer each with a typed error: copied into
/// the chunker, any of them would trap it (and so this plugin).
fn huge(bytes: usize) {
    let kept = report("put-small", blobs::put(b"small", &options()), |id| {
        id.clone()
    })
    .expect("a small put");
    let mut writers = fill_writers();
    // A handle free for create-writer, its buffer free in the chunker.
    drop(writers.pop());
    {
        // One string, moved into each argument and back (a copy would
        // double this plugin's memory).
        let long = "x".repeat(bytes);
        let with_filename = PutOptions {
            filename: Some(long),
            ..options()
        };
        report(
            "put-huge-filename",
            blobs::put(b"data", &with_filename),
            |id| id.clone(),
        );
        report(
            "create-writer-huge-filename",
            blobs::create_writer(&with_filename),
            |_| "writer".into(),
        );
        let long = with_filename.filename.expect("set above");
        let with_value = PutOptions {
            custom: vec![KeyValue {
                key: "k".into(),
                value: long,
            }],
            ..options()
        };
        report(
            "put-huge-custom-value",
            blobs::put(b"data", &with_value),
            |id| id.clone(),
        );
        let long = with_value
            .custom
            .into_iter()
            .next()
            .expect("set above")
            .value;
        let rename = MetadataUpdate {
            filename: Some(Some(long)),
            ..no_change()
        };
        report("update-huge-filename", blobs::update(&kept, &rename), |m| {
            m.id.clone()
        });
        let long = rename.filename.flatten().expect("set above");
        report("find-by-huge-tag", blobs::find_by_tag(&long), |ids| {
            format!("{} ids", ids.len())
        });
        report("get-huge-id", blobs::get(&long), |b| {
            format!("{} bytes", b.len())
        });
        report("list-after-huge-id", blobs::list(Some(&long), 10), |ids| {
            format!("{} ids", ids.len())
        });
    }
    {
        // The same bytes as a list of 1 MiB tags.
        let tag = "t".repeat(1 << 20);
        let with_tags = PutOptions {
            tags: vec![tag; bytes.div_ceil(1 << 20)],
            ..options()
        };
        report("put-huge-tag-list", blobs::put(b"data", &with_tags), |id| {
            id.clone()
        });
    }
    {
        let data = vec![3u8; bytes];
        report("put-huge-data", blobs::put(&data, &options()), |id| {
            id.clone()
        });
    }
    for writer in &writers {
        writer.abort();
    }
    drop(writers);
    report("get-small", blobs::get(&kept), |b| {
        String::from_utf8_lossy(b).into_owned()
    });
    report("stats", blobs::stats(), |s| {
        format!("{} artifacts", s.artifacts)
    });
}

/// `put` of one byte more than the host's inline limit.
fn oversized_put() -> Result<String, Error> {
    let max = blobs::inline_bytes_max();
    let data = vec![1u8; max as usize + 1];
    blobs::put(&data, &options())
}

/// Starts an upload and walks away: nothing of it may become visible.
fn abandon(bytes: usize) {
    let writer = blobs::create_writer(&options()).expect("a writer");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut piece = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < bytes {
        for byte in piece.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let n = piece.len().min(bytes - written);
        writer.write(&piece[..n]).expect("write");
        written += n;
    }
    println!("abandon: wrote {written} bytes, exiting without finish");
    std::process::exit(0);
}

/// Grows linear memory 64 MiB at a time until the host refuses.
fn memory_bomb() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 64 << 20];
        block[0] = 1;
        hoard.push(block);
        println!("memory-bomb: holding {} MiB", hoard.len() * 64);
    }
}

/// Burns CPU forever without a host call: only a time limit stops it.
fn spin() {
    println!("spin: started");
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
