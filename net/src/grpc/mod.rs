//! etcd's gRPC services, served at etcd's method paths with etcd's error codes and texts.

pub(crate) mod auth;
pub(crate) mod cluster;
mod concurrency;
mod election;
pub(crate) mod kv;
pub(crate) mod lease;
mod lock;
pub(crate) mod maintenance;
pub(crate) mod range;
mod v3pb;
pub(crate) mod watch;

use std::time::Instant;

use corekv_engine::pb::{
    PbClusterServer, PbKvServer, PbMaintenanceServer, PbResponseHeader, PbWatchServer,
};
use corekv_engine::{KvError, StatusCode};
use tonic::service::Routes;

use crate::metrics::{self, Method};
use crate::shard_api::{ClusterInfo, ShardClient};

/// gRPC overhead allowed on top of --max-request-bytes before the transport itself refuses a
/// message, as etcd does (so a slightly-too-large request gets etcd's "request is too large").
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The message bounds every service applies: etcd's --max-request-bytes plus gRPC's
/// overhead in, no bound out.
fn limits(shard: &ShardClient) -> v3pb::Limits {
    v3pb::Limits {
        decode_max: shard.cluster.max_request_bytes + GRPC_OVERHEAD_BYTES,
        encode_max: usize::MAX,
    }
}

/// The generated KV service with those bounds (the router's and [`ClientService`]'s).
fn kv_server(shard: &ShardClient) -> PbKvServer<kv::KvService> {
    let limits = limits(shard);
    PbKvServer::new(kv::KvService::new(shard.clone()))
        .max_decoding_message_size(limits.decode_max)
        .max_encoding_message_size(limits.encode_max)
}

/// Builds the gRPC routes served on one core, bound to that core's shard.
pub fn routes(shard: ShardClient) -> Routes {
    let limits = limits(&shard);
    let (decode_max, encode_max) = (limits.decode_max, limits.encode_max);
    let kv = kv_server(&shard);
    let maintenance = PbMaintenanceServer::new(maintenance::MaintenanceService::new(shard.clone()))
        .max_decoding_message_size(decode_max);
    let watch = PbWatchServer::new(watch::WatchService::new(shard.clone()))
        .max_decoding_message_size(decode_max)
        .max_encoding_message_size(encode_max);
    let lease = corekv_engine::pb::PbLeaseServer::new(lease::LeaseService::new(shard.clone()))
        .max_decoding_message_size(decode_max);
    let lock = lock::LockServer::new(shard.clone(), limits);
    let election = election::ElectionServer::new(shard.clone(), limits);
    let auth = auth::AuthServer::new(shard.clone(), limits);
    let cluster = PbClusterServer::new(cluster::ClusterService::new(shard))
        .max_decoding_message_size(decode_max);
    Routes::new(kv)
        .add_service(maintenance)
        .add_service(cluster)
        .add_service(watch)
        .add_service(lease)
        .add_service(lock)
        .add_service(election)
        .add_service(auth)
}

/// [`routes`] as an axum router, with KV.Range on its own exact route (`range.rs`: the
/// answer is encoded once, straight into the frame) and Watch.Watch too (`watch.rs`: a
/// batch's events are encoded once and shared by the watchers they go to). axum matches an exact route ahead of
/// the KV service's `/etcdserverpb.KV/{*rest}`, so only Range leaves the generated service.
pub fn router(shard: ShardClient) -> axum::Router {
    let limits = limits(&shard);
    let range = range::RangeServer::new(shard.clone(), limits);
    let watch = watch::WatchServer::new(shard.clone(), limits);
    routes(shard)
        .into_axum_router()
        .route_service(range::PATH, range)
        .route_service(watch::PATH, watch)
}

/// The client port's service: KV calls (every put, range, txn, delete and compaction) go
/// straight to their gRPC servers; everything else (the other services, the JSON gateway,
/// /health, /metrics, unknown paths) goes through the axum router as before. perf at put
/// 16/256: the router's matching, its boxed route futures and the moves of those futures
/// were a measurable share of the network threads' time on the one path every write takes.
/// The router keeps its KV routes (range.rs's tests compare the generated service with the
/// range server through them), but on the client port no KV call reaches them.
#[derive(Clone)]
pub struct ClientService {
    /// None on a metrics-only port.
    kv: Option<(PbKvServer<kv::KvService>, range::RangeServer)>,
    router: axum::Router,
}

/// The KV service's method paths share this prefix.
const KV_PATH_PREFIX: &str = "/etcdserverpb.KV/";

impl ClientService {
    /// The client port: the KV fast path in front of `router` (which serves KV too).
    pub fn client(shard: ShardClient, router: axum::Router) -> ClientService {
        let kv = kv_server(&shard);
        let range = range::RangeServer::new(shard.clone(), limits(&shard));
        ClientService {
            kv: Some((kv, range)),
            router,
        }
    }

    /// A port served by `router` alone.
    pub fn router_only(router: axum::Router) -> ClientService {
        ClientService { kv: None, router }
    }
}

impl tower::Service<http::Request<hyper::body::Incoming>> for ClientService {
    type Response = http::Response<axum::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // The KV servers and the router are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let path = req.uri().path();
        match &mut self.kv {
            Some((_, range)) if path == range::PATH => {
                let answer = range.call(req.map(axum::body::Body::new));
                Box::pin(async move { Ok(answer.await?.map(axum::body::Body::new)) })
            }
            Some((kv, _)) if path.starts_with(KV_PATH_PREFIX) => {
                let answer = kv.call(req);
                Box::pin(async move { Ok(answer.await?.map(axum::body::Body::new)) })
            }
            _ => {
                let answer = self.router.call(req);
                Box::pin(async move { answer.await })
            }
        }
    }
}

/// Maps an engine error to the gRPC status etcd sends for it.
pub(crate) fn to_status(err: KvError) -> tonic::Status {
    let code = match err.code() {
        StatusCode::InvalidArgument => tonic::Code::InvalidArgument,
        StatusCode::OutOfRange => tonic::Code::OutOfRange,
        StatusCode::NotFound => tonic::Code::NotFound,
        StatusCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        StatusCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        StatusCode::Unavailable => tonic::Code::Unavailable,
        StatusCode::Internal => tonic::Code::Internal,
        StatusCode::DataLoss => tonic::Code::DataLoss,
        StatusCode::PermissionDenied => tonic::Code::PermissionDenied,
        StatusCode::Unauthenticated => tonic::Code::Unauthenticated,
        StatusCode::Unknown => tonic::Code::Unknown,
    };
    tonic::Status::new(code, err.message().to_string())
}

/// Fills the top-level response header as etcd does (cluster, member, revision, term).
pub(crate) fn fill_header(
    header: &mut Option<PbResponseHeader>,
    cluster: &ClusterInfo,
    revision: i64,
    raft_term: u64,
) {
    let h = header.get_or_insert_with(Default::default);
    h.cluster_id = cluster.cluster_id;
    h.member_id = cluster.member_id;
    h.raft_term = raft_term;
    if h.revision == 0 {
        h.revision = revision;
    }
}

/// Measures one request for the per-method metrics.
pub(crate) struct Timer {
    method: Method,
    started: Instant,
}

impl Timer {
    pub(crate) fn start(method: Method) -> Timer {
        Timer {
            method,
            started: Instant::now(),
        }
    }
    pub(crate) fn finish<T>(self, result: Result<T, tonic::Status>) -> Result<T, tonic::Status> {
        metrics::global().record(self.method, result.is_ok(), self.started.elapsed());
        result
    }
}

/// etcd's `checkLeasePuts` for a request attaching a key to `lease`, or revoking it: the
/// caller must be able to write every key already attached. Only reads the lease's keys
/// while auth is enabled.
pub(crate) async fn check_lease_keys(
    shard: &ShardClient,
    caller: &crate::auth::Caller,
    lease: i64,
) -> Result<(), KvError> {
    if lease == 0 || !shard.cluster.auth.enabled() {
        return Ok(());
    }
    let view = shard.view().await?.body;
    let Some(info) = view.lease(lease) else {
        return Ok(());
    };
    shard
        .cluster
        .auth
        .check_keys_writable(caller, info.keys.iter().map(|k| k.as_ref()))
}

/// The leases a txn's puts attach keys to (every branch, nested txns included).
pub(crate) fn txn_put_leases(r: &corekv_engine::pb::PbTxnRequest, out: &mut Vec<i64>) {
    use corekv_engine::pb::PbTxnOpRequest;
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(PbTxnOpRequest::RequestPut(p)) if p.lease != 0 => out.push(p.lease),
            Some(PbTxnOpRequest::RequestTxn(nested)) => txn_put_leases(nested, out),
            _ => {}
        }
    }
}

pub(crate) fn unimplemented(what: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!("corekv: {what} is not implemented yet"))
}
