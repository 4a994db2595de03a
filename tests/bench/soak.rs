//! Soak benchmark: many tenants on one runtime for a while, one of them
//! hostile. Prints per-tenant throughput, errors, peak RSS and the hostile
//! tenant's effect on the others, measured in one run.
//!
//! `cargo bench -p tensor-blob-host --bench soak` (release build).
//! `TBLOB_SOAK_SECS` sets each phase's length (default 60),
//! `TBLOB_SOAK_TENANTS` the tenant count, hostile one included (default 16).
//!
//! Two phases on one store root, one engine, one compiled chunker:
//! 1. the well-behaved tenants alone: each a thread looping put (1 MiB of
//!    fresh random bytes, streamed through the chunker guest, fsync at
//!    commit), get (every chunk verified), compare, delete;
//! 2. the same, beside a hostile tenant that cycles through attacks
//!    (then phase 1 again: the baseline is the mean of the two):
//!    memory bomb, handle flood and oversized arguments (`limits`),
//!    spinning (stopped by a time limit), oversized calls (`huge`), an
//!    abandoned writer, and uploads over its quota.
//!
//! The goal: no errors for the well-behaved, and their throughput in
//! phase 2 within 10% of phase 1. Each attack's outcome is checked to be a
//! refusal (a trap or error the host turned into a clean failure), never
//! a success and never a host panic. The machine has two cores: the
//! hostile tenant's runs take CPU like any tenant's; what is measured is
//! that it cannot take more than its share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tensor_blob_host::runtime::metadata;

use tensor_blob_host::runtime::plugin::{Plugin, PluginOptions};
use tensor_blob_host::runtime::{self, BlobError, PutOptions, Runtime, RuntimeOptions, WitError};
use tensor_blob_host::store::{Durability, Quota, StoreOptions, TenantPolicy};

/// Bytes of each well-behaved put.
const ARTIFACT_BYTES: usize = 1 << 20;
/// The hostile tenant's plugin memory limit.
const HOSTILE_MEMORY_BYTES: u64 = 256 << 20;
/// How long a spinning plugin may run.
const SPIN_LIMIT: Duration = Duration::from_millis(500);
/// The hostile tenant's byte quota: its overflow uploads are 4x this, of
/// random bytes.
const HOSTILE_QUOTA_BYTES: u64 = 2 << 20;
const HOSTILE: &str = "hostile";
/// Uploads the hostile tenant may hold open at once.
const HOSTILE_WRITERS_MAX: u64 = 4;
/// Longest run of any of the hostile tenant's plugins (its policy).
const HOSTILE_RUN_LIMIT: Duration = Duration::from_secs(5);

#[derive(Default, Clone)]
struct TenantResult {
    ops: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
}

#[derive(Default, Debug)]
struct HostileResult {
    attacks: u64,
    refused: u64,
    /// Attacks that succeeded where they should have been refused.
    wrongly_accepted: Vec<String>,
}

fn main() {
    let seconds: u64 = env("TBLOB_SOAK_SECS", 60);
    let tenants: usize = env("TBLOB_SOAK_TENANTS", 16);
    let well_behaved = tenants.saturating_sub(1).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority())
        .expect("open root");
    let mut config = runtime::default_config();
    config.epoch_interruption(true);
    let engine = wasmtime::Engine::new(&config).expect("engine");
    let options = RuntimeOptions {
        store: StoreOptions {
            durability: Durability::Sync,
            ..StoreOptions::default()
        },
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::new(&engine, root, options).expect("runtime");
    set_hostile_quota(&runtime);
    let hostile_plugin =
        Plugin::new(&runtime, tensor_blob_artifacts::HOSTILE_PLUGIN_WASM).expect("compile");
    println!(
        "tensor-blob soak: {tenants} tenants ({well_behaved} well-behaved, 1 hostile), {seconds} s per phase, {} KiB artifacts",
        ARTIFACT_BYTES >> 10
    );

    reset_peak_rss();
    let alone = phase(&runtime, None, well_behaved, seconds);
    let rss_alone = peak_rss_kib();
    reset_peak_rss();
    let beside = phase(&runtime, Some(&hostile_plugin), well_behaved, seconds);
    let rss_beside = peak_rss_kib();
    // Alone once more: the mean of the two alone phases is the baseline,
    // so a store that speeds up or slows down as it fills does not read as
    // the hostile tenant's doing.
    let (again, _) = phase(&runtime, None, well_behaved, seconds);

    let (results_alone, _) = alone;
    let (results_beside, hostile) = beside;
    let hostile = hostile.expect("the hostile phase reports");
    println!("tenant        alone: ops/s  MB/s   beside hostile: ops/s  MB/s  errors");
    for (i, (a, b)) in results_alone.iter().zip(&results_beside).enumerate() {
        println!(
            "tenant-{i:<3}         {:7.1} {:6.1}                  {:7.1} {:6.1}  {}",
            a.ops as f64 / a.seconds,
            a.bytes as f64 / a.seconds / 1e6,
            b.ops as f64 / b.seconds,
            b.bytes as f64 / b.seconds / 1e6,
            a.errors + b.errors,
        );
    }
    let rate = |results: &[TenantResult]| -> f64 {
        results.iter().map(|r| r.bytes as f64 / r.seconds).sum()
    };
    let (first_alone, last_alone) = (rate(&results_alone), rate(&again));
    let (total_alone, total_beside) = ((first_alone + last_alone) / 2.0, rate(&results_beside));
    println!(
        "well-behaved alone: {:.1} MB/s before, {:.1} MB/s after the hostile phase",
        first_alone / 1e6,
        last_alone / 1e6
    );
    let errors: u64 = results_alone
        .iter()
        .chain(&results_beside)
        .chain(&again)
        .map(|r| r.errors)
        .sum();
    for error in results_alone
        .iter()
        .chain(&results_beside)
        .filter_map(|r| r.first_error.as_ref())
        .take(3)
    {
        println!("well-behaved error: {error}");
    }
    println!(
        "well-behaved total: {:.1} MB/s alone, {:.1} MB/s beside the hostile tenant: drop {:.1}% (goal < 10%)",
        total_alone / 1e6,
        total_beside / 1e6,
        100.0 * (1.0 - total_beside / total_alone)
    );
    println!("well-behaved errors: {errors} (goal 0)");
    println!(
        "hostile tenant: {} attacks, {} refused, {} wrongly accepted {:?}",
        hostile.attacks,
        hostile.refused,
        hostile.wrongly_accepted.len(),
        hostile.wrongly_accepted
    );
    println!(
        "peak RSS: {:.1} MiB alone, {:.1} MiB beside the hostile tenant",
        rss_alone as f64 / 1024.0,
        rss_beside as f64 / 1024.0
    );
}

/// Runs `well_behaved` tenants (and, with a plugin, the hostile one) for
/// `seconds`; returns each well-behaved tenant's result.
fn phase(
    runtime: &Runtime,
    hostile: Option<&Plugin>,
    well_behaved: usize,
    seconds: u64,
) -> (Vec<TenantResult>, Option<HostileResult>) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(
        well_behaved + 1 + usize::from(hostile.is_some()),
    ));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..well_behaved)
            .map(|i| {
                let (stop, start) = (Arc::clone(&stop), Arc::clone(&start));
                scope.spawn(move || well_behaved_tenant(runtime, i, &start, &stop))
            })
            .collect();
        let attacker = hostile.map(|plugin| {
            let (stop, start) = (Arc::clone(&stop), Arc::clone(&start));
            scope.spawn(move || hostile_tenant(runtime, plugin, &start, &stop))
        });
        start.wait();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Release);
        let results = workers
            .into_iter()
            .map(|w| w.join().expect("well-behaved tenant panicked"))
            .collect();
        let hostile = attacker.map(|a| a.join().expect("hostile tenant panicked"));
        (results, hostile)
    })
}

fn well_behaved_tenant(
    runtime: &Runtime,
    index: usize,
    start: &Barrier,
    stop: &AtomicBool,
) -> TenantResult {
    let tenant = format!("tenant-{index}");
    let mut chunker = runtime.chunker(&tenant).expect("chunker");
    let mut data = vec![0u8; ARTIFACT_BYTES];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (index as u64) << 32;
    let mut result = TenantResult::default();
    start.wait();
    let began = Instant::now();
    while !stop.load(Ordering::Acquire) {
        fill(&mut data, &mut seed);
        let outcome = (|| -> Result<(), String> {
            let id = chunker
                .put(&data, &PutOptions::default())
                .map_err(|e| format!("put: {e}"))?;
            let back = chunker.get(&id).map_err(|e| format!("get: {e}"))?;
            if back != data {
                return Err(format!("get {id}: other bytes"));
            }
            metadata::delete(chunker.store(), &id).map_err(|e| format!("delete: {e}"))
        })();
        match outcome {
            Ok(()) => {
                result.ops += 1;
                result.bytes += 2 * ARTIFACT_BYTES as u64;
            }
            Err(error) => {
                result.errors += 1;
                result.first_error.get_or_insert(error);
            }
        }
    }
    result.seconds = began.elapsed().as_secs_f64();
    result
}

/// Cycles through the attacks until told to stop.
fn hostile_tenant(
    runtime: &Runtime,
    plugin: &Plugin,
    start: &Barrier,
    stop: &AtomicBool,
) -> HostileResult {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut chunker = runtime.chunker(HOSTILE).expect("chunker");
    // Random, so it cannot deduplicate to less than the quota.
    let mut overflow = vec![0u8; 4 * HOSTILE_QUOTA_BYTES as usize];
    fill(&mut overflow, &mut 0x0bad_5eed_u64);
    let mut result = HostileResult::default();
    let attacks: [(&str, &[&str]); 5] = [
        ("memory-bomb", &["memory-bomb"]),
        ("limits", &["limits"]),
        ("spin", &["spin"]),
        ("huge", &["huge", "33554432"]),
        ("abandon", &["abandon", "16777216"]),
    ];
    start.wait();
    let mut round = 0usize;
    while !stop.load(Ordering::Acquire) {
        let (name, args) = attacks[round % attacks.len()];
        round += 1;
        let options = PluginOptions {
            args: std::iter::once("hostile-plugin")
                .chain(args.iter().copied())
                .map(String::from)
                .collect(),
            time_limit: (name == "spin").then_some(SPIN_LIMIT),
            ..PluginOptions::default()
        };
        let run = silenced(|| tokio.block_on(plugin.run(HOSTILE, &options)));
        result.attacks += 1;
        // memory-bomb and spin must end in a trap; the others exit after
        // printing what the host refused (their own checks).
        let refused = match (name, &run) {
            ("memory-bomb" | "spin", Err(_)) => true,
            ("memory-bomb" | "spin", Ok(_)) => false,
            (_, Ok(_)) => true,
            (_, Err(_)) => true,
        };
        if refused {
            result.refused += 1;
        } else {
            result.wrongly_accepted.push(format!("{name}: {run:?}"));
        }

        // An upload four times the tenant's quota: refused, typed.
        result.attacks += 1;
        match chunker.put(&overflow, &PutOptions::default()) {
            Err(BlobError::Blob(WitError::QuotaExceeded(_))) => result.refused += 1,
            other => result
                .wrongly_accepted
                .push(format!("quota overflow: {other:?}")),
        }
    }
    result
}

/// The hostile tenant's policy: a byte quota (its overflow uploads are 4x
/// it), a few writers, and plugin memory and time limits that every run
/// of it gets, whatever the run asks for.
fn set_hostile_quota(runtime: &Runtime) {
    let policy = TenantPolicy {
        quota: Quota {
            bytes_max: Some(HOSTILE_QUOTA_BYTES),
            writers_max: Some(HOSTILE_WRITERS_MAX),
            ..Quota::default()
        },
        plugin_memory_bytes_max: Some(HOSTILE_MEMORY_BYTES),
        plugin_time_limit: Some(HOSTILE_RUN_LIMIT),
    };
    runtime
        .set_tenant_policy(HOSTILE, policy)
        .expect("set the hostile tenant's policy");
}

/// Runs `f` with this process's stdout and stderr pointed at /dev/null:
/// the hostile plugin prints a line per step of its attacks, and its
/// allocator complains when the memory bomb hits the limit.
fn silenced<R>(f: impl FnOnce() -> R) -> R {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: plain descriptor calls on fds this process owns; fds 1 and
    // 2 are restored before returning.
    unsafe {
        let saved = [libc::dup(1), libc::dup(2)];
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if saved.contains(&-1) || null < 0 {
            return f();
        }
        libc::dup2(null, 1);
        libc::dup2(null, 2);
        libc::close(null);
        let result = f();
        for (fd, saved) in [1, 2].into_iter().zip(saved) {
            libc::dup2(saved, fd);
            libc::close(saved);
        }
        result
    }
}

/// Resets this process's peak RSS (Linux: `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak RSS since the last reset, KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn fill(data: &mut [u8], seed: &mut u64) {
    for word in data.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        word.copy_from_slice(&seed.to_le_bytes()[..word.len()]);
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
