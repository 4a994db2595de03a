//! `fuzz(seed, calls)`: calls `chunk-store` in a seeded random order with
//! random arguments, the way a compromised chunker might.
//!
//! Arguments mix the plausible with the absurd: random digests (of every
//! length), real digests of random bytes, chunks whose bytes do and do not
//! match their digest, chunks of 0, 1, ordinary and exactly
//! `chunk-bytes-max` bytes and one byte more, `missing` batches up to and
//! over the limit, commits of honest and doctored manifests (sizes, lengths,
//! digests, options), reads of real and random digests, `locate` and
//! `read-manifest` with random ids and offsets, `size` of real, random and
//! malformed ids, uploads dropped half-way and opened by the dozen. (The
//! metadata calls, deletes, updates, lists, are no longer `chunk-store`'s:
//! the host answers plugins' metadata calls itself.) Every chunk's bytes are generated from a seed, so only seeds are
//! kept, and memory stays bounded whatever the call count.
//!
//! The host must survive all of it; that is checked by the host test. Here
//! we only check what the host answers against what we know (an oracle):
//! a chunk read back must hash to its digest, a doctored commit or a bad
//! chunk length must be refused, and so on. Each disagreement is a
//! violation; the report's first line is `violations: N`, followed by up to
//! 20 of them and then a count of every (call, outcome) pair.

use std::collections::BTreeMap;

use tensor_blob_chunking::chunk_digest;

use crate::tensor::blob::chunk_store::{self, Upload};
use crate::tensor::blob::types::{ChunkRef, Error, KeyValue, PutOptions};

/// Chunks remembered (by seed) for re-puts, reads and honest manifests.
const CHUNKS_KEPT_MAX: usize = 1024;
/// Artifact ids remembered.
const ARTIFACTS_KEPT_MAX: usize = 256;
/// Upload handles held at once: a few over the host's 64.
const UPLOADS_HELD_MAX: usize = 72;
/// Chunks per upload remembered as put or pinned by it.
const HELD_PER_UPLOAD_MAX: usize = 4096;
/// Content bytes an honest manifest may cover (its chunks are regenerated
/// and hashed in here to get the whole digest).
const HONEST_BYTES_MAX: u64 = 8 << 20;
/// Violations quoted in the report.
const VIOLATIONS_QUOTED_MAX: usize = 20;

/// splitmix64: small, fast, good enough, and needs no `wasi:random`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// One of `choices` (not empty).
    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.index(choices.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The bytes of a chunk, from its seed.
fn generate(seed: u64, len: u32) -> Vec<u8> {
    Rng(seed).bytes(len as usize)
}

/// A chunk we made: its bytes are `generate(seed, len)`.
#[derive(Clone)]
struct Chunk {
    seed: u64,
    len: u32,
    digest: Vec<u8>,
}

impl Chunk {
    fn new(seed: u64, len: u32) -> Chunk {
        let digest = chunk_digest(&generate(seed, len)).to_vec();
        Chunk { seed, len, digest }
    }

    fn chunk_ref(&self) -> ChunkRef {
        ChunkRef {
            digest: self.digest.clone(),
            len: self.len,
        }
    }
}

/// One upload handle and what we know about it.
struct Held {
    upload: Upload,
    /// Indices into `Fuzz::chunks` this upload put or was told are present.
    chunks: Vec<usize>,
    /// `put-chunk` calls that got past the host's argument checks: only
    /// the first is stored inline, so only its answer is final.
    puts: u32,
    /// Committed (whatever the outcome): the host closed it.
    closed: bool,
}

struct Artifact {
    id: String,
    size: Option<u64>,
}

struct Fuzz {
    rng: Rng,
    chunk_bytes_max: u32,
    chunks: Vec<Chunk>,
    uploads: Vec<Held>,
    artifacts: Vec<Artifact>,
    outcomes: BTreeMap<String, u64>,
    violations: Vec<String>,
    violation_count: u64,
}

fn kind(error: &Error) -> &'static str {
    match error {
        Error::NotFound(_) => "not-found",
        Error::TooLarge(_) => "too-large",
        Error::QuotaExceeded(_) => "quota-exceeded",
        Error::InvalidArgument(_) => "invalid-argument",
        Error::HashMismatch(_) => "hash-mismatch",
        Error::Corrupted(_) => "corrupted",
        Error::Closed => "closed",
        Error::Io(_) => "io",
        Error::NoSpace(_) => "no-space",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `calls` random calls from `seed` and reports.
pub(crate) fn run(seed: u64, calls: u32) -> String {
    let mut fuzz = Fuzz {
        rng: Rng(seed ^ 0x5851_F42D_4C95_7F2D),
        chunk_bytes_max: chunk_store::chunk_bytes_max(),
        chunks: Vec::new(),
        uploads: Vec::new(),
        artifacts: Vec::new(),
        outcomes: BTreeMap::new(),
        violations: Vec::new(),
        violation_count: 0,
    };
    for call in 0..calls {
        fuzz.step(call);
    }
    // Everything still open is dropped here, mid-upload.
    fuzz.report(calls)
}

impl Fuzz {
    fn report(&self, calls: u32) -> String {
        let mut out = format!("violations: {}\n", self.violation_count);
        for violation in &self.violations {
            out.push_str(&format!("violation: {violation}\n"));
        }
        out.push_str(&format!(
            "calls: {calls}, chunks made: {}, artifacts known: {}, uploads held at the end: {}\n",
            self.chunks.len(),
            self.artifacts.len(),
            self.uploads.len()
        ));
        for (outcome, count) in &self.outcomes {
            out.push_str(&format!("{outcome}: {count}\n"));
        }
        out
    }

    fn count<T>(&mut self, call: &str, result: &Result<T, Error>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => kind(error),
        };
        *self
            .outcomes
            .entry(format!("{call} {outcome}"))
            .or_default() += 1;
    }

    fn violation(&mut self, step: u32, what: String) {
        self.violation_count += 1;
        if self.violations.len() < VIOLATIONS_QUOTED_MAX {
            self.violations.push(format!("call {step}: {what}"));
        }
    }

    fn step(&mut self, step: u32) {
        match self.rng.below(100) {
            0..=5 => self.begin(),
            6..=8 => self.drop_upload(),
            9..=22 => self.missing(step),
            23..=46 => self.put_chunk(step),
            47..=56 => self.commit(step),
            57..=64 => self.read_chunk(step),
            65..=69 => self.read_manifest(step),
            70..=74 => self.locate(step),
            75..=86 => self.size(step),
            87..=92 => self.commit(step),
            93..=97 => self.read_chunk(step),
            _ => {
                let max = chunk_store::chunk_bytes_max();
                if max != self.chunk_bytes_max {
                    self.violation(step, format!("chunk-bytes-max changed to {max}"));
                }
            }
        }
    }

    // ---- arguments -------------------------------------------------------

    /// A chunk length: mostly small, sometimes 1, rarely exactly the
    /// maximum (a debug build copies lists across the boundary slowly).
    fn chunk_len(&mut self) -> u32 {
        match self.rng.below(1000) {
            0..=1 => self.chunk_bytes_max,
            2..=100 => 1,
            101..=600 => self.rng.range(2, 4096) as u32,
            601..=900 => self.rng.range(4097, 64 << 10) as u32,
            _ => self.rng.range(64 << 10, 256 << 10) as u32,
        }
    }

    /// A digest: a known chunk's, random, or of a wrong length.
    fn digest(&mut self) -> Vec<u8> {
        match self.rng.below(10) {
            0..=5 if !self.chunks.is_empty() => {
                let i = self.rng.index(self.chunks.len());
                self.chunks[i].digest.clone()
            }
            6 => {
                let len = self.rng.pick(&[0, 1, 31, 33, 64, 1000]);
                self.rng.bytes(len)
            }
            _ => self.rng.bytes(32),
        }
    }

    /// An id: a known artifact's, a random well-formed one, or malformed.
    fn id(&mut self) -> String {
        match self.rng.below(10) {
            0..=5 if !self.artifacts.is_empty() => {
                let i = self.rng.index(self.artifacts.len());
                self.artifacts[i].id.clone()
            }
            6 => match self.rng.below(5) {
                0 => String::new(),
                1 => "../../etc/passwd".into(),
                2 => "Z".repeat(32),
                3 => hex(&self.rng.bytes(16)).to_uppercase(),
                _ => "0".repeat(self.rng.range(33, 100_000) as usize),
            },
            _ => hex(&self.rng.bytes(16)),
        }
    }

    fn string(&mut self, valid: bool) -> String {
        if valid {
            let len = self.rng.range(0, 64) as usize;
            "f".repeat(len)
        } else {
            "x".repeat(self.rng.range(4097, 20_000) as usize)
        }
    }

    fn tag(&mut self, valid: bool) -> String {
        if valid {
            self.rng.pick(&["alpha", "beta", "gamma", "t"]).to_string()
        } else if self.rng.percent(50) {
            String::new()
        } else {
            "t".repeat(self.rng.range(257, 10_000) as usize)
        }
    }

    fn tags(&mut self, valid: bool) -> Vec<String> {
        if valid {
            let n = self.rng.below(4);
            (0..n).map(|_| self.tag(true)).collect()
        } else if self.rng.percent(50) {
            (0..self.rng.range(257, 1000))
                .map(|i| format!("t{i}"))
                .collect()
        } else {
            vec![self.tag(true), self.tag(false)]
        }
    }

    fn links(&mut self, valid: bool) -> Vec<String> {
        if valid {
            let n = self.rng.below(3).min(self.artifacts.len() as u64);
            (0..n)
                .map(|_| {
                    let i = self.rng.index(self.artifacts.len());
                    self.artifacts[i].id.clone()
                })
                .collect()
        } else {
            match self.rng.below(3) {
                0 => vec!["not an id".into()],
                // Well formed but (all but certainly) not an artifact.
                1 => vec![hex(&self.rng.bytes(16))],
                _ => (0..300).map(|_| hex(&self.rng.bytes(16))).collect(),
            }
        }
    }

    fn custom(&mut self, valid: bool) -> Vec<KeyValue> {
        if valid {
            let n = self.rng.below(3);
            (0..n)
                .map(|i| KeyValue {
                    key: format!("k{i}"),
                    value: "v".repeat(self.rng.below(100) as usize),
                })
                .collect()
        } else {
            match self.rng.below(4) {
                0 => vec![KeyValue {
                    key: String::new(),
                    value: "v".into(),
                }],
                1 => vec![KeyValue {
                    key: "k".repeat(257),
                    value: "v".into(),
                }],
                2 => vec![KeyValue {
                    key: "k".into(),
                    value: "v".repeat(4097),
                }],
                _ => (0..300)
                    .map(|i| KeyValue {
                        key: format!("k{i}"),
                        value: String::new(),
                    })
                    .collect(),
            }
        }
    }

    /// Options, valid or with exactly one field over its limit.
    fn options(&mut self, valid: bool) -> PutOptions {
        let bad = if valid { None } else { Some(self.rng.below(6)) };
        let mut options = PutOptions {
            filename: self.rng.percent(50).then(|| self.string(true)),
            content_type: self.rng.percent(30).then(|| "a/b".into()),
            creator: self.rng.percent(30).then(|| "rogue".into()),
            tags: self.tags(true),
            links: self.links(true),
            external_links: Vec::new(),
            custom: self.custom(true),
            chunking: None,
            compress: None,
        };
        match bad {
            Some(0) => options.filename = Some(self.string(false)),
            Some(1) => options.content_type = Some(self.string(false)),
            Some(2) => options.creator = Some(self.string(false)),
            Some(3) => options.tags = self.tags(false),
            Some(4) => options.links = self.links(false),
            Some(_) => options.custom = self.custom(false),
            None => {}
        }
        options
    }

    fn remember_chunk(&mut self, chunk: Chunk) -> usize {
        if self.chunks.len() < CHUNKS_KEPT_MAX {
            self.chunks.push(chunk);
            return self.chunks.len() - 1;
        }
        // Forget a random one; uploads' indices to it now name another
        // chunk, which only makes their "honest" commits less honest.
        let i = self.rng.index(self.chunks.len());
        self.chunks[i] = chunk;
        i
    }

    fn remember_artifact(&mut self, id: String, size: Option<u64>) {
        if self.artifacts.iter().any(|a| a.id == id) {
            return;
        }
        let artifact = Artifact { id, size };
        if self.artifacts.len() < ARTIFACTS_KEPT_MAX {
            self.artifacts.push(artifact);
        } else {
            let i = self.rng.index(self.artifacts.len());
            self.artifacts[i] = artifact;
        }
    }

    fn pick_upload(&mut self) -> Option<usize> {
        if self.uploads.is_empty() {
            if self.rng.percent(50) {
                self.begin();
            }
            if self.uploads.is_empty() {
                return None;
            }
        }
        Some(self.rng.index(self.uploads.len()))
    }

    // ---- calls -----------------------------------------------------------

    fn begin(&mut self) {
        // Now and then, open as many as the host lets us (and a few more).
        let attempts = if self.rng.percent(5) { 80 } else { 1 };
        for _ in 0..attempts {
            if self.uploads.len() >= UPLOADS_HELD_MAX {
                return;
            }
            let result = chunk_store::begin_upload();
            self.count("begin-upload", &result);
            match result {
                Ok(upload) => self.uploads.push(Held {
                    upload,
                    chunks: Vec::new(),
                    puts: 0,
                    closed: false,
                }),
                Err(_) => return,
            }
        }
    }

    fn drop_upload(&mut self) {
        if !self.uploads.is_empty() {
            // A committed one, mostly: the open ones have more to do.
            let closed: Vec<usize> = (0..self.uploads.len())
                .filter(|&i| self.uploads[i].closed)
                .collect();
            let i = if !closed.is_empty() && self.rng.percent(80) {
                closed[self.rng.index(closed.len())]
            } else {
                self.rng.index(self.uploads.len())
            };
            // Dropping it releases its pins; queued chunks still drain.
            drop(self.uploads.swap_remove(i));
            *self.outcomes.entry("drop-upload".into()).or_default() += 1;
        }
    }

    fn missing(&mut self, step: u32) {
        let Some(u) = self.pick_upload() else { return };
        let count = match self.rng.below(40) {
            0 => 4096,
            1 => 4097,
            2 => self.rng.range(4098, 20_000) as usize,
            3 => 0,
            _ => self.rng.range(1, 64) as usize,
        };
        let mut digests = Vec::with_capacity(count);
        let mut known = Vec::with_capacity(count);
        let mut malformed = false;
        // A present chunk is read back by the host (to hash the content as
        // it goes): in a full batch, few, or one seed takes a minute.
        let known_percent = if count >= 4096 { 2 } else { 70 };
        for _ in 0..count {
            let pick = if self.rng.percent(known_percent) && !self.chunks.is_empty() {
                Some(self.rng.index(self.chunks.len()))
            } else {
                None
            };
            let digest = match pick {
                Some(i) => self.chunks[i].digest.clone(),
                None if self.rng.percent(3) => self.rng.bytes(31),
                None => self.rng.bytes(32),
            };
            malformed |= digest.len() != 32;
            digests.push(digest);
            known.push(pick);
        }
        let result = self.uploads[u].upload.missing(&digests);
        self.count("missing", &result);
        if let Ok(answers) = result {
            if count > 4096 {
                self.violation(step, format!("missing of {count} digests answered"));
            }
            if malformed {
                self.violation(step, "missing with a 31-byte digest answered".into());
            }
            if answers.len() != count {
                self.violation(
                    step,
                    format!("missing of {count} digests gave {} answers", answers.len()),
                );
            }
            let held = &mut self.uploads[u];
            for (pick, missing) in known.into_iter().zip(answers) {
                if let (Some(i), false) = (pick, missing) {
                    if held.chunks.len() < HELD_PER_UPLOAD_MAX {
                        held.chunks.push(i);
                    }
                }
            }
        }
    }

    fn put_chunk(&mut self, step: u32) {
        let Some(u) = self.pick_upload() else { return };
        #[derive(Clone, Copy)]
        enum Lie {
            None,
            Bytes,
            DigestLen,
            ChunkLen,
        }
        let (lie, digest, bytes, remembered) = match self.rng.below(100) {
            // Honest, new bytes.
            0..=49 => {
                let chunk = Chunk::new(self.rng.next(), self.chunk_len());
                let bytes = generate(chunk.seed, chunk.len);
                let digest = chunk.digest.clone();
                let i = self.remember_chunk(chunk);
                (Lie::None, digest, bytes, Some(i))
            }
            // Honest, a chunk we made before (perhaps stored, perhaps not).
            50..=64 if !self.chunks.is_empty() => {
                let i = self.rng.index(self.chunks.len());
                let chunk = &self.chunks[i];
                (
                    Lie::None,
                    chunk.digest.clone(),
                    generate(chunk.seed, chunk.len),
                    Some(i),
                )
            }
            // Bytes that do not match the digest.
            50..=79 => {
                let len = self.chunk_len();
                let bytes = generate(self.rng.next(), len);
                let mut digest = if self.rng.percent(50) && !self.chunks.is_empty() {
                    let i = self.rng.index(self.chunks.len());
                    self.chunks[i].digest.clone()
                } else {
                    self.rng.bytes(32)
                };
                if digest == chunk_digest(&bytes).to_vec() {
                    digest[0] ^= 1;
                }
                (Lie::Bytes, digest, bytes, None)
            }
            // A digest of the wrong length.
            80..=87 => {
                let len = self.rng.pick(&[0, 1, 16, 31, 33, 64]);
                let bytes = generate(self.rng.next(), self.chunk_len());
                (Lie::DigestLen, self.rng.bytes(len), bytes, None)
            }
            // No bytes, or one more than the maximum (rarely: 16 MiB).
            _ => {
                let len = if self.rng.percent(3) {
                    self.chunk_bytes_max as usize + 1
                } else {
                    0
                };
                let bytes = vec![0xa5; len];
                (Lie::ChunkLen, chunk_digest(&bytes).to_vec(), bytes, None)
            }
        };
        let held = &mut self.uploads[u];
        let result = held.upload.put_chunk(&digest, &bytes);
        let first_stored_put = matches!(lie, Lie::None | Lie::Bytes) && held.puts == 0;
        if matches!(lie, Lie::None | Lie::Bytes) {
            held.puts += 1;
        }
        let closed = held.closed;
        match (&result, lie) {
            (Ok(()), Lie::None) => {
                if let Some(i) = remembered {
                    let held = &mut self.uploads[u];
                    if held.chunks.len() < HELD_PER_UPLOAD_MAX {
                        held.chunks.push(i);
                    }
                }
            }
            (Ok(()), Lie::Bytes) if first_stored_put || closed => self.violation(
                step,
                format!("put-chunk of {} mismatching bytes accepted", bytes.len()),
            ),
            // Queued: the worker re-hashes it, and the next call says so.
            (Ok(()), Lie::Bytes) => {}
            (Ok(()), Lie::DigestLen) => self.violation(
                step,
                format!("put-chunk with a {}-byte digest accepted", digest.len()),
            ),
            (Ok(()), Lie::ChunkLen) => {
                self.violation(step, format!("put-chunk of {} bytes accepted", bytes.len()))
            }
            (Err(Error::InvalidArgument(_)), Lie::ChunkLen | Lie::DigestLen) => {}
            (Err(error), Lie::ChunkLen | Lie::DigestLen) => self.violation(
                step,
                format!(
                    "put-chunk of {} bytes, {}-byte digest: {} instead of invalid-argument",
                    bytes.len(),
                    digest.len(),
                    kind(error)
                ),
            ),
            (Err(_), Lie::None | Lie::Bytes) => {}
        }
        self.count("put-chunk", &result);
    }

    fn commit(&mut self, step: u32) {
        let Some(u) = self.pick_upload() else { return };
        // An honest manifest from the chunks this upload holds.
        let mut manifest: Vec<Chunk> = Vec::new();
        if !self.uploads[u].chunks.is_empty() {
            let n = match self.rng.below(10) {
                0 => 0,
                1 => self.rng.range(1, 5000) as usize,
                _ => self.rng.range(1, 16) as usize,
            };
            let mut total = 0u64;
            for _ in 0..n {
                let held = &self.uploads[u].chunks;
                let i = held[self.rng.index(held.len())];
                let chunk = self.chunks[i].clone();
                if total + u64::from(chunk.len) > HONEST_BYTES_MAX {
                    break;
                }
                total += u64::from(chunk.len);
                manifest.push(chunk);
            }
        }
        let honest_refs: Vec<ChunkRef> = manifest.iter().map(Chunk::chunk_ref).collect();
        let honest_size: u64 = manifest.iter().map(|c| u64::from(c.len)).sum();
        let honest_whole = content_digest(&manifest);
        let (mut refs, mut size, mut whole) =
            (honest_refs.clone(), honest_size, honest_whole.clone());
        // 0..=7 lie about the manifest, 8 about the options, 9..=15 honest.
        let lie = self.rng.below(16);
        let options_valid = lie != 8;
        let options = self.options(options_valid);
        // The digest of the chunk lie 7 adds.
        let mut extra_digest: Option<Vec<u8>> = None;
        match lie {
            0 => size = size.wrapping_add(1),
            1 => size = self.rng.pick(&[0, u64::MAX, size.wrapping_sub(1)]),
            2 if !refs.is_empty() => {
                let i = self.rng.index(refs.len());
                refs[i].len = self.rng.pick(&[0, u32::MAX, refs[i].len.wrapping_add(1)]);
            }
            3 => {
                // A manifest of random digests, consistent with itself.
                let n = self.rng.range(1, 3000) as usize;
                refs = (0..n)
                    .map(|_| ChunkRef {
                        digest: self.rng.bytes(32),
                        len: self.rng.range(1, 1 << 20) as u32,
                    })
                    .collect();
                size = refs.iter().map(|r| u64::from(r.len)).sum();
            }
            4 => {
                let len = self.rng.pick(&[0, 31, 33]);
                refs.push(ChunkRef {
                    digest: self.rng.bytes(len),
                    len: 1,
                });
            }
            5 => whole = self.rng.bytes(32),
            6 => {
                let len = self.rng.pick(&[0, 16, 31, 33]);
                whole = self.rng.bytes(len);
            }
            7 if !self.chunks.is_empty() => {
                // A chunk we made, perhaps never asked about by this upload:
                // everything else consistent with it.
                let extra = self.chunks[self.rng.index(self.chunks.len())].clone();
                refs.push(extra.chunk_ref());
                size += u64::from(extra.len);
                extra_digest = Some(extra.digest.clone());
                manifest.push(extra);
                whole = content_digest(&manifest);
            }
            _ => {} // honest, or only the options lie
        }
        // Honest only if nothing was changed (a "lie" may happen to be the
        // truth: size 0 of an empty manifest, a chunk this upload holds).
        let unchanged =
            same_refs(&refs, &honest_refs) && size == honest_size && whole == honest_whole;
        let extra_held = extra_digest.is_some_and(|extra| {
            self.uploads[u]
                .chunks
                .iter()
                .any(|&i| self.chunks[i].digest == extra)
        });
        let dishonest = !options_valid || !(unchanged || extra_held);
        let held = &mut self.uploads[u];
        let was_closed = held.closed;
        held.closed = true;
        let result = held.upload.commit(&refs, size, Some(&whole), &options);
        self.count(
            if dishonest {
                "commit-doctored"
            } else {
                "commit-honest"
            },
            &result,
        );
        match result {
            Ok(id) => {
                if dishonest {
                    self.violation(
                        step,
                        format!("doctored commit (lie {lie}) accepted as {id}"),
                    );
                }
                if was_closed {
                    self.violation(step, format!("second commit of an upload accepted as {id}"));
                }
                self.remember_artifact(id, Some(size));
            }
            Err(Error::Closed) if was_closed => {}
            Err(error) if was_closed => self.violation(
                step,
                format!(
                    "commit of a closed upload: {} instead of closed",
                    kind(&error)
                ),
            ),
            Err(_) => {}
        }
        // Mostly let it go; some stay, to be used after their commit.
        if self.rng.percent(75) {
            drop(self.uploads.swap_remove(u));
        }
    }

    fn read_chunk(&mut self, step: u32) {
        let digest = self.digest();
        let result = chunk_store::read_chunk(&digest);
        self.count("read-chunk", &result);
        match &result {
            Ok(bytes) => {
                if digest.len() != 32 {
                    self.violation(
                        step,
                        format!("read-chunk of a {}-byte digest answered", digest.len()),
                    );
                } else if chunk_digest(bytes).as_bytes()[..] != digest[..] {
                    self.violation(
                        step,
                        format!(
                            "read-chunk {} returned {} bytes that hash to something else",
                            hex(&digest),
                            bytes.len()
                        ),
                    );
                }
            }
            Err(Error::NotFound(_) | Error::InvalidArgument(_)) => {}
            Err(error) => self.violation(step, format!("read-chunk: {}", kind(error))),
        }
    }

    fn read_manifest(&mut self, step: u32) {
        let id = self.id();
        let start = match self.rng.below(4) {
            0 => 0,
            1 => self.rng.below(20),
            2 => u64::MAX,
            _ => self.rng.next(),
        };
        let limit = match self.rng.below(4) {
            0 => 0,
            1 => self.rng.range(1, 100) as u32,
            2 => u32::MAX,
            _ => self.rng.next() as u32,
        };
        let result = chunk_store::read_manifest(&id, start, limit);
        self.count("read-manifest", &result);
        if let Ok(page) = &result {
            if limit > 65_536 {
                self.violation(step, format!("read-manifest limit {limit} accepted"));
            }
            if page.len() as u64 > u64::from(limit) {
                self.violation(
                    step,
                    format!(
                        "read-manifest limit {limit} returned {} entries",
                        page.len()
                    ),
                );
            }
        }
    }

    fn locate(&mut self, step: u32) {
        let id = self.id();
        let size = self
            .artifacts
            .iter()
            .find(|a| a.id == id)
            .and_then(|a| a.size);
        let offset = match (self.rng.below(6), size) {
            (0, _) => 0,
            (1, Some(size)) => size.wrapping_sub(1),
            (2, Some(size)) => size,
            (3, Some(size)) if size > 0 => self.rng.below(size),
            (4, _) => u64::MAX,
            _ => self.rng.next(),
        };
        let result = chunk_store::locate(&id, offset);
        self.count("locate", &result);
        if let Ok((index, start)) = result {
            if start > offset {
                self.violation(
                    step,
                    format!("locate {offset} gave chunk {index} starting at {start}"),
                );
            }
            if let Some(size) = size {
                if offset >= size {
                    self.violation(
                        step,
                        format!("locate {offset} of a {size}-byte artifact answered"),
                    );
                }
            }
        }
    }

    fn size(&mut self, step: u32) {
        let id = self.id();
        let result = chunk_store::size(&id);
        self.count("size", &result);
        if let Ok(size) = result {
            let well_formed = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
            if !well_formed {
                self.violation(step, format!("size of a {}-byte id answered", id.len()));
            }
            let known = self
                .artifacts
                .iter()
                .find(|a| a.id == id)
                .and_then(|a| a.size);
            if known.is_some_and(|known| known != size) {
                self.violation(step, format!("size {id}: {size} changed"));
            }
        }
    }
}

fn same_refs(a: &[ChunkRef], b: &[ChunkRef]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.digest == b.digest && a.len == b.len)
}

/// The whole-content digest of `chunks` in order.
fn content_digest(chunks: &[Chunk]) -> Vec<u8> {
    let mut hasher = tensor_blob_chunking::ContentHasher::new();
    for chunk in chunks {
        hasher.update(&generate(chunk.seed, chunk.len));
    }
    hasher.finalize().to_vec()
}
