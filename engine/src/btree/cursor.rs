//! Lookups and ordered iteration over a tree whose nodes are committed pages (read through
//! the memory map, checksum verified on every visit) or, inside a write transaction,
//! private in-memory copies.
//!
//! An iterator holds one stack of `(node, index)` frames, at most the tree's depth deep,
//! allocated once; moving through the tree allocates nothing.

use std::collections::HashMap;
use std::ops::Bound;

use super::error::{BtreeError, Result};
use super::node::{Child, Node, Val};
use super::page::{
    branch_child, branch_len, branch_search, checked_overflow, checked_page, leaf_cell, leaf_len,
    leaf_search, overflow_value, Kind, ValRef, MAX_DEPTH,
};

/// Where pages and values come from.
#[derive(Clone, Copy)]
pub(crate) struct Src<'a> {
    pub map: &'a [u8],
    pub page_count: u64,
    /// Overflow runs written by the current write transaction, not yet in the file.
    pub overflow: Option<&'a HashMap<u64, Vec<u8>>>,
}

/// One node: a verified page or an in-memory copy.
#[derive(Clone, Copy)]
pub(crate) enum View<'a> {
    Page(&'a [u8], u64),
    Mem(&'a Node),
}

impl<'a> Src<'a> {
    /// Page `id` at `height` (1 = leaf level), checksum and kind verified.
    pub(crate) fn page(&self, id: u64, height: usize) -> Result<View<'a>> {
        if height == 0 || height > MAX_DEPTH {
            return Err(BtreeError::corrupt(
                id,
                "tree deeper than its recorded depth",
            ));
        }
        let want = if height == 1 {
            Kind::Leaf
        } else {
            Kind::Branch
        };
        Ok(View::Page(
            checked_page(self.map, self.page_count, id, Some(want))?,
            id,
        ))
    }

    pub(crate) fn child(&self, c: &'a Child, height: usize) -> Result<View<'a>> {
        match c {
            Child::Clean(id) => self.page(*id, height),
            Child::Dirty(n) => Ok(View::Mem(n)),
        }
    }

    /// The bytes of a value.
    pub(crate) fn value(&self, v: ValRef<'a>) -> Result<&'a [u8]> {
        match v {
            ValRef::Inline(b) => Ok(b),
            ValRef::Overflow { page, len } => {
                if let Some(run) = self.overflow.and_then(|o| o.get(&page)) {
                    return overflow_value(run, page, len);
                }
                checked_overflow(self.map, self.page_count, page, len)
            }
        }
    }
}

fn val_ref(v: &Val) -> ValRef<'_> {
    match v {
        Val::Inline(b) => ValRef::Inline(b),
        Val::Overflow { page, len } => ValRef::Overflow {
            page: *page,
            len: *len,
        },
    }
}

impl<'a> View<'a> {
    fn is_leaf(&self) -> bool {
        match self {
            View::Page(b, _) => b[0] == Kind::Leaf as u8,
            View::Mem(n) => matches!(n, Node::Leaf(_)),
        }
    }

    /// Entries of a leaf, keys of a branch.
    fn len(&self) -> Result<usize> {
        match self {
            View::Page(b, id) if self.is_leaf() => leaf_len(b, *id),
            View::Page(b, id) => branch_len(b, *id),
            View::Mem(Node::Leaf(l)) => Ok(l.entries.len()),
            View::Mem(Node::Branch(b)) => Ok(b.keys.len()),
        }
    }

    fn entry(&self, i: usize) -> Result<(&'a [u8], ValRef<'a>)> {
        match *self {
            View::Page(b, id) => leaf_cell(b, id, i),
            View::Mem(Node::Leaf(l)) => {
                let (k, v) = &l.entries[i];
                Ok((k, val_ref(v)))
            }
            View::Mem(Node::Branch(_)) => unreachable!("entry of a branch"),
        }
    }

    /// `Ok(i)`: entry `i` holds `key`; `Err(i)`: it would go at `i`.
    fn search(&self, key: &[u8]) -> Result<Result<usize, usize>> {
        match *self {
            View::Page(b, id) => leaf_search(b, id, key),
            View::Mem(Node::Leaf(l)) => {
                Ok(l.entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)))
            }
            View::Mem(Node::Branch(_)) => unreachable!("search of a branch"),
        }
    }

    fn child_for(&self, key: &[u8]) -> Result<usize> {
        match *self {
            View::Page(b, id) => branch_search(b, id, key),
            View::Mem(Node::Branch(br)) => Ok(br.keys.partition_point(|k| k.as_slice() <= key)),
            View::Mem(Node::Leaf(_)) => unreachable!("child of a leaf"),
        }
    }

    /// Child `i` of a branch; `height` is the child's level.
    fn child(&self, src: &Src<'a>, i: usize, height: usize) -> Result<View<'a>> {
        match *self {
            View::Page(b, id) => src.page(branch_child(b, id, i)?, height),
            View::Mem(Node::Branch(br)) => src.child(&br.children[i], height),
            View::Mem(Node::Leaf(_)) => unreachable!("child of a leaf"),
        }
    }
}

/// Looks `key` up in the tree under `root` (of `depth` levels).
pub(crate) fn get<'a>(
    src: &Src<'a>,
    root: Option<View<'a>>,
    depth: usize,
    key: &[u8],
) -> Result<Option<&'a [u8]>> {
    let Some(mut v) = root else { return Ok(None) };
    let mut height = depth;
    loop {
        if v.is_leaf() {
            return match v.search(key)? {
                Ok(i) => Ok(Some(src.value(v.entry(i)?.1)?)),
                Err(_) => Ok(None),
            };
        }
        let i = v.child_for(key)?;
        height -= 1;
        v = v.child(src, i, height)?;
    }
}

/// An iterator over the entries of a key range, in key order. Yields
/// `Err(BtreeError::Corrupt)` once and then ends if a damaged page is met.
pub struct Range<'a> {
    src: Src<'a>,
    stack: Vec<(View<'a>, usize)>,
    end: Bound<Vec<u8>>,
    depth: usize,
    err: Option<BtreeError>,
}

impl<'a> Range<'a> {
    pub(crate) fn new(
        src: Src<'a>,
        root: Result<Option<View<'a>>>,
        depth: usize,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Range<'a> {
        let mut r = Range {
            src,
            stack: Vec::with_capacity(depth.min(MAX_DEPTH)),
            end: end.map(|e| e.to_vec()),
            depth,
            err: None,
        };
        match root {
            Ok(Some(root)) => {
                if let Err(e) = r.seek(root, start) {
                    r.stack.clear();
                    r.err = Some(e);
                }
            }
            Ok(None) => {}
            Err(e) => r.err = Some(e),
        }
        r
    }

    fn seek(&mut self, root: View<'a>, start: Bound<&[u8]>) -> Result<()> {
        let mut v = root;
        loop {
            let height = self.depth - self.stack.len();
            if v.is_leaf() {
                let i = match start {
                    Bound::Unbounded => 0,
                    Bound::Included(k) => v.search(k)?.unwrap_or_else(|i| i),
                    Bound::Excluded(k) => match v.search(k)? {
                        Ok(i) => i + 1,
                        Err(i) => i,
                    },
                };
                self.stack.push((v, i));
                return Ok(());
            }
            let i = match start {
                Bound::Unbounded => 0,
                Bound::Included(k) | Bound::Excluded(k) => v.child_for(k)?,
            };
            self.stack.push((v, i));
            v = v.child(&self.src, i, height - 1)?;
        }
    }

    fn past_end(&self, k: &[u8]) -> bool {
        match &self.end {
            Bound::Unbounded => false,
            Bound::Included(e) => k > e.as_slice(),
            Bound::Excluded(e) => k >= e.as_slice(),
        }
    }

    fn step(&mut self) -> Result<Option<(&'a [u8], &'a [u8])>> {
        loop {
            let level = self.stack.len();
            let Some((v, i)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let v = *v;
            let n = v.len()?;
            if v.is_leaf() {
                if *i < n {
                    let (k, val) = v.entry(*i)?;
                    *i += 1;
                    if self.past_end(k) {
                        self.stack.clear();
                        return Ok(None);
                    }
                    return Ok(Some((k, self.src.value(val)?)));
                }
                self.stack.pop();
            } else if *i < n {
                // Next child, then down its left edge to a leaf.
                *i += 1;
                let mut height = self.depth - level;
                let mut c = v.child(&self.src, *i, height)?;
                loop {
                    self.stack.push((c, 0));
                    if c.is_leaf() {
                        break;
                    }
                    height -= 1;
                    c = c.child(&self.src, 0, height)?;
                }
            } else {
                self.stack.pop();
            }
        }
    }
}

impl<'a> Iterator for Range<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.err.take() {
            return Some(Err(e));
        }
        match self.step() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => None,
            Err(e) => {
                self.stack.clear();
                Some(Err(e))
            }
        }
    }
}
