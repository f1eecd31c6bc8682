//! Discovery bootstrap: corekv members started with only --discovery (a real etcd 3.4
//! serving the v2 keys API, as etcd's public discovery service does) form one cluster;
//! a member beyond the size is refused; a token without a size is refused.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::eventually;
use common::*;

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    log: std::path::PathBuf,
    child: Child,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // SAFETY: the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn start_member(dir: &std::path::Path, name: &str, discovery: &str) -> Member {
    let ports = free_ports(2);
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log");
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let child = Command::new(corekv_bin())
        .args([
            &format!("--name={name}"),
            &format!("--data-dir={}", dir.join(name).display()),
            &format!("--listen-client-urls={client}"),
            &format!("--advertise-client-urls={client}"),
            &format!("--listen-peer-urls={peer}"),
            &format!("--initial-advertise-peer-urls={peer}"),
            &format!("--discovery={discovery}"),
            "--cores=1",
        ])
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("spawn corekv");
    Member {
        name: name.to_string(),
        client_port: ports[0],
        peer_port: ports[1],
        log,
        child,
    }
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
    let listed = eventually(Duration::from_secs(30), || {
        let out = etcdctl_at(
            &members[0].endpoint(),
            &["member", "list", "-w", "json"],
            None,
        );
        if !out.ok() {
            return None;
        }
        let v = out.json();
        let started = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["name"].as_str().is_some_and(|n| !n.is_empty()))
            .count();
        (started == 3).then_some(v)
    });
    assert!(
        listed.is_some(),
        "no 3 started members:\n{}",
        members
            .iter()
            .map(|m| m.log_text())
            .collect::<Vec<_>>()
            .join("\n")
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
    // A fourth member finds the cluster full and stops with etcd's reason.
    let mut extra = start_member(dir.path(), "d3", &url);
    let exited = eventually(Duration::from_secs(20), || {
        extra.child.try_wait().ok().flatten()
    });
    assert!(
        exited.is_some_and(|s| !s.success()),
        "the extra member kept running"
    );
    assert!(
        extra.log_text().contains("discovery: cluster is full"),
        "{}",
        extra.log_text()
    );
    members.clear();
}

#[test]
fn a_token_without_a_size_is_refused() {
    let (_etcd, url) = discovery_service("nosize", None);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = start_member(dir.path(), "lonely", &url);
    let exited = eventually(Duration::from_secs(20), || {
        m.child.try_wait().ok().flatten()
    });
    assert!(exited.is_some_and(|s| !s.success()), "it kept running");
    assert!(
        m.log_text().contains("discovery: size key not found"),
        "{}",
        m.log_text()
    );
}
