//! Damage: bad checksums are `Corrupt` naming the page; a bad newest meta page falls back
//! to the older one; the page decoder never panics on any input.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::*;
use crate::btree::node::{Node, Val};
use crate::btree::page::{self, Kind, Meta};
use crate::btree::BtreeError;

fn flip(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5A;
    f.write_all_at(&b, offset).unwrap();
}

fn corrupt_page(e: BtreeError) -> u64 {
    match e {
        BtreeError::Corrupt { page, .. } => page,
        other => panic!("expected Corrupt, got {other}"),
    }
}

/// Some leaf page id of the committed tree and a key stored in it.
fn some_leaf(store: &Store) -> (u64, Vec<u8>) {
    let r = store.read();
    let mut id = r.meta.root;
    loop {
        let buf = page::checked_page(&r.map, r.meta.page_count, id, None).unwrap();
        match page::decode_node(buf, id, r.meta.page_count).unwrap() {
            Node::Branch(b) => id = b.children[b.children.len() / 2].page_id(),
            Node::Leaf(l) => return (id, l.entries[0].0.clone()),
        }
    }
}

#[test]
fn btree_flipped_leaf_byte_is_corrupt_naming_the_page() {
    let (_dir, path) = tmp();
    let mut model = Model::new();
    {
        let store = open(&path);
        fill(&store, &mut model, 2000, 80, 1000);
    }
    let (leaf, key) = some_leaf(&open(&path));
    for off in [0u64, 3, 5, 9, 20, 700, 4095] {
        flip(&path, leaf * PAGE_SIZE as u64 + off);
        let store = open(&path);
        let r = store.read();
        assert_eq!(corrupt_page(r.get(&key).unwrap_err()), leaf, "offset {off}");
        // A scan reaches it, reports it once, and stops.
        let items: Vec<_> = r.range(Bound::Unbounded, Bound::Unbounded).collect();
        let err = items.iter().position(|kv| kv.is_err()).expect("scan error");
        assert_eq!(err, items.len() - 1);
        assert_eq!(
            corrupt_page(items.into_iter().last().unwrap().unwrap_err()),
            leaf
        );
        // Keys elsewhere still read.
        assert!(r.get(b"key00000000").unwrap().is_some());
        assert_eq!(corrupt_page(store.verify().unwrap_err()), leaf);
        // A writer touching the page fails and the transaction is dead, not the store.
        let mut w = store.write().unwrap();
        assert_eq!(corrupt_page(w.insert(&key, b"x").unwrap_err()), leaf);
        assert!(matches!(
            w.insert(b"other", b"x"),
            Err(BtreeError::TxnFailed)
        ));
        assert!(matches!(w.commit(), Err(BtreeError::TxnFailed)));
        assert!(!store.is_poisoned());
        drop(r);
        drop(store);
        flip(&path, leaf * PAGE_SIZE as u64 + off); // repair
    }
    let store = open(&path);
    check_read(&store.read(), &model);
    store.verify().unwrap();
}

#[test]
fn btree_flipped_overflow_byte_is_corrupt_naming_the_run() {
    let (_dir, path) = tmp();
    let run = {
        let store = open(&path);
        let mut w = store.write().unwrap();
        w.insert(b"big", &vec![9u8; 100_000]).unwrap();
        w.insert(b"small", b"v").unwrap();
        w.commit().unwrap();
        let r = store.read();
        let buf = page::checked_page(&r.map, r.meta.page_count, r.meta.root, None).unwrap();
        let Node::Leaf(l) = page::decode_node(buf, r.meta.root, r.meta.page_count).unwrap() else {
            panic!("root is a leaf")
        };
        let Val::Overflow { page, .. } = l.entries[0].1 else {
            panic!("big value overflows")
        };
        page
    };
    // A byte deep in the run (a continuation page).
    flip(&path, (run + 10) * PAGE_SIZE as u64 + 1234);
    let store = open(&path);
    let r = store.read();
    assert_eq!(corrupt_page(r.get(b"big").unwrap_err()), run);
    assert_eq!(r.get(b"small").unwrap(), Some(&b"v"[..]));
    assert_eq!(corrupt_page(store.verify().unwrap_err()), run);
}

#[test]
fn btree_bad_newest_meta_falls_back_to_older() {
    let (_dir, path) = tmp();
    let (older, newer);
    {
        let store = open(&path);
        let mut w = store.write().unwrap();
        w.insert(b"a", b"1").unwrap();
        w.set_meta(&[1; 64]);
        w.commit().unwrap(); // txid 1, slot 1
        older = store.read().txid();
        let mut w = store.write().unwrap();
        w.insert(b"a", b"2").unwrap();
        w.insert(b"b", b"2").unwrap();
        w.set_meta(&[2; 64]);
        w.commit().unwrap(); // txid 2, slot 0
        newer = store.read().txid();
    }
    assert_eq!((older, newer), (1, 2));
    for off in [0u64, 20, 64 + 10, 128] {
        flip(&path, off); // slot 0 = the newest
        let store = open(&path);
        let r = store.read();
        assert_eq!(r.txid(), 1, "offset {off}");
        assert_eq!(r.meta(), [1; 64]);
        assert_eq!(r.get(b"a").unwrap(), Some(&b"1"[..]));
        assert_eq!(r.get(b"b").unwrap(), None);
        store.verify().unwrap();
        drop(r);
        drop(store);
        flip(&path, off);
    }
    // Both bad: a loud error.
    flip(&path, 30);
    flip(&path, PAGE_SIZE as u64 + 30);
    assert!(Store::open(&path, Options::default())
        .unwrap_err()
        .is_corrupt());
    flip(&path, 30);
    flip(&path, PAGE_SIZE as u64 + 30);
    // After falling back, the store writes on from the older commit.
    flip(&path, 40);
    let store = open(&path);
    let mut w = store.write().unwrap();
    w.insert(b"c", b"3").unwrap();
    w.commit().unwrap();
    let r = store.read();
    assert_eq!(r.txid(), 2);
    assert_eq!(r.get(b"b").unwrap(), None);
    assert_eq!(r.get(b"c").unwrap(), Some(&b"3"[..]));
    store.verify().unwrap();
}

#[test]
fn btree_bad_freelist_page_fails_open() {
    let (_dir, path) = tmp();
    let fl = {
        let store = open(&path);
        let mut model = Model::new();
        fill(&store, &mut model, 500, 100, 100);
        let mut w = store.write().unwrap();
        for k in model.keys().take(300) {
            w.remove(k).unwrap();
        }
        w.commit().unwrap();
        let r = store.read();
        assert!(r.meta.freelist != 0);
        r.meta.freelist
    };
    flip(&path, fl * PAGE_SIZE as u64 + 30);
    let e = Store::open(&path, Options::default()).unwrap_err();
    assert_eq!(corrupt_page(e), fl);
}

// ---------------------------------------------------------------------------------------
// The decoder over arbitrary bytes.

/// Exercises every accessor and the full decoder on `buf` as page `id`; must not panic.
fn poke(buf: &[u8], id: u64, rng: &mut Rng) {
    let _ = page::verify_page(buf, id, None);
    let _ = page::decode_node(buf, id, 1 << 20);
    let n = page::count_of(buf);
    let plen = rng.below(20) as usize;
    let probe: Vec<u8> = rng.bytes(plen);
    match page::kind_of(buf) {
        Some(Kind::Leaf) => {
            for i in 0..n.min(3000) {
                let _ = page::leaf_cell(buf, id, i);
            }
            let _ = page::leaf_search(buf, id, &probe);
        }
        Some(Kind::Branch) => {
            for i in 0..=n.min(3000) {
                let _ = page::branch_child(buf, id, i);
                let _ = page::branch_key(buf, id, i);
            }
            let _ = page::branch_search(buf, id, &probe);
        }
        Some(Kind::Freelist) => {
            if let Ok((_, ext)) = page::decode_freelist(buf, id) {
                ext.for_each(|e| {
                    let _ = page::unpack_extent(e);
                });
            }
        }
        Some(Kind::Overflow) => {
            let _ = page::overflow_value(buf, id, rng.next_u64() as u32);
        }
        None => {}
    }
    let _ = Meta::decode(buf, id % 2);
}

/// Real pages of every kind, taken from a store.
fn sample_pages() -> Vec<(u64, Vec<u8>)> {
    let (_dir, path) = tmp();
    let store = open(&path);
    let mut model = Model::new();
    let mut rng = Rng::new(5);
    let mut w = store.write().unwrap();
    for _ in 0..1500 {
        let k = rand_key(&mut rng, 4000);
        let v = rand_value(&mut rng, false);
        w.insert(&k, &v).unwrap();
        model.insert(k, v);
    }
    w.commit().unwrap();
    let mut w = store.write().unwrap();
    for k in model.keys().step_by(3) {
        w.remove(k).unwrap();
    }
    w.commit().unwrap();
    let r = store.read();
    let mut out = Vec::new();
    for id in 0..r.meta.page_count {
        let off = id as usize * PAGE_SIZE;
        out.push((id, r.map[off..off + PAGE_SIZE].to_vec()));
    }
    let kinds: BTreeSet<Option<Kind>> = out.iter().map(|(_, b)| page::kind_of(b)).collect();
    for k in [Kind::Leaf, Kind::Branch, Kind::Freelist, Kind::Overflow] {
        assert!(kinds.contains(&Some(k)), "no {k:?} page in the sample");
    }
    out
}

#[test]
fn btree_decoder_fuzz_random_bytes() {
    let mut rng = Rng::new(0xF022);
    for i in 0..3000u64 {
        let mut buf = rng.bytes(PAGE_SIZE);
        // Make the header plausible most of the time so the decoder gets past the kind.
        buf[0] = (i % 6) as u8;
        if i % 2 == 0 {
            buf[2..4].copy_from_slice(&(rng.below(600) as u16).to_le_bytes());
        }
        if i % 3 == 0 {
            buf[8..16].copy_from_slice(&i.to_le_bytes());
        }
        // With the checksum wrong, verification reports Corrupt naming the page.
        match page::verify_page(&buf, i, None) {
            Err(BtreeError::Corrupt { page, .. }) => assert_eq!(page, i),
            other => panic!("random page verified: {other:?}"),
        }
        poke(&buf, i, &mut rng);
        // With the checksum right, the structure is still checked without panicking.
        page::seal(&mut buf);
        poke(&buf, i, &mut rng);
    }
}

#[test]
fn btree_decoder_fuzz_mutated_pages() {
    let pages = sample_pages();
    let mut rng = Rng::new(0xBEEF);
    for round in 0..6000 {
        let (id, orig) = &pages[rng.below(pages.len() as u64) as usize];
        let mut buf = orig.clone();
        let flips = rng.below(8) + 1;
        for _ in 0..flips {
            let at = rng.below(PAGE_SIZE as u64) as usize;
            buf[at] ^= (rng.below(255) + 1) as u8;
        }
        if *id >= 2 && buf != *orig && page::kind_of(orig) != Some(Kind::Overflow) {
            match page::verify_page(&buf, *id, None) {
                Err(BtreeError::Corrupt { page, .. }) => assert_eq!(page, *id),
                other => panic!("round {round}: mutated page {id} verified: {other:?}"),
            }
        }
        poke(&buf, *id, &mut rng);
        page::seal(&mut buf);
        poke(&buf, *id, &mut rng);
        // Small structural edits: counts and slot offsets.
        let mut b2 = orig.clone();
        let at = [2usize, 3, 16, 17, 18, 24, 25][rng.below(7) as usize];
        b2[at] = rng.next_u64() as u8;
        page::seal(&mut b2);
        poke(&b2, *id, &mut rng);
    }
}

#[test]
fn btree_crc_valid_garbage_in_a_tree_never_panics() {
    // Replace a leaf (then a branch) with checksum-valid garbage carrying the right header,
    // and run every read path over it: errors are fine, panics and hangs are not.
    let (_dir, path) = tmp();
    let mut model = Model::new();
    {
        let store = open(&path);
        fill(&store, &mut model, 3000, 120, 3000);
    }
    let (leaf, _) = some_leaf(&open(&path));
    let root = open(&path).read().meta.root;
    let backup = std::fs::read(&path).unwrap();
    let mut rng = Rng::new(42);
    for (target, kind) in [(leaf, Kind::Leaf), (root, Kind::Branch)] {
        for _ in 0..40 {
            let off = target as usize * PAGE_SIZE;
            let mut buf = backup[off..off + PAGE_SIZE].to_vec();
            for _ in 0..rng.below(30) + 1 {
                let at = 16 + rng.below(PAGE_SIZE as u64 - 16) as usize;
                buf[at] = rng.next_u64() as u8;
            }
            if rng.chance(1, 4) {
                // Point children or overflow references at random pages (cycles included).
                for at in (24..PAGE_SIZE - 8).step_by(rng.below(500) as usize + 200) {
                    buf[at..at + 8].copy_from_slice(&rng.below(4000).to_le_bytes());
                }
            }
            buf[0] = kind as u8;
            page::seal(&mut buf);
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&buf, target * PAGE_SIZE as u64).unwrap();
            {
                let store = open(&path);
                let r = store.read();
                for k in model.keys().step_by(97) {
                    let _ = r.get(k);
                }
                let n = r
                    .range(Bound::Unbounded, Bound::Unbounded)
                    .take(10_000)
                    .count();
                assert!(n <= 10_000);
                let _ = store.verify();
                if let Ok(mut w) = store.write() {
                    let _ = w.insert(b"key00001500", b"v");
                    let _ = w.remove(b"key00000007");
                    let _ = w.commit();
                };
            }
            std::fs::write(&path, &backup).unwrap();
        }
    }
    let store = open(&path);
    check_read(&store.read(), &model);
}
