//! Errors a client can observe from the key space. Texts are etcd's, byte for byte, because
//! clients (etcdctl, clientv3) match on them.

use std::fmt;

/// The gRPC status code etcd attaches to an error. Kept here as a plain enum so the engine
/// does not depend on a gRPC library; net/ maps it to `tonic::Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    InvalidArgument,
    OutOfRange,
    NotFound,
    ResourceExhausted,
    FailedPrecondition,
    Unavailable,
    Internal,
    DataLoss,
    /// etcd's auth errors (`codes.PermissionDenied`).
    PermissionDenied,
    /// An auth token that is unknown, expired or forged (`codes.Unauthenticated`).
    Unauthenticated,
    /// etcd 3.4's Maintenance admin checks return the auth package's error unwrapped,
    /// which gRPC sends as `codes.Unknown`.
    Unknown,
}

/// Errors from validating or applying a key-space request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// A request names an empty key.
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty txn op.
    KeyNotFound,
    /// `ignore_value` set together with a non-empty value.
    ValueProvided,
    /// `ignore_lease` set together with a non-zero lease.
    LeaseProvided,
    /// A txn branch or compare list longer than --max-txn-ops.
    TooManyOps,
    /// Two writes to the same key in one txn branch (etcd's interval rules).
    DuplicateKey,
    /// The request, encoded, is larger than --max-request-bytes.
    RequestTooLarge,
    /// A put, revoke or grant names a lease that does not exist.
    LeaseNotFound,
    /// A grant names a lease ID that is already granted.
    LeaseExists,
    /// A grant asks for a TTL above etcd's maximum (9,000,000,000 seconds).
    LeaseTtlTooLarge,
    /// A read or compaction at a revision below the compacted revision.
    Compacted,
    /// A read or compaction at a revision above the current revision.
    FutureRevision,
    /// The server cannot take the request now (shutting down, storage failed, queue closed).
    Unavailable(String),
    /// The NOSPACE alarm is active (or the request would take the store past its quota):
    /// puts, txns with puts and lease grants are refused until the alarm is disarmed.
    NoSpace,
    /// The CORRUPT alarm is active: writes are refused.
    Corrupt,
    /// A membership or leadership request refused (etcd's cluster errors: "member not
    /// found", "not enough started members", "not leader", ...), with etcd's code and text.
    Cluster(StatusCode, String),
    /// Auth: a request names no user (or an auth request an empty user name).
    UserEmpty,
    /// Auth: UserAdd of a name that exists.
    UserExists,
    /// Auth: the named user does not exist.
    UserNotFound,
    /// Auth: RoleAdd with an empty name.
    RoleEmpty,
    /// Auth: RoleAdd of a name that exists.
    RoleExists,
    /// Auth: the named role does not exist.
    RoleNotFound,
    /// AuthEnable without a `root` user.
    RootUserMissing,
    /// AuthEnable while `root` lacks the `root` role.
    RootRoleMissing,
    /// Authenticate with a wrong name or password.
    AuthFailed,
    /// The caller may not do this.
    PermissionDenied,
    /// UserRevokeRole of a role the user does not have.
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    PermissionNotGranted,
    /// RoleGrantPermission without a permission.
    PermissionNotGiven,
    /// Authenticate while auth is disabled.
    AuthNotEnabled,
    /// A token that is unknown, expired or does not verify.
    InvalidAuthToken,
    /// Deleting root, its role, or revoking root's root role while auth is enabled.
    InvalidAuthManagement,
    /// A token issued before the last change to users, roles or permissions.
    AuthOldRevision,
    /// An error etcd 3.4 passes on from its auth package unwrapped, so gRPC sends it with
    /// `codes.Unknown` and the package's own text: Maintenance admin checks (`auth:
    /// permission denied`, ...) and Authenticate of a no-password user.
    RawAuth(&'static str),
}

impl KvError {
    /// etcd's exact error text.
    pub fn message(&self) -> &str {
        match self {
            KvError::EmptyKey => "etcdserver: key is not provided",
            KvError::KeyNotFound => "etcdserver: key not found",
            KvError::ValueProvided => "etcdserver: value is provided",
            KvError::LeaseProvided => "etcdserver: lease is provided",
            KvError::TooManyOps => "etcdserver: too many operations in txn request",
            KvError::DuplicateKey => "etcdserver: duplicate key given in txn request",
            KvError::RequestTooLarge => "etcdserver: request is too large",
            KvError::LeaseNotFound => "etcdserver: requested lease not found",
            KvError::LeaseExists => "etcdserver: lease already exists",
            KvError::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            KvError::Compacted => "etcdserver: mvcc: required revision has been compacted",
            KvError::FutureRevision => "etcdserver: mvcc: required revision is a future revision",
            KvError::Unavailable(reason) => reason,
            KvError::NoSpace => "etcdserver: mvcc: database space exceeded",
            KvError::Corrupt => "etcdserver: corrupt cluster",
            KvError::Cluster(_, text) => text,
            KvError::UserEmpty => "etcdserver: user name is empty",
            KvError::UserExists => "etcdserver: user name already exists",
            KvError::UserNotFound => "etcdserver: user name not found",
            KvError::RoleEmpty => "etcdserver: role name is empty",
            KvError::RoleExists => "etcdserver: role name already exists",
            KvError::RoleNotFound => "etcdserver: role name not found",
            KvError::RootUserMissing => "etcdserver: root user does not exist",
            KvError::RootRoleMissing => "etcdserver: root user does not have root role",
            KvError::AuthFailed => "etcdserver: authentication failed, invalid user ID or password",
            KvError::PermissionDenied => "etcdserver: permission denied",
            KvError::RoleNotGranted => "etcdserver: role is not granted to the user",
            KvError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            KvError::PermissionNotGiven => "etcdserver: permission not given",
            KvError::AuthNotEnabled => "etcdserver: authentication is not enabled",
            KvError::InvalidAuthToken => "etcdserver: invalid auth token",
            KvError::InvalidAuthManagement => "etcdserver: invalid auth management",
            KvError::AuthOldRevision => "etcdserver: revision of auth store is old",
            KvError::RawAuth(text) => text,
        }
    }

    /// The gRPC code etcd sends with this error.
    pub fn code(&self) -> StatusCode {
        match self {
            KvError::EmptyKey
            | KvError::KeyNotFound
            | KvError::ValueProvided
            | KvError::LeaseProvided
            | KvError::TooManyOps
            | KvError::DuplicateKey
            | KvError::RequestTooLarge => StatusCode::InvalidArgument,
            KvError::Compacted | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
                StatusCode::OutOfRange
            }
            KvError::LeaseNotFound => StatusCode::NotFound,
            KvError::LeaseExists => StatusCode::FailedPrecondition,
            KvError::Unavailable(_) => StatusCode::Unavailable,
            KvError::NoSpace => StatusCode::ResourceExhausted,
            KvError::Corrupt => StatusCode::DataLoss,
            KvError::Cluster(code, _) => *code,
            KvError::UserEmpty
            | KvError::RoleEmpty
            | KvError::AuthFailed
            | KvError::PermissionNotGiven
            | KvError::InvalidAuthManagement
            | KvError::AuthOldRevision => StatusCode::InvalidArgument,
            KvError::UserExists
            | KvError::UserNotFound
            | KvError::RoleExists
            | KvError::RoleNotFound
            | KvError::RootUserMissing
            | KvError::RootRoleMissing
            | KvError::RoleNotGranted
            | KvError::PermissionNotGranted
            | KvError::AuthNotEnabled => StatusCode::FailedPrecondition,
            KvError::PermissionDenied => StatusCode::PermissionDenied,
            KvError::InvalidAuthToken => StatusCode::Unauthenticated,
            KvError::RawAuth(_) => StatusCode::Unknown,
        }
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for KvError {}

impl From<crate::membership::MembershipError> for KvError {
    fn from(err: crate::membership::MembershipError) -> KvError {
        use crate::membership::MembershipError as E;
        let code = match err {
            E::NotFound => StatusCode::NotFound,
            E::IdExists | E::PeerUrlExists | E::Removed | E::NotLearner => {
                StatusCode::FailedPrecondition
            }
        };
        KvError::Cluster(code, err.to_string())
    }
}
