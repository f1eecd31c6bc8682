//! Alarms as replicated state: etcd 3.4's Alarm apply (GET / ACTIVATE / DEACTIVATE), the
//! writes an active NOSPACE or CORRUPT alarm refuses, change tracking of the alarm set, and
//! the quota cost estimates.

use super::alarm::*;
use super::changes_tests::{compact, del, put};
use super::*;
use crate::pb::{
    PbAlarmRequest, PbLeaseGrantRequest, PbLeaseRevokeRequest, PbPutRequest, PbRangeRequest,
    PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp,
};
use crate::request::{LeaseCheckpoint, LeaseCheckpointRequest};

fn alarm(action: i32, member_id: u64, alarm: i32) -> Command {
    Command::Alarm(PbAlarmRequest {
        action,
        member_id,
        alarm,
    })
}

fn alarms_of(store: &mut Store, command: &Command) -> Vec<(u64, i32)> {
    match store
        .apply(command)
        .expect("alarm requests succeed")
        .response
    {
        CommandResponse::Alarm(r) => r.alarms.iter().map(|m| (m.member_id, m.alarm)).collect(),
        other => panic!("not an alarm response: {other:?}"),
    }
}

fn op_put(key: &str) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    }
}

fn op_range(key: &str) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(PbRangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn op_delete(key: &str) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestDeleteRange(
            crate::pb::PbDeleteRequest {
                key: key.into(),
                ..Default::default()
            },
        )),
    }
}

fn txn(success: Vec<PbTxnRequestOp>, failure: Vec<PbTxnRequestOp>) -> Command {
    Command::Txn(PbTxnRequest {
        compare: Vec::new(),
        success,
        failure,
    })
}

#[test]
fn activate_get_deactivate_as_etcd() {
    let mut s = Store::new();
    assert_eq!(alarms_of(&mut s, &alarm(ACTION_GET, 0, ALARM_NONE)), vec![]);
    assert_eq!(
        alarms_of(&mut s, &alarm(ACTION_ACTIVATE, 7, ALARM_NOSPACE)),
        vec![(7, ALARM_NOSPACE)]
    );
    // Raising it again answers it again and changes nothing.
    assert_eq!(
        alarms_of(&mut s, &alarm(ACTION_ACTIVATE, 7, ALARM_NOSPACE)),
        vec![(7, ALARM_NOSPACE)]
    );
    assert_eq!(
        alarms_of(&mut s, &alarm(ACTION_ACTIVATE, 3, ALARM_NOSPACE)),
        vec![(3, ALARM_NOSPACE)]
    );
    assert_eq!(
        alarms_of(&mut s, &alarm(ACTION_ACTIVATE, 9, ALARM_CORRUPT)),
        vec![(9, ALARM_CORRUPT)]
    );
    // GET NONE: every alarm, by type then member; GET of a type filters; the member is ignored.
    assert_eq!(
        alarms_of(&mut s, &alarm(ACTION_GET, 0, ALARM_NONE)),
        vec![(3, ALARM_NOSPACE), (7, ALARM_NOSPACE), (9, ALARM_CORRUPT)]
    );
    assert_eq!(
        alarms_of(&mut s, &alarm(ACTION_GET, 9, ALARM_NOSPACE)),
        vec![(3, ALARM_NOSPACE), (7, ALARM_NOSPACE)]
    );
    assert_eq!(
        s.view().alarms(),
        vec![(3, ALARM_NOSPACE), (7, ALARM_NOSPACE), (9, ALARM_CORRUPT)]
    );
    // DEACTIVATE answers what it cleared, nothing when it was not raised.
    assert_eq!(
        alarms_of(&mut s, &alarm(ACTION_DEACTIVATE, 9, ALARM_CORRUPT)),
        vec![(9, ALARM_CORRUPT)]
    );
    assert_eq!(
        alarms_of(&mut s, &alarm(ACTION_DEACTIVATE, 9, ALARM_CORRUPT)),
        vec![]
    );
    assert_eq!(
        alarms_of(&mut s, &alarm(ACTION_DEACTIVATE, 3, ALARM_CORRUPT)),
        vec![]
    );
    // An unknown action answers nothing.
    assert_eq!(alarms_of(&mut s, &alarm(7, 3, ALARM_NOSPACE)), vec![]);
    assert_eq!(
        s.view().alarms(),
        vec![(3, ALARM_NOSPACE), (7, ALARM_NOSPACE)]
    );
    assert_eq!(s.revision(), 1, "alarms do not move the revision");
}

#[test]
fn nospace_refuses_puts_and_grants_but_lets_space_be_reclaimed() {
    let mut s = Store::new();
    s.apply(&put("a", "1", 0)).unwrap();
    s.apply(&put("b", "1", 0)).unwrap();
    s.apply(&Command::LeaseGrant(PbLeaseGrantRequest { id: 5, ttl: 60 }))
        .unwrap();
    s.apply(&alarm(ACTION_ACTIVATE, 1, ALARM_NOSPACE)).unwrap();
    let refused = [
        put("c", "1", 0),
        txn(vec![op_put("c")], vec![]),
        txn(vec![op_range("a")], vec![op_put("c")]),
        Command::LeaseGrant(PbLeaseGrantRequest { id: 6, ttl: 60 }),
    ];
    for command in &refused {
        assert_eq!(
            s.apply(command).unwrap_err(),
            KvError::NoSpace,
            "{command:?}"
        );
    }
    assert_eq!(s.revision(), 3, "nothing refused moved the revision");
    // Deletes, txns without puts, compaction, revokes, checkpoints and alarms go through.
    s.apply(&del("a", "")).unwrap();
    s.apply(&txn(
        vec![op_delete("b"), op_range("a")],
        vec![op_range("b")],
    ))
    .unwrap();
    s.apply(&compact(5)).unwrap();
    let cp = LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint {
            id: 5,
            remaining_ttl: 30,
        }],
    };
    s.apply(&Command::LeaseCheckpoint(cp)).unwrap();
    s.apply(&Command::LeaseRevoke(PbLeaseRevokeRequest { id: 5 }))
        .unwrap();
    assert_eq!(s.revision(), 5);
    // Disarmed: writes are accepted again.
    s.apply(&alarm(ACTION_DEACTIVATE, 1, ALARM_NOSPACE))
        .unwrap();
    s.apply(&put("c", "1", 0)).unwrap();
    assert_eq!(s.revision(), 6);
}

#[test]
fn nospace_of_any_member_caps_every_member() {
    let mut s = Store::new();
    s.apply(&alarm(ACTION_ACTIVATE, 42, ALARM_NOSPACE)).unwrap();
    assert_eq!(s.apply(&put("a", "1", 0)).unwrap_err(), KvError::NoSpace);
    // A NONE-type alarm (etcd stores whatever ACTIVATE names) caps nothing.
    s.apply(&alarm(ACTION_DEACTIVATE, 42, ALARM_NOSPACE))
        .unwrap();
    s.apply(&alarm(ACTION_ACTIVATE, 42, ALARM_NONE)).unwrap();
    s.apply(&put("a", "1", 0)).unwrap();
}

#[test]
fn corrupt_refuses_every_write() {
    let mut s = Store::new();
    s.apply(&put("a", "1", 0)).unwrap();
    s.apply(&Command::LeaseGrant(PbLeaseGrantRequest { id: 5, ttl: 60 }))
        .unwrap();
    s.apply(&alarm(ACTION_ACTIVATE, 1, ALARM_CORRUPT)).unwrap();
    for command in [
        put("b", "1", 0),
        del("a", ""),
        txn(vec![op_range("a")], vec![]),
        compact(2),
        Command::LeaseGrant(PbLeaseGrantRequest { id: 6, ttl: 60 }),
        Command::LeaseRevoke(PbLeaseRevokeRequest { id: 5 }),
    ] {
        assert_eq!(
            s.apply(&command).unwrap_err(),
            KvError::Corrupt,
            "{command:?}"
        );
    }
    let cp = LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint {
            id: 5,
            remaining_ttl: 30,
        }],
    };
    s.apply(&Command::LeaseCheckpoint(cp)).unwrap();
    s.apply(&alarm(ACTION_DEACTIVATE, 1, ALARM_CORRUPT))
        .unwrap();
    s.apply(&put("b", "1", 0)).unwrap();
    assert_eq!(KvError::Corrupt.message(), "etcdserver: corrupt cluster");
    assert_eq!(
        KvError::NoSpace.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    assert_eq!(
        KvError::NoSpace.code(),
        crate::StatusCode::ResourceExhausted
    );
}

#[test]
fn the_alarm_set_is_tracked_only_when_it_changes() {
    let mut s = Store::new();
    s.apply(&alarm(ACTION_GET, 0, ALARM_NONE)).unwrap();
    s.apply(&alarm(ACTION_DEACTIVATE, 1, ALARM_NOSPACE))
        .unwrap();
    assert_eq!(s.take_changes().alarms(), None);
    s.apply(&alarm(ACTION_ACTIVATE, 1, ALARM_NOSPACE)).unwrap();
    s.apply(&alarm(ACTION_ACTIVATE, 2, ALARM_CORRUPT)).unwrap();
    let mut first = s.take_changes();
    assert_eq!(
        first.alarms(),
        Some(&[(ALARM_NOSPACE, 1), (ALARM_CORRUPT, 2)][..])
    );
    assert_eq!(first.len(), 1);
    s.apply(&alarm(ACTION_ACTIVATE, 1, ALARM_NOSPACE)).unwrap();
    assert_eq!(
        s.take_changes().alarms(),
        None,
        "raising a raised alarm changes nothing"
    );
    s.apply(&alarm(ACTION_DEACTIVATE, 1, ALARM_NOSPACE))
        .unwrap();
    let second = s.take_changes();
    assert_eq!(second.alarms(), Some(&[(ALARM_CORRUPT, 2)][..]));
    first.merge(second);
    assert_eq!(
        first.alarms(),
        Some(&[(ALARM_CORRUPT, 2)][..]),
        "the later set wins"
    );
    first.merge(ChangeSet::default());
    assert_eq!(
        first.alarms(),
        Some(&[(ALARM_CORRUPT, 2)][..]),
        "an untouched set keeps it"
    );
}

#[test]
fn quota_costs_are_etcds() {
    let p = PbPutRequest {
        key: b"key".to_vec(),
        value: vec![0; 1000],
        ..Default::default()
    };
    assert_eq!(put_cost(&p), 256 + 3 + 1000);
    let t = |c: &Command| match c {
        Command::Txn(t) => txn_cost(t),
        _ => unreachable!(),
    };
    assert_eq!(
        t(&txn(
            vec![op_range("a"), op_delete("b")],
            vec![op_range("c")]
        )),
        0
    );
    assert_eq!(
        t(&txn(vec![op_put("a"), op_put("bb")], vec![op_put("c")])),
        (256 + 1 + 1) + (256 + 2 + 1)
    );
    assert_eq!(
        t(&txn(vec![op_put("a")], vec![op_put("ccc"), op_put("d")])),
        (256 + 3 + 1) + (256 + 1 + 1)
    );
    // 3.4 counts only a branch's own puts, not those of nested txns.
    let nested = PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestTxn(PbTxnRequest {
            compare: vec![],
            success: vec![op_put("x")],
            failure: vec![],
        })),
    };
    assert_eq!(t(&txn(vec![nested], vec![])), 0);
    assert_eq!(lease_grant_cost(), 64);
}

#[test]
fn alarm_members_print_as_etcds_status_errors() {
    assert_eq!(
        describe(10276657743932975437, ALARM_NOSPACE),
        "memberID:10276657743932975437 alarm:NOSPACE "
    );
    assert_eq!(describe(1, ALARM_CORRUPT), "memberID:1 alarm:CORRUPT ");
    assert_eq!(describe(1, ALARM_NONE), "memberID:1 ");
    assert_eq!(describe(0, 9), "alarm:9 ");
    assert_eq!(describe(0, ALARM_NONE), "");
}
