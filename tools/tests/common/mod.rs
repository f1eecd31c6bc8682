//! Shared helpers for corekvutl's tests: running the tool with a time bound, starting a
//! corekv server on loopback, building WALs with the engine API.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corekv_engine::pb::PbPutRequest;
use corekv_engine::request::{Command as Req, InternalRequest};
use corekv_engine::wal::{RecordKind, Wal, WalOptions};
use corekv_raft::{codec, ConfState, Entry, HardState};
use prost::Message;

pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a process printed and how it ended.
#[derive(Debug)]
pub struct Out {
    /// Exit code; -1 when killed (timeout).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code:\n{self}");
        // Progress lines are for terminals only; the tests' pipes must see none.
        assert!(
            !self.stderr.contains('\r') && !self.stderr.contains('\x1b'),
            "progress drawn on a pipe:\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }

    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}\n{self}"))
            })
            .collect()
    }
}

/// Runs `cmd` to completion, killing it (by PID, via `Child::kill`) after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Out {
    cmd.stdin(Stdio::null());
    run_keep_stdin(cmd, timeout)
}

fn run_keep_stdin(mut cmd: Command, timeout: Duration) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// [`run`] with `input` written to the command's stdin (then closed).
pub fn run_with_stdin(mut cmd: Command, input: &[u8], timeout: Duration) -> Out {
    // From a file, so that no writer thread is needed however much the command reads.
    let tmp = tempfile::NamedTempFile::new().expect("stdin file");
    std::fs::write(tmp.path(), input).expect("write stdin file");
    cmd.stdin(Stdio::from(
        std::fs::File::open(tmp.path()).expect("open stdin file"),
    ));
    run_keep_stdin(cmd, timeout)
}

/// Runs corekvutl with `args`.
pub fn tool(args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corekvutl"));
    cmd.args(args);
    run(cmd, TOOL_TIMEOUT)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tools has a parent")
        .to_path_buf()
}

pub fn corekv_bin() -> PathBuf {
    let p = std::env::var_os("COREKV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("debug").join("corekv"));
    assert!(
        p.is_file(),
        "corekv binary not found at {}: run `cargo build --bin corekv` first (or set COREKV_BIN)",
        p.display()
    );
    p
}

pub use corekv_tests::free_ports;

/// `ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:<port> --command-timeout=5s`, with no other
/// `ETCDCTL_*` variable inherited (`ETCDCTL_BIN` names another etcdctl).
pub fn etcdctl_cmd(port: u16) -> Command {
    let bin = std::env::var_os("ETCDCTL_BIN").unwrap_or_else(|| "etcdctl".into());
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{port}"))
        .arg("--command-timeout=5s");
    cmd
}

/// A corekv server on loopback, stopped (SIGKILL to its PID) when dropped.
pub struct Server {
    child: Option<Child>,
    pub client_port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts corekv with etcd's flags on free loopback ports and waits (bounded) until it
    /// answers etcdctl.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_as(data_dir, "n1", None)
    }

    /// [`Server::start`] as member `name`, with peer URL `http://127.0.0.1:<peer_port>` when
    /// given (a data dir restored for that URL); the client port is always a free one.
    pub fn start_as(data_dir: &Path, name: &str, peer_port: Option<u16>) -> Server {
        let bin = corekv_bin();
        let mut last = String::new();
        for _attempt in 0..3 {
            let ports = free_ports(2);
            let peer_port = peer_port.unwrap_or(ports[1]);
            let (client, peer) = (
                format!("http://127.0.0.1:{}", ports[0]),
                format!("http://127.0.0.1:{peer_port}"),
            );
            let log = data_dir.with_extension("log");
            let log_file = std::fs::File::create(&log).expect("server log");
            let mut cmd = Command::new(&bin);
            for (k, _) in std::env::vars_os() {
                let k2 = k.to_string_lossy();
                if k2.starts_with("ETCD_") || k2.starts_with("COREKV_") {
                    cmd.env_remove(&k);
                }
            }
            cmd.args(["--name", name, "--data-dir"])
                .arg(data_dir)
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .arg("--initial-cluster")
                .arg(format!("{name}={peer}"))
                .stdin(Stdio::null())
                .stdout(Stdio::from(log_file.try_clone().unwrap()))
                .stderr(Stdio::from(log_file));
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
            let mut s = Server {
                child: Some(child),
                client_port: ports[0],
                data_dir: data_dir.to_path_buf(),
                log,
            };
            match s.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return s,
                Err(e) => {
                    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                    s.kill();
                    if log.contains("in use") {
                        last = e;
                        continue; // port clash: try other ports
                    }
                    panic!("corekv did not become ready: {e}\n--- log ---\n{log}");
                }
            }
        }
        panic!("corekv could not start after 3 attempts: {last}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("server exited during start-up with {st}"));
            }
            let out = self.etcdctl(&["get", "probe"]);
            if out.code == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {timeout:?}: {out}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:P args`.
    pub fn etcdctl(&self, args: &[&str]) -> Out {
        let mut cmd = etcdctl_cmd(self.client_port);
        cmd.args(args);
        run(cmd, Duration::from_secs(20))
    }

    #[track_caller]
    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl(&["put", key, value]);
        assert!(
            out.code == 0 && out.stdout.contains("OK"),
            "etcdctl put {key}:\n{out}"
        );
    }

    /// Stops the server with SIGKILL to its PID (as a crash would) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// WALs built with the engine API, laid out as the server does (<data-dir>/member/wal).

pub const MEMBER_ID: u64 = 0x8e9e05c52164694d;

/// The metadata record as `src/recovery.rs` encodes it.
pub fn identity(member_id: u64, cluster_id: u64, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&member_id.to_le_bytes());
    out.extend_from_slice(&cluster_id.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

/// A WAL writer for tests.
pub struct TestWal {
    pub wal: Wal,
    pub dir: PathBuf,
}

impl TestWal {
    pub fn create(data_dir: &Path, segment_size_bytes: u64) -> TestWal {
        let dir = wal_dir(data_dir);
        let opts = WalOptions {
            segment_size_bytes,
            ..WalOptions::default()
        };
        let wal = Wal::create(&dir, &identity(MEMBER_ID, 0xc1, "n1"), opts).expect("create WAL");
        TestWal { wal, dir }
    }

    pub fn conf_state(&mut self) {
        let cs = ConfState {
            voters: vec![MEMBER_ID],
            ..Default::default()
        };
        self.wal
            .append(&[(RecordKind::ConfState, &codec::encode_conf_state(&cs))])
            .unwrap();
    }

    pub fn hard_state(&mut self, term: u64, commit: u64) {
        let hs = HardState {
            term,
            vote: MEMBER_ID,
            commit,
        };
        self.wal
            .append(&[(RecordKind::HardState, &codec::encode_hard_state(&hs))])
            .unwrap();
    }

    /// Appends an entry with raw `data`.
    pub fn entry_data(&mut self, index: u64, term: u64, data: Vec<u8>) {
        let e = Entry {
            index,
            term,
            data,
            ..Default::default()
        };
        let mut buf = Vec::new();
        codec::encode_entry(&e, &mut buf);
        self.wal.append(&[(RecordKind::Entry, &buf)]).unwrap();
    }

    /// Appends an entry carrying `put key value`.
    pub fn put(&mut self, index: u64, term: u64, key: &[u8], value: &[u8]) {
        let req = InternalRequest::new(
            index,
            Req::Put(PbPutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            }),
        );
        self.entry_data(index, term, req.encode_to_vec());
    }

    pub fn raw(&mut self, kind: RecordKind, payload: &[u8]) {
        self.wal.append(&[(kind, payload)]).unwrap();
    }
}

/// Segment files of a WAL directory, ascending.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// Offsets of the record frames in a segment (the metadata record first), found by
/// following the length fields up to the end marker.
pub fn frame_offsets(segment: &Path) -> Vec<u64> {
    let data = std::fs::read(segment).unwrap();
    let mut out = Vec::new();
    let mut off = 24usize;
    while off + 9 <= data.len() && data[off..off + 9].iter().any(|&b| b != 0) {
        out.push(off as u64);
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        off += 9 + len;
    }
    out
}

/// Flips the bits of one byte of a file.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, offset).unwrap();
}

/// Every file under `dir` with its bytes (to check that nothing was modified).
pub fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}
