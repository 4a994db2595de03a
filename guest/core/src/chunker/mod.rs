//! A push-driven chunker with bounded memory.
//!
//! Owns the streaming state machine: bytes arrive in slices of any size via
//! [`Chunker::push`], complete chunks leave as soon as their end is known,
//! [`Chunker::finish`] emits the tail. The boundaries are exactly those of a
//! one-shot pass over the whole content ([`chunk_lengths`]).
//!
//! How: both chunkings decide a cut from at most `max` bytes (the longest
//! chunk), so a cut is made only once `max` bytes are available, or at the
//! end. Bytes that cannot be cut yet (fewer than `max`) are kept in `pending`;
//! a chunk lying wholly inside the pushed slice is lent out without copying.
//! Memory: `pending` never holds more than `2 * max` bytes.

mod cdc;
mod fixed;

use std::borrow::Cow;

use fastcdc::v2020::FastCDC;

use crate::{Chunking, ParamsError};

#[derive(Clone, Debug)]
enum Cutter {
    Fixed(usize),
    ContentDefined(cdc::CdcCutter),
}

impl Cutter {
    /// Length of the first chunk of `window`, which is either exactly
    /// `max` bytes long or the non-empty end of the content.
    fn cut(&self, window: &[u8]) -> usize {
        debug_assert!(!window.is_empty());
        let len = match self {
            Cutter::Fixed(len_bytes) => fixed::cut(*len_bytes, window),
            Cutter::ContentDefined(cutter) => cutter.cut(window),
        };
        assert!(
            (1..=window.len()).contains(&len),
            "cut {len} outside window of {}",
            window.len()
        );
        len
    }
}

/// Cuts a stream of bytes into chunks; see the module documentation.
#[derive(Clone, Debug)]
pub struct Chunker {
    chunking: Chunking,
    cutter: Cutter,
    /// Longest chunk; a cut is only final with this many bytes in view.
    window_bytes: usize,
    /// Bytes not yet in any emitted chunk live in `pending[pending_start..]`.
    /// Between calls that is fewer than `window_bytes` bytes, and
    /// `pending_start` is 0.
    pending: Vec<u8>,
    pending_start: usize,
    /// Total bytes pushed, for the caller's size bookkeeping.
    pushed_bytes: u64,
}

impl Chunker {
    /// A chunker for `chunking`, whose parameters are validated first.
    pub fn new(chunking: Chunking) -> Result<Self, ParamsError> {
        chunking.validate()?;
        let cutter = match chunking {
            Chunking::Fixed(len_bytes) => Cutter::Fixed(len_bytes as usize),
            Chunking::ContentDefined(params) => Cutter::ContentDefined(cdc::CdcCutter::new(params)),
        };
        Ok(Chunker {
            chunking,
            cutter,
            window_bytes: chunking.chunk_len_bytes_max() as usize,
            pending: Vec::new(),
            pending_start: 0,
            pushed_bytes: 0,
        })
    }

    /// The (validated) chunking this chunker applies.
    pub fn chunking(&self) -> Chunking {
        self.chunking
    }

    /// Bytes pushed so far (since creation or the last [`finish`](Self::finish)).
    pub fn pushed_bytes(&self) -> u64 {
        self.pushed_bytes
    }

    /// Bytes held back, waiting for more input or [`finish`](Self::finish).
    pub fn pending_bytes(&self) -> usize {
        self.pending.len() - self.pending_start
    }

    /// Appends `data` to the stream and returns the chunks it completed, in
    /// order. Chunks wholly inside `data` are borrowed from it; chunks that
    /// began in earlier pushes are owned.
    pub fn push<'a>(&mut self, data: &'a [u8]) -> Vec<Cow<'a, [u8]>> {
        debug_assert_eq!(self.pending_start, 0);
        debug_assert!(self.pending.len() < self.window_bytes);
        self.pushed_bytes += data.len() as u64;
        let window = self.window_bytes;
        let mut chunks = Vec::new();
        // data[..data_pos] has been consumed: emitted or copied into pending.
        let mut data_pos = 0;

        // 1. Finish the chunks that started in earlier pushes. They need
        //    bytes from `data`, which are copied behind them (at most `window`).
        let carried_end = self.pending.len();
        while self.pending_start < self.pending.len() {
            let live = self.pending.len() - self.pending_start;
            if live < window {
                let take = (window - live).min(data.len() - data_pos);
                self.pending
                    .extend_from_slice(&data[data_pos..data_pos + take]);
                data_pos += take;
                if live + take < window {
                    // `data` is used up and still no full window: wait.
                    debug_assert_eq!(data_pos, data.len());
                    break;
                }
            }
            let start = self.pending_start;
            let len = self.cutter.cut(&self.pending[start..start + window]);
            chunks.push(Cow::Owned(self.pending[start..start + len].to_vec()));
            self.pending_start += len;
            if self.pending_start >= carried_end {
                // Only copies of `data` remain: give them back to `data` and
                // continue without copying.
                data_pos -= self.pending.len() - self.pending_start;
                self.pending.clear();
                self.pending_start = 0;
            }
        }
        // Keep the invariant "pending_start == 0 between calls".
        if self.pending_start > 0 {
            self.pending.drain(..self.pending_start);
            self.pending_start = 0;
        }

        // 2. Cut inside `data` while a full window is in view.
        if self.pending.is_empty() {
            while data.len() - data_pos >= window {
                let len = self.cutter.cut(&data[data_pos..data_pos + window]);
                chunks.push(Cow::Borrowed(&data[data_pos..data_pos + len]));
                data_pos += len;
            }
            // 3. Keep the rest (shorter than a window) for later.
            self.pending.extend_from_slice(&data[data_pos..]);
        } else {
            debug_assert_eq!(data_pos, data.len());
        }
        debug_assert!(self.pending.len() < window);
        chunks
    }

    /// Ends the stream: returns the remaining chunks (the last one may be
    /// shorter than the minimum) and resets the chunker for a new stream.
    pub fn finish(&mut self) -> Vec<Cow<'static, [u8]>> {
        debug_assert_eq!(self.pending_start, 0);
        let tail = std::mem::take(&mut self.pending);
        self.pushed_bytes = 0;
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < tail.len() {
            let len = self.cutter.cut(&tail[start..]);
            chunks.push(Cow::Owned(tail[start..start + len].to_vec()));
            start += len;
        }
        chunks
    }
}

/// Chunk lengths of `data` cut in one pass, with `FastCDC::new` over the
/// whole slice for content-defined chunking. The reference [`Chunker`] must
/// agree with, and a convenient one-shot API for native callers.
pub fn chunk_lengths(data: &[u8], chunking: Chunking) -> Result<Vec<usize>, ParamsError> {
    chunking.validate()?;
    Ok(match chunking {
        Chunking::Fixed(len_bytes) => data.chunks(len_bytes as usize).map(<[u8]>::len).collect(),
        Chunking::ContentDefined(params) => FastCDC::new(
            data,
            params.min_bytes as usize,
            params.avg_bytes as usize,
            params.max_bytes as usize,
        )
        .map(|chunk| chunk.length)
        .collect(),
    })
}

#[cfg(test)]
mod tests;
