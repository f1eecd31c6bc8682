//! /v3/cluster/member/*: list, add, remove, update, promote, through the same Cluster
//! service as gRPC.

use corekv_engine::pb::*;
use serde_json::Value;

use super::json::{Input, Json, Obj};
use super::kv::header;
use super::{bad_input, Answer, Auth, Gateway};

fn member(m: &PbMember) -> Json {
    let urls = |u: &[String]| u.iter().map(|s| Json::string(s)).collect();
    Obj::new()
        .u64("ID", m.id)
        .str("name", &m.name)
        .list("peerURLs", urls(&m.peer_ur_ls))
        .list("clientURLs", urls(&m.client_ur_ls))
        .bool("isLearner", m.is_learner)
        .done()
}

fn members(header_: &Option<PbResponseHeader>, list: &[PbMember]) -> Obj {
    Obj::new()
        .msg("header", header(header_))
        .list("members", list.iter().map(member).collect())
}

impl Gateway {
    pub(super) async fn member_list(&self, auth: &Auth) -> Answer {
        let req = PbMemberListRequest::default();
        let resp = PbClusterService::member_list(&self.cluster, auth.request(req)).await?;
        let r = resp.get_ref();
        Ok(members(&r.header, &r.members).done())
    }

    pub(super) async fn member_add(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbMemberAddRequest {
            peer_ur_ls: i.strings("peerURLs").map_err(bad_input)?,
            is_learner: i.bool("isLearner").map_err(bad_input)?,
        };
        let resp = PbClusterService::member_add(&self.cluster, auth.request(req)).await?;
        let r = resp.get_ref();
        Ok(Obj::new()
            .msg("header", header(&r.header))
            .msg("member", r.member.as_ref().map(member))
            .list("members", r.members.iter().map(member).collect())
            .done())
    }

    pub(super) async fn member_remove(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbMemberRemoveRequest {
            id: i.u64("ID").map_err(bad_input)?,
        };
        let resp = PbClusterService::member_remove(&self.cluster, auth.request(req)).await?;
        let r = resp.get_ref();
        Ok(members(&r.header, &r.members).done())
    }

    pub(super) async fn member_update(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbMemberUpdateRequest {
            id: i.u64("ID").map_err(bad_input)?,
            peer_ur_ls: i.strings("peerURLs").map_err(bad_input)?,
        };
        let resp = PbClusterService::member_update(&self.cluster, auth.request(req)).await?;
        let r = resp.get_ref();
        Ok(members(&r.header, &r.members).done())
    }

    pub(super) async fn member_promote(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbMemberPromoteRequest {
            id: i.u64("ID").map_err(bad_input)?,
        };
        let resp = PbClusterService::member_promote(&self.cluster, auth.request(req)).await?;
        let r = resp.get_ref();
        Ok(members(&r.header, &r.members).done())
    }
}
