//! Whole-file consistency check of one commit (for tests and `corekvutl`).

use super::error::{BtreeError, Result};
use super::node::{Child, Node, Val};
use super::page::{self, Kind, MAX_DEPTH};
use super::ReadTxn;

/// What [`super::Store::verify`] found (it fails on the first problem instead).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The commit checked.
    pub txid: u64,
    /// Pages of the file in use or free (the high-water mark), meta pages included.
    pub page_count: u64,
    /// Branch pages of the tree.
    pub branch_pages: u64,
    /// Leaf pages of the tree.
    pub leaf_pages: u64,
    /// Pages of overflow runs.
    pub overflow_pages: u64,
    /// Pages holding the free list.
    pub freelist_pages: u64,
    /// Pages listed as free.
    pub free_pages: u64,
    /// Keys found.
    pub entries: u64,
    /// Levels of the tree.
    pub depth: u32,
}

struct Walk<'a> {
    map: &'a [u8],
    page_count: u64,
    used: Vec<bool>,
    report: VerifyReport,
}

impl Walk<'_> {
    fn mark(&mut self, from: u64, id: u64, what: &str) -> Result<()> {
        page::check_ref(from, id, self.page_count)?;
        let slot = &mut self.used[id as usize];
        if *slot {
            return Err(BtreeError::corrupt(
                id,
                format!("page used twice (again as {what}, referenced from page {from})"),
            ));
        }
        *slot = true;
        Ok(())
    }

    /// Checks the subtree at `id` (`height` levels, keys within `[lo, hi)`).
    fn node(
        &mut self,
        from: u64,
        id: u64,
        height: usize,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
    ) -> Result<()> {
        if height == 0 || height > MAX_DEPTH {
            return Err(BtreeError::corrupt(
                from,
                "tree deeper than its recorded depth",
            ));
        }
        self.mark(from, id, "tree page")?;
        let want = if height == 1 {
            Kind::Leaf
        } else {
            Kind::Branch
        };
        let buf = page::checked_page(self.map, self.page_count, id, Some(want))?;
        let node = page::decode_node(buf, id, self.page_count)?;
        let in_bounds =
            |k: &[u8]| !matches!(lo, Some(l) if k < l) && !matches!(hi, Some(h) if k >= h);
        match node {
            Node::Leaf(l) => {
                self.report.leaf_pages += 1;
                for (k, v) in &l.entries {
                    if !in_bounds(k) {
                        return Err(BtreeError::corrupt(
                            id,
                            "key outside its parent's separators",
                        ));
                    }
                    if let Val::Overflow { page: run, len } = *v {
                        page::checked_overflow(self.map, self.page_count, run, len)?;
                        for p in run..run + page::overflow_pages(len as usize) {
                            self.mark(id, p, "overflow page")?;
                            self.report.overflow_pages += 1;
                        }
                    }
                    self.report.entries += 1;
                }
            }
            Node::Branch(b) => {
                self.report.branch_pages += 1;
                for k in &b.keys {
                    if !in_bounds(k) {
                        return Err(BtreeError::corrupt(id, "separator outside its parent's"));
                    }
                }
                for (i, c) in b.children.iter().enumerate() {
                    let Child::Clean(cid) = c else {
                        unreachable!("decoded pages are clean")
                    };
                    let clo = if i == 0 { lo } else { Some(&b.keys[i - 1][..]) };
                    let chi = if i == b.keys.len() {
                        hi
                    } else {
                        Some(&b.keys[i][..])
                    };
                    self.node(id, *cid, height - 1, clo, chi)?;
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn verify(snap: &ReadTxn) -> Result<VerifyReport> {
    let meta = snap.meta;
    let mut walk = Walk {
        map: &snap.map,
        page_count: meta.page_count,
        used: vec![false; meta.page_count as usize],
        report: VerifyReport {
            txid: meta.txid,
            page_count: meta.page_count,
            depth: meta.depth,
            ..VerifyReport::default()
        },
    };
    walk.used[0] = true;
    walk.used[1] = true;
    if meta.root != 0 {
        walk.node(0, meta.root, meta.depth as usize, None, None)?;
    }
    if walk.report.entries != meta.entries {
        return Err(BtreeError::corrupt(
            meta.root,
            format!(
                "tree holds {} keys, the meta page says {}",
                walk.report.entries, meta.entries
            ),
        ));
    }
    let mut id = meta.freelist;
    let mut from = meta.txid % 2;
    while id != 0 {
        walk.mark(from, id, "free list page")?;
        walk.report.freelist_pages += 1;
        let buf = page::checked_page(walk.map, meta.page_count, id, Some(Kind::Freelist))?;
        let (next, extents) = page::decode_freelist(buf, id)?;
        for e in extents {
            let (start, len) = page::unpack_extent(e);
            for p in start..start.saturating_add(len).min(meta.page_count + 1) {
                walk.mark(id, p, "free page")?;
                walk.report.free_pages += 1;
            }
        }
        from = id;
        id = next;
    }
    if let Some(p) = walk.used.iter().position(|u| !u) {
        return Err(BtreeError::corrupt(
            p as u64,
            "page is neither in the tree nor in the free list (leaked)",
        ));
    }
    Ok(walk.report)
}
