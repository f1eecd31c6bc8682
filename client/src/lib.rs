//! A client for corekv's binary protocol (specified in `docs/protocol.md`).
//!
//! - [`Connection`]: one TCP connection with many requests in flight at once (pipelining);
//!   answers are matched to requests by request id, in whatever order they come back.
//! - [`Client`]: a pool of connections used round-robin (the server's kernel spreads
//!   connections over its cores, so a few connections per server core use them all).
//! - [`Watch`]: one watcher's pushed responses (created, events, canceled), from
//!   [`Connection::watch`] or [`Client::watch`].
//!
//! Requests and responses are etcd's own protobuf messages ([`proto`]), with etcd's
//! semantics: the same revisions, the same error codes and texts as over gRPC.
//!
//! ```no_run
//! # async fn demo() -> Result<(), corekv_client::Error> {
//! use corekv_client::{proto::PbPutRequest, Client, ClientOptions};
//! let client = Client::connect(&["127.0.0.1:2380".to_string()], ClientOptions::default()).await?;
//! let put = PbPutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
//! let revision = client.put(&put).await?.header.unwrap().revision;
//! # let _ = revision; Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod frame;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};

use frame::{kind, ErrorBody, Frame, FrameDecoder, Hello, HelloAck};

/// etcd's protobuf messages, the payloads of the protocol (re-exported from `etcd-client`).
pub use etcd_client::proto;

use proto::*;

/// Frames queued towards a connection's socket before senders wait.
const WRITE_QUEUE_FRAMES_MAX: usize = 1024;
/// Bytes gathered into one socket write at most (several frames per system call).
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Bytes the receive buffer grows by per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Responses queued per watcher before the connection's reader waits for it to read.
const WATCH_QUEUE_RESPONSES_MAX: usize = 256;

/// Everything that can go wrong talking to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The server answered with an error: a gRPC status code and etcd's text
    /// (for example `3`, "etcdserver: key is not provided").
    Status {
        /// gRPC status code (see [`frame::code`]).
        code: u32,
        /// The message, as etcd words it.
        message: String,
    },
    /// The connection is closed or failed; the text says why.
    Closed(String),
    /// The server sent something this client cannot read.
    Protocol(String),
    /// Connecting failed.
    Connect(String),
    /// A watch create was refused (created and canceled at once); the reason as etcd gives it.
    WatchRefused(String),
}

impl Error {
    /// The gRPC status code of a [`Error::Status`].
    pub fn code(&self) -> Option<u32> {
        match self {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Status { code, message } => write!(f, "status {code}: {message}"),
            Error::Closed(why) => write!(f, "connection closed: {why}"),
            Error::Protocol(why) => write!(f, "protocol error: {why}"),
            Error::Connect(why) => write!(f, "cannot connect: {why}"),
            Error::WatchRefused(why) => write!(f, "watch refused: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Settings for [`Connection::connect`] and [`Client::connect`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Connections a [`Client`] opens per address (at least 1).
    pub connections_per_address: usize,
    /// How long connecting plus the hello exchange may take.
    pub connect_timeout: Duration,
    /// Largest frame accepted from the server (a Range answer is one frame).
    pub frame_bytes_max: usize,
    /// Requests in flight per connection at most (further callers wait); the server's own
    /// limit from the hello answer applies if lower.
    pub requests_in_flight_max: usize,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connections_per_address: 1,
            connect_timeout: Duration::from_secs(5),
            frame_bytes_max: 512 * 1024 * 1024,
            requests_in_flight_max: 4096,
        }
    }
}

/// Where the reader delivers frames of one request id.
enum Slot {
    /// One answer, then the id is free.
    Unary(oneshot::Sender<Frame>),
    /// A watcher's pushed responses until it is canceled.
    Watch(mpsc::Sender<Result<PbWatchResponse, Error>>),
}

/// State shared by a connection's handle and its reader/writer tasks.
struct Shared {
    /// Requests waiting for answers, by request id; `None` once the connection closed
    /// (the reason is in `closed`).
    pending: Mutex<Option<HashMap<u64, Slot>>>,
    closed: Mutex<String>,
}

impl Shared {
    fn register(&self, id: u64, slot: Slot) -> Result<(), Error> {
        if let Some(map) = self.pending.lock().unwrap().as_mut() {
            let previous = map.insert(id, slot);
            assert!(
                previous.is_none(),
                "request ids are never reused while pending"
            );
            return Ok(());
        }
        // (The pending lock is released here: `close` takes `closed` first.)
        Err(self.closed_error())
    }

    fn unregister(&self, id: u64) {
        if let Some(map) = self.pending.lock().unwrap().as_mut() {
            map.remove(&id);
        }
    }

    /// Fails every waiting request with `why`; later requests fail at once.
    fn close(&self, why: String) {
        {
            let mut closed = self.closed.lock().unwrap();
            if closed.is_empty() {
                *closed = why.clone();
            }
        }
        let taken = self.pending.lock().unwrap().take();
        for (_, slot) in taken.into_iter().flatten() {
            match slot {
                // A dropped oneshot sender tells the waiter the connection closed.
                Slot::Unary(tx) => drop(tx),
                Slot::Watch(tx) => drop(tx.try_send(Err(Error::Closed(why.clone())))),
            }
        }
    }

    fn closed_error(&self) -> Error {
        let why = self.closed.lock().unwrap().clone();
        Error::Closed(if why.is_empty() {
            "the connection's tasks stopped".into()
        } else {
            why
        })
    }
}

/// Unregisters a request id when dropped while armed: a caller that gives up (its future
/// dropped) before the answer must not leave its slot behind.
struct Unregister<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl<'a> Unregister<'a> {
    fn new(shared: &'a Shared, id: u64) -> Unregister<'a> {
        Unregister {
            shared,
            id,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.unregister(self.id);
        }
    }
}

/// One connection to a corekv server's binary port, shared by many concurrent callers.
///
/// Every method may be called concurrently (through `&self`); requests are written in
/// batches and answered in any order. Dropping the last handle closes the connection.
pub struct Connection {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Vec<u8>>,
    next_id: AtomicU64,
    in_flight: Semaphore,
    hello: HelloAck,
}

impl Connection {
    /// Connects to `addr` (`host:port` of a `--listen-binary-urls` listener) and exchanges
    /// hellos. Must be called inside a tokio runtime (it spawns the reader and writer).
    pub async fn connect(addr: &str, options: &ClientOptions) -> Result<Connection, Error> {
        let addr = addr
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let setup = async {
            let mut stream = TcpStream::connect(&addr)
                .await
                .map_err(|e| Error::Connect(format!("{addr}: {e}")))?;
            stream
                .set_nodelay(true)
                .map_err(|e| Error::Connect(format!("{addr}: {e}")))?;
            let mut hello = Vec::new();
            let ours = Hello {
                version_min: frame::PROTOCOL_VERSION,
                version_max: frame::PROTOCOL_VERSION,
            };
            frame::encode_raw(
                &mut hello,
                kind::HELLO,
                frame::CONNECTION_REQUEST_ID,
                &ours.to_bytes(),
            );
            stream
                .write_all(&hello)
                .await
                .map_err(|e| Error::Connect(format!("{addr}: {e}")))?;
            let decoder = FrameDecoder::new(options.frame_bytes_max);
            let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
            let answer = loop {
                if let Some(frame) = decoder
                    .decode(&mut buf)
                    .map_err(|e| Error::Protocol(e.to_string()))?
                {
                    break frame;
                }
                let n = stream
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| Error::Connect(format!("{addr}: {e}")))?;
                if n == 0 {
                    return Err(Error::Connect(format!("{addr}: closed during the hello")));
                }
            };
            let ack = match answer.kind {
                kind::HELLO_ACK => {
                    HelloAck::parse(&answer.payload).map_err(|e| Error::Protocol(e.to_string()))?
                }
                kind::ERROR => {
                    let body = ErrorBody::parse(&answer.payload)
                        .map_err(|e| Error::Protocol(e.to_string()))?;
                    return Err(Error::Status {
                        code: body.code,
                        message: body.message,
                    });
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "expected a hello answer, got a {} frame",
                        kind::name(other)
                    )))
                }
            };
            if ack.version != frame::PROTOCOL_VERSION {
                return Err(Error::Protocol(format!(
                    "server chose protocol version {}, this client speaks {}",
                    ack.version,
                    frame::PROTOCOL_VERSION
                )));
            }
            Ok((stream, buf, decoder, ack))
        };
        let (stream, buf, decoder, ack) = tokio::time::timeout(options.connect_timeout, setup)
            .await
            .map_err(|_| Error::Connect(format!("{addr}: timed out")))??;
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Some(HashMap::new())),
            closed: Mutex::new(String::new()),
        });
        let (writes, queued) = mpsc::channel(WRITE_QUEUE_FRAMES_MAX);
        tokio::spawn(write_loop(write, queued, shared.clone()));
        tokio::spawn(read_loop(read, buf, decoder, shared.clone()));
        let in_flight = options
            .requests_in_flight_max
            .min(ack.requests_in_flight_max as usize)
            .max(1);
        Ok(Connection {
            shared,
            writes,
            next_id: AtomicU64::new(1),
            in_flight: Semaphore::new(in_flight),
            hello: ack,
        })
    }

    /// What the server said in its hello answer (version, limits, cluster and member ids).
    pub fn server_hello(&self) -> HelloAck {
        self.hello
    }

    /// Whether the connection has closed (every request on it now fails).
    pub fn is_closed(&self) -> bool {
        self.shared.pending.lock().unwrap().is_none()
    }

    /// Requests and watchers waiting for answers on this connection.
    pub fn pending(&self) -> usize {
        self.shared
            .pending
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |map| map.len())
    }

    fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends one request of `kind` and waits for its answer.
    async fn call<Resp: prost::Message + Default>(
        &self,
        request_kind: u8,
        request: &impl prost::Message,
    ) -> Result<Resp, Error> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| self.shared.closed_error())?;
        let id = self.next_request_id();
        let (tx, rx) = oneshot::channel();
        self.shared.register(id, Slot::Unary(tx))?;
        // Frees the id if this future is dropped before its answer arrives.
        let mut pending = Unregister::new(&self.shared, id);
        let mut bytes = Vec::new();
        frame::encode_message(&mut bytes, request_kind, id, request);
        if self.writes.send(bytes).await.is_err() {
            return Err(self.shared.closed_error());
        }
        let answer = rx.await;
        // Delivered (the reader took the slot) or the connection closed (all slots gone).
        pending.disarm();
        let answer = answer.map_err(|_| self.shared.closed_error())?;
        decode_answer(request_kind, answer)
    }

    /// etcd KV.Range.
    pub async fn range(&self, request: &PbRangeRequest) -> Result<PbRangeResponse, Error> {
        self.call(kind::RANGE, request).await
    }

    /// etcd KV.Put.
    pub async fn put(&self, request: &PbPutRequest) -> Result<PbPutResponse, Error> {
        self.call(kind::PUT, request).await
    }

    /// etcd KV.DeleteRange.
    pub async fn delete_range(&self, request: &PbDeleteRequest) -> Result<PbDeleteResponse, Error> {
        self.call(kind::DELETE_RANGE, request).await
    }

    /// etcd KV.Txn.
    pub async fn txn(&self, request: &PbTxnRequest) -> Result<PbTxnResponse, Error> {
        self.call(kind::TXN, request).await
    }

    /// etcd KV.Compact.
    pub async fn compact(
        &self,
        request: &PbCompactionRequest,
    ) -> Result<PbCompactionResponse, Error> {
        self.call(kind::COMPACT, request).await
    }

    /// etcd Lease.LeaseGrant.
    pub async fn lease_grant(
        &self,
        request: &PbLeaseGrantRequest,
    ) -> Result<PbLeaseGrantResponse, Error> {
        self.call(kind::LEASE_GRANT, request).await
    }

    /// etcd Lease.LeaseRevoke.
    pub async fn lease_revoke(
        &self,
        request: &PbLeaseRevokeRequest,
    ) -> Result<PbLeaseRevokeResponse, Error> {
        self.call(kind::LEASE_REVOKE, request).await
    }

    /// One renewal of etcd's Lease.LeaseKeepAlive (an unknown lease answers TTL 0, as etcd).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<PbLeaseKeepAliveResponse, Error> {
        self.call(kind::LEASE_KEEP_ALIVE, &PbLeaseKeepAliveRequest { id })
            .await
    }

    /// etcd Lease.LeaseTimeToLive.
    pub async fn lease_time_to_live(
        &self,
        request: &PbLeaseTimeToLiveRequest,
    ) -> Result<PbLeaseTimeToLiveResponse, Error> {
        self.call(kind::LEASE_TIME_TO_LIVE, request).await
    }

    /// etcd Lease.LeaseLeases.
    pub async fn lease_leases(&self) -> Result<PbLeaseLeasesResponse, Error> {
        self.call(kind::LEASE_LEASES, &PbLeaseLeasesRequest {})
            .await
    }

    /// Creates a watcher and waits for the server's created response. Its events (and a
    /// final canceled response) arrive through the returned [`Watch`].
    pub async fn watch(self: &Arc<Self>, options: WatchOptions) -> Result<Watch, Error> {
        let id = self.next_request_id();
        let (tx, mut rx) = mpsc::channel(WATCH_QUEUE_RESPONSES_MAX);
        self.shared.register(id, Slot::Watch(tx))?;
        // Frees the id on every way out but success (then the Watch owns it).
        let mut pending = Unregister::new(&self.shared, id);
        let mut bytes = Vec::new();
        frame::encode_message(&mut bytes, kind::WATCH, id, &options.to_request());
        if self.writes.send(bytes).await.is_err() {
            return Err(self.shared.closed_error());
        }
        let created = match rx.recv().await {
            Some(Ok(response)) => response,
            Some(Err(err)) => return Err(err),
            None => return Err(self.shared.closed_error()),
        };
        if !created.created {
            return Err(Error::Protocol(format!(
                "a watch create was answered by a response that is not `created` (watch id {})",
                created.watch_id
            )));
        }
        if created.canceled {
            return Err(Error::WatchRefused(created.cancel_reason));
        }
        pending.disarm();
        Ok(Watch {
            connection: self.clone(),
            request_id: id,
            watch_id: created.watch_id,
            created,
            responses: rx,
            canceled: false,
        })
    }

    /// Asks the server to cancel watcher `watch_id` of this connection (answered on the
    /// watcher's own [`Watch`] by a canceled response).
    async fn cancel_watch(&self, watch_id: i64) -> Result<(), Error> {
        let id = self.next_request_id();
        let mut bytes = Vec::new();
        frame::encode_message(&mut bytes, kind::WATCH, id, &cancel_request(watch_id));
        self.writes
            .send(bytes)
            .await
            .map_err(|_| self.shared.closed_error())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared
            .close("the client dropped the connection".into());
    }
}

/// Turns an answer frame into the response message or the error it carries.
fn decode_answer<Resp: prost::Message + Default>(
    request_kind: u8,
    answer: Frame,
) -> Result<Resp, Error> {
    if answer.kind == kind::ERROR {
        let body = ErrorBody::parse(&answer.payload).map_err(|e| Error::Protocol(e.to_string()))?;
        return Err(Error::Status {
            code: body.code,
            message: body.message,
        });
    }
    if answer.kind != request_kind | kind::RESPONSE_BIT {
        return Err(Error::Protocol(format!(
            "a {} request was answered by a {} frame (kind {:#04x})",
            kind::name(request_kind),
            kind::name(answer.kind),
            answer.kind
        )));
    }
    Resp::decode(answer.payload).map_err(|e| {
        Error::Protocol(format!(
            "cannot decode the {} answer: {e}",
            kind::name(request_kind)
        ))
    })
}

/// Writes queued frames, several per system call.
async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut queued: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
    while let Some(first) = queued.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH_BYTES_MAX {
            match queued.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(err) = socket.write_all(&batch).await {
            shared.close(format!("write failed: {err}"));
            return;
        }
        batch.clear();
        if batch.capacity() > 4 * WRITE_BATCH_BYTES_MAX {
            batch.shrink_to(WRITE_BATCH_BYTES_MAX);
        }
    }
    let _ = socket.shutdown().await;
}

/// Reads frames and hands each to the request (or watcher) waiting for its id.
async fn read_loop(
    mut socket: OwnedReadHalf,
    mut buf: BytesMut,
    decoder: FrameDecoder,
    shared: Arc<Shared>,
) {
    let why = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                if let Err(why) = deliver(&shared, frame).await {
                    break why;
                }
                continue;
            }
            Ok(None) => {}
            Err(err) => break err.to_string(),
        }
        buf.reserve(READ_CHUNK_BYTES);
        match socket.read_buf(&mut buf).await {
            Ok(0) => break "the server closed the connection".to_string(),
            Ok(_) => {}
            Err(err) => break format!("read failed: {err}"),
        }
    };
    shared.close(why);
}

/// Delivers one frame; `Err` ends the connection with that reason.
async fn deliver(shared: &Shared, frame: Frame) -> Result<(), String> {
    if frame.request_id == frame::CONNECTION_REQUEST_ID {
        return Err(match frame.kind {
            kind::ERROR => match ErrorBody::parse(&frame.payload) {
                Ok(body) => format!("server error {}: {}", body.code, body.message),
                Err(err) => err.to_string(),
            },
            other => format!("unexpected {} frame with request id 0", kind::name(other)),
        });
    }
    let watcher = {
        let mut pending = shared.pending.lock().unwrap();
        let Some(map) = pending.as_mut() else {
            return Err("closed".into());
        };
        match map.get(&frame.request_id) {
            // An answer for a request whose caller went away already: nothing to do.
            None => return Ok(()),
            Some(Slot::Unary(_)) => {
                if let Some(Slot::Unary(tx)) = map.remove(&frame.request_id) {
                    let _ = tx.send(frame);
                }
                return Ok(());
            }
            Some(Slot::Watch(tx)) => tx.clone(),
        }
    };
    let (item, last) = match frame.kind {
        kind::WATCH_RESPONSE => match <PbWatchResponse as prost::Message>::decode(frame.payload) {
            Ok(response) => {
                let last = response.canceled;
                (Ok(response), last)
            }
            Err(err) => return Err(format!("cannot decode a watch response: {err}")),
        },
        kind::ERROR => match ErrorBody::parse(&frame.payload) {
            Ok(body) => (
                Err(Error::Status {
                    code: body.code,
                    message: body.message,
                }),
                true,
            ),
            Err(err) => return Err(err.to_string()),
        },
        other => {
            return Err(format!(
                "a watch was answered by a {} frame",
                kind::name(other)
            ))
        }
    };
    if last {
        shared.unregister(frame.request_id);
    }
    // A watcher that does not read holds up this connection's reader (backpressure, as a
    // gRPC stream's flow control would); one that was dropped is skipped.
    let _ = watcher.send(item).await;
    Ok(())
}

/// What to watch: etcd's WatchCreateRequest fields.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// The key, or the start of the range.
    pub key: Vec<u8>,
    /// End of the range (exclusive); empty for one key, `[0]` for every key >= `key`.
    pub range_end: Vec<u8>,
    /// First revision to report; 0 = from the next one.
    pub start_revision: i64,
    /// Ask for periodic progress responses while idle.
    pub progress_notify: bool,
    /// etcd's filters (0 = no put events, 1 = no delete events).
    pub filters: Vec<i32>,
    /// Include each event's previous key-value.
    pub prev_kv: bool,
    /// Pick the watch id (0 = the server picks).
    pub watch_id: i64,
    /// Split large batches into fragments.
    pub fragment: bool,
}

impl WatchOptions {
    /// Watches one key.
    pub fn key(key: impl Into<Vec<u8>>) -> WatchOptions {
        WatchOptions {
            key: key.into(),
            ..Default::default()
        }
    }

    /// Watches every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> WatchOptions {
        let key: Vec<u8> = prefix.into();
        WatchOptions {
            range_end: prefix_end(&key),
            key,
            ..Default::default()
        }
    }

    /// The etcd WatchRequest carrying this create.
    pub fn to_request(&self) -> PbWatchRequest {
        let mut union = PbWatchRequestUnion::CreateRequest(Default::default());
        if let PbWatchRequestUnion::CreateRequest(c) = &mut union {
            c.key = self.key.clone();
            c.range_end = self.range_end.clone();
            c.start_revision = self.start_revision;
            c.progress_notify = self.progress_notify;
            c.filters = self.filters.clone();
            c.prev_kv = self.prev_kv;
            c.watch_id = self.watch_id;
            c.fragment = self.fragment;
        }
        PbWatchRequest {
            request_union: Some(union),
        }
    }
}

/// The etcd WatchRequest that cancels `watch_id`.
pub fn cancel_request(watch_id: i64) -> PbWatchRequest {
    let mut union = PbWatchRequestUnion::CancelRequest(Default::default());
    if let PbWatchRequestUnion::CancelRequest(c) = &mut union {
        c.watch_id = watch_id;
    }
    PbWatchRequest {
        request_union: Some(union),
    }
}

/// etcd's range end for "every key with this prefix".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One watcher: its created response, then its pushed responses in order.
///
/// Dropping it cancels the watcher on the server.
pub struct Watch {
    connection: Arc<Connection>,
    request_id: u64,
    watch_id: i64,
    created: PbWatchResponse,
    responses: mpsc::Receiver<Result<PbWatchResponse, Error>>,
    canceled: bool,
}

impl Watch {
    /// The watch id (the server's, or the one asked for).
    pub fn watch_id(&self) -> i64 {
        self.watch_id
    }

    /// The created response (its header has the revision the watch started at).
    pub fn created(&self) -> &PbWatchResponse {
        &self.created
    }

    /// The next response: events, a progress notification, or the final canceled one
    /// (after which this returns `None`). `Err` if the connection failed.
    pub async fn next(&mut self) -> Option<Result<PbWatchResponse, Error>> {
        if self.canceled {
            return None;
        }
        let item = self.responses.recv().await?;
        match &item {
            Ok(response) if response.canceled => self.canceled = true,
            Err(_) => self.canceled = true,
            Ok(_) => {}
        }
        Some(item)
    }

    /// Asks the server to cancel this watcher; its canceled response still arrives through
    /// [`Watch::next`].
    pub async fn cancel(&self) -> Result<(), Error> {
        self.connection.cancel_watch(self.watch_id).await
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("watch_id", &self.watch_id)
            .field("request_id", &self.request_id)
            .field("canceled", &self.canceled)
            .finish()
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server_hello", &self.hello)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.canceled {
            let mut bytes = Vec::new();
            let id = self.connection.next_request_id();
            frame::encode_message(&mut bytes, kind::WATCH, id, &cancel_request(self.watch_id));
            // Best effort: a full queue or closed connection ends the watcher anyway.
            let _ = self.connection.writes.try_send(bytes);
        }
        self.connection.shared.unregister(self.request_id);
    }
}

/// A pool of connections, used round-robin by every request.
pub struct Client {
    connections: Vec<Arc<Connection>>,
    next: AtomicUsize,
}

impl Client {
    /// Opens `options.connections_per_address` connections to each address (`host:port`
    /// of the server's binary listeners). Must be called inside a tokio runtime.
    pub async fn connect(addresses: &[String], options: ClientOptions) -> Result<Client, Error> {
        if addresses.is_empty() {
            return Err(Error::Connect("no address given".into()));
        }
        let mut connections = Vec::new();
        for _ in 0..options.connections_per_address.max(1) {
            for address in addresses {
                connections.push(Arc::new(Connection::connect(address, &options).await?));
            }
        }
        Ok(Client {
            connections,
            next: AtomicUsize::new(0),
        })
    }

    /// A pool over connections opened elsewhere.
    pub fn from_connections(connections: Vec<Arc<Connection>>) -> Client {
        assert!(
            !connections.is_empty(),
            "a pool needs at least one connection"
        );
        Client {
            connections,
            next: AtomicUsize::new(0),
        }
    }

    /// The pool's connections.
    pub fn connections(&self) -> &[Arc<Connection>] {
        &self.connections
    }

    /// The connection the next request goes to.
    pub fn pick(&self) -> &Arc<Connection> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.connections[i % self.connections.len()]
    }

    /// etcd KV.Range.
    pub async fn range(&self, request: &PbRangeRequest) -> Result<PbRangeResponse, Error> {
        self.pick().range(request).await
    }

    /// etcd KV.Put.
    pub async fn put(&self, request: &PbPutRequest) -> Result<PbPutResponse, Error> {
        self.pick().put(request).await
    }

    /// etcd KV.DeleteRange.
    pub async fn delete_range(&self, request: &PbDeleteRequest) -> Result<PbDeleteResponse, Error> {
        self.pick().delete_range(request).await
    }

    /// etcd KV.Txn.
    pub async fn txn(&self, request: &PbTxnRequest) -> Result<PbTxnResponse, Error> {
        self.pick().txn(request).await
    }

    /// etcd KV.Compact.
    pub async fn compact(
        &self,
        request: &PbCompactionRequest,
    ) -> Result<PbCompactionResponse, Error> {
        self.pick().compact(request).await
    }

    /// etcd Lease.LeaseGrant.
    pub async fn lease_grant(
        &self,
        request: &PbLeaseGrantRequest,
    ) -> Result<PbLeaseGrantResponse, Error> {
        self.pick().lease_grant(request).await
    }

    /// etcd Lease.LeaseRevoke.
    pub async fn lease_revoke(
        &self,
        request: &PbLeaseRevokeRequest,
    ) -> Result<PbLeaseRevokeResponse, Error> {
        self.pick().lease_revoke(request).await
    }

    /// One renewal of lease `id`.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<PbLeaseKeepAliveResponse, Error> {
        self.pick().lease_keep_alive(id).await
    }

    /// etcd Lease.LeaseTimeToLive.
    pub async fn lease_time_to_live(
        &self,
        request: &PbLeaseTimeToLiveRequest,
    ) -> Result<PbLeaseTimeToLiveResponse, Error> {
        self.pick().lease_time_to_live(request).await
    }

    /// etcd Lease.LeaseLeases.
    pub async fn lease_leases(&self) -> Result<PbLeaseLeasesResponse, Error> {
        self.pick().lease_leases().await
    }

    /// Creates a watcher on the next connection.
    pub async fn watch(&self, options: WatchOptions) -> Result<Watch, Error> {
        self.pick().watch(options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_matches_etcd() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn answers_decode_by_kind_and_errors_keep_etcd_texts() {
        let mut wire = Vec::new();
        ErrorBody {
            code: frame::code::INVALID_ARGUMENT,
            message: "etcdserver: key is not provided".into(),
        }
        .encode(&mut wire, 5);
        let decoder = FrameDecoder::new(1024);
        let frame = decoder
            .decode(&mut BytesMut::from(&wire[..]))
            .unwrap()
            .unwrap();
        let err = decode_answer::<PbPutResponse>(kind::PUT, frame).unwrap_err();
        assert_eq!(
            err,
            Error::Status {
                code: 3,
                message: "etcdserver: key is not provided".into()
            }
        );
        let mut wire = Vec::new();
        frame::encode_message(
            &mut wire,
            kind::RANGE | kind::RESPONSE_BIT,
            6,
            &PbRangeResponse::default(),
        );
        let frame = decoder
            .decode(&mut BytesMut::from(&wire[..]))
            .unwrap()
            .unwrap();
        // A Range answer to a Put is a protocol error, not a silently wrong message.
        assert!(matches!(
            decode_answer::<PbPutResponse>(kind::PUT, frame),
            Err(Error::Protocol(_))
        ));
    }
}
