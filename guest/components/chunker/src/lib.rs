//! The chunker component: serves `tensor:blob/transfer` (put and get, the
//! content half of the plugins' `blobs`) on top of the host's
//! `tensor:blob/chunk-store`. Metadata calls never reach it: the host
//! answers them from the store.
//!
//! This file only wires WIT to code: streaming upload is in [`writer`],
//! streaming read in [`reader`], option checks in [`options`], and the
//! chunking and hashing themselves in the `tensor-blob-chunking` crate
//! (guest/core), which is tested natively. The host trusts nothing this
//! component sends, so a bug here can fail an upload but never corrupt the
//! store.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "chunker",
});

mod options;
mod reader;
mod writer;

use exports::tensor::blob::transfer::{self, Guest};
use tensor::blob::types::{ArtifactId, Error, PutOptions};

/// Largest artifact `put` accepts and `get` returns (64 MiB), from the WIT
/// doc of `inline-bytes-max`.
pub(crate) const INLINE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Largest `write` or `read` a plugin may ask for in one call (16 MiB).
pub(crate) const CALL_BYTES_MAX: usize = 16 * 1024 * 1024;

struct Component;

impl Guest for Component {
    type Writer = writer::BlobWriter;
    type Reader = reader::BlobReader;

    fn put(data: Vec<u8>, options: PutOptions) -> Result<ArtifactId, Error> {
        if data.len() as u64 > INLINE_BYTES_MAX {
            return Err(Error::TooLarge(format!(
                "put of {} bytes exceeds inline-bytes-max ({INLINE_BYTES_MAX}); use a writer",
                data.len()
            )));
        }
        let mut upload = writer::Upload::begin(options)?;
        upload.push(&data)?;
        upload.finish()
    }

    fn get(id: ArtifactId) -> Result<Vec<u8>, Error> {
        reader::read_all(id, INLINE_BYTES_MAX)
    }

    fn create_writer(options: PutOptions) -> Result<transfer::Writer, Error> {
        let upload = writer::Upload::begin(options)?;
        Ok(transfer::Writer::new(writer::BlobWriter::new(upload)))
    }

    fn open_reader(id: ArtifactId, offset: u64) -> Result<transfer::Reader, Error> {
        Ok(transfer::Reader::new(reader::BlobReader::open(id, offset)?))
    }
}

export!(Component);
