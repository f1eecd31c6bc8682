//! What travels through the raft log: one client write request, tagged with an id.
//!
//! Encoded with prost (protobuf wire format), like etcd's `InternalRaftRequest`, so a WAL dump
//! can decode any entry without knowing which server version wrote it.

use crate::pb::{
    PbAlarmRequest, PbAuthDisableRequest, PbAuthEnableRequest, PbAuthRoleAddRequest,
    PbAuthRoleDeleteRequest, PbAuthRoleGrantPermissionRequest, PbAuthRoleRevokePermissionRequest,
    PbAuthUserAddRequest, PbAuthUserChangePasswordRequest, PbAuthUserDeleteRequest,
    PbAuthUserGrantRoleRequest, PbAuthUserRevokeRoleRequest, PbCompactionRequest, PbDeleteRequest,
    PbLeaseGrantRequest, PbLeaseRevokeRequest, PbPutRequest, PbTxnRequest,
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
    /// The member that proposed this request (0: the leader itself, or an older entry).
    /// The proposer answers its client when it applies the entry; the id matches it.
    #[prost(uint64, tag = "10")]
    pub origin: u64,
    #[prost(message, optional, tag = "11")]
    pub member_attributes: Option<MemberAttributesRequest>,
    #[prost(message, optional, tag = "12")]
    pub member_update: Option<MemberUpdateRequest>,
    #[prost(message, optional, tag = "13")]
    pub member_conf: Option<MemberConfRequest>,
    // Tags 10-19 are the cluster's; auth uses 20 and up.
    #[prost(message, optional, tag = "20")]
    pub auth_enable: Option<PbAuthEnableRequest>,
    #[prost(message, optional, tag = "21")]
    pub auth_disable: Option<PbAuthDisableRequest>,
    /// Carries the bcrypt hash in `hashed_password`; `password` is always empty in the log.
    #[prost(message, optional, tag = "22")]
    pub auth_user_add: Option<PbAuthUserAddRequest>,
    #[prost(message, optional, tag = "23")]
    pub auth_user_delete: Option<PbAuthUserDeleteRequest>,
    /// Carries the bcrypt hash in `hashed_password`; `password` is always empty in the log.
    #[prost(message, optional, tag = "24")]
    pub auth_user_change_password: Option<PbAuthUserChangePasswordRequest>,
    #[prost(message, optional, tag = "25")]
    pub auth_user_grant_role: Option<PbAuthUserGrantRoleRequest>,
    #[prost(message, optional, tag = "26")]
    pub auth_user_revoke_role: Option<PbAuthUserRevokeRoleRequest>,
    #[prost(message, optional, tag = "27")]
    pub auth_role_add: Option<PbAuthRoleAddRequest>,
    #[prost(message, optional, tag = "28")]
    pub auth_role_delete: Option<PbAuthRoleDeleteRequest>,
    #[prost(message, optional, tag = "29")]
    pub auth_role_grant_permission: Option<PbAuthRoleGrantPermissionRequest>,
    #[prost(message, optional, tag = "30")]
    pub auth_role_revoke_permission: Option<PbAuthRoleRevokePermissionRequest>,
    /// Who asked (etcd's `RequestHeader` username and auth revision): set for client
    /// requests, which the applier checks against the auth state it applies to
    /// (`Store::apply_as`); absent for the server's own requests (lease expiry, checkpoints,
    /// auto-compaction), which are trusted as etcd's root-context requests are.
    #[prost(message, optional, tag = "31")]
    pub auth_header: Option<AuthHeader>,
}

/// The caller of a client request, recorded in the log with it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AuthHeader {
    /// Empty when the request named no user.
    #[prost(string, tag = "1")]
    pub username: String,
    /// The auth revision the caller's token stands for; 0 when it named no user.
    #[prost(uint64, tag = "2")]
    pub revision: u64,
}

/// A change to users, roles, permissions or the auth switch (etcd's auth requests that go
/// through raft). Passwords travel only as bcrypt hashes.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthCommand {
    Enable,
    Disable,
    UserAdd(PbAuthUserAddRequest),
    UserDelete(PbAuthUserDeleteRequest),
    UserChangePassword(PbAuthUserChangePasswordRequest),
    UserGrantRole(PbAuthUserGrantRoleRequest),
    UserRevokeRole(PbAuthUserRevokeRoleRequest),
    RoleAdd(PbAuthRoleAddRequest),
    RoleDelete(PbAuthRoleDeleteRequest),
    RoleGrantPermission(PbAuthRoleGrantPermissionRequest),
    RoleRevokePermission(PbAuthRoleRevokePermissionRequest),
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

/// A member publishes its name and client URLs after it starts (etcd's attributes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberAttributesRequest {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, repeated, tag = "3")]
    pub client_urls: Vec<String>,
}

/// Cluster.MemberUpdate: a member's new peer URLs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberUpdateRequest {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, repeated, tag = "2")]
    pub peer_urls: Vec<String>,
}

/// The membership side of a raft configuration change; travels as the change's context.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberConfRequest {
    /// 0 add voter, 1 add learner, 2 remove, 3 promote.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(uint64, tag = "2")]
    pub id: u64,
    #[prost(string, repeated, tag = "3")]
    pub peer_urls: Vec<String>,
}

impl MemberConfRequest {
    /// The change, or `None` for a kind this build does not know.
    pub fn kind(&self) -> Option<crate::membership::ConfChangeKind> {
        use crate::membership::ConfChangeKind as K;
        Some(match self.kind {
            0 => K::AddVoter,
            1 => K::AddLearner,
            2 => K::Remove,
            3 => K::Promote,
            _ => return None,
        })
    }

    /// The request for `kind` on `member`.
    pub fn new(
        kind: crate::membership::ConfChangeKind,
        member: &crate::membership::Member,
    ) -> Self {
        use crate::membership::ConfChangeKind as K;
        MemberConfRequest {
            kind: match kind {
                K::AddVoter => 0,
                K::AddLearner => 1,
                K::Remove => 2,
                K::Promote => 3,
            },
            id: member.id,
            peer_urls: member.peer_urls.clone(),
        }
    }
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
    /// A member's published attributes (no revision change).
    MemberAttributes(MemberAttributesRequest),
    /// New peer URLs for a member (no revision change).
    MemberUpdate(MemberUpdateRequest),
    /// The membership half of a committed raft configuration change (no revision change).
    MemberConf(MemberConfRequest),
    /// Users, roles, permissions, auth on/off. No revision change; bumps the auth
    /// revision when users, roles or permissions change.
    Auth(AuthCommand),
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
            Command::MemberAttributes(r) => request.member_attributes = Some(r),
            Command::MemberUpdate(r) => request.member_update = Some(r),
            Command::MemberConf(r) => request.member_conf = Some(r),
            Command::Auth(a) => match a {
                AuthCommand::Enable => request.auth_enable = Some(PbAuthEnableRequest {}),
                AuthCommand::Disable => request.auth_disable = Some(PbAuthDisableRequest {}),
                AuthCommand::UserAdd(r) => request.auth_user_add = Some(r),
                AuthCommand::UserDelete(r) => request.auth_user_delete = Some(r),
                AuthCommand::UserChangePassword(r) => request.auth_user_change_password = Some(r),
                AuthCommand::UserGrantRole(r) => request.auth_user_grant_role = Some(r),
                AuthCommand::UserRevokeRole(r) => request.auth_user_revoke_role = Some(r),
                AuthCommand::RoleAdd(r) => request.auth_role_add = Some(r),
                AuthCommand::RoleDelete(r) => request.auth_role_delete = Some(r),
                AuthCommand::RoleGrantPermission(r) => request.auth_role_grant_permission = Some(r),
                AuthCommand::RoleRevokePermission(r) => {
                    request.auth_role_revoke_permission = Some(r)
                }
            },
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
        if let Some(r) = self.member_attributes {
            return Some(Command::MemberAttributes(r));
        }
        if let Some(r) = self.member_update {
            return Some(Command::MemberUpdate(r));
        }
        if let Some(r) = self.member_conf {
            return Some(Command::MemberConf(r));
        }
        if let Some(r) = self.alarm {
            return Some(Command::Alarm(r));
        }
        self.into_auth_command().map(Command::Auth)
    }

    fn into_auth_command(self) -> Option<AuthCommand> {
        if self.auth_enable.is_some() {
            return Some(AuthCommand::Enable);
        }
        if self.auth_disable.is_some() {
            return Some(AuthCommand::Disable);
        }
        if let Some(r) = self.auth_user_add {
            return Some(AuthCommand::UserAdd(r));
        }
        if let Some(r) = self.auth_user_delete {
            return Some(AuthCommand::UserDelete(r));
        }
        if let Some(r) = self.auth_user_change_password {
            return Some(AuthCommand::UserChangePassword(r));
        }
        if let Some(r) = self.auth_user_grant_role {
            return Some(AuthCommand::UserGrantRole(r));
        }
        if let Some(r) = self.auth_user_revoke_role {
            return Some(AuthCommand::UserRevokeRole(r));
        }
        if let Some(r) = self.auth_role_add {
            return Some(AuthCommand::RoleAdd(r));
        }
        if let Some(r) = self.auth_role_delete {
            return Some(AuthCommand::RoleDelete(r));
        }
        if let Some(r) = self.auth_role_grant_permission {
            return Some(AuthCommand::RoleGrantPermission(r));
        }
        self.auth_role_revoke_permission
            .map(AuthCommand::RoleRevokePermission)
    }
}
