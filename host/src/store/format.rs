//! Bytes on disk: magics, versions, record layouts, their encoding and
//! decoding, and every named limit. Nothing else: no I/O, no state.
//!
//! `ARCHITECTURE.md`, section "On-disk format", is the prose version of this
//! file; change both together. All integers on disk are little-endian `u32`
//! or `u64`, never `usize`. Decoding validates every length against its
//! limit and against the bytes actually present before using it, so bytes
//! from disk become errors, never panics, and a damaged length can never
//! size an allocation.

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// Largest chunk, in bytes (16 MiB). Bounds the buffer one `put-chunk` or
/// `read-chunk` needs and what the host re-hashes per call; content-defined
/// chunking tops out at 16 MiB too (see `cdc-params` in the WIT).
pub const CHUNK_BYTES_MAX: u32 = 16 << 20;

/// Most digests one `missing` call may ask about: bounds the reply and the
/// time the store lock is held for one call.
pub const MISSING_BATCH_MAX: usize = 4096;

/// Most manifest entries one `manifest` call returns (36 B each, so about
/// 2.3 MiB): bounds the reply copied into a guest.
pub const MANIFEST_PAGE_MAX: u32 = 65536;

/// Most chunks in one artifact (2^24). Manifests are held in memory (44 B a
/// chunk) and written as one metadata record, so this bounds both; with
/// 64 KiB average chunks it still allows 1 TiB artifacts.
pub const MANIFEST_CHUNKS_MAX: u64 = 1 << 24;

/// Longest filename, content type, creator or custom value, in bytes.
pub const STRING_BYTES_MAX: usize = 4096;
/// Longest tag, in bytes (tags must also be non-empty).
pub const TAG_BYTES_MAX: usize = 256;
/// Most tags on one artifact.
pub const TAGS_MAX: usize = 256;
/// Most links from one artifact.
pub const LINKS_MAX: usize = 256;
/// Most external links (entity ids) on one artifact.
pub const EXTERNAL_LINKS_MAX: usize = 256;
/// Longest external link, in bytes (they must also be non-empty).
pub const EXTERNAL_LINK_BYTES_MAX: usize = 256;
/// Most conditions in one query.
pub const QUERY_CONDITIONS_MAX: usize = 32;
/// Most ids one query page (or `list` page) returns.
pub const QUERY_PAGE_MAX: usize = 65536;
/// Most custom key/value pairs on one artifact.
pub const CUSTOM_PAIRS_MAX: usize = 256;
/// Longest custom key, in bytes (keys must also be non-empty).
pub const CUSTOM_KEY_BYTES_MAX: usize = 256;
/// Longest custom value, in bytes.
pub const CUSTOM_VALUE_BYTES_MAX: usize = STRING_BYTES_MAX;

/// Default size at which the active segment is sealed and a new one begun.
/// Big enough that a store has few files, small enough that compacting one
/// segment is a short job.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 256 << 20;

/// Most chunks one upload may pin: one full manifest. Bounds an upload's
/// memory however many `missing` calls a guest makes.
pub const UPLOAD_PINS_MAX: u64 = MANIFEST_CHUNKS_MAX;

const _: () = assert!(MISSING_BATCH_MAX as u64 <= UPLOAD_PINS_MAX);
const _: () = assert!(MANIFEST_PAGE_MAX as u64 <= MANIFEST_CHUNKS_MAX);
const _: () = assert!(CHUNK_BYTES_MAX > 0);
// A segment always fits at least one largest record.
const _: () = assert!(
    SEGMENT_BYTES_MAX_DEFAULT >= SEGMENT_HEADER_BYTES + CHUNK_HEADER_BYTES + CHUNK_BYTES_MAX as u64
);
// Content sizes are sums of u32 chunk lengths: MANIFEST_CHUNKS_MAX of them
// cannot overflow u64.
const _: () = assert!(MANIFEST_CHUNKS_MAX
    .checked_mul(CHUNK_BYTES_MAX as u64)
    .is_some());

// ---------------------------------------------------------------------------
// Segment files: `segments/NNNNNNNNNNNNNNNN.seg`
// ---------------------------------------------------------------------------

/// First four bytes of every segment file ("TBSG").
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"TBSG");
/// Segment format version. History: 1 = first release (8-byte header,
/// record headers checked by a plain CRC-32; no longer read: pre-release);
/// 2 = a random salt in the header keys every record header's check.
pub const SEGMENT_VERSION: u8 = 2;
/// Bytes of a segment's random salt.
pub const SEGMENT_SALT_BYTES: usize = 16;
/// Segment file header: magic u32, version u8, 3 reserved zero bytes, salt.
pub const SEGMENT_HEADER_BYTES: u64 = 8 + SEGMENT_SALT_BYTES as u64;
const _: () = assert!(SEGMENT_HEADER_BYTES == 24);

/// First four bytes of every chunk record. Bytes 0xFE and 0xFF never occur
/// in UTF-8, so the same value is used for metadata records (see
/// [`META_RECORD_MAGIC`]).
pub const CHUNK_RECORD_MAGIC: u32 = u32::from_le_bytes([0xFE, 0xC4, 0xFF, 0x01]);
/// Chunk record version of an uncompressed record. History: 1 = first
/// release (CRC-32 check); 2 = keyed check (see [`RecordKey`]); 3 = the
/// flags byte is used ([`CHUNK_FLAG_ZSTD`]). Uncompressed records are still
/// written as version 2, so a store written with compression off stays
/// readable by the code before version 3.
pub const CHUNK_RECORD_VERSION: u8 = 2;
/// Chunk record version of a record with flags (a compressed one).
pub const CHUNK_RECORD_VERSION_FLAGS: u8 = 3;
/// Record flag (version 3): the payload is the chunk's length, u32, then
/// one zstd frame of the chunk's bytes. Payload and length are both
/// checked on every read: the frame must decompress to exactly that many
/// bytes (at most [`CHUNK_BYTES_MAX`]), hashing to the record's digest.
pub const CHUNK_FLAG_ZSTD: u8 = 1;
/// Bytes before the zstd frame in a compressed payload.
pub const ZSTD_PREFIX_BYTES: u32 = 4;

// Chunk record header layout, each offset derived from the previous field.
const CHUNK_MAGIC_AT: usize = 0;
const CHUNK_VERSION_AT: usize = CHUNK_MAGIC_AT + 4;
const CHUNK_FLAGS_AT: usize = CHUNK_VERSION_AT + 1;
const CHUNK_RESERVED_AT: usize = CHUNK_FLAGS_AT + 1;
const CHUNK_LEN_AT: usize = CHUNK_RESERVED_AT + 2;
const CHUNK_DIGEST_AT: usize = CHUNK_LEN_AT + 4;
const CHUNK_CHECK_AT: usize = CHUNK_DIGEST_AT + 32;
const CHUNK_HEADER_END: usize = CHUNK_CHECK_AT + 4;
/// Bytes of a chunk record header; the payload follows it.
pub const CHUNK_HEADER_BYTES: u64 = CHUNK_HEADER_END as u64;
const _: () = assert!(CHUNK_HEADER_BYTES == 48);

/// The key of a segment's record header checks, derived from its salt.
///
/// Why keyed: chunk payloads are chosen by guests. With a plain CRC a
/// payload could embed a valid-looking record, which the recovery scan's
/// resynchronisation after damage would pick up (and which could shadow a
/// good copy of a digest in another segment). The salt is random per
/// segment and never leaves the host, so a guest cannot compute a valid
/// check (a guess succeeds with probability 2^-32, and a forgery is only
/// ever looked at after damage).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecordKey([u8; 32]);

impl RecordKey {
    /// The key of a segment with `salt`.
    pub fn from_salt(salt: &[u8; SEGMENT_SALT_BYTES]) -> RecordKey {
        RecordKey(blake3::derive_key(
            "tensor-blob 2026-12 segment record header check",
            salt,
        ))
    }

    /// The check of a record header's first 44 bytes.
    pub fn header_check(&self, header: &[u8]) -> [u8; 4] {
        let hash = blake3::keyed_hash(&self.0, header);
        hash.as_bytes()[..4].try_into().expect("4 bytes")
    }
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(..)")
    }
}

/// Encodes a segment file header with `salt`.
pub fn encode_segment_header(
    salt: &[u8; SEGMENT_SALT_BYTES],
) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
    header[4] = SEGMENT_VERSION;
    header[8..].copy_from_slice(salt);
    header
}

/// Checks a segment file header; returns its salt.
pub fn decode_segment_header(bytes: &[u8]) -> Result<[u8; SEGMENT_SALT_BYTES], String> {
    if bytes.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(format!(
            "segment header is {} bytes, expected {SEGMENT_HEADER_BYTES}",
            bytes.len()
        ));
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic != SEGMENT_MAGIC {
        return Err(format!("bad segment magic {magic:#010x}"));
    }
    if bytes[4] != SEGMENT_VERSION {
        return Err(format!("unsupported segment version {}", bytes[4]));
    }
    if bytes[5..8] != [0, 0, 0] {
        return Err("segment header reserved bytes are not zero".to_string());
    }
    Ok(bytes[8..SEGMENT_HEADER_BYTES as usize]
        .try_into()
        .expect("16 bytes"))
}

/// A decoded, checked chunk record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Bytes of the payload as stored.
    pub payload_len: u32,
    pub digest: [u8; 32],
    /// The payload is compressed ([`CHUNK_FLAG_ZSTD`]).
    pub compressed: bool,
}

/// Encodes a chunk record header for a payload of `payload_len` bytes in a
/// segment whose record key is `key`; `compressed`: the payload is a
/// [`CHUNK_FLAG_ZSTD`] one.
pub fn encode_chunk_header(
    key: &RecordKey,
    digest: &[u8; 32],
    payload_len: u32,
    compressed: bool,
) -> [u8; CHUNK_HEADER_END] {
    assert!((1..=CHUNK_BYTES_MAX).contains(&payload_len));
    let mut header = [0u8; CHUNK_HEADER_END];
    header[CHUNK_MAGIC_AT..CHUNK_VERSION_AT].copy_from_slice(&CHUNK_RECORD_MAGIC.to_le_bytes());
    if compressed {
        header[CHUNK_VERSION_AT] = CHUNK_RECORD_VERSION_FLAGS;
        header[CHUNK_FLAGS_AT] = CHUNK_FLAG_ZSTD;
    } else {
        header[CHUNK_VERSION_AT] = CHUNK_RECORD_VERSION;
        header[CHUNK_FLAGS_AT] = 0;
    }
    header[CHUNK_LEN_AT..CHUNK_DIGEST_AT].copy_from_slice(&payload_len.to_le_bytes());
    header[CHUNK_DIGEST_AT..CHUNK_CHECK_AT].copy_from_slice(digest);
    let check = key.header_check(&header[..CHUNK_CHECK_AT]);
    header[CHUNK_CHECK_AT..CHUNK_HEADER_END].copy_from_slice(&check);
    header
}

/// Decodes and checks a chunk record header of a segment whose record key
/// is `key`: magic, keyed check, version, length.
pub fn decode_chunk_header(key: &RecordKey, bytes: &[u8]) -> Result<ChunkHeader, String> {
    if bytes.len() < CHUNK_HEADER_END {
        return Err(format!("short chunk header ({} bytes)", bytes.len()));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(CHUNK_MAGIC_AT) != CHUNK_RECORD_MAGIC {
        return Err("bad chunk record magic".to_string());
    }
    if bytes[CHUNK_CHECK_AT..CHUNK_HEADER_END] != key.header_check(&bytes[..CHUNK_CHECK_AT]) {
        return Err("chunk header check mismatch".to_string());
    }
    let flags = bytes[CHUNK_FLAGS_AT];
    let compressed = match (bytes[CHUNK_VERSION_AT], flags) {
        (CHUNK_RECORD_VERSION, 0) => false,
        (CHUNK_RECORD_VERSION_FLAGS, CHUNK_FLAG_ZSTD) => true,
        (CHUNK_RECORD_VERSION | CHUNK_RECORD_VERSION_FLAGS, flags) => {
            return Err(format!("unknown chunk record flags {flags:#04x}"));
        }
        (version, _) => return Err(format!("unsupported chunk record version {version}")),
    };
    let payload_len = u32_at(CHUNK_LEN_AT);
    if payload_len == 0 || payload_len > CHUNK_BYTES_MAX {
        return Err(format!(
            "chunk length {payload_len} outside 1..={CHUNK_BYTES_MAX}"
        ));
    }
    if compressed && payload_len <= ZSTD_PREFIX_BYTES {
        return Err(format!(
            "compressed chunk payload of {payload_len} bytes holds no frame"
        ));
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&bytes[CHUNK_DIGEST_AT..CHUNK_CHECK_AT]);
    Ok(ChunkHeader {
        payload_len,
        digest,
        compressed,
    })
}

/// The chunk length a compressed payload declares (its first
/// [`ZSTD_PREFIX_BYTES`]), checked: 1..=[`CHUNK_BYTES_MAX`], and more than
/// the payload (a record is compressed only when that saves bytes).
pub fn decode_zstd_prefix(payload_len: u32, prefix: &[u8]) -> Result<u32, String> {
    let bytes: [u8; 4] = prefix
        .get(..ZSTD_PREFIX_BYTES as usize)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| "compressed chunk payload shorter than its length prefix".to_string())?;
    let len = u32::from_le_bytes(bytes);
    if len <= payload_len || len > CHUNK_BYTES_MAX {
        return Err(format!(
            "compressed chunk of {payload_len} bytes declares {len} bytes, outside {}..={CHUNK_BYTES_MAX}",
            u64::from(payload_len) + 1
        ));
    }
    Ok(len)
}

// ---------------------------------------------------------------------------
// Hint files: `segments/NNNNNNNNNNNNNNNN.hint`
// ---------------------------------------------------------------------------

/// First four bytes of a hint file ("TBHT").
pub const HINT_MAGIC: u32 = u32::from_le_bytes(*b"TBHT");
/// Hint file version. History: 1 = first release; 2 = each entry also
/// holds the chunk's length (which a compressed record's payload length
/// is not). Version 1 hints are still read: their segments hold no
/// compressed records.
pub const HINT_VERSION: u8 = 2;
/// The oldest hint version read.
pub const HINT_VERSION_V1: u8 = 1;
/// Hint flag: the segment was fsynced before the hint was written.
pub const HINT_FLAG_SEGMENT_SYNCED: u8 = 1;

// Hint header layout, each offset derived from the previous field.
const HINT_MAGIC_AT: usize = 0;
const HINT_VERSION_AT: usize = HINT_MAGIC_AT + 4;
const HINT_FLAGS_AT: usize = HINT_VERSION_AT + 1;
const HINT_RESERVED_AT: usize = HINT_FLAGS_AT + 1;
const HINT_SEGMENT_AT: usize = HINT_RESERVED_AT + 2;
const HINT_SEGMENT_LEN_AT: usize = HINT_SEGMENT_AT + 8;
const HINT_COUNT_AT: usize = HINT_SEGMENT_LEN_AT + 8;
const HINT_HEADER_END: usize = HINT_COUNT_AT + 8;
/// Bytes of a hint file header.
pub const HINT_HEADER_BYTES: u64 = HINT_HEADER_END as u64;
const _: () = assert!(HINT_HEADER_BYTES == 32);
/// Bytes of one hint entry: record offset u64, payload length u32, chunk
/// length u32, digest.
pub const HINT_ENTRY_BYTES: u64 = 8 + 4 + 4 + 32;
/// Bytes of one version 1 hint entry: no chunk length.
const HINT_ENTRY_BYTES_V1: u64 = 8 + 4 + 32;
/// Bytes of the trailer: CRC-32 of everything before it.
pub const HINT_TRAILER_BYTES: u64 = 4;

/// The largest hint a segment of `segment_len` bytes can have: one entry
/// per smallest record. A longer hint file is damage and is not read.
pub fn hint_bytes_max(segment_len: u64) -> u64 {
    let records_max = segment_len.saturating_sub(SEGMENT_HEADER_BYTES) / (CHUNK_HEADER_BYTES + 1);
    HINT_HEADER_BYTES + records_max * HINT_ENTRY_BYTES + HINT_TRAILER_BYTES
}

/// One record of a sealed segment, as a hint lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintEntry {
    pub offset: u64,
    /// Bytes of the payload as stored.
    pub payload_len: u32,
    /// Bytes of the chunk: `payload_len` unless the record is compressed,
    /// then more.
    pub chunk_len: u32,
    pub digest: [u8; 32],
}

impl HintEntry {
    /// Whether the record is compressed.
    pub fn compressed(&self) -> bool {
        self.chunk_len != self.payload_len
    }
}

/// Encodes the hint of segment `segment` (`segment_len` bytes long) whose
/// records are `entries`, in file order.
pub fn encode_hint(segment: u64, segment_len: u64, synced: bool, entries: &[HintEntry]) -> Vec<u8> {
    let count = entries.len() as u64;
    let mut bytes = Vec::with_capacity(
        (HINT_HEADER_BYTES + count * HINT_ENTRY_BYTES + HINT_TRAILER_BYTES) as usize,
    );
    bytes.extend_from_slice(&HINT_MAGIC.to_le_bytes());
    bytes.push(HINT_VERSION);
    bytes.push(if synced { HINT_FLAG_SEGMENT_SYNCED } else { 0 });
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&segment.to_le_bytes());
    bytes.extend_from_slice(&segment_len.to_le_bytes());
    bytes.extend_from_slice(&count.to_le_bytes());
    debug_assert_eq!(bytes.len(), HINT_HEADER_END);
    for entry in entries {
        bytes.extend_from_slice(&entry.offset.to_le_bytes());
        bytes.extend_from_slice(&entry.payload_len.to_le_bytes());
        bytes.extend_from_slice(&entry.chunk_len.to_le_bytes());
        bytes.extend_from_slice(&entry.digest);
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// A hint file checked whole: crc, header, and every entry in bounds.
pub struct Hint<'a> {
    /// Whether the segment was fsynced before the hint was written.
    pub segment_synced: bool,
    /// Bytes of the segment the hint describes: all of it, or a prefix
    /// (an active segment's checkpoint) whose records end there.
    pub segment_len: u64,
    entries: &'a [u8],
    /// Version 1: entries without a chunk length.
    v1: bool,
}

impl Hint<'_> {
    fn entry_bytes(&self) -> usize {
        if self.v1 {
            HINT_ENTRY_BYTES_V1 as usize
        } else {
            HINT_ENTRY_BYTES as usize
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len() / self.entry_bytes()
    }

    /// Whether the segment has no records.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in file order.
    pub fn entries(&self) -> impl Iterator<Item = HintEntry> + '_ {
        let v1 = self.v1;
        self.entries
            .chunks_exact(self.entry_bytes())
            .map(move |entry| {
                let u32_at =
                    |at: usize| u32::from_le_bytes(entry[at..at + 4].try_into().expect("4 bytes"));
                let payload_len = u32_at(8);
                let (chunk_len, digest_at) = if v1 {
                    (payload_len, 12)
                } else {
                    (u32_at(12), 16)
                };
                HintEntry {
                    offset: u64::from_le_bytes(entry[0..8].try_into().expect("8 bytes")),
                    payload_len,
                    chunk_len,
                    digest: entry[digest_at..digest_at + 32]
                        .try_into()
                        .expect("32 bytes"),
                }
            })
    }
}

/// Checks a hint file for segment `segment`, which is now `segment_len`
/// bytes long. Torn (crc), foreign (magic, version, segment id) and stale
/// (the segment's length differs) hints are errors, as is any entry that
/// overlaps another or runs past the segment; the caller then scans the
/// segment instead.
pub fn decode_hint(bytes: &[u8], segment: u64, segment_len: u64) -> Result<Hint<'_>, String> {
    let framing = (HINT_HEADER_BYTES + HINT_TRAILER_BYTES) as usize;
    if bytes.len() < framing {
        return Err(format!(
            "hint is {} bytes, shorter than its framing",
            bytes.len()
        ));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - HINT_TRAILER_BYTES as usize);
    let crc = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    if crc32fast::hash(body) != crc {
        return Err("hint crc mismatch (torn or damaged)".to_string());
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let magic = u32::from_le_bytes(
        body[HINT_MAGIC_AT..HINT_VERSION_AT]
            .try_into()
            .expect("4 bytes"),
    );
    if magic != HINT_MAGIC {
        return Err(format!("bad hint magic {magic:#010x}"));
    }
    let v1 = match body[HINT_VERSION_AT] {
        HINT_VERSION => false,
        HINT_VERSION_V1 => true,
        version => return Err(format!("unsupported hint version {version}")),
    };
    let entry_bytes = if v1 {
        HINT_ENTRY_BYTES_V1
    } else {
        HINT_ENTRY_BYTES
    };
    if u64_at(HINT_SEGMENT_AT) != segment {
        return Err(format!("hint is for segment {}", u64_at(HINT_SEGMENT_AT)));
    }
    let hinted_len = u64_at(HINT_SEGMENT_LEN_AT);
    if hinted_len > segment_len || hinted_len < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "stale hint: it describes {hinted_len} bytes, the segment has {segment_len}"
        ));
    }
    let entries = &body[HINT_HEADER_END..];
    let count = u64_at(HINT_COUNT_AT);
    if count.checked_mul(entry_bytes) != Some(entries.len() as u64) {
        return Err(format!(
            "hint claims {count} entries in {} bytes",
            entries.len()
        ));
    }
    let hint = Hint {
        segment_synced: body[HINT_FLAGS_AT] & HINT_FLAG_SEGMENT_SYNCED != 0,
        segment_len: hinted_len,
        entries,
        v1,
    };
    let mut end = SEGMENT_HEADER_BYTES;
    for entry in hint.entries() {
        if entry.offset < end {
            return Err(format!(
                "hint entry at {} overlaps the one before",
                entry.offset
            ));
        }
        if entry.payload_len == 0 || entry.payload_len > CHUNK_BYTES_MAX {
            return Err(format!(
                "hint entry length {} outside 1..={CHUNK_BYTES_MAX}",
                entry.payload_len
            ));
        }
        // A compressed record is smaller than its chunk and holds a frame.
        let compressed_ok = entry.chunk_len > entry.payload_len
            && entry.payload_len > ZSTD_PREFIX_BYTES
            && entry.chunk_len <= CHUNK_BYTES_MAX;
        if entry.compressed() && !compressed_ok {
            return Err(format!(
                "hint entry at {}: a chunk of {} bytes stored in {}",
                entry.offset, entry.chunk_len, entry.payload_len
            ));
        }
        end = entry
            .offset
            .checked_add(CHUNK_HEADER_BYTES + u64::from(entry.payload_len))
            .filter(|&end| end <= hinted_len)
            .ok_or_else(|| format!("hint entry at {} runs past the segment", entry.offset))?;
    }
    // Records are back to back, so a prefix hint ends where its last record
    // does: the scan of the rest starts at a record boundary.
    if end != hinted_len && hinted_len != segment_len {
        return Err(format!(
            "hint of {hinted_len} bytes ends inside a record (last record ends at {end})"
        ));
    }
    Ok(hint)
}

// ---------------------------------------------------------------------------
// Metadata log: `meta.log`
// ---------------------------------------------------------------------------

/// First four bytes of `meta.log` ("TBML").
pub const META_MAGIC: u32 = u32::from_le_bytes(*b"TBML");
/// Metadata log format version, the one every new or rewritten log is
/// written in. History: 1 = first release (mutable fields end with the
/// custom pairs); 2 = mutable fields end with an external links list too.
/// A log is one version throughout (the version is in its header, never
/// per record), so a version-1 binary refuses a version-2 log at open
/// rather than taking its records for damage or a torn tail. A writable
/// open upgrades a version-1 log by rewriting it whole through the
/// compaction path (see `MetaLog::rewrite`); a read-only open reads both.
pub const META_VERSION: u8 = 2;
/// The oldest metadata log version still read.
pub const META_VERSION_MIN: u8 = 1;
/// The version whose mutable fields carry external links.
pub const META_VERSION_EXTERNAL_LINKS: u8 = 2;
const _: () = assert!(META_VERSION_MIN <= META_VERSION_EXTERNAL_LINKS);
const _: () = assert!(META_VERSION_EXTERNAL_LINKS <= META_VERSION);
/// `meta.log` header: magic u32, version u8, 3 reserved zero bytes.
pub const META_HEADER_BYTES: u64 = 8;

/// First four bytes of every metadata record. It contains 0xFE and 0xFF,
/// which never occur in UTF-8, so no user string can contain a fake record
/// start that resynchronisation after damage might pick up.
pub const META_RECORD_MAGIC: u32 = u32::from_le_bytes([0xFF, 0xB1, 0xFE, 0x4D]);

const META_MAGIC_AT: usize = 0;
const META_LEN_AT: usize = META_MAGIC_AT + 4;
const META_CRC_AT: usize = META_LEN_AT + 4;
const META_KIND_AT: usize = META_CRC_AT + 4;
const META_HEADER_END: usize = META_KIND_AT + 1;
/// Bytes of a metadata record header (magic, payload length, crc, kind).
pub const META_RECORD_HEADER_BYTES: u64 = META_HEADER_END as u64;

/// Record kinds.
pub const META_KIND_COMMIT: u8 = 1;
pub const META_KIND_DELETE: u8 = 2;
pub const META_KIND_UPDATE: u8 = 3;
/// A checkpoint: everything before it was synced when it was written (on a
/// clean close). Carries no payload. A damaged record before a checkpoint
/// is damage, never a torn tail: see ARCHITECTURE.md, "Bit rot is not a
/// torn write".
pub const META_KIND_CHECKPOINT: u8 = 4;
/// Name-index changes (`wasi:blobstore` containers and object names): a
/// list of [`NameOp`]s, applied in order. See ARCHITECTURE.md, "The name
/// index".
pub const META_KIND_NAMES: u8 = 5;
/// A commit that also binds the new artifact to an object name (replacing,
/// and deleting, whatever artifact the name held): the commit payload, then
/// container and object name. One record, so a crash leaves the old
/// object or the new one, never neither, and never an unbound artifact.
pub const META_KIND_COMMIT_BOUND: u8 = 6;

/// Longest container name, in bytes (names must also be non-empty).
pub const CONTAINER_NAME_BYTES_MAX: usize = 256;
/// Longest object name, in bytes (names must also be non-empty): S3's key limit.
pub const OBJECT_NAME_BYTES_MAX: usize = 1024;
/// Most name operations in one [`META_KIND_NAMES`] record: bounds what a
/// decoder allocates and what one live change (`delete-objects`) may ask.
pub const NAME_OPS_MAX: usize = 4096;
const NAME_OP_BYTES_MAX: u64 =
    1 + 2 * (4 + CONTAINER_NAME_BYTES_MAX as u64) + 2 * (4 + OBJECT_NAME_BYTES_MAX as u64) + 8;
const _: () = assert!(4 + NAME_OPS_MAX as u64 * NAME_OP_BYTES_MAX <= META_RECORD_BYTES_MAX);

const OPTION_STRING_BYTES_MAX: u64 = 1 + 4 + STRING_BYTES_MAX as u64;
const MUTABLE_METADATA_BYTES_MAX: u64 = 2 * OPTION_STRING_BYTES_MAX
    + 4
    + TAGS_MAX as u64 * (4 + TAG_BYTES_MAX as u64)
    + 4
    + LINKS_MAX as u64 * 16
    + 4
    + CUSTOM_PAIRS_MAX as u64 * (8 + CUSTOM_KEY_BYTES_MAX as u64 + CUSTOM_VALUE_BYTES_MAX as u64)
    + 4
    + EXTERNAL_LINKS_MAX as u64 * (4 + EXTERNAL_LINK_BYTES_MAX as u64);
/// Bytes of one manifest entry on disk: digest 32 + length u32.
pub const MANIFEST_ENTRY_BYTES: u64 = 36;
/// Largest metadata record payload: a commit of the largest manifest with
/// the largest metadata (about 577 MiB). Lengths above it are damage.
pub const META_RECORD_BYTES_MAX: u64 = 16
    + 8
    + 32
    + 8
    + 4
    + MANIFEST_CHUNKS_MAX * MANIFEST_ENTRY_BYTES
    + OPTION_STRING_BYTES_MAX
    + MUTABLE_METADATA_BYTES_MAX
    + 4
    + CONTAINER_NAME_BYTES_MAX as u64
    + 4
    + OBJECT_NAME_BYTES_MAX as u64;
const _: () = assert!(META_RECORD_BYTES_MAX <= u32::MAX as u64);

/// The mutable metadata of an artifact, as stored in commit and update
/// records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MutableFields {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub tags: Vec<String>,
    pub links: Vec<[u8; 16]>,
    pub custom: Vec<(String, String)>,
    /// Entity ids (version 2 on; a version-1 log holds none).
    pub external_links: Vec<String>,
}

/// One metadata log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaRecord {
    /// A new artifact, durable once this record is.
    Commit {
        id: [u8; 16],
        size: u64,
        digest: [u8; 32],
        created_ms: u64,
        chunks: Vec<([u8; 32], u32)>,
        creator: Option<String>,
        fields: MutableFields,
        /// `Some((container, object name))`: the artifact is bound to that
        /// name as it is committed (kind [`META_KIND_COMMIT_BOUND`]).
        bound: Option<(String, String)>,
    },
    /// Changes to the name index, applied in order.
    Names { ops: Vec<NameOp> },
    /// An artifact deleted.
    Delete { id: [u8; 16] },
    /// New mutable metadata of an artifact, replacing all of the old.
    Update {
        id: [u8; 16],
        modified_ms: u64,
        fields: MutableFields,
    },
    /// Written on a clean close, after everything before it was synced.
    Checkpoint,
}

/// One change to the name index. Every op that drops a binding deletes the
/// artifact it held (an artifact is bound by at most one name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameOp {
    /// A new, empty container.
    CreateContainer { container: String, created_ms: u64 },
    /// A container and every object in it (their artifacts deleted).
    DeleteContainer { container: String },
    /// Every object of a container (their artifacts deleted); it stays.
    ClearContainer { container: String },
    /// One object's binding (its artifact deleted).
    Unbind { container: String, name: String },
    /// An object's artifact rebound to another name (whose previous
    /// artifact, if any, is deleted).
    Move {
        from_container: String,
        from_name: String,
        to_container: String,
        to_name: String,
    },
}

const NAME_OP_CREATE: u8 = 1;
const NAME_OP_DELETE: u8 = 2;
const NAME_OP_CLEAR: u8 = 3;
const NAME_OP_UNBIND: u8 = 4;
const NAME_OP_MOVE: u8 = 5;

/// Checks a container name against its limits.
pub fn check_container_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > CONTAINER_NAME_BYTES_MAX {
        return Err(format!(
            "container name of {} bytes, must be 1..={CONTAINER_NAME_BYTES_MAX}",
            name.len()
        ));
    }
    Ok(())
}

/// Checks an object name against its limits.
pub fn check_object_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > OBJECT_NAME_BYTES_MAX {
        return Err(format!(
            "object name of {} bytes, must be 1..={OBJECT_NAME_BYTES_MAX}",
            name.len()
        ));
    }
    Ok(())
}

/// Checks the metadata limits; the message names the offending field.
pub fn check_metadata_limits(creator: Option<&str>, fields: &MutableFields) -> Result<(), String> {
    let strings = [
        ("filename", fields.filename.as_deref()),
        ("content type", fields.content_type.as_deref()),
        ("creator", creator),
    ];
    for (name, value) in strings {
        if let Some(value) = value {
            if value.len() > STRING_BYTES_MAX {
                return Err(format!(
                    "{name} is {} bytes, at most {STRING_BYTES_MAX}",
                    value.len()
                ));
            }
        }
    }
    if fields.tags.len() > TAGS_MAX {
        return Err(format!("{} tags, at most {TAGS_MAX}", fields.tags.len()));
    }
    for tag in &fields.tags {
        if tag.is_empty() || tag.len() > TAG_BYTES_MAX {
            return Err(format!(
                "tag of {} bytes, must be 1..={TAG_BYTES_MAX}",
                tag.len()
            ));
        }
    }
    if fields.links.len() > LINKS_MAX {
        return Err(format!("{} links, at most {LINKS_MAX}", fields.links.len()));
    }
    if fields.external_links.len() > EXTERNAL_LINKS_MAX {
        return Err(format!(
            "{} external links, at most {EXTERNAL_LINKS_MAX}",
            fields.external_links.len()
        ));
    }
    for link in &fields.external_links {
        if link.is_empty() || link.len() > EXTERNAL_LINK_BYTES_MAX {
            return Err(format!(
                "external link of {} bytes, must be 1..={EXTERNAL_LINK_BYTES_MAX}",
                link.len()
            ));
        }
    }
    if fields.custom.len() > CUSTOM_PAIRS_MAX {
        return Err(format!(
            "{} custom pairs, at most {CUSTOM_PAIRS_MAX}",
            fields.custom.len()
        ));
    }
    for (key, value) in &fields.custom {
        if key.is_empty() || key.len() > CUSTOM_KEY_BYTES_MAX {
            return Err(format!(
                "custom key of {} bytes, must be 1..={CUSTOM_KEY_BYTES_MAX}",
                key.len()
            ));
        }
        if value.len() > CUSTOM_VALUE_BYTES_MAX {
            return Err(format!(
                "custom value for {key:?} is {} bytes, at most {CUSTOM_VALUE_BYTES_MAX}",
                value.len()
            ));
        }
    }
    Ok(())
}

/// Encodes the `meta.log` file header of the current version.
pub fn encode_meta_header() -> [u8; META_HEADER_BYTES as usize] {
    encode_meta_header_in(META_VERSION)
}

/// Encodes a `meta.log` file header of `version` (older ones: for tests
/// of the upgrade).
pub fn encode_meta_header_in(version: u8) -> [u8; META_HEADER_BYTES as usize] {
    let mut header = [0u8; META_HEADER_BYTES as usize];
    header[0..4].copy_from_slice(&META_MAGIC.to_le_bytes());
    header[4] = version;
    header
}

/// Checks the `meta.log` file header.
pub fn decode_meta_header(bytes: &[u8]) -> Result<(), String> {
    decode_meta_header_version(bytes).map(|_| ())
}

/// Checks the `meta.log` file header; the log's version, one of
/// [`META_VERSION_MIN`]..=[`META_VERSION`].
pub fn decode_meta_header_version(bytes: &[u8]) -> Result<u8, String> {
    if bytes.len() < META_HEADER_BYTES as usize {
        return Err(format!(
            "meta.log header is {} bytes, expected {META_HEADER_BYTES}",
            bytes.len()
        ));
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic != META_MAGIC {
        return Err(format!("bad meta.log magic {magic:#010x}"));
    }
    if !(META_VERSION_MIN..=META_VERSION).contains(&bytes[4]) {
        return Err(format!("unsupported meta.log version {}", bytes[4]));
    }
    Ok(bytes[4])
}

/// Writes a record's payload to `out`; returns its kind.
fn encode_meta_payload(out: &mut Encoder, record: &MetaRecord) -> u8 {
    match record {
        MetaRecord::Commit {
            id,
            size,
            digest,
            created_ms,
            chunks,
            creator,
            fields,
            bound,
        } => {
            out.bytes(id);
            out.u64(*size);
            out.bytes(digest);
            out.u64(*created_ms);
            out.u32(u32::try_from(chunks.len()).expect("manifest length checked at commit"));
            for (digest, len) in chunks {
                out.bytes(digest);
                out.u32(*len);
            }
            out.option_string(creator.as_deref());
            out.fields(fields);
            match bound {
                None => META_KIND_COMMIT,
                Some((container, name)) => {
                    out.string(container);
                    out.string(name);
                    META_KIND_COMMIT_BOUND
                }
            }
        }
        MetaRecord::Names { ops } => {
            out.count(ops.len());
            for op in ops {
                match op {
                    NameOp::CreateContainer {
                        container,
                        created_ms,
                    } => {
                        out.bytes(&[NAME_OP_CREATE]);
                        out.string(container);
                        out.u64(*created_ms);
                    }
                    NameOp::DeleteContainer { container } => {
                        out.bytes(&[NAME_OP_DELETE]);
                        out.string(container);
                    }
                    NameOp::ClearContainer { container } => {
                        out.bytes(&[NAME_OP_CLEAR]);
                        out.string(container);
                    }
                    NameOp::Unbind { container, name } => {
                        out.bytes(&[NAME_OP_UNBIND]);
                        out.string(container);
                        out.string(name);
                    }
                    NameOp::Move {
                        from_container,
                        from_name,
                        to_container,
                        to_name,
                    } => {
                        out.bytes(&[NAME_OP_MOVE]);
                        out.string(from_container);
                        out.string(from_name);
                        out.string(to_container);
                        out.string(to_name);
                    }
                }
            }
            META_KIND_NAMES
        }
        MetaRecord::Delete { id } => {
            out.bytes(id);
            META_KIND_DELETE
        }
        MetaRecord::Update {
            id,
            modified_ms,
            fields,
        } => {
            out.bytes(id);
            out.u64(*modified_ms);
            out.fields(fields);
            META_KIND_UPDATE
        }
        MetaRecord::Checkpoint => META_KIND_CHECKPOINT,
    }
}

/// Bytes [`encode_meta_record`] would produce for `record`, counted
/// without encoding it (a commit's manifest can be hundreds of MiB).
pub fn meta_record_len(record: &MetaRecord) -> u64 {
    meta_record_len_in(META_VERSION, record)
}

/// [`meta_record_len`] in a log of `version`.
pub fn meta_record_len_in(version: u8, record: &MetaRecord) -> u64 {
    let mut out = Encoder::counting(version);
    encode_meta_payload(&mut out, record);
    META_RECORD_HEADER_BYTES + out.len
}

/// Encodes a whole record (header, then payload) in the current version.
pub fn encode_meta_record(record: &MetaRecord) -> Vec<u8> {
    encode_meta_record_in(META_VERSION, record)
}

/// Encodes a whole record for a log of `version`. A version-1 record has
/// no place for external links: the caller must have refused any (see
/// [`fields_fit_version`]); it asserts so.
pub fn encode_meta_record_in(version: u8, record: &MetaRecord) -> Vec<u8> {
    let mut out = Encoder::writing(version);
    out.bytes(&[0u8; META_HEADER_END]);
    let kind = encode_meta_payload(&mut out, record);
    let mut bytes = out.buffer;
    let payload_len = (bytes.len() - META_HEADER_END) as u64;
    assert!(
        payload_len <= META_RECORD_BYTES_MAX,
        "record within its limit"
    );
    bytes[META_MAGIC_AT..META_LEN_AT].copy_from_slice(&META_RECORD_MAGIC.to_le_bytes());
    bytes[META_LEN_AT..META_CRC_AT].copy_from_slice(&(payload_len as u32).to_le_bytes());
    bytes[META_KIND_AT] = kind;
    let crc = meta_crc(
        &bytes[META_LEN_AT..META_CRC_AT],
        kind,
        &bytes[META_HEADER_END..],
    );
    bytes[META_CRC_AT..META_KIND_AT].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The crc of a metadata record covers its length, kind and payload.
fn meta_crc(len: &[u8], kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// A metadata record header, checked for magic and a plausible length.
#[derive(Clone, Copy, Debug)]
pub struct MetaHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub kind: u8,
}

/// Decodes a metadata record header. The caller must still check that
/// `payload_len` bytes are present before reading them.
pub fn decode_meta_header_record(bytes: &[u8]) -> Result<MetaHeader, String> {
    if bytes.len() < META_HEADER_END {
        return Err(format!(
            "short metadata record header ({} bytes)",
            bytes.len()
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(META_MAGIC_AT) != META_RECORD_MAGIC {
        return Err("bad metadata record magic".to_string());
    }
    let payload_len = u32_at(META_LEN_AT);
    if u64::from(payload_len) > META_RECORD_BYTES_MAX {
        return Err(format!(
            "metadata record length {payload_len} over {META_RECORD_BYTES_MAX}"
        ));
    }
    Ok(MetaHeader {
        payload_len,
        crc: u32_at(META_CRC_AT),
        kind: bytes[META_KIND_AT],
    })
}

/// Checks a record's crc against its payload.
pub fn check_meta_crc(header: &MetaHeader, payload: &[u8]) -> Result<(), String> {
    if meta_crc(&header.payload_len.to_le_bytes(), header.kind, payload) != header.crc {
        return Err("metadata record crc mismatch".to_string());
    }
    Ok(())
}

/// Whether a record fits a log of `version`: a version-1 log cannot hold
/// external links.
pub fn fields_fit_version(version: u8, record: &MetaRecord) -> bool {
    match record {
        MetaRecord::Commit { fields, .. } | MetaRecord::Update { fields, .. } => {
            version >= META_VERSION_EXTERNAL_LINKS || fields.external_links.is_empty()
        }
        _ => true,
    }
}

/// Decodes a crc-checked record payload of the given kind, in the current
/// version.
pub fn decode_meta_payload(kind: u8, payload: &[u8]) -> Result<MetaRecord, String> {
    decode_meta_payload_in(META_VERSION, kind, payload)
}

/// Decodes a crc-checked record payload of the given kind from a log of
/// `version`.
pub fn decode_meta_payload_in(version: u8, kind: u8, payload: &[u8]) -> Result<MetaRecord, String> {
    let mut input = Decoder {
        bytes: payload,
        at: 0,
        version,
    };
    let record = match kind {
        META_KIND_COMMIT | META_KIND_COMMIT_BOUND => {
            let id = input.array::<16>()?;
            let size = input.u64()?;
            let digest = input.array::<32>()?;
            let created_ms = input.u64()?;
            let count = u64::from(input.u32()?);
            if count > MANIFEST_CHUNKS_MAX {
                return Err(format!(
                    "manifest of {count} chunks, at most {MANIFEST_CHUNKS_MAX}"
                ));
            }
            // Checked against the bytes present before allocating.
            input.need(count * MANIFEST_ENTRY_BYTES)?;
            let mut chunks = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let digest = input.array::<32>()?;
                let len = input.u32()?;
                if len == 0 || len > CHUNK_BYTES_MAX {
                    return Err(format!(
                        "manifest chunk length {len} outside 1..={CHUNK_BYTES_MAX}"
                    ));
                }
                chunks.push((digest, len));
            }
            let creator = input.option_string(STRING_BYTES_MAX)?;
            let fields = input.fields()?;
            check_metadata_limits(creator.as_deref(), &fields)?;
            let bound = if kind == META_KIND_COMMIT_BOUND {
                Some((input.container_name()?, input.object_name()?))
            } else {
                None
            };
            MetaRecord::Commit {
                id,
                size,
                digest,
                created_ms,
                chunks,
                creator,
                fields,
                bound,
            }
        }
        META_KIND_NAMES => {
            // An op is at least a tag and one non-empty name (6 bytes).
            let count = input.count(NAME_OPS_MAX, 6)?;
            let mut ops = Vec::with_capacity(count);
            for _ in 0..count {
                let op = match input.u8()? {
                    NAME_OP_CREATE => NameOp::CreateContainer {
                        container: input.container_name()?,
                        created_ms: input.u64()?,
                    },
                    NAME_OP_DELETE => NameOp::DeleteContainer {
                        container: input.container_name()?,
                    },
                    NAME_OP_CLEAR => NameOp::ClearContainer {
                        container: input.container_name()?,
                    },
                    NAME_OP_UNBIND => NameOp::Unbind {
                        container: input.container_name()?,
                        name: input.object_name()?,
                    },
                    NAME_OP_MOVE => NameOp::Move {
                        from_container: input.container_name()?,
                        from_name: input.object_name()?,
                        to_container: input.container_name()?,
                        to_name: input.object_name()?,
                    },
                    other => return Err(format!("unknown name operation {other}")),
                };
                ops.push(op);
            }
            MetaRecord::Names { ops }
        }
        META_KIND_DELETE => MetaRecord::Delete {
            id: input.array::<16>()?,
        },
        META_KIND_UPDATE => {
            let id = input.array::<16>()?;
            let modified_ms = input.u64()?;
            let fields = input.fields()?;
            check_metadata_limits(None, &fields)?;
            MetaRecord::Update {
                id,
                modified_ms,
                fields,
            }
        }
        META_KIND_CHECKPOINT => MetaRecord::Checkpoint,
        other => return Err(format!("unknown metadata record kind {other}")),
    };
    if input.at != payload.len() {
        return Err(format!(
            "{} trailing bytes in metadata record",
            payload.len() - input.at
        ));
    }
    Ok(record)
}

/// Writes little-endian fields to a buffer, or only counts them.
struct Encoder {
    buffer: Vec<u8>,
    /// Bytes written or counted.
    len: u64,
    counting: bool,
    /// The log version written.
    version: u8,
}

impl Encoder {
    fn writing(version: u8) -> Encoder {
        Encoder {
            buffer: Vec::new(),
            len: 0,
            counting: false,
            version,
        }
    }
    fn counting(version: u8) -> Encoder {
        Encoder {
            counting: true,
            ..Encoder::writing(version)
        }
    }
    fn bytes(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.counting {
            self.buffer.extend_from_slice(bytes);
        }
    }
    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }
    fn string(&mut self, value: &str) {
        // Every string was checked against a limit far below u32::MAX.
        self.u32(u32::try_from(value.len()).expect("string length checked"));
        self.bytes(value.as_bytes());
    }
    fn option_string(&mut self, value: Option<&str>) {
        match value {
            None => self.bytes(&[0]),
            Some(value) => {
                self.bytes(&[1]);
                self.string(value);
            }
        }
    }
    fn count(&mut self, count: usize) {
        self.u32(u32::try_from(count).expect("list length checked"));
    }
    fn fields(&mut self, fields: &MutableFields) {
        self.option_string(fields.filename.as_deref());
        self.option_string(fields.content_type.as_deref());
        self.count(fields.tags.len());
        for tag in &fields.tags {
            self.string(tag);
        }
        self.count(fields.links.len());
        for link in &fields.links {
            self.bytes(link);
        }
        self.count(fields.custom.len());
        for (key, value) in &fields.custom {
            self.string(key);
            self.string(value);
        }
        if self.version >= META_VERSION_EXTERNAL_LINKS {
            self.count(fields.external_links.len());
            for link in &fields.external_links {
                self.string(link);
            }
        } else {
            assert!(
                fields.external_links.is_empty(),
                "external links refused before a version-1 log is written"
            );
        }
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The version of the log the bytes come from.
    version: u8,
}

impl Decoder<'_> {
    fn need(&self, count: u64) -> Result<(), String> {
        let remaining = (self.bytes.len() - self.at) as u64;
        if count > remaining {
            return Err(format!(
                "metadata record needs {count} more bytes at offset {}, has {remaining}",
                self.at
            ));
        }
        Ok(())
    }
    fn take(&mut self, count: usize) -> Result<&[u8], String> {
        self.need(count as u64)?;
        let slice = &self.bytes[self.at..self.at + count];
        self.at += count;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array::<4>()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array::<8>()?))
    }
    fn string(&mut self, max: usize) -> Result<String, String> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(format!("string of {len} bytes, at most {max}"));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    fn container_name(&mut self) -> Result<String, String> {
        let name = self.string(CONTAINER_NAME_BYTES_MAX)?;
        check_container_name(&name)?;
        Ok(name)
    }
    fn object_name(&mut self) -> Result<String, String> {
        let name = self.string(OBJECT_NAME_BYTES_MAX)?;
        check_object_name(&name)?;
        Ok(name)
    }
    fn option_string(&mut self, max: usize) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string(max)?)),
            other => Err(format!("bad option tag {other}")),
        }
    }
    fn count(&mut self, max: usize, entry_bytes_min: u64) -> Result<usize, String> {
        let count = self.u32()? as usize;
        if count > max {
            return Err(format!("list of {count} entries, at most {max}"));
        }
        self.need(count as u64 * entry_bytes_min)?;
        Ok(count)
    }
    fn fields(&mut self) -> Result<MutableFields, String> {
        let filename = self.option_string(STRING_BYTES_MAX)?;
        let content_type = self.option_string(STRING_BYTES_MAX)?;
        let count = self.count(TAGS_MAX, 4)?;
        let mut tags = Vec::with_capacity(count);
        for _ in 0..count {
            tags.push(self.string(TAG_BYTES_MAX)?);
        }
        let count = self.count(LINKS_MAX, 16)?;
        let mut links = Vec::with_capacity(count);
        for _ in 0..count {
            links.push(self.array::<16>()?);
        }
        let count = self.count(CUSTOM_PAIRS_MAX, 8)?;
        let mut custom = Vec::with_capacity(count);
        for _ in 0..count {
            let key = self.string(CUSTOM_KEY_BYTES_MAX)?;
            let value = self.string(CUSTOM_VALUE_BYTES_MAX)?;
            custom.push((key, value));
        }
        let mut external_links = Vec::new();
        if self.version >= META_VERSION_EXTERNAL_LINKS {
            let count = self.count(EXTERNAL_LINKS_MAX, 4)?;
            external_links.reserve(count);
            for _ in 0..count {
                external_links.push(self.string(EXTERNAL_LINK_BYTES_MAX)?);
            }
        }
        Ok(MutableFields {
            filename,
            content_type,
            tags,
            links,
            custom,
            external_links,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_whole(bytes: &[u8]) -> Result<MetaRecord, String> {
        let header = decode_meta_header_record(bytes)?;
        let payload = &bytes[META_HEADER_END..];
        if payload.len() != header.payload_len as usize {
            return Err("length".into());
        }
        check_meta_crc(&header, payload)?;
        decode_meta_payload(header.kind, payload)
    }

    #[test]
    fn chunk_header_round_trips_and_detects_damage() {
        let header = encode_chunk_header(&RecordKey::from_salt(&[1; 16]), &[7; 32], 1234, true);
        assert_eq!(
            decode_chunk_header(&RecordKey::from_salt(&[1; 16]), &header).unwrap(),
            ChunkHeader {
                payload_len: 1234,
                digest: [7; 32],
                compressed: true,
            }
        );
        for at in 0..header.len() {
            let mut damaged = header;
            damaged[at] ^= 0x10;
            assert!(
                decode_chunk_header(&RecordKey::from_salt(&[1; 16]), &damaged).is_err(),
                "flip at {at} detected"
            );
        }
    }

    #[test]
    fn metadata_record_rejects_every_truncation() {
        let record = MetaRecord::Commit {
            id: [1; 16],
            size: 10,
            digest: [2; 32],
            created_ms: 5,
            chunks: vec![([3; 32], 10)],
            creator: Some("me".into()),
            fields: MutableFields {
                filename: Some("f".into()),
                content_type: None,
                tags: vec!["t".into()],
                links: vec![[4; 16]],
                custom: vec![("k".into(), "v".into())],
                external_links: vec!["run:1".into()],
            },
            bound: None,
        };
        let bytes = encode_meta_record(&record);
        assert_eq!(decode_whole(&bytes).unwrap(), record);
        for len in 0..bytes.len() {
            assert!(decode_whole(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn version_1_records_have_no_external_links_and_decode_only_as_version_1() {
        // Goal: a version-1 payload (fields ending with the custom pairs)
        // decodes in a version-1 log, and the same bytes are refused as
        // version 2 (short of the external links count), so a log is read
        // by its header's version only.
        let record = MetaRecord::Update {
            id: [1; 16],
            modified_ms: 3,
            fields: MutableFields {
                tags: vec!["t".into()],
                custom: vec![("k".into(), "v".into())],
                ..MutableFields::default()
            },
        };
        let bytes = encode_meta_record_in(1, &record);
        assert_eq!(bytes.len() + 4, encode_meta_record(&record).len());
        assert_eq!(meta_record_len_in(1, &record), bytes.len() as u64);
        let header = decode_meta_header_record(&bytes).unwrap();
        let payload = &bytes[META_HEADER_END..];
        assert_eq!(
            decode_meta_payload_in(1, header.kind, payload).unwrap(),
            record
        );
        assert!(decode_meta_payload_in(2, header.kind, payload).is_err());
        assert_eq!(decode_meta_header_version(&encode_meta_header_in(1)), Ok(1));
        assert_eq!(decode_meta_header_version(&encode_meta_header()), Ok(2));
        assert!(decode_meta_header_version(&encode_meta_header_in(3)).is_err());
        assert!(decode_meta_header_version(&encode_meta_header_in(0)).is_err());
        let with_links = MetaRecord::Update {
            id: [1; 16],
            modified_ms: 3,
            fields: MutableFields {
                external_links: vec!["e".into()],
                ..MutableFields::default()
            },
        };
        assert!(!fields_fit_version(1, &with_links));
        assert!(fields_fit_version(2, &with_links));
        assert!(fields_fit_version(1, &record));
    }

    #[test]
    fn name_records_and_bound_commits_round_trip_and_reject_every_truncation() {
        let names = MetaRecord::Names {
            ops: vec![
                NameOp::CreateContainer {
                    container: "c".into(),
                    created_ms: 7,
                },
                NameOp::Move {
                    from_container: "c".into(),
                    from_name: "a".into(),
                    to_container: "d".into(),
                    to_name: "b".into(),
                },
                NameOp::Unbind {
                    container: "c".into(),
                    name: "x".into(),
                },
                NameOp::ClearContainer {
                    container: "c".into(),
                },
                NameOp::DeleteContainer {
                    container: "d".into(),
                },
            ],
        };
        let bound = MetaRecord::Commit {
            id: [1; 16],
            size: 10,
            digest: [2; 32],
            created_ms: 5,
            chunks: vec![([3; 32], 10)],
            creator: None,
            fields: MutableFields::default(),
            bound: Some(("c".into(), "name".into())),
        };
        for record in [names, bound] {
            let bytes = encode_meta_record(&record);
            assert_eq!(decode_whole(&bytes).unwrap(), record);
            for len in 0..bytes.len() {
                assert!(decode_whole(&bytes[..len]).is_err());
            }
        }
        // Names over their limits are refused when decoded.
        let mut payload = Vec::new();
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.push(NAME_OP_DELETE);
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.push(0);
        let error = decode_meta_payload(META_KIND_NAMES, &payload).unwrap_err();
        assert!(error.contains("container name"), "{error}");
    }

    #[test]
    fn huge_counts_are_errors_not_allocations() {
        // A crc-valid payload claiming 2^24 chunks but holding none.
        let mut payload = vec![0u8; 16 + 8 + 32 + 8];
        payload.extend_from_slice(&(1u32 << 24).to_le_bytes());
        let error = decode_meta_payload(META_KIND_COMMIT, &payload).unwrap_err();
        assert!(error.contains("more bytes"), "{error}");
    }

    fn fields_strategy() -> impl Strategy<Value = MutableFields> {
        (
            proptest::option::of(".{0,20}"),
            proptest::option::of(".{0,20}"),
            proptest::collection::vec(".{1,10}", 0..4),
            proptest::collection::vec(any::<[u8; 16]>(), 0..4),
            proptest::collection::vec((".{1,8}", ".{0,8}"), 0..4),
            proptest::collection::vec(".{1,10}", 0..4),
        )
            .prop_map(
                |(filename, content_type, tags, links, custom, external_links)| MutableFields {
                    filename,
                    content_type,
                    tags,
                    links,
                    custom,
                    external_links,
                },
            )
    }

    proptest! {
        #[test]
        fn update_records_round_trip(id in any::<[u8; 16]>(), modified_ms in any::<u64>(), fields in fields_strategy()) {
            let record = MetaRecord::Update { id, modified_ms, fields };
            prop_assert_eq!(decode_whole(&encode_meta_record(&record)).unwrap(), record);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), kind in 0u8..8) {
            let _ = decode_meta_payload(kind, &bytes);
            let _ = decode_chunk_header(&RecordKey::from_salt(&[1; 16]), &bytes);
        }
    }
}
