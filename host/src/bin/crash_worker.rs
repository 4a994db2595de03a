//! `tblob-crash-worker`: the child process of the crash harness
//! (`tests/all/crash.rs`). Not a user tool.
//!
//! It opens the runtime on a store root as `tblob` does (sync durability,
//! or group commit with `--durability batch`), then runs a seeded random mix of puts (0 B to 2 MiB, drawn
//! from a few base contents with random mutations so chunks dedup), deletes
//! of artifacts it knows to exist, streaming puts and the odd GC on several
//! threads, each with its own chunker instance, until it is killed or has
//! done `--ops` operations.
//!
//! The ack log is the contract with the parent. A line is appended, and the
//! log fsynced, only after the store acknowledged the operation and before
//! the thread starts its next one:
//!
//! ```text
//! put <id> <len> <blake3 hex>    the put returned <id>
//! begin-delete <id>              a delete of <id> is about to be issued
//! delete <id>                    that delete returned Ok
//! gc <segments removed>          a GC pass returned Ok (full or budgeted, alternately)
//! tag <id> <tag>                 an update adding <tag> to <id> returned Ok
//! link <id> <target>             an update adding a link from <id> to <target> returned Ok
//! ```
//!
//! Tags come from [`TAGS`], which collide the way a string-glued index key
//! would (':' '/' and prefixes). A tag or link update that finds its
//! artifact (or link target) deleted meanwhile by another thread logs
//! nothing.
//!
//! Each line is also printed to stdout after the fsync, so the parent can
//! block on the pipe to pick its kill moment instead of polling the file.
//! Artifacts already in the store at start are delete candidates too (the
//! parent knows them from earlier iterations).
//!
//! It must never log an operation before the store acknowledged it: the
//! parent treats every logged `put` as a promise the store has to keep.

use std::fs::{File, OpenOptions};
use std::io::{Cursor, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tensor_blob_host::runtime::metadata;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use fastrand::Rng;
use tensor_blob_host::runtime::{self, Chunking, PutOptions, Runtime, RuntimeOptions};
use tensor_blob_host::store::{
    ArtifactId, Durability, GcPolicy, MetadataUpdate, StoreError, StoreOptions,
};

/// The tenant every operation acts on.
const TENANT: &str = "default";
/// Largest artifact a put writes.
const ARTIFACT_BYTES_MAX: usize = 2 << 20;
/// Distinct base contents; every put is a prefix of one, perhaps mutated,
/// so most puts share chunks with earlier ones.
const BASE_CONTENT_COUNT: u64 = 6;
/// Small segments, so deletes leave sealed segments worth compacting and
/// kills land in the middle of compactions.
const SEGMENT_BYTES_MAX: u64 = 4 << 20;
/// Background GC runs this often, besides the logged passes: kills land in
/// its passes too.
const BACKGROUND_GC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);
/// A budgeted pass copies about this much, so one pass leaves work for
/// the next.
const GC_PASS_COPY_BYTES_MAX: u64 = 1 << 20;

/// Tags the `tag` operation adds (`tests/all/crash.rs` queries each of
/// them after a kill).
const TAGS: &[&str] = &["run:1", "run:12", "run", "run/1", "ü"];

/// Above this many live artifacts deletes become likelier than puts, which
/// keeps the store (and the parent's check of it) bounded across iterations.
const LIVE_ARTIFACTS_TARGET: usize = 24;

#[derive(Parser)]
#[command(
    name = "tblob-crash-worker",
    about = "Crash-harness child: random store operations with an ack log"
)]
struct Args {
    /// Store root (as `tblob --store`: a directory or `s3://BUCKET/PREFIX`).
    #[arg(long)]
    store: PathBuf,
    /// With an `s3://` store: the S3-compatible server's URL.
    #[arg(long)]
    endpoint: Option<String>,
    /// With an `s3://` store: the tenant lease's term in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    lease_ms: u64,
    /// Seed of every random choice (the timing between threads is not seeded).
    #[arg(long)]
    seed: u64,
    /// File to append acknowledged operations to (fsynced per line).
    #[arg(long)]
    ack_log: PathBuf,
    /// Stop after this many operations in total (default: run until killed).
    #[arg(long)]
    ops: Option<u64>,
    /// Worker threads, each with its own chunker.
    #[arg(long, default_value_t = 3)]
    threads: u64,
    /// How commits reach the disk: `sync` (as `tblob`) or `batch` (group
    /// commit, where concurrent puts share fsyncs).
    #[arg(long, value_enum, default_value = "sync")]
    durability: DurabilityArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Sync,
    Batch,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tblob-crash-worker (seed {}): {error:#}", args.seed);
            ExitCode::from(2)
        }
    }
}

/// What the threads share.
struct Shared {
    runtime: Runtime,
    ack_log: Mutex<File>,
    /// Artifacts known to exist and not being deleted by any thread.
    live: Mutex<Vec<String>>,
    ops_started: AtomicU64,
    ops_max: u64,
}

impl Shared {
    /// Appends `line` to the ack log and makes it durable before returning.
    /// The lock spans the fsync so lines are never interleaved.
    fn ack(&self, line: &str) -> Result<()> {
        let mut log = self.ack_log.lock().unwrap_or_else(|p| p.into_inner());
        log.write_all(format!("{line}\n").as_bytes())
            .context("appending to the ack log")?;
        log.sync_data().context("syncing the ack log")?;
        let mut stdout = std::io::stdout().lock();
        // The parent may stop reading (it is about to kill us): ignore errors.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        Ok(())
    }
}

fn run(args: &Args) -> Result<()> {
    let durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Batch => Durability::Batch,
    };
    let runtime = open_runtime(args, durability)?;
    let store = runtime.tenant_store(TENANT)?;
    let live: Vec<String> = store.ids().map(|id| id.to_string()).collect();
    drop(store);
    let ack_log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.ack_log)
        .with_context(|| format!("opening {}", args.ack_log.display()))?;
    let shared = Shared {
        runtime,
        ack_log: Mutex::new(ack_log),
        live: Mutex::new(live),
        ops_started: AtomicU64::new(0),
        ops_max: args.ops.unwrap_or(u64::MAX),
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.threads.max(1))
            .map(|thread| {
                let shared = &shared;
                let seed = args.seed ^ thread.wrapping_mul(0xA076_1D64_78BD_642F);
                scope.spawn(move || worker(shared, seed))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

/// Like `tblob`'s `open_runtime`: default store options but `durability`,
/// and the compiled chunker in the per-user compile cache, so each new
/// worker process does not compile it again.
fn open_runtime(args: &Args, durability: Durability) -> Result<Runtime> {
    use tensor_blob_host::store::backend::object::{LeaseOptions, ObjectBackend, ObjectConfig};
    let store = &args.store;
    let root: std::sync::Arc<dyn tensor_blob_host::store::backend::Backend> =
        match store.to_str().and_then(ObjectConfig::from_url) {
            Some(mut config) => {
                config.endpoint = args.endpoint.clone();
                let lease = LeaseOptions {
                    term: std::time::Duration::from_millis(args.lease_ms),
                    skew: std::time::Duration::from_millis(200),
                };
                std::sync::Arc::new(ObjectBackend::open(&config, lease)?)
            }
            None => std::sync::Arc::new(tensor_blob_host::store::backend::cap::CapDir::new(
                tensor_blob_host::store::backend::cap::create_ambient_dir(
                    store,
                    cap_std::ambient_authority(),
                )
                .with_context(|| format!("opening store directory {}", store.display()))?,
            )),
        };
    let engine = runtime::new_engine(&runtime::EngineOptions::default())?;
    for warning in &engine.warnings {
        eprintln!("tblob-crash-worker: warning: {warning}");
    }
    let engine = engine.engine;
    let options = RuntimeOptions {
        store: StoreOptions {
            durability,
            segment_bytes_max: SEGMENT_BYTES_MAX,
            ..StoreOptions::default()
        },
        chunker_wasm: None,
        gc: Some(budgeted_gc()),
        access: tensor_blob_host::tenant::Access {
            // A killed worker's lease lasts out its term.
            lock_wait: std::time::Duration::from_millis(args.lease_ms + 2_000),
            ..Default::default()
        },
    };
    Ok(Runtime::new_on(&engine, root, options)?)
}

/// The policy of the background task and of the budgeted logged passes.
fn budgeted_gc() -> GcPolicy {
    GcPolicy {
        interval: BACKGROUND_GC_INTERVAL,
        pass_copy_bytes_max: GC_PASS_COPY_BYTES_MAX,
        meta_log_bytes_min: 64 << 10,
        ..GcPolicy::default()
    }
}

fn worker(shared: &Shared, seed: u64) -> Result<()> {
    let mut rng = Rng::with_seed(seed);
    let mut chunker = shared.runtime.chunker(TENANT)?;
    while shared.ops_started.fetch_add(1, Ordering::Relaxed) < shared.ops_max {
        let live_count = shared.live.lock().unwrap_or_else(|p| p.into_inner()).len();
        let delete_percent = match live_count {
            0 => 0,
            n if n > LIVE_ARTIFACTS_TARGET => 60,
            _ => 20,
        };
        let roll = rng.u64(..100);
        if (90..100).contains(&roll) && live_count > 0 {
            let (id, target) = {
                let live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
                if live.is_empty() {
                    continue;
                }
                let id = live[rng.usize(..live.len())].clone();
                (id, live[rng.usize(..live.len())].clone())
            };
            let store = shared.runtime.tenant_store(TENANT)?;
            let parsed: ArtifactId = id.parse()?;
            let linking = roll >= 95;
            let (change, line) = if !linking {
                let tag = TAGS[rng.usize(..TAGS.len())];
                let change = MetadataUpdate {
                    add_tags: vec![tag.to_string()],
                    ..MetadataUpdate::default()
                };
                (change, format!("tag {id} {tag}"))
            } else {
                let change = MetadataUpdate {
                    add_links: vec![target.parse()?],
                    ..MetadataUpdate::default()
                };
                (change, format!("link {id} {target}"))
            };
            match store.update(&parsed, change) {
                Ok(_) => shared.ack(&line)?,
                // Deleted meanwhile by another thread: the artifact, or the
                // link target (then the link is refused as invalid).
                Err(StoreError::NotFound(_)) => {}
                Err(StoreError::InvalidArgument(_)) if linking => {}
                Err(e) => return Err(anyhow::anyhow!("{line}: {e}")),
            }
        } else if roll < 4 {
            let store = shared.runtime.tenant_store(TENANT)?;
            let report = if roll < 2 {
                store.gc()?
            } else {
                store.gc_pass(&budgeted_gc())?
            };
            shared.ack(&format!("gc {}", report.segments_removed))?;
        } else if roll < 2 + delete_percent {
            let victim = {
                let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
                if live.is_empty() {
                    continue;
                }
                let index = rng.u64(..live.len() as u64) as usize;
                live.swap_remove(index)
            };
            shared.ack(&format!("begin-delete {victim}"))?;
            metadata::delete(chunker.store(), &victim)
                .map_err(|e| anyhow::anyhow!("delete {victim}: {e}"))?;
            shared.ack(&format!("delete {victim}"))?;
        } else {
            let content = random_content(&mut rng);
            let options = PutOptions {
                creator: Some("tblob-crash-worker".into()),
                chunking: (rng.u64(..5) == 0).then_some(Chunking::Fixed(16 << 10)),
                ..PutOptions::default()
            };
            let streaming = rng.u64(..4) == 0;
            let id = if streaming {
                chunker.put_from(&mut Cursor::new(&content), &options, &mut |_| {})
            } else {
                chunker.put(&content, &options)
            }
            .map_err(|e| anyhow::anyhow!("put of {} bytes: {e}", content.len()))?;
            let digest = blake3::hash(&content);
            shared.ack(&format!("put {id} {} {}", content.len(), digest.to_hex()))?;
            shared
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id);
        }
    }
    Ok(())
}

/// A prefix of one of the base contents (half of them compressible), of a
/// random size (skewed small so an iteration does many operations), with up
/// to three bytes changed.
fn random_content(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.u64(..10) {
        0..=2 => rng.u64(..4 << 10),
        3..=6 => (4 << 10) + rng.u64(..252 << 10),
        _ => (256 << 10) + rng.u64(..(ARTIFACT_BYTES_MAX as u64) - (256 << 10) + 1),
    } as usize;
    let mut content = vec![0u8; len];
    let base = rng.u64(..BASE_CONTENT_COUNT) + 1;
    let mut base_rng = Rng::with_seed(base);
    base_rng.fill(&mut content);
    if base.is_multiple_of(2) {
        // Half the base contents compress (a 4-letter alphabet), so crashes
        // also cut compressed records.
        for byte in &mut content {
            *byte = b'a' + (*byte & 3);
        }
    }
    if len > 0 {
        for _ in 0..rng.u64(..4) {
            let at = rng.u64(..len as u64) as usize;
            content[at] = content[at].wrapping_add(1 + rng.u64(..255) as u8);
        }
    }
    content
}
