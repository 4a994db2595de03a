//! Object-store benchmark (issue 12): prints, in one run on this machine,
//! put and get MB/s of a 256 MiB artifact and the rate of 1,000 small
//! (64 KiB) puts and gets through the guest chunker, on the local backend and on a
//! real S3-compatible server on 127.0.0.1 (`s3s-fs`, file-backed), with
//! the ratios bucket / local; requests per small put and per GiB stored;
//! and the time a fresh host takes to open the tenant from the bucket
//! alone.
//!
//! `cargo bench -p tensor-blob-host --bench object_store`.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tensor_blob_host::runtime::{Runtime, RuntimeOptions};
use tensor_blob_host::store::backend::cap::CapDir;
use tensor_blob_host::store::backend::object::{LeaseOptions, ObjectBackend, RequestCounts};
use tensor_blob_host::store::backend::Backend;
use tensor_blob_host::store::{Durability, StoreOptions};
use tensor_blob_host::testing::{shared_chunker, S3Server};

const LARGE: u64 = 256 << 20;
const SMALL: usize = 64 << 10;
const SMALL_COUNT: usize = 1000;

/// `len` pseudo-random bytes, generated as read.
struct Random(fastrand::Rng, u64);

impl Read for Random {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.1) as usize;
        self.0.fill(&mut buf[..n]);
        self.1 -= n as u64;
        Ok(n)
    }
}

struct Sink(u64);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn runtime(root: Arc<dyn Backend>) -> Runtime {
    Runtime::with_chunker_on(
        shared_chunker().expect("chunker"),
        root,
        RuntimeOptions {
            store: StoreOptions {
                durability: Durability::Sync,
                ..StoreOptions::default()
            },
            gc: None,
            ..RuntimeOptions::default()
        },
    )
}

struct Figures {
    put_mbs: f64,
    get_mbs: f64,
    small_per_s: f64,
    small_get_per_s: f64,
}

fn requests(counts: &RequestCounts) -> u64 {
    by_kind(counts).iter().sum()
}

/// Resets this process's peak RSS (Linux: `clear_refs` 5) and returns the
/// RSS now, KiB.
/// The requests made so far, by kind: PUT, GET, LIST, DELETE.
fn by_kind(counts: &RequestCounts) -> [u64; 4] {
    [&counts.puts, &counts.gets, &counts.lists, &counts.deletes].map(|c| c.load(Ordering::Relaxed))
}

/// Requests per operation since `before`: in all, and by kind.
fn per_op(counts: &RequestCounts, before: [u64; 4], ops: usize) -> String {
    let now = by_kind(counts);
    let per = |i: usize| (now[i] - before[i]) as f64 / ops as f64;
    format!(
        "{:.2} requests ({:.2} PUT, {:.2} GET, {:.2} LIST, {:.2} DELETE)",
        (0..4).map(per).sum::<f64>(),
        per(0),
        per(1),
        per(2),
        per(3)
    )
}

fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Peak RSS since `reset_peak_rss` returned `base`, above it, MiB.
fn extra_peak_mib(base: u64) -> f64 {
    status_kib("VmHWM:").saturating_sub(base) as f64 / 1024.0
}

fn measure(runtime: &Runtime, counts: Option<&RequestCounts>) -> Figures {
    let mut chunker = runtime.chunker("bench").expect("chunker");
    // Warm: the first put instantiates the chunker.
    chunker.put(b"warm", &Default::default()).expect("put");
    let before = counts.map(requests);
    let base = reset_peak_rss();
    let started = Instant::now();
    let id = chunker
        .put_from(
            &mut Random(fastrand::Rng::with_seed(1), LARGE),
            &Default::default(),
            &mut |_| {},
        )
        .expect("put");
    let put_s = started.elapsed().as_secs_f64();
    println!(
        "  256 MiB put: extra peak RSS {:.1} MiB",
        extra_peak_mib(base)
    );
    if let (Some(counts), Some(before)) = (counts, before) {
        let made = requests(counts) - before;
        println!(
            "  256 MiB put: {made} requests ({:.0} per GiB stored), {:.1} MiB sent",
            made as f64 * (1u64 << 30) as f64 / LARGE as f64,
            counts.bytes_put.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
        );
    }
    let before = counts.map(requests);
    let base = reset_peak_rss();
    let started = Instant::now();
    let mut sink = Sink(0);
    chunker.get_into(&id, &mut sink, &mut |_| {}).expect("get");
    let get_s = started.elapsed().as_secs_f64();
    println!(
        "  256 MiB get: extra peak RSS {:.1} MiB",
        extra_peak_mib(base)
    );
    if let (Some(counts), Some(before)) = (counts, before) {
        println!("  256 MiB get: {} requests", requests(counts) - before);
    }
    assert_eq!(sink.0, LARGE);
    let mut rng = fastrand::Rng::with_seed(2);
    let mut small = vec![0u8; SMALL];
    let kinds = counts.map(by_kind);
    let started = Instant::now();
    let mut ids = Vec::with_capacity(SMALL_COUNT);
    for _ in 0..SMALL_COUNT {
        rng.fill(&mut small);
        ids.push(chunker.put(&small, &Default::default()).expect("small put"));
    }
    let small_s = started.elapsed().as_secs_f64();
    if let (Some(counts), Some(kinds)) = (counts, kinds) {
        println!(
            "  64 KiB puts: per put {}",
            per_op(counts, kinds, SMALL_COUNT)
        );
    }
    let kinds = counts.map(by_kind);
    let started = Instant::now();
    for id in &ids {
        assert_eq!(chunker.get(id).expect("small get").len(), SMALL);
    }
    let small_get_s = started.elapsed().as_secs_f64();
    if let (Some(counts), Some(kinds)) = (counts, kinds) {
        println!(
            "  64 KiB gets: per get {}",
            per_op(counts, kinds, SMALL_COUNT)
        );
    }
    let mb = LARGE as f64 / 1e6;
    Figures {
        put_mbs: mb / put_s,
        get_mbs: mb / get_s,
        small_per_s: SMALL_COUNT as f64 / small_s,
        small_get_per_s: SMALL_COUNT as f64 / small_get_s,
    }
}

fn main() {
    let server = S3Server::start().expect("s3s-fs starts");
    let local_dir = tempfile::tempdir().unwrap();
    let dir =
        cap_std::fs::Dir::open_ambient_dir(local_dir.path(), cap_std::ambient_authority()).unwrap();
    println!("local backend (durable, fsync):");
    let local = measure(&runtime(Arc::new(CapDir::new(dir))), None);
    println!("bucket backend (s3s-fs on 127.0.0.1):");
    let backend = Arc::new(
        ObjectBackend::open(&server.config("bench"), LeaseOptions::default()).expect("bucket"),
    );
    let bucket = {
        let runtime = runtime(Arc::clone(&backend) as Arc<dyn Backend>);
        measure(&runtime, Some(backend.requests()))
    };
    drop(backend);
    for (what, l, b) in [
        ("256 MiB put, MB/s", local.put_mbs, bucket.put_mbs),
        ("256 MiB get, MB/s", local.get_mbs, bucket.get_mbs),
        ("64 KiB puts/s", local.small_per_s, bucket.small_per_s),
        (
            "64 KiB gets/s",
            local.small_get_per_s,
            bucket.small_get_per_s,
        ),
    ] {
        println!(
            "{what:20} local {l:8.1}  bucket {b:8.1}  ratio {:.2}",
            b / l
        );
    }
    // A fresh host: nothing but the bucket.
    let started = Instant::now();
    let fresh = Arc::new(
        ObjectBackend::open(&server.config("bench"), LeaseOptions::default()).expect("bucket"),
    );
    let runtime = runtime(Arc::clone(&fresh) as Arc<dyn Backend>);
    let store = runtime.tenant_store("bench").expect("open");
    println!(
        "open of the tenant from the bucket alone ({} artifacts, {} chunks): {:.0} ms, {} requests",
        store.stats().artifacts,
        store.stats().chunks,
        started.elapsed().as_secs_f64() * 1e3,
        requests(fresh.requests())
    );
}
