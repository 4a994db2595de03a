//! Running a plugin: a WASI command component (`wasi:cli/run`) that
//! imports `tensor:blob/blobs`.
//!
//! A plugin gets the blob store of its tenant and, from WASI, only what
//! [`PluginOptions`] grants: its arguments, stdout/stderr, and read-only
//! preopened directories. No environment, no network, no other files.

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::StoreLimitsBuilder;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{BlobCtx, BlobView, Runtime};

/// What a plugin run is granted.
#[derive(Clone, Debug, Default)]
pub struct PluginOptions {
    /// `argv`, the program name first.
    pub args: Vec<String>,
    /// Host directories mapped read-only into the plugin: (host path, guest path).
    pub read_dirs: Vec<(std::path::PathBuf, String)>,
    /// Linear memory limit; `None` is [`PLUGIN_MEMORY_BYTES_MAX`](super::limits::PLUGIN_MEMORY_BYTES_MAX).
    pub memory_bytes_max: Option<usize>,
}

struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    blobs: BlobCtx,
    limits: wasmtime::StoreLimits,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl BlobView for PluginState {
    fn blobs(&mut self) -> &mut BlobCtx {
        &mut self.blobs
    }
}

/// A plugin compiled and linked once, ready to run many times.
pub struct Plugin {
    runtime: Runtime,
    pre: CommandPre<PluginState>,
}

impl Plugin {
    /// Compiles a plugin component.
    pub fn new(runtime: &Runtime, wasm: &[u8]) -> wasmtime::Result<Self> {
        let engine = runtime.engine();
        let component = Component::new(engine, wasm)?;
        let mut linker: Linker<PluginState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        super::add_to_linker(&mut linker)?;
        let pre = CommandPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Plugin {
            runtime: runtime.clone(),
            pre,
        })
    }

    /// Runs the plugin's `main` as `tenant`; returns its exit code.
    pub async fn run(&self, tenant: &str, options: &PluginOptions) -> wasmtime::Result<i32> {
        let mut wasi = WasiCtxBuilder::new();
        // Explicitly no network (the defaults already refuse every address).
        wasi.args(&options.args)
            .inherit_stdout()
            .inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (host, guest) in &options.read_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)?;
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(
                options
                    .memory_bytes_max
                    .unwrap_or(super::limits::PLUGIN_MEMORY_BYTES_MAX),
            )
            .build();
        let state = PluginState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            blobs: self.runtime.context(tenant)?,
            limits,
        };
        let mut store = wasmtime::Store::new(self.runtime.engine(), state);
        store.limiter(|state| &mut state.limits);
        let command = self.pre.instantiate_async(&mut store).await?;
        match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => Err(error),
            },
        }
    }
}
