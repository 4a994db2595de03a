//! Goal: chunks shared between artifacts are stored once and stay readable
//! for as long as any artifact references them; tenants share nothing.
//! Method: put overlapping content, delete some, check the rest byte for
//! byte and the store's physical totals.
//! Each test runs on a local directory and on a bucket of a real s3s-fs
//! (`on_each_backing!`): `<test>::disk`, `<test>::bucket`.

use tensor_blob_host::runtime::metadata;
use tensor_blob_host::runtime::{BlobError, WitError};

use tensor_blob_host::store::StoreOptions;

use crate::common::{data, fixed, on_each_backing, options, TestStore};

on_each_backing! {
    fn same_content_twice_adds_no_chunk_bytes(backing) {
        let store = TestStore::on(backing, StoreOptions::default());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let bytes = data(2 << 20, 1);
        let a = chunker.put(&bytes, &options()).unwrap();
        let after_first = metadata::stats(chunker.store());
        let b = chunker.put(&bytes, &options()).unwrap();
        let after_second = metadata::stats(chunker.store());
        assert_ne!(a, b, "each put is its own artifact");
        assert_eq!(after_second.physical_bytes, after_first.physical_bytes);
        assert_eq!(after_second.disk_bytes, after_first.disk_bytes);
        assert_eq!(after_second.logical_bytes, 2 * after_first.logical_bytes);
        assert_eq!(after_second.artifacts, 2);
    }
}

on_each_backing! {
    fn deleting_one_of_two_sharing_artifacts_keeps_the_other(backing) {
        // tensor_blob 0.4.0 deleted chunks on artifact delete without counting
        // references, so deleting one artifact broke every other artifact that
        // shared a chunk with it.
        let store = TestStore::on(backing, StoreOptions::default());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let shared = data(1 << 20, 2);
        let mut second = shared.clone();
        second.extend_from_slice(&data(100_000, 3));
        let a = chunker.put(&shared, &fixed(4096)).unwrap();
        let b = chunker.put(&second, &fixed(4096)).unwrap();
        metadata::delete(chunker.store(), &a).unwrap();
        assert!(!metadata::exists(chunker.store(), &a).unwrap());
        assert!(matches!(
            chunker.get(&a),
            Err(BlobError::Blob(WitError::NotFound(_)))
        ));
        assert_eq!(chunker.get(&b).unwrap(), second);
        let stats = metadata::stats(chunker.store());
        assert_eq!(stats.artifacts, 1);
        assert_eq!(stats.logical_bytes, second.len() as u64);
        assert!(stats.physical_bytes >= second.len() as u64);
        assert!(store
            .runtime
            .tenant_store("default")
            .unwrap()
            .verify_all()
            .damaged
            .is_empty());
    }
}

on_each_backing! {
    fn content_deleted_then_put_again_reads_back(backing) {
        // tensor_blob 0.4.0 kept a deleted chunk's hash in its dedup index, so
        // re-putting the same content afterwards produced an unreadable artifact.
        let mut store = TestStore::on(backing, StoreOptions::default());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let bytes = data(600_000, 4);
        let a = chunker.put(&bytes, &options()).unwrap();
        metadata::delete(chunker.store(), &a).unwrap();
        store.runtime.tenant_store("default").unwrap().gc().unwrap();
        let b = chunker.put(&bytes, &options()).unwrap();
        assert_eq!(chunker.get(&b).unwrap(), bytes);
        drop(chunker);
        store.reopen();
        assert_eq!(
            store.runtime.chunker("default").unwrap().get(&b).unwrap(),
            bytes
        );
    }
}

on_each_backing! {
    fn concurrent_identical_puts_keep_every_reference(backing) {
        // tensor_blob 0.4.0 lost reference-count increments when identical
        // content was put concurrently; deleting one copy then broke the other.
        let store = TestStore::on(backing, StoreOptions::default());
        let bytes = data(1 << 20, 5);
        let ids: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let runtime = &store.runtime;
                    let bytes = &bytes;
                    scope.spawn(move || {
                        runtime
                            .chunker("default")
                            .unwrap()
                            .put(bytes, &fixed(4096))
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut chunker = store.runtime.chunker("default").unwrap();
        for id in &ids[..3] {
            metadata::delete(chunker.store(), id).unwrap();
        }
        store.runtime.tenant_store("default").unwrap().gc().unwrap();
        assert_eq!(chunker.get(&ids[3]).unwrap(), bytes);
        assert_eq!(
            metadata::stats(chunker.store()).physical_bytes,
            bytes.len() as u64
        );
    }
}

on_each_backing! {
    fn tenants_cannot_see_or_touch_each_other(backing) {
        let store = TestStore::on(backing, StoreOptions::default());
        let mut alice = store.runtime.chunker("alice").unwrap();
        let mut bob = store.runtime.chunker("bob").unwrap();
        let id = alice.put(b"alice's secret", &options()).unwrap();
        assert!(!metadata::exists(bob.store(), &id).unwrap());
        assert!(matches!(
            bob.get(&id),
            Err(BlobError::Blob(WitError::NotFound(_)))
        ));
        assert!(matches!(
            metadata::delete(bob.store(), &id),
            Err(BlobError::Blob(WitError::NotFound(_)))
        ));
        assert!(metadata::list(bob.store(), None, 100).unwrap().is_empty());
        assert_eq!(metadata::stats(bob.store()).artifacts, 0);
        // Same content in bob's tenant is stored again, not borrowed from alice.
        bob.put(b"alice's secret", &options()).unwrap();
        assert!(metadata::stats(bob.store()).physical_bytes > 0);
        assert_eq!(alice.get(&id).unwrap(), b"alice's secret");
        // Names that could escape the store root are refused.
        for name in ["../x", "a/b", "", "UPPER", "-x", &"x".repeat(65)] {
            assert!(store.runtime.chunker(name).is_err(), "tenant name {name:?}");
        }
    }
}
