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

/// Blocks read from the cache after which a block fetched ahead and never
/// read is given up (a get dropped halfway leaves its read-ahead behind):
/// a few readers' worth of read-ahead.
const STALE_READS: u64 = 4 * CAPACITY as u64;

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
    /// When a reader first copied from it (a tick of `Cache::reads`; 0:
    /// not yet). A block fetched ahead and not read yet is the last to go.
    read: AtomicU64,
    /// `Cache::reads` when it was added: a block not read within
    /// `STALE_READS` of that (its reader stopped) may go.
    born: u64,
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
    /// Counts blocks read (the first read of each), to order them by when
    /// they were read.
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
        while blocks.len() >= CAPACITY {
            // Room from the block read longest ago, but not the one read
            // last (its reader is likely not done with it), or from one
            // fetched ahead and left unread too long. Without one, a
            // read-ahead starts nothing and a read's own block is added
            // beyond the capacity: evicting a block fetched ahead and not
            // read yet would have another reader fetch it again. The excess
            // is at most the blocks the reads in progress started, each
            // read soon after. (A reader waiting on an evicted block still
            // holds it.)
            let now = self.reads.load(Ordering::Relaxed);
            let newest = blocks.iter().map(|b| b.read.load(Ordering::Relaxed)).max();
            let victim = blocks
                .iter()
                .enumerate()
                .filter_map(|(at, b)| {
                    let read = b.read.load(Ordering::Relaxed);
                    let done = read != 0 && Some(read) != newest;
                    let stale = read == 0 && now.saturating_sub(b.born) > STALE_READS;
                    ((done || stale) && b.is_filled()).then_some((at, read.max(b.born)))
                })
                .min_by_key(|&(_, when)| when)
                .map(|(at, _)| at);
            match victim {
                Some(at) => drop(blocks.remove(at)),
                None if ahead => return None,
                None => break,
            }
        }
        let block = Arc::new(Block {
            part: Arc::clone(part),
            start,
            outcome: Mutex::new(None),
            filled: Condvar::new(),
            read: AtomicU64::new(0),
            born: self.reads.load(Ordering::Relaxed),
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
            if block.read.load(Ordering::Relaxed) == 0 {
                let tick = self.reads.fetch_add(1, Ordering::Relaxed) + 1;
                block.read.store(tick, Ordering::Relaxed);
            }
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

    /// `len` bytes from block `block` of `part`, a part of 64 blocks.
    fn piece(part: &Arc<str>, block: u64, len: usize) -> Piece {
        Piece {
            part: Arc::clone(part),
            within: block * BLOCK_BYTES,
            part_len: 64 * BLOCK_BYTES,
            at: 0,
            len,
        }
    }

    /// A get dropped halfway leaves its read-ahead unread in the cache: it
    /// must not keep later readers' read-ahead out for good.
    #[test]
    fn blocks_fetched_ahead_and_never_read_give_way() {
        let server = crate::testing::S3Server::start().expect("s3s-fs starts");
        let client = Client::new(&server.config("stale")).unwrap();
        let (left, scanned): (Arc<str>, Arc<str>) =
            (Arc::from("stale/left"), Arc::from("stale/scanned"));
        for key in [&left, &scanned] {
            client.put(key, Bytes::from(vec![7u8; 64 << 20])).unwrap();
        }
        let cache = Cache::default();
        // Eight blocks fetched ahead of a reader that then went away.
        let abandoned: Vec<Piece> = (0..8).map(|b| piece(&left, b, 1)).collect();
        cache.read_ahead(&client, &abandoned);
        for p in &abandoned {
            let block = cache.block(&client, &left, block_of(p.within, p.part_len), false);
            block.expect("cached").wait().unwrap();
        }
        // Another reader reads on, block by block, then fetches the next
        // eight ahead.
        let mut buf = vec![0u8; 4096];
        let read = STALE_READS + 1;
        for b in 0..read {
            cache
                .read(&client, &[piece(&scanned, b, 4096)], &mut buf)
                .unwrap();
            assert_eq!(buf, vec![7u8; 4096]);
        }
        let next: Vec<Piece> = (read..read + 8).map(|b| piece(&scanned, b, 1)).collect();
        cache.read_ahead(&client, &next);
        let ahead = lock(&cache.blocks)
            .iter()
            .filter(|b| b.part == scanned && b.start >= read * BLOCK_BYTES)
            .count();
        assert_eq!(ahead, AHEAD_BLOCKS, "the read-ahead was let in");
    }
}
