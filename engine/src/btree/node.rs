//! The write transaction's in-memory copy-on-write tree and its algorithms.
//!
//! A write transaction starts from the committed root as a [`Child::Clean`] page id. The
//! first time an operation needs to change a page, the page is decoded into a [`Node`]
//! (a private copy: `Child::Dirty`) and its id is recorded as freed by this transaction;
//! the committed page itself is never touched. Nodes are kept within one page at all times
//! (a node that outgrows its page splits at once; one that shrinks below [`MIN_FILL`]
//! after a removal is merged with a sibling or takes entries from it), so committing is
//! just encoding every dirty node into a freshly allocated page, children first.

use std::collections::{BTreeSet, HashMap};

use super::error::{BtreeError, Result};
use super::page::{
    branch_cell_size, checked_page, decode_node, leaf_cell_size, overflow_pages, Kind, BRANCH_BASE,
    LEAF_BASE, MIN_FILL, PAGE_SIZE,
};

/// A value held by a leaf in memory.
#[derive(Debug)]
pub(crate) enum Val {
    Inline(Vec<u8>),
    /// Stored in the overflow run of `overflow_pages(len)` pages starting at `page`.
    Overflow {
        page: u64,
        len: u32,
    },
}

/// A leaf in memory: sorted entries and the encoded size of the page they make.
#[derive(Debug)]
pub(crate) struct Leaf {
    pub entries: Vec<(Vec<u8>, Val)>,
    pub size: usize,
}

/// A branch in memory: `keys.len() + 1` children; child `i + 1` holds keys `>= keys[i]`.
#[derive(Debug)]
pub(crate) struct Branch {
    pub keys: Vec<Vec<u8>>,
    pub children: Vec<Child>,
    pub size: usize,
}

#[derive(Debug)]
pub(crate) enum Node {
    Leaf(Leaf),
    Branch(Branch),
}

/// A reference from a branch (or the root) to a child: a committed page, or a private copy.
#[derive(Debug)]
pub(crate) enum Child {
    Clean(u64),
    Dirty(Box<Node>),
}

/// The right half of a node that split, with the separator to put into the parent.
pub(crate) struct Split {
    pub key: Vec<u8>,
    pub right: Node,
}

impl Node {
    pub(crate) fn size(&self) -> usize {
        match self {
            Node::Leaf(l) => l.size,
            Node::Branch(b) => b.size,
        }
    }
}

impl Child {
    /// The page id of a clean child (encoding a branch requires its children spilled).
    pub(crate) fn page_id(&self) -> u64 {
        match self {
            Child::Clean(id) => *id,
            Child::Dirty(_) => panic!("btree: encoding a branch with an unspilled child"),
        }
    }
}

/// Page allocation state of a write transaction (the free set itself lives in the
/// writer's state and is borrowed by [`Ctx`]).
#[derive(Debug)]
pub(crate) struct AllocState {
    /// High-water mark: the next page allocated at the end of the file.
    pub hwm: u64,
    /// `hwm` when the transaction started (abort restores it).
    pub start_hwm: u64,
    /// Pages taken out of the free set (abort puts them back).
    pub taken: Vec<u64>,
}

/// What the tree algorithms need from the transaction.
pub(crate) struct Ctx<'a> {
    /// The file as of the transaction's start (committed pages are read from it).
    pub map: &'a [u8],
    /// Committed high-water mark.
    pub page_count: u64,
    /// Committed pages this transaction has made unreachable.
    pub freed: &'a mut Vec<u64>,
    /// Overflow runs written by this transaction, by first page.
    pub overflow: &'a mut HashMap<u64, Vec<u8>>,
    /// Pages that may be reused now.
    pub free: &'a mut BTreeSet<u64>,
    pub alloc: &'a mut AllocState,
}

impl AllocState {
    /// Allocates one page: the lowest free page, else one at the end.
    pub(crate) fn alloc_one(&mut self, free: &mut BTreeSet<u64>) -> u64 {
        if let Some(id) = free.pop_first() {
            self.taken.push(id);
            return id;
        }
        let id = self.hwm;
        self.hwm += 1;
        id
    }

    /// Allocates `n` consecutive pages: the lowest free run long enough, or a free run
    /// that ends at the high-water mark extended past it, or pages at the end.
    pub(crate) fn alloc_run(&mut self, free: &mut BTreeSet<u64>, n: u64) -> u64 {
        if n == 1 {
            return self.alloc_one(free);
        }
        let mut run_start = 0;
        let mut run_len = 0;
        let mut prev = None;
        let mut found = None;
        for &id in free.iter() {
            if prev.map(|p| p + 1) == Some(id) {
                run_len += 1;
            } else {
                run_start = id;
                run_len = 1;
            }
            prev = Some(id);
            if run_len == n {
                found = Some(run_start);
                break;
            }
        }
        let start = match found {
            Some(s) => s,
            // A free run reaching the end of the used area: extend it past the end.
            None if prev.map(|p| p + 1) == Some(self.hwm) => {
                self.hwm = run_start + n;
                run_start
            }
            None => {
                let s = self.hwm;
                self.hwm += n;
                return s;
            }
        };
        for id in start..start + n {
            if free.remove(&id) {
                self.taken.push(id);
            }
        }
        start
    }
}

impl Ctx<'_> {
    pub(crate) fn alloc_run(&mut self, n: u64) -> u64 {
        self.alloc.alloc_run(self.free, n)
    }

    /// Gives back pages allocated by this transaction (never committed, so nobody can
    /// see them): reusable at once.
    pub(crate) fn release_now(&mut self, start: u64, n: u64) {
        self.free.extend(start..start + n);
    }

    /// Drops a value this transaction replaced or removed.
    pub(crate) fn drop_val(&mut self, v: Val) {
        if let Val::Overflow { page, len } = v {
            let n = overflow_pages(len as usize);
            if self.overflow.remove(&page).is_some() {
                self.release_now(page, n);
            } else {
                self.freed.extend(page..page + n);
            }
        }
    }

    /// Makes `child` a private copy (loading and freeing its committed page) and returns
    /// it. `height` is the level of the child (1 = leaf level), checked against the page.
    pub(crate) fn dirty<'n>(
        &mut self,
        child: &'n mut Child,
        height: usize,
    ) -> Result<&'n mut Node> {
        if let Child::Clean(id) = *child {
            let want = if height == 1 {
                Kind::Leaf
            } else {
                Kind::Branch
            };
            let buf = checked_page(self.map, self.page_count, id, Some(want))?;
            let node = decode_node(buf, id, self.page_count)?;
            self.freed.push(id);
            *child = Child::Dirty(Box::new(node));
        }
        match child {
            Child::Dirty(n) => Ok(n),
            Child::Clean(_) => unreachable!(),
        }
    }
}

/// Where an insert lands, for choosing how a full node splits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    /// The node is on the right edge of the tree: an entry added at its end is an append.
    Rightmost,
    /// Inside the tree; entries added here are not known to come in order.
    Inner,
    /// The caller inserts keys of this kind in ascending order: an entry added at the
    /// end of any node is an append, wherever the node is.
    Ascending,
}

impl Edge {
    /// The edge of child `i` of a branch with `children` children.
    fn child(self, i: usize, children: usize) -> Edge {
        match self {
            Edge::Rightmost if i + 1 == children => Edge::Rightmost,
            Edge::Rightmost | Edge::Inner => Edge::Inner,
            Edge::Ascending => Edge::Ascending,
        }
    }

    /// The index of an entry just added at `i` of a node now `len` long if the split that
    /// may follow should be placed around it (see [`split_if_needed`]).
    fn placement(self, i: usize, len: usize) -> Option<usize> {
        match self {
            Edge::Rightmost if i + 1 == len => Some(i),
            Edge::Rightmost | Edge::Inner => None,
            Edge::Ascending => Some(i),
        }
    }
}

/// Inserts or replaces `key`. Returns the replaced value and the split of `node` if it
/// outgrew its page. Appends (see [`Edge`]) split unevenly so that ascending inserts fill
/// pages completely.
pub(crate) fn insert(
    node: &mut Node,
    height: usize,
    key: &[u8],
    val: Val,
    edge: Edge,
    ctx: &mut Ctx<'_>,
) -> Result<(Option<Val>, Option<Split>)> {
    match node {
        Node::Leaf(l) => {
            let (old, added) = match l.entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                Ok(i) => {
                    l.size = l.size + leaf_cell_size(key.len(), &val)
                        - leaf_cell_size(key.len(), &l.entries[i].1);
                    (Some(std::mem::replace(&mut l.entries[i].1, val)), None)
                }
                Err(i) => {
                    l.size += leaf_cell_size(key.len(), &val);
                    l.entries.insert(i, (key.to_vec(), val));
                    (None, edge.placement(i, l.entries.len()))
                }
            };
            Ok((old, split_if_needed(node, added)))
        }
        Node::Branch(b) => {
            let i = b.keys.partition_point(|k| k.as_slice() <= key);
            let child_edge = edge.child(i, b.children.len());
            let child = ctx.dirty(&mut b.children[i], height - 1)?;
            let (old, split) = insert(child, height - 1, key, val, child_edge, ctx)?;
            let mut added = None;
            if let Some(s) = split {
                add_split(b, i, s);
                // Branches place a split only at their end (an append); fill matters less
                // there, as they are a small share of the pages.
                added = (edge != Edge::Inner && i + 2 == b.children.len()).then_some(i);
            }
            Ok((old, split_if_needed(node, added)))
        }
    }
}

/// Removes `key`, which must be present under `node`. Returns the removed value and the
/// split of `node` if a longer separator made it outgrow its page.
pub(crate) fn remove(
    node: &mut Node,
    height: usize,
    key: &[u8],
    ctx: &mut Ctx<'_>,
) -> Result<(Option<Val>, Option<Split>)> {
    match node {
        Node::Leaf(l) => match l.entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
            Ok(i) => {
                let (k, v) = l.entries.remove(i);
                l.size -= leaf_cell_size(k.len(), &v);
                Ok((Some(v), None))
            }
            Err(_) => Ok((None, None)),
        },
        Node::Branch(b) => {
            let i = b.keys.partition_point(|k| k.as_slice() <= key);
            let child = ctx.dirty(&mut b.children[i], height - 1)?;
            let (old, split) = remove(child, height - 1, key, ctx)?;
            let child_size = child.size();
            if let Some(s) = split {
                add_split(b, i, s);
            } else if child_size < MIN_FILL && b.children.len() > 1 {
                rebalance(b, i, height - 1, ctx)?;
            }
            Ok((old, split_if_needed(node, None)))
        }
    }
}

fn add_split(b: &mut Branch, i: usize, s: Split) {
    b.size += branch_cell_size(s.key.len());
    b.keys.insert(i, s.key);
    b.children.insert(i + 1, Child::Dirty(Box::new(s.right)));
}

/// Merges child `i` of `b` with a neighbour; if the two do not fit in one page, splits
/// them again evenly.
fn rebalance(b: &mut Branch, i: usize, height: usize, ctx: &mut Ctx<'_>) -> Result<()> {
    let l = if i + 1 < b.children.len() { i } else { i - 1 };
    ctx.dirty(&mut b.children[l + 1], height)?;
    ctx.dirty(&mut b.children[l], height)?;
    let right = match b.children.remove(l + 1) {
        Child::Dirty(n) => *n,
        Child::Clean(_) => unreachable!(),
    };
    let sep = b.keys.remove(l);
    b.size -= branch_cell_size(sep.len());
    let left = match &mut b.children[l] {
        Child::Dirty(n) => &mut **n,
        Child::Clean(_) => unreachable!(),
    };
    match (&mut *left, right) {
        (Node::Leaf(a), Node::Leaf(c)) => {
            a.size += c.size - LEAF_BASE;
            a.entries.extend(c.entries);
        }
        (Node::Branch(a), Node::Branch(c)) => {
            a.size += branch_cell_size(sep.len()) + c.size - BRANCH_BASE;
            a.keys.push(sep);
            a.keys.extend(c.keys);
            a.children.extend(c.children);
        }
        _ => {
            return Err(BtreeError::corrupt(
                0,
                "siblings at one level are of different kinds",
            ))
        }
    }
    if let Some(s) = split_if_needed(left, None) {
        add_split(b, l, s);
    }
    Ok(())
}

/// Splits `node` in two if it is over a page. `added`: the index of the entry (leaf) or
/// key (branch) just added by an insert whose keys come in ascending order. A leaf then
/// splits right after that entry if both halves fit, else right before it, so the run
/// of ascending keys keeps filling the left node and the keys of other kinds that follow
/// it move out of the way; a branch keeps its keys and starts a new node if the key was
/// its last. Otherwise (or if neither cut fits) the node splits in the middle.
pub(crate) fn split_if_needed(node: &mut Node, added: Option<usize>) -> Option<Split> {
    if node.size() <= PAGE_SIZE {
        return None;
    }
    Some(match node {
        Node::Leaf(l) => {
            let n = l.entries.len();
            debug_assert!(n >= 2);
            let s = added.and_then(|i| ascending_cut(l, i)).unwrap_or_else(|| {
                let sizes = l.entries.iter().map(|(k, v)| leaf_cell_size(k.len(), v));
                balanced_cut(sizes, l.size - LEAF_BASE, n)
            });
            let right_entries = l.entries.split_off(s);
            let right_size: usize = right_entries
                .iter()
                .map(|(k, v)| leaf_cell_size(k.len(), v))
                .sum();
            l.size -= right_size;
            Split {
                key: right_entries[0].0.clone(),
                right: Node::Leaf(Leaf {
                    entries: right_entries,
                    size: LEAF_BASE + right_size,
                }),
            }
        }
        Node::Branch(b) => {
            let n = b.keys.len();
            debug_assert!(n >= 2);
            let m = if added == Some(n - 1) {
                n - 1
            } else {
                let sizes = b.keys.iter().map(|k| branch_cell_size(k.len()));
                balanced_cut(sizes, b.size - BRANCH_BASE, n)
            };
            let right_keys = b.keys.split_off(m + 1);
            let key = b.keys.pop().expect("split point is a key");
            let right_children = b.children.split_off(m + 1);
            let right_size: usize = right_keys.iter().map(|k| branch_cell_size(k.len())).sum();
            b.size -= right_size + branch_cell_size(key.len());
            Split {
                key,
                right: Node::Branch(Branch {
                    keys: right_keys,
                    children: right_children,
                    size: BRANCH_BASE + right_size,
                }),
            }
        }
    })
}

/// Where an overfull leaf splits around the entry just added at `i` (see
/// [`split_if_needed`]): right after it, else right before it, if both halves fit a page.
fn ascending_cut(l: &Leaf, i: usize) -> Option<usize> {
    let n = l.entries.len();
    let body = l.size - LEAF_BASE;
    let left_of = |cut: usize| -> usize {
        l.entries[..cut]
            .iter()
            .map(|(k, v)| leaf_cell_size(k.len(), v))
            .sum()
    };
    let fits = |cut: usize| {
        let left = left_of(cut);
        LEAF_BASE + left <= PAGE_SIZE && LEAF_BASE + (body - left) <= PAGE_SIZE
    };
    [i + 1, i]
        .into_iter()
        .find(|&cut| (1..n).contains(&cut) && fits(cut))
}

/// The first index (in `1..n`) whose cell would take the running total past half of
/// `body`: cells before it stay left.
fn balanced_cut(sizes: impl Iterator<Item = usize>, body: usize, n: usize) -> usize {
    let half = body / 2;
    let mut acc = 0;
    for (i, c) in sizes.enumerate() {
        if i > 0 && acc + c > half {
            return i.min(n - 1);
        }
        acc += c;
    }
    n - 1
}

/// Writes out a dirty subtree, children first: every dirty node gets a newly allocated
/// page, encoded into `out`. Returns the subtree's page id (and leaves `child` clean).
pub(crate) fn spill(
    child: &mut Child,
    alloc: &mut AllocState,
    free: &mut BTreeSet<u64>,
    out: &mut Vec<(u64, Vec<u8>)>,
) -> u64 {
    let node = match child {
        Child::Clean(id) => return *id,
        Child::Dirty(node) => node,
    };
    if let Node::Branch(b) = &mut **node {
        for c in b.children.iter_mut() {
            spill(c, alloc, free, out);
        }
    }
    let id = alloc.alloc_one(free);
    let mut buf = vec![0u8; PAGE_SIZE];
    super::page::encode_node(node, id, &mut buf);
    out.push((id, buf));
    *child = Child::Clean(id);
    id
}
