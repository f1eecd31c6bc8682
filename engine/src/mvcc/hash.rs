//! etcd's HashKV (3.4's `store.HashByRev`): a CRC-32C (Castagnoli) over the key space's
//! revision records up to a revision, byte for byte what etcd hashes over its bbolt `key`
//! bucket, so a corekv member and an etcd member with the same history give the same hash.
//!
//! etcd hashes the bucket name `key`, then, in revision order, every record with
//! `main <= rev` as its bucket key and value:
//! - key: main revision u64 big-endian, `_`, sub revision u64 big-endian, and `t` for a
//!   tombstone (etcd's `revToBytes` + `appendMarkTombstone`);
//! - value: the `mvccpb.KeyValue` protobuf etcd wrote (a tombstone's holds only the key).
//!
//! Records with `main <= compact_revision` are skipped unless compaction at `rev` would keep
//! them (they are the key's live revision at `rev`), except that nothing is skipped when no
//! key is live at `rev` (etcd's `len(keep) > 0` test).

use std::sync::Arc;

use bytes::Bytes;

use super::state::{KeyRange, State};
use super::KeyValue;
use crate::KvError;

/// The result of a HashKV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    /// CRC-32C of the records up to the requested revision.
    pub hash: u32,
    /// The current revision (etcd's response header revision).
    pub revision: i64,
    /// etcd's `compactMainRev`: -1 before any compaction (etcd reports it as is).
    pub compact_revision: i64,
}

/// A revision record's fields, borrowed (from the key space or from the store's pages).
#[derive(Clone, Copy, Debug)]
pub struct KvRef<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl<'a> KvRef<'a> {
    /// Borrows the fields of `kv`.
    pub fn of(kv: &'a KeyValue) -> KvRef<'a> {
        KvRef {
            key: &kv.key,
            value: &kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// etcd's checks, in its order: `0 < rev <= compact` is compacted, `rev > current` is a
/// future revision, 0 means current. A negative `rev` passes and hashes no record.
pub(crate) fn resolve_hash_revision(rev: i64, current: i64, compact: i64) -> Result<i64, KvError> {
    if rev > 0 && rev <= compact {
        return Err(KvError::Compacted);
    }
    if rev > 0 && rev > current {
        return Err(KvError::FutureRevision);
    }
    Ok(if rev == 0 { current } else { rev })
}

/// The running CRC, fed records in revision order.
pub(crate) struct Hasher {
    crc: u32,
    /// Reused for each record's protobuf encoding.
    buf: Vec<u8>,
}

impl Hasher {
    /// Starts with etcd's bucket name.
    pub fn new() -> Hasher {
        Hasher {
            crc: crc32c::crc32c(b"key"),
            buf: Vec::new(),
        }
    }

    /// Adds one record as etcd stores it.
    pub fn add(&mut self, main: i64, sub: i64, kv: KvRef<'_>, tombstone: bool) {
        let mut key = [0u8; 18];
        key[..8].copy_from_slice(&(main as u64).to_be_bytes());
        key[8] = b'_';
        key[9..17].copy_from_slice(&(sub as u64).to_be_bytes());
        key[17] = b't';
        let key_len = if tombstone { 18 } else { 17 };
        self.crc = crc32c::crc32c_append(self.crc, &key[..key_len]);
        self.buf.clear();
        encode_kv(&mut self.buf, kv, tombstone);
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
    }

    pub fn finish(&self) -> u32 {
        self.crc
    }
}

/// `mvccpb.KeyValue` in protobuf wire format, fields in tag order, zero values left out
/// (what gogoproto's Marshal writes). etcd's tombstone is `KeyValue{Key: key}`.
fn encode_kv(buf: &mut Vec<u8>, kv: KvRef<'_>, tombstone: bool) {
    put_bytes(buf, 1, kv.key);
    if tombstone {
        return;
    }
    put_int(buf, 2, kv.create_revision);
    put_int(buf, 3, kv.mod_revision);
    put_int(buf, 4, kv.version);
    put_bytes(buf, 5, kv.value);
    put_int(buf, 6, kv.lease);
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    // At most 10 bytes for a u64.
    for _ in 0..10 {
        if v < 0x80 {
            buf.push(v as u8);
            return;
        }
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
}

/// A varint field (wire type 0); negative values take 10 bytes, as in Go.
fn put_int(buf: &mut Vec<u8>, tag: u64, v: i64) {
    if v != 0 {
        put_varint(buf, tag << 3);
        put_varint(buf, v as u64);
    }
}

/// A length-delimited field (wire type 2).
fn put_bytes(buf: &mut Vec<u8>, tag: u64, v: &[u8]) {
    if !v.is_empty() {
        put_varint(buf, (tag << 3) | 2);
        put_varint(buf, v.len() as u64);
        buf.extend_from_slice(v);
    }
}

/// HashKV over the in-memory key space (see the module docs).
pub(super) fn hash_state(state: &State, rev: i64) -> Result<KvHash, KvError> {
    let compact = state.compact_revision;
    let rev = resolve_hash_revision(rev, state.revision, compact)?;
    let mut h = Hasher::new();
    if rev > 0 {
        let mut any_live = false;
        state.visit(&KeyRange::From(Bytes::new()), rev, |_| {
            any_live = true;
            false
        });
        for ((main, sub), record) in state.by_revision.iter().take_while(|(r, _)| r.0 <= rev) {
            let kept = || {
                state
                    .live_at(&record.kv.key, rev)
                    .is_some_and(|live| Arc::ptr_eq(live, record))
            };
            if *main <= compact && any_live && !kept() {
                continue;
            }
            h.add(*main, *sub, KvRef::of(&record.kv), record.tombstone());
        }
    }
    Ok(KvHash {
        hash: h.finish(),
        revision: state.revision,
        compact_revision: compact,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Our encoding equals prost's (tag order, zero fields left out, negative varints).
    #[test]
    fn kv_encoding_matches_protobuf() {
        let cases = [
            (b"k".as_ref(), b"v".as_ref(), 2, 3, 1, 0),
            (b"key", b"", 5, 9, 4, 7587),
            (b"", b"x", 0, 0, 0, -1),
            (b"big", &[7u8; 300][..], i64::MAX, 1 << 40, 1, i64::MIN),
        ];
        for (key, value, create, modr, version, lease) in cases {
            let pb = crate::pb::PbKeyValue {
                key: key.to_vec(),
                create_revision: create,
                mod_revision: modr,
                version,
                value: value.to_vec(),
                lease,
            };
            let kv = KvRef {
                key,
                value,
                create_revision: create,
                mod_revision: modr,
                version,
                lease,
            };
            let mut buf = Vec::new();
            encode_kv(&mut buf, kv, false);
            assert_eq!(buf, pb.encode_to_vec());
            buf.clear();
            encode_kv(&mut buf, kv, true);
            let tomb = crate::pb::PbKeyValue {
                key: key.to_vec(),
                ..Default::default()
            };
            assert_eq!(buf, tomb.encode_to_vec());
        }
    }

    #[test]
    fn revision_checks_follow_etcd() {
        assert_eq!(resolve_hash_revision(0, 10, -1), Ok(10));
        assert_eq!(resolve_hash_revision(-3, 10, 4), Ok(-3));
        assert_eq!(resolve_hash_revision(4, 10, 4), Err(KvError::Compacted));
        assert_eq!(resolve_hash_revision(5, 10, 4), Ok(5));
        assert_eq!(
            resolve_hash_revision(11, 10, 4),
            Err(KvError::FutureRevision)
        );
    }
}
