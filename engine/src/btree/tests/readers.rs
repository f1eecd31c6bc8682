//! Readers pin a snapshot: they keep seeing it while the writer commits, the pages they
//! can reach are not reused while they are open, and are reused once they are dropped.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::btree::node::{Child, Node, Val};
use crate::btree::page;

/// Every page reachable from a snapshot (tree pages and overflow runs).
fn reachable(r: &ReadTxn) -> BTreeSet<u64> {
    fn walk(r: &ReadTxn, id: u64, out: &mut BTreeSet<u64>) {
        out.insert(id);
        let buf = page::checked_page(&r.map, r.meta.page_count, id, None).unwrap();
        match page::decode_node(buf, id, r.meta.page_count).unwrap() {
            Node::Leaf(l) => {
                for (_, v) in &l.entries {
                    if let Val::Overflow { page, len } = v {
                        out.extend(*page..*page + page::overflow_pages(*len as usize));
                    }
                }
            }
            Node::Branch(b) => {
                for c in &b.children {
                    if let Child::Clean(c) = c {
                        walk(r, *c, out);
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    if r.meta.root != 0 {
        walk(r, r.meta.root, &mut out);
    }
    out
}

/// Checksums of the given pages as they are in the file now.
fn page_sums(path: &Path, pages: &BTreeSet<u64>) -> Vec<u32> {
    let f = File::open(path).unwrap();
    pages
        .iter()
        .map(|&p| {
            let mut b = vec![0u8; PAGE_SIZE];
            f.read_exact_at(&mut b, p * PAGE_SIZE as u64).unwrap();
            crc32c::crc32c(&b)
        })
        .collect()
}

/// Overwrites every key (and adds a few large values), one commit.
fn churn(store: &Store, model: &mut Model, round: u8) {
    let mut w = store.write().unwrap();
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for (i, k) in keys.iter().enumerate() {
        let v = if i % 97 == 0 {
            vec![round; 5000 + i]
        } else {
            vec![round; 100]
        };
        w.insert(k, &v).unwrap();
        model.insert(k.clone(), v);
    }
    w.commit().unwrap();
}

#[test]
fn btree_reader_keeps_snapshot_and_pins_pages() {
    let (_dir, path) = tmp();
    let store = open(&path);
    let mut model = Model::new();
    fill(&store, &mut model, 3000, 100, 500);
    churn(&store, &mut model, 1);

    let r = store.read();
    let old = model.clone();
    let pinned = reachable(&r);
    assert!(pinned.len() > 50);
    let sums = page_sums(&path, &pinned);
    let hwm_before = store.stats().page_count;

    for round in 2..6 {
        churn(&store, &mut model, round);
        // The reader still sees its snapshot, and none of its pages was written.
        check_read(&r, &old);
        assert_eq!(
            page_sums(&path, &pinned),
            sums,
            "a pinned page was rewritten"
        );
    }
    let st = store.stats();
    assert_eq!(st.readers, 1);
    assert_eq!(st.oldest_reader_txid, Some(r.txid()));
    // The writer had to grow the file instead of reusing the pinned pages.
    assert!(st.page_count > hwm_before + pinned.len() as u64 / 2);
    store.verify().unwrap();

    drop(r);
    assert_eq!(store.stats().readers, 0);
    let hwm = store.stats().page_count;
    for round in 6..9 {
        churn(&store, &mut model, round);
    }
    // Pages are reused now: the file does not grow, and old pinned pages were rewritten.
    assert_eq!(
        store.stats().page_count,
        hwm,
        "pages not reused after the reader left"
    );
    let now = page_sums(&path, &pinned);
    let rewritten = now.iter().zip(&sums).filter(|(a, b)| a != b).count();
    assert!(
        rewritten > pinned.len() / 2,
        "only {rewritten} pinned pages reused"
    );
    check_read(&store.read(), &model);
    store.verify().unwrap();
}

#[test]
fn btree_reader_outlives_many_commits_and_remaps() {
    // A reader opened on a small file keeps its (old) map alive while the writer grows
    // the file far past it (several remaps).
    let (_dir, path) = tmp();
    let store = open(&path);
    let mut model = Model::new();
    fill(&store, &mut model, 200, 50, 200);
    let r = store.read();
    let old = model.clone();
    let mut w = store.write().unwrap();
    for i in 0..40u32 {
        w.insert(format!("big{i:04}").as_bytes(), &vec![i as u8; 300_000])
            .unwrap();
    }
    w.commit().unwrap();
    assert!(store.stats().file_bytes > 8 << 20);
    check_read(&r, &old);
    drop(store);
    // The reader works even after every store handle is gone.
    check_read(&r, &old);
}

#[test]
fn btree_readers_concurrent_with_writer() {
    // Each commit rewrites every key with the commit's generation number; a snapshot must
    // never show two generations.
    let (_dir, path) = tmp();
    let store = open(&path);
    const KEYS: u32 = 600;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let mut w = store.write().unwrap();
        for k in 0..KEYS {
            w.insert(format!("k{k:05}").as_bytes(), &0u64.to_le_bytes())
                .unwrap();
        }
        w.commit().unwrap();
    }
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut snapshots = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = store.read();
                    let mut gen = None;
                    let mut n = 0;
                    for kv in r.range(Bound::Unbounded, Bound::Unbounded) {
                        let (_, v) = kv.unwrap();
                        let g = u64::from_le_bytes(v[..8].try_into().unwrap());
                        assert_eq!(*gen.get_or_insert(g), g, "mixed generations");
                        assert_eq!(v.len(), 8 + (g as usize % 7) * 1500);
                        n += 1;
                    }
                    assert_eq!(n, KEYS);
                    snapshots += 1;
                }
                snapshots
            })
        })
        .collect();
    for g in 1..40u64 {
        let mut w = store.write().unwrap();
        let mut v = g.to_le_bytes().to_vec();
        v.resize(8 + (g as usize % 7) * 1500, 7);
        for k in 0..KEYS {
            w.insert(format!("k{k:05}").as_bytes(), &v).unwrap();
        }
        w.commit().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for h in readers {
        assert!(h.join().unwrap() > 0);
    }
    store.verify().unwrap();
}

#[test]
fn btree_txn_types_are_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Store>();
    ok::<ReadTxn>();
}
