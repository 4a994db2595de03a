//! BLAKE3-256 digests of chunks and of whole blobs.
//!
//! Owns the [`Hash`] type every other part of the guest uses for digests.
//! Must never accept a digest of any length other than 32 bytes.

use std::fmt;

/// Length of every digest in tensor-blob (BLAKE3-256).
pub const HASH_LEN_BYTES: usize = 32;

/// A BLAKE3-256 digest. Prints as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash([u8; HASH_LEN_BYTES]);

impl Hash {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; HASH_LEN_BYTES]) -> Self {
        Hash(bytes)
    }

    /// Parses a digest received as a byte list; `None` unless it is exactly
    /// [`HASH_LEN_BYTES`] long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; HASH_LEN_BYTES]>::try_from(bytes).ok().map(Hash)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN_BYTES] {
        &self.0
    }

    /// The digest as a `Vec`, the shape WIT `list<u8>` bindings want.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hash> for Hash {
    fn from(hash: blake3::Hash) -> Self {
        Hash(*hash.as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

/// The digest of one chunk's bytes.
pub fn chunk_digest(bytes: &[u8]) -> Hash {
    blake3::hash(bytes).into()
}

/// Incremental BLAKE3 of a whole blob, fed in arbitrary pieces.
///
/// Feeding the pieces of a blob in order gives the same digest as
/// [`chunk_digest`] of the concatenation.
#[derive(Clone, Default)]
pub struct ContentHasher {
    hasher: blake3::Hasher,
    len_bytes: u64,
}

impl ContentHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` to the content.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        // A usize always fits in u64 on the targets we build for (32 and 64 bit).
        self.len_bytes += bytes.len() as u64;
    }

    /// Number of bytes hashed so far.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// The digest of everything fed so far (the hasher stays usable).
    pub fn finalize(&self) -> Hash {
        self.hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_known_blake3_of_empty_input() {
        // Goal: we really use BLAKE3-256 (vector from the BLAKE3 spec).
        assert_eq!(
            chunk_digest(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = ContentHasher::new();
        for piece in data.chunks(777) {
            hasher.update(piece);
        }
        assert_eq!(hasher.finalize(), chunk_digest(&data));
        assert_eq!(hasher.len_bytes(), data.len() as u64);
    }

    #[test]
    fn from_slice_accepts_only_32_bytes() {
        assert!(Hash::from_slice(&[0; 31]).is_none());
        assert!(Hash::from_slice(&[0; 33]).is_none());
        assert!(Hash::from_slice(&[]).is_none());
        let hash = Hash::from_slice(&[7; 32]).unwrap();
        assert_eq!(hash.as_bytes(), &[7; 32]);
        assert_eq!(hash.to_vec(), vec![7; 32]);
    }
}
