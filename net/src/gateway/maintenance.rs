//! /v3/maintenance/*: status, hash, snapshot (a stream of chunks), alarm, defragment,
//! transfer-leadership, through the same Maintenance service as gRPC. (etcd 3.4's gateway
//! has no HashKV path.)

use corekv_engine::pb::*;
use serde_json::Value;
use tonic::codegen::tokio_stream::StreamExt;

use super::json::{Input, Json, Obj};
use super::kv::header;
use super::{bad_input, error_response, stream_response, Answer, Auth, Gateway};

const ALARM_ACTION: &[&str] = &["GET", "ACTIVATE", "DEACTIVATE"];
const ALARM_TYPE: &[&str] = &["NONE", "NOSPACE", "CORRUPT"];

impl Gateway {
    pub(super) async fn status(&self, auth: &Auth) -> Answer {
        let resp =
            PbMaintenanceService::status(&self.maintenance, auth.request(PbStatusRequest {}))
                .await?;
        let r = resp.get_ref();
        Ok(Obj::new()
            .msg("header", header(&r.header))
            .str("version", &r.version)
            .i64("dbSize", r.db_size)
            .u64("leader", r.leader)
            .u64("raftIndex", r.raft_index)
            .u64("raftTerm", r.raft_term)
            .u64("raftAppliedIndex", r.raft_applied_index)
            .list("errors", r.errors.iter().map(|e| Json::string(e)).collect())
            .i64("dbSizeInUse", r.db_size_in_use)
            .bool("isLearner", r.is_learner)
            .done())
    }

    pub(super) async fn hash(&self, auth: &Auth) -> Answer {
        let resp =
            PbMaintenanceService::hash(&self.maintenance, auth.request(PbHashRequest {})).await?;
        let r = resp.get_ref();
        Ok(Obj::new()
            .msg("header", header(&r.header))
            .u32("hash", r.hash)
            .done())
    }

    pub(super) async fn alarm(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbAlarmRequest {
            action: i
                .enumeration(
                    "action",
                    ALARM_ACTION,
                    "etcdserverpb.AlarmRequest_AlarmAction",
                )
                .map_err(bad_input)?,
            member_id: i.u64("memberID").map_err(bad_input)?,
            alarm: i
                .enumeration("alarm", ALARM_TYPE, "etcdserverpb.AlarmType")
                .map_err(bad_input)?,
        };
        let resp = PbMaintenanceService::alarm(&self.maintenance, auth.request(req)).await?;
        let r = resp.get_ref();
        Ok(Obj::new()
            .msg("header", header(&r.header))
            .list(
                "alarms",
                r.alarms
                    .iter()
                    .map(|a| {
                        Obj::new()
                            .u64("memberID", a.member_id)
                            .enumeration("alarm", a.alarm, ALARM_TYPE)
                            .done()
                    })
                    .collect(),
            )
            .done())
    }

    pub(super) async fn defragment(&self, auth: &Auth) -> Answer {
        let resp = PbMaintenanceService::defragment(
            &self.maintenance,
            auth.request(PbDefragmentRequest {}),
        )
        .await?;
        Ok(Obj::new()
            .msg("header", header(&resp.get_ref().header))
            .done())
    }

    pub(super) async fn move_leader(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbMoveLeaderRequest {
            target_id: i.u64("targetID").map_err(bad_input)?,
        };
        let resp = PbMaintenanceService::move_leader(&self.maintenance, auth.request(req)).await?;
        Ok(Obj::new()
            .msg("header", header(&resp.get_ref().header))
            .done())
    }

    /// Snapshot: the service's chunk stream (bounded at its source) as JSON lines.
    pub(super) async fn snapshot(&self, auth: &Auth) -> axum::response::Response {
        let stream = match PbMaintenanceService::snapshot(
            &self.maintenance,
            auth.request(PbSnapshotRequest {}),
        )
        .await
        {
            Ok(stream) => stream.into_inner(),
            Err(status) => return error_response(&status),
        };
        stream_response(stream.map(|chunk| {
            chunk.map(|r| {
                Obj::new()
                    .msg("header", header(&r.header))
                    .u64("remaining_bytes", r.remaining_bytes)
                    .bytes("blob", &r.blob)
                    .done()
            })
        }))
    }
}
