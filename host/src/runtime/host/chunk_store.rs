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
    Inline(HashedUpload),
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
    fn start(mut upload: HashedUpload) -> Pipeline {
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
                        let ok = result.is_ok();
                        let _ = reply.send(result);
                        // Reads of present chunks overlap the guest's work.
                        if ok {
                            upload.catch_up(None);
                        }
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
            UploadState::Inline(upload) => {
                let answers = upload.missing(&digests)?;
                upload.catch_up(None);
                Ok(answers)
            }
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
        let upload = HashedUpload::new(self.store.clone());
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

/// A store upload that also hashes the whole content as it goes, so the
/// commit need not read every chunk back (see [`store::Upload::commit_verified`]).
///
/// The digests the guest passes to `missing` are taken to be the artifact's
/// chunks in order. Each is fed to the content hasher once its bytes are
/// known to be right: a chunk reported missing when `put-chunk` sends it
/// (re-hashed by [`store::Upload::put_chunk`]), a chunk reported present (or
/// repeated within a batch, and so sent once) by [`store::Store::read_chunk`],
/// which re-hashes. The chunker's protocol (`guest/components/chunker/src/
/// writer.rs`): per batch, `missing`, then `put-chunk` for each missing
/// chunk in order, each distinct digest once. Anything else (a put out of
/// order, a batch left unfinished, a failed read or put) drops the running
/// hash, and the commit re-reads the chunks as before. At commit the running
/// hash is used only if the manifest is exactly the sequence of digests seen.
/// Memory: one chunk at a time, plus one batch of digests.
struct HashedUpload {
    upload: store::Upload,
    store: store::Store,
    /// `None` once anything did not line up.
    content: Option<Box<ContentHash>>,
}

struct ContentHash {
    /// Over the bytes of every chunk fed so far, in order.
    bytes: blake3::Hasher,
    /// Over the digests passed to `missing`, in order, and how many.
    digests: blake3::Hasher,
    digest_count: u64,
    /// The latest batch's chunks not fed yet, in order, and whether the
    /// store reported each missing.
    pending: std::collections::VecDeque<(store::Hash, bool)>,
    /// Digests of the latest batch already put.
    put: std::collections::HashSet<store::Hash>,
}

impl HashedUpload {
    fn new(store: store::Store) -> Self {
        HashedUpload {
            upload: store.begin_upload(),
            store,
            content: Some(Box::new(ContentHash {
                bytes: blake3::Hasher::new(),
                digests: blake3::Hasher::new(),
                digest_count: 0,
                pending: std::collections::VecDeque::new(),
                put: std::collections::HashSet::new(),
            })),
        }
    }

    /// [`store::Upload::missing`], noting the batch. Call [`Self::catch_up`]
    /// after it (it may read chunks, so a worker answers the guest first).
    fn missing(&mut self, digests: &[store::Hash]) -> Result<Vec<bool>, StoreError> {
        let result = self.upload.missing(digests);
        match (&result, &mut self.content) {
            (Ok(answers), Some(content)) if content.pending.is_empty() => {
                content.put.clear();
                for (digest, missing) in digests.iter().zip(answers) {
                    content.digests.update(digest.as_bytes());
                    content.pending.push_back((*digest, *missing));
                }
                content.digest_count += digests.len() as u64;
            }
            _ => self.content = None,
        }
        result
    }

    /// [`store::Upload::put_chunk`]; the chunk must be the next missing one.
    fn put_chunk(&mut self, digest: &store::Hash, bytes: &[u8]) -> Result<(), StoreError> {
        let result = self.upload.put_chunk(digest, bytes);
        match (&result, &mut self.content) {
            (Ok(()), Some(content)) if content.pending.front() == Some(&(*digest, true)) => {
                content.put.insert(*digest);
                self.catch_up(Some((digest, bytes)));
            }
            _ => self.content = None,
        }
        result
    }

    /// Feeds the pending chunks whose bytes are known: the one just put
    /// (`put`, verified), those reported present and repeats of chunks
    /// already put (read back, verified). Stops at the next chunk to be put.
    fn catch_up(&mut self, put: Option<(&store::Hash, &[u8])>) {
        let Some(content) = &mut self.content else {
            return;
        };
        // The last chunk read, for a run of the same chunk: one chunk held.
        let mut read: Option<(store::Hash, Vec<u8>)> = None;
        while let Some(&(digest, missing)) = content.pending.front() {
            if missing && !content.put.contains(&digest) {
                return;
            }
            match (put, &read) {
                (Some((put_digest, bytes)), _) if *put_digest == digest => {
                    content.bytes.update(bytes);
                }
                (_, Some((read_digest, bytes))) if *read_digest == digest => {
                    content.bytes.update(bytes);
                }
                _ => match self.store.read_chunk(&digest) {
                    Ok(bytes) => {
                        content.bytes.update(&bytes);
                        read = Some((digest, bytes));
                    }
                    Err(_) => {
                        // The commit re-reads and reports it.
                        self.content = None;
                        return;
                    }
                },
            }
            content.pending.pop_front();
        }
    }

    /// Commits with the running hash if it covers exactly `chunks`, else
    /// with [`store::Upload::commit`], which re-reads them.
    fn commit(
        &mut self,
        chunks: &[store::ChunkRef],
        size: u64,
        digest: &store::Hash,
        meta: store::NewMetadata,
    ) -> Result<store::ArtifactId, StoreError> {
        if let Some(content) = self.content.take() {
            if content.pending.is_empty() && content.digest_count == chunks.len() as u64 {
                let mut seen = blake3::Hasher::new();
                for chunk in chunks {
                    seen.update(chunk.digest.as_bytes());
                }
                if seen.finalize() == content.digests.finalize() {
                    let content_digest =
                        store::Hash::from_bytes(*content.bytes.finalize().as_bytes());
                    return self
                        .upload
                        .commit_verified(chunks, size, digest, meta, content_digest);
                }
            }
        }
        self.upload.commit(chunks, size, digest, meta)
    }
}
