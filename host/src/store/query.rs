//! Metadata queries ([`Store::query`]).
//!
//! This first version scans the live artifacts in commit order and tests
//! each against every condition: correct, and the reference the indexed
//! version is checked against, but linear in the number of artifacts.

use std::ops::Bound;

use super::format::{
    CUSTOM_KEY_BYTES_MAX, CUSTOM_VALUE_BYTES_MAX, EXTERNAL_LINK_BYTES_MAX, QUERY_CONDITIONS_MAX,
    QUERY_PAGE_MAX, STRING_BYTES_MAX, TAG_BYTES_MAX,
};
use super::meta::Catalog;
use super::types::{Condition, Metadata, Order, Query, QueryPage};
use super::{invalid, lock, not_found, Store, StoreError};

/// Checks a query's limits: `InvalidArgument` names the first one broken.
pub fn check_query(query: &Query) -> Result<(), StoreError> {
    if query.limit > QUERY_PAGE_MAX {
        return Err(invalid(format!(
            "query limit {} over {QUERY_PAGE_MAX}",
            query.limit
        )));
    }
    if query.conditions.len() > QUERY_CONDITIONS_MAX {
        return Err(invalid(format!(
            "{} query conditions, at most {QUERY_CONDITIONS_MAX}",
            query.conditions.len()
        )));
    }
    for condition in &query.conditions {
        let (what, value, max) = match condition {
            Condition::Tag(tag) => ("tag", tag, TAG_BYTES_MAX),
            Condition::LinksToExternal(entity) => {
                ("external link", entity, EXTERNAL_LINK_BYTES_MAX)
            }
            Condition::ContentType(value) => ("content type", value, STRING_BYTES_MAX),
            Condition::Creator(value) => ("creator", value, STRING_BYTES_MAX),
            Condition::Filename(value) => ("filename", value, STRING_BYTES_MAX),
            Condition::FilenamePrefix(value) => {
                if value.len() > STRING_BYTES_MAX {
                    return Err(invalid(format!(
                        "filename prefix of {} bytes, at most {STRING_BYTES_MAX}",
                        value.len()
                    )));
                }
                continue;
            }
            Condition::CustomKey(key) => ("custom key", key, CUSTOM_KEY_BYTES_MAX),
            Condition::Custom(key, value) => {
                if value.len() > CUSTOM_VALUE_BYTES_MAX {
                    return Err(invalid(format!(
                        "custom value of {} bytes, at most {CUSTOM_VALUE_BYTES_MAX}",
                        value.len()
                    )));
                }
                ("custom key", key, CUSTOM_KEY_BYTES_MAX)
            }
            Condition::LinksTo(_)
            | Condition::LinkedFrom(_)
            | Condition::Created(_)
            | Condition::Modified(_) => continue,
        };
        if value.is_empty() || value.len() > max {
            return Err(invalid(format!(
                "{what} of {} bytes in a query, must be 1..={max}",
                value.len()
            )));
        }
    }
    Ok(())
}

/// Whether `meta` meets `condition`.
fn meets(catalog: &Catalog, meta: &Metadata, condition: &Condition) -> bool {
    match condition {
        Condition::Tag(tag) => meta.tags.contains(tag),
        Condition::LinksTo(target) => meta.links.contains(target),
        Condition::LinkedFrom(source) => catalog
            .artifacts
            .get(source)
            .is_some_and(|source| source.meta.links.contains(&meta.id)),
        Condition::LinksToExternal(entity) => meta.external_links.contains(entity),
        Condition::ContentType(value) => meta.content_type.as_ref() == Some(value),
        Condition::Creator(value) => meta.creator.as_ref() == Some(value),
        Condition::Filename(value) => meta.filename.as_ref() == Some(value),
        Condition::FilenamePrefix(prefix) => meta
            .filename
            .as_ref()
            .is_some_and(|name| name.as_bytes().starts_with(prefix.as_bytes())),
        Condition::Created(range) => (range.from_ms..range.to_ms).contains(&meta.created_ms),
        Condition::Modified(range) => (range.from_ms..range.to_ms).contains(&meta.modified_ms),
        Condition::CustomKey(key) => meta.custom.iter().any(|(k, _)| k == key),
        Condition::Custom(key, value) => meta.custom.iter().any(|(k, v)| k == key && v == value),
    }
}

impl Store {
    /// The artifacts matching every condition of `query`, a page at a
    /// time, in commit order (or newest first). Paging is stable: pages
    /// continue after the previous page's last id, so an artifact committed
    /// meanwhile appears only after everything already returned (oldest
    /// first) or not at all (newest first), and no live artifact is
    /// skipped or repeated. Errors: `InvalidArgument` for a limit or
    /// condition over its bound, `NotFound` for an `after` never committed.
    pub fn query(&self, query: &Query) -> Result<QueryPage, StoreError> {
        check_query(query)?;
        let state = lock(&self.inner.state);
        let catalog = &state.catalog;
        let after = match &query.after {
            None => None,
            Some(after) => match catalog.seq_of.get(after) {
                Some(&seq) => Some(seq),
                None => return Err(not_found(after)),
            },
        };
        let range = match (query.order, after) {
            (_, None) => (Bound::Unbounded, Bound::Unbounded),
            (Order::OldestFirst, Some(seq)) => (Bound::Excluded(seq), Bound::Unbounded),
            (Order::NewestFirst, Some(seq)) => (Bound::Unbounded, Bound::Excluded(seq)),
        };
        let candidates = catalog.order.range(range).map(|(_, id)| id);
        let candidates: Box<dyn Iterator<Item = &_>> = match query.order {
            Order::OldestFirst => Box::new(candidates),
            Order::NewestFirst => Box::new(candidates.rev()),
        };
        let mut ids = Vec::new();
        let mut more = false;
        for id in candidates {
            let meta = &catalog.artifacts[id].meta;
            if query.conditions.iter().all(|c| meets(catalog, meta, c)) {
                if ids.len() == query.limit {
                    more = true;
                    break;
                }
                ids.push(*id);
            }
        }
        let next = match (more, ids.last()) {
            (false, _) => None,
            (true, Some(last)) => Some(*last),
            // limit 0: nothing returned, so continue where this began.
            (true, None) => query.after,
        };
        Ok(QueryPage { ids, next })
    }
}
