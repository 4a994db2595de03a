//! The only `bindgen!` invocations of the host: one per world.
//!
//! - [`chunker`]: the host side of the `chunker` world. Its imports
//!   (`chunk-store`) are implemented synchronously by
//!   [`super::host::chunk_store`]; its exports (`transfer`) are what the
//!   host calls to put and get through the sandboxed chunker component.
//! - [`plugin`]: the host side of the `plugin` world. Its `blobs` imports are
//!   implemented asynchronously by [`super::host::blobs`], which answers
//!   metadata calls from the tenant's store ([`super::metadata`]) and
//!   forwards the rest to a chunker instance. Types are shared with
//!   [`chunker`] through `with`, so values pass between the two worlds
//!   without conversion.
//! - [`streams`]: the host side of the `stream-plugin` world; new in it
//!   are the `stream-blobs` imports (implemented by
//!   [`super::host::streams`]: async functions with store access, over WASI
//!   0.3 streams) and the `stream-run` export (the entry point
//!   [`super::plugin::Plugin`] calls); `types` and `blobs` are [`plugin`]'s.

pub mod chunker {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "chunker",
        imports: { default: trappable },
        trappable_error_type: {
            "tensor:blob/types.error" => crate::runtime::error::BlobError,
        },
        with: {
            "tensor:blob/chunk-store.upload": crate::runtime::host::chunk_store::UploadHandle,
        },
        require_store_data_send: true,
    });
}

pub mod plugin {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: async | trappable },
        trappable_error_type: {
            "tensor:blob/types.error" => crate::runtime::error::BlobError,
        },
        with: {
            "tensor:blob/types": super::chunker::tensor::blob::types,
            "tensor:blob/blobs.writer": crate::runtime::host::blobs::WriterHandle,
            "tensor:blob/blobs.reader": crate::runtime::host::blobs::ReaderHandle,
        },
        require_store_data_send: true,
    });
}

pub mod streams {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "stream-plugin",
        // `stream-blobs`' functions are WIT `async func`s, which bindgen
        // gives store access (`&Accessor`) on top of these flags.
        imports: { default: async | trappable },
        // `stream-run.run`, the entry point, is called inside
        // `run_concurrent`.
        exports: { default: async },
        trappable_error_type: {
            "tensor:blob/types.error" => crate::runtime::error::BlobError,
        },
        with: {
            "tensor:blob/types": super::chunker::tensor::blob::types,
            "tensor:blob/blobs": super::plugin::tensor::blob::blobs,
        },
        require_store_data_send: true,
    });
}

/// No metadata, default (content-defined) chunking.
impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            filename: None,
            content_type: None,
            creator: None,
            tags: Vec::new(),
            links: Vec::new(),
            external_links: Vec::new(),
            custom: Vec::new(),
            chunking: None,
            compress: None,
        }
    }
}

/// Changes nothing.
impl Default for MetadataUpdate {
    fn default() -> Self {
        MetadataUpdate {
            filename: None,
            content_type: None,
            tags: None,
            links: None,
            external_links: None,
            custom: None,
            remove_tags: Vec::new(),
            add_tags: Vec::new(),
            remove_links: Vec::new(),
            add_links: Vec::new(),
            remove_external_links: Vec::new(),
            add_external_links: Vec::new(),
            unset_custom: Vec::new(),
            set_custom: Vec::new(),
        }
    }
}

pub use chunker::tensor::blob::types::{
    ChunkRef, Chunking, Condition, Error as WitError, KeyValue, Metadata, MetadataUpdate,
    PutOptions, Query, QueryPage, StoreStats, TimeRange,
};

/// The host side of `wasi:blobstore@0.2.0-draft` (world
/// `wasi:blobstore/imports`, vendored under `wit/deps/blobstore`),
/// implemented by [`super::host::blobstore`]. `wasi:io` is wasmtime-wasi's,
/// so the value streams are its `DynOutputStream`/`DynInputStream` in the
/// WASI resource table, served by its `wasi:io/streams` host.
pub mod blobstore {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasi:blobstore/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:blobstore/container.container": crate::runtime::host::blobstore::Container,
            "wasi:blobstore/container.stream-object-names": crate::runtime::host::blobstore::StreamObjectNames,
            "wasi:blobstore/types.outgoing-value": crate::runtime::host::blobstore::OutgoingValue,
            "wasi:blobstore/types.incoming-value": crate::runtime::host::blobstore::IncomingValue,
        },
        require_store_data_send: true,
    });
}
