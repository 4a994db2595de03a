//! Example tensor-blob plugin: a WASI command that sees nothing but the blob
//! store (`tensor:blob/blobs`) and the directories its host preopens.
//!
//! ```text
//! example-plugin FILE...   store each FILE, read it back, verify it
//! example-plugin           the dedup demonstration on two synthetic checkpoints
//! ```
//!
//! Every step is checked; any mismatch or store error prints a message and
//! exits with status 1.

wit_bindgen::generate!({
    path: "../../wit",
    world: "plugin",
});

use std::io::Read;

use tensor::blob::blobs;
use tensor::blob::types::{CdcParams, Chunking, Error, Metadata, PutOptions, StoreStats};

/// Bytes per `write` and `read` call (the store allows up to 16 MiB).
const PIECE_BYTES: usize = 1 << 20;
/// Size of the synthetic checkpoint in the demonstration.
const CHECKPOINT_BYTES: usize = 16 << 20;

type Result<T> = std::result::Result<T, String>;

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    let outcome = if paths.is_empty() {
        dedup_demo()
    } else {
        paths.iter().try_for_each(|path| store_file(path))
    };
    if let Err(message) = outcome {
        eprintln!("example-plugin: FAILED: {message}");
        std::process::exit(1);
    }
}

/// Turns a store error into a message saying what we were doing.
fn store_error(doing: &str) -> impl FnOnce(Error) -> String + '_ {
    move |error| format!("{doing}: {error:?}")
}

fn options(filename: Option<&str>) -> PutOptions {
    PutOptions {
        filename: filename.map(str::to_string),
        content_type: Some("application/octet-stream".into()),
        creator: Some("example-plugin".into()),
        tags: vec!["example".into()],
        links: Vec::new(),
        external_links: Vec::new(),
        custom: Vec::new(),
        // Explicitly the default: content-defined, avg 64 KiB.
        chunking: Some(Chunking::ContentDefined(CdcParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        })),
        compress: None,
    }
}

/// Streams `source` into a new artifact in 1 MiB pieces; returns its id and
/// the BLAKE3 of what was sent.
fn upload(mut source: impl Read, options: &PutOptions) -> Result<(String, blake3::Hash)> {
    let writer = blobs::create_writer(options).map_err(store_error("create-writer"))?;
    let mut hasher = blake3::Hasher::new();
    let mut piece = vec![0u8; PIECE_BYTES];
    loop {
        let len = source
            .read(&mut piece)
            .map_err(|e| format!("reading input: {e}"))?;
        if len == 0 {
            break;
        }
        hasher.update(&piece[..len]);
        writer.write(&piece[..len]).map_err(store_error("write"))?;
    }
    let id = writer.finish().map_err(store_error("finish"))?;
    Ok((id, hasher.finalize()))
}

/// Reads artifact `id` back through a reader; returns (size, BLAKE3).
fn download_digest(id: &str) -> Result<(u64, blake3::Hash)> {
    let reader = blobs::open_reader(id, 0).map_err(store_error("open-reader"))?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    loop {
        let piece = reader
            .read(PIECE_BYTES as u32)
            .map_err(store_error("read"))?;
        if piece.is_empty() {
            break;
        }
        size += piece.len() as u64;
        hasher.update(&piece);
    }
    if size != reader.size() {
        return Err(format!(
            "{id}: read {size} bytes, reader says {}",
            reader.size()
        ));
    }
    Ok((size, hasher.finalize()))
}

/// Reads `id` back and checks it against the expected digest and the
/// store's metadata; returns the metadata.
fn verify(id: &str, expected: blake3::Hash, expected_size: u64) -> Result<Metadata> {
    let meta = blobs::stat(id).map_err(store_error("stat"))?;
    let (size, read_digest) = download_digest(id)?;
    if size != expected_size || meta.size != expected_size {
        return Err(format!(
            "{id}: size mismatch: expected {expected_size}, metadata {}, read {size}",
            meta.size
        ));
    }
    if read_digest != expected || meta.digest.as_slice() != expected.as_bytes() {
        return Err(format!(
            "{id}: digest mismatch: expected {expected}, read {read_digest}, metadata {}",
            hex(&meta.digest)
        ));
    }
    Ok(meta)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores one preopened file, reads it back and verifies it.
fn store_file(path: &str) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {path}: {e}"))?;
    let file_size = file
        .metadata()
        .map_err(|e| format!("stat {path}: {e}"))?
        .len();
    let (id, sent_digest) = upload(file, &options(Some(path)))?;
    // Hash the file again, independently of what was uploaded.
    let mut file_hasher = blake3::Hasher::new();
    let file = std::fs::File::open(path).map_err(|e| format!("reopening {path}: {e}"))?;
    file_hasher
        .update_reader(file)
        .map_err(|e| format!("hashing {path}: {e}"))?;
    let file_digest = file_hasher.finalize();
    if file_digest != sent_digest {
        return Err(format!("{path} changed while it was being stored"));
    }
    let meta = verify(&id, file_digest, file_size)?;
    println!(
        "{path}: id {id}, {} bytes, {} chunks, blake3 {file_digest}: OK",
        meta.size, meta.chunk_count
    );
    Ok(())
}

/// A deterministic pseudo-random "checkpoint": float32 weights, little-endian.
fn synthetic_checkpoint(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        // xorshift64*: fast, and the same on every machine.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let random = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let weight = ((random >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
        bytes.extend_from_slice(&weight.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// v2 = v1 fine-tuned a little: three small regions rewritten and 100 bytes
/// inserted in the middle, which shifts everything after them.
fn next_checkpoint(v1: &[u8]) -> Vec<u8> {
    let mut v2 = v1.to_vec();
    for (offset, len) in [(1 << 20, 4096), (5 << 20, 512), (12 << 20, 8192)] {
        for byte in &mut v2[offset..offset + len] {
            *byte ^= 0x5a;
        }
    }
    let middle = v2.len() / 2;
    v2.splice(middle..middle, (0..100u8).map(|i| i.wrapping_mul(7)));
    v2
}

fn stats() -> Result<StoreStats> {
    blobs::stats().map_err(store_error("stats"))
}

fn print_stats(label: &str, stats: &StoreStats) {
    println!(
        "  {label:<16} {:>3} artifacts {:>5} chunks {:>10} logical bytes {:>10} physical bytes",
        stats.artifacts, stats.chunks, stats.logical_bytes, stats.physical_bytes
    );
}

/// Stores two versions of a checkpoint and shows that the second costs only
/// the chunks that changed.
fn dedup_demo() -> Result<()> {
    println!("dedup demonstration: two 16 MiB checkpoints, content-defined chunking");
    let v1 = synthetic_checkpoint(CHECKPOINT_BYTES, 2024);
    let v2 = next_checkpoint(&v1);
    let (v1_digest, v2_digest) = (blake3::hash(&v1), blake3::hash(&v2));

    let before = stats()?;
    print_stats("before:", &before);

    let (v1_id, sent) = upload(v1.as_slice(), &options(Some("checkpoint-v1.bin")))?;
    assert_eq!(sent, v1_digest, "we hash what we send");
    let after_v1 = stats()?;
    print_stats("after v1:", &after_v1);

    let mut v2_options = options(Some("checkpoint-v2.bin"));
    v2_options.custom.push(tensor::blob::types::KeyValue {
        key: "parent".into(),
        value: v1_id.clone(),
    });
    let (v2_id, _) = upload(v2.as_slice(), &v2_options)?;
    let after_v2 = stats()?;
    print_stats("after v2:", &after_v2);

    let v1_meta = verify(&v1_id, v1_digest, v1.len() as u64)?;
    let v2_meta = verify(&v2_id, v2_digest, v2.len() as u64)?;
    println!(
        "v1: id {v1_id}, {} bytes, {} chunks, blake3 {v1_digest}: OK",
        v1_meta.size, v1_meta.chunk_count
    );
    println!(
        "v2: id {v2_id}, {} bytes, {} chunks, blake3 {v2_digest}: OK",
        v2_meta.size, v2_meta.chunk_count
    );

    // v2 should cost only its changed chunks: a few of ~64 KiB each.
    let v2_new_bytes = after_v2
        .physical_bytes
        .saturating_sub(after_v1.physical_bytes);
    println!(
        "v2 added {v2_new_bytes} physical bytes for {} logical bytes ({:.1}%)",
        v2.len(),
        100.0 * v2_new_bytes as f64 / v2.len() as f64
    );
    if v2_new_bytes * 4 > v2.len() as u64 {
        return Err(format!(
            "dedup failed: v2 added {v2_new_bytes} of {} bytes",
            v2.len()
        ));
    }

    blobs::delete(&v1_id).map_err(store_error("delete v1"))?;
    if blobs::exists(&v1_id).map_err(store_error("exists"))? {
        return Err(format!("{v1_id} still exists after delete"));
    }
    let after_delete = stats()?;
    print_stats("after delete v1:", &after_delete);
    verify(&v2_id, v2_digest, v2.len() as u64)?;
    println!("v1 deleted; v2 still reads back intact: OK");
    Ok(())
}
