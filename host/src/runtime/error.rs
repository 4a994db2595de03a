//! The error every host function of ours returns.
//!
//! A guest mistake or an operating error becomes [`BlobError::Blob`], which
//! the guest sees as the WIT `error` variant. A host fault (a bad resource
//! handle, a trap in the chunker) is [`BlobError::Trap`] and traps the caller.
//! `?` converts store errors into the right WIT case.

use super::bindings::WitError;
use crate::error::StoreError;

#[derive(Debug)]
pub enum BlobError {
    /// A failure the guest is told about as a WIT `error`.
    Blob(WitError),
    /// A fault that traps the calling guest.
    Trap(wasmtime::Error),
}

impl BlobError {
    pub fn invalid(message: impl Into<String>) -> Self {
        BlobError::Blob(WitError::InvalidArgument(message.into()))
    }
}

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobError::Blob(error) => write!(f, "{}", describe(error)),
            BlobError::Trap(error) => write!(f, "trap: {error:#}"),
        }
    }
}

impl std::error::Error for BlobError {}

/// One human-readable line for a WIT error.
pub fn describe(error: &WitError) -> String {
    match error {
        WitError::NotFound(m) => format!("not found: {m}"),
        WitError::TooLarge(m) => format!("too large: {m}"),
        WitError::QuotaExceeded(m) => format!("quota exceeded: {m}"),
        WitError::InvalidArgument(m) => format!("invalid argument: {m}"),
        WitError::HashMismatch(m) => format!("hash mismatch: {m}"),
        WitError::Corrupted(m) => format!("corrupted: {m}"),
        WitError::Closed => "closed: the resource was already finished or aborted".to_string(),
        WitError::Io(m) => format!("i/o error: {m}"),
        WitError::NoSpace(m) => format!("no space: {m}"),
    }
}

impl From<WitError> for BlobError {
    fn from(error: WitError) -> Self {
        BlobError::Blob(error)
    }
}

impl From<StoreError> for BlobError {
    fn from(error: StoreError) -> Self {
        BlobError::Blob(to_wit(error))
    }
}

impl From<wasmtime::Error> for BlobError {
    fn from(error: wasmtime::Error) -> Self {
        BlobError::Trap(error)
    }
}

impl From<wasmtime::component::ResourceTableError> for BlobError {
    fn from(error: wasmtime::component::ResourceTableError) -> Self {
        BlobError::Trap(wasmtime::Error::new(error))
    }
}

/// The WIT case for a store error. A store that went read-only after a
/// failed fsync answers `io` with a message starting `read-only: `.
pub fn to_wit(error: StoreError) -> WitError {
    match error {
        StoreError::NotFound(m) => WitError::NotFound(m),
        StoreError::TooLarge(m) => WitError::TooLarge(m),
        StoreError::QuotaExceeded(m) => WitError::QuotaExceeded(m),
        StoreError::InvalidArgument(m) => WitError::InvalidArgument(m),
        StoreError::HashMismatch(m) => WitError::HashMismatch(m),
        StoreError::Corrupted(m) => WitError::Corrupted(m),
        StoreError::Closed => WitError::Closed,
        StoreError::NoSpace(m) => WitError::NoSpace(m),
        StoreError::ReadOnly(m) => WitError::Io(format!("read-only: {m}")),
        other => WitError::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_and_read_only_reach_the_guest_as_documented() {
        match to_wit(StoreError::NoSpace("segment 3: disk full".into())) {
            WitError::NoSpace(m) => assert_eq!(m, "segment 3: disk full"),
            other => panic!("{other:?}"),
        }
        match to_wit(StoreError::ReadOnly("fsync of meta.log failed".into())) {
            WitError::Io(m) => assert_eq!(m, "read-only: fsync of meta.log failed"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            describe(&WitError::NoSpace("x".into())),
            "no space: x".to_string()
        );
    }
}
