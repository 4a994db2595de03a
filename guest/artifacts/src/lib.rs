//! The wasm components of tensor-blob, built by this crate's build script.
//!
//! `build.rs` compiles guest/components (the chunker and the hostile test
//! chunker) and examples/plugin for `wasm32-wasip2` in release mode, with
//! nested cargo builds into `target/wasm`, and embeds the results here. A
//! change to wit/, guest/ or examples/plugin/ rebuilds them. See
//! guest/README.md.
//!
//! Each `*_PATH` names the copy in this build's `OUT_DIR` from which the
//! bytes were embedded, for tools that want a file.

/// The chunker component (world `chunker`): serves `tensor:blob/blobs` on top
/// of the host's `tensor:blob/chunk-store`. The production chunker.
pub const CHUNKER_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tensor_blob_chunker.wasm"));

/// Path of the file [`CHUNKER_WASM`] was embedded from.
pub const CHUNKER_WASM_PATH: &str = concat!(env!("OUT_DIR"), "/tensor_blob_chunker.wasm");

/// A deliberately hostile chunker (world `chunker`) for host tests: `put`
/// performs the attack named by its custom option `attack` (for example
/// `bad-chunk-digest`, `commit-twice`) and returns the host's answer. Never
/// use it as a real chunker.
pub const ROGUE_CHUNKER_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tensor_blob_rogue_chunker.wasm"));

/// Path of the file [`ROGUE_CHUNKER_WASM`] was embedded from.
pub const ROGUE_CHUNKER_WASM_PATH: &str =
    concat!(env!("OUT_DIR"), "/tensor_blob_rogue_chunker.wasm");

/// The example plugin (world `plugin`, a WASI command exporting
/// `wasi:cli/run`): stores and verifies the files named in its arguments, or
/// runs a dedup demonstration without arguments. Source: examples/plugin.
pub const EXAMPLE_PLUGIN_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tensor-blob-example-plugin.wasm"));

/// Path of the file [`EXAMPLE_PLUGIN_WASM`] was embedded from.
pub const EXAMPLE_PLUGIN_WASM_PATH: &str =
    concat!(env!("OUT_DIR"), "/tensor-blob-example-plugin.wasm");

/// Path of the benchmark plugin (world `plugin`, a WASI command):
/// `bench-plugin BYTES` times a streaming put and get. Only a path: the
/// benchmark runs it through `tblob run`. Source: guest/components/bench-plugin.
pub const BENCH_PLUGIN_WASM_PATH: &str = concat!(env!("OUT_DIR"), "/tensor-blob-bench-plugin.wasm");

/// A deliberately hostile plugin (world `plugin`, a WASI command) for host
/// tests: `hostile-plugin ATTACK [ARG]` attacks the blob imports (another
/// tenant's ids, oversized calls, handle floods, abandoned uploads, memory
/// bombs) and prints each outcome. Source: guest/components/hostile-plugin.
pub const HOSTILE_PLUGIN_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tensor-blob-hostile-plugin.wasm"));

/// A `wasi:blobstore@0.2.0-draft` client (a WASI command) built from the
/// pristine upstream WIT alone: `all` exercises every function and exits
/// nonzero on any mismatch; see its source for the other modes. For tests.
pub const BLOBSTORE_CLIENT_WASM: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/tensor-blob-blobstore-client.wasm"
));

/// Path of the file [`BLOBSTORE_CLIENT_WASM`] was embedded from.
pub const BLOBSTORE_CLIENT_WASM_PATH: &str =
    concat!(env!("OUT_DIR"), "/tensor-blob-blobstore-client.wasm");

/// A test plugin (a WASI command) importing both `tensor:blob/blobs` and
/// `wasi:blobstore`: checks that they see one store. Prints `ok dual`.
pub const DUAL_PLUGIN_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tensor-blob-dual-plugin.wasm"));
/// The stream test plugin (world `stream-plugin-command`, a WASI command
/// importing `stream-blobs`): `stream-plugin MODE ARGS...` puts or gets
/// through WASI 0.3 streams (whole, ranged, dropped halfway, cancelled) and
/// prints the outcome. Source: guest/components/stream-plugin.
pub const STREAM_PLUGIN_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tensor-blob-stream-plugin.wasm"));

/// Path of the file [`STREAM_PLUGIN_WASM`] was embedded from (for `tblob run`).
pub const STREAM_PLUGIN_WASM_PATH: &str =
    concat!(env!("OUT_DIR"), "/tensor-blob-stream-plugin.wasm");

/// The metadata test plugin (world `plugin`, a WASI command): `meta-plugin
/// setup` puts, updates and deletes a scripted set of artifacts; `query
/// LIMIT QUERY...` pages queries and prints their ids; `stat ID...` and
/// `stats` print what the host answers. Source: guest/components/meta-plugin.
pub const META_PLUGIN_WASM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tensor-blob-meta-plugin.wasm"));

/// Path of the file [`META_PLUGIN_WASM`] was embedded from (for `tblob run`).
pub const META_PLUGIN_WASM_PATH: &str = concat!(env!("OUT_DIR"), "/tensor-blob-meta-plugin.wasm");

#[cfg(test)]
mod tests {
    use super::*;

    /// Component binaries start with the wasm magic and the component layer.
    #[test]
    fn embedded_bytes_are_components() {
        for wasm in [
            CHUNKER_WASM,
            ROGUE_CHUNKER_WASM,
            EXAMPLE_PLUGIN_WASM,
            HOSTILE_PLUGIN_WASM,
            BLOBSTORE_CLIENT_WASM,
            DUAL_PLUGIN_WASM,
            STREAM_PLUGIN_WASM,
            META_PLUGIN_WASM,
        ] {
            assert_eq!(&wasm[..4], b"\0asm");
            assert_eq!(&wasm[6..8], &[0x01, 0x00], "component layer");
        }
        assert_eq!(std::fs::read(CHUNKER_WASM_PATH).unwrap(), CHUNKER_WASM);
    }
}
