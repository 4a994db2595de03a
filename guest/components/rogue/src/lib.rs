//! A deliberately hostile chunker, for host tests only.
//!
//! `put(data, options)` reads the custom option `attack` and lies to the
//! host's `chunk-store` in that one way. It returns the host's error, which
//! is what the tests check; if the host wrongly accepts the lie, the attack
//! goes on to commit and returns the resulting id, so the test fails loudly.
//! Attacks: `bad-chunk-digest`, `short-digest`, `bad-whole-digest`,
//! `unpinned-chunk`, `wrong-size`, `wrong-len`, `oversized-chunk`,
//! `commit-twice`, `huge-missing`. The metadata exports forward to the
//! store; everything that reads or streams refuses.
//!
//! It must never be shipped or used as a real chunker.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "chunker",
});

use exports::tensor::blob::blobs::{self, Guest, GuestReader, GuestWriter};
use tensor::blob::chunk_store::{self, Upload};
use tensor::blob::types::{
    ArtifactId, ChunkRef, Error, Metadata, MetadataUpdate, PutOptions, StoreStats,
};
use tensor_blob_chunking::chunk_digest;

/// Digests sent in `huge-missing`, far over the 4096 the WIT allows.
const HUGE_MISSING_DIGESTS: usize = 100_000;

/// One honest chunk per attack keeps the lies easy to read.
fn honest_ref(data: &[u8]) -> ChunkRef {
    ChunkRef {
        digest: chunk_digest(data).to_vec(),
        len: data.len() as u32,
    }
}

/// Puts `data` as one chunk after asking `missing`, as an honest chunker would.
fn put_honestly(upload: &Upload, data: &[u8]) -> Result<ChunkRef, Error> {
    let chunk_ref = honest_ref(data);
    let missing = upload.missing(std::slice::from_ref(&chunk_ref.digest))?;
    if missing.first() == Some(&true) {
        upload.put_chunk(&chunk_ref.digest, data)?;
    }
    Ok(chunk_ref)
}

fn whole_digest(data: &[u8]) -> Vec<u8> {
    chunk_digest(data).to_vec()
}

fn attack(name: &str, data: &[u8], options: &PutOptions) -> Result<ArtifactId, Error> {
    if data.is_empty() || data.len() > 16 * 1024 * 1024 {
        return Err(Error::InvalidArgument(
            "rogue: data must be 1 B..=16 MiB".into(),
        ));
    }
    let upload = chunk_store::begin_upload()?;
    let size = data.len() as u64;
    match name {
        "bad-chunk-digest" => {
            // Claim the digest of other bytes.
            let mut other = data.to_vec();
            other[0] ^= 0xff;
            let lie = chunk_digest(&other).to_vec();
            upload.put_chunk(&lie, data)?;
            let chunk = ChunkRef {
                digest: lie,
                len: data.len() as u32,
            };
            upload.commit(&[chunk], size, &whole_digest(data), options)
        }
        "short-digest" => {
            let honest = chunk_digest(data);
            let short = &honest.as_bytes()[..31];
            upload.put_chunk(short, data)?;
            let chunk = ChunkRef {
                digest: short.to_vec(),
                len: data.len() as u32,
            };
            upload.commit(&[chunk], size, &whole_digest(data), options)
        }
        "bad-whole-digest" => {
            let chunk = put_honestly(&upload, data)?;
            let lie = chunk_digest(b"not the content").to_vec();
            upload.commit(&[chunk], size, &lie, options)
        }
        "unpinned-chunk" => {
            // Neither put nor asked about: the host must not take our word.
            upload.commit(&[honest_ref(data)], size, &whole_digest(data), options)
        }
        "wrong-size" => {
            let chunk = put_honestly(&upload, data)?;
            upload.commit(&[chunk], size + 1, &whole_digest(data), options)
        }
        "wrong-len" => {
            // The ref's length and the total agree with each other, not with
            // the stored chunk.
            let mut chunk = put_honestly(&upload, data)?;
            chunk.len += 1;
            upload.commit(&[chunk], size + 1, &whole_digest(data), options)
        }
        "oversized-chunk" => {
            let len = chunk_store::chunk_bytes_max() as usize + 1;
            let big = vec![0x5a; len];
            let digest = chunk_digest(&big).to_vec();
            upload.put_chunk(&digest, &big)?;
            let chunk = ChunkRef {
                digest,
                len: len as u32,
            };
            upload.commit(&[chunk], len as u64, &whole_digest(&big), options)
        }
        "commit-twice" => {
            let chunk = put_honestly(&upload, data)?;
            upload.commit(
                std::slice::from_ref(&chunk),
                size,
                &whole_digest(data),
                options,
            )?;
            upload.commit(&[chunk], size, &whole_digest(data), options)
        }
        "huge-missing" => {
            let digests: Vec<Vec<u8>> = (0..HUGE_MISSING_DIGESTS as u64)
                .map(|i| chunk_digest(&i.to_le_bytes()).to_vec())
                .collect();
            upload.missing(&digests)?;
            let chunk = put_honestly(&upload, data)?;
            upload.commit(&[chunk], size, &whole_digest(data), options)
        }
        other => Err(Error::InvalidArgument(format!(
            "rogue: unknown attack {other:?}"
        ))),
    }
}

fn refuse<T>() -> Result<T, Error> {
    Err(Error::InvalidArgument(
        "rogue chunker: not supported".into(),
    ))
}

/// Writers and readers are never created; the type has no values.
pub enum Never {}

impl GuestWriter for Never {
    fn write(&self, _data: Vec<u8>) -> Result<(), Error> {
        match *self {}
    }
    fn finish(&self) -> Result<ArtifactId, Error> {
        match *self {}
    }
    fn abort(&self) {
        match *self {}
    }
}

impl GuestReader for Never {
    fn read(&self, _len: u32) -> Result<Vec<u8>, Error> {
        match *self {}
    }
    fn seek(&self, _offset: u64) -> Result<(), Error> {
        match *self {}
    }
    fn size(&self) -> u64 {
        match *self {}
    }
}

struct Rogue;

impl Guest for Rogue {
    type Writer = Never;
    type Reader = Never;

    fn inline_bytes_max() -> u64 {
        64 * 1024 * 1024
    }

    fn put(data: Vec<u8>, options: PutOptions) -> Result<ArtifactId, Error> {
        let name = options
            .custom
            .iter()
            .find(|pair| pair.key == "attack")
            .map(|pair| pair.value.clone())
            .unwrap_or_default();
        attack(&name, &data, &options)
    }

    fn get(_id: ArtifactId) -> Result<Vec<u8>, Error> {
        refuse()
    }
    fn delete(id: ArtifactId) -> Result<(), Error> {
        chunk_store::delete(&id)
    }
    fn exists(id: ArtifactId) -> Result<bool, Error> {
        chunk_store::exists(&id)
    }
    fn stat(id: ArtifactId) -> Result<Metadata, Error> {
        chunk_store::stat(&id)
    }
    fn update(id: ArtifactId, change: MetadataUpdate) -> Result<Metadata, Error> {
        chunk_store::update(&id, &change)
    }
    fn list(after: Option<ArtifactId>, limit: u32) -> Result<Vec<ArtifactId>, Error> {
        chunk_store::list(after.as_deref(), limit)
    }
    fn find_by_tag(tag: String) -> Result<Vec<ArtifactId>, Error> {
        chunk_store::find_by_tag(&tag)
    }
    fn stats() -> Result<StoreStats, Error> {
        chunk_store::stats()
    }
    fn create_writer(_options: PutOptions) -> Result<blobs::Writer, Error> {
        refuse()
    }
    fn open_reader(_id: ArtifactId, _offset: u64) -> Result<blobs::Reader, Error> {
        refuse()
    }
}

export!(Rogue);
