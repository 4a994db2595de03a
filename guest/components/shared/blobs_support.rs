// Helpers shared by the test plugins that import `tensor:blob/blobs`,
// pulled in with `include!` after their `wit_bindgen::generate!` (each
// crate has its own generated `Error` and `MetadataUpdate`, so this cannot
// be a crate of its own). Expects both names in scope.

/// The WIT error case, as the plugins print it.
fn kind(error: &Error) -> &'static str {
    match error {
        Error::NotFound(_) => "not-found",
        Error::TooLarge(_) => "too-large",
        Error::QuotaExceeded(_) => "quota-exceeded",
        Error::InvalidArgument(_) => "invalid-argument",
        Error::HashMismatch(_) => "hash-mismatch",
        Error::Corrupted(_) => "corrupted",
        Error::Closed => "closed",
        Error::Io(_) => "io",
        Error::NoSpace(_) => "no-space",
    }
}

/// An update that changes nothing: the base of every change.
fn no_change() -> MetadataUpdate {
    MetadataUpdate {
        filename: None,
        content_type: None,
        tags: None,
        links: None,
        external_links: None,
        custom: None,
        remove_tags: Vec::new(),
        add_tags: Vec::new(),
        remove_links: Vec::new(),
        add_links: Vec::new(),
        remove_external_links: Vec::new(),
        add_external_links: Vec::new(),
        unset_custom: Vec::new(),
        set_custom: Vec::new(),
    }
}
