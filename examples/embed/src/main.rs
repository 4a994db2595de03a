//! Embedding tensor-blob in a wasmtime platform, in the spirit of
//! wasmtime-wasi: add the blob store to your own linker with one call and
//! keep a small context in your store data.
//!
//! Runs the example plugin against `./.tblob-embed` as tenant `embedded`:
//! `cargo run -p tensor-blob-embed-example`.

use anyhow::Result;
use tensor_blob_host::runtime::{self, BlobCtx, BlobView, Runtime, RuntimeOptions};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The platform's own store data: WASI plus the blob store.
struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    blobs: BlobCtx,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl BlobView for Host {
    fn blobs(&mut self) -> &mut BlobCtx {
        &mut self.blobs
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let engine = wasmtime::Engine::new(&runtime::default_config())?;
    std::fs::create_dir_all(".tblob-embed")?;
    let root = cap_std::fs::Dir::open_ambient_dir(".tblob-embed", cap_std::ambient_authority())?;
    let blob_runtime = Runtime::new(&engine, root, RuntimeOptions::default())?;
    run_example_plugin(&engine, &blob_runtime, "embedded").await
}

/// Runs the example plugin, as `tenant`, in a store of the platform's own
/// making that holds WASI and the blob store.
async fn run_example_plugin(
    engine: &wasmtime::Engine,
    blob_runtime: &Runtime,
    tenant: &str,
) -> Result<()> {
    let mut linker: Linker<Host> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    runtime::add_to_linker(&mut linker)?; // the one line that adds tensor:blob/blobs

    let host = Host {
        wasi: WasiCtx::builder()
            .inherit_stdout()
            .inherit_stderr()
            .arg("embedded")
            .build(),
        table: ResourceTable::new(),
        blobs: blob_runtime.context(tenant)?,
    };
    let mut store = wasmtime::Store::new(engine, host);
    let component = Component::new(engine, tensor_blob_artifacts::EXAMPLE_PLUGIN_WASM)?;
    let command = Command::instantiate_async(&mut store, &component, &linker).await?;
    match command.wasi_cli_run().call_run(&mut store).await? {
        Ok(()) => Ok(()),
        Err(()) => anyhow::bail!("the plugin failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the embedding shown here works as written. The plugin stores
    /// two 16 MiB checkpoints and deletes the first: what it leaves in the
    /// platform's store is the second, intact, and no other tenant sees it.
    #[tokio::test]
    async fn the_example_plugin_runs_in_a_platform_store() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::new(&runtime::default_config()).unwrap();
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let blob_runtime = Runtime::new(&engine, root, RuntimeOptions::default()).unwrap();
        run_example_plugin(&engine, &blob_runtime, "embedded")
            .await
            .unwrap();

        let store = blob_runtime.tenant_store("embedded").unwrap();
        let stats = store.stats();
        assert_eq!(stats.artifacts, 1, "{stats:?}");
        assert!(stats.logical_bytes >= 16 << 20, "{stats:?}");
        assert!(stats.chunks > 1, "{stats:?}");
        let report = store.verify_all();
        assert_eq!(report.artifacts_checked, stats.artifacts);
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        let other = blob_runtime.tenant_store("other").unwrap();
        assert_eq!(other.stats().artifacts, 0);
    }
}
