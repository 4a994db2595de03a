//! `wasi:blobstore@0.2.0-draft` on the tenant's store: containers and
//! object names are the store's durable name index
//! ([`Store::create_container`] and friends), object bytes are artifacts
//! written and read through the chunker component, verified on every read.
//!
//! Resources (`container`, `stream-object-names`, `outgoing-value`,
//! `incoming-value`) live in the plugin's WASI resource table next to the
//! `wasi:io` streams they hand out, which are wasmtime-wasi's
//! `DynOutputStream`/`DynInputStream`. A value's stream owns the value's
//! chunker instance (made from the [`Runtime`] for the tenant) and calls
//! it synchronously from `write`/`read`, so nothing is buffered beyond one
//! call: memory is one chunker's buffers per open value, and at most
//! [`VALUES_OPEN_MAX`] values hold one at a time.
//!
//! Every decision the upstream WIT leaves open is stated in the doc of the
//! `blobstore-command` world (`wit/tensor-blob.wit`). Guest mistakes are
//! the interface's `error` strings; only a bad resource handle (a host
//! fault wasmtime reports) or a handle flood past [`BLOBSTORE_HANDLES_MAX`]
//! traps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamError, StreamResult,
};

use crate::runtime::bindings::blobstore::wasi::blobstore::{blobstore, container, types};
use crate::runtime::chunker::{Chunker, ChunkerResource, PIECE_BYTES};
use crate::runtime::error::{describe, BlobError};
use crate::runtime::Runtime;
use crate::store::{self, StoreError};

/// Most blobstore resources (containers, name streams, values) a plugin
/// may hold at once; one more traps (a handle flood, not a mistake).
pub const BLOBSTORE_HANDLES_MAX: usize = 4096;
/// Most values (outgoing with a body begun, or incoming) holding a chunker
/// instance at once; one more is an error. Bounds memory at this many
/// chunkers' buffers (about two chunks each).
pub const VALUES_OPEN_MAX: usize = 16;
/// Largest range `incoming-value-consume-sync` returns; larger is an error.
pub const CONSUME_SYNC_BYTES_MAX: u64 = 64 << 20;
/// Most names one `read-stream-object-names` (or skip) returns.
pub const NAMES_READ_MAX: usize = 1000;
// One more is asked of the store, to tell whether the end was reached.
const _: () = assert!(NAMES_READ_MAX < store::LIST_OBJECTS_PAGE_MAX);
/// Bytes the body stream accepts per `write` (its `check-write` permit).
pub const WRITE_PERMIT_BYTES: usize = PIECE_BYTES;

/// The state the blobstore imports act on: the tenant's runtime and store.
pub struct BlobstoreCtx {
    runtime: Runtime,
    tenant: String,
    store: store::Store,
    handles: usize,
    values_open: Arc<AtomicUsize>,
}

impl BlobstoreCtx {
    /// A context acting as `tenant`.
    pub fn new(runtime: &Runtime, tenant: &str) -> wasmtime::Result<Self> {
        Ok(BlobstoreCtx {
            runtime: runtime.clone(),
            tenant: tenant.to_owned(),
            store: runtime.tenant_store(tenant)?,
            handles: 0,
            values_open: Arc::default(),
        })
    }
}

/// What the blobstore host functions borrow from the store's data: the
/// context and the WASI resource table.
pub struct BlobstoreView<'a> {
    pub ctx: &'a mut BlobstoreCtx,
    pub table: &'a mut ResourceTable,
}

/// Reaches a [`BlobstoreView`] inside a store's data.
pub trait BlobstoreViewSource: Send {
    fn blobstore(&mut self) -> BlobstoreView<'_>;
}

struct HasBlobstore;
impl HasData for HasBlobstore {
    type Data<'a> = BlobstoreView<'a>;
}

/// Adds `wasi:blobstore/{blobstore,container,types}@0.2.0-draft` to
/// `linker` (which must also have wasmtime-wasi's `wasi:io`, as
/// `wasmtime_wasi::p2::add_to_linker_async` adds).
pub fn add_to_linker<T: BlobstoreViewSource + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    types::add_to_linker::<T, HasBlobstore>(linker, |t| t.blobstore())?;
    container::add_to_linker::<T, HasBlobstore>(linker, |t| t.blobstore())?;
    blobstore::add_to_linker::<T, HasBlobstore>(linker, |t| t.blobstore())
}

/// A plugin's `container`: a name, looked up again at every call (the
/// container may have been deleted meanwhile).
pub struct Container {
    name: String,
}

/// A plugin's `stream-object-names`: a cursor (the last name returned).
pub struct StreamObjectNames {
    container: String,
    after: Option<String>,
    done: bool,
}

/// A plugin's `outgoing-value`.
pub struct OutgoingValue {
    /// Made by `outgoing-value-write-body`; shared with its stream.
    body: Option<Arc<Mutex<Body>>>,
    body_taken: bool,
    /// (container, name) given by `write-data`.
    target: Option<(String, String)>,
}

/// A plugin's `incoming-value`: the range's reader, if it is not empty.
pub struct IncomingValue {
    read: Option<Read>,
    len: u64,
}

/// Holds one of [`VALUES_OPEN_MAX`] slots until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Result<Slot, String> {
        let taken = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < VALUES_OPEN_MAX).then_some(open + 1)
        });
        match taken {
            Ok(_) => Ok(Slot(Arc::clone(count))),
            Err(_) => Err(format!(
                "at most {VALUES_OPEN_MAX} values may be open at once"
            )),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An upload in progress: the value's own chunker and writer.
struct Body {
    chunker: Chunker,
    writer: Option<ChunkerResource>,
    /// The first failure of a write, which `finish` reports too.
    error: Option<String>,
    _slot: Slot,
}

impl Drop for Body {
    fn drop(&mut self) {
        // Releasing an unfinished writer aborts its upload: nothing stored.
        if let Some(writer) = self.writer.take() {
            let _ = self.chunker.release(writer);
        }
    }
}

/// A range being read: the value's own chunker and reader.
struct Read {
    chunker: Chunker,
    reader: Option<ChunkerResource>,
    remaining: u64,
    /// Keeps the bytes readable if the object is deleted meanwhile.
    _hold: store::Hold,
    _slot: Slot,
}

impl Read {
    /// Up to `len` more verified bytes; empty at the end of the range.
    fn next(&mut self, len: u64) -> Result<Vec<u8>, String> {
        let len = len.min(self.remaining).min(PIECE_BYTES as u64);
        let Some(reader) = self.reader.as_ref().filter(|_| len > 0) else {
            return Ok(Vec::new());
        };
        let bytes = self
            .chunker
            .reader_read(reader, len as u32)
            .map_err(|e| blob_message(&e))?;
        if bytes.is_empty() && self.remaining > 0 {
            return Err(format!(
                "the object ended {} bytes before the range",
                self.remaining
            ));
        }
        self.remaining -= bytes.len() as u64;
        Ok(bytes)
    }
}

impl Drop for Read {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = self.chunker.release(reader);
        }
    }
}

fn blob_message(error: &BlobError) -> String {
    match error {
        BlobError::Blob(error) => describe(error),
        BlobError::Trap(trap) => format!("the chunker failed: {trap}"),
    }
}

fn store_message(error: StoreError) -> String {
    match error {
        StoreError::NotFound(what) => format!("not found: {what}"),
        StoreError::InvalidArgument(why) => format!("invalid argument: {why}"),
        other => other.to_string(),
    }
}

type Answer<T> = wasmtime::Result<Result<T, String>>;

impl BlobstoreView<'_> {
    fn push<T: Send + 'static>(&mut self, value: T) -> wasmtime::Result<Resource<T>> {
        if self.ctx.handles >= BLOBSTORE_HANDLES_MAX {
            return Err(wasmtime::Error::msg(format!(
                "the plugin holds {BLOBSTORE_HANDLES_MAX} blobstore resources, the most allowed"
            )));
        }
        let handle = self.table.push(value)?;
        self.ctx.handles += 1;
        Ok(handle)
    }

    fn delete<T: 'static>(&mut self, handle: Resource<T>) -> wasmtime::Result<T> {
        let value = self.table.delete(handle)?;
        self.ctx.handles = self.ctx.handles.saturating_sub(1);
        Ok(value)
    }

    fn container_name(&self, handle: &Resource<Container>) -> wasmtime::Result<String> {
        Ok(self.table.get(handle)?.name.clone())
    }

    fn chunker(&self) -> Result<Chunker, String> {
        self.ctx
            .runtime
            .chunker(&self.ctx.tenant)
            .map_err(|e| format!("starting a chunker: {e}"))
    }

    /// A new body: a chunker of its own and a writer.
    fn new_body(&self) -> Result<Body, String> {
        let slot = Slot::take(&self.ctx.values_open)?;
        let mut chunker = self.chunker()?;
        let writer = chunker
            .create_writer(&crate::runtime::PutOptions::default())
            .map_err(|e| blob_message(&e))?;
        Ok(Body {
            chunker,
            writer: Some(writer),
            error: None,
            _slot: slot,
        })
    }
}

impl types::Host for BlobstoreView<'_> {}

impl types::HostOutgoingValue for BlobstoreView<'_> {
    async fn new_outgoing_value(&mut self) -> wasmtime::Result<Resource<OutgoingValue>> {
        self.push(OutgoingValue {
            body: None,
            body_taken: false,
            target: None,
        })
    }

    async fn outgoing_value_write_body(
        &mut self,
        handle: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        if self.table.get(&handle)?.body_taken {
            return Ok(Err(()));
        }
        let body = match self.new_body() {
            Ok(body) => Arc::new(Mutex::new(body)),
            Err(_) => return Ok(Err(())),
        };
        let value = self.table.get_mut(&handle)?;
        value.body_taken = true;
        value.body = Some(Arc::clone(&body));
        let stream: DynOutputStream = Box::new(BodyStream { body });
        Ok(Ok(self.table.push(stream)?))
    }

    async fn finish(&mut self, handle: Resource<OutgoingValue>) -> Answer<()> {
        let value = self.delete(handle)?;
        let Some((container, name)) = value.target else {
            return Ok(Err(
                "finish of a value never named by write-data: nothing was stored".to_string(),
            ));
        };
        let body = match value.body {
            None => match self.new_body() {
                Ok(body) => body,
                Err(e) => return Ok(Err(e)),
            },
            Some(shared) => match Arc::try_unwrap(shared) {
                Ok(body) => body.into_inner().unwrap_or_else(|p| p.into_inner()),
                Err(_) => {
                    return Ok(Err(
                        "finish before the body stream was dropped: nothing was stored".to_string(),
                    ))
                }
            },
        };
        Ok(commit(body, &self.ctx.store, &container, &name))
    }

    async fn drop(&mut self, handle: Resource<OutgoingValue>) -> wasmtime::Result<()> {
        // A value dropped without `finish` stores nothing; its body (if its
        // stream is gone too) aborts the upload when dropped.
        self.delete(handle)?;
        Ok(())
    }
}

/// Commits `body` bound to `name` in `container`, and checks the chunker
/// did bind it (a chunker that never called `commit` bound nothing).
fn commit(mut body: Body, store: &store::Store, container: &str, name: &str) -> Result<(), String> {
    if let Some(error) = body.error.take() {
        return Err(format!("the body stream failed: {error}"));
    }
    let writer = body
        .writer
        .take()
        .expect("a body has its writer until here");
    let result = body.chunker.writer_finish_bound(&writer, container, name);
    let _ = body.chunker.release(writer);
    let id = result.map_err(|e| blob_message(&e))?;
    match store.object_info(container, name) {
        Ok(info) if info.id.to_string() == id => Ok(()),
        Ok(_) | Err(_) => Err(format!(
            "the object {name:?} in container {container:?} was not stored (the chunker did not commit it)"
        )),
    }
}

impl types::HostIncomingValue for BlobstoreView<'_> {
    async fn incoming_value_consume_sync(
        &mut self,
        handle: Resource<IncomingValue>,
    ) -> Answer<Vec<u8>> {
        let value = self.delete(handle)?;
        if value.len > CONSUME_SYNC_BYTES_MAX {
            return Ok(Err(format!(
                "a range of {} bytes is over the {CONSUME_SYNC_BYTES_MAX} bytes consume-sync returns: use consume-async",
                value.len
            )));
        }
        let Some(mut read) = value.read else {
            return Ok(Ok(Vec::new()));
        };
        let mut bytes = Vec::with_capacity(value.len as usize);
        while read.remaining > 0 {
            match read.next(read.remaining) {
                Ok(piece) => bytes.extend_from_slice(&piece),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(bytes))
    }

    async fn incoming_value_consume_async(
        &mut self,
        handle: Resource<IncomingValue>,
    ) -> Answer<Resource<DynInputStream>> {
        let value = self.delete(handle)?;
        let stream: DynInputStream = Box::new(RangeStream { read: value.read });
        Ok(Ok(self.table.push(stream)?))
    }

    async fn size(&mut self, handle: Resource<IncomingValue>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&handle)?.len)
    }

    async fn drop(&mut self, handle: Resource<IncomingValue>) -> wasmtime::Result<()> {
        self.delete(handle)?;
        Ok(())
    }
}

impl blobstore::Host for BlobstoreView<'_> {
    async fn create_container(&mut self, name: String) -> Answer<Resource<Container>> {
        match self.ctx.store.create_container(&name) {
            Ok(_) => Ok(Ok(self.push(Container { name })?)),
            Err(e) => Ok(Err(store_message(e))),
        }
    }

    async fn get_container(&mut self, name: String) -> Answer<Resource<Container>> {
        match self.ctx.store.container_info(&name) {
            Ok(_) => Ok(Ok(self.push(Container { name })?)),
            Err(e) => Ok(Err(store_message(e))),
        }
    }

    async fn delete_container(&mut self, name: String) -> Answer<()> {
        Ok(self
            .ctx
            .store
            .delete_container(&name)
            .map_err(store_message))
    }

    async fn container_exists(&mut self, name: String) -> Answer<bool> {
        Ok(self
            .ctx
            .store
            .container_exists(&name)
            .map_err(store_message))
    }

    async fn copy_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> Answer<()> {
        Ok(self
            .ctx
            .store
            .copy_object(
                (&src.container, &src.object),
                (&dest.container, &dest.object),
            )
            .map(|_| ())
            .map_err(store_message))
    }

    async fn move_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> Answer<()> {
        Ok(self
            .ctx
            .store
            .move_object(
                (&src.container, &src.object),
                (&dest.container, &dest.object),
            )
            .map_err(store_message))
    }
}

impl container::Host for BlobstoreView<'_> {}

impl container::HostContainer for BlobstoreView<'_> {
    async fn name(&mut self, handle: Resource<Container>) -> Answer<String> {
        Ok(Ok(self.container_name(&handle)?))
    }

    async fn info(&mut self, handle: Resource<Container>) -> Answer<types::ContainerMetadata> {
        let name = self.container_name(&handle)?;
        Ok(self
            .ctx
            .store
            .container_info(&name)
            .map(|info| types::ContainerMetadata {
                name: info.name,
                created_at: info.created_ms,
            })
            .map_err(store_message))
    }

    async fn get_data(
        &mut self,
        handle: Resource<Container>,
        name: String,
        start: u64,
        end: u64,
    ) -> Answer<Resource<IncomingValue>> {
        let container = self.container_name(&handle)?;
        let info = match self.ctx.store.object_info(&container, &name) {
            Ok(info) => info,
            Err(e) => return Ok(Err(store_message(e))),
        };
        if start > end {
            return Ok(Err(format!(
                "invalid argument: start {start} is after end {end}"
            )));
        }
        if start > info.size {
            return Ok(Err(format!(
                "invalid argument: start {start} is past the end of the object ({} bytes)",
                info.size
            )));
        }
        // Inclusive end, clamped to the last byte; `start == size` is empty.
        let len = if start == info.size {
            0
        } else {
            end.min(info.size - 1) - start + 1
        };
        let read = if len == 0 {
            None
        } else {
            let slot = match Slot::take(&self.ctx.values_open) {
                Ok(slot) => slot,
                Err(e) => return Ok(Err(e)),
            };
            let mut chunker = match self.chunker() {
                Ok(chunker) => chunker,
                Err(e) => return Ok(Err(e)),
            };
            let hold = match self.ctx.store.hold(&info.id) {
                Ok(hold) => hold,
                Err(e) => return Ok(Err(store_message(e))),
            };
            let reader = match chunker.open_reader(&info.id.to_string(), start) {
                Ok(reader) => reader,
                Err(e) => return Ok(Err(blob_message(&e))),
            };
            Some(Read {
                chunker,
                reader: Some(reader),
                remaining: len,
                _hold: hold,
                _slot: slot,
            })
        };
        Ok(Ok(self.push(IncomingValue { read, len })?))
    }

    async fn write_data(
        &mut self,
        handle: Resource<Container>,
        name: String,
        data: Resource<OutgoingValue>,
    ) -> Answer<()> {
        let container = self.container_name(&handle)?;
        if let Err(e) = store::format::check_object_name(&name) {
            return Ok(Err(format!("invalid argument: {e}")));
        }
        match self.ctx.store.container_exists(&container) {
            Ok(true) => {}
            Ok(false) => return Ok(Err(format!("not found: container {container:?}"))),
            Err(e) => return Ok(Err(store_message(e))),
        }
        let value = self.table.get_mut(&data)?;
        if let Some((c, n)) = &value.target {
            return Ok(Err(format!(
                "this value is already written to {n:?} in container {c:?}"
            )));
        }
        value.target = Some((container, name));
        Ok(Ok(()))
    }

    async fn list_objects(
        &mut self,
        handle: Resource<Container>,
    ) -> Answer<Resource<StreamObjectNames>> {
        let container = self.container_name(&handle)?;
        if let Err(e) = self.ctx.store.container_info(&container) {
            return Ok(Err(store_message(e)));
        }
        Ok(Ok(self.push(StreamObjectNames {
            container,
            after: None,
            done: false,
        })?))
    }

    async fn delete_object(&mut self, handle: Resource<Container>, name: String) -> Answer<()> {
        let container = self.container_name(&handle)?;
        Ok(self
            .ctx
            .store
            .delete_objects(&container, &[name])
            .map_err(store_message))
    }

    async fn delete_objects(
        &mut self,
        handle: Resource<Container>,
        names: Vec<String>,
    ) -> Answer<()> {
        let container = self.container_name(&handle)?;
        Ok(self
            .ctx
            .store
            .delete_objects(&container, &names)
            .map_err(store_message))
    }

    async fn has_object(&mut self, handle: Resource<Container>, name: String) -> Answer<bool> {
        let container = self.container_name(&handle)?;
        Ok(self
            .ctx
            .store
            .has_object(&container, &name)
            .map_err(store_message))
    }

    async fn object_info(
        &mut self,
        handle: Resource<Container>,
        name: String,
    ) -> Answer<types::ObjectMetadata> {
        let container = self.container_name(&handle)?;
        Ok(self
            .ctx
            .store
            .object_info(&container, &name)
            .map(|info| types::ObjectMetadata {
                name: info.name,
                container: info.container,
                created_at: info.created_ms,
                size: info.size,
            })
            .map_err(store_message))
    }

    async fn clear(&mut self, handle: Resource<Container>) -> Answer<()> {
        let container = self.container_name(&handle)?;
        Ok(self
            .ctx
            .store
            .clear_container(&container)
            .map_err(store_message))
    }

    async fn drop(&mut self, handle: Resource<Container>) -> wasmtime::Result<()> {
        self.delete(handle)?;
        Ok(())
    }
}

impl container::HostStreamObjectNames for BlobstoreView<'_> {
    async fn read_stream_object_names(
        &mut self,
        handle: Resource<StreamObjectNames>,
        len: u64,
    ) -> Answer<(Vec<String>, bool)> {
        let stream = self.table.get(&handle)?;
        if stream.done {
            return Ok(Ok((Vec::new(), true)));
        }
        let limit = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(NAMES_READ_MAX);
        // One more than asked tells whether the end was reached.
        let page =
            match self
                .ctx
                .store
                .list_objects(&stream.container, stream.after.as_deref(), limit + 1)
            {
                Ok(page) => page,
                Err(e) => return Ok(Err(store_message(e))),
            };
        let mut names = page;
        let end = names.len() <= limit;
        names.truncate(limit);
        let stream = self.table.get_mut(&handle)?;
        if let Some(last) = names.last() {
            stream.after = Some(last.clone());
        }
        stream.done = end;
        Ok(Ok((names, end)))
    }

    async fn skip_stream_object_names(
        &mut self,
        handle: Resource<StreamObjectNames>,
        num: u64,
    ) -> Answer<(u64, bool)> {
        match self.read_stream_object_names(handle, num).await? {
            Ok((names, end)) => Ok(Ok((names.len() as u64, end))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn drop(&mut self, handle: Resource<StreamObjectNames>) -> wasmtime::Result<()> {
        self.delete(handle)?;
        Ok(())
    }
}

/// The `output-stream` of an outgoing value: each write goes straight to
/// the value's chunker writer.
struct BodyStream {
    body: Arc<Mutex<Body>>,
}

impl BodyStream {
    fn body(&self) -> std::sync::MutexGuard<'_, Body> {
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn failed(message: String) -> StreamError {
    StreamError::LastOperationFailed(wasmtime::Error::msg(message))
}

#[async_trait::async_trait]
impl Pollable for BodyStream {
    async fn ready(&mut self) {}
}

#[async_trait::async_trait]
impl OutputStream for BodyStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut body = self.body();
        let body = &mut *body;
        if let Some(error) = &body.error {
            return Err(failed(error.clone()));
        }
        if bytes.len() > WRITE_PERMIT_BYTES {
            // A guest mistake: the value fails (so `finish` does too), the
            // plugin does not trap.
            let message = format!(
                "a write of {} bytes, over the {WRITE_PERMIT_BYTES} check-write permitted",
                bytes.len()
            );
            body.error = Some(message.clone());
            return Err(failed(message));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let writer = body.writer.as_ref().expect("a body has its writer");
        if let Err(e) = body.chunker.writer_write(writer, &bytes) {
            let message = blob_message(&e);
            body.error = Some(message.clone());
            return Err(failed(message));
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        match &self.body().error {
            Some(error) => Err(failed(error.clone())),
            None => Ok(()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match &self.body().error {
            Some(error) => Err(failed(error.clone())),
            None => Ok(WRITE_PERMIT_BYTES),
        }
    }
}

/// The `input-stream` of an incoming value: each read is a verified read
/// of the value's chunker reader.
struct RangeStream {
    read: Option<Read>,
}

#[async_trait::async_trait]
impl Pollable for RangeStream {
    async fn ready(&mut self) {}
}

#[async_trait::async_trait]
impl InputStream for RangeStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let Some(read) = self.read.as_mut() else {
            return Err(StreamError::Closed);
        };
        if read.remaining == 0 {
            self.read = None;
            return Err(StreamError::Closed);
        }
        match read.next(size as u64) {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(e) => {
                // Nothing more is read after a failure.
                self.read = None;
                Err(failed(e))
            }
        }
    }
}
