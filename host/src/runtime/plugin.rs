//! Running a plugin: a WASI command component (`wasi:cli/run`) that
//! imports `tensor:blob/blobs`, `wasi:blobstore@0.2.0-draft`, or both; or
//! (world `stream-plugin-command`) one that also imports
//! `tensor:blob/stream-blobs` and exports the async entry point
//! `tensor:blob/stream-run`, which is then called instead, inside
//! `run_concurrent`. Every plugin gets all three interfaces linked.
//!
//! A plugin gets the blob store of its tenant and, from WASI, only what
//! [`PluginOptions`] grants: its arguments, stdout/stderr, and read-only
//! preopened directories. No environment, no network, no other files.
//! With [`PluginOptions::time_limit`] (on an engine with epoch
//! interruption) a run that takes longer is stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, UpdateDeadline};
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::host::blobstore::{BlobstoreCtx, BlobstoreView, BlobstoreViewSource};
use super::limits::{GuestLimit, GuestLimiter, FAR_EPOCH_DEADLINE};
use super::{BlobCtx, BlobView, Runtime, StreamCtx, StreamView};

/// What a plugin run is granted.
#[derive(Clone, Debug, Default)]
pub struct PluginOptions {
    /// `argv`, the program name first.
    pub args: Vec<String>,
    /// Host directories mapped read-only into the plugin: (host path, guest path).
    pub read_dirs: Vec<(std::path::PathBuf, String)>,
    /// Linear memory limit; `None` is [`PLUGIN_MEMORY_BYTES_MAX`](super::limits::PLUGIN_MEMORY_BYTES_MAX).
    /// A run that fails after being refused memory fails with
    /// [`LimitExceeded`] as its error's context.
    pub memory_bytes_max: Option<usize>,
    /// Wall-clock time the run may take; past it the plugin is stopped at
    /// its next loop or call and the run fails with [`TimeLimitExceeded`].
    /// Needs an engine with `Config::epoch_interruption(true)`; `None`
    /// runs without a limit.
    pub time_limit: Option<Duration>,
}

/// The error of a run stopped by [`PluginOptions::time_limit`].
#[derive(Debug)]
pub struct TimeLimitExceeded(pub Duration);

impl std::fmt::Display for TimeLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the plugin ran out of time (limit {:.3} s)",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for TimeLimitExceeded {}

/// The context of a run's error when the plugin had been refused growth by
/// one of its limits before it failed: a refused `memory.grow` returns -1
/// to the guest, which then typically traps on its own (Rust aborts), so
/// the trap itself (the error's source) does not say why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded(pub GuestLimit);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the plugin exceeded {}", self.0)
    }
}

/// How often a running plugin checks its time limit.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Advances the engine's epoch every [`EPOCH_TICK`] while alive, so running
/// plugins reach their deadline checks. Several at once (concurrent runs)
/// only make the checks more frequent: the limit is wall-clock time.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let engine = engine.clone();
        let thread = std::thread::Builder::new()
            .name("tblob-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    std::thread::park_timeout(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    blobs: BlobCtx,
    blobstore: BlobstoreCtx,
    streams: StreamCtx,
    limits: GuestLimiter,
}

impl BlobstoreViewSource for PluginState {
    fn blobstore(&mut self) -> BlobstoreView<'_> {
        BlobstoreView {
            ctx: &mut self.blobstore,
            table: &mut self.table,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl BlobView for PluginState {
    fn blobs(&mut self) -> &mut BlobCtx {
        &mut self.blobs
    }
}

impl StreamView for PluginState {
    fn streams(&mut self) -> &mut StreamCtx {
        &mut self.streams
    }
}

/// A plugin compiled and linked once, ready to run many times.
pub struct Plugin {
    runtime: Runtime,
    entry: Entry,
}

/// Which export a run calls.
enum Entry {
    /// `wasi:cli/run` (a `plugin-command` component).
    Command(CommandPre<PluginState>),
    /// `tensor:blob/stream-run` (a `stream-plugin-command` component).
    StreamRun(super::bindings::streams::StreamPluginPre<PluginState>),
}

impl Plugin {
    /// Compiles a plugin component.
    pub fn new(runtime: &Runtime, wasm: &[u8]) -> wasmtime::Result<Self> {
        let engine = runtime.engine();
        let component = Component::new(engine, wasm)?;
        let mut linker: Linker<PluginState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        super::add_to_linker(&mut linker)?;
        super::host::blobstore::add_to_linker(&mut linker)?;
        super::add_streams_to_linker(&mut linker)?;
        let pre = linker.instantiate_pre(&component)?;
        let entry = match super::bindings::streams::StreamPluginPre::new(pre.clone()) {
            Ok(stream_run) => Entry::StreamRun(stream_run),
            Err(_) => Entry::Command(CommandPre::new(pre)?),
        };
        Ok(Plugin {
            runtime: runtime.clone(),
            entry,
        })
    }

    /// Runs the plugin's `main` (or `stream-run`) as `tenant`; returns its
    /// exit code. Returns once every stream worker the run started has
    /// ended (its chunkers released, unfinished puts aborted).
    pub async fn run(&self, tenant: &str, options: &PluginOptions) -> wasmtime::Result<i32> {
        self.run_inner(tenant, options, None).await
    }

    /// As [`Plugin::run`], with the plugin's stdout going to `stdout`
    /// instead of the caller's (tests read it).
    pub async fn run_with_stdout(
        &self,
        tenant: &str,
        options: &PluginOptions,
        stdout: impl StdoutStream + Sync + 'static,
    ) -> wasmtime::Result<i32> {
        self.run_inner(tenant, options, Some(Box::new(stdout)))
            .await
    }

    async fn run_inner(
        &self,
        tenant: &str,
        options: &PluginOptions,
        stdout: Option<Box<dyn StdoutStream + Sync>>,
    ) -> wasmtime::Result<i32> {
        let mut wasi = WasiCtxBuilder::new();
        match stdout {
            Some(stdout) => wasi.stdout(stdout),
            None => wasi.inherit_stdout(),
        };
        // Explicitly no network (the defaults already refuse every address).
        wasi.args(&options.args)
            .inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (host, guest) in &options.read_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)?;
        }
        // The tighter of the run's options and the tenant's policy.
        let policy = self.runtime.tenant_policy(tenant)?;
        let memory_bytes_max = options
            .memory_bytes_max
            .unwrap_or(super::limits::PLUGIN_MEMORY_BYTES_MAX)
            .min(
                policy
                    .plugin_memory_bytes_max
                    .map_or(usize::MAX, |max| usize::try_from(max).unwrap_or(usize::MAX)),
            );
        let time_limit = match (options.time_limit, policy.plugin_time_limit) {
            (Some(run), Some(tenant)) => Some(run.min(tenant)),
            (run, tenant) => run.or(tenant),
        };
        let limits = GuestLimiter::new(memory_bytes_max);
        let state = PluginState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            blobs: self.runtime.context(tenant)?,
            blobstore: BlobstoreCtx::new(&self.runtime, tenant)?,
            streams: self.runtime.stream_context(tenant)?,
            limits,
        };
        let engine = self.runtime.engine();
        let mut store = wasmtime::Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_hostcall_fuel(super::limits::PLUGIN_CALL_BYTES_MAX);
        let _ticker = match time_limit {
            Some(limit) => {
                if !engine.get_epoch_interruption() {
                    return Err(wasmtime::Error::msg(
                        "a plugin time limit needs an engine with epoch interruption",
                    ));
                }
                let deadline = Instant::now() + limit;
                store.epoch_deadline_callback(move |_| {
                    if Instant::now() >= deadline {
                        Err(wasmtime::Error::new(TimeLimitExceeded(limit)))
                    } else {
                        // Let other tasks of the executor run meanwhile.
                        Ok(UpdateDeadline::Yield(1))
                    }
                });
                store.set_epoch_deadline(1);
                Some(EpochTicker::start(engine)?)
            }
            None => {
                // Only matters on an engine with epoch interruption.
                store.set_epoch_deadline(FAR_EPOCH_DEADLINE);
                None
            }
        };
        let workers = store.data().streams.workers();
        let outcome = match &self.entry {
            Entry::Command(pre) => match pre.instantiate_async(&mut store).await {
                Ok(command) => command.wasi_cli_run().call_run(&mut store).await,
                Err(error) => Err(error),
            },
            Entry::StreamRun(pre) => match pre.instantiate_async(&mut store).await {
                Ok(plugin) => store
                    .run_concurrent(async move |accessor| {
                        plugin.tensor_blob_stream_run().call_run(accessor).await
                    })
                    .await
                    .and_then(|result| result),
                Err(error) => Err(error),
            },
        };
        let limit_hit = store.data().limits.hit();
        // Dropping the store drops every stream end and call of the
        // plugin, which makes its stream workers release their chunkers
        // (an unfinished put is aborted) and end: join them, so the run
        // leaves nothing behind.
        drop(store);
        workers.join();
        match outcome {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(error) => {
                if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    return Ok(exit.0);
                }
                match limit_hit {
                    // A time-out names itself; otherwise a refused growth
                    // is the likeliest cause of the trap.
                    Some(hit) if error.downcast_ref::<TimeLimitExceeded>().is_none() => {
                        Err(error.context(LimitExceeded(hit)))
                    }
                    _ => Err(error),
                }
            }
        }
    }
}
