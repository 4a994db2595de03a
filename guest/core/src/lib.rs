//! Pure chunking and hashing for tensor-blob.
//!
//! This crate owns the byte-level decisions a chunker makes: where a blob is
//! cut into chunks ([`Chunker`], fixed-size or FastCDC 2020 from the
//! `fastcdc` crate) and how chunks and whole blobs are hashed ([`Hash`],
//! [`chunk_digest`], [`ContentHasher`], BLAKE3-256). It has no I/O and no WIT
//! types: the chunker component (guest/components/chunker) wires it to the
//! `chunk-store` interface, and native code can use it as a baseline.
//!
//! It must never panic on caller-supplied parameters or bytes: bad chunking
//! parameters are a [`ParamsError`].
//!
//! # Example
//!
//! ```
//! use tensor_blob_chunking::{CdcParams, Chunker, Chunking, chunk_digest};
//!
//! let data: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
//! let mut chunker = Chunker::new(Chunking::ContentDefined(CdcParams::DEFAULT)).unwrap();
//! let mut chunks = Vec::new();
//! // Push arbitrary slices; complete chunks come back as soon as they are known.
//! for piece in data.chunks(100_000) {
//!     chunks.extend(chunker.push(piece).into_iter().map(|c| c.into_owned()));
//! }
//! chunks.extend(chunker.finish().into_iter().map(|c| c.into_owned()));
//! assert_eq!(chunks.concat(), data);
//! let digests: Vec<_> = chunks.iter().map(|c| chunk_digest(c)).collect();
//! assert_eq!(digests.len(), chunks.len());
//! ```

mod chunker;
mod hash;
mod params;

pub use chunker::{chunk_lengths, Chunker};
pub use hash::{chunk_digest, ContentHasher, Hash, HASH_LEN_BYTES};
pub use params::{
    CdcParams, Chunking, ParamsError, CDC_AVG_BYTES_MAX, CDC_AVG_BYTES_MIN, CDC_MAX_BYTES_MIN,
    CDC_MIN_BYTES_MAX, CHUNK_LEN_BYTES_MAX, CHUNK_LEN_BYTES_MIN,
};
