//! Tests of per-tenant quotas and the policy file: each limit, races for
//! the last room, streaming uploads stopped at the first crossing chunk
//! with nothing left behind, and the policy's durability (reopen, power
//! cut, damage).

use std::sync::{Arc, Barrier};

use super::{data, open, put_with, unsynced};
use crate::store::backend::sim::SimDisk;
use crate::store::*;

/// [`put_with`] without metadata: the chunker's way (missing, then the
/// missing chunks), errors returned.
fn put(store: &Store, bytes: &[u8], chunk_len: usize) -> Result<ArtifactId, StoreError> {
    put_with(store, bytes, chunk_len, NewMetadata::default())
}

fn limit_of(error: &StoreError) -> &str {
    match error {
        StoreError::QuotaExceeded(message) => message.split(':').next().unwrap(),
        other => panic!("expected quota-exceeded, got {other}"),
    }
}

/// Goal: the bytes quota stops a streaming upload at the first chunk that
/// would cross it, leaves nothing behind, and GC gives the bytes back.
/// Method: a quota with room for about 10 of 40 chunks; chunks are put one
/// by one until refused; the refusal must come exactly at the chunk whose
/// record would take usage past the quota, after which stats and list show
/// no artifact and, once the upload is dropped and GC runs, usage is what
/// it was before.
#[test]
fn the_bytes_quota_stops_an_upload_at_the_first_crossing_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    let kept = put(&store, &data(1000, 1), 1000).unwrap();
    let before = store.usage().bytes;
    let record = format::CHUNK_HEADER_BYTES + 4096;
    store
        .set_quota(Quota {
            bytes_max: Some(before + 10 * record + 100),
            ..Quota::default()
        })
        .unwrap();
    let content = data(40 * 4096, 2);
    let mut upload = store.begin_upload();
    let mut refused = None;
    for (i, piece) in content.chunks(4096).enumerate() {
        if let Err(error) = upload.put_chunk(&Hash::of(piece), piece) {
            refused = Some((i, error));
            break;
        }
    }
    let (at, error) = refused.expect("the quota stops the upload");
    assert_eq!(at, 10, "refused at chunk {at}, not the first crossing one");
    assert_eq!(limit_of(&error), "bytes", "{error}");
    assert_eq!(store.usage().bytes, before + 10 * record);
    drop(upload);
    assert_eq!(store.stats().artifacts, 1);
    assert_eq!(store.list(None, 10).unwrap(), vec![kept]);
    // Unpinned, its chunks are garbage the quota no longer charges; GC
    // then removes them from the index.
    assert_eq!(store.usage().bytes, before);
    let report = store.gc().unwrap();
    assert_eq!(report.chunks_removed, 10);
    assert_eq!(store.usage().bytes, before);
    // Small enough, it fits.
    put(&store, &data(2000, 3), 1000).unwrap();
}

/// Goal: the artifact count, artifact size and writer limits refuse with
/// `QuotaExceeded` naming the limit, and free up when the room comes back.
/// Method: each limit in turn at a small value, the refused operation and
/// its message, then the deletion or drop that makes room.
#[test]
fn artifact_count_size_and_writer_limits_refuse_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, unsynced());
    store
        .set_quota(Quota {
            artifacts_max: Some(2),
            ..Quota::default()
        })
        .unwrap();
    let a = put(&store, b"one", 3).unwrap();
    put(&store, b"two", 3).unwrap();
    let error = put(&store, b"three", 5).unwrap_err();
    assert_eq!(limit_of(&error), "artifacts", "{error}");
    store.delete(&a).unwrap();
    put(&store, b"three", 5).unwrap();

    // Artifact bytes: refused at the first chunk past the size, whether
    // put or found present; and exactly at commit.
    store
        .set_quota(Quota {
            artifact_bytes_max: Some(10_000),
            ..Quota::default()
        })
        .unwrap();
    let content = data(40_000, 4);
    let mut upload = store.begin_upload();
    let mut refused = None;
    for (i, piece) in content.chunks(1000).enumerate() {
        if let Err(error) = upload.put_chunk(&Hash::of(piece), piece) {
            refused = Some((i, error));
            break;
        }
    }
    let (at, error) = refused.expect("the size limit stops the upload");
    assert_eq!((at, limit_of(&error)), (10, "artifact-bytes"), "{error}");
    drop(upload);
    let stored = data(6000, 5);
    put(&store, &stored, 1000).unwrap();
    // Twice the stored content: every chunk present, none put.
    let doubled = [stored.clone(), stored].concat();
    let error = put(&store, &doubled, 1000).unwrap_err();
    assert_eq!(limit_of(&error), "artifact-bytes", "{error}");
    put(&store, &data(10_000, 6), 1000).unwrap();

    // Writers: `try_begin_upload` refuses at once; `begin_upload` at its
    // first operation; slots come back on commit and on drop.
    store
        .set_quota(Quota {
            writers_max: Some(2),
            ..Quota::default()
        })
        .unwrap();
    let first = store.try_begin_upload().unwrap();
    let mut second = store.begin_upload();
    second.missing(&[Hash::of(b"x")]).unwrap();
    assert_eq!(store.usage().writers, 2);
    let error = store.try_begin_upload().err().expect("no third writer");
    assert_eq!(limit_of(&error), "writers", "{error}");
    let mut lazy = store.begin_upload();
    let error = lazy.put_chunk(&Hash::of(b"x"), b"x").unwrap_err();
    assert_eq!(limit_of(&error), "writers", "{error}");
    drop(lazy);
    drop(first);
    second.put_chunk(&Hash::of(b"x"), b"x").unwrap();
    let chunk = ChunkRef {
        digest: Hash::of(b"x"),
        len: 1,
    };
    second
        .commit(&[chunk], 1, Some(&Hash::of(b"x")), NewMetadata::default())
        .unwrap();
    assert_eq!(store.usage().writers, 0);
    store.try_begin_upload().unwrap();
}

/// Goal: uploads racing for the last allowed artifact or the last bytes
/// succeed exactly as many times as fit, in each durability mode (group
/// commit puts racing commits in one batch).
/// Method: 8 threads released by a barrier each commit one artifact.
/// Artifact race: 3 slots left, exactly 3 succeed. Bytes race: all commit
/// the same, already stored content (so only their commit records cost
/// bytes) under a quota with room for exactly 2 records: exactly 2 succeed.
/// Every refusal is `QuotaExceeded` of the right limit, and the quota holds
/// afterwards.
#[test]
fn uploads_racing_for_the_last_room_get_exactly_what_fits() {
    const THREADS: usize = 8;
    for durability in [Durability::Sync, Durability::Batch, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(
            &dir,
            StoreOptions {
                durability,
                ..StoreOptions::default()
            },
        );
        let race = |make: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>| {
            let barrier = Arc::new(Barrier::new(THREADS));
            let threads: Vec<_> = (0..THREADS)
                .map(|i| {
                    let (store, barrier, make) =
                        (store.clone(), Arc::clone(&barrier), Arc::clone(&make));
                    std::thread::spawn(move || {
                        let bytes = make(i);
                        barrier.wait();
                        put(&store, &bytes, 512)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        };

        put(&store, b"already here", 12).unwrap();
        store
            .set_quota(Quota {
                artifacts_max: Some(4),
                ..Quota::default()
            })
            .unwrap();
        let results = race(Arc::new(|i: usize| data(2048, 100 + i as u64)));
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 3, "{durability:?}: {results:?}");
        for error in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(limit_of(error), "artifacts", "{error}");
        }
        assert_eq!(store.stats().artifacts, 4);

        // The bytes race: each commit record of this content costs the same.
        store.set_quota(Quota::default()).unwrap();
        let same = data(2048, 7);
        put(&store, &same, 512).unwrap();
        let before = store.usage().bytes;
        put(&store, &same, 512).unwrap();
        let record = store.usage().bytes - before;
        store
            .set_quota(Quota {
                bytes_max: Some(store.usage().bytes + 2 * record + record / 2),
                ..Quota::default()
            })
            .unwrap();
        let results = race(Arc::new(|_: usize| data(2048, 7)));
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 2, "{durability:?}: {results:?}");
        for error in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(limit_of(error), "bytes", "{error}");
        }
        assert!(store.usage().bytes <= store.quota().bytes_max.unwrap());
    }
}

/// Goal: a policy is stored durably with the tenant, in force at once and
/// after a reopen, survives a power cut once `set_policy` returned, and a
/// damaged policy file stops the open with `Corrupted` instead of leaving
/// the tenant unlimited.
/// Method: set a policy, reopen (real directory) and check it and its
/// enforcement; on the simulated disk, set it then cut the power at once
/// (unsynced writes may be lost), reopen and check; flip a byte of the
/// file and truncate it, each open must fail `Corrupted`; a leftover
/// `policy.tmp` (a crash mid-write) is ignored and removed.
#[test]
fn the_policy_survives_reopen_and_power_cuts_and_damage_is_an_error() {
    let policy = TenantPolicy {
        quota: Quota {
            bytes_max: Some(1 << 30),
            artifacts_max: Some(1),
            artifact_bytes_max: None,
            writers_max: Some(4),
        },
        plugin_memory_bytes_max: Some(32 << 20),
        plugin_time_limit: Some(std::time::Duration::from_millis(250)),
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir, StoreOptions::default());
        assert_eq!(store.policy(), TenantPolicy::default());
        store.set_policy(policy).unwrap();
        put(&store, b"the one", 7).unwrap();
    }
    {
        let store = open(&dir, StoreOptions::default());
        assert_eq!(store.policy(), policy);
        let error = put(&store, b"a second", 8).unwrap_err();
        assert_eq!(limit_of(&error), "artifacts", "{error}");
    }
    std::fs::write(dir.path().join(policy::POLICY_TMP_NAME), b"half a policy").unwrap();
    {
        let store = open(&dir, StoreOptions::default());
        assert_eq!(store.policy(), policy);
    }
    assert!(!dir.path().join(policy::POLICY_TMP_NAME).exists());
    let path = dir.path().join(policy::POLICY_NAME);
    let good = std::fs::read(&path).unwrap();
    for damaged in [
        {
            let mut bytes = good.clone();
            bytes[20] ^= 1;
            bytes
        },
        good[..good.len() - 3].to_vec(),
        Vec::new(),
    ] {
        std::fs::write(&path, &damaged).unwrap();
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        match Store::open(root, StoreOptions::default()) {
            Err(StoreError::Corrupted(message)) => assert!(message.contains("policy"), "{message}"),
            Err(other) => panic!("expected corrupted, got {other}"),
            Ok(_) => panic!("a damaged policy file opened"),
        }
    }

    // A power cut right after `set_policy` returned keeps it.
    for seed in 0..16 {
        let disk = SimDisk::new(seed);
        let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
        store.set_policy(policy).unwrap();
        let after = disk.crash();
        drop(store);
        let store = Store::open_backend(after.root(), StoreOptions::default()).unwrap();
        assert_eq!(store.policy(), policy, "seed {seed}");
    }
}

/// Goal: the store-wide `StoreOptions::quota` is the default for a tenant
/// with no policy, and a policy replaces it.
#[test]
fn store_options_quota_is_the_default_until_a_policy_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let default = Quota {
        artifacts_max: Some(1),
        ..Quota::default()
    };
    let store = open(
        &dir,
        StoreOptions {
            quota: default,
            ..unsynced()
        },
    );
    assert_eq!(store.quota(), default);
    put(&store, b"one", 3).unwrap();
    assert_eq!(limit_of(&put(&store, b"two", 3).unwrap_err()), "artifacts");
    store.set_quota(Quota::default()).unwrap();
    put(&store, b"two", 3).unwrap();
}
