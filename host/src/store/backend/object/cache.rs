//! The read cache: aligned blocks of parts, each fetched by one ranged GET
//! on the client's runtime while the reader waits or works. A sequential
//! reader (a get streaming an artifact, a scan) has the next blocks
//! fetched ahead of it, several at a time: one GET at a time is bound by
//! the round trip and the server's per-request rate, not the link.
//!
//! Parts are immutable and their keys never reused, so a cached block is
//! never stale; a block whose part was deleted fails with `NotFound`, and
//! the file's reader reads again from its newer layout.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};

use bytes::Bytes;

use super::client::Client;
use super::lock;

/// A block's size, and where blocks start in a part (multiples of it).
pub(super) const BLOCK_BYTES: u64 = 1 << 20;

/// Blocks a sequential reader has fetched ahead of it, and the most one
/// read has in flight at once.
pub(super) const AHEAD_BLOCKS: usize = 8;

/// Blocks kept: those ahead of one reader, the one or two it reads, and
/// one it read.
const CAPACITY: usize = AHEAD_BLOCKS + 3;

/// Bytes of a part a read wants: `len` bytes from byte `within` of `part`
/// (of `part_len` bytes), into the read's buffer at `at` (unused by a
/// read-ahead).
pub(super) struct Piece {
    pub(super) part: Arc<str>,
    pub(super) within: u64,
    pub(super) part_len: u64,
    pub(super) at: usize,
    pub(super) len: usize,
}

/// What a block's GET gave: an error is kept as its kind and message, so
/// every reader waiting on it gets one.
type Outcome = Result<Bytes, (io::ErrorKind, String)>;

/// One block of one part, filled once.
struct Block {
    part: Arc<str>,
    start: u64,
    outcome: Mutex<Option<Outcome>>,
    filled: Condvar,
    /// When a reader last copied from it (a tick of `Cache::reads`; 0: not
    /// yet). A block fetched ahead and not read yet is the last to go.
    read: AtomicU64,
}

impl Block {
    fn fill(&self, result: io::Result<Bytes>) {
        *lock(&self.outcome) = Some(result.map_err(|e| (e.kind(), e.to_string())));
        self.filled.notify_all();
    }

    fn is_filled(&self) -> bool {
        lock(&self.outcome).is_some()
    }

    fn wait(&self) -> io::Result<Bytes> {
        let mut outcome = lock(&self.outcome);
        loop {
            match &*outcome {
                Some(Ok(bytes)) => return Ok(bytes.clone()),
                Some(Err((kind, message))) => return Err(io::Error::new(*kind, message.clone())),
                None => outcome = self.filled.wait(outcome).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

type Blocks = Mutex<VecDeque<Arc<Block>>>;

/// The blocks of one backend, least recently asked for first.
#[derive(Default)]
pub(super) struct Cache {
    blocks: Arc<Blocks>,
    /// Counts reads from blocks, to order them by when they were read.
    reads: AtomicU64,
}

/// The block of a part (of `part_len` bytes) holding byte `within`:
/// (start, end).
fn block_of(within: u64, part_len: u64) -> (u64, u64) {
    let start = within / BLOCK_BYTES * BLOCK_BYTES;
    (start, (start + BLOCK_BYTES).min(part_len))
}

/// The blocks holding `pieces`, in order: (piece, block range).
fn blocks_of(pieces: &[Piece]) -> impl Iterator<Item = (&Piece, (u64, u64))> {
    pieces.iter().flat_map(|piece| {
        let end = piece.within + piece.len as u64;
        let mut next = piece.within;
        std::iter::from_fn(move || {
            (next < end).then(|| {
                let range = block_of(next, piece.part_len);
                next = range.1;
                (piece, range)
            })
        })
    })
}

impl Cache {
    /// The block of `part` starting at `start`, its GET started if it is
    /// not cached. With `ahead` (a read-ahead nobody waits for yet), no
    /// GET is started while `AHEAD_BLOCKS` are in flight or the cache has
    /// nothing filled to make room with: `None`.
    fn block(
        &self,
        client: &Client,
        part: &Arc<str>,
        (start, end): (u64, u64),
        ahead: bool,
    ) -> Option<Arc<Block>> {
        let mut blocks = lock(&self.blocks);
        if let Some(at) = blocks
            .iter()
            .position(|b| b.part == *part && b.start == start)
        {
            let block = blocks.remove(at).expect("found");
            blocks.push_back(Arc::clone(&block));
            return Some(block);
        }
        if ahead && blocks.iter().filter(|b| !b.is_filled()).count() >= AHEAD_BLOCKS {
            return None;
        }
        if blocks.len() >= CAPACITY {
            // Room from the block read longest ago, but not the one read
            // last (its reader is likely not done with it); a read-ahead
            // takes no other. (A reader waiting on an evicted block still
            // holds it.)
            let newest = blocks.iter().map(|b| b.read.load(Ordering::Relaxed)).max();
            let victim = blocks
                .iter()
                .enumerate()
                .filter(|(_, b)| {
                    let read = b.read.load(Ordering::Relaxed);
                    read != 0 && Some(read) != newest && b.is_filled()
                })
                .min_by_key(|(_, b)| b.read.load(Ordering::Relaxed))
                .map(|(at, _)| at)
                .or_else(|| (!ahead).then_some(0));
            match victim {
                Some(at) => drop(blocks.remove(at)),
                None => return None,
            }
        }
        let block = Arc::new(Block {
            part: Arc::clone(part),
            start,
            outcome: Mutex::new(None),
            filled: Condvar::new(),
            read: AtomicU64::new(0),
        });
        blocks.push_back(Arc::clone(&block));
        drop(blocks);
        let filling = Arc::clone(&block);
        let cache: Weak<Blocks> = Arc::downgrade(&self.blocks);
        client.get_range_then(part, start..end, move |result| {
            // A failed GET is not cached: who waits on it now gets the
            // error, as from a GET of its own; a later read tries again.
            if result.is_err() {
                if let Some(blocks) = cache.upgrade() {
                    lock(&blocks).retain(|b| !Arc::ptr_eq(b, &filling));
                }
            }
            filling.fill(result);
        });
        Some(block)
    }

    /// Fills `buf` with `pieces` (in the order given), block by block,
    /// with up to `AHEAD_BLOCKS` of the read in flight beyond the one
    /// waited for: a read over many small parts costs a few round trips,
    /// not one per part.
    pub(super) fn read(&self, client: &Client, pieces: &[Piece], buf: &mut [u8]) -> io::Result<()> {
        let blocks: Vec<(&Piece, (u64, u64))> = blocks_of(pieces).collect();
        let mut started: VecDeque<Arc<Block>> = VecDeque::new();
        for (k, &(piece, (start, end))) in blocks.iter().enumerate() {
            while started.len() <= AHEAD_BLOCKS && k + started.len() < blocks.len() {
                let (piece, range) = blocks[k + started.len()];
                started.push_back(
                    self.block(client, &piece.part, range, false)
                        .expect("not ahead"),
                );
            }
            let block = started.pop_front().expect("a block is started");
            let bytes = block.wait()?;
            let tick = self.reads.fetch_add(1, Ordering::Relaxed) + 1;
            block.read.store(tick, Ordering::Relaxed);
            let from = piece.within.max(start);
            let to = (piece.within + piece.len as u64).min(end);
            let at = piece.at + (from - piece.within) as usize;
            buf[at..at + (to - from) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
        Ok(())
    }

    /// Starts the GETs of the blocks holding `pieces` that are not cached,
    /// in order, up to `AHEAD_BLOCKS` blocks (cached or not) and as far as
    /// the bounds on GETs in flight and on room allow.
    pub(super) fn read_ahead(&self, client: &Client, pieces: &[Piece]) {
        for (piece, range) in blocks_of(pieces).take(AHEAD_BLOCKS) {
            if self.block(client, &piece.part, range, true).is_none() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_and_end_with_the_part() {
        assert_eq!(block_of(0, 10), (0, 10));
        assert_eq!(
            block_of(BLOCK_BYTES + 5, 3 * BLOCK_BYTES),
            (BLOCK_BYTES, 2 * BLOCK_BYTES)
        );
        assert_eq!(
            block_of(2 * BLOCK_BYTES, 2 * BLOCK_BYTES + 7),
            (2 * BLOCK_BYTES, 2 * BLOCK_BYTES + 7)
        );
    }
}
