//! Every limit the runtime puts on a guest, named, with the reason.
//! Store-level limits (chunk size, batch sizes, metadata lengths) live in
//! `store::format`; these bound what one instance can hold and what the
//! host lets through from a plugin to the chunker (`runtime::check`).

use crate::store::format;

/// Uploads one chunker instance may have open at once. Each pins chunks
/// against garbage collection, so an unbounded number would let a guest pin
/// the whole store.
pub const UPLOADS_OPEN_MAX: usize = 64;

/// Ids returned by one `list` or `find-by-tag` call (the WIT doc's 65536).
pub const LIST_IDS_MAX: usize = 65_536;

/// Bytes of chunks one chunker instance may have queued to its upload
/// workers, over all its uploads (64 MiB, four largest chunks). Without it,
/// [`UPLOADS_OPEN_MAX`] uploads with a few chunks queued each would hold
/// gigabytes of host memory; with it, `put-chunk` waits for the workers.
pub const PIPELINE_BYTES_MAX: usize = 4 * format::CHUNK_BYTES_MAX as usize;

// One largest chunk always fits, so a put never waits for itself.
const _: () = assert!(PIPELINE_BYTES_MAX >= format::CHUNK_BYTES_MAX as usize);

/// Writers plus readers a plugin may hold at once. Each maps to a chunker
/// resource buffering up to [`CHUNKER_WRITER_BYTES_MAX`] (a reader: one
/// chunk); [`CHUNKER_MEMORY_BYTES_MAX`] has room for all of them.
pub const HANDLES_OPEN_MAX: usize = 16;

/// Largest `write` or `read` a plugin may ask for in one call (the WIT doc's
/// 16 MiB): bounds the bytes copied across the boundary per call.
pub const IO_BYTES_MAX: u32 = 16 << 20;

/// Largest artifact a plugin may `put` (and `get`) in one call: the WIT's
/// `inline-bytes-max` (64 MiB). Checked by the host before the data is
/// copied into the chunker, so an oversized put is `too-large`, never a
/// chunker trap; the chunker holds the whole artifact (and its manifest)
/// in its memory for the call.
pub const INLINE_BYTES_MAX: u64 = 64 << 20;

/// Longest filename, content type or creator a plugin may pass (the WIT's
/// "strings <= 4096 bytes"). The store refuses the same at commit
/// ([`format::STRING_BYTES_MAX`]); the host checks it before the string is
/// copied into the chunker, so no string can exhaust the chunker's memory.
pub const META_STRING_BYTES_MAX: usize = 4096;

/// Most tags in one `put-options` or `metadata-update` (the WIT's 256,
/// the store's [`format::TAGS_MAX`]): bounds the list copied into the chunker.
pub const META_TAGS_MAX: usize = 256;

/// Longest tag, and longest `find-by-tag` query (the WIT's 1..=256 bytes,
/// the store's [`format::TAG_BYTES_MAX`]). No artifact can carry a longer
/// tag, so a longer query is refused rather than copied into the chunker.
pub const META_TAG_BYTES_MAX: usize = 256;

/// Most links in one `put-options` or `metadata-update` (the WIT's 256, the
/// store's [`format::LINKS_MAX`]). Each must also be a well-formed id.
pub const META_LINKS_MAX: usize = 256;

/// Most custom pairs in one `put-options` or `metadata-update` (the WIT's
/// 256, the store's [`format::CUSTOM_PAIRS_MAX`]).
pub const META_CUSTOM_PAIRS_MAX: usize = 256;

/// Longest custom key (the WIT's 1..=256 bytes, the store's
/// [`format::CUSTOM_KEY_BYTES_MAX`]).
pub const META_CUSTOM_KEY_BYTES_MAX: usize = 256;

/// Longest custom value (the WIT's 4096 bytes, the store's
/// [`format::CUSTOM_VALUE_BYTES_MAX`]).
pub const META_CUSTOM_VALUE_BYTES_MAX: usize = 4096;

/// Characters of an artifact id (16 bytes in hex). The host parses every id
/// a plugin passes before forwarding it, so an id is never a long string.
pub const ARTIFACT_ID_CHARS: usize = 32;

/// The most bytes one `put-options` or `metadata-update` that passed the
/// checks above can hold (strings, tags, links, custom pairs; list and
/// record overhead aside): about 1.2 MiB.
pub const META_BYTES_MAX: usize = 3 * META_STRING_BYTES_MAX
    + META_TAGS_MAX * META_TAG_BYTES_MAX
    + META_LINKS_MAX * ARTIFACT_ID_CHARS
    + META_CUSTOM_PAIRS_MAX * (META_CUSTOM_KEY_BYTES_MAX + META_CUSTOM_VALUE_BYTES_MAX);

// The host's edge checks are exactly the store's: the host never refuses
// what the store would keep, and never forwards what the store would refuse
// (only to have it trap the chunker first). The WIT documents these numbers.
const _: () = assert!(META_STRING_BYTES_MAX == format::STRING_BYTES_MAX);
const _: () = assert!(META_TAGS_MAX == format::TAGS_MAX);
const _: () = assert!(META_TAG_BYTES_MAX == format::TAG_BYTES_MAX);
const _: () = assert!(META_LINKS_MAX == format::LINKS_MAX);
const _: () = assert!(META_CUSTOM_PAIRS_MAX == format::CUSTOM_PAIRS_MAX);
const _: () = assert!(META_CUSTOM_KEY_BYTES_MAX == format::CUSTOM_KEY_BYTES_MAX);
const _: () = assert!(META_CUSTOM_VALUE_BYTES_MAX == format::CUSTOM_VALUE_BYTES_MAX);
const _: () = assert!(INLINE_BYTES_MAX <= usize::MAX as u64);

/// Most bytes one call from a plugin may copy into the host, all its
/// arguments together (128 MiB, wasmtime's default "hostcall fuel", set
/// explicitly on every plugin store we make). A call passing more traps the
/// plugin while its arguments are being copied, before any host code runs:
/// it is the one length that is not a typed error (the WIT says so). Every
/// well-formed call fits with room to spare.
pub const PLUGIN_CALL_BYTES_MAX: usize = 128 << 20;

const _: () =
    assert!(INLINE_BYTES_MAX as usize + META_BYTES_MAX + (1 << 20) <= PLUGIN_CALL_BYTES_MAX);

/// Bytes one chunker writer may buffer at most: the chunker keeps less
/// than a window (the largest chunk) between calls, in a buffer that may
/// have grown to twice that.
pub const CHUNKER_WRITER_BYTES_MAX: usize = 2 * format::CHUNK_BYTES_MAX as usize;

/// Linear memory a chunker instance may grow to (1 GiB): the buffers of
/// [`HANDLES_OPEN_MAX`] writers (or readers, which hold one chunk), plus
/// one inline put or get of the largest size with the largest options,
/// plus one call's bytes. A plugin using every handle with the largest
/// chunks must not be able to trap its chunker (with 512 MiB, 16 writers
/// of 16 MiB chunks did). Only what is used is committed.
pub const CHUNKER_MEMORY_BYTES_MAX: usize = 1 << 30;

// What the doc above adds up, with room to spare. An inline put holds the
// data, its chunk list, its manifest and the commit's list: about three
// times the data with the smallest chunks (64 bytes).
const _: () = assert!(
    HANDLES_OPEN_MAX * CHUNKER_WRITER_BYTES_MAX
        + 3 * INLINE_BYTES_MAX as usize
        + META_BYTES_MAX
        + IO_BYTES_MAX as usize
        + (64 << 20)
        <= CHUNKER_MEMORY_BYTES_MAX
);

/// Epoch deadline, in ticks, of stores that have no time limit: never
/// reached (an engine with epoch interruption traps a store without a
/// deadline at once).
pub const FAR_EPOCH_DEADLINE: u64 = 1 << 62;

/// Default linear memory for a plugin run by `tblob run`.
pub const PLUGIN_MEMORY_BYTES_MAX: usize = 1 << 30;

/// Native stack a single wasm call may use. The chunker runs nested inside a
/// plugin's host call, on the plugin's fiber stack, so the fiber stack must
/// hold two of these plus host frames.
pub const WASM_STACK_BYTES_MAX: usize = 1 << 20;

/// Fiber stack for async calls into plugins: room for the plugin's wasm
/// stack, our host frames and the nested chunker's wasm stack.
pub const ASYNC_STACK_BYTES: usize = 4 * WASM_STACK_BYTES_MAX;

const _: () = assert!(ASYNC_STACK_BYTES >= 2 * WASM_STACK_BYTES_MAX + (512 << 10));
