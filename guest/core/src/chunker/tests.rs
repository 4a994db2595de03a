//! Goal: the streaming [`Chunker`] cuts exactly where a one-shot pass does,
//! whatever the push sizes, within bounded memory, and its chunks obey the
//! size limits. Method: compare against [`chunk_lengths`] (which runs
//! `FastCDC::new` over the whole input) on fixed cases and under proptest.

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;
use crate::CdcParams;

/// Deterministic pseudo-random bytes (xorshift64*), so failures replay.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn cdc(min_bytes: u32, avg_bytes: u32, max_bytes: u32) -> Chunking {
    Chunking::ContentDefined(CdcParams {
        min_bytes,
        avg_bytes,
        max_bytes,
    })
}

/// Streams `data` through a chunker in pieces of the given lengths (cycled)
/// and returns the chunks, checking the memory bound after every push.
fn stream(data: &[u8], chunking: Chunking, push_lens: &[usize]) -> Vec<Vec<u8>> {
    let mut chunker = Chunker::new(chunking).unwrap();
    let window = chunking.chunk_len_bytes_max() as usize;
    let mut chunks = Vec::new();
    let mut pos = 0;
    let mut lens = push_lens.iter().cycle();
    while pos < data.len() {
        let len = (*lens.next().unwrap()).min(data.len() - pos);
        let piece = &data[pos..pos + len];
        for chunk in chunker.push(piece) {
            if let Cow::Borrowed(slice) = &chunk {
                // Borrowed chunks really come from the pushed slice.
                let start = slice.as_ptr() as usize - piece.as_ptr() as usize;
                assert!(start + slice.len() <= piece.len());
            }
            chunks.push(chunk.into_owned());
        }
        assert!(chunker.pending_bytes() < window, "pending exceeds a window");
        pos += len;
    }
    assert_eq!(chunker.pushed_bytes(), data.len() as u64);
    chunks.extend(chunker.finish().into_iter().map(Cow::into_owned));
    assert_eq!(chunker.pending_bytes(), 0);
    chunks
}

fn lengths(chunks: &[Vec<u8>]) -> Vec<usize> {
    chunks.iter().map(Vec::len).collect()
}

/// Every property the brief asks of a chunking of `data`.
fn check_stream_matches_one_shot(data: &[u8], chunking: Chunking, push_lens: &[usize]) {
    let chunks = stream(data, chunking, push_lens);
    assert_eq!(
        chunks.concat(),
        data,
        "chunks must concatenate to the input"
    );
    let expected = chunk_lengths(data, chunking).unwrap();
    assert_eq!(
        lengths(&chunks),
        expected,
        "streaming != one-shot for {push_lens:?}"
    );
    let (min, max) = match chunking {
        Chunking::Fixed(len) => (len as usize, len as usize),
        Chunking::ContentDefined(p) => (p.min_bytes as usize, p.max_bytes as usize),
    };
    if let Some((_last, all_but_last)) = chunks.split_last() {
        for chunk in all_but_last {
            assert!(
                (min..=max).contains(&chunk.len()),
                "chunk of {} bytes",
                chunk.len()
            );
        }
    }
    assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= max));
}

#[test]
fn fixed_boundaries_are_exact() {
    let data = pseudo_random_bytes(1000, 1);
    let chunks = stream(&data, Chunking::Fixed(64), &[7, 100, 1]);
    assert_eq!(lengths(&chunks), [vec![64; 15], vec![40]].concat());
    let chunks = stream(&data, Chunking::Fixed(100), &[1000]);
    assert_eq!(lengths(&chunks), vec![100; 10]);
    let chunks = stream(&data, Chunking::Fixed(4096), &[3]);
    assert_eq!(lengths(&chunks), vec![1000]);
}

#[test]
fn empty_input_has_no_chunks() {
    for chunking in [Chunking::default(), Chunking::Fixed(64)] {
        let mut chunker = Chunker::new(chunking).unwrap();
        assert!(chunker.push(&[]).is_empty());
        assert!(chunker.finish().is_empty());
    }
}

#[test]
fn invalid_parameters_are_refused() {
    assert!(Chunker::new(Chunking::Fixed(0)).is_err());
    assert!(Chunker::new(cdc(64, 32, 1024)).is_err());
    assert!(chunk_lengths(b"abc", cdc(64, 256, 100)).is_err());
}

#[test]
fn default_cdc_streaming_matches_one_shot() {
    // 4 MiB of random data with a run of zeros (forces max-length chunks).
    let mut data = pseudo_random_bytes(4 << 20, 42);
    data[1 << 20..(1 << 20) + (600 << 10)].fill(0);
    for push_lens in [
        &[1 << 20][..],
        &[4 << 20],
        &[1000, 65_537, 300_000],
        &[256 << 10],
    ] {
        check_stream_matches_one_shot(&data, Chunking::default(), push_lens);
    }
    let chunks = chunk_lengths(&data, Chunking::default()).unwrap();
    assert!(
        chunks.len() > 20,
        "expected many chunks, got {}",
        chunks.len()
    );
    assert!(
        chunks.contains(&(256 << 10)),
        "zeros must produce max-length chunks"
    );
}

#[test]
fn one_byte_pushes_match_one_shot() {
    let data = pseudo_random_bytes(50_000, 7);
    check_stream_matches_one_shot(&data, cdc(64, 256, 1024), &[1]);
    check_stream_matches_one_shot(&data, Chunking::Fixed(333), &[1]);
}

#[test]
fn big_pushes_are_lent_not_copied() {
    // Into an empty chunker, every chunk but those of the tail is borrowed.
    let data = pseudo_random_bytes(2 << 20, 9);
    let mut chunker = Chunker::new(Chunking::default()).unwrap();
    let chunks = chunker.push(&data);
    assert!(chunks.len() > 10);
    assert!(chunks.iter().all(|c| matches!(c, Cow::Borrowed(_))));
}

#[test]
fn small_chunks_left_pending_are_cut_before_new_data() {
    // Pending holds several short chunks' worth after a push just under a
    // window; the next push must emit them all, then borrow.
    let chunking = cdc(64, 256, 16 << 10);
    let data = pseudo_random_bytes(200_000, 3);
    check_stream_matches_one_shot(&data, chunking, &[(16 << 10) - 1, 50_000, 2, 16 << 10]);
}

/// CDC parameters within the limits, small enough for many chunks per case.
fn small_cdc_params() -> impl Strategy<Value = Chunking> {
    (32u32..=512, 128u32..=2048, 512u32..=8192).prop_map(|(min, avg, max)| {
        let min = min * 2;
        let avg = (avg * 2).max(min);
        let max = (max * 2).max(avg);
        cdc(min, avg, max)
    })
}

/// Random bytes with optional runs of one repeated byte (no natural cut points).
fn content() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..60_000,
        any::<u64>(),
        proptest::collection::vec((0usize..60_000, 0usize..20_000, any::<u8>()), 0..3),
    )
        .prop_map(|(len, seed, runs)| {
            let mut data = pseudo_random_bytes(len, seed);
            for (start, run_len, byte) in runs {
                let start = start.min(len);
                let end = (start + run_len).min(len);
                data[start..end].fill(byte);
            }
            data
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn cdc_streaming_equals_one_shot(
        data in content(),
        chunking in small_cdc_params(),
        push_lens in proptest::collection::vec(1usize..40_000, 1..8),
    ) {
        check_stream_matches_one_shot(&data, chunking, &push_lens);
    }

    #[test]
    fn fixed_streaming_equals_one_shot(
        data in content(),
        len in 64u32..5000,
        push_lens in proptest::collection::vec(1usize..20_000, 1..8),
    ) {
        check_stream_matches_one_shot(&data, Chunking::Fixed(len), &push_lens);
    }
}
