//! The peer transport: raft traffic between members on --listen-peer-urls.
//!
//! - One long-lived TCP connection per member pair, used both ways; the member with the
//!   lower id dials it (so the pair never races two connections), the other accepts.
//! - Each peer has its own bounded queue and its own task: a slow or dead peer fills only
//!   its queue (messages to it are then dropped and raft is told it is unreachable; raft
//!   retries), never blocking the sequencer or the other peers.
//! - Reconnection with exponential backoff; every connection starts with a [`frame::Hello`]
//!   naming the cluster, and a member of another cluster is refused with a clear reason.
//! - Snapshots travel on their own connection, streamed from the store image file in chunks
//!   and written to a file on the receiver: neither side holds an image in memory.
//! - A follower forwards lease requests to the leader as Request frames.
//!
//! All of it runs on one tokio runtime on its own thread ("peer-net"); the sequencer talks
//! to it through [`PeerTransport`], whose calls never block.

pub mod forward;
pub mod frame;
mod link;
mod snapshot;
mod tls;

pub use tls::PeerTls;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_engine::membership::Member;
use corekv_engine::KvError;
use corekv_raft::{Message, MessageType};
use tokio::sync::oneshot;

use crate::metrics;
use crate::shard_api::{LeaseOp, LeaseResult, SnapshotImage};

/// Raft messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_DEPTH_MAX: usize = 4096;
/// Forwarded requests waiting for their answer, over all peers.
const PENDING_REQUESTS_MAX: usize = 16_384;
/// How long a forwarded request waits for the leader's answer.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;

/// What the transport hands to the sequencer.
#[derive(Debug)]
pub enum PeerEvent {
    /// A raft message from a peer.
    Raft(Message),
    /// A snapshot's data arrived and is durable in `path`; `message` is the MsgSnapshot
    /// (its data field empty).
    SnapshotReceived { message: Message, path: PathBuf },
    /// How sending a snapshot to `to` ended.
    SnapshotSent { to: u64, delivered: bool },
    /// Messages to `to` were dropped (queue full or no connection).
    Unreachable(u64),
    /// A follower forwarded a lease request; answer with [`PeerTransport::respond_lease`].
    LeaseRequest { from: u64, id: u64, op: LeaseOp },
    /// A peer says this member was removed from the cluster.
    Removed,
}

/// Where events go (the sequencer's queue). Returns false if it was full or closed; the
/// event is then dropped (raft recovers from lost messages).
pub type Deliver = Arc<dyn Fn(PeerEvent) -> bool + Send + Sync>;

/// Called once with a forwarded request's outcome.
pub type LeaseCallback = Box<dyn FnOnce(Result<LeaseResult, KvError>) + Send>;

/// Fixed settings of a member's transport.
#[derive(Clone)]
pub struct PeerSettings {
    pub local_id: u64,
    pub cluster_id: u64,
    /// `host:port` pairs to listen on (--listen-peer-urls).
    pub listen: Vec<String>,
    /// Where received snapshot images are written (next to the store file).
    pub snapshot_dir: PathBuf,
    /// Largest snapshot image accepted.
    pub snapshot_bytes_max: u64,
    /// TLS for every peer connection (https peer URLs); `None` for plaintext.
    pub tls: Option<PeerTls>,
}

/// State shared by the handle and the runtime's tasks.
struct Shared {
    settings: PeerSettings,
    deliver: Deliver,
    started: Instant,
    /// The membership as last set, for Join answers and for refusing removed members.
    members: Mutex<(Vec<Member>, Vec<u64>)>,
    /// Accepted stream connections, routed to the peer's task.
    routes: Mutex<HashMap<u64, flume::Sender<tls::PeerStream>>>,
    /// Forwarded requests awaiting an answer, by request id.
    pending: Mutex<HashMap<u64, LeaseCallback>>,
    next_request_id: AtomicU64,
    /// Snapshot files received (names them).
    received: AtomicU64,
}

impl Shared {
    fn millis_now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    fn is_removed(&self, id: u64) -> bool {
        self.members.lock().expect("members lock").1.contains(&id)
    }

    fn complete(&self, id: u64, result: Result<LeaseResult, KvError>) {
        let callback = self.pending.lock().expect("pending lock").remove(&id);
        if let Some(callback) = callback {
            callback(result);
        }
    }
}

/// One frame for a peer's connection.
pub(crate) struct OutFrame {
    kind: frame::Kind,
    payload: Vec<u8>,
}

/// The sequencer's side of one peer.
struct Link {
    out: flume::Sender<OutFrame>,
    urls: Arc<Mutex<Vec<String>>>,
    /// Milliseconds since the transport started when the current connection was made
    /// (0: not connected).
    connected_since_ms: Arc<AtomicU64>,
}

/// The transport's handle: owned by the sequencer, every call returns at once.
pub struct PeerTransport {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    links: HashMap<u64, Link>,
}

impl PeerTransport {
    /// Binds the peer listeners and starts the transport's thread. Fails if a listener
    /// cannot be bound.
    pub fn start(settings: PeerSettings, deliver: Deliver) -> io::Result<PeerTransport> {
        let mut listeners = Vec::new();
        for addr in &settings.listen {
            listeners.push(bind_exclusive(addr)?);
        }
        let shared = Arc::new(Shared {
            settings,
            deliver,
            started: Instant::now(),
            members: Mutex::new((Vec::new(), Vec::new())),
            routes: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_request_id: AtomicU64::new(1),
            received: AtomicU64::new(0),
        });
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name("peer-net".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(err) => {
                        let _ = handle_tx.send(Err(err));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async move {
                    let mut tasks = Vec::new();
                    for l in listeners {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tasks.push(tokio::spawn(accept_loop(l, accept_shared.clone())))
                            }
                            Err(err) => log::error!("peer listener: {err}"),
                        }
                    }
                    // Runs until the process exits (the listeners never stop on their own).
                    std::future::pending::<()>().await;
                    drop(tasks);
                });
            })?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| io::Error::other("peer thread ended at start"))??;
        Ok(PeerTransport {
            shared,
            runtime,
            links: HashMap::new(),
        })
    }

    /// Makes the transport talk to exactly these members (this member excluded): new ones
    /// get a link, removed ones lose theirs, changed URLs are used from the next dial.
    pub fn set_members(&mut self, members: &[Member], removed: &[u64]) {
        let me = self.shared.settings.local_id;
        *self.shared.members.lock().expect("members lock") = (members.to_vec(), removed.to_vec());
        // A removed member hears it on its link before the link goes (it then stops).
        self.links.retain(|id, link| {
            let keep = *id != me && members.iter().any(|m| m.id == *id);
            if !keep && removed.contains(id) {
                let _ = link.out.try_send(OutFrame {
                    kind: frame::Kind::Removed,
                    payload: Vec::new(),
                });
            }
            keep
        });
        self.shared
            .routes
            .lock()
            .expect("routes lock")
            .retain(|id, _| members.iter().any(|m| m.id == *id));
        for m in members.iter().filter(|m| m.id != me) {
            if let Some(link) = self.links.get(&m.id) {
                *link.urls.lock().expect("urls lock") = m.peer_urls.clone();
                continue;
            }
            let (out_tx, out_rx) = flume::bounded(PEER_QUEUE_DEPTH_MAX);
            let (conn_tx, conn_rx) = flume::bounded(4);
            let urls = Arc::new(Mutex::new(m.peer_urls.clone()));
            let connected_since_ms = Arc::new(AtomicU64::new(0));
            self.shared
                .routes
                .lock()
                .expect("routes lock")
                .insert(m.id, conn_tx);
            let task = link::LinkTask {
                shared: self.shared.clone(),
                peer: m.id,
                urls: urls.clone(),
                out: out_rx,
                accepted: conn_rx,
                connected_since_ms: connected_since_ms.clone(),
            };
            self.runtime.spawn(task.run());
            self.links.insert(
                m.id,
                Link {
                    out: out_tx,
                    urls,
                    connected_since_ms,
                },
            );
        }
    }

    /// Sends raft messages. A MsgSnapshot needs its image: see [`Self::send_snapshot`].
    /// Returns the peers whose messages were dropped (report them unreachable to raft).
    pub fn send(&self, messages: Vec<Message>) -> Vec<u64> {
        let mut dropped = Vec::new();
        for m in messages {
            debug_assert!(m.get_msg_type() != MessageType::MsgSnapshot);
            let to = m.to;
            let sent = self.links.get(&to).is_some_and(|link| {
                let payload = corekv_raft::codec::encode_message(&m);
                link.out
                    .try_send(OutFrame {
                        kind: frame::Kind::Raft,
                        payload,
                    })
                    .is_ok()
            });
            if !sent {
                metrics::global()
                    .peer_messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
                if !dropped.contains(&to) {
                    dropped.push(to);
                }
            }
        }
        dropped
    }

    /// Sends a MsgSnapshot once `image` (a store image at or after the message's index)
    /// is ready; its metadata is set to the image's log position. The outcome comes back
    /// as [`PeerEvent::SnapshotSent`].
    pub fn send_snapshot(
        &self,
        message: Message,
        image: oneshot::Receiver<Result<SnapshotImage, KvError>>,
    ) {
        let urls = self
            .links
            .get(&message.to)
            .map(|l| l.urls.lock().expect("urls lock").clone())
            .unwrap_or_default();
        let shared = self.shared.clone();
        self.runtime
            .spawn(snapshot::send(shared, message, urls, image));
    }

    /// Forwards a lease request to `leader`; `done` is called with the answer, or with an
    /// error if none comes within [`REQUEST_TIMEOUT_MS`].
    pub fn forward_lease(&self, leader: u64, op: &LeaseOp, done: LeaseCallback) {
        let Some(link) = self.links.get(&leader) else {
            done(Err(no_leader()));
            return;
        };
        let id = self.shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.shared.pending.lock().expect("pending lock");
            if pending.len() >= PENDING_REQUESTS_MAX {
                drop(pending);
                done(Err(KvError::Unavailable(
                    "etcdserver: too many requests".into(),
                )));
                return;
            }
            pending.insert(id, done);
        }
        let mut payload = id.to_le_bytes().to_vec();
        payload.extend_from_slice(&forward::encode_lease_op(op));
        let queued = link.out.try_send(OutFrame {
            kind: frame::Kind::Request,
            payload,
        });
        if queued.is_err() {
            self.shared.complete(id, Err(no_leader()));
            return;
        }
        let shared = self.shared.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(REQUEST_TIMEOUT_MS)).await;
            shared.complete(
                id,
                Err(KvError::Unavailable("etcdserver: request timed out".into())),
            );
        });
    }

    /// Answers a request a follower forwarded.
    pub fn respond_lease(&self, to: u64, id: u64, result: &Result<LeaseResult, KvError>) {
        if let Some(link) = self.links.get(&to) {
            let mut payload = id.to_le_bytes().to_vec();
            payload.extend_from_slice(&forward::encode_lease_result(result));
            let _ = link.out.try_send(OutFrame {
                kind: frame::Kind::Response,
                payload,
            });
        }
    }

    /// Whether this member has been connected to `id` for at least `at_least` (etcd's
    /// "active since"); `Duration::ZERO` asks whether it is connected at all.
    pub fn connected_for(&self, id: u64, at_least: Duration) -> bool {
        let Some(link) = self.links.get(&id) else {
            return false;
        };
        let since = link.connected_since_ms.load(Ordering::Relaxed);
        since != 0 && self.shared.millis_now().saturating_sub(since) >= at_least.as_millis() as u64
    }
}

fn no_leader() -> KvError {
    KvError::Unavailable("etcdserver: no leader".into())
}

/// Asks the members at `urls` for the cluster's membership (a member starting with
/// --initial-cluster-state=existing learns its own id and the cluster id this way).
/// Tries each URL in turn; `Err` with the last reason if none answers.
pub fn query_membership(
    urls: &[String],
    timeout: Duration,
    tls: Option<&PeerTls>,
) -> Result<(u64, Vec<Member>), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut last = "no peer URL to ask".to_string();
    for url in urls {
        match runtime.block_on(link::query_join(url, timeout, tls)) {
            Ok(answer) => return Ok(answer),
            Err(err) => last = format!("{url}: {err}"),
        }
    }
    Err(last)
}

/// Binds a peer listener. Not SO_REUSEPORT: two members on one port would each get some of
/// the other's connections; the second one must fail to start, as etcd does.
fn bind_exclusive(host_port: &str) -> io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = host_port.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot resolve {host_port}"),
        )
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(256)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts peer connections: checks each Hello, then routes it by purpose.
async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                log::warn!("peer accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(err) = link::accept(stream, shared).await {
                log::debug!("peer connection from {addr} refused or ended: {err}");
            }
        });
    }
}
