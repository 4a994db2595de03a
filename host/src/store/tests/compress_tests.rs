//! Chunk compression through the whole store (issue 11): what is stored
//! compressed reads back byte for byte, from the tables, from hints and
//! from a scan; stats and quotas count what is on disk; GC moves compressed
//! records as they are; damage to a compressed record is a typed error;
//! stores written without compression (records of version 2, hints of
//! version 1) still open.

use super::*;

/// Text-like bytes: words from a small vocabulary in a seeded order, so
/// they compress about 4x, and differently per seed.
fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "tensor ",
        "blob ",
        "chunk ",
        "segment ",
        "digest ",
        "manifest ",
        "host ",
        "guest ",
        "wasm ",
        "commit\n",
        "record ",
        "zstd ",
    ];
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.usize(..WORDS.len())].as_bytes());
    }
    out.truncate(len);
    out
}

/// Durable (so the catalog is on file), with small segments (so there
/// are sealed ones with hints).
fn options() -> StoreOptions {
    StoreOptions {
        segment_bytes_max: 64 << 10,
        ..StoreOptions::default()
    }
}

fn check_layout(stats: &Stats) {
    assert_eq!(
        stats.live_bytes + stats.dead_bytes + stats.segments * format::SEGMENT_HEADER_BYTES,
        stats.disk_bytes,
        "live, dead and header bytes make up the disk bytes: {stats:?}"
    );
}

/// Goal: compressible chunks are stored compressed and read back exactly,
/// incompressible ones as they are; stats say both; all of it the same
/// after a reopen from the tables, from hints alone and from a full scan.
#[test]
fn compressed_chunks_read_back_exactly_after_every_kind_of_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, options());
    let words = text(200_000, 1);
    let noise = data(50_000, 2);
    let words_id = put(&store, &words, 10_000);
    let noise_id = put(&store, &noise, 10_000);
    let stats = store.stats();
    assert_eq!(stats.physical_bytes, 250_000);
    let noise_stored = 50_000;
    assert!(
        stats.stored_bytes < noise_stored + 200_000 / 3,
        "text stored compressed: {stats:?}"
    );
    assert!(stats.stored_bytes > noise_stored, "noise stored as it is");
    assert!(stats.disk_bytes < 150_000, "{stats:?}");
    check_layout(&stats);
    store.check_gc_accounting().unwrap();
    assert_eq!(get(&store, &words_id).unwrap(), words);
    assert_eq!(get(&store, &noise_id).unwrap(), noise);
    store.verify(&words_id).unwrap();
    drop(store);

    let reopen = |why: &str| {
        let store = open(&dir, options());
        assert!(
            store.recovery_report().problems.is_empty(),
            "{why}: {:?}",
            store.recovery_report()
        );
        assert_eq!(get(&store, &words_id).unwrap(), words, "{why}");
        assert_eq!(get(&store, &noise_id).unwrap(), noise, "{why}");
        let again = store.stats();
        assert_eq!(
            (again.stored_bytes, again.physical_bytes, again.live_bytes),
            (stats.stored_bytes, stats.physical_bytes, stats.live_bytes),
            "{why}"
        );
        store.check_gc_accounting().unwrap();
        store
    };
    drop(reopen("from the catalog checkpoint"));
    forget_catalog(&dir);
    let store = reopen("from hints");
    assert!(store.open_stats().segments_from_hints > 0);
    drop(store);
    for hint in hint_files(&dir) {
        std::fs::remove_file(hint).unwrap();
    }
    forget_catalog(&dir);
    let store = reopen("from a scan");
    assert_eq!(store.open_stats().segments_from_hints, 0);
    assert!(store.verify_all().damaged.is_empty());
}

/// Goal: an upload can turn compression off, and a store can; either way
/// the bytes read back, and what was stored compressed stays readable.
#[test]
fn compression_can_be_turned_off_per_upload_and_per_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, options());
    let words = text(100_000, 3);
    let mut upload = store.begin_upload();
    upload.set_compression(Compression::Off);
    let chunks = chunk_refs(&words, 10_000);
    for chunk in words.chunks(10_000) {
        upload.put_chunk(&Hash::of(chunk), chunk).unwrap();
    }
    let plain = upload
        .commit(
            &chunks,
            words.len() as u64,
            Some(&Hash::of(&words)),
            NewMetadata::default(),
        )
        .unwrap();
    assert_eq!(store.stats().stored_bytes, 100_000, "stored as it is");
    let compressed = put(&store, &text(100_000, 4), 10_000);
    assert!(store.stats().stored_bytes < 150_000);
    drop(store);

    let off = StoreOptions {
        compression: Compression::Off,
        ..options()
    };
    let store = open(&dir, off);
    assert_eq!(get(&store, &plain).unwrap(), words);
    assert_eq!(get(&store, &compressed).unwrap(), text(100_000, 4));
    let before = store.stats().stored_bytes;
    put(&store, &text(50_000, 5), 10_000);
    assert_eq!(store.stats().stored_bytes, before + 50_000);
    // A higher level stores smaller.
    drop(store);
    let mut sizes = Vec::new();
    for level in [1, 19] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(
            &dir,
            StoreOptions {
                compression: Compression::Zstd { level },
                ..options()
            },
        );
        let id = put(&store, &words, 50_000);
        assert_eq!(get(&store, &id).unwrap(), words);
        sizes.push(store.stats().stored_bytes);
    }
    assert!(sizes[1] < sizes[0], "{sizes:?}");
}

/// Goal: GC copies a compressed record as it is (no second compression,
/// same stored bytes) and everything live reads back after it and after a
/// reopen.
#[test]
fn gc_moves_compressed_records_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, options());
    let doomed = put(&store, &text(150_000, 6), 5_000);
    let kept_bytes = text(150_000, 7);
    let kept = put(&store, &kept_bytes, 5_000);
    let noise = data(40_000, 8);
    let noise_id = put(&store, &noise, 5_000);
    let before = store.stats();
    store.delete(&doomed).unwrap();
    let report = store.gc().unwrap();
    assert!(report.bytes_reclaimed > 0, "{report:?}");
    let after = store.stats();
    assert!(after.disk_bytes < before.disk_bytes);
    assert_eq!(after.garbage_chunks, 0);
    check_layout(&after);
    store.check_gc_accounting().unwrap();
    assert_eq!(get(&store, &kept).unwrap(), kept_bytes);
    assert_eq!(get(&store, &noise_id).unwrap(), noise);
    let stored_live = after.stored_bytes;
    drop(store);
    forget_catalog(&dir);
    let store = open(&dir, options());
    assert_eq!(store.stats().stored_bytes, stored_live);
    assert_eq!(get(&store, &kept).unwrap(), kept_bytes);
    assert!(store.verify_all().damaged.is_empty());
}

/// (offset, version) of every record header in a segment file, found by
/// the record magic (whose 0xFE and 0xFF bytes the text-like contents of
/// these tests never hold).
fn record_versions(segment: &PathBuf) -> Vec<(u64, u8)> {
    let bytes = std::fs::read(segment).unwrap();
    let magic = format::CHUNK_RECORD_MAGIC.to_le_bytes();
    (0..bytes.len() - 8)
        .filter(|&at| bytes[at..at + 4] == magic)
        .map(|at| (at as u64, bytes[at + 4]))
        .collect()
}

/// The offset of the first compressed record (version 3) of a segment.
fn first_compressed_record(segment: &PathBuf) -> u64 {
    record_versions(segment)
        .into_iter()
        .find(|&(_, version)| version == format::CHUNK_RECORD_VERSION_FLAGS)
        .unwrap()
        .0
}

/// Goal: damage inside a compressed record (its frame, or the chunk length
/// it declares) is a typed `Corrupted` error on read and in `verify`, is
/// reported by an open that scans it, never a panic, and harms no other
/// artifact; putting the bytes again heals it.
#[test]
fn damaged_compressed_records_are_corrupted_never_returned() {
    for (what, at_in_payload, flip) in [
        ("frame", 40u64, 0x55u8),
        ("frame end", u64::MAX, 0x01),
        ("declared length", 0, 0x01),
        ("declared length high byte", 3, 0x80),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, options());
        let damaged_bytes = text(20_000, 9);
        let damaged = put(&store, &damaged_bytes, 20_000);
        let intact_bytes = text(20_000, 10);
        let intact = put(&store, &intact_bytes, 20_000);
        drop(store);
        let segment = segment_files(&dir)[0].clone();
        let record = first_compressed_record(&segment);
        let stored = {
            let bytes = std::fs::read(&segment).unwrap();
            let at = record as usize + 8;
            u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()))
        };
        let at = if at_in_payload == u64::MAX {
            stored - 1
        } else {
            at_in_payload
        };
        flip_byte_by(&segment, record + format::CHUNK_HEADER_BYTES + at, flip);

        let store = open(&dir, options());
        let error = get(&store, &damaged).unwrap_err();
        assert!(matches!(error, StoreError::Corrupted(_)), "{what}: {error}");
        assert!(
            matches!(store.verify(&damaged), Err(StoreError::Corrupted(_))),
            "{what}"
        );
        assert_eq!(get(&store, &intact).unwrap(), intact_bytes, "{what}");
        let report = store.verify_all();
        assert_eq!(report.damaged.len(), 1, "{what}");
        drop(store);

        // An open that scans (payloads checked) reports the record and
        // steps over it; putting the chunk again then heals the artifact.
        for hint in hint_files(&dir) {
            std::fs::remove_file(hint).unwrap();
        }
        forget_catalog(&dir);
        let store = open(&dir, options());
        let problems = &store.recovery_report().problems;
        assert!(
            problems
                .iter()
                .any(|p| p.kind == ProblemKind::MissingChunk
                    && p.message.contains(&damaged.to_string())),
            "{what}: {problems:?}"
        );
        assert!(
            matches!(get(&store, &damaged), Err(StoreError::Corrupted(_))),
            "{what}"
        );
        assert_eq!(get(&store, &intact).unwrap(), intact_bytes, "{what}");
        let mut upload = store.begin_upload();
        let digest = Hash::of(&damaged_bytes);
        assert_eq!(upload.missing(&[digest]).unwrap(), vec![true], "{what}");
        upload.put_chunk(&digest, &damaged_bytes).unwrap();
        drop(upload);
        assert_eq!(get(&store, &damaged).unwrap(), damaged_bytes, "{what}");
    }
}

fn flip_byte_by(path: &PathBuf, at: u64, by: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= by;
    std::fs::write(path, &bytes).unwrap();
}

/// Goal: a store as code before compression wrote it (every record of
/// version 2, hints of version 1, no catalog file) opens from its hints and
/// reads back; what it then adds is compressed beside the old records.
#[test]
fn stores_from_before_compression_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let off = StoreOptions {
        compression: Compression::Off,
        ..options()
    };
    let store = open(&dir, off);
    let old_bytes = text(300_000, 11);
    let old = put(&store, &old_bytes, 10_000);
    drop(store);
    // With compression off every record is one code from before
    // compression reads: version 2.
    let versions: Vec<(u64, u8)> = segment_files(&dir)
        .iter()
        .flat_map(record_versions)
        .collect();
    assert_eq!(versions.len(), 30, "{versions:?}");
    assert!(versions
        .iter()
        .all(|&(_, v)| v == format::CHUNK_RECORD_VERSION));
    // Rewrite every hint in version 1's layout.
    for hint in hint_files(&dir) {
        let bytes = std::fs::read(&hint).unwrap();
        let segment_id: u64 = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        let segment_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
        let decoded = format::decode_hint(&bytes, segment_id, segment_len).unwrap();
        let mut v1 = bytes[..format::HINT_HEADER_BYTES as usize].to_vec();
        v1[4] = format::HINT_VERSION_V1;
        for entry in decoded.entries() {
            assert!(!entry.compressed());
            v1.extend_from_slice(&entry.offset.to_le_bytes());
            v1.extend_from_slice(&entry.payload_len.to_le_bytes());
            v1.extend_from_slice(&entry.digest);
        }
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(&hint, v1).unwrap();
    }
    forget_catalog(&dir);
    let store = open(&dir, options());
    assert!(
        store.recovery_report().problems.is_empty(),
        "{:?}",
        store.recovery_report()
    );
    assert!(store.open_stats().segments_from_hints > 0);
    assert_eq!(store.open_stats().segments_scanned, 0, "v1 hints were read");
    assert_eq!(get(&store, &old).unwrap(), old_bytes);
    assert_eq!(store.stats().stored_bytes, 300_000);
    let new_bytes = text(100_000, 12);
    let new = put(&store, &new_bytes, 10_000);
    assert!(store.stats().stored_bytes < 300_000 + 50_000);
    drop(store);
    forget_catalog(&dir);
    let store = open(&dir, options());
    assert_eq!(get(&store, &old).unwrap(), old_bytes);
    assert_eq!(get(&store, &new).unwrap(), new_bytes);
}

/// Goal: the bytes quota charges what a chunk takes on disk, compressed.
#[test]
fn quota_charges_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let words = text(100_000, 13);
    // Room for the compressed text (about 25 KB) and its metadata, not for
    // the text as it is.
    let quota = StoreOptions {
        quota: Quota {
            bytes_max: Some(60_000),
            ..Quota::default()
        },
        ..options()
    };
    let store = open(&dir, quota.clone());
    let id = put(&store, &words, 10_000);
    assert_eq!(get(&store, &id).unwrap(), words);
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        StoreOptions {
            compression: Compression::Off,
            ..quota
        },
    );
    let error = put_with(&store, &words, 10_000, NewMetadata::default()).unwrap_err();
    assert!(matches!(error, StoreError::QuotaExceeded(_)), "{error}");
}
