//! Txn compares (etcd's applyCompare / compareKV) and the branch path they choose.

use std::cmp::Ordering;

use super::state::{KeyRange, State};
use super::KeyValue;
use crate::pb::{PbCompare, PbTargetUnion, PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp};

/// `Compare.CompareResult` values.
const RESULT_EQUAL: i32 = 0;
const RESULT_GREATER: i32 = 1;
const RESULT_LESS: i32 = 2;
const RESULT_NOT_EQUAL: i32 = 3;

/// `Compare.CompareTarget` values.
const TARGET_VERSION: i32 = 0;
const TARGET_CREATE: i32 = 1;
const TARGET_MOD: i32 = 2;
const TARGET_VALUE: i32 = 3;
const TARGET_LEASE: i32 = 4;

/// Which branch a txn takes, and the same for each nested txn in that branch (in op order).
/// etcd computes all of it (compareToPath) before executing anything, so nested compares see
/// the state before the txn, not the writes of earlier ops.
#[derive(Debug)]
pub(super) struct Path {
    pub succeeded: bool,
    pub nested: Vec<Path>,
}

impl Path {
    pub fn evaluate(state: &State, r: &PbTxnRequest) -> Path {
        let succeeded = r.compare.iter().all(|c| holds(state, c));
        let nested = branch(r, succeeded)
            .iter()
            .filter_map(|op| match &op.request {
                Some(PbTxnOpRequest::RequestTxn(t)) => Some(Path::evaluate(state, t)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }
}

/// The ops a txn runs for a compare outcome.
pub(super) fn branch(r: &PbTxnRequest, succeeded: bool) -> &[PbTxnRequestOp] {
    if succeeded {
        &r.success
    } else {
        &r.failure
    }
}

/// True if the compare holds for every key in its range at the state's current revision.
/// No key: a VALUE compare fails; any other compares a zero KeyValue (etcd's rule).
fn holds(state: &State, c: &PbCompare) -> bool {
    let range = KeyRange::new(&c.key, &c.range_end);
    let mut any = false;
    let mut all = true;
    state.visit(&range, state.revision, |rec| {
        any = true;
        all = compare_kv(c, &rec.kv);
        all
    });
    if !any {
        return c.target != TARGET_VALUE && compare_kv(c, &KeyValue::default());
    }
    all
}

/// etcd's compareKV: a target_union of another kind counts as 0 / empty bytes.
fn compare_kv(c: &PbCompare, kv: &KeyValue) -> bool {
    let int_target = |pick: fn(&PbTargetUnion) -> Option<i64>| {
        c.target_union.as_ref().and_then(pick).unwrap_or(0)
    };
    let ordering = match c.target {
        TARGET_VALUE => {
            let given: &[u8] = match &c.target_union {
                Some(PbTargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_ref().cmp(given)
        }
        TARGET_CREATE => kv.create_revision.cmp(&int_target(|u| match u {
            PbTargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        TARGET_MOD => kv.mod_revision.cmp(&int_target(|u| match u {
            PbTargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        TARGET_VERSION => kv.version.cmp(&int_target(|u| match u {
            PbTargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        TARGET_LEASE => kv.lease.cmp(&int_target(|u| match u {
            PbTargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        // etcd leaves the result at 0 for an unknown target.
        _ => Ordering::Equal,
    };
    match c.result {
        RESULT_EQUAL => ordering == Ordering::Equal,
        RESULT_NOT_EQUAL => ordering != Ordering::Equal,
        RESULT_GREATER => ordering == Ordering::Greater,
        RESULT_LESS => ordering == Ordering::Less,
        // etcd returns true for an unknown result.
        _ => true,
    }
}
