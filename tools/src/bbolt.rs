//! A read-only parser of bbolt files (etcd's backend database, and what `etcdctl snapshot
//! save` writes), written from the format: no bbolt code is used.
//!
//! Layout (all integers little-endian, as bbolt writes them on the machines etcd ships for):
//!
//! - The file is a sequence of pages of `page_size` bytes (4096 usually; recorded in the
//!   meta pages). Every page starts with a 16-byte header: `id u64`, `flags u16`,
//!   `count u16`, `overflow u32` (the page continues over `overflow` more pages).
//! - Pages 0 and 1 are meta pages (flag 0x04). After the header: `magic u32 = 0xED0CDAED`,
//!   `version u32 = 2`, `page_size u32`, `flags u32`, the root bucket `{root pgid u64,
//!   sequence u64}`, `freelist pgid u64`, `pgid u64` (high-water mark: pages in use),
//!   `txid u64`, `checksum u64` (FNV-1a 64 over the 56 bytes before it). The valid meta with
//!   the higher txid is the current one.
//! - Branch pages (flag 0x01) hold `count` elements `{pos u32, ksize u32, pgid u64}`;
//!   leaf pages (flag 0x02) hold `count` elements `{flags u32, pos u32, ksize u32,
//!   vsize u32}`. Elements start right after the page header, 16 bytes each; `pos` is the
//!   offset of the key from the element itself, and a leaf's value follows its key.
//! - A leaf element with flag 0x01 is a nested bucket: its value is a bucket header
//!   `{root pgid u64, sequence u64}`; root 0 means an inline bucket, whose leaf page (header
//!   and elements) follows the bucket header inside the value.
//! - The root bucket (from the meta page) lists the top-level buckets by name.
//!
//! Every page id, element and length is checked against the file before it is used, each
//! page may be reached once only, and keys must ascend within a bucket: damaged input is an
//! error naming the page, never a panic or a loop.

use std::collections::HashSet;

const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const META_BYTES: usize = 64;
const BUCKET_HEADER: usize = 16;
const BRANCH_FLAG: u16 = 0x01;
const LEAF_FLAG: u16 = 0x02;
const META_FLAG: u16 = 0x04;
const BUCKET_LEAF_FLAG: u32 = 0x01;
pub const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
/// Deeper than any real tree (bbolt's fill makes a depth of 10 need astronomical sizes).
const MAX_DEPTH: usize = 64;
/// Page sizes tried when meta page 0 is unusable.
const PAGE_SIZES: [usize; 5] = [4096, 8192, 16384, 32768, 65536];

/// The current meta page's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: u64,
    pub root_sequence: u64,
    pub freelist: u64,
    /// High-water mark: pages `0..pgid` are in use or free.
    pub pgid: u64,
    pub txid: u64,
}

/// An open bbolt image (borrowed bytes).
pub struct Db<'a> {
    data: &'a [u8],
    page_size: usize,
    meta: Meta,
}

/// Where a bucket's tree is.
#[derive(Clone, Copy, Debug)]
pub enum Bucket<'a> {
    /// Its root page.
    Page(u64),
    /// An inline bucket: the bytes of its leaf page.
    Inline(&'a [u8]),
}

/// One entry of a bucket, in key order.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub key: &'a [u8],
    /// The value; for a nested bucket, its header (and inline page).
    pub value: &'a [u8],
    /// A nested bucket rather than a value.
    pub bucket: Option<Bucket<'a>>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// FNV-1a, 64 bits (bbolt's meta checksum).
pub fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// True if `data` starts like a bbolt file (a meta page with bbolt's magic at page 0, or
/// at page 1 for one of the usual page sizes).
pub fn looks_like_bbolt(data: &[u8]) -> bool {
    let magic_at = |off: usize| {
        data.len() >= off + PAGE_HEADER + 4 && u32_at(data, off + PAGE_HEADER) == MAGIC
    };
    magic_at(0) || PAGE_SIZES.iter().any(|&ps| magic_at(ps))
}

/// Decodes and validates the meta page at byte `off` (page `slot`).
fn read_meta(data: &[u8], off: usize, slot: u64) -> Result<Meta, String> {
    let page = data
        .get(off..off + PAGE_HEADER + META_BYTES)
        .ok_or_else(|| {
            format!(
                "meta page {slot}: file of {} bytes ends before it",
                data.len()
            )
        })?;
    let flags = u16_at(page, 8);
    if flags & META_FLAG == 0 {
        return Err(format!(
            "meta page {slot}: page flags {flags:#06x} are not a meta page's"
        ));
    }
    let m = &page[PAGE_HEADER..];
    if u32_at(m, 0) != MAGIC {
        return Err(format!(
            "meta page {slot}: bad magic {:#010x}",
            u32_at(m, 0)
        ));
    }
    if u32_at(m, 4) != VERSION {
        return Err(format!(
            "meta page {slot}: unsupported bbolt version {}",
            u32_at(m, 4)
        ));
    }
    let sum = u64_at(m, 56);
    if sum != 0 && sum != fnv64a(&m[..56]) {
        return Err(format!("meta page {slot}: checksum mismatch"));
    }
    let meta = Meta {
        page_size: u32_at(m, 8),
        flags: u32_at(m, 12),
        root: u64_at(m, 16),
        root_sequence: u64_at(m, 24),
        freelist: u64_at(m, 32),
        pgid: u64_at(m, 40),
        txid: u64_at(m, 48),
    };
    let ps = meta.page_size as usize;
    if !(512..=1 << 20).contains(&ps) || !ps.is_power_of_two() {
        return Err(format!("meta page {slot}: implausible page size {ps}"));
    }
    if meta.pgid < 2 || meta.root < 2 || meta.root >= meta.pgid {
        return Err(format!(
            "meta page {slot}: root page {} / high-water mark {} out of range",
            meta.root, meta.pgid
        ));
    }
    Ok(meta)
}

impl<'a> Db<'a> {
    /// Reads the meta pages of `data` (the whole file, any trailing hash removed) and picks
    /// the current one. The file must hold the high-water mark's pages.
    pub fn open(data: &'a [u8]) -> Result<Db<'a>, String> {
        let m0 = read_meta(data, 0, 0);
        let page_size = match &m0 {
            Ok(m) => m.page_size as usize,
            Err(e) => PAGE_SIZES
                .iter()
                .copied()
                .find(|&ps| read_meta(data, ps, 1).is_ok_and(|m| m.page_size as usize == ps))
                .ok_or_else(|| format!("no valid meta page: {e}"))?,
        };
        let m1 = read_meta(data, page_size, 1).and_then(|m| {
            if m.page_size as usize == page_size {
                Ok(m)
            } else {
                Err(format!(
                    "meta page 1: page size {} differs from meta page 0's {page_size}",
                    m.page_size
                ))
            }
        });
        let meta = match (m0, m1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => m,
            (Err(e), Err(_)) => return Err(format!("no valid meta page: {e}")),
        };
        let need = meta
            .pgid
            .checked_mul(page_size as u64)
            .ok_or("high-water mark overflows")?;
        if (data.len() as u64) < need {
            return Err(format!(
                "file of {} bytes is shorter than its {} pages of {page_size} bytes: truncated",
                data.len(),
                meta.pgid
            ));
        }
        Ok(Db {
            data,
            page_size,
            meta,
        })
    }

    #[allow(dead_code)] // the tests read the txid; the tool needs only what `open` checks
    pub fn meta(&self) -> Meta {
        self.meta
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// bbolt's `tx.Size()`: the bytes up to the high-water mark.
    pub fn size(&self) -> u64 {
        self.meta.pgid * self.page_size as u64
    }

    /// The root bucket (whose entries are the top-level buckets).
    pub fn root(&self) -> Bucket<'a> {
        Bucket::Page(self.meta.root)
    }

    /// A walker that remembers the pages it has read (a page reached twice is corruption).
    pub fn walker(&self) -> Walker<'_, 'a> {
        Walker {
            db: self,
            visited: HashSet::new(),
        }
    }

    /// The bytes of page `id` and its overflow pages, checked against the file.
    fn page(&self, id: u64) -> Result<&'a [u8], String> {
        if id < 2 || id >= self.meta.pgid {
            return Err(format!("page id {id} outside 2..{}", self.meta.pgid));
        }
        let ps = self.page_size as u64;
        let off = (id * ps) as usize;
        let head = &self.data[off..off + PAGE_HEADER];
        if u64_at(head, 0) != id {
            return Err(format!("page {id}: header names page {}", u64_at(head, 0)));
        }
        let overflow = u32_at(head, 12) as u64;
        if id + 1 + overflow > self.meta.pgid {
            return Err(format!(
                "page {id}: {overflow} overflow pages run past the high-water mark {}",
                self.meta.pgid
            ));
        }
        Ok(&self.data[off..off + ((1 + overflow) * ps) as usize])
    }
}

/// Walks buckets; see [`Db::walker`].
pub struct Walker<'d, 'a> {
    db: &'d Db<'a>,
    visited: HashSet<u64>,
}

impl<'a> Walker<'_, 'a> {
    /// Calls `f` on every entry of `bucket` in key order (nested buckets are reported, not
    /// entered), stopping at the first error.
    pub fn for_each(
        &mut self,
        bucket: Bucket<'a>,
        f: &mut dyn FnMut(Entry<'a>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut last: Option<&'a [u8]> = None;
        let mut check_order = |e: Entry<'a>| -> Result<(), String> {
            if last.is_some_and(|l| l >= e.key) {
                return Err(format!(
                    "keys out of order: {:02x?} after {:02x?}",
                    e.key,
                    last.unwrap_or_default()
                ));
            }
            last = Some(e.key);
            f(e)
        };
        match bucket {
            Bucket::Inline(page) => leaf(page, "inline bucket", &mut check_order),
            Bucket::Page(id) => self.walk(id, 0, &mut check_order),
        }
    }

    fn walk(
        &mut self,
        id: u64,
        depth: usize,
        f: &mut dyn FnMut(Entry<'a>) -> Result<(), String>,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("page {id}: tree deeper than {MAX_DEPTH} levels"));
        }
        if !self.visited.insert(id) {
            return Err(format!("page {id} is referenced twice"));
        }
        let page = self.db.page(id)?;
        let flags = u16_at(page, 8);
        match flags {
            BRANCH_FLAG => {
                for child in branch_children(page, id)? {
                    self.walk(child, depth + 1, f)?;
                }
                Ok(())
            }
            LEAF_FLAG => leaf(page, &format!("page {id}"), f),
            other => Err(format!(
                "page {id}: flags {other:#06x} are neither a branch's nor a leaf's"
            )),
        }
    }
}

/// The element table of a page: `count` elements of 16 bytes after the header.
fn elements<'p>(page: &'p [u8], what: &str) -> Result<(usize, &'p [u8]), String> {
    if page.len() < PAGE_HEADER {
        return Err(format!(
            "{what}: {} bytes are shorter than a page header",
            page.len()
        ));
    }
    let count = u16_at(page, 10) as usize;
    let end = PAGE_HEADER + count * ELEMENT;
    if end > page.len() {
        return Err(format!(
            "{what}: {count} elements overrun its {} bytes",
            page.len()
        ));
    }
    Ok((count, page))
}

/// `len` bytes at `pos` from the element at `elem`, inside `page`.
fn slice_at<'p>(
    page: &'p [u8],
    elem: usize,
    pos: u32,
    len: u64,
    what: &str,
    i: usize,
) -> Result<&'p [u8], String> {
    let start = elem as u64 + pos as u64;
    let end = start + len;
    if end > page.len() as u64 {
        return Err(format!(
            "{what}: element {i} ({len} bytes at {start}) overruns the page's {} bytes",
            page.len()
        ));
    }
    Ok(&page[start as usize..end as usize])
}

fn branch_children(page: &[u8], id: u64) -> Result<Vec<u64>, String> {
    let what = format!("page {id}");
    let (count, page) = elements(page, &what)?;
    if count == 0 {
        return Err(format!("{what}: branch page without elements"));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = PAGE_HEADER + i * ELEMENT;
        // The key is only bounds-checked: lookups use it, a full walk does not.
        slice_at(
            page,
            e,
            u32_at(page, e),
            u32_at(page, e + 4) as u64,
            &what,
            i,
        )?;
        out.push(u64_at(page, e + 8));
    }
    Ok(out)
}

fn leaf<'a>(
    page: &'a [u8],
    what: &str,
    f: &mut dyn FnMut(Entry<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let (count, page) = elements(page, what)?;
    let flags = u16_at(page, 8);
    if flags != LEAF_FLAG {
        return Err(format!("{what}: flags {flags:#06x} are not a leaf's"));
    }
    for i in 0..count {
        let e = PAGE_HEADER + i * ELEMENT;
        let eflags = u32_at(page, e);
        let (pos, ksize, vsize) = (
            u32_at(page, e + 4),
            u32_at(page, e + 8) as u64,
            u32_at(page, e + 12) as u64,
        );
        let both = slice_at(page, e, pos, ksize + vsize, what, i)?;
        let (key, value) = both.split_at(ksize as usize);
        let bucket = if eflags & BUCKET_LEAF_FLAG != 0 {
            if value.len() < BUCKET_HEADER {
                return Err(format!(
                    "{what}: bucket {key:02x?} has a {}-byte header",
                    value.len()
                ));
            }
            Some(match u64_at(value, 0) {
                0 => Bucket::Inline(&value[BUCKET_HEADER..]),
                root => Bucket::Page(root),
            })
        } else if eflags != 0 {
            return Err(format!("{what}: element {i} has unknown flags {eflags:#x}"));
        } else {
            None
        };
        f(Entry { key, value, bucket })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny image: meta pages 0/1, root leaf page 2 with bucket "b" (page 3) and inline
    /// bucket "i"; page 3 is a leaf with two keys, one value spilling into an overflow page.
    fn image() -> Vec<u8> {
        let ps = 4096usize;
        let mut d = vec![0u8; ps * 5];
        for slot in 0..2u64 {
            let off = slot as usize * ps;
            d[off..off + 8].copy_from_slice(&slot.to_le_bytes());
            d[off + 8..off + 10].copy_from_slice(&META_FLAG.to_le_bytes());
            let m = off + PAGE_HEADER;
            d[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
            d[m + 4..m + 8].copy_from_slice(&VERSION.to_le_bytes());
            d[m + 8..m + 12].copy_from_slice(&(ps as u32).to_le_bytes());
            d[m + 16..m + 24].copy_from_slice(&2u64.to_le_bytes());
            d[m + 40..m + 48].copy_from_slice(&5u64.to_le_bytes());
            d[m + 48..m + 56].copy_from_slice(&(slot + 10).to_le_bytes());
            let sum = fnv64a(&d[m..m + 56]);
            d[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
        }
        // Inline bucket page: one leaf element "k" = "v".
        let mut inline = vec![0u8; PAGE_HEADER + ELEMENT];
        inline[8..10].copy_from_slice(&LEAF_FLAG.to_le_bytes());
        inline[10..12].copy_from_slice(&1u16.to_le_bytes());
        inline[PAGE_HEADER + 4..PAGE_HEADER + 8].copy_from_slice(&16u32.to_le_bytes());
        inline[PAGE_HEADER + 8..PAGE_HEADER + 12].copy_from_slice(&1u32.to_le_bytes());
        inline[PAGE_HEADER + 12..PAGE_HEADER + 16].copy_from_slice(&1u32.to_le_bytes());
        inline.extend_from_slice(b"kv");
        let mut leaf_page = |id: u64, overflow: u32, items: &[(u32, &[u8], Vec<u8>)]| {
            let off = id as usize * ps;
            d[off..off + 8].copy_from_slice(&id.to_le_bytes());
            d[off + 8..off + 10].copy_from_slice(&LEAF_FLAG.to_le_bytes());
            d[off + 10..off + 12].copy_from_slice(&(items.len() as u16).to_le_bytes());
            d[off + 12..off + 16].copy_from_slice(&overflow.to_le_bytes());
            let mut data_at = PAGE_HEADER + items.len() * ELEMENT;
            for (i, (flags, k, v)) in items.iter().enumerate() {
                let e = off + PAGE_HEADER + i * ELEMENT;
                let pos = (data_at - (PAGE_HEADER + i * ELEMENT)) as u32;
                d[e..e + 4].copy_from_slice(&flags.to_le_bytes());
                d[e + 4..e + 8].copy_from_slice(&pos.to_le_bytes());
                d[e + 8..e + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
                d[e + 12..e + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
                d[off + data_at..off + data_at + k.len()].copy_from_slice(k);
                d[off + data_at + k.len()..off + data_at + k.len() + v.len()].copy_from_slice(v);
                data_at += k.len() + v.len();
            }
        };
        let mut b_header = 3u64.to_le_bytes().to_vec();
        b_header.extend_from_slice(&0u64.to_le_bytes());
        let mut i_value = vec![0u8; BUCKET_HEADER];
        i_value.extend_from_slice(&inline);
        leaf_page(
            2,
            0,
            &[
                (BUCKET_LEAF_FLAG, b"b", b_header),
                (BUCKET_LEAF_FLAG, b"i", i_value),
            ],
        );
        leaf_page(
            3,
            1,
            &[(0, b"a", b"small".to_vec()), (0, b"z", vec![7u8; 5000])],
        );
        d
    }

    /// (bucket, key, value length) of every entry.
    type Entries = Vec<(Vec<u8>, Vec<u8>, usize)>;

    fn collect(db: &Db<'_>) -> Result<Entries, String> {
        let mut w = db.walker();
        let mut buckets = Vec::new();
        w.for_each(db.root(), &mut |e| {
            buckets.push((e.key.to_vec(), e.bucket.ok_or("not a bucket")?));
            Ok(())
        })?;
        let mut out = Vec::new();
        for (name, b) in buckets {
            w.for_each(b, &mut |e| {
                out.push((name.clone(), e.key.to_vec(), e.value.len()));
                Ok(())
            })?;
        }
        Ok(out)
    }

    #[test]
    fn reads_buckets_inline_buckets_and_overflow() {
        let d = image();
        assert!(looks_like_bbolt(&d));
        let db = Db::open(&d).unwrap();
        assert_eq!(db.meta().txid, 11, "the newer meta wins");
        assert_eq!(db.size(), 5 * 4096);
        let got = collect(&db).unwrap();
        assert_eq!(
            got,
            vec![
                (b"b".to_vec(), b"a".to_vec(), 5),
                (b"b".to_vec(), b"z".to_vec(), 5000),
                (b"i".to_vec(), b"k".to_vec(), 1)
            ]
        );
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let d = image();
        // A torn newest meta falls back to the other.
        let mut m = d.clone();
        m[4096 + PAGE_HEADER + 60] ^= 1;
        assert_eq!(Db::open(&m).unwrap().meta().txid, 10);
        // Truncation.
        assert!(Db::open(&d[..4 * 4096])
            .err()
            .unwrap()
            .contains("truncated"));
        // Every single-byte flip and every truncation of the image: no panic.
        for at in (0..d.len()).step_by(7) {
            let mut x = d.clone();
            x[at] ^= 0xff;
            if let Ok(db) = Db::open(&x) {
                let _ = collect(&db);
            }
        }
        for len in (0..d.len()).step_by(509) {
            if let Ok(db) = Db::open(&d[..len]) {
                let _ = collect(&db);
            }
        }
        // A page referencing itself, a bad page flag.
        let mut x = d.clone();
        x[2 * 4096 + PAGE_HEADER + ELEMENT * 2 + 1..2 * 4096 + PAGE_HEADER + ELEMENT * 2 + 9]
            .copy_from_slice(&2u64.to_le_bytes());
        let e = collect(&Db::open(&x).unwrap()).unwrap_err();
        assert!(e.contains("page 2 is referenced twice"), "{e}");
        let mut x = d.clone();
        x[3 * 4096 + 8] = 0x10;
        let e = collect(&Db::open(&x).unwrap()).unwrap_err();
        assert!(e.contains("neither a branch"), "{e}");
    }
}
