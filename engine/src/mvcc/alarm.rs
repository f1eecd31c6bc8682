//! etcd's alarms as part of the replicated state: 3.4's `AlarmStore` (what is raised, by
//! which member), the `Alarm` apply (GET, ACTIVATE, DEACTIVATE), and the appliers an active
//! alarm puts in front of the key space (`applierV3Capped` for NOSPACE, `applierV3Corrupt`
//! for CORRUPT).
//!
//! Alarm requests travel through the log like every write, so every member holds the same
//! set, and the set is persisted with the key space (the backend's `a` entries). Because an
//! active alarm is state, refusing a write is a deterministic part of applying it: a put
//! logged before the alarm applies, one logged after it is refused, on every replay.
//!
//! The quota *check* (the store file's size plus a request's estimated cost, against
//! `--quota-backend-bytes`) is not here: it depends on the local file and runs before a
//! request is proposed; the server raises NOSPACE through the log when it fails. The cost
//! estimates are etcd's and live here so both sides share them.

use super::state::State;
use crate::pb::{
    PbAlarmMember, PbAlarmRequest, PbAlarmResponse, PbPutRequest, PbTxnOpRequest, PbTxnRequest,
};
use crate::request::Command;
use crate::KvError;

/// `AlarmType` NONE: in a request, "every type".
pub const ALARM_NONE: i32 = 0;
/// `AlarmType` NOSPACE: the store went past its quota.
pub const ALARM_NOSPACE: i32 = 1;
/// `AlarmType` CORRUPT: a member's data was found inconsistent.
pub const ALARM_CORRUPT: i32 = 2;

/// `AlarmRequest.AlarmAction` GET.
pub const ACTION_GET: i32 = 0;
/// `AlarmRequest.AlarmAction` ACTIVATE.
pub const ACTION_ACTIVATE: i32 = 1;
/// `AlarmRequest.AlarmAction` DEACTIVATE.
pub const ACTION_DEACTIVATE: i32 = 2;

/// etcd's `kvOverhead`: the estimated cost of a key's metadata.
pub const KV_OVERHEAD_BYTES: u64 = 256;
/// etcd's `leaseOverhead`: the estimated cost of storing a lease.
pub const LEASE_OVERHEAD_BYTES: u64 = 64;

/// etcd's quota cost of a put: overhead + key + value.
pub fn put_cost(r: &PbPutRequest) -> u64 {
    KV_OVERHEAD_BYTES + r.key.len() as u64 + r.value.len() as u64
}

/// etcd 3.4's quota cost of a txn: the puts of the costlier branch. Only the branch's own
/// puts count (nested txns cost nothing, as in 3.4); a txn without puts costs 0 and passes
/// any quota check.
pub fn txn_cost(r: &PbTxnRequest) -> u64 {
    let branch = |ops: &[crate::pb::PbTxnRequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(PbTxnOpRequest::RequestPut(p)) => put_cost(p),
                _ => 0,
            })
            .sum()
    };
    branch(&r.success).max(branch(&r.failure))
}

/// etcd's quota cost of a lease grant.
pub fn lease_grant_cost() -> u64 {
    LEASE_OVERHEAD_BYTES
}

/// etcd's name of an alarm type (`None` for a number it has no name for).
pub fn alarm_name(alarm: i32) -> Option<&'static str> {
    match alarm {
        ALARM_NONE => Some("NONE"),
        ALARM_NOSPACE => Some("NOSPACE"),
        ALARM_CORRUPT => Some("CORRUPT"),
        _ => None,
    }
}

/// An alarm as etcd's `AlarmMember.String()` writes it (protobuf compact text, which
/// leaves zero fields out and ends every field with a space): what Maintenance.Status lists
/// in `errors`, e.g. `memberID:10276657743932975437 alarm:NOSPACE `.
pub fn describe(member_id: u64, alarm: i32) -> String {
    let mut out = String::new();
    if member_id != 0 {
        out.push_str(&format!("memberID:{member_id} "));
    }
    if alarm != ALARM_NONE {
        match alarm_name(alarm) {
            Some(name) => out.push_str(&format!("alarm:{name} ")),
            None => out.push_str(&format!("alarm:{alarm} ")),
        }
    }
    out
}

fn member(alarm: i32, member_id: u64) -> PbAlarmMember {
    PbAlarmMember { member_id, alarm }
}

/// etcd's `applierV3backend.Alarm`. GET lists the alarms of the requested type (every alarm
/// for NONE); ACTIVATE raises one and answers it (also when it was already raised);
/// DEACTIVATE clears one and answers it (nothing when it was not raised). An unknown action
/// answers nothing. The list is ordered by type, then member (etcd's is map order).
pub(super) fn apply(state: &mut State, r: &PbAlarmRequest) -> PbAlarmResponse {
    let mut resp = PbAlarmResponse::default();
    match r.action {
        ACTION_GET => {
            resp.alarms = state
                .alarms
                .iter()
                .filter(|(alarm, _)| r.alarm == ALARM_NONE || *alarm == r.alarm)
                .map(|(alarm, id)| member(*alarm, *id))
                .collect();
        }
        ACTION_ACTIVATE => {
            state.alarms.insert((r.alarm, r.member_id));
            resp.alarms.push(member(r.alarm, r.member_id));
        }
        ACTION_DEACTIVATE => {
            if state.alarms.remove(&(r.alarm, r.member_id)).is_some() {
                resp.alarms.push(member(r.alarm, r.member_id));
            }
        }
        _ => {}
    }
    resp
}

/// Whether any member raised an alarm of this type.
pub(super) fn is_raised(state: &State, alarm: i32) -> bool {
    state.alarms.iter().any(|(a, _)| *a == alarm)
}

/// The error an active alarm makes applying `command` fail with, if it does: CORRUPT
/// refuses every write but lease checkpoints and alarms (`applierV3Corrupt`); NOSPACE
/// refuses puts, txns that put and lease grants (`applierV3Capped`), and lets deletes,
/// compactions and revokes through so space can be reclaimed.
pub(super) fn refusal(state: &State, command: &Command) -> Option<KvError> {
    if state.alarms.is_empty() {
        return None;
    }
    if is_raised(state, ALARM_CORRUPT) {
        match command {
            Command::Put(_)
            | Command::DeleteRange(_)
            | Command::Txn(_)
            | Command::Compact(_)
            | Command::LeaseGrant(_)
            | Command::LeaseRevoke(_) => return Some(KvError::Corrupt),
            // Membership is raft's business, applied whatever the key space's state.
            Command::LeaseCheckpoint(_)
            | Command::Alarm(_)
            | Command::MemberAttributes(_)
            | Command::MemberUpdate(_)
            | Command::MemberConf(_)
            | Command::Auth(_) => {}
        }
    }
    if is_raised(state, ALARM_NOSPACE) {
        let refused = match command {
            Command::Put(_) | Command::LeaseGrant(_) => true,
            Command::Txn(t) => txn_cost(t) > 0,
            _ => false,
        };
        if refused {
            return Some(KvError::NoSpace);
        }
    }
    None
}
