//! Goal: the upload pipeline's running whole-content hash (used at commit
//! instead of re-reading every chunk) gives the right digest whatever mix
//! of new, already stored and repeated chunks an artifact has.
//! Method: fixed 4 KiB chunking over data built from repeated 4 KiB blocks
//! (repeats inside one `missing` batch, adjacent and not), more than one
//! batch of chunks, the same content twice, content sharing a prefix with
//! an earlier artifact and content interleaving stored and new blocks; each
//! round-trips and its recorded digest is the BLAKE3 of its bytes.

use crate::common::{data, fixed, options, TestStore};
use tensor_blob_host::runtime::metadata;

const BLOCK: usize = 4096;

/// `pattern` blocks, each a copy of `blocks[i]`.
fn from_blocks(blocks: &[Vec<u8>], pattern: impl IntoIterator<Item = usize>) -> Vec<u8> {
    pattern
        .into_iter()
        .flat_map(|i| blocks[i].iter().copied())
        .collect()
}

fn put_and_check(
    chunker: &mut tensor_blob_host::runtime::Chunker,
    bytes: &[u8],
    options: &tensor_blob_host::runtime::PutOptions,
) -> String {
    let id = chunker.put(bytes, options).unwrap();
    let meta = metadata::stat(chunker.store(), &id).unwrap();
    assert_eq!(meta.size, bytes.len() as u64);
    assert_eq!(meta.digest, blake3::hash(bytes).as_bytes().to_vec());
    assert!(
        chunker.get(&id).unwrap() == bytes,
        "artifact {id} reads back"
    );
    id
}

#[test]
fn running_content_hash_is_right_with_new_stored_and_repeated_chunks() {
    let store = TestStore::unsynced();
    let mut chunker = store.runtime.chunker("default").unwrap();
    let blocks: Vec<Vec<u8>> = (0..8).map(|seed| data(BLOCK, 100 + seed)).collect();
    let zeros = vec![0u8; BLOCK];
    let mut blocks_and_zeros = blocks.clone();
    blocks_and_zeros.push(zeros);
    let zero = blocks.len();

    // 3000 chunks (three `missing` batches): runs of zeros, adjacent
    // repeats and repeats far apart in the same batch, first put of all.
    let pattern: Vec<usize> = (0..3000usize)
        .map(|i| match i % 10 {
            0..=2 => zero,
            3 | 4 => (i / 10) % 3,
            _ => (i * 7) % blocks.len(),
        })
        .collect();
    let first = from_blocks(&blocks_and_zeros, pattern.iter().copied());
    let a = put_and_check(&mut chunker, &first, &fixed(BLOCK as u32));

    // The same content again: every chunk already stored.
    let b = put_and_check(&mut chunker, &first, &fixed(BLOCK as u32));
    assert_ne!(a, b);

    // A prefix of the first, then new content (with its own repeats).
    let mut shared_prefix = first[..1500 * BLOCK].to_vec();
    let fresh = data(40 * BLOCK, 7);
    for _ in 0..3 {
        shared_prefix.extend_from_slice(&fresh);
    }
    put_and_check(&mut chunker, &shared_prefix, &fixed(BLOCK as u32));

    // Stored and new blocks interleaved inside each batch, new ones repeated.
    let new_blocks: Vec<Vec<u8>> = (0..5).map(|seed| data(BLOCK, 200 + seed)).collect();
    let mut mixed = Vec::new();
    for i in 0..2500usize {
        match i % 4 {
            0 => mixed.extend_from_slice(&blocks[i % blocks.len()]),
            1 | 2 => mixed.extend_from_slice(&new_blocks[(i / 4) % new_blocks.len()]),
            _ => mixed.extend_from_slice(&data(BLOCK, 1000 + i as u64)),
        }
    }
    // A partial last chunk.
    mixed.extend_from_slice(&new_blocks[0][..123]);
    put_and_check(&mut chunker, &mixed, &fixed(BLOCK as u32));

    // Content-defined chunking over the same data, new and then stored.
    put_and_check(&mut chunker, &mixed, &options());
    put_and_check(&mut chunker, &mixed, &options());

    // A one-chunk artifact (stays inline) and an empty one.
    put_and_check(&mut chunker, &blocks[3], &fixed(BLOCK as u32));
    put_and_check(&mut chunker, &[], &fixed(BLOCK as u32));
}
