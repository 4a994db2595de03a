//! Shared helpers: one engine and one compiled chunker per test process,
//! a fresh temporary store root per test, deterministic test data.

use std::io::Read;
use std::sync::OnceLock;

use tensor_blob_host::runtime::{self, ChunkerComponent, PutOptions, Runtime, RuntimeOptions};
use tensor_blob_host::store::backend::object::{LeaseOptions, ObjectBackend, ObjectConfig};
use tensor_blob_host::store::{Durability, StoreOptions};
use tensor_blob_host::tenant::Access;

pub fn engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        runtime::new_engine(&runtime::EngineOptions::default())
            .expect("engine")
            .engine
    })
}

pub fn chunker_component() -> &'static ChunkerComponent {
    static COMPONENT: OnceLock<ChunkerComponent> = OnceLock::new();
    COMPONENT.get_or_init(|| {
        ChunkerComponent::new(engine(), tensor_blob_artifacts::CHUNKER_WASM)
            .expect("chunker compiles")
    })
}

pub fn rogue_component() -> &'static ChunkerComponent {
    static COMPONENT: OnceLock<ChunkerComponent> = OnceLock::new();
    COMPONENT.get_or_init(|| {
        ChunkerComponent::new(engine(), tensor_blob_artifacts::ROGUE_CHUNKER_WASM)
            .expect("rogue chunker compiles")
    })
}

/// Where a test's store keeps its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A temporary directory on the local disk.
    Disk,
    /// A prefix of the bucket of a real s3s-fs on 127.0.0.1, started for
    /// the test.
    Bucket,
}

/// Defines a test run once on each [`Backing`]: a module `$name` with
/// tests `disk` and `bucket`, each calling the body with its backing.
macro_rules! on_each_backing {
    ($(#[doc = $doc:literal])* fn $name:ident($backing:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($backing: $crate::common::Backing) $body

            #[test]
            fn disk() {
                run($crate::common::Backing::Disk)
            }

            #[test]
            fn bucket() {
                run($crate::common::Backing::Bucket)
            }
        }
    };
}
pub(crate) use on_each_backing;

/// A temporary store root (a directory, or a bucket's prefix) and a
/// runtime over it.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    // Dropped before the server: closing the store writes to it.
    pub runtime: Runtime,
    options: StoreOptions,
    server: Option<tensor_blob_host::testing::S3Server>,
}

impl TestStore {
    /// Sync durability: tests exercise the real fsync path.
    pub fn new() -> Self {
        Self::with_options(StoreOptions::default())
    }

    pub fn with_options(options: StoreOptions) -> Self {
        Self::on(Backing::Disk, options)
    }

    /// Fast store for bulk tests where durability is not the point.
    pub fn unsynced() -> Self {
        Self::on(Backing::Disk, unsynced_options())
    }

    /// A store on `backing` with `options`.
    pub fn on(backing: Backing, options: StoreOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = (backing == Backing::Bucket).then(|| {
            tensor_blob_host::testing::S3Server::start()
                .expect("s3s-fs starts (installed by .ci/run)")
        });
        let runtime = Self::open(dir.path(), server.as_ref(), options.clone());
        TestStore {
            dir,
            runtime,
            options,
            server,
        }
    }

    fn open(
        dir: &std::path::Path,
        server: Option<&tensor_blob_host::testing::S3Server>,
        options: StoreOptions,
    ) -> Runtime {
        match server {
            None => open_runtime(dir, options),
            Some(server) => {
                bucket_runtime(&server.config("store"), LeaseOptions::default(), options)
            }
        }
    }

    /// Closes the runtime and opens the same store again, as a new
    /// process (or, on a bucket, a fresh host) would.
    pub fn reopen(&mut self) {
        // Opening is lazy: the old runtime (which holds the tenant lock)
        // is dropped by the assignment before the tenant is opened again.
        self.runtime = Self::open(self.dir.path(), self.server.as_ref(), self.options.clone());
    }
}

/// Durability `None`: for bulk tests where durability is not the point.
pub fn unsynced_options() -> StoreOptions {
    StoreOptions {
        durability: Durability::None,
        ..StoreOptions::default()
    }
}

pub fn open_runtime(path: &std::path::Path, options: StoreOptions) -> Runtime {
    let root =
        cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority()).expect("root");
    Runtime::with_chunker(chunker_component().clone(), root, options)
}

/// A runtime on a store in a bucket: no background GC, and a lock wait
/// that outlasts a crashed holder's lease.
pub fn bucket_runtime(config: &ObjectConfig, lease: LeaseOptions, store: StoreOptions) -> Runtime {
    let backend = ObjectBackend::open(config, lease).expect("the bucket opens");
    bucket_runtime_on(std::sync::Arc::new(backend), store)
}

/// As [`bucket_runtime`], on a backend the caller keeps (to count its
/// requests).
pub fn bucket_runtime_on(backend: std::sync::Arc<ObjectBackend>, store: StoreOptions) -> Runtime {
    let access = Access {
        lock_wait: backend.lease_options().takeover_wait() + std::time::Duration::from_secs(2),
        ..Access::default()
    };
    bucket_runtime_with(backend, store, access)
}

fn bucket_runtime_with(
    backend: std::sync::Arc<ObjectBackend>,
    store: StoreOptions,
    access: Access,
) -> Runtime {
    Runtime::with_chunker_on(
        chunker_component().clone(),
        backend,
        RuntimeOptions {
            store,
            gc: None,
            access,
            ..RuntimeOptions::default()
        },
    )
}

/// A runtime that opens the tenants of a bucket read-only (a reader host
/// beside a writer).
pub fn bucket_reader_runtime(config: &ObjectConfig, store: StoreOptions) -> Runtime {
    let backend = ObjectBackend::open(config, LeaseOptions::default()).expect("the bucket opens");
    let access = Access {
        read_only: true,
        ..Access::default()
    };
    bucket_runtime_with(std::sync::Arc::new(backend), store, access)
}

pub fn options() -> PutOptions {
    PutOptions::default()
}

pub fn fixed(size: u32) -> PutOptions {
    PutOptions {
        chunking: Some(runtime::Chunking::Fixed(size)),
        ..options()
    }
}

/// Deterministic pseudo-random bytes, different per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    PseudoRandom::new(seed, len as u64)
        .read_exact(&mut out)
        .unwrap();
    out
}

/// A `Read` of `len` deterministic pseudo-random bytes, never held in memory.
pub struct PseudoRandom {
    rng: fastrand::Rng,
    remaining: u64,
}

impl PseudoRandom {
    pub fn new(seed: u64, len: u64) -> Self {
        PseudoRandom {
            rng: fastrand::Rng::with_seed(seed),
            remaining: len,
        }
    }
}

impl Read for PseudoRandom {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        self.rng.fill(&mut buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A `Write` that only hashes and counts.
#[derive(Default)]
pub struct HashSink {
    pub hasher: blake3::Hasher,
    pub len: u64,
}

impl std::io::Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies the directory tree `from` to `to` (created), files and directories only.
pub fn copy_dir_all(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create copy directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir_all(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Spawning a child copies every open descriptor of this process into it
/// until it execs, among them the `flock` of any store open in another
/// test thread; a test that drops a store and reopens it in that window
/// finds its tenant "in use by another process". Hold [`spawning`] around
/// `Command::spawn` (which returns once the child has exec'd) and
/// [`reopening`] from a store's first open to its reopen.
static SPAWN_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn spawning() -> std::sync::RwLockWriteGuard<'static, ()> {
    SPAWN_LOCK.write().unwrap_or_else(|p| p.into_inner())
}

pub fn reopening() -> std::sync::RwLockReadGuard<'static, ()> {
    SPAWN_LOCK.read().unwrap_or_else(|p| p.into_inner())
}

/// What one in-process plugin run printed, and how it ended.
pub struct PluginRun {
    pub stdout: String,
    /// The exit code, or the error of a run that failed.
    pub outcome: Result<i32, String>,
}

/// Runs the plugin component `wasm` with `args` (after its program name)
/// as `tenant`, in this process, its stdout captured. `Plugin::run`
/// returns only after the run's store is dropped and every stream worker
/// it started has ended.
pub fn run_plugin(runtime: &Runtime, wasm: &[u8], tenant: &str, args: &[&str]) -> PluginRun {
    use tensor_blob_host::runtime::plugin::{Plugin, PluginOptions};
    let plugin = Plugin::new(runtime, wasm).unwrap();
    let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20);
    let mut argv = vec!["plugin".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let options = PluginOptions {
        args: argv,
        ..PluginOptions::default()
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = tokio
        .block_on(plugin.run_with_stdout(tenant, &options, stdout.clone()))
        .map_err(|error| format!("{error:?}"));
    PluginRun {
        stdout: String::from_utf8(stdout.contents().to_vec()).unwrap(),
        outcome,
    }
}
