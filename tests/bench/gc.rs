//! Garbage-collection benchmark (issue 8): prints, in one run,
//! - put and get latency (p50, p99) of artifacts stored and read through
//!   the chunker, with no GC and then beside GC passes run back to back on
//!   the same store, and the ratio of the two (goal: p99 at most 2x);
//! - disk coming back: after deleting 90% of 1 GiB of artifacts, how long
//!   the background task (no manual call) takes to bring the segment bytes
//!   on disk within 1.5x of the live bytes.
//!
//! `cargo bench -p tensor-blob-host --bench gc`. `TBLOB_GC_BENCH_MIB`
//! sets the size of the reclaim data set (default 1024),
//! `TBLOB_GC_BENCH_INTERVAL` the background task's interval in seconds
//! (default: [`GcPolicy::INTERVAL_DEFAULT`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tensor_blob_host::runtime::{self, Chunker, ChunkerComponent, PutOptions, Runtime};
use tensor_blob_host::store::{Durability, GcPolicy, Stats, StoreOptions};

const ARTIFACT_BYTES: usize = 1 << 20;

fn main() {
    let engine = wasmtime::Engine::new(&runtime::default_config()).expect("engine");
    let component =
        ChunkerComponent::new(&engine, tensor_blob_artifacts::CHUNKER_WASM).expect("compile");
    latency(&component);
    reclaim(&component);
}

/// A store root in a temporary directory, with durable commits and no
/// background GC (each part turns it on as it needs).
fn runtime(component: &ChunkerComponent, segment_bytes_max: u64) -> (tempfile::TempDir, Runtime) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority())
        .expect("open root");
    let options = StoreOptions {
        durability: Durability::Batch,
        segment_bytes_max,
        ..StoreOptions::default()
    };
    let runtime = Runtime::with_chunker(component.clone(), root, options).with_gc(None);
    (dir, runtime)
}

fn random(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data
}

/// Puts `count` random artifacts of [`ARTIFACT_BYTES`]; returns their ids.
fn fill(chunker: &mut Chunker, rng: &mut fastrand::Rng, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|_| {
            let data = random(rng, ARTIFACT_BYTES);
            let id = chunker.put(&data, &PutOptions::default()).expect("put");
            (id, blake3::hash(&data).as_bytes().to_vec())
        })
        .collect()
}

/// Latencies of one run of the operation mix, in seconds.
#[derive(Default)]
struct Latencies {
    put: Vec<f64>,
    get: Vec<f64>,
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// `ops` rounds of: put a new artifact, get a random old one (checking its
/// hash), delete the oldest of the new ones once there are 64 (so the
/// store keeps making garbage, the way a platform's would).
fn mix(
    chunker: &mut Chunker,
    rng: &mut fastrand::Rng,
    old: &[(String, Vec<u8>)],
    ops: usize,
) -> Latencies {
    let mut latencies = Latencies::default();
    let mut recent = std::collections::VecDeque::new();
    for _ in 0..ops {
        let data = random(rng, ARTIFACT_BYTES);
        let started = Instant::now();
        let id = chunker.put(&data, &PutOptions::default()).expect("put");
        latencies.put.push(started.elapsed().as_secs_f64());
        recent.push_back(id);
        if recent.len() > 64 {
            let id = recent.pop_front().expect("non-empty");
            chunker.delete(&id).expect("delete");
        }

        let (id, hash) = &old[rng.usize(..old.len())];
        let started = Instant::now();
        let bytes = chunker.get(id).expect("get");
        latencies.get.push(started.elapsed().as_secs_f64());
        assert_eq!(
            blake3::hash(&bytes).as_bytes(),
            &hash[..],
            "get returned other bytes"
        );
    }
    latencies
}

fn latency(component: &ChunkerComponent) {
    const OPS: usize = 600;
    // Small segments, so GC compacts many of them while the mix runs.
    let (_dir, runtime) = runtime(component, 16 << 20);
    let mut chunker = runtime.chunker("bench").expect("chunker");
    let store = runtime.tenant_store("bench").expect("store");
    let mut rng = fastrand::Rng::with_seed(8);
    let mut old = fill(&mut chunker, &mut rng, 256);
    // Delete every other one: half of each segment is garbage.
    let mut keep = Vec::new();
    for (i, artifact) in old.drain(..).enumerate() {
        if i % 2 == 0 {
            chunker.delete(&artifact.0).expect("delete");
        } else {
            keep.push(artifact);
        }
    }
    // Warm up, then measure without GC.
    mix(&mut chunker, &mut rng, &keep, 50);
    let mut without = mix(&mut chunker, &mut rng, &keep, OPS);

    // The same mix beside GC passes back to back (no interval), with a
    // low dead-ratio threshold and a small budget so it keeps working.
    let stop = Arc::new(AtomicBool::new(false));
    let gc = {
        let stop = Arc::clone(&stop);
        let store = store.clone();
        std::thread::spawn(move || {
            let policy = GcPolicy {
                segment_dead_ratio_min: 0.2,
                pass_copy_bytes_max: 32 << 20,
                meta_log_bytes_min: 0,
                ..GcPolicy::default()
            };
            let (mut passes, mut copied, mut segments) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let report = store.gc_pass(&policy).expect("gc pass");
                passes += 1;
                copied += report.bytes_copied;
                segments += report.segments_removed;
            }
            (passes, copied, segments)
        })
    };
    let mut with = mix(&mut chunker, &mut rng, &keep, OPS);
    stop.store(true, Ordering::Relaxed);
    let (passes, copied, segments) = gc.join().expect("gc thread");

    println!(
        "latency, {OPS} rounds of 1 MiB put + get + delete (ms):   p50 put  p99 put   p50 get  p99 get"
    );
    let row = |label: &str, l: &mut Latencies| -> (f64, f64) {
        let (p50_put, p99_put) = (percentile(&mut l.put, 0.5), percentile(&mut l.put, 0.99));
        let (p50_get, p99_get) = (percentile(&mut l.get, 0.5), percentile(&mut l.get, 0.99));
        println!(
            "  {label:<52} {:7.2}  {:7.2}   {:7.2}  {:7.2}",
            p50_put * 1e3,
            p99_put * 1e3,
            p50_get * 1e3,
            p99_get * 1e3
        );
        (p99_put, p99_get)
    };
    let (put_without, get_without) = row("no GC", &mut without);
    let (put_with, get_with) = row("GC passes back to back", &mut with);
    println!(
        "  p99 with GC / without: put {:.2}x, get {:.2}x (goal <= 2x); GC meanwhile: {passes} passes, \
         {:.0} MiB copied, {segments} segments removed",
        put_with / put_without,
        get_with / get_without,
        copied as f64 / (1 << 20) as f64
    );
    store.check_gc_accounting().expect("accounting");
}

fn reclaim(component: &ChunkerComponent) {
    let mib: usize = env("TBLOB_GC_BENCH_MIB", 1024);
    let interval = std::env::var("TBLOB_GC_BENCH_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(GcPolicy::INTERVAL_DEFAULT);
    let (_dir, runtime) = runtime(component, StoreOptions::default().segment_bytes_max);
    let mut chunker = runtime.chunker("bench").expect("chunker");
    let store = runtime.tenant_store("bench").expect("store");
    let mut rng = fastrand::Rng::with_seed(9);
    let artifacts = fill(&mut chunker, &mut rng, mib);
    let before = store.stats();
    // Delete 90%, spread over every segment: keep each tenth.
    let mut kept = Vec::new();
    for (i, artifact) in artifacts.into_iter().enumerate() {
        if i % 10 == 0 {
            kept.push(artifact);
        } else {
            chunker.delete(&artifact.0).expect("delete");
        }
    }
    let deleted = store.stats();
    println!(
        "reclaim: {} MiB in {mib} artifacts, 90% deleted: {:.0} MiB live, {:.0} MiB on disk",
        before.logical_bytes >> 20,
        deleted.physical_bytes as f64 / (1 << 20) as f64,
        deleted.disk_bytes as f64 / (1 << 20) as f64,
    );

    let policy = GcPolicy {
        interval,
        ..GcPolicy::default()
    };
    let started = Instant::now();
    let runtime = runtime.with_gc(Some(policy));
    let maintenance = runtime.maintenance().expect("background GC runs");
    let target = |stats: &Stats| stats.disk_bytes as f64 <= 1.5 * stats.physical_bytes as f64;
    let status = maintenance
        .wait_until(Duration::from_secs(600), |_| target(&store.stats()))
        .expect("background GC brings the disk back within 10 minutes");
    let took = started.elapsed();
    let after = store.stats();
    println!(
        "  background GC (interval {:.0} s, budget {} MiB a pass): disk {:.0} -> {:.0} MiB \
         ({:.2}x live) in {:.1} s, {} passes, {} segments removed",
        policy.interval.as_secs_f64(),
        policy.pass_copy_bytes_max >> 20,
        deleted.disk_bytes as f64 / (1 << 20) as f64,
        after.disk_bytes as f64 / (1 << 20) as f64,
        after.disk_bytes as f64 / after.physical_bytes as f64,
        took.as_secs_f64(),
        status.passes,
        status.segments_removed,
    );
    for (id, hash) in &kept {
        let bytes = chunker.get(id).expect("get after GC");
        assert_eq!(
            blake3::hash(&bytes).as_bytes(),
            &hash[..],
            "GC changed an artifact"
        );
    }
    println!("  all {} kept artifacts read back verified", kept.len());
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
