//! Goal: concurrent access between real processes (issue 8): the reading
//! commands (`ls`, `stat`, `get`, `exists`, `verify`) run beside one
//! writer process and return exactly the committed bytes; a second writer
//! is refused with one line naming the holder's pid, or waits for it with
//! `--wait`; and reading commands never create a store or a tenant.
//! Method: the built `tblob` and `tblob-crash-worker` binaries on temporary
//! stores; every wait is for a real event (a pid in the lock file, a line
//! on a pipe, a process exit), never a sleep.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::{ok, tblob};
use crate::common::{data, spawning};

/// How long a test waits for a child to reach a state before failing.
const EVENT_WAIT_MAX: Duration = Duration::from_secs(60);

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `tblob put -` with its stdin kept open: a writer holding the default
/// tenant until its stdin is closed. Returns once it holds the lock (its
/// pid is in the lock file).
fn spawn_holder(store: &Path) -> Child {
    let mut child = {
        let _spawning = spawning();
        Command::new(env!("CARGO_BIN_EXE_tblob"))
            .arg("--store")
            .arg(store)
            .args(["put", "-"])
            .env_remove("TBLOB_STORE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&data(100_000, 7))
        .unwrap();
    let lock = store.join("tenants/default/LOCK");
    let pid = child.id().to_string();
    let deadline = Instant::now() + EVENT_WAIT_MAX;
    // The holder writes its pid into the lock file once it has the lock.
    while std::fs::read_to_string(&lock).ok().as_deref() != Some(pid.as_str()) {
        assert!(Instant::now() < deadline, "the holder never took the lock");
        assert!(child.try_wait().unwrap().is_none(), "the holder exited");
        std::thread::yield_now();
    }
    child
}

/// Where process `pid`'s main thread is blocked in the kernel (`0` while it
/// runs, or always where the kernel hides it).
fn wchan(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

/// Waits until the `tblob` process `waiter` is between two tries at a held
/// lock: the only place its main thread sleeps in `nanosleep`. Needs the
/// kernel to show where processes block: `holder` (blocked reading its
/// stdin) tells; where it does not, the wait is skipped with a note.
fn wait_until_retrying_the_lock(waiter: &mut Child, holder: u32) {
    let shown = (0..10_000).any(|_| !matches!(wchan(holder).as_str(), "" | "0"));
    if !shown {
        eprintln!("note: /proc/PID/wchan shows nothing here; not checking that the waiter waits");
        return;
    }
    let deadline = Instant::now() + EVENT_WAIT_MAX;
    while !wchan(waiter.id()).contains("nanosleep") {
        assert!(
            Instant::now() < deadline,
            "the waiter never retried the lock"
        );
        assert!(
            waiter.try_wait().unwrap().is_none(),
            "the waiter did not wait"
        );
        std::thread::yield_now();
    }
}

/// Goal: readers beside a writer process get the committed state, bytes
/// included; a second writer is refused at once with one line naming the
/// holder's pid, after `--wait` seconds if given; a writer waiting long
/// enough gets the tenant once the holder exits.
/// Method: an artifact put first; a holder process (`put -` with its stdin
/// open); all five reading commands run while it holds the tenant; then
/// writers without and with a short `--wait` (refused, the latter only
/// after the wait), and one with a long `--wait` that must succeed once
/// the holder's stdin is closed and it finishes; the holder is released
/// only once that waiter is seen retrying the lock (its main thread asleep
/// in `nanosleep`, per `/proc/PID/wchan`).
#[test]
fn readers_run_beside_a_writer_and_a_second_writer_is_refused_naming_it() {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("stored.bin");
    let bytes = data(300_000, 5);
    std::fs::write(&file, &bytes).unwrap();
    let id = ok(&tblob(store.path(), &["put", file.to_str().unwrap()]))
        .trim()
        .to_string();

    let mut holder = spawn_holder(store.path());
    let holder_pid = holder.id();

    let listed = ok(&tblob(store.path(), &["ls"]));
    assert!(listed.starts_with(&id), "{listed}");
    let meta: serde_json::Value =
        serde_json::from_str(&ok(&tblob(store.path(), &["stat", &id, "--json"]))).unwrap();
    assert_eq!(meta["size"], bytes.len());
    ok(&tblob(store.path(), &["stat"]));
    let got = tblob(store.path(), &["get", &id]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(got.stdout == bytes, "get beside a writer: wrong bytes");
    assert_eq!(tblob(store.path(), &["exists", &id]).status.code(), Some(0));
    let verified = tblob(store.path(), &["verify"]);
    assert_eq!(verified.status.code(), Some(0), "{}", stderr(&verified));
    ok(&tblob(store.path(), &["quota", "show"]));

    let refusal =
        format!("tblob: tenant default is in use by another process (pid {holder_pid})\n");
    let refused = tblob(store.path(), &["put", file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(stderr(&refused), refusal);
    assert_eq!(
        tblob(store.path(), &["rm", &id]).status.code(),
        Some(2),
        "rm is a writer"
    );
    let started = Instant::now();
    let refused = tblob(store.path(), &["--wait", "1.5", "gc"]);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(stderr(&refused), refusal);

    let mut waiter = {
        let _spawning = spawning();
        Command::new(env!("CARGO_BIN_EXE_tblob"))
            .arg("--store")
            .arg(store.path())
            .args(["--wait", "120", "rm", &id])
            .env_remove("TBLOB_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    wait_until_retrying_the_lock(&mut waiter, holder_pid);
    drop(holder.stdin.take());
    let held = holder.wait_with_output().unwrap();
    assert!(held.status.success(), "{}", stderr(&held));
    let waited = waiter.wait_with_output().unwrap();
    assert!(waited.status.success(), "{}", stderr(&waited));
    assert_eq!(tblob(store.path(), &["exists", &id]).status.code(), Some(1));
}

/// Goal: a reading command never creates a store or a tenant, and a put
/// that fails its checks creates neither (issue 8: `tblob --store /typo
/// stat` made a store skeleton). Method: each reading command on a path
/// that does not exist and on an unknown tenant of a real store, and puts
/// with a missing file, a bad link, a bad tenant name, chunk sizes out of
/// range and an empty tag on a fresh path;
/// each must fail with its one-line error and leave the path absent.
#[test]
fn reading_commands_and_failed_puts_create_nothing() {
    let root = tempfile::tempdir().unwrap();
    let typo = root.path().join("typo");
    let reads: [&[&str]; 7] = [
        &["ls"],
        &["stat"],
        &["stat", "0123456789abcdef0123456789abcdef"],
        &["get", "0123456789abcdef0123456789abcdef"],
        &["exists", "0123456789abcdef0123456789abcdef"],
        &["verify"],
        &["quota", "show"],
    ];
    for args in reads {
        let output = tblob(&typo, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr(&output),
            format!("tblob: no store at {}\n", typo.display()),
            "{args:?}"
        );
        assert!(!typo.exists(), "{args:?} created the store");
    }

    let store = root.path().join("store");
    let file = root.path().join("f");
    std::fs::write(&file, b"some bytes").unwrap();
    ok(&tblob(&store, &["put", file.to_str().unwrap()]));
    for args in reads {
        let mut with_tenant = vec!["--tenant", "nobody"];
        with_tenant.extend_from_slice(args);
        let output = tblob(&store, &with_tenant);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr(&output),
            format!("tblob: no tenant nobody in store {}\n", store.display()),
            "{args:?}"
        );
        assert!(
            !store.join("tenants/nobody").exists(),
            "{args:?} created the tenant"
        );
    }

    let missing = root.path().join("missing.bin");
    let file = file.to_str().unwrap();
    let puts: [&[&str]; 6] = [
        &["put", missing.to_str().unwrap()],
        &["put", file, "--link", "not-an-id"],
        &["--tenant", "Bad/Name", "put", file],
        &["put", file, "--chunking", "fixed", "--chunk-size", "0"],
        &["put", file, "--chunk-size", "100000000"],
        &["put", file, "--tag", ""],
    ];
    for args in puts {
        let output = tblob(&typo, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
        assert!(!typo.exists(), "{args:?} created the store");
    }
}

/// One `put` line of the crash worker: the id, the length and the BLAKE3
/// of what was stored.
fn parse_put(line: &str) -> Option<(String, (u64, String))> {
    let mut words = line.split(' ');
    (words.next()? == "put").then_some(())?;
    let id = words.next()?.to_string();
    let len = words.next()?.parse().ok()?;
    let hash = words.next()?.to_string();
    Some((id, (len, hash)))
}

/// Goal: reader processes never see wrong bytes while one writer process
/// puts, deletes and garbage-collects (explicit full passes, and background
/// GC every 20 ms) beside them: each `get` either writes exactly the bytes
/// that were put or fails with `not found` (deleted before its snapshot);
/// `verify` of the whole tenant finds no damage; `ls` always works.
/// Method: the crash worker (which prints `put <id> <len> <blake3>` once a
/// put is acknowledged) runs a bounded number of operations on two
/// threads; the test process reads its lines and, until it exits, keeps
/// running `get` on recently put ids and `verify` and `ls`, checking each
/// result against the worker's record.
#[test]
fn readers_beside_a_writer_process_never_see_wrong_bytes() {
    const WORKER_OPS: u64 = 250;
    let store = tempfile::tempdir().unwrap();
    let ack_log = store.path().join("acks");
    let mut worker = {
        let _spawning = spawning();
        Command::new(env!("CARGO_BIN_EXE_tblob-crash-worker"))
            .arg("--store")
            .arg(store.path())
            .args(["--seed", "8", "--threads", "2"])
            .arg("--ops")
            .arg(WORKER_OPS.to_string())
            .arg("--ack-log")
            .arg(&ack_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let puts: Arc<Mutex<HashMap<String, (u64, String)>>> = Arc::default();
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let lines = {
        let stdout = worker.stdout.take().unwrap();
        let (puts, order) = (Arc::clone(&puts), Arc::clone(&order));
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some((id, put)) = parse_put(&line) {
                    puts.lock().unwrap().insert(id.clone(), put);
                    order.lock().unwrap().push(id);
                    let _ = first_tx.send(());
                }
            }
        })
    };
    first_rx
        .recv_timeout(EVENT_WAIT_MAX)
        .expect("the worker acknowledged a put");
    let (mut gets_whole, mut gets_gone, mut rounds) = (0u64, 0u64, 0u64);
    while worker.try_wait().unwrap().is_none() {
        rounds += 1;
        let recent: Vec<String> = order
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(2)
            .cloned()
            .collect();
        for id in recent {
            let (len, hash) = puts.lock().unwrap()[&id].clone();
            let got = tblob(store.path(), &["get", &id]);
            if got.status.success() {
                assert_eq!(got.stdout.len() as u64, len, "artifact {id}: wrong length");
                assert_eq!(
                    blake3::hash(&got.stdout).to_hex().as_str(),
                    hash,
                    "artifact {id}: wrong bytes"
                );
                gets_whole += 1;
            } else {
                assert!(stderr(&got).contains("not found"), "{}", stderr(&got));
                gets_gone += 1;
            }
        }
        let verified = tblob(store.path(), &["verify"]);
        assert_eq!(verified.status.code(), Some(0), "{}", stderr(&verified));
        ok(&tblob(store.path(), &["ls"]));
    }
    let status = worker.wait().unwrap();
    let mut worker_stderr = String::new();
    std::io::Read::read_to_string(&mut worker.stderr.take().unwrap(), &mut worker_stderr).unwrap();
    assert!(status.success(), "worker: {worker_stderr}");
    lines.join().unwrap();
    eprintln!("{rounds} rounds: {gets_whole} gets whole, {gets_gone} of deleted artifacts");
    assert!(gets_whole > 0, "no get ran beside the writer");
}
