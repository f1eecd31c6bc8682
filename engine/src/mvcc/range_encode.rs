//! etcd's `RangeResponse` written as protobuf straight from the snapshot's records.
//!
//! The usual path builds a `PbRangeResponse` (copying every key and value into it) and
//! then encodes that into a second buffer. For a range over a million keys that is the
//! whole answer in memory twice over, plus a struct per key. Here the encoding is written
//! directly from the shared records into one buffer sized up front, so the answer exists
//! once, as the bytes that go on the wire.
//!
//! The bytes are exactly what prost writes for the `PbRangeResponse` the usual path builds
//! (fields in tag order, zero-valued scalars and empty bytes left out, the header always
//! present); `range_encode_tests.rs` checks that on random stores and requests.
//!
//! Field numbers, from etcd's rpc.proto and kv.proto:
//! - `RangeResponse`: header = 1, kvs = 2 (repeated), more = 3, count = 4;
//! - `ResponseHeader`: cluster_id = 1 (uint64), member_id = 2 (uint64), revision = 3
//!   (int64), raft_term = 4 (uint64);
//! - `mvccpb.KeyValue`: key = 1 (bytes), create_revision = 2, mod_revision = 3,
//!   version = 4, value = 5 (bytes), lease = 6 (all int64).

use bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

use super::range::RangeAnswer;
use super::KeyValue;

const RESPONSE_HEADER: u32 = 1;
const RESPONSE_KVS: u32 = 2;
const RESPONSE_MORE: u32 = 3;
const RESPONSE_COUNT: u32 = 4;

const HEADER_CLUSTER_ID: u32 = 1;
const HEADER_MEMBER_ID: u32 = 2;
const HEADER_REVISION: u32 = 3;
const HEADER_RAFT_TERM: u32 = 4;

const KV_KEY: u32 = 1;
const KV_CREATE_REVISION: u32 = 2;
const KV_MOD_REVISION: u32 = 3;
const KV_VERSION: u32 = 4;
const KV_VALUE: u32 = 5;
const KV_LEASE: u32 = 6;

/// The response-header fields the network layer supplies (the revision comes from the
/// snapshot): what `fill_header` sets on the usual path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderFields {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

impl RangeAnswer {
    /// Length in bytes of the encoded `RangeResponse` with `header`.
    pub fn encoded_len(&self, header: &HeaderFields) -> usize {
        let kvs: usize = self
            .records
            .iter()
            .map(|rec| nested_len(RESPONSE_KVS, kv_len(&rec.kv, self.keys_only)))
            .sum();
        nested_len(RESPONSE_HEADER, header_len(header, self.revision))
            + kvs
            + varint_field_len(RESPONSE_MORE, u64::from(self.more))
            + varint_field_len(RESPONSE_COUNT, self.count as u64)
    }

    /// Writes the encoded `RangeResponse` with `header` to `buf`: exactly
    /// [`RangeAnswer::encoded_len`] bytes. `buf` must have room for them (a `BytesMut` or
    /// a `Vec` grows; reserve first to write into one allocation).
    pub fn encode(&self, header: &HeaderFields, buf: &mut impl BufMut) {
        put_nested(RESPONSE_HEADER, header_len(header, self.revision), buf);
        put_varint_field(HEADER_CLUSTER_ID, header.cluster_id, buf);
        put_varint_field(HEADER_MEMBER_ID, header.member_id, buf);
        put_varint_field(HEADER_REVISION, self.revision as u64, buf);
        put_varint_field(HEADER_RAFT_TERM, header.raft_term, buf);
        for rec in &self.records {
            let kv = &rec.kv;
            put_nested(RESPONSE_KVS, kv_len(kv, self.keys_only), buf);
            put_bytes_field(KV_KEY, &kv.key, buf);
            put_varint_field(KV_CREATE_REVISION, kv.create_revision as u64, buf);
            put_varint_field(KV_MOD_REVISION, kv.mod_revision as u64, buf);
            put_varint_field(KV_VERSION, kv.version as u64, buf);
            if !self.keys_only {
                put_bytes_field(KV_VALUE, &kv.value, buf);
            }
            put_varint_field(KV_LEASE, kv.lease as u64, buf);
        }
        put_varint_field(RESPONSE_MORE, u64::from(self.more), buf);
        put_varint_field(RESPONSE_COUNT, self.count as u64, buf);
    }

    /// The encoded `RangeResponse` with `header`, in one buffer allocated at its final size.
    pub fn encode_to_bytes(&self, header: &HeaderFields) -> Bytes {
        let len = self.encoded_len(header);
        let mut buf = Vec::with_capacity(len);
        self.encode(header, &mut buf);
        debug_assert_eq!(buf.len(), len, "encoded_len and encode disagree");
        Bytes::from(buf)
    }
}

fn header_len(header: &HeaderFields, revision: i64) -> usize {
    varint_field_len(HEADER_CLUSTER_ID, header.cluster_id)
        + varint_field_len(HEADER_MEMBER_ID, header.member_id)
        + varint_field_len(HEADER_REVISION, revision as u64)
        + varint_field_len(HEADER_RAFT_TERM, header.raft_term)
}

/// Length of one `mvccpb.KeyValue` message body (value left out when `keys_only`).
fn kv_len(kv: &KeyValue, keys_only: bool) -> usize {
    bytes_field_len(KV_KEY, &kv.key)
        + varint_field_len(KV_CREATE_REVISION, kv.create_revision as u64)
        + varint_field_len(KV_MOD_REVISION, kv.mod_revision as u64)
        + varint_field_len(KV_VERSION, kv.version as u64)
        + if keys_only {
            0
        } else {
            bytes_field_len(KV_VALUE, &kv.value)
        }
        + varint_field_len(KV_LEASE, kv.lease as u64)
}

/// A varint field (uint64, int64 as its two's complement, bool as 0/1); 0 is left out.
fn varint_field_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// A bytes field; empty is left out.
fn bytes_field_len(tag: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        nested_len(tag, bytes.len())
    }
}

/// A length-delimited field of `len` bytes (an embedded message is written even if empty).
fn nested_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_varint_field(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn put_bytes_field(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    if !bytes.is_empty() {
        put_nested(tag, bytes.len(), buf);
        buf.put_slice(bytes);
    }
}

/// The key and length of a length-delimited field; its `len` bytes follow.
fn put_nested(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}
