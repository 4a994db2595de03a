//! Host implementations, one file per WIT interface.
pub mod blobs;
pub mod blobstore;
pub mod chunk_store;
pub mod streams;
