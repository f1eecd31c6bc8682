//! Human and JSON renderings of what the WAL carries: the metadata record, raft entries and
//! the client requests inside them (`corekv_engine::request::InternalRequest`).

use corekv_engine::pb::{
    PbCompare, PbDeleteRequest, PbPutRequest, PbRangeRequest, PbTargetUnion, PbTxnOpRequest,
    PbTxnRequest, PbTxnRequestOp,
};
use corekv_engine::request::InternalRequest;
use serde_json::{json, Map, Value};

use crate::output::{escape, quoted, quoted_value, VALUE_PREVIEW_BYTES};

/// Who a data directory belongs to: the WAL's metadata record, as `src/recovery.rs` writes
/// it: `member_id u64 LE | cluster_id u64 LE | name_len u32 LE | name (UTF-8)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
}

impl Identity {
    pub fn decode(payload: &[u8]) -> Result<Identity, String> {
        if payload.len() < 20 {
            return Err(format!(
                "metadata record of {} bytes is too short",
                payload.len()
            ));
        }
        let member_id = u64::from_le_bytes(payload[0..8].try_into().expect("8 bytes"));
        let cluster_id = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
        let name_len = u32::from_le_bytes(payload[16..20].try_into().expect("4 bytes")) as usize;
        if payload.len() - 20 != name_len {
            return Err(format!(
                "metadata name length {name_len} does not match the {} bytes left",
                payload.len() - 20
            ));
        }
        let name = String::from_utf8(payload[20..].to_vec())
            .map_err(|_| "metadata name is not UTF-8".to_string())?;
        Ok(Identity {
            member_id,
            cluster_id,
            name,
        })
    }

    /// The inverse of [`Identity::decode`] (`Identity::encode` in `src/recovery.rs`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.name.len());
        out.extend_from_slice(&self.member_id.to_le_bytes());
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&(self.name.len() as u32).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub fn simple(&self) -> String {
        format!(
            "member_id={:x} cluster_id={:x} name={}",
            self.member_id,
            self.cluster_id,
            quoted(self.name.as_bytes())
        )
    }

    pub fn json(&self) -> Value {
        json!({"member_id": self.member_id, "cluster_id": self.cluster_id, "name": self.name})
    }
}

/// The operation a request carries (`"empty"` when none is set), and how many are set
/// (exactly one in a well-formed request).
pub fn request_kind(r: &InternalRequest) -> (&'static str, usize) {
    let set = [
        ("put", r.put.is_some()),
        ("delete_range", r.delete_range.is_some()),
        ("txn", r.txn.is_some()),
        ("compaction", r.compaction.is_some()),
        ("lease_grant", r.lease_grant.is_some()),
        ("lease_revoke", r.lease_revoke.is_some()),
        ("lease_checkpoint", r.lease_checkpoint.is_some()),
        ("auth_enable", r.auth_enable.is_some()),
        ("auth_disable", r.auth_disable.is_some()),
        ("auth_user_add", r.auth_user_add.is_some()),
        ("auth_user_delete", r.auth_user_delete.is_some()),
        (
            "auth_user_change_password",
            r.auth_user_change_password.is_some(),
        ),
        ("auth_user_grant_role", r.auth_user_grant_role.is_some()),
        ("auth_user_revoke_role", r.auth_user_revoke_role.is_some()),
        ("auth_role_add", r.auth_role_add.is_some()),
        ("auth_role_delete", r.auth_role_delete.is_some()),
        (
            "auth_role_grant_permission",
            r.auth_role_grant_permission.is_some(),
        ),
        (
            "auth_role_revoke_permission",
            r.auth_role_revoke_permission.is_some(),
        ),
    ];
    let n = set.iter().filter(|(_, s)| *s).count();
    let first = set.iter().find(|(_, s)| *s).map_or("empty", |(k, _)| k);
    (first, n)
}

/// etcd prints lease ids in hex.
fn lease_id(id: i64) -> String {
    format!("{:x}", id as u64)
}

/// One line: `put key="foo" value="bar" lease=0`. Every operation set is shown (a
/// well-formed request has exactly one).
pub fn request_simple(r: &InternalRequest) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &r.put {
        parts.push(put_simple(p));
    }
    if let Some(d) = &r.delete_range {
        parts.push(delete_simple(d));
    }
    if let Some(t) = &r.txn {
        parts.push(format!("txn {}", txn_simple(t)));
    }
    if let Some(c) = &r.compaction {
        parts.push(format!(
            "compaction revision={} physical={}",
            c.revision, c.physical
        ));
    }
    if let Some(g) = &r.lease_grant {
        parts.push(format!("lease_grant id={} ttl={}", lease_id(g.id), g.ttl));
    }
    if let Some(v) = &r.lease_revoke {
        parts.push(format!("lease_revoke id={}", lease_id(v.id)));
    }
    if let Some(c) = &r.lease_checkpoint {
        let items: Vec<String> = c
            .checkpoints
            .iter()
            .map(|c| format!("id={} remaining_ttl={}", lease_id(c.id), c.remaining_ttl))
            .collect();
        parts.push(format!(
            "lease_checkpoint checkpoints=[{}]",
            items.join(", ")
        ));
    }
    parts.extend(auth_simple(r));
    if parts.is_empty() {
        return "empty_request".to_string();
    }
    parts.join(" ; ")
}

/// Auth requests by name and subject; password hashes are not printed.
fn auth_simple(r: &InternalRequest) -> Vec<String> {
    let mut parts = Vec::new();
    if r.auth_enable.is_some() {
        parts.push("auth_enable".to_string());
    }
    if r.auth_disable.is_some() {
        parts.push("auth_disable".to_string());
    }
    if let Some(u) = &r.auth_user_add {
        let no_password = u.options.is_some_and(|o| o.no_password);
        parts.push(format!(
            "auth_user_add name={:?}{}",
            u.name,
            if no_password { " no_password" } else { "" }
        ));
    }
    if let Some(u) = &r.auth_user_delete {
        parts.push(format!("auth_user_delete name={:?}", u.name));
    }
    if let Some(u) = &r.auth_user_change_password {
        parts.push(format!("auth_user_change_password name={:?}", u.name));
    }
    if let Some(g) = &r.auth_user_grant_role {
        parts.push(format!(
            "auth_user_grant_role user={:?} role={:?}",
            g.user, g.role
        ));
    }
    if let Some(g) = &r.auth_user_revoke_role {
        parts.push(format!(
            "auth_user_revoke_role name={:?} role={:?}",
            g.name, g.role
        ));
    }
    if let Some(g) = &r.auth_role_add {
        parts.push(format!("auth_role_add name={:?}", g.name));
    }
    if let Some(g) = &r.auth_role_delete {
        parts.push(format!("auth_role_delete role={:?}", g.role));
    }
    if let Some(g) = &r.auth_role_grant_permission {
        let perm = g.perm.as_ref().map_or("none".to_string(), |p| {
            format!(
                "type={} key={} range_end={}",
                p.perm_type,
                quoted(&p.key),
                quoted(&p.range_end)
            )
        });
        parts.push(format!(
            "auth_role_grant_permission name={:?} {perm}",
            g.name
        ));
    }
    if let Some(g) = &r.auth_role_revoke_permission {
        parts.push(format!(
            "auth_role_revoke_permission role={:?} key={} range_end={}",
            g.role,
            quoted(&g.key),
            quoted(&g.range_end)
        ));
    }
    parts
}

fn put_simple(p: &PbPutRequest) -> String {
    let mut s = format!(
        "put key={} value={} lease={}",
        quoted(&p.key),
        quoted_value(&p.value),
        lease_id(p.lease)
    );
    for (set, name) in [
        (p.prev_kv, "prev_kv"),
        (p.ignore_value, "ignore_value"),
        (p.ignore_lease, "ignore_lease"),
    ] {
        if set {
            s.push(' ');
            s.push_str(name);
        }
    }
    s
}

fn delete_simple(d: &PbDeleteRequest) -> String {
    let mut s = format!(
        "delete_range key={} range_end={}",
        quoted(&d.key),
        quoted(&d.range_end)
    );
    if d.prev_kv {
        s.push_str(" prev_kv");
    }
    s
}

fn range_simple(r: &PbRangeRequest) -> String {
    let mut s = format!(
        "range key={} range_end={}",
        quoted(&r.key),
        quoted(&r.range_end)
    );
    for (v, name) in [(r.limit, "limit"), (r.revision, "revision")] {
        if v != 0 {
            s.push_str(&format!(" {name}={v}"));
        }
    }
    for (set, name) in [(r.keys_only, "keys_only"), (r.serializable, "serializable")] {
        if set {
            s.push(' ');
            s.push_str(name);
        }
    }
    s
}

fn compare_result(result: i32) -> &'static str {
    match result {
        0 => "=",
        1 => ">",
        2 => "<",
        3 => "!=",
        _ => "?",
    }
}

fn compare_target(target: i32) -> &'static str {
    match target {
        0 => "version",
        1 => "create",
        2 => "mod",
        3 => "value",
        4 => "lease",
        _ => "unknown_target",
    }
}

fn compare_operand(c: &PbCompare) -> String {
    match &c.target_union {
        Some(PbTargetUnion::Version(v))
        | Some(PbTargetUnion::CreateRevision(v))
        | Some(PbTargetUnion::ModRevision(v)) => v.to_string(),
        Some(PbTargetUnion::Lease(v)) => lease_id(*v),
        Some(PbTargetUnion::Value(v)) => quoted_value(v),
        None => "(unset)".to_string(),
    }
}

/// `value("k") = "v"`, `mod("a" range_end="b") > 3`.
fn compare_simple(c: &PbCompare) -> String {
    let range = if c.range_end.is_empty() {
        String::new()
    } else {
        format!(" range_end={}", quoted(&c.range_end))
    };
    format!(
        "{}({}{range}) {} {}",
        compare_target(c.target),
        quoted(&c.key),
        compare_result(c.result),
        compare_operand(c)
    )
}

fn op_simple(op: &PbTxnRequestOp) -> String {
    match &op.request {
        Some(PbTxnOpRequest::RequestRange(r)) => range_simple(r),
        Some(PbTxnOpRequest::RequestPut(p)) => put_simple(p),
        Some(PbTxnOpRequest::RequestDeleteRange(d)) => delete_simple(d),
        Some(PbTxnOpRequest::RequestTxn(t)) => format!("txn{{{}}}", txn_simple(t)),
        None => "empty_op".to_string(),
    }
}

fn txn_simple(t: &PbTxnRequest) -> String {
    let list = |ops: &[PbTxnRequestOp]| ops.iter().map(op_simple).collect::<Vec<_>>().join(", ");
    format!(
        "compares=[{}] success=[{}] failure=[{}]",
        t.compare
            .iter()
            .map(compare_simple)
            .collect::<Vec<_>>()
            .join(", "),
        list(&t.success),
        list(&t.failure)
    )
}

// ---------------------------------------------------------------------------------------
// JSON: the same content, keys and values escaped as text (`\xNN` for non-printable bytes,
// `\\` for a backslash), values cut after 64 bytes with `value_size` giving the length.

fn key_json(bytes: &[u8]) -> Value {
    Value::String(escape(bytes, false))
}

fn value_fields(m: &mut Map<String, Value>, name: &str, v: &[u8]) {
    let shown = &v[..v.len().min(VALUE_PREVIEW_BYTES)];
    m.insert(name.into(), Value::String(escape(shown, false)));
    m.insert(format!("{name}_size"), json!(v.len()));
    m.insert(
        format!("{name}_truncated"),
        json!(v.len() > VALUE_PREVIEW_BYTES),
    );
}

fn put_json(p: &PbPutRequest) -> Value {
    let mut m = Map::new();
    m.insert("op".into(), json!("put"));
    m.insert("key".into(), key_json(&p.key));
    value_fields(&mut m, "value", &p.value);
    m.insert("lease".into(), json!(p.lease));
    m.insert("prev_kv".into(), json!(p.prev_kv));
    m.insert("ignore_value".into(), json!(p.ignore_value));
    m.insert("ignore_lease".into(), json!(p.ignore_lease));
    Value::Object(m)
}

fn delete_json(d: &PbDeleteRequest) -> Value {
    json!({"op": "delete_range", "key": key_json(&d.key), "range_end": key_json(&d.range_end),
           "prev_kv": d.prev_kv})
}

fn range_json(r: &PbRangeRequest) -> Value {
    json!({"op": "range", "key": key_json(&r.key), "range_end": key_json(&r.range_end),
           "limit": r.limit, "revision": r.revision, "keys_only": r.keys_only,
           "serializable": r.serializable})
}

fn compare_json(c: &PbCompare) -> Value {
    let mut m = Map::new();
    m.insert("target".into(), json!(compare_target(c.target)));
    m.insert("result".into(), json!(compare_result(c.result)));
    m.insert("key".into(), key_json(&c.key));
    m.insert("range_end".into(), key_json(&c.range_end));
    match &c.target_union {
        Some(PbTargetUnion::Version(v)) => {
            m.insert("version".into(), json!(v));
        }
        Some(PbTargetUnion::CreateRevision(v)) => {
            m.insert("create_revision".into(), json!(v));
        }
        Some(PbTargetUnion::ModRevision(v)) => {
            m.insert("mod_revision".into(), json!(v));
        }
        Some(PbTargetUnion::Lease(v)) => {
            m.insert("lease".into(), json!(v));
        }
        Some(PbTargetUnion::Value(v)) => value_fields(&mut m, "value", v),
        None => {}
    }
    Value::Object(m)
}

fn op_json(op: &PbTxnRequestOp) -> Value {
    match &op.request {
        Some(PbTxnOpRequest::RequestRange(r)) => range_json(r),
        Some(PbTxnOpRequest::RequestPut(p)) => put_json(p),
        Some(PbTxnOpRequest::RequestDeleteRange(d)) => delete_json(d),
        Some(PbTxnOpRequest::RequestTxn(t)) => txn_json(t),
        None => json!({"op": "empty"}),
    }
}

fn txn_json(t: &PbTxnRequest) -> Value {
    json!({
        "op": "txn",
        "compares": t.compare.iter().map(compare_json).collect::<Vec<_>>(),
        "success": t.success.iter().map(op_json).collect::<Vec<_>>(),
        "failure": t.failure.iter().map(op_json).collect::<Vec<_>>(),
    })
}

/// The request as JSON: `{"id": .., "ops": [ {"op": "put", ...} ]}` (one op when
/// well-formed).
pub fn request_json(r: &InternalRequest) -> Value {
    let mut ops = Vec::new();
    if let Some(p) = &r.put {
        ops.push(put_json(p));
    }
    if let Some(d) = &r.delete_range {
        ops.push(delete_json(d));
    }
    if let Some(t) = &r.txn {
        ops.push(txn_json(t));
    }
    if let Some(c) = &r.compaction {
        ops.push(json!({"op": "compaction", "revision": c.revision, "physical": c.physical}));
    }
    if let Some(g) = &r.lease_grant {
        ops.push(json!({"op": "lease_grant", "id": g.id, "ttl": g.ttl}));
    }
    if let Some(v) = &r.lease_revoke {
        ops.push(json!({"op": "lease_revoke", "id": v.id}));
    }
    if let Some(c) = &r.lease_checkpoint {
        let items: Vec<Value> = c
            .checkpoints
            .iter()
            .map(|c| json!({"id": c.id, "remaining_ttl": c.remaining_ttl}))
            .collect();
        ops.push(json!({"op": "lease_checkpoint", "checkpoints": items}));
    }
    for text in auth_simple(r) {
        let op = text.split(' ').next().unwrap_or_default().to_string();
        ops.push(json!({"op": op, "request": text}));
    }
    json!({"id": r.id, "ops": ops})
}

#[cfg(test)]
mod auth_tests {
    use super::*;
    use corekv_engine::pb::PbAuthUserAddRequest;
    use corekv_engine::request::{AuthCommand, Command};

    #[test]
    fn auth_requests_are_described_without_their_password_hash() {
        let add = PbAuthUserAddRequest {
            name: "alice".into(),
            hashed_password: "$2b$10$secret-hash".into(),
            ..Default::default()
        };
        let r = InternalRequest::new(4, Command::Auth(AuthCommand::UserAdd(add)));
        assert_eq!(request_simple(&r), r#"auth_user_add name="alice""#);
        assert_eq!(request_kind(&r), ("auth_user_add", 1));
        let json = request_json(&r).to_string();
        assert!(
            json.contains("auth_user_add") && !json.contains("secret-hash"),
            "{json}"
        );
        let enable = InternalRequest::new(5, Command::Auth(AuthCommand::Enable));
        assert_eq!(request_simple(&enable), "auth_enable");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_engine::pb::{PbCompactionRequest, PbLeaseGrantRequest};
    use corekv_engine::request::{Command, LeaseCheckpoint, LeaseCheckpointRequest};

    fn put(k: &[u8], v: &[u8]) -> PbPutRequest {
        PbPutRequest {
            key: k.to_vec(),
            value: v.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn identity_decodes_like_recovery_writes_it() {
        let mut p = Vec::new();
        p.extend_from_slice(&0xabu64.to_le_bytes());
        p.extend_from_slice(&0xcdu64.to_le_bytes());
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(b"n1");
        let id = Identity::decode(&p).unwrap();
        assert_eq!(id.simple(), "member_id=ab cluster_id=cd name=\"n1\"");
        assert_eq!(id.encode(), p);
        assert!(Identity::decode(&p[..19]).is_err());
        p.push(b'x');
        assert!(Identity::decode(&p).is_err());
    }

    #[test]
    fn renders_each_request_kind() {
        let r = InternalRequest::new(1, Command::Put(put(b"foo", b"bar")));
        assert_eq!(request_simple(&r), r#"put key="foo" value="bar" lease=0"#);
        assert_eq!(request_kind(&r), ("put", 1));
        let j = request_json(&r);
        assert_eq!(j["ops"][0]["key"], "foo");
        assert_eq!(j["ops"][0]["value_size"], 3);

        let r = InternalRequest::new(
            2,
            Command::DeleteRange(PbDeleteRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                prev_kv: true,
            }),
        );
        assert_eq!(
            request_simple(&r),
            r#"delete_range key="a" range_end="b" prev_kv"#
        );

        let txn = PbTxnRequest {
            compare: vec![
                PbCompare {
                    result: 0,
                    target: 3,
                    key: b"k".to_vec(),
                    target_union: Some(PbTargetUnion::Value(b"v".to_vec())),
                    ..Default::default()
                },
                PbCompare {
                    result: 1,
                    target: 2,
                    key: b"a".to_vec(),
                    range_end: b"b".to_vec(),
                    target_union: Some(PbTargetUnion::ModRevision(3)),
                },
            ],
            success: vec![PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestPut(put(b"k", b"x"))),
            }],
            failure: vec![PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestRange(PbRangeRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                })),
            }],
        };
        let r = InternalRequest::new(3, Command::Txn(txn));
        assert_eq!(
            request_simple(&r),
            r#"txn compares=[value("k") = "v", mod("a" range_end="b") > 3] success=[put key="k" value="x" lease=0] failure=[range key="k" range_end=""]"#
        );
        assert_eq!(request_json(&r)["ops"][0]["compares"][1]["mod_revision"], 3);

        let r = InternalRequest::new(
            4,
            Command::Compact(PbCompactionRequest {
                revision: 7,
                physical: false,
            }),
        );
        assert_eq!(request_simple(&r), "compaction revision=7 physical=false");
        let r = InternalRequest::new(
            5,
            Command::LeaseGrant(PbLeaseGrantRequest {
                id: 0x694d,
                ttl: 60,
            }),
        );
        assert_eq!(request_simple(&r), "lease_grant id=694d ttl=60");
        let r = InternalRequest::new(
            6,
            Command::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: vec![LeaseCheckpoint {
                    id: 0x10,
                    remaining_ttl: 5,
                }],
            }),
        );
        assert_eq!(
            request_simple(&r),
            "lease_checkpoint checkpoints=[id=10 remaining_ttl=5]"
        );
        assert_eq!(request_kind(&InternalRequest::default()), ("empty", 0));
        assert_eq!(request_simple(&InternalRequest::default()), "empty_request");
    }

    #[test]
    fn long_and_binary_values_are_cut_and_escaped() {
        let v = vec![0xffu8; 100];
        let r = InternalRequest::new(1, Command::Put(put(b"k\x01", &v)));
        let s = request_simple(&r);
        assert!(s.starts_with(r#"put key="k\x01" value="\xff\xff"#), "{s}");
        assert!(s.ends_with(r#""...(100 bytes) lease=0"#), "{s}");
        let j = request_json(&r);
        assert_eq!(j["ops"][0]["value_size"], 100);
        assert_eq!(j["ops"][0]["value_truncated"], true);
        assert_eq!(j["ops"][0]["value"].as_str().unwrap().len(), 64 * 4);
    }
}
