//! A small stub DNS resolver for corekv's DNS discovery (`--discovery-srv`): SRV, A and
//! AAAA lookups over UDP (TCP when an answer is truncated), with `/etc/hosts` consulted
//! for host names first, as Go's resolver (and so etcd) does.
//!
//! Name servers come from `/etc/resolv.conf` (its first three `nameserver` lines, port
//! 53), or from the environment variable [`SERVER_ENV`] (`host:port`), which replaces
//! them: tests point corekv at a DNS server of their own with it. Names are looked up as
//! given (absolute); resolv.conf `search` domains are not applied.

mod conf;
mod wire;

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

pub use wire::Srv;
use wire::{Rdata, Response};

/// Environment variable naming the DNS server (`host:port`) to use instead of the ones in
/// `/etc/resolv.conf`.
pub const SERVER_ENV: &str = "COREKV_DNS_SERVER";

/// How long one query to one server may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Rounds over the server list before a lookup gives up.
const ATTEMPTS: u32 = 2;
/// Largest UDP answer read: we send no EDNS0 option, so servers keep to 512 bytes and set
/// TC beyond that; a larger datagram is still taken whole up to this size.
const UDP_MESSAGE_MAX: usize = 4096;
/// Unrelated datagrams (wrong id or question) skipped while waiting for our answer.
const STRAY_DATAGRAMS_MAX: usize = 16;
/// Largest `/etc/resolv.conf` or `/etc/hosts` read.
const CONF_FILE_BYTES_MAX: u64 = 1 << 20;

/// Why a lookup failed; `Display` reads as Go's `net.DNSError`
/// (`lookup NAME on SERVER: no such host`), which etcd puts in its error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    /// The name looked up, as given.
    pub name: String,
    /// The server that answered last (empty when none was asked).
    pub server: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// The kinds of [`LookupError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// NXDOMAIN, or no record of the type asked for.
    NotFound,
    /// No answer within the timeout from any server.
    Timeout,
    /// SERVFAIL, REFUSED and the like.
    ServerMisbehaving,
    /// An answer that does not parse, or a record that is not usable (such as an SRV target
    /// that is not a host name).
    Malformed(String),
    /// A local socket error, or a name that cannot be put in a query.
    Other(String),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            ErrorKind::NotFound => "no such host",
            ErrorKind::Timeout => "i/o timeout",
            ErrorKind::ServerMisbehaving => "server misbehaving",
            ErrorKind::Malformed(why) | ErrorKind::Other(why) => why,
        };
        if self.server.is_empty() {
            write!(f, "lookup {}: {what}", self.name)
        } else {
            write!(f, "lookup {} on {}: {what}", self.name, self.server)
        }
    }
}

impl std::error::Error for LookupError {}

/// A stub resolver: a list of recursive name servers and the hosts file's entries.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    hosts: Vec<(String, IpAddr)>,
    timeout: Duration,
}

impl Resolver {
    /// The system's resolver: [`SERVER_ENV`] if set, else `/etc/resolv.conf`'s name servers
    /// (`127.0.0.1:53` and `[::1]:53` if it lists none, as Go does); `/etc/hosts` first for
    /// host names either way.
    pub fn from_system() -> Result<Resolver, String> {
        let servers = match std::env::var(SERVER_ENV) {
            Ok(value) => {
                vec![parse_server(&value).map_err(|e| format!("{SERVER_ENV}={value:?}: {e}"))?]
            }
            Err(_) => {
                let text = read_small("/etc/resolv.conf").unwrap_or_default();
                let found = conf::parse_resolv_conf(&text);
                if found.is_empty() {
                    vec![
                        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53),
                        SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 53),
                    ]
                } else {
                    found
                }
            }
        };
        let hosts = conf::parse_hosts(&read_small("/etc/hosts").unwrap_or_default());
        Ok(Resolver {
            servers,
            hosts,
            timeout: QUERY_TIMEOUT,
        })
    }

    /// A resolver asking only `server`, with no hosts file.
    pub fn with_server(server: SocketAddr) -> Resolver {
        Resolver {
            servers: vec![server],
            hosts: Vec::new(),
            timeout: QUERY_TIMEOUT,
        }
    }

    /// The SRV records of `_service._proto.domain`, by priority (lowest first), then
    /// weight (highest first), then target. Go shuffles records of equal priority by
    /// weight instead; the set is the same.
    pub fn lookup_srv(
        &self,
        service: &str,
        proto: &str,
        domain: &str,
    ) -> Result<Vec<Srv>, LookupError> {
        let name = format!("_{service}._{proto}.{domain}");
        let mut records: Vec<Srv> = self
            .query(&name, wire::TYPE_SRV)?
            .into_iter()
            .filter_map(|r| match r {
                Rdata::Srv(srv) => Some(srv),
                _ => None,
            })
            .collect();
        if let Some(bad) = records.iter().find(|s| !is_host_name(&s.target)) {
            return Err(LookupError {
                name,
                server: String::new(),
                kind: ErrorKind::Malformed(format!(
                    "SRV target {:?} is not a host name",
                    bad.target
                )),
            });
        }
        records.sort_by(|a, b| {
            (a.priority, std::cmp::Reverse(a.weight), &a.target).cmp(&(
                b.priority,
                std::cmp::Reverse(b.weight),
                &b.target,
            ))
        });
        Ok(records)
    }

    /// The addresses of `host`: an IP literal as is; else its `/etc/hosts` entries if any,
    /// else its A then AAAA records. IPv4 addresses come first.
    pub fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if host.trim_end_matches('.').is_empty() {
            return Err(self.error(host, ErrorKind::NotFound));
        }
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        let mut found: Vec<IpAddr> = self
            .hosts
            .iter()
            .filter(|(name, _)| *name == key)
            .map(|(_, ip)| *ip)
            .collect();
        if found.is_empty() {
            let v4 = self.query(host, wire::TYPE_A);
            let v6 = self.query(host, wire::TYPE_AAAA);
            match (v4, v6) {
                (Err(e), Err(_)) => return Err(e),
                (v4, v6) => {
                    for r in v4.into_iter().chain(v6).flatten() {
                        match r {
                            Rdata::A(ip) => found.push(ip.into()),
                            Rdata::Aaaa(ip) => found.push(ip.into()),
                            Rdata::Srv(_) => {}
                        }
                    }
                }
            }
        }
        found.sort_by_key(|ip| ip.is_ipv6());
        if found.is_empty() {
            return Err(self.error(host, ErrorKind::NotFound));
        }
        Ok(found)
    }

    /// The address a TCP dial of `host:port` would use, as Go's `net.ResolveTCPAddr`: the
    /// first IPv4 address of the host, or its first address if it has no IPv4 one.
    pub fn resolve_tcp(&self, host: &str, port: u16) -> Result<SocketAddr, LookupError> {
        let ips = self.lookup_ip(host)?;
        Ok(SocketAddr::new(ips[0], port))
    }

    fn error(&self, name: &str, kind: ErrorKind) -> LookupError {
        LookupError {
            name: name.to_string(),
            server: self
                .servers
                .first()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            kind,
        }
    }

    /// Answers of type `qtype` for `name` from the first server that answers: NXDOMAIN or
    /// an empty answer is final, timeouts and server failures move on to the next server.
    fn query(&self, name: &str, qtype: u16) -> Result<Vec<Rdata>, LookupError> {
        let mut last = self.error(name, ErrorKind::Timeout);
        for _ in 0..ATTEMPTS {
            for server in &self.servers {
                let fail = |kind| LookupError {
                    name: name.to_string(),
                    server: server.to_string(),
                    kind,
                };
                match exchange(*server, name, qtype, self.timeout) {
                    Ok(r) if r.rcode == wire::RCODE_OK => {
                        let answers: Vec<Rdata> = r
                            .answers
                            .into_iter()
                            .filter(|a| rdata_type(a) == qtype)
                            .collect();
                        if answers.is_empty() {
                            return Err(fail(ErrorKind::NotFound));
                        }
                        return Ok(answers);
                    }
                    Ok(r) if r.rcode == wire::RCODE_NXDOMAIN => {
                        return Err(fail(ErrorKind::NotFound))
                    }
                    Ok(_) => last = fail(ErrorKind::ServerMisbehaving),
                    Err(kind @ ErrorKind::Other(_)) => return Err(fail(kind)),
                    Err(kind) => last = fail(kind),
                }
            }
        }
        Err(last)
    }
}

fn rdata_type(r: &Rdata) -> u16 {
    match r {
        Rdata::A(_) => wire::TYPE_A,
        Rdata::Aaaa(_) => wire::TYPE_AAAA,
        Rdata::Srv(_) => wire::TYPE_SRV,
    }
}

/// `host:port` of a DNS server; a host name is resolved by the system.
fn parse_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("expected host:port ({e})"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

fn read_small(path: &str) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(CONF_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Whether `name` (with or without its trailing dot) is a usable host name: letters,
/// digits, `-` and `_` in non-empty labels, or the root `.` (RFC 2782's "no service
/// here", which Go passes on too and which then does not resolve).
fn is_host_name(name: &str) -> bool {
    if name == "." {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// One query to one server: UDP, then TCP if the answer came back truncated.
fn exchange(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> Result<Response, ErrorKind> {
    let id = query_id();
    let query = wire::encode_query(id, name, qtype).map_err(|e| ErrorKind::Other(e.0))?;
    let response = udp_exchange(server, &query, (id, name, qtype), timeout)?;
    if !response.truncated {
        return Ok(response);
    }
    tcp_exchange(server, &query, (id, name, qtype), timeout)
}

fn io_kind(e: std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Other(e.to_string()),
    }
}

/// Whether `r` answers our query (id and question), so stray or spoofed datagrams are
/// skipped rather than believed.
fn answers_query(r: &Response, id: u16, name: &str, qtype: u16) -> bool {
    let asked = name.trim_end_matches('.');
    r.id == id
        && match &r.question {
            Some((q, t)) => *t == qtype && q.trim_end_matches('.').eq_ignore_ascii_case(asked),
            // A truncated answer is not parsed past its header.
            None => r.truncated,
        }
}

/// What a query asked: `(id, name, type)`.
type Asked<'a> = (u16, &'a str, u16);

fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    (id, name, qtype): Asked<'_>,
    timeout: Duration,
) -> Result<Response, ErrorKind> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(io_kind)?;
    socket.connect(server).map_err(io_kind)?;
    socket.send(query).map_err(io_kind)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; UDP_MESSAGE_MAX];
    for _ in 0..STRAY_DATAGRAMS_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left)).map_err(io_kind)?;
        let n = socket.recv(&mut buf).map_err(io_kind)?;
        match wire::decode_response(&buf[..n]) {
            Ok(r) if answers_query(&r, id, name, qtype) => return Ok(r),
            // Ours but unreadable: no point waiting for another copy.
            Err(e) if n >= 2 && buf[..2] == id.to_be_bytes() => {
                return Err(ErrorKind::Malformed(format!(
                    "cannot unmarshal DNS message: {}",
                    e.0
                )))
            }
            _ => continue,
        }
    }
    Err(ErrorKind::Timeout)
}

fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    (id, name, qtype): Asked<'_>,
    timeout: Duration,
) -> Result<Response, ErrorKind> {
    let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(io_kind)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_kind)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_kind)?;
    // RFC 1035 4.2.2: over TCP each message is preceded by its 16-bit length.
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).map_err(io_kind)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(io_kind)?;
    // At most 65535 bytes: the length prefix bounds the read.
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg).map_err(io_kind)?;
    let r = wire::decode_response(&msg)
        .map_err(|e| ErrorKind::Malformed(format!("cannot unmarshal DNS message: {}", e.0)))?;
    if r.truncated || !answers_query(&r, id, name, qtype) {
        return Err(ErrorKind::Malformed(
            "TCP answer does not answer the query".into(),
        ));
    }
    Ok(r)
}

/// A query id that is hard to guess: the standard library's randomly keyed hasher over
/// the time and a counter (no random-number dependency for one id per query).
fn query_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish() as u16
}

#[cfg(test)]
mod tests;
