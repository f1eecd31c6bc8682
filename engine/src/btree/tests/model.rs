//! Property test: random insert / remove / commit / abort / reopen sequences against a
//! `BTreeMap` model.

use std::ops::Bound;

use super::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Iterations scale: `COREKV_BTREE_PROPTEST_SCALE=10 cargo test ...` for a longer run.
fn scale() -> u64 {
    env("COREKV_BTREE_PROPTEST_SCALE", 1)
}

struct Params {
    txns: u64,
    max_ops: u64,
    space: u64,
    /// Percent of operations that are removes.
    remove_pct: u64,
    large_values: bool,
}

/// `COREKV_BTREE_PROPTEST_SEED=n` shifts every seed (explore other sequences).
fn run(seed: u64, p: &Params) {
    let seed = seed + env("COREKV_BTREE_PROPTEST_SEED", 0) * 1000;
    let (_dir, path) = tmp();
    let mut rng = Rng::new(seed);
    let mut store = open(&path);
    let mut committed = Model::new();
    let mut committed_meta = [0u8; super::super::META_BYTES];
    for t in 0..p.txns * scale() {
        let mut model = committed.clone();
        let mut w = store.write().expect("write");
        let ops = rng.below(p.max_ops) + 1;
        for _ in 0..ops {
            let k = rand_key(&mut rng, p.space);
            if rng.below(100) < p.remove_pct {
                let was = w.remove(&k).expect("remove");
                assert_eq!(was, model.remove(&k).is_some(), "remove result");
            } else {
                let v = rand_value(&mut rng, p.large_values);
                w.insert(&k, &v).expect("insert");
                model.insert(k, v);
            }
            if rng.chance(1, 20) {
                check_gets(&w, &model, &mut rng, p.space, 3);
            }
        }
        assert_eq!(w.len(), model.len() as u64);
        if rng.chance(1, 4) {
            check_ranges(|s, e| w.range(s, e), &model, &mut rng, p.space, 4);
        }
        match rng.below(10) {
            0..=1 => {
                if rng.chance(1, 2) {
                    w.abort();
                } else {
                    drop(w);
                }
            }
            _ => {
                let meta: [u8; 64] = rng.bytes(64).try_into().unwrap();
                w.set_meta(&meta);
                w.commit().expect("commit");
                committed = model;
                committed_meta = meta;
            }
        }
        if rng.chance(1, 10) {
            drop(store);
            store = open(&path);
        }
        let r = store.read();
        assert_eq!(r.meta(), committed_meta);
        if t % 5 == 0 || committed.len() < 50 {
            check_read(&r, &committed);
        }
        check_ranges(|s, e| r.range(s, e), &committed, &mut rng, p.space, 3);
        if t % 7 == 0 {
            let rep = store.verify().expect("verify");
            assert_eq!(rep.entries, committed.len() as u64);
        }
    }
    drop(store);
    let store = open(&path);
    check_read(&store.read(), &committed);
    store.verify().expect("final verify");
}

#[test]
fn btree_model_small_keyspace() {
    // Many overwrites and removes in a few pages: merges, redistribution, root collapse.
    let p = Params {
        txns: 80,
        max_ops: 60,
        space: 200,
        remove_pct: 45,
        large_values: false,
    };
    for seed in 1..=6 {
        run(seed, &p);
    }
}

#[test]
fn btree_model_growing() {
    // Mostly inserts into a larger key space: a multi-level tree.
    let p = Params {
        txns: 40,
        max_ops: 400,
        space: 20_000,
        remove_pct: 15,
        large_values: false,
    };
    for seed in 10..=12 {
        run(seed, &p);
    }
}

#[test]
fn btree_model_shrinking_to_empty() {
    let (_dir, path) = tmp();
    let mut rng = Rng::new(77);
    let store = open(&path);
    let mut model = Model::new();
    let mut w = store.write().unwrap();
    for _ in 0..3000 {
        let k = rand_key(&mut rng, 5000);
        let v = rand_value(&mut rng, false);
        w.insert(&k, &v).unwrap();
        model.insert(k, v);
    }
    w.commit().unwrap();
    let depth = store.stats().depth;
    assert!(depth >= 3, "depth {depth}");
    // Remove in random order, committing now and then, down to nothing.
    let mut keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for i in (1..keys.len()).rev() {
        keys.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for chunk in keys.chunks(250) {
        let mut w = store.write().unwrap();
        for k in chunk {
            assert!(w.remove(k).unwrap());
            model.remove(k);
        }
        w.commit().unwrap();
        check_read(&store.read(), &model);
        store.verify().unwrap();
    }
    let st = store.stats();
    assert_eq!((st.entries, st.depth), (0, 0));
    // Everything but the meta pages and the free list itself is free.
    assert_eq!(st.free_pages + st.freelist_pages + 2, st.page_count);
    assert!(store
        .read()
        .range(Bound::Unbounded, Bound::Unbounded)
        .next()
        .is_none());
}

#[test]
fn btree_model_large_values() {
    // Values spanning overflow runs (up to ~1.7 MiB).
    let p = Params {
        txns: 30,
        max_ops: 30,
        space: 60,
        remove_pct: 30,
        large_values: true,
    };
    for seed in 20..=22 {
        run(seed, &p);
    }
}
