//! Default chunking and compression, chosen from data: prints, for each
//! data set and each CDC parameter set, what the store would hold (distinct
//! chunks, their bytes, the bytes stored after compression, the per-chunk
//! overhead) and how fast chunking and hashing run on one thread; then, at
//! the chosen parameters, each codec's stored bytes and speeds. Every
//! figure of a table comes from the same run.
//!
//! `cargo bench -p tensor-blob-host --bench chunking [-- --tar FILE...]`
//!
//! Data sets, each a series of versions stored one after the other into
//! one store (deduplicated across versions):
//! - `tar`: successive versions of one crate's source as uncompressed tar
//!   (`tests/bench/peers.sh` builds cranelift-codegen 0.133.0, 0.134.0 and
//!   0.135.8 under `target/peers/in/`; `--tar FILE...` names others);
//!   skipped when absent;
//! - `checkpoints`: a synthetic training run: 48 MiB of float32 weights in
//!   96 tensors of 512 KiB; each of 6 steps rewrites 10 % of the tensors
//!   (fine-tuning with frozen layers) with new normally distributed values;
//! - `jsonl`: a JSON-lines dataset that grows by appends and has a few
//!   records edited in place between 5 versions (8 MiB at first).

use std::path::PathBuf;
use std::time::Instant;

use tensor_blob_chunking::{chunk_digest, chunk_lengths, CdcParams, Chunking};
use tensor_blob_host::store::compress::{self, Compression};

const MB: f64 = 1e6;

/// Per distinct chunk, what the store keeps beside its payload: the 48-byte
/// record header, its 48-byte hint entry and its catalog rows (about 200 B:
/// catalog.redb held 3.1 GB at 10 M chunks and 1 M artifacts, artifact rows
/// included; see ARCHITECTURE.md, "The catalog at scale").
const PER_CHUNK_BYTES: u64 = 48 + 48 + 200;

fn main() {
    let mut tars: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--tar" {
            tars.extend(args.next().map(PathBuf::from));
        }
    }
    if tars.is_empty() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers/in");
        for v in ["0.133.0", "0.134.0", "0.135.8"] {
            let tar = dir.join(format!("cranelift-codegen-{v}.tar"));
            if tar.exists() {
                tars.push(tar);
            }
        }
    }
    let mut sets: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
    if tars.is_empty() {
        println!("tar set skipped: run tests/bench/peers.sh first, or pass --tar FILE...");
    } else {
        let versions = tars.iter().map(|t| std::fs::read(t).unwrap()).collect();
        sets.push(("tar", versions));
    }
    sets.push(("checkpoints", checkpoints()));
    sets.push(("jsonl", jsonl()));

    let params: [(u32, u32, u32); 7] = [
        (1 << 10, 4 << 10, 16 << 10),
        (2 << 10, 8 << 10, 32 << 10),
        (4 << 10, 16 << 10, 64 << 10),
        (8 << 10, 32 << 10, 128 << 10),
        (16 << 10, 64 << 10, 256 << 10),
        (64 << 10, 256 << 10, 1 << 20),
        (256 << 10, 1 << 20, 4 << 20),
    ];
    for (name, versions) in &sets {
        let total: usize = versions.iter().map(Vec::len).sum();
        println!(
            "\n{name}: {} versions, {:.1} MB in all (zstd per chunk at the default level, as the store does)",
            versions.len(),
            total as f64 / MB
        );
        println!(
            "{:>16} {:>9} {:>11} {:>11} {:>11} {:>11} {:>10}",
            "min/avg/max KiB",
            "chunks",
            "distinct MB",
            "stored MB",
            "+overhead",
            "dedup",
            "chunk MB/s"
        );
        for &(min, avg, max) in &params {
            let row = measure(versions, min, avg, max, Compression::DEFAULT);
            println!(
                "{:>16} {:>9} {:>11.2} {:>11.2} {:>11.2} {:>10.2}x {:>10.0}",
                format!("{}/{}/{}", min >> 10, avg >> 10, max >> 10),
                row.distinct_chunks,
                row.distinct_bytes as f64 / MB,
                row.stored_bytes as f64 / MB,
                (row.stored_bytes + row.distinct_chunks * PER_CHUNK_BYTES) as f64 / MB,
                total as f64 / row.distinct_bytes as f64,
                row.chunk_rate / MB,
            );
        }
    }

    // Codecs at the chosen parameters, on the compressible sets.
    let chosen = CdcParams::DEFAULT;
    for (name, versions) in &sets {
        println!(
            "\n{name}: codecs on the distinct chunks at {}/{}/{} KiB",
            chosen.min_bytes >> 10,
            chosen.avg_bytes >> 10,
            chosen.max_bytes >> 10
        );
        let chunks = distinct_chunks(versions, chosen);
        let logical: usize = chunks.iter().map(Vec::len).sum();
        println!(
            "{:>10} {:>11} {:>8} {:>14} {:>16}",
            "codec", "stored MB", "ratio", "compress MB/s", "decompress MB/s"
        );
        let mut codecs: Vec<(String, Codec)> = vec![("none".into(), Codec::None)];
        for level in [1, 3, 6, 9, 19] {
            codecs.push((format!("zstd {level}"), Codec::Zstd(level)));
        }
        codecs.push(("lz4".into(), Codec::Lz4));
        for (label, codec) in codecs {
            let (stored, compress_rate, decompress_rate) = codec_figures(&chunks, codec);
            println!(
                "{label:>10} {:>11.2} {:>7.2}x {:>14.0} {:>16.0}",
                stored as f64 / MB,
                logical as f64 / stored as f64,
                compress_rate / MB,
                decompress_rate / MB
            );
        }
    }
}

struct Row {
    distinct_chunks: u64,
    distinct_bytes: u64,
    stored_bytes: u64,
    chunk_rate: f64,
}

fn measure(versions: &[Vec<u8>], min: u32, avg: u32, max: u32, compression: Compression) -> Row {
    let chunking = Chunking::ContentDefined(CdcParams {
        min_bytes: min,
        avg_bytes: avg,
        max_bytes: max,
    });
    let mut seen = std::collections::HashSet::new();
    let mut row = Row {
        distinct_chunks: 0,
        distinct_bytes: 0,
        stored_bytes: 0,
        chunk_rate: 0.0,
    };
    let mut chunk_seconds = 0.0;
    let mut total = 0usize;
    for version in versions {
        let started = Instant::now();
        let lengths = chunk_lengths(version, chunking).unwrap();
        let mut digests = Vec::with_capacity(lengths.len());
        let mut at = 0;
        for &len in &lengths {
            digests.push(chunk_digest(&version[at..at + len]));
            at += len;
        }
        chunk_seconds += started.elapsed().as_secs_f64();
        total += version.len();
        let mut at = 0;
        for (len, digest) in lengths.into_iter().zip(digests) {
            let chunk = &version[at..at + len];
            at += len;
            if seen.insert(*digest.as_bytes()) {
                row.distinct_chunks += 1;
                row.distinct_bytes += len as u64;
                row.stored_bytes +=
                    compress::compress(chunk, compression).map_or(len, |c| c.len()) as u64;
            }
        }
    }
    row.chunk_rate = total as f64 / chunk_seconds;
    row
}

fn distinct_chunks(versions: &[Vec<u8>], params: CdcParams) -> Vec<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for version in versions {
        let mut at = 0;
        for len in chunk_lengths(version, Chunking::ContentDefined(params)).unwrap() {
            let chunk = &version[at..at + len];
            at += len;
            if seen.insert(*chunk_digest(chunk).as_bytes()) {
                out.push(chunk.to_vec());
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Codec {
    None,
    Zstd(i32),
    Lz4,
}

/// (stored bytes, compress B/s, decompress B/s) over `chunks`, each chunk
/// kept as it is where the codec does not shrink it by 1/16.
fn codec_figures(chunks: &[Vec<u8>], codec: Codec) -> (u64, f64, f64) {
    let logical: usize = chunks.iter().map(Vec::len).sum();
    let started = Instant::now();
    let encoded: Vec<Option<Vec<u8>>> = chunks
        .iter()
        .map(|chunk| match codec {
            Codec::None => None,
            Codec::Zstd(level) => compress::compress(chunk, Compression::Zstd { level }),
            Codec::Lz4 => {
                let out = lz4_flex::compress_prepend_size(chunk);
                (out.len() <= chunk.len() - chunk.len() / 16).then_some(out)
            }
        })
        .collect();
    let compress_rate = logical as f64 / started.elapsed().as_secs_f64();
    let stored: usize = chunks
        .iter()
        .zip(&encoded)
        .map(|(c, e)| e.as_ref().map_or(c.len(), Vec::len))
        .sum();
    let started = Instant::now();
    let mut fold = 0u8;
    for (chunk, encoded) in chunks.iter().zip(&encoded) {
        let Some(encoded) = encoded else {
            fold ^= chunk[0];
            continue;
        };
        let decoded = match codec {
            Codec::Zstd(_) => compress::decompress(encoded, chunk.len() as u32).unwrap(),
            Codec::Lz4 => lz4_flex::decompress_size_prepended(encoded).unwrap(),
            Codec::None => unreachable!(),
        };
        fold ^= decoded[decoded.len() / 2];
    }
    std::hint::black_box(fold);
    let decompress_rate = logical as f64 / started.elapsed().as_secs_f64();
    (stored as u64, compress_rate, decompress_rate)
}

/// A training run's checkpoints: 96 tensors of 512 KiB of float32, 10 % of
/// them rewritten per step.
fn checkpoints() -> Vec<Vec<u8>> {
    const TENSORS: usize = 96;
    const FLOATS: usize = 128 << 10;
    let mut rng = fastrand::Rng::with_seed(42);
    let mut normal = move || {
        // Box-Muller, scaled as initialised weights are.
        let (u, v) = (rng.f32().max(1e-7), rng.f32());
        0.02 * (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let mut weights: Vec<Vec<f32>> = (0..TENSORS)
        .map(|_| (0..FLOATS).map(|_| normal()).collect())
        .collect();
    let mut pick = fastrand::Rng::with_seed(7);
    let mut versions = Vec::new();
    for _ in 0..6 {
        let bytes: Vec<u8> = weights
            .iter()
            .flat_map(|t| t.iter().flat_map(|f| f.to_le_bytes()))
            .collect();
        versions.push(bytes);
        for _ in 0..TENSORS / 10 {
            let t = pick.usize(..TENSORS);
            for f in &mut weights[t] {
                *f += normal() * 0.01;
            }
        }
    }
    versions
}

/// A JSON-lines dataset: appended to, with a few records edited in place.
fn jsonl() -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(9);
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    ];
    let record = |i: usize, rng: &mut fastrand::Rng| {
        format!(
            "{{\"id\":{i},\"user\":\"u{}\",\"score\":{:.4},\"text\":\"{} {} {}\",\"ts\":{}}}\n",
            rng.u32(..100_000),
            rng.f64(),
            words[rng.usize(..words.len())],
            words[rng.usize(..words.len())],
            words[rng.usize(..words.len())],
            1_700_000_000u64 + rng.u64(..10_000_000)
        )
    };
    let mut lines: Vec<String> = Vec::new();
    while lines.iter().map(String::len).sum::<usize>() < 8 << 20 {
        let i = lines.len();
        lines.push(record(i, &mut rng));
    }
    let mut versions = Vec::new();
    for _ in 0..5 {
        versions.push(lines.concat().into_bytes());
        for _ in 0..20 {
            let at = rng.usize(..lines.len());
            lines[at] = record(at, &mut rng);
        }
        for _ in 0..lines.len() / 10 {
            let i = lines.len();
            lines.push(record(i, &mut rng));
        }
    }
    versions
}
