//! Measurements of internals for the benchmarks (`tests/bench/`), which
//! cannot reach private modules. Not an API: hidden from the docs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::catalog_db;
use super::chunk_db::{self, ChunkDb};
use super::db::{self, DbError};
use super::index::{Index, Location};
use super::meta::{Catalog, Manifest};
use super::meta_index::Key;
use super::types::{ArtifactId, ChunkRef, Hash, Metadata, Order};

/// What [`catalog_tables`] measured.
#[derive(Debug)]
pub struct TablesReport {
    pub artifacts: u64,
    pub chunks: u64,
    /// Applying every put to the in-memory catalog and index.
    pub memory_apply: Duration,
    /// Applying the same puts to the tables, commits included.
    pub tables_apply: Duration,
    /// Of that, the non-durable commits and the durable checkpoints.
    pub tables_commits: Duration,
    pub durable_commits: u64,
    /// Opening the database again (clean close) and loading the chunk
    /// index's totals and accounts.
    pub reopen: Duration,
    /// First page (100) of a tag query, p50 and p99, tables and memory.
    pub tag_page_tables: (Duration, Duration),
    pub tag_page_memory: (Duration, Duration),
    pub file_bytes: u64,
}

fn tags_of(i: u64) -> Vec<String> {
    (0..10u64)
        .map(|k| format!("tag-{}", (i * 7 + k * 13) % 1000))
        .collect()
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

/// Puts `artifacts` artifacts (10 tags, 10 distinct chunks each) into an
/// in-memory catalog and index, then the same into the tables in `dir`
/// (a non-durable commit every `batch` puts, as group commit would, and a
/// durable one every `checkpoint` puts), reopens the tables and pages a
/// tag query both ways. redb caches up to `cache_bytes` of its file.
pub fn catalog_tables(
    dir: &dyn Backend,
    artifacts: u64,
    batch: u64,
    checkpoint: u64,
    cache_bytes: usize,
) -> Result<TablesReport, DbError> {
    let make = |i: u64| {
        let chunks: Vec<ChunkRef> = (0..10u64)
            .map(|k| ChunkRef {
                digest: Hash::of(&(i * 10 + k).to_le_bytes()),
                len: 1 << 20,
            })
            .collect();
        let manifest = Arc::new(Manifest::new(chunks));
        let meta = Metadata {
            id: ArtifactId::from_bytes((u128::from(i) + 1).to_be_bytes()),
            filename: Some(format!("runs/{}/step-{}.bin", i / 100, i % 100)),
            content_type: Some("application/octet-stream".into()),
            creator: Some(format!("user-{}", i % 100)),
            size: 10 << 20,
            digest: Hash::of(&i.to_be_bytes()),
            chunk_count: 10,
            created_ms: i,
            modified_ms: i,
            tags: tags_of(i),
            links: Vec::new(),
            external_links: Vec::new(),
            custom: vec![("lr".into(), format!("{}", i % 4))],
        };
        (meta, manifest)
    };
    let at = |i: u64, k: u64| Location {
        segment: 1 + i / 20_000,
        offset: 24 + ((i % 20_000) * 10 + k) * ((1 << 20) + 49),
    };

    let started = Instant::now();
    let mut catalog = Catalog::default();
    let mut index = Index::default();
    for i in 0..artifacts {
        let (meta, manifest) = make(i);
        for (k, chunk) in manifest.chunks.iter().enumerate() {
            index.insert_put(chunk.digest, at(i, k as u64), chunk.len, chunk.len);
        }
        catalog.insert(meta, Arc::clone(&manifest));
        for chunk in &manifest.chunks {
            index.add_ref(&chunk.digest, chunk.len);
            index.unpin(&chunk.digest);
        }
    }
    let memory_apply = started.elapsed();

    let database = db::open(dir, "measure.redb", cache_bytes)?;
    let started = Instant::now();
    let mut commits = Duration::ZERO;
    let mut durable_commits = 0;
    let mut txn = db::begin_write(&database, false)?;
    let mut chunks = ChunkDb::open(&txn)?;
    for i in 0..artifacts {
        let (meta, manifest) = make(i);
        // As the store applies a put: both table sets opened once for it.
        let mut chunk_tables = chunk_db::Tables::new(&txn);
        let mut catalog_tables = catalog_db::Tables::new(&txn);
        for (k, chunk) in manifest.chunks.iter().enumerate() {
            chunks.insert_put(
                &mut chunk_tables,
                chunk.digest,
                at(i, k as u64),
                chunk.len,
                chunk.len,
            )?;
        }
        catalog_db::insert(&mut catalog_tables, meta, Arc::clone(&manifest))?;
        for chunk in &manifest.chunks {
            chunks.add_ref(&mut chunk_tables, &chunk.digest, chunk.len)?;
            chunks.unpin(&mut chunk_tables, &chunk.digest)?;
        }
        if (i + 1) % batch == 0 || i + 1 == artifacts {
            let durable = (i + 1) % checkpoint == 0 || i + 1 == artifacts;
            let commit = Instant::now();
            chunks.flush(&mut chunk_tables)?;
            drop((chunk_tables, catalog_tables));
            txn.commit()?;
            txn = db::begin_write(&database, durable)?;
            commits += commit.elapsed();
            durable_commits += u64::from(durable);
        }
    }
    drop(txn);
    let tables_apply = started.elapsed();
    drop(database);

    let started = Instant::now();
    let database = db::open(dir, "measure.redb", cache_bytes)?;
    let txn = db::begin_write(&database, false)?;
    let reopened = ChunkDb::open(&txn)?;
    let reopen = started.elapsed();
    assert_eq!(reopened.referenced(), index_referenced(&index));

    let mut rng = fastrand::Rng::with_seed(1);
    let (mut tables, mut memory) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let key = Key::Tag(format!("tag-{}", rng.u64(0..1000)));
        let started = Instant::now();
        let mut catalog_tables = catalog_db::Tables::new(&txn);
        let page = catalog_db::postings(&mut catalog_tables, &key, None, Order::NewestFirst, 100)?;
        for &seq in &page {
            std::hint::black_box(catalog_db::at_seq(&mut catalog_tables, seq)?);
        }
        tables.push(started.elapsed());
        let started = Instant::now();
        let ours: Vec<u64> = catalog
            .index
            .postings(&key)
            .map(|postings| postings.walk(None, Order::NewestFirst).take(100).collect())
            .unwrap_or_default();
        for seq in &ours {
            std::hint::black_box(&catalog.artifacts[&catalog.order[seq]]);
        }
        memory.push(started.elapsed());
        assert_eq!(page, ours, "{key:?}");
    }
    let file_bytes = dir
        .open("measure.redb", super::backend::OpenMode::Read)?
        .len()?;
    Ok(TablesReport {
        artifacts,
        chunks: artifacts * 10,
        memory_apply,
        tables_apply,
        tables_commits: commits,
        durable_commits,
        reopen,
        tag_page_tables: percentiles(tables),
        tag_page_memory: percentiles(memory),
        file_bytes,
    })
}

fn index_referenced(index: &Index) -> (u64, u64) {
    (index.referenced_chunks(), index.referenced_bytes())
}
