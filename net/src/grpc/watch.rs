//! The Watch service: one bidirectional stream per client call, any number of watchers on
//! it. The stream lives on the core that owns its connection: requests go to that core's
//! shard, whose watch hub sends responses back through a bounded channel.
//!
//! The client port serves `/etcdserverpb.Watch/Watch` on its own exact route (like Range in
//! `range.rs`) whose codec writes a [`WatchItem`] straight into tonic's frame buffer: a
//! published batch's events are encoded once on the core and shared by every watcher they
//! go to, instead of being copied into a message per watcher and encoded per watcher.
//! The generated service stays for routers without that route and answers the same.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use corekv_engine::pb::*;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::to_status;
use super::v3pb::{HttpFuture, Limits};
use crate::metrics;
use crate::shard_api::{watch_channel, ShardClient, WatchItem, WATCH_STREAM_QUEUED_BYTES_MAX};

/// The method path the exact route serves.
pub(crate) const PATH: &str = "/etcdserverpb.Watch/Watch";

/// Stream ids are unique per process (the shard keys its streams by them).
static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

/// A new watch stream id, unique in the process (gRPC and binary streams share them).
pub(crate) fn next_stream_id() -> u64 {
    NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed)
}

/// Refused watch creations queued towards a stream's client.
const WATCH_REFUSALS_QUEUED_MAX: usize = 16;

/// etcd's `isWatchPermitted`: a watcher the caller may not read (or on a stream whose token
/// did not verify) is answered created and canceled at once, with etcd's reason.
pub(crate) async fn refusal(
    shard: &ShardClient,
    caller: &Result<crate::auth::Caller, corekv_engine::KvError>,
    request: &PbWatchRequest,
) -> Option<PbWatchResponse> {
    let Some(PbWatchRequestUnion::CreateRequest(create)) = &request.request_union else {
        return None;
    };
    let permitted = match caller {
        Ok(caller) => shard
            .cluster
            .auth
            .check_range(caller, &create.key, &create.range_end)
            .is_ok(),
        Err(_) => false,
    };
    if permitted {
        return None;
    }
    let revision = shard.view().await.map_or(0, |v| v.body.revision());
    Some(PbWatchResponse {
        header: Some(PbResponseHeader {
            revision,
            ..Default::default()
        }),
        watch_id: create.watch_id,
        created: true,
        canceled: true,
        cancel_reason: "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
            .into(),
        ..Default::default()
    })
}

/// Opens a watch stream on the shard for `inbound`'s requests; returns its responses, with
/// this member's ids in their headers. etcd resolves the stream's caller once, from the
/// stream's metadata, and checks read permission on every watcher created on it.
async fn open(
    shard: ShardClient,
    caller: Result<crate::auth::Caller, corekv_engine::KvError>,
    mut inbound: Streaming<PbWatchRequest>,
) -> Result<impl Stream<Item = WatchItem> + Send + 'static, Status> {
    let stream_id = next_stream_id();
    // A client that reads slower than the queue's byte bound falls back to catch-up
    // from history on the shard: it costs a position, not memory.
    let (responses, outbound) = watch_channel(WATCH_STREAM_QUEUED_BYTES_MAX);
    shard
        .watch_open(stream_id, responses)
        .await
        .map_err(to_status)?;
    let cluster = shard.cluster.clone();
    // Refusals are answered here, not by the shard; bounded like everything else.
    let (refusals, refused) = tokio::sync::mpsc::channel(WATCH_REFUSALS_QUEUED_MAX);
    tokio::spawn(async move {
        // Each request is handed over before the next is read: the shard's bounded
        // queue paces a client that floods its stream with requests.
        let mut failed = false;
        while let Some(next) = inbound.message().await.transpose() {
            let handed = match next {
                Ok(request) => match refusal(&shard, &caller, &request).await {
                    Some(response) => refusals.send(response).await.is_ok(),
                    None => shard.watch_request(stream_id, request).await.is_ok(),
                },
                Err(_) => false,
            };
            if !handed {
                failed = true;
                break;
            }
        }
        // A client that only closes its sending side keeps receiving, as with etcd; the
        // shard drops the stream once its response side is gone.
        if failed {
            let _ = shard.watch_close(stream_id).await;
        }
    });
    let refused =
        tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(refused).map(WatchItem::from);
    Ok(outbound
        .into_stream()
        .merge(refused)
        .map(move |mut item: WatchItem| {
            item.set_member(cluster.cluster_id, cluster.member_id);
            metrics::global()
                .watch_events_sent
                .fetch_add(item.event_count() as u64, Ordering::Relaxed);
            item
        }))
}

pub(crate) struct WatchService {
    shard: ShardClient,
}

impl WatchService {
    pub(crate) fn new(shard: ShardClient) -> WatchService {
        WatchService { shard }
    }
}

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = BoxStream<PbWatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.shard.cluster.auth.caller_of(&request);
        let items = open(self.shard.clone(), caller, request.into_inner()).await?;
        let out = items.map(|item| Ok(item.into_response()));
        Ok(Response::new(Box::pin(out)))
    }
}

/// Decodes etcd's WatchRequest with prost; writes [`WatchItem`]s in place.
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = WatchItem;
    type Decode = PbWatchRequest;
    type Encoder = WatchEncoder;
    type Decoder = tonic_prost::ProstDecoder<PbWatchRequest>;

    fn encoder(&mut self) -> WatchEncoder {
        WatchEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<PbWatchResponse, PbWatchRequest>::raw_decoder(
            BufferSettings::default(),
        )
    }
}

struct WatchEncoder;

impl Encoder for WatchEncoder {
    type Item = WatchItem;
    type Error = Status;

    /// Writes the WatchResponse into tonic's frame buffer, grown once to its final size
    /// (shared event bytes are copied once, here, into the frame that goes on the wire).
    fn encode(&mut self, item: WatchItem, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

/// The Watch route's service, as axum calls it.
#[derive(Clone)]
pub(crate) struct WatchServer {
    shard: ShardClient,
    limits: Limits,
}

impl WatchServer {
    pub(crate) fn new(shard: ShardClient, limits: Limits) -> WatchServer {
        WatchServer { shard, limits }
    }
}

impl tower::Service<http::Request<axum::body::Body>> for WatchServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> HttpFuture {
        let handler = WatchHandler {
            shard: self.shard.clone(),
        };
        let limits = self.limits;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(WatchCodec)
                .apply_max_message_size_config(Some(limits.decode_max), Some(limits.encode_max));
            Ok(grpc.streaming(handler, req.map(Body::new)).await)
        })
    }
}

/// The streaming method tonic calls with the decoded request stream.
struct WatchHandler {
    shard: ShardClient,
}

type ItemStream = Pin<Box<dyn Stream<Item = Result<WatchItem, Status>> + Send + 'static>>;

impl tower::Service<Request<Streaming<PbWatchRequest>>> for WatchHandler {
    type Response = Response<ItemStream>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ItemStream>, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Streaming<PbWatchRequest>>) -> Self::Future {
        let shard = self.shard.clone();
        Box::pin(async move {
            let caller = shard.cluster.auth.caller_of(&request);
            let items = open(shard, caller, request.into_inner()).await?;
            let stream: ItemStream = Box::pin(items.map(Ok));
            Ok(Response::new(stream))
        })
    }
}
