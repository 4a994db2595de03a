//! Uploads: chunks put and pinned, then one commit that makes an artifact
//! of them. Owns every check an upload's input gets (lengths, hashes,
//! pins, quota) and the whole-content digest, which the store computes
//! itself: no caller hands it a digest to trust.

use std::collections::{HashSet, VecDeque};

use super::compress::{self, Compression};
use super::format::{self, MetaRecord, MutableFields, CHUNK_HEADER_BYTES};
use super::index::Location;
use super::{
    check_links, group, invalid, lock, now_ms, ArtifactId, ChunkRef, Hash, NewMetadata, QuotaLimit,
    Store, StoreError, CHUNK_BYTES_MAX, MANIFEST_CHUNKS_MAX, MISSING_BATCH_MAX, UPLOAD_PINS_MAX,
};

/// An upload in progress: puts chunks, pins chunks already stored, then
/// commits an artifact made of them. Chunks it put or pinned are safe from
/// GC until it commits or is dropped. Dropping it without committing
/// discards it (its chunks become garbage unless something else uses them).
///
/// Quotas (see [`Quota`](super::Quota)): an upload holds one writer slot
/// from its first operation (or from [`Store::try_begin_upload`]) until it
/// commits or is dropped; each chunk put is checked against the bytes
/// quota and, with the chunks found present, against the artifact-bytes
/// quota, so a streaming upload is refused at the first chunk that would
/// cross either; the commit is checked against all of them.
pub struct Upload {
    store: Store,
    /// Chunks this upload holds a pin on (each pinned once).
    pinned: HashSet<Hash>,
    closed: bool,
    /// Whether this upload holds one of the store's writer slots.
    writer_slot: bool,
    /// Bytes of content so far, as the artifact-bytes quota counts them:
    /// every chunk put and every digest `missing` found present.
    content_bytes: u64,
    /// The whole content hashed as the chunks go by; `None` once anything
    /// did not line up (then commit re-reads the chunks).
    content: Option<Box<ContentHash>>,
    /// The object name (container, name) the commit binds the artifact to,
    /// in the same record (see [`Upload::bind_to`]).
    bound: Option<Box<(String, String)>>,
    /// How this upload's new chunks are stored (the store's setting unless
    /// [`Upload::set_compression`] says otherwise).
    compression: Compression,
}

/// The running whole-content hash of an upload (see [`Upload`]'s
/// protocol note on [`Upload::missing`]).
struct ContentHash {
    /// Over the bytes of every chunk fed so far, in order.
    bytes: blake3::Hasher,
    /// Over the digests passed to `missing`, in order, and how many.
    digests: blake3::Hasher,
    digest_count: u64,
    /// The latest batch's chunks not fed yet, in order, and whether the
    /// store reported each missing.
    pending: VecDeque<(Hash, bool)>,
    /// Digests of the latest batch already put.
    put: HashSet<Hash>,
}

impl Upload {
    pub(super) fn new(store: Store) -> Upload {
        let compression = store.inner.options.compression;
        Upload {
            store,
            pinned: HashSet::new(),
            closed: false,
            writer_slot: false,
            content_bytes: 0,
            content: Some(Box::new(ContentHash {
                bytes: blake3::Hasher::new(),
                digests: blake3::Hasher::new(),
                digest_count: 0,
                pending: VecDeque::new(),
                put: HashSet::new(),
            })),
            bound: None,
            compression,
        }
    }

    /// How the chunks this upload puts from now on are stored: for example
    /// [`Compression::Off`] for data known not to compress. Chunks already
    /// stored keep their form (a chunk is stored once, however it came).
    pub fn set_compression(&mut self, compression: Compression) {
        self.compression = compression;
    }

    /// Feeds the running hash with the pending chunks whose bytes are
    /// known: the one just put (`put`, verified by [`Upload::put_chunk`]),
    /// those reported present and repeats of chunks already put (read back
    /// with [`Store::read_chunk`], which re-hashes). Stops at the next chunk
    /// still to be put. Callers may run it after answering `missing`, so
    /// reading present chunks back overlaps the guest's work; commit runs it
    /// anyway.
    pub fn hash_pending(&mut self) {
        self.feed(None);
    }

    fn feed(&mut self, put: Option<(&Hash, &[u8])>) {
        let Some(content) = &mut self.content else {
            return;
        };
        // The last chunk read, for a run of the same chunk: one chunk held.
        let mut read: Option<(Hash, Vec<u8>)> = None;
        while let Some(&(digest, missing)) = content.pending.front() {
            if missing && !content.put.contains(&digest) {
                return;
            }
            match (put, &read) {
                (Some((put_digest, bytes)), _) if *put_digest == digest => {
                    content.bytes.update(bytes);
                }
                (_, Some((read_digest, bytes))) if *read_digest == digest => {
                    content.bytes.update(bytes);
                }
                _ => match self.store.read_chunk(&digest) {
                    Ok(bytes) => {
                        content.bytes.update(&bytes);
                        read = Some((digest, bytes));
                    }
                    Err(_) => {
                        // The commit re-reads and reports it.
                        self.content = None;
                        return;
                    }
                },
            }
            content.pending.pop_front();
        }
    }

    /// The whole-content digest from the running hash, if it covers exactly
    /// `chunks` in order.
    fn running_digest(&mut self, chunks: &[ChunkRef]) -> Option<Hash> {
        self.feed(None);
        let content = self.content.take()?;
        if !content.pending.is_empty() || content.digest_count != chunks.len() as u64 {
            return None;
        }
        let mut seen = blake3::Hasher::new();
        for chunk in chunks {
            seen.update(chunk.digest.as_bytes());
        }
        (seen.finalize() == content.digests.finalize())
            .then(|| Hash::from_bytes(*content.bytes.finalize().as_bytes()))
    }
}

impl Upload {
    /// Takes one of the store's writer slots if this upload holds none;
    /// `QuotaExceeded` ("writers: ...") if all are taken. One atomic step,
    /// so uploads racing for the last slot get it exactly once.
    pub(super) fn take_writer_slot(&mut self) -> Result<(), StoreError> {
        if self.writer_slot {
            return Ok(());
        }
        let max = self.store.inner.quota().writers_max;
        let open = &self.store.inner.writers_open;
        open.fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |n| match max {
                Some(max) if n >= max => None,
                // At most one slot per live upload: no overflow.
                _ => Some(n + 1),
            },
        )
        .map_err(|n| {
            QuotaLimit::Writers.exceeded(format_args!(
                "{n} uploads open, at most {}",
                max.unwrap_or(u64::MAX)
            ))
        })?;
        self.writer_slot = true;
        Ok(())
    }

    fn release_writer_slot(&mut self) {
        if std::mem::take(&mut self.writer_slot) {
            self.store
                .inner
                .writers_open
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// The content so far plus `len` bytes, checked against the
    /// artifact-bytes quota: `QuotaExceeded` ("artifact-bytes: ...") if it
    /// would cross it. The caller stores it once the chunk is in.
    fn content_with(&self, len: u32, what: &Hash) -> Result<u64, StoreError> {
        let total = self.content_bytes.saturating_add(u64::from(len));
        if let Some(max) = self.store.inner.quota().artifact_bytes_max {
            if total > max {
                return Err(QuotaLimit::ArtifactBytes.exceeded(format_args!(
                    "chunk {what} of {len} bytes would make the artifact {total} bytes, at most {max}"
                )));
            }
        }
        Ok(total)
    }

    /// For each digest (at most [`MISSING_BATCH_MAX`]), whether the store
    /// needs its bytes. Chunks reported present are pinned by this upload.
    ///
    /// The whole content is hashed as the upload goes, so commit need not
    /// read every chunk back: the digests passed to `missing` are taken to
    /// be the artifact's chunks in order, and each is fed to the hash once
    /// its bytes are known to be right. The chunker's protocol: per batch,
    /// `missing`, then `put_chunk` for each missing chunk in order, each
    /// distinct digest once. Anything else (a put out of order, a batch
    /// left unfinished, a failed read or put) drops the running hash, and
    /// the commit re-reads the chunks. Memory: one chunk and one batch of
    /// digests.
    pub fn missing(&mut self, digests: &[Hash]) -> Result<Vec<bool>, StoreError> {
        let result = self.missing_inner(digests);
        match (&result, &mut self.content) {
            (Ok(answers), Some(content)) if content.pending.is_empty() => {
                content.put.clear();
                for (digest, missing) in digests.iter().zip(answers) {
                    content.digests.update(digest.as_bytes());
                    content.pending.push_back((*digest, *missing));
                }
                content.digest_count += digests.len() as u64;
            }
            _ => self.content = None,
        }
        result
    }

    fn missing_inner(&mut self, digests: &[Hash]) -> Result<Vec<bool>, StoreError> {
        if self.closed {
            return Err(StoreError::Closed);
        }
        if digests.len() > MISSING_BATCH_MAX {
            return Err(invalid(format!(
                "missing: {} digests in one call, at most {MISSING_BATCH_MAX}",
                digests.len()
            )));
        }
        self.take_writer_slot()?;
        let mut state = lock(&self.store.inner.state);
        let mut answers = Vec::with_capacity(digests.len());
        for digest in digests {
            let present = self.pinned.contains(digest) || {
                self.check_pin_room()?;
                let pinned = self.store.inner.db(state.db.pin(digest))?;
                if pinned {
                    self.pinned.insert(*digest);
                }
                pinned
            };
            if present {
                // Present: its bytes count towards the artifact now (a
                // missing one's when it is put).
                let len = state
                    .db
                    .chunk(digest)?
                    .ok_or_else(|| not_indexed(digest))?
                    .len;
                self.content_bytes = self.content_with(len, digest)?;
            }
            answers.push(!present);
        }
        Ok(answers)
    }

    fn check_pin_room(&self) -> Result<(), StoreError> {
        if self.pinned.len() as u64 >= UPLOAD_PINS_MAX {
            return Err(invalid(format!(
                "an upload may hold at most {UPLOAD_PINS_MAX} distinct chunks"
            )));
        }
        Ok(())
    }

    /// Stores one chunk (1..=[`CHUNK_BYTES_MAX`] bytes) after checking it
    /// hashes to `digest`. A chunk already stored is only pinned, not
    /// written again. Not yet durable: [`Upload::commit`] makes it so.
    pub fn put_chunk(&mut self, digest: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        let result = self.put_chunk_inner(digest, bytes);
        match (&result, &mut self.content) {
            (Ok(()), Some(content)) if content.pending.front() == Some(&(*digest, true)) => {
                content.put.insert(*digest);
                self.feed(Some((digest, bytes)));
            }
            _ => self.content = None,
        }
        result
    }

    fn put_chunk_inner(&mut self, digest: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        if self.closed {
            return Err(StoreError::Closed);
        }
        self.store.check_writable()?;
        if !self.store.inner.ensure_reserve() {
            return Err(StoreError::NoSpace(format!(
                "chunk {digest}: the disk is full (the space reserve for deletes is in use); delete artifacts and run gc"
            )));
        }
        if bytes.is_empty() || bytes.len() > CHUNK_BYTES_MAX as usize {
            return Err(invalid(format!(
                "chunk {digest}: {} bytes, must be 1..={CHUNK_BYTES_MAX}",
                bytes.len()
            )));
        }
        // Hash before taking the lock: it is the expensive part.
        let actual = Hash::of(bytes);
        if actual != *digest {
            return Err(StoreError::HashMismatch(format!(
                "chunk claimed to be {digest} hashes to {actual}"
            )));
        }
        if self.pinned.contains(digest) {
            return Ok(());
        }
        self.check_pin_room()?;
        self.take_writer_slot()?;
        let len = bytes.len() as u32;
        let content_bytes = self.content_with(len, digest)?;
        // Compressed outside the lock too (it costs about what hashing
        // does); a chunk some other upload stores meanwhile is then only
        // pinned, the work wasted but nothing stored twice.
        let compressed = compress::compress(bytes, self.compression);
        let payload = compressed.as_deref().unwrap_or(bytes);
        let stored = payload.len() as u32;
        let mut state = lock(&self.store.inner.state);
        if self.store.inner.db(state.db.pin(digest))? {
            self.pinned.insert(*digest);
            self.content_bytes = content_bytes;
            return Ok(());
        }
        if let Some(quota) = self.store.inner.quota().bytes_max {
            let used = self.store.inner.cost_bytes(&state);
            let record = CHUNK_HEADER_BYTES + u64::from(stored);
            if used.saturating_add(record) > quota {
                return Err(QuotaLimit::Bytes.exceeded(format_args!(
                    "chunk {digest} of {len} bytes ({record} on disk): {used} of {quota} bytes in use"
                )));
            }
        }
        let (segment, offset, sealed) = state.segments.append(digest, payload, len)?;
        self.store.inner.db(state.db.insert_put(
            *digest,
            Location { segment, offset },
            len,
            stored,
        ))?;
        self.pinned.insert(*digest);
        self.content_bytes = content_bytes;
        // Checkpoint the active segment every ACTIVE_CHECKPOINT_BYTES, so
        // an open after a crash scans at most that much of it.
        let checkpoint_due = state.segments.active_checkpoint_due();
        let writeback = state.segments.take_writeback();
        drop(state);
        if let Some(writeback) = writeback {
            writeback.start();
        }
        if let Some(sealed) = sealed {
            self.store.inner.finish_seal(sealed)?;
        }
        if checkpoint_due {
            self.store.inner.checkpoint_active()?;
        }
        Ok(())
    }

    /// Makes the commit bind the new artifact to object `name` of
    /// `container` (a `wasi:blobstore` name), replacing and deleting the
    /// artifact that name held, all in the commit's one record: after a
    /// crash the old object or the new one is there, never neither, and no
    /// unbound artifact is left. The container must exist at commit
    /// (checked under the log lock); `None` commits an unnamed artifact.
    pub fn bind_to(&mut self, bound: Option<(String, String)>) {
        self.bound = bound.map(Box::new);
    }

    /// Publishes an artifact made of `chunks` in order, once it is durable,
    /// and returns its id. Every chunk must have been put or pinned by this
    /// upload with the length given; `size` must be their total. The store
    /// computes the BLAKE3 of their concatenation itself (from the verified
    /// bytes as they went by, or by reading the chunks back); `digest`, if
    /// given, must equal it (`HashMismatch`). The upload is closed
    /// afterwards, whatever the outcome.
    pub fn commit(
        &mut self,
        chunks: &[ChunkRef],
        size: u64,
        digest: Option<&Hash>,
        meta: NewMetadata,
    ) -> Result<ArtifactId, StoreError> {
        if self.closed {
            return Err(StoreError::Closed);
        }
        self.closed = true;
        let content_digest = self.running_digest(chunks);
        let result = self
            .take_writer_slot()
            .and_then(|()| self.commit_inner(chunks, size, digest, meta, content_digest));
        self.release_pins();
        self.release_writer_slot();
        result
    }

    fn commit_inner(
        &mut self,
        chunks: &[ChunkRef],
        size: u64,
        digest: Option<&Hash>,
        meta: NewMetadata,
        content_digest: Option<Hash>,
    ) -> Result<ArtifactId, StoreError> {
        self.store.check_writable()?;
        if chunks.len() as u64 > MANIFEST_CHUNKS_MAX {
            return Err(invalid(format!(
                "manifest of {} chunks, at most {MANIFEST_CHUNKS_MAX}",
                chunks.len()
            )));
        }
        if let Some(key) = super::meta::duplicate_custom_key(&meta.custom) {
            return Err(invalid(format!("custom key {key:?} given twice")));
        }
        let mut fields = MutableFields {
            filename: meta.filename,
            content_type: meta.content_type,
            tags: meta.tags,
            links: meta.links.iter().map(|id| *id.as_bytes()).collect(),
            custom: meta.custom,
            external_links: meta.external_links,
        };
        // Sets: a tag, link or external link given twice is stored once.
        super::meta::normalize_fields(&mut fields);
        let links: Vec<ArtifactId> = fields
            .links
            .iter()
            .map(|id| ArtifactId::from_bytes(*id))
            .collect();
        format::check_metadata_limits(meta.creator.as_deref(), &fields).map_err(invalid)?;
        for (i, chunk) in chunks.iter().enumerate() {
            if !self.pinned.contains(&chunk.digest) {
                return Err(invalid(format!(
                    "chunk {i} ({}) was neither put nor pinned by this upload",
                    chunk.digest
                )));
            }
        }
        let mut total = 0u64;
        {
            let state = lock(&self.store.inner.state);
            for (i, chunk) in chunks.iter().enumerate() {
                let entry = state
                    .db
                    .chunk(&chunk.digest)?
                    .ok_or_else(|| not_indexed(&chunk.digest))?;
                if entry.len != chunk.len {
                    return Err(invalid(format!(
                        "chunk {i} ({}) is {} bytes, the manifest says {}",
                        chunk.digest, entry.len, chunk.len
                    )));
                }
                total = total
                    .checked_add(u64::from(chunk.len))
                    .ok_or_else(|| invalid("chunk lengths overflow u64".to_string()))?;
            }
            if total != size {
                return Err(invalid(format!(
                    "chunks add up to {total} bytes, size says {size}"
                )));
            }
            if let Some(max) = self.store.inner.quota().artifact_bytes_max {
                if size > max {
                    return Err(QuotaLimit::ArtifactBytes
                        .exceeded(format_args!("an artifact of {size} bytes, at most {max}")));
                }
            }
            check_links(&state.db, &links)?;
        }

        // The whole-content digest: hashed as the chunks went by, or read
        // back from the store one chunk at a time.
        let actual = match content_digest {
            Some(actual) => actual,
            None => {
                let mut hasher = blake3::Hasher::new();
                for chunk in chunks {
                    hasher.update(&self.store.read_chunk(&chunk.digest)?);
                }
                Hash::from_bytes(*hasher.finalize().as_bytes())
            }
        };
        if let Some(digest) = digest.filter(|claimed| **claimed != actual) {
            return Err(StoreError::HashMismatch(format!(
                "content claimed to be {digest} hashes to {actual}"
            )));
        }

        let record = MetaRecord::Commit {
            // Assigned under the log lock, where uniqueness is checked.
            id: [0; 16],
            size,
            digest: *actual.as_bytes(),
            created_ms: now_ms(),
            chunks: chunks
                .iter()
                .map(|c| (*c.digest.as_bytes(), c.len))
                .collect(),
            creator: meta.creator,
            fields,
            bound: self.bound.take().map(|bound| *bound),
        };
        // The artifact count and the bytes its record costs are checked by
        // the commit leader, atomically with the append (see `group`).
        // One commit path for every mode: a batch (of one, under `Sync`).
        group::commit(&self.store, record, links)
    }

    fn release_pins(&mut self) {
        if self.pinned.is_empty() {
            return;
        }
        let mut state = lock(&self.store.inner.state);
        for digest in self.pinned.drain() {
            if let Err(error) = state.db.unpin(&digest) {
                self.store.inner.db_failed(&error.into());
                return;
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.release_pins();
        self.release_writer_slot();
    }
}

/// A chunk an upload pinned is not in the index: pinned chunks stay
/// indexed, so only a failing catalog database gets here.
fn not_indexed(digest: &Hash) -> StoreError {
    StoreError::Corrupted(format!(
        "chunk {digest}: pinned by this upload, but not in the catalog database"
    ))
}
