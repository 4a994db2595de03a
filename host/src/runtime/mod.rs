//! The wasmtime runtime: compiles the chunker once, gives each tenant
//! context its own chunker instance, and exposes `tensor:blob/blobs` to
//! plugins.
//!
//! # How plugin and chunker are wired
//! Host-side linking, not static composition. A plugin's `blobs` imports are
//! host functions ([`host::blobs`]). The metadata calls (`stat`, `list`,
//! `query`, `update`, `delete`, ...) are answered there from the tenant's
//! [`Store`](crate::store::Store) ([`metadata`]); the content calls (`put`,
//! `get`, writers, readers) call the `transfer` exports of a chunker
//! instance living in its own `wasmtime::Store`, whose `chunk-store`
//! imports are in turn host functions over the tenant's store.
//! Why: the host stays in the middle of every call, so it picks the tenant
//! (a plugin cannot name one), bounds every length in both directions,
//! applies separate memory limits to plugin and chunker, and a trap in the
//! chunker cannot take the plugin's store down with it. It also needs no
//! composition tool at build time, and any `plugin`-world component (from
//! any language) runs unmodified. The cost is one extra copy of each
//! argument across the host (tens of GB/s, see TOOLCHAIN.md).
//!
//! `stream-blobs` (WASI 0.3 streams) is the exception to the nesting: each
//! stream put or get runs a chunker instance of its own on a worker thread,
//! so the plugin and the chunker overlap ([`host::streams`]).
//!
//! # Embedding
//! ```no_run
//! use tensor_blob_host::runtime::{self, BlobCtx, BlobView, Runtime, RuntimeOptions};
//! use wasmtime::component::Linker;
//!
//! struct MyState { blobs: BlobCtx }
//! impl BlobView for MyState {
//!     fn blobs(&mut self) -> &mut BlobCtx { &mut self.blobs }
//! }
//!
//! # fn main() -> anyhow::Result<()> {
//! let engine = wasmtime::Engine::new(&runtime::default_config())?;
//! let root = cap_std::fs::Dir::open_ambient_dir(".tblob", cap_std::ambient_authority())?;
//! let rt = Runtime::new(&engine, root, RuntimeOptions::default())?;
//! let mut linker: Linker<MyState> = Linker::new(&engine);
//! runtime::add_to_linker(&mut linker)?;
//! let state = MyState { blobs: rt.context("my-tenant")? };
//! // For `stream-blobs` too: a `StreamCtx` from `rt.stream_context(..)`,
//! // `runtime::add_streams_to_linker`, and `StreamCtx::workers().join()`
//! // after the store is dropped.
//! # let _ = state; Ok(())
//! # }
//! ```

pub mod bindings;
mod check;
pub mod chunker;
mod convert;
pub mod engine;
pub mod error;
pub mod host;
pub mod limits;
pub mod metadata;
pub mod plugin;

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};
use wasmtime::Engine;

pub use self::bindings::{
    Chunking, Condition, KeyValue, Metadata, MetadataUpdate, PutOptions, Query, QueryPage,
    StoreStats, TimeRange, WitError,
};
pub use self::chunker::{Chunker, ChunkerComponent};
pub use self::engine::{
    default_config, new_engine, user_cache_dir, CompileCache, EngineOptions, NewEngine,
    PoolingOptions,
};
pub use self::error::BlobError;
pub use self::host::blobs::BlobCtx;
pub use self::host::streams::{StreamCtx, StreamWorkers};
use crate::maintenance::Maintenance;
use crate::store::{GcPolicy, Store, StoreOptions};
use crate::tenant::{Access, Tenants};

/// Options of a [`Runtime`].
#[derive(Clone)]
pub struct RuntimeOptions {
    /// How each tenant's store is opened.
    pub store: StoreOptions,
    /// A chunker component to use instead of the built-in one (tests use
    /// this to load a hostile chunker).
    pub chunker_wasm: Option<Vec<u8>>,
    /// Background GC of every open tenant ([`crate::maintenance`]); on by
    /// default with [`GcPolicy::default`]. `None`: only explicit
    /// [`Store::gc`] calls collect (the CLI's one-shot commands).
    pub gc: Option<GcPolicy>,
    /// Whether tenants are opened for writing (the default) or read-only
    /// beside another process's writer, and how long a writer's open waits
    /// for a tenant another process holds (see [`Access`]).
    pub access: Access,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            store: StoreOptions::default(),
            chunker_wasm: None,
            gc: Some(GcPolicy::default()),
            access: Access::default(),
        }
    }
}

/// The blob store runtime for one store root.
#[derive(Clone)]
pub struct Runtime {
    /// Dropped first, with the last clone: stops background GC before the
    /// tenants close.
    maintenance: Option<Arc<Maintenance>>,
    engine: Engine,
    chunker: ChunkerComponent,
    /// Shared so background GC can hold it weakly.
    tenants: Arc<Tenants>,
}

impl Runtime {
    /// Compiles the chunker and opens the store root `root` (tenants are
    /// opened lazily, on first use).
    pub fn new(
        engine: &Engine,
        root: cap_std::fs::Dir,
        options: RuntimeOptions,
    ) -> wasmtime::Result<Self> {
        Runtime::new_on(
            engine,
            Arc::new(crate::store::backend::cap::CapDir::new(root)),
            options,
        )
    }

    /// [`Runtime::new`] on a store root of any backend (for example an
    /// [`ObjectBackend`](crate::store::backend::object::ObjectBackend)).
    pub fn new_on(
        engine: &Engine,
        root: Arc<dyn crate::store::backend::Backend>,
        options: RuntimeOptions,
    ) -> wasmtime::Result<Self> {
        let wasm = options
            .chunker_wasm
            .as_deref()
            .unwrap_or(tensor_blob_artifacts::CHUNKER_WASM);
        let chunker = ChunkerComponent::new(engine, wasm)?;
        Ok(Runtime::with_chunker_on(chunker, root, options))
    }

    /// Puts a runtime together and starts its background GC, if any.
    fn assemble(
        engine: Engine,
        chunker: ChunkerComponent,
        tenants: Tenants,
        gc: Option<GcPolicy>,
    ) -> Self {
        let tenants = Arc::new(tenants);
        let maintenance =
            gc.map(|policy| Arc::new(Maintenance::start(Arc::downgrade(&tenants), policy)));
        Runtime {
            maintenance,
            engine,
            chunker,
            tenants,
        }
    }

    /// Like [`Runtime::new`] with an already compiled chunker (compile once,
    /// open many store roots), and background GC with [`GcPolicy::default`].
    pub fn with_chunker(
        chunker: ChunkerComponent,
        root: cap_std::fs::Dir,
        store: StoreOptions,
    ) -> Self {
        Runtime::assemble(
            chunker.engine().clone(),
            chunker,
            Tenants::new(root, store),
            Some(GcPolicy::default()),
        )
    }

    /// [`Runtime::with_chunker`] on a store root of any backend (for
    /// example an [`ObjectBackend`](crate::store::backend::object::ObjectBackend)),
    /// with `options`' store options, access and background GC (its
    /// `chunker_wasm` is not used: `chunker` is).
    pub fn with_chunker_on(
        chunker: ChunkerComponent,
        root: Arc<dyn crate::store::backend::Backend>,
        options: RuntimeOptions,
    ) -> Self {
        Runtime::assemble(
            chunker.engine().clone(),
            chunker,
            Tenants::with_backend(root, options.store).with_access(options.access),
            options.gc,
        )
    }

    /// This runtime with its background GC replaced: the old task (of this
    /// runtime and its clones so far) is stopped, and one with `gc` started
    /// if it is `Some`.
    pub fn with_gc(mut self, gc: Option<GcPolicy>) -> Self {
        if let Some(old) = self.maintenance.take() {
            old.shutdown();
        }
        self.maintenance =
            gc.map(|policy| Arc::new(Maintenance::start(Arc::downgrade(&self.tenants), policy)));
        self
    }

    /// The background GC task, if it runs (see [`RuntimeOptions::gc`]).
    pub fn maintenance(&self) -> Option<&Maintenance> {
        self.maintenance.as_deref()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The store of `tenant`, for native maintenance (verify, gc, stats).
    pub fn tenant_store(&self, tenant: &str) -> Result<Store, crate::error::StoreError> {
        self.tenants.store(tenant)
    }

    /// `tenant`'s policy: quota and plugin limits (see
    /// [`Store::policy`](crate::store::Store::policy)).
    pub fn tenant_policy(
        &self,
        tenant: &str,
    ) -> Result<crate::store::TenantPolicy, crate::error::StoreError> {
        self.tenants.policy(tenant)
    }

    /// Replaces `tenant`'s policy, durably; it applies at once to its
    /// uploads and to plugin runs started from now on.
    pub fn set_tenant_policy(
        &self,
        tenant: &str,
        policy: crate::store::TenantPolicy,
    ) -> Result<(), crate::error::StoreError> {
        self.tenants.set_policy(tenant, policy)
    }

    /// Keeps at most `max` tenant stores open (see
    /// [`Tenants::set_open_max`]; default
    /// [`TENANTS_OPEN_MAX_DEFAULT`](crate::tenant::TENANTS_OPEN_MAX_DEFAULT)).
    pub fn set_open_tenants_max(&self, max: usize) {
        self.tenants.set_open_max(max);
    }

    /// Tenants present on disk.
    pub fn tenants(&self) -> Result<Vec<String>, crate::error::StoreError> {
        self.tenants.names()
    }

    /// A chunker instance serving `tenant`, for native puts and gets.
    pub fn chunker(&self, tenant: &str) -> wasmtime::Result<Chunker> {
        let store = self.tenants.store(tenant)?;
        self.chunker.instantiate(store)
    }

    /// A context for one plugin instance acting as `tenant`.
    pub fn context(&self, tenant: &str) -> wasmtime::Result<BlobCtx> {
        Ok(BlobCtx::new(self.chunker(tenant)?))
    }

    /// A context for one plugin instance's `stream-blobs` imports, acting
    /// as `tenant` (opened now, so a bad tenant fails here, not mid-stream).
    pub fn stream_context(&self, tenant: &str) -> wasmtime::Result<StreamCtx> {
        self.tenants.store(tenant)?;
        Ok(StreamCtx::new(self.clone(), tenant.to_string()))
    }
}

/// Reaches the [`BlobCtx`] inside a store's data, like `wasmtime_wasi::WasiView`.
pub trait BlobView: Send {
    fn blobs(&mut self) -> &mut BlobCtx;
}

struct HasBlobs;
impl HasData for HasBlobs {
    type Data<'a> = &'a mut BlobCtx;
}

/// Adds `tensor:blob/blobs` to `linker`; calls act on `T`'s [`BlobCtx`].
/// The functions are async: instantiate and call with the `_async` APIs.
/// Every argument is bounded before it reaches the chunker; one call's
/// arguments together are bounded by the store's hostcall fuel, which
/// should stay at wasmtime's default, [`limits::PLUGIN_CALL_BYTES_MAX`].
pub fn add_to_linker<T: BlobView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::plugin::tensor::blob::types::add_to_linker::<T, HasBlobs>(linker, |t| t.blobs())?;
    bindings::plugin::tensor::blob::blobs::add_to_linker::<T, HasBlobs>(linker, |t| t.blobs())
}

/// Reaches the [`StreamCtx`] inside a store's data.
pub trait StreamView: Send {
    fn streams(&mut self) -> &mut StreamCtx;
}

/// Adds `tensor:blob/stream-blobs` to `linker` (beside [`add_to_linker`],
/// which provides the `types` and `blobs` it uses); calls act on `T`'s
/// [`StreamCtx`]. Its functions are WIT `async func`s over streams: call
/// the plugin with the `_async` or `_concurrent` APIs, and after its store
/// is dropped, join [`StreamCtx::workers`] so no worker outlives the run.
pub fn add_streams_to_linker<T: StreamView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    bindings::streams::tensor::blob::stream_blobs::add_to_linker::<T, host::streams::HasStreams>(
        linker,
        |t| t.streams(),
    )
}
