//! `tensor:blob/blobs` as a plugin imports it. Metadata calls (`delete`,
//! `exists`, `stat`, `update`, `list`, `find-by-tag`, `stats`, `query`) are
//! answered here from the tenant's store ([`crate::runtime::metadata`]);
//! `put`, `get`, `create-writer`, `open-reader` and the resources are
//! forwarded to the tenant's chunker instance held in [`BlobCtx`].
//!
//! The plugin's `writer` and `reader` handles live in the context's own
//! resource table and wrap the chunker's resources. Their number is capped
//! ([`HANDLES_OPEN_MAX`]). Every argument (inline data, option strings and
//! lists, ids, tags, conditions, read and write sizes) is bounded
//! (`runtime::check`) before it is copied into the chunker or handed to
//! the store, so an oversized one is the typed error the WIT promises,
//! never a trap.

use wasmtime::component::{Resource, ResourceTable};

use crate::runtime::bindings::plugin::tensor::blob::blobs;
use crate::runtime::bindings::{
    chunker::tensor::blob::types, Metadata, MetadataUpdate, PutOptions, Query, QueryPage,
    StoreStats,
};
use crate::runtime::chunker::{Chunker, ChunkerResource};
use crate::runtime::error::BlobError;
use crate::runtime::limits::{HANDLES_OPEN_MAX, INLINE_BYTES_MAX};
use crate::runtime::metadata;

/// A plugin's `writer`.
pub struct WriterHandle(ChunkerResource);
/// A plugin's `reader`.
pub struct ReaderHandle(ChunkerResource);

/// What a plugin's `tensor:blob/blobs` imports act on: one tenant's chunker
/// instance and the plugin's open handles. Make one with
/// [`Runtime::context`](crate::runtime::Runtime::context) and reach it from
/// your store data through [`BlobView`](crate::runtime::BlobView).
pub struct BlobCtx {
    chunker: Chunker,
    table: ResourceTable,
    handles_open: usize,
}

impl BlobCtx {
    pub(crate) fn new(chunker: Chunker) -> Self {
        BlobCtx {
            chunker,
            table: ResourceTable::new(),
            handles_open: 0,
        }
    }

    /// The chunker behind this context, for native calls.
    pub fn chunker(&mut self) -> &mut Chunker {
        &mut self.chunker
    }

    fn reserve_handle(&mut self) -> Result<(), BlobError> {
        if self.handles_open >= HANDLES_OPEN_MAX {
            return Err(BlobError::invalid(format!(
                "at most {HANDLES_OPEN_MAX} writers and readers may be open at once"
            )));
        }
        Ok(())
    }
}

impl types::Host for BlobCtx {
    fn convert_error(&mut self, error: BlobError) -> wasmtime::Result<types::Error> {
        match error {
            BlobError::Blob(error) => Ok(error),
            BlobError::Trap(error) => Err(error),
        }
    }
}

impl blobs::Host for BlobCtx {
    async fn inline_bytes_max(&mut self) -> wasmtime::Result<u64> {
        Ok(INLINE_BYTES_MAX)
    }

    async fn put(&mut self, data: Vec<u8>, options: PutOptions) -> Result<String, BlobError> {
        self.chunker.put(&data, &options)
    }

    async fn get(&mut self, id: String) -> Result<Vec<u8>, BlobError> {
        self.chunker.get(&id)
    }

    async fn delete(&mut self, id: String) -> Result<(), BlobError> {
        metadata::delete(self.chunker.store(), &id)
    }

    async fn exists(&mut self, id: String) -> Result<bool, BlobError> {
        metadata::exists(self.chunker.store(), &id)
    }

    async fn stat(&mut self, id: String) -> Result<Metadata, BlobError> {
        metadata::stat(self.chunker.store(), &id)
    }

    async fn update(&mut self, id: String, change: MetadataUpdate) -> Result<Metadata, BlobError> {
        metadata::update(self.chunker.store(), &id, change)
    }

    async fn list(&mut self, after: Option<String>, limit: u32) -> Result<Vec<String>, BlobError> {
        metadata::list(self.chunker.store(), after.as_deref(), limit)
    }

    async fn find_by_tag(&mut self, tag: String) -> Result<Vec<String>, BlobError> {
        metadata::find_by_tag(self.chunker.store(), &tag)
    }

    async fn stats(&mut self) -> Result<StoreStats, BlobError> {
        Ok(metadata::stats(self.chunker.store()))
    }

    async fn query(&mut self, query: Query) -> Result<QueryPage, BlobError> {
        metadata::query(self.chunker.store(), query)
    }

    async fn create_writer(
        &mut self,
        options: PutOptions,
    ) -> Result<Resource<WriterHandle>, BlobError> {
        self.reserve_handle()?;
        let inner = self.chunker.create_writer(&options)?;
        match self.table.push(WriterHandle(inner)) {
            Ok(handle) => {
                self.handles_open += 1;
                Ok(handle)
            }
            Err(e) => {
                self.chunker.release(inner)?;
                Err(e.into())
            }
        }
    }

    async fn open_reader(
        &mut self,
        id: String,
        offset: u64,
    ) -> Result<Resource<ReaderHandle>, BlobError> {
        self.reserve_handle()?;
        let inner = self.chunker.open_reader(&id, offset)?;
        match self.table.push(ReaderHandle(inner)) {
            Ok(handle) => {
                self.handles_open += 1;
                Ok(handle)
            }
            Err(e) => {
                self.chunker.release(inner)?;
                Err(e.into())
            }
        }
    }
}

impl blobs::HostWriter for BlobCtx {
    async fn write(
        &mut self,
        handle: Resource<WriterHandle>,
        data: Vec<u8>,
    ) -> Result<(), BlobError> {
        let inner = self.table.get(&handle)?.0;
        self.chunker.writer_write(&inner, &data)
    }

    async fn finish(&mut self, handle: Resource<WriterHandle>) -> Result<String, BlobError> {
        let inner = self.table.get(&handle)?.0;
        self.chunker.writer_finish(&inner)
    }

    async fn abort(&mut self, handle: Resource<WriterHandle>) -> wasmtime::Result<()> {
        let inner = self.table.get(&handle)?.0;
        match self.chunker.writer_abort(&inner) {
            Ok(()) | Err(BlobError::Blob(_)) => Ok(()),
            Err(BlobError::Trap(trap)) => Err(trap),
        }
    }

    async fn drop(&mut self, handle: Resource<WriterHandle>) -> wasmtime::Result<()> {
        let WriterHandle(inner) = self.table.delete(handle)?;
        self.handles_open = self.handles_open.saturating_sub(1);
        self.chunker.release(inner).map_err(into_trap)
    }
}

impl blobs::HostReader for BlobCtx {
    async fn read(
        &mut self,
        handle: Resource<ReaderHandle>,
        len: u32,
    ) -> Result<Vec<u8>, BlobError> {
        let inner = self.table.get(&handle)?.0;
        self.chunker.reader_read(&inner, len)
    }

    async fn seek(&mut self, handle: Resource<ReaderHandle>, offset: u64) -> Result<(), BlobError> {
        let inner = self.table.get(&handle)?.0;
        self.chunker.reader_seek(&inner, offset)
    }

    async fn size(&mut self, handle: Resource<ReaderHandle>) -> wasmtime::Result<u64> {
        let inner = self.table.get(&handle)?.0;
        self.chunker.reader_size(&inner).map_err(into_trap)
    }

    async fn drop(&mut self, handle: Resource<ReaderHandle>) -> wasmtime::Result<()> {
        let ReaderHandle(inner) = self.table.delete(handle)?;
        self.handles_open = self.handles_open.saturating_sub(1);
        self.chunker.release(inner).map_err(into_trap)
    }
}

/// For WIT functions without an error case: any failure traps.
fn into_trap(error: BlobError) -> wasmtime::Error {
    match error {
        BlobError::Trap(trap) => trap,
        BlobError::Blob(error) => wasmtime::Error::msg(crate::runtime::error::describe(&error)),
    }
}
