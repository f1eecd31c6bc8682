//! Appends through O_DIRECT | O_DSYNC: one write that returns once the batch is durable.
//!
//! A buffered append copies the batch into the page cache, and the fdatasync that follows
//! writes those pages back and flushes the device cache. Written directly with O_DSYNC,
//! the batch goes from our buffer to the device and the kernel flushes in the same call.
//! Measured on this project's 2-core VM (ext4 on virtio, 4 KiB writes at increasing
//! offsets, 2000 each, two runs): pwrite + fdatasync p50 0.157/0.150 ms, O_DIRECT |
//! O_DSYNC p50 0.127/0.110 ms.
//!
//! O_DIRECT writes whole aligned blocks from aligned memory. Appends start mid-block, so
//! each write starts at the block holding the append offset and carries that block's
//! bytes before the offset again (kept in `tail`), then the batch, then zeros up to the
//! next block boundary. The bytes before the offset are rewritten unchanged, so a write
//! torn at any sector leaves every earlier record intact (the same holds for the page
//! cache's write-back of a partial page). The zeros past the batch are what the segment
//! already holds there: preallocated segments are zero-filled and recovery zeroes a torn
//! tail, and zeros are the format's end marker.
//!
//! A filesystem that refuses O_DIRECT (tmpfs) keeps the buffered path.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Once;

use super::io::WriteError;
use super::WalError;

/// Alignment of offsets, lengths and memory: a multiple of every logical block size in use
/// (512 B and 4 KiB).
pub(crate) const BLOCK_BYTES: usize = 4096;

static REFUSED_LOGGED: Once = Once::new();

/// The live segment, open for direct appends.
pub(crate) struct DirectAppender {
    file: File,
    /// The segment's bytes from the start of the block holding the append offset up to
    /// the offset: shorter than a block.
    tail: Vec<u8>,
    /// One write's blocks, over-allocated by a block so that an aligned start exists.
    scratch: Vec<u8>,
    /// Test hook: the next write fails with EINVAL without writing.
    #[cfg(test)]
    pub refuse_next_write: bool,
}

impl DirectAppender {
    /// Opens `path` for direct appends at `offset_bytes`, reading the partial block before
    /// the offset through `buffered`. `None` if the filesystem refuses O_DIRECT.
    pub fn open(
        path: &Path,
        buffered: &File,
        offset_bytes: u64,
    ) -> Result<Option<DirectAppender>, WalError> {
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                REFUSED_LOGGED.call_once(|| {
                    log::info!(
                        "wal: {} refuses O_DIRECT; using pwrite + fdatasync",
                        path.display()
                    );
                });
                return Ok(None);
            }
            Err(e) => return Err(WalError::io(path, "open O_DIRECT", e)),
        };
        let block_start = offset_bytes - offset_bytes % BLOCK_BYTES as u64;
        let mut tail = vec![0u8; (offset_bytes - block_start) as usize];
        buffered
            .read_exact_at(&mut tail, block_start)
            .map_err(|e| WalError::io(path, "read tail block", e))?;
        Ok(Some(DirectAppender {
            file,
            tail,
            scratch: Vec::new(),
            #[cfg(test)]
            refuse_next_write: false,
        }))
    }

    /// Writes `batch` at `offset_bytes`, the append offset this appender was opened at or
    /// left after its last write, and returns once it is durable.
    pub fn write_durable(&mut self, batch: &[u8], offset_bytes: u64) -> Result<(), WriteError> {
        #[cfg(test)]
        if std::mem::take(&mut self.refuse_next_write) {
            return Err(WriteError {
                op: "pwrite O_DIRECT",
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let tail_len = self.tail.len();
        let block_start = offset_bytes - tail_len as u64;
        assert_eq!(
            block_start % BLOCK_BYTES as u64,
            0,
            "appends continue the tail"
        );
        let data_len = tail_len + batch.len();
        let padded_len = data_len.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        // Grown (with zeros) only when too small: every byte used below is written below.
        if self.scratch.len() < padded_len + BLOCK_BYTES {
            self.scratch.resize(padded_len + BLOCK_BYTES, 0);
        }
        let misalign = self.scratch.as_ptr() as usize % BLOCK_BYTES;
        let at = (BLOCK_BYTES - misalign) % BLOCK_BYTES;
        let blocks = &mut self.scratch[at..at + padded_len];
        blocks[..tail_len].copy_from_slice(&self.tail);
        blocks[tail_len..data_len].copy_from_slice(batch);
        blocks[data_len..].fill(0);
        self.file
            .write_all_at(blocks, block_start)
            .map_err(|source| WriteError {
                op: "pwrite O_DIRECT",
                source,
            })?;
        // The block holding the new end becomes the tail.
        let end = offset_bytes + batch.len() as u64;
        let new_block_start = (end - end % BLOCK_BYTES as u64 - block_start) as usize;
        self.tail.clear();
        self.tail
            .extend_from_slice(&blocks[new_block_start..data_len]);
        debug_assert!(self.tail.len() < BLOCK_BYTES);
        Ok(())
    }

    /// Test hook: swaps the handle for a read-only one of `path` so the next write fails.
    #[cfg(test)]
    pub fn break_for_test(&mut self, path: &Path) {
        self.file = File::open(path).expect("reopen read-only");
    }
}
