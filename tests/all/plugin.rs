//! Goal: a real plugin component (examples/plugin) stores and fetches
//! through its WIT imports, nested chunker calls and all, and is granted
//! nothing but what its options say.
//! Method: run the example plugin on a real file and in its no-argument
//! dedup demonstration; check its exit code and what it left in the store.

use tensor_blob_host::runtime::plugin::{Plugin, PluginOptions};

use crate::common::{data, TestStore};

fn run(store: &TestStore, options: PluginOptions) -> i32 {
    let plugin = Plugin::new(&store.runtime, tensor_blob_artifacts::EXAMPLE_PLUGIN_WASM).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(plugin.run("default", &options)).unwrap()
}

#[test]
fn example_plugin_stores_and_fetches_a_real_file() {
    let store = TestStore::new();
    let files = tempfile::tempdir().unwrap();
    let bytes = data(3 << 20, 21);
    std::fs::write(files.path().join("weights.bin"), &bytes).unwrap();
    let options = PluginOptions {
        args: vec!["example".into(), "/data/weights.bin".into()],
        read_dirs: vec![(files.path().to_path_buf(), "/data".into())],
        memory_bytes_max: None,
        time_limit: None,
    };
    assert_eq!(run(&store, options), 0);
    let tenant = store.runtime.tenant_store("default").unwrap();
    let ids = tenant.list(None, 10).unwrap();
    assert_eq!(ids.len(), 1);
    let meta = tenant.metadata(&ids[0]).unwrap();
    assert_eq!(meta.size, bytes.len() as u64);
    assert_eq!(meta.digest.as_bytes(), blake3::hash(&bytes).as_bytes());
}

#[test]
fn example_plugin_dedup_demo_succeeds() {
    let store = TestStore::unsynced();
    let options = PluginOptions {
        args: vec!["example".into()],
        ..PluginOptions::default()
    };
    assert_eq!(run(&store, options), 0);
    let stats = store.runtime.tenant_store("default").unwrap().stats();
    assert!(stats.artifacts >= 1);
    assert!(stats.logical_bytes > 0);
}

#[test]
fn plugin_without_a_grant_cannot_read_host_files() {
    let store = TestStore::unsynced();
    let options = PluginOptions {
        args: vec!["example".into(), "/etc/hostname".into()],
        ..PluginOptions::default()
    };
    assert_ne!(
        run(&store, options),
        0,
        "no preopen: the file must be unreadable"
    );
    assert_eq!(
        store
            .runtime
            .tenant_store("default")
            .unwrap()
            .stats()
            .artifacts,
        0
    );
}

#[test]
fn a_time_limit_on_an_engine_without_epoch_interruption_is_refused() {
    let store = TestStore::unsynced();
    let plugin = Plugin::new(&store.runtime, tensor_blob_artifacts::EXAMPLE_PLUGIN_WASM).unwrap();
    let options = PluginOptions {
        args: vec!["example".into()],
        time_limit: Some(std::time::Duration::from_secs(5)),
        ..PluginOptions::default()
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = tokio.block_on(plugin.run("default", &options)).unwrap_err();
    assert!(error.to_string().contains("epoch interruption"), "{error}");
    let stats = store.runtime.tenant_store("default").unwrap().stats();
    assert_eq!(stats.artifacts, 0, "refused before it ran");
}

/// Goal: the pooling allocator's slots fit what we run: a chunker and a
/// real plugin (a wasip2 command with its adapter's tables) instantiate
/// and work in a small pool, and a pool full of live instances refuses the
/// next one with an error, not a crash.
/// Method: a pool of 3 component instances; hold one chunker per tenant
/// while the example plugin (which makes its own chunker) runs; then fill
/// the pool with chunkers and ask for one more.
#[test]
fn chunker_and_plugin_run_in_a_small_pool() {
    use tensor_blob_host::runtime::{self, CompileCache, EngineOptions, PoolingOptions};
    let made = runtime::new_engine(&EngineOptions {
        pooling: Some(PoolingOptions {
            component_instances_total: 3,
            core_instances_total: 60,
            memories_total: 6,
            tables_total: 20,
            ..PoolingOptions::default()
        }),
        cache: CompileCache::Off,
        epoch_interruption: false,
    })
    .unwrap();
    assert!(made.warnings.is_empty(), "{:?}", made.warnings);
    let dir = tempfile::tempdir().unwrap();
    let root =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let rt = runtime::Runtime::new(&made.engine, root, runtime::RuntimeOptions::default())
        .unwrap()
        .with_gc(None);
    let mut held = rt.chunker("a").unwrap();
    let id = held.put(b"pooled", &Default::default()).unwrap();
    let plugin = Plugin::new(&rt, tensor_blob_artifacts::EXAMPLE_PLUGIN_WASM).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = PluginOptions {
        args: vec!["example".into()],
        ..PluginOptions::default()
    };
    assert_eq!(tokio.block_on(plugin.run("b", &options)).unwrap(), 0);
    assert_eq!(held.get(&id).unwrap(), b"pooled");

    let _second = rt.chunker("b").unwrap();
    let _third = rt.chunker("c").unwrap();
    let refused = rt.chunker("d").err().expect("the pool is full");
    assert!(format!("{refused:#}").contains("concurrent"), "{refused:#}");
}
