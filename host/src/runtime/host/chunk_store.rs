//! `tensor:blob/chunk-store`: the host side of the chunker component.
//!
//! The chunker is untrusted. Every digest is parsed (exactly 32 bytes),
//! every id parsed, every length bounded here or by the store, and every
//! chunk re-hashed by the store before it is kept. Nothing a guest sends can
//! make this code panic; bad handles trap, bad values are WIT errors.
//! A chunk's length is checked here, before it is queued or stored, so no
//! oversized chunk is ever held by the host past the call that sent it.

use wasmtime::component::{Resource, ResourceTable};

use crate::error::StoreError;
use crate::runtime::bindings::chunker::tensor::blob::{chunk_store, types};
use crate::runtime::bindings::{ChunkRef, PutOptions};
use crate::runtime::error::{self, BlobError};
use crate::runtime::limits::{PIPELINE_BYTES_MAX, UPLOADS_OPEN_MAX};
use crate::runtime::{check, convert};
use crate::store::{self, CHUNK_BYTES_MAX, MANIFEST_PAGE_MAX, MISSING_BATCH_MAX};

/// An upload in progress, owned by the chunker's resource table. Dropping it
/// releases the chunks it pinned.
///
/// The first [`INLINE_CHUNKS`] chunks are stored inline. From the next on,
/// the upload moves to a worker thread and `put-chunk` only queues the bytes (at most
/// [`PIPELINE_CHUNKS_MAX`] waiting), so the host's re-hash and append of one
/// chunk overlap the guest's chunking and hashing of the next, on the other
/// core. A failure of a queued chunk is reported by the next call on the
/// upload (`put-chunk`, `missing` or `commit`), and the upload stays failed.
/// If the OS refuses the worker thread, the upload simply stays inline.
pub struct UploadHandle {
    state: UploadState,
    chunks_put: u64,
    /// The OS refused this upload a worker thread once: do not ask again.
    inline_only: bool,
}

enum UploadState {
    Inline(store::Upload),
    Piped(Pipeline),
    Closed,
}

/// Chunks an upload stores inline before it moves to a worker thread: a
/// small put (a 64 KiB artifact is one to four chunks) pays no thread
/// start, hand-offs and join, and a large one loses the overlap only for
/// its first few chunks.
pub const INLINE_CHUNKS: u64 = 4;

/// Chunks queued to an upload's worker at most; with [`CHUNK_BYTES_MAX`]
/// this bounds the bytes one upload holds in flight. All the uploads of one
/// chunker instance together hold at most [`PIPELINE_BYTES_MAX`].
pub const PIPELINE_CHUNKS_MAX: usize = 4;

/// The bytes queued to the upload workers of one chunker instance, counted
/// from `put-chunk` until the worker is done with them. A `put-chunk` that
/// would go over [`PIPELINE_BYTES_MAX`] waits for the workers to drain
/// (they never wait on the guest, so this cannot deadlock); one chunk is
/// always let through.
#[derive(Default)]
struct Budget {
    queued: std::sync::Mutex<usize>,
    drained: std::sync::Condvar,
}

/// Bytes counted against a [`Budget`] until dropped.
struct Reservation {
    budget: std::sync::Arc<Budget>,
    len: usize,
}

impl Budget {
    fn reserve(budget: &std::sync::Arc<Budget>, len: usize) -> Reservation {
        let mut queued = budget.queued.lock().unwrap_or_else(|p| p.into_inner());
        while *queued > 0 && queued.saturating_add(len) > PIPELINE_BYTES_MAX {
            queued = budget
                .drained
                .wait(queued)
                .unwrap_or_else(|p| p.into_inner());
        }
        *queued += len;
        Reservation {
            budget: std::sync::Arc::clone(budget),
            len,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut queued = self.budget.queued.lock().unwrap_or_else(|p| p.into_inner());
        *queued = queued.saturating_sub(self.len);
        self.budget.drained.notify_all();
    }
}

/// Fields drop in order: the sender first, which ends the worker's loop
/// once it has handled what is queued, then the worker is joined. So a
/// dropped upload (or chunker instance) leaves no thread behind holding
/// the store, and the wait is bounded by the chunks queued.
struct Pipeline {
    requests: std::sync::mpsc::SyncSender<Request>,
    failure: std::sync::Arc<std::sync::Mutex<Option<types::Error>>>,
    _worker: JoinOnDrop,
}

/// Joins a thread when dropped. A worker that panicked has already printed
/// its panic, and its queue was dropped with it.
struct JoinOnDrop(Option<std::thread::JoinHandle<()>>);

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

type Reply<T> = std::sync::mpsc::SyncSender<Result<T, types::Error>>;

enum Request {
    /// The chunk's bytes stay counted against the instance's budget until
    /// the request is dropped, handled or not.
    Put(store::Hash, Vec<u8>, Reservation),
    Missing(Vec<store::Hash>, Reply<Vec<bool>>),
    Commit(Box<CommitRequest>, Reply<String>),
}

struct CommitRequest {
    chunks: Vec<store::ChunkRef>,
    size: u64,
    digest: Option<store::Hash>,
    meta: store::NewMetadata,
    bound: Option<(String, String)>,
}

/// Name of every upload worker thread (what a panic message names).
pub const UPLOAD_WORKER_NAME: &str = "tblob-upload";

/// What [`Pipeline::start`] gives back when there is no worker: the upload
/// (if the OS refused the thread) and why.
type Refused = (Option<store::Upload>, std::io::Error);

impl Pipeline {
    /// Moves `upload` to a new worker thread. If the OS refuses the thread,
    /// the upload is handed back so it can go on inline.
    fn start(upload: store::Upload) -> Result<Pipeline, Refused> {
        let (requests, inbox) = std::sync::mpsc::sync_channel::<Request>(PIPELINE_CHUNKS_MAX);
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let failed = failure.clone();
        // The upload goes to the worker through a slot, not the closure, so
        // it can be taken back if the closure never runs.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(upload)));
        let handed = std::sync::Arc::clone(&slot);
        let spawned = spawn_worker(move || {
            let Some(mut upload) = handed.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                return;
            };
            let fail = |error: StoreError| {
                let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(error::to_wit(error)).clone()
            };
            let failed_already = || failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
            // Ends when the handle drops its sender; dropping `upload` then
            // releases its pins.
            for request in inbox {
                match request {
                    Request::Put(digest, bytes, _reservation) => {
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
                            upload.hash_pending();
                        }
                    }
                    Request::Commit(commit, reply) => {
                        let result = match failed_already() {
                            Some(error) => Err(error),
                            None => {
                                upload.bind_to(commit.bound);
                                upload.commit(
                                    &commit.chunks,
                                    commit.size,
                                    commit.digest.as_ref(),
                                    commit.meta,
                                )
                            }
                            .map(|id| id.to_string())
                            .map_err(error::to_wit),
                        };
                        let _ = reply.send(result);
                        return;
                    }
                }
            }
        });
        match spawned {
            Ok(thread) => Ok(Pipeline {
                requests,
                failure,
                _worker: JoinOnDrop(Some(thread)),
            }),
            // The closure was dropped unrun, so the upload is still here.
            Err(refused) => Err((
                slot.lock().unwrap_or_else(|p| p.into_inner()).take(),
                refused,
            )),
        }
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
        self.requests.send(request).map_err(|_| worker_stopped())
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, BlobError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(make(reply))?;
        match answer.recv() {
            Ok(result) => result.map_err(BlobError::Blob),
            Err(_) => Err(worker_stopped()),
        }
    }
}

/// A worker that went away without answering: only a host bug (a panic in
/// the worker) does that. Traps the chunker; the message says so.
fn worker_stopped() -> BlobError {
    BlobError::Trap(wasmtime::Error::msg(
        "upload worker stopped unexpectedly (a host bug: see its panic message)",
    ))
}

/// Runs `work` on a new thread named [`UPLOAD_WORKER_NAME`]. An error (the
/// OS refused a thread) is returned, never a panic.
fn spawn_worker(
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    #[cfg(test)]
    if tests::REFUSE_THREADS.with(std::cell::Cell::get) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "Resource temporarily unavailable (refused by the test)",
        ));
    }
    std::thread::Builder::new()
        .name(UPLOAD_WORKER_NAME.into())
        .spawn(work)
}

/// A chunk's length must be 1..=[`CHUNK_BYTES_MAX`]: checked before the
/// bytes are queued or stored.
fn check_chunk_len(len: usize) -> Result<(), BlobError> {
    if len == 0 || len > CHUNK_BYTES_MAX as usize {
        return Err(BlobError::invalid(format!(
            "put-chunk of {len} bytes: a chunk must be 1..={CHUNK_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

/// Per-instance state of a chunker component: one tenant's store and the
/// chunker's open uploads.
pub struct ChunkerState {
    pub(crate) store: store::Store,
    pub(crate) table: ResourceTable,
    pub(crate) limits: crate::runtime::limits::GuestLimiter,
    uploads_open: usize,
    /// Bytes queued to this instance's upload workers.
    budget: std::sync::Arc<Budget>,
    /// The object name the next commit binds its artifact to: set by the
    /// host just before it calls the chunker's `writer.finish` (chunker
    /// calls are synchronous), taken by that call's `commit`, and cleared
    /// after it whatever happened (see `Chunker::writer_finish_bound`).
    pub(crate) binding: Option<(String, String)>,
    /// How the uploads begun during the current chunker call store their
    /// chunks: the plugin's `put-options.compress`, set by the host around
    /// `put` and `create-writer` (see `Chunker::with_put_options`). `None`:
    /// the store's setting.
    pub(crate) compression: Option<store::Compression>,
}

impl ChunkerState {
    pub fn new(store: store::Store, limits: crate::runtime::limits::GuestLimiter) -> Self {
        ChunkerState {
            store,
            table: ResourceTable::new(),
            limits,
            uploads_open: 0,
            budget: std::sync::Arc::default(),
            binding: None,
            compression: None,
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
                upload.hash_pending();
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
        // At the edge: an oversized chunk is never queued or kept.
        check_chunk_len(bytes.len())?;
        let digest = convert::hash(&digest)?;
        let budget = std::sync::Arc::clone(&self.budget);
        let entry = self.table.get_mut(&handle)?;
        entry.chunks_put += 1;
        match std::mem::replace(&mut entry.state, UploadState::Closed) {
            UploadState::Inline(mut upload)
                if entry.chunks_put <= INLINE_CHUNKS || entry.inline_only =>
            {
                // The first chunks inline: a small put needs no thread.
                let result = upload.put_chunk(&digest, &bytes);
                entry.state = UploadState::Inline(upload);
                Ok(result?)
            }
            UploadState::Inline(upload) => match Pipeline::start(upload) {
                Ok(pipeline) => {
                    let reserved = Budget::reserve(&budget, bytes.len());
                    let result = pipeline.send(Request::Put(digest, bytes, reserved));
                    entry.state = UploadState::Piped(pipeline);
                    result
                }
                Err((Some(mut upload), _refused)) => {
                    // No thread to be had: this upload goes on inline.
                    entry.inline_only = true;
                    let result = upload.put_chunk(&digest, &bytes);
                    entry.state = UploadState::Inline(upload);
                    Ok(result?)
                }
                Err((None, refused)) => Err(BlobError::Blob(types::Error::Io(format!(
                    "upload worker thread: {refused}; the upload is lost"
                )))),
            },
            UploadState::Piped(pipeline) => {
                let result = pipeline.check().and_then(|()| {
                    let reserved = Budget::reserve(&budget, bytes.len());
                    pipeline.send(Request::Put(digest, bytes, reserved))
                });
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
        digest: Option<Vec<u8>>,
        options: PutOptions,
    ) -> Result<String, BlobError> {
        // Closed whatever the outcome: take the upload out first.
        let state = std::mem::replace(&mut self.table.get_mut(&handle)?.state, UploadState::Closed);
        if matches!(state, UploadState::Closed) {
            // Committed before: that, not the arguments, is what to say.
            return Err(BlobError::Blob(types::Error::Closed));
        }
        check::put_options(&options)?;
        let chunks = convert::chunk_refs(chunks)?;
        let digest = digest.as_deref().map(convert::hash).transpose()?;
        let meta = convert::new_metadata(options)?;
        let bound = self.binding.take();
        match state {
            UploadState::Inline(mut upload) => {
                upload.bind_to(bound);
                Ok(upload
                    .commit(&chunks, size, digest.as_ref(), meta)?
                    .to_string())
            }
            UploadState::Piped(pipeline) => {
                pipeline.check()?;
                let commit = Box::new(CommitRequest {
                    chunks,
                    size,
                    digest,
                    meta,
                    bound,
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
        let mut upload = self.store.try_begin_upload()?;
        if let Some(compression) = self.compression {
            upload.set_compression(compression);
        }
        let handle = self.table.push(UploadHandle {
            state: UploadState::Inline(upload),
            chunks_put: 0,
            inline_only: false,
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
        check::page_limit("read-manifest", limit, MANIFEST_PAGE_MAX as usize)?;
        let page = self.store.manifest(&id, start, limit)?;
        Ok(page.iter().map(convert::wit_chunk_ref).collect())
    }

    fn locate(&mut self, id: String, offset: u64) -> Result<(u64, u64), BlobError> {
        let id = convert::artifact_id(&id)?;
        Ok(self.store.locate(&id, offset)?)
    }

    fn size(&mut self, id: String) -> Result<u64, BlobError> {
        let id = convert::artifact_id(&id)?;
        Ok(self.store.metadata(&id)?.size)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use wasmtime::component::Resource;

    use super::*;
    use crate::runtime::bindings::chunker::tensor::blob::chunk_store::{Host, HostUpload};

    thread_local! {
        /// Makes [`spawn_worker`] fail on this thread, as when the OS
        /// refuses a thread (EAGAIN).
        pub(super) static REFUSE_THREADS: Cell<bool> = const { Cell::new(false) };
    }

    fn state() -> (tempfile::TempDir, ChunkerState) {
        let dir = tempfile::tempdir().unwrap();
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let options = store::StoreOptions {
            durability: store::Durability::None,
            ..store::StoreOptions::default()
        };
        let store = store::Store::open(root, options).unwrap();
        (
            dir,
            ChunkerState::new(
                store,
                crate::runtime::limits::GuestLimiter::new(
                    crate::runtime::limits::CHUNKER_MEMORY_BYTES_MAX,
                ),
            ),
        )
    }

    fn borrow(handle: &Resource<UploadHandle>) -> Resource<UploadHandle> {
        Resource::new_borrow(handle.rep())
    }

    fn chunk(seed: u8, len: usize) -> (Vec<u8>, Vec<u8>) {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        (blake3::hash(&bytes).as_bytes().to_vec(), bytes)
    }

    /// Puts `chunks` the way the chunker does (`missing`, then each missing
    /// one) and commits them; returns the commit's answer.
    fn put_all(
        state: &mut ChunkerState,
        handle: &Resource<UploadHandle>,
        chunks: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<String, BlobError> {
        let digests: Vec<Vec<u8>> = chunks.iter().map(|(d, _)| d.clone()).collect();
        let missing = state.missing(borrow(handle), digests)?;
        for ((digest, bytes), missing) in chunks.iter().zip(missing) {
            if missing {
                state.put_chunk(borrow(handle), digest.clone(), bytes.clone())?;
            }
        }
        let mut whole = blake3::Hasher::new();
        let refs = chunks
            .iter()
            .map(|(digest, bytes)| {
                whole.update(bytes);
                ChunkRef {
                    digest: digest.clone(),
                    len: bytes.len() as u32,
                }
            })
            .collect();
        let size = chunks.iter().map(|(_, b)| b.len() as u64).sum();
        state.commit(
            borrow(handle),
            refs,
            size,
            Some(whole.finalize().as_bytes().to_vec()),
            PutOptions::default(),
        )
    }

    /// Regression: `Pipeline::start` used `std::thread::spawn`, which
    /// panics (taking the host down with it) when the OS refuses a thread.
    /// Now the refusal is an error and the upload goes on inline.
    #[test]
    fn an_upload_refused_a_worker_thread_goes_on_inline() {
        let (_dir, mut state) = state();
        REFUSE_THREADS.with(|refuse| refuse.set(true));
        let handle = state.begin_upload().unwrap();
        let chunks: Vec<_> = (0..5).map(|i| chunk(i, 1000 + usize::from(i))).collect();
        let id = put_all(&mut state, &handle, &chunks);
        REFUSE_THREADS.with(|refuse| refuse.set(false));
        let entry = state.table.get(&handle).unwrap();
        assert!(entry.inline_only, "the refusal was noticed");
        assert!(matches!(entry.state, UploadState::Closed));
        let id: store::ArtifactId = id.unwrap().parse().unwrap();
        state.store.verify(&id).unwrap();
        assert_eq!(state.store.metadata(&id).unwrap().chunk_count, 5);
        HostUpload::drop(&mut state, handle).unwrap();
    }

    /// Regression: past an upload's inline chunks, `put-chunk` queued the
    /// bytes to the worker before their length was checked, so a hostile
    /// chunker could park oversized chunks in host memory and only heard
    /// of it at its next call. Now they are refused at once.
    #[test]
    fn a_chunk_of_a_bad_length_is_refused_before_it_is_queued() {
        let (_dir, mut state) = state();
        let handle = state.begin_upload().unwrap();
        // The inline ones, one queued to the worker, and one after the
        // refusals.
        let n = INLINE_CHUNKS as usize + 2;
        let chunks: Vec<_> = (0..n as u8).map(|i| chunk(i, 4096)).collect();
        let digests = chunks.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(
            state.missing(borrow(&handle), digests).unwrap(),
            vec![true; n]
        );
        for (digest, bytes) in &chunks[..n - 1] {
            state
                .put_chunk(borrow(&handle), digest.clone(), bytes.clone())
                .unwrap();
        }
        assert!(matches!(
            state.table.get(&handle).unwrap().state,
            UploadState::Piped(_)
        ));
        for len in [
            0,
            CHUNK_BYTES_MAX as usize + 1,
            3 * CHUNK_BYTES_MAX as usize,
        ] {
            let (digest, bytes) = chunk(9, len);
            match state.put_chunk(borrow(&handle), digest, bytes) {
                Err(BlobError::Blob(types::Error::InvalidArgument(m))) => {
                    assert!(m.contains("1..="), "{m}")
                }
                other => panic!("{len} bytes: {other:?}"),
            }
        }
        // Only the chunk past the inline ones was ever queued.
        assert!(*state.budget.queued.lock().unwrap() <= 4096);
        // The refusals did not fail the upload.
        let (digest, bytes) = &chunks[n - 1];
        state
            .put_chunk(borrow(&handle), digest.clone(), bytes.clone())
            .unwrap();
        let mut whole = blake3::Hasher::new();
        let refs = chunks
            .iter()
            .map(|(digest, bytes)| {
                whole.update(bytes);
                ChunkRef {
                    digest: digest.clone(),
                    len: bytes.len() as u32,
                }
            })
            .collect();
        let id = state
            .commit(
                borrow(&handle),
                refs,
                n as u64 * 4096,
                Some(whole.finalize().as_bytes().to_vec()),
                PutOptions::default(),
            )
            .unwrap();
        state.store.verify(&id.parse().unwrap()).unwrap();
        assert_eq!(*state.budget.queued.lock().unwrap(), 0);
    }

    /// Regression (issue 9): `read-manifest` with a `limit` over 65536 was
    /// silently clamped, where the WIT promises `invalid-argument`. The
    /// chunker reaches it directly, past the plugin-side checks. (`list`
    /// and `find-by-tag` no longer cross the chunker: their bounds are
    /// tested in `runtime::metadata`.)
    #[test]
    fn chunk_store_refuses_limits_past_their_maximum_and_unknown_ids() {
        let (_dir, mut state) = state();
        let handle = state.begin_upload().unwrap();
        let id = put_all(&mut state, &handle, &[chunk(1, 100)]).unwrap();
        HostUpload::drop(&mut state, handle).unwrap();
        let invalid = |what: &str, result: Result<usize, BlobError>| match result {
            Err(BlobError::Blob(types::Error::InvalidArgument(_))) => {}
            other => panic!("{what}: {other:?}"),
        };
        assert_eq!(
            state
                .read_manifest(id.clone(), 0, MANIFEST_PAGE_MAX)
                .unwrap()
                .len(),
            1
        );
        invalid(
            "read-manifest",
            state
                .read_manifest(id.clone(), 0, MANIFEST_PAGE_MAX + 1)
                .map(|refs| refs.len()),
        );
        assert_eq!(state.size(id).unwrap(), 100);
        match state.size("0123456789abcdef0123456789abcdef".into()) {
            Err(BlobError::Blob(types::Error::NotFound(_))) => {}
            other => panic!("size of an unknown id: {other:?}"),
        }
        invalid("size", state.size("nope".into()).map(|n| n as usize));
    }

    #[test]
    fn the_pipeline_budget_waits_for_the_workers_and_lets_one_chunk_through() {
        let budget = std::sync::Arc::new(Budget::default());
        // One chunk larger than the budget still goes through.
        let big = Budget::reserve(&budget, PIPELINE_BYTES_MAX + 1);
        let (done, finished) = std::sync::mpsc::channel();
        let waiter = {
            let budget = std::sync::Arc::clone(&budget);
            std::thread::spawn(move || {
                let small = Budget::reserve(&budget, 1);
                done.send(()).unwrap();
                drop(small);
            })
        };
        assert!(finished
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_err());
        drop(big);
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        waiter.join().unwrap();
        assert_eq!(*budget.queued.lock().unwrap(), 0);
    }
}
