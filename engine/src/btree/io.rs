//! The file layer the store writes through. Reads go through a memory map of the same
//! file; every write, size change and sync goes through [`FileIo`], so tests can put a
//! fault-injecting layer in between.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Writes of the store. Implementations must be usable from any thread.
pub(crate) trait FileIo: Send + Sync {
    /// The file (for mapping it and reading the meta pages).
    fn file(&self) -> &File;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&self) -> io::Result<()>;
    /// Sets the file's length (the store only ever grows it while open).
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// The plain file.
pub(crate) struct PlainFile(pub File);

impl FileIo for PlainFile {
    fn file(&self) -> &File {
        &self.0
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// Takes an exclusive advisory lock on the file (per open file description, so a second
/// `Store` on the same file in this process is refused too).
pub(crate) fn lock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Maps `len` bytes of the file read-only.
pub(crate) fn map(file: &File, len: u64) -> io::Result<memmap2::Mmap> {
    // SAFETY: the file is locked against other stores; while open the store never shrinks
    // it, and it only rewrites pages that no reader can reach (see the freelist rule in
    // `docs/storage-format.md`). Readers only ever hold slices of pages reachable from the
    // root they pinned, so no slice handed out is written to while it is alive. Another
    // process writing the file behind the lock's back is outside what the store defends
    // against (as with every mmap-based store).
    unsafe { memmap2::MmapOptions::new().len(len as usize).map(file) }
}

/// Drops this process's page-table entries for `map`, so pages a one-off scan touched stop
/// counting in its resident set. The data stays in the kernel's page cache and the next
/// read of a page maps it again.
pub(crate) fn forget_resident_pages(map: &memmap2::Mmap) -> io::Result<()> {
    // SAFETY: `map` is a read-only shared file mapping (see `map`): MADV_DONTNEED only
    // unmaps its pages, and any later access reads the same file contents back. No
    // private (copy-on-write) data exists in it that the advice could discard.
    unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) }
}

/// The length to grow a file of `cur` bytes to so that it holds at least `need` bytes:
/// steps of the current size (at least 1 MiB, at most 64 MiB), whole pages.
pub(crate) fn grown_len(cur: u64, need: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let step = cur.clamp(MIB, 64 * MIB);
    let target = need.max(cur + step).div_ceil(step) * step;
    target.div_ceil(super::page::PAGE) * super::page::PAGE
}
