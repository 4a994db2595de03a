//! Streaming, verified reads: `locate` → `read-manifest` pages → `read-chunk`.
//!
//! Owns one reader's position, a window of at most
//! [`MANIFEST_PAGE_REFS_MAX`] manifest entries and the one chunk being read.
//! Every byte handed out comes from `read-chunk`, which the host verifies
//! against the digest; we also check each chunk's length against the
//! manifest, so a short chunk can never shift the content.

use std::cell::RefCell;

use crate::exports::tensor::blob::transfer::GuestReader;
use crate::tensor::blob::chunk_store;
use crate::tensor::blob::types::{ArtifactId, ChunkRef, Error};
use crate::{options, CALL_BYTES_MAX};

/// Manifest entries fetched per `read-manifest` call (the WIT allows 65536).
const MANIFEST_PAGE_REFS_MAX: u32 = 1024;

/// The chunk currently cached: its index, where it starts, its bytes.
struct CurrentChunk {
    index: u64,
    start_offset: u64,
    bytes: Vec<u8>,
}

impl CurrentChunk {
    fn end_offset(&self) -> u64 {
        self.start_offset + self.bytes.len() as u64
    }
}

/// One reader's state.
pub(crate) struct ReadCursor {
    id: ArtifactId,
    size_bytes: u64,
    position: u64,
    /// Manifest entries `page_start_index..page_start_index + page.len()`.
    page_start_index: u64,
    page: Vec<ChunkRef>,
    current: Option<CurrentChunk>,
}

impl ReadCursor {
    /// Opens `id` at `offset` (<= size).
    pub(crate) fn open(id: ArtifactId, offset: u64) -> Result<Self, Error> {
        options::check_artifact_id(&id)?;
        let size_bytes = chunk_store::size(&id)?;
        let mut cursor = ReadCursor {
            id,
            size_bytes,
            position: 0,
            page_start_index: 0,
            page: Vec::new(),
            current: None,
        };
        cursor.seek(offset)?;
        Ok(cursor)
    }

    pub(crate) fn seek(&mut self, offset: u64) -> Result<(), Error> {
        if offset > self.size_bytes {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} is beyond the artifact's size {}",
                self.size_bytes
            )));
        }
        self.position = offset;
        Ok(())
    }

    /// Up to `len_bytes` bytes from the position, across chunk boundaries;
    /// empty at the end.
    pub(crate) fn read(&mut self, len_bytes: usize) -> Result<Vec<u8>, Error> {
        let remaining_bytes = self.size_bytes - self.position;
        // Bounded by `len_bytes` (<= 16 MiB or the inline limit), so this fits.
        let want_bytes = (len_bytes as u64).min(remaining_bytes) as usize;
        let mut out = Vec::with_capacity(want_bytes);
        while out.len() < want_bytes {
            let position = self.position;
            let chunk = self.chunk_at_position()?;
            // Within the chunk (checked when it was fetched), and a chunk is
            // at most 16 MiB, so the difference fits usize.
            let skip = (position - chunk.start_offset) as usize;
            let take = (want_bytes - out.len()).min(chunk.bytes.len() - skip);
            out.extend_from_slice(&chunk.bytes[skip..skip + take]);
            self.position += take as u64;
        }
        Ok(out)
    }

    /// The chunk holding `self.position` (< size), fetched if needed.
    fn chunk_at_position(&mut self) -> Result<&CurrentChunk, Error> {
        debug_assert!(self.position < self.size_bytes);
        let (index, start_offset) = match &self.current {
            Some(c) if (c.start_offset..c.end_offset()).contains(&self.position) => {
                return Ok(self.current.as_ref().expect("checked just above"));
            }
            // Sequential reading: the next chunk starts where this one ends.
            Some(c) if c.end_offset() == self.position => (c.index + 1, c.end_offset()),
            _ => chunk_store::locate(&self.id, self.position)?,
        };
        self.current = None;
        let chunk_ref = self.manifest_entry(index)?;
        let expected_len = chunk_ref.len;
        let bytes = chunk_store::read_chunk(&chunk_ref.digest)?;
        let end_offset = start_offset + bytes.len() as u64;
        if bytes.len() != expected_len as usize
            || !(start_offset..end_offset).contains(&self.position)
            || end_offset > self.size_bytes
        {
            return Err(Error::Corrupted(format!(
                "chunk {index} of {}: {} bytes at offset {start_offset}, manifest says {expected_len}",
                self.id,
                bytes.len()
            )));
        }
        Ok(self.current.insert(CurrentChunk {
            index,
            start_offset,
            bytes,
        }))
    }

    /// Manifest entry `index`, fetching the page that starts there if it is
    /// outside the window.
    fn manifest_entry(&mut self, index: u64) -> Result<ChunkRef, Error> {
        let in_window = index >= self.page_start_index
            && index - self.page_start_index < self.page.len() as u64;
        if !in_window {
            self.page = Vec::new();
            let page = chunk_store::read_manifest(&self.id, index, MANIFEST_PAGE_REFS_MAX)?;
            if page.is_empty() || page.len() > MANIFEST_PAGE_REFS_MAX as usize {
                return Err(Error::Corrupted(format!(
                    "manifest of {} has no valid page at chunk {index}",
                    self.id
                )));
            }
            self.page_start_index = index;
            self.page = page;
        }
        Ok(self.page[(index - self.page_start_index) as usize].clone())
    }
}

/// The whole content of `id`, refused as `too-large` over `size_bytes_max`.
pub(crate) fn read_all(id: ArtifactId, size_bytes_max: u64) -> Result<Vec<u8>, Error> {
    let mut cursor = ReadCursor::open(id, 0)?;
    if cursor.size_bytes > size_bytes_max {
        return Err(Error::TooLarge(format!(
            "artifact {} is {} bytes, over the inline limit {size_bytes_max}; use a reader",
            cursor.id, cursor.size_bytes
        )));
    }
    let size_bytes = cursor.size_bytes as usize;
    let content = cursor.read(size_bytes)?;
    assert_eq!(content.len(), size_bytes, "read stops only at the end");
    Ok(content)
}

/// The `reader` resource.
pub struct BlobReader {
    cursor: RefCell<ReadCursor>,
}

impl BlobReader {
    pub(crate) fn open(id: ArtifactId, offset: u64) -> Result<Self, Error> {
        Ok(BlobReader {
            cursor: RefCell::new(ReadCursor::open(id, offset)?),
        })
    }
}

impl GuestReader for BlobReader {
    fn read(&self, len: u32) -> Result<Vec<u8>, Error> {
        if len as usize > CALL_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "read of {len} bytes exceeds {CALL_BYTES_MAX}"
            )));
        }
        self.cursor.borrow_mut().read(len as usize)
    }

    fn seek(&self, offset: u64) -> Result<(), Error> {
        self.cursor.borrow_mut().seek(offset)
    }

    fn size(&self) -> u64 {
        self.cursor.borrow().size_bytes
    }
}
