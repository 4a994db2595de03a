//! Metadata at scale (issue 10, "Scale" and "Benchmark"): a store of N
//! artifacts (1,000,000 by default) with 10 tags each and 10 chunks each,
//! and what it costs to open and to query.
//!
//! `cargo bench -p tensor-blob-host --bench metadata_scale [-- OPTIONS]`
//!
//! Options (or environment variables):
//! - `--artifacts N` (`TBLOB_SCALE_ARTIFACTS`): artifacts in the store;
//! - `--queries N` (`TBLOB_SCALE_QUERIES`): random queries per kind (1000);
//! - `--threads N`: generator threads (2);
//! - `--regenerate`: rebuild the stores even if they are complete;
//! - `--no-split`: skip the second store (same artifacts, one chunk each)
//!   that splits memory between artifacts and chunks;
//! - `--dir PATH` (`TBLOB_SCALE_DIR`): where the stores live
//!   (`target/metadata_scale/` by default). They are kept between runs,
//!   so a re-run only measures; a store is complete once its `complete`
//!   marker names the plan it was made with.
//!
//! What it measures, in one run:
//! - generation time (only when a store is made);
//! - open time: median of 3 opens of the generated store, each in a fresh
//!   child process (this binary with `--probe-open DIR`), with
//!   `open_stats()`; RSS (VmRSS, VmHWM) after the open;
//! - memory per artifact and per chunk: RSS after open of the full store
//!   (N artifacts, 10 N chunks), of the split store (N artifacts, N
//!   chunks) and of an empty one. Per chunk = (full - split) / (9 N);
//!   per artifact = (split - empty - N x per chunk) / N;
//! - per query kind, the first page (limit 100) over `--queries` random
//!   queries: p50 and p99 latency, and the mean page length;
//! - the walk of every page of one medium query (creator, 1 % of the
//!   store), checked against the count the plan predicts.
//!
//! The store's vocabulary (a deterministic function of the artifact's
//! index, see [`Plan`]): 1 % datasets, the rest steps of N/100 runs (100
//! steps each); 100 users; tags `run:R` (100 each), `step:S` (1 % each),
//! `kind:data|log|ckpt` (1 %, 79 %, 20 %), `user:U` (1 %), `project:P`
//! (10 %), `env:prod|dev`, `all` (every one), `shard:X` (0.1 %),
//! `q:ok|flagged|golden` (golden: 1 in 100,000), `seed:X` (unique-ish);
//! a filename `runs/R/step-S.bin`, five content types, creator `user-U`,
//! custom pairs `lr` (4 values), `host` (1000 values) and, on 1 %, `note`;
//! links to a dataset, the run's first step and its previous step.
//! Chunks are distinct, 16..=64 bytes (40 on average): the artifact's
//! index, the chunk's index, a marker, then pseudo-random filler.
//!
//! Measured 2026-12-03 (2 shared cores, release, against the scanning
//! `Store::query`; 100,000 artifacts, 1,000,000 chunks; the 1 M run was
//! not made: the shared disk had 650 MB free, the 1 M stores need about
//! 2.4 GB): generation 6.6 s (15,000 artifacts/s); disk 193 MiB
//! (meta.log 67, segments 84, hints 42); open median 2.63 s (target 1 s),
//! the one-chunk store 0.88 s; RSS after open 512 MiB, 346 bytes per
//! chunk and 1,883 per artifact; first-page p99 2-90 ms for every kind
//! but "no condition" (5 us), against the 1 ms target.
//!
//! Generation uses `Durability::None` (then one clean open and close with
//! the default durability, which checkpoints the active segment and the
//! log as any clean close does); every measured open uses the default.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use tensor_blob_host::store::{
    ArtifactId, ChunkRef, Condition, Durability, Hash, NewMetadata, Order, Query, Store,
    StoreOptions, TimeRange,
};

/// Default artifact count: the target.
const ARTIFACTS_DEFAULT: u64 = 1_000_000;
/// Chunks per artifact in the full store.
const CHUNKS_PER_ARTIFACT: u32 = 10;
/// Random queries per kind.
const QUERIES_DEFAULT: usize = 1000;
/// First-page length of every query.
const PAGE_LIMIT: usize = 100;
/// Opens measured per store (median taken).
const OPENS: usize = 3;
/// The targets.
const OPEN_TARGET_MS: f64 = 1000.0;
const QUERY_P99_TARGET_US: f64 = 1000.0;
/// Bumped whenever [`Plan`] changes what it generates, so old stores are
/// rebuilt instead of measured against the wrong expectations.
const PLAN_VERSION: u32 = 1;

const USERS: u64 = 100;
const CONTENT_TYPES: [&str; 5] = [
    "application/octet-stream",
    "text/plain",
    "application/json",
    "application/onnx",
    "application/x-safetensors",
];
const LEARNING_RATES: [&str; 4] = ["1e-3", "3e-4", "1e-4", "3e-5"];
const HOSTS: u64 = 1000;

struct Options {
    artifacts: u64,
    queries: usize,
    threads: u64,
    regenerate: bool,
    split: bool,
    dir: PathBuf,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--probe-open") {
        probe_open(Path::new(&args[at + 1]), Open::Writer);
        return;
    }
    // A reader beside a writer: `Store::open_read_only` rebuilds the
    // tables in memory (measured by hand: `--probe-open-read-only DIR`).
    if let Some(at) = args.iter().position(|a| a == "--probe-open-read-only") {
        probe_open(Path::new(&args[at + 1]), Open::Snapshot);
        return;
    }
    if let Some(at) = args.iter().position(|a| a == "--probe-open-in-place") {
        probe_open(Path::new(&args[at + 1]), Open::InPlace);
        return;
    }
    let options = parse_options(&args);
    run(&options);
}

fn parse_options(args: &[String]) -> Options {
    let env = |name: &str| std::env::var(name).ok();
    let mut options = Options {
        artifacts: env("TBLOB_SCALE_ARTIFACTS")
            .map(|v| v.parse().expect("TBLOB_SCALE_ARTIFACTS: a number"))
            .unwrap_or(ARTIFACTS_DEFAULT),
        queries: env("TBLOB_SCALE_QUERIES")
            .map(|v| v.parse().expect("TBLOB_SCALE_QUERIES: a number"))
            .unwrap_or(QUERIES_DEFAULT),
        threads: 2,
        regenerate: false,
        split: true,
        dir: env("TBLOB_SCALE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/metadata_scale")
            }),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |what: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{arg} needs {what}"))
                .clone()
        };
        match arg.as_str() {
            "--artifacts" => options.artifacts = value("a number").parse().expect("--artifacts N"),
            "--queries" => options.queries = value("a number").parse().expect("--queries N"),
            "--threads" => options.threads = value("a number").parse().expect("--threads N"),
            "--dir" => options.dir = PathBuf::from(value("a path")),
            "--regenerate" => options.regenerate = true,
            "--no-split" => options.split = false,
            // Passed by `cargo bench`.
            "--bench" => {}
            other => panic!("unknown option {other:?}"),
        }
    }
    // At least one run per user (runs are N/100), so every user has some.
    assert!(
        options.artifacts >= 100 * USERS,
        "--artifacts: at least {}",
        100 * USERS
    );
    assert!(options.queries >= 1, "--queries: at least 1");
    options.threads = options.threads.max(1);
    options
}

// ---------------------------------------------------------------------------
// The plan: every artifact's metadata and chunks as a function of its index.

/// Where artifact `i` sits in the generated world.
#[derive(Clone, Copy)]
enum Place {
    Dataset { dataset: u64 },
    Step { run: u64, step: u64 },
}

#[derive(Clone, Copy)]
struct Plan {
    artifacts: u64,
    datasets: u64,
    runs: u64,
    chunks_per_artifact: u32,
}

/// splitmix64 of `i` and `salt`: the plan's only source of variety.
fn mix(i: u64, salt: u64) -> u64 {
    let mut z = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED69))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Plan {
    fn new(artifacts: u64, chunks_per_artifact: u32) -> Plan {
        Plan {
            artifacts,
            datasets: (artifacts / 10_000).clamp(1, 100),
            runs: (artifacts / 100).max(1),
            chunks_per_artifact,
        }
    }

    fn describe(&self) -> String {
        format!(
            "plan v{PLAN_VERSION}: {} artifacts, {} datasets, {} runs, {} chunks each",
            self.artifacts, self.datasets, self.runs, self.chunks_per_artifact
        )
    }

    fn steps(&self) -> u64 {
        (self.artifacts - self.datasets).div_ceil(self.runs)
    }

    fn place(&self, i: u64) -> Place {
        if i < self.datasets {
            Place::Dataset { dataset: i }
        } else {
            let j = i - self.datasets;
            Place::Step {
                run: j % self.runs,
                step: j / self.runs,
            }
        }
    }

    fn index_of(&self, run: u64, step: u64) -> u64 {
        self.datasets + step * self.runs + run
    }

    fn user(&self, i: u64) -> u64 {
        match self.place(i) {
            Place::Dataset { dataset } => dataset % USERS,
            Place::Step { run, .. } => run % USERS,
        }
    }

    fn kind(&self, i: u64) -> &'static str {
        match self.place(i) {
            Place::Dataset { .. } => "data",
            Place::Step { step: 0, .. } => "data",
            Place::Step { step, .. } if step % 5 == 4 => "ckpt",
            Place::Step { .. } => "log",
        }
    }

    fn content_type(&self, i: u64) -> &'static str {
        match (self.kind(i), self.place(i)) {
            ("ckpt", _) if mix(i, 3).is_multiple_of(2) => CONTENT_TYPES[3],
            ("ckpt", _) => CONTENT_TYPES[4],
            ("log", Place::Step { step, .. }) if step.is_multiple_of(2) => CONTENT_TYPES[1],
            ("log", _) => CONTENT_TYPES[2],
            _ => CONTENT_TYPES[0],
        }
    }

    fn filename(&self, i: u64) -> String {
        match self.place(i) {
            Place::Dataset { dataset } => format!("datasets/{dataset}.bin"),
            Place::Step { run, step } => format!("runs/{run}/step-{step}.bin"),
        }
    }

    /// The inverse of [`Plan::filename`].
    fn index_of_filename(&self, filename: &str) -> u64 {
        let number = |text: &str| text.parse::<u64>().expect(filename);
        if let Some(dataset) = filename.strip_prefix("datasets/") {
            return number(dataset.strip_suffix(".bin").expect(filename));
        }
        let rest = filename.strip_prefix("runs/").expect(filename);
        let (run, step) = rest.split_once("/step-").expect(filename);
        self.index_of(
            number(run),
            number(step.strip_suffix(".bin").expect(filename)),
        )
    }

    fn seed_tag(&self, i: u64) -> String {
        format!("seed:{}", mix(i, 8) % (self.artifacts * 16))
    }

    /// Indices of the artifacts `i` links to (all before `i`).
    fn links(&self, i: u64) -> Vec<u64> {
        match self.place(i) {
            Place::Dataset { .. } => Vec::new(),
            Place::Step { run, step } => {
                let mut links = vec![mix(run, 1) % self.datasets];
                if step > 0 {
                    links.push(self.index_of(run, 0));
                }
                if step > 1 {
                    links.push(self.index_of(run, step - 1));
                }
                links
            }
        }
    }

    fn metadata(&self, i: u64, links: Vec<ArtifactId>) -> NewMetadata {
        let user = self.user(i);
        let quality = if i % 100_000 == 7 {
            "golden"
        } else if i % 1000 == 3 {
            "flagged"
        } else {
            "ok"
        };
        let (first, second, project, env) = match self.place(i) {
            Place::Dataset { dataset } => (
                format!("dataset:{dataset}"),
                "origin:import".to_string(),
                dataset % 10,
                "prod",
            ),
            Place::Step { run, step } => (
                format!("run:{run}"),
                format!("step:{step}"),
                mix(run, 2) % 10,
                if mix(run, 9).is_multiple_of(5) {
                    "prod"
                } else {
                    "dev"
                },
            ),
        };
        let tags = vec![
            first,
            second,
            format!("kind:{}", self.kind(i)),
            format!("user:{user}"),
            format!("project:{project}"),
            format!("env:{env}"),
            "all".to_string(),
            format!("shard:{}", i % 1000),
            format!("q:{quality}"),
            self.seed_tag(i),
        ];
        let learning_rate = match self.place(i) {
            Place::Dataset { .. } => LEARNING_RATES[0],
            Place::Step { run, .. } => LEARNING_RATES[(mix(run, 4) % 4) as usize],
        };
        let mut custom = vec![
            ("lr".to_string(), learning_rate.to_string()),
            ("host".to_string(), format!("node-{}", mix(i, 5) % HOSTS)),
        ];
        if mix(i, 6).is_multiple_of(100) {
            custom.push(("note".to_string(), format!("checked by user-{user}")));
        }
        NewMetadata {
            filename: Some(self.filename(i)),
            content_type: Some(self.content_type(i).to_string()),
            creator: Some(format!("user-{user}")),
            tags,
            links,
            external_links: Vec::new(),
            custom,
        }
    }

    /// Chunk `c` of artifact `i`: 16..=64 bytes, distinct from every other
    /// (its first 12 bytes are `i` and `c`).
    fn chunk(&self, i: u64, c: u32) -> Vec<u8> {
        let seed = mix(i * 64 + u64::from(c), 7);
        let len = 16 + (seed % 49) as usize;
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(&i.to_le_bytes());
        bytes.extend_from_slice(&c.to_le_bytes());
        bytes.extend_from_slice(b"tbsc");
        let mut filler = seed;
        while bytes.len() < len {
            filler = mix(filler, 11);
            let take = (len - bytes.len()).min(8);
            bytes.extend_from_slice(&filler.to_le_bytes()[..take]);
        }
        bytes
    }
}

// ---------------------------------------------------------------------------
// Generation.

fn open_dir(path: &Path) -> Dir {
    std::fs::create_dir_all(path).expect("creating the store directory");
    Dir::open_ambient_dir(path, ambient_authority()).expect("opening the store directory")
}

fn marker_matches(path: &Path, plan: &Plan) -> bool {
    std::fs::read_to_string(path.join("complete")).is_ok_and(|text| text == plan.describe())
}

/// Makes the store in `path` per `plan` unless a complete one is there.
fn ensure_store(path: &Path, plan: &Plan, threads: u64, regenerate: bool) {
    if !regenerate && marker_matches(path, plan) {
        println!("store {}: kept ({})", path.display(), plan.describe());
        return;
    }
    if path.exists() {
        std::fs::remove_dir_all(path).expect("removing the old store");
    }
    println!("generating {} ({})", path.display(), plan.describe());
    let started = Instant::now();
    generate(path, plan, threads);
    let generated = started.elapsed();
    // A clean close with the default durability: what a store in use is
    // left with (the active segment's hint, a checkpointed log).
    let started_settle = Instant::now();
    drop(Store::open(open_dir(path), StoreOptions::default()).expect("settling open"));
    println!(
        "generated in {:.1} s ({:.0} artifacts/s, {:.0} chunks/s); settling open and close {:.1} s",
        generated.as_secs_f64(),
        plan.artifacts as f64 / generated.as_secs_f64(),
        (plan.artifacts * u64::from(plan.chunks_per_artifact)) as f64 / generated.as_secs_f64(),
        started_settle.elapsed().as_secs_f64()
    );
    std::fs::write(path.join("complete"), plan.describe()).expect("writing the marker");
}

fn commit_artifact(store: &Store, plan: &Plan, i: u64, links: Vec<ArtifactId>) -> ArtifactId {
    let chunks: Vec<Vec<u8>> = (0..plan.chunks_per_artifact)
        .map(|c| plan.chunk(i, c))
        .collect();
    let digests: Vec<Hash> = chunks.iter().map(|bytes| Hash::of(bytes)).collect();
    let mut upload = store.begin_upload();
    let missing = upload.missing(&digests).expect("missing");
    let mut whole = blake3::Hasher::new();
    let mut refs = Vec::with_capacity(chunks.len());
    for ((bytes, digest), missing) in chunks.iter().zip(&digests).zip(missing) {
        assert!(missing, "chunk {digest} of artifact {i} is not distinct");
        upload.put_chunk(digest, bytes).expect("put_chunk");
        whole.update(bytes);
        refs.push(ChunkRef {
            digest: *digest,
            len: bytes.len() as u32,
        });
    }
    let size = refs.iter().map(|r| u64::from(r.len)).sum();
    let whole = Hash::from_bytes(*whole.finalize().as_bytes());
    upload
        .commit(&refs, size, Some(&whole), plan.metadata(i, links))
        .expect("commit")
}

fn generate(path: &Path, plan: &Plan, threads: u64) {
    let store = Store::open(
        open_dir(path),
        StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        },
    )
    .expect("open for generation");
    // Datasets first: every step links to one.
    let datasets: Vec<ArtifactId> = (0..plan.datasets)
        .map(|i| commit_artifact(&store, plan, i, Vec::new()))
        .collect();
    let done = AtomicU64::new(plan.datasets);
    let report_every = (plan.artifacts / 10).max(1);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (store, datasets, done) = (&store, &datasets, &done);
            scope.spawn(move || {
                // This thread owns the runs `thread mod threads`, so every
                // link of theirs is to an artifact it committed itself.
                let mut ids: HashMap<u64, ArtifactId> = HashMap::new();
                for step in 0..plan.steps() {
                    for run in (thread..plan.runs).step_by(threads as usize) {
                        let i = plan.index_of(run, step);
                        if i >= plan.artifacts {
                            continue;
                        }
                        let links = plan
                            .links(i)
                            .into_iter()
                            .map(|target| match target < plan.datasets {
                                true => datasets[target as usize],
                                false => ids[&target],
                            })
                            .collect();
                        let id = commit_artifact(store, plan, i, links);
                        if step == 0 {
                            ids.insert(i, id);
                        } else if step >= 2 {
                            // The previous step is needed no more (the
                            // first step stays: every step links to it).
                            ids.remove(&plan.index_of(run, step - 1));
                        }
                        if step >= 1 {
                            ids.insert(i, id);
                        }
                        let count = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if count % report_every == 0 {
                            println!(
                                "  {count} artifacts, {:.0} s",
                                started.elapsed().as_secs_f64()
                            );
                        }
                    }
                }
            });
        }
    });
    let stats = store.stats();
    assert_eq!(stats.artifacts, plan.artifacts, "artifacts generated");
    assert_eq!(
        stats.chunks,
        plan.artifacts * u64::from(plan.chunks_per_artifact),
        "chunks generated"
    );
}

/// Bytes on disk: (meta.log, segment files, hint files, everything else).
/// Bytes on disk by kind: (meta.log, segments, hints, catalog.redb, other).
fn footprint(path: &Path) -> (u64, u64, u64, u64, u64) {
    let mut sizes = (0, 0, 0, 0, 0);
    let mut stack = vec![open_dir(path)];
    while let Some(dir) = stack.pop() {
        for entry in dir.entries().expect("listing") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(entry.open_dir().expect("subdirectory"));
            } else if name == "meta.log" {
                sizes.0 += meta.len();
            } else if name.ends_with(".seg") {
                sizes.1 += meta.len();
            } else if name.ends_with(".hint") {
                sizes.2 += meta.len();
            } else if name == "catalog.redb" {
                sizes.3 += meta.len();
            } else {
                sizes.4 += meta.len();
            }
        }
    }
    sizes
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

// ---------------------------------------------------------------------------
// Opens: each in a child process, so RSS is that of one open store.

/// (VmRSS, VmHWM) of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How a probe opens the store.
#[derive(Clone, Copy)]
enum Open {
    Writer,
    /// A reader beside a writer (`Store::open_read_only`).
    Snapshot,
    /// A reader holding the writer lock, as the CLI's reading commands
    /// open when no writer runs (`Store::open_read_only_in_place`).
    InPlace,
}

/// The child's side: opens the store in `path`, prints one JSON line.
fn probe_open(path: &Path, how: Open) {
    use tensor_blob_host::store::backend::{cap::CapDir, Backend};
    let dir = open_dir(path);
    let (rss_before, _) = rss_kib();
    let started = Instant::now();
    let store = match how {
        Open::Writer => Store::open(dir, StoreOptions::default()),
        Open::Snapshot => Store::open_read_only(
            std::sync::Arc::new(CapDir::new(dir)),
            StoreOptions::default(),
        ),
        Open::InPlace => {
            let backend: std::sync::Arc<dyn Backend> = std::sync::Arc::new(CapDir::new(dir));
            let lock = backend.lock("LOCK").expect("the writer lock");
            Store::open_read_only_in_place(backend, StoreOptions::default(), lock)
        }
    }
    .expect("open");
    let open = started.elapsed();
    let (rss, hwm) = rss_kib();
    let stats = store.stats();
    let line = serde_json::json!({
        "open_ms": open.as_secs_f64() * 1e3,
        "rss_before_kib": rss_before,
        "rss_kib": rss,
        "hwm_kib": hwm,
        "artifacts": stats.artifacts,
        "chunks": stats.chunks,
        "open_stats": store.open_stats(),
    });
    println!("PROBE {line}");
}

struct Probe {
    open_ms: f64,
    rss_kib: u64,
    hwm_kib: u64,
    artifacts: u64,
    chunks: u64,
    open_stats: serde_json::Value,
}

fn probe(path: &Path) -> Probe {
    probe_as(path, "--probe-open")
}

fn probe_as(path: &Path, flag: &str) -> Probe {
    let output = Command::new(std::env::current_exe().expect("current exe"))
        .arg(flag)
        .arg(path)
        .output()
        .expect("running the probe");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "probe of {} failed: {stdout}{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("PROBE "))
        .expect("a PROBE line");
    let value: serde_json::Value = serde_json::from_str(line).expect("probe JSON");
    Probe {
        open_ms: value["open_ms"].as_f64().unwrap(),
        rss_kib: value["rss_kib"].as_u64().unwrap(),
        hwm_kib: value["hwm_kib"].as_u64().unwrap(),
        artifacts: value["artifacts"].as_u64().unwrap(),
        chunks: value["chunks"].as_u64().unwrap(),
        open_stats: value["open_stats"].clone(),
    }
}

/// [`OPENS`] probes; the one with the median open time.
fn probe_median(path: &Path) -> (Probe, Vec<f64>) {
    let mut probes: Vec<Probe> = (0..OPENS).map(|_| probe(path)).collect();
    probes.sort_by(|a, b| a.open_ms.total_cmp(&b.open_ms));
    let times = probes.iter().map(|p| p.open_ms).collect();
    (probes.swap_remove(OPENS / 2), times)
}

// ---------------------------------------------------------------------------
// Queries.

/// One kind of query: a name and a maker of random instances, each with a
/// check of its first page that a wrong answer would fail.
struct Kind {
    name: &'static str,
    make: MakeQuery,
}

/// Makes one random query of a kind, and what its first page must hold.
type MakeQuery = Box<dyn Fn(&mut fastrand::Rng) -> (Query, Check)>;

/// What a first page must satisfy.
enum Check {
    /// Holds this id (the query was made from it, and it is early enough
    /// in the order that the first page reaches it, or the only match).
    Contains(ArtifactId),
    /// Exactly these ids.
    Exactly(HashSet<ArtifactId>),
    /// At least this many ids.
    AtLeast(usize),
    /// At least one id.
    NonEmpty,
    /// Anything (no cheap expectation).
    Any,
}

/// A page at least half as long as `expected` matches would fill, safely
/// below what the plan's randomness can make of it.
fn at_least(expected: u64) -> Check {
    Check::AtLeast((expected / 2).min(PAGE_LIMIT as u64) as usize)
}

fn query(conditions: Vec<Condition>) -> Query {
    Query {
        conditions,
        order: Order::OldestFirst,
        after: None,
        limit: PAGE_LIMIT,
    }
}

fn tag(text: String) -> Condition {
    Condition::Tag(text)
}

fn kinds(plan: Plan, ids: std::sync::Arc<Vec<ArtifactId>>, created: (u64, u64)) -> Vec<Kind> {
    let n = plan.artifacts;
    let pick = move |rng: &mut fastrand::Rng| rng.u64(..n);
    let mut kinds = Vec::new();
    let mut add = |name, make: MakeQuery| kinds.push(Kind { name, make });
    add(
        "tag, common (user/project/kind/step/all)",
        Box::new(move |rng| {
            let text = match rng.u32(..5) {
                0 => format!("user:{}", rng.u64(..USERS)),
                1 => format!("project:{}", rng.u64(..10)),
                2 => ["kind:log", "kind:ckpt"][rng.usize(..2)].to_string(),
                3 => format!("step:{}", rng.u64(..plan.steps() - 1)),
                _ => "all".to_string(),
            };
            (query(vec![tag(text)]), at_least(plan.runs.min(n / USERS)))
        }),
    );
    let ids_ = ids.clone();
    add(
        "tag, rare (seed:X, ~1 match)",
        Box::new(move |rng| {
            let i = pick(rng);
            (
                query(vec![tag(plan.seed_tag(i))]),
                Check::Contains(ids_[i as usize]),
            )
        }),
    );
    let ids_ = ids.clone();
    add(
        "two tags AND (run:R, kind:ckpt)",
        Box::new(move |rng| {
            let run = rng.u64(..plan.runs);
            (
                query(vec![
                    tag(format!("run:{run}")),
                    tag("kind:ckpt".to_string()),
                ]),
                match plan.index_of(run, 4) < n {
                    true => Check::Contains(ids_[plan.index_of(run, 4) as usize]),
                    false => Check::Any,
                },
            )
        }),
    );
    let ids_ = ids.clone();
    add(
        "links-to X (~1 match; runs' roots ~100)",
        Box::new(move |rng| {
            let i = pick(rng);
            // Step S+1 of a run links to step S (and every step to the
            // first), and is the oldest to do so.
            let check = match plan.place(i) {
                Place::Step { run, step } if plan.index_of(run, step + 1) < n => {
                    Check::Contains(ids_[plan.index_of(run, step + 1) as usize])
                }
                _ => Check::Any,
            };
            (query(vec![Condition::LinksTo(ids_[i as usize])]), check)
        }),
    );
    let ids_ = ids.clone();
    add(
        "linked-from X (<= 3 matches)",
        Box::new(move |rng| {
            let i = pick(rng);
            let targets = plan
                .links(i)
                .into_iter()
                .map(|t| ids_[t as usize])
                .collect();
            (
                query(vec![Condition::LinkedFrom(ids_[i as usize])]),
                Check::Exactly(targets),
            )
        }),
    );
    add(
        "content type (5 types)",
        Box::new(move |rng| {
            let content_type = CONTENT_TYPES[rng.usize(..CONTENT_TYPES.len())];
            (
                query(vec![Condition::ContentType(content_type.to_string())]),
                at_least(n / 100),
            )
        }),
    );
    add(
        "creator (100 users)",
        Box::new(move |rng| {
            (
                query(vec![Condition::Creator(format!(
                    "user-{}",
                    rng.u64(..USERS)
                ))]),
                at_least(n / USERS),
            )
        }),
    );
    let ids_ = ids.clone();
    add(
        "filename exact (1 match)",
        Box::new(move |rng| {
            let i = pick(rng);
            (
                query(vec![Condition::Filename(plan.filename(i))]),
                Check::Exactly(HashSet::from([ids_[i as usize]])),
            )
        }),
    );
    let ids_ = ids.clone();
    add(
        "filename prefix runs/R/ (~100)",
        Box::new(move |rng| {
            let run = rng.u64(..plan.runs);
            (
                query(vec![Condition::FilenamePrefix(format!("runs/{run}/"))]),
                Check::Contains(ids_[plan.index_of(run, 0) as usize]),
            )
        }),
    );
    let (first_ms, last_ms) = created;
    add(
        "created range (1 % of the span)",
        Box::new(move |rng| {
            let span = (last_ms - first_ms).max(100);
            let from_ms = first_ms + rng.u64(..span - span / 100);
            (
                query(vec![Condition::Created(TimeRange {
                    from_ms,
                    to_ms: from_ms + span / 100,
                })]),
                Check::Any,
            )
        }),
    );
    add(
        "custom key (lr, host: all; note: 1 %)",
        Box::new(move |rng| {
            let key = ["lr", "host", "note"][rng.usize(..3)];
            (
                query(vec![Condition::CustomKey(key.to_string())]),
                at_least(n / 100),
            )
        }),
    );
    add(
        "custom key=value (host=node-X, 0.1 %)",
        Box::new(move |rng| {
            (
                query(vec![Condition::Custom(
                    "host".to_string(),
                    format!("node-{}", rng.u64(..HOSTS)),
                )]),
                Check::NonEmpty,
            )
        }),
    );
    add(
        "no condition, newest first",
        Box::new(move |_| {
            let mut query = query(Vec::new());
            query.order = Order::NewestFirst;
            (query, at_least(n))
        }),
    );
    add(
        "3 conditions AND (user, kind:ckpt, onnx)",
        Box::new(move |rng| {
            (
                query(vec![
                    tag(format!("user:{}", rng.u64(..USERS))),
                    tag("kind:ckpt".to_string()),
                    Condition::ContentType(CONTENT_TYPES[3].to_string()),
                ]),
                Check::NonEmpty,
            )
        }),
    );
    kinds
}

/// Fails loudly if `ids` does not satisfy `check`.
fn check_page(kind: &str, query: &Query, ids: &[ArtifactId], check: &Check) {
    let ok = match check {
        Check::Contains(id) => ids.contains(id),
        Check::Exactly(expected) => {
            ids.len() == expected.len() && ids.iter().all(|id| expected.contains(id))
        }
        Check::AtLeast(count) => ids.len() >= *count,
        Check::NonEmpty => !ids.is_empty(),
        Check::Any => true,
    };
    assert!(ok, "{kind}: {query:?} returned {} ids: {ids:?}", ids.len());
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let at = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1e6
}

fn measure_queries(store: &Store, plan: Plan, queries: usize) {
    let started = Instant::now();
    let ids: Vec<ArtifactId> = store.ids().collect();
    assert_eq!(ids.len() as u64, plan.artifacts);
    let created = (
        store.metadata(&ids[0]).unwrap().created_ms,
        store.metadata(ids.last().unwrap()).unwrap().created_ms,
    );
    // Commit order interleaves the generator threads: find each plan
    // index's id from its filename (unique per artifact).
    let mut by_index = vec![None; ids.len()];
    for id in &ids {
        let filename = store.metadata(id).unwrap().filename.expect("a filename");
        let i = plan.index_of_filename(&filename);
        assert!(
            by_index[i as usize].replace(*id).is_none(),
            "{filename} twice"
        );
    }
    let ids: Vec<ArtifactId> = by_index.into_iter().map(Option::unwrap).collect();
    println!(
        "listed {} ids and read their metadata in {:.2} s; created span {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64(),
        (created.1 - created.0) as f64 / 1e3
    );
    let mut rng = fastrand::Rng::with_seed(10);
    let ids = std::sync::Arc::new(ids);
    println!();
    println!(
        "{:<42} {:>7} {:>10} {:>10} {:>10}  target p99 <= {QUERY_P99_TARGET_US:.0} us",
        "first page (limit 100)", "ids", "p50 us", "p99 us", "max us"
    );
    for kind in kinds(plan, ids.clone(), created) {
        let made: Vec<(Query, Check)> = (0..queries).map(|_| (kind.make)(&mut rng)).collect();
        let mut times = Vec::with_capacity(queries);
        let mut returned = 0usize;
        for (query, check) in &made {
            let started = Instant::now();
            let page = store.query(query).expect("query");
            times.push(started.elapsed());
            check_page(kind.name, query, &page.ids, check);
            returned += page.ids.len();
        }
        times.sort();
        let p99 = percentile(&times, 0.99);
        println!(
            "{:<42} {:>7.1} {:>10.1} {:>10.1} {:>10.1}  {}",
            kind.name,
            returned as f64 / queries as f64,
            percentile(&times, 0.5),
            p99,
            times.last().unwrap().as_secs_f64() * 1e6,
            if p99 <= QUERY_P99_TARGET_US {
                "ok"
            } else {
                "MISSED"
            }
        );
    }

    // Every page of one medium query: creator user-7 (1 % of the store).
    let expected = (0..plan.artifacts).filter(|&i| plan.user(i) == 7).count();
    let mut walk = query(vec![Condition::Creator("user-7".to_string())]);
    let mut seen = HashSet::new();
    let mut pages = 0;
    let started = Instant::now();
    loop {
        let page = store.query(&walk).expect("query page");
        pages += 1;
        for id in &page.ids {
            assert!(seen.insert(*id), "page walk repeated {id}");
        }
        match page.next {
            Some(next) => walk.after = Some(next),
            None => break,
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(seen.len(), expected, "page walk of creator user-7");
    println!(
        "\nfull page walk, creator user-7: {} ids in {pages} pages, {:.1} ms ({:.1} us a page)",
        seen.len(),
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / f64::from(pages)
    );
}

// ---------------------------------------------------------------------------

fn run(options: &Options) {
    let root = options.dir.join(format!("a{}", options.artifacts));
    println!(
        "metadata_scale: {} artifacts, {} queries per kind, stores under {}",
        options.artifacts,
        options.queries,
        root.display()
    );
    let full_plan = Plan::new(options.artifacts, CHUNKS_PER_ARTIFACT);
    let full_path = root.join("full");
    ensure_store(&full_path, &full_plan, options.threads, options.regenerate);
    let split_plan = Plan::new(options.artifacts, 1);
    let split_path = root.join("one-chunk");
    if options.split {
        ensure_store(
            &split_path,
            &split_plan,
            options.threads,
            options.regenerate,
        );
    }
    let empty_path = root.join("empty");
    if empty_path.exists() {
        std::fs::remove_dir_all(&empty_path).expect("removing the empty store");
    }

    println!();
    let mut totals = Vec::new();
    for (name, path, active) in [
        ("full", &full_path, true),
        ("one-chunk", &split_path, options.split),
    ] {
        if !active {
            continue;
        }
        let (log, segments, hints, catalog, other) = footprint(path);
        let total = log + segments + hints + catalog + other;
        totals.push(total);
        println!(
            "disk, {name}: {:.0} MiB (meta.log {:.0}, segments {:.0}, hints {:.0}, catalog.redb {:.0}, other {:.1})",
            mib(total),
            mib(log),
            mib(segments),
            mib(hints),
            mib(catalog),
            mib(other)
        );
    }
    if let [full, split] = totals[..] {
        // Chunks of 40 bytes on average: the difference is about what a
        // chunk costs beyond its bytes.
        let chunks = options.artifacts * u64::from(CHUNKS_PER_ARTIFACT - 1);
        let per_chunk = (full as f64 - split as f64) / chunks as f64;
        let per_artifact =
            (split as f64 - per_chunk * options.artifacts as f64) / options.artifacts as f64;
        println!(
            "  disk per chunk {per_chunk:.0} bytes (its bytes, record header, index and manifest entries, hint); per artifact {per_artifact:.0} bytes (metadata and the catalog's tables)"
        );
    }

    let (empty, _) = probe_median(&empty_path);
    let (full, full_times) = probe_median(&full_path);
    println!(
        "\nopen, full store ({} artifacts, {} chunks): median {:.0} ms of {:?} ms  (target <= {OPEN_TARGET_MS:.0} ms: {})",
        full.artifacts,
        full.chunks,
        full.open_ms,
        full_times.iter().map(|t| t.round()).collect::<Vec<_>>(),
        if full.open_ms <= OPEN_TARGET_MS { "ok" } else { "MISSED" }
    );
    println!("open_stats: {}", full.open_stats);
    println!(
        "RSS after open: empty store {:.0} MiB; full store {:.0} MiB (VmHWM {:.0} MiB)",
        empty.rss_kib as f64 / 1024.0,
        full.rss_kib as f64 / 1024.0,
        full.hwm_kib as f64 / 1024.0
    );
    // The command-line tool's reading commands, with no writer running.
    let mut readers: Vec<Probe> = (0..OPENS)
        .map(|_| probe_as(&full_path, "--probe-open-in-place"))
        .collect();
    readers.sort_by(|a, b| a.open_ms.total_cmp(&b.open_ms));
    let reader = &readers[OPENS / 2];
    assert_eq!(reader.artifacts, full.artifacts);
    println!(
        "reader in place (writer lock held, catalog file read from its checkpoint): median {:.0} ms of {:?} ms; RSS {:.0} MiB (VmHWM {:.0} MiB); open_stats {}",
        reader.open_ms,
        readers.iter().map(|p| p.open_ms.round()).collect::<Vec<_>>(),
        reader.rss_kib as f64 / 1024.0,
        reader.hwm_kib as f64 / 1024.0,
        reader.open_stats
    );
    let full_bytes = (full.rss_kib.saturating_sub(empty.rss_kib) * 1024) as f64;
    println!(
        "  full - empty: {:.0} bytes per artifact, all chunk costs included",
        full_bytes / full.artifacts as f64
    );
    if options.split {
        let (split, split_times) = probe_median(&split_path);
        println!(
            "open, one-chunk store ({} artifacts, {} chunks): median {:.0} ms of {:?} ms; RSS {:.0} MiB (VmHWM {:.0} MiB)",
            split.artifacts,
            split.chunks,
            split.open_ms,
            split_times.iter().map(|t| t.round()).collect::<Vec<_>>(),
            split.rss_kib as f64 / 1024.0,
            split.hwm_kib as f64 / 1024.0
        );
        let split_bytes = (split.rss_kib.saturating_sub(empty.rss_kib) * 1024) as f64;
        let per_chunk = (full_bytes - split_bytes) / (full.chunks - split.chunks) as f64;
        let per_artifact = (split_bytes - per_chunk * split.chunks as f64) / split.artifacts as f64;
        println!(
            "  memory per chunk {per_chunk:.0} bytes, per artifact {per_artifact:.0} bytes after open (the chunk index and catalog are tables on file, read through a cache of at most 256 MiB: RSS after open does not grow with either)"
        );
    }

    println!();
    let started = Instant::now();
    let store = Store::open(open_dir(&full_path), StoreOptions::default()).expect("open");
    println!(
        "opened the full store for queries in {:.0} ms; RSS {:.0} MiB",
        started.elapsed().as_secs_f64() * 1e3,
        rss_kib().0 as f64 / 1024.0
    );
    measure_queries(&store, full_plan, options.queries);
    let (rss, hwm) = rss_kib();
    println!(
        "RSS after the queries {:.0} MiB (VmHWM {:.0} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}
