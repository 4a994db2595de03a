//! The chunk index: digest -> where the chunk's record is, its length, how
//! many live manifest entries reference it and how many uploads pin it.
//!
//! In memory only. Locations come from scanning segments at open,
//! reference counts from replaying the metadata log: they are derived, never
//! stored, so they cannot drift from the manifests. Totals for stats and the
//! quota are kept up to date on every change. Never touches the disk.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use super::format::CHUNK_HEADER_BYTES;
use super::types::Hash;

/// Hashes digests for the index map. A digest is already uniformly random,
/// so SipHash over all 32 bytes (std's default) is wasted work on the
/// open path, where a million-chunk store does millions of lookups. But a
/// guest chooses chunk contents and could grind digests whose leading
/// bytes collide, so the bytes are not used raw: 16 of them are mixed
/// with two per-map random keys by a folded 64x64->128 multiply, whose
/// low bits depend on every input bit. Without the keys, colliding digests
/// cannot be ground offline.
#[derive(Clone)]
pub struct DigestHashState {
    keys: [u64; 2],
}

impl Default for DigestHashState {
    fn default() -> Self {
        let random = std::collections::hash_map::RandomState::new();
        DigestHashState {
            keys: [random.hash_one(0u8), random.hash_one(1u8) | 1],
        }
    }
}

impl BuildHasher for DigestHashState {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            keys: self.keys,
            value: 0,
        }
    }
}

/// See [`DigestHashState`].
pub struct DigestHasher {
    keys: [u64; 2],
    value: u64,
}

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        // `Hash` (a `[u8; 32]` newtype) hashes as one 32-byte write; any
        // other shape still hashes every byte, just slower.
        for chunk in bytes.chunks(16) {
            let mut block = [0u8; 16];
            block[..chunk.len()].copy_from_slice(chunk);
            let low = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
            let high = u64::from_le_bytes(block[8..].try_into().expect("8 bytes"));
            let product =
                u128::from(low ^ self.keys[0] ^ self.value) * u128::from(high ^ self.keys[1]);
            self.value = (product as u64) ^ ((product >> 64) as u64);
        }
    }

    fn write_usize(&mut self, value: usize) {
        self.write(&(value as u64).to_le_bytes());
    }

    fn finish(&self) -> u64 {
        self.value
    }
}

/// Where a chunk's record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
}

/// What the index knows about one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// `None` for a chunk a committed manifest references but no segment
    /// holds (lost to damage): reads of it are `Corrupted`, and putting its
    /// bytes again heals every artifact that uses it.
    pub location: Option<Location>,
    pub len: u32,
    /// Live manifest entries referring to this chunk.
    pub refs: u64,
    /// Uploads holding this chunk (each counts once).
    pub pins: u64,
}

impl ChunkEntry {
    /// Garbage: nothing references or pins it, so GC may drop it.
    pub fn is_garbage(&self) -> bool {
        self.refs == 0 && self.pins == 0
    }

    /// Contribution to (referenced chunks, referenced bytes, pinned-only bytes).
    fn totals(&self) -> (u64, u64, u64) {
        match (self.location, self.refs, self.pins) {
            (None, _, _) => (0, 0, 0),
            (Some(_), 0, 0) => (0, 0, 0),
            (Some(_), 0, _) => (0, 0, u64::from(self.len)),
            (Some(_), _, _) => (1, u64::from(self.len), 0),
        }
    }
}

/// The chunk index with its running totals.
#[derive(Default)]
pub struct Index {
    entries: HashMap<Hash, ChunkEntry, DigestHashState>,
    referenced_chunks: u64,
    referenced_bytes: u64,
    pinned_only_bytes: u64,
    pinned_only_chunks: u64,
}

impl Index {
    pub fn get(&self, digest: &Hash) -> Option<&ChunkEntry> {
        self.entries.get(digest)
    }

    /// Distinct stored chunks referenced by a live manifest.
    pub fn referenced_chunks(&self) -> u64 {
        self.referenced_chunks
    }

    /// Bytes of [`Index::referenced_chunks`].
    pub fn referenced_bytes(&self) -> u64 {
        self.referenced_bytes
    }

    /// Bytes of stored chunks pinned by uploads but not (yet) referenced.
    #[cfg(test)]
    pub fn pinned_only_bytes(&self) -> u64 {
        self.pinned_only_bytes
    }

    /// What the referenced and pinned chunks cost on disk: their records,
    /// headers included (a 1-byte chunk costs 49 bytes, not 1).
    pub fn cost_bytes(&self) -> u64 {
        self.referenced_bytes
            + self.pinned_only_bytes
            + CHUNK_HEADER_BYTES * (self.referenced_chunks + self.pinned_only_chunks)
    }

    /// Applies `change` to the entry of `digest`, keeping totals right.
    fn modify<R>(&mut self, digest: &Hash, change: impl FnOnce(&mut ChunkEntry) -> R) -> Option<R> {
        let entry = self.entries.get_mut(digest)?;
        let (chunks, bytes, pinned) = entry.totals();
        let result = change(entry);
        let (chunks_after, bytes_after, pinned_after) = entry.totals();
        // Each total is a sum that includes the old contribution: no underflow.
        self.referenced_chunks = self.referenced_chunks - chunks + chunks_after;
        self.referenced_bytes = self.referenced_bytes - bytes + bytes_after;
        self.pinned_only_bytes = self.pinned_only_bytes - pinned + pinned_after;
        self.pinned_only_chunks =
            self.pinned_only_chunks - u64::from(pinned > 0) + u64::from(pinned_after > 0);
        Some(result)
    }

    fn insert(&mut self, digest: Hash, entry: ChunkEntry) {
        let (chunks, bytes, pinned) = entry.totals();
        let previous = self.entries.insert(digest, entry);
        assert!(previous.is_none(), "insert only new digests");
        self.referenced_chunks += chunks;
        self.referenced_bytes += bytes;
        self.pinned_only_bytes += pinned;
        self.pinned_only_chunks += u64::from(pinned > 0);
    }

    /// Makes room for `additional` more chunks (open knows counts ahead).
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve(additional);
    }

    /// Records a chunk found by the recovery scan. A second copy of a digest
    /// already indexed is ignored (it is garbage for compaction); returns
    /// whether this copy was taken. Found chunks have no references or pins
    /// yet, so the totals do not change.
    pub fn insert_found(&mut self, digest: Hash, location: Location, len: u32) -> bool {
        match self.entries.entry(digest) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(ChunkEntry {
                    location: Some(location),
                    len,
                    refs: 0,
                    pins: 0,
                });
                true
            }
        }
    }

    /// Records a chunk just appended by an upload, pinned once by it. If the
    /// digest was a lost placeholder, this heals it.
    pub fn insert_put(&mut self, digest: Hash, location: Location, len: u32) {
        if self
            .modify(&digest, |entry| {
                assert!(entry.location.is_none(), "only a lost chunk is put again");
                entry.location = Some(location);
                entry.len = len;
                entry.pins += 1;
            })
            .is_none()
        {
            self.insert(
                digest,
                ChunkEntry {
                    location: Some(location),
                    len,
                    refs: 0,
                    pins: 1,
                },
            );
        }
    }

    /// Adds one manifest reference. A digest no segment holds gets a lost
    /// placeholder of length `len`; returns false in that case.
    pub fn add_ref(&mut self, digest: &Hash, len: u32) -> bool {
        match self.modify(digest, |entry| {
            entry.refs += 1;
            entry.location.is_some()
        }) {
            Some(stored) => stored,
            None => {
                self.insert(
                    *digest,
                    ChunkEntry {
                        location: None,
                        len,
                        refs: 1,
                        pins: 0,
                    },
                );
                false
            }
        }
    }

    /// Removes one manifest reference.
    pub fn drop_ref(&mut self, digest: &Hash) {
        self.modify(digest, |entry| {
            assert!(entry.refs > 0, "refcount of {digest} never below zero");
            entry.refs -= 1;
        })
        .expect("a referenced chunk is indexed");
    }

    /// Pins a stored chunk for an upload; false if it is absent or lost.
    pub fn pin(&mut self, digest: &Hash) -> bool {
        self.modify(digest, |entry| {
            if entry.location.is_none() {
                return false;
            }
            entry.pins += 1;
            true
        })
        .unwrap_or(false)
    }

    /// Releases one upload's pin.
    pub fn unpin(&mut self, digest: &Hash) {
        self.modify(digest, |entry| {
            assert!(entry.pins > 0, "pin count of {digest} never below zero");
            entry.pins -= 1;
        })
        .expect("a pinned chunk stays indexed: GC never drops pinned chunks");
    }

    /// Moves a chunk's record (compaction) if it is still at `from`.
    pub fn relocate(&mut self, digest: &Hash, from: Location, to: Location) -> bool {
        match self.entries.get_mut(digest) {
            Some(entry) if entry.location == Some(from) => {
                entry.location = Some(to);
                true
            }
            _ => false,
        }
    }

    /// Drops every garbage entry; returns how many.
    pub fn sweep(&mut self) -> u64 {
        let before = self.entries.len();
        self.entries.retain(|_, entry| !entry.is_garbage());
        (before - self.entries.len()) as u64
    }

    /// Bytes of indexed records (header included) per segment.
    pub fn live_bytes_by_segment(&self) -> HashMap<u64, u64> {
        let mut live = HashMap::new();
        for entry in self.entries.values() {
            if let Some(location) = entry.location {
                *live.entry(location.segment).or_insert(0) +=
                    CHUNK_HEADER_BYTES + u64::from(entry.len);
            }
        }
        live
    }

    /// The chunks whose records are in `segment`, in file order.
    pub fn chunks_in(&self, segment: u64) -> Vec<(Hash, Location, u32)> {
        let mut chunks: Vec<_> = self
            .entries
            .iter()
            .filter_map(|(digest, entry)| match entry.location {
                Some(location) if location.segment == segment => {
                    Some((*digest, location, entry.len))
                }
                _ => None,
            })
            .collect();
        chunks.sort_by_key(|(_, location, _)| location.offset);
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_refs_pins_and_healing() {
        let mut index = Index::default();
        let a = Hash::of(b"a");
        let at = Location {
            segment: 1,
            offset: 8,
        };
        index.insert_put(a, at, 10);
        assert_eq!(
            (index.referenced_chunks(), index.pinned_only_bytes()),
            (0, 10)
        );
        assert!(index.add_ref(&a, 10));
        index.unpin(&a);
        assert_eq!(
            (
                index.referenced_chunks(),
                index.referenced_bytes(),
                index.pinned_only_bytes()
            ),
            (1, 10, 0)
        );
        let lost = Hash::of(b"lost");
        assert!(!index.add_ref(&lost, 7));
        assert_eq!(index.referenced_bytes(), 10, "lost chunks hold no bytes");
        assert!(!index.pin(&lost));
        index.insert_put(
            lost,
            Location {
                segment: 1,
                offset: 100,
            },
            7,
        );
        assert_eq!(
            (index.referenced_chunks(), index.referenced_bytes()),
            (2, 17)
        );
        index.unpin(&lost);
        index.drop_ref(&lost);
        index.drop_ref(&a);
        assert_eq!(index.sweep(), 2);
        assert_eq!(
            (
                index.referenced_chunks(),
                index.referenced_bytes(),
                index.pinned_only_bytes()
            ),
            (0, 0, 0)
        );
    }
}
