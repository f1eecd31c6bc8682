//! The Auth service (etcdserverpb.Auth): the auth switch, Authenticate, users and roles.
//!
//! Served by hand like Lock and Election (`v3pb.rs`): etcd-client exports neither the
//! AuthStatus messages nor a way to name them, so the generated server trait cannot be
//! implemented. Every other message is etcd-client's own.
//!
//! - Changes (enable, disable, users, roles, permissions) go through the log as
//!   `Command::Auth`; passwords are hashed with bcrypt here first, so the log and the store
//!   hold hashes only.
//! - Reads (status, get, list) answer from the applied auth state, which every change
//!   updates before its writer hears back.
//! - Everything but Authenticate is root's once auth is enabled (etcd's
//!   `needAdminPermission`), except that a user may get itself and the roles it holds.

use std::sync::Arc;
use std::task::{Context, Poll};

use corekv_engine::mvcc::auth::AuthState;
use corekv_engine::mvcc::CommandResponse;
use corekv_engine::pb::*;
use corekv_engine::request::{AuthCommand, Command};
use corekv_engine::KvError;
use tonic::body::Body;
use tonic::Status;

use super::v3pb::{self, AuthStatusRequest, AuthStatusResponse, HttpFuture, Limits};
use super::{fill_header, to_status};
use crate::auth::Caller;
use crate::shard_api::ShardClient;

/// The Auth service, as tonic routes serve it.
#[derive(Clone)]
pub(crate) struct AuthServer {
    service: Arc<AuthService>,
    limits: Limits,
}

impl AuthServer {
    pub(crate) fn new(shard: ShardClient, limits: Limits) -> AuthServer {
        AuthServer {
            service: Arc::new(AuthService { shard }),
            limits,
        }
    }
}

impl tonic::server::NamedService for AuthServer {
    const NAME: &'static str = "etcdserverpb.Auth";
}

/// Routes one method path to `$method` of the service, decoding `$req`.
macro_rules! route {
    ($req:expr, $limits:expr, $service:expr, $caller:expr, $ty:ty, $method:ident) => {{
        let (service, caller) = ($service, $caller);
        v3pb::unary($req, $limits, move |r: $ty| async move {
            service.$method(r, caller).await
        })
    }};
}

impl tower::Service<http::Request<Body>> for AuthServer {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> HttpFuture {
        let s = self.service.clone();
        let caller = s.shard.cluster.auth.caller(req.headers(), req.extensions());
        let l = self.limits;
        let path = req.uri().path().to_string();
        match path.trim_start_matches("/etcdserverpb.Auth/") {
            "AuthEnable" => route!(req, l, s, caller, PbAuthEnableRequest, enable),
            "AuthDisable" => route!(req, l, s, caller, PbAuthDisableRequest, disable),
            "AuthStatus" => route!(req, l, s, caller, AuthStatusRequest, status),
            "Authenticate" => route!(req, l, s, caller, PbAuthenticateRequest, authenticate),
            "UserAdd" => route!(req, l, s, caller, PbAuthUserAddRequest, user_add),
            "UserGet" => route!(req, l, s, caller, PbAuthUserGetRequest, user_get),
            "UserList" => route!(req, l, s, caller, PbAuthUserListRequest, user_list),
            "UserDelete" => route!(req, l, s, caller, PbAuthUserDeleteRequest, user_delete),
            "UserChangePassword" => route!(
                req,
                l,
                s,
                caller,
                PbAuthUserChangePasswordRequest,
                user_change_password
            ),
            "UserGrantRole" => route!(req, l, s, caller, PbAuthUserGrantRoleRequest, grant_role),
            "UserRevokeRole" => {
                route!(req, l, s, caller, PbAuthUserRevokeRoleRequest, revoke_role)
            }
            "RoleAdd" => route!(req, l, s, caller, PbAuthRoleAddRequest, role_add),
            "RoleGet" => route!(req, l, s, caller, PbAuthRoleGetRequest, role_get),
            "RoleList" => route!(req, l, s, caller, PbAuthRoleListRequest, role_list),
            "RoleDelete" => route!(req, l, s, caller, PbAuthRoleDeleteRequest, role_delete),
            "RoleGrantPermission" => route!(
                req,
                l,
                s,
                caller,
                PbAuthRoleGrantPermissionRequest,
                grant_permission
            ),
            "RoleRevokePermission" => route!(
                req,
                l,
                s,
                caller,
                PbAuthRoleRevokePermissionRequest,
                revoke_permission
            ),
            _ => v3pb::unknown_method(),
        }
    }
}

pub(crate) type CallerResult = Result<Caller, KvError>;

/// The service's methods; also called by the HTTP/JSON gateway.
pub(crate) struct AuthService {
    shard: ShardClient,
}

fn mismatch() -> Status {
    Status::internal("corekv: applied response does not match the request")
}

impl AuthService {
    /// The service over `shard`.
    pub(crate) fn new(shard: ShardClient) -> AuthService {
        AuthService { shard }
    }

    /// etcd's `needAdminPermission`: root only while auth is enabled. Answers the caller.
    fn admin(&self, caller: CallerResult) -> Result<Caller, Status> {
        let caller = caller.map_err(to_status)?;
        self.shard
            .cluster
            .auth
            .check_admin(&caller)
            .map_err(to_status)?;
        Ok(caller)
    }

    /// Proposes an auth change for `caller` (root's to make once auth is enabled, checked
    /// again when applied); answers the header it was applied with.
    async fn change(
        &self,
        command: AuthCommand,
        caller: &Caller,
    ) -> Result<Option<PbResponseHeader>, Status> {
        let reply = self
            .shard
            .write_as(Command::Auth(command), caller)
            .await
            .map_err(to_status)?;
        let CommandResponse::Auth(mut header) = reply.body else {
            return Err(mismatch());
        };
        fill_header(&mut header, &self.shard.cluster, 0, reply.raft_term);
        Ok(header)
    }

    /// The applied auth state with a header for a read (the key space's revision).
    async fn read(&self) -> Result<(Arc<AuthState>, Option<PbResponseHeader>), Status> {
        let view = self.shard.view().await.map_err(to_status)?;
        let mut header = None;
        fill_header(
            &mut header,
            &self.shard.cluster,
            view.body.revision(),
            view.raft_term,
        );
        Ok((self.shard.cluster.auth.state(), header))
    }

    pub(crate) async fn enable(
        &self,
        _: PbAuthEnableRequest,
        caller: CallerResult,
    ) -> Result<PbAuthEnableResponse, Status> {
        let caller = self.admin(caller)?;
        let header = self.change(AuthCommand::Enable, &caller).await?;
        Ok(PbAuthEnableResponse { header })
    }

    pub(crate) async fn disable(
        &self,
        _: PbAuthDisableRequest,
        caller: CallerResult,
    ) -> Result<PbAuthDisableResponse, Status> {
        let caller = self.admin(caller)?;
        let header = self.change(AuthCommand::Disable, &caller).await?;
        self.shard.cluster.auth.forget_tokens();
        Ok(PbAuthDisableResponse { header })
    }

    async fn status(
        &self,
        _: AuthStatusRequest,
        caller: CallerResult,
    ) -> Result<AuthStatusResponse, Status> {
        self.admin(caller)?;
        let (state, header) = self.read().await?;
        Ok(AuthStatusResponse {
            header,
            enabled: state.enabled,
            auth_revision: state.revision,
        })
    }

    /// No permission needed: the password is the check.
    pub(crate) async fn authenticate(
        &self,
        r: PbAuthenticateRequest,
        _: CallerResult,
    ) -> Result<PbAuthenticateResponse, Status> {
        let token = self
            .shard
            .cluster
            .auth
            .authenticate(&r.name, &r.password)
            .await
            .map_err(to_status)?;
        let (_, header) = self.read().await?;
        Ok(PbAuthenticateResponse { header, token })
    }

    pub(crate) async fn user_add(
        &self,
        mut r: PbAuthUserAddRequest,
        caller: CallerResult,
    ) -> Result<PbAuthUserAddResponse, Status> {
        let caller = self.admin(caller)?;
        let no_password = r.options.is_some_and(|o| o.no_password);
        // Checked here too so an obviously failing request costs no bcrypt.
        if r.name.is_empty() {
            return Err(to_status(KvError::UserEmpty));
        }
        if !no_password && r.hashed_password.is_empty() {
            r.hashed_password = self
                .shard
                .cluster
                .auth
                .hash_password(&r.password)
                .await
                .map_err(to_status)?;
        }
        r.password.clear();
        let header = self.change(AuthCommand::UserAdd(r), &caller).await?;
        Ok(PbAuthUserAddResponse { header })
    }

    pub(crate) async fn user_get(
        &self,
        r: PbAuthUserGetRequest,
        caller: CallerResult,
    ) -> Result<PbAuthUserGetResponse, Status> {
        // etcd: root, or the user itself.
        let caller = caller.map_err(to_status)?;
        let own = caller.as_ref().is_some_and(|c| c.username == r.name);
        if !own {
            self.admin(Ok(caller))?;
        }
        let (state, header) = self.read().await?;
        let user = state
            .users
            .get(&r.name)
            .ok_or_else(|| to_status(KvError::UserNotFound))?;
        Ok(PbAuthUserGetResponse {
            header,
            roles: user.roles.clone(),
        })
    }

    pub(crate) async fn user_list(
        &self,
        _: PbAuthUserListRequest,
        caller: CallerResult,
    ) -> Result<PbAuthUserListResponse, Status> {
        self.admin(caller)?;
        let (state, header) = self.read().await?;
        Ok(PbAuthUserListResponse {
            header,
            users: state.users.keys().cloned().collect(),
        })
    }

    pub(crate) async fn user_delete(
        &self,
        r: PbAuthUserDeleteRequest,
        caller: CallerResult,
    ) -> Result<PbAuthUserDeleteResponse, Status> {
        let caller = self.admin(caller)?;
        let name = r.name.clone();
        let header = self.change(AuthCommand::UserDelete(r), &caller).await?;
        self.shard.cluster.auth.forget_user_tokens(&name);
        Ok(PbAuthUserDeleteResponse { header })
    }

    pub(crate) async fn user_change_password(
        &self,
        mut r: PbAuthUserChangePasswordRequest,
        caller: CallerResult,
    ) -> Result<PbAuthUserChangePasswordResponse, Status> {
        let caller = self.admin(caller)?;
        if !self.shard.cluster.auth.state().users.contains_key(&r.name) {
            return Err(to_status(KvError::UserNotFound));
        }
        if r.hashed_password.is_empty() {
            r.hashed_password = self
                .shard
                .cluster
                .auth
                .hash_password(&r.password)
                .await
                .map_err(to_status)?;
        }
        r.password.clear();
        let name = r.name.clone();
        let header = self
            .change(AuthCommand::UserChangePassword(r), &caller)
            .await?;
        self.shard.cluster.auth.forget_user_tokens(&name);
        Ok(PbAuthUserChangePasswordResponse { header })
    }

    pub(crate) async fn grant_role(
        &self,
        r: PbAuthUserGrantRoleRequest,
        caller: CallerResult,
    ) -> Result<PbAuthUserGrantRoleResponse, Status> {
        let caller = self.admin(caller)?;
        let header = self.change(AuthCommand::UserGrantRole(r), &caller).await?;
        Ok(PbAuthUserGrantRoleResponse { header })
    }

    pub(crate) async fn revoke_role(
        &self,
        r: PbAuthUserRevokeRoleRequest,
        caller: CallerResult,
    ) -> Result<PbAuthUserRevokeRoleResponse, Status> {
        let caller = self.admin(caller)?;
        let header = self.change(AuthCommand::UserRevokeRole(r), &caller).await?;
        Ok(PbAuthUserRevokeRoleResponse { header })
    }

    pub(crate) async fn role_add(
        &self,
        r: PbAuthRoleAddRequest,
        caller: CallerResult,
    ) -> Result<PbAuthRoleAddResponse, Status> {
        let caller = self.admin(caller)?;
        let header = self.change(AuthCommand::RoleAdd(r), &caller).await?;
        Ok(PbAuthRoleAddResponse { header })
    }

    pub(crate) async fn role_get(
        &self,
        r: PbAuthRoleGetRequest,
        caller: CallerResult,
    ) -> Result<PbAuthRoleGetResponse, Status> {
        // etcd: root, or a user holding the role.
        let caller = caller.map_err(to_status)?;
        let (state, header) = self.read().await?;
        let holds = caller.as_ref().is_some_and(|c| {
            state
                .users
                .get(&c.username)
                .is_some_and(|u| u.roles.binary_search(&r.role).is_ok())
        });
        if !holds {
            self.admin(Ok(caller))?;
        }
        let role = state
            .roles
            .get(&r.role)
            .ok_or_else(|| to_status(KvError::RoleNotFound))?;
        let mut resp = PbAuthRoleGetResponse {
            header,
            perm: Vec::with_capacity(role.permissions.len()),
        };
        for p in &role.permissions {
            // authpb.Permission is not exported by name: fill it through the field.
            resp.perm.push(Default::default());
            let slot = resp.perm.last_mut().expect("just pushed");
            slot.perm_type = p.perm_type;
            slot.key = p.key.clone();
            slot.range_end = p.range_end.clone();
        }
        Ok(resp)
    }

    pub(crate) async fn role_list(
        &self,
        _: PbAuthRoleListRequest,
        caller: CallerResult,
    ) -> Result<PbAuthRoleListResponse, Status> {
        self.admin(caller)?;
        let (state, header) = self.read().await?;
        Ok(PbAuthRoleListResponse {
            header,
            roles: state.roles.keys().cloned().collect(),
        })
    }

    pub(crate) async fn role_delete(
        &self,
        r: PbAuthRoleDeleteRequest,
        caller: CallerResult,
    ) -> Result<PbAuthRoleDeleteResponse, Status> {
        let caller = self.admin(caller)?;
        let header = self.change(AuthCommand::RoleDelete(r), &caller).await?;
        Ok(PbAuthRoleDeleteResponse { header })
    }

    pub(crate) async fn grant_permission(
        &self,
        r: PbAuthRoleGrantPermissionRequest,
        caller: CallerResult,
    ) -> Result<PbAuthRoleGrantPermissionResponse, Status> {
        let caller = self.admin(caller)?;
        let header = self
            .change(AuthCommand::RoleGrantPermission(r), &caller)
            .await?;
        Ok(PbAuthRoleGrantPermissionResponse { header })
    }

    pub(crate) async fn revoke_permission(
        &self,
        r: PbAuthRoleRevokePermissionRequest,
        caller: CallerResult,
    ) -> Result<PbAuthRoleRevokePermissionResponse, Status> {
        let caller = self.admin(caller)?;
        let header = self
            .change(AuthCommand::RoleRevokePermission(r), &caller)
            .await?;
        Ok(PbAuthRoleRevokePermissionResponse { header })
    }
}
