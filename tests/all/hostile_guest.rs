//! Goal: the host trusts nothing the chunker sends. A hostile chunker
//! (guest/components/rogue) lies about digests, sizes and lengths; every
//! lie must be refused with the right typed error, nothing may become
//! visible, and the store must keep working for honest clients.
//! Method: run each attack through the real runtime, check the error kind,
//! then check the store's totals and an honest round trip.

use tensor_blob_host::runtime::{BlobError, KeyValue, Runtime, WitError};
use tensor_blob_host::store::StoreOptions;

use crate::common::{data, open_runtime, options, rogue_component};

fn attack(runtime: &Runtime, name: &str) -> Result<String, BlobError> {
    let mut chunker = runtime.chunker("default").unwrap();
    let mut opts = options();
    opts.custom = vec![KeyValue {
        key: "attack".into(),
        value: name.into(),
    }];
    chunker.put(&data(300_000, 11), &opts)
}

/// Whether an error is of the kind an attack must get.
type ErrorCheck = fn(&WitError) -> bool;

#[test]
fn every_lie_is_refused_with_a_typed_error_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let root =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let rogue = Runtime::with_chunker(rogue_component().clone(), root, StoreOptions::default());
    let cases: &[(&str, ErrorCheck)] = &[
        ("bad-chunk-digest", |e| {
            matches!(e, WitError::HashMismatch(_))
        }),
        ("short-digest", |e| {
            matches!(e, WitError::InvalidArgument(_))
        }),
        ("bad-whole-digest", |e| {
            matches!(e, WitError::HashMismatch(_))
        }),
        ("unpinned-chunk", |e| {
            matches!(e, WitError::InvalidArgument(_))
        }),
        ("wrong-size", |e| matches!(e, WitError::InvalidArgument(_))),
        ("wrong-len", |e| matches!(e, WitError::InvalidArgument(_))),
        ("oversized-chunk", |e| {
            matches!(e, WitError::InvalidArgument(_) | WitError::TooLarge(_))
        }),
        ("commit-twice", |e| matches!(e, WitError::Closed)),
        ("huge-missing", |e| {
            matches!(e, WitError::InvalidArgument(_))
        }),
    ];
    for (name, expected) in cases {
        match attack(&rogue, name) {
            Err(BlobError::Blob(error)) => {
                assert!(expected(&error), "{name}: wrong error {error:?}")
            }
            other => panic!("{name}: expected a typed refusal, got {other:?}"),
        }
    }
    let store = rogue.tenant_store("default").unwrap();
    // commit-twice committed once, honestly; nothing else may be visible.
    let stats = store.stats();
    assert!(
        stats.artifacts <= 1,
        "only the honest first commit of commit-twice may exist: {stats:?}"
    );
    assert!(store.verify_all().damaged.is_empty());
    drop(store);
    drop(rogue);

    // The same store still serves an honest chunker, across a reopen.
    let honest = open_runtime(dir.path(), StoreOptions::default());
    let mut chunker = honest.chunker("default").unwrap();
    let bytes = data(300_000, 11);
    let id = chunker.put(&bytes, &options()).unwrap();
    assert_eq!(chunker.get(&id).unwrap(), bytes);
    assert!(honest
        .tenant_store("default")
        .unwrap()
        .recovery_report()
        .problems
        .is_empty());
}
