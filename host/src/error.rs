//! The store's error type: every failure of [`crate::store`] is a
//! [`StoreError`]. Guest mistakes (bad lengths, unknown ids, hash
//! mismatches) and operating errors (disk damage, I/O) are values here,
//! never panics. Each message names the artifact, chunk, segment or offset
//! it is about, so a log line alone says where to look.
//!
//! `runtime/` maps each case onto the WIT `error` variant of the same name.

/// A failure of the chunk store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No artifact or chunk with that id or digest.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is larger than this call accepts.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Storing this would exceed the tenant's byte quota.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// A malformed argument or a length over its documented maximum.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Bytes handed to the store do not hash to the digest claimed for them.
    #[error("hash mismatch: {0}")]
    HashMismatch(String),
    /// Stored bytes failed verification; nothing corrupted is ever returned.
    #[error("corrupted: {0}")]
    Corrupted(String),
    /// The upload was already committed.
    #[error("closed: the upload was already committed")]
    Closed,
    /// The disk is full. Nothing of the failed write is visible and every
    /// stored artifact stays readable; after space is freed (delete, then
    /// GC) writes succeed again.
    #[error("no space: {0}")]
    NoSpace(String),
    /// The store refuses writes until it is reopened: an fsync failed, so
    /// bytes it had written may be gone from the disk although reads still
    /// return them ("fsyncgate"). Reads keep working.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// Another process has the tenant open for writing (it holds the
    /// tenant's lock), and this one waited as long as it was allowed to.
    #[error("tenant {tenant} is in use by another process{}", pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    InUse {
        tenant: String,
        /// The holder's process id, as it wrote it into the lock file; `None`
        /// if it could not be read.
        pid: Option<u32>,
    },
    /// The disk could not be read or written.
    #[error("i/o error {context}: {source}")]
    Io {
        /// What the store was doing, naming the file and offset.
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// An [`StoreError::Io`] with `context` saying what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if crate::store::backend::is_no_space(&source) {
            return StoreError::NoSpace(format!("{}: {source}", context.into()));
        }
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// An equal error for another caller: one failed group-commit fsync
    /// fails every commit of the batch. I/O errors keep their kind and
    /// message (`std::io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::NotFound(m) => StoreError::NotFound(m.clone()),
            StoreError::TooLarge(m) => StoreError::TooLarge(m.clone()),
            StoreError::QuotaExceeded(m) => StoreError::QuotaExceeded(m.clone()),
            StoreError::InvalidArgument(m) => StoreError::InvalidArgument(m.clone()),
            StoreError::HashMismatch(m) => StoreError::HashMismatch(m.clone()),
            StoreError::Corrupted(m) => StoreError::Corrupted(m.clone()),
            StoreError::Closed => StoreError::Closed,
            StoreError::NoSpace(m) => StoreError::NoSpace(m.clone()),
            StoreError::ReadOnly(m) => StoreError::ReadOnly(m.clone()),
            StoreError::InUse { tenant, pid } => StoreError::InUse {
                tenant: tenant.clone(),
                pid: *pid,
            },
            StoreError::Io { context, source } => StoreError::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
        }
    }
}
