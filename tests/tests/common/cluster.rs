//! Multi-member clusters of real processes on loopback (corekv or etcd, same flags).
//!
//! Every member gets its own free client and peer ports and data dir; members are stopped
//! with SIGKILL by PID (and all of them when the cluster is dropped).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// One member process.
pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// `http` or `https` (peer TLS).
    pub peer_scheme: &'static str,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// `--initial-cluster` and `--initial-cluster-state` it was first started with.
    initial_cluster: String,
    state: &'static str,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Node {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.peer_port)
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    self.child = None;
                    false
                }
            },
        }
    }
    pub fn log_tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A cluster of `kind` members.
pub struct Cluster {
    pub kind: Kind,
    _dir: tempfile::TempDir,
    root: PathBuf,
    pub nodes: Vec<Node>,
    token: String,
}

/// How long members may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Cluster {
    /// Starts `n` members of a new cluster with `extra` flags each.
    pub fn start(kind: Kind, n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with_scheme(kind, n, extra, "http")
    }

    /// Starts `n` members whose peer URLs use `peer_scheme` (`https`: peer TLS, with the
    /// `--peer-*` TLS flags in `extra`).
    pub fn start_with_scheme(
        kind: Kind,
        n: usize,
        extra: &[&str],
        peer_scheme: &'static str,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(&format!("corekv-cluster-{}-", kind.name()))
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let ports = free_ports(2 * n);
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let initial: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}={peer_scheme}://127.0.0.1:{}", ports[2 * i + 1]))
            .collect();
        let initial = initial.join(",");
        let mut cluster = Cluster {
            kind,
            _dir: dir,
            root: root.clone(),
            nodes: Vec::new(),
            token: "corekv-test-cluster".into(),
        };
        for (i, name) in names.into_iter().enumerate() {
            cluster.nodes.push(Node {
                data_dir: root.join(&name),
                log: root.join(format!("{name}.log")),
                name,
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                peer_scheme,
                initial_cluster: initial.clone(),
                state: "new",
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
            });
        }
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_port(i);
        }
        cluster.wait_leader(START_TIMEOUT);
        cluster
    }

    fn args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let mut a = vec![
            format!("--name={}", n.name),
            format!("--data-dir={}", n.data_dir.display()),
            format!("--listen-client-urls={}", n.endpoint()),
            format!("--advertise-client-urls={}", n.endpoint()),
            format!("--listen-peer-urls={}", n.peer_url()),
            format!("--initial-advertise-peer-urls={}", n.peer_url()),
            format!("--initial-cluster={}", n.initial_cluster),
            format!("--initial-cluster-state={}", n.state),
            format!("--initial-cluster-token={}", self.token),
        ];
        if self.kind == Kind::Corekv {
            a.push("--cores=1".into());
        }
        a.extend(n.extra.iter().cloned());
        a
    }

    fn spawn(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "member {i} already running");
        let args = self.args(i);
        let n = &mut self.nodes[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("open log");
        let mut log2 = log.try_clone().expect("clone log");
        let _ = writeln!(log2, "===== [harness] start: {}", args.join(" "));
        let mut cmd = Command::new(server_bin(self.kind));
        for (k, _) in std::env::vars_os() {
            let k2 = k.to_string_lossy();
            if k2.starts_with("ETCD_") || k2.starts_with("COREKV_") {
                cmd.env_remove(&k);
            }
        }
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        n.child = Some(cmd.spawn().expect("spawn member"));
    }

    fn wait_port(&mut self, i: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            assert!(
                self.nodes[i].is_running(),
                "member {i} exited at start:\n{}",
                self.nodes[i].log_tail(30)
            );
            let addr = self.nodes[i].addr().parse().expect("addr");
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // A member that failed to bind exits at once; whoever answered then is
                // another process, so look again before trusting the port.
                std::thread::sleep(Duration::from_millis(20));
                assert!(
                    self.nodes[i].is_running(),
                    "member {i} exited at start (its port answered, so somebody else holds it):\n{}",
                    self.nodes[i].log_tail(30)
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {i} never listened:\n{}",
                self.nodes[i].log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `etcdctl` against member `i`.
    pub fn ctl(&self, i: usize, args: &[&str]) -> CmdOutput {
        etcdctl_at(&self.nodes[i].endpoint(), args, None)
    }

    /// The leader's raft id as member `i` sees it (None if it cannot say).
    pub fn leader_seen_by(&self, i: usize) -> Option<(u64, u64)> {
        let out = etcdctl_at(
            &self.nodes[i].endpoint(),
            &["endpoint", "status", "-w", "json", "--command-timeout=1s"],
            None,
        );
        if !out.ok() {
            return None;
        }
        let v = out.json();
        let status = &v[0]["Status"];
        let leader = status["leader"].as_u64()?;
        let me = status["header"]["member_id"].as_u64()?;
        (leader != 0).then_some((leader, me))
    }

    /// Index of the member that leads, once every running member agrees on one.
    pub fn wait_leader(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            let mut leader_index = None;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() {
                    continue;
                }
                match self.leader_seen_by(i) {
                    Some((leader, me)) => {
                        if leader == me {
                            leader_index = Some(i);
                        }
                        seen.push(Some(leader));
                    }
                    None => seen.push(None),
                }
            }
            let agreed = !seen.is_empty() && seen.iter().all(|s| s.is_some() && *s == seen[0]);
            if let (true, Some(i)) = (agreed, leader_index) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader after {timeout:?} (seen {seen:x?})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A running member that does not lead.
    pub fn follower(&mut self) -> usize {
        let leader = self.wait_leader(START_TIMEOUT);
        (0..self.nodes.len())
            .find(|i| *i != leader && self.nodes[*i].is_running())
            .expect("a running follower")
    }

    /// SIGKILL by PID and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            // SAFETY: plain syscall on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Freezes member `i` (SIGSTOP): to the others it is partitioned away; when it
    /// resumes it still believes what it believed, e.g. that it leads.
    pub fn pause(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            // SAFETY: plain syscall on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGSTOP) };
        }
    }

    /// Resumes a member frozen by [`Cluster::pause`].
    pub fn resume(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            // SAFETY: as in `pause`.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
        }
    }

    /// Starts member `i` again on its data dir.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_port(i);
    }

    /// `etcdctl member add` through the leader, then starts the new member with
    /// --initial-cluster-state=existing. Returns its index.
    pub fn add_member(&mut self, learner: bool) -> usize {
        let leader = self.wait_leader(START_TIMEOUT);
        let i = self.nodes.len();
        let ports = free_ports(2);
        let name = format!("m{i}");
        let scheme = self.nodes[0].peer_scheme;
        let peer = format!("{scheme}://127.0.0.1:{}", ports[1]);
        let mut args = vec!["member", "add", name.as_str(), "--peer-urls", peer.as_str()];
        if learner {
            args.push("--learner");
        }
        // etcd (and corekv) refuse membership changes until the leader has been connected
        // to every voter for 5 s ("unhealthy cluster"): retry through that window.
        let deadline = Instant::now() + Duration::from_secs(20);
        let out = loop {
            let out = self.ctl(leader, &args);
            if out.ok() || !out.stderr.contains("unhealthy cluster") || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        assert!(out.ok(), "member add failed: {out}");
        let initial = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
            .map(|l| l.trim_end_matches('"').to_string())
            .unwrap_or_else(|| panic!("member add printed no ETCD_INITIAL_CLUSTER: {out}"));
        let extra = self.nodes[0].extra.clone();
        self.nodes.push(Node {
            data_dir: self.root.join(&name),
            log: self.root.join(format!("{name}.log")),
            name,
            client_port: ports[0],
            peer_port: ports[1],
            peer_scheme: scheme,
            initial_cluster: initial,
            state: "existing",
            extra,
            child: None,
        });
        self.spawn(i);
        self.wait_port(i);
        i
    }

    /// Every member's log tail, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, n.log_tail(25)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.kill(i);
        }
    }
}

/// Retries `f` every 100 ms until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
