//! Plain HTTP endpoints etcd serves next to gRPC: `/health`, `/version`, `/metrics`.
//! Shapes follow etcd 3.4: `/health` answers `{"health":"true"}` with text/plain.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics;
use crate::shard_api::ShardClient;

/// How long /health waits for the shard before calling the member unhealthy.
const HEALTH_TIMEOUT_MS: u64 = 1000;

/// Routes for the HTTP endpoints, answering for the given core's shard.
pub fn routes(shard: ShardClient) -> Router {
    Router::new()
        .route("/health", get(move || health(shard.clone())))
        .route("/version", get(version))
        .route("/metrics", get(metrics_text))
}

async fn health(shard: ShardClient) -> Response {
    let status =
        tokio::time::timeout(Duration::from_millis(HEALTH_TIMEOUT_MS), shard.status()).await;
    // As etcd 3.4: unhealthy without a leader or while any alarm is raised.
    let healthy = matches!(status, Ok(Ok(s)) if s.leader != 0 && s.alarms.is_empty());
    let (code, body) = if healthy {
        (StatusCode::OK, r#"{"health":"true"}"#)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn version() -> Response {
    let body = serde_json::json!({
        "etcdserver": crate::ETCD_COMPAT_VERSION,
        "etcdcluster": crate::ETCD_CLUSTER_VERSION,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics_text() -> Response {
    let body = metrics::global().render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Unknown paths: gRPC clients get UNIMPLEMENTED (what etcd's gRPC server answers for an
/// unknown method), everyone else Go's plain 404.
pub(crate) async fn not_found(request: axum::extract::Request) -> Response {
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        let method = request.uri().path().to_string();
        return tonic::Status::unimplemented(format!("unknown method {method}")).into_http();
    }
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}
