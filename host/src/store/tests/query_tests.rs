//! Tests of [`Store::query`]: conditions, order and paging.

use super::{data, open, put_with};
use crate::store::*;

fn meta(tags: &[&str], filename: &str) -> NewMetadata {
    NewMetadata {
        filename: Some(filename.into()),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..NewMetadata::default()
    }
}

#[test]
fn conditions_combine_with_and_and_pages_follow_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let a = put_with(
        &store,
        &data(100, 1),
        64,
        meta(&["run:42", "ckpt"], "a.bin"),
    )
    .unwrap();
    let b = put_with(&store, &data(100, 2), 64, meta(&["run:42"], "b.bin")).unwrap();
    let c = put_with(
        &store,
        &data(100, 3),
        64,
        meta(&["run:4", "ckpt"], "ab.bin"),
    )
    .unwrap();
    let run = |conditions: Vec<Condition>, order, after, limit| {
        store
            .query(&Query {
                conditions,
                order,
                after,
                limit,
            })
            .unwrap()
    };
    let tag = |t: &str| Condition::Tag(t.into());
    assert_eq!(
        run(vec![tag("run:42")], Order::OldestFirst, None, 10).ids,
        [a, b]
    );
    assert_eq!(
        run(vec![tag("run:4")], Order::OldestFirst, None, 10).ids,
        [c]
    );
    assert_eq!(
        run(
            vec![tag("ckpt"), tag("run:42")],
            Order::OldestFirst,
            None,
            10
        )
        .ids,
        [a]
    );
    let prefix = Condition::FilenamePrefix("a".into());
    assert_eq!(run(vec![prefix], Order::NewestFirst, None, 10).ids, [c, a]);
    let first = run(vec![], Order::NewestFirst, None, 2);
    assert_eq!((first.ids.as_slice(), first.next), (&[c, b][..], Some(b)));
    let rest = run(vec![], Order::NewestFirst, first.next, 2);
    assert_eq!((rest.ids.as_slice(), rest.next), (&[a][..], None));
    let unknown = ArtifactId::generate();
    let error = store
        .query(&Query {
            after: Some(unknown),
            limit: 1,
            ..Query::default()
        })
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound(_)), "{error}");
    let error = store
        .query(&Query {
            conditions: vec![tag("")],
            limit: 1,
            ..Query::default()
        })
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidArgument(_)), "{error}");
}

#[test]
fn incremental_updates_add_and_remove_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let parent = put_with(&store, &data(100, 1), 64, meta(&[], "p")).unwrap();
    let id = put_with(&store, &data(100, 2), 64, meta(&["a", "b"], "c")).unwrap();
    let updated = store
        .update(
            &id,
            MetadataUpdate {
                remove_tags: vec!["a".into(), "absent".into()],
                add_tags: vec!["b".into(), "c".into(), "c".into()],
                add_links: vec![parent, parent],
                set_custom: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(updated.tags, ["b", "c"]);
    assert_eq!(updated.links, [parent]);
    assert_eq!(updated.custom, [("k".to_string(), "2".to_string())]);
    let missing = ArtifactId::generate();
    let error = store
        .update(
            &id,
            MetadataUpdate {
                add_links: vec![missing],
                ..MetadataUpdate::default()
            },
        )
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidArgument(_)), "{error}");
    let updated = store
        .update(
            &id,
            MetadataUpdate {
                remove_links: vec![parent],
                unset_custom: vec!["k".into()],
                ..MetadataUpdate::default()
            },
        )
        .unwrap();
    assert!(updated.links.is_empty() && updated.custom.is_empty());
}
