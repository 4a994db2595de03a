//! The metadata half of `tensor:blob/blobs`, answered by the host from the
//! tenant's [`Store`]: `delete`, `exists`, `stat`, `update`, `list`,
//! `find-by-tag`, `stats` and `query`.
//!
//! The chunker adds nothing to these calls, so they never cross it (they
//! used to travel plugin -> host -> chunker -> host). Each takes the
//! plugin's WIT values, bounds them (`runtime::check`), parses them
//! (`runtime::convert`) and asks the store; the answers are the WIT
//! errors and bounds the interface documents. The tenant is the store the
//! caller holds: nothing here takes a tenant name.

use super::bindings::{Metadata, MetadataUpdate, Query, QueryPage, StoreStats};
use super::check;
use super::convert;
use super::error::BlobError;
use super::limits::LIST_IDS_MAX;
use crate::store::Store;

/// `blobs.delete`.
pub fn delete(store: &Store, id: &str) -> Result<(), BlobError> {
    Ok(store.delete(&convert::artifact_id(id)?)?)
}

/// `blobs.exists`: a malformed id is `invalid-argument`.
pub fn exists(store: &Store, id: &str) -> Result<bool, BlobError> {
    Ok(store.exists(&convert::artifact_id(id)?))
}

/// `blobs.stat`.
pub fn stat(store: &Store, id: &str) -> Result<Metadata, BlobError> {
    Ok(convert::wit_metadata(
        store.metadata(&convert::artifact_id(id)?)?,
    ))
}

/// `blobs.update`: every list bounded before the store sees it.
pub fn update(store: &Store, id: &str, change: MetadataUpdate) -> Result<Metadata, BlobError> {
    let id = convert::artifact_id(id)?;
    check::metadata_update(&change)?;
    let change = convert::metadata_update(change)?;
    Ok(convert::wit_metadata(store.update(&id, change)?))
}

/// `blobs.list`: a `limit` over [`LIST_IDS_MAX`] is `invalid-argument`, an
/// `after` this tenant never committed `not-found`.
pub fn list(store: &Store, after: Option<&str>, limit: u32) -> Result<Vec<String>, BlobError> {
    let after = after.map(convert::artifact_id).transpose()?;
    check::list_limit(limit)?;
    let ids = store.list(after.as_ref(), limit as usize)?;
    Ok(ids.iter().map(|id| id.to_string()).collect())
}

/// `blobs.find-by-tag`: the oldest [`LIST_IDS_MAX`] carrying `tag`.
pub fn find_by_tag(store: &Store, tag: &str) -> Result<Vec<String>, BlobError> {
    check::tag_query(tag)?;
    let mut ids = store.find_by_tag(tag);
    ids.truncate(LIST_IDS_MAX);
    Ok(ids.iter().map(|id| id.to_string()).collect())
}

/// `blobs.stats`.
pub fn stats(store: &Store) -> StoreStats {
    convert::wit_stats(store.stats())
}

/// `blobs.query`: bounded (`check::query`) before anything is converted.
pub fn query(store: &Store, query: Query) -> Result<QueryPage, BlobError> {
    check::query(&query)?;
    let query = convert::query(query)?;
    Ok(convert::wit_query_page(store.query(&query)?))
}
