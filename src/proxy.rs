//! Proxy mode: a member that finds its discovery token full (with
//! `--discovery-fallback=proxy`, etcd's default) holds no data and forwards every client
//! connection on `--listen-client-urls` to a member of the cluster.
//!
//! etcd 3.4 falls back to its v2 HTTP proxy, which cannot carry gRPC over plaintext HTTP/2;
//! corekv forwards at the TCP level instead, so gRPC, the JSON gateway and `/health` all
//! pass through, and TLS is end to end between the client and the member. The members'
//! client URLs come from the members themselves (the peer membership query) and are
//! refreshed every `--proxy-refresh-interval`; a member that refuses a connection is
//! skipped for `--proxy-failure-wait`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_net::peer::PeerTls;
use tokio::net::{TcpListener, TcpStream};

/// Client connections forwarded at once; more are closed on accept.
const CONNECTIONS_MAX: usize = 4096;
/// TCP keep-alive: idle time before the first probe, time between probes, probes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;
/// How long the first lookup of the members' client URLs may take before the proxy starts
/// anyway (it keeps asking in the background).
const FIRST_LOOKUP_MS: u64 = 5000;

/// What the proxy needs from the configuration.
pub struct ProxyOptions {
    /// `host:port` of every --listen-client-urls.
    pub listen: Vec<String>,
    /// The cluster's peer URLs (from the discovery token).
    pub peer_urls: Vec<String>,
    pub refresh_interval: Duration,
    pub dial_timeout: Duration,
    pub failure_wait: Duration,
    pub peer_tls: Option<PeerTls>,
}

/// The members' client endpoints (`host:port`) and when each may be tried again.
#[derive(Default)]
struct Endpoints {
    list: Vec<(String, Option<Instant>)>,
    next: usize,
}

impl Endpoints {
    /// Endpoints to try, in round-robin order: those not failed recently first, then the
    /// others (when every member failed lately, one may be back; trying beats refusing).
    fn candidates(&mut self, now: Instant) -> Vec<String> {
        let n = self.list.len();
        if n == 0 {
            return Vec::new();
        }
        self.next = (self.next + 1) % n;
        let rotated = (0..n).map(|i| &self.list[(self.next + i) % n]);
        let (ready, failed): (Vec<_>, Vec<_>) =
            rotated.partition(|(_, until)| until.is_none_or(|t| t <= now));
        ready
            .into_iter()
            .chain(failed)
            .map(|(addr, _)| addr.clone())
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn failed(&mut self, addr: &str, until: Instant) {
        if let Some(slot) = self.list.iter_mut().find(|(a, _)| a == addr) {
            slot.1 = Some(until);
        }
    }

    /// Replaces the list, keeping the failure marks of endpoints still in it.
    fn replace(&mut self, fresh: Vec<String>) {
        let old = std::mem::take(&mut self.list);
        self.list = fresh
            .into_iter()
            .map(|a| {
                let mark = old.iter().find(|(o, _)| *o == a).and_then(|(_, m)| *m);
                (a, mark)
            })
            .collect();
    }
}

/// Runs the proxy until the process is stopped.
pub fn run(opts: ProxyOptions) -> Result<(), String> {
    let endpoints = Arc::new(Mutex::new(Endpoints::default()));
    let peer_urls = Arc::new(Mutex::new(opts.peer_urls.clone()));
    let deadline = Instant::now() + Duration::from_millis(FIRST_LOOKUP_MS);
    while Instant::now() < deadline {
        if refresh(&endpoints, &peer_urls, opts.peer_tls.as_ref()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    {
        let (endpoints, peer_urls) = (endpoints.clone(), peer_urls.clone());
        let (interval, tls) = (
            opts.refresh_interval.max(Duration::from_millis(100)),
            opts.peer_tls.clone(),
        );
        std::thread::Builder::new()
            .name("proxy-refresh".into())
            .spawn(move || loop {
                // Until some member's client URL is known, ask every second.
                let empty = endpoints
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty();
                std::thread::sleep(if empty {
                    interval.min(Duration::from_secs(1))
                } else {
                    interval
                });
                refresh(&endpoints, &peer_urls, tls.as_ref());
            })
            .map_err(|e| format!("proxy: cannot start the refresh thread: {e}"))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("proxy: cannot start its runtime: {e}"))?;
    runtime.block_on(serve(opts, endpoints))
}

/// Asks the members for their client URLs. True if any member answered with some.
fn refresh(
    endpoints: &Mutex<Endpoints>,
    peer_urls: &Mutex<Vec<String>>,
    tls: Option<&PeerTls>,
) -> bool {
    let urls = peer_urls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let members = match corekv_net::peer::query_membership(&urls, Duration::from_secs(2), tls) {
        Ok((_, members)) => members,
        Err(e) => {
            log::warn!("proxy: could not get the members' client URLs ({e})");
            return false;
        }
    };
    let mut fresh: Vec<String> = members
        .iter()
        .flat_map(|m| m.client_urls.iter())
        .filter_map(|u| crate::config::Url::parse(u).ok())
        .map(|u| u.socket_addr_string())
        .collect();
    fresh.sort();
    fresh.dedup();
    let mut known: Vec<String> = members.iter().flat_map(|m| m.peer_urls.clone()).collect();
    known.sort();
    known.dedup();
    if !known.is_empty() {
        *peer_urls.lock().unwrap_or_else(|p| p.into_inner()) = known;
    }
    if fresh.is_empty() {
        log::warn!("proxy: no member has published its client URLs yet");
        return false;
    }
    log::info!("proxy: forwarding to {}", fresh.join(","));
    endpoints
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(fresh);
    true
}

async fn serve(opts: ProxyOptions, endpoints: Arc<Mutex<Endpoints>>) -> Result<(), String> {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let dial = Dial {
        endpoints,
        timeout: opts.dial_timeout,
        failure_wait: opts.failure_wait,
    };
    let mut loops = Vec::new();
    for addr in &opts.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("proxy: cannot listen on {addr}: {e}"))?;
        log::info!("proxy: listening for client requests on {addr}");
        loops.push(tokio::spawn(accept_loop(
            listener,
            dial.clone(),
            slots.clone(),
        )));
    }
    for l in loops {
        l.await
            .map_err(|e| format!("proxy: accept loop failed: {e}"))?;
    }
    Ok(())
}

#[derive(Clone)]
struct Dial {
    endpoints: Arc<Mutex<Endpoints>>,
    timeout: Duration,
    failure_wait: Duration,
}

impl Dial {
    /// A connection to some member's client port, or `None` if none accepts one.
    async fn connect(&self) -> Option<TcpStream> {
        let candidates = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .candidates(Instant::now());
        for addr in candidates {
            match tokio::time::timeout(self.timeout, TcpStream::connect(&addr)).await {
                Ok(Ok(stream)) => return Some(stream),
                Ok(Err(e)) => log::warn!("proxy: cannot reach {addr}: {e}"),
                Err(_) => log::warn!("proxy: {addr} did not accept within {:?}", self.timeout),
            }
            self.endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failed(&addr, Instant::now() + self.failure_wait);
        }
        None
    }
}

async fn accept_loop(listener: TcpListener, dial: Dial, slots: Arc<tokio::sync::Semaphore>) {
    loop {
        let (mut client, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                log::warn!("proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            log::warn!("proxy: {CONNECTIONS_MAX} connections already; closing the one from {from}");
            continue;
        };
        let dial = dial.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tune(&client);
            let Some(mut member) = dial.connect().await else {
                log::warn!("proxy: no member accepts connections; closing the one from {from}");
                return;
            };
            tune(&member);
            // Ends when either side closes; errors are the peers' business.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut member).await;
        });
    }
}

/// No Nagle delay, and TCP keep-alive so a peer that vanished without a FIN or RST does
/// not hold a connection slot (and two descriptors) forever.
fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_rotate_and_skip_recent_failures() {
        let mut e = Endpoints::default();
        e.replace(vec!["a:1".into(), "b:2".into(), "c:3".into()]);
        let now = Instant::now();
        let first = e.candidates(now);
        let second = e.candidates(now);
        assert_eq!(first.len(), 3);
        assert_ne!(first[0], second[0], "round robin");
        e.failed("b:2", now + Duration::from_secs(5));
        // A recently failed endpoint comes last, until its wait is over.
        assert_eq!(e.candidates(now).last(), Some(&"b:2".to_string()));
        assert_eq!(e.candidates(now).len(), 3);
        let later = e.candidates(now + Duration::from_secs(6));
        assert!(later.contains(&"b:2".to_string()));
        // A refresh keeps the mark of an endpoint that stays, drops removed ones.
        e.replace(vec!["b:2".into(), "d:4".into()]);
        assert_eq!(
            e.candidates(now),
            vec!["d:4".to_string(), "b:2".to_string()]
        );
        // Every endpoint failed lately: still tried, not refused.
        e.failed("d:4", now + Duration::from_secs(5));
        assert_eq!(e.candidates(now).len(), 2);
    }
}
