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
use tensor_blob_host::runtime::metadata;

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

/// One operation of the mix: when it started and ended, in seconds from
/// the start of the benchmark.
#[derive(Clone, Copy)]
struct Op {
    start: f64,
    end: f64,
}

impl Op {
    fn latency(&self) -> f64 {
        self.end - self.start
    }

    fn overlaps(&self, passes: &[Op]) -> bool {
        passes
            .iter()
            .any(|pass| pass.start < self.end && self.start < pass.end)
    }
}

/// The operations of one run of the mix.
#[derive(Default)]
struct Ops {
    put: Vec<Op>,
    get: Vec<Op>,
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// `rounds` rounds of: put a new artifact, get a random old one (checking
/// its hash), delete the oldest of the new ones once there are 64 (so the
/// store keeps making garbage, the way a platform's would).
fn mix(
    chunker: &mut Chunker,
    rng: &mut fastrand::Rng,
    old: &[(String, Vec<u8>)],
    rounds: usize,
    base: Instant,
) -> Ops {
    let now = || base.elapsed().as_secs_f64();
    let mut ops = Ops::default();
    let mut recent = std::collections::VecDeque::new();
    for _ in 0..rounds {
        let data = random(rng, ARTIFACT_BYTES);
        let start = now();
        let id = chunker.put(&data, &PutOptions::default()).expect("put");
        ops.put.push(Op { start, end: now() });
        recent.push_back(id);
        if recent.len() > 64 {
            let id = recent.pop_front().expect("non-empty");
            metadata::delete(chunker.store(), &id).expect("delete");
        }

        let (id, hash) = &old[rng.usize(..old.len())];
        let start = now();
        let bytes = chunker.get(id).expect("get");
        ops.get.push(Op { start, end: now() });
        assert_eq!(
            blake3::hash(&bytes).as_bytes(),
            &hash[..],
            "get returned other bytes"
        );
    }
    ops
}

/// p50 and p99 of the latencies of `ops`, in seconds.
fn p50_p99(ops: impl Iterator<Item = Op>) -> (f64, f64, usize) {
    let mut latencies: Vec<f64> = ops.map(|op| op.latency()).collect();
    if latencies.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    let p50 = percentile(&mut latencies, 0.5);
    (p50, percentile(&mut latencies, 0.99), latencies.len())
}

fn latency(component: &ChunkerComponent) {
    const ROUNDS: usize = 600;
    // Small segments, so GC compacts many of them while the mix runs.
    let (_dir, runtime) = runtime(component, 16 << 20);
    let mut chunker = runtime.chunker("bench").expect("chunker");
    let store = runtime.tenant_store("bench").expect("store");
    let mut rng = fastrand::Rng::with_seed(8);
    let base = Instant::now();
    let mut old = fill(&mut chunker, &mut rng, 256);
    // Delete every other one: half of each segment is garbage.
    let mut keep = Vec::new();
    for (i, artifact) in old.drain(..).enumerate() {
        if i % 2 == 0 {
            metadata::delete(chunker.store(), &artifact.0).expect("delete");
        } else {
            keep.push(artifact);
        }
    }
    // Warm up, then measure without GC.
    mix(&mut chunker, &mut rng, &keep, 50, base);
    let without = mix(&mut chunker, &mut rng, &keep, ROUNDS, base);

    // The same mix beside a GC thread running a pass every 50 ms (a
    // background task with a short interval), with a low dead-ratio
    // threshold and a small budget so it keeps compacting. Only the
    // operations that overlap a pass that did work count as "during GC".
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
            let (mut passes, mut copied, mut segments) = (Vec::new(), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let start = base.elapsed().as_secs_f64();
                let report = store.gc_pass(&policy).expect("gc pass");
                let end = base.elapsed().as_secs_f64();
                if report.bytes_copied > 0 || report.segments_removed > 0 {
                    passes.push(Op { start, end });
                }
                copied += report.bytes_copied;
                segments += report.segments_removed;
                // The pacing of the workload, not a synchronisation.
                std::thread::sleep(Duration::from_millis(50));
            }
            (passes, copied, segments)
        })
    };
    let with = mix(&mut chunker, &mut rng, &keep, ROUNDS, base);
    stop.store(true, Ordering::Relaxed);
    let (passes, copied, segments) = gc.join().expect("gc thread");
    let busy: f64 = passes.iter().map(Op::latency).sum();

    println!("latency of 1 MiB puts and gets through the chunker (ms):       n    p50     p99");
    let row = |label: &str, (p50, p99, n): (f64, f64, usize)| {
        println!("  {label:<56} {n:5} {:7.2} {:7.2}", p50 * 1e3, p99 * 1e3);
        p99
    };
    let put_without = row("put, no GC", p50_p99(without.put.iter().copied()));
    let put_with = row(
        "put, during a GC pass",
        p50_p99(with.put.iter().copied().filter(|op| op.overlaps(&passes))),
    );
    let get_without = row("get, no GC", p50_p99(without.get.iter().copied()));
    let get_with = row(
        "get, during a GC pass",
        p50_p99(with.get.iter().copied().filter(|op| op.overlaps(&passes))),
    );
    println!(
        "  p99 during GC / without: put {:.2}x, get {:.2}x (goal <= 2x); GC: {} passes that worked, \
         busy {busy:.1} s, {:.0} MiB copied, {segments} segments removed",
        put_with / put_without,
        get_with / get_without,
        passes.len(),
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
            metadata::delete(chunker.store(), &artifact.0).expect("delete");
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
