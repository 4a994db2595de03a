//! Background maintenance of a long-lived host: every
//! [`GcPolicy::interval`], one incremental GC pass
//! ([`Store::gc_pass`]) over each tenant store that is open.
//!
//! Owns one tokio task (on the caller's tokio runtime if there is one, else
//! on a thread of its own with a current-thread runtime). The store work
//! is blocking (preads, appends, fsyncs), so each pass runs in
//! `spawn_blocking` and never stalls the async tasks serving plugins. The
//! task holds the tenants only weakly, and a store only for the length of
//! its pass: it never keeps a tenant open (or locked) that its [`Runtime`]
//! has let go. It stops when the last clone of its [`Runtime`] is dropped
//! (the [`Maintenance`] handle goes with it) or at
//! [`Maintenance::shutdown`]. A failing store (an I/O error, a full disk)
//! is recorded in [`GcStatus`] and tried again next interval; it never
//! stops the passes of the others, and nothing here panics on a store's
//! behalf. Read-only stores (a failed fsync) are skipped: GC writes.
//!
//! [`Runtime`]: crate::runtime::Runtime

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::store::{GcPolicy, GcReport, Store};
use crate::tenant::Tenants;

/// Errors kept in [`GcStatus::errors`] (the newest); older ones are only
/// counted, so a tenant failing every interval for weeks costs no memory.
pub const ERRORS_KEPT_MAX: usize = 32;

/// One failed pass of one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcError {
    pub tenant: String,
    /// [`GcStatus::passes`] when it happened (the pass it belongs to is
    /// that number plus one).
    pub pass: u64,
    pub message: String,
}

/// What the background task has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcStatus {
    /// Passes finished (each a round over every open tenant).
    pub passes: u64,
    /// Tenant passes skipped because the store was read-only.
    pub skipped_read_only: u64,
    /// Tenant passes that failed, in all.
    pub errors_total: u64,
    /// The newest [`ERRORS_KEPT_MAX`] failures.
    pub errors: Vec<GcError>,
    /// Sums over every successful tenant pass.
    pub chunks_removed: u64,
    pub bytes_reclaimed: u64,
    pub segments_removed: u64,
    /// Whether the task has stopped.
    pub stopped: bool,
}

impl GcStatus {
    fn add(&mut self, report: &GcReport) {
        self.chunks_removed += report.chunks_removed;
        self.bytes_reclaimed += report.bytes_reclaimed;
        self.segments_removed += report.segments_removed;
    }

    fn fail(&mut self, tenant: String, message: String) {
        self.errors_total += 1;
        if self.errors.len() == ERRORS_KEPT_MAX {
            self.errors.remove(0);
        }
        self.errors.push(GcError {
            tenant,
            pass: self.passes,
            message,
        });
    }
}

/// Status shared between the task and its handle, with a condition
/// variable signalled after every pass.
#[derive(Default)]
struct Shared {
    status: Mutex<GcStatus>,
    changed: Condvar,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut GcStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }
}

/// The handle of a running background task; dropping it stops the task.
pub struct Maintenance {
    policy: GcPolicy,
    shared: Arc<Shared>,
    /// Dropping the sender wakes the task (its receiver sees it closed).
    stop: Mutex<Option<tokio::sync::watch::Sender<()>>>,
    /// The task's own thread, when no tokio runtime was current at start.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Maintenance {
    /// Starts the task over the tenants in `tenants` (held weakly).
    pub fn start(tenants: Weak<Tenants>, policy: GcPolicy) -> Maintenance {
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::watch::channel(());
        let task = run(tenants, policy, stopped, Arc::clone(&shared));
        let thread = match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(task);
                None
            }
            Err(_) => {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name("tblob-gc".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_time()
                            .build()
                        {
                            Ok(runtime) => runtime.block_on(task),
                            Err(e) => shared.update(|status| {
                                status.fail(String::new(), format!("starting its runtime: {e}"));
                                status.stopped = true;
                            }),
                        }
                    })
                    .ok()
            }
        };
        Maintenance {
            policy,
            shared,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(thread),
        }
    }

    /// The policy the task runs with.
    pub fn policy(&self) -> GcPolicy {
        self.policy
    }

    /// What the task has done so far.
    pub fn status(&self) -> GcStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Blocks until `done(status)` holds after some pass, or `timeout`
    /// passes (then `None`), or the task stopped without it holding.
    /// For tests and tools that wait on background GC without sleeping.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&GcStatus) -> bool,
    ) -> Option<GcStatus> {
        let deadline = Instant::now() + timeout;
        let mut status = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if done(&status) {
                return Some(status.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if status.stopped {
                return None;
            }
            status = self
                .shared
                .changed
                .wait_timeout(status, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops the task: it finishes the tenant pass in progress, if any,
    /// and runs no more. When it runs on its own thread, waits for it.
    pub fn shutdown(&self) {
        drop(self.stop.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The task: a pass every `policy.interval` until `stop` closes or the
/// tenants are gone.
async fn run(
    tenants: Weak<Tenants>,
    policy: GcPolicy,
    mut stop: tokio::sync::watch::Receiver<()>,
    shared: Arc<Shared>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(policy.interval) => {}
            // Only ever an error: the handle is gone or shut down.
            _ = stop.changed() => break,
        }
        // Held for the listing only: dropping the runtime is never delayed
        // by more than the tenant pass in progress.
        let stores: Vec<(String, Store)> = match tenants.upgrade() {
            Some(tenants) => tenants.open_stores(),
            None => break,
        };
        for (tenant, store) in stores {
            if store.is_read_only() {
                shared.update(|status| status.skipped_read_only += 1);
                continue;
            }
            let outcome = tokio::task::spawn_blocking(move || store.gc_pass(&policy)).await;
            shared.update(|status| match outcome {
                Ok(Ok(report)) => status.add(&report),
                Ok(Err(error)) => status.fail(tenant, error.to_string()),
                // A panic in a pass is a bug; it is recorded, and the
                // other tenants still get their pass.
                Err(error) => status.fail(tenant, format!("the pass panicked: {error}")),
            });
            if stop.has_changed().is_err() {
                break;
            }
        }
        shared.update(|status| status.passes += 1);
    }
    shared.update(|status| status.stopped = true);
}
