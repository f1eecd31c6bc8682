//! KV.Range with its answer built in memory once.
//!
//! The generated KV service would answer Range with a `PbRangeResponse` (every key and
//! value copied out of the store into it), which tonic then encodes into its frame buffer:
//! the answer twice, plus a struct per key. This route instead gets the shard's
//! [`RangeAnswer`] (the selected records, shared with the snapshot) and its codec encodes
//! it straight into tonic's frame buffer, reserved once at the final size: the bytes that
//! go on the wire are the only copy. They are the bytes prost writes for the same response
//! (the engine checks that on random stores and requests).
//!
//! The route is an exact axum route for `/etcdserverpb.KV/Range`, which axum (matchit)
//! matches ahead of the generated service's `/etcdserverpb.KV/{*rest}`; every other KV
//! method stays on the generated service. What the generated method did is kept: etcd's
//! request checks, serializable reads from the core's view and linearizable ones after a
//! read index, the header (cluster, member, revision, raft term), the per-method metrics
//! and the message size limits.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use corekv_engine::mvcc::{validate, HeaderFields, RangeAnswer};
use corekv_engine::pb::{PbRangeRequest, PbRangeResponse};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

use super::v3pb::{HttpFuture, Limits};
use super::{to_status, Timer};
use crate::metrics::Method;
use crate::shard_api::{ReadOp, ReadResult, ShardClient};

/// The method path this route serves.
pub(crate) const PATH: &str = "/etcdserverpb.KV/Range";

/// A Range's answer with the header fields it is sent with.
pub(crate) struct RangeReply {
    answer: RangeAnswer,
    header: HeaderFields,
}

impl RangeReply {
    /// Bytes of the RangeResponse this reply encodes to.
    pub(crate) fn encoded_len(&self) -> usize {
        self.answer.encoded_len(&self.header)
    }

    /// Writes the RangeResponse (the bytes prost would write for it) into `buf`.
    pub(crate) fn encode(&self, buf: &mut impl bytes::BufMut) {
        self.answer.encode(&self.header, buf);
    }
}

/// Decodes etcd's RangeRequest with prost; encodes a [`RangeReply`] in place.
struct RangeCodec;

impl Codec for RangeCodec {
    type Encode = RangeReply;
    type Decode = PbRangeRequest;
    type Encoder = RangeEncoder;
    type Decoder = tonic_prost::ProstDecoder<PbRangeRequest>;

    fn encoder(&mut self) -> RangeEncoder {
        RangeEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<PbRangeResponse, PbRangeRequest>::raw_decoder(
            BufferSettings::default(),
        )
    }
}

struct RangeEncoder;

impl Encoder for RangeEncoder {
    type Item = RangeReply;
    type Error = Status;

    /// Writes the RangeResponse into tonic's frame buffer (after the 5-byte frame header
    /// tonic has put there), grown once to its final size. tonic then checks the size
    /// limit, writes the frame header and hands the buffer on without copying it.
    fn encode(&mut self, item: RangeReply, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let len = item.answer.encoded_len(&item.header);
        dst.reserve(len);
        item.answer.encode(&item.header, dst);
        Ok(())
    }
}

/// The Range route's service, as axum calls it.
#[derive(Clone)]
pub(crate) struct RangeServer {
    shard: ShardClient,
    limits: Limits,
}

impl RangeServer {
    pub(crate) fn new(shard: ShardClient, limits: Limits) -> RangeServer {
        RangeServer { shard, limits }
    }
}

impl tower::Service<http::Request<axum::body::Body>> for RangeServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> HttpFuture {
        let handler = RangeHandler {
            shard: self.shard.clone(),
        };
        let limits = self.limits;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RangeCodec)
                .apply_max_message_size_config(Some(limits.decode_max), Some(limits.encode_max));
            Ok(grpc.unary(handler, req.map(Body::new)).await)
        })
    }
}

/// The unary method tonic calls with the decoded request.
struct RangeHandler {
    shard: ShardClient,
}

impl tower::Service<Request<PbRangeRequest>> for RangeHandler {
    type Response = Response<RangeReply>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RangeReply>, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<PbRangeRequest>) -> Self::Future {
        let shard = self.shard.clone();
        Box::pin(async move {
            let timer = Timer::start(Method::Range);
            let caller = shard.cluster.auth.caller_of(&request);
            let result = range(&shard, caller, request.into_inner())
                .await
                .map(Response::new);
            timer.finish(result)
        })
    }
}

/// etcd's Range: checked as etcd's gRPC layer checks it, read by the shard (after a read
/// index unless serializable), answered with this member's header.
pub(crate) async fn range(
    shard: &ShardClient,
    caller: Result<crate::auth::Caller, corekv_engine::KvError>,
    req: PbRangeRequest,
) -> Result<RangeReply, Status> {
    validate::check_range(&req).map_err(to_status)?;
    // etcd checks the caller after the request and before reading.
    let caller = caller.map_err(to_status)?;
    shard
        .cluster
        .auth
        .check_range(&caller, &req.key, &req.range_end)
        .map_err(to_status)?;
    let serializable = req.serializable;
    let reply = shard
        .read(ReadOp::Range(req), serializable)
        .await
        .map_err(to_status)?;
    match reply.body {
        ReadResult::Range(answer) => {
            let header = HeaderFields {
                cluster_id: shard.cluster.cluster_id,
                member_id: shard.cluster.member_id,
                raft_term: reply.raft_term,
            };
            Ok(RangeReply { answer, header })
        }
        ReadResult::Txn(_) => Err(Status::internal(
            "corekv: read response does not match the request",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use corekv_engine::mvcc::Store;
    use corekv_engine::pb::{PbPutRequest, PbResponseHeader};
    use corekv_engine::request::Command;
    use prost::Message;
    use tower::ServiceExt;

    use super::*;
    use crate::shard_api::ClusterInfo;

    const CLUSTER_ID: u64 = 0xc1u64 << 56;
    const MEMBER_ID: u64 = 77;
    const RAFT_TERM: u64 = 5;

    /// A store of `keys` keys `k00000`.. with values of 0 to 199 bytes.
    fn store(keys: u32) -> Store {
        let mut store = Store::new();
        store.set_change_tracking(false);
        for i in 0..keys {
            let put = PbPutRequest {
                key: format!("k{i:05}").into_bytes(),
                value: vec![b'v'; (i % 200) as usize],
                ..Default::default()
            };
            store.apply(&Command::Put(put)).unwrap();
        }
        store
    }

    /// A client whose reads see `store(keys)`: serializable ones from the latest view, and
    /// linearizable ones after a sequencer (on its own thread) answers their read index.
    fn fake_shard(keys: u32) -> ShardClient {
        let view = store(keys).view();
        let latest = Arc::new(crate::sequencer_api::LatestView::new(
            view.clone(),
            RAFT_TERM,
        ));
        let (tx, _) = flume::bounded(1);
        let (sequencer, inbox) = flume::bounded(16);
        std::thread::spawn(move || {
            while let Ok(msg) = inbox.recv() {
                if let crate::sequencer_api::SequencerMsg::ReadIndex { reply } = msg {
                    let _ = reply.send(Ok((view.clone(), RAFT_TERM)));
                }
            }
        });
        let cluster = ClusterInfo {
            cluster_id: CLUSTER_ID,
            member_id: MEMBER_ID,
            members: Vec::new(),
            max_request_bytes: 1 << 20,
            max_txn_ops: 128,
            quota_backend_bytes: u64::MAX,
            backend_size_bytes: Arc::new(AtomicU64::new(0)),
            auth: Arc::new(crate::auth::AuthGate::disabled()),
        };
        ShardClient::new(tx, sequencer, latest, Arc::new(cluster))
    }

    /// A gRPC request for `path` carrying `message` in one uncompressed frame.
    fn grpc_request(path: &str, message: &impl Message) -> http::Request<axum::body::Body> {
        let body = message.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(axum::body::Body::from(framed))
            .unwrap()
    }

    /// The response's grpc-status (headers for trailers-only answers) and data.
    async fn call(
        router: axum::Router,
        request: http::Request<axum::body::Body>,
    ) -> (http::HeaderMap, Vec<u8>) {
        let response = router.oneshot(request).await.unwrap();
        let headers = response.headers().clone();
        let data = axum::body::to_bytes(axum::body::Body::new(response.into_body()), usize::MAX)
            .await
            .unwrap();
        (headers, data.to_vec())
    }

    /// What the generated service sends for `req`: the usual path's message, prost-encoded.
    fn expected(shard_keys: u32, req: &PbRangeRequest) -> Vec<u8> {
        let mut resp = store(shard_keys).view().range(req).unwrap();
        let revision = resp.header.as_ref().unwrap().revision;
        resp.header = Some(PbResponseHeader {
            cluster_id: CLUSTER_ID,
            member_id: MEMBER_ID,
            revision,
            raft_term: RAFT_TERM,
        });
        resp.encode_to_vec()
    }

    #[tokio::test]
    async fn exact_route_takes_range_ahead_of_the_kv_service() {
        let shard = fake_shard(3);
        let marker = tower::service_fn(|_: http::Request<axum::body::Body>| async {
            let response = http::Response::builder()
                .header("x-route", "range")
                .body(Body::default());
            Ok::<_, Infallible>(response.unwrap())
        });
        let router = || {
            let generated = super::super::routes(shard.clone()).into_axum_router();
            generated.route_service(PATH, marker)
        };
        let req = PbRangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        };
        let (headers, _) = call(router(), grpc_request(PATH, &req)).await;
        assert_eq!(
            headers.get("x-route").map(|v| v.to_str().unwrap()),
            Some("range")
        );
        // Every other KV method (and a path that only starts like Range's) still reaches
        // the generated service, which answers them itself.
        let others = [
            "/etcdserverpb.KV/Put",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.KV/RangeX",
            "/etcdserverpb.KV/Range/",
        ];
        for path in others {
            let (headers, _) = call(router(), grpc_request(path, &PbPutRequest::default())).await;
            assert!(
                headers.get("x-route").is_none(),
                "{path} went to the Range route"
            );
            assert!(
                headers.get("grpc-status").is_some() || headers.get("content-type").is_some(),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn range_route_sends_what_the_generated_service_would() {
        let shard = fake_shard(3000);
        let all = || PbRangeRequest {
            key: b"k".to_vec(),
            range_end: vec![0],
            ..Default::default()
        };
        let requests = [
            PbRangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                ..Default::default()
            },
            PbRangeRequest {
                key: b"k00010".to_vec(),
                ..Default::default()
            },
            PbRangeRequest {
                limit: 7,
                sort_order: 2,
                sort_target: 4,
                ..all()
            },
            PbRangeRequest {
                keys_only: true,
                serializable: true,
                ..all()
            },
            PbRangeRequest {
                count_only: true,
                ..all()
            },
            PbRangeRequest {
                key: b"nothing".to_vec(),
                ..Default::default()
            },
        ];
        for req in &requests {
            let (headers, data) =
                call(super::super::router(shard.clone()), grpc_request(PATH, req)).await;
            assert!(headers.get("grpc-status").is_none(), "{req:?}: {headers:?}");
            let message = expected(3000, req);
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(&message);
            assert_eq!(data, frame, "{req:?}");
        }
        // etcd's checks and errors are kept.
        let empty_key = PbRangeRequest::default();
        let (headers, _) = call(
            super::super::router(shard.clone()),
            grpc_request(PATH, &empty_key),
        )
        .await;
        assert_eq!(headers.get("grpc-status").unwrap(), "3");
        // (tonic percent-encodes the message, as for every other method.)
        assert_eq!(
            headers.get("grpc-message").unwrap(),
            "etcdserver:%20key%20is%20not%20provided"
        );
        let future = PbRangeRequest {
            key: b"k".to_vec(),
            revision: 1_000_000,
            ..Default::default()
        };
        let (headers, _) = call(super::super::router(shard), grpc_request(PATH, &future)).await;
        assert_eq!(headers.get("grpc-status").unwrap(), "11");
    }
}
