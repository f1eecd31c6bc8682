//! The Watch service: one bidirectional stream per client call, any number of watchers on
//! it. The stream lives on the core that owns its connection: requests go to that core's
//! shard, whose watch hub sends responses back through a bounded channel.

use std::sync::atomic::{AtomicU64, Ordering};

use corekv_engine::pb::*;
use tonic::codegen::tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::to_status;
use crate::metrics;
use crate::shard_api::ShardClient;

/// Responses queued from the shard towards one stream's connection. A client that reads
/// slower than this falls back to catch-up from history on the shard: it costs a position,
/// not memory.
pub const WATCH_RESPONSES_QUEUED_MAX: usize = 64;

/// Stream ids are unique per process (the shard keys its streams by them).
static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

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

    async fn watch(&self, request: Request<Streaming<PbWatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let mut inbound = request.into_inner();
        let stream_id = NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed);
        let (responses, outbound) = flume::bounded(WATCH_RESPONSES_QUEUED_MAX);
        self.shard.watch_open(stream_id, responses).await.map_err(to_status)?;
        let m = metrics::global();
        m.watch_streams.fetch_add(1, Ordering::Relaxed);
        let shard = self.shard.clone();
        tokio::spawn(async move {
            // Each request is handed over before the next is read: the shard's bounded
            // queue paces a client that floods its stream with requests.
            while let Ok(Some(request)) = inbound.message().await {
                if shard.watch_request(stream_id, request).await.is_err() {
                    break;
                }
            }
            let _ = shard.watch_close(stream_id).await;
            metrics::global().watch_streams.fetch_sub(1, Ordering::Relaxed);
        });
        let cluster = self.shard.cluster.clone();
        let out = outbound.into_stream().map(move |mut response: PbWatchResponse| {
            let header = response.header.get_or_insert_with(Default::default);
            header.cluster_id = cluster.cluster_id;
            header.member_id = cluster.member_id;
            metrics::global().watch_events_sent.fetch_add(response.events.len() as u64, Ordering::Relaxed);
            Ok(response)
        });
        Ok(Response::new(Box::pin(out)))
    }
}
