//! Discovery bootstrap: corekv members started with only --discovery (a real etcd 3.4
//! serving the v2 keys API, as etcd's public discovery service does) form one cluster;
//! a member beyond the size stops (--discovery-fallback=exit) or becomes a proxy that
//! forwards client connections to the cluster (proxy, etcd's default); a token without a
//! size is refused.

mod common;

use std::time::Duration;

use common::bootstrap::{logs, started_members, Member};
use common::cluster::eventually;
use common::*;

fn start_member(dir: &std::path::Path, name: &str, discovery: &str) -> Member {
    start_member_with(dir, name, discovery, &[])
}

fn start_member_with(dir: &std::path::Path, name: &str, discovery: &str, extra: &[&str]) -> Member {
    let mut flags = vec![format!("--discovery={discovery}")];
    flags.extend(extra.iter().map(|f| f.to_string()));
    Member::start(dir, name, ("127.0.0.1", 0), &flags, &[])
}

/// A discovery service: etcd 3.4 with the v2 API, and a token of `size` (or none).
fn discovery_service(token: &str, size: Option<u32>) -> (Server, String) {
    let etcd = Server::start_with(
        Kind::Etcd,
        ServerOpts {
            extra_args: vec!["--enable-v2".into()],
            ..Default::default()
        },
    );
    if let Some(size) = size {
        let path = format!("/v2/keys/discovery/{token}/_config/size?value={size}");
        let r = http_request(&etcd.addr(), "PUT", &path).expect("put size");
        assert!(r.status == 201 || r.status == 200, "size: {}", r.text());
    }
    let url = format!("{}/v2/keys/discovery/{token}", etcd.endpoint());
    (etcd, url)
}

#[test]
fn three_members_bootstrap_through_an_etcd_discovery_service() {
    let (_etcd, url) = discovery_service("tok3", Some(3));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members: Vec<Member> = ["d0", "d1", "d2"]
        .iter()
        .map(|n| start_member(dir.path(), n, &url))
        .collect();
    let listed = started_members(&members[0].endpoint(), 3, Duration::from_secs(30));
    assert!(
        listed.is_some(),
        "no 3 started members:\n{}",
        logs(&members)
    );
    let table = etcdctl_at(&members[2].endpoint(), &["member", "list"], None);
    assert_eq!(table.stdout.matches(", started, ").count(), 3, "{table}");
    for m in &members {
        assert!(table.stdout.contains(&m.name), "{table}");
        assert!(table.stdout.contains(&format!("127.0.0.1:{}", m.peer_port)));
    }
    let put = etcdctl_at(&members[0].endpoint(), &["put", "disc", "overed"], None);
    assert!(put.ok(), "{put}");
    for m in &members {
        let got = etcdctl_at(&m.endpoint(), &["get", "disc", "--print-value-only"], None);
        assert_eq!(got.stdout.trim(), "overed", "{}: {got}", m.name);
    }
    // A fourth member finds the cluster full and, told to exit, stops with etcd's reason.
    let mut extra = start_member_with(dir.path(), "d3", &url, &["--discovery-fallback=exit"]);
    let exited = extra.wait_exit(Duration::from_secs(20));
    assert!(
        exited.is_some_and(|s| !s.success()),
        "the extra member kept running"
    );
    assert!(
        extra.log_text().contains("discovery: cluster is full"),
        "{}",
        extra.log_text()
    );
    // A fifth, with etcd's default fallback, becomes a proxy: clients of its client URL
    // reach the cluster (gRPC and the JSON gateway), and it is no member.
    let proxy = start_member(dir.path(), "d4", &url);
    let through = eventually(Duration::from_secs(20), || {
        let put = etcdctl_at(&proxy.endpoint(), &["put", "via", "proxy"], None);
        put.ok().then_some(put)
    });
    assert!(
        through.is_some(),
        "no put through the proxy:\n{}",
        proxy.log_text()
    );
    let got = etcdctl_at(
        &members[1].endpoint(),
        &["get", "via", "--print-value-only"],
        None,
    );
    assert_eq!(got.stdout.trim(), "proxy", "{got}");
    let back = etcdctl_at(
        &proxy.endpoint(),
        &["get", "disc", "--print-value-only"],
        None,
    );
    assert_eq!(back.stdout.trim(), "overed", "{back}");
    let table = etcdctl_at(&proxy.endpoint(), &["member", "list"], None);
    assert_eq!(table.stdout.matches(", started, ").count(), 3, "{table}");
    assert!(!table.stdout.contains(", d4, "), "{table}");
    let health = http_request(
        &format!("127.0.0.1:{}", proxy.client_port),
        "GET",
        "/health",
    )
    .expect("health through the proxy");
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(
        proxy.log_text().contains("falling back to proxy"),
        "{}",
        proxy.log_text()
    );
    // It stops on SIGTERM as a member does.
    let mut proxy = proxy;
    // SAFETY: the PID of a child we spawned and have not reaped.
    unsafe { libc::kill(proxy.child.id() as libc::pid_t, libc::SIGTERM) };
    let stopped = proxy.wait_exit(Duration::from_secs(10));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "the proxy ignored SIGTERM"
    );
    members.clear();
}

#[test]
fn a_token_without_a_size_is_refused() {
    let (_etcd, url) = discovery_service("nosize", None);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = start_member(dir.path(), "lonely", &url);
    let exited = m.wait_exit(Duration::from_secs(20));
    assert!(exited.is_some_and(|s| !s.success()), "it kept running");
    assert!(
        m.log_text().contains("discovery: size key not found"),
        "{}",
        m.log_text()
    );
}
