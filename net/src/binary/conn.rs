//! One core's binary-protocol connections: accept, hello, then requests read ahead and
//! answered in any order through the core's [`ShardClient`] (the same calls the gRPC
//! handlers make), watch responses pushed.
//!
//! Per connection:
//! - the reader (this connection's task) splits frames off the socket and starts one task
//!   per request, at most [`REQUESTS_IN_FLIGHT_MAX`] at once: past that it stops reading,
//!   so a client that pipelines more waits in its own socket buffer;
//! - each request task encodes its answer once, into the frame that goes on the wire,
//!   and queues it to the writer (a bounded queue);
//! - the writer gathers queued frames into one buffer per system call;
//! - watch requests go to one watch task (created with the connection's first watch
//!   frame), which owns the connection's watch stream on the shard and routes each pushed
//!   response to the request id of the create that made its watcher.
//!
//! A malformed frame gets an error frame and the connection ends; other connections and
//! the server go on.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::TcpListener as StdListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use corekv_engine::pb::PbWatchRequest;
use corekv_engine::pb::PbWatchRequestUnion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use super::frame::{self, kind, FrameDecoder, FrameError, Hello, HelloAck, Request};
use crate::grpc::{self, Timer};
use crate::metrics::{self, Method};
use crate::shard_api::{watch_channel, ShardClient, WatchItem, WATCH_STREAM_QUEUED_BYTES_MAX};

/// Requests read ahead per connection before their answers are written.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1024;
/// Answer frames queued to a connection's writer (each request in flight has at most one;
/// watch responses wait for room).
pub const WRITE_QUEUE_FRAMES_MAX: usize = REQUESTS_IN_FLIGHT_MAX + 64;
/// Bytes gathered into one socket write at most.
pub const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Watch requests queued to a connection's watch task before the reader waits.
pub const WATCH_REQUESTS_QUEUED_MAX: usize = 64;
/// Watch creates (and progress requests) awaiting their answer per connection; more is a
/// client that floods creates without reading, and ends the connection.
pub const WATCH_PENDING_ANSWERS_MAX: usize = 4096;
/// Bytes the receive buffer grows by per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frame overhead allowed on top of --max-request-bytes (as gRPC's), so a request that is
/// slightly too large gets etcd's "request is too large" rather than a closed connection.
pub const FRAME_OVERHEAD_BYTES: usize = grpc::GRPC_OVERHEAD_BYTES;

/// What the writer is asked to do.
enum Out {
    /// Write this frame.
    Frame(Vec<u8>),
    /// Write what is queued ahead, then end the connection.
    Close,
}

/// Serves the binary protocol on every listener until the runtime stops. Must run inside
/// the core's tokio runtime (current-thread), next to its gRPC listeners.
pub async fn serve(listeners: Vec<StdListener>, shard: ShardClient) -> io::Result<()> {
    let mut tasks = Vec::new();
    for listener in listeners {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        crate::park::watch(&listener);
        tasks.push(tokio::spawn(accept_loop(listener, shard.clone())));
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

async fn accept_loop(listener: tokio::net::TcpListener, shard: ShardClient) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning; the listener stays up.
                log::warn!("binary protocol: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        crate::park::watch(&stream);
        tokio::spawn(connection(stream, shard.clone()));
    }
}

/// The largest frame a connection accepts.
pub fn frame_bytes_max(shard: &ShardClient) -> usize {
    shard.cluster.max_request_bytes + FRAME_OVERHEAD_BYTES
}

fn protocol_error(err: &FrameError) -> tonic::Status {
    tonic::Status::invalid_argument(err.to_string())
}

async fn connection(stream: TcpStream, shard: ShardClient) {
    let (mut read, mut write) = stream.into_split();
    let decoder = FrameDecoder::new(frame_bytes_max(&shard));
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);

    // The hello: the first frame, before anything else is served.
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(err) => return Err(err),
            }
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    })
    .await;
    let hello = match hello {
        Ok(Ok(Some(frame))) => frame,
        // Gone, or silent too long: nothing to answer.
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(err)) => return refuse(write, protocol_error(&err)).await,
    };
    if hello.kind != kind::HELLO || hello.request_id != frame::CONNECTION_REQUEST_ID {
        let err = FrameError::UnexpectedKind {
            kind: hello.kind,
            expected: "a hello (kind 0x01, request id 0) as the first frame",
        };
        return refuse(write, protocol_error(&err)).await;
    }
    let version = match Hello::parse(&hello.payload) {
        Ok(theirs) => theirs.negotiate(frame::PROTOCOL_VERSION, frame::PROTOCOL_VERSION),
        Err(err) => return refuse(write, protocol_error(&err)).await,
    };
    let Some(version) = version else {
        let status = tonic::Status::unimplemented(format!(
            "corekv: no common protocol version; this server speaks {}",
            frame::PROTOCOL_VERSION
        ));
        return refuse(write, status).await;
    };
    let ack = HelloAck {
        version,
        frame_bytes_max: u32::try_from(decoder.frame_bytes_max()).unwrap_or(u32::MAX),
        requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX as u32,
        cluster_id: shard.cluster.cluster_id,
        member_id: shard.cluster.member_id,
    };
    let mut answer = Vec::new();
    frame::encode_raw(
        &mut answer,
        kind::HELLO_ACK,
        frame::CONNECTION_REQUEST_ID,
        &ack.to_bytes(),
    );
    if write.write_all(&answer).await.is_err() {
        return;
    }

    let (out, queued) = mpsc::channel(WRITE_QUEUE_FRAMES_MAX);
    let writer = tokio::spawn(write_loop(write, queued));
    let in_flight = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    let mut watch: Option<mpsc::Sender<(u64, PbWatchRequest)>> = None;
    loop {
        let frame = match decoder.decode(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                buf.reserve(READ_CHUNK_BYTES);
                match read.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            Err(err) => {
                close_with(&out, frame::CONNECTION_REQUEST_ID, &err).await;
                break;
            }
        };
        let request = match frame::decode_request(&frame) {
            Ok(request) => request,
            Err(err) => {
                close_with(&out, frame.request_id, &err).await;
                break;
            }
        };
        let request_id = frame.request_id;
        if let Request::Watch(request) = request {
            let sender = watch.get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(WATCH_REQUESTS_QUEUED_MAX);
                tokio::spawn(watch_loop(shard.clone(), rx, out.clone()));
                tx
            });
            if sender.send((request_id, request)).await.is_err() {
                let status = tonic::Status::unavailable("corekv: the watch stream ended");
                let _ = out
                    .send(Out::Frame(frame::error_frame(request_id, &status)))
                    .await;
            }
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (shard, out) = (shard.clone(), out.clone());
        tokio::spawn(async move {
            let answer = answer_request(&shard, frame.kind, request_id, request).await;
            let _ = out.send(Out::Frame(answer)).await;
            drop(permit);
        });
    }
    // Reading is over; the writer ends once every request task has queued its answer (or
    // at once after a Close), and the watch task with the reader's sender.
    drop(watch);
    drop(out);
    let _ = writer.await;
}

/// Answers a connection that failed before it started: one error frame, then close.
async fn refuse(mut write: OwnedWriteHalf, status: tonic::Status) {
    let bytes = frame::error_frame(frame::CONNECTION_REQUEST_ID, &status);
    let _ = write.write_all(&bytes).await;
    let _ = write.shutdown().await;
}

/// Queues an error frame for a malformed frame and the end of the connection.
async fn close_with(out: &mpsc::Sender<Out>, request_id: u64, err: &FrameError) {
    log::debug!("binary protocol: closing a connection: {err}");
    let bytes = frame::error_frame(request_id, &protocol_error(err));
    let _ = out.send(Out::Frame(bytes)).await;
    let _ = out.send(Out::Close).await;
}

/// Writes queued frames, several per system call, until every sender is gone or a
/// [`Out::Close`] arrives.
async fn write_loop(mut socket: OwnedWriteHalf, mut queued: mpsc::Receiver<Out>) {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
    let mut closing = false;
    while !closing {
        match queued.recv().await {
            Some(Out::Frame(bytes)) => batch.extend_from_slice(&bytes),
            Some(Out::Close) | None => break,
        }
        while batch.len() < WRITE_BATCH_BYTES_MAX {
            match queued.try_recv() {
                Ok(Out::Frame(bytes)) => batch.extend_from_slice(&bytes),
                Ok(Out::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if socket.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
        if batch.capacity() > 4 * WRITE_BATCH_BYTES_MAX {
            batch.shrink_to(WRITE_BATCH_BYTES_MAX);
        }
    }
    let _ = socket.shutdown().await;
}

/// Serves one request through the shard; returns its answer frame.
async fn answer_request(
    shard: &ShardClient,
    request_kind: u8,
    id: u64,
    request: Request,
) -> Vec<u8> {
    match request {
        Request::Range(req) => {
            let timer = Timer::start(Method::Range);
            match timer.finish(grpc::range::range(shard, Ok(None), req).await) {
                // Encoded once, straight into the frame (as the gRPC route does).
                Ok(reply) => {
                    let len = reply.encoded_len();
                    let mut out = Vec::with_capacity(frame::FRAME_HEADER_BYTES + len);
                    frame::put_header(&mut out, request_kind | kind::RESPONSE_BIT, id, len);
                    reply.encode(&mut out);
                    debug_assert_eq!(out.len(), frame::FRAME_HEADER_BYTES + len);
                    out
                }
                Err(status) => frame::error_frame(id, &status),
            }
        }
        Request::Put(req) => {
            let timer = Timer::start(Method::Put);
            let result = timer.finish(grpc::kv::put(shard, Ok(None), req).await);
            frame::answer_frame(request_kind, id, result)
        }
        Request::DeleteRange(req) => {
            let timer = Timer::start(Method::DeleteRange);
            let result = timer.finish(grpc::kv::delete_range(shard, Ok(None), req).await);
            frame::answer_frame(request_kind, id, result)
        }
        Request::Txn(req) => {
            let timer = Timer::start(Method::Txn);
            let result = timer.finish(grpc::kv::txn(shard, Ok(None), req).await);
            frame::answer_frame(request_kind, id, result)
        }
        Request::Compact(req) => {
            let timer = Timer::start(Method::Compact);
            let result = timer.finish(grpc::kv::compact(shard, Ok(None), req).await);
            frame::answer_frame(request_kind, id, result)
        }
        Request::LeaseGrant(req) => {
            let timer = Timer::start(Method::LeaseGrant);
            let result = timer.finish(grpc::lease::grant(shard, Ok(None), req).await);
            frame::answer_frame(request_kind, id, result)
        }
        Request::LeaseRevoke(req) => {
            let timer = Timer::start(Method::LeaseRevoke);
            let result = timer.finish(grpc::lease::revoke(shard, Ok(None), req).await);
            frame::answer_frame(request_kind, id, result)
        }
        Request::LeaseKeepAlive(req) => {
            let timer = Timer::start(Method::LeaseKeepAlive);
            let result = timer.finish(grpc::lease::keep_alive_once(shard, req.id).await);
            frame::answer_frame(request_kind, id, result)
        }
        Request::LeaseTimeToLive(req) => {
            let timer = Timer::start(Method::LeaseTimeToLive);
            let result = timer.finish(grpc::lease::time_to_live(shard, req).await);
            frame::answer_frame(request_kind, id, result)
        }
        Request::LeaseLeases(_) => {
            let timer = Timer::start(Method::LeaseLeases);
            let result = timer.finish(grpc::lease::leases(shard).await);
            frame::answer_frame(request_kind, id, result)
        }
        Request::Watch(_) => unreachable!("watch requests go to the watch task"),
    }
}

/// Which request id each pushed watch response answers.
///
/// The shard answers creates in the order they were asked (etcd's rule for one stream), so
/// a created response belongs to the oldest create still waiting; the watcher's later
/// responses go to that create's request id. etcd 3.4 answers a progress request with
/// watch id -1, again in order.
#[derive(Default)]
struct WatchRoutes {
    creates: VecDeque<u64>,
    progress: VecDeque<u64>,
    by_watch_id: HashMap<i64, u64>,
}

impl WatchRoutes {
    /// Notes a request about to go to the shard; false if too many answers are pending.
    fn expect(&mut self, request_id: u64, request: &PbWatchRequest) -> bool {
        let queue = match &request.request_union {
            Some(PbWatchRequestUnion::CreateRequest(_)) => &mut self.creates,
            Some(PbWatchRequestUnion::ProgressRequest(_)) => &mut self.progress,
            // A cancel is answered on its watcher's request id; nothing else is answered.
            _ => return true,
        };
        if queue.len() >= WATCH_PENDING_ANSWERS_MAX {
            return false;
        }
        queue.push_back(request_id);
        true
    }

    /// The request id `item` goes to, or `None` if nothing asked for it.
    fn route(&mut self, item: &WatchItem) -> Option<u64> {
        let response = match item {
            WatchItem::Response(response) => response,
            // Shared events: neither created nor canceled.
            WatchItem::Events(events) => return self.by_watch_id.get(&events.watch_id).copied(),
        };
        if response.created {
            let request_id = self.creates.pop_front()?;
            if !response.canceled {
                self.by_watch_id.insert(response.watch_id, request_id);
            }
            return Some(request_id);
        }
        if response.watch_id == -1 {
            return self.progress.pop_front();
        }
        if response.canceled {
            return self.by_watch_id.remove(&response.watch_id);
        }
        self.by_watch_id.get(&response.watch_id).copied()
    }

    /// Every request id still waiting for responses.
    fn waiting(&self) -> impl Iterator<Item = u64> + '_ {
        self.creates
            .iter()
            .chain(self.progress.iter())
            .chain(self.by_watch_id.values())
            .copied()
    }
}

/// A connection's watch stream: requests in from the reader, responses out as frames.
async fn watch_loop(
    shard: ShardClient,
    mut requests: mpsc::Receiver<(u64, PbWatchRequest)>,
    out: mpsc::Sender<Out>,
) {
    let stream_id = grpc::watch::next_stream_id();
    let (responses, receiver) = watch_channel(WATCH_STREAM_QUEUED_BYTES_MAX);
    let mut routes = WatchRoutes::default();
    if let Err(err) = shard.watch_open(stream_id, responses).await {
        // Answer the first request (the reader drops the rest with this task).
        if let Some((request_id, _)) = requests.recv().await {
            let bytes = frame::error_frame(request_id, &grpc::to_status(err));
            let _ = out.send(Out::Frame(bytes)).await;
        }
        return;
    }
    let cluster = shard.cluster.clone();
    let ended = loop {
        tokio::select! {
            request = requests.recv() => {
                let Some((request_id, request)) = request else {
                    break None;
                };
                // The binary protocol carries no credentials: with auth on, nobody may
                // watch, as etcd refuses a watcher its caller may not read.
                if let Some(PbWatchRequestUnion::CreateRequest(c)) = &request.request_union {
                    if let Err(err) = shard.cluster.auth.check_range(&None, &c.key, &c.range_end) {
                        break Some(crate::grpc::to_status(err));
                    }
                }
                if !routes.expect(request_id, &request) {
                    let status = tonic::Status::resource_exhausted(
                        "corekv: too many watch requests waiting for their answers",
                    );
                    break Some(status);
                }
                if shard.watch_request(stream_id, request).await.is_err() {
                    break Some(tonic::Status::unavailable("etcdserver: server stopped"));
                }
            }
            item = receiver.recv_async() => {
                let Ok(mut item) = item else {
                    // The shard dropped the stream (it stopped reading entirely).
                    break Some(tonic::Status::unavailable("corekv: the watch stream was closed by the server"));
                };
                let Some(request_id) = routes.route(&item) else {
                    continue;
                };
                item.set_member(cluster.cluster_id, cluster.member_id);
                metrics::global()
                    .watch_events_sent
                    .fetch_add(item.event_count() as u64, Ordering::Relaxed);
                // Shared event bytes are copied once, into the frame.
                let len = item.encoded_len();
                let mut bytes = Vec::with_capacity(frame::FRAME_HEADER_BYTES + len);
                frame::put_header(&mut bytes, kind::WATCH_RESPONSE, request_id, len);
                item.encode(&mut bytes);
                if out.send(Out::Frame(bytes)).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some(status) = ended {
        for request_id in routes.waiting() {
            let bytes = frame::error_frame(request_id, &status);
            if out.send(Out::Frame(bytes)).await.is_err() {
                break;
            }
        }
    }
    let _ = shard.watch_close(stream_id).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard_api::WatchEvents;
    use corekv_engine::pb::PbWatchRequestUnion as U;
    use corekv_engine::pb::{PbResponseHeader, PbWatchResponse};

    fn create() -> PbWatchRequest {
        PbWatchRequest {
            request_union: Some(U::CreateRequest(Default::default())),
        }
    }

    fn response(watch_id: i64, created: bool, canceled: bool) -> WatchItem {
        WatchItem::Response(PbWatchResponse {
            watch_id,
            created,
            canceled,
            ..Default::default()
        })
    }

    #[test]
    fn watch_responses_go_to_the_request_ids_of_their_creates() {
        let mut routes = WatchRoutes::default();
        assert!(routes.expect(10, &create()));
        assert!(routes.expect(11, &create()));
        assert!(routes.expect(12, &create()));
        // Created in order: 10 -> watch 0, 11 refused, 12 -> watch 5.
        assert_eq!(routes.route(&response(0, true, false)), Some(10));
        assert_eq!(routes.route(&response(-1, true, true)), Some(11));
        assert_eq!(routes.route(&response(5, true, false)), Some(12));
        assert_eq!(routes.route(&response(5, false, false)), Some(12));
        assert_eq!(routes.route(&response(0, false, false)), Some(10));
        let shared = WatchItem::Events(WatchEvents {
            header: PbResponseHeader::default(),
            watch_id: 5,
            events: Vec::new(),
        });
        assert_eq!(routes.route(&shared), Some(12));
        // Canceled: the last response of watch 0, then nothing for it.
        assert_eq!(routes.route(&response(0, false, true)), Some(10));
        assert_eq!(routes.route(&response(0, false, false)), None);
        let progress = PbWatchRequest {
            request_union: Some(U::ProgressRequest(Default::default())),
        };
        assert!(routes.expect(13, &progress));
        assert_eq!(routes.route(&response(-1, false, false)), Some(13));
        assert_eq!(routes.waiting().collect::<Vec<_>>(), vec![12]);
    }
}
