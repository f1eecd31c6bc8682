//! Tests of the revision store: random command sequences applied to a `Store`, drained
//! and committed at random points, must load back into a store that answers exactly like
//! the original at the last committed index, including after simulated crashes (pending
//! changes dropped, WAL replayed); compaction's removals reach the file; a torn newest meta
//! page falls back to the previous commit; damage is reported, not loaded.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::mvcc::{LeaseTtl, ReadView, WrittenRecord};
use crate::pb::{
    PbCompactionRequest, PbCompare, PbDeleteRequest, PbLeaseGrantRequest, PbLeaseRevokeRequest,
    PbPutRequest, PbRangeRequest, PbTargetUnion, PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp,
};
use crate::request::{Command, LeaseCheckpoint, LeaseCheckpointRequest};
use crate::KvError;

use crate::test_rng::Rng;

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    (dir, path)
}

// ---------------------------------------------------------------------------------------
// Random commands.

const KEYS: u64 = 12;
const LEASES: u64 = 8;

fn key(rng: &mut Rng) -> Vec<u8> {
    format!("key{:02}", rng.below(KEYS)).into_bytes()
}

/// Mostly small values; some spill into the B+ tree's overflow pages.
fn value(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(100) {
        0..=89 => rng.below(24),
        90..=97 => 100 + rng.below(2000),
        _ => 3000 + rng.below(20_000),
    };
    (0..len)
        .map(|i| (i as u8).wrapping_add(rng.below(7) as u8))
        .collect()
}

fn put_req(rng: &mut Rng, key: Vec<u8>) -> PbPutRequest {
    let mut p = PbPutRequest {
        key,
        value: value(rng),
        ..Default::default()
    };
    match rng.below(20) {
        0 => p.ignore_lease = true,
        1 => {
            p.ignore_value = true;
            p.value.clear();
        }
        2..=8 => p.lease = rng.below(LEASES) as i64 + 1, // may not exist: then it fails
        _ => {}
    }
    p
}

fn delete_req(rng: &mut Rng) -> PbDeleteRequest {
    let key = key(rng);
    let range_end = match rng.below(4) {
        0 => vec![0],
        1 => self::key(rng),
        _ => Vec::new(),
    };
    PbDeleteRequest {
        key,
        range_end,
        ..Default::default()
    }
}

/// A txn of 1..=3 writes to distinct keys, chosen by a version compare.
fn txn_req(rng: &mut Rng) -> PbTxnRequest {
    let compare = vec![PbCompare {
        result: rng.below(4) as i32,
        target: 0, // VERSION
        key: key(rng),
        target_union: Some(PbTargetUnion::Version(rng.below(3) as i64)),
        ..Default::default()
    }];
    let mut keys: Vec<Vec<u8>> = (0..rng.below(3) + 1).map(|_| key(rng)).collect();
    keys.sort();
    keys.dedup();
    let ops = |rng: &mut Rng, keys: &[Vec<u8>]| {
        keys.iter()
            .map(|k| {
                let request = if rng.chance(70) {
                    PbTxnOpRequest::RequestPut(put_req(rng, k.clone()))
                } else {
                    PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
                        key: k.clone(),
                        ..Default::default()
                    })
                };
                PbTxnRequestOp {
                    request: Some(request),
                }
            })
            .collect()
    };
    let success = ops(rng, &keys);
    let failure = ops(rng, &keys[..1]);
    PbTxnRequest {
        compare,
        success,
        failure,
    }
}

fn lease_id(rng: &mut Rng) -> i64 {
    rng.below(LEASES) as i64 + 1
}

fn command(rng: &mut Rng, view: &ReadView) -> Command {
    match rng.below(100) {
        0..=39 => {
            let k = key(rng);
            Command::Put(put_req(rng, k))
        }
        40..=51 => Command::DeleteRange(delete_req(rng)),
        52..=65 => Command::Txn(txn_req(rng)),
        66..=74 => Command::LeaseGrant(PbLeaseGrantRequest {
            id: lease_id(rng),
            ttl: rng.between(5, 100),
        }),
        75..=80 => Command::LeaseRevoke(PbLeaseRevokeRequest { id: lease_id(rng) }),
        81..=86 => {
            let checkpoints = (0..rng.below(3) + 1)
                .map(|_| LeaseCheckpoint {
                    id: lease_id(rng),
                    remaining_ttl: rng.between(0, 100),
                })
                .collect();
            Command::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints })
        }
        87..=90 => {
            // Mostly valid: between the compacted and the current revision.
            let lo = view.compact_revision();
            Command::Compact(PbCompactionRequest {
                revision: rng.between(lo, view.revision()),
                physical: false,
            })
        }
        _ => {
            // Keys outside the usual space, some sorting before the others' prefix.
            let k = vec![b'a' + rng.below(2) as u8; 1 + rng.below(3) as usize];
            Command::Put(put_req(rng, k))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Comparing two key spaces.

fn all_keys(revision: i64) -> PbRangeRequest {
    PbRangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..Default::default()
    }
}

/// `got` answers every read exactly as `want`: the structures, ranges at every revision,
/// watch catch-up windows, leases, and HashKV.
fn assert_same(got: &ReadView, want: &ReadView, rng: &mut Rng, ctx: &str) {
    assert_eq!(got.dump(), want.dump(), "{ctx}: key space");
    assert_eq!(
        (got.revision(), got.compact_revision()),
        (want.revision(), want.compact_revision()),
        "{ctx}"
    );
    let rev = want.revision();
    for r in (want.compact_revision() - 1).max(0)..=rev + 1 {
        assert_eq!(
            got.range(&all_keys(r)),
            want.range(&all_keys(r)),
            "{ctx}: range at {r}"
        );
    }
    for _ in 0..4 {
        let mut req = all_keys(rng.between(0, rev));
        req.key = key(rng);
        req.limit = rng.between(0, 3);
        req.sort_order = rng.below(3) as i32;
        assert_eq!(got.range(&req), want.range(&req), "{ctx}: {req:?}");
        let after = rng.between(0, rev);
        let up_to = rng.between(after, rev + 1);
        let events = |v: &ReadView| {
            v.changes(&[0], &[0], after, up_to, 1000)
                .map(|evs| evs.iter().map(|e| e.to_pb(true)).collect::<Vec<_>>())
        };
        assert_eq!(
            events(got),
            events(want),
            "{ctx}: changes ({after}, {up_to}]"
        );
        let r = rng.between(-1, rev + 1);
        assert_eq!(got.hash_kv(r), want.hash_kv(r), "{ctx}: hash at {r}");
    }
    assert_eq!(got.leases(), want.leases(), "{ctx}: leases");
    for id in want.leases() {
        assert_eq!(got.lease(id), want.lease(id), "{ctx}: lease {id}");
    }
    assert_eq!(got.lease_ttls(), want.lease_ttls(), "{ctx}");
    assert_eq!(got.key_count(), want.key_count(), "{ctx}");
}

/// The backend's HashKV over its commit equals the committed key space's.
fn assert_same_hashes(backend: &Backend, view: &ReadView, rng: &mut Rng, ctx: &str) {
    for r in [0, view.revision(), rng.between(-1, view.revision() + 1)] {
        let got = backend.hash_kv(r).map_err(|e| match e {
            BackendError::Kv(e) => e,
            e => panic!("{ctx}: hash_kv({r}): {e}"),
        });
        assert_eq!(got, view.hash_kv(r), "{ctx}: backend hash at {r}");
    }
}

// ---------------------------------------------------------------------------------------
// The round trip.

/// What the last commit holds.
struct Committed {
    view: ReadView,
    index: u64,
    term: u64,
}

/// The server's loop in miniature: apply commands (the log), drain changes into a pending
/// set now and then, commit it now and then, and sometimes crash: the pending set and the
/// store are lost; the backend is reopened, loaded, and the log after its index replayed.
fn round_trip(seed: u64, steps: usize) {
    let (_dir, path) = tmp();
    let mut rng = Rng::new(seed);
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    let mut log: Vec<Command> = Vec::new();
    let mut pending = ChangeSet::default();
    let mut committed = Committed {
        view: store.view(),
        index: 0,
        term: 0,
    };
    let (mut crashes, mut commits) = (0, 0);
    for step in 0..steps {
        let cmd = command(&mut rng, &store.view());
        let _ = store.apply(&cmd);
        log.push(cmd);
        if rng.chance(25) {
            pending.merge(store.take_changes());
        }
        if rng.chance(8) {
            pending.merge(store.take_changes());
            let (index, term) = (log.len() as u64, 1 + log.len() as u64 / 100);
            backend
                .commit(&std::mem::take(&mut pending), index, term)
                .unwrap();
            committed = Committed {
                view: store.view(),
                index,
                term,
            };
            commits += 1;
            if rng.chance(30) {
                let (loaded, _) = backend.load().unwrap();
                assert_same(
                    &loaded.view(),
                    &committed.view,
                    &mut rng,
                    &format!("seed {seed} step {step}: load"),
                );
                assert_same_hashes(
                    &backend,
                    &committed.view,
                    &mut rng,
                    &format!("seed {seed} step {step}"),
                );
            }
        }
        if rng.chance(2) {
            drop(backend);
            pending = ChangeSet::default();
            let ctx = format!("seed {seed} step {step}: crash");
            let recovered;
            (backend, recovered) = recover(&path, &log, &committed, &mut rng, &ctx);
            assert_same(
                &recovered.view(),
                &store.view(),
                &mut rng,
                &format!("{ctx}: after replay"),
            );
            store = recovered;
            crashes += 1;
        }
    }
    pending.merge(store.take_changes());
    backend.commit(&pending, log.len() as u64, 7).unwrap();
    backend.verify().unwrap();
    drop(backend);
    let backend = Backend::open(&path).unwrap();
    let (loaded, meta) = backend.load().unwrap();
    assert_eq!(meta.consistent_index, log.len() as u64);
    assert_same(
        &loaded.view(),
        &store.view(),
        &mut rng,
        &format!("seed {seed}: final"),
    );
    assert_same_hashes(
        &backend,
        &store.view(),
        &mut rng,
        &format!("seed {seed}: final"),
    );
    assert!(
        commits > 5 && crashes > 0 || steps < 300,
        "seed {seed}: {commits} commits, {crashes} crashes"
    );
}

/// Reopens the backend after a crash: it must hold exactly the last commit; then replays
/// the log after its consistent index, as the server's recovery does.
fn recover(
    path: &Path,
    log: &[Command],
    committed: &Committed,
    rng: &mut Rng,
    ctx: &str,
) -> (Backend, Store) {
    let backend = Backend::open(path).unwrap();
    let (mut store, meta) = backend.load().unwrap();
    assert_eq!(
        (meta.consistent_index, meta.term),
        (committed.index, committed.term),
        "{ctx}"
    );
    assert_eq!(
        (meta.revision, meta.compact_revision),
        (store.revision(), committed.view.dump().compact_revision)
    );
    assert_same(&store.view(), &committed.view, rng, ctx);
    for cmd in &log[meta.consistent_index as usize..] {
        let _ = store.apply(cmd);
    }
    (backend, store)
}

#[test]
fn random_histories_load_back_identically() {
    for seed in 1..=10 {
        round_trip(seed, 600);
    }
}

// ---------------------------------------------------------------------------------------
// Targeted cases.

fn put(key: &str, value: &str) -> Command {
    Command::Put(PbPutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn compact(revision: i64) -> Command {
    Command::Compact(PbCompactionRequest {
        revision,
        physical: false,
    })
}

fn apply(store: &mut Store, cmd: &Command) {
    store.apply(cmd).unwrap();
}

#[test]
fn compaction_removes_history_from_the_file() {
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    for i in 0..300 {
        apply(
            &mut store,
            &put(&format!("k{}", i % 10), &"v".repeat(i % 50)),
        );
    }
    for i in 0..4 {
        let cmd = Command::DeleteRange(PbDeleteRequest {
            key: format!("k{i}").into(),
            ..Default::default()
        });
        apply(&mut store, &cmd);
    }
    backend.commit(&store.take_changes(), 1, 1).unwrap();
    assert_eq!(backend.stats().entries, 304);
    let used = backend.size_in_use_bytes();
    let rev = store.revision();
    apply(&mut store, &compact(rev));
    let changes = store.take_changes();
    assert_eq!(changes.removed().len(), 298);
    backend.commit(&changes, 2, 1).unwrap();
    // Six live keys stay; the deleted ones went with their tombstones.
    assert_eq!(backend.stats().entries, 6);
    assert!(backend.size_in_use_bytes() <= used);
    backend.verify().unwrap();
    let (loaded, meta) = backend.load().unwrap();
    assert_eq!((meta.revision, meta.compact_revision), (305, 305));
    assert_same(
        &loaded.view(),
        &store.view(),
        &mut Rng::new(1),
        "after compaction",
    );
}

/// A compaction whose removals include records written in the same batch.
#[test]
fn one_batch_may_write_and_remove_a_revision() {
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    for cmd in [
        put("a", "1"),
        put("a", "2"),
        put("b", "1"),
        compact(4),
        put("a", "3"),
    ] {
        apply(&mut store, &cmd);
    }
    backend.commit(&store.take_changes(), 5, 1).unwrap();
    assert_eq!(backend.stats().entries, 3); // a@3, b@4, a@5
    let (loaded, _) = backend.load().unwrap();
    assert_same(
        &loaded.view(),
        &store.view(),
        &mut Rng::new(2),
        "same batch",
    );
}

/// The revision survives even when compaction removed every record that carried it.
#[test]
fn revision_is_kept_when_its_records_are_compacted_away() {
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    let del = Command::DeleteRange(PbDeleteRequest {
        key: "a".into(),
        ..Default::default()
    });
    for cmd in [put("a", "1"), del, compact(3)] {
        apply(&mut store, &cmd);
    }
    backend.commit(&store.take_changes(), 3, 1).unwrap();
    assert_eq!(backend.stats().entries, 0);
    let (loaded, meta) = backend.load().unwrap();
    assert_eq!(
        (loaded.revision(), loaded.compact_revision(), meta.revision),
        (3, 3, 3)
    );
}

#[test]
fn fresh_and_empty_commits() {
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    assert_eq!(backend.meta(), BackendMeta::FRESH);
    let (store, meta) = backend.load().unwrap();
    assert_eq!(
        (store.revision(), store.compact_revision(), meta),
        (1, 0, BackendMeta::FRESH)
    );
    backend.commit(&ChangeSet::default(), 5, 2).unwrap();
    drop(backend);
    let mut backend = Backend::open(&path).unwrap();
    let want = BackendMeta {
        consistent_index: 5,
        term: 2,
        ..BackendMeta::FRESH
    };
    assert_eq!(backend.meta(), want);
    assert_eq!(backend.load().unwrap().1, want);
    // The log never goes back.
    let err = backend.commit(&ChangeSet::default(), 4, 2).unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::IndexWentBack {
                committed: 5,
                given: 4
            }
        ),
        "{err}"
    );
    assert_eq!(backend.meta(), want);
    assert!(backend.size_bytes() >= 2 * PAGE_SIZE as u64);
    assert!(backend.size_in_use_bytes() <= backend.size_bytes());
}

/// A commit whose meta values equal a fresh file's (index 0, revision 1) is still a commit.
#[test]
fn a_commit_with_fresh_looking_meta_reopens() {
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    apply(
        &mut store,
        &Command::LeaseGrant(PbLeaseGrantRequest { id: 1, ttl: 9 }),
    );
    backend.commit(&store.take_changes(), 0, 0).unwrap();
    drop(backend);
    let backend = Backend::open(&path).unwrap();
    assert_eq!(backend.meta(), BackendMeta::FRESH);
    assert_eq!(backend.load().unwrap().0.view().leases(), vec![1]);
}

#[test]
fn leases_and_their_keys_survive_a_reload() {
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    let grant = |id| Command::LeaseGrant(PbLeaseGrantRequest { id, ttl: 30 });
    let leased = |k: &str, lease| {
        Command::Put(PbPutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
    };
    let cp = Command::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint {
            id: -3,
            remaining_ttl: 9,
        }],
    });
    for cmd in [
        grant(-3),
        grant(i64::MAX),
        leased("a", -3),
        leased("b", i64::MAX),
        leased("c", -3),
        cp,
        leased("a", 0),
    ] {
        apply(&mut store, &cmd);
    }
    backend.commit(&store.take_changes(), 1, 1).unwrap();
    let (loaded, _) = backend.load().unwrap();
    let lease = loaded.view().lease(-3).unwrap();
    assert_eq!(
        (lease.ttl_secs, lease.remaining_ttl_secs, lease.keys),
        (30, 9, vec![Bytes::from("c")])
    );
    assert_same(&loaded.view(), &store.view(), &mut Rng::new(3), "leases");
    apply(
        &mut store,
        &Command::LeaseRevoke(PbLeaseRevokeRequest { id: -3 }),
    );
    backend.commit(&store.take_changes(), 2, 1).unwrap();
    let (loaded, _) = backend.load().unwrap();
    assert_eq!(loaded.view().leases(), vec![i64::MAX]);
    assert_same(
        &loaded.view(),
        &store.view(),
        &mut Rng::new(4),
        "after revoke",
    );
}

/// A crash while the newest meta page was being written: the B+ tree falls back to the
/// previous commit, and the backend loads exactly the key space of that commit's index.
#[test]
fn torn_newest_meta_page_falls_back_to_the_previous_commit() {
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    for i in 0..50 {
        apply(&mut store, &put(&format!("k{}", i % 7), "first"));
    }
    backend.commit(&store.take_changes(), 50, 1).unwrap();
    let first = store.view();
    for i in 0..50 {
        apply(&mut store, &put(&format!("k{}", i % 9), "second"));
    }
    apply(&mut store, &compact(60));
    backend.commit(&store.take_changes(), 101, 2).unwrap();
    let slot = backend.stats().txid % 2;
    drop(backend);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xA5; 100], slot * PAGE_SIZE as u64 + 20)
        .unwrap();
    drop(file);
    let backend = Backend::open(&path).unwrap();
    let (loaded, meta) = backend.load().unwrap();
    assert_eq!((meta.consistent_index, meta.term), (50, 1));
    assert_same(&loaded.view(), &first, &mut Rng::new(5), "fallback");
}

#[test]
fn damage_is_reported_not_loaded() {
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    apply(&mut store, &put("a", "1"));
    backend.commit(&store.take_changes(), 1, 1).unwrap();
    let bad: [(&[u8], &[u8]); 4] = [
        (b"kshort", b"x"),
        (&layout::revision_key(9, 0), b"too short"),
        (&layout::revision_key(9, 0), &[2u8; 40]), // unknown flag bits
        (&layout::lease_key(4), b"12345"),
    ];
    for (k, v) in bad {
        let mut w = backend.store.write().unwrap();
        w.insert(k, v).unwrap();
        w.commit().unwrap();
        assert!(
            matches!(backend.load(), Err(BackendError::Corrupt(_))),
            "{k:02x?}"
        );
        let mut w = backend.store.write().unwrap();
        w.remove(k).unwrap();
        w.commit().unwrap();
        backend.load().unwrap();
    }
    // A record whose mod_revision disagrees with its key.
    let kv = KeyValue {
        key: "z".into(),
        mod_revision: 3,
        ..Default::default()
    };
    let mut buf = Vec::new();
    layout::encode_record(
        &mut buf,
        &WrittenRecord {
            main: 3,
            sub: 0,
            kv: &kv,
            tombstone: false,
        },
    );
    let mut w = backend.store.write().unwrap();
    w.insert(&layout::revision_key(2, 5), &buf).unwrap();
    w.commit().unwrap();
    assert!(matches!(backend.load(), Err(BackendError::Corrupt(_))));
    // A meta record of an unknown layout version is refused at open.
    let mut w = backend.store.write().unwrap();
    let mut meta = w.meta();
    meta[0] = 2;
    w.set_meta(&meta);
    w.commit().unwrap();
    drop(backend);
    assert!(matches!(
        Backend::open(&path),
        Err(BackendError::UnsupportedFormat(2))
    ));
}

#[test]
fn layout_round_trips() {
    let kv = KeyValue {
        key: "key".into(),
        value: vec![9u8; 5000].into(),
        create_revision: 3,
        mod_revision: i64::MAX,
        version: 12,
        lease: -8,
    };
    let mut buf = Vec::new();
    for tombstone in [false, true] {
        layout::encode_record(
            &mut buf,
            &WrittenRecord {
                main: i64::MAX,
                sub: 4,
                kv: &kv,
                tombstone,
            },
        );
        let (got, t) = layout::decode_record(&buf).unwrap();
        assert_eq!(
            (got.key, got.value, t),
            (&kv.key[..], &kv.value[..], tombstone)
        );
        assert_eq!(
            (
                got.create_revision,
                got.mod_revision,
                got.version,
                got.lease
            ),
            (3, i64::MAX, 12, -8)
        );
    }
    assert_eq!(
        layout::decode_revision_key(&layout::revision_key(i64::MAX, 7)),
        Ok((i64::MAX, 7))
    );
    assert!(layout::revision_key(1, i64::MAX) < layout::revision_key(2, 0));
    assert!(layout::revision_key(255, 0) < layout::revision_key(256, 0));
    let lease = LeaseTtl {
        id: -5,
        ttl_secs: 60,
        remaining_ttl_secs: 7,
    };
    assert_eq!(
        layout::decode_lease(&layout::lease_key(-5), &layout::encode_lease(&lease)),
        Ok(lease)
    );
    let meta = BackendMeta {
        consistent_index: u64::MAX,
        term: 3,
        revision: 99,
        compact_revision: -1,
    };
    assert_eq!(BackendMeta::decode(&meta.encode()), Ok(meta));
    assert_eq!(BackendMeta::decode(&[0; 64]), Ok(BackendMeta::FRESH));
    let mut bad = meta.encode();
    bad[50] = 1;
    assert_eq!(BackendMeta::decode(&bad), Err(None));
}

#[test]
fn hash_kv_refuses_compacted_and_future_revisions() {
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    for cmd in [put("a", "1"), put("a", "2"), compact(2), put("b", "1")] {
        apply(&mut store, &cmd);
    }
    backend.commit(&store.take_changes(), 4, 1).unwrap();
    assert!(matches!(
        backend.hash_kv(2),
        Err(BackendError::Kv(KvError::Compacted))
    ));
    assert!(matches!(
        backend.hash_kv(5),
        Err(BackendError::Kv(KvError::FutureRevision))
    ));
    let h = backend.hash_kv(0).unwrap();
    assert_eq!((h.revision, h.compact_revision), (4, 2));
    assert_eq!(h, store.view().hash_kv(0).unwrap());
}

/// Load time for 1,000,000 keys of 8 bytes with 256-byte values (run in release:
/// `cargo test --release -p corekv-engine load_a_million_keys -- --ignored --nocapture`).
#[test]
#[ignore]
fn load_a_million_keys() {
    const N: usize = 1_000_000;
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    let (mut applying, mut committing) = (Duration::ZERO, Duration::ZERO);
    for i in 0..N {
        let started = Instant::now();
        let p = PbPutRequest {
            key: format!("{i:08}").into_bytes(),
            value: vec![(i % 251) as u8; 256],
            ..Default::default()
        };
        store.apply(&Command::Put(p)).unwrap();
        applying += started.elapsed();
        if (i + 1) % 10_000 == 0 {
            let started = Instant::now();
            backend
                .commit(&store.take_changes(), i as u64 + 1, 1)
                .unwrap();
            committing += started.elapsed();
        }
    }
    let started = Instant::now();
    let snap = backend.store.read();
    let mut scanned = 0usize;
    for_each_record(&snap, i64::MAX, |_, _, kv, _| {
        scanned += kv.key.len() + kv.value.len();
        Ok(())
    })
    .unwrap();
    drop(snap);
    let scan = started.elapsed();
    let started = Instant::now();
    let (loaded, meta) = backend.load().unwrap();
    let load = started.elapsed();
    assert_eq!(
        (loaded.view().key_count(), meta.consistent_index, scanned),
        (N, N as u64, N * 264)
    );
    let started = Instant::now();
    let hash = backend.hash_kv(0).unwrap();
    let hashed = started.elapsed();
    assert_eq!(hash, store.view().hash_kv(0).unwrap());
    eprintln!(
        "{N} keys: apply {applying:?}, 100 commits of 10,000 {committing:?}; load {load:?} \
         (scan + decode alone {scan:?}); hash_kv {hashed:?}; size {} MiB, in use {} MiB",
        backend.size_bytes() >> 20,
        backend.size_in_use_bytes() >> 20
    );
}

#[test]
fn users_roles_and_the_auth_switch_survive_a_reload() {
    use crate::pb::{
        PbAuthRoleAddRequest, PbAuthRoleDeleteRequest, PbAuthRoleGrantPermissionRequest,
        PbAuthUserAddRequest, PbAuthUserGrantRoleRequest,
    };
    use crate::request::AuthCommand;
    let (_dir, path) = tmp();
    let mut backend = Backend::open(&path).unwrap();
    let mut store = Store::new();
    let user = |name: &str| {
        Command::Auth(AuthCommand::UserAdd(PbAuthUserAddRequest {
            name: name.into(),
            hashed_password: format!("$2b$04$hash-of-{name}"),
            ..Default::default()
        }))
    };
    let role = |name: &str| {
        Command::Auth(AuthCommand::RoleAdd(PbAuthRoleAddRequest {
            name: name.into(),
        }))
    };
    let grant_role = |user: &str, role: &str| {
        Command::Auth(AuthCommand::UserGrantRole(PbAuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        }))
    };
    let mut perm = PbAuthRoleGrantPermissionRequest {
        name: "r1".into(),
        perm: Some(Default::default()),
    };
    if let Some(p) = perm.perm.as_mut() {
        p.perm_type = crate::mvcc::auth::PERM_READ;
        p.key = b"p/".to_vec();
        p.range_end = b"p0".to_vec();
    }
    for cmd in [
        user("root"),
        grant_role("root", "root"),
        user("u1"),
        role("r1"),
        role("r2"),
        Command::Auth(AuthCommand::RoleGrantPermission(perm)),
        grant_role("u1", "r1"),
        grant_role("u1", "r2"),
        Command::Auth(AuthCommand::Enable),
    ] {
        apply(&mut store, &cmd);
    }
    backend.commit(&store.take_changes(), 1, 1).unwrap();
    // A later change rewrites the set: the deleted role must not come back.
    apply(
        &mut store,
        &Command::Auth(AuthCommand::RoleDelete(PbAuthRoleDeleteRequest {
            role: "r2".into(),
        })),
    );
    backend.commit(&store.take_changes(), 2, 1).unwrap();
    drop(backend);
    let (loaded, _) = Backend::open(&path).unwrap().load().unwrap();
    let (got, want) = (loaded.view(), store.view());
    assert_eq!(got.auth(), want.auth());
    assert!(got.auth().enabled);
    assert_eq!(
        got.auth().revision,
        10,
        "1, then +1 for each change but enable"
    );
    assert_eq!(got.auth().users["u1"].roles, ["r1"]);
    assert!(!got.auth().roles.contains_key("r2"));
    assert!(
        loaded.auth_shared().enabled(),
        "a restored store publishes its switch"
    );
}
