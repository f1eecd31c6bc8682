//! What travels through the raft log: one client write request, tagged with an id.
//!
//! Encoded with prost (protobuf wire format), like etcd's `InternalRaftRequest`, so a WAL dump
//! can decode any entry without knowing which server version wrote it.

use crate::pb::{
    PbAlarmRequest, PbCompactionRequest, PbDeleteRequest, PbLeaseGrantRequest,
    PbLeaseRevokeRequest, PbPutRequest, PbTxnRequest,
};

/// A write request as it is proposed to raft and recorded in the WAL.
/// Exactly one of the request fields is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InternalRequest {
    /// Proposer-chosen id; lets the proposer match the applied result to its waiting client.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, optional, tag = "2")]
    pub put: Option<PbPutRequest>,
    #[prost(message, optional, tag = "3")]
    pub delete_range: Option<PbDeleteRequest>,
    #[prost(message, optional, tag = "4")]
    pub txn: Option<PbTxnRequest>,
    #[prost(message, optional, tag = "5")]
    pub compaction: Option<PbCompactionRequest>,
    #[prost(message, optional, tag = "6")]
    pub lease_grant: Option<PbLeaseGrantRequest>,
    #[prost(message, optional, tag = "7")]
    pub lease_revoke: Option<PbLeaseRevokeRequest>,
    #[prost(message, optional, tag = "8")]
    pub lease_checkpoint: Option<LeaseCheckpointRequest>,
    #[prost(message, optional, tag = "9")]
    pub alarm: Option<PbAlarmRequest>,
}

/// Remaining TTLs the leader records in the log so that a restart (or a new leader) does not
/// hand leases a fresh TTL. Same wire format as etcd's `LeaseCheckpointRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseCheckpointRequest {
    #[prost(message, repeated, tag = "1")]
    pub checkpoints: Vec<LeaseCheckpoint>,
}

/// One lease's remaining TTL at checkpoint time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseCheckpoint {
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Seconds left; 0 clears a previous checkpoint (the lease was renewed).
    #[prost(int64, tag = "2")]
    pub remaining_ttl: i64,
}

/// The one request an [`InternalRequest`] carries, by value.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Put(PbPutRequest),
    DeleteRange(PbDeleteRequest),
    Txn(PbTxnRequest),
    Compact(PbCompactionRequest),
    /// Grant a lease. The proposer has already chosen a non-zero ID and applied the
    /// minimum TTL, so applying it is deterministic.
    LeaseGrant(PbLeaseGrantRequest),
    /// Revoke a lease, deleting its keys.
    LeaseRevoke(PbLeaseRevokeRequest),
    /// Record remaining TTLs (no revision change).
    LeaseCheckpoint(LeaseCheckpointRequest),
    /// List, raise or clear an alarm (etcd's Maintenance.Alarm goes through the log, GET
    /// included). No revision change.
    Alarm(PbAlarmRequest),
}

impl InternalRequest {
    /// Wraps a command for proposal.
    pub fn new(id: u64, command: Command) -> InternalRequest {
        let mut request = InternalRequest {
            id,
            ..Default::default()
        };
        match command {
            Command::Put(r) => request.put = Some(r),
            Command::DeleteRange(r) => request.delete_range = Some(r),
            Command::Txn(r) => request.txn = Some(r),
            Command::Compact(r) => request.compaction = Some(r),
            Command::LeaseGrant(r) => request.lease_grant = Some(r),
            Command::LeaseRevoke(r) => request.lease_revoke = Some(r),
            Command::LeaseCheckpoint(r) => request.lease_checkpoint = Some(r),
            Command::Alarm(r) => request.alarm = Some(r),
        }
        request
    }

    /// The carried command; `None` for an empty (malformed) request.
    pub fn into_command(self) -> Option<Command> {
        if let Some(r) = self.put {
            return Some(Command::Put(r));
        }
        if let Some(r) = self.delete_range {
            return Some(Command::DeleteRange(r));
        }
        if let Some(r) = self.txn {
            return Some(Command::Txn(r));
        }
        if let Some(r) = self.compaction {
            return Some(Command::Compact(r));
        }
        if let Some(r) = self.lease_grant {
            return Some(Command::LeaseGrant(r));
        }
        if let Some(r) = self.lease_revoke {
            return Some(Command::LeaseRevoke(r));
        }
        if let Some(r) = self.lease_checkpoint {
            return Some(Command::LeaseCheckpoint(r));
        }
        self.alarm.map(Command::Alarm)
    }
}
