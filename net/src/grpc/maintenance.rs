//! The Maintenance service. Status and Alarm(GET) answer now; the rest arrive with the
//! revision store (defragment, hash, snapshot) and the cluster (move leader).

use corekv_engine::pb::*;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{fill_header, to_status, unimplemented, Timer};
use crate::metrics::Method;
use crate::shard_api::ShardClient;

/// AlarmRequest.action GET (etcd's AlarmRequest_GET).
const ALARM_ACTION_GET: i32 = 0;

pub(crate) struct MaintenanceService {
    shard: ShardClient,
}

impl MaintenanceService {
    pub(crate) fn new(shard: ShardClient) -> MaintenanceService {
        MaintenanceService { shard }
    }
}

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(&self, request: Request<PbAlarmRequest>) -> Result<Response<PbAlarmResponse>, Status> {
        let timer = Timer::start(Method::Alarm);
        let result = async {
            if request.get_ref().action != ALARM_ACTION_GET {
                return Err(unimplemented("Maintenance.Alarm ACTIVATE/DEACTIVATE"));
            }
            // No alarm can be raised yet: the space quota arrives with the revision store.
            let status = self.shard.status().await.map_err(to_status)?;
            let mut resp = PbAlarmResponse { header: None, alarms: Vec::new() };
            fill_header(&mut resp.header, &self.shard.cluster, status.revision, status.raft_term);
            Ok(Response::new(resp))
        }
        .await;
        timer.finish(result)
    }

    async fn status(&self, _: Request<PbStatusRequest>) -> Result<Response<PbStatusResponse>, Status> {
        let timer = Timer::start(Method::Status);
        let result = async {
            let s = self.shard.status().await.map_err(to_status)?;
            let mut resp = PbStatusResponse {
                version: crate::ETCD_COMPAT_VERSION.to_string(),
                db_size: s.db_size_bytes,
                leader: s.leader,
                raft_index: s.raft_index,
                raft_term: s.raft_term,
                raft_applied_index: s.raft_applied_index,
                db_size_in_use: s.db_size_in_use_bytes,
                is_learner: false,
                db_size_quota: self.shard.cluster.quota_backend_bytes as i64,
                ..Default::default()
            };
            fill_header(&mut resp.header, &self.shard.cluster, s.revision, s.raft_term);
            Ok(Response::new(resp))
        }
        .await;
        timer.finish(result)
    }

    async fn defragment(&self, _: Request<PbDefragmentRequest>) -> Result<Response<PbDefragmentResponse>, Status> {
        Err(unimplemented("Maintenance.Defragment"))
    }

    async fn hash(&self, _: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        Err(unimplemented("Maintenance.Hash"))
    }

    async fn hash_kv(&self, _: Request<PbHashKvRequest>) -> Result<Response<PbHashKvResponse>, Status> {
        Err(unimplemented("Maintenance.HashKV"))
    }

    type SnapshotStream = BoxStream<PbSnapshotResponse>;

    async fn snapshot(&self, _: Request<PbSnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Maintenance.Snapshot"))
    }

    async fn move_leader(&self, _: Request<PbMoveLeaderRequest>) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(unimplemented("Maintenance.MoveLeader"))
    }

    async fn downgrade(&self, _: Request<PbDowngradeRequest>) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented("Maintenance.Downgrade"))
    }
}
