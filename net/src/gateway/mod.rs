//! etcd's HTTP/JSON gateway on the client port: `POST /v3/<service>/<method>` (and the
//! same under `/v3beta/`, as etcd 3.4 serves both) with a JSON body, answered in JSON the
//! way etcd 3.4's grpc-gateway writes it (see [`json`]). Requests go through the same
//! service code as gRPC on this core (no loopback gRPC call). Streaming methods (watch,
//! lease keep-alive, snapshot) answer one `{"result": ...}` object per line.
//!
//! Errors are etcd's: `{"error": m, "message": m, "code": grpc_code}` with the HTTP status
//! grpc-gateway derives from the gRPC code; an unknown method is a plain-text 404
//! "Not Found", a known one asked with another verb than POST a plain-text 405.

mod auth;
mod cluster;
mod go_json;
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
type Answer = Result<json::Json, tonic::Status>;

/// The methods the gateway serves, by path after the `/v3` or `/v3beta` prefix (etcd 3.4's
/// `google.api.http` annotations; the lease methods also answer under `/kv/lease/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// One JSON request in, one JSON response out.
    Unary(Unary),
    /// Streams: one request per JSON object of the body, one response per line.
    Watch,
    LeaseKeepAlive,
    /// One request, a stream of chunks.
    Snapshot,
    /// The Auth service's unary methods.
    Auth(auth::AuthMethod),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unary {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    LeaseGrant,
    LeaseRevoke,
    LeaseTimeToLive,
    LeaseLeases,
    Status,
    Hash,
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
    let unary = match path {
        "/kv/range" => Unary::Range,
        "/kv/put" => Unary::Put,
        "/kv/deleterange" => Unary::DeleteRange,
        "/kv/txn" => Unary::Txn,
        "/kv/compaction" => Unary::Compact,
        "/watch" => return Some(Route::Watch),
        "/lease/grant" => Unary::LeaseGrant,
        "/lease/revoke" | "/kv/lease/revoke" => Unary::LeaseRevoke,
        "/lease/keepalive" => return Some(Route::LeaseKeepAlive),
        "/lease/timetolive" | "/kv/lease/timetolive" => Unary::LeaseTimeToLive,
        "/lease/leases" | "/kv/lease/leases" => Unary::LeaseLeases,
        "/maintenance/status" => Unary::Status,
        "/maintenance/hash" => Unary::Hash,
        "/maintenance/snapshot" => return Some(Route::Snapshot),
        "/maintenance/alarm" => Unary::Alarm,
        "/maintenance/defragment" => Unary::Defragment,
        "/maintenance/transfer-leadership" => Unary::MoveLeader,
        "/cluster/member/list" => Unary::MemberList,
        "/cluster/member/add" => Unary::MemberAdd,
        "/cluster/member/remove" => Unary::MemberRemove,
        "/cluster/member/update" => Unary::MemberUpdate,
        "/cluster/member/promote" => Unary::MemberPromote,
        _ => return auth::route(path).map(Route::Auth),
    };
    Some(Route::Unary(unary))
}

/// Who is calling: the HTTP `Authorization` header, passed to the services as the gRPC
/// metadata `authorization` (etcd reads its token from there for gateway requests).
pub(crate) struct Auth(Option<tonic::metadata::AsciiMetadataValue>);

impl Auth {
    fn of(headers: &axum::http::HeaderMap) -> Auth {
        Auth(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        )
    }

    /// A service request carrying the caller's token, if any.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }
}

/// One core's gateway: the same service objects the gRPC server uses, on the same shard.
pub(crate) struct Gateway {
    shard: ShardClient,
    kv: grpc::kv::KvService,
    lease: grpc::lease::LeaseService,
    maintenance: grpc::maintenance::MaintenanceService,
    cluster: grpc::cluster::ClusterService,
    auth_service: grpc::auth::AuthService,
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
        auth_service: grpc::auth::AuthService::new(shard.clone()),
        // JSON carries bytes as base64 (4/3 the size) plus field names.
        body_max_bytes: (shard.cluster.max_request_bytes + grpc::GRPC_OVERHEAD_BYTES) / 3 * 4,
        shard,
    });
    // As Go's ServeMux in front of etcd's gateway: `/v3` is redirected to `/v3/`.
    let mut router = axum::Router::new().route(
        "/v3",
        any(|| async {
            with_cors((StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/v3/")]).into_response())
        }),
    );
    for prefix in ["/v3", "/v3beta"] {
        let gateway = gateway.clone();
        let handler = any(move |request: axum::extract::Request| {
            let gateway = gateway.clone();
            async move { with_cors(gateway.serve(prefix.len(), request).await) }
        });
        router = router
            .route(&format!("{prefix}/"), handler.clone())
            .route(&format!("{prefix}/{{*method}}"), handler);
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
    // Rendered by hand to keep etcd's field order.
    let message = json::Json::string(status.message()).0;
    let body = format!(
        r#"{{"error":{message},"message":{message},"code":{}}}"#,
        status.code() as i32
    );
    (
        http_status(status.code()),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// grpc-gateway passes the gRPC response's metadata on as `Grpc-Metadata-*` headers.
const GRPC_METADATA_CONTENT_TYPE: (&str, &str) = ("grpc-metadata-content-type", "application/grpc");

fn json_response(value: json::Json) -> Response {
    (
        [
            (header::CONTENT_TYPE.as_str(), "application/json"),
            GRPC_METADATA_CONTENT_TYPE,
        ],
        value.0,
    )
        .into_response()
}

/// A body that does not decode, as grpc-gateway answers it for a unary method.
fn bad_input(e: json::BadInput) -> tonic::Status {
    tonic::Status::invalid_argument(e.0)
}

/// Bytes of an oversized body read and dropped before answering, so a client still
/// writing it reads the answer instead of a reset connection; past this it is closed.
const BODY_DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The request body if it is at most `max_bytes` long; `None` (after draining a bounded
/// amount, nothing kept) if longer.
async fn read_body(body: Body, max_bytes: usize) -> Option<Bytes> {
    let mut frames = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = frames.next().await {
        let Ok(frame) = frame else {
            return None;
        };
        seen += frame.len();
        if seen > max_bytes {
            kept = Vec::new();
            if seen > BODY_DRAIN_MAX_BYTES {
                return None;
            }
            continue;
        }
        kept.extend_from_slice(&frame);
    }
    (seen <= max_bytes).then(|| Bytes::from(kept))
}

/// The JSON values of a request body, in order: the first is what a unary method reads
/// (anything after it is ignored, as Go's decoder does); streaming methods read them all.
/// An empty body yields none.
/// A value that does not parse gets the error Go's decoder gives for it (serde's own text
/// only where Go would have accepted the value, e.g. a number serde finds out of range).
fn json_values(body: &[u8]) -> impl Iterator<Item = Result<Value, String>> + '_ {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let start = values.byte_offset();
        let item = values.next()?;
        Some(item.map_err(|e| {
            failed = true;
            match go_json::scan_value(&body[start..]) {
                go_json::Scan::Error(go) => go,
                go_json::Scan::Truncated => "unexpected EOF".to_string(),
                go_json::Scan::Complete => e.to_string(),
            }
        }))
    })
}

/// A streaming answer: one `{"result": ...}` per line, or grpc-gateway's stream error
/// object in place of a failed message (which ends the stream).
fn stream_response<S>(messages: S) -> Response
where
    S: Stream<Item = Result<json::Json, tonic::Status>> + Send + 'static,
{
    let mut failed = false;
    let lines = messages.map_while(move |item| {
        if failed {
            return None;
        }
        let text = match item {
            Ok(result) => format!("{{\"result\":{}}}\n", result.0),
            Err(status) => {
                failed = true;
                let http = http_status(status.code());
                format!(
                    "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{},\"http_status\":{}}}}}\n",
                    status.code() as i32,
                    http.as_u16(),
                    json::Json::string(status.message()).0,
                    json::Json::string(http.canonical_reason().unwrap_or("")).0,
                )
            }
        };
        Some(Ok::<Bytes, std::convert::Infallible>(Bytes::from(text)))
    });
    (
        [
            (header::CONTENT_TYPE.as_str(), "application/json"),
            GRPC_METADATA_CONTENT_TYPE,
        ],
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
        let auth = Auth::of(request.headers());
        let Some(body) = read_body(request.into_body(), self.body_max_bytes).await else {
            return error_response(&tonic::Status::resource_exhausted(format!(
                "corekv: request body larger than {} bytes",
                self.body_max_bytes
            )));
        };
        let unary = match route {
            Route::Unary(unary) => unary,
            Route::Watch => return self.watch(&auth, &body).await,
            Route::LeaseKeepAlive => return self.keep_alive(&body),
            Route::Snapshot => return self.snapshot(&auth).await,
            Route::Auth(method) => {
                let first = match json_values(&body).next() {
                    None => Value::Null,
                    Some(Ok(v)) => v,
                    Some(Err(e)) => return error_response(&tonic::Status::invalid_argument(e)),
                };
                return match self.auth_method(method, &auth, &first).await {
                    Ok(value) => json_response(value),
                    Err(status) => error_response(&status),
                };
            }
        };
        // A unary method reads the body's first JSON value; an empty body is an empty
        // request (grpc-gateway ignores io.EOF there).
        let first = match json_values(&body).next() {
            None => Value::Null,
            Some(Ok(v)) => v,
            Some(Err(e)) => return error_response(&tonic::Status::invalid_argument(e)),
        };
        let answer = match unary {
            Unary::Range => self.range(&auth, &first).await,
            Unary::Put => self.put(&auth, &first).await,
            Unary::DeleteRange => self.delete_range(&auth, &first).await,
            Unary::Txn => self.txn(&auth, &first).await,
            Unary::Compact => self.compact(&auth, &first).await,
            Unary::LeaseGrant => self.lease_grant(&auth, &first).await,
            Unary::LeaseRevoke => self.lease_revoke(&auth, &first).await,
            Unary::LeaseTimeToLive => self.lease_time_to_live(&auth, &first).await,
            Unary::LeaseLeases => self.lease_leases(&auth).await,
            Unary::Status => self.status(&auth).await,
            Unary::Hash => self.hash(&auth).await,
            Unary::Alarm => self.alarm(&auth, &first).await,
            Unary::Defragment => self.defragment(&auth).await,
            Unary::MoveLeader => self.move_leader(&auth, &first).await,
            Unary::MemberList => self.member_list(&auth).await,
            Unary::MemberAdd => self.member_add(&auth, &first).await,
            Unary::MemberRemove => self.member_remove(&auth, &first).await,
            Unary::MemberUpdate => self.member_update(&auth, &first).await,
            Unary::MemberPromote => self.member_promote(&auth, &first).await,
        };
        match answer {
            Ok(value) => json_response(value),
            Err(status) => error_response(&status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cover_etcd_paths_only() {
        assert_eq!(route("/kv/range"), Some(Route::Unary(Unary::Range)));
        assert_eq!(route("/watch"), Some(Route::Watch));
        assert_eq!(
            route("/kv/lease/leases"),
            Some(Route::Unary(Unary::LeaseLeases))
        );
        assert_eq!(route("/kv/range/"), None);
        assert_eq!(route("/maintenance/hashkv"), None);
    }

    #[tokio::test]
    async fn a_stream_error_is_grpc_gateways_error_object_and_ends_the_stream() {
        let items = tonic::codegen::tokio_stream::iter(vec![
            Ok(json::Obj::new().i64("ID", 1).done()),
            Err(tonic::Status::not_found(
                "etcdserver: requested lease not found",
            )),
            Ok(json::Obj::new().done()),
        ]);
        let response = stream_response(items);
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            body,
            concat!(
                r#"{"result":{"ID":"1"}}"#,
                "\n",
                r#"{"error":{"grpc_code":5,"http_code":404,"message":"etcdserver: requested lease not found","http_status":"Not Found"}}"#,
                "\n"
            )
        );
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused_and_a_bounded_one_kept() {
        assert_eq!(
            read_body(Body::from("{}"), 2).await.as_deref(),
            Some(&b"{}"[..])
        );
        assert!(read_body(Body::from("{} "), 2).await.is_none());
    }

    #[test]
    fn the_authorization_header_reaches_the_service_as_metadata() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("tok.42"));
        let request = Auth::of(&headers).request(());
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().unwrap()),
            Some("tok.42")
        );
        let anonymous = Auth::of(&axum::http::HeaderMap::new()).request(());
        assert!(anonymous.metadata().get("authorization").is_none());
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
