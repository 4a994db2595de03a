//! Stream benchmark: put and get MB/s through `tensor:blob/stream-blobs`
//! (WASI 0.3 `stream<u8>`, chunker on a worker thread) against the
//! `writer`/`reader` resources (chunker nested in each plugin call), in
//! the same run, on the same machine, as ratios.
//!
//! `cargo bench -p tensor-blob-host --bench streams` (release build).
//! `TBLOB_BENCH_BYTES` changes the artifact size (default 256 MiB).
//!
//! Both sides run in a real `tblob run` process on a fresh store, with
//! fsync at commit, and time inside the plugin with the data already in
//! its memory: bench-plugin (1 MiB `writer.write`s plus `finish`; 1 MiB
//! `reader.read`s, hashed) and stream-plugin `put-mem` (1 MiB stream
//! writes, the call returning the durable id) and `get` (1 MiB stream
//! reads, hashed, then the future).

use std::path::Path;
use std::process::Command;

const MB: f64 = 1e6;

fn main() {
    let bytes: u64 = std::env::var("TBLOB_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 20);
    let reps = 3;
    println!(
        "tensor-blob stream benchmark: {} MiB artifacts, median of {reps}",
        bytes >> 20
    );
    let mut resource_puts = Vec::new();
    let mut resource_gets = Vec::new();
    let mut stream_puts = Vec::new();
    let mut stream_gets = Vec::new();
    for _ in 0..reps {
        let (put, get) = resource_path(bytes);
        resource_puts.push(put);
        resource_gets.push(get);
        let (put, get) = stream_path(bytes);
        stream_puts.push(put);
        stream_gets.push(get);
    }
    let (resource_put, resource_get) = (median(resource_puts), median(resource_gets));
    let (stream_put, stream_get) = (median(stream_puts), median(stream_gets));
    println!(
        "resource put (writer, fsync): {:8.1} MB/s",
        resource_put / MB
    );
    println!(
        "stream put (stream<u8>):      {:8.1} MB/s   stream / resource {:.2}x",
        stream_put / MB,
        stream_put / resource_put
    );
    println!(
        "resource get (reader):        {:8.1} MB/s",
        resource_get / MB
    );
    println!(
        "stream get (stream<u8>):      {:8.1} MB/s   stream / resource {:.2}x",
        stream_get / MB,
        stream_get / resource_get
    );
}

fn tblob(store: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tblob"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("TBLOB_STORE")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tblob {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

fn seconds(line: &str, name: &str) -> f64 {
    field(line, name).parse().unwrap()
}

/// (put, get) bytes per second through the writer and reader resources.
fn resource_path(bytes: u64) -> (f64, f64) {
    let store = tempfile::tempdir().unwrap();
    let line = tblob(
        store.path(),
        &[
            "run",
            tensor_blob_artifacts::BENCH_PLUGIN_WASM_PATH,
            &bytes.to_string(),
        ],
    );
    (
        bytes as f64 / seconds(&line, "put_seconds="),
        bytes as f64 / seconds(&line, "get_seconds="),
    )
}

/// (put, get) bytes per second through `stream-blobs`.
fn stream_path(bytes: u64) -> (f64, f64) {
    let store = tempfile::tempdir().unwrap();
    let plugin = tensor_blob_artifacts::STREAM_PLUGIN_WASM_PATH;
    let put = tblob(
        store.path(),
        &["run", plugin, "put-mem", "1", &bytes.to_string()],
    );
    let id = field(&put, "id=").to_string();
    let get = tblob(store.path(), &["run", plugin, "get", &id]);
    assert_eq!(field(&get, "bytes="), bytes.to_string(), "{get}");
    assert_eq!(field(&get, "result="), "ok", "{get}");
    (
        bytes as f64 / seconds(&put, "seconds="),
        bytes as f64 / seconds(&get, "seconds="),
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
