//! What the host must never forward to a chunker: arguments over the WIT's
//! limits. The rogue's `transfer` exports check every argument against them
//! first and answer `corrupted("rogue: the host forwarded ...")` if one is
//! over, so a test sees the host let it through (the host's own refusal is
//! `invalid-argument` or `too-large`).

use crate::tensor::blob::types::{Error, KeyValue, PutOptions};

const INLINE_BYTES_MAX: usize = 64 << 20;
const STRING_BYTES_MAX: usize = 4096;
const ENTRIES_MAX: usize = 256;
const TAG_BYTES_MAX: usize = 256;
const KEY_BYTES_MAX: usize = 256;
const EXTERNAL_LINK_BYTES_MAX: usize = 256;

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

fn tag(tag: &str) -> Result<(), Error> {
    if tag.len() > TAG_BYTES_MAX {
        return Err(forwarded(format!("a tag of {} bytes", tag.len())));
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

fn external_links(links: &[String]) -> Result<(), Error> {
    if links.len() > ENTRIES_MAX {
        return Err(forwarded(format!("{} external links", links.len())));
    }
    for link in links {
        if link.is_empty() || link.len() > EXTERNAL_LINK_BYTES_MAX {
            return Err(forwarded(format!(
                "an external link of {} bytes",
                link.len()
            )));
        }
    }
    Ok(())
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
    external_links(&options.external_links)?;
    custom(&options.custom)
}
