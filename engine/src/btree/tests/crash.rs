//! Crash points: the store writes through a fault-injecting file that fails at the N-th
//! operation (dropping or tearing that write), then a simulated power loss drops or tears
//! any write not yet synced. After every such crash the reopened store must hold exactly
//! the last successful commit (or, if the failing commit's meta page write had started,
//! exactly that commit) — never a mix — and pass a full verify.

use std::ops::Bound;

use super::*;
use crate::btree::{BtreeError, META_BYTES};

fn meta_of(t: u64) -> [u8; META_BYTES] {
    let mut m = [0u8; META_BYTES];
    m[..8].copy_from_slice(&t.to_le_bytes());
    m[8] = 0xAB;
    m
}

fn scan(store: &Store) -> (Model, [u8; META_BYTES]) {
    let r = store.read();
    let m = r
        .range(Bound::Unbounded, Bound::Unbounded)
        .map(|kv| {
            let (k, v) = kv.expect("scan after crash");
            (k.to_vec(), v.to_vec())
        })
        .collect();
    (m, r.meta())
}

/// The committed starting state every crash run begins from (written without faults).
fn base(path: &Path, seed: u64) -> Model {
    let store = open(path);
    let mut rng = Rng::new(seed ^ 0xBA5E);
    let mut model = Model::new();
    let mut w = store.write().unwrap();
    for _ in 0..400 {
        let k = rand_key(&mut rng, 3000);
        let v = rand_value(&mut rng, false);
        w.insert(&k, &v).unwrap();
        model.insert(k, v);
    }
    w.set_meta(&meta_of(0));
    w.commit().unwrap();
    model
}

struct Outcome {
    /// The state after the last successful commit, with its meta.
    committed: (Model, [u8; META_BYTES]),
    /// The state the failing commit would have made.
    attempted: Option<(Model, [u8; META_BYTES])>,
}

/// Runs the workload of `seed` on `store` until a commit fails or it is done.
fn workload(store: &Store, seed: u64, start: Model) -> Outcome {
    let mut rng = Rng::new(seed);
    let mut committed = (start, meta_of(0));
    for t in 1..=8u64 {
        let mut model = committed.0.clone();
        let mut w = store.write().expect("write before the crash");
        for _ in 0..rng.below(120) + 1 {
            let k = rand_key(&mut rng, 3000);
            if rng.chance(1, 3) {
                w.remove(&k).unwrap();
                model.remove(&k);
            } else {
                let v = rand_value(&mut rng, false);
                w.insert(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        w.set_meta(&meta_of(t));
        if rng.chance(1, 8) {
            w.abort();
            continue;
        }
        match w.commit() {
            Ok(()) => committed = (model, meta_of(t)),
            Err(e) => {
                assert!(matches!(e, BtreeError::Io { .. }), "commit error {e}");
                return Outcome {
                    committed,
                    attempted: Some((model, meta_of(t))),
                };
            }
        }
    }
    Outcome {
        committed,
        attempted: None,
    }
}

/// One crash run; returns None if the workload finished before the crash point, else
/// whether the reopened store holds the failed commit ("new") rather than the last
/// successful one.
fn crash_run(seed: u64, crash_at: usize, fault: Fault, loss_seed: u64) -> Option<bool> {
    let (_dir, path) = tmp();
    let start = base(&path, seed);
    let (store, st) = open_faulty(&path, Some(crash_at), fault);
    let out = workload(&store, seed, start);
    let attempted = out.attempted?;
    // Poisoned: no more writes; the committed state is still readable.
    assert!(matches!(store.write(), Err(BtreeError::Poisoned)));
    assert!(store.is_poisoned());
    assert_eq!(store.read().len(), out.committed.0.len() as u64);
    let maybe_new = st.lock().unwrap().meta_unsynced;
    drop(store);

    power_loss(&path, &st, &mut Rng::new(loss_seed));
    let store = open(&path);
    let got = scan(&store);
    let new =
        if got == out.committed {
            false
        } else if maybe_new && got == attempted {
            true
        } else {
            panic!(
            "seed {seed} crash at op {crash_at} ({fault:?}): reopened state is neither the last \
             commit ({} keys) nor{} the failed one ({} keys): {} keys, meta {:?}",
            out.committed.0.len(),
            if maybe_new { "" } else { " (its meta was never written)" },
            attempted.0.len(),
            got.0.len(),
            &got.1[..9],
        )
        };
    store
        .verify()
        .unwrap_or_else(|e| panic!("verify after crash at {crash_at}: {e}"));
    // The store goes on working from there.
    let mut model = got.0;
    let mut w = store.write().unwrap();
    let mut rng = Rng::new(seed + 99);
    for _ in 0..50 {
        let k = rand_key(&mut rng, 3000);
        let v = rand_value(&mut rng, false);
        w.insert(&k, &v).unwrap();
        model.insert(k, v);
    }
    w.commit().unwrap();
    drop(store);
    let store = open(&path);
    check_read(&store.read(), &model);
    store.verify().unwrap();
    Some(new)
}

/// The number of file operations the workload of `seed` makes without faults.
fn total_ops(seed: u64) -> (usize, Vec<(char, u64)>) {
    let (_dir, path) = tmp();
    let start = base(&path, seed);
    let (store, st) = open_faulty(&path, None, Fault::Fail);
    let out = workload(&store, seed, start);
    assert!(out.attempted.is_none());
    let st = st.lock().unwrap();
    (st.ops, st.log.clone())
}

#[test]
fn btree_crash_at_every_operation() {
    let (mut runs, mut new) = (0, 0);
    for seed in [101u64, 202] {
        let (total, log) = total_ops(seed);
        assert!(total > 20, "workload too small: {total} ops");
        // Every operation, once failing outright and once torn mid-write.
        let mut rng = Rng::new(seed);
        for (crash_at, &op) in log.iter().enumerate() {
            let tear = match op {
                // A meta page write: tear inside and just after the checksummed record.
                ('w', off) if off < 2 * PAGE_SIZE as u64 => {
                    [1, 64, 131, 132, 133, 4095][rng.below(6) as usize]
                }
                _ => rng.below(2 * PAGE_SIZE as u64) as usize + 1,
            };
            for fault in [Fault::Fail, Fault::Tear(tear)] {
                let got_new = crash_run(seed, crash_at, fault, rng.next_u64())
                    .expect("the crash point is inside the workload");
                runs += 1;
                new += got_new as usize;
            }
        }
        // Past the end: nothing fails.
        assert!(crash_run(seed, total, Fault::Fail, 0).is_none());
    }
    // Both outcomes happen: a crash after the meta write may keep the new commit.
    assert!(
        runs > 80 && new > 0 && new < runs / 2,
        "{runs} crash runs, {new} kept the new commit"
    );
}

#[test]
fn btree_crash_torn_meta_falls_back() {
    // Tear the first meta write of the workload at every interesting offset: the store
    // must come back with the previous commit unless the whole record made it.
    let seed = 303;
    let (_, log) = total_ops(seed);
    let meta_op = log
        .iter()
        .position(|&(k, off)| k == 'w' && off < 2 * PAGE_SIZE as u64)
        .expect("a meta write");
    for tear in [1usize, 7, 8, 16, 64, 100, 127, 128, 131, 132, 1000, 4095] {
        let (_dir, path) = tmp();
        let start = base(&path, seed);
        let (store, st) = open_faulty(&path, Some(meta_op), Fault::Tear(tear));
        let out = workload(&store, seed, start);
        let attempted = out.attempted.expect("crashed");
        drop(store);
        drop(st);
        let store = open(&path);
        let got = scan(&store);
        if tear < 132 {
            assert!(
                got == out.committed,
                "tear at {tear}: expected the previous commit"
            );
        } else {
            // The 132-byte record (fields + checksum) is complete: the new commit stands.
            assert!(got == attempted, "tear at {tear}: expected the new commit");
        }
        store.verify().unwrap();
    }
}
