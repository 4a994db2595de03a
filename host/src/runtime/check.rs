//! Bounds on what a plugin passes to the host, checked before anything is
//! copied into the chunker's memory or handed to the store.
//!
//! The chunker checks the same limits, and the store again at commit, but
//! an argument larger than the chunker's memory would trap the chunker
//! while it is being copied in, and the plugin would get a trap instead of
//! the typed error the WIT promises. So every length a plugin controls is
//! bounded here first, with the limits of [`super::limits`]; the metadata
//! calls the host answers itself (updates, queries) are bounded here too,
//! so no list a plugin sends is ever walked past its limit. Error messages
//! never echo more than a few bytes of what the caller sent.

use super::bindings::{KeyValue, MetadataUpdate, PutOptions, Query, WitError};
use super::error::BlobError;
use super::limits::{
    INLINE_BYTES_MAX, IO_BYTES_MAX, LIST_IDS_MAX, META_CUSTOM_KEY_BYTES_MAX, META_CUSTOM_PAIRS_MAX,
    META_CUSTOM_VALUE_BYTES_MAX, META_EXTERNAL_LINKS_MAX, META_EXTERNAL_LINK_BYTES_MAX,
    META_LINKS_MAX, META_STRING_BYTES_MAX, META_TAGS_MAX, META_TAG_BYTES_MAX, QUERY_CONDITIONS_MAX,
    QUERY_PAGE_MAX,
};

fn invalid(message: String) -> BlobError {
    BlobError::invalid(message)
}

/// At most 40 bytes of `text`, cut at a character boundary, for messages.
pub(crate) fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(40);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The data of an inline `put`: `too-large` over [`INLINE_BYTES_MAX`].
pub fn inline_data(len: usize) -> Result<(), BlobError> {
    if len as u64 > INLINE_BYTES_MAX {
        return Err(BlobError::Blob(WitError::TooLarge(format!(
            "put of {len} bytes exceeds inline-bytes-max ({INLINE_BYTES_MAX}); use a writer"
        ))));
    }
    Ok(())
}

/// One `write` or `read`: at most [`IO_BYTES_MAX`] bytes.
pub fn io_len(len: usize) -> Result<(), BlobError> {
    if len > IO_BYTES_MAX as usize {
        return Err(invalid(format!(
            "{len} bytes in one call, at most {IO_BYTES_MAX}"
        )));
    }
    Ok(())
}

/// An artifact id: [`ARTIFACT_ID_CHARS`](super::limits::ARTIFACT_ID_CHARS) hex digits.
pub fn artifact_id(id: &str) -> Result<(), BlobError> {
    super::convert::artifact_id(id)?;
    Ok(())
}

/// A `find-by-tag` query: no artifact carries an empty tag or one over
/// [`META_TAG_BYTES_MAX`] bytes, so such a query is refused (the WIT says
/// so) rather than answered with nothing.
pub fn tag_query(tag: &str) -> Result<(), BlobError> {
    if tag.is_empty() || tag.len() > META_TAG_BYTES_MAX {
        return Err(invalid(format!(
            "tag of {} bytes, must be 1..={META_TAG_BYTES_MAX}",
            tag.len()
        )));
    }
    Ok(())
}

/// The `limit` of a `list` (or `read-manifest`): at most `max` entries per
/// page. A larger one is `invalid-argument`, as the WIT header promises for
/// every length over its limit, not silently clamped.
pub fn page_limit(what: &str, limit: u32, max: usize) -> Result<(), BlobError> {
    if limit as usize > max {
        return Err(invalid(format!("{what} limit {limit}, at most {max}")));
    }
    Ok(())
}

/// The `limit` of `list`: at most [`LIST_IDS_MAX`].
pub fn list_limit(limit: u32) -> Result<(), BlobError> {
    page_limit("list", limit, LIST_IDS_MAX)
}

fn string(name: &str, value: Option<&str>) -> Result<(), BlobError> {
    match value {
        Some(value) if value.len() > META_STRING_BYTES_MAX => Err(invalid(format!(
            "{name} of {} bytes, at most {META_STRING_BYTES_MAX}",
            value.len()
        ))),
        _ => Ok(()),
    }
}

fn tags(tags: &[String]) -> Result<(), BlobError> {
    if tags.len() > META_TAGS_MAX {
        return Err(invalid(format!(
            "{} tags, at most {META_TAGS_MAX}",
            tags.len()
        )));
    }
    for tag in tags {
        if tag.is_empty() || tag.len() > META_TAG_BYTES_MAX {
            return Err(invalid(format!(
                "tag of {} bytes, must be 1..={META_TAG_BYTES_MAX}",
                tag.len()
            )));
        }
    }
    Ok(())
}

fn links(links: &[String]) -> Result<(), BlobError> {
    if links.len() > META_LINKS_MAX {
        return Err(invalid(format!(
            "{} links, at most {META_LINKS_MAX}",
            links.len()
        )));
    }
    links.iter().try_for_each(|link| artifact_id(link))
}

fn external_links(links: &[String]) -> Result<(), BlobError> {
    if links.len() > META_EXTERNAL_LINKS_MAX {
        return Err(invalid(format!(
            "{} external links, at most {META_EXTERNAL_LINKS_MAX}",
            links.len()
        )));
    }
    links.iter().try_for_each(|link| external_link(link))
}

fn external_link(link: &str) -> Result<(), BlobError> {
    if link.is_empty() || link.len() > META_EXTERNAL_LINK_BYTES_MAX {
        return Err(invalid(format!(
            "external link of {} bytes, must be 1..={META_EXTERNAL_LINK_BYTES_MAX}",
            link.len()
        )));
    }
    Ok(())
}

fn custom_key(key: &str) -> Result<(), BlobError> {
    if key.is_empty() || key.len() > META_CUSTOM_KEY_BYTES_MAX {
        return Err(invalid(format!(
            "custom key of {} bytes, must be 1..={META_CUSTOM_KEY_BYTES_MAX}",
            key.len()
        )));
    }
    Ok(())
}

fn custom_pair(pair: &KeyValue) -> Result<(), BlobError> {
    custom_key(&pair.key)?;
    if pair.value.len() > META_CUSTOM_VALUE_BYTES_MAX {
        return Err(invalid(format!(
            "custom value of {} bytes for key {:?}, at most {META_CUSTOM_VALUE_BYTES_MAX}",
            pair.value.len(),
            excerpt(&pair.key)
        )));
    }
    Ok(())
}

fn custom(pairs: &[KeyValue]) -> Result<(), BlobError> {
    if pairs.len() > META_CUSTOM_PAIRS_MAX {
        return Err(invalid(format!(
            "{} custom pairs, at most {META_CUSTOM_PAIRS_MAX}",
            pairs.len()
        )));
    }
    pairs.iter().try_for_each(custom_pair)
}

fn custom_keys(keys: &[String]) -> Result<(), BlobError> {
    if keys.len() > META_CUSTOM_PAIRS_MAX {
        return Err(invalid(format!(
            "{} custom keys, at most {META_CUSTOM_PAIRS_MAX}",
            keys.len()
        )));
    }
    keys.iter().try_for_each(|key| custom_key(key))
}

/// Every string and list of a `put-options` (chunking is checked by the
/// chunker: it is a few fixed-size numbers).
pub fn put_options(options: &PutOptions) -> Result<(), BlobError> {
    string("filename", options.filename.as_deref())?;
    string("content type", options.content_type.as_deref())?;
    string("creator", options.creator.as_deref())?;
    tags(&options.tags)?;
    links(&options.links)?;
    external_links(&options.external_links)?;
    custom(&options.custom)
}

/// Every string and list of a `metadata-update`: each list has the limits
/// of the `put-options` field it changes (whether the result keeps them
/// is the store's to check, as it applies the change).
pub fn metadata_update(change: &MetadataUpdate) -> Result<(), BlobError> {
    string(
        "filename",
        change.filename.as_ref().and_then(Option::as_deref),
    )?;
    string(
        "content type",
        change.content_type.as_ref().and_then(Option::as_deref),
    )?;
    if let Some(list) = &change.tags {
        tags(list)?;
    }
    if let Some(list) = &change.links {
        links(list)?;
    }
    if let Some(list) = &change.external_links {
        external_links(list)?;
    }
    if let Some(pairs) = &change.custom {
        custom(pairs)?;
    }
    tags(&change.remove_tags)?;
    tags(&change.add_tags)?;
    links(&change.remove_links)?;
    links(&change.add_links)?;
    external_links(&change.remove_external_links)?;
    external_links(&change.add_external_links)?;
    custom_keys(&change.unset_custom)?;
    custom(&change.set_custom)
}

/// A `query`'s limit and condition count, checked before it is converted
/// (a flood of conditions is refused without a copy). The bounds of each
/// condition's value are the store's own (`store::query::check_query`),
/// applied by `Store::query`; ids are parsed by [`super::convert::query`].
pub fn query(query: &Query) -> Result<(), BlobError> {
    page_limit("query", query.limit, QUERY_PAGE_MAX)?;
    if query.conditions.len() > QUERY_CONDITIONS_MAX {
        return Err(invalid(format!(
            "{} query conditions, at most {QUERY_CONDITIONS_MAX}",
            query.conditions.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_a_few_bytes_of_what_was_sent_never_all_of_it() {
        // Cut inside a multi-byte character: no panic, a shorter quote.
        let text = format!("{}é{}", "a".repeat(39), "b".repeat(1 << 20));
        assert_eq!(excerpt(&text), "a".repeat(39));
        let message = match artifact_id(&text) {
            Err(BlobError::Blob(WitError::InvalidArgument(m))) => m,
            other => panic!("{other:?}"),
        };
        assert!(message.len() < 200, "{message}");
        let long_key = PutOptions {
            custom: vec![KeyValue {
                key: "k".repeat(1 << 20),
                value: String::new(),
            }],
            ..PutOptions::default()
        };
        let message = put_options(&long_key).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn the_limits_themselves_pass() {
        let options = PutOptions {
            filename: Some("f".repeat(META_STRING_BYTES_MAX)),
            tags: vec!["t".repeat(META_TAG_BYTES_MAX); META_TAGS_MAX],
            links: vec!["a".repeat(32); META_LINKS_MAX],
            custom: vec![
                KeyValue {
                    key: "k".repeat(META_CUSTOM_KEY_BYTES_MAX),
                    value: "v".repeat(META_CUSTOM_VALUE_BYTES_MAX),
                };
                META_CUSTOM_PAIRS_MAX
            ],
            ..PutOptions::default()
        };
        put_options(&options).unwrap();
        inline_data(INLINE_BYTES_MAX as usize).unwrap();
        assert!(matches!(
            inline_data(INLINE_BYTES_MAX as usize + 1),
            Err(BlobError::Blob(WitError::TooLarge(_)))
        ));
        tag_query(&"t".repeat(META_TAG_BYTES_MAX)).unwrap();
        tag_query("t").unwrap();
        list_limit(LIST_IDS_MAX as u32).unwrap();
        io_len(IO_BYTES_MAX as usize).unwrap();
        assert!(io_len(IO_BYTES_MAX as usize + 1).is_err());
    }

    /// Regression (issue 9): `list` with a `limit` over 65536 was silently
    /// clamped and `find-by-tag("")` answered an empty list, although the
    /// WIT promises `invalid-argument` for a length outside its limits.
    #[test]
    fn just_past_each_limit_is_invalid_argument_not_clamped() {
        let refused = |result: Result<(), BlobError>| {
            matches!(result, Err(BlobError::Blob(WitError::InvalidArgument(_))))
        };
        assert!(refused(tag_query("")));
        assert!(refused(tag_query(&"t".repeat(META_TAG_BYTES_MAX + 1))));
        assert!(refused(list_limit(LIST_IDS_MAX as u32 + 1)));
        assert!(refused(list_limit(u32::MAX)));
    }
}
