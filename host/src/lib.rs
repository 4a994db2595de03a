//! tensor-blob's trusted host: a durable, content-addressed chunk store
//! ([`store`]), per-tenant isolation ([`tenant`]) and the wasmtime runtime
//! that serves it to WebAssembly components ([`runtime`]), and sandboxed
//! stores for test suites ([`testing`]).
//!
//! The store is reached only through capability-scoped directories
//! (`cap_std::fs::Dir`); nothing in this library opens an ambient path.
//! See `ARCHITECTURE.md` for the data path, on-disk format and trust boundary.

pub mod error;
pub mod maintenance;
pub mod runtime;
pub mod store;
pub mod tenant;
pub mod testing;
