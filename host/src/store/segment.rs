//! Segment files: append-only chunk records under `segments/`.
//!
//! Owns appending (with rotation), positional reads that re-hash, fsync
//! bookkeeping (how much of each segment is known durable) and the recovery
//! scan run at open. Never decides what is live: that is the index's and
//! the metadata log's job. Never rewrites a byte once written; only the torn
//! tail of the active segment is ever cut, and only at open.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptions};

use super::format::{self, ChunkHeader, CHUNK_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::types::{Durability, Hash};
use crate::error::StoreError;

/// One segment file.
pub struct Segment {
    /// Shared with readers, which pread without holding the store lock.
    pub file: Arc<File>,
    /// Bytes written (the append position). Only grows, except when a
    /// failed append is rolled back.
    pub len: u64,
    /// Bytes known to be on stable storage; `synced_len <= len`.
    pub synced_len: u64,
}

/// Where a record was found by the recovery scan.
pub struct FoundRecord {
    pub segment: u64,
    pub offset: u64,
    pub header: ChunkHeader,
}

/// What the recovery scan found, for the store to report.
#[derive(Default)]
pub struct ScanOutcome {
    pub records: Vec<FoundRecord>,
    pub truncated_bytes: u64,
    pub problems: Vec<String>,
}

/// All segment files of one store.
pub struct Segments {
    dir: Dir,
    /// The segments directory as a file, for fsyncing its entries.
    dir_file: File,
    pub segments: BTreeMap<u64, Segment>,
    /// The segment appended to; always a key of `segments`.
    pub active: u64,
    segment_bytes_max: u64,
    durability: Durability,
}

/// A directory opened for fsync. cap-std's `Dir` handles are `O_PATH`,
/// which cannot be fsynced; `.` opened read-only through the same
/// capability can.
pub fn directory_file(dir: &Dir) -> std::io::Result<File> {
    Ok(dir.open(".")?.into_std())
}

/// A segment's file name: its id as 16 decimal digits.
pub fn segment_name(id: u64) -> String {
    format!("{id:016}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

impl Segments {
    /// Opens every segment under `dir` (the `segments/` directory), scans
    /// them and repairs a torn tail of the active (newest) one. Creates the
    /// first segment if there is none.
    pub fn open(
        dir: Dir,
        segment_bytes_max: u64,
        durability: Durability,
    ) -> Result<(Segments, ScanOutcome), StoreError> {
        let dir_file = directory_file(&dir).map_err(io("opening segments directory".into()))?;
        let mut ids = Vec::new();
        let entries = dir.entries().map_err(io("listing segments".into()))?;
        for entry in entries {
            let entry = entry.map_err(io("listing segments".into()))?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_segment_name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut outcome = ScanOutcome::default();
        let mut segments = BTreeMap::new();
        let newest = ids.last().copied();
        for id in ids {
            let name = segment_name(id);
            let active = Some(id) == newest;
            let mut options = OpenOptions::new();
            options.read(true).write(active);
            let file = dir
                .open_with(&name, &options)
                .map_err(io(format!("opening segment {name}")))?
                .into_std();
            let len = file
                .metadata()
                .map_err(io(format!("reading size of segment {name}")))?
                .len();
            let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
            let header_read = if len >= SEGMENT_HEADER_BYTES {
                file.read_exact_at(&mut header, 0)
                    .map_err(io(format!("reading header of segment {name}")))?;
                format::decode_segment_header(&header)
            } else {
                Err(format!("segment is {len} bytes, shorter than its header"))
            };
            let len = match header_read {
                Ok(()) => len,
                Err(reason) if active && len < SEGMENT_HEADER_BYTES => {
                    // Torn while being created: nothing in it was ever
                    // acknowledged. Start it again.
                    file.set_len(0)
                        .and_then(|()| file.write_all_at(&format::encode_segment_header(), 0))
                        .map_err(io(format!("rewriting header of segment {name}")))?;
                    if durability == Durability::Sync {
                        file.sync_all()
                            .map_err(io(format!("syncing segment {name}")))?;
                    }
                    outcome
                        .problems
                        .push(format!("segment {name}: {reason}; header rewritten"));
                    SEGMENT_HEADER_BYTES
                }
                Err(reason) => {
                    // Not ours or from a future version: keep it, use none of it.
                    outcome
                        .problems
                        .push(format!("segment {name}: {reason}; segment skipped"));
                    continue;
                }
            };
            let scanned = scan(&file, id, len, active)?;
            let mut len = len;
            if let Some((at, reason)) = scanned.torn_at {
                if active {
                    file.set_len(at)
                        .map_err(io(format!("truncating segment {name} at {at}")))?;
                    if durability == Durability::Sync {
                        file.sync_all()
                            .map_err(io(format!("syncing segment {name}")))?;
                    }
                    outcome.truncated_bytes += len - at;
                    outcome.problems.push(format!(
                        "segment {name}: torn tail at offset {at} ({reason}); {} bytes truncated",
                        len - at
                    ));
                    len = at;
                } else {
                    outcome.problems.push(format!(
                        "segment {name}: bytes {at}..{len} unreadable ({reason}); left in place"
                    ));
                }
            }
            outcome.problems.extend(scanned.problems);
            outcome.records.extend(scanned.records);
            segments.insert(
                id,
                Segment {
                    file: Arc::new(file),
                    len,
                    synced_len: len,
                },
            );
        }
        let mut store = Segments {
            dir,
            dir_file,
            segments,
            active: 0,
            segment_bytes_max,
            durability,
        };
        match newest {
            Some(id) if store.segments.contains_key(&id) => store.active = id,
            // No segment, or the newest is unusable: begin a fresh one.
            _ => {
                let id = newest.map_or(1, |id| id + 1);
                store.create(id)?;
            }
        }
        Ok((store, outcome))
    }

    /// Creates segment `id` as the new active segment and makes its
    /// directory entry durable.
    fn create(&mut self, id: u64) -> Result<(), StoreError> {
        let name = segment_name(id);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        let file = self
            .dir
            .open_with(&name, &options)
            .map_err(io(format!("creating segment {name}")))?
            .into_std();
        file.write_all_at(&format::encode_segment_header(), 0)
            .map_err(io(format!("writing header of segment {name}")))?;
        if self.durability == Durability::Sync {
            file.sync_all()
                .map_err(io(format!("syncing segment {name}")))?;
            self.sync_dir()?;
        }
        self.segments.insert(
            id,
            Segment {
                file: Arc::new(file),
                len: SEGMENT_HEADER_BYTES,
                synced_len: SEGMENT_HEADER_BYTES,
            },
        );
        self.active = id;
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        self.dir_file
            .sync_all()
            .map_err(io("syncing segments directory".into()))
    }

    /// Seals the active segment (fsynced, so a sealed segment never has a
    /// torn tail) and begins a new one.
    pub fn rotate(&mut self) -> Result<(), StoreError> {
        let active = self.active;
        if self.durability == Durability::Sync {
            let segment = &self.segments[&active];
            segment
                .file
                .sync_data()
                .map_err(io(format!("syncing segment {}", segment_name(active))))?;
        }
        let segment = self
            .segments
            .get_mut(&active)
            .expect("active segment exists");
        segment.synced_len = segment.len;
        self.create(active + 1)
    }

    /// Appends one chunk record to the active segment, rotating first if it
    /// would overflow. Returns (segment, record offset). No fsync.
    pub fn append(&mut self, digest: &Hash, payload: &[u8]) -> Result<(u64, u64), StoreError> {
        let payload_len = u32::try_from(payload.len()).expect("chunk length checked by caller");
        let header = format::encode_chunk_header(digest.as_bytes(), payload_len);
        let record_bytes = CHUNK_HEADER_BYTES + u64::from(payload_len);
        let active = &self.segments[&self.active];
        if active.len > SEGMENT_HEADER_BYTES && active.len + record_bytes > self.segment_bytes_max {
            self.rotate()?;
        }
        let id = self.active;
        let segment = self.segments.get_mut(&id).expect("active segment exists");
        let offset = segment.len;
        let written = segment.file.write_all_at(&header, offset).and_then(|()| {
            segment
                .file
                .write_all_at(payload, offset + CHUNK_HEADER_BYTES)
        });
        if let Err(source) = written {
            // Roll back a partial record so the next append starts clean.
            let _ = segment.file.set_len(offset);
            return Err(StoreError::Io {
                context: format!(
                    "appending chunk {digest} to segment {} at {offset}",
                    segment_name(id)
                ),
                source,
            });
        }
        segment.len = offset + record_bytes;
        Ok((id, offset))
    }

    /// The handle of segment `id`, for reading outside the store lock.
    pub fn handle(&self, id: u64) -> Option<Arc<File>> {
        self.segments.get(&id).map(|s| Arc::clone(&s.file))
    }

    /// Whether the record at (`id`, `offset`) of `len` payload bytes is on
    /// stable storage.
    pub fn is_durable(&self, id: u64, offset: u64, len: u32) -> bool {
        self.durability == Durability::None
            || self
                .segments
                .get(&id)
                .is_some_and(|s| offset + CHUNK_HEADER_BYTES + u64::from(len) <= s.synced_len)
    }

    /// What to fsync to make segment `id` durable up to its current length.
    pub fn sync_plan(&self, id: u64) -> Option<(u64, Arc<File>, u64)> {
        if self.durability == Durability::None {
            return None;
        }
        let segment = self.segments.get(&id)?;
        (segment.synced_len < segment.len).then(|| (id, Arc::clone(&segment.file), segment.len))
    }

    /// Records that segment `id` is durable up to `len` (after a sync_plan
    /// was carried out).
    pub fn mark_synced(&mut self, id: u64, len: u64) {
        if let Some(segment) = self.segments.get_mut(&id) {
            assert!(len <= segment.len, "synced past the end");
            segment.synced_len = segment.synced_len.max(len);
        }
    }

    /// Removes sealed segment `id`: forgets it, unlinks the file and makes
    /// the unlink durable. Open read handles stay valid until dropped.
    pub fn remove(&mut self, id: u64) -> Result<u64, StoreError> {
        assert!(id != self.active, "the active segment is never removed");
        let Some(segment) = self.segments.remove(&id) else {
            return Ok(0);
        };
        let name = segment_name(id);
        self.dir
            .remove_file(&name)
            .map_err(io(format!("removing segment {name}")))?;
        if self.durability == Durability::Sync {
            self.sync_dir()?;
        }
        Ok(segment.len)
    }

    /// Sum of segment file sizes.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }
}

/// Reads and verifies the payload of the record at (`segment`, `offset`).
/// Runs without the store lock.
pub fn read_payload(
    file: &File,
    segment: u64,
    offset: u64,
    digest: &Hash,
    len: u32,
) -> Result<Vec<u8>, StoreError> {
    let mut payload = vec![0u8; len as usize];
    let at = offset + CHUNK_HEADER_BYTES;
    file.read_exact_at(&mut payload, at).map_err(|source| {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            StoreError::Corrupted(format!(
                "chunk {digest}: segment {} ends before offset {at} + {len}",
                segment_name(segment)
            ))
        } else {
            StoreError::Io {
                context: format!(
                    "reading chunk {digest} from segment {} at {offset}",
                    segment_name(segment)
                ),
                source,
            }
        }
    })?;
    if Hash::of(&payload) != *digest {
        return Err(StoreError::Corrupted(format!(
            "chunk {digest}: bytes in segment {} at offset {offset} do not hash to it",
            segment_name(segment)
        )));
    }
    Ok(payload)
}

struct Scan {
    records: Vec<FoundRecord>,
    problems: Vec<String>,
    /// From here to the end nothing valid was found.
    torn_at: Option<(u64, String)>,
}

/// Walks the records of one segment. Every header's crc is checked; with
/// `verify_payloads` (the active segment) every payload is re-hashed too.
/// A bad record followed by a valid one is damage in the middle: reported
/// and stepped over. A bad record with nothing valid after it is a torn
/// tail, returned as `torn_at`.
fn scan(file: &File, segment: u64, len: u64, verify_payloads: bool) -> Result<Scan, StoreError> {
    let name = segment_name(segment);
    let mut out = Scan {
        records: Vec::new(),
        problems: Vec::new(),
        torn_at: None,
    };
    let mut payload = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at < len {
        match record_at(file, segment, at, len, verify_payloads, &mut payload)? {
            Ok(header) => {
                out.records.push(FoundRecord {
                    segment,
                    offset: at,
                    header,
                });
                at += CHUNK_HEADER_BYTES + u64::from(header.payload_len);
            }
            Err(reason) => {
                match next_record(file, segment, at + 1, len, verify_payloads, &mut payload)? {
                    Some(next) => {
                        out.problems.push(format!(
                            "segment {name}: bytes {at}..{next} unreadable ({reason}); skipped"
                        ));
                        at = next;
                    }
                    None => {
                        out.torn_at = Some((at, reason));
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Checks the record at `at`: Ok(header) if valid, Err(reason) if not.
fn record_at(
    file: &File,
    segment: u64,
    at: u64,
    len: u64,
    verify_payload: bool,
    payload: &mut Vec<u8>,
) -> Result<Result<ChunkHeader, String>, StoreError> {
    if len - at < CHUNK_HEADER_BYTES {
        return Ok(Err(format!("{} bytes, short of a record header", len - at)));
    }
    let mut bytes = [0u8; CHUNK_HEADER_BYTES as usize];
    file.read_exact_at(&mut bytes, at).map_err(io(format!(
        "reading segment {} at {at}",
        segment_name(segment)
    )))?;
    let header = match format::decode_chunk_header(&bytes) {
        Ok(header) => header,
        Err(reason) => return Ok(Err(reason)),
    };
    let end = at + CHUNK_HEADER_BYTES + u64::from(header.payload_len);
    if end > len {
        return Ok(Err(format!(
            "record of {} bytes runs past the end",
            header.payload_len
        )));
    }
    if verify_payload {
        payload.resize(header.payload_len as usize, 0);
        file.read_exact_at(payload, at + CHUNK_HEADER_BYTES)
            .map_err(io(format!(
                "reading segment {} at {at}",
                segment_name(segment)
            )))?;
        if *Hash::of(payload).as_bytes() != header.digest {
            return Ok(Err("payload does not hash to its digest".to_string()));
        }
    }
    Ok(Ok(header))
}

/// The offset of the first valid record at or after `from`, if any.
fn next_record(
    file: &File,
    segment: u64,
    from: u64,
    len: u64,
    verify_payload: bool,
    payload: &mut Vec<u8>,
) -> Result<Option<u64>, StoreError> {
    const WINDOW_BYTES: u64 = 1 << 20;
    let magic = format::CHUNK_RECORD_MAGIC.to_le_bytes();
    let mut window = Vec::new();
    let mut start = from;
    while start + CHUNK_HEADER_BYTES <= len {
        let end = (start + WINDOW_BYTES).min(len);
        window.resize((end - start) as usize, 0);
        file.read_exact_at(&mut window, start).map_err(io(format!(
            "scanning segment {} at {start}",
            segment_name(segment)
        )))?;
        for (i, candidate) in window.windows(magic.len()).enumerate() {
            if candidate == magic {
                let at = start + i as u64;
                if record_at(file, segment, at, len, verify_payload, payload)?.is_ok() {
                    return Ok(Some(at));
                }
            }
        }
        if end == len {
            break;
        }
        // Overlap so a magic straddling two windows is still seen.
        start = end - (magic.len() as u64 - 1);
    }
    Ok(None)
}
