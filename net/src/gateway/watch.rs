//! /v3/watch: every JSON object of the body is one WatchRequest on a single watch stream
//! (so one body may create several watchers); the answer streams one `{"result": ...}`
//! per line until the client drops the connection. The stream is the one gRPC watch
//! streams use on this core's shard, with its byte-bounded response queue; responses are
//! turned into JSON only as the connection takes them.

use std::sync::atomic::Ordering;

use corekv_engine::pb::*;
use tonic::codegen::tokio_stream::StreamExt;

use super::json::{In, Input, Json, Obj};
use super::kv::{event, header};
use super::{error_response, json_values, stream_response, Gateway};
use crate::shard_api::{watch_channel, WATCH_STREAM_QUEUED_BYTES_MAX};

const FILTER_TYPE: &[&str] = &["NOPUT", "NODELETE"];
/// Requests one watch body may carry.
const WATCH_REQUESTS_MAX: usize = 1024;

fn watch_request(i: &Input) -> In<PbWatchRequest> {
    let mut union = None;
    if let Some(c) = i.msg("create_request")? {
        let mut create = PbWatchRequestUnion::CreateRequest(Default::default());
        if let PbWatchRequestUnion::CreateRequest(r) = &mut create {
            r.key = c.bytes("key")?;
            r.range_end = c.bytes("range_end")?;
            r.start_revision = c.i64("start_revision")?;
            r.progress_notify = c.bool("progress_notify")?;
            r.filters = c.enums(
                "filters",
                FILTER_TYPE,
                "etcdserverpb.WatchCreateRequest_FilterType",
            )?;
            r.prev_kv = c.bool("prev_kv")?;
            r.watch_id = c.i64("watch_id")?;
            r.fragment = c.bool("fragment")?;
        }
        union = Some(create);
    }
    if let Some(c) = i.msg("cancel_request")? {
        let mut cancel = PbWatchRequestUnion::CancelRequest(Default::default());
        if let PbWatchRequestUnion::CancelRequest(r) = &mut cancel {
            r.watch_id = c.i64("watch_id")?;
        }
        union = Some(cancel);
    }
    if i.msg("progress_request")?.is_some() {
        union = Some(PbWatchRequestUnion::ProgressRequest(Default::default()));
    }
    Ok(PbWatchRequest {
        request_union: union,
    })
}

fn watch_response(r: &PbWatchResponse) -> Json {
    Obj::new()
        .msg("header", header(&r.header))
        .i64("watch_id", r.watch_id)
        .bool("created", r.created)
        .bool("canceled", r.canceled)
        .i64("compact_revision", r.compact_revision)
        .str("cancel_reason", &r.cancel_reason)
        .bool("fragment", r.fragment)
        .list("events", r.events.iter().map(event).collect())
        .done()
}

impl Gateway {
    pub(super) async fn watch(&self, auth: &super::Auth, body: &[u8]) -> axum::response::Response {
        let mut requests = Vec::new();
        for (n, value) in json_values(body).enumerate() {
            let parsed = value
                .map_err(super::json::BadInput)
                .and_then(|v| Input::of(&v).and_then(|i| watch_request(&i)));
            match parsed {
                Ok(request) if n < WATCH_REQUESTS_MAX => requests.push(request),
                Ok(_) => break,
                // As grpc-gateway: a first request that does not decode fails the call
                // (gRPC Unknown); a later one ends the client's side of the stream.
                Err(e) if n == 0 => return error_response(&tonic::Status::unknown(e.0)),
                Err(_) => break,
            }
        }
        let stream_id = crate::grpc::watch::next_stream_id();
        let (responses, outbound) = watch_channel(WATCH_STREAM_QUEUED_BYTES_MAX);
        if let Err(e) = self.shard.watch_open(stream_id, responses).await {
            return error_response(&crate::grpc::to_status(e));
        }
        // etcd checks read permission on every watcher the stream creates; refusals are
        // answered first, created-and-canceled, as on the gRPC stream.
        let caller = self.shard.cluster.auth.caller_of(&auth.request(()));
        let mut refused = Vec::new();
        for request in requests {
            if let Some(r) = crate::grpc::watch::refusal(&self.shard, &caller, &request).await {
                refused.push(crate::shard_api::WatchItem::from(r));
                continue;
            }
            if let Err(e) = self.shard.watch_request(stream_id, request).await {
                let _ = self.shard.watch_close(stream_id).await;
                return error_response(&crate::grpc::to_status(e));
            }
        }
        // The shard drops the stream once this side (the response body) is gone.
        let cluster = self.shard.cluster.clone();
        let items = futures_lite_iter(refused).chain(outbound.into_stream());
        stream_response(items.map(move |mut item: crate::shard_api::WatchItem| {
            item.set_member(cluster.cluster_id, cluster.member_id);
            let r: PbWatchResponse = item.into_response();
            crate::metrics::global()
                .watch_events_sent
                .fetch_add(r.events.len() as u64, Ordering::Relaxed);
            Ok(watch_response(&r))
        }))
    }
}

/// A stream of the given items (answered before the live ones).
fn futures_lite_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send + 'static {
    tonic::codegen::tokio_stream::iter(items)
}
