//! The Cluster service: MemberList reads the membership of this core's latest view;
//! MemberAdd / MemberRemove / MemberUpdate / MemberPromote go through raft (the sequencer
//! checks them as etcd does and answers once the change is applied).

use corekv_engine::membership::Member;
use corekv_engine::pb::*;
use tonic::{Request, Response, Status};

use super::{to_status, Timer};
use crate::metrics::Method;
use crate::shard_api::{ClusterAnswer, ClusterOp, ShardClient};

pub(crate) struct ClusterService {
    shard: ShardClient,
}

impl ClusterService {
    pub(crate) fn new(shard: ShardClient) -> ClusterService {
        ClusterService { shard }
    }

    /// etcd's Cluster headers carry cluster, member and raft term, not a revision.
    async fn header(&self) -> Option<PbResponseHeader> {
        let cluster = &self.shard.cluster;
        let status = self.shard.status().await.ok();
        Some(PbResponseHeader {
            cluster_id: cluster.cluster_id,
            member_id: cluster.member_id,
            raft_term: status.map_or(0, |s| s.raft_term),
            revision: 0,
        })
    }
}

fn to_pb(m: &Member) -> PbMember {
    PbMember {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// The members by ID, as etcd's `RaftCluster.Members()` lists them.
fn members_pb(answer: &ClusterAnswer) -> Vec<PbMember> {
    let mut members: Vec<PbMember> = answer.members.iter().map(to_pb).collect();
    members.sort_by_key(|m| m.id);
    members
}

/// etcd checks peer URLs are well-formed `scheme://host:port` before anything else.
fn check_urls(urls: &[String]) -> Result<(), Status> {
    let ok = !urls.is_empty()
        && urls.iter().all(|u| {
            u.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "http" | "https")
                    && rest
                        .rsplit_once(':')
                        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            })
        });
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "etcdserver: given member URLs are invalid",
        ))
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
        let timer = Timer::start(Method::MemberAdd);
        let result = async {
            let r = request.into_inner();
            check_urls(&r.peer_ur_ls)?;
            let answer = self
                .shard
                .cluster(|reply| ClusterOp::Add {
                    peer_urls: r.peer_ur_ls.clone(),
                    is_learner: r.is_learner,
                    reply,
                })
                .await
                .map_err(to_status)?;
            let member = answer
                .members
                .iter()
                .find(|m| m.id == answer.member_id)
                .map(to_pb);
            Ok(Response::new(PbMemberAddResponse {
                header: self.header().await,
                member,
                members: members_pb(&answer),
            }))
        }
        .await;
        timer.finish(result)
    }

    async fn member_remove(
        &self,
        request: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        self.admin_only(&request)?;
        let timer = Timer::start(Method::MemberRemove);
        let result = async {
            let id = request.into_inner().id;
            let answer = self
                .shard
                .cluster(|reply| ClusterOp::Remove { id, reply })
                .await
                .map_err(to_status)?;
            Ok(Response::new(PbMemberRemoveResponse {
                header: self.header().await,
                members: members_pb(&answer),
            }))
        }
        .await;
        timer.finish(result)
    }

    async fn member_update(
        &self,
        request: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        self.admin_only(&request)?;
        let timer = Timer::start(Method::MemberUpdate);
        let result = async {
            let r = request.into_inner();
            check_urls(&r.peer_ur_ls)?;
            let answer = self
                .shard
                .cluster(|reply| ClusterOp::Update {
                    id: r.id,
                    peer_urls: r.peer_ur_ls.clone(),
                    reply,
                })
                .await
                .map_err(to_status)?;
            Ok(Response::new(PbMemberUpdateResponse {
                header: self.header().await,
                members: members_pb(&answer),
            }))
        }
        .await;
        timer.finish(result)
    }

    async fn member_list(
        &self,
        _: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let timer = Timer::start(Method::MemberList);
        let result = async {
            let view = self.shard.view().await.map_err(to_status)?;
            let mut members: Vec<PbMember> = view.body.membership().members().map(to_pb).collect();
            members.sort_by_key(|m| m.id);
            Ok(Response::new(PbMemberListResponse {
                header: self.header().await,
                members,
            }))
        }
        .await;
        timer.finish(result)
    }

    async fn member_promote(
        &self,
        request: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        self.admin_only(&request)?;
        let timer = Timer::start(Method::MemberPromote);
        let result = async {
            let id = request.into_inner().id;
            let answer = self
                .shard
                .cluster(|reply| ClusterOp::Promote { id, reply })
                .await
                .map_err(to_status)?;
            Ok(Response::new(PbMemberPromoteResponse {
                header: self.header().await,
                members: members_pb(&answer),
            }))
        }
        .await;
        timer.finish(result)
    }
}
