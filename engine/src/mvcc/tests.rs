//! Rule-by-rule tests of the key space against etcd 3.4's behaviour. Where a rule is a
//! quirk, the expected values were taken from a real etcd 3.4.23.

use super::*;
use crate::pb::{
    PbCompactionRequest, PbCompare, PbDeleteRequest, PbPutRequest, PbRangeRequest, PbRangeResponse,
    PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp, PbTxnResponse,
};

// ---- request builders -------------------------------------------------------------------

fn put_req(key: &str, value: &str) -> PbPutRequest {
    PbPutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn del_req(key: &str, end: &str) -> PbDeleteRequest {
    PbDeleteRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn range_req(key: &str, end: &str) -> PbRangeRequest {
    PbRangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put(put_req(key, value))
}

fn del(key: &str, end: &str) -> Command {
    Command::DeleteRange(del_req(key, end))
}

fn compact_cmd(revision: i64) -> Command {
    Command::Compact(PbCompactionRequest {
        revision,
        physical: false,
    })
}

fn op(request: PbTxnOpRequest) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(request),
    }
}

fn op_put(key: &str, value: &str) -> PbTxnRequestOp {
    op(PbTxnOpRequest::RequestPut(put_req(key, value)))
}

fn op_del(key: &str, end: &str) -> PbTxnRequestOp {
    op(PbTxnOpRequest::RequestDeleteRange(del_req(key, end)))
}

fn op_range(key: &str, end: &str) -> PbTxnRequestOp {
    op(PbTxnOpRequest::RequestRange(range_req(key, end)))
}

fn op_txn(t: PbTxnRequest) -> PbTxnRequestOp {
    op(PbTxnOpRequest::RequestTxn(t))
}

fn txn_req(
    compare: Vec<PbCompare>,
    success: Vec<PbTxnRequestOp>,
    failure: Vec<PbTxnRequestOp>,
) -> PbTxnRequest {
    PbTxnRequest {
        compare,
        success,
        failure,
    }
}

const EQUAL: i32 = 0;
const GREATER: i32 = 1;
const LESS: i32 = 2;
const NOT_EQUAL: i32 = 3;
const T_VERSION: i32 = 0;
const T_CREATE: i32 = 1;
const T_MOD: i32 = 2;
const T_VALUE: i32 = 3;
const T_LEASE: i32 = 4;

fn cmp(key: &str, target: i32, result: i32, union: Option<PbTargetUnion>) -> PbCompare {
    PbCompare {
        result,
        target,
        key: key.into(),
        range_end: Vec::new(),
        target_union: union,
    }
}

fn cmp_version(key: &str, result: i32, v: i64) -> PbCompare {
    cmp(key, T_VERSION, result, Some(PbTargetUnion::Version(v)))
}

// ---- result helpers ---------------------------------------------------------------------

fn store_with(commands: &[Command]) -> Store {
    let mut s = Store::with_test_leases();
    for c in commands {
        s.apply(c).expect("setup command");
    }
    s
}

fn get(s: &Store, r: &PbRangeRequest) -> PbRangeResponse {
    s.view().range(r).expect("range")
}

fn keys(resp: &PbRangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn value_at(s: &Store, key: &str, revision: i64) -> Option<String> {
    let r = PbRangeRequest {
        revision,
        ..range_req(key, "")
    };
    get(s, &r)
        .kvs
        .first()
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
}

fn txn_resp(a: Applied) -> PbTxnResponse {
    match a.response {
        CommandResponse::Txn(t) => t,
        other => panic!("not a txn response: {other:?}"),
    }
}

fn rev_of(resp: &CommandResponse) -> i64 {
    let h = match resp {
        CommandResponse::Put(r) => r.header,
        CommandResponse::DeleteRange(r) => r.header,
        CommandResponse::Txn(r) => r.header,
        CommandResponse::Compact(r) => r.header,
        CommandResponse::LeaseGrant(r) => r.header,
        CommandResponse::LeaseRevoke(r) => r.header,
        CommandResponse::LeaseCheckpoint(h) => *h,
        CommandResponse::Alarm(r) => r.header,
        CommandResponse::Members(_) => panic!("membership commands carry no revision"),
        CommandResponse::Auth(h) => *h,
    };
    h.expect("header").revision
}

fn op_header_rev(r: &PbTxnOpResponse) -> i64 {
    let h = match r {
        PbTxnOpResponse::ResponseRange(r) => r.header,
        PbTxnOpResponse::ResponsePut(r) => r.header,
        PbTxnOpResponse::ResponseDeleteRange(r) => r.header,
        PbTxnOpResponse::ResponseTxn(r) => r.header,
    };
    h.expect("header").revision
}

fn txn_cmd(
    compare: Vec<PbCompare>,
    success: Vec<PbTxnRequestOp>,
    failure: Vec<PbTxnRequestOp>,
) -> Command {
    Command::Txn(txn_req(compare, success, failure))
}

// ---- revisions --------------------------------------------------------------------------

#[test]
fn new_store_is_empty_at_revision_one() {
    let s = Store::with_test_leases();
    assert_eq!((s.revision(), s.compact_revision()), (1, 0));
    let v = s.view();
    assert_eq!(
        (v.revision(), v.compact_revision(), v.key_count()),
        (1, 0, 0)
    );
    let resp = get(&s, &range_req("a", "\0"));
    assert_eq!(
        (resp.count, resp.kvs.len(), resp.header.unwrap().revision),
        (0, 0, 1)
    );
}

#[test]
fn revision_bumps_only_when_something_changes() {
    // (command, store revision after, header revision, number of events)
    let cases: Vec<(Command, i64, i64, usize)> = vec![
        (put("a", "1"), 2, 2, 1),
        (put("a", "1"), 3, 3, 1), // same value still changes
        (del("zz", ""), 3, 3, 0), // deletes nothing
        (del("b", "c"), 3, 3, 0),
        (txn_cmd(vec![], vec![op_range("a", "")], vec![]), 3, 3, 0), // read-only
        (
            txn_cmd(vec![], vec![op_del("x", ""), op_del("y", "z")], vec![]),
            3,
            3,
            0,
        ),
        (txn_cmd(vec![], vec![], vec![]), 3, 3, 0),
        (
            txn_cmd(
                vec![cmp_version("a", EQUAL, 99)],
                vec![op_put("q", "1")],
                vec![],
            ),
            3,
            3,
            0,
        ),
        (
            txn_cmd(vec![], vec![op_put("b", "1"), op_put("c", "1")], vec![]),
            4,
            4,
            2,
        ),
        (del("a", "\0"), 5, 5, 3),
        (compact_cmd(4), 5, 5, 0),
    ];
    let mut s = Store::with_test_leases();
    for (i, (command, revision, header_rev, events)) in cases.into_iter().enumerate() {
        let applied = s.apply(&command).unwrap();
        assert_eq!(applied.revision, revision, "case {i}");
        assert_eq!(s.revision(), revision, "case {i}");
        assert_eq!(rev_of(&applied.response), header_rev, "case {i}");
        assert_eq!(applied.events.len(), events, "case {i}");
    }
}

#[test]
fn create_mod_version_follow_generations() {
    let mut s = Store::with_test_leases();
    // (command, expected (create, mod, version) of "k" afterwards; None = absent)
    type Revisions = Option<(i64, i64, i64)>;
    let steps: Vec<(Command, Revisions)> = vec![
        (put("k", "a"), Some((2, 2, 1))),
        (put("k", "b"), Some((2, 3, 2))),
        (put("other", "x"), Some((2, 3, 2))),
        (put("k", "c"), Some((2, 5, 3))),
        (del("k", ""), None),
        (put("k", "d"), Some((7, 7, 1))),
        (
            txn_cmd(vec![], vec![op_put("k", "e"), op_put("j", "1")], vec![]),
            Some((7, 8, 2)),
        ),
    ];
    for (i, (command, expected)) in steps.into_iter().enumerate() {
        s.apply(&command).unwrap();
        let got = get(&s, &range_req("k", ""))
            .kvs
            .first()
            .map(|kv| (kv.create_revision, kv.mod_revision, kv.version));
        assert_eq!(got, expected, "step {i}");
    }
}

#[test]
fn events_describe_each_change_in_order() {
    let mut s = store_with(&[put("a", "1"), put("b", "2")]);
    let applied = s
        .apply(&txn_cmd(
            vec![],
            vec![op_del("a", "c"), op_put("c", "4")],
            vec![],
        ))
        .unwrap();
    let summary: Vec<(EventKind, String, i64, Option<String>)> = applied
        .events
        .iter()
        .map(|e| {
            let key = String::from_utf8(e.kv().key.to_vec()).unwrap();
            let prev = e
                .prev_kv()
                .as_ref()
                .map(|p| String::from_utf8(p.value.to_vec()).unwrap());
            (e.kind, key, e.kv().mod_revision, prev)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (EventKind::Delete, "a".into(), 4, Some("1".into())),
            (EventKind::Delete, "b".into(), 4, Some("2".into())),
            (EventKind::Put, "c".into(), 4, None),
        ]
    );
    let del_pb = applied.events[0].to_pb(true);
    assert_eq!(del_pb.r#type, 1);
    assert_eq!(
        del_pb.kv,
        Some(pb::PbKeyValue {
            key: b"a".to_vec(),
            mod_revision: 4,
            ..Default::default()
        })
    );
    assert_eq!(
        del_pb.prev_kv.as_ref().map(|p| p.value.clone()),
        Some(b"1".to_vec())
    );
    assert_eq!(applied.events[0].to_pb(false).prev_kv, None);
    let put_pb = applied.events[2].to_pb(true);
    assert_eq!(
        (put_pb.r#type, put_pb.kv.unwrap().version, put_pb.prev_kv),
        (0, 1, None)
    );
}

#[test]
fn put_then_delete_then_put_in_one_unvalidated_txn() {
    // validate rejects this txn, but apply must still handle it: ops run in order with
    // increasing sub revisions, and the re-created key starts a new generation.
    let mut s = store_with(&[put("a", "1")]);
    let applied = s
        .apply(&txn_cmd(
            vec![],
            vec![op_del("a", ""), op_put("a", "2")],
            vec![],
        ))
        .unwrap();
    assert_eq!(applied.events.len(), 2);
    let kv = get(&s, &range_req("a", "")).kvs[0].clone();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (3, 3, 1));
    assert_eq!(value_at(&s, "a", 2).as_deref(), Some("1"));
}

// ---- reads ------------------------------------------------------------------------------

#[test]
fn reads_at_past_revisions() {
    let s = store_with(&[
        put("a", "1"),  // 2
        put("b", "1"),  // 3
        put("a", "2"),  // 4
        del("b", ""),   // 5
        put("c", "1"),  // 6
        del("a", "\0"), // 7: deletes a, c
        put("a", "3"),  // 8
    ]);
    // (revision, keys=values visible in [a, \0))
    let cases: Vec<(i64, Vec<(&str, &str)>)> = vec![
        (1, vec![]),
        (2, vec![("a", "1")]),
        (3, vec![("a", "1"), ("b", "1")]),
        (4, vec![("a", "2"), ("b", "1")]),
        (5, vec![("a", "2")]),
        (6, vec![("a", "2"), ("c", "1")]),
        (7, vec![]),
        (8, vec![("a", "3")]),
        (0, vec![("a", "3")]),
        (-5, vec![("a", "3")]),
    ];
    for (revision, expected) in cases {
        let resp = get(
            &s,
            &PbRangeRequest {
                revision,
                ..range_req("a", "\0")
            },
        );
        let got: Vec<(String, String)> = resp
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key.clone()).unwrap(),
                    String::from_utf8(kv.value.clone()).unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, expected, "revision {revision}");
        assert_eq!(resp.count, expected.len() as i64);
        assert_eq!(
            resp.header.unwrap().revision,
            8,
            "header is the current revision"
        );
    }
    assert_eq!(value_at(&s, "b", 4).as_deref(), Some("1"));
    assert_eq!(value_at(&s, "b", 5), None);
    let old_a = get(
        &s,
        &PbRangeRequest {
            revision: 4,
            ..range_req("a", "")
        },
    )
    .kvs[0]
        .clone();
    assert_eq!(
        (old_a.create_revision, old_a.mod_revision, old_a.version),
        (2, 4, 2)
    );
}

#[test]
fn range_end_forms() {
    let s = store_with(&[
        put("a", "1"),
        put("b", "1"),
        put("ba", "1"),
        put("c", "1"),
        put("\u{1}", "x"),
    ]);
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        ("b", "", vec!["b"]),
        ("bb", "", vec![]),
        ("b", "\0", vec!["b", "ba", "c"]),
        ("\0", "\0", vec!["\u{1}", "a", "b", "ba", "c"]),
        ("a", "c", vec!["a", "b", "ba"]),
        ("b", "b", vec![]),
        ("c", "a", vec![]),
        ("b", "c", vec!["b", "ba"]),
    ];
    for (key, end, expected) in cases {
        for revision in [0, 5] {
            let resp = get(
                &s,
                &PbRangeRequest {
                    revision,
                    ..range_req(key, end)
                },
            );
            let expected_now: Vec<&str> = expected
                .iter()
                .copied()
                .filter(|k| revision == 0 || *k != "\u{1}")
                .collect();
            assert_eq!(keys(&resp), expected_now, "{key:?}..{end:?} @ {revision}");
        }
    }
}

#[test]
fn range_revision_errors() {
    let mut s = store_with(&[put("a", "1"), put("a", "2"), put("a", "3")]); // rev 4
    let at = |s: &Store, revision| {
        s.view().range(&PbRangeRequest {
            revision,
            ..range_req("a", "")
        })
    };
    assert_eq!(at(&s, 5).unwrap_err(), KvError::FutureRevision);
    assert!(at(&s, 4).is_ok());
    s.apply(&compact_cmd(3)).unwrap();
    assert_eq!(at(&s, 2).unwrap_err(), KvError::Compacted);
    assert_eq!(at(&s, 1).unwrap_err(), KvError::Compacted);
    assert_eq!(
        value_at(&s, "a", 3).as_deref(),
        Some("2"),
        "the compacted revision itself is readable"
    );
    assert_eq!(value_at(&s, "a", 0).as_deref(), Some("3"));
    assert_eq!(at(&s, 5).unwrap_err(), KvError::FutureRevision);
}

/// Ten keys k0..k9, key ki has version (i % 3) + 1 and value "v(9-i)".
fn numbered_store() -> Store {
    let mut s = Store::with_test_leases();
    for i in 0..10 {
        for _ in 0..(i % 3) + 1 {
            s.apply(&put(&format!("k{i}"), &format!("v{}", 9 - i)))
                .unwrap();
        }
    }
    s
}

#[test]
fn count_limit_more_sort_and_filters() {
    let s = numbered_store();
    let base = range_req("k", "l");
    let all_mods: Vec<i64> = get(&s, &base)
        .kvs
        .iter()
        .map(|kv| kv.mod_revision)
        .collect();
    let creates: Vec<i64> = get(&s, &base)
        .kvs
        .iter()
        .map(|kv| kv.create_revision)
        .collect();
    // (request, expected keys, more, count)
    let cases: Vec<(PbRangeRequest, Vec<&str>, bool, i64)> = vec![
        (
            base.clone(),
            vec!["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"],
            false,
            10,
        ),
        (
            PbRangeRequest {
                limit: 3,
                ..base.clone()
            },
            vec!["k0", "k1", "k2"],
            true,
            10,
        ),
        (
            PbRangeRequest {
                limit: 10,
                ..base.clone()
            },
            vec!["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"],
            false,
            10,
        ),
        (
            PbRangeRequest {
                limit: 11,
                ..base.clone()
            },
            vec!["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"],
            false,
            10,
        ),
        (
            PbRangeRequest {
                limit: -1,
                ..base.clone()
            },
            vec!["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"],
            false,
            10,
        ),
        // Descending by key.
        (
            PbRangeRequest {
                limit: 2,
                sort_order: 2,
                ..base.clone()
            },
            vec!["k9", "k8"],
            true,
            10,
        ),
        // etcd quirk: target VERSION with order NONE and limit 2 fetches 3 keys in key
        // order (k0 v1, k1 v2, k2 v3), then sorts them ascending by version.
        (
            PbRangeRequest {
                limit: 2,
                sort_target: 1,
                ..base.clone()
            },
            vec!["k0", "k1"],
            true,
            10,
        ),
        // Same with DESCEND: the whole range is fetched first (k2, k5, k8 have version 3).
        (
            PbRangeRequest {
                limit: 2,
                sort_target: 1,
                sort_order: 2,
                ..base.clone()
            },
            vec!["k2", "k5"],
            true,
            10,
        ),
        // By value ascending: value of ki is v(9-i).
        (
            PbRangeRequest {
                limit: 3,
                sort_target: 4,
                sort_order: 1,
                ..base.clone()
            },
            vec!["k9", "k8", "k7"],
            true,
            10,
        ),
        (
            PbRangeRequest {
                sort_target: 3,
                sort_order: 2,
                limit: 1,
                ..base.clone()
            },
            vec!["k9"],
            true,
            10,
        ),
        (
            PbRangeRequest {
                sort_target: 2,
                sort_order: 1,
                limit: 1,
                ..base.clone()
            },
            vec!["k0"],
            true,
            10,
        ),
        // Filters apply after counting and before the limit.
        (
            PbRangeRequest {
                min_mod_revision: all_mods[7],
                ..base.clone()
            },
            vec!["k7", "k8", "k9"],
            false,
            10,
        ),
        (
            PbRangeRequest {
                max_mod_revision: all_mods[1],
                ..base.clone()
            },
            vec!["k0", "k1"],
            false,
            10,
        ),
        (
            PbRangeRequest {
                min_create_revision: creates[8],
                limit: 1,
                ..base.clone()
            },
            vec!["k8"],
            true,
            10,
        ),
        (
            PbRangeRequest {
                max_create_revision: creates[0],
                ..base.clone()
            },
            vec!["k0"],
            false,
            10,
        ),
        (
            PbRangeRequest {
                min_mod_revision: all_mods[2],
                max_mod_revision: all_mods[4],
                ..base.clone()
            },
            vec!["k2", "k3", "k4"],
            false,
            10,
        ),
        (
            PbRangeRequest {
                count_only: true,
                ..base.clone()
            },
            vec![],
            false,
            10,
        ),
        (
            PbRangeRequest {
                count_only: true,
                limit: 1,
                ..base.clone()
            },
            vec![],
            false,
            10,
        ),
        (
            PbRangeRequest {
                limit: 2,
                ..range_req("k3", "k5")
            },
            vec!["k3", "k4"],
            false,
            2,
        ),
    ];
    for (i, (req, expected, more, count)) in cases.into_iter().enumerate() {
        let resp = get(&s, &req);
        assert_eq!(keys(&resp), expected, "case {i}");
        assert_eq!((resp.more, resp.count), (more, count), "case {i}");
    }
}

#[test]
fn keys_only_drops_values() {
    let s = numbered_store();
    let resp = get(
        &s,
        &PbRangeRequest {
            keys_only: true,
            ..range_req("k1", "")
        },
    );
    let kv = &resp.kvs[0];
    assert_eq!(
        (kv.key.as_slice(), kv.value.is_empty(), kv.version),
        (&b"k1"[..], true, 2)
    );
}

#[test]
fn sort_ties_come_out_as_in_etcd() {
    // 30 keys s00..s29, key i put ((i*7) % 4) + 1 times with value v((i*5) % 3), in key
    // order. Expected orders were read from etcd 3.4.23 (Go's unstable pdqsort).
    let mut s = Store::with_test_leases();
    for i in 0..30 {
        for _ in 0..((i * 7) % 4) + 1 {
            s.apply(&put(&format!("s{i:02}"), &format!("v{}", (i * 5) % 3)))
                .unwrap();
        }
    }
    let n = |v: &[u32]| v.iter().map(|i| format!("s{i:02}")).collect::<Vec<_>>();
    let cases: Vec<(i32, i32, i64, Vec<String>)> = vec![
        (
            1,
            1,
            0,
            n(&[
                8, 28, 0, 16, 4, 24, 12, 20, 3, 7, 19, 11, 23, 15, 27, 14, 22, 2, 18, 10, 26, 6,
                13, 21, 5, 25, 9, 17, 1, 29,
            ]),
        ),
        (
            1,
            4,
            0,
            n(&[
                12, 27, 24, 3, 21, 18, 6, 15, 0, 9, 14, 20, 29, 26, 8, 11, 2, 17, 5, 23, 7, 4, 22,
                19, 16, 25, 13, 1, 28, 10,
            ]),
        ),
        (
            2,
            1,
            0,
            n(&[
                9, 1, 29, 25, 21, 5, 17, 13, 14, 18, 10, 22, 2, 6, 26, 15, 27, 7, 11, 19, 3, 23, 0,
                4, 24, 20, 16, 8, 28, 12,
            ]),
        ),
        (
            2,
            4,
            0,
            n(&[
                10, 1, 28, 25, 4, 22, 19, 7, 16, 13, 14, 20, 29, 2, 26, 11, 8, 17, 23, 5, 15, 21,
                6, 18, 24, 3, 0, 27, 9, 12,
            ]),
        ),
        (1, 2, 0, n(&(0..30).collect::<Vec<_>>())),
        (2, 3, 0, n(&(0..30).rev().collect::<Vec<_>>())),
        (
            0,
            1,
            20,
            n(&[
                20, 4, 16, 8, 12, 0, 11, 19, 3, 15, 7, 10, 14, 6, 18, 2, 9, 13, 5, 17,
            ]),
        ),
    ];
    for (order, target, limit, expected) in cases {
        let req = PbRangeRequest {
            sort_order: order,
            sort_target: target,
            limit,
            ..range_req("s", "t")
        };
        assert_eq!(
            keys(&get(&s, &req)),
            expected,
            "order {order} target {target}"
        );
    }
}

// ---- puts and deletes -------------------------------------------------------------------

#[test]
fn put_options() {
    let mut s = store_with(&[Command::Put(PbPutRequest {
        lease: 7,
        ..put_req("a", "1")
    })]);
    // (request, expected result: Ok((value, lease, prev value)) or Err)
    type Expect = Result<(&'static str, i64, Option<&'static str>), KvError>;
    let cases: Vec<(PbPutRequest, Expect)> = vec![
        (
            PbPutRequest {
                prev_kv: true,
                ..put_req("a", "2")
            },
            Ok(("2", 0, Some("1"))),
        ),
        (
            PbPutRequest {
                prev_kv: true,
                ..put_req("new", "x")
            },
            Ok(("x", 0, None)),
        ),
        (
            PbPutRequest {
                ignore_value: true,
                lease: 5,
                ..put_req("a", "")
            },
            Ok(("2", 5, None)),
        ),
        (
            PbPutRequest {
                ignore_lease: true,
                prev_kv: true,
                ..put_req("a", "3")
            },
            Ok(("3", 5, Some("2"))),
        ),
        (
            PbPutRequest {
                ignore_value: true,
                ignore_lease: true,
                ..put_req("a", "")
            },
            Ok(("3", 5, None)),
        ),
        (
            PbPutRequest {
                ignore_value: true,
                ..put_req("missing", "")
            },
            Err(KvError::KeyNotFound),
        ),
        (
            PbPutRequest {
                ignore_lease: true,
                ..put_req("missing", "v")
            },
            Err(KvError::KeyNotFound),
        ),
    ];
    for (i, (req, expected)) in cases.into_iter().enumerate() {
        let before = s.revision();
        let key = String::from_utf8(req.key.clone()).unwrap();
        match (s.apply(&Command::Put(req)), expected) {
            (Ok(applied), Ok((value, lease, prev))) => {
                let CommandResponse::Put(resp) = applied.response else {
                    panic!("case {i}")
                };
                assert_eq!(resp.header.unwrap().revision, before + 1, "case {i}");
                let prev_got = resp.prev_kv.map(|p| String::from_utf8(p.value).unwrap());
                assert_eq!(prev_got.as_deref(), prev, "case {i}");
                let kv = get(&s, &range_req(&key, "")).kvs[0].clone();
                assert_eq!(
                    (kv.value.as_slice(), kv.lease),
                    (value.as_bytes(), lease),
                    "case {i}"
                );
            }
            (Err(e), Err(expected)) => {
                assert_eq!(e, expected, "case {i}");
                assert_eq!(s.revision(), before, "case {i}");
            }
            (got, expected) => panic!("case {i}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn delete_range_reports_what_it_deleted() {
    let mut s = store_with(&[put("a", "1"), put("b", "2"), put("c", "3")]);
    let applied = s
        .apply(&Command::DeleteRange(PbDeleteRequest {
            prev_kv: true,
            ..del_req("a", "c")
        }))
        .unwrap();
    let CommandResponse::DeleteRange(resp) = applied.response else {
        panic!()
    };
    assert_eq!((resp.deleted, resp.header.unwrap().revision), (2, 5));
    let prev: Vec<&[u8]> = resp.prev_kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(prev, vec![&b"a"[..], &b"b"[..]]);
    let applied = s.apply(&del("a", "")).unwrap();
    let CommandResponse::DeleteRange(resp) = applied.response else {
        panic!()
    };
    assert_eq!(
        (
            resp.deleted,
            resp.header.unwrap().revision,
            resp.prev_kvs.len()
        ),
        (0, 5, 0)
    );
    let applied = s.apply(&del("c", "")).unwrap();
    let CommandResponse::DeleteRange(resp) = applied.response else {
        panic!()
    };
    assert_eq!(
        (resp.deleted, resp.prev_kvs.len()),
        (1, 0),
        "prev_kvs only when asked"
    );
    assert_eq!(s.view().key_count(), 0);
}

// ---- compaction -------------------------------------------------------------------------

#[test]
fn compaction_errors() {
    let mut s = Store::with_test_leases();
    // A fresh etcd (compactMainRev = -1) accepts compact 0 once.
    assert!(s.apply(&compact_cmd(0)).is_ok());
    assert_eq!(s.apply(&compact_cmd(0)).unwrap_err(), KvError::Compacted);
    assert_eq!(s.apply(&compact_cmd(-1)).unwrap_err(), KvError::Compacted);
    assert_eq!(
        s.apply(&compact_cmd(2)).unwrap_err(),
        KvError::FutureRevision
    );
    s.apply(&put("a", "1")).unwrap();
    s.apply(&put("a", "2")).unwrap();
    let applied = s.apply(&compact_cmd(3)).unwrap(); // == current is allowed
    assert_eq!(
        (
            applied.revision,
            rev_of(&applied.response),
            s.compact_revision()
        ),
        (3, 3, 3)
    );
    assert_eq!(s.apply(&compact_cmd(3)).unwrap_err(), KvError::Compacted);
    assert_eq!(s.apply(&compact_cmd(2)).unwrap_err(), KvError::Compacted);
    assert_eq!(s.revision(), 3);
}

/// Every (key, main, sub) left in the history.
fn history(s: &Store) -> Vec<(String, i64, i64)> {
    s.state
        .history_keys()
        .into_iter()
        .map(|(k, m, sub)| (String::from_utf8(k.to_vec()).unwrap(), m, sub))
        .collect()
}

#[test]
fn compaction_removes_history_physically() {
    let mut s = store_with(&[
        put("a", "1"), // 2
        put("a", "2"), // 3
        put("b", "1"), // 4
        del("b", ""),  // 5
        put("c", "1"), // 6
        del("c", ""),  // 7
        put("c", "2"), // 8
        put("a", "3"), // 9
    ]);
    let view_before = s.view();
    s.apply(&compact_cmd(7)).unwrap();
    // a: keeps 3 (latest <= 7, live) and 9; b: tombstone at 5 and nothing later: gone;
    // c: tombstone at 7 dropped, 8 stays.
    assert_eq!(
        history(&s),
        vec![("a".into(), 3, 0), ("a".into(), 9, 0), ("c".into(), 8, 0)]
    );
    assert_eq!(s.compact_revision(), 7);
    assert_eq!(value_at(&s, "a", 7).as_deref(), Some("2"));
    assert_eq!(value_at(&s, "b", 7), None);
    assert_eq!(value_at(&s, "c", 7), None);
    assert_eq!(value_at(&s, "c", 8).as_deref(), Some("2"));
    assert_eq!(
        keys(&get(
            &s,
            &PbRangeRequest {
                revision: 7,
                ..range_req("a", "\0")
            }
        )),
        vec!["a"]
    );
    // A snapshot taken before the compaction is unaffected by it.
    let old = view_before
        .range(&PbRangeRequest {
            revision: 4,
            ..range_req("b", "")
        })
        .unwrap();
    assert_eq!(old.count, 1);
    s.apply(&compact_cmd(9)).unwrap();
    assert_eq!(history(&s), vec![("a".into(), 9, 0), ("c".into(), 8, 0)]);
}

// ---- txns -------------------------------------------------------------------------------

#[test]
fn txn_sees_its_own_writes() {
    let mut s = store_with(&[put("a", "1")]); // rev 2
    let req = txn_req(
        vec![],
        vec![
            op_range("a", ""),
            op_del("zz", ""),
            op_put("a", "2"),
            op_range("a", ""),
            op(PbTxnOpRequest::RequestRange(PbRangeRequest {
                revision: 2,
                ..range_req("a", "")
            })),
            op(PbTxnOpRequest::RequestPut(PbPutRequest {
                prev_kv: true,
                ..put_req("b", "1")
            })),
            op(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
                prev_kv: true,
                ..del_req("b", "")
            })),
            op_del("zz", ""),
        ],
        vec![],
    );
    let resp = txn_resp(s.apply(&Command::Txn(req)).unwrap());
    assert_eq!(resp.header.unwrap().revision, 3);
    let revs: Vec<i64> = resp
        .responses
        .iter()
        .map(|r| op_header_rev(r.response.as_ref().unwrap()))
        .collect();
    assert_eq!(revs, vec![2, 2, 3, 3, 3, 3, 3, 3]);
    let value = |i: usize| match resp.responses[i].response.as_ref().unwrap() {
        PbTxnOpResponse::ResponseRange(r) => r.kvs[0].value.clone(),
        _ => panic!(),
    };
    assert_eq!(
        (value(0), value(3), value(4)),
        (b"1".to_vec(), b"2".to_vec(), b"1".to_vec())
    );
    match resp.responses[6].response.as_ref().unwrap() {
        PbTxnOpResponse::ResponseDeleteRange(d) => {
            assert_eq!(
                (
                    d.deleted,
                    d.prev_kvs[0].value.as_slice(),
                    d.prev_kvs[0].mod_revision
                ),
                (1, &b"1"[..], 3)
            )
        }
        _ => panic!(),
    }
    // One main revision, sub revisions in op order.
    let subs: Vec<(String, i64, i64)> = history(&s)
        .into_iter()
        .filter(|(_, m, _)| *m == 3)
        .collect();
    assert_eq!(
        subs,
        vec![("a".into(), 3, 0), ("b".into(), 3, 1), ("b".into(), 3, 2)]
    );
}

#[test]
fn nested_compares_see_the_state_before_the_txn() {
    // Revision 2. The outer success puts "n"; the nested compare "n has version 0" is
    // evaluated before the txn runs, so it succeeds although "n" exists when the nested
    // txn runs.
    let mut s = store_with(&[put("a", "1")]);
    let nested = txn_req(
        vec![cmp_version("n", EQUAL, 0)],
        vec![op_put("m", "1"), op_range("n", "")],
        vec![op_put("f", "1")],
    );
    let req = txn_req(
        vec![cmp_version("a", EQUAL, 1)],
        vec![op_put("n", "1"), op_txn(nested)],
        vec![],
    );
    let resp = txn_resp(s.apply(&Command::Txn(req)).unwrap());
    assert!(resp.succeeded);
    assert_eq!(resp.header.unwrap().revision, 3);
    let PbTxnOpResponse::ResponseTxn(inner) = resp.responses[1].response.as_ref().unwrap() else {
        panic!()
    };
    assert!(inner.succeeded);
    assert_eq!(
        inner.header,
        Some(Default::default()),
        "etcd leaves nested txn headers empty"
    );
    let PbTxnOpResponse::ResponseRange(r) = inner.responses[1].response.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!((r.count, r.header.unwrap().revision), (1, 3));
    assert_eq!(keys(&get(&s, &range_req("a", "\0"))), vec!["a", "m", "n"]);
}

#[test]
fn failure_branch_and_nested_failure() {
    let mut s = store_with(&[put("a", "1")]);
    let nested = txn_req(
        vec![cmp_version("a", GREATER, 5)],
        vec![op_put("x", "1")],
        vec![op_put("y", "1")],
    );
    let req = txn_req(
        vec![cmp_version("a", EQUAL, 2)],
        vec![op_put("s", "1")],
        vec![op_txn(nested), op_range("y", "")],
    );
    let resp = txn_resp(s.apply(&Command::Txn(req)).unwrap());
    assert!(!resp.succeeded);
    let PbTxnOpResponse::ResponseTxn(inner) = resp.responses[0].response.as_ref().unwrap() else {
        panic!()
    };
    assert!(!inner.succeeded);
    let PbTxnOpResponse::ResponseRange(r) = resp.responses[1].response.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(r.count, 1, "the range after the nested txn sees its write");
    assert_eq!(keys(&get(&s, &range_req("a", "\0"))), vec!["a", "y"]);
}

#[test]
fn compare_rules() {
    let s0 = store_with(&[
        Command::Put(PbPutRequest {
            lease: 9,
            ..put_req("a", "m")
        }), // 2
        put("b", "m"), // 3
        put("b", "n"), // 4: b version 2
    ]);
    let range_cmp = |key: &str, end: &str, target, result, union| PbCompare {
        range_end: end.into(),
        ..cmp(key, target, result, union)
    };
    let cases: Vec<(PbCompare, bool)> = vec![
        (cmp_version("a", EQUAL, 1), true),
        (cmp_version("a", NOT_EQUAL, 1), false),
        (cmp_version("b", GREATER, 1), true),
        (cmp_version("b", LESS, 2), false),
        (cmp_version("missing", EQUAL, 0), true),
        (cmp_version("missing", LESS, 1), true),
        (
            cmp("a", T_CREATE, EQUAL, Some(PbTargetUnion::CreateRevision(2))),
            true,
        ),
        (
            cmp("b", T_MOD, EQUAL, Some(PbTargetUnion::ModRevision(4))),
            true,
        ),
        (
            cmp("b", T_MOD, LESS, Some(PbTargetUnion::ModRevision(4))),
            false,
        ),
        (
            cmp("a", T_LEASE, EQUAL, Some(PbTargetUnion::Lease(9))),
            true,
        ),
        (cmp("b", T_LEASE, EQUAL, None), true),
        (
            cmp(
                "a",
                T_VALUE,
                EQUAL,
                Some(PbTargetUnion::Value(b"m".to_vec())),
            ),
            true,
        ),
        (
            cmp(
                "a",
                T_VALUE,
                GREATER,
                Some(PbTargetUnion::Value(b"l".to_vec())),
            ),
            true,
        ),
        (
            cmp(
                "a",
                T_VALUE,
                LESS,
                Some(PbTargetUnion::Value(b"mm".to_vec())),
            ),
            true,
        ),
        (cmp("a", T_VALUE, GREATER, None), true),
        // A missing key never satisfies a VALUE compare, whatever the operator.
        (
            cmp(
                "missing",
                T_VALUE,
                NOT_EQUAL,
                Some(PbTargetUnion::Value(b"x".to_vec())),
            ),
            false,
        ),
        (cmp("missing", T_VALUE, EQUAL, None), false),
        (
            cmp(
                "missing",
                T_CREATE,
                EQUAL,
                Some(PbTargetUnion::CreateRevision(0)),
            ),
            true,
        ),
        // A union of another kind counts as zero.
        (
            cmp("a", T_MOD, GREATER, Some(PbTargetUnion::Version(100))),
            true,
        ),
        // Ranges: every key must satisfy it.
        (
            range_cmp(
                "a",
                "c",
                T_VALUE,
                EQUAL,
                Some(PbTargetUnion::Value(b"m".to_vec())),
            ),
            false,
        ),
        (
            range_cmp(
                "a",
                "c",
                T_VERSION,
                GREATER,
                Some(PbTargetUnion::Version(0)),
            ),
            true,
        ),
        (
            range_cmp(
                "a",
                "\0",
                T_CREATE,
                LESS,
                Some(PbTargetUnion::CreateRevision(4)),
            ),
            true,
        ),
        (
            range_cmp("c", "\0", T_VERSION, EQUAL, Some(PbTargetUnion::Version(0))),
            true,
        ),
        (range_cmp("c", "\0", T_VALUE, EQUAL, None), false),
    ];
    for (i, (c, expected)) in cases.into_iter().enumerate() {
        let mut s = store_with(&[]);
        s.state = s0.state.clone();
        let resp = txn_resp(s.apply(&txn_cmd(vec![c], vec![], vec![])).unwrap());
        assert_eq!(resp.succeeded, expected, "case {i}");
    }
}

#[test]
fn txn_checks_fail_the_whole_txn() {
    let mut s = store_with(&[put("a", "1"), put("a", "2"), put("a", "3")]); // rev 4
    s.apply(&compact_cmd(2)).unwrap();
    let range_at = |revision| {
        op(PbTxnOpRequest::RequestRange(PbRangeRequest {
            revision,
            ..range_req("a", "")
        }))
    };
    let ignore_missing = op(PbTxnOpRequest::RequestPut(PbPutRequest {
        ignore_value: true,
        ..put_req("nope", "")
    }));
    let cases: Vec<(PbTxnRequest, Result<(), KvError>)> = vec![
        (
            txn_req(vec![], vec![op_put("b", "1"), range_at(5)], vec![]),
            Err(KvError::FutureRevision),
        ),
        (
            txn_req(vec![], vec![op_put("b", "1"), range_at(1)], vec![]),
            Err(KvError::Compacted),
        ),
        // Negative revisions fail once anything was compacted (etcd's checkRange).
        (
            txn_req(vec![], vec![range_at(-1)], vec![]),
            Err(KvError::Compacted),
        ),
        (
            txn_req(vec![], vec![range_at(2), range_at(4), range_at(0)], vec![]),
            Ok(()),
        ),
        // Only the chosen path is checked.
        (
            txn_req(
                vec![cmp_version("a", EQUAL, 0)],
                vec![range_at(9)],
                vec![op_put("b", "1")],
            ),
            Ok(()),
        ),
        (
            txn_req(
                vec![],
                vec![op_txn(txn_req(vec![], vec![range_at(9)], vec![]))],
                vec![],
            ),
            Err(KvError::FutureRevision),
        ),
        (
            txn_req(
                vec![],
                vec![op_put("b", "1"), ignore_missing.clone()],
                vec![],
            ),
            Err(KvError::KeyNotFound),
        ),
        // Put checks come before range checks.
        (
            txn_req(vec![], vec![range_at(9), ignore_missing.clone()], vec![]),
            Err(KvError::KeyNotFound),
        ),
        // ignore_value needs the key to exist before the txn, not just earlier in it.
        (
            txn_req(
                vec![],
                vec![
                    op_put("new", "1"),
                    op(PbTxnOpRequest::RequestPut(PbPutRequest {
                        ignore_value: true,
                        ..put_req("new", "")
                    })),
                ],
                vec![],
            ),
            Err(KvError::KeyNotFound),
        ),
        // A key deleted earlier in the same txn fails at execution time; still atomic.
        (
            txn_req(
                vec![],
                vec![
                    op_del("a", ""),
                    op(PbTxnOpRequest::RequestPut(PbPutRequest {
                        ignore_lease: true,
                        ..put_req("a", "x")
                    })),
                ],
                vec![],
            ),
            Err(KvError::KeyNotFound),
        ),
    ];
    for (i, (req, expected)) in cases.into_iter().enumerate() {
        let before = s.state.clone();
        let result = s.apply(&Command::Txn(req)).map(|_| ());
        assert_eq!(result, expected, "case {i}");
        if result.is_err() {
            assert_eq!(s.revision(), before.revision, "case {i}");
            assert_eq!(history(&s).len(), before.by_revision.len(), "case {i}");
        }
        s.state = before;
    }
}

#[test]
fn failed_applies_change_nothing() {
    let mut s = store_with(&[put("a", "1"), put("b", "1")]);
    let view = s.view();
    let snapshot = history(&s);
    let failing = vec![
        txn_cmd(
            vec![],
            vec![
                op_put("c", "1"),
                op_del("a", "\0"),
                op(PbTxnOpRequest::RequestPut(PbPutRequest {
                    ignore_value: true,
                    ..put_req("a", "")
                })),
            ],
            vec![],
        ),
        Command::Put(PbPutRequest {
            ignore_lease: true,
            ..put_req("zz", "1")
        }),
        compact_cmd(10),
    ];
    for command in &failing {
        assert!(s.apply(command).is_err());
        assert_eq!(history(&s), snapshot);
        assert_eq!((s.revision(), s.view().key_count()), (3, 2));
    }
    // Snapshots are isolated from later writes.
    s.apply(&put("c", "1")).unwrap();
    s.apply(&del("a", "")).unwrap();
    assert_eq!((view.revision(), view.key_count()), (3, 2));
    assert_eq!(
        keys(&view.range(&range_req("a", "\0")).unwrap()),
        vec!["a", "b"]
    );
    assert_eq!(
        view.range(&PbRangeRequest {
            revision: 4,
            ..range_req("a", "")
        })
        .unwrap_err(),
        KvError::FutureRevision
    );
}

/// A command that fails part-way undoes its writes in place (txn.rs): every map, every
/// lease's key set and the revision must be exactly as before, whichever writes it made.
#[test]
fn failed_writes_undo_every_change() {
    let put_leased = |key: &str, lease: i64| PbPutRequest {
        lease,
        ..put_req(key, "v")
    };
    let late_failure = op(PbTxnOpRequest::RequestPut(PbPutRequest {
        ignore_value: true,
        ..put_req("k1", "")
    }));
    let failing = [
        // Moves a key between leases, creates, overwrites twice, deletes a range.
        txn_cmd(
            vec![],
            vec![
                op(PbTxnOpRequest::RequestPut(put_leased("k0", 2))),
                op(PbTxnOpRequest::RequestPut(put_leased("new", 3))),
                op_put("k2", "x"),
                op_put("k2", "y"),
                op_del("k1", "k3"),
                late_failure.clone(),
            ],
            vec![],
        ),
        // Writes in a nested txn, then fails in the outer one.
        txn_cmd(
            vec![],
            vec![
                op(PbTxnOpRequest::RequestTxn(txn_req(
                    vec![],
                    vec![op_del("k0", "\0"), op_put("k0", "again")],
                    vec![],
                ))),
                late_failure,
            ],
            vec![],
        ),
    ];
    let mut s = store_with(&[
        Command::Put(put_leased("k0", 1)),
        Command::Put(put_leased("k1", 1)),
        put("k2", "1"),
    ]);
    let before = s.view().dump();
    for (i, command) in failing.iter().enumerate() {
        assert_eq!(
            s.apply(command).unwrap_err(),
            KvError::KeyNotFound,
            "case {i}"
        );
        assert_eq!(s.view().dump(), before, "case {i}");
    }
    // The store goes on as if the failures never happened.
    s.apply(&put("k3", "1")).unwrap();
    assert_eq!(s.revision(), before.revision + 1);
    assert_eq!(s.view().lease(1).unwrap().keys.len(), 2);
}

#[test]
fn read_view_is_shareable() {
    fn assert_shareable<T: Send + Sync + 'static>() {}
    assert_shareable::<ReadView>();
    assert_shareable::<Event>();
    let s = store_with(&[put("a", "1")]);
    let view = s.view();
    let count = std::thread::spawn(move || view.range(&range_req("a", "")).unwrap().count)
        .join()
        .unwrap();
    assert_eq!(count, 1);
}

// ---- validation -------------------------------------------------------------------------

#[test]
fn validate_single_requests() {
    use validate::{check_delete, check_put, check_range};
    assert_eq!(check_range(&range_req("", "\0")), Err(KvError::EmptyKey));
    assert_eq!(check_range(&range_req("a", "")), Ok(()));
    assert_eq!(check_delete(&del_req("", "")), Err(KvError::EmptyKey));
    assert_eq!(check_delete(&del_req("a", "\0")), Ok(()));
    let cases: Vec<(PbPutRequest, Result<(), KvError>)> = vec![
        (put_req("", "v"), Err(KvError::EmptyKey)),
        (put_req("k", ""), Ok(())),
        (
            PbPutRequest {
                ignore_value: true,
                ..put_req("k", "v")
            },
            Err(KvError::ValueProvided),
        ),
        (
            PbPutRequest {
                ignore_value: true,
                ..put_req("k", "")
            },
            Ok(()),
        ),
        (
            PbPutRequest {
                ignore_lease: true,
                lease: 3,
                ..put_req("k", "v")
            },
            Err(KvError::LeaseProvided),
        ),
        (
            PbPutRequest {
                ignore_lease: true,
                ..put_req("k", "v")
            },
            Ok(()),
        ),
        (
            PbPutRequest {
                ignore_value: true,
                ignore_lease: true,
                lease: 3,
                ..put_req("k", "v")
            },
            Err(KvError::ValueProvided),
        ),
    ];
    for (i, (req, expected)) in cases.into_iter().enumerate() {
        assert_eq!(check_put(&req), expected, "case {i}");
    }
}

#[test]
fn validate_txn_structure() {
    let check = |t: &PbTxnRequest, max| validate::check_txn(t, max);
    let puts = |n: usize| {
        (0..n)
            .map(|i| op_put(&format!("k{i}"), "v"))
            .collect::<Vec<_>>()
    };
    let cmps = |n: usize| {
        (0..n)
            .map(|i| cmp_version(&format!("k{i}"), EQUAL, 0))
            .collect::<Vec<_>>()
    };
    let cases: Vec<(PbTxnRequest, usize, Result<(), KvError>)> = vec![
        (txn_req(vec![], puts(3), vec![]), 3, Ok(())),
        (
            txn_req(vec![], puts(4), vec![]),
            3,
            Err(KvError::TooManyOps),
        ),
        (
            txn_req(cmps(4), vec![], vec![]),
            3,
            Err(KvError::TooManyOps),
        ),
        (
            txn_req(vec![], vec![], puts(4)),
            3,
            Err(KvError::TooManyOps),
        ),
        (txn_req(cmps(3), puts(3), puts(3)), 3, Ok(())),
        // A nested txn gets the budget left over (max - opc), as etcd passes it down.
        (
            txn_req(
                vec![],
                vec![op_txn(txn_req(vec![], puts(2), vec![]))],
                vec![],
            ),
            3,
            Ok(()),
        ),
        (
            txn_req(
                vec![],
                vec![op_txn(txn_req(vec![], puts(3), vec![]))],
                vec![],
            ),
            3,
            Err(KvError::TooManyOps),
        ),
        (
            txn_req(vec![cmp_version("", EQUAL, 0)], vec![], vec![]),
            3,
            Err(KvError::EmptyKey),
        ),
        (
            txn_req(vec![], vec![op_put("", "v")], vec![]),
            3,
            Err(KvError::EmptyKey),
        ),
        (
            txn_req(vec![], vec![], vec![op_range("", "")]),
            3,
            Err(KvError::EmptyKey),
        ),
        (
            txn_req(vec![], vec![op_del("", "")], vec![]),
            3,
            Err(KvError::EmptyKey),
        ),
        (
            txn_req(
                vec![],
                vec![op(PbTxnOpRequest::RequestPut(PbPutRequest {
                    ignore_value: true,
                    ..put_req("k", "v")
                }))],
                vec![],
            ),
            3,
            Err(KvError::ValueProvided),
        ),
        (
            txn_req(vec![], vec![PbTxnRequestOp { request: None }], vec![]),
            3,
            Err(KvError::KeyNotFound),
        ),
        (
            txn_req(
                vec![],
                vec![op_txn(txn_req(
                    vec![],
                    vec![],
                    vec![PbTxnRequestOp { request: None }],
                ))],
                vec![],
            ),
            3,
            Err(KvError::KeyNotFound),
        ),
        // Structural errors win over duplicate keys.
        (
            txn_req(
                vec![],
                vec![op_put("a", "1"), op_put("a", "2"), op_put("", "")],
                vec![],
            ),
            3,
            Err(KvError::EmptyKey),
        ),
    ];
    for (i, (req, max, expected)) in cases.into_iter().enumerate() {
        assert_eq!(check(&req, max), expected, "case {i}");
    }
}

#[test]
fn validate_txn_duplicate_keys() {
    let dup = Err(KvError::DuplicateKey);
    let ok = Ok(());
    let nested = |success, failure| op_txn(txn_req(vec![], success, failure));
    let cases: Vec<(Vec<PbTxnRequestOp>, Result<(), KvError>)> = vec![
        (vec![op_put("a", "1"), op_put("a", "2")], dup.clone()),
        (vec![op_put("a", "1"), op_put("b", "2")], ok.clone()),
        (vec![op_put("a", "1"), op_del("a", "")], dup.clone()),
        (vec![op_del("a", ""), op_put("a", "1")], dup.clone()),
        (vec![op_put("b", "1"), op_del("a", "c")], dup.clone()),
        (vec![op_put("c", "1"), op_del("a", "c")], ok.clone()),
        (
            vec![op_del("a", "c"), op_del("b", "d"), op_del("b", "")],
            ok.clone(),
        ),
        (vec![op_put("a", "1"), op_range("a", "")], ok.clone()),
        // "\0" is a literal end in etcd's interval tree, so [a, "\0") holds no key: real etcd
        // 3.4 accepts `del --from-key a` with `put b` in one txn.
        (vec![op_del("a", "\0"), op_put("b", "1")], ok.clone()),
        (vec![op_del("b", "a"), op_put("b", "1")], ok.clone()),
        // Nested: then/else of one nested txn may put the same key.
        (
            vec![nested(vec![op_put("a", "1")], vec![op_put("a", "2")])],
            ok.clone(),
        ),
        (
            vec![nested(vec![op_put("a", "1")], vec![]), op_put("a", "2")],
            dup.clone(),
        ),
        (
            vec![nested(vec![], vec![op_put("a", "1")]), op_put("a", "2")],
            dup.clone(),
        ),
        (
            vec![
                nested(vec![op_put("a", "1")], vec![]),
                nested(vec![op_put("a", "2")], vec![]),
            ],
            dup.clone(),
        ),
        (
            vec![
                nested(vec![op_put("a", "1")], vec![]),
                nested(vec![], vec![op_put("a", "2")]),
            ],
            dup.clone(),
        ),
        (
            vec![op_del("a", "b"), nested(vec![op_put("a", "1")], vec![])],
            dup.clone(),
        ),
        (
            vec![op_del("a", "b"), nested(vec![], vec![op_put("a", "1")])],
            dup.clone(),
        ),
        (
            vec![nested(vec![op_del("a", "")], vec![]), op_put("a", "1")],
            dup.clone(),
        ),
        (
            vec![nested(vec![], vec![op_del("a", "c")]), op_put("b", "1")],
            dup.clone(),
        ),
        // A nested txn's deletes join this level's before the next nested txn is checked.
        (
            vec![
                nested(vec![op_del("a", "")], vec![]),
                nested(vec![op_put("a", "1")], vec![]),
            ],
            dup.clone(),
        ),
        (
            vec![
                nested(vec![op_put("a", "1")], vec![]),
                nested(vec![op_del("a", "")], vec![]),
            ],
            ok.clone(),
        ),
        (
            vec![nested(vec![op_put("a", "1"), op_put("a", "2")], vec![])],
            dup.clone(),
        ),
        (
            vec![
                nested(vec![nested(vec![op_put("a", "1")], vec![])], vec![]),
                op_put("a", "1"),
            ],
            dup.clone(),
        ),
    ];
    for (i, (success, expected)) in cases.into_iter().enumerate() {
        let as_success = txn_req(vec![], success.clone(), vec![]);
        assert_eq!(
            validate::check_txn(&as_success, 128),
            expected,
            "case {i} (success)"
        );
        let as_failure = txn_req(vec![], vec![], success);
        assert_eq!(
            validate::check_txn(&as_failure, 128),
            expected,
            "case {i} (failure)"
        );
    }
    // Each branch is checked on its own.
    let split = txn_req(vec![], vec![op_put("a", "1")], vec![op_put("a", "2")]);
    assert_eq!(validate::check_txn(&split, 128), Ok(()));
}

/// A read-only txn served from a view answers exactly as applying it through the log would.
#[test]
fn read_only_txn_from_a_view_matches_apply() {
    let mut store = Store::with_test_leases();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        store.apply(&put(k, v)).unwrap();
    }
    let nested = txn_req(
        vec![cmp_version("b", EQUAL, 1)],
        vec![op_range("a", "z")],
        vec![op_range("c", "")],
    );
    let cases = vec![
        txn_req(
            vec![cmp_version("a", EQUAL, 1)],
            vec![op_range("a", "")],
            vec![op_range("b", "")],
        ),
        txn_req(
            vec![cmp_version("a", GREATER, 5)],
            vec![op_range("a", "")],
            vec![op_range("b", "c")],
        ),
        txn_req(
            vec![],
            vec![op_txn(nested.clone()), op_range("a", "c")],
            vec![],
        ),
        txn_req(
            vec![cmp_version("zz", EQUAL, 0)],
            vec![],
            vec![op_txn(nested)],
        ),
    ];
    for (i, txn) in cases.into_iter().enumerate() {
        assert!(validate::is_read_only(&txn), "case {i}");
        let from_view = store.view().txn_read_only(&txn).unwrap();
        let before = store.revision();
        let applied = store.apply(&Command::Txn(txn)).unwrap();
        assert_eq!(
            store.revision(),
            before,
            "case {i}: a read-only txn must not bump the revision"
        );
        assert_eq!(
            CommandResponse::Txn(from_view),
            applied.response,
            "case {i}"
        );
    }
}

/// etcd refuses a put naming a lease that does not exist, in a txn only on the path taken,
/// and a refused txn changes nothing.
#[test]
fn unknown_lease_is_refused() {
    let mut s = Store::with_test_leases();
    s.apply(&put("k", "v")).unwrap();
    let unknown = PbPutRequest {
        lease: 999,
        ..put_req("a", "1")
    };
    assert_eq!(
        s.apply(&Command::Put(unknown.clone())).unwrap_err(),
        KvError::LeaseNotFound
    );
    let on_path = txn_req(
        vec![],
        vec![
            op_put("b", "1"),
            op(PbTxnOpRequest::RequestPut(unknown.clone())),
        ],
        vec![],
    );
    assert_eq!(
        s.apply(&Command::Txn(on_path)).unwrap_err(),
        KvError::LeaseNotFound
    );
    assert_eq!(s.revision(), 2, "a refused txn must not write");
    let off_path = txn_req(
        vec![cmp_version("k", EQUAL, 1)],
        vec![op_put("b", "1")],
        vec![op(PbTxnOpRequest::RequestPut(unknown))],
    );
    assert!(
        s.apply(&Command::Txn(off_path)).is_ok(),
        "only the branch taken is checked"
    );
    assert_eq!(
        KvError::LeaseNotFound.message(),
        "etcdserver: requested lease not found"
    );
    assert_eq!(KvError::LeaseNotFound.code(), crate::StatusCode::NotFound);
}

/// What a watcher catches up on from history equals what apply reported when it happened.
#[test]
fn changes_replay_the_events_apply_reported() {
    let mut s = Store::with_test_leases();
    let mut seen: Vec<(i64, Event)> = Vec::new();
    let commands = vec![
        put("a", "1"),
        put("b", "1"),
        put("a", "2"),
        del("a", ""),
        Command::Txn(txn_req(
            vec![],
            vec![op_put("c", "1"), op_put("a", "3"), op_del("b", "")],
            vec![],
        )),
        put("ab", "1"),
        del("a", "b"),
        put("b", "2"),
    ];
    for command in commands {
        let applied = s.apply(&command).unwrap();
        seen.extend(applied.events.into_iter().map(|e| (e.kv().mod_revision, e)));
    }
    let view = s.view();
    let ranges: [(&str, &str); 5] = [("a", ""), ("a", "b"), ("a", "\0"), ("b", "d"), ("zz", "")];
    for (key, end) in ranges {
        for after in 0..view.revision() {
            for up_to in after..=view.revision() + 1 {
                let got = view
                    .changes(key.as_bytes(), end.as_bytes(), after, up_to, usize::MAX)
                    .unwrap();
                let want: Vec<&Event> = seen
                    .iter()
                    .filter(|(rev, e)| {
                        *rev > after && *rev <= up_to && in_range(&e.kv().key, key, end)
                    })
                    .map(|(_, e)| e)
                    .collect();
                let got_view: Vec<(&[u8], i64, EventKind, Option<&[u8]>)> = got
                    .iter()
                    .map(|e| {
                        (
                            &e.kv().key[..],
                            e.kv().mod_revision,
                            e.kind,
                            e.prev_kv().as_ref().map(|p| &p.value[..]),
                        )
                    })
                    .collect();
                let want_view: Vec<(&[u8], i64, EventKind, Option<&[u8]>)> = want
                    .iter()
                    .map(|e| {
                        (
                            &e.kv().key[..],
                            e.kv().mod_revision,
                            e.kind,
                            e.prev_kv().as_ref().map(|p| &p.value[..]),
                        )
                    })
                    .collect();
                assert_eq!(
                    got_view, want_view,
                    "range {key:?}..{end:?} after {after} up to {up_to}"
                );
            }
        }
    }
    let limited = view.changes(b"a", b"\0", 0, i64::MAX, 2).unwrap();
    assert_eq!(limited.len(), 2, "events_max bounds the answer");
    s.apply(&compact_cmd(5)).unwrap();
    assert_eq!(
        s.view().changes(b"a", b"", 3, 10, 10).unwrap_err(),
        KvError::Compacted
    );
    assert!(
        s.view().changes(b"a", b"", 4, 10, 10).is_ok(),
        "history from the compact revision on is kept"
    );
}

fn in_range(key: &[u8], start: &str, end: &str) -> bool {
    match end {
        "" => key == start.as_bytes(),
        "\0" => key >= start.as_bytes(),
        end => key >= start.as_bytes() && key < end.as_bytes(),
    }
}
