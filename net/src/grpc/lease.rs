//! The Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases.
//!
//! Grant and revoke are writes through the log (the sequencer picks the ID of a grant that
//! asks for ID 0 and raises a TTL below the minimum before proposing, so the log replays
//! the same on every member). Keep-alive, time-to-live and the lease list are answered by
//! the leader's lessor without a log entry, as in etcd.

use corekv_engine::mvcc::CommandResponse;
use corekv_engine::pb::*;
use corekv_engine::request::Command;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::{fill_header, to_status, Timer};
use crate::metrics::Method;
use crate::shard_api::{LeaseOp, LeaseResult, ShardClient};

/// Keep-alive answers queued towards one stream's client. Requests are served one at a
/// time per stream, so this and one request in flight bound a stream's work; a client that
/// stops reading stops being read.
pub const KEEPALIVE_RESPONSES_QUEUED_MAX: usize = 16;

pub(crate) struct LeaseService {
    shard: ShardClient,
}

impl LeaseService {
    pub(crate) fn new(shard: ShardClient) -> LeaseService {
        LeaseService { shard }
    }

    async fn write(&self, command: Command) -> Result<(CommandResponse, u64), Status> {
        let reply = self.shard.write(command).await.map_err(to_status)?;
        Ok((reply.body, reply.raft_term))
    }

    async fn lessor(&self, op: LeaseOp) -> Result<(LeaseResult, u64), Status> {
        lessor(&self.shard, op).await
    }
}

async fn lessor(shard: &ShardClient, op: LeaseOp) -> Result<(LeaseResult, u64), Status> {
    let reply = shard.lease(op).await.map_err(to_status)?;
    Ok((reply.body, reply.raft_term))
}

fn mismatch() -> Status {
    Status::internal("corekv: lease response does not match the request")
}

/// One keep-alive: etcd answers an unknown (or expired) lease with TTL 0, not an error.
pub(crate) async fn keep_alive_once(
    shard: &ShardClient,
    id: i64,
) -> Result<PbLeaseKeepAliveResponse, Status> {
    match lessor(shard, LeaseOp::KeepAlive { id }).await? {
        (LeaseResult::KeepAlive(mut resp), term) => {
            fill_header(&mut resp.header, &shard.cluster, 0, term);
            Ok(resp)
        }
        _ => Err(mismatch()),
    }
}

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let timer = Timer::start(Method::LeaseGrant);
        let result = async {
            self.shard
                .check_quota(corekv_engine::mvcc::alarm::lease_grant_cost())
                .await
                .map_err(to_status)?;
            match self
                .write(Command::LeaseGrant(request.into_inner()))
                .await?
            {
                (CommandResponse::LeaseGrant(mut resp), term) => {
                    fill_header(&mut resp.header, &self.shard.cluster, 0, term);
                    Ok(Response::new(resp))
                }
                _ => Err(mismatch()),
            }
        }
        .await;
        timer.finish(result)
    }

    async fn lease_revoke(
        &self,
        request: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let timer = Timer::start(Method::LeaseRevoke);
        let result = async {
            match self
                .write(Command::LeaseRevoke(request.into_inner()))
                .await?
            {
                (CommandResponse::LeaseRevoke(mut resp), term) => {
                    fill_header(&mut resp.header, &self.shard.cluster, 0, term);
                    Ok(Response::new(resp))
                }
                _ => Err(mismatch()),
            }
        }
        .await;
        timer.finish(result)
    }

    type LeaseKeepAliveStream = BoxStream<PbLeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (answers, outbound) = flume::bounded(KEEPALIVE_RESPONSES_QUEUED_MAX);
        let shard = self.shard.clone();
        tokio::spawn(async move {
            // One request at a time: the next is read only after this one is answered.
            while let Ok(Some(request)) = inbound.message().await {
                let timer = Timer::start(Method::LeaseKeepAlive);
                let answer = timer.finish(keep_alive_once(&shard, request.id).await);
                // An error ends the stream, as etcd's handler returns it.
                let failed = answer.is_err();
                if answers.send_async(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(outbound.into_stream())))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let timer = Timer::start(Method::LeaseTimeToLive);
        let result = async {
            let req = request.into_inner();
            match self
                .lessor(LeaseOp::TimeToLive {
                    id: req.id,
                    keys: req.keys,
                })
                .await?
            {
                (LeaseResult::TimeToLive(mut resp), term) => {
                    fill_header(&mut resp.header, &self.shard.cluster, 0, term);
                    Ok(Response::new(resp))
                }
                _ => Err(mismatch()),
            }
        }
        .await;
        timer.finish(result)
    }

    async fn lease_leases(
        &self,
        _: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let timer = Timer::start(Method::LeaseLeases);
        let result = async {
            match self.lessor(LeaseOp::Leases).await? {
                (LeaseResult::Leases(mut resp), term) => {
                    fill_header(&mut resp.header, &self.shard.cluster, 0, term);
                    Ok(Response::new(resp))
                }
                _ => Err(mismatch()),
            }
        }
        .await;
        timer.finish(result)
    }
}
