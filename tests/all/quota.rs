//! Goal: tenant quotas and policy seen from the runtime: a streaming put
//! through the chunker's `writer` is stopped with `quota-exceeded` at the
//! first write past the quota and leaves nothing behind; a chunker's
//! writers count against the writer limit; a tenant's plugin time limit
//! applies to runs that ask for none.
//! Method: real chunker (and hostile plugin) components over a temporary
//! store; outcomes checked through the store's own counters.

use std::io::Read;
use std::time::Duration;

use tensor_blob_host::runtime::plugin::{Plugin, PluginOptions, TimeLimitExceeded};
use tensor_blob_host::runtime::{self, BlobError, Runtime, RuntimeOptions, WitError};
use tensor_blob_host::store::{Durability, Quota, StoreOptions, TenantPolicy};

use crate::common::{fixed, PseudoRandom, TestStore};

/// Counts what is read through it.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

fn quota_message(error: BlobError) -> String {
    match error {
        BlobError::Blob(WitError::QuotaExceeded(message)) => message,
        BlobError::Blob(other) => panic!("expected quota-exceeded, got {other:?}"),
        BlobError::Trap(trap) => panic!("expected quota-exceeded, got a trap: {trap:?}"),
    }
}

/// Goal: a 256 MiB stream into a tenant with room for 4 MiB (by bytes, then
/// by artifact size) is refused with `quota-exceeded` naming the limit,
/// soon after the limit, not at the end of the stream; no artifact appears
/// and the quota's usage is back where it was. Method: `put_from` (a
/// chunker `writer`, fed 1 MiB pieces) from a counting reader.
#[test]
fn a_streaming_put_stops_at_the_first_write_past_the_quota() {
    const LIMIT: u64 = 4 << 20;
    const STREAM: u64 = 256 << 20;
    let test = TestStore::unsynced();
    let store = test.runtime.tenant_store("default").unwrap();
    let mut chunker = test.runtime.chunker("default").unwrap();
    chunker.put(b"kept", &fixed(64)).unwrap();
    let before = store.usage();
    for (quota, limit) in [
        (
            Quota {
                bytes_max: Some(before.bytes + LIMIT),
                ..Quota::default()
            },
            "bytes",
        ),
        (
            Quota {
                artifact_bytes_max: Some(LIMIT),
                ..Quota::default()
            },
            "artifact-bytes",
        ),
    ] {
        store.set_quota(quota).unwrap();
        let mut source = Counting {
            inner: PseudoRandom::new(8, STREAM),
            read: 0,
        };
        let error = chunker
            .put_from(&mut source, &fixed(64 << 10), &mut |_| {})
            .unwrap_err();
        let message = quota_message(error);
        assert!(message.starts_with(&format!("{limit}:")), "{message}");
        // The chunker buffers a little, and up to 4 chunks are in flight
        // to the store when it refuses one.
        assert!(
            source.read <= LIMIT + (8 << 20),
            "{limit}: read {} bytes before the refusal",
            source.read
        );
        let stats = store.stats();
        assert_eq!(stats.artifacts, 1, "{limit}: nothing partial is visible");
        assert_eq!(store.ids().count(), 1);
        assert_eq!(store.usage().bytes, before.bytes, "{limit}");
        assert_eq!(store.usage().writers, 0, "{limit}");
        store.gc().unwrap();
        assert_eq!(store.usage().bytes, before.bytes, "{limit}");
    }
    // Within the quota, a put succeeds.
    chunker.put(&vec![7u8; 1 << 20], &fixed(64 << 10)).unwrap();
}

/// Goal: each open chunker writer holds one writer slot. Method: a limit
/// of 1; a second writer is refused with `quota-exceeded` ("writers") by
/// the time it writes; once the first finishes, a new one works.
#[test]
fn chunker_writers_count_against_the_writer_limit() {
    let test = TestStore::unsynced();
    let store = test.runtime.tenant_store("default").unwrap();
    store
        .set_quota(Quota {
            writers_max: Some(1),
            ..Quota::default()
        })
        .unwrap();
    let mut chunker = test.runtime.chunker("default").unwrap();
    let first = chunker.create_writer(&fixed(4096)).unwrap();
    chunker.writer_write(&first, &[1u8; 10_000]).unwrap();
    let refused = chunker
        .create_writer(&fixed(4096))
        .and_then(|second| chunker.writer_write(&second, &[2u8; 10_000]));
    let message = quota_message(refused.unwrap_err());
    assert!(message.starts_with("writers:"), "{message}");
    chunker.writer_finish(&first).unwrap();
    chunker.put(b"after", &fixed(4096)).unwrap();
    assert_eq!(store.stats().artifacts, 2);
}

/// Goal: a tenant's policy time limit stops a plugin run that set none, and
/// the tighter of the run's and the tenant's limit applies. Method: the
/// hostile plugin's `spin` (loops forever), on an engine with epoch
/// interruption; the error must be `TimeLimitExceeded` of the tenant's
/// 200 ms, with no run limit and with a run limit of 60 s.
#[test]
fn a_tenant_time_limit_stops_a_plugin_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = runtime::default_config();
    config.epoch_interruption(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let root =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let options = RuntimeOptions {
        store: StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        },
        ..RuntimeOptions::default()
    };
    let rt = Runtime::new(&engine, root, options).unwrap();
    let limit = Duration::from_millis(200);
    rt.set_tenant_policy(
        "slow",
        TenantPolicy {
            plugin_time_limit: Some(limit),
            ..TenantPolicy::default()
        },
    )
    .unwrap();
    assert_eq!(
        rt.tenant_policy("slow").unwrap().plugin_time_limit,
        Some(limit)
    );
    let plugin = Plugin::new(&rt, tensor_blob_artifacts::HOSTILE_PLUGIN_WASM).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for run_limit in [None, Some(Duration::from_secs(60))] {
        let options = PluginOptions {
            args: vec!["hostile-plugin".into(), "spin".into()],
            time_limit: run_limit,
            ..PluginOptions::default()
        };
        let error = tokio.block_on(plugin.run("slow", &options)).unwrap_err();
        let stopped = error
            .downcast_ref::<TimeLimitExceeded>()
            .unwrap_or_else(|| panic!("expected a time-out, got {error:?}"));
        assert_eq!(stopped.0, limit);
    }
}
