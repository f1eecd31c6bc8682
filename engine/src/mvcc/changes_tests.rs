//! Change tracking (what `apply` records for the revision store), `Store::restore`, and
//! HashKV over the in-memory key space.

use std::collections::BTreeMap;

use super::*;
use crate::pb::{
    PbCompactionRequest, PbDeleteRequest, PbLeaseGrantRequest, PbLeaseRevokeRequest, PbPutRequest,
    PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp,
};
use crate::request::{LeaseCheckpoint, LeaseCheckpointRequest};

pub(crate) fn put(key: &str, value: &str, lease: i64) -> Command {
    Command::Put(PbPutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..Default::default()
    })
}

pub(crate) fn del(key: &str, end: &str) -> Command {
    Command::DeleteRange(PbDeleteRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    })
}

pub(crate) fn compact(revision: i64) -> Command {
    Command::Compact(PbCompactionRequest {
        revision,
        physical: false,
    })
}

fn grant(id: i64, ttl: i64) -> Command {
    Command::LeaseGrant(PbLeaseGrantRequest { id, ttl })
}

fn revoke(id: i64) -> Command {
    Command::LeaseRevoke(PbLeaseRevokeRequest { id })
}

fn checkpoint(id: i64, remaining_ttl: i64) -> Command {
    Command::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint { id, remaining_ttl }],
    })
}

fn txn_puts(keys: &[&str]) -> Command {
    let success = keys
        .iter()
        .map(|k| PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                key: k.as_bytes().to_vec(),
                value: b"t".to_vec(),
                ..Default::default()
            })),
        })
        .collect();
    Command::Txn(PbTxnRequest {
        compare: Vec::new(),
        success,
        failure: Vec::new(),
    })
}

fn written(c: &ChangeSet) -> Vec<(i64, i64, String, bool)> {
    c.written()
        .map(|r| {
            (
                r.main,
                r.sub,
                String::from_utf8(r.kv.key.to_vec()).unwrap(),
                r.tombstone,
            )
        })
        .collect()
}

fn apply_all(store: &mut Store, commands: &[Command]) {
    for c in commands {
        let _ = store.apply(c);
    }
}

#[test]
fn writes_are_tracked_in_revision_order() {
    let mut s = Store::new();
    apply_all(
        &mut s,
        &[put("a", "1", 0), txn_puts(&["b", "c"]), del("a", "")],
    );
    let c = s.take_changes();
    assert_eq!(
        written(&c),
        vec![
            (2, 0, "a".into(), false),
            (3, 0, "b".into(), false),
            (3, 1, "c".into(), false),
            (4, 0, "a".into(), true)
        ]
    );
    assert_eq!(
        (c.revision(), c.compact_revision(), c.len()),
        (Some(4), Some(-1), 4)
    );
    let next = s.take_changes();
    assert!(next.is_empty());
    assert_eq!(next.revision(), Some(4));
}

#[test]
fn failed_and_empty_commands_track_nothing() {
    let mut s = Store::new();
    assert!(s.apply(&put("a", "1", 99)).is_err()); // no such lease
    assert!(s.apply(&compact(5)).is_err()); // future revision
    s.apply(&del("zzz", "")).unwrap(); // deletes nothing
    let c = s.take_changes();
    assert!(c.is_empty());
    assert_eq!(c.revision(), Some(1));
}

#[test]
fn compaction_reports_what_it_removed() {
    let mut s = Store::new();
    // a: 2, 3; b: 4, tombstone 5; c: 6
    apply_all(
        &mut s,
        &[
            put("a", "1", 0),
            put("a", "2", 0),
            put("b", "1", 0),
            del("b", ""),
            put("c", "1", 0),
        ],
    );
    s.take_changes();
    s.apply(&compact(5)).unwrap();
    let c = s.take_changes();
    let mut removed = c.removed().to_vec();
    removed.sort();
    assert_eq!(removed, vec![(2, 0), (4, 0), (5, 0)]);
    assert_eq!((c.revision(), c.compact_revision()), (Some(6), Some(5)));
    assert_eq!(c.len(), 3);
}

#[test]
fn lease_changes_keep_the_last_state() {
    let mut s = Store::new();
    apply_all(
        &mut s,
        &[
            grant(7, 60),
            grant(8, 30),
            put("k", "v", 7),
            checkpoint(7, 42),
            checkpoint(99, 1),
        ],
    );
    let c = s.take_changes();
    let leases: Vec<_> = c.leases().collect();
    assert_eq!(
        leases,
        vec![
            (
                7,
                Some(LeaseTtl {
                    id: 7,
                    ttl_secs: 60,
                    remaining_ttl_secs: 42
                })
            ),
            (
                8,
                Some(LeaseTtl {
                    id: 8,
                    ttl_secs: 30,
                    remaining_ttl_secs: 0
                })
            )
        ]
    );
    s.apply(&revoke(7)).unwrap();
    let c = s.take_changes();
    assert_eq!(c.leases().collect::<Vec<_>>(), vec![(7, None)]);
    // The revoke deleted the attached key.
    assert_eq!(written(&c), vec![(3, 0, "k".into(), true)]);
}

#[test]
fn merge_appends_and_takes_the_later_position() {
    let mut s = Store::new();
    apply_all(&mut s, &[grant(1, 10), put("a", "1", 0)]);
    let mut first = s.take_changes();
    apply_all(&mut s, &[revoke(1), put("b", "1", 0), compact(2)]);
    first.merge(s.take_changes());
    assert_eq!(
        written(&first),
        vec![(2, 0, "a".into(), false), (3, 0, "b".into(), false)]
    );
    assert_eq!(first.leases().collect::<Vec<_>>(), vec![(1, None)]);
    assert_eq!(
        (first.revision(), first.compact_revision()),
        (Some(3), Some(2))
    );
    let mut empty = ChangeSet::default();
    empty.merge(ChangeSet::default());
    assert_eq!((empty.revision(), empty.len()), (None, 0));
}

#[test]
fn tracking_can_be_switched_off() {
    let mut s = Store::new();
    s.apply(&put("a", "1", 0)).unwrap();
    s.set_change_tracking(false);
    s.apply(&put("b", "1", 0)).unwrap();
    assert!(s.take_changes().is_empty());
}

/// The key space as a store would persist it: records by revision, leases, position.
#[derive(Default)]
struct Persisted {
    records: BTreeMap<(i64, i64), (KeyValue, bool)>,
    leases: BTreeMap<i64, LeaseTtl>,
    revision: i64,
    compact: i64,
}

impl Persisted {
    fn commit(&mut self, c: &ChangeSet) {
        for r in c.written() {
            self.records
                .insert((r.main, r.sub), (r.kv.clone(), r.tombstone));
        }
        for rev in c.removed() {
            self.records.remove(rev);
        }
        for (id, l) in c.leases() {
            match l {
                Some(l) => self.leases.insert(id, l),
                None => self.leases.remove(&id),
            };
        }
        self.revision = c.revision().unwrap();
        self.compact = c.compact_revision().unwrap();
    }

    fn restore(&self) -> Store {
        let records = self
            .records
            .iter()
            .map(|((m, s), (kv, t))| (*m, *s, kv.clone(), *t));
        Store::restore(
            records,
            self.leases.values().copied(),
            self.compact,
            self.revision,
        )
        .unwrap()
    }
}

fn history() -> Vec<Command> {
    vec![
        grant(5, 100),
        put("a", "1", 5),
        put("b", "1", 0),
        txn_puts(&["c", "d"]),
        put("a", "2", 0),
        checkpoint(5, 50),
        grant(6, 10),
        put("e", "1", 6),
        put("b", "2", 6),
        del("c", ""),
        compact(6),
        revoke(6),
        put("f", "1", 5),
        del("a", "b"),
    ]
}

#[test]
fn restore_rebuilds_the_same_key_space() {
    let mut s = Store::new();
    let mut disk = Persisted::default();
    for (i, c) in history().iter().enumerate() {
        let _ = s.apply(c);
        if i % 3 == 0 {
            disk.commit(&s.take_changes());
        }
    }
    disk.commit(&s.take_changes());
    let restored = disk.restore();
    assert_eq!(restored.view().dump(), s.view().dump());
    assert_eq!(
        restored.view().lease(5).unwrap().keys,
        vec![Bytes::from("f")]
    );
    // It goes on exactly like the original.
    let (mut a, mut b) = (s, restored);
    for c in [put("g", "1", 5), revoke(5), compact(9)] {
        assert_eq!(format!("{:?}", a.apply(&c)), format!("{:?}", b.apply(&c)));
    }
    assert_eq!(a.view().dump(), b.view().dump());
}

#[test]
fn restore_refuses_inconsistent_input() {
    let kv = |main: i64| KeyValue {
        key: "k".into(),
        mod_revision: main,
        create_revision: main,
        version: 1,
        ..Default::default()
    };
    let lease = LeaseTtl {
        id: 1,
        ttl_secs: 5,
        remaining_ttl_secs: 0,
    };
    let out_of_order = vec![(3, 0, kv(3), false), (2, 0, kv(2), false)];
    assert!(Store::restore(out_of_order, [], -1, 3).is_err());
    assert!(Store::restore(vec![(3, 0, kv(4), false)], [], -1, 4).is_err());
    assert!(Store::restore(vec![(3, 0, kv(3), false)], [], -1, 2).is_err());
    assert!(Store::restore(vec![(3, 0, kv(3), false)], [], 4, 3).is_err());
    assert!(Store::restore(Vec::new(), [lease, lease], -1, 1).is_err());
    let mut r = Restorer::new();
    r.record(2, 0, kv(2), false).unwrap();
    assert!(r.lease(lease).is_err());
    let s = Store::restore(vec![(2, 0, kv(2), false)], [lease], 0, 9).unwrap();
    assert_eq!((s.revision(), s.compact_revision()), (9, 0));
}

/// Hashes etcd 3.4.23 returned (`etcdctl endpoint hashkv --rev`) after the same commands on
/// a fresh member; `None` where etcd answered "required revision has been compacted".
#[test]
fn hash_kv_matches_etcd() {
    let mut s = Store::new();
    let view = s.view();
    assert_eq!(
        view.hash_kv(0).unwrap(),
        KvHash {
            hash: 1084519789,
            revision: 1,
            compact_revision: -1
        }
    );
    apply_all(
        &mut s,
        &[
            put("a", "1", 0),
            put("b", "22", 0),
            put("a", "333", 0),
            del("b", ""),
            txn_puts(&["c", "d"]),
        ],
    );
    let v = s.view();
    for (rev, want) in ETCD_HASHES_BEFORE_COMPACT {
        assert_eq!(
            v.hash_kv(*rev).unwrap().hash,
            *want,
            "rev {rev} before compaction"
        );
    }
    s.apply(&compact(4)).unwrap();
    s.apply(&put("e", "5", 0)).unwrap();
    let v = s.view();
    assert_eq!(v.hash_kv(4), Err(KvError::Compacted));
    assert_eq!(v.hash_kv(8), Err(KvError::FutureRevision));
    for (rev, want) in ETCD_HASHES_AFTER_COMPACT {
        let got = v.hash_kv(*rev).unwrap();
        assert_eq!(
            (got.hash, got.revision, got.compact_revision),
            (*want, 7, 4),
            "rev {rev} after compaction"
        );
    }
}

const ETCD_HASHES_BEFORE_COMPACT: &[(i64, u32)] = &[
    (0, 1355864938),
    (1, 1084519789),
    (2, 2587454935),
    (3, 2627027711),
    (4, 734767682),
    (5, 2763738174),
    (6, 1355864938),
];
/// At 5, `b@3` is skipped: it survived compaction at 4 but is not live at 5 (etcd's `keep`).
const ETCD_HASHES_AFTER_COMPACT: &[(i64, u32)] = &[
    (0, 2858640329),
    (5, 1975542125),
    (6, 3270378548),
    (7, 2858640329),
];
