//! The KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Requests are validated here exactly where etcd validates them (its gRPC layer), then
//! handed to the core's shard. Writes come back only once durable and applied. The write
//! methods are shared with the binary protocol (`crate::binary`), so both check the same
//! things in the same order, permissions included.

use corekv_engine::mvcc::{alarm, validate, CommandResponse};
use corekv_engine::pb::*;
use corekv_engine::request::Command;
use corekv_engine::KvError;
use prost::Message;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{check_lease_keys, fill_header, to_status, txn_put_leases, unimplemented, Timer};
use crate::auth::Caller;
use crate::metrics::Method;
use crate::shard_api::{ReadOp, ReadResult, ShardClient};

pub(crate) struct KvService {
    shard: ShardClient,
}

impl KvService {
    pub(crate) fn new(shard: ShardClient) -> KvService {
        KvService { shard }
    }
}

fn check_size(shard: &ShardClient, encoded_len_bytes: usize) -> Result<(), Status> {
    if encoded_len_bytes > shard.cluster.max_request_bytes {
        return Err(to_status(KvError::RequestTooLarge));
    }
    Ok(())
}

/// A client's write, re-checked for `caller` when it is applied.
async fn write_as(
    shard: &ShardClient,
    command: Command,
    caller: &Caller,
) -> Result<(CommandResponse, u64), Status> {
    let reply = shard.write_as(command, caller).await.map_err(to_status)?;
    Ok((reply.body, reply.raft_term))
}

// The methods below are what the gRPC service and the binary protocol (`crate::binary`)
// both serve: etcd's checks in etcd's order, then the shard. `caller` is who the request's
// credentials name (the binary protocol carries none: nobody).

/// etcd's Put.
pub(crate) async fn put(
    shard: &ShardClient,
    caller: Result<Caller, KvError>,
    req: PbPutRequest,
) -> Result<PbPutResponse, Status> {
    // etcd's quotaKVServer runs before the request is validated.
    shard
        .check_quota(alarm::put_cost(&req))
        .await
        .map_err(to_status)?;
    validate::check_put(&req).map_err(to_status)?;
    check_size(shard, req.encoded_len())?;
    let caller = caller.map_err(to_status)?;
    let auth = &shard.cluster.auth;
    auth.check_put(&caller, &req).map_err(to_status)?;
    check_lease_keys(shard, &caller, req.lease)
        .await
        .map_err(to_status)?;
    match write_as(shard, Command::Put(req), &caller).await? {
        (CommandResponse::Put(mut resp), term) => {
            fill_header(&mut resp.header, &shard.cluster, 0, term);
            Ok(resp)
        }
        _ => Err(mismatch()),
    }
}

/// etcd's DeleteRange.
pub(crate) async fn delete_range(
    shard: &ShardClient,
    caller: Result<Caller, KvError>,
    req: PbDeleteRequest,
) -> Result<PbDeleteResponse, Status> {
    validate::check_delete(&req).map_err(to_status)?;
    check_size(shard, req.encoded_len())?;
    let caller = caller.map_err(to_status)?;
    shard
        .cluster
        .auth
        .check_delete(&caller, &req)
        .map_err(to_status)?;
    match write_as(shard, Command::DeleteRange(req), &caller).await? {
        (CommandResponse::DeleteRange(mut resp), term) => {
            fill_header(&mut resp.header, &shard.cluster, 0, term);
            Ok(resp)
        }
        _ => Err(mismatch()),
    }
}

/// etcd's Txn: read-only ones from a view, the others through the log.
pub(crate) async fn txn(
    shard: &ShardClient,
    caller: Result<Caller, KvError>,
    req: PbTxnRequest,
) -> Result<PbTxnResponse, Status> {
    shard
        .check_quota(alarm::txn_cost(&req))
        .await
        .map_err(to_status)?;
    validate::check_txn(&req, shard.cluster.max_txn_ops).map_err(to_status)?;
    check_size(shard, req.encoded_len())?;
    let caller = caller.map_err(to_status)?;
    shard
        .cluster
        .auth
        .check_txn(&caller, &req)
        .map_err(to_status)?;
    let mut leases = Vec::new();
    txn_put_leases(&req, &mut leases);
    for lease in leases {
        check_lease_keys(shard, &caller, lease)
            .await
            .map_err(to_status)?;
    }
    if validate::is_read_only(&req) {
        // As etcd: a txn that only reads is served from a view, not the log.
        let serializable = validate::is_serializable(&req);
        let reply = shard
            .read(ReadOp::Txn(req), serializable)
            .await
            .map_err(to_status)?;
        return match reply.body {
            ReadResult::Txn(mut resp) => {
                fill_header(&mut resp.header, &shard.cluster, 0, reply.raft_term);
                Ok(resp)
            }
            ReadResult::Range(_) => Err(mismatch()),
        };
    }
    match write_as(shard, Command::Txn(req), &caller).await? {
        (CommandResponse::Txn(mut resp), term) => {
            fill_header(&mut resp.header, &shard.cluster, 0, term);
            Ok(resp)
        }
        _ => Err(mismatch()),
    }
}

/// etcd's Compact. No permission is checked, but bad credentials still fail it (etcd).
pub(crate) async fn compact(
    shard: &ShardClient,
    caller: Result<Caller, KvError>,
    req: PbCompactionRequest,
) -> Result<PbCompactionResponse, Status> {
    caller.map_err(to_status)?;
    let reply = shard
        .write(Command::Compact(req))
        .await
        .map_err(to_status)?;
    match reply.body {
        CommandResponse::Compact(mut resp) => {
            fill_header(&mut resp.header, &shard.cluster, 0, reply.raft_term);
            Ok(resp)
        }
        _ => Err(mismatch()),
    }
}

fn mismatch() -> Status {
    Status::internal("corekv: applied response does not match the request")
}

#[tonic::async_trait]
impl PbKvService for KvService {
    /// The client port serves Range through `range.rs` (encoded once, no message built);
    /// this generated method answers the same where only the generated service is mounted.
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let timer = Timer::start(Method::Range);
        let result = async {
            let caller = self.shard.cluster.auth.caller_of(&request);
            let req = request.into_inner();
            validate::check_range(&req).map_err(to_status)?;
            let caller = caller.map_err(to_status)?;
            self.shard
                .cluster
                .auth
                .check_range(&caller, &req.key, &req.range_end)
                .map_err(to_status)?;
            let serializable = req.serializable;
            let reply = self
                .shard
                .read(ReadOp::Range(req), serializable)
                .await
                .map_err(to_status)?;
            match reply.body {
                ReadResult::Range(answer) => {
                    let mut resp = answer.to_pb();
                    fill_header(&mut resp.header, &self.shard.cluster, 0, reply.raft_term);
                    Ok(Response::new(resp))
                }
                ReadResult::Txn(_) => Err(mismatch()),
            }
        }
        .await;
        timer.finish(result)
    }

    type RangeStreamStream = BoxStream<PbRangeStreamResponse>;

    async fn range_stream(
        &self,
        _: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(unimplemented("KV.RangeStream (an etcd 3.6 API)"))
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let timer = Timer::start(Method::Put);
        let caller = self.shard.cluster.auth.caller_of(&request);
        let result = put(&self.shard, caller, request.into_inner()).await;
        timer.finish(result.map(Response::new))
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let timer = Timer::start(Method::DeleteRange);
        let caller = self.shard.cluster.auth.caller_of(&request);
        let result = delete_range(&self.shard, caller, request.into_inner()).await;
        timer.finish(result.map(Response::new))
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let timer = Timer::start(Method::Txn);
        let caller = self.shard.cluster.auth.caller_of(&request);
        let result = txn(&self.shard, caller, request.into_inner()).await;
        timer.finish(result.map(Response::new))
    }

    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let timer = Timer::start(Method::Compact);
        let caller = self.shard.cluster.auth.caller_of(&request);
        let result = compact(&self.shard, caller, request.into_inner()).await;
        timer.finish(result.map(Response::new))
    }
}
