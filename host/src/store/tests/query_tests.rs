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
