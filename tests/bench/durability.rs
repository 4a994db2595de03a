//! Durability benchmark (issue 3): prints, in one run on this machine,
//! - 64 KiB puts per second: 16 concurrent writers with group commit
//!   (`Durability::Batch`) against one writer with `Durability::Sync`, and
//!   against tensor_blob 0.4.0's DurableBlobStore with fsync
//!   (`TBLOB_SEED_BENCH` names a built ../shared/seed-bench binary);
//! - fsyncs per put in each mode (the store counts them), and the CPU time
//!   per put with the share that is hashing (a lower bound);
//! - the time to open a store holding 1,000,000 chunks.
//!
//! `cargo bench -p tensor-blob-host --bench durability`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tensor_blob_host::runtime::{self, PutOptions, Runtime};
use tensor_blob_host::store::{ChunkRef, Durability, Hash, NewMetadata, Store, StoreOptions};

const SMALL_BYTES: usize = 64 << 10;

fn main() {
    // `TBLOB_BENCH_OPEN_ONLY=1`: only the open benchmarks.
    let open_only = std::env::var_os("TBLOB_BENCH_OPEN_ONLY").is_some();
    if !open_only {
        small_put_benchmarks();
    }
    // `TBLOB_BENCH_PUTS_ONLY=1`: only the small-put benchmarks.
    if std::env::var_os("TBLOB_BENCH_PUTS_ONLY").is_none() {
        open_benchmarks();
    }
}

fn small_put_benchmarks() {
    let engine = wasmtime::Engine::new(&runtime::default_config()).unwrap();
    let component =
        runtime::ChunkerComponent::new(&engine, tensor_blob_artifacts::CHUNKER_WASM).unwrap();

    let (sync_rate, sync_fsyncs, _) = small_puts(&component, Durability::Sync, 1, 200);
    println!(
        "64 KiB puts, 1 writer, sync:      {sync_rate:8.0} puts/s  {sync_fsyncs:.2} fsyncs/put"
    );
    let (batch1_rate, batch1_fsyncs, _) = small_puts(&component, Durability::Batch, 1, 200);
    println!(
        "64 KiB puts, 1 writer, batch:     {batch1_rate:8.0} puts/s  {batch1_fsyncs:.2} fsyncs/put"
    );
    let (batch_rate, batch_fsyncs, cpu_us) = small_puts(&component, Durability::Batch, 16, 100);
    println!(
        "64 KiB puts, 16 writers, batch:   {batch_rate:8.0} puts/s  {batch_fsyncs:.2} fsyncs/put  ({:.1}x one sync writer)",
        batch_rate / sync_rate
    );
    // Every byte of a put is hashed three times: per chunk in the guest,
    // per chunk again in the host, and into the whole-content digest in
    // the host. Counted here at native speed (the guest's wasm BLAKE3 is
    // slower), so the share is a lower bound.
    let hash_us = 3.0 * native_hash_us(SMALL_BYTES);
    println!(
        "  CPU per put (process, all threads): {cpu_us:.0} us, of which hashing at least {hash_us:.0} us ({:.0} %)",
        100.0 * hash_us / cpu_us
    );
    let (sync16_rate, sync16_fsyncs, _) = small_puts(&component, Durability::Sync, 16, 100);
    println!(
        "64 KiB puts, 16 writers, sync:    {sync16_rate:8.0} puts/s  {sync16_fsyncs:.2} fsyncs/put"
    );
    if let Some(seed) = std::env::var_os("TBLOB_SEED_BENCH") {
        match seed_small_puts(Path::new(&seed)) {
            Some(seed_rate) => println!(
                "seed 0.4.0 64 KiB durable puts:   {seed_rate:8.0} puts/s  ours (16 writers, batch) / seed {:.1}x",
                batch_rate / seed_rate
            ),
            None => println!("seed 0.4.0: could not run {seed:?}"),
        }
    }
}

fn open_benchmarks() {
    for (what, durability, close) in [
        ("durable, after a clean close", Durability::Sync, true),
        ("durable, after a crash", Durability::Sync, false),
        ("durability none (tables rebuilt)", Durability::None, true),
    ] {
        // `TBLOB_BENCH_OPEN_CASE=crash` (say): only the cases whose name
        // holds it, to profile one.
        if let Some(case) = std::env::var_os("TBLOB_BENCH_OPEN_CASE") {
            if !what.contains(&*case.to_string_lossy()) {
                continue;
            }
        }
        let (open, stats) = open_with_chunks(1_000_000, durability, close);
        let slowest = if close {
            ""
        } else {
            " (slowest of 12 crash points)"
        };
        println!(
            "open with 1,000,000 chunks, {what}{slowest}: {:.3} s  ({} segments from hints, {} scanned, {} meta records replayed)",
            open.as_secs_f64(),
            stats.segments_from_hints,
            stats.segments_scanned,
            stats.meta_records
        );
    }

    if std::env::var_os("TBLOB_BENCH_OPEN_CASE").is_some() {
        return;
    }
    let active = open_with_active_segment(256 << 20);
    println!(
        "open, 256 MiB active segment:     clean close {:.3} s, after a crash {:.3} s, \
         without its checkpoint (full scan) {:.3} s",
        active.clean.as_secs_f64(),
        active.crashed.as_secs_f64(),
        active.unhinted.as_secs_f64()
    );
}

struct ActiveOpen {
    clean: Duration,
    crashed: Duration,
    unhinted: Duration,
}

/// Open of a store whose active segment holds `bytes` (1 MiB chunks, one
/// segment): after a clean close (its checkpoint covers it all), after a
/// crash (the store is leaked, not closed: the checkpoints taken every
/// 64 MiB cover most of it), and with its hint removed (the whole segment
/// scanned and re-hashed, as every open did before checkpoints).
fn open_with_active_segment(bytes: usize) -> ActiveOpen {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        segment_bytes_max: 2 * bytes as u64,
        ..StoreOptions::default()
    };
    let chunk = 1 << 20;
    let put = |store: &Store, seed: u64| {
        let mut data = vec![0u8; chunk];
        fill(&mut data, seed);
        let digest = Hash::of(&data);
        let mut upload = store.begin_upload();
        upload.put_chunk(&digest, &data).unwrap();
        let refs = [ChunkRef {
            digest,
            len: chunk as u32,
        }];
        upload
            .commit(&refs, chunk as u64, Some(&digest), NewMetadata::default())
            .unwrap();
    };
    {
        let store = Store::open(open_dir(dir.path()), options.clone()).unwrap();
        for i in 0..(bytes / chunk) as u64 {
            put(&store, i);
        }
    }
    let started = Instant::now();
    let store = Store::open(open_dir(dir.path()), options.clone()).unwrap();
    let clean = started.elapsed();
    assert_eq!(store.open_stats().segments_scanned, 0);
    // More puts, then a "crash": the store is never closed.
    for i in 0..40 {
        put(&store, 1_000_000 + i);
    }
    std::mem::forget(store);
    let started = Instant::now();
    let store = Store::open(open_dir(dir.path()), options.clone()).unwrap();
    let crashed = started.elapsed();
    drop(store);
    let hints = std::fs::read_dir(dir.path().join("segments")).unwrap();
    for entry in hints {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "hint") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let started = Instant::now();
    let store = Store::open(open_dir(dir.path()), options).unwrap();
    let unhinted = started.elapsed();
    assert_eq!(store.open_stats().segments_scanned, 1);
    ActiveOpen {
        clean,
        crashed,
        unhinted,
    }
}

/// `writers` threads, each with its own chunker, each putting `per_writer`
/// distinct 64 KiB artifacts. Returns puts/s and fsyncs per put.
fn small_puts(
    component: &runtime::ChunkerComponent,
    durability: Durability,
    writers: usize,
    per_writer: usize,
) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let root =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let store_options = StoreOptions {
        durability,
        ..StoreOptions::default()
    };
    let rt = Runtime::with_chunker(component.clone(), root, store_options);
    let store = rt.tenant_store("default").unwrap();
    let mut chunkers: Vec<_> = (0..writers)
        .map(|_| rt.chunker("default").unwrap())
        .collect();
    let fsyncs_before = store.fsync_count();
    let cpu_before = process_cpu_us();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (w, chunker) in chunkers.iter_mut().enumerate() {
            scope.spawn(move || {
                let mut data = vec![0u8; SMALL_BYTES];
                for i in 0..per_writer {
                    fill(&mut data, (w * 1_000_000 + i) as u64 + 1);
                    chunker.put(&data, &PutOptions::default()).unwrap();
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_us = process_cpu_us() - cpu_before;
    let puts = (writers * per_writer) as f64;
    let fsyncs = (store.fsync_count() - fsyncs_before) as f64;
    (puts / elapsed, fsyncs / puts, cpu_us / puts)
}

/// User plus system CPU time of this process so far, in microseconds.
fn process_cpu_us() -> f64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0);
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// Microseconds one native BLAKE3 of `bytes` bytes takes (median of many).
fn native_hash_us(bytes: usize) -> f64 {
    let mut data = vec![0u8; bytes];
    fill(&mut data, 7);
    let mut times: Vec<f64> = (0..201)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(blake3::hash(std::hint::black_box(&data)));
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// tensor_blob 0.4.0 durable 64 KiB puts per second (its MB/s / 64 KiB).
fn seed_small_puts(seedbench: &Path) -> Option<f64> {
    let work = tempfile::tempdir().ok()?;
    let output = Command::new(seedbench)
        .args([
            "throughput",
            "durable-fsync",
            &SMALL_BYTES.to_string(),
            "3",
            "50",
        ])
        .arg(work.path())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mbps: f64 = text
        .lines()
        .filter(|l| l.starts_with("MEDIAN"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("put_MBps="))
        })?
        .parse()
        .ok()?;
    Some(mbps * 1e6 / SMALL_BYTES as f64)
}

/// Open of a store of `chunks` 64-byte chunks in artifacts of 1,000 (8 MiB
/// segments, so most are sealed with hint files): in a durable mode the
/// catalog database is read from its checkpoint (taken at a clean close,
/// or the last one before a crash, the log replayed past it); without
/// durability the tables are in memory, rebuilt at each open.
///
/// After a crash the open's work depends on how far the crash came after
/// the last checkpoint, so that case crashes at `CRASH_POINTS` successive
/// points (one more artifact each, which spans a checkpoint interval) and
/// returns the slowest open; the clean cases return their one open.
fn open_with_chunks(
    chunks: usize,
    durability: Durability,
    close: bool,
) -> (Duration, tensor_blob_host::store::OpenStats) {
    const PER_ARTIFACT: usize = 1000;
    const CRASH_POINTS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability,
        segment_bytes_max: 8 << 20,
        ..StoreOptions::default()
    };
    let put_artifact = |store: &Store, a: usize| {
        let mut bytes = [0u8; 64];
        let mut upload = store.begin_upload();
        let mut refs = Vec::with_capacity(PER_ARTIFACT);
        let mut whole = blake3::Hasher::new();
        for c in 0..PER_ARTIFACT {
            let n = (a * PER_ARTIFACT + c) as u64;
            bytes[..8].copy_from_slice(&n.to_le_bytes());
            let digest = Hash::of(&bytes);
            upload.put_chunk(&digest, &bytes).unwrap();
            whole.update(&bytes);
            refs.push(ChunkRef { digest, len: 64 });
        }
        let digest = Hash::from_slice(whole.finalize().as_bytes()).unwrap();
        upload
            .commit(
                &refs,
                (PER_ARTIFACT * 64) as u64,
                Some(&digest),
                NewMetadata::default(),
            )
            .unwrap();
    };
    let mut artifacts = chunks / PER_ARTIFACT;
    {
        let store = Store::open(open_dir(dir.path()), options.clone()).unwrap();
        for a in 0..artifacts {
            put_artifact(&store, a);
        }
        if !close {
            // As a crash: no close, so no last checkpoint.
            std::mem::forget(store);
        }
    }
    let mut slowest: Option<(Duration, tensor_blob_host::store::OpenStats)> = None;
    for point in 0..if close { 1 } else { CRASH_POINTS } {
        let started = Instant::now();
        let store = Store::open(open_dir(dir.path()), options.clone()).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(store.stats().chunks, (artifacts * PER_ARTIFACT) as u64);
        if slowest.as_ref().is_none_or(|(worst, _)| elapsed > *worst) {
            slowest = Some((elapsed, store.open_stats()));
        }
        if point + 1 < CRASH_POINTS && !close {
            put_artifact(&store, artifacts);
            artifacts += 1;
            std::mem::forget(store);
        }
    }
    slowest.unwrap()
}

fn open_dir(path: &Path) -> cap_std::fs::Dir {
    cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority()).unwrap()
}

fn fill(data: &mut [u8], seed: u64) {
    fastrand::Rng::with_seed(seed).fill(data);
}
