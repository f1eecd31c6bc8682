//! One peer's connection: dialing (or waiting to be dialed), the Hello exchange, and the
//! frame pump both ways.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::tls::{PeerStream, PeerTls};

use super::frame::{self, Hello, Kind, Purpose};
use super::{forward, OutFrame, PeerEvent, Shared};
use crate::metrics;

/// First wait before redialing a peer; doubles up to [`BACKOFF_MAX_MS`].
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 2_000;
/// How long a dial or a Hello answer may take.
const HANDSHAKE_TIMEOUT_MS: u64 = 2_000;
/// How often a connected link pings its peer (round-trip time metric).
const PING_INTERVAL_MS: u64 = 1_000;
/// How long the member with the higher id waits to be dialed before dialing itself.
const FALLBACK_DIAL_MS: u64 = 3_000;
/// Bytes gathered into one socket write.
const WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;

pub(super) struct LinkTask {
    pub shared: Arc<Shared>,
    pub peer: u64,
    pub urls: Arc<Mutex<Vec<String>>>,
    pub out: flume::Receiver<OutFrame>,
    pub accepted: flume::Receiver<PeerStream>,
    pub connected_since_ms: Arc<AtomicU64>,
}

impl LinkTask {
    fn dials(&self) -> bool {
        self.shared.settings.local_id < self.peer
    }

    /// Runs until the link is dropped (the peer left the membership).
    pub async fn run(self) {
        let mut backoff_ms = BACKOFF_MIN_MS;
        let mut next: Option<PeerStream> = None;
        loop {
            let stream = match next.take() {
                Some(s) => s,
                None if self.dials() => match self.dial().await {
                    Ok(s) => s,
                    Err(err) => {
                        log::debug!("cannot reach peer {:x}: {err}", self.peer);
                        match self
                            .drop_queued_for(Duration::from_millis(backoff_ms))
                            .await
                        {
                            Waited::Elapsed => {}
                            Waited::Accepted(s) => next = Some(s),
                            Waited::Gone => return,
                        }
                        backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
                        continue;
                    }
                },
                None => match self.wait_for_dial().await {
                    Some(s) => s,
                    None => return,
                },
            };
            backoff_ms = BACKOFF_MIN_MS;
            log::info!("peer {:x}: connected", self.peer);
            self.connected_since_ms
                .store(self.shared.millis_now(), Ordering::Relaxed);
            let pumped = self.pump(stream).await;
            if !matches!(pumped, Pumped::Replaced(_)) {
                self.connected_since_ms.store(0, Ordering::Relaxed);
            }
            match pumped {
                Pumped::Replaced(s) => next = Some(s),
                Pumped::Closed(err) => {
                    log::info!("peer {:x}: connection lost: {err}", self.peer);
                    (self.shared.deliver)(PeerEvent::Unreachable(self.peer));
                }
                Pumped::Dropped => return,
            }
        }
    }

    async fn dial(&self) -> io::Result<PeerStream> {
        let urls = self.urls.lock().expect("urls lock").clone();
        let mut last = io::Error::other("peer has no URL");
        for url in urls {
            let hello = Hello {
                purpose: Purpose::Stream,
                cluster_id: self.shared.settings.cluster_id,
                from: self.shared.settings.local_id,
                to: self.peer,
            };
            match handshake(&url, hello, self.shared.settings.tls.as_ref()).await {
                Ok((stream, _)) => return Ok(stream),
                Err(err) => {
                    if err.to_string().contains("permanently removed") {
                        (self.shared.deliver)(PeerEvent::Removed);
                    }
                    last = err
                }
            }
        }
        Err(last)
    }

    /// Drops what is queued for the peer while it cannot be reached, for `wait`, unless
    /// the peer dials in meanwhile.
    async fn drop_queued_for(&self, wait: Duration) -> Waited {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Waited::Elapsed,
                s = self.accepted.recv_async() => return match s {
                    Ok(s) => Waited::Accepted(s),
                    Err(_) => Waited::Gone,
                },
                got = self.out.recv_async() => match got {
                    Ok(_) => {
                        metrics::global().peer_messages_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => return Waited::Gone,
                },
            }
        }
    }

    /// Waits for the peer (which has the lower id) to dial. If it does not for a while,
    /// this side dials instead: the peer may be unable to reach this member's URL, or may
    /// refuse it (another cluster), and that must show up in the logs of both.
    async fn wait_for_dial(&self) -> Option<PeerStream> {
        let mut told = false;
        let mut fallback = tokio::time::interval(Duration::from_millis(FALLBACK_DIAL_MS));
        fallback.tick().await;
        loop {
            tokio::select! {
                s = self.accepted.recv_async() => return s.ok(),
                _ = fallback.tick() => {
                    if let Ok(s) = self.dial().await {
                        return Some(s);
                    }
                }
                got = self.out.recv_async() => match got {
                    Ok(_) => {
                        metrics::global().peer_messages_dropped.fetch_add(1, Ordering::Relaxed);
                        if !told {
                            (self.shared.deliver)(PeerEvent::Unreachable(self.peer));
                            told = true;
                        }
                    }
                    Err(_) => return None,
                },
            }
        }
    }

    /// Moves frames both ways until the connection fails, a newer one replaces it, or the
    /// link is dropped.
    async fn pump(&self, stream: PeerStream) -> Pumped {
        let (read, mut write) = tokio::io::split(stream);
        let mut read = BufReader::with_capacity(256 * 1024, read);
        // Pongs received (for the round-trip time) and answers the reader wants written.
        let (pong_tx, pong_rx) = flume::bounded::<u64>(16);
        let (answer_tx, answer_rx) = flume::bounded::<OutFrame>(16);
        let reader = async {
            let mut buf = Vec::new();
            loop {
                let kind = match frame::read_frame(&mut read, &mut buf).await {
                    Ok(kind) => kind,
                    Err(err) => return err,
                };
                if let Err(err) = self.on_frame(kind, &buf, &pong_tx, &answer_tx) {
                    return err;
                }
            }
        };
        let writer = async {
            let mut batch = Vec::with_capacity(64 * 1024);
            let mut ping = tokio::time::interval(Duration::from_millis(PING_INTERVAL_MS));
            let mut pings: Option<(u64, Instant)> = None;
            let mut nonce = 0u64;
            loop {
                batch.clear();
                tokio::select! {
                    got = self.out.recv_async() => match got {
                        Ok(f) => frame::put_frame(&mut batch, f.kind, &f.payload),
                        Err(_) => return Ok::<bool, io::Error>(true),
                    },
                    Ok(f) = answer_rx.recv_async() => frame::put_frame(&mut batch, f.kind, &f.payload),
                    Ok(n) = pong_rx.recv_async() => {
                        if let Some((sent_nonce, at)) = pings {
                            if sent_nonce == n {
                                metrics::global().peer_round_trip_seconds.observe_duration(at.elapsed());
                                pings = None;
                            }
                        }
                        continue;
                    }
                    _ = ping.tick() => {
                        nonce += 1;
                        pings = Some((nonce, Instant::now()));
                        frame::put_frame(&mut batch, Kind::Ping, &nonce.to_le_bytes());
                    }
                }
                while batch.len() < WRITE_BATCH_BYTES_MAX {
                    match self.out.try_recv() {
                        Ok(f) => frame::put_frame(&mut batch, f.kind, &f.payload),
                        Err(_) => break,
                    }
                }
                write.write_all(&batch).await?;
            }
        };
        tokio::select! {
            err = reader => Pumped::Closed(err),
            w = writer => match w {
                Ok(_) => Pumped::Dropped,
                Err(err) => Pumped::Closed(err),
            },
            s = self.accepted.recv_async() => match s {
                Ok(s) => Pumped::Replaced(s),
                Err(_) => Pumped::Dropped,
            },
        }
    }

    fn on_frame(
        &self,
        kind: Kind,
        payload: &[u8],
        pongs: &flume::Sender<u64>,
        answers: &flume::Sender<OutFrame>,
    ) -> io::Result<()> {
        match kind {
            Kind::Raft => {
                let m = corekv_raft::codec::decode_message(payload)
                    .map_err(|e| frame::invalid(e.to_string()))?;
                if m.from != self.peer {
                    return Err(frame::invalid(format!(
                        "message from {:x} on the link of {:x}",
                        m.from, self.peer
                    )));
                }
                (self.shared.deliver)(PeerEvent::Raft(m));
            }
            Kind::Ping => {
                if payload.len() != 8 {
                    return Err(frame::invalid("ping without a nonce".into()));
                }
                // The writer is this task's other half; a full side queue skips a pong.
                let _ = answers.try_send(OutFrame {
                    kind: Kind::Pong,
                    payload: payload.to_vec(),
                });
            }
            Kind::Pong => {
                let nonce = u64::from_le_bytes(
                    payload
                        .try_into()
                        .map_err(|_| frame::invalid("pong without a nonce".into()))?,
                );
                let _ = pongs.try_send(nonce);
            }
            Kind::Request => {
                let (id, body) = frame::split_id(payload)?;
                let op = forward::decode_lease_op(body).map_err(frame::invalid)?;
                (self.shared.deliver)(PeerEvent::LeaseRequest {
                    from: self.peer,
                    id,
                    op,
                });
            }
            Kind::Response => {
                let (id, body) = frame::split_id(payload)?;
                let result = forward::decode_lease_result(body).map_err(frame::invalid)?;
                self.shared.complete(id, result);
            }
            Kind::Removed => {
                (self.shared.deliver)(PeerEvent::Removed);
                return Err(io::Error::other("this member was removed from the cluster"));
            }
            other => return Err(frame::invalid(format!("unexpected {other:?} frame"))),
        }
        Ok(())
    }
}

enum Waited {
    Elapsed,
    Accepted(PeerStream),
    Gone,
}

enum Pumped {
    /// A newer connection from the peer arrived; use it.
    Replaced(PeerStream),
    Closed(io::Error),
    /// The link was dropped.
    Dropped,
}

/// Dials `url` (over TLS when `tls` is set) and exchanges Hellos. Returns the stream and
/// the HelloOk payload.
pub(super) async fn handshake(
    url: &str,
    hello: Hello,
    tls: Option<&PeerTls>,
) -> io::Result<(PeerStream, Vec<u8>)> {
    let addr = host_port(url);
    let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "dial timed out"))??;
    tcp.set_nodelay(true)?;
    let mut stream: PeerStream = match tls {
        None => Box::new(tcp),
        Some(tls) => {
            let name = super::tls::server_name(&addr).map_err(io::Error::other)?;
            let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
            let connected = tokio::time::timeout(timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Box::new(connected)
        }
    };
    frame::write_frame(&mut stream, Kind::Hello, &hello.encode()).await?;
    let mut buf = Vec::new();
    let kind = tokio::time::timeout(timeout, frame::read_frame(&mut stream, &mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer to hello"))??;
    match kind {
        Kind::HelloOk => Ok((stream, buf)),
        Kind::Reject => {
            let reason = String::from_utf8_lossy(&buf).into_owned();
            log::warn!("peer at {url} refused this member: {reason}");
            Err(io::Error::new(io::ErrorKind::PermissionDenied, reason))
        }
        other => Err(frame::invalid(format!(
            "{other:?} instead of a hello answer"
        ))),
    }
}

/// `host:port` of a peer URL (`http://host:port`).
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.trim_end_matches('/').to_string()
}

/// A member joining with --initial-cluster-state=existing asks for the membership.
pub(super) async fn query_join(
    url: &str,
    timeout: Duration,
    tls: Option<&PeerTls>,
) -> Result<(u64, Vec<corekv_engine::membership::Member>), String> {
    let hello = Hello {
        purpose: Purpose::Join,
        cluster_id: 0,
        from: 0,
        to: 0,
    };
    let (_, answer) = tokio::time::timeout(timeout, handshake(url, hello, tls))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    forward::decode_join_answer(&answer)
}

/// Serves an accepted connection: checks its Hello, then hands it where it belongs.
pub(super) async fn accept(tcp: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    let mut stream: PeerStream = match &shared.settings.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
            let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
            let accepted = tokio::time::timeout(timeout, acceptor.accept(tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Box::new(accepted)
        }
    };
    let mut buf = Vec::new();
    let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    let kind = tokio::time::timeout(timeout, frame::read_frame(&mut stream, &mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))??;
    if kind != Kind::Hello {
        return Err(frame::invalid(format!("{kind:?} before hello")));
    }
    let hello = Hello::decode(&buf).map_err(frame::invalid)?;
    let settings = &shared.settings;
    if hello.purpose == Purpose::Join {
        let members = shared.members.lock().expect("members lock").0.clone();
        let answer = forward::encode_join_answer(settings.cluster_id, &members);
        return frame::write_frame(&mut stream, Kind::HelloOk, &answer).await;
    }
    let refusal = if hello.cluster_id != settings.cluster_id {
        Some(format!(
            "request cluster ID mismatch (got {:x} want {:x})",
            hello.cluster_id, settings.cluster_id
        ))
    } else if hello.to != settings.local_id {
        Some(format!(
            "member ID mismatch (this is {:x}, not {:x})",
            settings.local_id, hello.to
        ))
    } else if shared.is_removed(hello.from) {
        Some(format!(
            "member {:x}: the member has been permanently removed from the cluster",
            hello.from
        ))
    } else {
        None
    };
    if let Some(reason) = refusal {
        log::warn!(
            "refused peer connection from member {:x}: {reason}",
            hello.from
        );
        return frame::write_frame(&mut stream, Kind::Reject, reason.as_bytes()).await;
    }
    match hello.purpose {
        Purpose::Stream => {
            let route = shared
                .routes
                .lock()
                .expect("routes lock")
                .get(&hello.from)
                .cloned();
            let Some(route) = route else {
                let reason = format!("member {:x} is not in this member's cluster", hello.from);
                return frame::write_frame(&mut stream, Kind::Reject, reason.as_bytes()).await;
            };
            frame::write_frame(&mut stream, Kind::HelloOk, &[]).await?;
            route
                .send_async(stream)
                .await
                .map_err(|_| io::Error::other("peer link gone"))
        }
        Purpose::Snapshot => {
            frame::write_frame(&mut stream, Kind::HelloOk, &[]).await?;
            super::snapshot::receive(stream, hello.from, shared).await
        }
        Purpose::Join => unreachable!("handled above"),
    }
}
