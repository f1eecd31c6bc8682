//! The revision store's error type.

use std::fmt;
use std::path::PathBuf;

/// One error type for the B+ tree store family; `Display` names the file, the step or the
/// page where they apply.
#[derive(Debug)]
pub enum BtreeError {
    /// A system call failed. `op` says which step ("pwrite", "fdatasync", "mmap", ...).
    /// After an `Io` error during a commit the store is poisoned.
    Io {
        /// The store's file.
        path: PathBuf,
        /// The step that failed.
        op: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Bytes in the file that cannot have been written by this store: a bad checksum, a
    /// malformed page, a reference out of bounds. `page` is the page id (byte offset
    /// `page * PAGE_SIZE`).
    Corrupt {
        /// The page where the damage was found.
        page: u64,
        /// What was wrong with it.
        reason: String,
    },
    /// An earlier I/O error left the on-disk state unknown (or a writer panicked); the store
    /// refuses further writes. Reads of committed data still work; reopen to write again.
    Poisoned,
    /// A key or value over its limit ([`super::MAX_KEY_BYTES`], [`super::MAX_VALUE_BYTES`]),
    /// or an empty key.
    TooLarge {
        /// "key" or "value".
        what: &'static str,
        /// The size that was asked for.
        size_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// An earlier operation of this write transaction failed halfway; its changes are in an
    /// unknown state, so the transaction can only be aborted (dropped).
    TxnFailed,
    /// Another [`super::Store`] (in this or another process) has the file open.
    Locked(PathBuf),
    /// `Store::open` without `create_if_missing` found no file, or `compact_to` found one.
    NotFound(PathBuf),
    /// `compact_to` was given a path that already exists.
    AlreadyExists(PathBuf),
}

/// Result alias for the store.
pub type Result<T, E = BtreeError> = std::result::Result<T, E>;

impl BtreeError {
    pub(crate) fn corrupt(page: u64, reason: impl Into<String>) -> BtreeError {
        BtreeError::Corrupt {
            page,
            reason: reason.into(),
        }
    }

    /// True for [`BtreeError::Corrupt`].
    pub fn is_corrupt(&self) -> bool {
        matches!(self, BtreeError::Corrupt { .. })
    }
}

impl fmt::Display for BtreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtreeError::Io { path, op, source } => {
                write!(f, "btree: {op} {}: {source}", path.display())
            }
            BtreeError::Corrupt { page, reason } => {
                write!(f, "btree: corrupt page {page}: {reason}")
            }
            BtreeError::Poisoned => write!(
                f,
                "btree: poisoned by an earlier I/O error; refusing writes until reopened"
            ),
            BtreeError::TooLarge {
                what,
                size_bytes,
                max_bytes,
            } => write!(
                f,
                "btree: {what} of {size_bytes} bytes is outside the allowed size (1..={max_bytes})"
            ),
            BtreeError::TxnFailed => write!(
                f,
                "btree: an earlier operation of this write transaction failed; abort it"
            ),
            BtreeError::Locked(path) => {
                write!(f, "btree: {} is open in another store", path.display())
            }
            BtreeError::NotFound(path) => write!(f, "btree: no store at {}", path.display()),
            BtreeError::AlreadyExists(path) => {
                write!(f, "btree: {} already exists", path.display())
            }
        }
    }
}

impl std::error::Error for BtreeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BtreeError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
