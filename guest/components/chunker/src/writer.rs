//! Streaming upload: bytes → chunks → `missing` → `put-chunk` → `commit`.
//!
//! Owns one host `upload` per writer. For every batch of completed chunks it
//! asks the host which ones it lacks and sends only those, in order, while
//! recording the manifest. The whole content's digest is the host's to
//! compute (it hashes the verified chunks as they go by): hashing it here
//! too would be a second pass over every byte on the guest's critical
//! path. Memory: the chunker's
//! window (< 2 × max chunk) plus the slice being written plus 36 bytes per
//! chunk of manifest. A host error poisons the writer: every later call
//! returns the same error, since the upload's state is unknown.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;

use tensor_blob_chunking::{chunk_digest, Chunker, Hash};

use crate::exports::tensor::blob::transfer::GuestWriter;
use crate::tensor::blob::chunk_store;
use crate::tensor::blob::types::{ArtifactId, ChunkRef, Error, PutOptions};
use crate::{options, CALL_BYTES_MAX};

/// Digests per `missing` call; the WIT allows 4096.
const MISSING_BATCH_DIGESTS_MAX: usize = 1024;

/// An open upload: everything needed to finish it.
pub(crate) struct Upload {
    upload: chunk_store::Upload,
    chunker: Chunker,
    /// The chunks so far, in order: digest and length.
    manifest: Vec<(Hash, u32)>,
    options: PutOptions,
}

impl Upload {
    /// Validates `options` and opens a host upload.
    pub(crate) fn begin(options: PutOptions) -> Result<Self, Error> {
        let chunking = options::validate(&options)?;
        let host_chunk_bytes_max = chunk_store::chunk_bytes_max();
        if chunking.chunk_len_bytes_max() > host_chunk_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "chunks of up to {} bytes exceed the store's chunk-bytes-max ({host_chunk_bytes_max})",
                chunking.chunk_len_bytes_max()
            )));
        }
        let chunker = Chunker::new(chunking).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(Upload {
            upload: chunk_store::begin_upload()?,
            chunker,
            manifest: Vec::new(),
            options,
        })
    }

    /// Appends `data`, uploading the chunks it completes.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<(), Error> {
        let chunks = self.chunker.push(data);
        store_chunks(&self.upload, &mut self.manifest, &chunks)
    }

    /// Uploads the tail and commits; the host closes the upload either way.
    pub(crate) fn finish(mut self) -> Result<ArtifactId, Error> {
        // Read before `finish`, which resets it.
        let size_bytes = self.chunker.pushed_bytes();
        let chunks = self.chunker.finish();
        store_chunks(&self.upload, &mut self.manifest, &chunks)?;
        let manifest_bytes: u64 = self.manifest.iter().map(|(_, len)| u64::from(*len)).sum();
        assert_eq!(
            manifest_bytes, size_bytes,
            "chunks must cover the content exactly"
        );
        let chunk_refs: Vec<ChunkRef> = self
            .manifest
            .iter()
            .map(|(digest, len)| ChunkRef {
                digest: digest.to_vec(),
                len: *len,
            })
            .collect();
        self.upload
            .commit(&chunk_refs, size_bytes, None, &self.options)
    }
}

/// Asks the host which of `chunks` it lacks, in batches, sends those and
/// appends every chunk to `manifest`.
fn store_chunks(
    upload: &chunk_store::Upload,
    manifest: &mut Vec<(Hash, u32)>,
    chunks: &[Cow<'_, [u8]>],
) -> Result<(), Error> {
    for batch in chunks.chunks(MISSING_BATCH_DIGESTS_MAX) {
        let digests: Vec<Hash> = batch.iter().map(|chunk| chunk_digest(chunk)).collect();
        let digest_lists: Vec<Vec<u8>> = digests.iter().map(Hash::to_vec).collect();
        let missing = upload.missing(&digest_lists)?;
        if missing.len() != batch.len() {
            return Err(Error::Io(format!(
                "store answered {} of {} missing queries",
                missing.len(),
                batch.len()
            )));
        }
        // A batch may hold the same chunk twice (a run of zeros): send it once.
        // Not a HashSet: its RandomState would call wasi:random, which the
        // host does not grant the chunker.
        let mut sent: BTreeSet<Hash> = BTreeSet::new();
        for ((chunk, digest), is_missing) in batch.iter().zip(&digests).zip(missing) {
            if is_missing && sent.insert(*digest) {
                upload.put_chunk(digest.as_bytes(), chunk)?;
            }
            // Chunks are at most 16 MiB (validated chunking), so the length fits.
            let len = u32::try_from(chunk.len()).expect("chunk length fits u32");
            manifest.push((*digest, len));
        }
    }
    Ok(())
}

enum WriterState {
    Open(Box<Upload>),
    /// A host call failed; the upload's state is unknown.
    Poisoned(Error),
    /// Finished or aborted.
    Closed,
}

/// The `writer` resource.
pub struct BlobWriter {
    state: RefCell<WriterState>,
}

impl BlobWriter {
    pub(crate) fn new(upload: Upload) -> Self {
        BlobWriter {
            state: RefCell::new(WriterState::Open(Box::new(upload))),
        }
    }
}

impl GuestWriter for BlobWriter {
    fn write(&self, data: Vec<u8>) -> Result<(), Error> {
        if data.len() > CALL_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "write of {} bytes exceeds {CALL_BYTES_MAX}",
                data.len()
            )));
        }
        let mut state = self.state.borrow_mut();
        let result = match &mut *state {
            WriterState::Open(upload) => upload.push(&data),
            WriterState::Poisoned(error) => return Err(error.clone()),
            WriterState::Closed => return Err(Error::Closed),
        };
        if let Err(error) = &result {
            *state = WriterState::Poisoned(error.clone());
        }
        result
    }

    fn finish(&self) -> Result<ArtifactId, Error> {
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut *state, WriterState::Closed) {
            WriterState::Open(upload) => upload.finish().inspect_err(|error| {
                *state = WriterState::Poisoned(error.clone());
            }),
            WriterState::Poisoned(error) => {
                let result = Err(error.clone());
                *state = WriterState::Poisoned(error);
                result
            }
            WriterState::Closed => Err(Error::Closed),
        }
    }

    fn abort(&self) {
        // Dropping the host upload discards its chunks' pins.
        *self.state.borrow_mut() = WriterState::Closed;
    }
}
