//! The byte layout of the key space in the B+ tree (written down in
//! `docs/storage-format.md`, "Key space"). Every decoder checks lengths and reserved bits, so
//! a damaged record is a `Corrupt` error naming it, never a panic.

use crate::btree::META_BYTES;
use crate::mvcc::auth::{AuthState, Permission, Role, User};
use crate::mvcc::{KvRef, LeaseTtl, WrittenRecord};

/// Tree keys of revision records: `k` + main u64 BE + sub u64 BE (revision order).
pub(super) const REVISION_PREFIX: u8 = b'k';
/// Tree keys of leases: `l` + ID (the i64's bits) u64 BE.
pub(super) const LEASE_PREFIX: u8 = b'l';
/// Tree keys of active alarms: `a` + alarm type (the i32's bits) u32 BE + member ID u64 BE;
/// the value is empty.
pub(super) const ALARM_PREFIX: u8 = b'a';
const ALARM_KEY_BYTES: usize = 13;
/// Tree keys of cluster members: `m` + member ID u64 BE; the value is
/// `membership::encode_member`'s.
pub(super) const MEMBER_PREFIX: u8 = b'm';
/// Tree keys of removed member IDs: `x` + member ID u64 BE; the value is empty.
pub(super) const REMOVED_PREFIX: u8 = b'x';
const MEMBER_KEY_BYTES: usize = 9;

/// The tree key of member `id` under `prefix` (`MEMBER_PREFIX` or `REMOVED_PREFIX`).
pub(super) fn member_key(prefix: u8, id: u64) -> [u8; MEMBER_KEY_BYTES] {
    let mut k = [0u8; MEMBER_KEY_BYTES];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The member ID of a member or removed-member key.
pub(super) fn decode_member_key(prefix: u8, k: &[u8]) -> Result<u64, String> {
    if k.len() != MEMBER_KEY_BYTES || k[0] != prefix {
        return Err(format!("member key {k:02x?} is malformed"));
    }
    Ok(u64::from_be_bytes(k[1..].try_into().expect("8 bytes")))
}
pub(super) const REVISION_KEY_BYTES: usize = 17;
const LEASE_KEY_BYTES: usize = 9;
const LEASE_VALUE_BYTES: usize = 16;
/// flags, create_revision, mod_revision, version, lease, key_len.
const RECORD_HEADER_BYTES: usize = 1 + 8 * 4 + 4;
const FLAG_TOMBSTONE: u8 = 1;

/// The meta record's `format` for this layout; 0 means no backend commit yet.
pub(super) const FORMAT_VERSION: u32 = 1;

/// The tree key of revision `(main, sub)`. Revisions are never negative, so their u64
/// big-endian bytes sort as the numbers do.
pub(super) fn revision_key(main: i64, sub: i64) -> [u8; REVISION_KEY_BYTES] {
    let mut k = [0u8; REVISION_KEY_BYTES];
    k[0] = REVISION_PREFIX;
    k[1..9].copy_from_slice(&(main as u64).to_be_bytes());
    k[9..17].copy_from_slice(&(sub as u64).to_be_bytes());
    k
}

/// `(main, sub)` of a revision record's tree key.
pub(super) fn decode_revision_key(k: &[u8]) -> Result<(i64, i64), String> {
    if k.len() != REVISION_KEY_BYTES || k[0] != REVISION_PREFIX {
        return Err(format!("revision key {k:02x?} is malformed"));
    }
    let main = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
    let sub = u64::from_be_bytes(k[9..17].try_into().expect("8 bytes"));
    match (i64::try_from(main), i64::try_from(sub)) {
        (Ok(main), Ok(sub)) => Ok((main, sub)),
        _ => Err(format!("revision key {k:02x?} is out of range")),
    }
}

/// Encodes a revision record's value into `buf` (cleared first): flags u8 (bit 0
/// tombstone), create_revision, mod_revision, version, lease (i64 LE each), key_len u32 LE,
/// key, value.
pub(super) fn encode_record(buf: &mut Vec<u8>, r: &WrittenRecord<'_>) {
    let kv = r.kv;
    buf.clear();
    buf.reserve(RECORD_HEADER_BYTES + kv.key.len() + kv.value.len());
    buf.push(if r.tombstone { FLAG_TOMBSTONE } else { 0 });
    for field in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        buf.extend_from_slice(&field.to_le_bytes());
    }
    buf.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
    buf.extend_from_slice(&kv.key);
    buf.extend_from_slice(&kv.value);
}

fn i64_at(v: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(v[at..at + 8].try_into().expect("8 bytes"))
}

/// A revision record's fields (borrowed from `v`) and its tombstone flag.
pub(super) fn decode_record(v: &[u8]) -> Result<(KvRef<'_>, bool), String> {
    if v.len() < RECORD_HEADER_BYTES {
        return Err(format!(
            "record of {} bytes is shorter than its header",
            v.len()
        ));
    }
    let flags = v[0];
    if flags & !FLAG_TOMBSTONE != 0 {
        return Err(format!("record flags {flags:#04x} has unknown bits"));
    }
    let key_len = u32::from_le_bytes(v[33..37].try_into().expect("4 bytes")) as usize;
    let rest = &v[RECORD_HEADER_BYTES..];
    if key_len > rest.len() {
        return Err(format!(
            "record key of {key_len} bytes overruns its {} bytes",
            v.len()
        ));
    }
    let (key, value) = rest.split_at(key_len);
    let kv = KvRef {
        key,
        value,
        create_revision: i64_at(v, 1),
        mod_revision: i64_at(v, 9),
        version: i64_at(v, 17),
        lease: i64_at(v, 25),
    };
    Ok((kv, flags & FLAG_TOMBSTONE != 0))
}

/// The tree key of lease `id`.
pub(super) fn lease_key(id: i64) -> [u8; LEASE_KEY_BYTES] {
    let mut k = [0u8; LEASE_KEY_BYTES];
    k[0] = LEASE_PREFIX;
    k[1..].copy_from_slice(&(id as u64).to_be_bytes());
    k
}

/// A lease's value: ttl_secs, remaining_ttl_secs (i64 LE each).
pub(super) fn encode_lease(l: &LeaseTtl) -> [u8; LEASE_VALUE_BYTES] {
    let mut v = [0u8; LEASE_VALUE_BYTES];
    v[..8].copy_from_slice(&l.ttl_secs.to_le_bytes());
    v[8..].copy_from_slice(&l.remaining_ttl_secs.to_le_bytes());
    v
}

pub(super) fn decode_lease(k: &[u8], v: &[u8]) -> Result<LeaseTtl, String> {
    if k.len() != LEASE_KEY_BYTES || k[0] != LEASE_PREFIX || v.len() != LEASE_VALUE_BYTES {
        return Err(format!(
            "lease entry {k:02x?} ({} bytes) is malformed",
            v.len()
        ));
    }
    Ok(LeaseTtl {
        id: u64::from_be_bytes(k[1..].try_into().expect("8 bytes")) as i64,
        ttl_secs: i64_at(v, 0),
        remaining_ttl_secs: i64_at(v, 8),
    })
}

/// The tree key of alarm `alarm` raised by member `member_id`.
pub(super) fn alarm_key(alarm: i32, member_id: u64) -> [u8; ALARM_KEY_BYTES] {
    let mut k = [0u8; ALARM_KEY_BYTES];
    k[0] = ALARM_PREFIX;
    k[1..5].copy_from_slice(&(alarm as u32).to_be_bytes());
    k[5..].copy_from_slice(&member_id.to_be_bytes());
    k
}

/// `(alarm type, member ID)` of an alarm entry.
pub(super) fn decode_alarm(k: &[u8], v: &[u8]) -> Result<(i32, u64), String> {
    if k.len() != ALARM_KEY_BYTES || k[0] != ALARM_PREFIX || !v.is_empty() {
        return Err(format!(
            "alarm entry {k:02x?} ({} bytes) is malformed",
            v.len()
        ));
    }
    let alarm = u32::from_be_bytes(k[1..5].try_into().expect("4 bytes")) as i32;
    Ok((
        alarm,
        u64::from_be_bytes(k[5..].try_into().expect("8 bytes")),
    ))
}

/// What the B+ tree's meta slot holds: the log position the committed key space includes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendMeta {
    /// The last raft log index whose effects the store holds (etcd's consistent index).
    pub consistent_index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The key space's revision. Stored, not derived: a txn whose records compaction has
    /// since removed still advanced it.
    pub revision: i64,
    /// etcd's `compactMainRev`: -1 before any compaction.
    pub compact_revision: i64,
}

impl BackendMeta {
    /// A store no commit has reached: an empty key space at revision 1.
    pub const FRESH: BackendMeta = BackendMeta {
        consistent_index: 0,
        term: 0,
        revision: 1,
        compact_revision: -1,
    };

    /// format u32 LE, reserved u32, consistent_index u64 LE, term u64 LE, revision i64 LE,
    /// compact_revision i64 LE, 24 reserved bytes (all zero).
    pub(super) fn encode(&self) -> [u8; META_BYTES] {
        let mut m = [0u8; META_BYTES];
        m[0..4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        m[8..16].copy_from_slice(&self.consistent_index.to_le_bytes());
        m[16..24].copy_from_slice(&self.term.to_le_bytes());
        m[24..32].copy_from_slice(&self.revision.to_le_bytes());
        m[32..40].copy_from_slice(&self.compact_revision.to_le_bytes());
        m
    }

    /// `Err(Some(format))` for a format this build does not know, `Err(None)` for a record
    /// that is malformed.
    pub(super) fn decode(m: &[u8; META_BYTES]) -> Result<BackendMeta, Option<u32>> {
        let format = u32::from_le_bytes(m[0..4].try_into().expect("4 bytes"));
        if format == 0 {
            // A fresh file: the B+ tree's meta slot starts zeroed.
            return if m.iter().all(|b| *b == 0) {
                Ok(BackendMeta::FRESH)
            } else {
                Err(None)
            };
        }
        if format != FORMAT_VERSION {
            return Err(Some(format));
        }
        if m[4..8].iter().chain(&m[40..]).any(|b| *b != 0) {
            return Err(None);
        }
        let u = |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().expect("8 bytes"));
        Ok(BackendMeta {
            consistent_index: u(8),
            term: u(16),
            revision: u(24) as i64,
            compact_revision: u(32) as i64,
        })
    }
}

/// Tree key of the auth switch and revision: `A` alone; the value is enabled u8 (0 or 1)
/// then the auth revision u64 LE.
pub(super) const AUTH_META_KEY: &[u8] = b"A";
const AUTH_META_VALUE_BYTES: usize = 9;
/// Tree keys of users: `u` + name; the value is etcd's `authpb.User` encoding.
pub(super) const USER_PREFIX: u8 = b'u';
/// Tree keys of roles: `r` + name; the value is etcd's `authpb.Role` encoding.
pub(super) const ROLE_PREFIX: u8 = b'r';

/// `authpb.UserAddOptions`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
struct StoredUserOptions {
    #[prost(bool, tag = "1")]
    no_password: bool,
}

/// `authpb.User`: the password field holds the bcrypt hash, as etcd stores it.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredUser {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    password: Vec<u8>,
    #[prost(string, repeated, tag = "3")]
    roles: Vec<String>,
    #[prost(message, optional, tag = "4")]
    options: Option<StoredUserOptions>,
}

/// `authpb.Permission`.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredPermission {
    #[prost(int32, tag = "1")]
    perm_type: i32,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    range_end: Vec<u8>,
}

/// `authpb.Role`.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredRole {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    key_permission: Vec<StoredPermission>,
}

pub(super) fn encode_auth_meta(auth: &AuthState) -> [u8; AUTH_META_VALUE_BYTES] {
    let mut v = [0u8; AUTH_META_VALUE_BYTES];
    v[0] = u8::from(auth.enabled);
    v[1..].copy_from_slice(&auth.revision.to_le_bytes());
    v
}

/// `(enabled, revision)` of the auth meta entry.
pub(super) fn decode_auth_meta(v: &[u8]) -> Result<(bool, u64), String> {
    if v.len() != AUTH_META_VALUE_BYTES || v[0] > 1 {
        return Err(format!("auth meta entry ({} bytes) is malformed", v.len()));
    }
    Ok((
        v[0] == 1,
        u64::from_le_bytes(v[1..].try_into().expect("8 bytes")),
    ))
}

pub(super) fn user_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(USER_PREFIX);
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn role_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(ROLE_PREFIX);
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn encode_user(u: &User) -> Vec<u8> {
    prost::Message::encode_to_vec(&StoredUser {
        name: u.name.as_bytes().to_vec(),
        password: u.password_hash.as_bytes().to_vec(),
        roles: u.roles.clone(),
        options: u
            .no_password
            .then_some(StoredUserOptions { no_password: true }),
    })
}

pub(super) fn decode_user(k: &[u8], v: &[u8]) -> Result<User, String> {
    let bad = |why: String| format!("user entry {k:02x?}: {why}");
    let s: StoredUser = prost::Message::decode(v).map_err(|e| bad(e.to_string()))?;
    let name = String::from_utf8(s.name).map_err(|e| bad(e.to_string()))?;
    if k.first() != Some(&USER_PREFIX) || k[1..] != *name.as_bytes() {
        return Err(bad(format!("holds user {name:?}")));
    }
    let mut roles = s.roles;
    roles.sort();
    roles.dedup();
    Ok(User {
        name,
        password_hash: String::from_utf8(s.password).map_err(|e| bad(e.to_string()))?,
        roles,
        no_password: s.options.is_some_and(|o| o.no_password),
    })
}

pub(super) fn encode_role(r: &Role) -> Vec<u8> {
    prost::Message::encode_to_vec(&StoredRole {
        name: r.name.as_bytes().to_vec(),
        key_permission: r
            .permissions
            .iter()
            .map(|p| StoredPermission {
                perm_type: p.perm_type,
                key: p.key.clone(),
                range_end: p.range_end.clone(),
            })
            .collect(),
    })
}

pub(super) fn decode_role(k: &[u8], v: &[u8]) -> Result<Role, String> {
    let bad = |why: String| format!("role entry {k:02x?}: {why}");
    let s: StoredRole = prost::Message::decode(v).map_err(|e| bad(e.to_string()))?;
    let name = String::from_utf8(s.name).map_err(|e| bad(e.to_string()))?;
    if k.first() != Some(&ROLE_PREFIX) || k[1..] != *name.as_bytes() {
        return Err(bad(format!("holds role {name:?}")));
    }
    Ok(Role {
        name,
        permissions: s
            .key_permission
            .into_iter()
            .map(|p| Permission {
                perm_type: p.perm_type,
                key: p.key,
                range_end: p.range_end,
            })
            .collect(),
    })
}

#[cfg(test)]
mod prefix_tests {
    use super::*;

    /// Every family of tree keys has its own first byte: two families sharing one would
    /// read each other's entries back (members and roles once did).
    #[test]
    fn key_prefixes_are_distinct() {
        let mut prefixes = vec![
            REVISION_PREFIX,
            LEASE_PREFIX,
            ALARM_PREFIX,
            MEMBER_PREFIX,
            REMOVED_PREFIX,
            USER_PREFIX,
            ROLE_PREFIX,
        ];
        prefixes.extend_from_slice(AUTH_META_KEY);
        let mut sorted = prefixes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), prefixes.len(), "{prefixes:?}");
    }
}
