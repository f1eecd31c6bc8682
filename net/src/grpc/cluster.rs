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

impl ClusterService {
    /// etcd's `checkMembershipOperationPermission`: membership changes are root's.
    fn admin_only<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let auth = &self.shard.cluster.auth;
        let caller = auth.caller_of(request).map_err(super::to_status)?;
        auth.check_admin(&caller).map_err(super::to_status)
    }
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        request: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        self.admin_only(&request)?;
        Err(unimplemented("Cluster.MemberAdd"))
    }

    async fn member_remove(
        &self,
        request: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        self.admin_only(&request)?;
        Err(unimplemented("Cluster.MemberRemove"))
    }

    async fn member_update(
        &self,
        request: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        self.admin_only(&request)?;
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
        request: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        self.admin_only(&request)?;
        Err(unimplemented("Cluster.MemberPromote"))
    }
}
