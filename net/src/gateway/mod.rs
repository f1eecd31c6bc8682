//! etcd's HTTP/JSON gateway on the client port: `POST /v3/<service>/<method>` (and the
//! same under `/v3beta/`, as etcd 3.4 serves both) with a JSON body, answered in JSON the
//! way etcd 3.4's grpc-gateway writes it (see [`json`]). Requests go through the same
//! service code as gRPC on this core (no loopback gRPC call). Streaming methods (watch,
//! lease keep-alive, snapshot) answer one `{"result": ...}` object per line.
//!
//! Errors are etcd's: `{"error": m, "message": m, "code": grpc_code}` with the HTTP status
//! grpc-gateway derives from the gRPC code; an unknown method is a plain-text 404
//! "Not Found", a known one asked with another verb than POST a plain-text 405.

mod cluster;
pub mod json;
mod kv;
mod lease;
mod maintenance;
mod watch;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::Value;
use tonic::codegen::tokio_stream::{Stream, StreamExt};

use crate::grpc;
use crate::shard_api::ShardClient;

/// The gateway's result for a unary method: the response as JSON, or the gRPC status.
type Answer = Result<Value, tonic::Status>;

/// The methods the gateway serves, by path after the `/v3` or `/v3beta` prefix (etcd 3.4's
/// `google.api.http` annotations; the lease methods also answer under `/kv/lease/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    Watch,
    LeaseGrant,
    LeaseRevoke,
    LeaseKeepAlive,
    LeaseTimeToLive,
    LeaseLeases,
    Status,
    Hash,
    Snapshot,
    Alarm,
    Defragment,
    MoveLeader,
    MemberList,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    MemberPromote,
}

fn route(path: &str) -> Option<Route> {
    Some(match path {
        "/kv/range" => Route::Range,
        "/kv/put" => Route::Put,
        "/kv/deleterange" => Route::DeleteRange,
        "/kv/txn" => Route::Txn,
        "/kv/compaction" => Route::Compact,
        "/watch" => Route::Watch,
        "/lease/grant" => Route::LeaseGrant,
        "/lease/revoke" | "/kv/lease/revoke" => Route::LeaseRevoke,
        "/lease/keepalive" => Route::LeaseKeepAlive,
        "/lease/timetolive" | "/kv/lease/timetolive" => Route::LeaseTimeToLive,
        "/lease/leases" | "/kv/lease/leases" => Route::LeaseLeases,
        "/maintenance/status" => Route::Status,
        "/maintenance/hash" => Route::Hash,
        "/maintenance/snapshot" => Route::Snapshot,
        "/maintenance/alarm" => Route::Alarm,
        "/maintenance/defragment" => Route::Defragment,
        "/maintenance/transfer-leadership" => Route::MoveLeader,
        "/cluster/member/list" => Route::MemberList,
        "/cluster/member/add" => Route::MemberAdd,
        "/cluster/member/remove" => Route::MemberRemove,
        "/cluster/member/update" => Route::MemberUpdate,
        "/cluster/member/promote" => Route::MemberPromote,
        _ => return None,
    })
}

/// One core's gateway: the same service objects the gRPC server uses, on the same shard.
pub(crate) struct Gateway {
    shard: ShardClient,
    kv: grpc::kv::KvService,
    lease: grpc::lease::LeaseService,
    maintenance: grpc::maintenance::MaintenanceService,
    cluster: grpc::cluster::ClusterService,
    /// Largest request body read: --max-request-bytes plus the overhead gRPC allows too.
    body_max_bytes: usize,
}

/// The gateway's routes on a client port, answering for the given core's shard.
pub fn routes(shard: ShardClient) -> axum::Router {
    let gateway = Arc::new(Gateway {
        kv: grpc::kv::KvService::new(shard.clone()),
        lease: grpc::lease::LeaseService::new(shard.clone()),
        maintenance: grpc::maintenance::MaintenanceService::new(shard.clone()),
        cluster: grpc::cluster::ClusterService::new(shard.clone()),
        // JSON carries bytes as base64 (4/3 the size) plus field names.
        body_max_bytes: (shard.cluster.max_request_bytes + grpc::GRPC_OVERHEAD_BYTES) / 3 * 4,
        shard,
    });
    let mut router = axum::Router::new();
    for prefix in ["/v3", "/v3beta"] {
        let gateway = gateway.clone();
        router = router.route(
            &format!("{prefix}/{{*method}}"),
            any(move |request: axum::extract::Request| {
                let gateway = gateway.clone();
                async move { with_cors(gateway.serve(prefix.len(), request).await) }
            }),
        );
    }
    router
}

/// etcd's client handler adds these to every gateway answer.
fn with_cors(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// The HTTP status grpc-gateway (as vendored by etcd 3.4) gives a gRPC code.
pub fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        Ok => StatusCode::OK,
        Cancelled => StatusCode::REQUEST_TIMEOUT,
        Unknown | Internal | DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        InvalidArgument | OutOfRange => StatusCode::BAD_REQUEST,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// etcd's error body for a failed call.
fn error_response(status: &tonic::Status) -> Response {
    let body = serde_json::json!({
        "error": status.message(),
        "message": status.message(),
        "code": status.code() as i32,
    });
    (
        http_status(status.code()),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// A body that does not decode, as grpc-gateway answers it for a unary method.
fn bad_input(e: json::BadInput) -> tonic::Status {
    tonic::Status::invalid_argument(e.0)
}

/// The JSON values of a request body, in order: the first is what a unary method reads
/// (anything after it is ignored, as Go's decoder does); streaming methods read them all.
/// An empty body yields none.
fn json_values(body: &[u8]) -> impl Iterator<Item = Result<Value, String>> + '_ {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .map(|r| r.map_err(|e| e.to_string()))
}

/// A streaming answer: one `{"result": ...}` per line, or grpc-gateway's stream error
/// object in place of a failed message (which ends the stream).
fn stream_response<S>(messages: S) -> Response
where
    S: Stream<Item = Result<Value, tonic::Status>> + Send + 'static,
{
    let mut failed = false;
    let lines = messages.map_while(move |item| {
        if failed {
            return None;
        }
        let line = match item {
            Ok(result) => serde_json::json!({ "result": result }),
            Err(status) => {
                failed = true;
                let http = http_status(status.code());
                serde_json::json!({ "error": {
                    "grpc_code": status.code() as i32,
                    "http_code": http.as_u16(),
                    "message": status.message(),
                    "http_status": http.canonical_reason().unwrap_or(""),
                }})
            }
        };
        let mut text = line.to_string();
        text.push('\n');
        Some(Ok::<Bytes, std::convert::Infallible>(Bytes::from(text)))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}

impl Gateway {
    async fn serve(&self, prefix_len: usize, request: axum::extract::Request) -> Response {
        let path = request.uri().path()[prefix_len..].to_string();
        if request.method() == Method::OPTIONS {
            // CORS preflight: etcd answers it empty.
            return StatusCode::OK.into_response();
        }
        let Some(route) = route(&path) else {
            return plain(StatusCode::NOT_FOUND, "Not Found\n");
        };
        if request.method() != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        let body = match axum::body::to_bytes(request.into_body(), self.body_max_bytes).await {
            Ok(body) => body,
            Err(_) => {
                return error_response(&tonic::Status::resource_exhausted(format!(
                    "corekv: request body larger than {} bytes",
                    self.body_max_bytes
                )))
            }
        };
        match route {
            Route::Watch => return self.watch(&body).await,
            Route::LeaseKeepAlive => return self.keep_alive(&body),
            Route::Snapshot => return self.snapshot().await,
            _ => {}
        }
        // A unary method reads the body's first JSON value; an empty body is an empty
        // request (grpc-gateway ignores io.EOF there).
        let first = match json_values(&body).next() {
            None => Value::Null,
            Some(Ok(v)) => v,
            Some(Err(e)) => return error_response(&tonic::Status::invalid_argument(e)),
        };
        let answer = match route {
            Route::Range => self.range(&first).await,
            Route::Put => self.put(&first).await,
            Route::DeleteRange => self.delete_range(&first).await,
            Route::Txn => self.txn(&first).await,
            Route::Compact => self.compact(&first).await,
            Route::LeaseGrant => self.lease_grant(&first).await,
            Route::LeaseRevoke => self.lease_revoke(&first).await,
            Route::LeaseTimeToLive => self.lease_time_to_live(&first).await,
            Route::LeaseLeases => self.lease_leases().await,
            Route::Status => self.status().await,
            Route::Hash => self.hash().await,
            Route::Alarm => self.alarm(&first).await,
            Route::Defragment => self.defragment().await,
            Route::MoveLeader => self.move_leader(&first).await,
            Route::MemberList => self.member_list().await,
            Route::MemberAdd => self.member_add(&first).await,
            Route::MemberRemove => self.member_remove(&first).await,
            Route::MemberUpdate => self.member_update(&first).await,
            Route::MemberPromote => self.member_promote(&first).await,
            Route::Watch | Route::LeaseKeepAlive | Route::Snapshot => {
                unreachable!("streaming routes are served above")
            }
        };
        match answer {
            Ok(value) => json_response(&value),
            Err(status) => error_response(&status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cover_etcd_paths_only() {
        assert_eq!(route("/kv/range"), Some(Route::Range));
        assert_eq!(route("/kv/lease/leases"), Some(Route::LeaseLeases));
        assert_eq!(route("/kv/range/"), None);
        assert_eq!(route("/maintenance/hashkv"), None);
    }

    #[test]
    fn status_codes_follow_grpc_gateway() {
        assert_eq!(
            http_status(tonic::Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(
            http_status(tonic::Code::OutOfRange),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            http_status(tonic::Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
