//! The WAL's error type.

use std::fmt;
use std::path::{Path, PathBuf};

/// One error type for the WAL family; `Display` names the file and offset where they apply.
#[derive(Debug)]
pub enum WalError {
    /// A system call failed. `op` says which step ("open", "write+fdatasync", ...).
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// Bytes on disk that cannot be a WAL written by us, outside a repairable torn tail.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An earlier I/O error left the on-disk state unknown; the WAL refuses further appends.
    Poisoned,
    /// A record payload (or the metadata) is over `WalOptions::record_size_bytes_max`.
    RecordTooLarge { size_bytes: usize },
    /// `Wal::create` found a WAL already in the directory.
    AlreadyExists(PathBuf),
    /// `Wal::open` or `verify` found no WAL segment in the directory.
    NotFound(PathBuf),
    /// Another `Wal` (in this or another process) holds the directory's lock.
    Locked(PathBuf),
}

impl WalError {
    pub(crate) fn io(path: &Path, op: &'static str, source: std::io::Error) -> WalError {
        WalError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
        WalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Io { path, op, source } => {
                write!(f, "wal: {op} {}: {source}", path.display())
            }
            WalError::Corrupt {
                path,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "wal: corrupt {} at offset {offset}: {reason}",
                    path.display()
                )
            }
            WalError::Poisoned => {
                write!(
                    f,
                    "wal: poisoned by an earlier I/O error; refusing to append"
                )
            }
            WalError::RecordTooLarge { size_bytes } => {
                write!(
                    f,
                    "wal: record of {size_bytes} bytes is over the maximum record size"
                )
            }
            WalError::AlreadyExists(dir) => {
                write!(f, "wal: {} already holds a WAL", dir.display())
            }
            WalError::NotFound(dir) => write!(f, "wal: no WAL in {}", dir.display()),
            WalError::Locked(dir) => {
                write!(f, "wal: {} is locked by another open WAL", dir.display())
            }
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
