//! /v3/lease/*: Grant, Revoke, KeepAlive (a stream: one answer per request in the body),
//! TimeToLive, Leases, through the same Lease service as gRPC.

use corekv_engine::pb::*;
use serde_json::Value;
use tonic::codegen::tokio_stream;

use super::json::{Input, Json, Obj};
use super::kv::header;
use super::{bad_input, json_values, stream_response, Answer, Auth, Gateway};
use crate::grpc::lease::keep_alive_once;

/// Requests one keep-alive body may carry (each is answered on its own line).
const KEEPALIVE_REQUESTS_MAX: usize = 1024;

impl Gateway {
    pub(super) async fn lease_grant(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbLeaseGrantRequest {
            ttl: i.i64("TTL").map_err(bad_input)?,
            id: i.i64("ID").map_err(bad_input)?,
        };
        let resp = PbLeaseService::lease_grant(&self.lease, auth.request(req)).await?;
        let r = resp.get_ref();
        Ok(Obj::new()
            .msg("header", header(&r.header))
            .i64("ID", r.id)
            .i64("TTL", r.ttl)
            .str("error", &r.error)
            .done())
    }

    pub(super) async fn lease_revoke(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbLeaseRevokeRequest {
            id: i.i64("ID").map_err(bad_input)?,
        };
        let resp = PbLeaseService::lease_revoke(&self.lease, auth.request(req)).await?;
        Ok(Obj::new()
            .msg("header", header(&resp.get_ref().header))
            .done())
    }

    pub(super) async fn lease_time_to_live(&self, auth: &Auth, body: &Value) -> Answer {
        let i = Input::of(body).map_err(bad_input)?;
        let req = PbLeaseTimeToLiveRequest {
            id: i.i64("ID").map_err(bad_input)?,
            keys: i.bool("keys").map_err(bad_input)?,
        };
        let resp = PbLeaseService::lease_time_to_live(&self.lease, auth.request(req)).await?;
        let r = resp.get_ref();
        Ok(Obj::new()
            .msg("header", header(&r.header))
            .i64("ID", r.id)
            .i64("TTL", r.ttl)
            .i64("grantedTTL", r.granted_ttl)
            .list(
                "keys",
                r.keys
                    .iter()
                    .map(|k| Json(format!("\"{}\"", super::json::base64_encode(k))))
                    .collect(),
            )
            .done())
    }

    pub(super) async fn lease_leases(&self, auth: &Auth) -> Answer {
        let resp = PbLeaseService::lease_leases(&self.lease, auth.request(PbLeaseLeasesRequest {}))
            .await?;
        let r = resp.get_ref();
        Ok(Obj::new()
            .msg("header", header(&r.header))
            .list(
                "leases",
                r.leases
                    .iter()
                    .map(|l| Obj::new().i64("ID", l.id).done())
                    .collect(),
            )
            .done())
    }

    /// LeaseKeepAlive: each JSON object of the body is one request, answered in order;
    /// the stream ends after the last (the client closed its side), or at the first error.
    pub(super) fn keep_alive(&self, body: &[u8]) -> axum::response::Response {
        let mut ids = Vec::new();
        for (n, value) in json_values(body).enumerate() {
            let parsed = value
                .map_err(super::json::BadInput)
                .and_then(|v| Input::of(&v).and_then(|i| i.i64("ID")));
            match parsed {
                Ok(id) if n < KEEPALIVE_REQUESTS_MAX => ids.push(id),
                Ok(_) => break,
                // As grpc-gateway: a first request that does not decode fails the call
                // (gRPC Unknown); a later one ends the client's side of the stream.
                Err(e) if n == 0 => {
                    return super::error_response(&tonic::Status::unknown(e.0));
                }
                Err(_) => break,
            }
        }
        let shard = self.shard.clone();
        let answers = tokio_stream::StreamExt::then(tokio_stream::iter(ids), move |id| {
            let shard = shard.clone();
            async move {
                let r = keep_alive_once(&shard, id).await?;
                Ok(Obj::new()
                    .msg("header", header(&r.header))
                    .i64("ID", r.id)
                    .i64("TTL", r.ttl)
                    .done())
            }
        });
        stream_response(answers)
    }
}
