//! The Cluster service. MemberList answers for this member; membership changes arrive with
//! the raft cluster.

use corekv_engine::pb::*;
use tonic::{Request, Response, Status};

use super::{unimplemented, Timer};
use crate::metrics::Method;
use crate::shard_api::ShardClient;

pub(crate) struct ClusterService {
    shard: ShardClient,
}

impl ClusterService {
    pub(crate) fn new(shard: ShardClient) -> ClusterService {
        ClusterService { shard }
    }
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        _: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(unimplemented("Cluster.MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        Err(unimplemented("Cluster.MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        Err(unimplemented("Cluster.MemberUpdate"))
    }

    async fn member_list(
        &self,
        _: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let timer = Timer::start(Method::MemberList);
        let cluster = &self.shard.cluster;
        let members = cluster
            .members
            .iter()
            .map(|m| PbMember {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: false,
            })
            .collect();
        let status = self.shard.status().await.ok();
        // etcd's MemberList header carries no revision.
        let header = PbResponseHeader {
            cluster_id: cluster.cluster_id,
            member_id: cluster.member_id,
            raft_term: status.map_or(0, |s| s.raft_term),
            revision: 0,
        };
        timer.finish(Ok(Response::new(PbMemberListResponse {
            header: Some(header),
            members,
        })))
    }

    async fn member_promote(
        &self,
        _: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(unimplemented("Cluster.MemberPromote"))
    }
}
