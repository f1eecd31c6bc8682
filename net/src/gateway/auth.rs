//! /v3/auth/*: the auth switch, authenticate (its token then goes in the `Authorization`
//! header), users and roles, through the same Auth service methods as gRPC.

use corekv_engine::pb::*;
use serde_json::Value;

use super::json::{Input, Obj};
use super::kv::header;
use super::{bad_input, Answer, Auth, Gateway};

/// authpb.Permission.Type names, by value.
const PERM_TYPES: &[&str] = &["READ", "WRITE", "READWRITE"];

/// The auth methods the gateway serves, by path after `/auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthMethod {
    Enable,
    Disable,
    Authenticate,
    UserAdd,
    UserGet,
    UserList,
    UserDelete,
    UserChangePassword,
    UserGrantRole,
    UserRevokeRole,
    RoleAdd,
    RoleGet,
    RoleList,
    RoleDelete,
    RoleGrantPermission,
    RoleRevokePermission,
}

/// etcd 3.4's `google.api.http` paths of the Auth service (after `/v3`).
pub(super) fn route(path: &str) -> Option<AuthMethod> {
    use AuthMethod::*;
    Some(match path {
        "/auth/enable" => Enable,
        "/auth/disable" => Disable,
        "/auth/authenticate" => Authenticate,
        "/auth/user/add" => UserAdd,
        "/auth/user/get" => UserGet,
        "/auth/user/list" => UserList,
        "/auth/user/delete" => UserDelete,
        "/auth/user/changepw" => UserChangePassword,
        "/auth/user/grant" => UserGrantRole,
        "/auth/user/revoke" => UserRevokeRole,
        "/auth/role/add" => RoleAdd,
        "/auth/role/get" => RoleGet,
        "/auth/role/list" => RoleList,
        "/auth/role/delete" => RoleDelete,
        "/auth/role/grant" => RoleGrantPermission,
        "/auth/role/revoke" => RoleRevokePermission,
        _ => return None,
    })
}

fn only_header(h: &Option<PbResponseHeader>) -> Answer {
    Ok(Obj::new().msg("header", header(h)).done())
}

fn strings(list: &[String]) -> Vec<super::json::Json> {
    list.iter().map(|s| super::json::Json::string(s)).collect()
}

impl Gateway {
    pub(super) async fn auth_method(
        &self,
        method: AuthMethod,
        auth: &Auth,
        body: &Value,
    ) -> Answer {
        use AuthMethod::*;
        let s = &self.auth_service;
        let caller = self.shard.cluster.auth.caller_of(&auth.request(()));
        let i = Input::of(body).map_err(bad_input)?;
        let text = |name: &str| i.string(name).map_err(bad_input);
        match method {
            Enable => only_header(&s.enable(Default::default(), caller).await?.header),
            Disable => only_header(&s.disable(Default::default(), caller).await?.header),
            Authenticate => {
                let r = PbAuthenticateRequest {
                    name: text("name")?,
                    password: text("password")?,
                };
                let resp = s.authenticate(r, caller).await?;
                Ok(Obj::new()
                    .msg("header", header(&resp.header))
                    .str("token", &resp.token)
                    .done())
            }
            UserAdd => {
                let mut r = PbAuthUserAddRequest {
                    name: text("name")?,
                    password: text("password")?,
                    ..Default::default()
                };
                if let Some(o) = i.msg("options").map_err(bad_input)? {
                    let mut options = r.options.take().unwrap_or_default();
                    options.no_password = o.bool("no_password").map_err(bad_input)?;
                    r.options = Some(options);
                }
                only_header(&s.user_add(r, caller).await?.header)
            }
            UserGet => {
                let r = PbAuthUserGetRequest {
                    name: text("name")?,
                };
                let resp = s.user_get(r, caller).await?;
                Ok(Obj::new()
                    .msg("header", header(&resp.header))
                    .list("roles", strings(&resp.roles))
                    .done())
            }
            UserList => {
                let resp = s.user_list(Default::default(), caller).await?;
                Ok(Obj::new()
                    .msg("header", header(&resp.header))
                    .list("users", strings(&resp.users))
                    .done())
            }
            UserDelete => {
                let r = PbAuthUserDeleteRequest {
                    name: text("name")?,
                };
                only_header(&s.user_delete(r, caller).await?.header)
            }
            UserChangePassword => {
                let r = PbAuthUserChangePasswordRequest {
                    name: text("name")?,
                    password: text("password")?,
                    ..Default::default()
                };
                only_header(&s.user_change_password(r, caller).await?.header)
            }
            UserGrantRole => {
                let r = PbAuthUserGrantRoleRequest {
                    user: text("user")?,
                    role: text("role")?,
                };
                only_header(&s.grant_role(r, caller).await?.header)
            }
            UserRevokeRole => {
                let r = PbAuthUserRevokeRoleRequest {
                    name: text("name")?,
                    role: text("role")?,
                };
                only_header(&s.revoke_role(r, caller).await?.header)
            }
            RoleAdd => {
                let r = PbAuthRoleAddRequest {
                    name: text("name")?,
                };
                only_header(&s.role_add(r, caller).await?.header)
            }
            RoleGet => {
                let r = PbAuthRoleGetRequest {
                    role: text("role")?,
                };
                let resp = s.role_get(r, caller).await?;
                let perms = resp
                    .perm
                    .iter()
                    .map(|p| {
                        Obj::new()
                            .enumeration("permType", p.perm_type, PERM_TYPES)
                            .bytes("key", &p.key)
                            .bytes("range_end", &p.range_end)
                            .done()
                    })
                    .collect();
                Ok(Obj::new()
                    .msg("header", header(&resp.header))
                    .list("perm", perms)
                    .done())
            }
            RoleList => {
                let resp = s.role_list(Default::default(), caller).await?;
                Ok(Obj::new()
                    .msg("header", header(&resp.header))
                    .list("roles", strings(&resp.roles))
                    .done())
            }
            RoleDelete => {
                let r = PbAuthRoleDeleteRequest {
                    role: text("role")?,
                };
                only_header(&s.role_delete(r, caller).await?.header)
            }
            RoleGrantPermission => {
                let mut r = PbAuthRoleGrantPermissionRequest {
                    name: text("name")?,
                    perm: None,
                };
                if let Some(p) = i.msg("perm").map_err(bad_input)? {
                    // authpb.Permission is not exported by name: fill it through the field.
                    let perm = r.perm.get_or_insert_with(Default::default);
                    perm.perm_type = p
                        .enumeration("permType", PERM_TYPES, "authpb.Permission_Type")
                        .map_err(bad_input)?;
                    perm.key = p.bytes("key").map_err(bad_input)?;
                    perm.range_end = p.bytes("range_end").map_err(bad_input)?;
                }
                only_header(&s.grant_permission(r, caller).await?.header)
            }
            RoleRevokePermission => {
                let r = PbAuthRoleRevokePermissionRequest {
                    role: text("role")?,
                    key: i.bytes("key").map_err(bad_input)?,
                    range_end: i.bytes("range_end").map_err(bad_input)?,
                };
                only_header(&s.revoke_permission(r, caller).await?.header)
            }
        }
    }
}
