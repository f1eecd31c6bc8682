//! The next segment's space, written with zeros on a helper thread while the live segment
//! fills.
//!
//! A segment's preallocation is real zeros (see `segment::zero_fill` for why), one 64 MiB
//! sequential write and an fsync. Done at the roll, inside an append, it stalled the
//! appender (the sequencer) for the whole write and took ~11% of its CPU at put 16 conns
//! / 256 clients over the binary protocol. So once the live segment is half full a helper
//! thread writes a spare file under a temporary name (recovery deletes it like any
//! interrupted segment creation); the roll then only writes the header and metadata into
//! it, syncs, and renames it into place (`segment::adopt_spare`).
//!
//! One spare at a time, one short-lived thread per spare (one per segment: negligible
//! next to 64 MiB of writes). Dropping a [`Spare`] stops and joins its thread, so no
//! zeros land in a file after the WAL that owned it is gone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{segment, WalError};

/// File name of the spare, inside the WAL directory.
pub(crate) fn spare_path(dir: &Path) -> PathBuf {
    dir.join(format!("spare{}", segment::TMP_SUFFIX))
}

/// A zero-filled file of `size_bytes`, durable (data and length), ready to become a segment.
pub(crate) struct SpareFile {
    pub file: File,
    pub path: PathBuf,
    pub size_bytes: u64,
}

/// The helper thread preparing the next segment's file, if one was started.
#[derive(Default)]
pub(crate) struct Spare {
    filling: Option<Filling>,
    /// Set by [`Spare::start`] even when the thread could not be started, so a failing
    /// start is tried (and logged) once per segment, not on every append.
    requested: bool,
}

struct Filling {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<SpareFile, WalError>>,
}

impl Spare {
    /// Whether a spare was asked for since the last [`Spare::take`].
    pub fn started(&self) -> bool {
        self.requested
    }

    /// Starts writing a spare of `size_bytes` in `dir`. If the thread cannot be started,
    /// nothing is started: the roll then creates its segment itself.
    pub fn start(&mut self, dir: &Path, size_bytes: u64) {
        assert!(
            !self.requested && self.filling.is_none(),
            "one spare at a time"
        );
        self.requested = true;
        let path = spare_path(dir);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let spawned = std::thread::Builder::new().name("wal-spare".into()).spawn({
            let path = path.clone();
            move || segment::write_spare(&path, size_bytes, &stop_thread)
        });
        match spawned {
            Ok(thread) => self.filling = Some(Filling { path, stop, thread }),
            Err(e) => log::warn!("wal: cannot start the spare segment thread: {e}"),
        }
    }

    /// The spare, waiting for its thread if it is still writing; `None` if none was
    /// started or it failed (logged: the caller creates the segment itself, and that
    /// reports the error if the disk really refuses).
    pub fn take(&mut self) -> Option<SpareFile> {
        self.requested = false;
        let filling = self.filling.take()?;
        match filling.thread.join() {
            Ok(Ok(spare)) => Some(spare),
            Ok(Err(e)) => {
                log::warn!("wal: spare segment not usable ({e}); creating the segment in line");
                None
            }
            Err(_) => {
                log::warn!("wal: spare segment thread panicked; creating the segment in line");
                None
            }
        }
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        if let Some(filling) = self.filling.take() {
            filling.stop.store(true, Ordering::Relaxed);
            let _ = filling.thread.join();
            // Still under the WAL's directory lock (`Wal` declares `spare` before `_lock`,
            // so it drops first): no other WAL can be using this name yet.
            let _ = std::fs::remove_file(&filling.path);
        }
    }
}
