//! The on-disk revision store: a copy-on-write B+ tree in one file.
//!
//! The file is a sequence of [`PAGE_SIZE`] pages. Pages 0 and 1 are meta pages; the one
//! with the higher transaction id and a valid checksum names the committed root, the
//! persisted free list and the caller's [`META_BYTES`]-byte metadata record. The byte
//! layout, the commit protocol and the recovery rules are written down in
//! `docs/storage-format.md`.
//!
//! - Keys and values are byte strings sorted by their bytes. Keys are at most
//!   [`MAX_KEY_BYTES`]; values at most [`MAX_VALUE_BYTES`] (large ones live in overflow
//!   page runs).
//! - [`Store::read`] pins the committed root: a [`ReadTxn`] is a snapshot that reads pages
//!   straight from a shared memory map and never blocks the writer (or is blocked by it).
//! - [`Store::write`] starts the single [`WriteTxn`]. It never modifies a page reachable
//!   from the committed root: changed pages are copied, and the copies are written to
//!   free pages at [`WriteTxn::commit`], which is `pwrite` of every new page, `fdatasync`,
//!   `pwrite` of the meta page (transaction id + 1, into slot `txid % 2`), `fdatasync`. A
//!   crash at any point leaves the previous commit intact.
//! - Pages a commit made unreachable are reused only once no open reader can see them;
//!   the free list is written as part of each commit.
//! - Every page is checksummed (CRC-32C) and verified whenever it is read: damage is a
//!   [`BtreeError::Corrupt`] naming the page, never a panic or a wrong answer.
//! - After an I/O error during a commit the store is poisoned: it refuses further writes
//!   (reads of the committed state go on) until it is reopened.

mod cursor;
mod error;
mod io;
mod node;
mod page;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use memmap2::Mmap;

pub use cursor::Range;
pub use error::{BtreeError, Result};
pub use page::{MAX_DEPTH, MAX_KEY_BYTES, MAX_VALUE_BYTES, META_BYTES, PAGE_SIZE};
pub use verify::VerifyReport;

use cursor::{Src, View};
use io::{FileIo, PlainFile};
use node::{AllocState, Branch, Child, Ctx, Leaf, Node, Val};
use page::{Meta, EXTENTS_PER_PAGE, MAX_EXTENT, PAGE};

/// How to open a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Create an empty store if the file does not exist (default true).
    pub create_if_missing: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
        }
    }
}

/// Figures for `corekvutl db info` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Transaction id of the last commit (0 for a new store).
    pub txid: u64,
    /// [`PAGE_SIZE`].
    pub page_size: usize,
    /// High-water mark: pages in use or free, meta pages included.
    pub page_count: u64,
    /// Length of the file (it grows in steps, so it may be above `page_count` pages).
    pub file_bytes: u64,
    /// Pages listed in the free list of the last commit (some may still wait for readers).
    pub free_pages: u64,
    /// Pages holding the free list itself.
    pub freelist_pages: u64,
    /// Levels of the tree (0 when empty, 1 when the root is a leaf).
    pub depth: u32,
    /// Number of keys.
    pub entries: u64,
    /// Open read transactions.
    pub readers: usize,
    /// Transaction id pinned by the oldest open reader.
    pub oldest_reader_txid: Option<u64>,
}

/// A copy-on-write B+ tree store in one file. Cheap to clone (handles share the store);
/// `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Inner {
    path: PathBuf,
    io: Box<dyn FileIo>,
    /// Held by the one write transaction.
    writer: Mutex<WriterState>,
    shared: Mutex<Shared>,
    poisoned: AtomicBool,
}

/// Free space bookkeeping, owned by the writer.
struct WriterState {
    /// Pages that may be reused now.
    free: BTreeSet<u64>,
    /// Pages made unreachable by commit `txid`, reusable once every open reader has a
    /// txid `>= txid` (a reader at `txid - 1` or older may still reach them). Ascending.
    pending: VecDeque<(u64, Vec<u64>)>,
    /// Pages holding the committed free list.
    freelist_pages: Vec<u64>,
    /// Current length of the file.
    file_len: u64,
    /// Where neighbouring dirty pages are joined into one write; kept between commits
    /// because a fresh multi-MiB buffer per commit cost a page fault (a zeroed huge page)
    /// per 2 MiB, ~6% of the server's CPU under a steady put load.
    coalesce_buf: Vec<u8>,
}

/// What readers take a snapshot of.
struct Shared {
    meta: Meta,
    /// The newest map; older generations stay alive in the readers that hold them.
    map: Arc<Mmap>,
    /// Open readers by pinned txid.
    readers: BTreeMap<u64, usize>,
    free_pages: u64,
    freelist_pages: u64,
    file_len: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn io_err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> BtreeError + '_ {
        move |source| BtreeError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> BtreeError + 'a {
    move |source| BtreeError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl Store {
    /// Opens the store in file `path`, creating an empty one if it is missing and
    /// `opts.create_if_missing`. Takes an exclusive lock on the file. The newest meta page
    /// with a valid checksum wins; a torn or damaged newest meta falls back to the other.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Store> {
        Store::open_with(path.as_ref(), opts, &|f| Box::new(PlainFile(f)))
    }

    pub(crate) fn open_with(
        path: &Path,
        opts: Options,
        wrap: &dyn Fn(File) -> Box<dyn FileIo>,
    ) -> Result<Store> {
        if !path.exists() {
            if !opts.create_if_missing {
                return Err(BtreeError::NotFound(path.to_path_buf()));
            }
            create(path)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "open"))?;
        if !io::lock_exclusive(&file).map_err(io_err(path, "flock"))? {
            return Err(BtreeError::Locked(path.to_path_buf()));
        }
        let file_len = file.metadata().map_err(io_err(path, "stat"))?.len();
        if file_len < 2 * PAGE {
            return Err(BtreeError::corrupt(
                0,
                format!("file of {file_len} bytes is shorter than its two meta pages"),
            ));
        }
        let mut metas = Vec::with_capacity(2);
        for slot in 0..2u64 {
            let mut buf = vec![0u8; PAGE_SIZE];
            file.read_exact_at(&mut buf, slot * PAGE)
                .map_err(io_err(path, "read meta page"))?;
            metas.push(Meta::decode(&buf, slot));
        }
        let m1 = metas.pop().expect("two metas");
        let m0 = metas.pop().expect("two metas");
        let meta = match (m0, m1) {
            (Ok(a), Ok(b)) => {
                if a.txid > b.txid {
                    a
                } else {
                    b
                }
            }
            (Ok(m), Err(e)) | (Err(e), Ok(m)) => {
                if m.txid > 0 {
                    log::warn!("btree: {}: {e}; using the other meta page", path.display());
                }
                m
            }
            (Err(e), Err(_)) => return Err(e),
        };
        if file_len < meta.page_count * PAGE {
            return Err(BtreeError::corrupt(
                0,
                format!(
                    "file of {file_len} bytes is shorter than the committed {} pages",
                    meta.page_count
                ),
            ));
        }
        let map = io::map(&file, file_len).map_err(io_err(path, "mmap"))?;
        let (free, freelist_pages) = load_freelist(&map, &meta)?;
        let free_pages = free.len() as u64;
        let n_fl = freelist_pages.len() as u64;
        let inner = Inner {
            path: path.to_path_buf(),
            io: wrap(file),
            writer: Mutex::new(WriterState {
                free,
                pending: VecDeque::new(),
                freelist_pages,
                file_len,
                coalesce_buf: Vec::new(),
            }),
            shared: Mutex::new(Shared {
                meta,
                map: Arc::new(map),
                readers: BTreeMap::new(),
                free_pages,
                freelist_pages: n_fl,
                file_len,
            }),
            poisoned: AtomicBool::new(false),
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A read transaction: a snapshot of the last commit. Never blocks on the writer.
    pub fn read(&self) -> ReadTxn {
        let mut sh = lock(&self.inner.shared);
        let meta = sh.meta;
        *sh.readers.entry(meta.txid).or_insert(0) += 1;
        ReadTxn {
            inner: self.inner.clone(),
            map: sh.map.clone(),
            meta,
        }
    }

    /// Lets go of the file pages this process has mapped in (a full scan, such as loading
    /// the key space on start, touches every page; the page cache keeps them, but they
    /// would count in the resident set until evicted). Readers see no difference.
    pub fn forget_resident_pages(&self) -> Result<(), BtreeError> {
        let map = lock(&self.inner.shared).map.clone();
        io::forget_resident_pages(&map).map_err(self.inner.io_err("madvise"))
    }

    /// Starts the write transaction, waiting for the previous one to end. Fails with
    /// [`BtreeError::Poisoned`] after an I/O error.
    pub fn write(&self) -> Result<WriteTxn<'_>> {
        if self.is_poisoned() {
            return Err(BtreeError::Poisoned);
        }
        let mut w = lock(&self.inner.writer);
        if self.is_poisoned() {
            return Err(BtreeError::Poisoned);
        }
        let (meta, map, oldest) = {
            let sh = lock(&self.inner.shared);
            (sh.meta, sh.map.clone(), sh.readers.keys().next().copied())
        };
        // Release what no open reader can reach any more.
        while let Some((txid, _)) = w.pending.front() {
            if oldest.is_some_and(|o| o < *txid) {
                break;
            }
            let (_, pages) = w.pending.pop_front().expect("front exists");
            w.free.extend(pages);
        }
        Ok(WriteTxn {
            inner: &self.inner,
            w,
            map,
            base: meta,
            root: (meta.root != 0).then_some(Child::Clean(meta.root)),
            depth: meta.depth as usize,
            entries: meta.entries,
            user: meta.user,
            freed: Vec::new(),
            overflow: HashMap::new(),
            alloc: AllocState {
                hwm: meta.page_count,
                start_hwm: meta.page_count,
                taken: Vec::new(),
            },
            failed: false,
            committing: false,
            done: false,
        })
    }

    /// True once an I/O error has made the store refuse writes.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    /// Size and shape figures of the last commit.
    pub fn stats(&self) -> Stats {
        let sh = lock(&self.inner.shared);
        Stats {
            txid: sh.meta.txid,
            page_size: PAGE_SIZE,
            page_count: sh.meta.page_count,
            file_bytes: sh.file_len,
            free_pages: sh.free_pages,
            freelist_pages: sh.freelist_pages,
            depth: sh.meta.depth,
            entries: sh.meta.entries,
            readers: sh.readers.values().sum(),
            oldest_reader_txid: sh.readers.keys().next().copied(),
        }
    }

    /// Reads every page of the last commit and checks the whole file: checksums, key
    /// order and separator bounds, uniform depth, entry count, overflow runs, and that
    /// every page is used exactly once (by the tree, an overflow run, the free list, or
    /// listed as free). Runs on a snapshot, alongside readers and the writer.
    pub fn verify(&self) -> Result<VerifyReport> {
        verify::verify(&self.read())
    }

    /// Writes a compacted copy of the last commit into a new file at `path` (which must
    /// not exist): the same entries and metadata in the fewest pages, with no free list.
    /// Runs on a snapshot, alongside readers and the writer. (Offline defragmentation and
    /// backups; in-place online defragmentation is described in `docs/storage-format.md`.)
    pub fn compact_to(&self, path: impl AsRef<Path>) -> Result<Stats> {
        self.read().compact_to(path)
    }
}

impl ReadTxn {
    /// Writes a compacted copy of this snapshot into a new file at `path` (which must not
    /// exist): the same entries and metadata in the fewest pages, with no free list. The
    /// copy is durable when this returns; its `page_count` pages are the whole image (the
    /// file may be longer, as files grow in steps).
    pub fn compact_to(&self, path: impl AsRef<Path>) -> Result<Stats> {
        let path = path.as_ref();
        if path.exists() {
            return Err(BtreeError::AlreadyExists(path.to_path_buf()));
        }
        let snap = self;
        let dst = Store::open(path, Options::default())?;
        let mut w = dst.write()?;
        let mut batch = 0usize;
        for kv in snap.range(Bound::Unbounded, Bound::Unbounded) {
            let (k, v) = kv?;
            w.insert(k, v)?;
            batch += k.len() + v.len();
            if batch >= 64 << 20 {
                w.commit()?;
                w = dst.write()?;
                batch = 0;
            }
        }
        w.set_meta(&snap.meta());
        w.commit()?;
        Ok(dst.stats())
    }
}

/// Creates an empty store file: written as `<path>.tmp`, synced, renamed, directory synced.
fn create(path: &Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err(&tmp, "create"))?;
    f.set_len(2 * PAGE).map_err(io_err(&tmp, "ftruncate"))?;
    f.write_all_at(&Meta::empty().encode(), 0)
        .map_err(io_err(&tmp, "write meta page"))?;
    f.sync_all().map_err(io_err(&tmp, "fsync"))?;
    std::fs::rename(&tmp, path).map_err(io_err(path, "rename"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))?;
    Ok(())
}

/// Reads the committed free list: the free pages and the pages holding the list.
fn load_freelist(map: &[u8], meta: &Meta) -> Result<(BTreeSet<u64>, Vec<u64>)> {
    let mut free = BTreeSet::new();
    let mut pages = Vec::new();
    let mut id = meta.freelist;
    while id != 0 {
        if pages.len() as u64 >= meta.page_count {
            return Err(BtreeError::corrupt(id, "free list chain loops"));
        }
        let buf = page::checked_page(map, meta.page_count, id, Some(page::Kind::Freelist))?;
        pages.push(id);
        let (next, extents) = page::decode_freelist(buf, id)?;
        for e in extents {
            let (start, len) = page::unpack_extent(e);
            if start < 2 || start.saturating_add(len) > meta.page_count {
                return Err(BtreeError::corrupt(
                    id,
                    format!("free extent {start}+{len} outside 2..{}", meta.page_count),
                ));
            }
            for p in start..start + len {
                if !free.insert(p) {
                    return Err(BtreeError::corrupt(
                        id,
                        format!("page {p} listed free twice"),
                    ));
                }
            }
        }
        id = next;
    }
    if let Some(p) = pages.iter().find(|p| free.contains(p)) {
        return Err(BtreeError::corrupt(*p, "free list page is listed as free"));
    }
    Ok((free, pages))
}

/// Packs sorted, distinct page ids into extents.
fn extents(ids: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut len = 1;
        while i + (len as usize) < ids.len()
            && ids[i + len as usize] == start + len
            && len < MAX_EXTENT
        {
            len += 1;
        }
        out.push(page::pack_extent(start, len));
        i += len as usize;
    }
    out
}

/// A read transaction: a consistent snapshot of one commit. `Send + Sync`; hold it as long
/// as needed (the pages it can see are not reused until it is dropped, so long-lived
/// readers make the file grow).
pub struct ReadTxn {
    inner: Arc<Inner>,
    map: Arc<Mmap>,
    meta: Meta,
}

impl ReadTxn {
    fn src(&self) -> Src<'_> {
        Src {
            map: &self.map,
            page_count: self.meta.page_count,
            overflow: None,
        }
    }

    fn root(&self) -> Result<Option<View<'_>>> {
        if self.meta.root == 0 {
            return Ok(None);
        }
        self.src()
            .page(self.meta.root, self.meta.depth as usize)
            .map(Some)
    }

    /// The value of `key`, borrowed from the memory map.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        cursor::get(&self.src(), self.root()?, self.meta.depth as usize, key)
    }

    /// Entries with keys in `(start, end)`, in key order.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Range<'_> {
        Range::new(
            self.src(),
            self.root(),
            self.meta.depth as usize,
            start,
            end,
        )
    }

    /// The caller's metadata record of this commit.
    pub fn meta(&self) -> [u8; META_BYTES] {
        self.meta.user
    }

    /// Transaction id of the commit this snapshot shows.
    pub fn txid(&self) -> u64 {
        self.meta.txid
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.meta.entries
    }

    /// True if the snapshot holds no key.
    pub fn is_empty(&self) -> bool {
        self.meta.entries == 0
    }
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        let mut sh = lock(&self.inner.shared);
        if let Some(n) = sh.readers.get_mut(&self.meta.txid) {
            *n -= 1;
            if *n == 0 {
                sh.readers.remove(&self.meta.txid);
            }
        }
    }
}

/// The write transaction (one at a time per store). Reads see its own changes. Dropping
/// it without [`WriteTxn::commit`] aborts it. It holds the store's writer lock, so it stays
/// on the thread that started it (not `Send`).
pub struct WriteTxn<'s> {
    inner: &'s Inner,
    w: MutexGuard<'s, WriterState>,
    map: Arc<Mmap>,
    /// The commit this transaction builds on.
    base: Meta,
    root: Option<Child>,
    depth: usize,
    entries: u64,
    user: [u8; META_BYTES],
    /// Committed pages (reachable from `base`) this transaction made unreachable.
    freed: Vec<u64>,
    /// Overflow runs written by this transaction, by first page.
    overflow: HashMap<u64, Vec<u8>>,
    alloc: AllocState,
    failed: bool,
    committing: bool,
    done: bool,
}

impl<'s> WriteTxn<'s> {
    fn parts(&mut self) -> (Ctx<'_>, &mut Option<Child>, &mut usize) {
        let w = &mut *self.w;
        (
            Ctx {
                map: &self.map,
                page_count: self.base.page_count,
                freed: &mut self.freed,
                overflow: &mut self.overflow,
                free: &mut w.free,
                alloc: &mut self.alloc,
            },
            &mut self.root,
            &mut self.depth,
        )
    }

    fn src(&self) -> Src<'_> {
        Src {
            map: &self.map,
            page_count: self.base.page_count,
            overflow: Some(&self.overflow),
        }
    }

    fn root_view(&self) -> Result<Option<View<'_>>> {
        if self.failed {
            return Err(BtreeError::TxnFailed);
        }
        match &self.root {
            None => Ok(None),
            Some(c) => self.src().child(c, self.depth).map(Some),
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(BtreeError::TxnFailed);
        }
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(BtreeError::Poisoned);
        }
        Ok(())
    }

    /// The value of `key`, including this transaction's changes.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        cursor::get(&self.src(), self.root_view()?, self.depth, key)
    }

    /// Entries with keys in `(start, end)` in key order, including this transaction's
    /// changes.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Range<'_> {
        Range::new(self.src(), self.root_view(), self.depth, start, end)
    }

    /// Sets `key` to `value` (replacing any value).
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert_with(key, value, false)
    }

    /// [`WriteTxn::insert`] for keys that come in ascending order, each above every key
    /// of its kind already stored (revision records): a leaf that overflows splits right
    /// after the new entry (else right before it) and a branch whose last key it was keeps
    /// its keys and starts a new node, so such runs fill pages instead of leaving each half
    /// empty (bbolt's fill percent for
    /// etcd's sequential puts, in effect). A key that breaks the promise is stored all
    /// the same; only the page fill suffers.
    pub fn insert_ascending(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.insert_with(key, value, true)
    }

    fn insert_with(&mut self, key: &[u8], value: &[u8], ascending: bool) -> Result<()> {
        self.check_usable()?;
        if key.len() > MAX_KEY_BYTES {
            return Err(BtreeError::TooLarge {
                what: "key",
                size_bytes: key.len(),
                max_bytes: MAX_KEY_BYTES,
            });
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(BtreeError::TooLarge {
                what: "value",
                size_bytes: value.len(),
                max_bytes: MAX_VALUE_BYTES,
            });
        }
        match self.insert_inner(key, value, ascending) {
            Ok(added) => {
                self.entries += added as u64;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn insert_inner(&mut self, key: &[u8], value: &[u8], ascending: bool) -> Result<bool> {
        let (mut ctx, root, depth) = self.parts();
        let val = if page::fits_inline(key.len(), value.len()) {
            Val::Inline(value.to_vec())
        } else {
            let pages = page::overflow_pages(value.len());
            let id = ctx.alloc_run(pages);
            ctx.overflow.insert(id, page::encode_overflow(id, value));
            Val::Overflow {
                page: id,
                len: value.len() as u32,
            }
        };
        let Some(c) = root else {
            let size = page::LEAF_BASE + page::leaf_cell_size(key.len(), &val);
            *root = Some(Child::Dirty(Box::new(Node::Leaf(Leaf {
                entries: vec![(key.to_vec(), val)],
                size,
            }))));
            *depth = 1;
            return Ok(true);
        };
        let node = ctx.dirty(c, *depth)?;
        let edge = if ascending {
            node::Edge::Ascending
        } else {
            node::Edge::Rightmost
        };
        let (old, split) = node::insert(node, *depth, key, val, edge, &mut ctx)?;
        if let Some(s) = split {
            grow_root(root, depth, s)?;
        }
        Ok(match old {
            Some(v) => {
                ctx.drop_val(v);
                false
            }
            None => true,
        })
    }

    /// Removes `key`; true if it was there.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool> {
        self.check_usable()?;
        if self.get(key)?.is_none() {
            return Ok(false);
        }
        match self.remove_inner(key) {
            Ok(()) => {
                self.entries -= 1;
                Ok(true)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn remove_inner(&mut self, key: &[u8]) -> Result<()> {
        let (mut ctx, root, depth) = self.parts();
        let c = root.as_mut().expect("key was found");
        let node = ctx.dirty(c, *depth)?;
        let (old, split) = node::remove(node, *depth, key, &mut ctx)?;
        let old =
            old.ok_or_else(|| BtreeError::corrupt(0, "key found by lookup but not by removal"))?;
        ctx.drop_val(old);
        if let Some(s) = split {
            grow_root(root, depth, s)?;
        }
        // Shrink: a root branch with one child gives way to it; an empty root leaf goes.
        while let Some(Child::Dirty(n)) = root {
            match &mut **n {
                Node::Branch(b) if b.keys.is_empty() => {
                    let only = b.children.pop().expect("a branch has a child");
                    *root = Some(only);
                    *depth -= 1;
                }
                Node::Leaf(l) if l.entries.is_empty() => {
                    *root = None;
                    *depth = 0;
                    break;
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// Sets the metadata record committed with this transaction (by default the previous
    /// commit's).
    pub fn set_meta(&mut self, meta: &[u8; META_BYTES]) {
        self.user = *meta;
    }

    /// The metadata record this transaction will commit.
    pub fn meta(&self) -> [u8; META_BYTES] {
        self.user
    }

    /// The transaction id this transaction commits as.
    pub fn txid(&self) -> u64 {
        self.base.txid + 1
    }

    /// Number of keys, including this transaction's changes.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// True if no key is left.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Makes the transaction durable: new pages are written and synced, then the meta page.
    /// On an I/O error the store is poisoned (what reached the disk is either all of this
    /// transaction or none of it, decided at the next open).
    pub fn commit(mut self) -> Result<()> {
        self.check_usable()?;
        self.committing = true;
        let r = self.commit_inner();
        match &r {
            // Found before anything was written: abort (in Drop), the store stays usable.
            Err(BtreeError::Corrupt { .. }) => self.committing = false,
            Err(_) => {
                self.inner.poisoned.store(true, Ordering::Release);
                self.done = true;
            }
            Ok(()) => self.done = true,
        }
        r
    }

    /// Throws the transaction's changes away (the same as dropping it).
    pub fn abort(self) {}

    fn commit_inner(&mut self) -> Result<()> {
        let txid = self.base.txid + 1;
        let inner = self.inner;
        let mut pages: Vec<(u64, Vec<u8>)> = Vec::new();
        let w = &mut *self.w;
        let root = match &mut self.root {
            None => 0,
            Some(c) => node::spill(c, &mut self.alloc, &mut w.free, &mut pages),
        };
        pages.extend(self.overflow.drain());

        // The free list: everything not reachable from the new root, as of this commit.
        let changed = !pages.is_empty()
            || !self.freed.is_empty()
            || !self.alloc.taken.is_empty()
            || self.alloc.hwm != self.alloc.start_hwm;
        let mut freed = std::mem::take(&mut self.freed);
        let (freelist, fl_pages, free_count) = if changed {
            freed.extend_from_slice(&w.freelist_pages);
            let mut fl_pages: Vec<u64> = Vec::new();
            loop {
                let mut ids: Vec<u64> = w
                    .free
                    .iter()
                    .copied()
                    .chain(w.pending.iter().flat_map(|(_, p)| p.iter().copied()))
                    .chain(freed.iter().copied())
                    .collect();
                ids.sort_unstable();
                if let Some(p) = ids.windows(2).find(|p| p[0] == p[1]) {
                    // Only a damaged (checksum-valid but inconsistent) file gets here.
                    return Err(BtreeError::corrupt(
                        p[0],
                        "page freed twice (referenced twice in the tree)",
                    ));
                }
                let ext = extents(&ids);
                let need = ext.len().div_ceil(EXTENTS_PER_PAGE);
                if need <= fl_pages.len() {
                    for (j, &id) in fl_pages.iter().enumerate() {
                        let chunk = ext
                            .get(j * EXTENTS_PER_PAGE..)
                            .map(|c| &c[..c.len().min(EXTENTS_PER_PAGE)])
                            .unwrap_or(&[]);
                        let next = fl_pages.get(j + 1).copied().unwrap_or(0);
                        let mut buf = vec![0u8; PAGE_SIZE];
                        page::encode_freelist(id, next, chunk, &mut buf);
                        pages.push((id, buf));
                    }
                    break (
                        fl_pages.first().copied().unwrap_or(0),
                        fl_pages,
                        ids.len() as u64,
                    );
                }
                while fl_pages.len() < need {
                    fl_pages.push(self.alloc.alloc_one(&mut w.free));
                }
            }
        } else {
            let sh = lock(&inner.shared);
            (self.base.freelist, w.freelist_pages.clone(), sh.free_pages)
        };
        let meta = Meta {
            txid,
            root,
            freelist,
            page_count: self.alloc.hwm,
            entries: self.entries,
            depth: self.depth as u32,
            user: self.user,
        };

        // Grow and remap first, so that a failure leaves the old commit in place.
        let need_len = meta.page_count * PAGE;
        let mut new_map = None;
        if need_len > w.file_len {
            let len = io::grown_len(w.file_len, need_len);
            inner.io.set_len(len).map_err(inner.io_err("grow file"))?;
            w.file_len = len;
            let m = io::map(inner.io.file(), len).map_err(inner.io_err("mmap"))?;
            new_map = Some(Arc::new(m));
        }
        pages.sort_unstable_by_key(|(id, _)| *id);
        debug_assert!(
            pages
                .windows(2)
                .all(|p| p[0].0 + p[0].1.len() as u64 / PAGE <= p[1].0),
            "pages allocated twice"
        );
        write_coalesced(inner, &pages, &mut w.coalesce_buf)?;
        if !pages.is_empty() {
            inner
                .io
                .sync_data()
                .map_err(inner.io_err("fdatasync pages"))?;
        }
        inner
            .io
            .write_at(&meta.encode(), (txid % 2) * PAGE)
            .map_err(inner.io_err("pwrite meta page"))?;
        inner
            .io
            .sync_data()
            .map_err(inner.io_err("fdatasync meta page"))?;

        // Durable: publish.
        if changed {
            w.pending.push_back((txid, freed));
            w.freelist_pages = fl_pages;
        }
        let mut sh = lock(&inner.shared);
        sh.meta = meta;
        if let Some(m) = new_map {
            sh.map = m;
        }
        sh.free_pages = free_count;
        sh.freelist_pages = w.freelist_pages.len() as u64;
        sh.file_len = w.file_len;
        Ok(())
    }
}

/// Writes pages sorted by id, merging neighbours into one `pwrite` (up to 4 MiB).
fn write_coalesced(inner: &Inner, pages: &[(u64, Vec<u8>)], buf: &mut Vec<u8>) -> Result<()> {
    const MAX_WRITE: usize = 4 << 20;
    let mut i = 0;
    while i < pages.len() {
        let (start, first) = &pages[i];
        let mut end = start + first.len() as u64 / PAGE;
        let mut j = i + 1;
        while j < pages.len()
            && pages[j].0 == end
            && (end - start) as usize * PAGE_SIZE + pages[j].1.len() <= MAX_WRITE
        {
            end += pages[j].1.len() as u64 / PAGE;
            j += 1;
        }
        let data: &[u8] = if j == i + 1 {
            first
        } else {
            buf.clear();
            for (_, p) in &pages[i..j] {
                buf.extend_from_slice(p);
            }
            &buf[..]
        };
        inner
            .io
            .write_at(data, start * PAGE)
            .map_err(inner.io_err("pwrite pages"))?;
        i = j;
    }
    Ok(())
}

/// Puts a new root above a root that split.
fn grow_root(root: &mut Option<Child>, depth: &mut usize, s: node::Split) -> Result<()> {
    if *depth >= MAX_DEPTH {
        return Err(BtreeError::TooLarge {
            what: "tree depth",
            size_bytes: *depth + 1,
            max_bytes: MAX_DEPTH,
        });
    }
    let left = root.take().expect("a root that split exists");
    let size = page::BRANCH_BASE + page::branch_cell_size(s.key.len());
    *root = Some(Child::Dirty(Box::new(Node::Branch(Branch {
        keys: vec![s.key],
        children: vec![left, Child::Dirty(Box::new(s.right))],
        size,
    }))));
    *depth += 1;
    Ok(())
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.committing {
            // A panic in the middle of a commit: the disk state is unknown.
            self.inner.poisoned.store(true, Ordering::Release);
            return;
        }
        // Abort: give back what was taken from the free set, then forget every page past
        // the old end (pages this transaction allocated there, released again and took
        // back are in `taken` too).
        let w = &mut *self.w;
        w.free.extend(self.alloc.taken.drain(..));
        drop(w.free.split_off(&self.alloc.start_hwm));
    }
}
