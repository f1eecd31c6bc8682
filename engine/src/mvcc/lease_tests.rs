//! Leases in the key space: grant, revoke, checkpoint, and keys following their lease
//! across put, put with another lease, ignore_lease, delete and txn (etcd 3.4's rules).

use std::collections::BTreeMap;

use prost::Message;

use super::*;
use crate::pb::{
    PbDeleteRequest, PbLeaseGrantRequest, PbLeaseRevokeRequest, PbPutRequest, PbRangeRequest,
    PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp,
};
use crate::request::{InternalRequest, LeaseCheckpoint, LeaseCheckpointRequest};

fn grant(id: i64, ttl: i64) -> Command {
    Command::LeaseGrant(PbLeaseGrantRequest { id, ttl })
}

fn revoke(id: i64) -> Command {
    Command::LeaseRevoke(PbLeaseRevokeRequest { id })
}

fn checkpoint(points: &[(i64, i64)]) -> Command {
    let checkpoints = points
        .iter()
        .map(|&(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
        .collect();
    Command::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints })
}

fn put_req(key: &str, lease: i64) -> PbPutRequest {
    PbPutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
        ..Default::default()
    }
}

fn put(key: &str, lease: i64) -> Command {
    Command::Put(put_req(key, lease))
}

fn put_keep_lease(key: &str) -> Command {
    Command::Put(PbPutRequest {
        ignore_lease: true,
        ..put_req(key, 0)
    })
}

fn del_req(key: &str, end: &str) -> PbDeleteRequest {
    PbDeleteRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn del(key: &str, end: &str) -> Command {
    Command::DeleteRange(del_req(key, end))
}

fn op_put(key: &str, lease: i64) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(put_req(key, lease))),
    }
}

fn op_del(key: &str) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestDeleteRange(del_req(key, ""))),
    }
}

fn txn(success: Vec<PbTxnRequestOp>) -> Command {
    Command::Txn(PbTxnRequest {
        compare: Vec::new(),
        success,
        failure: Vec::new(),
    })
}

/// Every lease and its keys, as strings.
fn lease_keys(s: &Store) -> BTreeMap<i64, Vec<String>> {
    let view = s.view();
    view.leases()
        .into_iter()
        .map(|id| {
            let keys = view
                .lease(id)
                .unwrap()
                .keys
                .iter()
                .map(|k| String::from_utf8(k.to_vec()).unwrap())
                .collect();
            (id, keys)
        })
        .collect()
}

fn lease_of(s: &Store, key: &str) -> Option<i64> {
    let r = PbRangeRequest {
        key: key.into(),
        ..Default::default()
    };
    s.view().range(&r).unwrap().kvs.first().map(|kv| kv.lease)
}

fn header_revision(resp: &CommandResponse) -> i64 {
    let h = match resp {
        CommandResponse::LeaseGrant(r) => r.header,
        CommandResponse::LeaseRevoke(r) => r.header,
        CommandResponse::LeaseCheckpoint(h) => *h,
        other => panic!("not a lease response: {other:?}"),
    };
    h.expect("header").revision
}

/// Leases 1, 2 and 3 granted (TTL 60), nothing else.
fn three_leases() -> Store {
    let mut s = Store::new();
    for id in 1..=3 {
        s.apply(&grant(id, 60)).unwrap();
    }
    s
}

#[test]
fn grant_rules() {
    // (setup, grant (id, ttl), expected Ok((id, ttl)) or the error)
    type Case = (Vec<Command>, (i64, i64), Result<(i64, i64), KvError>);
    let cases: Vec<Case> = vec![
        (vec![], (5, 10), Ok((5, 10))),
        (vec![], (i64::MAX, 1), Ok((i64::MAX, 1))),
        (
            vec![],
            (5, lease::MAX_LEASE_TTL_SECS),
            Ok((5, lease::MAX_LEASE_TTL_SECS)),
        ),
        (
            vec![],
            (5, lease::MAX_LEASE_TTL_SECS + 1),
            Err(KvError::LeaseTtlTooLarge),
        ),
        (vec![grant(5, 10)], (5, 20), Err(KvError::LeaseExists)),
        // etcd checks the TTL before the ID being taken.
        (
            vec![grant(5, 10)],
            (5, lease::MAX_LEASE_TTL_SECS + 1),
            Err(KvError::LeaseTtlTooLarge),
        ),
        // The proposer never sends ID 0; apply refuses it as etcd's lessor does.
        (vec![], (0, 10), Err(KvError::LeaseNotFound)),
        (vec![put("a", 0), grant(1, 5)], (2, 7), Ok((2, 7))),
    ];
    for (i, (setup, (id, ttl), want)) in cases.into_iter().enumerate() {
        let mut s = Store::new();
        for c in &setup {
            s.apply(c).unwrap();
        }
        let (revision, before) = (s.revision(), lease_keys(&s));
        let got = s.apply(&grant(id, ttl));
        assert_eq!(
            s.revision(),
            revision,
            "case {i}: a grant never bumps the revision"
        );
        match (got, want) {
            (Ok(applied), Ok((want_id, want_ttl))) => {
                assert_eq!(header_revision(&applied.response), revision, "case {i}");
                let CommandResponse::LeaseGrant(resp) = applied.response else {
                    panic!("case {i}")
                };
                assert_eq!((resp.id, resp.ttl), (want_id, want_ttl), "case {i}");
                assert!(applied.events.is_empty(), "case {i}");
                let info = s.view().lease(id).unwrap();
                assert_eq!(
                    info,
                    LeaseInfo {
                        id,
                        ttl_secs: ttl,
                        remaining_ttl_secs: 0,
                        keys: vec![]
                    },
                    "case {i}"
                );
            }
            (Err(got), Err(want)) => {
                assert_eq!(got, want, "case {i}");
                assert_eq!(
                    lease_keys(&s),
                    before,
                    "case {i}: a failed grant changes nothing"
                );
            }
            (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
        }
    }
    assert_eq!(
        KvError::LeaseExists.message(),
        "etcdserver: lease already exists"
    );
    assert_eq!(
        KvError::LeaseExists.code(),
        crate::StatusCode::FailedPrecondition
    );
    assert_eq!(
        KvError::LeaseTtlTooLarge.message(),
        "etcdserver: too large lease TTL"
    );
    assert_eq!(
        KvError::LeaseTtlTooLarge.code(),
        crate::StatusCode::OutOfRange
    );
}

#[test]
fn keys_follow_their_lease() {
    type Keys = Vec<(i64, Vec<&'static str>)>;
    type Steps = Vec<(Command, Option<KvError>)>;
    // (commands after leases 1..=3 are granted, expected keys per lease; a failing
    // command is listed with the error it must fail with)
    let cases: Vec<(&str, Steps, Keys)> = vec![
        (
            "put attaches",
            vec![(put("a", 1), None)],
            vec![(1, vec!["a"])],
        ),
        (
            "puts keep key order",
            vec![(put("b", 1), None), (put("a", 1), None)],
            vec![(1, vec!["a", "b"])],
        ),
        (
            "another lease moves the key",
            vec![(put("a", 1), None), (put("a", 2), None)],
            vec![(1, vec![]), (2, vec!["a"])],
        ),
        (
            "no lease detaches",
            vec![(put("a", 1), None), (put("a", 0), None)],
            vec![(1, vec![])],
        ),
        (
            "same lease again",
            vec![(put("a", 1), None), (put("a", 1), None)],
            vec![(1, vec!["a"])],
        ),
        (
            "ignore_lease keeps it",
            vec![(put("a", 1), None), (put_keep_lease("a"), None)],
            vec![(1, vec!["a"])],
        ),
        (
            "delete detaches",
            vec![
                (put("a", 1), None),
                (put("b", 2), None),
                (del("a", ""), None),
            ],
            vec![(1, vec![]), (2, vec!["b"])],
        ),
        (
            "range delete detaches",
            vec![
                (put("a", 1), None),
                (put("b", 1), None),
                (put("c", 1), None),
                (del("a", "c"), None),
            ],
            vec![(1, vec!["c"])],
        ),
        (
            "unknown lease attaches nothing",
            vec![
                (put("a", 1), None),
                (put("a", 9), Some(KvError::LeaseNotFound)),
            ],
            vec![(1, vec!["a"])],
        ),
        (
            "txn puts and deletes",
            vec![
                (put("c", 3), None),
                (txn(vec![op_put("a", 1), op_put("b", 2), op_del("c")]), None),
            ],
            vec![(1, vec!["a"]), (2, vec!["b"]), (3, vec![])],
        ),
        (
            "txn put, delete, put again",
            vec![(txn(vec![op_put("a", 1), op_del("a"), op_put("a", 2)]), None)],
            vec![(1, vec![]), (2, vec!["a"])],
        ),
        (
            "failed txn attaches nothing",
            vec![(
                txn(vec![op_put("a", 1), op_put("b", 9)]),
                Some(KvError::LeaseNotFound),
            )],
            vec![(1, vec![])],
        ),
        (
            "revoke detaches only its own",
            vec![(put("a", 1), None), (put("b", 2), None), (revoke(1), None)],
            vec![(2, vec!["b"])],
        ),
        (
            "re-put after revoke",
            vec![(put("a", 1), None), (revoke(1), None), (put("a", 2), None)],
            vec![(2, vec!["a"])],
        ),
    ];
    for (name, commands, want) in cases {
        let mut s = three_leases();
        for (command, error) in &commands {
            match (s.apply(command), error) {
                (Ok(_), None) => {}
                (Err(got), Some(want)) => assert_eq!(&got, want, "{name}"),
                (got, want) => panic!("{name}: {command:?} gave {got:?}, want error {want:?}"),
            }
        }
        let mut want: BTreeMap<i64, Vec<String>> = want
            .into_iter()
            .map(|(id, keys)| (id, keys.into_iter().map(String::from).collect()))
            .collect();
        // Leases the case does not mention must be granted and empty unless revoked.
        for id in 1..=3 {
            if s.view().lease(id).is_some() {
                want.entry(id).or_default();
            }
        }
        assert_eq!(lease_keys(&s), want, "{name}");
        // And every live key's lease agrees with the lease's key set.
        for (id, keys) in &want {
            for key in keys {
                assert_eq!(lease_of(&s, key), Some(*id), "{name}: key {key}");
            }
        }
    }
}

#[test]
fn revoke_deletes_attached_keys_in_one_revision() {
    let mut s = three_leases();
    for c in [put("b", 1), put("a", 1), put("c", 2), put("d", 0)] {
        s.apply(&c).unwrap();
    }
    assert_eq!(s.revision(), 5);
    let applied = s.apply(&revoke(1)).unwrap();
    assert_eq!(applied.revision, 6);
    assert_eq!(
        header_revision(&applied.response),
        6,
        "header is the deleting revision"
    );
    type Seen<'a> = (EventKind, &'a [u8], i64, Option<&'a [u8]>);
    let events: Vec<Seen> = applied
        .events
        .iter()
        .map(|e| {
            (
                e.kind,
                &e.kv().key[..],
                e.kv().mod_revision,
                e.prev_kv().as_ref().map(|p| &p.key[..]),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            (EventKind::Delete, &b"a"[..], 6, Some(&b"a"[..])),
            (EventKind::Delete, &b"b"[..], 6, Some(&b"b"[..]))
        ],
        "one delete per key, in key order, like DeleteRange"
    );
    // Sub revisions follow key order: the history has a at (6, 0) and b at (6, 1).
    let subs: Vec<(Vec<u8>, i64, i64)> = s
        .state
        .history_keys()
        .into_iter()
        .filter(|(_, main, _)| *main == 6)
        .map(|(k, main, sub)| (k.to_vec(), main, sub))
        .collect();
    assert_eq!(subs, vec![(b"a".to_vec(), 6, 0), (b"b".to_vec(), 6, 1)]);
    assert_eq!((lease_of(&s, "a"), lease_of(&s, "b")), (None, None));
    assert_eq!((lease_of(&s, "c"), lease_of(&s, "d")), (Some(2), Some(0)));
    assert_eq!(s.view().leases(), vec![2, 3]);

    // A lease without keys goes without a new revision.
    let applied = s.apply(&revoke(3)).unwrap();
    assert_eq!(
        (applied.revision, header_revision(&applied.response)),
        (6, 6)
    );
    assert!(applied.events.is_empty());

    // Unknown or already revoked: not found, nothing changes.
    for id in [1, 3, 42, 0] {
        assert_eq!(
            s.apply(&revoke(id)).unwrap_err(),
            KvError::LeaseNotFound,
            "lease {id}"
        );
    }
    assert_eq!((s.revision(), s.view().leases()), (6, vec![2]));
}

#[test]
fn revoke_of_a_lease_whose_keys_were_all_deleted_bumps_nothing() {
    let mut s = three_leases();
    s.apply(&put("a", 1)).unwrap();
    s.apply(&del("a", "")).unwrap();
    let applied = s.apply(&revoke(1)).unwrap();
    assert_eq!(
        (
            applied.revision,
            header_revision(&applied.response),
            applied.events.len()
        ),
        (3, 3, 0)
    );
}

#[test]
fn checkpoints_record_remaining_ttls() {
    let mut s = three_leases();
    s.apply(&put("a", 1)).unwrap();
    // (checkpoint, expected remaining TTL of leases 1, 2, 3 afterwards)
    type Case = (Vec<(i64, i64)>, [i64; 3]);
    let cases: Vec<Case> = vec![
        (vec![(1, 40)], [40, 0, 0]),
        (vec![(2, 7), (99, 5), (3, 59)], [40, 7, 59]),
        (vec![(1, 0)], [0, 7, 59]),
        (vec![], [0, 7, 59]),
        (vec![(2, 3), (2, 2)], [0, 2, 59]),
    ];
    for (points, want) in cases {
        let applied = s.apply(&checkpoint(&points)).unwrap();
        assert_eq!(
            (applied.revision, header_revision(&applied.response)),
            (2, 2),
            "{points:?}: no new revision"
        );
        assert!(applied.events.is_empty());
        let got: Vec<i64> = (1..=3)
            .map(|id| s.view().lease(id).unwrap().remaining_ttl_secs)
            .collect();
        assert_eq!(got, want, "{points:?}");
        assert_eq!(
            s.view().lease(99),
            None,
            "a checkpoint never creates a lease"
        );
    }
    assert_eq!(
        s.view().lease_ttls(),
        vec![(1, 60, 0), (2, 60, 2), (3, 60, 59)]
    );
    assert_eq!(
        s.view().lease(1).unwrap().keys,
        vec![Bytes::from_static(b"a")],
        "keys untouched"
    );
}

#[test]
fn views_keep_the_leases_they_were_taken_with() {
    let mut s = three_leases();
    s.apply(&put("a", 2)).unwrap();
    let before = s.view();
    s.apply(&revoke(2)).unwrap();
    s.apply(&grant(9, 30)).unwrap();
    assert_eq!(before.leases(), vec![1, 2, 3]);
    assert_eq!(
        before.lease(2).unwrap().keys,
        vec![Bytes::from_static(b"a")]
    );
    assert_eq!(s.view().leases(), vec![1, 3, 9]);
    assert_eq!(s.view().lease_count(), 3);
}

#[test]
fn lease_commands_survive_the_log_encoding() {
    for command in [grant(7, 10), revoke(7), checkpoint(&[(7, 3), (8, 0)])] {
        let bytes = InternalRequest::new(1, command.clone()).encode_to_vec();
        let decoded = InternalRequest::decode(bytes.as_slice())
            .unwrap()
            .into_command();
        assert_eq!(decoded, Some(command));
    }
}

/// Replaying the same log gives the same leases, keys and checkpoints (restart safety).
#[test]
fn replay_is_deterministic() {
    let log = vec![
        grant(1, 10),
        put("a", 1),
        grant(2, 20),
        put("b", 2),
        checkpoint(&[(2, 15)]),
        put("a", 2),
        revoke(1),
        grant(1, 5),
    ];
    let build = || {
        let mut s = Store::new();
        for c in &log {
            let _ = s.apply(c);
        }
        s
    };
    let (x, y) = (build(), build());
    assert_eq!(x.view().lease_ttls(), vec![(1, 5, 0), (2, 20, 15)]);
    assert_eq!(lease_keys(&x), lease_keys(&y));
    assert_eq!(
        lease_keys(&x).get(&2).cloned(),
        Some(vec!["a".to_string(), "b".to_string()])
    );
}
