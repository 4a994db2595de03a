//! The chunker component: compiled once per [`Runtime`](super::Runtime),
//! instantiated per tenant context.
//!
//! A [`Chunker`] owns its own `wasmtime::Store` holding one tenant's
//! [`store::Store`](crate::store::Store). Calls into it are synchronous: they
//! run either on the caller's thread (the CLI, native embedders) or nested
//! inside a plugin's async host call, on the plugin's fiber stack. If the
//! chunker traps, its instance is discarded and a fresh one is made on the
//! next call; handles into the old instance then answer `closed`.
//!
//! The chunker serves only content (`transfer`: put, get, writers,
//! readers); metadata calls are the host's own ([`super::metadata`] over
//! [`Chunker::store`]). Every argument is bounded (`runtime::check`)
//! before it is copied into the chunker, so an oversized one is a typed
//! error, never a chunker trap.

use std::io::{Read, Write};

use wasmtime::component::{
    Component, ComponentNamedList, HasSelf, Lift, Linker, Lower, ResourceAny,
};
use wasmtime::Engine;

use super::bindings::chunker::exports::tensor::blob::transfer::Guest as TransferExports;
use super::bindings::chunker::{Chunker as ChunkerBindings, ChunkerPre};
use super::bindings::{PutOptions, WitError};
use super::check;
use super::error::BlobError;
use super::host::chunk_store::ChunkerState;
use super::limits::{
    GuestLimiter, CHUNKER_MEMORY_BYTES_MAX, FAR_EPOCH_DEADLINE, INLINE_BYTES_MAX, IO_BYTES_MAX,
};
use crate::store;

/// A compiled chunker component, ready to instantiate.
#[derive(Clone)]
pub struct ChunkerComponent {
    engine: Engine,
    pre: ChunkerPre<ChunkerState>,
}

impl ChunkerComponent {
    /// Compiles `wasm` (a component of the `chunker` world) for `engine`.
    /// Its WASI imports (Rust's std pulls some in) are defined as traps: the
    /// chunker gets nothing but the chunk store.
    pub fn new(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Self> {
        let component = Component::new(engine, wasm)?;
        let mut linker = Linker::new(engine);
        ChunkerBindings::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        linker.define_unknown_imports_as_traps(&component)?;
        let pre = ChunkerPre::new(linker.instantiate_pre(&component)?)?;
        Ok(ChunkerComponent {
            engine: engine.clone(),
            pre,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A new instance serving `store`.
    pub fn instantiate(&self, store: store::Store) -> wasmtime::Result<Chunker> {
        let mut chunker = Chunker {
            component: self.clone(),
            tenant_store: store,
            instance: None,
            generation: 0,
        };
        chunker.ensure_instance()?;
        Ok(chunker)
    }
}

struct Instance {
    store: wasmtime::Store<ChunkerState>,
    /// The raw instance, for [`Chunker::call_extra_export`].
    instance: wasmtime::component::Instance,
    bindings: ChunkerBindings,
}

/// A live chunker instance for one tenant.
pub struct Chunker {
    component: ChunkerComponent,
    tenant_store: store::Store,
    instance: Option<Instance>,
    generation: u64,
}

/// A chunker resource (writer or reader) and the instance generation it
/// belongs to.
#[derive(Clone, Copy, Debug)]
pub struct ChunkerResource {
    pub(crate) resource: ResourceAny,
    pub(crate) generation: u64,
}

impl Chunker {
    /// The tenant store this chunker serves.
    pub fn store(&self) -> &store::Store {
        &self.tenant_store
    }

    fn ensure_instance(&mut self) -> wasmtime::Result<()> {
        if self.instance.is_some() {
            return Ok(());
        }
        let limits = GuestLimiter::new(CHUNKER_MEMORY_BYTES_MAX).with_counts(4, 16, 4);
        let state = ChunkerState::new(self.tenant_store.clone(), limits);
        let mut store = wasmtime::Store::new(&self.component.engine, state);
        store.limiter(|state| &mut state.limits);
        // The chunker is never interrupted (a plugin's time limit stops the
        // plugin); this only matters on an engine with epoch interruption.
        store.set_epoch_deadline(FAR_EPOCH_DEADLINE);
        let instance = self.component.pre.instance_pre().instantiate(&mut store)?;
        let bindings = ChunkerBindings::new(&mut store, &instance)?;
        self.generation += 1;
        self.instance = Some(Instance {
            store,
            instance,
            bindings,
        });
        Ok(())
    }

    /// Runs `f` against the live instance. A trap discards the instance.
    fn call<R>(
        &mut self,
        f: impl FnOnce(
            &TransferExports,
            &mut wasmtime::Store<ChunkerState>,
        ) -> wasmtime::Result<Result<R, WitError>>,
    ) -> Result<R, BlobError> {
        self.ensure_instance().map_err(BlobError::Trap)?;
        let instance = self.instance.as_mut().expect("ensured above");
        match f(
            instance.bindings.tensor_blob_transfer(),
            &mut instance.store,
        ) {
            Ok(result) => result.map_err(BlobError::Blob),
            Err(trap) => {
                self.instance = None;
                Err(BlobError::Trap(trap))
            }
        }
    }

    fn live(&self, handle: &ChunkerResource) -> Result<ResourceAny, BlobError> {
        if handle.generation == self.generation && self.instance.is_some() {
            Ok(handle.resource)
        } else {
            Err(BlobError::Blob(WitError::Closed))
        }
    }

    /// The inline limit, [`INLINE_BYTES_MAX`]: the host's to set (the
    /// chunker's memory is sized for it), so the chunker is not asked.
    pub fn inline_bytes_max(&self) -> u64 {
        INLINE_BYTES_MAX
    }

    pub fn put(&mut self, data: &[u8], options: &PutOptions) -> Result<String, BlobError> {
        check::inline_data(data.len())?;
        check::put_options(options)?;
        self.with_put_options(options, |chunker| {
            chunker.call(|b, s| b.call_put(s, data, options))
        })
    }

    /// Runs `call` (a `put` or `create-writer`) with the host-side part of
    /// `options` in the instance's state, where the uploads the chunker
    /// begins during the call take it from; cleared afterwards.
    fn with_put_options<R>(
        &mut self,
        options: &PutOptions,
        call: impl FnOnce(&mut Self) -> Result<R, BlobError>,
    ) -> Result<R, BlobError> {
        let compression = match options.compress {
            Some(false) => Some(store::Compression::Off),
            Some(true) | None => None,
        };
        self.ensure_instance().map_err(BlobError::Trap)?;
        let instance = self.instance.as_mut().expect("ensured above");
        instance.store.data_mut().compression = compression;
        let result = call(self);
        if let Some(instance) = self.instance.as_mut() {
            instance.store.data_mut().compression = None;
        }
        result
    }

    pub fn get(&mut self, id: &str) -> Result<Vec<u8>, BlobError> {
        check::artifact_id(id)?;
        self.call(|b, s| b.call_get(s, &id.to_owned()))
    }

    pub fn create_writer(&mut self, options: &PutOptions) -> Result<ChunkerResource, BlobError> {
        check::put_options(options)?;
        let resource = self.with_put_options(options, |chunker| {
            chunker.call(|b, s| b.call_create_writer(s, options))
        })?;
        Ok(ChunkerResource {
            resource,
            generation: self.generation,
        })
    }

    pub fn writer_write(&mut self, handle: &ChunkerResource, data: &[u8]) -> Result<(), BlobError> {
        check::io_len(data.len())?;
        let resource = self.live(handle)?;
        self.call(|b, s| b.writer().call_write(s, resource, data))
    }

    pub fn writer_finish(&mut self, handle: &ChunkerResource) -> Result<String, BlobError> {
        let resource = self.live(handle)?;
        self.call(|b, s| b.writer().call_finish(s, resource))
    }

    /// [`Chunker::writer_finish`] whose commit also binds the artifact to
    /// object `name` of `container` in the same durable record (see
    /// [`store::Upload::bind_to`]). The binding is handed to the chunk
    /// store's `commit` through the instance's state: set just before the
    /// synchronous `finish` call, cleared after it, so no other commit can
    /// pick it up.
    pub fn writer_finish_bound(
        &mut self,
        handle: &ChunkerResource,
        container: &str,
        name: &str,
    ) -> Result<String, BlobError> {
        let resource = self.live(handle)?;
        let instance = self.instance.as_mut().expect("live checked it");
        instance.store.data_mut().binding = Some((container.to_owned(), name.to_owned()));
        let result = self.call(|b, s| b.writer().call_finish(s, resource));
        if let Some(instance) = self.instance.as_mut() {
            instance.store.data_mut().binding = None;
        }
        result
    }

    pub fn writer_abort(&mut self, handle: &ChunkerResource) -> Result<(), BlobError> {
        let resource = self.live(handle)?;
        self.call(|b, s| b.writer().call_abort(s, resource).map(Ok))
    }

    pub fn open_reader(&mut self, id: &str, offset: u64) -> Result<ChunkerResource, BlobError> {
        check::artifact_id(id)?;
        let resource = self.call(|b, s| b.call_open_reader(s, &id.to_owned(), offset))?;
        Ok(ChunkerResource {
            resource,
            generation: self.generation,
        })
    }

    pub fn reader_read(
        &mut self,
        handle: &ChunkerResource,
        len: u32,
    ) -> Result<Vec<u8>, BlobError> {
        check::io_len(len as usize)?;
        let resource = self.live(handle)?;
        self.call(|b, s| b.reader().call_read(s, resource, len))
    }

    pub fn reader_seek(&mut self, handle: &ChunkerResource, offset: u64) -> Result<(), BlobError> {
        let resource = self.live(handle)?;
        self.call(|b, s| b.reader().call_seek(s, resource, offset))
    }

    pub fn reader_size(&mut self, handle: &ChunkerResource) -> Result<u64, BlobError> {
        let resource = self.live(handle)?;
        self.call(|b, s| b.reader().call_size(s, resource).map(Ok))
    }

    /// Calls a function export `name` of the chunker component that is not
    /// part of the `chunker` world (a test chunker's entry point, such as
    /// the hostile chunker's `fuzz`). A trap discards the instance, as for
    /// every other call. Not for production chunkers, which have none.
    #[doc(hidden)]
    pub fn call_extra_export<P, R>(&mut self, name: &str, params: P) -> Result<R, BlobError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync,
    {
        self.ensure_instance().map_err(BlobError::Trap)?;
        let instance = self.instance.as_mut().expect("ensured above");
        let func = instance
            .instance
            .get_typed_func::<P, R>(&mut instance.store, name)
            .map_err(BlobError::Trap)?;
        match func.call(&mut instance.store, params) {
            Ok(results) => Ok(results),
            Err(trap) => {
                self.instance = None;
                Err(BlobError::Trap(trap))
            }
        }
    }

    /// Releases a writer or reader. Handles of a discarded instance are
    /// already gone with it.
    pub fn release(&mut self, handle: ChunkerResource) -> Result<(), BlobError> {
        if self.live(&handle).is_err() {
            return Ok(());
        }
        let instance = self.instance.as_mut().expect("live checked it");
        if let Err(trap) = handle.resource.resource_drop(&mut instance.store) {
            self.instance = None;
            return Err(BlobError::Trap(trap));
        }
        Ok(())
    }

    /// Streams everything from `source` into a new artifact, `piece_bytes`
    /// at a time, and returns its id. `progress` is told the bytes written
    /// so far. Memory: one piece here plus the chunker's buffers.
    pub fn put_from(
        &mut self,
        source: &mut dyn Read,
        options: &PutOptions,
        progress: &mut dyn FnMut(u64),
    ) -> Result<String, BlobError> {
        let writer = self.create_writer(options)?;
        let result = self.put_from_inner(&writer, source, progress);
        let released = self.release(writer);
        let id = result?;
        released?;
        Ok(id)
    }

    fn put_from_inner(
        &mut self,
        writer: &ChunkerResource,
        source: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<String, BlobError> {
        let mut buffer = vec![0u8; PIECE_BYTES];
        let mut written: u64 = 0;
        loop {
            let n = read_full(source, &mut buffer)?;
            if n == 0 {
                break;
            }
            self.writer_write(writer, &buffer[..n])?;
            written += n as u64;
            progress(written);
        }
        self.writer_finish(writer)
    }

    /// Streams an artifact's verified bytes into `sink`; returns the count.
    pub fn get_into(
        &mut self,
        id: &str,
        sink: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, BlobError> {
        let reader = self.open_reader(id, 0)?;
        let result = self.get_into_inner(&reader, sink, progress);
        let released = self.release(reader);
        let n = result?;
        released?;
        Ok(n)
    }

    fn get_into_inner(
        &mut self,
        reader: &ChunkerResource,
        sink: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, BlobError> {
        let mut total: u64 = 0;
        loop {
            let bytes = self.reader_read(reader, PIECE_BYTES as u32)?;
            if bytes.is_empty() {
                return Ok(total);
            }
            sink.write_all(&bytes).map_err(io_error)?;
            total += bytes.len() as u64;
            progress(total);
        }
    }
}

/// Bytes moved per call by [`Chunker::put_from`] and [`Chunker::get_into`].
pub const PIECE_BYTES: usize = 1 << 20;
const _: () = assert!(PIECE_BYTES as u64 <= IO_BYTES_MAX as u64);

fn read_full(source: &mut dyn Read, buffer: &mut [u8]) -> Result<usize, BlobError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(filled)
}

fn io_error(error: std::io::Error) -> BlobError {
    BlobError::Blob(WitError::Io(error.to_string()))
}
