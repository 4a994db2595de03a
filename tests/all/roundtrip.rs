//! Goal: every size round-trips byte for byte through plugin-facing calls,
//! the chunker component and the durable store, inline and streaming.
//! Method: put through the real chunker, read back, compare bytes and
//! BLAKE3 digests; sizes at and around chunk boundaries, 0 B and 256 MiB.
//! Each test runs on a local directory and on a bucket of a real s3s-fs
//! (`on_each_backing!`): `<test>::disk`, `<test>::bucket`.

use tensor_blob_host::runtime::metadata;
use tensor_blob_host::runtime::{BlobError, WitError};

use tensor_blob_host::store::StoreOptions;

use crate::common::{
    self, data, fixed, on_each_backing, options, HashSink, PseudoRandom, TestStore,
};

on_each_backing! {
    fn empty_artifact_is_stored_listed_and_read_back_empty(backing) {
        let store = TestStore::on(backing, StoreOptions::default());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let id = chunker.put(&[], &options()).unwrap();
        assert_eq!(chunker.get(&id).unwrap(), Vec::<u8>::new());
        let meta = metadata::stat(chunker.store(), &id).unwrap();
        assert_eq!(meta.size, 0);
        assert_eq!(meta.chunk_count, 0);
        assert_eq!(meta.digest, blake3::hash(b"").as_bytes().to_vec());
        assert_eq!(
            metadata::list(chunker.store(), None, 100).unwrap(),
            vec![id.clone()]
        );
        let mut sink = HashSink::default();
        assert_eq!(chunker.get_into(&id, &mut sink, &mut |_| {}).unwrap(), 0);
    }
}

on_each_backing! {
    fn sizes_around_chunk_boundaries_round_trip(backing) {
        let store = TestStore::on(backing, common::unsynced_options());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let chunk = 4096usize;
        for (i, len) in [
            1,
            chunk - 1,
            chunk,
            chunk + 1,
            2 * chunk - 1,
            2 * chunk,
            2 * chunk + 1,
            10 * chunk + 7,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes = data(len, i as u64 + 1);
            let id = chunker.put(&bytes, &fixed(chunk as u32)).unwrap();
            let back = chunker.get(&id).unwrap();
            assert_eq!(back, bytes, "fixed chunking, {len} bytes");
            let meta = metadata::stat(chunker.store(), &id).unwrap();
            assert_eq!(meta.size, len as u64);
            assert_eq!(meta.chunk_count, len.div_ceil(chunk) as u64, "{len} bytes");
            assert_eq!(meta.digest, blake3::hash(&bytes).as_bytes().to_vec());
        }
        // Content-defined chunking: default max is 256 KiB, cross it a few times.
        for (i, len) in [
            1,
            16 << 10,
            (256 << 10) - 1,
            256 << 10,
            (256 << 10) + 1,
            3 << 20,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes = data(len, 100 + i as u64);
            let id = chunker.put(&bytes, &options()).unwrap();
            assert_eq!(chunker.get(&id).unwrap(), bytes, "cdc, {len} bytes");
        }
    }
}

on_each_backing! {
    fn streaming_writes_of_odd_sizes_match_one_shot_chunking(backing) {
        // The same bytes written in one call or in many odd pieces must give
        // the same chunks (same digest, same chunk count, full dedup).
        let store = TestStore::on(backing, common::unsynced_options());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let bytes = data(5 << 20, 7);
        let one = chunker.put(&bytes, &options()).unwrap();
        let physical = metadata::stats(chunker.store()).physical_bytes;
        let writer = chunker.create_writer(&options()).unwrap();
        let mut offset = 0;
        let mut step = 1;
        while offset < bytes.len() {
            let end = (offset + step).min(bytes.len());
            chunker.writer_write(&writer, &bytes[offset..end]).unwrap();
            offset = end;
            step = step * 3 + 1;
        }
        let two = chunker.writer_finish(&writer).unwrap();
        chunker.release(writer).unwrap();
        let (a, b) = (
            metadata::stat(chunker.store(), &one).unwrap(),
            metadata::stat(chunker.store(), &two).unwrap(),
        );
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.chunk_count, b.chunk_count);
        assert_eq!(
            metadata::stats(chunker.store()).physical_bytes,
            physical,
            "no new chunk bytes"
        );
    }
}

on_each_backing! {
    fn range_reads_return_the_right_slice(backing) {
        let store = TestStore::on(backing, common::unsynced_options());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let bytes = data(1 << 20, 3);
        let id = chunker.put(&bytes, &fixed(4096)).unwrap();
        for offset in [0u64, 1, 4095, 4096, 4097, 500_000, (1 << 20) - 1, 1 << 20] {
            let reader = chunker.open_reader(&id, offset).unwrap();
            let got = chunker.reader_read(&reader, 10_000).unwrap();
            let start = offset as usize;
            let end = (start + 10_000).min(bytes.len());
            assert_eq!(got, bytes[start..end], "offset {offset}");
            chunker.reader_seek(&reader, 10).unwrap();
            assert_eq!(chunker.reader_read(&reader, 5).unwrap(), bytes[10..15]);
            assert_eq!(chunker.reader_size(&reader).unwrap(), 1 << 20);
            chunker.release(reader).unwrap();
        }
        let past_end = chunker.open_reader(&id, (1 << 20) + 1);
        assert!(matches!(
            past_end,
            Err(BlobError::Blob(WitError::InvalidArgument(_)))
        ));
    }
}

on_each_backing! {
    fn inline_get_over_the_limit_is_too_large_and_reader_still_works(backing) {
        let store = TestStore::on(backing, common::unsynced_options());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let limit = chunker.inline_bytes_max();
        let mut source = PseudoRandom::new(9, limit + 1);
        let id = chunker
            .put_from(&mut source, &options(), &mut |_| {})
            .unwrap();
        assert!(matches!(
            chunker.get(&id),
            Err(BlobError::Blob(WitError::TooLarge(_)))
        ));
        let mut sink = HashSink::default();
        assert_eq!(
            chunker.get_into(&id, &mut sink, &mut |_| {}).unwrap(),
            limit + 1
        );
    }
}

on_each_backing! {
    fn artifact_of_256_mib_round_trips_streaming(backing) {
        let store = TestStore::on(backing, StoreOptions::default());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let len: u64 = 256 << 20;
        let mut expected = HashSink::default();
        std::io::copy(&mut PseudoRandom::new(256, len), &mut expected).unwrap();
        let id = chunker
            .put_from(&mut PseudoRandom::new(256, len), &options(), &mut |_| {})
            .unwrap();
        let meta = metadata::stat(chunker.store(), &id).unwrap();
        assert_eq!(meta.size, len);
        assert_eq!(meta.digest, expected.hasher.finalize().as_bytes().to_vec());
        let mut back = HashSink::default();
        assert_eq!(chunker.get_into(&id, &mut back, &mut |_| {}).unwrap(), len);
        assert_eq!(back.hasher.finalize(), expected.hasher.finalize());
    }
}

on_each_backing! {
    fn metadata_tags_links_and_custom_pairs_are_kept_and_updatable(backing) {
        let mut store = TestStore::on(backing, StoreOptions::default());
        let mut chunker = store.runtime.chunker("default").unwrap();
        let base = chunker.put(b"base", &options()).unwrap();
        let mut opts = options();
        opts.filename = Some("model.bin".into());
        opts.content_type = Some("application/octet-stream".into());
        opts.creator = Some("test".into());
        opts.tags = vec!["v2".into(), "model".into()];
        opts.links = vec![base.clone()];
        opts.custom = vec![tensor_blob_host::runtime::KeyValue {
            key: "epoch".into(),
            value: "7".into(),
        }];
        let id = chunker.put(b"derived", &opts).unwrap();
        assert_eq!(
            metadata::find_by_tag(chunker.store(), "model").unwrap(),
            vec![id.clone()]
        );
        drop(chunker);
        store.reopen();
        let mut chunker = store.runtime.chunker("default").unwrap();
        let meta = metadata::stat(chunker.store(), &id).unwrap();
        assert_eq!(meta.filename.as_deref(), Some("model.bin"));
        assert_eq!(meta.tags, vec!["v2".to_string(), "model".to_string()]);
        assert_eq!(meta.links, vec![base.clone()]);
        assert_eq!(meta.custom[0].value, "7");
        let change = tensor_blob_host::runtime::MetadataUpdate {
            filename: Some(None),
            content_type: None,
            tags: Some(vec!["released".into()]),
            links: None,
            custom: None,
            ..Default::default()
        };
        let updated = metadata::update(chunker.store(), &id, change).unwrap();
        assert_eq!(updated.filename, None);
        assert_eq!(updated.tags, vec!["released".to_string()]);
        assert!(metadata::find_by_tag(chunker.store(), "model")
            .unwrap()
            .is_empty());
        // A link to an artifact that does not exist is refused.
        let mut bad = options();
        bad.links = vec!["0".repeat(32)];
        assert!(matches!(
            chunker.put(b"x", &bad),
            Err(BlobError::Blob(
                WitError::NotFound(_) | WitError::InvalidArgument(_)
            ))
        ));
    }
}

on_each_backing! {
    fn bad_arguments_get_typed_errors(backing) {
        let store = TestStore::on(backing, common::unsynced_options());
        let mut chunker = store.runtime.chunker("default").unwrap();
        assert!(matches!(
            chunker.get("not-an-id"),
            Err(BlobError::Blob(WitError::InvalidArgument(_)))
        ));
        assert!(matches!(
            chunker.get(&"a".repeat(32)),
            Err(BlobError::Blob(WitError::NotFound(_)))
        ));
        assert!(matches!(
            metadata::delete(chunker.store(), &"a".repeat(32)),
            Err(BlobError::Blob(WitError::NotFound(_)))
        ));
        assert!(matches!(
            chunker.put(b"x", &fixed(3)),
            Err(BlobError::Blob(WitError::InvalidArgument(_)))
        ));
        let _ = common::engine();
    }
}
