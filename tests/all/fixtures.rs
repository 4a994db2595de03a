//! `testing::TempStore`, the sandbox a test suite gets: each test its own
//! store root that removes itself, tenants isolated inside it, and the
//! same runtime a platform embeds (plugins included). This file doubles as
//! the documented example of writing a test against tensor-blob.

use tensor_blob_host::runtime::metadata;
use tensor_blob_host::runtime::plugin::{Plugin, PluginOptions};
use tensor_blob_host::runtime::PutOptions;
use tensor_blob_host::testing::TempStore;

/// A test of one's own code against a sandboxed store: put through the
/// chunker guest, read back, check the store's totals.
#[test]
fn a_test_gets_a_store_of_its_own() {
    let sandbox = TempStore::new().unwrap();
    let mut chunker = sandbox.chunker("default").unwrap();
    let data = vec![7u8; 300_000];
    let id = chunker.put(&data, &PutOptions::default()).unwrap();
    assert_eq!(chunker.get(&id).unwrap(), data);
    let stats = sandbox.store("default").unwrap().stats();
    assert_eq!((stats.artifacts, stats.logical_bytes), (1, 300_000));
}

/// Goal: sandboxes neither share data nor outlive their test. Method: two
/// sandboxes at once, each with an artifact under the same tenant name;
/// neither sees the other's; dropping one removes its directory and leaves
/// the other working.
#[test]
fn sandboxes_are_isolated_and_clean_up() {
    let first = TempStore::new().unwrap();
    let second = TempStore::new().unwrap();
    assert_ne!(first.path(), second.path());
    let in_first = first
        .chunker("default")
        .unwrap()
        .put(b"first", &PutOptions::default())
        .unwrap();
    let mut in_second = second.chunker("default").unwrap();
    assert!(!metadata::exists(in_second.store(), &in_first).unwrap());
    let kept = in_second.put(b"second", &PutOptions::default()).unwrap();

    let path = first.path().to_path_buf();
    assert!(path.join("tenants").join("default").is_dir());
    drop(first);
    assert!(!path.exists(), "a dropped sandbox leaves nothing behind");
    assert_eq!(in_second.get(&kept).unwrap(), b"second");
}

/// Many tests may share one sandbox and take a tenant each: the tenants
/// are as isolated as any.
#[test]
fn fresh_tenants_in_one_sandbox_are_isolated() {
    let sandbox = TempStore::new().unwrap();
    let (a, b) = (sandbox.fresh_tenant(), sandbox.fresh_tenant());
    assert_ne!(a, b);
    let id = sandbox
        .chunker(&a)
        .unwrap()
        .put(b"mine", &PutOptions::default())
        .unwrap();
    let other = sandbox.chunker(&b).unwrap();
    assert!(!metadata::exists(other.store(), &id).unwrap());
    assert_eq!(sandbox.store(&b).unwrap().stats().artifacts, 0);
}

/// A plugin runs against the sandbox as it would against a real store.
#[test]
fn plugins_run_in_a_sandbox() {
    let sandbox = TempStore::new().unwrap();
    let plugin = Plugin::new(
        sandbox.runtime(),
        tensor_blob_artifacts::EXAMPLE_PLUGIN_WASM,
    )
    .unwrap();
    let options = PluginOptions {
        args: vec!["example-plugin".into()],
        ..PluginOptions::default()
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let code = tokio.block_on(plugin.run("default", &options)).unwrap();
    assert_eq!(code, 0);
    assert!(sandbox.store("default").unwrap().stats().artifacts > 0);
}
