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
use crate::shard_api::{watch_channel, ShardClient, WATCH_STREAM_QUEUED_BYTES_MAX};

/// Stream ids are unique per process (the shard keys its streams by them).
static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

/// A new watch stream id, unique in the process (gRPC and binary streams share them).
pub(crate) fn next_stream_id() -> u64 {
    NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed)
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
        let mut inbound = request.into_inner();
        let stream_id = next_stream_id();
        // A client that reads slower than the queue's byte bound falls back to catch-up
        // from history on the shard: it costs a position, not memory.
        let (responses, outbound) = watch_channel(WATCH_STREAM_QUEUED_BYTES_MAX);
        self.shard
            .watch_open(stream_id, responses)
            .await
            .map_err(to_status)?;
        let shard = self.shard.clone();
        tokio::spawn(async move {
            // Each request is handed over before the next is read: the shard's bounded
            // queue paces a client that floods its stream with requests.
            let mut failed = false;
            while let Some(next) = inbound.message().await.transpose() {
                let handed = match next {
                    Ok(request) => shard.watch_request(stream_id, request).await.is_ok(),
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
        let cluster = self.shard.cluster.clone();
        let out = outbound
            .into_stream()
            .map(move |mut response: PbWatchResponse| {
                let header = response.header.get_or_insert_with(Default::default);
                header.cluster_id = cluster.cluster_id;
                header.member_id = cluster.member_id;
                metrics::global()
                    .watch_events_sent
                    .fetch_add(response.events.len() as u64, Ordering::Relaxed);
                Ok(response)
            });
        Ok(Response::new(Box::pin(out)))
    }
}
