//! A file as immutable parts (see the module doc of `super` and
//! ARCHITECTURE.md, "The object-store backend"): each part holds the bytes
//! of one range and the file's length after it; the file is its parts
//! applied in sequence order.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::cache::Piece;
use super::{Fence, Shared};
use crate::store::backend::BackendFile;

/// Dirty bytes of one file that a write uploads at once, sync or not, so
/// memory stays bounded whatever the caller writes between syncs.
pub(super) const FLUSH_BYTES: usize = 4 << 20;

/// How far ahead of a sequential reader its bytes are fetched.
const READ_AHEAD_BYTES: u64 = super::cache::AHEAD_BLOCKS as u64 * super::cache::BLOCK_BYTES;

/// Reads in a row, each starting at or just past where the one before
/// ended, that make a reader sequential (one such read is any first read:
/// the header of a file opened to check it).
const SEQUENTIAL_READS: u32 = 2;

/// One range of the file's content, held by a part.
#[derive(Clone, Debug)]
struct Extent {
    /// One past the range's last byte.
    end: u64,
    /// The part's key.
    part: Arc<str>,
    /// The file offset of the part's first byte.
    base: u64,
    /// The part's size.
    part_len: u64,
}

#[derive(Default)]
struct FileState {
    /// The file's length as reads see it.
    len: u64,
    /// What the uploaded parts hold: start -> extent, disjoint.
    extents: BTreeMap<u64, Extent>,
    /// Bytes written since they were last uploaded: start -> bytes,
    /// disjoint and not adjacent.
    dirty: BTreeMap<u64, Vec<u8>>,
    dirty_bytes: usize,
    /// Ranges being uploaded, in sequence order: above the extents, below
    /// the dirty ranges.
    inflight: Vec<(u64, Bytes)>,
    /// The lowest length a shrinking `set_len` left since the last upload,
    /// if below what the parts describe.
    shrink_to: Option<u64>,
    /// The length the uploaded parts describe.
    uploaded_len: u64,
    /// The next part's sequence number (never reused: a part whose upload
    /// failed may still have landed).
    next_seq: u64,
    /// Every part the file has in the bucket (as listed or uploaded), in
    /// sequence order, with its size.
    parts: BTreeMap<u64, (Arc<str>, u64)>,
}

/// One file's content, shared by every handle to it.
pub(super) struct ObjectFile {
    shared: Arc<Shared>,
    /// `<dir>/~f/<file id>`.
    key: String,
    fence: Arc<Fence>,
    state: Mutex<FileState>,
    /// One upload or length change at a time.
    sync_lock: Mutex<()>,
    /// Set when the file's removal is durable: its parts go when the last
    /// handle does.
    pub(super) delete_on_drop: AtomicBool,
    /// Where the last read ended, and how many reads in a row started
    /// there or just past it.
    reads: Mutex<(u64, u32)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A part's name: sequence, offset of its bytes, the file's length after it.
fn part_name(seq: u64, offset: u64, len_after: u64) -> String {
    format!("{seq:016x}-{offset:016x}-{len_after:016x}")
}

fn parse_part_name(name: &str) -> Option<(u64, u64, u64)> {
    let mut fields = name.split('-');
    let mut next = || {
        let field = fields.next()?;
        (field.len() == 16)
            .then(|| u64::from_str_radix(field, 16).ok())
            .flatten()
    };
    let parsed = (next()?, next()?, next()?);
    fields.next().is_none().then_some(parsed)
}

/// A file is consolidated (see [`ObjectFile::consolidate`]) once it has
/// more parts than this, and more than one per this many bytes of it.
const CONSOLIDATE_PARTS_MIN: usize = 64;
const CONSOLIDATE_BYTES_PER_PART: u64 = 64 << 10;

impl FileState {
    /// What the uploaded parts hold of file bytes `offset..end`, in file
    /// order, as pieces of a buffer that starts at file offset `offset`.
    fn pieces(&self, offset: u64, end: u64) -> Vec<Piece> {
        let mut pieces: Vec<Piece> = self
            .extents
            .range(..end)
            .rev()
            .take_while(|(_, e)| e.end > offset)
            .map(|(&s, extent)| {
                let (from, to) = (s.max(offset), extent.end.min(end));
                Piece {
                    part: Arc::clone(&extent.part),
                    within: from - extent.base,
                    part_len: extent.part_len,
                    at: (from - offset) as usize,
                    len: (to - from) as usize,
                }
            })
            .collect();
        pieces.reverse();
        pieces
    }

    /// Forgets the data parts no extent refers to any more (every byte of
    /// theirs written again by a later part, or cut off), returning their
    /// keys to delete. Safe once the later parts are uploaded: replaying the
    /// rest gives the same file. Parts of no bytes (length changes) and
    /// the newest part stay: later lengths depend on them.
    fn take_shadowed(&mut self) -> Vec<String> {
        let referenced: std::collections::HashSet<&str> =
            self.extents.values().map(|e| &*e.part).collect();
        let newest = self.parts.keys().next_back().copied();
        let dead: Vec<u64> = self
            .parts
            .iter()
            .filter(|(seq, (key, size))| {
                *size > 0 && Some(**seq) != newest && !referenced.contains(&**key)
            })
            .map(|(&seq, _)| seq)
            .collect();
        dead.into_iter()
            .filter_map(|seq| self.parts.remove(&seq))
            .map(|(key, _)| key.to_string())
            .collect()
    }

    /// Records that `part` now holds `[start, start + len)` (its bytes from
    /// its first).
    fn cover(&mut self, start: u64, len: u64, part: Arc<str>) {
        let end = start + len;
        if len > 0 {
            self.clip_extents(start, end);
            self.extents.insert(
                start,
                Extent {
                    end,
                    part,
                    base: start,
                    part_len: len,
                },
            );
        }
    }

    /// Removes `[start, end)` from the extents, keeping what lies outside.
    fn clip_extents(&mut self, start: u64, end: u64) {
        let overlapping: Vec<u64> = self
            .extents
            .range(..end)
            .rev()
            .take_while(|(_, e)| e.end > start)
            .map(|(&s, _)| s)
            .collect();
        for s in overlapping {
            let extent = self.extents.remove(&s).expect("listed");
            if s < start {
                let mut left = extent.clone();
                left.end = start;
                self.extents.insert(s, left);
            }
            if extent.end > end {
                self.extents.insert(end, extent);
            }
        }
    }

    /// Sets the length, dropping content past it.
    fn truncate(&mut self, len: u64) {
        if len < self.len {
            self.clip_extents(len, u64::MAX);
            let cut: Vec<u64> = self.dirty.range(len..).map(|(&s, _)| s).collect();
            for s in cut {
                let bytes = self.dirty.remove(&s).expect("listed");
                self.dirty_bytes -= bytes.len();
            }
            if let Some((&s, bytes)) = self.dirty.range_mut(..len).next_back() {
                let keep = (len - s) as usize;
                if bytes.len() > keep {
                    self.dirty_bytes -= bytes.len() - keep;
                    bytes.truncate(keep);
                }
            }
        }
        self.len = len;
    }

    /// Writes `data` at `offset` into the dirty ranges; `under`: only where
    /// no dirty range has bytes (to put back a failed upload beneath the
    /// writes made since).
    fn write_dirty(&mut self, data: &[u8], offset: u64, under: bool) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // The common case: an append to the last dirty range.
        if !under {
            if let Some((&s, last)) = self.dirty.iter_mut().next_back() {
                if s + last.len() as u64 == offset {
                    last.extend_from_slice(data);
                    self.dirty_bytes += data.len();
                    return;
                }
            }
        }
        let touching: Vec<u64> = self
            .dirty
            .range(..=end)
            .rev()
            .take_while(|(&s, bytes)| s + bytes.len() as u64 >= offset)
            .map(|(&s, _)| s)
            .collect();
        let mut start = offset;
        let mut stop = end;
        for &s in &touching {
            start = start.min(s);
            stop = stop.max(s + self.dirty[&s].len() as u64);
        }
        let mut merged = vec![0u8; (stop - start) as usize];
        let new_at = (offset - start) as usize;
        if under {
            merged[new_at..new_at + data.len()].copy_from_slice(data);
        }
        for s in touching {
            let bytes = self.dirty.remove(&s).expect("listed");
            self.dirty_bytes -= bytes.len();
            let at = (s - start) as usize;
            merged[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        if !under {
            merged[new_at..new_at + data.len()].copy_from_slice(data);
        }
        self.dirty_bytes += merged.len();
        self.dirty.insert(start, merged);
    }
}

impl ObjectFile {
    /// A file with no parts yet (a new file id).
    pub(super) fn new(shared: Arc<Shared>, key: String, fence: Arc<Fence>) -> ObjectFile {
        ObjectFile {
            shared,
            key,
            fence,
            state: Mutex::new(FileState {
                next_seq: 1,
                ..FileState::default()
            }),
            sync_lock: Mutex::new(()),
            delete_on_drop: AtomicBool::new(false),
            reads: Mutex::new((0, 0)),
        }
    }

    /// The file whose parts are under `key`, from a listing of them.
    pub(super) fn load(
        shared: Arc<Shared>,
        key: String,
        fence: Arc<Fence>,
    ) -> io::Result<ObjectFile> {
        let file = ObjectFile::new(Arc::clone(&shared), key, fence);
        let mut parts = Vec::new();
        for object in shared.client.list(&file.key)? {
            let key = object.location.to_string();
            let name = object.location.filename().unwrap_or_default();
            let (seq, offset, len_after) = parse_part_name(name).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("object store: {key}: not a part of a file"),
                )
            })?;
            parts.push((seq, offset, len_after, object.size, key));
        }
        parts.sort_by_key(|p| p.0);
        {
            let mut state = lock(&file.state);
            for (seq, offset, len_after, size, key) in parts {
                let key: Arc<str> = Arc::from(key);
                state.parts.insert(seq, (Arc::clone(&key), size));
                state.cover(offset, size, key);
                state.len = state.len.max(offset + size);
                state.truncate(len_after);
                state.next_seq = seq + 1;
            }
            state.uploaded_len = state.len;
        }
        Ok(file)
    }

    /// Lists the file's parts again and reads by that layout from now on,
    /// on a host that does not write the file (no lease on its directory,
    /// nothing written through it): the writer elsewhere may have deleted
    /// parts this host listed (rewritten by later parts, or consolidated),
    /// whose bytes the newer parts hold. A writer's own layout is current.
    fn relist(&self) -> io::Result<()> {
        if self.fence.held() {
            return Ok(());
        }
        let fresh = ObjectFile::load(
            Arc::clone(&self.shared),
            self.key.clone(),
            Arc::clone(&self.fence),
        )?;
        let mut state = lock(&self.state);
        if state.dirty.is_empty() && state.inflight.is_empty() && state.shrink_to.is_none() {
            *state = std::mem::take(&mut *lock(&fresh.state));
        }
        Ok(())
    }

    /// The keys of every part this file has uploaded or that a listing
    /// shows (for deleting them).
    pub(super) fn part_keys(&self) -> io::Result<Vec<String>> {
        Ok(self
            .shared
            .client
            .list(&self.key)?
            .into_iter()
            .map(|o| o.location.to_string())
            .collect())
    }

    /// Uploads every dirty range (and a pending length change) as parts.
    fn upload(&self) -> io::Result<()> {
        let _one = lock(&self.sync_lock);
        let (parts, final_len, shrink) = {
            let mut state = lock(&self.state);
            let final_len = state.len;
            if state.dirty.is_empty()
                && state.shrink_to.is_none()
                && final_len == state.uploaded_len
            {
                return Ok(());
            }
            let mut parts = Vec::new();
            let shrink = state.shrink_to.take();
            if let Some(to) = shrink {
                let seq = state.next_seq;
                state.next_seq += 1;
                parts.push((seq, part_name(seq, to, to), 0, Bytes::new()));
            }
            let dirty = std::mem::take(&mut state.dirty);
            state.dirty_bytes = 0;
            for (offset, bytes) in dirty {
                let seq = state.next_seq;
                state.next_seq += 1;
                let bytes = Bytes::from(bytes);
                state.inflight.push((offset, bytes.clone()));
                parts.push((seq, part_name(seq, offset, final_len), offset, bytes));
            }
            if parts.iter().all(|p| p.3.is_empty()) && shrink != Some(final_len) {
                // Only the length changed (grown by `set_len`).
                let seq = state.next_seq;
                state.next_seq += 1;
                parts.push((
                    seq,
                    part_name(seq, final_len, final_len),
                    final_len,
                    Bytes::new(),
                ));
            }
            (parts, final_len, shrink)
        };
        let keys: Vec<String> = parts
            .iter()
            .map(|(_, name, _, _)| format!("{}/{name}", self.key))
            .collect();
        let result = self.fence.check().and_then(|()| {
            self.shared.client.put_all(
                keys.iter()
                    .cloned()
                    .zip(parts.iter().map(|p| p.3.clone()))
                    .collect(),
            )
        });
        let mut state = lock(&self.state);
        let inflight = std::mem::take(&mut state.inflight);
        match result {
            Ok(()) => {
                for ((seq, _, offset, bytes), key) in parts.iter().zip(keys) {
                    let key: Arc<str> = Arc::from(key);
                    state
                        .parts
                        .insert(*seq, (Arc::clone(&key), bytes.len() as u64));
                    state.cover(*offset, bytes.len() as u64, key);
                }
                // Writes past `final_len` made during the upload are still
                // dirty; the extents hold nothing past what the file has.
                let len = state.len;
                state.clip_extents(len, u64::MAX);
                state.uploaded_len = final_len;
                let shadowed = state.take_shadowed();
                let consolidate = state.parts.len() > CONSOLIDATE_PARTS_MIN
                    && state.parts.len() as u64 > state.uploaded_len / CONSOLIDATE_BYTES_PER_PART;
                drop(state);
                self.fence.check()?;
                // Housekeeping, best effort: the sync is done, and a part
                // left behind is only read past (or consolidated later).
                let _ = self.shared.client.delete_all(shadowed);
                if consolidate {
                    let _ = self.consolidate();
                }
                Ok(())
            }
            Err(e) => {
                for (offset, bytes) in inflight {
                    if offset < state.len {
                        let keep = ((state.len - offset) as usize).min(bytes.len());
                        state.write_dirty(&bytes[..keep], offset, true);
                    }
                }
                if let Some(to) = shrink {
                    state.shrink_to = Some(state.shrink_to.map_or(to, |s| s.min(to)));
                }
                Err(e)
            }
        }
    }
}

impl ObjectFile {
    /// Writes the uploaded content again as parts of at most
    /// [`FLUSH_BYTES`] covering the whole file, then deletes every older
    /// part: a file written in many scattered small ranges (the catalog
    /// database's pages) would otherwise keep one object per range. Called
    /// with the sync lock held; dirty bytes stay dirty.
    fn consolidate(&self) -> io::Result<()> {
        let (len, first_seq) = {
            let state = lock(&self.state);
            (state.uploaded_len, state.next_seq)
        };
        let mut written = Vec::new();
        let mut at = 0u64;
        let piece = FLUSH_BYTES as u64;
        while at < len || (len == 0 && written.is_empty()) {
            let size = piece.min(len - at);
            let mut bytes = vec![0u8; size as usize];
            self.read_uploaded(&mut bytes, at)?;
            let seq = {
                let mut state = lock(&self.state);
                let seq = state.next_seq;
                state.next_seq += 1;
                seq
            };
            let key = format!("{}/{}", self.key, part_name(seq, at, len));
            self.fence.check()?;
            self.shared.client.put(&key, Bytes::from(bytes))?;
            written.push((seq, key, at, size));
            at += size;
        }
        self.fence.check()?;
        let old: Vec<String> = {
            let mut state = lock(&self.state);
            let old: Vec<String> = state
                .parts
                .range(..first_seq)
                .map(|(_, (key, _))| key.to_string())
                .collect();
            state.parts = state.parts.split_off(&first_seq);
            for (seq, key, at, size) in written {
                let key: Arc<str> = Arc::from(key);
                state.parts.insert(seq, (Arc::clone(&key), size));
                state.cover(at, size, key);
            }
            old
        };
        let _ = self.shared.client.delete_all(old);
        Ok(())
    }

    /// Fills `buf` from the uploaded parts only (not the dirty ranges).
    fn read_uploaded(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let pieces = lock(&self.state).pieces(offset, offset + buf.len() as u64);
        buf.fill(0);
        self.shared.read_parts(&pieces, buf)
    }
}

impl Drop for ObjectFile {
    fn drop(&mut self) {
        if self.delete_on_drop.load(Ordering::Acquire) {
            // Best effort: a writer's next sweep deletes what is left.
            if let Ok(keys) = self.part_keys() {
                let _ = self.shared.client.delete_all(keys);
            }
        }
    }
}

/// A handle: the shared file, and whether it may be written through.
pub(super) struct Handle {
    pub(super) file: Arc<ObjectFile>,
    pub(super) writable: bool,
}

impl Handle {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{}: opened for reading", self.file.key),
            ))
        }
    }
}

impl BackendFile for Handle {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.file.state).len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        // A part this read was about to fetch may be deleted meanwhile (its
        // bytes rewritten by a later part, or consolidated): read again
        // from the newer layout, this process's or, written elsewhere, the
        // bucket's.
        let mut tries = 0;
        loop {
            match self.read_once(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => {
                    tries += 1;
                    if tries >= 2 {
                        self.file.relist()?;
                    }
                }
                result => return result,
            }
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past 2^64"))?;
        let flush = {
            let mut state = lock(&self.file.state);
            state.write_dirty(buf, offset, false);
            state.len = state.len.max(offset + buf.len() as u64);
            state.dirty_bytes >= FLUSH_BYTES
        };
        if flush {
            self.file.upload()?;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let _one = lock(&self.file.sync_lock);
        let mut state = lock(&self.file.state);
        if len < state.uploaded_len {
            state.shrink_to = Some(state.shrink_to.map_or(len, |s| s.min(len)));
        }
        state.truncate(len);
        Ok(())
    }

    // As `fsync` on a file opened for reading: allowed, and it makes the
    // file's writes (through any handle) durable.
    fn sync_data(&self) -> io::Result<()> {
        self.file.upload()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn punch_hole(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "object store: parts are immutable; no holes",
        ))
    }
}

impl Handle {
    fn read_once(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past 2^64"))?;
        // Under the lock: which parts to fetch, and copies of the newer
        // bytes (in flight, then dirty) to lay over them.
        let sequential = {
            let mut reads = lock(&self.file.reads);
            let (last_end, streak) = *reads;
            let streak = if offset >= last_end && offset - last_end <= super::cache::BLOCK_BYTES {
                streak + 1
            } else {
                1
            };
            *reads = (end, streak);
            streak >= SEQUENTIAL_READS
        };
        let (fetches, overlays, ahead) = {
            let state = lock(&self.file.state);
            if end > state.len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: read to {end}, file is {} bytes",
                        self.file.key, state.len
                    ),
                ));
            }
            let mut overlays: Vec<(u64, Vec<u8>)> = Vec::new();
            let layers = state
                .inflight
                .iter()
                .map(|(s, b)| (*s, &b[..]))
                .chain(state.dirty.iter().map(|(s, b)| (*s, &b[..])));
            for (s, bytes) in layers {
                let e = s + bytes.len() as u64;
                if s < end && e > offset {
                    let from = s.max(offset);
                    let to = e.min(end);
                    overlays.push((from, bytes[(from - s) as usize..(to - s) as usize].to_vec()));
                }
            }
            let covered = overlays
                .iter()
                .any(|(s, b)| *s == offset && b.len() == buf.len());
            let fetches = if covered {
                Vec::new()
            } else {
                state.pieces(offset, end)
            };
            // The uploaded parts past this read, for a sequential reader.
            let ahead = if sequential {
                state.pieces(end, end.saturating_add(READ_AHEAD_BYTES))
            } else {
                Vec::new()
            };
            (fetches, overlays, ahead)
        };
        buf.fill(0);
        self.file.shared.read_parts(&fetches, buf)?;
        for (from, bytes) in overlays {
            let at = (from - offset) as usize;
            buf[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        if !ahead.is_empty() {
            self.file.shared.read_ahead(&ahead);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_round_trip_and_nothing_else_parses() {
        let name = part_name(7, 1 << 40, 12345);
        assert_eq!(parse_part_name(&name), Some((7, 1 << 40, 12345)));
        for bad in [
            "",
            "1-2-3",
            &format!("{name}-0000000000000000"),
            "zzzzzzzzzzzzzzzz-0000000000000000-0000000000000000",
        ] {
            assert_eq!(parse_part_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn dirty_writes_merge_with_newer_bytes_winning_or_losing() {
        let mut state = FileState::default();
        state.write_dirty(b"aaaa", 0, false);
        state.write_dirty(b"bb", 6, false);
        state.write_dirty(b"cccc", 3, false);
        assert_eq!(state.dirty.len(), 1);
        assert_eq!(state.dirty[&0], b"aaaccccb".to_vec());
        state.write_dirty(b"xxxxxxxxxx", 0, true);
        assert_eq!(state.dirty[&0], b"aaaccccbxx".to_vec());
        assert_eq!(state.dirty_bytes, 10);
        state.len = 10;
        state.truncate(4);
        assert_eq!(state.dirty[&0], b"aaac".to_vec());
        assert_eq!(state.dirty_bytes, 4);
    }
}
