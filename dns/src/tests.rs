//! The resolver against a scripted server on loopback (UDP and TCP on one port).

use super::*;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the scripted server does with a query: `(reply bytes, send over UDP?)` or nothing.
type Script = dyn Fn(&[u8], bool) -> Option<Vec<u8>> + Send + Sync;

/// A server answering with `script` until dropped; every loop is bounded by short socket
/// timeouts and the stop flag.
struct Scripted {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Scripted {
    fn start(script: Arc<Script>) -> Scripted {
        // The UDP port picked by the OS may be taken for TCP: try a bounded number of ports.
        let (udp, addr, tcp) = (0..64)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let addr = udp.local_addr().ok()?;
                let tcp = TcpListener::bind(addr).ok()?;
                Some((udp, addr, tcp))
            })
            .expect("a loopback port free for both UDP and TCP");
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s1, s2, script2) = (stop.clone(), stop.clone(), script.clone());
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s1.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    if let Some(reply) = script(&buf[..n], true) {
                        let _ = udp.send_to(&reply, from);
                    }
                }
            }
        });
        let tcp_thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut len = [0u8; 2];
                if conn.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if conn.read_exact(&mut q).is_err() {
                    continue;
                }
                if let Some(reply) = script2(&q, false) {
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    let _ = conn.write_all(&framed);
                }
            }
        });
        Scripted {
            addr,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    fn resolver(&self) -> Resolver {
        let mut r = Resolver::with_server(self.addr);
        // Long enough that a loaded test machine cannot turn a scripted answer into a
        // timeout; the two tests that expect silence wait 2 x this.
        r.timeout = Duration::from_millis(1000);
        r
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The question section of a query (header excluded) and its type.
fn question(query: &[u8]) -> (&[u8], u16) {
    let mut end = 12;
    while query[end] != 0 {
        end += 1 + usize::from(query[end]);
    }
    let qtype = u16::from_be_bytes([query[end + 1], query[end + 2]]);
    (&query[12..end + 5], qtype)
}

/// A reply to `query` with `rcode`, the TC bit if `tc`, and `records` (type, rdata), each
/// owned by the question's name through a compression pointer.
fn reply(query: &[u8], rcode: u16, tc: bool, records: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let (q, _) = question(query);
    let mut m = query[..2].to_vec();
    let flags = 0x8180 | rcode | if tc { 0x0200 } else { 0 };
    for v in [flags, 1, records.len() as u16, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(q);
    for (rtype, rdata) in records {
        m.extend_from_slice(&[0xc0, 12]);
        for v in [*rtype, 1, 0, 60, rdata.len() as u16] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m.extend_from_slice(rdata);
    }
    m
}

fn srv(port: u16, target: &str) -> (u16, Vec<u8>) {
    let mut d = [0u16, 10, port]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<u8>>();
    for label in target.split('.').filter(|l| !l.is_empty()) {
        d.push(label.len() as u8);
        d.extend_from_slice(label.as_bytes());
    }
    d.push(0);
    (wire::TYPE_SRV, d)
}

#[test]
fn srv_lookup_over_udp() {
    let server = Scripted::start(Arc::new(|q, _| {
        assert!(question(q)
            .0
            .starts_with(b"\x0c_etcd-server\x04_tcp\x06corekv\x04test\x00"));
        Some(reply(
            q,
            0,
            false,
            &[srv(2380, "b.corekv.test."), srv(2381, "a.corekv.test.")],
        ))
    }));
    let records = server
        .resolver()
        .lookup_srv("etcd-server", "tcp", "corekv.test")
        .unwrap();
    let got: Vec<(String, u16)> = records.iter().map(|s| (s.target.clone(), s.port)).collect();
    assert_eq!(
        got,
        [
            ("a.corekv.test.".into(), 2381),
            ("b.corekv.test.".into(), 2380)
        ]
    );
}

#[test]
fn nxdomain_and_empty_answers_are_not_found() {
    let server = Scripted::start(Arc::new(|q, _| {
        let rcode = if question(q).0.starts_with(b"\x07missing") {
            3
        } else {
            0
        };
        Some(reply(q, rcode, false, &[]))
    }));
    let r = server.resolver();
    let e = r
        .lookup_srv("etcd-server", "tcp", "missing.test")
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        format!(
            "lookup _etcd-server._tcp.missing.test on {}: no such host",
            server.addr
        )
    );
    assert_eq!(
        r.lookup_ip("empty.test").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn truncated_answers_are_asked_again_over_tcp() {
    let server = Scripted::start(Arc::new(|q, udp| {
        if udp {
            Some(reply(q, 0, true, &[]))
        } else {
            Some(reply(q, 0, false, &[(wire::TYPE_A, vec![192, 0, 2, 7])]))
        }
    }));
    let ips = server.resolver().lookup_ip("big.test").unwrap();
    assert_eq!(ips, [IpAddr::from([192, 0, 2, 7])]);
}

#[test]
fn stray_and_malformed_datagrams() {
    // A reply with the wrong id first, then the right one: the stray one is skipped.
    let server = Scripted::start(Arc::new(|q, _| {
        let mut wrong = reply(q, 0, false, &[(wire::TYPE_A, vec![6, 6, 6, 6])]);
        wrong[0] ^= 0xff;
        let right = reply(q, 0, false, &[(wire::TYPE_A, vec![192, 0, 2, 8])]);
        Some([wrong, right].concat())
    }));
    // Both replies arrive in one datagram here, so the first decodes with a wrong id and
    // is skipped; nothing else comes, so the lookup times out rather than believe it.
    assert_eq!(
        server.resolver().lookup_ip("x.test").unwrap_err().kind,
        ErrorKind::Timeout
    );
    // Our id, garbage after it: a parse error, reported as such.
    let server = Scripted::start(Arc::new(|q, _| {
        Some([&q[..2], &[0x81, 0x80, 0, 1]].concat())
    }));
    let e = server.resolver().lookup_ip("x.test").unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Malformed(_)), "{e:?}");
}

#[test]
fn silence_times_out_and_server_failures_are_reported() {
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let quiet = Scripted::start(Arc::new(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        None
    }));
    let e = quiet
        .resolver()
        .lookup_srv("etcd-server", "tcp", "x.test")
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.to_string().ends_with(": i/o timeout"), "{e}");
    // Two attempts at the one server, not more.
    drop(quiet);
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    let failing = Scripted::start(Arc::new(|q, _| Some(reply(q, 2, false, &[]))));
    let e = failing.resolver().lookup_ip("x.test").unwrap_err();
    assert_eq!(e.kind, ErrorKind::ServerMisbehaving);
}

#[test]
fn srv_targets_must_be_host_names() {
    let server = Scripted::start(Arc::new(|q, _| {
        let (rtype, mut rdata) = srv(1, "ok.test.");
        rdata[7] = b'/'; // "o/.test."
        Some(reply(q, 0, false, &[(rtype, rdata)]))
    }));
    let e = server
        .resolver()
        .lookup_srv("etcd-client", "tcp", "x.test")
        .unwrap_err();
    assert!(e.to_string().contains("is not a host name"), "{e}");
}

#[test]
fn hosts_and_ip_literals_need_no_server() {
    let mut r = Resolver::with_server("127.0.0.1:9".parse().unwrap());
    r.hosts = conf::parse_hosts("::1 localhost\n127.0.0.1 localhost\n");
    // IPv4 first, as Go's ResolveTCPAddr picks.
    assert_eq!(
        r.resolve_tcp("localhost.", 2380).unwrap(),
        "127.0.0.1:2380".parse().unwrap()
    );
    assert_eq!(
        r.lookup_ip("[::1]").unwrap(),
        [IpAddr::from(Ipv6Addr::LOCALHOST)]
    );
    assert_eq!(
        r.resolve_tcp("10.1.2.3", 1).unwrap(),
        "10.1.2.3:1".parse().unwrap()
    );
}

#[test]
fn server_override_parses_host_and_port() {
    assert_eq!(
        parse_server("127.0.0.1:5353").unwrap(),
        "127.0.0.1:5353".parse().unwrap()
    );
    assert!(parse_server("127.0.0.1").is_err());
}
