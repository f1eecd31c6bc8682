//! What the network layer asks of the data path.
//!
//! Each core's network runtime holds a [`ShardClient`]: serializable reads run right there
//! on the latest published view; writes, read-index requests and the rest go straight to the
//! sequencer's bounded queue; watch streams go to the core's shard, which fans events out.
//! A full queue makes the handler wait (backpressure), never grow a queue. Replies come
//! back on a oneshot, so the waiting request is answered on the core that owns its
//! connection.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use corekv_engine::mvcc::{CommandResponse, RangeAnswer, ReadView};
use corekv_engine::pb::{
    PbEvent, PbRangeRequest, PbResponseHeader, PbTxnRequest, PbTxnResponse, PbWatchRequest,
    PbWatchResponse,
};
use corekv_engine::request::{AuthHeader, Command};
use corekv_engine::KvError;
use tokio::sync::oneshot;

use crate::sequencer_api::{SequencerMsg, SharedView};

/// A body plus the raft term it was produced in (for response headers).
#[derive(Debug)]
pub struct Reply<T> {
    pub body: T,
    pub raft_term: u64,
}

/// A request that only reads: served from a view, never through the log.
#[derive(Debug)]
pub enum ReadOp {
    Range(PbRangeRequest),
    /// A txn whose every op is a range (etcd serves these without raft too).
    Txn(PbTxnRequest),
}

/// The answer to a [`ReadOp`], of the same kind.
#[derive(Debug)]
pub enum ReadResult {
    /// The selected records, not yet a message (see [`RangeAnswer`]): the Range route
    /// encodes them straight into its response frame.
    Range(RangeAnswer),
    Txn(PbTxnResponse),
}

/// A Lease request served by the leader's lessor, without a log entry (grant and revoke
/// are writes: they travel as [`Command`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOp {
    /// Renew lease `id` (one message of a LeaseKeepAlive stream).
    KeepAlive { id: i64 },
    /// Remaining and granted TTL of lease `id`, with its keys if `keys`.
    TimeToLive { id: i64, keys: bool },
    /// Every granted lease.
    Leases,
}

/// The answer to a [`LeaseOp`], of the same kind. Headers carry the revision only.
#[derive(Debug)]
pub enum LeaseResult {
    KeepAlive(corekv_engine::pb::PbLeaseKeepAliveResponse),
    TimeToLive(corekv_engine::pb::PbLeaseTimeToLiveResponse),
    Leases(corekv_engine::pb::PbLeaseLeasesResponse),
}

/// Requests a shard serves: the core's watch streams.
pub enum ShardRequest {
    /// A new watch stream; its responses go out through `responses` (bounded).
    WatchOpen {
        stream_id: u64,
        responses: WatchSender,
    },
    /// A request on a watch stream (create, cancel, progress).
    Watch {
        stream_id: u64,
        request: PbWatchRequest,
    },
    /// The client ended its side of a watch stream.
    WatchClose { stream_id: u64 },
}

/// The answer to a [`ClusterOp`]: the member it concerned and the members after it.
#[derive(Debug, Clone)]
pub struct ClusterAnswer {
    pub member_id: u64,
    pub members: Vec<corekv_engine::membership::Member>,
}

/// The reply channel of a [`ClusterOp`].
pub type ClusterReply = oneshot::Sender<Result<ClusterAnswer, KvError>>;

/// Cluster service requests that go through raft (MemberList reads the local view).
pub enum ClusterOp {
    Add {
        peer_urls: Vec<String>,
        is_learner: bool,
        reply: ClusterReply,
    },
    Remove {
        id: u64,
        reply: ClusterReply,
    },
    Update {
        id: u64,
        peer_urls: Vec<String>,
        reply: ClusterReply,
    },
    Promote {
        id: u64,
        reply: ClusterReply,
    },
    /// Maintenance.MoveLeader.
    MoveLeader {
        target: u64,
        reply: ClusterReply,
    },
}

impl ClusterOp {
    /// Answers the request with `err`.
    pub fn fail(self, err: KvError) {
        let reply = match self {
            ClusterOp::Add { reply, .. }
            | ClusterOp::Remove { reply, .. }
            | ClusterOp::Update { reply, .. }
            | ClusterOp::Promote { reply, .. }
            | ClusterOp::MoveLeader { reply, .. } => reply,
        };
        let _ = reply.send(Err(err));
    }
}

/// Maintenance on the revision store file. Each is ordered after every change applied
/// before it was asked for: the store writer commits those first.
pub enum MaintenanceOp {
    /// Maintenance.Hash: a hash of the whole store file's content.
    Hash {
        reply: oneshot::Sender<Result<StoreHash, KvError>>,
    },
    /// Maintenance.Defragment: rewrite the store compacted, online.
    Defragment {
        reply: oneshot::Sender<Result<DefragOutcome, KvError>>,
    },
    /// Maintenance.Snapshot: a compacted point-in-time image of the store.
    Snapshot {
        reply: oneshot::Sender<Result<SnapshotImage, KvError>>,
    },
}

impl MaintenanceOp {
    /// Answers the request with `err`.
    pub fn fail(self, err: KvError) {
        match self {
            MaintenanceOp::Hash { reply } => drop(reply.send(Err(err))),
            MaintenanceOp::Defragment { reply } => drop(reply.send(Err(err))),
            MaintenanceOp::Snapshot { reply } => drop(reply.send(Err(err))),
        }
    }
}

/// The answer to [`MaintenanceOp::Hash`].
#[derive(Debug, Clone, Copy)]
pub struct StoreHash {
    /// CRC-32C over every entry of the store file (see `docs/storage-format.md`).
    pub hash: u32,
    /// The key space's revision the hashed commit holds.
    pub revision: i64,
}

/// The answer to [`MaintenanceOp::Defragment`].
#[derive(Debug, Clone, Copy)]
pub struct DefragOutcome {
    /// dbSize before and after.
    pub size_before_bytes: u64,
    pub size_after_bytes: u64,
}

/// The answer to [`MaintenanceOp::Snapshot`]: a compacted image of the store in an
/// unlinked temporary file (it disappears when closed, however the stream ends).
#[derive(Debug)]
pub struct SnapshotImage {
    pub file: std::fs::File,
    /// The image is the file's first `size_bytes` bytes.
    pub size_bytes: u64,
    /// The key space's revision the image holds.
    pub revision: i64,
    /// The raft log position (index, term) of the last entry the image holds.
    pub index: u64,
    pub term: u64,
}

/// Raft and storage figures reported by Maintenance.Status.
#[derive(Debug, Clone, Default)]
pub struct StatusInfo {
    pub leader: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    pub db_size_bytes: i64,
    pub db_size_in_use_bytes: i64,
    pub revision: i64,
    /// Whether this member is a learner.
    pub is_learner: bool,
    /// Active alarms as `(member ID, alarm type)`.
    pub alarms: Vec<(u64, i32)>,
}

/// One member as Cluster.MemberList reports it.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// Facts fixed for the life of the process, shared by every core.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub cluster_id: u64,
    pub member_id: u64,
    pub members: Vec<MemberInfo>,
    /// --max-request-bytes: larger encoded requests get "request is too large".
    pub max_request_bytes: usize,
    /// --max-txn-ops.
    pub max_txn_ops: usize,
    /// --quota-backend-bytes: writes that would take the store file past it are refused
    /// and raise the NOSPACE alarm.
    pub quota_backend_bytes: u64,
    /// The store file's size (dbSize) after its last commit, kept current by the store
    /// writer: what the quota is checked against.
    pub backend_size_bytes: Arc<AtomicU64>,
    /// Tokens, passwords and permission checks over the applied auth state.
    pub auth: Arc<crate::auth::AuthGate>,
}

/// The network side's handle on the data path (see the module docs).
#[derive(Clone)]
pub struct ShardClient {
    /// The core's shard (watch streams).
    tx: flume::Sender<ShardRequest>,
    /// The sequencer's queue (writes, read indexes, status, leases, maintenance, cluster).
    sequencer: flume::Sender<SequencerMsg>,
    /// The newest applied state, for serializable reads.
    latest: SharedView,
    pub cluster: Arc<ClusterInfo>,
}

fn closed() -> KvError {
    KvError::Unavailable("etcdserver: server stopped".to_string())
}

impl ShardClient {
    /// A client of the shard behind `tx`, the sequencer behind `sequencer` and the views
    /// published to `latest`.
    pub fn new(
        tx: flume::Sender<ShardRequest>,
        sequencer: flume::Sender<SequencerMsg>,
        latest: SharedView,
        cluster: Arc<ClusterInfo>,
    ) -> ShardClient {
        ShardClient {
            tx,
            sequencer,
            latest,
            cluster,
        }
    }

    /// Serves a read (a range, or a read-only txn): a serializable one on the newest view
    /// right here, a linearizable one on a view at or after a read index.
    pub async fn read(&self, op: ReadOp, serializable: bool) -> Result<Reply<ReadResult>, KvError> {
        if serializable {
            return self
                .latest
                .with(|view, raft_term| read_view(view, &op, raft_term));
        }
        let (reply, rx) = crate::answer::Answer::channel();
        self.ask(SequencerMsg::ReadIndex { reply }).await?;
        let (view, raft_term) = rx.await.map_err(|_| closed())??;
        read_view(&view, &op, raft_term)
    }

    /// Proposes a write and waits until it is durable and applied. Applied without auth
    /// checks: for writes the server makes itself (see [`Self::write_as`]).
    pub async fn write(&self, command: Command) -> Result<Reply<CommandResponse>, KvError> {
        self.write_with(command, None).await
    }

    /// Proposes a client's write on behalf of `caller`, re-checked against the auth state
    /// it is applied to (etcd checks writes in its applier).
    pub async fn write_as(
        &self,
        command: Command,
        caller: &crate::auth::Caller,
    ) -> Result<Reply<CommandResponse>, KvError> {
        let header = match caller {
            Some(info) => AuthHeader {
                username: info.username.clone(),
                revision: info.revision,
            },
            None => AuthHeader::default(),
        };
        self.write_with(command, Some(header)).await
    }

    async fn write_with(
        &self,
        command: Command,
        auth: Option<AuthHeader>,
    ) -> Result<Reply<CommandResponse>, KvError> {
        let (reply, rx) = crate::answer::Answer::channel();
        self.ask(SequencerMsg::Propose {
            command,
            auth,
            reply,
        })
        .await?;
        rx.await.map_err(|_| closed())?
    }

    /// A membership change or leader transfer; answered once it is applied.
    pub async fn cluster(
        &self,
        make: impl FnOnce(ClusterReply) -> ClusterOp,
    ) -> Result<ClusterAnswer, KvError> {
        let (reply, rx) = oneshot::channel();
        self.ask(SequencerMsg::Cluster(make(reply))).await?;
        rx.await.map_err(|_| closed())?
    }

    /// Reads raft and storage status.
    pub async fn status(&self) -> Result<StatusInfo, KvError> {
        let (reply, rx) = oneshot::channel();
        self.ask(SequencerMsg::Status { reply }).await?;
        rx.await.map_err(|_| closed())
    }

    /// Registers a watch stream with the shard.
    pub async fn watch_open(&self, stream_id: u64, responses: WatchSender) -> Result<(), KvError> {
        self.send(ShardRequest::WatchOpen {
            stream_id,
            responses,
        })
        .await
    }

    /// Passes one watch-stream request to the shard.
    pub async fn watch_request(
        &self,
        stream_id: u64,
        request: PbWatchRequest,
    ) -> Result<(), KvError> {
        self.send(ShardRequest::Watch { stream_id, request }).await
    }

    /// Tells the shard a watch stream ended.
    pub async fn watch_close(&self, stream_id: u64) -> Result<(), KvError> {
        self.send(ShardRequest::WatchClose { stream_id }).await
    }

    /// Serves a lease request through the leader's lessor.
    pub async fn lease(&self, op: LeaseOp) -> Result<Reply<LeaseResult>, KvError> {
        let (reply, rx) = oneshot::channel();
        self.ask(SequencerMsg::Lease { op, reply }).await?;
        rx.await.map_err(|_| closed())?
    }

    /// The latest view published to this core, with its raft term.
    pub async fn view(&self) -> Result<Reply<ReadView>, KvError> {
        Ok(self.latest.read())
    }

    /// Hashes the store file (Maintenance.Hash).
    pub async fn store_hash(&self) -> Result<StoreHash, KvError> {
        let (reply, rx) = oneshot::channel();
        self.ask(SequencerMsg::Maintenance(MaintenanceOp::Hash { reply }))
            .await?;
        rx.await.map_err(|_| closed())?
    }

    /// Defragments the store file (Maintenance.Defragment); reads and writes go on.
    pub async fn defragment(&self) -> Result<DefragOutcome, KvError> {
        let (reply, rx) = oneshot::channel();
        self.ask(SequencerMsg::Maintenance(MaintenanceOp::Defragment {
            reply,
        }))
        .await?;
        rx.await.map_err(|_| closed())?
    }

    /// A point-in-time image of the store (Maintenance.Snapshot).
    pub async fn snapshot(&self) -> Result<SnapshotImage, KvError> {
        let (reply, rx) = oneshot::channel();
        self.ask(SequencerMsg::Maintenance(MaintenanceOp::Snapshot { reply }))
            .await?;
        rx.await.map_err(|_| closed())?
    }

    /// etcd's quota check before proposing a request that costs `cost` bytes (0 always
    /// passes): the store's size plus the cost must stay below --quota-backend-bytes.
    /// Otherwise this member raises the NOSPACE alarm through the log, as etcd's
    /// `quotaAlarmer` does, and the request is refused.
    pub async fn check_quota(&self, cost: u64) -> Result<(), KvError> {
        if cost == 0 {
            return Ok(());
        }
        let size = self
            .cluster
            .backend_size_bytes
            .load(std::sync::atomic::Ordering::Acquire);
        if size.saturating_add(cost) < self.cluster.quota_backend_bytes {
            return Ok(());
        }
        let raise = corekv_engine::pb::PbAlarmRequest {
            action: corekv_engine::mvcc::alarm::ACTION_ACTIVATE,
            member_id: self.cluster.member_id,
            alarm: corekv_engine::mvcc::alarm::ALARM_NOSPACE,
        };
        // As etcd: the alarm is raised (and waited for) whatever its outcome.
        let _ = self.write(Command::Alarm(raise)).await;
        Err(KvError::NoSpace)
    }

    async fn send(&self, request: ShardRequest) -> Result<(), KvError> {
        self.tx.send_async(request).await.map_err(|_| closed())
    }

    /// Waiting here while the sequencer's queue is full is the backpressure.
    async fn ask(&self, msg: SequencerMsg) -> Result<(), KvError> {
        self.sequencer.send_async(msg).await.map_err(|_| closed())
    }
}

/// Serves a read-only request from `view`.
fn read_view(view: &ReadView, op: &ReadOp, raft_term: u64) -> Result<Reply<ReadResult>, KvError> {
    let body = match op {
        ReadOp::Range(request) => ReadResult::Range(view.range_answer(request)?),
        ReadOp::Txn(request) => ReadResult::Txn(view.txn_read_only(request)?),
    };
    Ok(Reply { body, raft_term })
}

/// Bytes of responses a watch stream may have queued towards its connection. The shard
/// stops adding once it is reached (a watcher then catches up from history later), so the
/// queue holds at most this plus one response.
pub const WATCH_STREAM_QUEUED_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The shared byte buffers [`WatchEvents`] hold.
pub use bytes::Bytes;

/// WatchResponse field numbers (etcd's rpc.proto) used by [`WatchEvents`].
const WATCH_RESPONSE_HEADER_FIELD: u32 = 1;
const WATCH_RESPONSE_WATCH_ID_FIELD: u32 = 2;
const WATCH_RESPONSE_EVENTS_FIELD: u32 = 11;

/// One response on a watch stream's queue.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// A response built for this stream alone (created, canceled, progress, fragments,
    /// catch-up from history).
    Response(PbWatchResponse),
    /// A watcher's share of a published batch: events encoded once per batch on the core
    /// and shared (reference-counted) by every watcher that gets them.
    Events(WatchEvents),
}

/// A WatchResponse carrying only a header, a watch id and events, with the events already
/// encoded. Its bytes are exactly what prost writes for the equivalent [`PbWatchResponse`].
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvents {
    pub header: PbResponseHeader,
    pub watch_id: i64,
    /// Each event as a whole `events` field of a WatchResponse (tag, length, mvccpb.Event),
    /// from [`encode_event_field`].
    pub events: Vec<bytes::Bytes>,
}

/// An event as a WatchResponse `events` field, to be shared by every watcher it goes to.
pub fn encode_event_field(event: &PbEvent) -> bytes::Bytes {
    let len = prost::encoding::message::encoded_len(WATCH_RESPONSE_EVENTS_FIELD, event);
    let mut out = Vec::with_capacity(len);
    prost::encoding::message::encode(WATCH_RESPONSE_EVENTS_FIELD, event, &mut out);
    debug_assert_eq!(out.len(), len);
    bytes::Bytes::from(out)
}

impl WatchEvents {
    /// Bytes of the encoded WatchResponse.
    pub fn encoded_len(&self) -> usize {
        let id = if self.watch_id != 0 {
            prost::encoding::int64::encoded_len(WATCH_RESPONSE_WATCH_ID_FIELD, &self.watch_id)
        } else {
            0
        };
        prost::encoding::message::encoded_len(WATCH_RESPONSE_HEADER_FIELD, &self.header)
            + id
            + self.events.iter().map(|e| e.len()).sum::<usize>()
    }

    /// Writes the WatchResponse: fields in number order, as prost does.
    pub fn encode(&self, buf: &mut impl bytes::BufMut) {
        prost::encoding::message::encode(WATCH_RESPONSE_HEADER_FIELD, &self.header, buf);
        if self.watch_id != 0 {
            prost::encoding::int64::encode(WATCH_RESPONSE_WATCH_ID_FIELD, &self.watch_id, buf);
        }
        for event in &self.events {
            buf.put_slice(event);
        }
    }
}

impl WatchItem {
    /// Bytes of the encoded WatchResponse.
    pub fn encoded_len(&self) -> usize {
        match self {
            WatchItem::Response(r) => prost::Message::encoded_len(r),
            WatchItem::Events(e) => e.encoded_len(),
        }
    }

    /// Writes the WatchResponse.
    pub fn encode(&self, buf: &mut impl bytes::BufMut) {
        match self {
            WatchItem::Response(r) => {
                prost::Message::encode(r, buf).expect("callers reserve encoded_len bytes")
            }
            WatchItem::Events(e) => e.encode(buf),
        }
    }

    /// Events carried.
    pub fn event_count(&self) -> usize {
        match self {
            WatchItem::Response(r) => r.events.len(),
            WatchItem::Events(e) => e.events.len(),
        }
    }

    /// Puts this member's ids into the header (the shard leaves them to the connection).
    pub fn set_member(&mut self, cluster_id: u64, member_id: u64) {
        let header = match self {
            WatchItem::Response(r) => r.header.get_or_insert_with(Default::default),
            WatchItem::Events(e) => &mut e.header,
        };
        header.cluster_id = cluster_id;
        header.member_id = member_id;
    }

    /// The response as a message (decodes shared events: for callers off the hot path).
    pub fn into_response(self) -> PbWatchResponse {
        match self {
            WatchItem::Response(r) => r,
            WatchItem::Events(e) => {
                let mut bytes = Vec::with_capacity(e.encoded_len());
                e.encode(&mut bytes);
                prost::Message::decode(bytes.as_slice())
                    .expect("a WatchResponse encoded here decodes")
            }
        }
    }
}

impl From<PbWatchResponse> for WatchItem {
    fn from(response: PbWatchResponse) -> WatchItem {
        WatchItem::Response(response)
    }
}

/// A watch stream's response queue, bounded in bytes rather than responses: one batch may
/// carry one response per watcher of the stream, and those vary from bytes to megabytes.
pub fn watch_channel(queued_bytes_max: usize) -> (WatchSender, WatchReceiver) {
    let (tx, rx) = flume::unbounded();
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (
        WatchSender {
            tx,
            queued_bytes: queued.clone(),
            queued_bytes_max,
        },
        WatchReceiver {
            rx,
            queued_bytes: queued,
        },
    )
}

/// The shard's end of a watch stream's queue.
#[derive(Debug)]
pub struct WatchSender {
    tx: flume::Sender<(WatchItem, usize)>,
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
    queued_bytes_max: usize,
}

/// The connection's end was dropped.
#[derive(Debug)]
pub struct WatchDisconnected(pub WatchItem);

impl WatchSender {
    /// Whether another response may be queued now.
    pub fn has_room(&self) -> bool {
        self.queued_bytes.load(std::sync::atomic::Ordering::Acquire) < self.queued_bytes_max
    }

    /// Queues a response. Callers check [`WatchSender::has_room`] first: the bound is theirs
    /// to keep (it is exceeded by at most the response that crossed it).
    pub fn send(&self, response: impl Into<WatchItem>) -> Result<(), WatchDisconnected> {
        let item = response.into();
        let size = item.encoded_len();
        self.queued_bytes
            .fetch_add(size, std::sync::atomic::Ordering::AcqRel);
        self.tx.send((item, size)).map_err(|e| {
            self.queued_bytes
                .fetch_sub(size, std::sync::atomic::Ordering::AcqRel);
            WatchDisconnected(e.0 .0)
        })
    }

    /// Whether the connection's end is gone.
    pub fn is_disconnected(&self) -> bool {
        self.tx.is_disconnected()
    }
}

/// The connection's end of a watch stream's queue.
pub struct WatchReceiver {
    rx: flume::Receiver<(WatchItem, usize)>,
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl WatchReceiver {
    /// The next response, once one is queued; `Err` when the shard dropped the stream.
    pub async fn recv_async(&self) -> Result<WatchItem, flume::RecvError> {
        let (item, size) = self.rx.recv_async().await?;
        self.queued_bytes
            .fetch_sub(size, std::sync::atomic::Ordering::AcqRel);
        Ok(item)
    }

    /// Every response queued now, as messages (tests).
    pub fn drain(&self) -> Vec<PbWatchResponse> {
        self.rx
            .drain()
            .map(|(item, size)| {
                self.queued_bytes
                    .fetch_sub(size, std::sync::atomic::Ordering::AcqRel);
                item.into_response()
            })
            .collect()
    }

    /// The responses as a stream, in order.
    pub fn into_stream(
        self,
    ) -> impl tonic::codegen::tokio_stream::Stream<Item = WatchItem> + Send + 'static {
        let WatchReceiver { rx, queued_bytes } = self;
        tonic::codegen::tokio_stream::StreamExt::map(rx.into_stream(), move |(item, size)| {
            queued_bytes.fetch_sub(size, std::sync::atomic::Ordering::AcqRel);
            item
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_engine::pb::PbKeyValue;
    use prost::Message;

    #[test]
    fn shared_events_encode_exactly_as_prost_encodes_the_response() {
        let event = |key: &str, rev: i64, prev: bool| PbEvent {
            r#type: 0,
            kv: Some(PbKeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; 300],
                create_revision: 2,
                mod_revision: rev,
                version: 3,
                lease: 0,
            }),
            prev_kv: prev.then(|| PbKeyValue {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }),
        };
        for watch_id in [0, 1, 77, -1] {
            let events = vec![event("a", 5, false), event("bb", 6, true)];
            let header = PbResponseHeader {
                cluster_id: 1 << 60,
                member_id: 9,
                revision: 6,
                raft_term: 2,
            };
            let message = PbWatchResponse {
                header: Some(header),
                watch_id,
                events: events.clone(),
                ..Default::default()
            };
            let shared = WatchItem::Events(WatchEvents {
                header,
                watch_id,
                events: events.iter().map(encode_event_field).collect(),
            });
            let mut bytes = Vec::new();
            shared.encode(&mut bytes);
            assert_eq!(bytes, message.encode_to_vec(), "watch id {watch_id}");
            assert_eq!(shared.encoded_len(), bytes.len());
            assert_eq!(shared.event_count(), 2);
            assert_eq!(shared.into_response(), message);
        }
    }
}
