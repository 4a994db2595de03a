//! Chunk compression: zstd, per chunk, in the host. What a compressed
//! payload looks like on disk is in [`format`](super::format)
//! ([`CHUNK_FLAG_ZSTD`](super::format::CHUNK_FLAG_ZSTD)); this module
//! decides whether a chunk is worth compressing, and turns payloads into
//! bytes and back. No I/O, no state beyond one reusable zstd context per
//! thread.
//!
//! The digest of a chunk stays the BLAKE3 of its uncompressed bytes, so
//! compression changes neither deduplication nor any id; readers verify the
//! hash after decompressing. A damaged frame is an error, never a panic,
//! and never an allocation larger than the chunk length the index holds
//! (itself at most [`CHUNK_BYTES_MAX`]).

use std::cell::RefCell;

use super::format::{decode_zstd_prefix, CHUNK_BYTES_MAX, ZSTD_PREFIX_BYTES};

/// Chunks shorter than this are stored as they are: a zstd frame's own
/// framing and the per-record decompression cost outweigh what they save.
pub const COMPRESS_BYTES_MIN: usize = 512;

/// Bytes of the sample compressed to decide whether a larger chunk is worth
/// compressing whole.
const SAMPLE_BYTES: usize = 4096;

/// A chunk is stored compressed only if that saves at least 1/16 of it: a
/// smaller saving is not worth decompressing on every read.
fn worth_it(stored: usize, chunk: usize) -> bool {
    stored <= chunk - chunk / 16
}

/// How chunks are compressed. `level` is zstd's (1..=19; more is smaller
/// and slower).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Every chunk stored as it is.
    Off,
    /// zstd at `level`, for chunks it shrinks.
    Zstd { level: i32 },
}

impl Compression {
    /// The default: zstd level 1 (chosen by measurement: see
    /// `ARCHITECTURE.md`, "Compression").
    pub const DEFAULT: Compression = Compression::Zstd { level: 1 };

    pub fn enabled(self) -> bool {
        self != Compression::Off
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::DEFAULT
    }
}

thread_local! {
    /// (level set, context): a zstd compression context costs about a
    /// megabyte to set up, so each thread keeps one and only changes its
    /// level (the sample's and the store's, in turn) as needed.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn with_compressor<R>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> std::io::Result<R>,
) -> Option<R> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (set, compressor) = cell.as_mut().expect("set just above");
        if *set != level {
            compressor.set_compression_level(level).ok()?;
            *set = level;
        }
        f(compressor).ok()
    })
}

/// The compressed payload of `chunk` (its length, then one zstd frame) if
/// `compression` is on and the chunk shrinks enough to be worth it; `None`
/// to store it as it is. A chunk over twice [`SAMPLE_BYTES`] is first
/// tried on a sample from its middle at the fastest level, so
/// incompressible data costs a few percent of a full compression, not all
/// of it.
pub fn compress(chunk: &[u8], compression: Compression) -> Option<Vec<u8>> {
    let Compression::Zstd { level } = compression else {
        return None;
    };
    if chunk.len() < COMPRESS_BYTES_MIN || chunk.len() > CHUNK_BYTES_MAX as usize {
        return None;
    }
    if chunk.len() > 2 * SAMPLE_BYTES {
        let middle = chunk.len() / 2 - SAMPLE_BYTES / 2;
        let sample = &chunk[middle..middle + SAMPLE_BYTES];
        let sampled = with_compressor(1, |c| c.compress(sample))?;
        if !worth_it(sampled.len(), SAMPLE_BYTES) {
            return None;
        }
    }
    let bound = zstd::zstd_safe::compress_bound(chunk.len());
    let mut out = vec![0u8; ZSTD_PREFIX_BYTES as usize + bound];
    out[..ZSTD_PREFIX_BYTES as usize].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
    let written = with_compressor(level, |c| {
        c.compress_to_buffer(chunk, &mut out[ZSTD_PREFIX_BYTES as usize..])
    })?;
    let stored = ZSTD_PREFIX_BYTES as usize + written;
    if !worth_it(stored, chunk.len()) {
        return None;
    }
    // Not shrunk to fit: the caller writes it out and drops it.
    out.truncate(stored);
    Some(out)
}

/// The chunk a compressed `payload` holds, which must be `chunk_len`
/// bytes (what the index says; at most [`CHUNK_BYTES_MAX`]). Checks the
/// length prefix against it and the frame's output against both: at most
/// `chunk_len` bytes are ever allocated, whatever the frame claims. The
/// caller verifies the digest.
pub fn decompress(payload: &[u8], chunk_len: u32) -> Result<Vec<u8>, String> {
    let payload_len = u32::try_from(payload.len())
        .map_err(|_| format!("compressed payload of {} bytes", payload.len()))?;
    let declared = decode_zstd_prefix(payload_len, payload)?;
    if declared != chunk_len {
        return Err(format!(
            "compressed chunk declares {declared} bytes, the index says {chunk_len}"
        ));
    }
    let frame = &payload[ZSTD_PREFIX_BYTES as usize..];
    let mut out = Vec::with_capacity(chunk_len as usize);
    let result = DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let decompressor = cell.as_mut().expect("set just above");
        decompressor
            .decompress_to_buffer(frame, &mut out)
            .map_err(|e| format!("zstd frame does not decompress ({e})"))
    });
    let written = result?;
    if written != chunk_len as usize {
        return Err(format!(
            "zstd frame decompresses to {written} bytes, not {chunk_len}"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        let words = ["tensor ", "blob ", "chunk ", "segment ", "digest\n"];
        let mut out = Vec::with_capacity(len);
        let mut i = 0usize;
        while out.len() < len {
            out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut block = 0u64;
        while out.len() < len {
            out.extend_from_slice(
                blake3::hash(&[seed.to_le_bytes(), block.to_le_bytes()].concat()).as_bytes(),
            );
            block += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn compressible_chunks_round_trip_smaller() {
        for len in [COMPRESS_BYTES_MIN, 5000, 64 << 10, CHUNK_BYTES_MAX as usize] {
            let chunk = text(len);
            let payload = compress(&chunk, Compression::DEFAULT).expect("text shrinks");
            assert!(payload.len() < chunk.len() / 2, "{len}: {}", payload.len());
            assert_eq!(decompress(&payload, len as u32).unwrap(), chunk);
        }
    }

    #[test]
    fn incompressible_tiny_or_off_chunks_stay_as_they_are() {
        assert!(compress(&random(64 << 10, 1), Compression::DEFAULT).is_none());
        assert!(compress(&random(3000, 2), Compression::DEFAULT).is_none());
        assert!(compress(&text(COMPRESS_BYTES_MIN - 1), Compression::DEFAULT).is_none());
        assert!(compress(&text(64 << 10), Compression::Off).is_none());
        // Compressible at the edges but not in the sampled middle: kept as is.
        let mut mixed = text(64 << 10);
        mixed[16 << 10..48 << 10].copy_from_slice(&random(32 << 10, 3));
        assert!(compress(&mixed, Compression::DEFAULT).is_none());
    }

    #[test]
    fn levels_change_size_not_content() {
        let chunk = text(256 << 10);
        for level in [1, 3, 9, 19] {
            let payload = compress(&chunk, Compression::Zstd { level }).unwrap();
            assert_eq!(decompress(&payload, chunk.len() as u32).unwrap(), chunk);
        }
    }

    #[test]
    fn damaged_payloads_are_errors_with_bounded_output() {
        let chunk = text(64 << 10);
        let payload = compress(&chunk, Compression::DEFAULT).unwrap();
        let len = chunk.len() as u32;
        // The wrong length, from the index or in the prefix.
        assert!(decompress(&payload, len - 1).is_err());
        assert!(decompress(&payload, len + 1).is_err());
        let mut prefix = payload.clone();
        prefix[..4].copy_from_slice(&(CHUNK_BYTES_MAX + 1).to_le_bytes());
        assert!(decompress(&prefix, len).is_err());
        // A truncated frame, and every single flipped byte of the frame.
        assert!(decompress(&payload[..payload.len() - 1], len).is_err());
        assert!(decompress(&payload[..4], len).is_err());
        for at in ZSTD_PREFIX_BYTES as usize..payload.len() {
            let mut damaged = payload.clone();
            damaged[at] ^= 0x41;
            match decompress(&damaged, len) {
                Err(_) => {}
                // A flip zstd cannot see (no checksum) yields other bytes
                // of the right length: the caller's hash check catches it.
                Ok(bytes) => assert_eq!(bytes.len(), chunk.len()),
            }
        }
        // A frame that expands far beyond the chunk length stops at it.
        let bomb = compress(&vec![0u8; CHUNK_BYTES_MAX as usize], Compression::DEFAULT).unwrap();
        let mut lying = bomb.clone();
        lying[..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decompress(&lying, 1000).is_err());
    }
}
