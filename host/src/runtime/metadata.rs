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
    Ok(store.exists(&convert::artifact_id(id)?)?)
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
    let ids = store.find_by_tag(tag, LIST_IDS_MAX)?;
    Ok(ids.iter().map(|id| id.to_string()).collect())
}

/// `blobs.stats`.
pub fn stats(store: &Store) -> StoreStats {
    convert::wit_stats(store.stats())
}

/// `blobs.query`: its size bounded (`check::query`) before it is
/// converted, its values by the store.
pub fn query(store: &Store, query: Query) -> Result<QueryPage, BlobError> {
    check::query(&query)?;
    let query = convert::query(query)?;
    Ok(convert::wit_query_page(store.query(&query)?))
}

#[cfg(test)]
mod tests {
    //! Goal: every bound the WIT documents for the host-answered calls is
    //! the host's own (they no longer pass a chunker whose checks, or
    //! memory, once stood in front of the store). Method: call each with
    //! inputs just past a limit and check for `invalid-argument`, and with
    //! well-formed inputs about artifacts this store does not have.
    use super::*;
    use crate::runtime::bindings::{Condition, KeyValue, WitError};
    use crate::store::{Durability, StoreOptions};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let options = StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        };
        let store = Store::open(root, options).unwrap();
        (dir, store)
    }

    fn invalid<T: std::fmt::Debug>(what: &str, result: Result<T, BlobError>) {
        match result {
            Err(BlobError::Blob(WitError::InvalidArgument(m))) => assert!(m.len() < 200, "{m}"),
            other => panic!("{what}: expected invalid-argument, got {other:?}"),
        }
    }

    fn query_of(conditions: Vec<Condition>) -> Query {
        Query {
            conditions,
            newest_first: false,
            after: None,
            limit: 10,
        }
    }

    #[test]
    fn a_query_past_any_bound_is_invalid_argument_and_unknown_ids_match_nothing() {
        let (_dir, store) = store();
        let long = |n: usize| "x".repeat(n);
        let bad = vec![
            ("33 conditions", vec![Condition::Tag("t".into()); 33]),
            ("empty tag", vec![Condition::Tag(String::new())]),
            ("long tag", vec![Condition::Tag(long(257))]),
            ("long external", vec![Condition::LinksToExternal(long(257))]),
            ("long creator", vec![Condition::Creator(long(4097))]),
            (
                "long prefix",
                vec![Condition::FilenamePrefix(long(1 << 20))],
            ),
            ("bad id", vec![Condition::LinksTo("../etc".into())]),
            ("bad id", vec![Condition::LinkedFrom(long(1 << 20))]),
            (
                "long value",
                vec![Condition::Custom(KeyValue {
                    key: "k".into(),
                    value: long(4097),
                })],
            ),
        ];
        for (what, conditions) in bad {
            invalid(what, query(&store, query_of(conditions)));
        }
        let mut over = query_of(Vec::new());
        over.limit = 65_537;
        invalid("limit", query(&store, over));
        let mut after = query_of(Vec::new());
        after.after = Some("0123456789abcdef0123456789abcdef".into());
        match query(&store, after) {
            Err(BlobError::Blob(WitError::NotFound(_))) => {}
            other => panic!("after an unknown id: {other:?}"),
        }
        // At the limits: accepted, and an id this store does not have
        // (another tenant's, say) matches nothing.
        let unknown = "0123456789abcdef0123456789abcdef".to_string();
        let mut at = query_of(vec![Condition::LinksTo(unknown.clone()); 32]);
        at.limit = 65_536;
        let page = query(&store, at).unwrap();
        assert!(page.ids.is_empty() && page.next.is_none());
        let page = query(&store, query_of(vec![Condition::LinkedFrom(unknown)])).unwrap();
        assert!(page.ids.is_empty());
    }

    #[test]
    fn list_find_and_update_bounds_are_the_hosts() {
        let (_dir, store) = store();
        invalid("list", list(&store, None, 65_537));
        invalid("list", list(&store, Some("nope"), 10));
        assert!(list(&store, None, 65_536).unwrap().is_empty());
        invalid("find", find_by_tag(&store, ""));
        invalid("find", find_by_tag(&store, &"t".repeat(257)));
        invalid("stat", stat(&store, "../../etc/passwd"));
        invalid("exists", exists(&store, &"0".repeat(1 << 20)));
        invalid("delete", delete(&store, "g".repeat(32).as_str()));
        let id = "0".repeat(32);
        let over = [
            MetadataUpdate {
                add_tags: vec!["t".into(); 257],
                ..MetadataUpdate::default()
            },
            MetadataUpdate {
                remove_tags: vec![String::new()],
                ..MetadataUpdate::default()
            },
            MetadataUpdate {
                add_links: vec!["0".repeat(31)],
                ..MetadataUpdate::default()
            },
            MetadataUpdate {
                add_external_links: vec!["e".repeat(257)],
                ..MetadataUpdate::default()
            },
            MetadataUpdate {
                unset_custom: vec!["k".into(); 257],
                ..MetadataUpdate::default()
            },
            MetadataUpdate {
                set_custom: vec![KeyValue {
                    key: String::new(),
                    value: "v".into(),
                }],
                ..MetadataUpdate::default()
            },
        ];
        for change in over {
            invalid("update", update(&store, &id, change));
        }
        match update(&store, &id, MetadataUpdate::default()) {
            Err(BlobError::Blob(WitError::NotFound(_))) => {}
            other => panic!("update of an unknown id: {other:?}"),
        }
    }
}
