//! `tensor:blob/chunk-store`: the host side of the chunker component.
//!
//! The chunker is untrusted. Every digest is parsed (exactly 32 bytes),
//! every id parsed, every length bounded here or by the store, and every
//! chunk re-hashed by the store before it is kept. Nothing a guest sends can
//! make this code panic; bad handles trap, bad values are WIT errors.

use wasmtime::component::{Resource, ResourceTable};

use crate::error::StoreError;
use crate::runtime::bindings::chunker::tensor::blob::{chunk_store, types};
use crate::runtime::bindings::{ChunkRef, Metadata, MetadataUpdate, PutOptions, StoreStats};
use crate::runtime::convert;
use crate::runtime::error::{self, BlobError};
use crate::runtime::limits::{LIST_IDS_MAX, UPLOADS_OPEN_MAX};
use crate::store::{self, MANIFEST_PAGE_MAX, MISSING_BATCH_MAX};

/// An upload in progress, owned by the chunker's resource table. Dropping it
/// releases the chunks it pinned.
///
/// The first chunk is stored inline. From the second on, the upload moves to
/// a worker thread and `put-chunk` only queues the bytes (at most
/// [`PIPELINE_CHUNKS_MAX`] waiting), so the host's re-hash and append of one
/// chunk overlap the guest's chunking and hashing of the next, on the other
/// core. A failure of a queued chunk is reported by the next call on the
/// upload (`put-chunk`, `missing` or `commit`), and the upload stays failed.
pub struct UploadHandle {
    state: UploadState,
    chunks_put: u64,
}

enum UploadState {
    Inline(store::Upload),
    Piped(Pipeline),
    Closed,
}

/// Chunks queued to an upload's worker at most; with [`CHUNK_BYTES_MAX`]
/// this bounds the bytes one upload holds in flight.
pub const PIPELINE_CHUNKS_MAX: usize = 4;

struct Pipeline {
    requests: std::sync::mpsc::SyncSender<Request>,
    failure: std::sync::Arc<std::sync::Mutex<Option<types::Error>>>,
}

type Reply<T> = std::sync::mpsc::SyncSender<Result<T, types::Error>>;

enum Request {
    Put(store::Hash, Vec<u8>),
    Missing(Vec<store::Hash>, Reply<Vec<bool>>),
    Commit(Box<CommitRequest>, Reply<String>),
}

struct CommitRequest {
    chunks: Vec<store::ChunkRef>,
    size: u64,
    digest: store::Hash,
    meta: store::NewMetadata,
}

impl Pipeline {
    fn start(mut upload: store::Upload) -> Pipeline {
        let (requests, inbox) = std::sync::mpsc::sync_channel::<Request>(PIPELINE_CHUNKS_MAX);
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let failed = failure.clone();
        std::thread::spawn(move || {
            let fail = |error: StoreError| {
                let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(error::to_wit(error)).clone()
            };
            let failed_already = || failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
            // Ends when the handle drops its sender; dropping `upload` then
            // releases its pins.
            for request in inbox {
                match request {
                    Request::Put(digest, bytes) => {
                        if failed_already().is_none() {
                            if let Err(e) = upload.put_chunk(&digest, &bytes) {
                                fail(e);
                            }
                        }
                    }
                    Request::Missing(digests, reply) => {
                        let result = match failed_already() {
                            Some(error) => Err(error),
                            None => upload.missing(&digests).map_err(&fail),
                        };
                        let _ = reply.send(result);
                    }
                    Request::Commit(commit, reply) => {
                        let result = match failed_already() {
                            Some(error) => Err(error),
                            None => upload
                                .commit(&commit.chunks, commit.size, &commit.digest, commit.meta)
                                .map(|id| id.to_string())
                                .map_err(error::to_wit),
                        };
                        let _ = reply.send(result);
                        return;
                    }
                }
            }
        });
        Pipeline { requests, failure }
    }

    fn check(&self) -> Result<(), BlobError> {
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(error) => Err(BlobError::Blob(error)),
            None => Ok(()),
        }
    }

    fn send(&self, request: Request) -> Result<(), BlobError> {
        self.requests
            .send(request)
            .map_err(|_| BlobError::Trap(wasmtime::Error::msg("upload worker stopped")))
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, BlobError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(make(reply))?;
        match answer.recv() {
            Ok(result) => result.map_err(BlobError::Blob),
            Err(_) => Err(BlobError::Trap(wasmtime::Error::msg(
                "upload worker stopped",
            ))),
        }
    }
}

/// Per-instance state of a chunker component: one tenant's store and the
/// chunker's open uploads.
pub struct ChunkerState {
    pub(crate) store: store::Store,
    pub(crate) table: ResourceTable,
    pub(crate) limits: wasmtime::StoreLimits,
    uploads_open: usize,
}

impl ChunkerState {
    pub fn new(store: store::Store, limits: wasmtime::StoreLimits) -> Self {
        ChunkerState {
            store,
            table: ResourceTable::new(),
            limits,
            uploads_open: 0,
        }
    }
}

impl types::Host for ChunkerState {
    fn convert_error(&mut self, error: BlobError) -> wasmtime::Result<types::Error> {
        match error {
            BlobError::Blob(error) => Ok(error),
            BlobError::Trap(error) => Err(error),
        }
    }
}

impl chunk_store::HostUpload for ChunkerState {
    fn missing(
        &mut self,
        handle: Resource<UploadHandle>,
        digests: Vec<Vec<u8>>,
    ) -> Result<Vec<bool>, BlobError> {
        if digests.len() > MISSING_BATCH_MAX {
            return Err(BlobError::invalid(format!(
                "missing: {} digests in one call, at most {MISSING_BATCH_MAX}",
                digests.len()
            )));
        }
        let digests = digests
            .iter()
            .map(|d| convert::hash(d))
            .collect::<Result<Vec<_>, _>>()?;
        match &mut self.table.get_mut(&handle)?.state {
            UploadState::Inline(upload) => Ok(upload.missing(&digests)?),
            UploadState::Piped(pipeline) => {
                pipeline.check()?;
                pipeline.ask(|reply| Request::Missing(digests, reply))
            }
            UploadState::Closed => Err(BlobError::Blob(types::Error::Closed)),
        }
    }

    fn put_chunk(
        &mut self,
        handle: Resource<UploadHandle>,
        digest: Vec<u8>,
        bytes: Vec<u8>,
    ) -> Result<(), BlobError> {
        let digest = convert::hash(&digest)?;
        let entry = self.table.get_mut(&handle)?;
        entry.chunks_put += 1;
        match std::mem::replace(&mut entry.state, UploadState::Closed) {
            UploadState::Inline(mut upload) if entry.chunks_put == 1 => {
                // The first chunk inline: a small put needs no thread.
                let result = upload.put_chunk(&digest, &bytes);
                entry.state = UploadState::Inline(upload);
                Ok(result?)
            }
            UploadState::Inline(upload) => {
                let pipeline = Pipeline::start(upload);
                let result = pipeline.send(Request::Put(digest, bytes));
                entry.state = UploadState::Piped(pipeline);
                result
            }
            UploadState::Piped(pipeline) => {
                let result = pipeline
                    .check()
                    .and_then(|()| pipeline.send(Request::Put(digest, bytes)));
                entry.state = UploadState::Piped(pipeline);
                result
            }
            UploadState::Closed => Err(BlobError::Blob(types::Error::Closed)),
        }
    }

    fn commit(
        &mut self,
        handle: Resource<UploadHandle>,
        chunks: Vec<ChunkRef>,
        size: u64,
        digest: Vec<u8>,
        options: PutOptions,
    ) -> Result<String, BlobError> {
        // Closed whatever the outcome: take the upload out first.
        let state = std::mem::replace(&mut self.table.get_mut(&handle)?.state, UploadState::Closed);
        let chunks = convert::chunk_refs(chunks)?;
        let digest = convert::hash(&digest)?;
        let meta = convert::new_metadata(options)?;
        match state {
            UploadState::Inline(mut upload) => {
                Ok(upload.commit(&chunks, size, &digest, meta)?.to_string())
            }
            UploadState::Piped(pipeline) => {
                pipeline.check()?;
                let commit = Box::new(CommitRequest {
                    chunks,
                    size,
                    digest,
                    meta,
                });
                pipeline.ask(|reply| Request::Commit(commit, reply))
            }
            UploadState::Closed => Err(BlobError::Blob(types::Error::Closed)),
        }
    }

    fn drop(&mut self, handle: Resource<UploadHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        self.uploads_open = self.uploads_open.saturating_sub(1);
        Ok(())
    }
}

impl chunk_store::Host for ChunkerState {
    fn chunk_bytes_max(&mut self) -> wasmtime::Result<u32> {
        Ok(store::CHUNK_BYTES_MAX)
    }

    fn begin_upload(&mut self) -> Result<Resource<UploadHandle>, BlobError> {
        if self.uploads_open >= UPLOADS_OPEN_MAX {
            return Err(BlobError::invalid(format!(
                "at most {UPLOADS_OPEN_MAX} uploads may be open at once"
            )));
        }
        let upload = self.store.begin_upload();
        let handle = self.table.push(UploadHandle {
            state: UploadState::Inline(upload),
            chunks_put: 0,
        })?;
        self.uploads_open += 1;
        Ok(handle)
    }

    fn read_chunk(&mut self, digest: Vec<u8>) -> Result<Vec<u8>, BlobError> {
        let digest = convert::hash(&digest)?;
        Ok(self.store.read_chunk(&digest)?)
    }

    fn read_manifest(
        &mut self,
        id: String,
        start: u64,
        limit: u32,
    ) -> Result<Vec<ChunkRef>, BlobError> {
        let id = convert::artifact_id(&id)?;
        let limit = limit.min(MANIFEST_PAGE_MAX);
        let page = self.store.manifest(&id, start, limit)?;
        Ok(page.iter().map(convert::wit_chunk_ref).collect())
    }

    fn locate(&mut self, id: String, offset: u64) -> Result<(u64, u64), BlobError> {
        let id = convert::artifact_id(&id)?;
        Ok(self.store.locate(&id, offset)?)
    }

    fn delete(&mut self, id: String) -> Result<(), BlobError> {
        let id = convert::artifact_id(&id)?;
        Ok(self.store.delete(&id)?)
    }

    fn exists(&mut self, id: String) -> Result<bool, BlobError> {
        let id = convert::artifact_id(&id)?;
        Ok(self.store.exists(&id))
    }

    fn stat(&mut self, id: String) -> Result<Metadata, BlobError> {
        let id = convert::artifact_id(&id)?;
        Ok(convert::wit_metadata(self.store.metadata(&id)?))
    }

    fn update(&mut self, id: String, change: MetadataUpdate) -> Result<Metadata, BlobError> {
        let id = convert::artifact_id(&id)?;
        let change = convert::metadata_update(change)?;
        Ok(convert::wit_metadata(self.store.update(&id, change)?))
    }

    fn list(&mut self, after: Option<String>, limit: u32) -> Result<Vec<String>, BlobError> {
        let after = after.as_deref().map(convert::artifact_id).transpose()?;
        let limit = (limit as usize).min(LIST_IDS_MAX);
        let ids = self.store.list(after.as_ref(), limit);
        Ok(ids.iter().map(|id| id.to_string()).collect())
    }

    fn find_by_tag(&mut self, tag: String) -> Result<Vec<String>, BlobError> {
        let mut ids = self.store.find_by_tag(&tag);
        ids.truncate(LIST_IDS_MAX);
        Ok(ids.iter().map(|id| id.to_string()).collect())
    }

    fn stats(&mut self) -> Result<StoreStats, BlobError> {
        Ok(convert::wit_stats(self.store.stats()))
    }
}
