//! etcd's auth store as part of the replicated state: users, roles, their permissions, the
//! auth switch and the auth revision, with etcd 3.4's rules and error texts.
//!
//! Every change travels through the log as an [`AuthCommand`] and is applied here, so every
//! member holds the same users and roles, and the backend persists them (`u`, `r` and `A`
//! entries). Passwords arrive already hashed (bcrypt, by the member that took the request):
//! the log never holds a password.
//!
//! The auth revision starts at 1 and goes up by one with every change to users, roles or
//! permissions (not with enable/disable, as etcd). A token remembers the revision it was
//! issued at; a key-space request carrying an older one fails with "revision of auth store
//! is old", so a revoked permission cannot be used through a token issued before.
//!
//! Permission checks ([`AuthState::check_access`], [`AuthState::check_admin`]) are etcd's
//! `isOpPermitted` and `IsAdminPermitted`: root (the `root` role) may do anything; other
//! users may touch a key range only if the union of their roles' permissions of that kind
//! covers the whole range.
//!
//! [`AuthShared`] publishes the applied state to the network layer, which checks requests
//! against it before they reach the key space.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use imbl::OrdMap;

use crate::request::AuthCommand;
use crate::KvError;

/// The user whose `root` role makes it the administrator.
pub const ROOT_USER: &str = "root";
/// The role that grants everything.
pub const ROOT_ROLE: &str = "root";

/// `authpb.Permission.Type` READ.
pub const PERM_READ: i32 = 0;
/// `authpb.Permission.Type` WRITE.
pub const PERM_WRITE: i32 = 1;
/// `authpb.Permission.Type` READWRITE.
pub const PERM_READWRITE: i32 = 2;

/// The auth revision of a fresh store (etcd commits revision 1 when it creates its store).
pub const INITIAL_AUTH_REVISION: u64 = 1;

/// A user. `roles` is sorted and has no duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// The bcrypt hash of the password; empty for a no-password user.
    pub password_hash: String,
    pub roles: Vec<String>,
    /// Created with `--no-password`: may authenticate only by client certificate.
    pub no_password: bool,
}

impl User {
    pub fn has_root_role(&self) -> bool {
        self.roles
            .binary_search_by(|r| r.as_str().cmp(ROOT_ROLE))
            .is_ok()
    }
}

/// One permission of a role: etcd's key + range_end encoding (empty range_end: one key;
/// `"\0"`: every key from `key` on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub perm_type: i32,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// A role: its permissions ordered by key, as etcd keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub permissions: Vec<Permission>,
}

/// What a request may need of a key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Who sent a request, as its token says: the user and the auth revision the token was
/// issued at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
}

/// Users, roles and the switch. Cloning is O(1) (persistent maps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthState {
    pub enabled: bool,
    pub revision: u64,
    pub users: OrdMap<String, Arc<User>>,
    pub roles: OrdMap<String, Arc<Role>>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            enabled: false,
            revision: INITIAL_AUTH_REVISION,
            users: OrdMap::new(),
            roles: OrdMap::new(),
        }
    }
}

impl AuthState {
    /// Applies one auth command atomically (on `Err` nothing changed). Returns whether
    /// anything changed (a repeated enable, or granting a role the user has, changes
    /// nothing, as in etcd).
    pub(super) fn apply(&mut self, command: &AuthCommand) -> Result<bool, KvError> {
        match command {
            AuthCommand::Enable => {
                if self.enabled {
                    return Ok(false);
                }
                let root = self.users.get(ROOT_USER).ok_or(KvError::RootUserMissing)?;
                if !root.has_root_role() {
                    return Err(KvError::RootRoleMissing);
                }
                self.enabled = true;
                Ok(true)
            }
            AuthCommand::Disable => {
                let was = self.enabled;
                self.enabled = false;
                Ok(was)
            }
            AuthCommand::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(KvError::UserEmpty);
                }
                if self.users.contains_key(&r.name) {
                    return Err(KvError::UserExists);
                }
                let no_password = r.options.is_some_and(|o| o.no_password);
                let user = User {
                    name: r.name.clone(),
                    password_hash: if no_password {
                        String::new()
                    } else {
                        r.hashed_password.clone()
                    },
                    roles: Vec::new(),
                    no_password,
                };
                self.users.insert(r.name.clone(), Arc::new(user));
                self.bump()
            }
            AuthCommand::UserDelete(r) => {
                if self.enabled && r.name == ROOT_USER {
                    return Err(KvError::InvalidAuthManagement);
                }
                if self.users.remove(&r.name).is_none() {
                    return Err(KvError::UserNotFound);
                }
                self.bump()
            }
            AuthCommand::UserChangePassword(r) => {
                let mut user = self.user_mut(&r.name)?;
                user.password_hash = r.hashed_password.clone();
                self.users.insert(r.name.clone(), Arc::new(user));
                self.bump()
            }
            AuthCommand::UserGrantRole(r) => {
                let mut user = self.user_mut(&r.user)?;
                if r.role != ROOT_ROLE && !self.roles.contains_key(&r.role) {
                    return Err(KvError::RoleNotFound);
                }
                match user.roles.binary_search(&r.role) {
                    Ok(_) => Ok(false),
                    Err(at) => {
                        user.roles.insert(at, r.role.clone());
                        self.users.insert(r.user.clone(), Arc::new(user));
                        self.bump()
                    }
                }
            }
            AuthCommand::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT_USER && r.role == ROOT_ROLE {
                    return Err(KvError::InvalidAuthManagement);
                }
                let mut user = self.user_mut(&r.name)?;
                let at = user
                    .roles
                    .binary_search(&r.role)
                    .map_err(|_| KvError::RoleNotGranted)?;
                user.roles.remove(at);
                self.users.insert(r.name.clone(), Arc::new(user));
                self.bump()
            }
            AuthCommand::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(KvError::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(KvError::RoleExists);
                }
                let role = Role {
                    name: r.name.clone(),
                    permissions: Vec::new(),
                };
                self.roles.insert(r.name.clone(), Arc::new(role));
                self.bump()
            }
            AuthCommand::RoleDelete(r) => {
                if self.enabled && r.role == ROOT_ROLE {
                    return Err(KvError::InvalidAuthManagement);
                }
                if self.roles.remove(&r.role).is_none() {
                    return Err(KvError::RoleNotFound);
                }
                // etcd removes the role from every user that had it.
                let holders: Vec<Arc<User>> = self
                    .users
                    .values()
                    .filter(|u| u.roles.binary_search(&r.role).is_ok())
                    .cloned()
                    .collect();
                for holder in holders {
                    let mut user = (*holder).clone();
                    user.roles.retain(|role| *role != r.role);
                    self.users.insert(user.name.clone(), Arc::new(user));
                }
                self.bump()
            }
            AuthCommand::RoleGrantPermission(r) => {
                let mut role = self.role_mut(&r.name)?;
                let perm = r.perm.as_ref().ok_or(KvError::PermissionNotGiven)?;
                let granted = Permission {
                    perm_type: perm.perm_type,
                    key: perm.key.clone(),
                    range_end: perm.range_end.clone(),
                };
                match role
                    .permissions
                    .iter_mut()
                    .find(|p| p.key == granted.key && p.range_end == granted.range_end)
                {
                    Some(existing) => existing.perm_type = granted.perm_type,
                    None => {
                        let at = role.permissions.partition_point(|p| p.key <= granted.key);
                        role.permissions.insert(at, granted);
                    }
                }
                self.roles.insert(r.name.clone(), Arc::new(role));
                self.bump()
            }
            AuthCommand::RoleRevokePermission(r) => {
                let mut role = self.role_mut(&r.role)?;
                let at = role
                    .permissions
                    .iter()
                    .position(|p| p.key == r.key && p.range_end == r.range_end)
                    .ok_or(KvError::PermissionNotGranted)?;
                role.permissions.remove(at);
                self.roles.insert(r.role.clone(), Arc::new(role));
                self.bump()
            }
        }
    }

    fn bump(&mut self) -> Result<bool, KvError> {
        self.revision += 1;
        Ok(true)
    }

    fn user_mut(&self, name: &str) -> Result<User, KvError> {
        self.users
            .get(name)
            .map(|u| (**u).clone())
            .ok_or(KvError::UserNotFound)
    }

    fn role_mut(&self, name: &str) -> Result<Role, KvError> {
        self.roles
            .get(name)
            .map(|r| (**r).clone())
            .ok_or(KvError::RoleNotFound)
    }

    /// etcd's `IsAdminPermitted`: anyone while auth is disabled, else a user with the root
    /// role. No revision check, as etcd.
    pub fn check_admin(&self, caller: Option<&AuthInfo>) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        let name = match caller {
            Some(info) if !info.username.is_empty() => &info.username,
            _ => return Err(KvError::UserEmpty),
        };
        let user = self.users.get(name).ok_or(KvError::UserNotFound)?;
        if !user.has_root_role() {
            return Err(KvError::PermissionDenied);
        }
        Ok(())
    }

    /// etcd's `isOpPermitted`: may `caller` read (or write) every key of `key`/`range_end`
    /// (etcd's range encoding)?
    pub fn check_access(
        &self,
        caller: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        let info = match caller {
            Some(info) if info.revision != 0 => info,
            _ => return Err(KvError::UserEmpty),
        };
        if info.revision < self.revision {
            return Err(KvError::AuthOldRevision);
        }
        let user = self
            .users
            .get(&info.username)
            .ok_or(KvError::PermissionDenied)?;
        if user.has_root_role() {
            return Ok(());
        }
        let wanted = |p: &Permission| match access {
            Access::Read => p.perm_type == PERM_READ || p.perm_type == PERM_READWRITE,
            Access::Write => p.perm_type == PERM_WRITE || p.perm_type == PERM_READWRITE,
        };
        let granted: Vec<Interval> = user
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flat_map(|role| role.permissions.iter())
            .filter(|p| wanted(p))
            .map(|p| Interval::of(&p.key, &p.range_end))
            .collect();
        if Interval::of(key, range_end).covered_by(&granted) {
            Ok(())
        } else {
            Err(KvError::PermissionDenied)
        }
    }
}

/// etcd's `authApplierV3` checks of a command applied on behalf of `caller` (`None`: the
/// request named no user), against the state it is applied to: the same rules as the
/// network layer's, re-checked where the order is decided so a permission revoked while
/// a request was in flight is honoured. Lease puts need write on every key already
/// attached to the lease (`checkLeasePuts`).
pub(super) fn check_command(
    state: &super::state::State,
    caller: Option<&AuthInfo>,
    command: &crate::request::Command,
) -> Result<(), KvError> {
    use crate::pb::PbTxnOpRequest;
    use crate::request::Command;
    let auth = &state.auth;
    if !auth.enabled {
        return Ok(());
    }
    let check = |key: &[u8], end: &[u8], access| auth.check_access(caller, key, end, access);
    let lease_keys = |lease: i64| -> Result<(), KvError> {
        let Some(l) = state.leases.get(&lease) else {
            return Ok(());
        };
        l.keys
            .iter()
            .try_for_each(|k| check(k.as_ref(), &[], Access::Write))
    };
    let put = |p: &crate::pb::PbPutRequest| -> Result<(), KvError> {
        check(&p.key, &[], Access::Write)?;
        lease_keys(p.lease)?;
        if p.prev_kv {
            check(&p.key, &[], Access::Read)?;
        }
        Ok(())
    };
    let delete = |d: &crate::pb::PbDeleteRequest| -> Result<(), KvError> {
        check(&d.key, &d.range_end, Access::Write)?;
        if d.prev_kv {
            check(&d.key, &d.range_end, Access::Read)?;
        }
        Ok(())
    };
    /// A check of one kind of op (for any borrow of it).
    type Check<'a, T> = &'a dyn Fn(&T) -> Result<(), KvError>;
    /// A read check of a key range (key, range_end).
    type ReadCheck<'a> = &'a dyn Fn(&[u8], &[u8]) -> Result<(), KvError>;
    fn txn(
        t: &crate::pb::PbTxnRequest,
        read: ReadCheck<'_>,
        put: Check<'_, crate::pb::PbPutRequest>,
        delete: Check<'_, crate::pb::PbDeleteRequest>,
    ) -> Result<(), KvError> {
        for c in &t.compare {
            read(&c.key, &c.range_end)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => read(&r.key, &r.range_end)?,
                Some(PbTxnOpRequest::RequestPut(p)) => put(p)?,
                Some(PbTxnOpRequest::RequestDeleteRange(d)) => delete(d)?,
                Some(PbTxnOpRequest::RequestTxn(nested)) => txn(nested, read, put, delete)?,
                None => {}
            }
        }
        Ok(())
    }
    match command {
        Command::Put(p) => put(p),
        Command::DeleteRange(d) => delete(d),
        Command::Txn(t) => txn(t, &|k, e| check(k, e, Access::Read), &put, &delete),
        Command::LeaseRevoke(r) => lease_keys(r.id),
        Command::Auth(_) => auth.check_admin(caller),
        Command::Compact(_)
        | Command::LeaseGrant(_)
        | Command::LeaseCheckpoint(_)
        | Command::Alarm(_) => Ok(()),
        // Proposed by the server itself (the Cluster service checks the caller is root
        // before it asks for a change; members publish their own attributes).
        Command::MemberAttributes(_) | Command::MemberUpdate(_) | Command::MemberConf(_) => Ok(()),
    }
}

/// A half-open key interval `[start, end)`; `end == None` is unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    /// etcd's encoding: an empty `range_end` is the one key (`[key, key + "\0")`), `"\0"`
    /// every key from `key` on. A range ending at or before its start is taken as its
    /// start key alone.
    fn of(key: &[u8], range_end: &[u8]) -> Interval {
        let point = || {
            let mut end = key.to_vec();
            end.push(0);
            Interval {
                start: key.to_vec(),
                end: Some(end),
            }
        };
        match range_end {
            [] => point(),
            [0] => Interval {
                start: key.to_vec(),
                end: None,
            },
            end if end <= key => point(),
            end => Interval {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    /// Whether the union of `granted` covers this whole interval.
    fn covered_by(&self, granted: &[Interval]) -> bool {
        // Walk from the start: repeatedly extend the covered prefix with any interval
        // that starts inside it. At most one step per interval.
        let mut reached: Vec<u8> = self.start.clone();
        for _ in 0..=granted.len() {
            let mut furthest: Option<Option<&Vec<u8>>> = None;
            for g in granted {
                let starts_inside = g.start <= reached;
                let goes_past = match &g.end {
                    None => true,
                    Some(end) => *end > reached,
                };
                if starts_inside && goes_past {
                    furthest = Some(match (furthest, g.end.as_ref()) {
                        (Some(None), _) | (_, None) => None,
                        (Some(Some(a)), Some(b)) => Some(if a > b { a } else { b }),
                        (None, Some(b)) => Some(b),
                    });
                }
            }
            match furthest {
                None => return false,
                Some(None) => return true,
                Some(Some(end)) => {
                    if let Some(want) = &self.end {
                        if end >= want {
                            return true;
                        }
                    }
                    reached = end.clone();
                }
            }
        }
        false
    }
}

/// The applied auth state, published to the network layer on every change: the switch as
/// an atomic (read on every request) and the state behind a lock (read only while enabled).
#[derive(Debug, Default)]
pub struct AuthShared {
    enabled: AtomicBool,
    state: RwLock<Arc<AuthState>>,
}

impl AuthShared {
    /// Whether auth is enabled: when not, no request needs checking.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The state as of the last applied auth change.
    pub fn snapshot(&self) -> Arc<AuthState> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(super) fn publish(&self, state: &AuthState) {
        let mut slot = self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Arc::new(state.clone());
        self.enabled.store(state.enabled, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::*;

    fn info(name: &str, revision: u64) -> AuthInfo {
        AuthInfo {
            username: name.into(),
            revision,
        }
    }

    fn grant(state: &mut AuthState, role: &str, perm_type: i32, key: &[u8], end: &[u8]) {
        let mut req = PbAuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: None,
        };
        // etcd-client does not export authpb.Permission by name; fill it through the field.
        req.perm = Some(Default::default());
        let p = req.perm.as_mut().expect("set");
        p.perm_type = perm_type;
        p.key = key.to_vec();
        p.range_end = end.to_vec();
        state
            .apply(&AuthCommand::RoleGrantPermission(req))
            .expect("grant");
    }

    fn user_add(state: &mut AuthState, name: &str) {
        state
            .apply(&AuthCommand::UserAdd(PbAuthUserAddRequest {
                name: name.into(),
                hashed_password: "$2b$04$hash".into(),
                ..Default::default()
            }))
            .expect("user add");
    }

    fn grant_role(state: &mut AuthState, user: &str, role: &str) -> Result<bool, KvError> {
        state.apply(&AuthCommand::UserGrantRole(PbAuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        }))
    }

    fn role_add(state: &mut AuthState, name: &str) -> Result<bool, KvError> {
        state.apply(&AuthCommand::RoleAdd(PbAuthRoleAddRequest {
            name: name.into(),
        }))
    }

    /// root + role r1 with `a` readwrite and prefix `p/` read, granted to u1; auth on.
    fn sample() -> AuthState {
        let mut s = AuthState::default();
        user_add(&mut s, "root");
        user_add(&mut s, "u1");
        role_add(&mut s, "r1").unwrap();
        grant(&mut s, "r1", PERM_READWRITE, b"a", b"b");
        grant(&mut s, "r1", PERM_READ, b"p/", b"p0");
        grant_role(&mut s, "u1", "r1").unwrap();
        assert_eq!(s.apply(&AuthCommand::Enable), Err(KvError::RootRoleMissing));
        grant_role(&mut s, "root", "root").unwrap();
        assert_eq!(s.apply(&AuthCommand::Enable), Ok(true));
        s
    }

    #[test]
    fn enable_needs_root_user_with_root_role() {
        let mut s = AuthState::default();
        assert_eq!(s.apply(&AuthCommand::Enable), Err(KvError::RootUserMissing));
        user_add(&mut s, "root");
        assert_eq!(s.apply(&AuthCommand::Enable), Err(KvError::RootRoleMissing));
        // Granting "root" needs no role of that name, as etcd.
        assert_eq!(grant_role(&mut s, "root", "root"), Ok(true));
        let rev = s.revision;
        assert_eq!(s.apply(&AuthCommand::Enable), Ok(true));
        assert_eq!(s.apply(&AuthCommand::Enable), Ok(false));
        assert_eq!(s.revision, rev, "enable does not move the auth revision");
        assert!(s.enabled);
    }

    #[test]
    fn mutations_follow_etcd_errors_and_bump_the_revision() {
        let mut s = AuthState::default();
        assert_eq!(s.revision, INITIAL_AUTH_REVISION);
        user_add(&mut s, "u1");
        assert_eq!(s.revision, 2);
        let dup = s.apply(&AuthCommand::UserAdd(PbAuthUserAddRequest {
            name: "u1".into(),
            ..Default::default()
        }));
        assert_eq!(dup, Err(KvError::UserExists));
        let empty = s.apply(&AuthCommand::UserAdd(Default::default()));
        assert_eq!(empty, Err(KvError::UserEmpty));
        assert_eq!(role_add(&mut s, ""), Err(KvError::RoleEmpty));
        assert_eq!(role_add(&mut s, "r1"), Ok(true));
        assert_eq!(role_add(&mut s, "r1"), Err(KvError::RoleExists));
        assert_eq!(grant_role(&mut s, "u1", "nope"), Err(KvError::RoleNotFound));
        assert_eq!(grant_role(&mut s, "nope", "r1"), Err(KvError::UserNotFound));
        assert_eq!(grant_role(&mut s, "u1", "r1"), Ok(true));
        let rev = s.revision;
        assert_eq!(grant_role(&mut s, "u1", "r1"), Ok(false));
        assert_eq!(s.revision, rev, "a repeated grant changes nothing");
        let revoke = |s: &mut AuthState, role: &str| {
            s.apply(&AuthCommand::UserRevokeRole(PbAuthUserRevokeRoleRequest {
                name: "u1".into(),
                role: role.into(),
            }))
        };
        assert_eq!(revoke(&mut s, "zz"), Err(KvError::RoleNotGranted));
        let revoke_perm = s.apply(&AuthCommand::RoleRevokePermission(
            PbAuthRoleRevokePermissionRequest {
                role: "r1".into(),
                key: b"zz".to_vec(),
                range_end: Vec::new(),
            },
        ));
        assert_eq!(revoke_perm, Err(KvError::PermissionNotGranted));
        let no_perm = s.apply(&AuthCommand::RoleGrantPermission(
            PbAuthRoleGrantPermissionRequest {
                name: "r1".into(),
                perm: None,
            },
        ));
        assert_eq!(no_perm, Err(KvError::PermissionNotGiven));
        // Deleting a role takes it from its holders.
        let del = s.apply(&AuthCommand::RoleDelete(PbAuthRoleDeleteRequest {
            role: "r1".into(),
        }));
        assert_eq!(del, Ok(true));
        assert!(s.users["u1"].roles.is_empty());
    }

    #[test]
    fn root_cannot_be_dismantled_while_enabled() {
        let mut s = sample();
        let del_user = AuthCommand::UserDelete(PbAuthUserDeleteRequest {
            name: "root".into(),
        });
        let del_role = AuthCommand::RoleDelete(PbAuthRoleDeleteRequest {
            role: "root".into(),
        });
        let revoke = AuthCommand::UserRevokeRole(PbAuthUserRevokeRoleRequest {
            name: "root".into(),
            role: "root".into(),
        });
        for cmd in [&del_user, &del_role, &revoke] {
            assert_eq!(s.apply(cmd), Err(KvError::InvalidAuthManagement));
        }
        s.apply(&AuthCommand::Disable).unwrap();
        assert_eq!(s.apply(&revoke), Ok(true));
        assert_eq!(s.apply(&del_user), Ok(true));
    }

    #[test]
    fn permissions_cover_keys_ranges_and_prefixes() {
        let s = sample();
        let u1 = info("u1", s.revision);
        let check = |key: &[u8], end: &[u8], access| s.check_access(Some(&u1), key, end, access);
        assert_eq!(check(b"a", b"", Access::Write), Ok(()));
        assert_eq!(check(b"a\xff", b"", Access::Read), Ok(()));
        assert_eq!(check(b"a", b"b", Access::Read), Ok(()));
        assert_eq!(
            check(b"a", b"c", Access::Read),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(
            check(b"b", b"", Access::Read),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(check(b"p/x", b"", Access::Read), Ok(()));
        assert_eq!(
            check(b"p/x", b"", Access::Write),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(check(b"p/", b"p0", Access::Read), Ok(()));
        assert_eq!(
            check(b"p/", b"\0", Access::Read),
            Err(KvError::PermissionDenied)
        );
        // Root may do anything; an unknown user nothing; no user is "user name is empty".
        let root = info("root", s.revision);
        assert_eq!(
            s.check_access(Some(&root), b"", b"\0", Access::Write),
            Ok(())
        );
        assert_eq!(
            s.check_access(Some(&info("ghost", s.revision)), b"a", b"", Access::Read),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(
            s.check_access(None, b"a", b"", Access::Read),
            Err(KvError::UserEmpty)
        );
        // A token from before the last change is stale.
        assert_eq!(
            s.check_access(Some(&info("u1", s.revision - 1)), b"a", b"", Access::Read),
            Err(KvError::AuthOldRevision)
        );
        // Admin: root only.
        assert_eq!(s.check_admin(Some(&root)), Ok(()));
        assert_eq!(s.check_admin(Some(&u1)), Err(KvError::PermissionDenied));
        assert_eq!(s.check_admin(None), Err(KvError::UserEmpty));
        assert_eq!(
            s.check_admin(Some(&info("ghost", 9))),
            Err(KvError::UserNotFound)
        );
    }

    #[test]
    fn adjacent_permissions_join_and_open_ends_cover_everything_after() {
        let mut s = sample();
        grant(&mut s, "r1", PERM_READ, b"b", b"c");
        grant(&mut s, "r1", PERM_READ, b"x", b"\0");
        let u1 = info("u1", s.revision);
        let read = |key: &[u8], end: &[u8]| s.check_access(Some(&u1), key, end, Access::Read);
        assert_eq!(read(b"a", b"c"), Ok(()), "[a,b) and [b,c) join");
        assert_eq!(read(b"a", b"c\0"), Err(KvError::PermissionDenied));
        assert_eq!(read(b"x", b"\0"), Ok(()));
        assert_eq!(read(b"zzz", b""), Ok(()));
        assert_eq!(read(b"w", b"\0"), Err(KvError::PermissionDenied));
        // Granting the same key and range again changes its type, not the list.
        grant(&mut s, "r1", PERM_WRITE, b"b", b"c");
        let perms = &s.roles["r1"].permissions;
        assert_eq!(perms.iter().filter(|p| p.key == b"b").count(), 1);
        let keys: Vec<&[u8]> = perms.iter().map(|p| p.key.as_slice()).collect();
        assert_eq!(keys, [&b"a"[..], b"b", b"p/", b"x"], "ordered by key");
    }

    #[test]
    fn disabled_auth_permits_everything() {
        let mut s = sample();
        s.apply(&AuthCommand::Disable).unwrap();
        assert_eq!(s.check_access(None, b"q", b"", Access::Write), Ok(()));
        assert_eq!(s.check_admin(None), Ok(()));
    }

    #[test]
    fn the_applier_rechecks_writes_against_the_state_it_applies_to() {
        use crate::mvcc::Store;
        use crate::pb::{PbLeaseGrantRequest, PbLeaseRevokeRequest, PbPutRequest};
        use crate::request::{AuthCommand, AuthHeader, Command};
        let mut store = Store::new();
        store.set_change_tracking(false);
        let put = |key: &str, lease: i64| {
            Command::Put(PbPutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                lease,
                ..Default::default()
            })
        };
        // Set up as the server (no header): root, u1 with r1 = readwrite [a, b).
        let mut setup = vec![Command::LeaseGrant(PbLeaseGrantRequest { id: 7, ttl: 60 })];
        setup.push(put("secret", 7));
        for cmd in sample_commands() {
            setup.push(Command::Auth(cmd));
        }
        for cmd in &setup {
            store.apply(cmd).unwrap();
        }
        let revision = store.view().auth().revision;
        let u1 = AuthHeader {
            username: "u1".into(),
            revision,
        };
        let root = AuthHeader {
            username: "root".into(),
            revision,
        };
        let nobody = AuthHeader::default();
        store
            .apply_as(&put("a1", 0), Some(&u1))
            .expect("inside [a, b)");
        let before = store.revision();
        assert_eq!(
            store.apply_as(&put("q", 0), Some(&u1)).map(|_| ()),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(store.revision(), before, "a refused write changes nothing");
        assert_eq!(
            store.apply_as(&put("a2", 7), Some(&u1)).map(|_| ()),
            Err(KvError::PermissionDenied),
            "attaching to a lease holding a key u1 may not write"
        );
        let revoke = Command::LeaseRevoke(PbLeaseRevokeRequest { id: 7 });
        assert_eq!(
            store.apply_as(&revoke, Some(&u1)).map(|_| ()),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(
            store.apply_as(&put("a1", 0), Some(&nobody)).map(|_| ()),
            Err(KvError::UserEmpty)
        );
        let add_role = Command::Auth(AuthCommand::RoleAdd(crate::pb::PbAuthRoleAddRequest {
            name: "r2".into(),
        }));
        assert_eq!(
            store.apply_as(&add_role, Some(&u1)).map(|_| ()),
            Err(KvError::PermissionDenied),
            "auth changes are root's"
        );
        store
            .apply_as(&add_role, Some(&root))
            .expect("root changes auth");
        // The change above moved the auth revision: u1's header is now stale.
        assert_eq!(
            store.apply_as(&put("a1", 0), Some(&u1)).map(|_| ()),
            Err(KvError::AuthOldRevision)
        );
        // The server's own requests (no header) are not checked.
        store.apply(&revoke).expect("lease expiry revokes");
    }

    /// The commands of [`sample`], for stores.
    fn sample_commands() -> Vec<AuthCommand> {
        let user = |name: &str| {
            AuthCommand::UserAdd(PbAuthUserAddRequest {
                name: name.into(),
                hashed_password: "$2b$04$hash".into(),
                ..Default::default()
            })
        };
        let mut perm = PbAuthRoleGrantPermissionRequest {
            name: "r1".into(),
            perm: Some(Default::default()),
        };
        if let Some(p) = perm.perm.as_mut() {
            p.perm_type = PERM_READWRITE;
            p.key = b"a".to_vec();
            p.range_end = b"b".to_vec();
        }
        vec![
            user("root"),
            user("u1"),
            AuthCommand::RoleAdd(PbAuthRoleAddRequest { name: "r1".into() }),
            AuthCommand::RoleGrantPermission(perm),
            AuthCommand::UserGrantRole(PbAuthUserGrantRoleRequest {
                user: "u1".into(),
                role: "r1".into(),
            }),
            AuthCommand::UserGrantRole(PbAuthUserGrantRoleRequest {
                user: "root".into(),
                role: "root".into(),
            }),
            AuthCommand::Enable,
        ]
    }
}
