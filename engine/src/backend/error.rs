//! The revision store's errors.

use std::fmt;

use crate::btree::BtreeError;
use crate::mvcc::RestoreError;
use crate::KvError;

/// Errors of [`super::Backend`]. After a [`BtreeError::Io`] from a commit the B+ tree is
/// poisoned: reopen the backend (the caller still holds the `ChangeSet` to retry).
#[derive(Debug)]
pub enum BackendError {
    /// The B+ tree failed: I/O, a damaged page, a value over its limit.
    Btree(BtreeError),
    /// The tree holds bytes this layout cannot have written (a malformed record, lease or
    /// meta record, records out of order, a revision below the newest record's).
    Corrupt(String),
    /// The meta record names a layout version this build does not know.
    UnsupportedFormat(u32),
    /// A commit gave a consistent index below the committed one: the log never goes back.
    IndexWentBack {
        /// The index the store holds.
        committed: u64,
        /// The index the commit gave.
        given: u64,
    },
    /// A request the key space refuses as etcd does (HashKV at a compacted or future
    /// revision).
    Kv(KvError),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Btree(e) => write!(f, "revision store: {e}"),
            BackendError::Corrupt(reason) => write!(f, "revision store: corrupt: {reason}"),
            BackendError::UnsupportedFormat(v) => {
                write!(f, "revision store: unknown layout version {v} (this build knows {})", super::layout::FORMAT_VERSION)
            }
            BackendError::IndexWentBack { committed, given } => write!(
                f,
                "revision store: commit at consistent index {given} is below the committed {committed}"
            ),
            BackendError::Kv(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackendError::Btree(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BtreeError> for BackendError {
    fn from(e: BtreeError) -> Self {
        BackendError::Btree(e)
    }
}

impl From<RestoreError> for BackendError {
    fn from(e: RestoreError) -> Self {
        BackendError::Corrupt(e.to_string())
    }
}
