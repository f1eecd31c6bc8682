//! Leases in the replicated state: grant, revoke (deleting the attached keys) and
//! checkpoint, as etcd's lessor applies them. Deadlines are not part of this state: only
//! the leader tracks time (the server's lessor); the log records grants, revokes and
//! checkpointed remaining TTLs, which is all a restart needs.

use bytes::Bytes;

use super::header;
use super::state::{LeaseRecord, State};
use super::txn;
use super::Event;
use crate::pb::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
};
use crate::request::LeaseCheckpointRequest;
use crate::KvError;

/// etcd's MaxLeaseTTL: grants above it fail with "too large lease TTL".
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

/// etcd's lessor.Grant. Checks in etcd's order: no ID, TTL too large, ID taken. Does not
/// change the revision; the header reports the current one.
pub(super) fn grant(
    state: &mut State,
    r: &PbLeaseGrantRequest,
) -> Result<PbLeaseGrantResponse, KvError> {
    if r.id == 0 {
        return Err(KvError::LeaseNotFound);
    }
    if r.ttl > MAX_LEASE_TTL_SECS {
        return Err(KvError::LeaseTtlTooLarge);
    }
    if state.leases.contains_key(&r.id) {
        return Err(KvError::LeaseExists);
    }
    state.leases.insert(r.id, LeaseRecord::new(r.ttl));
    Ok(PbLeaseGrantResponse {
        header: header(state.revision),
        id: r.id,
        ttl: r.ttl,
        error: String::new(),
    })
}

/// etcd's lessor.Revoke: deletes every attached key in one revision (sub revisions in key
/// order), then forgets the lease. The header reports the revision after the deletes.
pub(super) fn revoke(
    state: &mut State,
    r: &PbLeaseRevokeRequest,
) -> Result<(PbLeaseRevokeResponse, Vec<Event>), KvError> {
    let lease = state.leases.get(&r.id).ok_or(KvError::LeaseNotFound)?;
    // The key set is ordered, so the deletes come out in key order on every member.
    let keys: Vec<Bytes> = lease.keys.iter().cloned().collect();
    let events = txn::delete_keys(state, &keys);
    state.leases.remove(&r.id);
    Ok((
        PbLeaseRevokeResponse {
            header: header(state.revision),
        },
        events,
    ))
}

/// Records remaining TTLs; unknown IDs are skipped (the lease may have been revoked after
/// the checkpoint was proposed). Never changes the revision.
pub(super) fn checkpoint(state: &mut State, r: &LeaseCheckpointRequest) -> i64 {
    for cp in &r.checkpoints {
        if let Some(lease) = state.leases.get_mut(&cp.id) {
            lease.remaining_ttl_secs = cp.remaining_ttl.max(0);
        }
    }
    state.revision
}
