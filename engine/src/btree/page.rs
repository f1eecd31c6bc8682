//! The byte layout of every page (see `docs/storage-format.md`), little-endian throughout.
//!
//! Two kinds of access live here:
//! - zero-copy accessors over a page slice (`leaf_cell`, `branch_child`, `leaf_search`, ...)
//!   used by readers and cursors: every offset is bounds-checked, so a malformed page gives
//!   [`BtreeError::Corrupt`], never a panic;
//! - the writer's codec: [`decode_node`] (full validation) and [`encode_node`].
//!
//! Checksums: every page carries a CRC-32C over the whole page (or the whole overflow run)
//! with the 4 checksum bytes left out; [`checked_page`] and [`checked_overflow`] verify it
//! before anything else is read.

use std::cmp::Ordering;

use super::error::{BtreeError, Result};
use super::node::{Branch, Child, Leaf, Node, Val};

/// Size of every page in bytes. Fixed for the format (recorded in the meta pages; a file
/// with another page size is refused).
pub const PAGE_SIZE: usize = 4096;
/// Size of the caller's metadata record stored in each meta page.
pub const META_BYTES: usize = 64;
/// Largest key accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted (etcd's default request limit is 1.5 MiB; this leaves room for
/// a raised `--max-request-bytes` and for the encoding around a value).
pub const MAX_VALUE_BYTES: usize = 32 << 20;
/// Deepest tree accepted (a deeper path on disk is reported as corruption; with 4 KiB pages
/// and keys of at most 1 KiB a tree never gets near it).
pub const MAX_DEPTH: usize = 32;

pub(crate) const PAGE: u64 = PAGE_SIZE as u64;
/// Format version written in the meta pages.
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const MAGIC: [u8; 8] = *b"CKVBTREE";

/// Common page header: kind u8, reserved u8, count u16, crc u32, page id u64.
pub(crate) const HEADER: usize = 16;
pub(crate) const SLOT: usize = 2;
/// Leaf cell header: key length u16, flags u8, value length u32.
pub(crate) const LEAF_CELL_HDR: usize = 7;
/// Branch cell header: key length u16, child page id u64.
pub(crate) const BRANCH_CELL_HDR: usize = 10;
/// Branch pages hold the leftmost child id right after the header.
pub(crate) const BRANCH_BASE: usize = HEADER + 8;
pub(crate) const LEAF_BASE: usize = HEADER;
/// Leaf cell flag: the value lives in an overflow run; the cell holds its first page id.
pub(crate) const FLAG_OVERFLOW: u8 = 1;
/// A leaf cell (slot included) at most this big keeps its value inline. A third of the
/// page body, so a node that overflows by one cell always splits into two that fit.
pub(crate) const MAX_INLINE_CELL: usize = (PAGE_SIZE - HEADER) / 3;
/// A node (leaf or branch) smaller than this after a removal is merged with a sibling
/// (or takes entries from it).
pub(crate) const MIN_FILL: usize = PAGE_SIZE / 4;
/// Overflow run header after the common header: pages u32, value length u32.
pub(crate) const OVERFLOW_DATA: usize = HEADER + 8;
/// Freelist page: next page id u64 after the header, then extents.
pub(crate) const FREELIST_DATA: usize = HEADER + 8;
pub(crate) const EXTENTS_PER_PAGE: usize = (PAGE_SIZE - FREELIST_DATA) / 8;
/// Longest extent one freelist entry can describe.
pub(crate) const MAX_EXTENT: u64 = 1 << 16;
const EXTENT_START_BITS: u32 = 48;

/// Bytes of the meta record covered by its checksum (the checksum follows).
pub(crate) const META_LEN: usize = 128;

/// Page kinds (byte 0 of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub(crate) enum Kind {
    Branch = 1,
    Leaf = 2,
    Overflow = 3,
    Freelist = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Branch),
            2 => Some(Kind::Leaf),
            3 => Some(Kind::Overflow),
            4 => Some(Kind::Freelist),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Little-endian helpers (bounds-checked readers return None instead of panicking).

#[inline]
pub(crate) fn get_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
#[inline]
pub(crate) fn get_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
#[inline]
pub(crate) fn get_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}
#[inline]
fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

// ---------------------------------------------------------------------------------------
// Header and checksum.

/// CRC-32C of `buf` with bytes 4..8 (the checksum field) left out.
pub(crate) fn page_crc(buf: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&buf[..4]), &buf[8..])
}

/// Writes the common header (with a zero checksum; [`seal`] fills it).
pub(crate) fn write_header(buf: &mut [u8], kind: Kind, count: u16, id: u64) {
    buf[0] = kind as u8;
    buf[1] = 0;
    put_u16(buf, 2, count);
    put_u32(buf, 4, 0);
    put_u64(buf, 8, id);
}

/// Computes and stores the checksum of a page or an overflow run.
pub(crate) fn seal(buf: &mut [u8]) {
    let crc = page_crc(buf);
    put_u32(buf, 4, crc);
}

pub(crate) fn kind_of(buf: &[u8]) -> Option<Kind> {
    Kind::from_u8(*buf.first()?)
}

pub(crate) fn count_of(buf: &[u8]) -> usize {
    get_u16(buf, 2).unwrap_or(0) as usize
}

/// Verifies checksum and header of an already-sliced page (exactly `PAGE_SIZE` bytes, or a
/// whole overflow run): the stored id must be `id` and the kind must be `want`.
pub(crate) fn verify_page(buf: &[u8], id: u64, want: Option<Kind>) -> Result<Kind> {
    if buf.len() < PAGE_SIZE {
        return Err(BtreeError::corrupt(
            id,
            "page is beyond the end of the file",
        ));
    }
    let stored = get_u32(buf, 4).unwrap_or(0);
    let actual = page_crc(buf);
    if stored != actual {
        return Err(BtreeError::corrupt(
            id,
            format!("checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"),
        ));
    }
    let kind = kind_of(buf)
        .ok_or_else(|| BtreeError::corrupt(id, format!("unknown page type {}", buf[0])))?;
    let stored_id = get_u64(buf, 8).unwrap_or(u64::MAX);
    if stored_id != id {
        return Err(BtreeError::corrupt(
            id,
            format!("page header names page {stored_id} (misdirected write or bad pointer)"),
        ));
    }
    if let Some(w) = want {
        if w != kind {
            return Err(BtreeError::corrupt(
                id,
                format!("expected a {w:?} page, found a {kind:?} page"),
            ));
        }
    }
    Ok(kind)
}

/// Checks that `id` may be referenced from a tree or freelist of a file with `page_count`
/// pages.
pub(crate) fn check_ref(from: u64, id: u64, page_count: u64) -> Result<()> {
    if id < 2 || id >= page_count {
        return Err(BtreeError::corrupt(
            from,
            format!("reference to page {id} outside 2..{page_count}"),
        ));
    }
    Ok(())
}

/// The page `id` of `map`, checksum and header verified. `page_count` is the committed
/// high-water mark of the snapshot reading it.
pub(crate) fn checked_page(
    map: &[u8],
    page_count: u64,
    id: u64,
    want: Option<Kind>,
) -> Result<&[u8]> {
    if id < 2 || id >= page_count {
        return Err(BtreeError::corrupt(
            id,
            format!("page id outside the tree area 2..{page_count}"),
        ));
    }
    let off = id.checked_mul(PAGE).and_then(|o| usize::try_from(o).ok());
    let buf = off
        .and_then(|o| map.get(o..o.checked_add(PAGE_SIZE)?))
        .ok_or_else(|| BtreeError::corrupt(id, "page is beyond the end of the file"))?;
    verify_page(buf, id, want)?;
    Ok(buf)
}

/// Number of pages an overflow run holding `len` value bytes occupies.
pub(crate) fn overflow_pages(len: usize) -> u64 {
    (OVERFLOW_DATA + len).div_ceil(PAGE_SIZE) as u64
}

/// Builds an overflow run for `value` starting at page `id` (checksum included).
pub(crate) fn encode_overflow(id: u64, value: &[u8]) -> Vec<u8> {
    let pages = overflow_pages(value.len());
    let mut buf = vec![0u8; pages as usize * PAGE_SIZE];
    write_header(&mut buf, Kind::Overflow, 0, id);
    put_u32(&mut buf, HEADER, pages as u32);
    put_u32(&mut buf, HEADER + 4, value.len() as u32);
    buf[OVERFLOW_DATA..OVERFLOW_DATA + value.len()].copy_from_slice(value);
    seal(&mut buf);
    buf
}

/// Validates an overflow run held in memory or sliced from the map and returns its value.
/// `len` is the length the leaf cell promised.
pub(crate) fn overflow_value(run: &[u8], id: u64, len: u32) -> Result<&[u8]> {
    let pages = get_u32(run, HEADER).unwrap_or(0) as u64;
    let stored_len = get_u32(run, HEADER + 4).unwrap_or(0);
    if stored_len != len {
        return Err(BtreeError::corrupt(
            id,
            format!("overflow run holds {stored_len} bytes, the leaf expects {len}"),
        ));
    }
    if pages != overflow_pages(len as usize) || run.len() as u64 != pages * PAGE {
        return Err(BtreeError::corrupt(
            id,
            format!("overflow run of {pages} pages cannot hold {len} bytes"),
        ));
    }
    run.get(OVERFLOW_DATA..OVERFLOW_DATA + len as usize)
        .ok_or_else(|| BtreeError::corrupt(id, "overflow run too short"))
}

/// The value stored in the overflow run starting at `id`, checksum verified.
pub(crate) fn checked_overflow(map: &[u8], page_count: u64, id: u64, len: u32) -> Result<&[u8]> {
    if len as usize > MAX_VALUE_BYTES {
        return Err(BtreeError::corrupt(
            id,
            format!("overflow value length {len} over the limit"),
        ));
    }
    let pages = overflow_pages(len as usize);
    if id < 2 || id.saturating_add(pages) > page_count {
        return Err(BtreeError::corrupt(
            id,
            format!("overflow run of {pages} pages outside the tree area 2..{page_count}"),
        ));
    }
    let off = (id * PAGE) as usize;
    let run = map
        .get(off..off + (pages * PAGE) as usize)
        .ok_or_else(|| BtreeError::corrupt(id, "overflow run is beyond the end of the file"))?;
    // The header must describe the run the leaf expects before the run is hashed (a
    // mismatch means a stale or wrong reference, reported as such).
    if kind_of(run) == Some(Kind::Overflow) && get_u64(run, 8) == Some(id) {
        overflow_value(run, id, len)?;
    }
    verify_page(run, id, Some(Kind::Overflow))?;
    overflow_value(run, id, len)
}

// ---------------------------------------------------------------------------------------
// Zero-copy leaf and branch accessors.

/// A value as found in a leaf: inline bytes, or a reference to an overflow run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ValRef<'a> {
    Inline(&'a [u8]),
    Overflow { page: u64, len: u32 },
}

fn slot(buf: &[u8], id: u64, base: usize, i: usize) -> Result<usize> {
    let off = get_u16(buf, base + SLOT * i)
        .ok_or_else(|| BtreeError::corrupt(id, format!("slot {i} outside the page")))?
        as usize;
    let count = count_of(buf);
    if off < base + SLOT * count || off >= PAGE_SIZE {
        return Err(BtreeError::corrupt(
            id,
            format!("cell offset {off} of slot {i} out of bounds"),
        ));
    }
    Ok(off)
}

/// Cell `i` of a leaf page: key and value reference.
pub(crate) fn leaf_cell(buf: &[u8], id: u64, i: usize) -> Result<(&[u8], ValRef<'_>)> {
    let off = slot(buf, id, LEAF_BASE, i)?;
    let bad = || BtreeError::corrupt(id, format!("leaf cell {i} at offset {off} out of bounds"));
    let klen = get_u16(buf, off).ok_or_else(bad)? as usize;
    let flags = *buf.get(off + 2).ok_or_else(bad)?;
    let vlen = get_u32(buf, off + 3).ok_or_else(bad)?;
    let kstart = off + LEAF_CELL_HDR;
    let key = buf.get(kstart..kstart + klen).ok_or_else(bad)?;
    let vstart = kstart + klen;
    let val = if flags & FLAG_OVERFLOW != 0 {
        let page = get_u64(buf, vstart).ok_or_else(bad)?;
        ValRef::Overflow { page, len: vlen }
    } else {
        ValRef::Inline(buf.get(vstart..vstart + vlen as usize).ok_or_else(bad)?)
    };
    Ok((key, val))
}

/// Key `i` (0-based, `count` keys) of a branch page.
pub(crate) fn branch_key(buf: &[u8], id: u64, i: usize) -> Result<&[u8]> {
    let off = slot(buf, id, BRANCH_BASE, i)?;
    let klen = get_u16(buf, off).unwrap_or(u16::MAX) as usize;
    let kstart = off + BRANCH_CELL_HDR;
    buf.get(kstart..kstart + klen).ok_or_else(|| {
        BtreeError::corrupt(id, format!("branch cell {i} at offset {off} out of bounds"))
    })
}

/// Child `i` (0..=count) of a branch page.
pub(crate) fn branch_child(buf: &[u8], id: u64, i: usize) -> Result<u64> {
    if i == 0 {
        return get_u64(buf, HEADER).ok_or_else(|| BtreeError::corrupt(id, "short branch"));
    }
    let off = slot(buf, id, BRANCH_BASE, i - 1)?;
    get_u64(buf, off + 2).ok_or_else(|| {
        BtreeError::corrupt(
            id,
            format!("branch cell {} at offset {off} out of bounds", i - 1),
        )
    })
}

fn check_count(buf: &[u8], id: u64, base: usize) -> Result<usize> {
    let n = count_of(buf);
    if base + SLOT * n > PAGE_SIZE {
        return Err(BtreeError::corrupt(id, format!("count {n} too large")));
    }
    Ok(n)
}

/// Number of cells of a leaf page.
pub(crate) fn leaf_len(buf: &[u8], id: u64) -> Result<usize> {
    check_count(buf, id, LEAF_BASE)
}

/// Number of keys of a branch page (it has one more child).
pub(crate) fn branch_len(buf: &[u8], id: u64) -> Result<usize> {
    check_count(buf, id, BRANCH_BASE)
}

/// Binary search of a leaf: `Ok(i)` if cell `i` holds `key`, else `Err(i)` where it would go.
pub(crate) fn leaf_search(buf: &[u8], id: u64, key: &[u8]) -> Result<Result<usize, usize>> {
    let (mut lo, mut hi) = (0, leaf_len(buf, id)?);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (k, _) = leaf_cell(buf, id, mid)?;
        match k.cmp(key) {
            Ordering::Less => lo = mid + 1,
            Ordering::Greater => hi = mid,
            Ordering::Equal => return Ok(Ok(mid)),
        }
    }
    Ok(Err(lo))
}

/// Index of the child of a branch page whose subtree may hold `key`: the number of
/// separator keys `<= key`.
pub(crate) fn branch_search(buf: &[u8], id: u64, key: &[u8]) -> Result<usize> {
    let (mut lo, mut hi) = (0, branch_len(buf, id)?);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if branch_key(buf, id, mid)? <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

// ---------------------------------------------------------------------------------------
// The writer's codec.

/// Size of a leaf cell (slot included).
pub(crate) fn leaf_cell_size(klen: usize, val: &Val) -> usize {
    SLOT + LEAF_CELL_HDR
        + klen
        + match val {
            Val::Inline(v) => v.len(),
            Val::Overflow { .. } => 8,
        }
}

/// Size of a branch cell (slot included).
pub(crate) fn branch_cell_size(klen: usize) -> usize {
    SLOT + BRANCH_CELL_HDR + klen
}

/// True if a value of `vlen` bytes under a key of `klen` bytes is stored inline.
pub(crate) fn fits_inline(klen: usize, vlen: usize) -> bool {
    SLOT + LEAF_CELL_HDR + klen + vlen <= MAX_INLINE_CELL
}

/// Decodes and fully validates a branch or leaf page (checksum already verified):
/// every cell in bounds, keys strictly increasing and at most `MAX_KEY_BYTES`, inline
/// values within the inline limit, child references inside `2..page_count`.
pub(crate) fn decode_node(buf: &[u8], id: u64, page_count: u64) -> Result<Node> {
    match kind_of(buf) {
        Some(Kind::Leaf) => {
            let n = leaf_len(buf, id)?;
            let mut entries = Vec::with_capacity(n);
            let mut size = LEAF_BASE;
            for i in 0..n {
                let (k, v) = leaf_cell(buf, id, i)?;
                check_key(
                    id,
                    i,
                    k,
                    entries.last().map(|(p, _): &(Vec<u8>, Val)| &p[..]),
                )?;
                let val = match v {
                    ValRef::Inline(b) => {
                        if !fits_inline(k.len(), b.len()) {
                            return Err(BtreeError::corrupt(
                                id,
                                format!("inline value of {} bytes over the inline limit", b.len()),
                            ));
                        }
                        Val::Inline(b.to_vec())
                    }
                    ValRef::Overflow { page, len } => {
                        if len as usize > MAX_VALUE_BYTES || fits_inline(k.len(), len as usize) {
                            return Err(BtreeError::corrupt(
                                id,
                                format!("overflow value length {len} out of range"),
                            ));
                        }
                        let pages = overflow_pages(len as usize);
                        if page < 2 || page.saturating_add(pages) > page_count {
                            return Err(BtreeError::corrupt(
                                id,
                                format!("overflow run {page}+{pages} outside 2..{page_count}"),
                            ));
                        }
                        Val::Overflow { page, len }
                    }
                };
                size += leaf_cell_size(k.len(), &val);
                entries.push((k.to_vec(), val));
            }
            if size > PAGE_SIZE {
                return Err(BtreeError::corrupt(id, "leaf cells overlap"));
            }
            Ok(Node::Leaf(Leaf { entries, size }))
        }
        Some(Kind::Branch) => {
            let n = branch_len(buf, id)?;
            let mut keys: Vec<Vec<u8>> = Vec::with_capacity(n);
            let mut children = Vec::with_capacity(n + 1);
            let mut size = BRANCH_BASE;
            for i in 0..=n {
                let c = branch_child(buf, id, i)?;
                check_ref(id, c, page_count)?;
                children.push(Child::Clean(c));
            }
            for i in 0..n {
                let k = branch_key(buf, id, i)?;
                check_key(id, i, k, keys.last().map(|p| &p[..]))?;
                size += branch_cell_size(k.len());
                keys.push(k.to_vec());
            }
            if size > PAGE_SIZE {
                return Err(BtreeError::corrupt(id, "branch cells overlap"));
            }
            Ok(Node::Branch(Branch {
                keys,
                children,
                size,
            }))
        }
        other => Err(BtreeError::corrupt(
            id,
            format!("expected a tree page, found {other:?}"),
        )),
    }
}

fn check_key(id: u64, i: usize, k: &[u8], prev: Option<&[u8]>) -> Result<()> {
    if k.len() > MAX_KEY_BYTES {
        return Err(BtreeError::corrupt(
            id,
            format!("key {i} of {} bytes over the limit", k.len()),
        ));
    }
    if let Some(p) = prev {
        if p >= k {
            return Err(BtreeError::corrupt(id, format!("key {i} out of order")));
        }
    }
    Ok(())
}

/// Encodes a leaf or a branch whose children are all clean into `buf` (one page) and
/// seals it.
pub(crate) fn encode_node(node: &Node, id: u64, buf: &mut [u8]) {
    assert!(buf.len() == PAGE_SIZE && node.size() <= PAGE_SIZE);
    buf.fill(0);
    match node {
        Node::Leaf(l) => {
            write_header(buf, Kind::Leaf, l.entries.len() as u16, id);
            let mut off = LEAF_BASE + SLOT * l.entries.len();
            for (i, (k, v)) in l.entries.iter().enumerate() {
                put_u16(buf, LEAF_BASE + SLOT * i, off as u16);
                put_u16(buf, off, k.len() as u16);
                let (flags, vlen) = match v {
                    Val::Inline(b) => (0, b.len() as u32),
                    Val::Overflow { len, .. } => (FLAG_OVERFLOW, *len),
                };
                buf[off + 2] = flags;
                put_u32(buf, off + 3, vlen);
                off += LEAF_CELL_HDR;
                buf[off..off + k.len()].copy_from_slice(k);
                off += k.len();
                match v {
                    Val::Inline(b) => {
                        buf[off..off + b.len()].copy_from_slice(b);
                        off += b.len();
                    }
                    Val::Overflow { page, .. } => {
                        put_u64(buf, off, *page);
                        off += 8;
                    }
                }
            }
        }
        Node::Branch(b) => {
            write_header(buf, Kind::Branch, b.keys.len() as u16, id);
            put_u64(buf, HEADER, b.children[0].page_id());
            let mut off = BRANCH_BASE + SLOT * b.keys.len();
            for (i, k) in b.keys.iter().enumerate() {
                put_u16(buf, BRANCH_BASE + SLOT * i, off as u16);
                put_u16(buf, off, k.len() as u16);
                put_u64(buf, off + 2, b.children[i + 1].page_id());
                off += BRANCH_CELL_HDR;
                buf[off..off + k.len()].copy_from_slice(k);
                off += k.len();
            }
        }
    }
    seal(buf);
}

// ---------------------------------------------------------------------------------------
// Freelist pages.

/// Packs one extent (a run of `len` >= 1 consecutive free pages from `start`).
pub(crate) fn pack_extent(start: u64, len: u64) -> u64 {
    debug_assert!((1..=MAX_EXTENT).contains(&len) && start < (1 << EXTENT_START_BITS));
    start | ((len - 1) << EXTENT_START_BITS)
}

/// Unpacks an extent into `(start, len)`.
pub(crate) fn unpack_extent(e: u64) -> (u64, u64) {
    (
        e & ((1 << EXTENT_START_BITS) - 1),
        (e >> EXTENT_START_BITS) + 1,
    )
}

/// Encodes one freelist page.
pub(crate) fn encode_freelist(id: u64, next: u64, extents: &[u64], buf: &mut [u8]) {
    assert!(extents.len() <= EXTENTS_PER_PAGE && buf.len() == PAGE_SIZE);
    buf.fill(0);
    write_header(buf, Kind::Freelist, extents.len() as u16, id);
    put_u64(buf, HEADER, next);
    for (i, e) in extents.iter().enumerate() {
        put_u64(buf, FREELIST_DATA + 8 * i, *e);
    }
    seal(buf);
}

/// Decodes a verified freelist page: `(next, extents)`.
pub(crate) fn decode_freelist(
    buf: &[u8],
    id: u64,
) -> Result<(u64, impl Iterator<Item = u64> + '_)> {
    let n = count_of(buf);
    if n > EXTENTS_PER_PAGE {
        return Err(BtreeError::corrupt(
            id,
            format!("freelist count {n} too large"),
        ));
    }
    let next = get_u64(buf, HEADER).unwrap_or(0);
    Ok((
        next,
        (0..n).map(move |i| get_u64(buf, FREELIST_DATA + 8 * i).unwrap_or(0)),
    ))
}

// ---------------------------------------------------------------------------------------
// Meta pages.

/// The decoded content of a meta page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub txid: u64,
    /// Root page of the tree; 0 for an empty tree.
    pub root: u64,
    /// First freelist page; 0 when there is none.
    pub freelist: u64,
    /// High-water mark: pages `0..page_count` are in use or free.
    pub page_count: u64,
    /// Number of keys in the tree.
    pub entries: u64,
    /// Levels of the tree: 0 empty, 1 when the root is a leaf.
    pub depth: u32,
    pub user: [u8; META_BYTES],
}

impl Meta {
    pub(crate) fn empty() -> Meta {
        Meta {
            txid: 0,
            root: 0,
            freelist: 0,
            page_count: 2,
            entries: 0,
            depth: 0,
            user: [0; META_BYTES],
        }
    }

    /// Encodes the meta page (a whole page, zero after the checksum).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; PAGE_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        put_u32(&mut b, 8, FORMAT_VERSION);
        put_u32(&mut b, 12, PAGE_SIZE as u32);
        put_u64(&mut b, 16, self.txid);
        put_u64(&mut b, 24, self.root);
        put_u64(&mut b, 32, self.freelist);
        put_u64(&mut b, 40, self.page_count);
        put_u64(&mut b, 48, self.entries);
        put_u32(&mut b, 56, self.depth);
        put_u32(&mut b, 60, 0);
        b[64..64 + META_BYTES].copy_from_slice(&self.user);
        let crc = crc32c::crc32c(&b[..META_LEN]);
        put_u32(&mut b, META_LEN, crc);
        b
    }

    /// Decodes and validates the meta page in slot `slot` (0 or 1).
    pub(crate) fn decode(b: &[u8], slot: u64) -> Result<Meta> {
        let bad = |r: String| BtreeError::corrupt(slot, format!("meta page: {r}"));
        if b.len() < META_LEN + 4 {
            return Err(bad("short".into()));
        }
        if b[0..8] != MAGIC {
            return Err(bad(
                "bad magic (not a corekv btree file, or never written)".into()
            ));
        }
        let stored = get_u32(b, META_LEN).unwrap_or(0);
        let actual = crc32c::crc32c(&b[..META_LEN]);
        if stored != actual {
            return Err(bad(format!(
                "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
            )));
        }
        let version = get_u32(b, 8).unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        let ps = get_u32(b, 12).unwrap_or(0);
        if ps as usize != PAGE_SIZE {
            return Err(bad(format!("page size {ps}, this build uses {PAGE_SIZE}")));
        }
        let mut user = [0u8; META_BYTES];
        user.copy_from_slice(&b[64..64 + META_BYTES]);
        let m = Meta {
            txid: get_u64(b, 16).unwrap_or(0),
            root: get_u64(b, 24).unwrap_or(0),
            freelist: get_u64(b, 32).unwrap_or(0),
            page_count: get_u64(b, 40).unwrap_or(0),
            entries: get_u64(b, 48).unwrap_or(0),
            depth: get_u32(b, 56).unwrap_or(0),
            user,
        };
        if m.txid % 2 != slot {
            return Err(bad(format!(
                "txid {} does not belong in slot {slot}",
                m.txid
            )));
        }
        if m.page_count < 2 || m.page_count >= 1 << EXTENT_START_BITS {
            return Err(bad(format!("page count {}", m.page_count)));
        }
        let in_range = |p: u64| p == 0 || (2..m.page_count).contains(&p);
        if !in_range(m.root) || !in_range(m.freelist) {
            return Err(bad(format!(
                "root {} or freelist {} outside 2..{}",
                m.root, m.freelist, m.page_count
            )));
        }
        if m.depth as usize > MAX_DEPTH || (m.root == 0) != (m.depth == 0) {
            return Err(bad(format!("depth {} with root {}", m.depth, m.root)));
        }
        if m.root == 0 && m.entries != 0 {
            return Err(bad(format!("{} entries in an empty tree", m.entries)));
        }
        Ok(m)
    }
}
