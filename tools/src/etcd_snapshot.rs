//! The contents of an etcd snapshot (a bbolt file, see `bbolt.rs`) in corekv's terms.
//!
//! etcd keeps its key space in bbolt buckets:
//! - `key`: one entry per revision record. Key: main revision u64 BE, `_`, sub revision u64
//!   BE, plus a trailing `t` for a tombstone (a delete). Value: `mvccpb.KeyValue` protobuf
//!   (a tombstone's holds only the key).
//! - `lease`: one entry per lease. Key: the lease ID u64 BE. Value: `leasepb.Lease`
//!   protobuf `{ID int64 = 1, TTL int64 = 2, RemainingTTL int64 = 3}`.
//! - `meta`: `consistent_index` (u64 BE), `finishedCompactRev` and `scheduledCompactRev`
//!   (revision encodings as in `key`), and in etcd 3.5 `term` and more.
//! - `members`, `members_removed`, `cluster`, `alarm`, `auth`, `authUsers`, `authRoles`: the
//!   membership, alarms and authentication, which a restore does not carry over (a
//!   restored member starts a new cluster; corekv has no auth yet).

use bytes::Bytes;
use corekv_engine::mvcc::{KeyValue, LeaseTtl};
use corekv_engine::pb::PbKeyValue;
use prost::Message;

use crate::bbolt::{self, Bucket, Entry};

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, prost::Message)]
struct LeasePb {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// A revision record: `(main, sub, kv, tombstone)`, as `Backend::import` takes it.
pub type Record = (i64, i64, KeyValue, bool);

/// What an etcd snapshot holds.
#[derive(Debug, Default)]
pub struct EtcdSnapshot {
    /// etcdutl's snapshot hash: CRC-32C over every top-level bucket's name, then each of
    /// its keys and values, in order.
    pub hash: u32,
    /// Entries in all buckets (etcdutl's TOTAL KEYS).
    pub total_keys: u64,
    /// bbolt's `tx.Size()` (etcdutl's TOTAL SIZE).
    pub size: u64,
    pub page_size: usize,
    /// The records of the `key` bucket, in revision order.
    pub records: Vec<Record>,
    pub leases: Vec<LeaseTtl>,
    pub consistent_index: Option<u64>,
    pub term: Option<u64>,
    pub finished_compact: Option<i64>,
    pub scheduled_compact: Option<i64>,
    /// Buckets not carried over, with their entry counts.
    pub ignored: Vec<(String, u64)>,
    /// The `auth` bucket says authentication was enabled.
    pub auth_enabled: bool,
}

/// The key space a restore writes.
#[derive(Debug)]
pub struct Plan {
    pub records: Vec<Record>,
    pub leases: Vec<LeaseTtl>,
    /// etcd's `compactMainRev`, -1 before any compaction.
    pub compact_revision: i64,
    pub revision: i64,
    /// Records dropped by finishing a compaction etcd had scheduled but not finished.
    pub compacted_now: usize,
}

fn be_u64(v: &[u8], what: &str) -> Result<u64, String> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| format!("{what}: {} bytes, expected 8", v.len()))?;
    Ok(u64::from_be_bytes(b))
}

fn rev_part(v: &[u8], what: &str) -> Result<i64, String> {
    i64::try_from(be_u64(v, what)?).map_err(|_| format!("{what}: revision out of range"))
}

/// `(main, sub, tombstone)` of a `key` bucket key (or of a compaction revision in `meta`,
/// which has no tombstone mark).
pub fn decode_revision(k: &[u8]) -> Result<(i64, i64, bool), String> {
    let tombstone = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => return Err(format!("revision key {k:02x?} is malformed")),
    };
    if k[8] != b'_' {
        return Err(format!("revision key {k:02x?} has no '_' separator"));
    }
    Ok((
        rev_part(&k[..8], "main revision")?,
        rev_part(&k[9..17], "sub revision")?,
        tombstone,
    ))
}

fn key_record(e: &Entry<'_>) -> Result<Record, String> {
    let (main, sub, tombstone) = decode_revision(e.key)?;
    let at = format!("record ({main}, {sub})");
    let pb = PbKeyValue::decode(e.value)
        .map_err(|err| format!("{at}: value is not an mvccpb.KeyValue: {err}"))?;
    if main < 1 {
        return Err(format!("{at}: main revision below 1"));
    }
    let kv = if tombstone {
        KeyValue {
            key: Bytes::from(pb.key),
            mod_revision: main,
            ..Default::default()
        }
    } else {
        if pb.mod_revision != main {
            return Err(format!(
                "{at}: mod_revision {} differs from its key's revision",
                pb.mod_revision
            ));
        }
        if pb.create_revision < 1 || pb.create_revision > main || pb.version < 1 {
            return Err(format!(
                "{at}: create_revision {} / version {} out of range",
                pb.create_revision, pb.version
            ));
        }
        KeyValue {
            key: Bytes::from(pb.key),
            value: Bytes::from(pb.value),
            create_revision: pb.create_revision,
            mod_revision: pb.mod_revision,
            version: pb.version,
            lease: pb.lease,
        }
    };
    Ok((main, sub, kv, tombstone))
}

fn lease(e: &Entry<'_>) -> Result<LeaseTtl, String> {
    let id = be_u64(e.key, "lease key")? as i64;
    let pb = LeasePb::decode(e.value)
        .map_err(|err| format!("lease {id:x}: value is not a leasepb.Lease: {err}"))?;
    if pb.id != id || id == 0 {
        return Err(format!("lease {id:x}: its value names lease {:x}", pb.id));
    }
    if pb.ttl < 0 || pb.remaining_ttl < 0 {
        return Err(format!(
            "lease {id:x}: negative TTL {} / remaining {}",
            pb.ttl, pb.remaining_ttl
        ));
    }
    Ok(LeaseTtl {
        id,
        ttl_secs: pb.ttl,
        remaining_ttl_secs: pb.remaining_ttl,
    })
}

fn meta_entry(s: &mut EtcdSnapshot, e: &Entry<'_>) -> Result<(), String> {
    let compact = |v: &[u8], what: &str| -> Result<i64, String> {
        decode_revision(v)
            .map(|(main, _, _)| main)
            .map_err(|err| format!("{what}: {err}"))
    };
    match e.key {
        b"consistent_index" => s.consistent_index = Some(be_u64(e.value, "consistent_index")?),
        b"term" => s.term = Some(be_u64(e.value, "term")?),
        b"finishedCompactRev" => s.finished_compact = Some(compact(e.value, "finishedCompactRev")?),
        b"scheduledCompactRev" => {
            s.scheduled_compact = Some(compact(e.value, "scheduledCompactRev")?)
        }
        _ => {}
    }
    Ok(())
}

/// Reads the whole image (the file without its trailing sha256).
pub fn read(image: &[u8]) -> Result<EtcdSnapshot, String> {
    let db = bbolt::Db::open(image)?;
    let mut s = EtcdSnapshot {
        size: db.size(),
        page_size: db.page_size(),
        ..Default::default()
    };
    let mut walker = db.walker();
    let mut buckets: Vec<(&[u8], Bucket<'_>)> = Vec::new();
    walker
        .for_each(db.root(), &mut |e| match e.bucket {
            Some(b) => {
                buckets.push((e.key, b));
                Ok(())
            }
            None => Err(format!(
                "top-level entry {:?} is not a bucket",
                String::from_utf8_lossy(e.key)
            )),
        })
        .map_err(|e| format!("root bucket: {e}"))?;
    let mut crc = 0u32;
    for (name, bucket) in buckets {
        let label = String::from_utf8_lossy(name).into_owned();
        crc = crc32c::crc32c_append(crc, name);
        let mut count = 0u64;
        let s_ref = &mut s;
        walker
            .for_each(bucket, &mut |e| {
                crc = crc32c::crc32c_append(crc, e.key);
                if e.bucket.is_none() {
                    crc = crc32c::crc32c_append(crc, e.value);
                }
                count += 1;
                let known = matches!(name, b"key" | b"lease" | b"meta");
                if known && e.bucket.is_some() {
                    return Err(format!("unexpected nested bucket {:02x?}", e.key));
                }
                match name {
                    b"key" => s_ref.records.push(key_record(&e)?),
                    b"lease" => s_ref.leases.push(lease(&e)?),
                    b"meta" => meta_entry(s_ref, &e)?,
                    b"auth" if e.key == b"authEnabled" => s_ref.auth_enabled = e.value == [1],
                    _ => {}
                }
                Ok(())
            })
            .map_err(|e| format!("bucket {label:?}: {e}"))?;
        s.total_keys += count;
        if !matches!(name, b"key" | b"lease" | b"meta") {
            s.ignored.push((label, count));
        }
    }
    s.hash = crc;
    Ok(s)
}

impl EtcdSnapshot {
    /// The newest record's main revision (what etcdutl reports as REVISION); 0 if none.
    pub fn newest_main(&self) -> i64 {
        self.records.last().map_or(0, |r| r.0)
    }

    /// The compaction etcd would run at start: a scheduled one it had not finished.
    fn pending_compaction(&self) -> Option<i64> {
        match (self.scheduled_compact, self.finished_compact) {
            (Some(s), f) if s > f.unwrap_or(-1) => Some(s),
            _ => None,
        }
    }

    /// The compacted revision of the restored key space.
    pub fn compact_revision(&self) -> i64 {
        self.pending_compaction()
            .or(self.finished_compact)
            .unwrap_or(-1)
    }

    /// The revision of the restored key space, as etcd's restore computes it: the newest
    /// record's, but not below the compacted revision (a compaction may have removed the
    /// newest records, tombstones) nor below 1.
    pub fn revision(&self) -> i64 {
        self.newest_main().max(self.compact_revision()).max(1)
    }

    /// What a restore writes: every record, except that a compaction etcd had scheduled but
    /// not finished (`scheduledCompactRev` above `finishedCompactRev`, which etcd resumes
    /// at start) is finished here: below it, each key keeps only its newest record, and not
    /// even that if it is a tombstone.
    pub fn into_plan(self) -> Plan {
        let compact_revision = self.compact_revision();
        let revision = self.revision();
        let pending = self.pending_compaction();
        let mut records = self.records;
        let mut compacted_now = 0;
        if let Some(at) = pending {
            let mut newest: std::collections::HashMap<Bytes, usize> =
                std::collections::HashMap::new();
            for (i, r) in records.iter().enumerate().take_while(|(_, r)| r.0 <= at) {
                newest.insert(r.2.key.clone(), i);
            }
            let before = records.len();
            let mut i = 0;
            records.retain(|r| {
                let keep = r.0 > at || (newest.get(&r.2.key) == Some(&i) && !r.3);
                i += 1;
                keep
            });
            compacted_now = before - records.len();
        }
        Plan {
            records,
            leases: self.leases,
            compact_revision,
            revision,
            compacted_now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(main: i64, key: &str, tombstone: bool) -> Record {
        let kv = KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            mod_revision: main,
            create_revision: if tombstone { 0 } else { main },
            version: if tombstone { 0 } else { 1 },
            ..Default::default()
        };
        (main, 0, kv, tombstone)
    }

    #[test]
    fn revision_keys() {
        let mut k = 5u64.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(decode_revision(&k).unwrap(), (5, 2, false));
        k.push(b't');
        assert_eq!(decode_revision(&k).unwrap(), (5, 2, true));
        k[17] = b'x';
        assert!(decode_revision(&k).is_err());
        k.pop();
        k[8] = b'-';
        assert!(decode_revision(&k).is_err());
        assert!(decode_revision(&[0xff; 17]).is_err(), "negative revisions");
    }

    #[test]
    fn finishes_a_scheduled_compaction() {
        let s = EtcdSnapshot {
            records: vec![
                rec(2, "a", false),
                rec(3, "a", false),
                rec(4, "b", false),
                rec(5, "b", true),
                rec(6, "a", false),
            ],
            finished_compact: Some(2),
            scheduled_compact: Some(5),
            ..Default::default()
        };
        assert_eq!((s.compact_revision(), s.revision()), (5, 6));
        let plan = s.into_plan();
        let kept: Vec<(i64, bool)> = plan.records.iter().map(|r| (r.0, r.3)).collect();
        assert_eq!(kept, vec![(3, false), (6, false)]);
        assert_eq!(plan.compacted_now, 3);
        // A finished compaction above every record, and no records at all.
        let s = EtcdSnapshot {
            records: vec![rec(2, "a", false)],
            finished_compact: Some(9),
            ..Default::default()
        };
        assert_eq!(
            (
                s.compact_revision(),
                s.revision(),
                s.into_plan().records.len()
            ),
            (9, 9, 1)
        );
        let s = EtcdSnapshot::default();
        assert_eq!((s.compact_revision(), s.revision()), (-1, 1));
    }
}
