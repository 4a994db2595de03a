//! `tensor:blob/chunk-store`: the host side of the chunker component.
//!
//! The chunker is untrusted. Every digest is parsed (exactly 32 bytes),
//! every id parsed, every length bounded here or by the store, and every
//! chunk re-hashed by the store before it is kept. Nothing a guest sends can
//! make this code panic; bad handles trap, bad values are WIT errors.

use wasmtime::component::{Resource, ResourceTable};

use crate::runtime::bindings::chunker::tensor::blob::{chunk_store, types};
use crate::runtime::bindings::{ChunkRef, Metadata, MetadataUpdate, PutOptions, StoreStats};
use crate::runtime::convert;
use crate::runtime::error::BlobError;
use crate::runtime::limits::{LIST_IDS_MAX, UPLOADS_OPEN_MAX};
use crate::store::{self, MANIFEST_PAGE_MAX, MISSING_BATCH_MAX};

/// An upload in progress, owned by the chunker's resource table. Dropping it
/// releases the chunks it pinned.
pub struct UploadHandle {
    upload: Option<store::Upload>,
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

    fn upload(&mut self, handle: &Resource<UploadHandle>) -> Result<&mut store::Upload, BlobError> {
        match self.table.get_mut(handle)?.upload.as_mut() {
            Some(upload) => Ok(upload),
            None => Err(BlobError::Blob(types::Error::Closed)),
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
        Ok(self.upload(&handle)?.missing(&digests)?)
    }

    fn put_chunk(
        &mut self,
        handle: Resource<UploadHandle>,
        digest: Vec<u8>,
        bytes: Vec<u8>,
    ) -> Result<(), BlobError> {
        let digest = convert::hash(&digest)?;
        Ok(self.upload(&handle)?.put_chunk(&digest, &bytes)?)
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
        let mut upload = match self.table.get_mut(&handle)?.upload.take() {
            Some(upload) => upload,
            None => return Err(BlobError::Blob(types::Error::Closed)),
        };
        let chunks = convert::chunk_refs(chunks)?;
        let digest = convert::hash(&digest)?;
        let meta = convert::new_metadata(options)?;
        let id = upload.commit(&chunks, size, &digest, meta)?;
        Ok(id.to_string())
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
            upload: Some(upload),
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
