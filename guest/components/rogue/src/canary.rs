//! What the host must never forward to a chunker: arguments over the WIT's
//! limits. The rogue's `blobs` exports check every argument against them
//! first and answer `corrupted("rogue: the host forwarded ...")` if one is
//! over, so a test sees the host let it through (the host's own refusal is
//! `invalid-argument` or `too-large`).

use crate::tensor::blob::types::{Error, KeyValue, MetadataUpdate, PutOptions};

const INLINE_BYTES_MAX: usize = 64 << 20;
const STRING_BYTES_MAX: usize = 4096;
const ENTRIES_MAX: usize = 256;
const TAG_BYTES_MAX: usize = 256;
const KEY_BYTES_MAX: usize = 256;
const LIST_LIMIT_MAX: u32 = 65_536;

fn forwarded(what: String) -> Error {
    Error::Corrupted(format!("rogue: the host forwarded {what}"))
}

pub(crate) fn data(len: usize) -> Result<(), Error> {
    if len > INLINE_BYTES_MAX {
        return Err(forwarded(format!("an inline put of {len} bytes")));
    }
    Ok(())
}

pub(crate) fn id(id: &str) -> Result<(), Error> {
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex {
        return Err(forwarded(format!("an id of {} bytes", id.len())));
    }
    Ok(())
}

pub(crate) fn tag(tag: &str) -> Result<(), Error> {
    if tag.len() > TAG_BYTES_MAX {
        return Err(forwarded(format!("a tag of {} bytes", tag.len())));
    }
    Ok(())
}

pub(crate) fn list_limit(limit: u32) -> Result<(), Error> {
    if limit > LIST_LIMIT_MAX {
        return Err(forwarded(format!("a list limit of {limit}")));
    }
    Ok(())
}

fn string(name: &str, value: Option<&str>) -> Result<(), Error> {
    match value {
        Some(value) if value.len() > STRING_BYTES_MAX => {
            Err(forwarded(format!("a {name} of {} bytes", value.len())))
        }
        _ => Ok(()),
    }
}

fn tags(tags: &[String]) -> Result<(), Error> {
    if tags.len() > ENTRIES_MAX {
        return Err(forwarded(format!("{} tags", tags.len())));
    }
    for tag in tags {
        if tag.is_empty() {
            return Err(forwarded("an empty tag".into()));
        }
        self::tag(tag)?;
    }
    Ok(())
}

fn links(links: &[String]) -> Result<(), Error> {
    if links.len() > ENTRIES_MAX {
        return Err(forwarded(format!("{} links", links.len())));
    }
    links.iter().try_for_each(|link| id(link))
}

fn custom(pairs: &[KeyValue]) -> Result<(), Error> {
    if pairs.len() > ENTRIES_MAX {
        return Err(forwarded(format!("{} custom pairs", pairs.len())));
    }
    for pair in pairs {
        if pair.key.is_empty() || pair.key.len() > KEY_BYTES_MAX {
            return Err(forwarded(format!(
                "a custom key of {} bytes",
                pair.key.len()
            )));
        }
        string("custom value", Some(&pair.value))?;
    }
    Ok(())
}

pub(crate) fn options(options: &PutOptions) -> Result<(), Error> {
    string("filename", options.filename.as_deref())?;
    string("content type", options.content_type.as_deref())?;
    string("creator", options.creator.as_deref())?;
    tags(&options.tags)?;
    links(&options.links)?;
    custom(&options.custom)
}

pub(crate) fn update(change: &MetadataUpdate) -> Result<(), Error> {
    string(
        "filename",
        change.filename.as_ref().and_then(Option::as_deref),
    )?;
    string(
        "content type",
        change.content_type.as_ref().and_then(Option::as_deref),
    )?;
    change.tags.as_deref().map_or(Ok(()), tags)?;
    change.links.as_deref().map_or(Ok(()), links)?;
    change.custom.as_deref().map_or(Ok(()), custom)
}
