//! Throughput and memory benchmark: prints ratios measured in one run, on
//! the same data, on this machine.
//!
//! `cargo bench -p tensor-blob-host --bench throughput` (release build).
//! `TBLOB_BENCH_BYTES` changes the artifact size (default 256 MiB);
//! `TBLOB_SEED_BENCH` names a built `seedbench` binary (../shared/seed-bench)
//! to compare against tensor_blob 0.4.0 in the same run.
//!
//! Figures:
//! - native: FastCDC (avg 64 KiB) + BLAKE3 per chunk over an in-memory
//!   buffer, the work a put must do at the least;
//! - plugin put/get: `tblob run bench-plugin`, timed inside the plugin:
//!   plugin -> host -> chunker component -> host store, fsync at commit;
//!   get verifies every chunk;
//! - embedded put/get: the same through the host's `Chunker` API;
//! - extra peak RSS of a `tblob put` / `tblob get` process over a `tblob
//!   get` of an empty artifact of the same store (engine and chunker
//!   loaded, no data).

use std::io::Cursor;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use tensor_blob_chunking::{chunk_digest, chunk_lengths, CdcParams, Chunking};
use tensor_blob_host::runtime::{self, PutOptions, Runtime, RuntimeOptions};

const MB: f64 = 1e6;

fn main() {
    let bytes: usize = std::env::var("TBLOB_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 20);
    let reps = 3;
    println!(
        "tensor-blob throughput benchmark: {} MiB artifacts, median of {reps}",
        bytes >> 20
    );
    // First, while this process is small: a child's peak RSS on Linux
    // counts what it shared with its parent at fork.
    let (put_rss, get_rss) = extra_rss(bytes);
    let data = pseudo_random(bytes, 0x5eed);

    let native = median((0..reps).map(|_| native_chunk_and_hash(&data)).collect());
    println!("native FastCDC+BLAKE3:        {:8.1} MB/s", native / MB);

    let (plugin_put, plugin_get, plugin_get_interface) = plugin_path(bytes, reps);
    println!(
        "plugin put (fsync):           {:8.1} MB/s   ratio to native {:.3}",
        plugin_put / MB,
        plugin_put / native
    );
    println!("plugin get (verified):        {:8.1} MB/s", plugin_get / MB);
    println!(
        "  less the plugin's compare:  {:8.1} MB/s",
        plugin_get_interface / MB
    );

    let (embedded_put, embedded_get) = embedded_path(&data, reps);
    println!(
        "embedded put (fsync):         {:8.1} MB/s   ratio to native {:.3}",
        embedded_put / MB,
        embedded_put / native
    );
    println!(
        "embedded get (verified):      {:8.1} MB/s   plugin get / embedded get {:.3} ({:.3} less the plugin's compare)",
        embedded_get / MB,
        plugin_get / embedded_get,
        plugin_get_interface / embedded_get
    );

    println!(
        "extra peak RSS, put:          {:8.1} MiB",
        put_rss as f64 / 1024.0
    );
    println!(
        "extra peak RSS, get:          {:8.1} MiB",
        get_rss as f64 / 1024.0
    );

    if let Some(seed) = std::env::var_os("TBLOB_SEED_BENCH") {
        match seed_put(Path::new(&seed), bytes) {
            Some(seed_put) => println!(
                "seed 0.4.0 durable put:       {:8.1} MB/s   ours / seed {:.2}x (plugin), {:.2}x (embedded)",
                seed_put / MB,
                plugin_put / seed_put,
                embedded_put / seed_put
            ),
            None => println!("seed 0.4.0: could not run {seed:?}"),
        }
    }
}

fn native_chunk_and_hash(data: &[u8]) -> f64 {
    let started = Instant::now();
    let lengths = chunk_lengths(data, Chunking::ContentDefined(CdcParams::DEFAULT)).unwrap();
    let mut offset = 0;
    let mut fold = 0u8;
    for len in lengths {
        fold ^= chunk_digest(&data[offset..offset + len]).as_bytes()[0];
        offset += len;
    }
    std::hint::black_box(fold);
    data.len() as f64 / started.elapsed().as_secs_f64()
}

fn tblob(store: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tblob"));
    command.arg("--store").arg(store).env_remove("TBLOB_STORE");
    command
}

/// Put and get bytes per second through the bench plugin; the get also
/// without the time the plugin spent comparing what it read with what it
/// wrote (its own work, which the embedded get, into a sink, does not do).
fn plugin_path(bytes: usize, reps: usize) -> (f64, f64, f64) {
    let mut puts = Vec::new();
    let mut gets = Vec::new();
    let mut interface_gets = Vec::new();
    for _ in 0..reps {
        let store = tempfile::tempdir().unwrap();
        let output = tblob(store.path())
            .args([
                "run",
                tensor_blob_artifacts::BENCH_PLUGIN_WASM_PATH,
                &bytes.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8(output.stdout).unwrap();
        let field = |name: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        puts.push(bytes as f64 / field("put_seconds="));
        gets.push(bytes as f64 / field("get_seconds="));
        interface_gets.push(bytes as f64 / (field("get_seconds=") - field("compare_seconds=")));
    }
    (median(puts), median(gets), median(interface_gets))
}

fn embedded_path(data: &[u8], reps: usize) -> (f64, f64) {
    let engine = wasmtime::Engine::new(&runtime::default_config()).unwrap();
    let mut puts = Vec::new();
    let mut gets = Vec::new();
    for _ in 0..reps {
        let dir = tempfile::tempdir().unwrap();
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let rt = Runtime::new(&engine, root, RuntimeOptions::default()).unwrap();
        let mut chunker = rt.chunker("default").unwrap();
        let started = Instant::now();
        let id = chunker
            .put_from(&mut Cursor::new(data), &PutOptions::default(), &mut |_| {})
            .unwrap();
        puts.push(data.len() as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        let n = chunker
            .get_into(&id, &mut std::io::sink(), &mut |_| {})
            .unwrap();
        gets.push(n as f64 / started.elapsed().as_secs_f64());
        assert_eq!(n, data.len() as u64);
    }
    (median(puts), median(gets))
}

/// Peak RSS (KiB) of a finished child process, from wait4.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its rusage"
)]
fn run_for_rss(mut command: Command) -> (i64, Vec<u8>) {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut limited = std::io::Read::take(&mut stdout, 4096);
        std::io::copy(&mut limited, &mut out).unwrap();
        std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
        out
    });
    let mut status = 0;
    // SAFETY: plain syscall on our own child; rusage is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
    (usage.ru_maxrss, reader.join().unwrap())
}

fn extra_rss(bytes: usize) -> (i64, i64) {
    let store = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("artifact.bin");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut piece = vec![0u8; 1 << 20];
        let mut state = 0x5eedu64;
        for _ in 0..bytes.div_ceil(piece.len()) {
            for word in piece.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            out.write_all(&piece).unwrap();
        }
        out.into_inner().unwrap().set_len(bytes as u64).unwrap();
    }
    // An empty artifact: its put creates the tenant and warms the
    // compilation cache (no later run pays for compiling), and its get is
    // the baseline: engine and chunker loaded, no data moved.
    let empty = work.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let (_, empty_id) = run_for_rss({
        let mut c = tblob(store.path());
        c.arg("put").arg(&empty);
        c
    });
    let empty_id = String::from_utf8(empty_id).unwrap().trim().to_string();
    let (baseline, _) = run_for_rss({
        let mut c = tblob(store.path());
        c.args(["get", &empty_id]);
        c
    });
    let (put, id) = run_for_rss({
        let mut c = tblob(store.path());
        c.arg("put").arg(&file);
        c
    });
    let id = String::from_utf8(id).unwrap().trim().to_string();
    let (get, _) = run_for_rss({
        let mut c = tblob(store.path());
        c.args(["get", &id]);
        c
    });
    println!("peak RSS (KiB): empty get {baseline}, put {put}, get {get}",);
    (put - baseline, get - baseline)
}

/// tensor_blob 0.4.0's DurableBlobStore put with fsync, median MB/s.
fn seed_put(seedbench: &Path, bytes: usize) -> Option<f64> {
    let work = tempfile::tempdir().ok()?;
    let output = Command::new(seedbench)
        .args(["throughput", "durable-fsync", &bytes.to_string(), "3", "1"])
        .arg(work.path())
        .output()
        .ok()?;
    parse_seed_put(&String::from_utf8_lossy(&output.stdout))
}

/// The put MB/s from seedbench's `MEDIAN ... put_MBps=<f64> ...` line.
fn parse_seed_put(out: &str) -> Option<f64> {
    out.lines()
        .filter(|l| l.starts_with("MEDIAN"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("put_MBps="))
        })
        .and_then(|v| v.parse::<f64>().ok())
        .map(|mb| mb * MB)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut out);
    out
}
