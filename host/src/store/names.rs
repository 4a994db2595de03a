//! The durable name index: `wasi:blobstore` containers and the object
//! names bound to artifacts inside them, per tenant.
//!
//! It lives in `meta.log` beside the catalog: [`NameOp`] records (kind 5)
//! create, clear and delete containers, unbind and move names, and a bound
//! commit (kind 6) commits an artifact and binds it to a name in one
//! record. Replay rebuilds [`Names`] with the catalog; compaction writes
//! every container, then every live artifact's commit with its binding.
//!
//! Invariant: an artifact is bound by at most one name, and a name binds a
//! live artifact. So every op that drops a binding (replace, unbind, clear,
//! delete container, move over a name) deletes the artifact it held, and
//! deleting an artifact by id (`tensor:blob/blobs.delete`) drops its name.
//! A copy is a new artifact sharing the source's manifest, so no bytes
//! are copied and no artifact is shared by two names.
//!
//! Never touches segment files; never holds the state lock across I/O.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::db::DbError;
use super::format::{self, MetaRecord, NameOp, NAME_OPS_MAX};
use super::meta::{Artifact, Catalog};
use super::meta_db::MetaDb;
use super::types::{ArtifactId, Hash};
use super::{group, invalid, lock, now_ms, ApplyError, Store, StoreError};

/// One container: when it was made and its objects, by name (byte order).
#[derive(Clone, Debug, Default)]
pub struct Container {
    pub created_ms: u64,
    pub objects: BTreeMap<String, ArtifactId>,
}

/// Every container of a tenant and the reverse map of bindings.
#[derive(Default)]
pub struct Names {
    pub containers: BTreeMap<String, Container>,
    /// Artifact -> the (container, name) bound to it.
    pub bound: HashMap<ArtifactId, (String, String)>,
}

/// What `object-info` reports about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub container: String,
    pub name: String,
    pub id: ArtifactId,
    pub created_ms: u64,
    pub size: u64,
}

/// What `container.info` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    pub created_ms: u64,
    pub objects: u64,
}

impl Names {
    /// `NotFound` unless `container` exists.
    pub fn check_container(&self, container: &str) -> Result<(), StoreError> {
        if self.containers.contains_key(container) {
            Ok(())
        } else {
            Err(container_not_found(container))
        }
    }

    /// The artifact bound to `name` in `container`, if any.
    pub fn get(&self, container: &str, name: &str) -> Option<ArtifactId> {
        self.containers.get(container)?.objects.get(name).copied()
    }

    /// Drops the name bound to `id`, if any (the artifact was deleted by id).
    pub fn forget_artifact(&mut self, id: &ArtifactId) {
        if let Some((container, name)) = self.bound.remove(id) {
            if let Some(entry) = self.containers.get_mut(&container) {
                entry.objects.remove(&name);
            }
        }
    }
}

/// The live artifact a name binds. Always there (see the module doc); an
/// error rather than a panic all the same.
fn live(db: &MetaDb, id: &ArtifactId) -> Result<Artifact, StoreError> {
    db.live(id)?.ok_or_else(|| {
        StoreError::Corrupted(format!("a name binds artifact {id}, which is not live"))
    })
}

fn container_not_found(container: &str) -> StoreError {
    StoreError::NotFound(format!("container {container:?}"))
}

fn object_not_found(container: &str, name: &str) -> StoreError {
    StoreError::NotFound(format!("object {name:?} in container {container:?}"))
}

/// Deletes artifact `id` from the catalog and drops its chunk references
/// (and its name); a held one is retained (see [`MetaDb::remove`]).
pub(super) fn release(db: &mut MetaDb, id: &ArtifactId) -> Result<(), DbError> {
    db.remove(id)?;
    Ok(())
}

/// Releases every artifact of a container's objects, already taken out of
/// the container (`release` forgets each one's binding).
fn release_all(db: &mut MetaDb, objects: BTreeMap<String, ArtifactId>) -> Result<(), DbError> {
    for id in objects.values() {
        release(db, id)?;
    }
    Ok(())
}

/// Keeps an artifact readable (manifest, locate, metadata, chunks) while
/// it lives, even if the artifact is deleted meanwhile: what a
/// `wasi:blobstore` `incoming-value` holds. In memory only: a restart
/// ends every hold, and a deleted artifact's chunks are garbage then.
pub struct Hold {
    store: Store,
    id: ArtifactId,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut state = lock(&self.store.inner.state);
        let state = &mut *state;
        let db = &mut state.db;
        let last = match db.holds.get_mut(&self.id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if last {
            db.holds.remove(&self.id);
            if let Err(error) = db.release_retained(&self.id) {
                self.store.inner.db_failed(&error.into());
            }
        }
    }
}

/// Binds `name` in `container` (which must exist) to live artifact `id`,
/// releasing whatever artifact the name held.
pub(super) fn bind(
    db: &mut MetaDb,
    container: &str,
    name: &str,
    id: ArtifactId,
) -> Result<(), ApplyError> {
    let entry = db
        .names
        .containers
        .get_mut(container)
        .ok_or_else(|| format!("bind in container {container:?}, which does not exist"))?;
    let old = entry.objects.insert(name.to_owned(), id);
    if let Some(old) = old.filter(|old| *old != id) {
        db.names.bound.remove(&old);
        release(db, &old)?;
    }
    db.names
        .bound
        .insert(id, (container.to_owned(), name.to_owned()));
    Ok(())
}

/// Applies name ops in order; stops at the first that does not apply.
pub(super) fn apply_ops(db: &mut MetaDb, ops: Vec<NameOp>) -> Result<(), ApplyError> {
    for op in ops {
        apply_op(db, op)?;
    }
    Ok(())
}

fn apply_op(db: &mut MetaDb, op: NameOp) -> Result<(), ApplyError> {
    match op {
        NameOp::CreateContainer {
            container,
            created_ms,
        } => {
            if db.names.containers.contains_key(&container) {
                return Err(format!("container {container:?} created twice").into());
            }
            db.names.containers.insert(
                container,
                Container {
                    created_ms,
                    objects: BTreeMap::new(),
                },
            );
            Ok(())
        }
        NameOp::DeleteContainer { container } => {
            let entry = db
                .names
                .containers
                .remove(&container)
                .ok_or_else(|| format!("container {container:?} does not exist"))?;
            release_all(db, entry.objects)?;
            Ok(())
        }
        NameOp::ClearContainer { container } => {
            let entry = db
                .names
                .containers
                .get_mut(&container)
                .ok_or_else(|| format!("container {container:?} does not exist"))?;
            let objects = std::mem::take(&mut entry.objects);
            release_all(db, objects)?;
            Ok(())
        }
        NameOp::Unbind { container, name } => {
            let id = db.names.get(&container, &name).ok_or_else(|| {
                format!("unbind of {name:?} in {container:?}, which is not bound")
            })?;
            release(db, &id)?;
            Ok(())
        }
        NameOp::Move {
            from_container,
            from_name,
            to_container,
            to_name,
        } => {
            let id = db.names.get(&from_container, &from_name).ok_or_else(|| {
                format!("move of {from_name:?} in {from_container:?}, which is not bound")
            })?;
            if !db.names.containers.contains_key(&to_container) {
                return Err(
                    format!("move into container {to_container:?}, which does not exist").into(),
                );
            }
            if (from_container.as_str(), from_name.as_str())
                == (to_container.as_str(), to_name.as_str())
            {
                return Ok(());
            }
            db.names
                .containers
                .get_mut(&from_container)
                .expect("found above")
                .objects
                .remove(&from_name);
            db.names.bound.remove(&id);
            bind(db, &to_container, &to_name, id)
        }
    }
}

/// The records that rebuild the name index's containers at replay (the
/// bindings travel with their artifacts' commits). What a compaction
/// writes before the artifacts.
pub fn snapshot_records(names: &Names) -> Vec<MetaRecord> {
    let ops: Vec<NameOp> = names
        .containers
        .iter()
        .map(|(container, entry)| NameOp::CreateContainer {
            container: container.clone(),
            created_ms: entry.created_ms,
        })
        .collect();
    ops.chunks(NAME_OPS_MAX)
        .map(|ops| MetaRecord::Names { ops: ops.to_vec() })
        .collect()
}

fn check_container_name(name: &str) -> Result<(), StoreError> {
    format::check_container_name(name).map_err(invalid)
}

fn check_object_name(name: &str) -> Result<(), StoreError> {
    format::check_object_name(name).map_err(invalid)
}

/// Most names [`Store::list_objects`] returns per call.
pub const LIST_OBJECTS_PAGE_MAX: usize = 1024;
/// Most names one [`Store::delete_objects`] call takes (S3's limit).
pub const DELETE_OBJECTS_MAX: usize = 1000;
const _: () = assert!(DELETE_OBJECTS_MAX <= NAME_OPS_MAX);

impl Store {
    /// A [`Hold`] on live artifact `id`; `NotFound` if it is not live.
    pub fn hold(&self, id: &ArtifactId) -> Result<Hold, StoreError> {
        let mut state = lock(&self.inner.state);
        if !state.db.exists(id)? {
            return Err(StoreError::NotFound(format!("artifact {id}")));
        }
        *state.db.holds.entry(*id).or_insert(0) += 1;
        Ok(Hold {
            store: self.clone(),
            id: *id,
        })
    }

    /// Applies `ops` durably: validated by `check` under the log lock,
    /// appended as one record, then applied.
    fn name_ops(
        &self,
        check: impl FnOnce(&Names) -> Result<Vec<NameOp>, StoreError>,
    ) -> Result<(), StoreError> {
        let mut meta_log = lock(&self.inner.meta_log);
        self.check_writable()?;
        let ops = check(&lock(&self.inner.state).db.names)?;
        if ops.is_empty() {
            return Ok(());
        }
        let record = MetaRecord::Names { ops };
        // Ops that only release (unbind, clear, delete) always land, so a
        // tenant at its quota can make room; the rest count against it.
        let grows = matches!(
            &record,
            MetaRecord::Names { ops } if ops.iter().any(|op| matches!(
                op,
                NameOp::CreateContainer { .. } | NameOp::Move { .. }
            ))
        );
        if let (true, Some(max)) = (grows, self.inner.quota().bytes_max) {
            let record_bytes = format::meta_record_len(&record);
            let used = self.inner.cost_bytes(&lock(&self.inner.state));
            if used.saturating_add(record_bytes) > max {
                return Err(super::QuotaLimit::Bytes.exceeded(format_args!(
                    "name record of {record_bytes} bytes: {used} of {max} bytes in use"
                )));
            }
        }
        self.log_append(&mut meta_log, std::slice::from_ref(&record), 0)?;
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        let MetaRecord::Names { ops } = record else {
            unreachable!("made above")
        };
        self.inner.applied(apply_ops(&mut state.db, ops))?;
        Ok(())
    }

    /// Creates an empty container, durably. An existing name is
    /// `InvalidArgument` ("container ... already exists"), as S3 answers.
    pub fn create_container(&self, container: &str) -> Result<ContainerInfo, StoreError> {
        check_container_name(container)?;
        let created_ms = now_ms();
        self.name_ops(|names| {
            if names.containers.contains_key(container) {
                return Err(invalid(format!("container {container:?} already exists")));
            }
            Ok(vec![NameOp::CreateContainer {
                container: container.to_owned(),
                created_ms,
            }])
        })?;
        Ok(ContainerInfo {
            name: container.to_owned(),
            created_ms,
            objects: 0,
        })
    }

    /// A container's name, creation time and object count; `NotFound`.
    pub fn container_info(&self, container: &str) -> Result<ContainerInfo, StoreError> {
        check_container_name(container)?;
        let state = lock(&self.inner.state);
        let entry = state
            .db
            .names
            .containers
            .get(container)
            .ok_or_else(|| container_not_found(container))?;
        Ok(ContainerInfo {
            name: container.to_owned(),
            created_ms: entry.created_ms,
            objects: entry.objects.len() as u64,
        })
    }

    /// Whether `container` exists.
    pub fn container_exists(&self, container: &str) -> Result<bool, StoreError> {
        check_container_name(container)?;
        Ok(lock(&self.inner.state)
            .db
            .names
            .containers
            .contains_key(container))
    }

    /// Deletes a container and every object in it (their artifacts are
    /// deleted: chunks no one else shares become garbage); `NotFound`.
    pub fn delete_container(&self, container: &str) -> Result<(), StoreError> {
        check_container_name(container)?;
        self.name_ops(|names| {
            names.check_container(container)?;
            Ok(vec![NameOp::DeleteContainer {
                container: container.to_owned(),
            }])
        })
    }

    /// Deletes every object of a container, which stays; `NotFound`.
    pub fn clear_container(&self, container: &str) -> Result<(), StoreError> {
        check_container_name(container)?;
        self.name_ops(|names| {
            names.check_container(container)?;
            Ok(vec![NameOp::ClearContainer {
                container: container.to_owned(),
            }])
        })
    }

    /// The object `name` of `container`; `NotFound` for either missing.
    pub fn object_info(&self, container: &str, name: &str) -> Result<ObjectInfo, StoreError> {
        check_container_name(container)?;
        check_object_name(name)?;
        let state = lock(&self.inner.state);
        let names = &state.db.names;
        names.check_container(container)?;
        let id = names
            .get(container, name)
            .ok_or_else(|| object_not_found(container, name))?;
        let meta = live(&state.db, &id)?.meta;
        Ok(ObjectInfo {
            container: container.to_owned(),
            name: name.to_owned(),
            id,
            created_ms: meta.created_ms,
            size: meta.size,
        })
    }

    /// Whether `container` (which must exist) has object `name`.
    pub fn has_object(&self, container: &str, name: &str) -> Result<bool, StoreError> {
        check_container_name(container)?;
        check_object_name(name)?;
        let state = lock(&self.inner.state);
        let names = &state.db.names;
        names.check_container(container)?;
        Ok(names.get(container, name).is_some())
    }

    /// Up to `limit` (at most [`LIST_OBJECTS_PAGE_MAX`]) object names of
    /// `container` in byte order, after `after` (which need not exist).
    pub fn list_objects(
        &self,
        container: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        check_container_name(container)?;
        let state = lock(&self.inner.state);
        let entry = state
            .db
            .names
            .containers
            .get(container)
            .ok_or_else(|| container_not_found(container))?;
        let from = match after {
            None => Bound::Unbounded,
            Some(after) => Bound::Excluded(after),
        };
        Ok(entry
            .objects
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit.min(LIST_OBJECTS_PAGE_MAX))
            .map(|(name, _)| name.clone())
            .collect())
    }

    /// Deletes objects of `container` (which must exist) by name, in one
    /// record; names not bound are skipped (upstream: no error). At most
    /// [`DELETE_OBJECTS_MAX`] names.
    pub fn delete_objects(&self, container: &str, names: &[String]) -> Result<(), StoreError> {
        check_container_name(container)?;
        if names.len() > DELETE_OBJECTS_MAX {
            return Err(invalid(format!(
                "{} names, at most {DELETE_OBJECTS_MAX} per call",
                names.len()
            )));
        }
        for name in names {
            check_object_name(name)?;
        }
        self.name_ops(|index| {
            index.check_container(container)?;
            let mut seen = std::collections::HashSet::new();
            Ok(names
                .iter()
                .filter(|name| index.get(container, name).is_some() && seen.insert(*name))
                .map(|name| NameOp::Unbind {
                    container: container.to_owned(),
                    name: name.clone(),
                })
                .collect())
        })
    }

    /// Renames an object (to the same or another container, which must
    /// exist), replacing and deleting what the destination held. No bytes
    /// move. `NotFound` if the source is missing.
    pub fn move_object(&self, from: (&str, &str), to: (&str, &str)) -> Result<(), StoreError> {
        for (container, name) in [from, to] {
            check_container_name(container)?;
            check_object_name(name)?;
        }
        self.name_ops(|names| {
            names.check_container(from.0)?;
            names
                .get(from.0, from.1)
                .ok_or_else(|| object_not_found(from.0, from.1))?;
            names.check_container(to.0)?;
            if from == to {
                return Ok(Vec::new());
            }
            Ok(vec![NameOp::Move {
                from_container: from.0.to_owned(),
                from_name: from.1.to_owned(),
                to_container: to.0.to_owned(),
                to_name: to.1.to_owned(),
            }])
        })
    }

    /// Copies an object: a new artifact sharing the source's manifest (no
    /// chunk is read or written; references are counted), bound to the
    /// destination in its commit record, replacing what the destination
    /// held. The source's chunks are pinned until the commit, so a delete
    /// of the source meanwhile cannot let GC take them.
    pub fn copy_object(
        &self,
        from: (&str, &str),
        to: (&str, &str),
    ) -> Result<ArtifactId, StoreError> {
        for (container, name) in [from, to] {
            check_container_name(container)?;
            check_object_name(name)?;
        }
        self.check_writable()?;
        let (record, pins) = {
            let mut state = lock(&self.inner.state);
            let state = &mut *state;
            let names = &state.db.names;
            names.check_container(from.0)?;
            let id = names
                .get(from.0, from.1)
                .ok_or_else(|| object_not_found(from.0, from.1))?;
            names.check_container(to.0)?;
            if from == to {
                return Ok(id);
            }
            let artifact = live(&state.db, &id)?;
            let meta = &artifact.meta;
            let mut fields = Catalog::fields_of(meta);
            fields.links.clear();
            let chunks: Vec<([u8; 32], u32)> = artifact
                .manifest
                .chunks
                .iter()
                .map(|c| (*c.digest.as_bytes(), c.len))
                .collect();
            let record = MetaRecord::Commit {
                id: [0; 16],
                size: meta.size,
                digest: *meta.digest.as_bytes(),
                created_ms: now_ms(),
                chunks,
                creator: meta.creator.clone(),
                fields,
                bound: Some((to.0.to_owned(), to.1.to_owned())),
            };
            let mut pins = Pins {
                store: self,
                digests: Vec::new(),
            };
            for chunk in &artifact.manifest.chunks {
                if self.inner.db(state.db.pin(&chunk.digest))? {
                    pins.digests.push(chunk.digest);
                }
            }
            (record, pins)
        };
        let result = group::commit(self, record, Vec::new());
        drop(pins);
        result
    }
}

/// Pins taken by [`Store::copy_object`], released when dropped.
struct Pins<'a> {
    store: &'a Store,
    digests: Vec<Hash>,
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.store.inner.state);
        for digest in &self.digests {
            if let Err(error) = state.db.unpin(digest) {
                self.store.inner.db_failed(&error.into());
                return;
            }
        }
    }
}
