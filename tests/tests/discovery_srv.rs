//! DNS discovery bootstrap (--discovery-srv): corekv members that know only a domain
//! find each other through its SRV records, served by a tiny authoritative DNS server
//! on loopback that the members are pointed at with COREKV_DNS_SERVER.
//!
//! etcd itself cannot be pointed at a test DNS server (it uses the system's resolver),
//! so the error texts checked here were read from etcd 3.4's source and its output
//! against a domain without records.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::bootstrap::{logs, started_members, Member};
use common::cluster::eventually;
use common::*;

/// Authoritative answers for a test zone: SRV records by owner name, A records by name;
/// NXDOMAIN for anything else, NOERROR without answers for other types of known names.
#[derive(Default, Clone)]
struct Zone {
    srv: HashMap<String, Vec<(String, u16)>>,
    a: HashMap<String, [u8; 4]>,
}

impl Zone {
    fn srv(&mut self, owner: &str, targets: &[(&str, u16)]) {
        let records = targets.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        self.srv.insert(owner.to_string(), records);
    }
}

/// The DNS server: one UDP socket on a free loopback port, answered on a thread until the
/// server is dropped (the loop wakes every 50 ms to check).
struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    fn start(zone: Zone) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&zone, &buf[..n]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("COREKV_DNS_SERVER".into(), self.addr.to_string())]
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one query, or `None` for something that is not a one-question query.
fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut labels = Vec::new();
    let mut pos = 12;
    for _ in 0..128 {
        let len = usize::from(*query.get(pos)?);
        if len == 0 || len > 63 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(pos + 1..pos + 1 + len)?).to_lowercase());
        pos += 1 + len;
    }
    if *query.get(pos)? != 0 {
        return None;
    }
    let question = query.get(12..pos + 5)?;
    let qtype = u16::from_be_bytes([*query.get(pos + 1)?, *query.get(pos + 2)?]);
    let name = labels.join(".");
    let mut records: Vec<Vec<u8>> = Vec::new();
    let known = zone.srv.contains_key(&name) || zone.a.contains_key(&name);
    match qtype {
        33 => {
            for (target, port) in zone.srv.get(&name).into_iter().flatten() {
                let mut rdata = [0u16, 0, *port]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect::<Vec<u8>>();
                rdata.extend(wire_name(target));
                records.push(rdata);
            }
        }
        1 => records.extend(zone.a.get(&name).map(|ip| ip.to_vec())),
        _ => {}
    }
    let mut reply = query[..2].to_vec();
    // Response, authoritative, recursion desired copied; NXDOMAIN for unknown names.
    let rcode = if known { 0 } else { 3 };
    reply.extend_from_slice(&[0x84 | (query[2] & 0x01), rcode]);
    for count in [1, records.len() as u16, 0, 0] {
        reply.extend_from_slice(&count.to_be_bytes());
    }
    reply.extend_from_slice(question);
    for rdata in records {
        reply.extend(wire_name(&name));
        for field in [qtype, 1] {
            reply.extend_from_slice(&field.to_be_bytes());
        }
        reply.extend_from_slice(&30u32.to_be_bytes());
        reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        reply.extend(rdata);
    }
    Some(reply)
}

/// A name in wire form, uncompressed.
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// Flags of a member bootstrapped by DNS discovery of `domain`.
fn srv_flags(domain: &str, extra: &[&str]) -> Vec<String> {
    let mut flags = vec![
        format!("--discovery-srv={domain}"),
        "--initial-cluster-token=srv-test".to_string(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

/// A member advertising `http://<host>:<peer_port>` (a free port if 0), asking `dns`.
fn member_on(
    dir: &std::path::Path,
    name: &str,
    peer: (&str, u16),
    dns: &DnsServer,
    flags: Vec<String>,
) -> Member {
    Member::start(dir, name, peer, &flags, &dns.env())
}

#[test]
fn three_members_bootstrap_from_srv_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer_ports = free_ports(3);
    let mut zone = Zone::default();
    let targets: Vec<(&str, u16)> = peer_ports.iter().map(|p| ("localhost.", *p)).collect();
    zone.srv("_etcd-server._tcp.corekv.test", &targets);
    let dns = DnsServer::start(zone);
    let members: Vec<Member> = ["s0", "s1", "s2"]
        .iter()
        .zip(&peer_ports)
        .map(|(name, port)| {
            let flags = srv_flags("corekv.test", &[]);
            member_on(dir.path(), name, ("localhost", *port), &dns, flags)
        })
        .collect();
    // Members other than the local one start under temporary names ("0", "1"); each
    // publishes its real name once it runs. Every member is then listed under its name
    // with the SRV target's URL.
    let want: Vec<(String, String)> = ["s0", "s1", "s2"]
        .iter()
        .zip(&peer_ports)
        .map(|(n, p)| (n.to_string(), format!("http://localhost:{p}")))
        .collect();
    let listed = eventually(Duration::from_secs(30), || {
        let out = etcdctl_at(
            &members[0].endpoint(),
            &["member", "list", "-w", "json"],
            None,
        );
        let v = out.ok().then(|| out.json())?;
        let mut seen: Vec<(String, String)> = v["members"]
            .as_array()?
            .iter()
            .map(|m| {
                let field = |f: &serde_json::Value| f.as_str().unwrap_or("").to_string();
                (field(&m["name"]), field(&m["peerURLs"][0]))
            })
            .collect();
        seen.sort();
        (seen == want).then_some(v)
    });
    assert!(
        listed.is_some(),
        "members never listed as {want:?}:\n{}",
        logs(&members)
    );
    // All three agree on the IDs: they derived them from the same records.
    let ids = |m: &Member| {
        let v = etcdctl_at(&m.endpoint(), &["member", "list", "-w", "json"], None).json();
        let mut ids: Vec<u64> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["ID"].as_u64())
            .collect();
        ids.sort_unstable();
        (v["header"]["cluster_id"].as_u64(), ids)
    };
    assert_eq!(ids(&members[0]), ids(&members[2]));
    let put = etcdctl_at(&members[1].endpoint(), &["put", "srv", "found"], None);
    assert!(put.ok(), "{put}");
    for m in &members {
        let got = etcdctl_at(&m.endpoint(), &["get", "srv", "--print-value-only"], None);
        assert_eq!(got.stdout.trim(), "found", "{}: {got}", m.name);
    }
}

#[test]
fn discovery_srv_name_selects_the_suffixed_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_ports(1)[0];
    let mut zone = Zone::default();
    // The unsuffixed records name a cluster this member is not in; the "-dev" ones name
    // it alone, through a host name only the test server knows (resolved to 127.0.0.1).
    zone.srv("_etcd-server._tcp.corekv.test", &[("localhost.", 1)]);
    zone.srv(
        "_etcd-server-dev._tcp.corekv.test",
        &[("m0.corekv.test.", port)],
    );
    zone.a.insert("m0.corekv.test".into(), [127, 0, 0, 1]);
    let dns = DnsServer::start(zone);
    let flags = srv_flags("corekv.test", &["--discovery-srv-name=dev"]);
    let member = member_on(dir.path(), "solo", ("127.0.0.1", port), &dns, flags);
    let Some(listed) = started_members(&member.endpoint(), 1, Duration::from_secs(20)) else {
        panic!("the member did not start:\n{}", member.log_text());
    };
    let only = &listed["members"][0];
    assert_eq!(only["name"], "solo", "{listed}");
    assert_eq!(only["peerURLs"][0], format!("http://m0.corekv.test:{port}"));
}

#[test]
fn a_domain_without_records_stops_the_member_with_etcds_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = DnsServer::start(Zone::default());
    let mut member = member_on(
        dir.path(),
        "x",
        ("localhost", 0),
        &dns,
        srv_flags("empty.test", &[]),
    );
    let status = member.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "it kept running");
    let want = format!(
        "error setting up initial cluster: error querying DNS SRV records for _etcd-server-ssl \
         lookup _etcd-server-ssl._tcp.empty.test on {}: no such host; error querying DNS SRV \
         records for _etcd-server lookup _etcd-server._tcp.empty.test on {}: no such host",
        dns.addr, dns.addr
    );
    assert!(member.log_text().contains(&want), "{}", member.log_text());
}

#[test]
fn a_member_missing_from_the_records_stops_with_etcds_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let others = free_ports(2);
    let mut zone = Zone::default();
    zone.srv(
        "_etcd-server._tcp.corekv.test",
        &[("localhost.", others[0]), ("localhost.", others[1])],
    );
    let dns = DnsServer::start(zone);
    let flags = srv_flags("corekv.test", &[]);
    let mut member = member_on(dir.path(), "stranger", ("localhost", 0), &dns, flags);
    let status = member.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| !s.success()), "it kept running");
    assert!(
        member
            .log_text()
            .contains("cannot find local etcd member \"stranger\" in SRV records"),
        "{}",
        member.log_text()
    );
}
