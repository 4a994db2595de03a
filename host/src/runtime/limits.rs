//! Every limit the runtime puts on a guest, named, with the reason.
//! Store-level limits (chunk size, batch sizes, metadata lengths) live in
//! `store::format`; these bound what one instance can hold and what the
//! host accepts from a plugin (`runtime::check`), before it copies
//! anything into the chunker or asks the store.

use crate::store::format;

/// Uploads one chunker instance may have open at once. Each pins chunks
/// against garbage collection, so an unbounded number would let a guest pin
/// the whole store.
pub const UPLOADS_OPEN_MAX: usize = 64;

/// Ids returned by one `list` or `find-by-tag` call (the WIT doc's 65536):
/// a larger `list` limit is `invalid-argument` (`check::list_limit`), and
/// `find-by-tag` answers the oldest this many.
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

/// Stream puts and gets (`stream-blobs`) one plugin may have in progress
/// at once. Each runs on a worker thread of its own with its own chunker
/// instance and holds at most [`STREAM_QUEUE_BYTES_MAX`] in its queue.
pub const STREAM_OPERATIONS_MAX: usize = 16;

/// Largest piece of a stream the host queues as one unit: a put takes at
/// most this much of one guest write at a time, a get reads at most this
/// much per chunker call.
pub const STREAM_PIECE_BYTES: usize = 1 << 20;

/// Pieces queued between a plugin's stream and its worker: a put's bytes
/// written but not yet chunked, a get's verified bytes read ahead.
pub const STREAM_QUEUE_PIECES: usize = 8;

/// Bytes one stream operation queues at most (8 MiB); the chunker's own
/// buffers come on top. All of a plugin's stream operations together:
/// [`STREAM_OPERATIONS_MAX`] x this (128 MiB).
pub const STREAM_QUEUE_BYTES_MAX: usize = STREAM_QUEUE_PIECES * STREAM_PIECE_BYTES;

// A piece is one chunker call's worth.
const _: () = assert!(STREAM_PIECE_BYTES as u64 <= IO_BYTES_MAX as u64);

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

/// Most external links in one `put-options`, and in each external-link
/// list of a `metadata-update` (the WIT's 256, the store's
/// [`format::EXTERNAL_LINKS_MAX`]).
pub const META_EXTERNAL_LINKS_MAX: usize = 256;

/// Longest external link, and longest `links-to-external` query (the
/// WIT's 1..=256 bytes, the store's [`format::EXTERNAL_LINK_BYTES_MAX`]).
pub const META_EXTERNAL_LINK_BYTES_MAX: usize = 256;

/// Most conditions in one `query` (the WIT's 32, the store's
/// [`format::QUERY_CONDITIONS_MAX`]).
pub const QUERY_CONDITIONS_MAX: usize = 32;

/// Most ids one `query` page returns: its `limit`'s maximum (the WIT's
/// 65536, the store's [`format::QUERY_PAGE_MAX`]).
pub const QUERY_PAGE_MAX: usize = 65_536;

/// Characters of an artifact id (16 bytes in hex). The host parses every id
/// a plugin passes before forwarding it, so an id is never a long string.
pub const ARTIFACT_ID_CHARS: usize = 32;

/// The most bytes one `put-options` that passed the checks above can hold
/// (strings, tags, links, external links, custom pairs; list and record
/// overhead aside): about 1.3 MiB. It is what the chunker may be handed
/// with a put; metadata updates and queries never reach the chunker.
pub const META_BYTES_MAX: usize = 3 * META_STRING_BYTES_MAX
    + META_TAGS_MAX * META_TAG_BYTES_MAX
    + META_LINKS_MAX * ARTIFACT_ID_CHARS
    + META_EXTERNAL_LINKS_MAX * META_EXTERNAL_LINK_BYTES_MAX
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
const _: () = assert!(META_EXTERNAL_LINKS_MAX == format::EXTERNAL_LINKS_MAX);
const _: () = assert!(META_EXTERNAL_LINK_BYTES_MAX == format::EXTERNAL_LINK_BYTES_MAX);
const _: () = assert!(QUERY_CONDITIONS_MAX == format::QUERY_CONDITIONS_MAX);
const _: () = assert!(QUERY_PAGE_MAX == format::QUERY_PAGE_MAX);
const _: () = assert!(QUERY_PAGE_MAX == LIST_IDS_MAX);
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

/// Wasm instances (core and component) one plugin or chunker store may
/// create. A plugin is one component of a handful of core modules; the
/// count bounds what a component that nests instances could make the host
/// allocate per store (wasmtime's own default is 10,000).
pub const PLUGIN_INSTANCES_MAX: usize = 64;

/// Tables one store may create (wasmtime's default: 10,000).
pub const TABLES_MAX: usize = 64;

/// Linear memories one store may create (wasmtime's default: 10,000).
/// Each may grow only to its store's memory limit, which bounds them all
/// together: the limiter sees each memory's growth on its own.
pub const MEMORIES_MAX: usize = 16;

/// Elements one table may grow to (a pointer each, so 800 KB on 64-bit
/// hosts). Function tables of ordinary guests hold a few thousand; without
/// a cap `table.grow` is bounded only by host memory.
pub const TABLE_ELEMENTS_MAX: usize = 100_000;

/// The cap that stopped a guest, as recorded by [`GuestLimiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestLimit {
    /// A memory was refused growth past this many bytes.
    Memory { bytes_max: usize },
    /// A table was refused growth past this many elements.
    TableElements { elements_max: usize },
}

impl std::fmt::Display for GuestLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestLimit::Memory { bytes_max } => {
                write!(f, "its memory limit of {} MiB", bytes_max >> 20)
            }
            GuestLimit::TableElements { elements_max } => {
                write!(f, "its table limit of {elements_max} elements")
            }
        }
    }
}

/// The [`wasmtime::ResourceLimiter`] of every plugin and chunker store:
/// caps memory, tables and instance counts, and remembers the first growth
/// it refused. A refused `memory.grow` is not a trap (the guest sees -1,
/// and typically aborts a little later with an unrelated-looking trap), so
/// without the record a trap could not say what caused it.
#[derive(Debug)]
pub struct GuestLimiter {
    memory_bytes_max: usize,
    table_elements_max: usize,
    instances_max: usize,
    tables_max: usize,
    memories_max: usize,
    hit: Option<GuestLimit>,
}

impl GuestLimiter {
    /// Memory capped at `memory_bytes_max` per linear memory; tables at
    /// [`TABLE_ELEMENTS_MAX`]; counts at [`PLUGIN_INSTANCES_MAX`],
    /// [`TABLES_MAX`] and [`MEMORIES_MAX`].
    pub fn new(memory_bytes_max: usize) -> Self {
        GuestLimiter {
            memory_bytes_max,
            table_elements_max: TABLE_ELEMENTS_MAX,
            instances_max: PLUGIN_INSTANCES_MAX,
            tables_max: TABLES_MAX,
            memories_max: MEMORIES_MAX,
            hit: None,
        }
    }

    /// This limiter with tighter counts of instances, tables and memories
    /// (a store past one fails to instantiate, with wasmtime's error).
    pub fn with_counts(
        mut self,
        instances_max: usize,
        tables_max: usize,
        memories_max: usize,
    ) -> Self {
        self.instances_max = instances_max.min(PLUGIN_INSTANCES_MAX);
        self.tables_max = tables_max.min(TABLES_MAX);
        self.memories_max = memories_max.min(MEMORIES_MAX);
        self
    }

    /// This limiter with tables capped at `elements_max` instead.
    pub fn with_table_elements_max(mut self, elements_max: usize) -> Self {
        self.table_elements_max = elements_max;
        self
    }

    pub fn memory_bytes_max(&self) -> usize {
        self.memory_bytes_max
    }

    /// The first limit a growth request ran into, if any.
    pub fn hit(&self) -> Option<GuestLimit> {
        self.hit
    }

    fn refuse(&mut self, limit: GuestLimit) -> bool {
        self.hit.get_or_insert(limit);
        false
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes_max {
            return Ok(self.refuse(GuestLimit::Memory {
                bytes_max: self.memory_bytes_max,
            }));
        }
        // The memory's own declared maximum is the guest's choice, not ours.
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements_max {
            return Ok(self.refuse(GuestLimit::TableElements {
                elements_max: self.table_elements_max,
            }));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        self.instances_max
    }

    fn tables(&self) -> usize {
        self.tables_max
    }

    fn memories(&self) -> usize {
        self.memories_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    /// Goal: the limiter refuses exactly past its caps, and records the
    /// first cap hit (so a later trap can name it), not a later one.
    #[test]
    fn the_limiter_refuses_past_its_caps_and_records_the_first() {
        let mut limiter = GuestLimiter::new(64 << 20).with_table_elements_max(10);
        assert!(limiter.memory_growing(0, 64 << 20, None).unwrap());
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert_eq!(limiter.hit(), None);
        // A guest's own declared maximum refuses without counting as ours.
        assert!(!limiter.memory_growing(0, 2 << 20, Some(1 << 20)).unwrap());
        assert_eq!(limiter.hit(), None);

        assert!(!limiter.table_growing(10, 11, None).unwrap());
        assert!(!limiter.memory_growing(0, (64 << 20) + 65536, None).unwrap());
        assert_eq!(
            limiter.hit(),
            Some(GuestLimit::TableElements { elements_max: 10 })
        );
        assert_eq!(
            GuestLimit::Memory {
                bytes_max: 64 << 20
            }
            .to_string(),
            "its memory limit of 64 MiB"
        );
    }
}
