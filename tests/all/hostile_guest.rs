//! Goal: the host trusts nothing the chunker sends. A hostile chunker
//! (guest/components/rogue) lies about digests, sizes and lengths; every
//! lie must be refused with the right typed error, nothing may become
//! visible, and the store must keep working for honest clients.
//! Method: run each attack through the real runtime, check the error kind,
//! then check the store's totals and an honest round trip. Then let the
//! same chunker call `chunk-store` at random, thousands of times per seed
//! (its `fuzz` export), and check that the host neither panicked nor let
//! the store come to harm.
//!
//! Seeds: the fuzz test prints its seeds; `TBLOB_HOSTILE_SEED` sets the
//! first, `TBLOB_HOSTILE_SEEDS` how many are run (default
//! [`FUZZ_SEEDS_DEFAULT`]) and `TBLOB_HOSTILE_CALLS` the calls per seed
//! (default [`FUZZ_CALLS_DEFAULT`]). A failure names its seed and how to
//! replay it alone.

use std::sync::atomic::{AtomicUsize, Ordering};

use tensor_blob_host::runtime::host::chunk_store::UPLOAD_WORKER_NAME;
use tensor_blob_host::runtime::{BlobError, KeyValue, PutOptions, Runtime, WitError};
use tensor_blob_host::store::{Durability, StoreOptions};

use crate::common::{data, open_runtime, options, reopening, rogue_component};

fn attack(runtime: &Runtime, name: &str) -> Result<String, BlobError> {
    let mut chunker = runtime.chunker("default").unwrap();
    let mut opts = options();
    opts.custom = vec![KeyValue {
        key: "attack".into(),
        value: name.into(),
    }];
    chunker.put(&data(300_000, 11), &opts)
}

/// Whether an error is of the kind an attack must get.
type ErrorCheck = fn(&WitError) -> bool;

#[test]
fn every_lie_is_refused_with_a_typed_error_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let root =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let rogue = Runtime::with_chunker(rogue_component().clone(), root, StoreOptions::default());
    let cases: &[(&str, ErrorCheck)] = &[
        ("bad-chunk-digest", |e| {
            matches!(e, WitError::HashMismatch(_))
        }),
        ("short-digest", |e| {
            matches!(e, WitError::InvalidArgument(_))
        }),
        ("bad-whole-digest", |e| {
            matches!(e, WitError::HashMismatch(_))
        }),
        ("unpinned-chunk", |e| {
            matches!(e, WitError::InvalidArgument(_))
        }),
        ("wrong-size", |e| matches!(e, WitError::InvalidArgument(_))),
        ("wrong-len", |e| matches!(e, WitError::InvalidArgument(_))),
        ("oversized-chunk", |e| {
            matches!(e, WitError::InvalidArgument(_) | WitError::TooLarge(_))
        }),
        // From an upload's second chunk on, chunks are queued to a worker:
        // a bad length must be refused by `put-chunk` itself, before it is
        // queued (the rogue returns an "id" if the call was accepted).
        ("queued-oversized-chunk", |e| {
            matches!(e, WitError::InvalidArgument(_))
        }),
        ("queued-empty-chunk", |e| {
            matches!(e, WitError::InvalidArgument(_))
        }),
        ("commit-twice", |e| matches!(e, WitError::Closed)),
        ("huge-missing", |e| {
            matches!(e, WitError::InvalidArgument(_))
        }),
    ];
    for (name, expected) in cases {
        match attack(&rogue, name) {
            Err(BlobError::Blob(error)) => {
                assert!(expected(&error), "{name}: wrong error {error:?}")
            }
            other => panic!("{name}: expected a typed refusal, got {other:?}"),
        }
    }
    let store = rogue.tenant_store("default").unwrap();
    // commit-twice committed once, honestly; nothing else may be visible.
    let stats = store.stats();
    assert!(
        stats.artifacts <= 1,
        "only the honest first commit of commit-twice may exist: {stats:?}"
    );
    assert!(store.verify_all().damaged.is_empty());
    drop(store);
    drop(rogue);

    // The same store still serves an honest chunker, across a reopen.
    let honest = open_runtime(dir.path(), StoreOptions::default());
    let mut chunker = honest.chunker("default").unwrap();
    let bytes = data(300_000, 11);
    let id = chunker.put(&bytes, &options()).unwrap();
    assert_eq!(chunker.get(&id).unwrap(), bytes);
    assert!(honest
        .tenant_store("default")
        .unwrap()
        .recovery_report()
        .problems
        .is_empty());
}

/// Regression: the host forwarded a plugin's inline data, option strings
/// and lists, ids and tags to the chunker without checking them, so the
/// chunker's memory was all that bounded them. The rogue answers
/// `corrupted("rogue: the host forwarded ...")` to any argument over the
/// WIT's limits: every one here must be refused by the host itself, and
/// every one at its limit must get through.
#[test]
fn the_host_bounds_every_argument_before_the_chunker_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let root =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let rogue = Runtime::with_chunker(rogue_component().clone(), root, StoreOptions::default());
    let mut chunker = rogue.chunker("default").unwrap();
    let accept = |change: &dyn Fn(&mut PutOptions)| {
        let mut opts = options();
        opts.custom = vec![KeyValue {
            key: "attack".into(),
            value: "accept".into(),
        }];
        change(&mut opts);
        opts
    };
    let long = |n: usize| "x".repeat(n);
    let pairs = |n: usize| -> Vec<KeyValue> {
        (0..n)
            .map(|i| KeyValue {
                key: format!("k{i}"),
                value: String::new(),
            })
            .collect()
    };
    type Change = Box<dyn Fn(&mut PutOptions)>;
    let over: Vec<(&str, Change)> = vec![
        ("filename", Box::new(move |o| o.filename = Some(long(4097)))),
        (
            "content type",
            Box::new(move |o| o.content_type = Some(long(4097))),
        ),
        ("creator", Box::new(move |o| o.creator = Some(long(4097)))),
        (
            "257 tags",
            Box::new(|o| o.tags = (0..257).map(|i| format!("t{i}")).collect()),
        ),
        ("empty tag", Box::new(|o| o.tags = vec![String::new()])),
        ("long tag", Box::new(move |o| o.tags = vec![long(257)])),
        (
            "257 links",
            Box::new(|o| o.links = vec!["0".repeat(32); 257]),
        ),
        ("bad link", Box::new(|o| o.links = vec!["../etc".into()])),
        (
            "257 external links",
            Box::new(|o| o.external_links = (0..257).map(|i| format!("e{i}")).collect()),
        ),
        (
            "empty external link",
            Box::new(|o| o.external_links = vec![String::new()]),
        ),
        (
            "long external link",
            Box::new(move |o| o.external_links = vec![long(257)]),
        ),
        ("257 pairs", Box::new(move |o| o.custom.extend(pairs(256)))),
        (
            "empty key",
            Box::new(|o| {
                o.custom.push(KeyValue {
                    key: String::new(),
                    value: "v".into(),
                })
            }),
        ),
        (
            "long key",
            Box::new(move |o| {
                o.custom.push(KeyValue {
                    key: long(257),
                    value: "v".into(),
                })
            }),
        ),
        (
            "long value",
            Box::new(move |o| {
                o.custom.push(KeyValue {
                    key: "k".into(),
                    value: long(4097),
                })
            }),
        ),
    ];
    let refused = |what: &str, result: Result<String, BlobError>| match result {
        Err(BlobError::Blob(WitError::InvalidArgument(_))) => {}
        other => panic!("{what}: expected the host's invalid-argument, got {other:?}"),
    };
    for (what, change) in &over {
        let opts = accept(change.as_ref());
        refused(what, chunker.put(b"data", &opts));
        refused(what, chunker.create_writer(&opts).map(|_| String::new()));
    }
    match chunker.put(&vec![0u8; (64 << 20) + 1], &accept(&|_| {})) {
        Err(BlobError::Blob(WitError::TooLarge(_))) => {}
        other => panic!("inline put over 64 MiB: {other:?}"),
    }
    // At the limits, everything gets through to the chunker.
    let at_limits = accept(&|o| {
        o.filename = Some("f".repeat(4096));
        o.content_type = Some("c".repeat(4096));
        o.creator = Some("c".repeat(4096));
        o.tags = (0..256).map(|i| format!("{i:0>256}")).collect();
        o.links = vec!["0".repeat(32); 256];
        o.external_links = (0..256).map(|i| format!("{i:0>256}")).collect();
        o.custom = (0..256)
            .map(|i| KeyValue {
                key: if i == 0 {
                    "attack".into()
                } else {
                    format!("{i:0>256}")
                },
                value: if i == 0 {
                    "accept".into()
                } else {
                    "v".repeat(4096)
                },
            })
            .collect();
    });
    assert_eq!(
        chunker.put(&vec![0u8; 64 << 20], &at_limits).unwrap(),
        "accepted"
    );

    let bad_ids = [
        "",
        "0",
        "../../etc/passwd",
        &"0".repeat(33),
        &"g".repeat(32),
        &"0".repeat(1 << 20),
    ];
    for bad in bad_ids {
        let what = format!("id of {} bytes", bad.len());
        refused(&what, chunker.get(bad).map(|_| String::new()));
        refused(&what, chunker.open_reader(bad, 0).map(|_| String::new()));
    }
    // Metadata calls (`stat`, `update`, `list`, `find-by-tag`, `query`...)
    // no longer reach a chunker: their bounds are the host's own, tested
    // in `runtime::metadata` and through a plugin in hostile_plugin.rs.
}

/// Seeds the fuzz test runs unless `TBLOB_HOSTILE_SEEDS` says otherwise.
const FUZZ_SEEDS_DEFAULT: u64 = 4;
/// Calls per seed unless `TBLOB_HOSTILE_CALLS` says otherwise. With the
/// default seeds, about 10 s in a debug build on a 2-core machine.
const FUZZ_CALLS_DEFAULT: u32 = 3000;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

/// Panics on the host's upload worker threads, counted by a panic hook
/// (a panic there would otherwise only show as a trap of the guest).
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_worker_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().map(str::to_owned);
            if name.is_some_and(|name| name.starts_with(UPLOAD_WORKER_NAME)) {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(not a string)".to_string())
}

#[test]
fn a_chunker_calling_chunk_store_at_random_cannot_hurt_the_host_or_the_store() {
    count_worker_panics();
    let base = env_u64("TBLOB_HOSTILE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let seeds = env_u64("TBLOB_HOSTILE_SEEDS").unwrap_or(FUZZ_SEEDS_DEFAULT);
    let calls = env_u64("TBLOB_HOSTILE_CALLS")
        .map(|n| u32::try_from(n).expect("TBLOB_HOSTILE_CALLS fits u32"))
        .unwrap_or(FUZZ_CALLS_DEFAULT);
    eprintln!(
        "hostile chunker fuzz: TBLOB_HOSTILE_SEED={base} TBLOB_HOSTILE_SEEDS={seeds} \
         TBLOB_HOSTILE_CALLS={calls}"
    );
    for i in 0..seeds {
        let seed = base.wrapping_add(i);
        eprintln!("hostile chunker fuzz: seed {seed}, {calls} calls");
        let started = std::time::Instant::now();
        if let Err(failure) = fuzz_one_seed(seed, calls) {
            panic!(
                "hostile chunker fuzz, seed {seed}: {failure}\n\
                 replay: TBLOB_HOSTILE_SEED={seed} TBLOB_HOSTILE_SEEDS=1 TBLOB_HOSTILE_CALLS={calls}"
            );
        }
        eprintln!(
            "hostile chunker fuzz: seed {seed} passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// One seed: the rogue's `fuzz` against a fresh store, then the store is
/// reopened, verified and garbage-collected.
fn fuzz_one_seed(seed: u64, calls: u32) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    // From the first open to the reopen (see `common::reopening`).
    let _no_spawns = reopening();
    let panics_before = WORKER_PANICS.load(Ordering::SeqCst);
    {
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let store_options = StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        };
        let rogue = Runtime::with_chunker(rogue_component().clone(), root, store_options);
        let mut chunker = rogue
            .chunker("default")
            .map_err(|e| format!("instantiating the rogue: {e:#}"))?;
        let started = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            chunker.call_extra_export::<(u64, u32), (String,)>("fuzz", (seed, calls))
        }));
        match outcome {
            Err(panic) => {
                return Err(format!(
                    "the host panicked: {}",
                    panic_message(panic.as_ref())
                ))
            }
            Ok(Ok((report,))) => {
                eprintln!(
                    "hostile chunker fuzz: seed {seed}: {calls} calls in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                eprint!("{report}");
                if !report.starts_with("violations: 0\n") {
                    return Err(format!("the host's answers broke the protocol:\n{report}"));
                }
            }
            Ok(Err(BlobError::Trap(trap))) => {
                let trap = format!("{trap:#}");
                // A host panic on this thread is caught above; one on an
                // upload worker is counted below and also shows as this.
                if trap.contains("upload worker") {
                    return Err(format!("a host fault surfaced as a trap: {trap}"));
                }
                // The guest's own fault (it panicked or ran out of memory):
                // allowed, the rest of the checks still apply.
                eprintln!("hostile chunker fuzz: seed {seed}: the guest trapped: {trap}");
            }
            Ok(Err(BlobError::Blob(error))) => {
                return Err(format!("fuzz answered a WIT error: {error:?}"))
            }
        }
        // Dropping the chunker drops every upload it left open (and joins
        // their workers); dropping the runtime closes the store.
    }
    let panics = WORKER_PANICS.load(Ordering::SeqCst) - panics_before;
    if panics > 0 {
        return Err(format!("{panics} upload worker thread(s) panicked"));
    }

    let runtime = open_runtime(dir.path(), StoreOptions::default());
    let store = runtime
        .tenant_store("default")
        .map_err(|e| format!("reopening the store: {e}"))?;
    let problems = store.recovery_report().problems;
    if !problems.is_empty() {
        return Err(format!("the reopened store reports problems: {problems:?}"));
    }
    let artifacts = store.stats().artifacts;
    let verified = store.verify_all();
    if !verified.damaged.is_empty() || verified.artifacts_checked != artifacts {
        return Err(format!(
            "verify_all after the fuzz: {} of {artifacts} checked, damaged: {:?}",
            verified.artifacts_checked, verified.damaged
        ));
    }
    store.gc().map_err(|e| format!("gc after the fuzz: {e}"))?;
    let verified = store.verify_all();
    if !verified.damaged.is_empty() || verified.artifacts_checked != artifacts {
        return Err(format!(
            "verify_all after gc: {} of {artifacts} checked, damaged: {:?}",
            verified.artifacts_checked, verified.damaged
        ));
    }
    // And it still serves an honest chunker.
    let mut chunker = runtime.chunker("default").map_err(|e| e.to_string())?;
    let bytes = data(100_000, seed);
    let id = chunker
        .put(&bytes, &options())
        .map_err(|e| format!("honest put after the fuzz: {e}"))?;
    if chunker.get(&id).map_err(|e| e.to_string())? != bytes {
        return Err("honest round trip after the fuzz read back other bytes".into());
    }
    eprintln!("hostile chunker fuzz: seed {seed}: {artifacts} artifacts verified, gc ok");
    Ok(())
}
