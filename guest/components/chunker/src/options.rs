//! Early checks of `put-options` against the limits in the WIT docs, so a
//! bad option fails before any byte is uploaded. The host checks them again
//! at commit; these checks only save the caller a wasted upload.

use tensor_blob_chunking::{CdcParams, Chunking};

use crate::tensor::blob::types::{self, Error, PutOptions};

const STRING_BYTES_MAX: usize = 4096;
const TAG_BYTES_MAX: usize = 256;
const EXTERNAL_LINK_BYTES_MAX: usize = 256;
const KEY_BYTES_MAX: usize = 256;
const VALUE_BYTES_MAX: usize = 4096;
const ENTRIES_MAX: usize = 256;
const ARTIFACT_ID_LEN: usize = 32;

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// Checks every limit of `options` and returns the chunking to apply.
pub(crate) fn validate(options: &PutOptions) -> Result<Chunking, Error> {
    let strings = [
        ("filename", &options.filename),
        ("content-type", &options.content_type),
        ("creator", &options.creator),
    ];
    for (name, value) in strings {
        if let Some(value) = value {
            if value.len() > STRING_BYTES_MAX {
                return Err(invalid(format!("{name} is over {STRING_BYTES_MAX} bytes")));
            }
        }
    }
    check_count("tags", options.tags.len())?;
    for tag in &options.tags {
        if tag.is_empty() || tag.len() > TAG_BYTES_MAX {
            return Err(invalid(format!("a tag must be 1..={TAG_BYTES_MAX} bytes")));
        }
    }
    check_count("links", options.links.len())?;
    for link in &options.links {
        check_artifact_id(link)?;
    }
    check_count("external links", options.external_links.len())?;
    for link in &options.external_links {
        if link.is_empty() || link.len() > EXTERNAL_LINK_BYTES_MAX {
            return Err(invalid(format!(
                "an external link must be 1..={EXTERNAL_LINK_BYTES_MAX} bytes"
            )));
        }
    }
    check_count("custom pairs", options.custom.len())?;
    for pair in &options.custom {
        if pair.key.is_empty() || pair.key.len() > KEY_BYTES_MAX {
            return Err(invalid(format!(
                "a custom key must be 1..={KEY_BYTES_MAX} bytes"
            )));
        }
        if pair.value.len() > VALUE_BYTES_MAX {
            return Err(invalid(format!(
                "a custom value must be <= {VALUE_BYTES_MAX} bytes"
            )));
        }
    }
    let chunking = match options.chunking {
        None => Chunking::default(),
        Some(types::Chunking::Fixed(len_bytes)) => Chunking::Fixed(len_bytes),
        Some(types::Chunking::ContentDefined(params)) => Chunking::ContentDefined(CdcParams {
            min_bytes: params.min,
            avg_bytes: params.avg,
            max_bytes: params.max,
        }),
    };
    chunking.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(chunking)
}

fn check_count(name: &str, count: usize) -> Result<(), Error> {
    if count > ENTRIES_MAX {
        return Err(invalid(format!(
            "{count} {name}, at most {ENTRIES_MAX} allowed"
        )));
    }
    Ok(())
}

/// An artifact id is 32 lowercase hex characters.
pub(crate) fn check_artifact_id(id: &str) -> Result<(), Error> {
    let well_formed = id.len() == ARTIFACT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed {
        Ok(())
    } else {
        Err(invalid(format!("malformed artifact id {:?}", truncate(id))))
    }
}

/// At most 64 bytes of a caller's string, for error messages.
fn truncate(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
