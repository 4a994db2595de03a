//! A deliberately hostile chunker, for host tests only.
//!
//! `put(data, options)` reads the custom option `attack` and lies to the
//! host's `chunk-store` in that one way. It returns the host's error, which
//! is what the tests check; if the host wrongly accepts the lie, the attack
//! goes on to commit and returns the resulting id, so the test fails loudly.
//! Attacks: `bad-chunk-digest`, `short-digest`, `bad-whole-digest`,
//! `unpinned-chunk`, `wrong-size`, `wrong-len`, `oversized-chunk`,
//! `queued-oversized-chunk`, `queued-empty-chunk`, `commit-twice`,
//! `huge-missing`; `accept` does nothing and answers the id `accepted`.
//! Everything that reads or streams refuses (metadata calls never reach a
//! chunker: the host answers them). Every export first checks its
//! arguments against the WIT's limits and answers `corrupted` if the host
//! forwarded one over them ([`canary`]).
//!
//! Besides the `chunker` world it exports `fuzz(seed, calls)`, which calls
//! `chunk-store` `calls` times in a seeded random order with random
//! arguments (see [`fuzz`]); the host calls it with
//! `Chunker::call_extra_export`.
//!
//! It must never be shipped or used as a real chunker.

wit_bindgen::generate!({
    path: "../../../wit",
    inline: r#"
        package tensor:rogue;

        /// The chunker world plus the fuzzing entry point.
        world rogue {
            include tensor:blob/chunker@0.1.0;

            /// Makes `calls` seeded random calls to `chunk-store`; returns a
            /// report whose first line is `violations: N`.
            export fuzz: func(seed: u64, calls: u32) -> string;
        }
    "#,
    world: "tensor:rogue/rogue",
    // The tensor:blob interfaces come from another package than the world.
    generate_all,
});

mod canary;
mod fuzz;

use exports::tensor::blob::transfer::{self, Guest as TransferGuest, GuestReader, GuestWriter};
use tensor::blob::chunk_store::{self, Upload};
use tensor::blob::types::{ArtifactId, ChunkRef, Error, PutOptions};
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
            upload.commit(&[chunk], size, Some(&whole_digest(data)), options)
        }
        "short-digest" => {
            let honest = chunk_digest(data);
            let short = &honest.as_bytes()[..31];
            upload.put_chunk(short, data)?;
            let chunk = ChunkRef {
                digest: short.to_vec(),
                len: data.len() as u32,
            };
            upload.commit(&[chunk], size, Some(&whole_digest(data)), options)
        }
        "bad-whole-digest" => {
            let chunk = put_honestly(&upload, data)?;
            let lie = chunk_digest(b"not the content").to_vec();
            upload.commit(&[chunk], size, Some(&lie), options)
        }
        "unpinned-chunk" => {
            // Neither put nor asked about: the host must not take our word.
            upload.commit(
                &[honest_ref(data)],
                size,
                Some(&whole_digest(data)),
                options,
            )
        }
        "wrong-size" => {
            let chunk = put_honestly(&upload, data)?;
            upload.commit(&[chunk], size + 1, Some(&whole_digest(data)), options)
        }
        "wrong-len" => {
            // The ref's length and the total agree with each other, not with
            // the stored chunk.
            let mut chunk = put_honestly(&upload, data)?;
            chunk.len += 1;
            upload.commit(&[chunk], size + 1, Some(&whole_digest(data)), options)
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
            upload.commit(&[chunk], len as u64, Some(&whole_digest(&big)), options)
        }
        "queued-oversized-chunk" | "queued-empty-chunk" => {
            // The first chunk is stored inline; from the second on the host
            // queues chunks to a worker. A bad length must still be refused
            // by the call itself, before anything is queued.
            let chunk = put_honestly(&upload, data)?;
            let len = match name {
                "queued-oversized-chunk" => chunk_store::chunk_bytes_max() as usize + 1,
                _ => 0,
            };
            let bad = vec![0x5a; len];
            upload.put_chunk(&chunk_digest(&bad).to_vec(), &bad)?;
            // Accepted into the queue: say so, whatever the commit answers.
            let _ = upload.commit(&[chunk], size, Some(&whole_digest(data)), options);
            Ok(format!("the host queued a chunk of {len} bytes"))
        }
        "commit-twice" => {
            let chunk = put_honestly(&upload, data)?;
            upload.commit(
                std::slice::from_ref(&chunk),
                size,
                Some(&whole_digest(data)),
                options,
            )?;
            upload.commit(&[chunk], size, Some(&whole_digest(data)), options)
        }
        "huge-missing" => {
            let digests: Vec<Vec<u8>> = (0..HUGE_MISSING_DIGESTS as u64)
                .map(|i| chunk_digest(&i.to_le_bytes()).to_vec())
                .collect();
            upload.missing(&digests)?;
            let chunk = put_honestly(&upload, data)?;
            upload.commit(&[chunk], size, Some(&whole_digest(data)), options)
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
    fn fuzz(seed: u64, calls: u32) -> String {
        fuzz::run(seed, calls)
    }
}

impl TransferGuest for Rogue {
    type Writer = Never;
    type Reader = Never;

    fn put(data: Vec<u8>, options: PutOptions) -> Result<ArtifactId, Error> {
        canary::data(data.len())?;
        canary::options(&options)?;
        let name = options
            .custom
            .iter()
            .find(|pair| pair.key == "attack")
            .map(|pair| pair.value.clone())
            .unwrap_or_default();
        if name == "accept" {
            return Ok("accepted".into());
        }
        attack(&name, &data, &options)
    }

    fn get(id: ArtifactId) -> Result<Vec<u8>, Error> {
        canary::id(&id)?;
        refuse()
    }
    fn create_writer(options: PutOptions) -> Result<transfer::Writer, Error> {
        canary::options(&options)?;
        refuse()
    }
    fn open_reader(id: ArtifactId, _offset: u64) -> Result<transfer::Reader, Error> {
        canary::id(&id)?;
        refuse()
    }
}

export!(Rogue);
