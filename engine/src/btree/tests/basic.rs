//! API behaviour: create/open, limits, abort, meta, stats, poisoning, locking, compaction.

use std::ops::Bound;

use super::*;
use crate::btree::{BtreeError, MAX_KEY_BYTES, MAX_VALUE_BYTES, META_BYTES};

#[test]
fn btree_empty_store_roundtrip() {
    let (_dir, path) = tmp();
    assert!(matches!(
        Store::open(
            &path,
            Options {
                create_if_missing: false
            }
        ),
        Err(BtreeError::NotFound(_))
    ));
    let store = open(&path);
    let r = store.read();
    assert_eq!((r.txid(), r.len(), r.meta()), (0, 0, [0; META_BYTES]));
    assert_eq!(r.get(b"x").unwrap(), None);
    assert!(r.range(Bound::Unbounded, Bound::Unbounded).next().is_none());
    let st = store.stats();
    assert_eq!(
        (st.page_count, st.depth, st.entries, st.file_bytes),
        (2, 0, 0, 8192)
    );
    store.verify().unwrap();
    drop(r);
    drop(store);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    let store = open(&path);
    assert_eq!(store.read().txid(), 0);
    // An empty commit still advances the transaction id and the meta record.
    let mut w = store.write().unwrap();
    w.set_meta(&[7; META_BYTES]);
    w.commit().unwrap();
    assert_eq!(
        (store.read().txid(), store.read().meta()),
        (1, [7; META_BYTES])
    );
    store.verify().unwrap();
}

#[test]
fn btree_insert_get_remove_and_abort() {
    let (_dir, path) = tmp();
    let store = open(&path);
    let mut w = store.write().unwrap();
    assert_eq!(w.txid(), 1);
    w.insert(b"b", b"2").unwrap();
    w.insert(b"a", b"1").unwrap();
    w.insert(b"", b"empty key").unwrap();
    w.insert(b"c", &vec![3u8; 50_000]).unwrap();
    assert_eq!(w.get(b"a").unwrap(), Some(&b"1"[..]));
    assert_eq!(w.get(b"").unwrap(), Some(&b"empty key"[..]));
    assert_eq!(w.get(b"c").unwrap().unwrap().len(), 50_000);
    assert_eq!(w.len(), 4);
    // Not visible to readers before commit.
    assert_eq!(store.read().get(b"a").unwrap(), None);
    w.commit().unwrap();
    let r = store.read();
    let keys: Vec<&[u8]> = r
        .range(Bound::Unbounded, Bound::Unbounded)
        .map(|kv| kv.unwrap().0)
        .collect();
    assert_eq!(keys, vec![&b""[..], b"a", b"b", b"c"]);
    let keys: Vec<&[u8]> = r
        .range(Bound::Excluded(&b"a"[..]), Bound::Included(&b"c"[..]))
        .map(|kv| kv.unwrap().0)
        .collect();
    assert_eq!(keys, vec![&b"b"[..], b"c"]);

    let mut w = store.write().unwrap();
    assert!(w.remove(b"a").unwrap());
    assert!(!w.remove(b"a").unwrap());
    assert!(!w.remove(b"zz").unwrap());
    w.insert(b"c", b"small now").unwrap();
    w.abort();
    let r2 = store.read();
    assert_eq!(r2.txid(), 1);
    assert_eq!(r2.get(b"a").unwrap(), Some(&b"1"[..]));
    assert_eq!(r2.get(b"c").unwrap().unwrap().len(), 50_000);
    store.verify().unwrap();
}

#[test]
fn btree_limits() {
    let (_dir, path) = tmp();
    let store = open(&path);
    let mut w = store.write().unwrap();
    let k = vec![1u8; MAX_KEY_BYTES];
    w.insert(&k, b"max key").unwrap();
    let e = w.insert(&vec![1u8; MAX_KEY_BYTES + 1], b"").unwrap_err();
    assert!(matches!(e, BtreeError::TooLarge { what: "key", .. }), "{e}");
    let e = w.insert(b"v", &vec![0u8; MAX_VALUE_BYTES + 1]).unwrap_err();
    assert!(
        matches!(e, BtreeError::TooLarge { what: "value", .. }),
        "{e}"
    );
    // Limit errors do not spoil the transaction.
    w.insert(b"after", b"ok").unwrap();
    w.commit().unwrap();
    assert_eq!(store.read().get(&k).unwrap(), Some(&b"max key"[..]));
    // Many maximal keys: the tree stays within its pages.
    let mut w = store.write().unwrap();
    let mut model = Model::new();
    for i in 0..500u32 {
        let mut k = vec![b'k'; MAX_KEY_BYTES];
        k[..4].copy_from_slice(&i.to_be_bytes());
        w.insert(&k, &i.to_le_bytes()).unwrap();
        model.insert(k, i.to_le_bytes().to_vec());
    }
    w.commit().unwrap();
    let r = store.read();
    for (k, v) in &model {
        assert_eq!(r.get(k).unwrap(), Some(&v[..]));
    }
    store.verify().unwrap();
}

#[test]
fn btree_values_at_the_inline_boundary_and_huge() {
    let (_dir, path) = tmp();
    let store = open(&path);
    let mut model = Model::new();
    let mut w = store.write().unwrap();
    for len in (1300..1400).chain([0, 4072, 4073, 4096, 8192, 1 << 20, 3 << 19]) {
        let k = format!("len{len:08}").into_bytes();
        let v: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        w.insert(&k, &v).unwrap();
        model.insert(k, v);
    }
    w.commit().unwrap();
    drop(store);
    let store = open(&path);
    check_read(&store.read(), &model);
    let rep = store.verify().unwrap();
    assert!(rep.overflow_pages >= 256 + 384, "{rep:?}");
}

#[test]
fn btree_meta_is_atomic_with_commit() {
    let (_dir, path) = tmp();
    let store = open(&path);
    let mut w = store.write().unwrap();
    assert_eq!(w.meta(), [0; META_BYTES]);
    let mut m = [0u8; META_BYTES];
    m[..8].copy_from_slice(&42u64.to_le_bytes());
    w.set_meta(&m);
    w.insert(b"k", b"v").unwrap();
    assert_eq!(store.read().meta(), [0; META_BYTES]);
    w.commit().unwrap();
    assert_eq!(store.read().meta(), m);
    // The next transaction starts from the committed record.
    let w = store.write().unwrap();
    assert_eq!(w.meta(), m);
    drop(w);
    drop(store);
    assert_eq!(open(&path).read().meta(), m);
}

#[test]
fn btree_second_open_is_locked() {
    let (_dir, path) = tmp();
    let store = open(&path);
    assert!(matches!(
        Store::open(&path, Options::default()),
        Err(BtreeError::Locked(_))
    ));
    drop(store);
    open(&path);
}

#[test]
fn btree_not_a_store_file() {
    let (_dir, path) = tmp();
    std::fs::write(&path, b"hello").unwrap();
    assert!(Store::open(&path, Options::default())
        .unwrap_err()
        .is_corrupt());
    std::fs::write(&path, vec![0u8; 3 * PAGE_SIZE]).unwrap();
    let e = Store::open(&path, Options::default()).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
}

#[test]
fn btree_io_error_poisons_the_store() {
    let (_dir, path) = tmp();
    {
        let store = open(&path);
        let mut w = store.write().unwrap();
        w.insert(b"a", b"1").unwrap();
        w.commit().unwrap();
    }
    // Fail the first write of the next commit.
    let (store, _st) = open_faulty(&path, Some(0), Fault::Fail);
    let mut w = store.write().unwrap();
    w.insert(b"b", b"2").unwrap();
    let e = w.commit().unwrap_err();
    assert!(matches!(e, BtreeError::Io { .. }), "{e}");
    assert!(e.to_string().contains("injected fault"), "{e}");
    assert!(store.is_poisoned());
    let e = store.write().err().expect("poisoned");
    assert!(matches!(e, BtreeError::Poisoned));
    assert!(e.to_string().contains("poisoned"));
    // Reads of the last commit go on.
    assert_eq!(store.read().get(b"a").unwrap(), Some(&b"1"[..]));
    assert_eq!(store.read().get(b"b").unwrap(), None);
    drop(store);
    let store = open(&path);
    assert_eq!(store.read().get(b"b").unwrap(), None);
    store.verify().unwrap();
}

#[test]
fn btree_ascending_inserts_fill_pages() {
    // Revision keys arrive in ascending order: leaves on the right edge split unevenly,
    // so pages end up (nearly) full.
    let (_dir, path) = tmp();
    let store = open(&path);
    let mut model = Model::new();
    fill(&store, &mut model, 20_000, 100, 1000);
    let rep = store.verify().unwrap();
    let per_leaf = 4096 / (2 + 7 + 11 + 100);
    let min_leaves = 20_000 / per_leaf;
    assert!(
        rep.leaf_pages <= min_leaves as u64 * 105 / 100 + 2,
        "{} leaves for {} minimum",
        rep.leaf_pages,
        min_leaves
    );
    check_read(&store.read(), &model);
}

#[test]
fn btree_ascending_runs_fill_pages_below_other_keys() {
    // The backend's revision records ("k...") are not the last keys of the tree: members,
    // leases and users sort after them. insert_ascending must still fill pages, where
    // plain inserts leave every leaf about half full.
    let leaves_after = |ascending: bool| {
        let (_dir, path) = tmp();
        let store = open(&path);
        let mut model = Model::new();
        let mut w = store.write().unwrap();
        for tail in [&b"m1"[..], b"m2", b"u1"] {
            w.insert(tail, b"later kind").unwrap();
            model.insert(tail.to_vec(), b"later kind".to_vec());
        }
        w.commit().unwrap();
        for batch in 0..20 {
            let mut w = store.write().unwrap();
            for i in batch * 1000..(batch + 1) * 1000 {
                let k = format!("k{i:08}").into_bytes();
                let v = vec![(i % 251) as u8; 100];
                if ascending {
                    w.insert_ascending(&k, &v).unwrap();
                } else {
                    w.insert(&k, &v).unwrap();
                }
                model.insert(k, v);
            }
            w.commit().unwrap();
        }
        check_read(&store.read(), &model);
        store.verify().unwrap().leaf_pages
    };
    let per_leaf = 4096 / (2 + 9 + 11 + 100);
    let min_leaves = 20_000 / per_leaf as u64;
    let ascending = leaves_after(true);
    assert!(
        ascending <= min_leaves * 105 / 100 + 2,
        "{ascending} leaves for {min_leaves} minimum"
    );
    // The plain insert is the half-full baseline this test is about.
    assert!(leaves_after(false) > min_leaves * 3 / 2);
}

#[test]
fn btree_stats_and_compact_to() {
    let (dir, path) = tmp();
    let store = open(&path);
    let mut model = Model::new();
    fill(&store, &mut model, 5000, 200, 500);
    let mut w = store.write().unwrap();
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for k in keys.iter().filter(|k| k[k.len() - 1] != b'0') {
        w.remove(k).unwrap();
        model.remove(k);
    }
    w.set_meta(&[9; META_BYTES]);
    w.commit().unwrap();
    let st = store.stats();
    assert_eq!(st.entries, model.len() as u64);
    assert!(st.depth >= 2);
    assert!(st.free_pages > st.page_count / 2, "{st:?}");
    assert_eq!(st.readers, 0);

    let dst = dir.path().join("compact.db");
    let cst = store.compact_to(&dst).unwrap();
    assert!(matches!(
        store.compact_to(&dst),
        Err(BtreeError::AlreadyExists(_))
    ));
    assert_eq!(cst.entries, model.len() as u64);
    assert!(cst.page_count * 4 < st.page_count, "{cst:?} vs {st:?}");
    let c = open(&dst);
    check_read(&c.read(), &model);
    assert_eq!(c.read().meta(), [9; META_BYTES]);
    c.verify().unwrap();
}
