//! Benchmark plugin: `bench-plugin BYTES` makes BYTES of pseudo-random data
//! in its own memory (untimed), then times a streaming put (1 MiB writes
//! plus `finish`, which returns once the artifact is durable) and a
//! streaming get (1 MiB reads, every chunk verified by the host), and
//! checks the bytes read back against the digest of what was written.
//!
//! Prints one line: `put_seconds=<f64> get_seconds=<f64> bytes=<u64> id=<id>`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

use std::time::Instant;

use tensor::blob::blobs;
use tensor::blob::types::PutOptions;

const PIECE_BYTES: usize = 1 << 20;

fn main() {
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
        custom: Vec::new(),
        chunking: None,
    };

    let started = Instant::now();
    let writer = blobs::create_writer(&options).unwrap_or_else(|e| fail("create-writer", e));
    for piece in data.chunks(PIECE_BYTES) {
        writer.write(piece).unwrap_or_else(|e| fail("write", e));
    }
    let id = writer.finish().unwrap_or_else(|e| fail("finish", e));
    let put_seconds = started.elapsed().as_secs_f64();
    drop(writer);

    let mut hasher = blake3::Hasher::new();
    let started = Instant::now();
    let reader = blobs::open_reader(&id, 0).unwrap_or_else(|e| fail("open-reader", e));
    let mut total = 0usize;
    loop {
        let piece = reader
            .read(PIECE_BYTES as u32)
            .unwrap_or_else(|e| fail("read", e));
        if piece.is_empty() {
            break;
        }
        total += piece.len();
        hasher.update(&piece);
    }
    let get_seconds = started.elapsed().as_secs_f64();
    if total != bytes || hasher.finalize() != expected {
        eprintln!("bench-plugin: read back {total} bytes that do not match what was written");
        std::process::exit(1);
    }
    println!("put_seconds={put_seconds} get_seconds={get_seconds} bytes={bytes} id={id}");
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
