//! Request checks etcd makes in its gRPC layer (v3rpc/key.go), before proposing a request.
//! A request that fails them is rejected without touching the log.

use std::collections::{BTreeSet, HashSet};

use crate::pb::{
    PbDeleteRequest, PbPutRequest, PbRangeRequest, PbTxnOpRequest, PbTxnRequest, PbTxnRequestOp,
};
use crate::KvError;

/// etcd's checkRangeRequest.
pub fn check_range(r: &PbRangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// etcd's checkPutRequest.
pub fn check_put(r: &PbPutRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// etcd's checkDeleteRequest.
pub fn check_delete(r: &PbDeleteRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// etcd's Txn checks: op counts and every op (recursively), then the duplicate-key rules
/// of each branch. Structural errors win over duplicate keys, as in etcd.
pub fn check_txn(r: &PbTxnRequest, max_txn_ops: usize) -> Result<(), KvError> {
    check_txn_request(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// etcd's checkTxnRequest. A nested txn gets the budget left after this level's count
/// (`max - opc`), exactly as etcd passes it down.
fn check_txn_request(r: &PbTxnRequest, max_txn_ops: usize) -> Result<(), KvError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_txn_ops {
        return Err(KvError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_request_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

/// etcd's checkRequestOp: an op with no request is "key not found".
fn check_request_op(op: &PbTxnRequestOp, max_txn_ops: usize) -> Result<(), KvError> {
    match &op.request {
        Some(PbTxnOpRequest::RequestRange(r)) => check_range(r),
        Some(PbTxnOpRequest::RequestPut(r)) => check_put(r),
        Some(PbTxnOpRequest::RequestDeleteRange(r)) => check_delete(r),
        Some(PbTxnOpRequest::RequestTxn(r)) => check_txn_request(r, max_txn_ops),
        None => Err(KvError::KeyNotFound),
    }
}

/// The keys deleted by a branch. etcd keeps them in an interval tree of
/// `StringAffineInterval`s, where only the empty string is "infinity": a range_end of
/// "\0" is therefore the literal string "\0", and `[key, "\0")` contains no key at all.
/// (Real etcd 3.4 accepts `del --from-key a` together with `put b` in one txn.)
#[derive(Default)]
struct Deletes<'a> {
    /// Single-key deletes.
    points: BTreeSet<&'a [u8]>,
    /// `[key, range_end)` deletes.
    ranges: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Deletes<'a> {
    fn add(&mut self, d: &'a PbDeleteRequest) {
        if d.range_end.is_empty() {
            self.points.insert(&d.key);
        } else {
            self.ranges.push((&d.key, &d.range_end));
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.points.contains(key) || self.ranges.iter().any(|&(b, e)| b <= key && key < e)
    }

    fn extend(&mut self, other: Deletes<'a>) {
        self.points.extend(other.points);
        self.ranges.extend(other.ranges);
    }
}

type Puts<'a> = HashSet<&'a [u8]>;

/// etcd's checkIntervals: no key may be put twice, or put and deleted, on one path of a
/// branch. The two branches of a nested txn exclude each other, so they may put the same key.
fn check_intervals(ops: &[PbTxnRequestOp]) -> Result<(Puts<'_>, Deletes<'_>), KvError> {
    let mut dels = Deletes::default();
    for op in ops {
        if let Some(PbTxnOpRequest::RequestDeleteRange(d)) = &op.request {
            dels.add(d);
        }
    }
    let mut puts = Puts::new();
    for op in ops {
        if let Some(PbTxnOpRequest::RequestTxn(t)) = &op.request {
            merge_nested(t, &mut puts, &mut dels)?;
        }
    }
    for op in ops {
        if let Some(PbTxnOpRequest::RequestPut(p)) = &op.request {
            add_put(&mut puts, &dels, &p.key)?;
        }
    }
    Ok((puts, dels))
}

/// Folds a nested txn's puts and deletes into this level's, checking for overlaps.
fn merge_nested<'a>(
    t: &'a PbTxnRequest,
    puts: &mut Puts<'a>,
    dels: &mut Deletes<'a>,
) -> Result<(), KvError> {
    let (puts_then, dels_then) = check_intervals(&t.success)?;
    let (puts_else, dels_else) = check_intervals(&t.failure)?;
    for &k in &puts_then {
        add_put(puts, dels, k)?;
    }
    for &k in &puts_else {
        // A key put by both branches is fine: only one of them runs.
        if puts.contains(k) && !puts_then.contains(k) || dels.contains(k) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(k);
    }
    dels.extend(dels_then);
    dels.extend(dels_else);
    Ok(())
}

fn add_put<'a>(puts: &mut Puts<'a>, dels: &Deletes<'a>, key: &'a [u8]) -> Result<(), KvError> {
    if puts.contains(key) || dels.contains(key) {
        return Err(KvError::DuplicateKey);
    }
    puts.insert(key);
    Ok(())
}

/// etcd's isTxnReadonly: every op of both branches, nested txns included, is a range.
/// Such a txn changes nothing, so it is served as a read instead of through the log.
pub fn is_read_only(r: &PbTxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| match &op.request {
            Some(PbTxnOpRequest::RequestRange(_)) => true,
            Some(PbTxnOpRequest::RequestTxn(nested)) => is_read_only(nested),
            _ => false,
        })
}

/// etcd's isTxnSerializable: every range of both branches asks for a serializable read.
pub fn is_serializable(r: &PbTxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .all(|op| match &op.request {
            Some(PbTxnOpRequest::RequestRange(range)) => range.serializable,
            Some(PbTxnOpRequest::RequestTxn(nested)) => is_serializable(nested),
            _ => true,
        })
}

#[cfg(test)]
mod read_only_tests {
    use super::*;

    fn range(serializable: bool) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestRange(PbRangeRequest {
                key: b"k".to_vec(),
                serializable,
                ..Default::default()
            })),
        }
    }

    fn put() -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn nested(success: Vec<PbTxnRequestOp>) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestTxn(PbTxnRequest {
                success,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn read_only_and_serializable_follow_every_branch() {
        let cases: Vec<(PbTxnRequest, bool, bool)> = vec![
            (PbTxnRequest::default(), true, true),
            (
                PbTxnRequest {
                    success: vec![range(true)],
                    failure: vec![range(true)],
                    ..Default::default()
                },
                true,
                true,
            ),
            (
                PbTxnRequest {
                    success: vec![range(true)],
                    failure: vec![range(false)],
                    ..Default::default()
                },
                true,
                false,
            ),
            (
                PbTxnRequest {
                    success: vec![range(true)],
                    failure: vec![put()],
                    ..Default::default()
                },
                false,
                true,
            ),
            (
                PbTxnRequest {
                    success: vec![nested(vec![put()])],
                    ..Default::default()
                },
                false,
                true,
            ),
            (
                PbTxnRequest {
                    success: vec![nested(vec![range(false)])],
                    ..Default::default()
                },
                true,
                false,
            ),
        ];
        for (i, (txn, read_only, serializable)) in cases.iter().enumerate() {
            assert_eq!(is_read_only(txn), *read_only, "case {i}");
            assert_eq!(is_serializable(txn), *serializable, "case {i}");
        }
    }
}
