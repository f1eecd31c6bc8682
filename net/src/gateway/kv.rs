//! /v3/kv/*: Range, Put, DeleteRange, Txn, Compact, through the same KV service as gRPC.

use corekv_engine::pb::*;
use serde_json::Value;

use super::json::{In, Input, Json, Obj};
use super::{bad_input, Answer, Auth, Gateway};

const SORT_ORDER: &[&str] = &["NONE", "ASCEND", "DESCEND"];
const SORT_TARGET: &[&str] = &["KEY", "VERSION", "CREATE", "MOD", "VALUE"];
const COMPARE_RESULT: &[&str] = &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"];
const COMPARE_TARGET: &[&str] = &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"];
const EVENT_TYPE: &[&str] = &["PUT", "DELETE"];

// ------------------------------------------------------------------ requests

pub(super) fn range_request(i: &Input) -> In<PbRangeRequest> {
    Ok(PbRangeRequest {
        key: i.bytes("key")?,
        range_end: i.bytes("range_end")?,
        limit: i.i64("limit")?,
        revision: i.i64("revision")?,
        sort_order: i.enumeration(
            "sort_order",
            SORT_ORDER,
            "etcdserverpb.RangeRequest_SortOrder",
        )?,
        sort_target: i.enumeration(
            "sort_target",
            SORT_TARGET,
            "etcdserverpb.RangeRequest_SortTarget",
        )?,
        serializable: i.bool("serializable")?,
        keys_only: i.bool("keys_only")?,
        count_only: i.bool("count_only")?,
        min_mod_revision: i.i64("min_mod_revision")?,
        max_mod_revision: i.i64("max_mod_revision")?,
        min_create_revision: i.i64("min_create_revision")?,
        max_create_revision: i.i64("max_create_revision")?,
    })
}

pub(super) fn put_request(i: &Input) -> In<PbPutRequest> {
    Ok(PbPutRequest {
        key: i.bytes("key")?,
        value: i.bytes("value")?,
        lease: i.i64("lease")?,
        prev_kv: i.bool("prev_kv")?,
        ignore_value: i.bool("ignore_value")?,
        ignore_lease: i.bool("ignore_lease")?,
    })
}

pub(super) fn delete_request(i: &Input) -> In<PbDeleteRequest> {
    Ok(PbDeleteRequest {
        key: i.bytes("key")?,
        range_end: i.bytes("range_end")?,
        prev_kv: i.bool("prev_kv")?,
    })
}

fn compare(i: &Input) -> In<PbCompare> {
    // The oneof target_union: whichever member is present (the last one listed wins).
    let mut target_union = None;
    if i.has("version") {
        target_union = Some(PbTargetUnion::Version(i.i64("version")?));
    }
    if i.has("create_revision") {
        target_union = Some(PbTargetUnion::CreateRevision(i.i64("create_revision")?));
    }
    if i.has("mod_revision") {
        target_union = Some(PbTargetUnion::ModRevision(i.i64("mod_revision")?));
    }
    if i.has("value") {
        target_union = Some(PbTargetUnion::Value(i.bytes("value")?));
    }
    if i.has("lease") {
        target_union = Some(PbTargetUnion::Lease(i.i64("lease")?));
    }
    Ok(PbCompare {
        result: i.enumeration(
            "result",
            COMPARE_RESULT,
            "etcdserverpb.Compare_CompareResult",
        )?,
        target: i.enumeration(
            "target",
            COMPARE_TARGET,
            "etcdserverpb.Compare_CompareTarget",
        )?,
        key: i.bytes("key")?,
        range_end: i.bytes("range_end")?,
        target_union,
    })
}

fn request_op(i: &Input) -> In<PbTxnRequestOp> {
    let mut request = None;
    if let Some(r) = i.msg("request_range")? {
        request = Some(PbTxnOpRequest::RequestRange(range_request(&r)?));
    }
    if let Some(r) = i.msg("request_put")? {
        request = Some(PbTxnOpRequest::RequestPut(put_request(&r)?));
    }
    if let Some(r) = i.msg("request_delete_range")? {
        request = Some(PbTxnOpRequest::RequestDeleteRange(delete_request(&r)?));
    }
    if let Some(r) = i.msg("request_txn")? {
        request = Some(PbTxnOpRequest::RequestTxn(txn_request(&r)?));
    }
    Ok(PbTxnRequestOp { request })
}

pub(super) fn txn_request(i: &Input) -> In<PbTxnRequest> {
    let ops =
        |name: &str| -> In<Vec<PbTxnRequestOp>> { i.msgs(name)?.iter().map(request_op).collect() };
    Ok(PbTxnRequest {
        compare: i.msgs("compare")?.iter().map(compare).collect::<In<_>>()?,
        success: ops("success")?,
        failure: ops("failure")?,
    })
}

// ------------------------------------------------------------------ responses

pub(crate) fn header(h: &Option<PbResponseHeader>) -> Option<Json> {
    h.as_ref().map(|h| {
        Obj::new()
            .u64("cluster_id", h.cluster_id)
            .u64("member_id", h.member_id)
            .i64("revision", h.revision)
            .u64("raft_term", h.raft_term)
            .done()
    })
}

pub(crate) fn key_value(kv: &PbKeyValue) -> Json {
    Obj::new()
        .bytes("key", &kv.key)
        .i64("create_revision", kv.create_revision)
        .i64("mod_revision", kv.mod_revision)
        .i64("version", kv.version)
        .bytes("value", &kv.value)
        .i64("lease", kv.lease)
        .done()
}

pub(crate) fn event(e: &PbEvent) -> Json {
    Obj::new()
        .enumeration("type", e.r#type, EVENT_TYPE)
        .msg("kv", e.kv.as_ref().map(key_value))
        .msg("prev_kv", e.prev_kv.as_ref().map(key_value))
        .done()
}

fn range_response(r: &PbRangeResponse) -> Json {
    Obj::new()
        .msg("header", header(&r.header))
        .list("kvs", r.kvs.iter().map(key_value).collect())
        .bool("more", r.more)
        .i64("count", r.count)
        .done()
}

fn put_response(r: &PbPutResponse) -> Json {
    Obj::new()
        .msg("header", header(&r.header))
        .msg("prev_kv", r.prev_kv.as_ref().map(key_value))
        .done()
}

fn delete_response(r: &PbDeleteResponse) -> Json {
    Obj::new()
        .msg("header", header(&r.header))
        .i64("deleted", r.deleted)
        .list("prev_kvs", r.prev_kvs.iter().map(key_value).collect())
        .done()
}

fn response_op(r: &PbResponseOp) -> Json {
    let o = Obj::new();
    match &r.response {
        Some(PbTxnOpResponse::ResponseRange(x)) => o.msg("response_range", Some(range_response(x))),
        Some(PbTxnOpResponse::ResponsePut(x)) => o.msg("response_put", Some(put_response(x))),
        Some(PbTxnOpResponse::ResponseDeleteRange(x)) => {
            o.msg("response_delete_range", Some(delete_response(x)))
        }
        Some(PbTxnOpResponse::ResponseTxn(x)) => o.msg("response_txn", Some(txn_response(x))),
        None => o,
    }
    .done()
}

fn txn_response(r: &PbTxnResponse) -> Json {
    Obj::new()
        .msg("header", header(&r.header))
        .bool("succeeded", r.succeeded)
        .list("responses", r.responses.iter().map(response_op).collect())
        .done()
}

// ------------------------------------------------------------------ handlers

impl Gateway {
    pub(super) async fn range(&self, auth: &Auth, body: &Value) -> Answer {
        let req = range_request(&Input::of(body).map_err(bad_input)?).map_err(bad_input)?;
        let resp = PbKvService::range(&self.kv, auth.request(req)).await?;
        Ok(range_response(resp.get_ref()))
    }

    pub(super) async fn put(&self, auth: &Auth, body: &Value) -> Answer {
        let req = put_request(&Input::of(body).map_err(bad_input)?).map_err(bad_input)?;
        let resp = PbKvService::put(&self.kv, auth.request(req)).await?;
        Ok(put_response(resp.get_ref()))
    }

    pub(super) async fn delete_range(&self, auth: &Auth, body: &Value) -> Answer {
        let req = delete_request(&Input::of(body).map_err(bad_input)?).map_err(bad_input)?;
        let resp = PbKvService::delete_range(&self.kv, auth.request(req)).await?;
        Ok(delete_response(resp.get_ref()))
    }

    pub(super) async fn txn(&self, auth: &Auth, body: &Value) -> Answer {
        let req = txn_request(&Input::of(body).map_err(bad_input)?).map_err(bad_input)?;
        let resp = PbKvService::txn(&self.kv, auth.request(req)).await?;
        Ok(txn_response(resp.get_ref()))
    }

    pub(super) async fn compact(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbCompactionRequest {
            revision: i.i64("revision").map_err(bad_input)?,
            physical: i.bool("physical").map_err(bad_input)?,
        };
        let resp = PbKvService::compact(&self.kv, auth.request(req)).await?;
        Ok(Obj::new()
            .msg("header", header(&resp.get_ref().header))
            .done())
    }
}
