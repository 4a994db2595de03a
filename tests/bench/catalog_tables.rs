//! The catalog and chunk index as redb tables (issue 10, "decide by
//! measurement"): what applying puts to the tables costs against the
//! in-memory catalog and index, how long the tables take to open again,
//! and a tag query's first page from each, in one run.
//!
//! `cargo bench -p tensor-blob-host --bench catalog_tables [-- --artifacts N --batch B --checkpoint C --cache-mib M]`
//!
//! Each artifact has 10 tags (of 1000), 10 distinct chunks, a filename,
//! content type, creator and one custom pair. The tables get a
//! non-durable commit every `B` puts (16; group commit batches so) and a
//! durable one (quick repair) every `C` puts (10,000). The database file
//! is in a temporary directory on the real file system.

use std::sync::Arc;

use tensor_blob_host::store::backend::cap::CapDir;
use tensor_blob_host::store::measure;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let artifacts = arg("--artifacts", 100_000);
    let batch = arg("--batch", 16);
    let checkpoint = arg("--checkpoint", 10_000);
    let cache_mib = arg("--cache-mib", 64);
    let temp = tempfile::tempdir().expect("tempdir");
    let dir =
        Arc::new(CapDir::create_ambient(temp.path(), cap_std::ambient_authority()).expect("dir"));
    let r = measure::catalog_tables(
        dir.as_ref(),
        artifacts,
        batch,
        checkpoint,
        (cache_mib as usize) << 20,
    )
    .expect("measure");
    let per_put = |d: std::time::Duration| d.as_secs_f64() * 1e6 / r.artifacts as f64;
    println!("catalog tables: {} artifacts, {} chunks, commit every {batch}, durable every {checkpoint}, cache {cache_mib} MiB", r.artifacts, r.chunks);
    println!(
        "apply per put: memory {:.1} us, tables {:.1} us (commits {:.1} us of it, {} durable): ratio {:.1}x",
        per_put(r.memory_apply),
        per_put(r.tables_apply),
        per_put(r.tables_commits),
        r.durable_commits,
        r.tables_apply.as_secs_f64() / r.memory_apply.as_secs_f64()
    );
    println!(
        "reopen (clean) + chunk index totals: {:.2} ms",
        r.reopen.as_secs_f64() * 1e3
    );
    println!(
        "tag first page (100, records decoded): tables p50 {:.1} us p99 {:.1} us; memory p50 {:.1} us p99 {:.1} us",
        r.tag_page_tables.0.as_secs_f64() * 1e6,
        r.tag_page_tables.1.as_secs_f64() * 1e6,
        r.tag_page_memory.0.as_secs_f64() * 1e6,
        r.tag_page_memory.1.as_secs_f64() * 1e6
    );
    println!(
        "file {:.1} MiB: {:.0} bytes per artifact (with its 10 chunks)",
        r.file_bytes as f64 / (1 << 20) as f64,
        r.file_bytes as f64 / r.artifacts as f64
    );
}
