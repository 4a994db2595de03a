//! Benchmark plugin: `bench-plugin BYTES` makes BYTES of pseudo-random data
//! in its own memory (untimed), then times a streaming put (1 MiB writes
//! plus `finish`, which returns once the artifact is durable) and a
//! streaming get (1 MiB reads, every chunk verified by the host), and
//! checks the bytes read back against what was written.
//!
//! Prints one line: `put_seconds=<f64> get_seconds=<f64>
//! compare_seconds=<f64> bytes=<u64> id=<id>` (the get's time includes the
//! plugin's compare of what it read, also given alone).
//!
//! `bench-plugin meta CALLS` times metadata calls instead (see [`meta`]).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

use std::time::Instant;

use tensor::blob::blobs;
use tensor::blob::types::{Condition, PutOptions, Query};

const PIECE_BYTES: usize = 1 << 20;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("meta") {
        let calls = std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(10_000);
        meta(calls);
        return;
    }
    let bytes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256 << 20);
    let data = pseudo_random(bytes, 0x5eed);
    let expected = blake3::hash(&data);
    let options = PutOptions {
        filename: Some("bench.bin".into()),
        content_type: None,
        creator: Some("bench-plugin".into()),
        tags: Vec::new(),
        links: Vec::new(),
        external_links: Vec::new(),
        custom: Vec::new(),
        chunking: None,
        compress: None,
    };

    let started = Instant::now();
    let writer = blobs::create_writer(&options).unwrap_or_else(|e| fail("create-writer", e));
    for piece in data.chunks(PIECE_BYTES) {
        writer.write(piece).unwrap_or_else(|e| fail("write", e));
    }
    let id = writer.finish().unwrap_or_else(|e| fail("finish", e));
    let put_seconds = started.elapsed().as_secs_f64();
    drop(writer);

    // Each piece is compared with what was written (a memcmp): hashing it
    // here would time the plugin's own BLAKE3, in wasm, not the get.
    let started = Instant::now();
    let reader = blobs::open_reader(&id, 0).unwrap_or_else(|e| fail("open-reader", e));
    let mut total = 0usize;
    let mut same = true;
    // The compare is the plugin's own work, not the get's: timed apart,
    // so the get can be read with and without it.
    let mut compare_seconds = 0.0;
    loop {
        let piece = reader
            .read(PIECE_BYTES as u32)
            .unwrap_or_else(|e| fail("read", e));
        if piece.is_empty() {
            break;
        }
        let compared = Instant::now();
        same &= data
            .get(total..total + piece.len())
            .is_some_and(|written| equal(written, &piece));
        compare_seconds += compared.elapsed().as_secs_f64();
        total += piece.len();
    }
    let get_seconds = started.elapsed().as_secs_f64();
    if total != bytes || !same || blake3::hash(&data) != expected {
        eprintln!("bench-plugin: read back {total} bytes that do not match what was written");
        std::process::exit(1);
    }
    println!(
        "put_seconds={put_seconds} get_seconds={get_seconds} compare_seconds={compare_seconds} bytes={bytes} id={id}"
    );
}

/// Whether `a` and `b` hold the same bytes: words compared without an
/// early exit, so the loop vectorises (a plain slice comparison runs a byte
/// at a time in wasm, slower than the get it would be timing).
fn equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails = a_words.remainder() == b_words.remainder();
    let diff = a_words.zip(b_words).fold(0u64, |diff, (x, y)| {
        let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("8 bytes"));
        diff | (word(x) ^ word(y))
    });
    tails && diff == 0
}

/// Artifacts `meta` puts before it times anything.
const META_ARTIFACTS: usize = 1000;
/// Tags spread over those artifacts: `find-by-tag` of one finds 100.
const META_TAG_KINDS: usize = 10;

/// Puts [`META_ARTIFACTS`] small artifacts (untimed), then times `calls`
/// calls each of `stat`, `exists`, `list` (a page of 100 ids), `find-by-tag`
/// (100 ids of 1000) and, where the interface has it, `query` (a tag
/// condition, a page of 100), and prints the mean nanoseconds per call:
/// `stat_ns=<f64> exists_ns=<f64> list_ns=<f64> find_ns=<f64> [query_ns=<f64>]`.
/// Every answer is checked, so no call is optimised away or fails quietly.
fn meta(calls: u32) {
    let mut ids = Vec::with_capacity(META_ARTIFACTS);
    for i in 0..META_ARTIFACTS {
        let options = PutOptions {
            tags: vec!["bench".into(), format!("t{}", i % META_TAG_KINDS)],
            ..options()
        };
        let data = (i as u64).to_le_bytes();
        ids.push(blobs::put(&data, &options).unwrap_or_else(|e| fail("put", e)));
    }
    let probe = &ids[META_ARTIFACTS / 2];
    let mut line = String::new();
    let mut time = |name: &str, call: &mut dyn FnMut()| {
        let started = Instant::now();
        for _ in 0..calls {
            call();
        }
        let ns = started.elapsed().as_nanos() as f64 / f64::from(calls.max(1));
        line.push_str(&format!("{name}_ns={ns:.0} "));
    };
    time("stat", &mut || {
        let meta = blobs::stat(probe).unwrap_or_else(|e| fail("stat", e));
        assert_eq!(&meta.id, probe);
    });
    time("exists", &mut || {
        assert!(blobs::exists(probe).unwrap_or_else(|e| fail("exists", e)));
    });
    time("list", &mut || {
        let page = blobs::list(Some(probe), 100).unwrap_or_else(|e| fail("list", e));
        assert_eq!(page.len(), 100);
    });
    time("find", &mut || {
        let found = blobs::find_by_tag("t3").unwrap_or_else(|e| fail("find-by-tag", e));
        assert_eq!(found.len(), META_ARTIFACTS / META_TAG_KINDS);
    });
    meta_query(&mut time);
    println!("{}", line.trim_end());
}

/// `query` with one tag condition: a page of 100, all its matches.
/// (`query` did not exist before the metadata moved to the host: the
/// "before" build of this plugin times nothing here.)
fn meta_query(time: &mut dyn FnMut(&str, &mut dyn FnMut())) {
    let query = Query {
        conditions: vec![Condition::Tag("t3".into())],
        newest_first: false,
        after: None,
        limit: 100,
    };
    time("query", &mut || {
        let page = blobs::query(&query).unwrap_or_else(|e| fail("query", e));
        assert_eq!(page.ids.len(), META_ARTIFACTS / META_TAG_KINDS);
    });
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

fn fail(doing: &str, error: tensor::blob::types::Error) -> ! {
    eprintln!("bench-plugin: {doing}: {error:?}");
    std::process::exit(1);
}

/// xorshift64: incompressible enough that content-defined chunking finds
/// no duplicates, cheap enough not to matter (it is not timed anyway).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
