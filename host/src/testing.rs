//! Sandboxed stores for test suites: a [`TempStore`] is a store root in a
//! fresh temporary directory, with its own [`Runtime`], removed with
//! everything in it when the value is dropped.
//!
//! Every `TempStore` of a process shares one engine and one compiled
//! chunker (compiling it is the slow part of opening a runtime), so a
//! test that makes its own store pays only for the directory and the
//! tenants it opens. Tenants inside one `TempStore` are as isolated as
//! tenants anywhere: a test that wants many can share one store and take
//! a [`TempStore::fresh_tenant`] each.
//!
//! Background GC is off ([`Runtime::with_gc`]): what a test measures
//! changes only by what it does; call `Store::gc` to collect.
//!
//! Stores are opened with [`Durability::None`] by default: a test suite's
//! store never outlives a power cut, and fsyncs would make it many times
//! slower. Use [`TempStore::with_options`] to test durable behaviour.
//!
//! ```
//! use tensor_blob_host::testing::TempStore;
//!
//! let sandbox = TempStore::new().unwrap();
//! let mut chunker = sandbox.chunker("default").unwrap();
//! let id = chunker.put(b"hello", &Default::default()).unwrap();
//! assert_eq!(chunker.get(&id).unwrap(), b"hello");
//! let path = sandbox.path().to_path_buf();
//! drop(chunker);
//! drop(sandbox);
//! assert!(!path.exists(), "the sandbox removes itself");
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::StoreError;
use crate::runtime::{self, Chunker, ChunkerComponent, Runtime};
use crate::store::{Durability, Store, StoreOptions};

/// A store root in a temporary directory that removes itself on drop.
pub struct TempStore {
    // Field order matters: the runtime (and every store it opened) closes
    // before the directory is removed.
    runtime: Runtime,
    dir: tempfile::TempDir,
}

/// The chunker compiled once per process, for every [`TempStore`].
fn shared_chunker() -> wasmtime::Result<ChunkerComponent> {
    static SHARED: OnceLock<ChunkerComponent> = OnceLock::new();
    if let Some(chunker) = SHARED.get() {
        return Ok(chunker.clone());
    }
    // The per-user compile cache: each test process compiles the chunker
    // only if no earlier one did.
    let engine = runtime::new_engine(&runtime::EngineOptions::default())?.engine;
    let chunker = ChunkerComponent::new(&engine, tensor_blob_artifacts::CHUNKER_WASM)?;
    // Two tests racing here compile twice; both results work, one is kept.
    Ok(SHARED.get_or_init(|| chunker).clone())
}

/// Distinguishes the tenants [`TempStore::fresh_tenant`] hands out.
static TENANT_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempStore {
    /// A new, empty store root, opened without fsyncs.
    pub fn new() -> wasmtime::Result<TempStore> {
        TempStore::with_options(StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        })
    }

    /// A new, empty store root whose tenants are opened with `options`.
    pub fn with_options(options: StoreOptions) -> wasmtime::Result<TempStore> {
        let dir = tempfile::Builder::new().prefix("tblob-test-").tempdir()?;
        let root = cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority())?;
        // No background GC: a test's disk figures must not change under it.
        let runtime = Runtime::with_chunker(shared_chunker()?, root, options).with_gc(None);
        Ok(TempStore { runtime, dir })
    }

    /// Where the store root is (for a `tblob --store` in a test).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The runtime serving this store root, for plugins and contexts.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The store of `tenant`, created on first use.
    pub fn store(&self, tenant: &str) -> Result<Store, StoreError> {
        self.runtime.tenant_store(tenant)
    }

    /// A chunker instance serving `tenant`, for puts and gets that go
    /// through the guest exactly as a plugin's do.
    pub fn chunker(&self, tenant: &str) -> wasmtime::Result<Chunker> {
        self.runtime.chunker(tenant)
    }

    /// A tenant name no other call in this process has returned, for tests
    /// that share one `TempStore` but want a tenant of their own.
    pub fn fresh_tenant(&self) -> String {
        format!("test-{}", TENANT_COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}
