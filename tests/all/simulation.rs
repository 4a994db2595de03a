//! Deterministic simulation of the store on a simulated disk
//! (`store::backend::sim::SimDisk`): power cuts at random points and
//! injected faults, checked against a model of acknowledged operations.
//!
//! Goal: every promise of ARCHITECTURE.md ("Write protocol and what a crash
//! leaves", "What a fault does") holds under the strict power-loss model of
//! the simulated disk, which a SIGKILL cannot test: unsynced writes may be
//! lost or torn at any 512-byte sector, unsynced directory entries may
//! vanish. Method: a seeded generator runs random sequences of real store
//! operations through the tenant registry and the upload API (multi-chunk
//! and single-chunk puts sharing chunks, deletes, updates, GC with segment
//! and meta.log compaction, clean reopens, faults, power cuts). After every
//! cut the store is reopened from the crash image and checked: every
//! acknowledged, undeleted artifact reads back byte-identical and verifies;
//! nothing unacknowledged is visible unless whole; acknowledged deletes and
//! updates stay done; open reports no damage (only crash residue); and the
//! reopened store takes writes that survive the next cut. A failure prints
//! its seed; `TBLOB_SIM_SEED=S` replays one, `TBLOB_SIM_SEEDS=N` runs more.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tensor_blob_host::store::backend::sim::{Fault, FaultOp, SimDisk};
use tensor_blob_host::store::backend::OpenMode;
use tensor_blob_host::store::{
    ArtifactId, ChunkRef, Condition, Durability, GcPolicy, Hash, Metadata, MetadataUpdate,
    NewMetadata, Order, ProblemKind, Query, Store, StoreError, StoreOptions, CATALOG_DB_NAME,
};
use tensor_blob_host::tenant::Tenants;

/// Seeds CI runs: a few minutes at most in a debug build.
const SEEDS_DEFAULT: u64 = 64;
/// Seeds that once failed, run every time besides the random ones: a
/// segment whose header never reached the disk (after an append that found
/// the disk full) read as foreign; a sealed segment a crash caught before
/// its seal was synced had torn records indexed, and a later upload
/// deduplicated against one; (a fault in the model) an update after one
/// that failed was applied to the state the failed one would have made;
/// a restart after a failed fsync synced, without writing them again,
/// chunks the page cache still showed and the disk never got; a punch on a
/// full disk abandoned after the catalog's checkpoint failed (its tables
/// rebuilt from the disk) still left its segment's hint without the
/// garbage records, which the rebuilt tables then deduplicated against;
/// GC kept writing after a catalog database error had left its garbage
/// half dropped (rows kept, totals lowered), and a later pin underflowed a
/// total (found with compressed records in the mix).
const REGRESSION_SEEDS: [u64; 6] = [
    12265097016630422475,
    1264091751329710155,
    18341303714259341461,
    18199354423046618940,
    13714851462143068426,
    7142506158049881911,
];
/// Operations per seed.
const STEPS: u32 = 160;

/// Tags and external links the simulation draws from: values that are
/// prefixes of each other and hold ':' and '/', the strings the seed's
/// prefix scans confused.
const TAGS: [&str; 8] = [
    "run:4", "run:42", "run:", ":42", "a/b", "ü", "ckpt", "ckpt:",
];
const ENTITIES: [&str; 4] = ["run:4", "run:42", "user/7", "ckpt"];

/// The mutable metadata the simulation sets and checks.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MetaState {
    filename: Option<String>,
    tags: Vec<String>,
    links: Vec<ArtifactId>,
    external_links: Vec<String>,
}

impl MetaState {
    fn of(meta: &Metadata) -> MetaState {
        MetaState {
            filename: meta.filename.clone(),
            tags: meta.tags.clone(),
            links: meta.links.clone(),
            external_links: meta.external_links.clone(),
        }
    }

    /// As it reads once the artifacts not in `present` are gone: links to
    /// a deleted artifact are dropped.
    fn without_links_outside(&self, present: &HashSet<ArtifactId>) -> MetaState {
        let mut state = self.clone();
        state.links.retain(|id| present.contains(id));
        state
    }
}

/// What one artifact must read back as.
#[derive(Clone)]
struct Expect {
    content: Arc<Vec<u8>>,
    /// Metadata it may have: one once acknowledged; two while an update
    /// of it failed or was cut short.
    metas: Vec<MetaState>,
    /// When the model learned of it: picks go by this, not by id, since
    /// ids are minted from the clock and a seed must replay the same run.
    born: u64,
}

#[derive(Default)]
struct Model {
    live: HashMap<ArtifactId, Expect>,
    deleted: HashSet<ArtifactId>,
    /// Contents of puts whose outcome is unknown (failed, or cut short):
    /// each may be visible, whole, under an id we never saw.
    maybe_puts: Vec<Arc<Vec<u8>>>,
    /// Deletes whose outcome is unknown.
    maybe_deleted: HashSet<ArtifactId>,
    /// The next `Expect::born`.
    born_next: u64,
}

impl Model {
    fn insert(&mut self, id: ArtifactId, content: Arc<Vec<u8>>, meta: MetaState) {
        self.born_next += 1;
        let expect = Expect {
            content,
            metas: vec![meta],
            born: self.born_next,
        };
        self.live.insert(id, expect);
    }
}

#[derive(Default, Debug)]
struct Counts {
    cuts: u64,
    reopens: u64,
    puts: u64,
    deletes: u64,
    updates: u64,
    /// Queries whose full result set was checked after a reopen.
    queries_checked: u64,
    gcs: u64,
    /// Of `gcs`, incremental budgeted passes.
    gc_passes: u64,
    /// Segments compacted away by passes that succeeded.
    segments_compacted: u64,
    faults_scheduled: u64,
    failed_ops: u64,
    checked_artifacts: u64,
    no_space_errors: u64,
    read_only_stores: u64,
}

struct Sim {
    seed: u64,
    rng: fastrand::Rng,
    disk: SimDisk,
    options: StoreOptions,
    tenants: Option<Tenants>,
    store: Option<Store>,
    model: Model,
    blocks: Vec<Arc<Vec<u8>>>,
    counts: Counts,
    space_limited_steps: u32,
}

fn digest_of(bytes: &[u8]) -> Hash {
    Hash::of(bytes)
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let durability = if rng.bool() {
            Durability::Sync
        } else {
            Durability::Batch
        };
        let options = StoreOptions {
            durability,
            segment_bytes_max: 256 << 10,
            quota: Default::default(),
            // Compressed records (below) under every fault, too.
            compression: Default::default(),
        };
        // A pool of chunks, so artifacts share some (dedup, sharing on
        // delete and GC). About a third compress (bytes from a 4-letter
        // alphabet), so segments mix compressed and plain records.
        let blocks = (0..12)
            .map(|_| {
                let len = if rng.u8(..) < 30 {
                    rng.usize(60_000..200_000)
                } else {
                    rng.usize(1..20_000)
                };
                let compressible = rng.u8(..3) == 0;
                Arc::new(
                    (0..len)
                        .map(|_| {
                            if compressible {
                                b'a' + rng.u8(..4)
                            } else {
                                rng.u8(..)
                            }
                        })
                        .collect::<Vec<u8>>(),
                )
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng,
            disk: SimDisk::new(seed),
            options,
            tenants: None,
            store: None,
            model: Model::default(),
            blocks,
            counts: Counts::default(),
            space_limited_steps: 0,
        };
        sim.open().expect("a new store opens");
        sim
    }

    fn fail(&self, what: String) -> ! {
        let trace = self.disk.trace();
        let tail: Vec<&String> = trace.iter().rev().take(30).collect();
        panic!(
            "seed {}: {what}\n(replay: TBLOB_SIM_SEED={})\nlast disk operations, newest first: {tail:#?}",
            self.seed, self.seed
        );
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open")
    }

    fn open(&mut self) -> Result<(), StoreError> {
        let tenants = Tenants::with_backend(self.disk.root(), self.options.clone());
        let store = tenants.store("sim")?;
        self.tenants = Some(tenants);
        self.store = Some(store);
        Ok(())
    }

    fn close(&mut self) {
        self.store = None;
        self.tenants = None;
    }

    /// Opens after a cut or a reopen; faults that hit the open itself are
    /// cleared and it is tried again once.
    fn reopen_and_check(&mut self) {
        if let Err(first) = self.open() {
            self.disk.clear_faults();
            if let Err(error) = self.open() {
                self.fail(format!("reopen failed: {error} (first try: {first})"));
            }
        }
        self.check();
    }

    fn cut(&mut self) {
        self.close();
        self.disk = self.disk.crash();
        self.space_limited_steps = 0;
        self.counts.cuts += 1;
        self.reopen_and_check();
    }

    fn reopen(&mut self) {
        self.close();
        self.disk.clear_faults();
        self.space_limited_steps = 0;
        self.counts.reopens += 1;
        self.reopen_and_check();
    }

    fn read_all(store: &Store, id: &ArtifactId) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let page = store.manifest(id, start, 1024)?;
            if page.is_empty() {
                return Ok(out);
            }
            start += page.len() as u64;
            for chunk in page {
                out.extend_from_slice(&store.read_chunk(&chunk.digest)?);
            }
        }
    }

    /// The store against the model, with no fault in force.
    fn check(&mut self) {
        let store = self.store().clone();
        let report = store.recovery_report();
        let damage: Vec<_> = report.damage().collect();
        if !damage.is_empty() {
            self.fail(format!(
                "open reported damage after a power cut: {damage:?}"
            ));
        }
        let ids: Vec<ArtifactId> = store.ids().collect();
        let present: HashSet<ArtifactId> = ids.iter().copied().collect();
        for id in &ids {
            if self.model.deleted.contains(id) {
                self.fail(format!(
                    "artifact {id} was deleted (acknowledged) but is back"
                ));
            }
            let bytes = match Self::read_all(&store, id) {
                Ok(bytes) => bytes,
                Err(error) => self.fail(format!("artifact {id} does not read back: {error}")),
            };
            if let Err(error) = store.verify(id) {
                self.fail(format!("artifact {id} does not verify: {error}"));
            }
            let meta = store.metadata(id).expect("listed artifacts have metadata");
            let actual = MetaState::of(&meta);
            if let Some(link) = actual.links.iter().find(|link| !present.contains(link)) {
                self.fail(format!("artifact {id} links to {link}, which is not there"));
            }
            match self.model.live.get(id).cloned() {
                Some(expect) => {
                    if bytes != *expect.content {
                        self.fail(format!("artifact {id} reads back other bytes"));
                    }
                    let allowed: Vec<MetaState> = expect
                        .metas
                        .iter()
                        .map(|m| m.without_links_outside(&present))
                        .collect();
                    if !allowed.contains(&actual) {
                        self.fail(format!(
                            "artifact {id} has metadata {actual:?}, expected one of {allowed:?}"
                        ));
                    }
                    // What open replayed is durable now.
                    self.model.live.get_mut(id).expect("live").metas = vec![actual];
                }
                None => {
                    // Unacknowledged: acceptable only whole, as a put that
                    // failed or was cut short.
                    let Some(at) = self.model.maybe_puts.iter().position(|c| **c == bytes) else {
                        self.fail(format!(
                            "artifact {id} ({} bytes) was never acknowledged and matches no put in flight",
                            bytes.len()
                        ));
                    };
                    let content = self.model.maybe_puts.swap_remove(at);
                    self.model.insert(*id, content, actual);
                }
            }
            self.counts.checked_artifacts += 1;
        }
        let lost: Vec<ArtifactId> = self
            .model
            .live
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in lost {
            if self.model.maybe_deleted.remove(&id) {
                self.model.live.remove(&id);
                self.model.deleted.insert(id);
            } else {
                self.fail(format!("acknowledged artifact {id} is lost"));
            }
        }
        if let Err(drift) = store.check_gc_accounting() {
            self.fail(format!("GC accounting after the reopen: {drift}"));
        }
        // Deletes in doubt whose artifact is still there did not land.
        self.model.maybe_deleted.clear();
        self.model.maybe_puts.clear();
        self.check_queries(&store, &ids);
    }

    /// Every query's full result set, paged in both orders, against the
    /// metadata just read back (so the indexes agree with the records
    /// they were rebuilt from).
    fn check_queries(&mut self, store: &Store, ids: &[ArtifactId]) {
        let metas: Vec<Metadata> = ids
            .iter()
            .map(|id| store.metadata(id).expect("listed"))
            .collect();
        let mut conditions: Vec<Condition> = Vec::new();
        conditions.extend(TAGS.iter().map(|t| Condition::Tag(t.to_string())));
        conditions.extend(
            ENTITIES
                .iter()
                .map(|e| Condition::LinksToExternal(e.to_string())),
        );
        for id in ids.iter().take(4) {
            conditions.push(Condition::LinksTo(*id));
            conditions.push(Condition::LinkedFrom(*id));
        }
        conditions.push(Condition::FilenamePrefix("u".into()));
        let mut queries: Vec<Vec<Condition>> = conditions.iter().map(|c| vec![c.clone()]).collect();
        queries.push(vec![
            Condition::Tag(TAGS[0].into()),
            Condition::Tag(TAGS[1].into()),
        ]);
        queries.push(Vec::new());
        for query in queries {
            let expected: Vec<ArtifactId> = metas
                .iter()
                .filter(|meta| query.iter().all(|c| meets(meta, c, &metas)))
                .map(|meta| meta.id)
                .collect();
            for order in [Order::OldestFirst, Order::NewestFirst] {
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    let page = store
                        .query(&Query {
                            conditions: query.clone(),
                            order,
                            after,
                            limit: 3,
                        })
                        .unwrap_or_else(|e| self.fail(format!("query {query:?}: {e}")));
                    got.extend(page.ids);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                let mut want = expected.clone();
                if order == Order::NewestFirst {
                    want.reverse();
                }
                if got != want {
                    self.fail(format!(
                        "query {query:?} {order:?} after a reopen: got {got:?}, expected {want:?}"
                    ));
                }
                self.counts.queries_checked += 1;
            }
        }
    }

    fn pick_live(&mut self) -> Option<ArtifactId> {
        let mut ids: Vec<(u64, ArtifactId)> = self
            .model
            .live
            .iter()
            .map(|(id, expect)| (expect.born, *id))
            .collect();
        ids.sort_unstable();
        (!ids.is_empty()).then(|| ids[self.rng.usize(..ids.len())].1)
    }

    fn put(&mut self) {
        self.counts.puts += 1;
        let count = if self.rng.u8(..) < 80 {
            1
        } else {
            self.rng.usize(2..10)
        };
        let picks: Vec<usize> = (0..count)
            .map(|_| self.rng.usize(..self.blocks.len()))
            .collect();
        let mut content = Vec::new();
        let mut chunks = Vec::new();
        for &i in &picks {
            content.extend_from_slice(&self.blocks[i]);
            chunks.push(ChunkRef {
                digest: digest_of(&self.blocks[i]),
                len: self.blocks[i].len() as u32,
            });
        }
        let content = Arc::new(content);
        let state = MetaState {
            filename: Some(format!("f{}", self.rng.u32(..1000))),
            tags: self.pick_some(&TAGS),
            links: self.pick_live().into_iter().collect(),
            external_links: self.pick_some(&ENTITIES),
        };
        let store = self.store().clone();
        let result = (|| {
            let mut upload = store.begin_upload();
            let digests: Vec<Hash> = chunks.iter().map(|c| c.digest).collect();
            let missing = upload.missing(&digests)?;
            let mut sent = HashSet::new();
            for ((digest, &i), missing) in digests.iter().zip(&picks).zip(missing) {
                if missing && sent.insert(*digest) {
                    upload.put_chunk(digest, &self.blocks[i])?;
                }
            }
            upload.commit(
                &chunks,
                content.len() as u64,
                Some(&digest_of(&content)),
                NewMetadata {
                    filename: state.filename.clone(),
                    tags: state.tags.clone(),
                    links: state.links.clone(),
                    external_links: state.external_links.clone(),
                    ..NewMetadata::default()
                },
            )
        })();
        match result {
            Ok(id) => {
                self.model.insert(id, content, state);
            }
            Err(error) => {
                self.note_error(&error);
                self.model.maybe_puts.push(content);
            }
        }
    }

    fn note_error(&mut self, error: &StoreError) {
        self.counts.failed_ops += 1;
        match error {
            StoreError::NoSpace(_) => self.counts.no_space_errors += 1,
            StoreError::Io { .. } | StoreError::ReadOnly(_) => {}
            other => self.fail(format!("unexpected error kind: {other}")),
        }
    }

    fn delete(&mut self) {
        let Some(id) = self.pick_live() else { return };
        self.counts.deletes += 1;
        match self.store().delete(&id) {
            Ok(()) => {
                self.model.live.remove(&id);
                self.model.deleted.insert(id);
                for expect in self.model.live.values_mut() {
                    for meta in &mut expect.metas {
                        meta.links.retain(|link| *link != id);
                    }
                }
            }
            Err(error) => {
                self.note_error(&error);
                self.model.maybe_deleted.insert(id);
            }
        }
    }

    /// Up to three distinct values of `values`, in random order.
    fn pick_some(&mut self, values: &[&str]) -> Vec<String> {
        let mut picked: Vec<String> = Vec::new();
        for _ in 0..self.rng.usize(..4) {
            let value = values[self.rng.usize(..values.len())].to_string();
            if !picked.contains(&value) {
                picked.push(value);
            }
        }
        picked
    }

    /// A random change: a new filename, or tags, links and external links
    /// added and removed incrementally.
    fn update(&mut self) {
        let Some(id) = self.pick_live() else { return };
        self.counts.updates += 1;
        // The change applies to what the store holds now: after an update
        // that failed, that is the state before it (a failed record is
        // rolled back, or the store turned read-only and is cut next), not
        // the newest state the model allows.
        let before = match self.store().metadata(&id) {
            Ok(meta) => MetaState::of(&meta),
            Err(error) => self.fail(format!("live artifact {id} has no metadata: {error}")),
        };
        if !self.model.live[&id].metas.contains(&before) {
            self.fail(format!(
                "artifact {id} holds metadata {before:?}, expected one of {:?}",
                self.model.live[&id].metas
            ));
        }
        let mut after = before.clone();
        let mut change = MetadataUpdate::default();
        match self.rng.u8(..3) {
            0 => {
                let filename = Some(format!("u{}", self.rng.u32(..1000)));
                after.filename = filename.clone();
                change.filename = Some(filename);
            }
            1 => {
                change.remove_tags = self.pick_some(&TAGS);
                change.add_tags = self.pick_some(&TAGS);
                change.remove_external_links = self.pick_some(&ENTITIES);
                change.add_external_links = self.pick_some(&ENTITIES);
                after.tags.retain(|t| !change.remove_tags.contains(t));
                for tag in &change.add_tags {
                    if !after.tags.contains(tag) {
                        after.tags.push(tag.clone());
                    }
                }
                after
                    .external_links
                    .retain(|e| !change.remove_external_links.contains(e));
                for entity in &change.add_external_links {
                    if !after.external_links.contains(entity) {
                        after.external_links.push(entity.clone());
                    }
                }
            }
            _ => {
                let Some(target) = self.pick_live() else {
                    return;
                };
                if after.links.contains(&target) {
                    after.links.retain(|l| *l != target);
                    change.remove_links = vec![target];
                } else {
                    after.links.push(target);
                    change.add_links = vec![target];
                }
            }
        }
        match self.store().update(&id, change) {
            Ok(meta) => {
                if MetaState::of(&meta) != after {
                    self.fail(format!(
                        "update of {id} returned {meta:?}, expected {after:?}"
                    ));
                }
                self.model.live.get_mut(&id).expect("live").metas = vec![after];
            }
            Err(error) => {
                self.note_error(&error);
                self.model
                    .live
                    .get_mut(&id)
                    .expect("live")
                    .metas
                    .push(after);
            }
        }
    }

    /// A full pass, or half the time an incremental one with a random
    /// copy budget (often smaller than one segment's live bytes, so a
    /// pass leaves work behind) and random dead-ratio thresholds.
    fn gc(&mut self) {
        self.counts.gcs += 1;
        let result = if self.rng.bool() {
            self.store().gc()
        } else {
            self.counts.gc_passes += 1;
            let policy = GcPolicy {
                pass_copy_bytes_max: self.rng.u64(1..400_000),
                segment_dead_ratio_min: [0.2, 0.5, 0.9][self.rng.usize(..3)],
                meta_log_dead_ratio_min: [0.3, 0.5][self.rng.usize(..2)],
                meta_log_bytes_min: 0,
                ..GcPolicy::default()
            };
            self.store().gc_pass(&policy)
        };
        match result {
            Ok(report) => self.counts.segments_compacted += report.segments_removed,
            Err(error) => self.note_error(&error),
        }
    }

    fn fault(&mut self) {
        self.counts.faults_scheduled += 1;
        if self.rng.u8(..) < 50 {
            // A full disk for a while.
            let used = self.disk.used_bytes();
            self.disk
                .set_space_limit(Some(used + self.rng.u64(0..300_000)));
            self.space_limited_steps = self.rng.u32(3..15);
            return;
        }
        let op = match self.rng.u8(..6) {
            0 => FaultOp::Write,
            1 => FaultOp::Sync,
            2 => FaultOp::Read,
            3 => FaultOp::Rename,
            4 => FaultOp::DirSync,
            _ => FaultOp::Remove,
        };
        let fault = match op {
            FaultOp::Write => match self.rng.u8(..3) {
                0 => Fault::Eio,
                1 => Fault::ShortWrite,
                _ => Fault::NoSpace,
            },
            _ => Fault::Eio,
        };
        self.disk.fail_op(op, self.rng.u64(0..12), fault);
    }

    fn step(&mut self) {
        if self.space_limited_steps > 0 {
            self.space_limited_steps -= 1;
            if self.space_limited_steps == 0 {
                self.disk.set_space_limit(None);
            }
        }
        if self.store().is_read_only() {
            // A failed fsync: the store refuses writes; recovery is a
            // restart (see ARCHITECTURE.md). Half the time a power cut;
            // else the process alone restarts and the page cache still
            // returns what the failed sync dropped, which a power cut
            // later loses unless the open writes it again ("fsyncgate").
            self.counts.read_only_stores += 1;
            if self.rng.bool() {
                self.cut();
            } else {
                self.reopen();
            }
            return;
        }
        let op = self.rng.u8(..100);
        match op {
            0..=39 => self.put(),
            40..=51 => self.delete(),
            52..=59 => self.update(),
            60..=66 => self.gc(),
            67..=70 => self.reopen(),
            71..=80 => self.cut(),
            _ => self.fault(),
        }
        // A store that refuses writes (after a failed fsync or catalog
        // error) may hold half-applied changes until it is reopened.
        if !self.store().is_read_only() {
            if let Err(drift) = self.store().check_gc_accounting() {
                self.fail(format!("the index's accounting drifted: {drift}"));
            }
        }
    }
}

/// Whether `meta` meets `condition`, by the store's documented rules
/// (exact comparison; `metas` are all live artifacts, for `LinkedFrom`).
fn meets(meta: &Metadata, condition: &Condition, metas: &[Metadata]) -> bool {
    match condition {
        Condition::Tag(tag) => meta.tags.contains(tag),
        Condition::LinksToExternal(entity) => meta.external_links.contains(entity),
        Condition::LinksTo(target) => meta.links.contains(target),
        Condition::LinkedFrom(source) => metas
            .iter()
            .any(|m| m.id == *source && m.links.contains(&meta.id)),
        Condition::FilenamePrefix(prefix) => meta
            .filename
            .as_deref()
            .is_some_and(|f| f.starts_with(prefix.as_str())),
        other => unreachable!("the simulation does not query {other:?}"),
    }
}

fn run_seed(seed: u64) -> (Counts, tensor_blob_host::store::backend::sim::SimStats) {
    let mut sim = Sim::new(seed);
    for _ in 0..STEPS {
        sim.step();
    }
    // The last writes survive one more cut too.
    sim.cut();
    (sim.counts, sim.disk.stats())
}

#[test]
fn random_operations_survive_power_cuts_and_faults() {
    let replay = std::env::var("TBLOB_SIM_SEED").is_ok();
    let seeds: Vec<u64> = match std::env::var("TBLOB_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("TBLOB_SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("TBLOB_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(SEEDS_DEFAULT);
            let base = fastrand::u64(..);
            REGRESSION_SEEDS
                .into_iter()
                .chain((0..count).map(|i| base.wrapping_add(i)))
                .collect()
        }
    };
    let mut total = Counts::default();
    let mut faults: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut torn_writes, mut lost_writes, mut lost_entries) = (0, 0, 0);
    for seed in seeds {
        eprintln!("simulation seed {seed}");
        let (counts, disk) = run_seed(seed);
        total.cuts += counts.cuts;
        total.reopens += counts.reopens;
        total.puts += counts.puts;
        total.deletes += counts.deletes;
        total.updates += counts.updates;
        total.queries_checked += counts.queries_checked;
        total.gcs += counts.gcs;
        total.gc_passes += counts.gc_passes;
        total.segments_compacted += counts.segments_compacted;
        total.failed_ops += counts.failed_ops;
        total.checked_artifacts += counts.checked_artifacts;
        total.no_space_errors += counts.no_space_errors;
        total.read_only_stores += counts.read_only_stores;
        total.faults_scheduled += counts.faults_scheduled;
        for (kind, n) in disk.faults {
            *faults.entry(kind).or_default() += n;
        }
        torn_writes += disk.torn_writes;
        lost_writes += disk.lost_writes;
        lost_entries += disk.lost_entries;
    }
    eprintln!("simulation totals: {total:?}");
    eprintln!("faults injected, by kind: {faults:?}");
    eprintln!(
        "power cuts tore {torn_writes} unsynced writes, lost {lost_writes} and {lost_entries} directory entries"
    );
    assert!(total.cuts > 0 && total.checked_artifacts > 0 && total.queries_checked > 0);
    // One seed replayed need not compact; the default set always does.
    assert!(
        replay || (total.gc_passes > 0 && total.segments_compacted > 0),
        "budgeted passes ran and compactions happened: {total:?}"
    );
}

/// Regression (found from outside on a filesystem modelling power loss
/// strictly): the store directory, `tenants/` and `tenants/<name>/` were
/// created without syncing their parents, so after a cut every
/// acknowledged artifact of a new store was gone although everything
/// beneath was synced. Method: one put into a new store, then the cut
/// that keeps the fewest unsynced entries, many seeds.
#[test]
fn a_new_stores_directories_survive_a_power_cut() {
    for seed in 0..64 {
        let disk = SimDisk::new(seed);
        let options = StoreOptions::default();
        let id = {
            let tenants = Tenants::with_backend(disk.root(), options.clone());
            let store = tenants.store("t").unwrap();
            put_one(&store, b"survives")
        };
        let disk = disk.crash();
        let tenants = Tenants::with_backend(disk.root(), options);
        let store = tenants.store("t").unwrap();
        assert!(
            store.exists(&id).unwrap(),
            "seed {seed}: acknowledged artifact lost"
        );
    }
}

/// The tables rebuilt in memory after a failed checkpoint (a full disk)
/// carry over what only memory knew: an upload's pins and a hold on a
/// deleted artifact. Method: an upload with a chunk put, a held deleted
/// artifact and garbage, then a full disk, so GC's checkpoint before its
/// punch fails and the tables go to memory; then GC with room again must
/// keep the upload's and the held artifact's chunks, the held artifact
/// reads whole, the upload commits, and every pin is released without a
/// panic (an unpin finds its pin).
#[test]
fn tables_rebuilt_after_a_failed_checkpoint_keep_pins_and_holds() {
    let disk = SimDisk::new(31);
    let options = StoreOptions::default();
    let store = Store::open_backend(disk.root(), options.clone()).unwrap();
    // Incompressible, so the disk fills as the sizes say.
    let bytes = |len: usize, salt: u64| -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        fastrand::Rng::with_seed(salt).fill(&mut bytes);
        bytes
    };
    let held_bytes = bytes(200_000, 1);
    let held = put_one(&store, &held_bytes);
    let garbage = put_one(&store, &bytes(1_500_000, 2));
    let hold = store.hold(&held).unwrap();
    store.delete(&held).unwrap();
    store.delete(&garbage).unwrap();
    let new_bytes = bytes(300_000, 3);
    let digest = Hash::of(&new_bytes);
    let mut upload = store.begin_upload();
    upload.put_chunk(&digest, &new_bytes).unwrap();

    disk.set_space_limit(Some(disk.used_bytes()));
    store.gc().unwrap();
    let catalog = disk.root().open(CATALOG_DB_NAME, OpenMode::Read);
    assert!(
        catalog
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
        "the checkpoint failed and the tables went to memory: {:?}",
        catalog.map(|_| ())
    );
    assert!(!store.is_read_only());

    disk.set_space_limit(None);
    let report = store.gc().unwrap();
    assert!(report.chunk_bytes_removed >= 1_500_000, "{report:?}");
    assert_eq!(read(&store, &held), held_bytes, "the hold keeps it whole");
    let id = upload
        .commit(
            &[ChunkRef {
                digest,
                len: new_bytes.len() as u32,
            }],
            new_bytes.len() as u64,
            Some(&digest),
            NewMetadata::default(),
        )
        .unwrap();
    drop(hold);
    store.gc().unwrap();
    assert_eq!(read(&store, &id), new_bytes);
    assert!(!store.exists(&held).unwrap());
    drop(store);
    let store = Store::open_backend(disk.crash().root(), options).unwrap();
    assert_eq!(read(&store, &id), new_bytes);
    assert!(store.recovery_report().damage().next().is_none());
}

fn put_one(store: &Store, bytes: &[u8]) -> ArtifactId {
    try_put(store, bytes).unwrap()
}

/// Puts `bytes` as one single-chunk artifact.
pub(crate) fn try_put(store: &Store, bytes: &[u8]) -> Result<ArtifactId, StoreError> {
    let digest = Hash::of(bytes);
    let mut upload = store.begin_upload();
    upload.put_chunk(&digest, bytes)?;
    upload.commit(
        &[ChunkRef {
            digest,
            len: bytes.len() as u32,
        }],
        bytes.len() as u64,
        Some(&digest),
        NewMetadata::default(),
    )
}

fn read(store: &Store, id: &ArtifactId) -> Vec<u8> {
    Sim::read_all(store, id).unwrap()
}

/// fsyncgate: a failed fsync may have dropped the pages it should have
/// written, so a later successful one proves nothing. Method: the sync of
/// a commit fails; the commit must fail, the store must refuse every
/// further write (a later commit could depend on lost pages) while reads
/// keep working; after a cut, every acknowledged artifact is there and the
/// failed one is absent or whole.
#[test]
fn a_failed_fsync_fails_the_commit_and_makes_the_store_read_only() {
    let disk = SimDisk::new(7);
    let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
    let kept = put_one(&store, b"before the failure");
    disk.fail_op(FaultOp::Sync, 0, Fault::Eio);
    let failed = try_put(&store, b"depends on a failed sync");
    assert!(matches!(failed, Err(StoreError::Io { .. })), "{failed:?}");
    assert!(store.is_read_only());
    assert!(matches!(
        try_put(&store, b"after"),
        Err(StoreError::ReadOnly(_))
    ));
    assert!(matches!(store.delete(&kept), Err(StoreError::ReadOnly(_))));
    assert!(matches!(store.gc(), Err(StoreError::ReadOnly(_))));
    assert_eq!(read(&store, &kept), b"before the failure");
    drop(store);
    for seed in 0..16 {
        let _ = seed;
        let image = disk.crash();
        let store = Store::open_backend(image.root(), StoreOptions::default()).unwrap();
        assert_eq!(read(&store, &kept), b"before the failure");
        for id in store.ids() {
            assert!(id == kept || read(&store, &id) == b"depends on a failed sync");
        }
        assert!(!store.is_read_only());
        put_one(&store, b"the reopened store takes writes");
    }
}

/// fsyncgate across a restart: after a failed fsync the page cache may
/// still return what the kernel will never write, and a sync from a new
/// process succeeds without writing it. Method: a chunk is written, its
/// sync fails, and the process restarts without a power cut (the same
/// disk, reopened): the open must write such bytes again before it syncs
/// them, or a new artifact that deduplicates against the chunk is
/// acknowledged and then lost to the next power cut.
#[test]
fn a_restart_after_a_failed_fsync_writes_again_what_it_finds_unsynced() {
    let disk = SimDisk::new(8);
    let chunk = b"written, then its sync failed".as_slice();
    {
        let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
        put_one(&store, b"before the failure");
        disk.fail_op(FaultOp::Sync, 0, Fault::Eio);
        assert!(matches!(try_put(&store, chunk), Err(StoreError::Io { .. })));
        assert!(store.is_read_only());
    }
    let acknowledged = {
        let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
        let mut upload = store.begin_upload();
        assert_eq!(
            upload.missing(&[Hash::of(chunk)]).unwrap(),
            vec![false],
            "the chunk the page cache still holds is found, so a put deduplicates against it"
        );
        drop(upload);
        put_one(&store, chunk)
    };
    for _ in 0..8 {
        let image = disk.crash();
        let store = Store::open_backend(image.root(), StoreOptions::default()).unwrap();
        assert_eq!(read(&store, &acknowledged), chunk);
    }
}

/// The same for `meta.log`: a process that wrote a commit record, saw
/// its sync fail and died before cutting it back leaves a record the page
/// cache shows and the disk never got; the next open replays it, so it
/// must make it durable. Method: a store without fsyncs writes an artifact
/// (its chunk and its record unsynced) after one written durably, then syncs of both files fail, as
/// that process's would have; a durable open replays the artifact, and it
/// must survive every later power cut.
#[test]
fn a_record_an_open_replays_after_a_failed_fsync_is_made_durable() {
    let disk = SimDisk::new(10);
    let kept = {
        let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
        put_one(&store, b"synced, then a clean close")
    };
    let unsynced = StoreOptions {
        durability: Durability::None,
        ..StoreOptions::default()
    };
    let id = {
        let store = Store::open_backend(disk.root(), unsynced).unwrap();
        put_one(&store, b"record and chunk never synced")
    };
    let root = disk.root();
    let (segments, _) = root.dir("segments", false).unwrap();
    for file in [
        root.open("meta.log", OpenMode::Read).unwrap(),
        segments
            .open("0000000000000001.seg", OpenMode::Read)
            .unwrap(),
    ] {
        disk.fail_op(FaultOp::Sync, 0, Fault::Eio);
        assert!(file.sync_data().is_err());
    }
    {
        let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
        assert_eq!(read(&store, &id), b"record and chunk never synced");
    }
    for _ in 0..8 {
        let image = disk.crash();
        let store = Store::open_backend(image.root(), StoreOptions::default()).unwrap();
        assert_eq!(read(&store, &id), b"record and chunk never synced");
        assert_eq!(read(&store, &kept), b"synced, then a clean close");
    }
}

/// A clean close writes a checkpoint record, which says everything before
/// it was synced: never after a sync that failed during the close itself.
/// Method: an upload leaves an unsynced chunk, the close's sync of the
/// active segment fails; nothing may be written to `meta.log` after it.
#[test]
fn a_close_whose_sync_fails_writes_no_checkpoint() {
    let disk = SimDisk::new(9);
    let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
    put_one(&store, b"synced");
    let mut upload = store.begin_upload();
    let pending = b"never committed".as_slice();
    upload.put_chunk(&Hash::of(pending), pending).unwrap();
    drop(upload);
    disk.fail_op(FaultOp::Sync, 0, Fault::Eio);
    drop(store);
    let trace = disk.trace();
    let fault = trace
        .iter()
        .rposition(|op| op.starts_with("FAULT eio-sync"))
        .expect("the close synced the active segment, and the sync failed");
    let after: Vec<&String> = trace[fault..]
        .iter()
        .filter(|op| op.starts_with("write") && op.contains("meta.log"))
        .collect();
    assert!(after.is_empty(), "written after the failed sync: {after:?}");
}

/// A full disk: writes fail with a typed `NoSpace`, nothing partial
/// becomes visible, every stored artifact stays readable, opening needs no
/// space, and GC gets space back although the one segment still holds a
/// live artifact (it punches holes over the dead records in place, since
/// copying the live one out needs space the disk does not have). Method:
/// eight artifacts in one segment, the disk's limit set to what is used,
/// seven deleted, GC.
#[test]
fn a_full_disk_fails_writes_cleanly_and_gc_makes_room_in_place() {
    let disk = SimDisk::new(11);
    let options = StoreOptions::default();
    let store = Store::open_backend(disk.root(), options.clone()).unwrap();
    // The one that stays is larger than the space reserve, so copying it
    // out of the segment cannot fit.
    // Incompressible, so the disk fills as the sizes say.
    let contents: Vec<Vec<u8>> = (0..8u64)
        .map(|i| {
            let mut bytes = vec![0u8; if i == 0 { 1_500_000 } else { 300_000 }];
            fastrand::Rng::with_seed(i).fill(&mut bytes);
            bytes
        })
        .collect();
    let ids: Vec<ArtifactId> = contents.iter().map(|c| put_one(&store, c)).collect();
    disk.set_space_limit(Some(disk.used_bytes() + 1000));
    let mut big = vec![0u8; 200_000];
    fastrand::Rng::with_seed(99).fill(&mut big);
    let full = try_put(&store, &big);
    assert!(matches!(full, Err(StoreError::NoSpace(_))), "{full:?}");
    assert_eq!(store.ids().count(), 8, "nothing partial is visible");
    for (id, content) in ids.iter().zip(&contents) {
        assert_eq!(&read(&store, id), content);
    }
    drop(store);
    // Opening to read needs no free space.
    disk.set_space_limit(Some(disk.used_bytes()));
    let store = Store::open_backend(disk.root(), options.clone()).unwrap();
    assert_eq!(read(&store, &ids[0]), contents[0]);
    // The open's checkpoint of the catalog found no room: the tables went
    // to memory and their file away (the next open rebuilds), and the
    // store still takes deletes.
    let catalog = disk.root().open(CATALOG_DB_NAME, OpenMode::Read);
    assert!(
        catalog
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
        "{:?}",
        catalog.map(|_| ())
    );
    assert!(!store.is_read_only());
    for id in &ids[1..] {
        store
            .delete(id)
            .unwrap_or_else(|e| panic!("delete on a full disk: {e}"));
    }
    let used_before = disk.used_bytes();
    let report = store.gc().unwrap();
    assert!(report.bytes_punched > 2_000_000, "{report:?}");
    // Punched, less the space reserve GC made again.
    assert!(
        disk.used_bytes() + 1_000_000 < used_before,
        "{} then {}",
        used_before,
        disk.used_bytes()
    );
    assert_eq!(read(&store, &ids[0]), contents[0]);
    let id = try_put(&store, &big).expect("after delete and gc, puts succeed again");
    drop(store);
    // The punched segment reopens clean (holes are not damage), at any cut.
    for _ in 0..8 {
        let image = disk.crash();
        let store = Store::open_backend(image.root(), options.clone()).unwrap();
        let damage: Vec<_> = store.recovery_report().damage().cloned().collect();
        assert!(damage.is_empty(), "{damage:?}");
        assert_eq!(read(&store, &ids[0]), contents[0]);
        assert_eq!(read(&store, &id), big);
        store
            .verify_all()
            .damaged
            .is_empty()
            .then_some(())
            .expect("verifies");
    }
}

/// Bit rot is not a torn write: a bit flipped in the newest `meta.log`
/// record, which was acknowledged (and checkpointed by a clean close), must
/// be reported as damage, not cut off silently as the torn tail of a crash.
/// The same flip in an unsynced record a crash tore is crash residue.
#[test]
fn bit_rot_in_the_newest_record_is_damage_and_a_torn_tail_is_not() {
    let disk = SimDisk::new(5);
    let options = StoreOptions::default();
    let (first, newest) = {
        let store = Store::open_backend(disk.root(), options.clone()).unwrap();
        (put_one(&store, b"first"), put_one(&store, b"newest"))
    };
    // The log ends: ... commit(newest), checkpoint (13 bytes). Flip a bit
    // in the last byte of the newest commit's payload.
    let log = disk.read("meta.log").unwrap();
    let at = log.len() as u64 - 13 - 1;
    disk.flip_bit("meta.log", at, 3);
    let store = Store::open_backend(disk.root(), options.clone()).unwrap();
    let report = store.recovery_report();
    assert!(
        report.damage().any(|p| p.kind == ProblemKind::Damaged),
        "{report:?}"
    );
    assert!(store.exists(&first).unwrap());
    assert!(!store.exists(&newest).unwrap());
    drop(store);

    // Torn: an unsynced record (under Durability::None nothing is synced)
    // cut short by a crash is residue.
    let disk = SimDisk::new(6);
    let none = StoreOptions {
        durability: Durability::None,
        ..StoreOptions::default()
    };
    {
        let store = Store::open_backend(disk.root(), options.clone()).unwrap();
        put_one(&store, b"synced");
    }
    {
        let store = Store::open_backend(disk.root(), none.clone()).unwrap();
        put_one(&store, b"never synced");
    }
    let log = disk.read("meta.log").unwrap();
    disk.truncate_to("meta.log", log.len() as u64 - 5);
    let store = Store::open_backend(disk.root(), options).unwrap();
    let report = store.recovery_report();
    assert_eq!(report.damage().count(), 0, "{report:?}");
    assert!(report
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::TornTail));
    assert_eq!(store.ids().count(), 1);
}

/// A read error is a typed error naming the chunk, segment and offset (and,
/// from `verify`, the artifact): never a panic, never other bytes. Method:
/// the disk fails the next read; then reads work again and return the
/// right bytes.
#[test]
fn a_read_error_is_typed_and_names_what_failed() {
    let disk = SimDisk::new(3);
    let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
    let id = put_one(&store, b"read me back");
    let chunk = store.manifest(&id, 0, 1).unwrap()[0];
    disk.fail_op(FaultOp::Read, 0, Fault::Eio);
    match store.read_chunk(&chunk.digest) {
        Err(StoreError::Io { context, .. }) => {
            assert!(context.contains(&chunk.digest.to_string()), "{context}");
            assert!(context.contains(".seg"), "{context}");
        }
        other => panic!("{other:?}"),
    }
    disk.fail_op(FaultOp::Read, 0, Fault::Eio);
    let error = store.verify(&id).unwrap_err();
    assert!(error.to_string().contains(&id.to_string()), "{error}");
    assert_eq!(read(&store, &id), b"read me back");
}

/// An open and close that change nothing write nothing of the store's own:
/// the space reserve is not rewritten, no checkpoint is repeated. (Every
/// `tblob ls` used to rewrite the 512 KiB reserve.) The catalog database
/// is the exception, by redb's design: it marks its file in use at open
/// and saves its allocator state at a clean close, a few pages whatever
/// the store holds. Method: the disk's writes per file across a second
/// open and clean close of a store, small and large.
#[test]
fn an_open_that_changes_nothing_writes_nothing() {
    let disk = SimDisk::new(21);
    let mut catalog_writes = Vec::new();
    for artifacts in [1, 300] {
        {
            let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
            for i in 0..artifacts {
                put_one(&store, format!("artifact {i} of {artifacts}").as_bytes());
            }
        }
        let before = disk.stats().write_bytes_per_file;
        {
            let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
            assert!(store.ids().count() >= artifacts);
        }
        let mut after = disk.stats().write_bytes_per_file;
        let catalog = |files: &std::collections::BTreeMap<String, u64>| {
            files.get(CATALOG_DB_NAME).copied().unwrap_or(0)
        };
        catalog_writes.push(catalog(&after) - catalog(&before));
        after.insert(CATALOG_DB_NAME.into(), catalog(&before));
        assert_eq!(after, before, "{artifacts} artifacts");
    }
    assert!(
        catalog_writes.iter().all(|&bytes| bytes <= 64 << 10),
        "{catalog_writes:?}"
    );
}

/// The active segment is checkpointed every 64 MiB, not only on a clean
/// close, so an open after a crash scans at most that much of it. Method:
/// 66 MiB in 1 MiB chunks, a power cut that keeps every write but no clean
/// close; the crash image holds the active segment's hint.
#[test]
fn the_active_segment_is_checkpointed_while_it_grows() {
    let disk = SimDisk::new(22);
    let store = Store::open_backend(disk.root(), StoreOptions::default()).unwrap();
    let mut rng = fastrand::Rng::with_seed(22);
    for _ in 0..66 {
        let chunk: Vec<u8> = (0..1 << 20).map(|_| rng.u8(..)).collect();
        put_one(&store, &chunk);
    }
    let image = disk.crash_keep_all();
    drop(store);
    assert!(
        image.read("segments/0000000000000001.hint").is_some(),
        "{:?}",
        image.paths()
    );
    let store = Store::open_backend(image.root(), StoreOptions::default()).unwrap();
    assert_eq!(store.ids().count(), 66);
    assert!(store.verify_all().damaged.is_empty());
}

/// Writeback of the active segment is started while an upload grows it
/// (every 8 MiB, so a commit's fdatasync waits only for the tail), and it
/// is a hint, never a durability step: the simulated disk, the judge of
/// what a power cut may leave, makes none of those bytes durable until the
/// commit syncs them. Method: 20 chunks of 1 MiB into a durable store,
/// the trace and the durable image of the segment looked at before and
/// after the commit, then a power cut and a read back.
#[test]
fn writeback_starts_during_a_put_and_makes_nothing_durable() {
    let disk = SimDisk::new(41);
    let options = StoreOptions {
        compression: tensor_blob_host::store::Compression::Off,
        ..StoreOptions::default()
    };
    let store = Store::open_backend(disk.root(), options.clone()).unwrap();
    let segment = "segments/0000000000000001.seg";
    let mut upload = store.begin_upload();
    let mut chunks = Vec::new();
    let mut content = Vec::new();
    for i in 0..20u64 {
        let mut chunk = vec![0u8; 1 << 20];
        fastrand::Rng::with_seed(i).fill(&mut chunk);
        let digest = Hash::of(&chunk);
        upload.put_chunk(&digest, &chunk).unwrap();
        chunks.push(ChunkRef {
            digest,
            len: 1 << 20,
        });
        content.extend_from_slice(&chunk);
    }
    let writebacks: Vec<String> = disk
        .trace()
        .into_iter()
        .filter(|op| op.starts_with("writeback") && op.contains(segment))
        .collect();
    assert_eq!(
        writebacks.len(),
        2,
        "one per 8 MiB appended: {writebacks:?}"
    );
    let durable = disk.durable(segment).map_or(0, |bytes| bytes.len());
    assert!(
        durable < 1 << 20,
        "the writeback hints made {durable} bytes durable"
    );
    let id = upload
        .commit(&chunks, 20 << 20, None, NewMetadata::default())
        .unwrap();
    assert!(disk.durable(segment).unwrap().len() > 20 << 20);
    drop(store);
    let disk = disk.crash();
    let store = Store::open_backend(disk.root(), options).unwrap();
    assert_eq!(read(&store, &id), content);
}
