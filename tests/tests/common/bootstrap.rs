//! Members started with a bootstrap of their own (discovery flags instead of the
//! harness's `--initial-cluster`): free loopback ports, output to a log file, SIGKILL by
//! PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::cluster::eventually;
use super::*;

/// One member process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub log: PathBuf,
    pub child: Child,
}

impl Member {
    /// Starts `name` in `dir` listening on 127.0.0.1 (peer port `peer.1`, or a free one if
    /// 0) and advertising `http://<peer.0>:<peer port>`; `flags` and `env` are the
    /// bootstrap's.
    pub fn start(
        dir: &Path,
        name: &str,
        peer: (&str, u16),
        flags: &[String],
        env: &[(String, String)],
    ) -> Member {
        let mut ports = free_ports(2);
        let (peer_host, peer_port) = peer;
        if peer_port != 0 {
            ports[1] = peer_port;
        }
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log");
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let mut cmd = Command::new(corekv_bin());
        for (k, _) in std::env::vars_os() {
            let k2 = k.to_string_lossy();
            if k2.starts_with("ETCD_") || k2.starts_with("COREKV_") {
                cmd.env_remove(&k);
            }
        }
        let child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args([
                format!("--name={name}"),
                format!("--data-dir={}", dir.join(name).display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{}", ports[1]),
                format!(
                    "--initial-advertise-peer-urls=http://{peer_host}:{}",
                    ports[1]
                ),
                "--cores=1".into(),
            ])
            .args(flags)
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

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the process ends within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        eventually(timeout, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // SAFETY: the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Waits until `endpoint`'s member list shows `count` started (named) members; the list
/// as JSON, or `None` after `timeout`.
pub fn started_members(endpoint: &str, count: usize, timeout: Duration) -> Option<Value> {
    eventually(timeout, || {
        let out = etcdctl_at(endpoint, &["member", "list", "-w", "json"], None);
        if !out.ok() {
            return None;
        }
        let v = out.json();
        let started = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["name"].as_str().is_some_and(|n| !n.is_empty()))
            .count();
        (started == count).then_some(v)
    })
}

/// Every member's log, for a failure message.
pub fn logs(members: &[Member]) -> String {
    let texts: Vec<String> = members
        .iter()
        .map(|m| format!("--- {} ---\n{}", m.name, m.log_text()))
        .collect();
    texts.join("\n")
}
