//! etcd's Range (applierV3backend.Range over mvcc's rangeKeys), step by step.

use std::cmp::Ordering;
use std::sync::Arc;

use super::gosort;
use super::header;
use super::state::{KeyRange, Record, State};
use super::KeyValue;
use crate::pb::{PbKeyValue, PbRangeRequest, PbRangeResponse};
use crate::KvError;

/// A Range's answer before it becomes a message: the selected records (shared with the
/// snapshot, not copied), filtered, sorted and limited exactly as etcd does, plus what the
/// response says about them. [`RangeAnswer::to_pb`] builds etcd's `RangeResponse` from it;
/// `range_encode.rs` writes that message's protobuf encoding straight from the records.
#[derive(Debug)]
pub struct RangeAnswer {
    /// The kvs to return, in response order; empty for count_only.
    pub(super) records: Vec<Arc<Record>>,
    /// The header's revision: the snapshot's current revision, not the requested one.
    pub(super) revision: i64,
    /// Every live key in the range at the read revision (before filters and limit).
    pub(super) count: i64,
    /// True if the limit cut the answer short.
    pub(super) more: bool,
    /// The values are left out of the response.
    pub(super) keys_only: bool,
}

/// `RangeRequest.SortOrder` values.
const SORT_NONE: i32 = 0;
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;

/// `RangeRequest.SortTarget` values.
const TARGET_KEY: i32 = 0;
const TARGET_VERSION: i32 = 1;
const TARGET_CREATE: i32 = 2;
const TARGET_MOD: i32 = 3;
const TARGET_VALUE: i32 = 4;

/// Runs a Range against `state`. The header carries the state's current revision, not the
/// requested one, as etcd's does.
pub(super) fn range(state: &State, r: &PbRangeRequest) -> Result<PbRangeResponse, KvError> {
    Ok(answer(state, r)?.to_pb())
}

/// Selects a Range's answer from `state`: read revision, key range, count, min/max
/// filters, sort and limit, without copying any key or value.
pub(super) fn answer(state: &State, r: &PbRangeRequest) -> Result<RangeAnswer, KvError> {
    let rev = state.read_revision(r.revision)?;
    let range = KeyRange::new(&r.key, &r.range_end);
    let (mut kvs, count) = fetch(state, &range, rev, fetch_limit(r), r.count_only);
    prune(&mut kvs, r);
    sort(&mut kvs, r);
    let mut more = false;
    if r.limit > 0 && kvs.len() as i64 > r.limit {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    Ok(RangeAnswer {
        records: kvs,
        revision: state.revision,
        count,
        more,
        keys_only: r.keys_only,
    })
}

impl RangeAnswer {
    /// etcd's `RangeResponse` (copies the keys and values); the header carries only the
    /// revision, for the network layer to fill.
    pub fn to_pb(&self) -> PbRangeResponse {
        PbRangeResponse {
            header: header(self.revision),
            kvs: self
                .records
                .iter()
                .map(|rec| to_pb(&rec.kv, self.keys_only))
                .collect(),
            more: self.more,
            count: self.count,
        }
    }

    /// The header's revision (the snapshot's current revision).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Number of kvs in the answer.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if the answer carries no kvs.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The response's count: every live key in the range, before filters and limit.
    pub fn count(&self) -> i64 {
        self.count
    }

    /// The response's more flag.
    pub fn more(&self) -> bool {
        self.more
    }
}

/// How many keys to read before filtering and sorting; 0 = all. etcd reads one extra so
/// it can tell whether there are more, and reads everything if it will sort or filter.
fn fetch_limit(r: &PbRangeRequest) -> usize {
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    if r.sort_order != SORT_NONE || filtered || r.limit <= 0 {
        return 0;
    }
    // Go wraps MaxInt64+1 to a negative limit, which also means "all".
    r.limit
        .checked_add(1)
        .map_or(0, |l| usize::try_from(l).unwrap_or(0))
}

/// Reads up to `limit` live keys (0 = all) and counts every live key in the range.
fn fetch(
    state: &State,
    range: &KeyRange,
    rev: i64,
    limit: usize,
    count_only: bool,
) -> (Vec<Arc<Record>>, i64) {
    let mut kvs = Vec::new();
    let mut count = 0i64;
    state.visit(range, rev, |rec| {
        count += 1;
        if !count_only && (limit == 0 || kvs.len() < limit) {
            kvs.push(rec.clone());
        }
        true
    });
    (kvs, count)
}

/// The min/max mod/create revision filters; 0 disables a filter.
fn prune(kvs: &mut Vec<Arc<Record>>, r: &PbRangeRequest) {
    let keep = |kv: &KeyValue| {
        !(r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision
            || r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision
            || r.max_create_revision != 0 && kv.create_revision > r.max_create_revision
            || r.min_create_revision != 0 && kv.create_revision < r.min_create_revision)
    };
    kvs.retain(|rec| keep(&rec.kv));
}

/// etcd sorts with Go's (unstable) sort.Sort; we use a port of it so ties come out in the
/// same order. A non-KEY target with order NONE means ASCEND.
fn sort(kvs: &mut [Arc<Record>], r: &PbRangeRequest) {
    let mut order = r.sort_order;
    if r.sort_target != TARGET_KEY && order == SORT_NONE {
        order = SORT_ASCEND;
    }
    let cmp: fn(&KeyValue, &KeyValue) -> Ordering = match r.sort_target {
        TARGET_KEY => |a, b| a.key.cmp(&b.key),
        TARGET_VERSION => |a, b| a.version.cmp(&b.version),
        TARGET_CREATE => |a, b| a.create_revision.cmp(&b.create_revision),
        TARGET_MOD => |a, b| a.mod_revision.cmp(&b.mod_revision),
        TARGET_VALUE => |a, b| a.value.cmp(&b.value),
        // etcd has no sorter for an unknown target; leave key order.
        _ => return,
    };
    match order {
        SORT_ASCEND => gosort::sort(kvs, |a, b| cmp(&a.kv, &b.kv) == Ordering::Less),
        // sort.Reverse: Less(i, j) = Less(j, i).
        SORT_DESCEND => gosort::sort(kvs, |a, b| cmp(&b.kv, &a.kv) == Ordering::Less),
        _ => {}
    }
}

fn to_pb(kv: &KeyValue, keys_only: bool) -> PbKeyValue {
    PbKeyValue {
        key: kv.key.to_vec(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: if keys_only {
            Vec::new()
        } else {
            kv.value.to_vec()
        },
        lease: kv.lease,
    }
}
