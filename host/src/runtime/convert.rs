//! Conversions between WIT records and the store's Rust types. Everything a
//! guest sends is parsed here into validated store types (ids, digests);
//! the store itself enforces the documented length limits.

use super::bindings::{
    ChunkRef, Condition, KeyValue, Metadata, MetadataUpdate, PutOptions, Query, QueryPage,
    StoreStats, TimeRange,
};
use crate::error::StoreError;
use crate::store;

pub fn hash(bytes: &[u8]) -> Result<store::Hash, StoreError> {
    store::Hash::from_slice(bytes)
}

/// Length first, so a long string never ends up whole in an error message.
pub fn artifact_id(text: &str) -> Result<store::ArtifactId, StoreError> {
    if text.len() != super::limits::ARTIFACT_ID_CHARS {
        return Err(StoreError::InvalidArgument(format!(
            "artifact id of {} bytes ({:?}...), expected {} hex digits",
            text.len(),
            super::check::excerpt(text),
            super::limits::ARTIFACT_ID_CHARS
        )));
    }
    text.parse()
}

fn key_values(pairs: Vec<KeyValue>) -> Vec<(String, String)> {
    pairs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn ids(texts: Vec<String>) -> Result<Vec<store::ArtifactId>, StoreError> {
    texts.iter().map(|t| artifact_id(t)).collect()
}

pub fn new_metadata(options: PutOptions) -> Result<store::NewMetadata, StoreError> {
    Ok(store::NewMetadata {
        filename: options.filename,
        content_type: options.content_type,
        creator: options.creator,
        tags: options.tags,
        links: ids(options.links)?,
        external_links: options.external_links,
        custom: key_values(options.custom),
    })
}

pub fn metadata_update(change: MetadataUpdate) -> Result<store::MetadataUpdate, StoreError> {
    Ok(store::MetadataUpdate {
        filename: change.filename,
        content_type: change.content_type,
        tags: change.tags,
        links: change.links.map(ids).transpose()?,
        external_links: change.external_links,
        custom: change.custom.map(key_values),
        remove_tags: change.remove_tags,
        add_tags: change.add_tags,
        remove_links: ids(change.remove_links)?,
        add_links: ids(change.add_links)?,
        remove_external_links: change.remove_external_links,
        add_external_links: change.add_external_links,
        unset_custom: change.unset_custom,
        set_custom: key_values(change.set_custom),
    })
}

fn time_range(range: TimeRange) -> store::TimeRange {
    store::TimeRange {
        from_ms: range.from_ms,
        to_ms: range.to_ms,
    }
}

fn condition(condition: Condition) -> Result<store::Condition, StoreError> {
    Ok(match condition {
        Condition::Tag(tag) => store::Condition::Tag(tag),
        Condition::LinksTo(id) => store::Condition::LinksTo(artifact_id(&id)?),
        Condition::LinkedFrom(id) => store::Condition::LinkedFrom(artifact_id(&id)?),
        Condition::LinksToExternal(entity) => store::Condition::LinksToExternal(entity),
        Condition::ContentType(value) => store::Condition::ContentType(value),
        Condition::Creator(value) => store::Condition::Creator(value),
        Condition::Filename(value) => store::Condition::Filename(value),
        Condition::FilenamePrefix(prefix) => store::Condition::FilenamePrefix(prefix),
        Condition::Created(range) => store::Condition::Created(time_range(range)),
        Condition::Modified(range) => store::Condition::Modified(time_range(range)),
        Condition::CustomKey(key) => store::Condition::CustomKey(key),
        Condition::Custom(pair) => store::Condition::Custom(pair.key, pair.value),
    })
}

/// A WIT `query` as the store's (malformed ids are `invalid-argument`);
/// `Store::query` checks its bounds.
pub fn query(query: Query) -> Result<store::Query, StoreError> {
    Ok(store::Query {
        conditions: query
            .conditions
            .into_iter()
            .map(condition)
            .collect::<Result<_, _>>()?,
        order: if query.newest_first {
            store::Order::NewestFirst
        } else {
            store::Order::OldestFirst
        },
        after: query.after.as_deref().map(artifact_id).transpose()?,
        limit: query.limit as usize,
    })
}

pub fn wit_query_page(page: store::QueryPage) -> QueryPage {
    QueryPage {
        ids: page.ids.iter().map(|id| id.to_string()).collect(),
        next: page.next.map(|id| id.to_string()),
    }
}

pub fn chunk_refs(chunks: Vec<ChunkRef>) -> Result<Vec<store::ChunkRef>, StoreError> {
    chunks
        .into_iter()
        .map(|c| {
            Ok(store::ChunkRef {
                digest: hash(&c.digest)?,
                len: c.len,
            })
        })
        .collect()
}

pub fn wit_chunk_ref(chunk: &store::ChunkRef) -> ChunkRef {
    ChunkRef {
        digest: chunk.digest.as_bytes().to_vec(),
        len: chunk.len,
    }
}

pub fn wit_metadata(meta: store::Metadata) -> Metadata {
    Metadata {
        id: meta.id.to_string(),
        filename: meta.filename,
        content_type: meta.content_type,
        creator: meta.creator,
        size: meta.size,
        digest: meta.digest.as_bytes().to_vec(),
        chunk_count: meta.chunk_count,
        created_ms: meta.created_ms,
        modified_ms: meta.modified_ms,
        tags: meta.tags,
        links: meta.links.iter().map(|id| id.to_string()).collect(),
        external_links: meta.external_links,
        custom: meta
            .custom
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
    }
}

pub fn wit_stats(stats: store::Stats) -> StoreStats {
    StoreStats {
        artifacts: stats.artifacts,
        chunks: stats.chunks,
        logical_bytes: stats.logical_bytes,
        physical_bytes: stats.physical_bytes,
        stored_bytes: stats.stored_bytes,
        disk_bytes: stats.disk_bytes,
        live_bytes: stats.live_bytes,
        dead_bytes: stats.dead_bytes,
        garbage_bytes: stats.garbage_bytes,
        segments: stats.segments,
    }
}
