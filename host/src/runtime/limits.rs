//! Every limit the runtime puts on a guest, named, with the reason.
//! Store-level limits (chunk size, batch sizes, metadata lengths) live in
//! `store::format`; these bound what one instance can hold.

/// Uploads one chunker instance may have open at once. Each pins chunks
/// against garbage collection, so an unbounded number would let a guest pin
/// the whole store.
pub const UPLOADS_OPEN_MAX: usize = 64;

/// Ids returned by one `list` or `find-by-tag` call (the WIT doc's 65536).
pub const LIST_IDS_MAX: usize = 65_536;

/// Writers plus readers a plugin may hold at once. Each maps to a chunker
/// resource holding up to one chunk (16 MiB) of buffered bytes.
pub const HANDLES_OPEN_MAX: usize = 16;

/// Largest `write` or `read` a plugin may ask for in one call (the WIT doc's
/// 16 MiB): bounds the bytes copied across the boundary per call.
pub const IO_BYTES_MAX: u32 = 16 << 20;

/// Linear memory a chunker instance may grow to. It holds one inline
/// artifact (64 MiB) plus chunk buffers of its open writers and readers.
pub const CHUNKER_MEMORY_BYTES_MAX: usize = 512 << 20;

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
