//! Shared harness for corekv's cross-crate integration tests.
//!
//! etcd's observable behaviour is the spec: every test here runs against a
//! server process chosen at run time and most of them are also run (or
//! compared) against a real etcd 3.4 started side by side.
//!
//! * `COREKV_TEST_TARGET=etcd|corekv` selects the server under test
//!   (default `corekv`).
//! * `COREKV_BIN` overrides the corekv binary (default
//!   `<workspace>/target/debug/corekv`).
//! * `ETCD_BIN` / `ETCDCTL_BIN` override `/usr/bin/etcd` / `/usr/bin/etcdctl`.
//!
//! Servers listen on loopback only, on ports picked by binding port 0, with a
//! fresh temporary data directory. Their output goes to `server.log` in that
//! directory; its tail is printed when a test panics while the server is alive.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod bootstrap;
pub mod cluster;

/// How long a server may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for one etcdctl invocation.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Server kinds and binaries
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Etcd,
    Corekv,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Corekv => "corekv",
        }
    }

    /// Name of the environment variable that sets `--max-txn-ops` for this
    /// kind of server (etcd maps every flag to `ETCD_<FLAG>`).
    pub fn max_txn_ops_env(self) -> &'static str {
        match self {
            Kind::Etcd => "ETCD_MAX_TXN_OPS",
            Kind::Corekv => "COREKV_MAX_TXN_OPS",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The server under test, from `COREKV_TEST_TARGET` (default corekv).
pub fn target_kind() -> Kind {
    match std::env::var("COREKV_TEST_TARGET") {
        Err(_) => Kind::Corekv,
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "corekv" => Kind::Corekv,
            "etcd" => Kind::Etcd,
            other => panic!("COREKV_TEST_TARGET must be `etcd` or `corekv`, got `{other}`"),
        },
    }
}

/// The kinds a "prove it against etcd, then check the target" test runs on:
/// etcd first, then the target unless the target is etcd itself.
pub fn reference_then_target() -> Vec<Kind> {
    let t = target_kind();
    if t == Kind::Etcd {
        vec![Kind::Etcd]
    } else {
        vec![Kind::Etcd, t]
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

pub fn etcd_bin() -> PathBuf {
    let p = std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if !p.is_file() {
        panic!(
            "etcd binary not found at {} — these tests compare against a real etcd 3.4; \
             install it (Debian: apt-get install etcd-server etcd-client) or set ETCD_BIN",
            p.display()
        );
    }
    p
}

pub fn etcdctl_bin() -> PathBuf {
    let p = std::env::var_os("ETCDCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"));
    if !p.is_file() {
        panic!(
            "etcdctl not found at {} — install it (Debian: apt-get install etcd-client) \
             or set ETCDCTL_BIN",
            p.display()
        );
    }
    p
}

pub fn corekv_bin() -> PathBuf {
    let p = match std::env::var_os("COREKV_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target").join("debug").join("corekv"),
    };
    if !p.is_file() {
        panic!(
            "corekv binary not found at {} — run `cargo build --bin corekv` first \
             (or point COREKV_BIN at a build)",
            p.display()
        );
    }
    p
}

pub fn server_bin(kind: Kind) -> PathBuf {
    match kind {
        Kind::Etcd => etcd_bin(),
        Kind::Corekv => corekv_bin(),
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

pub use corekv_tests::free_ports;

// ---------------------------------------------------------------------------
// Running commands with a timeout
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code; -1 when killed by a signal or timed out.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl CmdOutput {
    pub fn ok(&self) -> bool {
        self.code == 0 && !self.timed_out
    }

    /// Panics with the full output unless the command exited 0.
    #[track_caller]
    pub fn expect_ok(&self, what: &str) -> &Self {
        if !self.ok() {
            panic!("{what} failed:\n{self}");
        }
        self
    }

    /// stdout parsed as JSON (panics with the output if it is not).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "  exit code: {}{}",
            self.code,
            if self.timed_out { " (TIMED OUT)" } else { "" }
        )?;
        writeln!(f, "  stdout: {}", indent(&truncate(&self.stdout, 4000)))?;
        write!(f, "  stderr: {}", indent(&truncate(&self.stderr, 4000)))
    }
}

fn indent(s: &str) -> String {
    if !s.contains('\n') {
        return format!("{s:?}");
    }
    let mut out = String::from("\n");
    for l in s.lines() {
        out.push_str("    | ");
        out.push_str(l);
        out.push('\n');
    }
    out
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &s[..end], s.len() - end)
}

/// Runs `cmd` feeding `stdin`, capturing stdout/stderr, killing it after `timeout`.
pub fn run_with_timeout(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> CmdOutput {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let writer = stdin.map(|data| {
        let data = data.to_vec();
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
            // pipe dropped: EOF
        })
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break st,
            None if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait after kill");
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
    CmdOutput {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
        timed_out,
    }
}

/// Runs etcdctl (API v3) against `endpoint` (`http://127.0.0.1:P`).
pub fn etcdctl_at(endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> CmdOutput {
    let mut cmd = Command::new(etcdctl_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=5s")
        .args(args);
    run_with_timeout(cmd, stdin, ETCDCTL_TIMEOUT)
}

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

/// Extra configuration for a server start.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Flags appended after the standard etcd flags.
    pub extra_args: Vec<String>,
    /// Environment variables set for the server process.
    pub env: Vec<(String, String)>,
    /// Replace the standard `--initial-cluster` value (`n1=<peer url>`).
    pub initial_cluster: Option<String>,
}

pub struct Server {
    pub kind: Kind,
    opts: ServerOpts,
    dir: tempfile::TempDir,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
    /// How many times the process was started (1 after `start`).
    pub starts: u32,
}

impl Server {
    /// Starts the server under test (`COREKV_TEST_TARGET`).
    pub fn start_target() -> Server {
        Server::start(target_kind())
    }

    pub fn start(kind: Kind) -> Server {
        Server::start_with(kind, ServerOpts::default())
    }

    pub fn start_with(kind: Kind, opts: ServerOpts) -> Server {
        let bin = server_bin(kind);
        let _ = bin;
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("corekv-test-{}-", kind.name()))
            .tempdir()
            .expect("create tempdir");
        let mut last_err = String::new();
        // Ports are picked by binding port 0 and released before the server
        // binds them; another process may grab one in between, so retry.
        for _attempt in 0..3 {
            let ports = free_ports(2);
            let mut s = Server {
                kind,
                opts: opts.clone(),
                dir,
                client_port: ports[0],
                peer_port: ports[1],
                child: None,
                starts: 0,
            };
            match s.spawn_and_wait() {
                Ok(()) => return s,
                Err(e) => {
                    let tail = s.log_tail(40);
                    if tail.contains("address already in use")
                        || tail.contains("Address already in use")
                    {
                        eprintln!("[harness] {kind} port clash, retrying with new ports");
                        s.kill_quiet();
                        last_err = e;
                        // Move the tempdir out and wipe the data dir for the retry.
                        let _ = std::fs::remove_dir_all(s.data_dir());
                        dir = s.take_dir();
                        continue;
                    }
                    panic!(
                        "{kind} server did not become ready: {e}\n--- {} (tail) ---\n{tail}",
                        s.log_path().display()
                    );
                }
            }
        }
        panic!("{kind} server could not start after 3 port attempts: {last_err}");
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill_quiet();
        let placeholder = tempfile::tempdir().expect("tempdir");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        drop(self);
        dir
    }

    pub fn name(&self) -> &'static str {
        "n1"
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `http://127.0.0.1:<client port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:<client port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The command line (without the binary) the server is started with.
    pub fn args(&self) -> Vec<String> {
        let client = self.endpoint();
        let peer = self.peer_url();
        let cluster = self
            .opts
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("n1={peer}"));
        let mut a: Vec<String> = vec![
            "--name".into(),
            "n1".into(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer,
            "--initial-cluster".into(),
            cluster,
        ];
        a.extend(self.opts.extra_args.iter().cloned());
        a
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(server_bin(self.kind));
        for (k, _) in std::env::vars_os() {
            let k2 = k.to_string_lossy();
            if k2.starts_with("ETCD_") || k2.starts_with("COREKV_") {
                cmd.env_remove(&k);
            }
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd.args(self.args());
        cmd
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let mut log2 = log.try_clone().unwrap();
        self.starts += 1;
        let _ = writeln!(
            log2,
            "===== [harness] start #{} of {}: {} {} =====",
            self.starts,
            self.kind,
            server_bin(self.kind).display(),
            self.args().join(" ")
        );
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} server: {e}", self.kind));
        self.child = Some(child);
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn();
        self.wait_ready(READY_TIMEOUT)
    }

    /// Polls until the client port accepts TCP and answers a gRPC Range.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("never polled");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(st) = child.try_wait().expect("try_wait") {
                    self.child = None;
                    return Err(format!("server process exited during startup with {st}"));
                }
            } else {
                return Err("server not running".into());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {timeout:?}; last probe: {last}"));
            }
            match TcpStream::connect_timeout(
                &self.addr().parse().unwrap(),
                Duration::from_millis(200),
            ) {
                Err(e) => last = format!("tcp connect: {e}"),
                Ok(_) => match grpc_probe(&self.endpoint()) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = format!("grpc range probe: {e}"),
                },
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL by PID and reap. No-op if not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: plain syscall on the PID of a child we spawned and have not reaped.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            if rc != 0 {
                eprintln!(
                    "[harness] kill({pid}, SIGKILL) failed: {}",
                    std::io::Error::last_os_error()
                );
            }
            let _ = child.wait();
        }
    }

    fn kill_quiet(&mut self) {
        self.kill();
    }

    /// Whether the process is still alive (reaps it if it exited).
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

    /// Starts the server again on the same data dir and ports (killing it first
    /// if it is still running) and waits for readiness.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait() {
            panic!(
                "{} server did not become ready after restart: {e}\n--- {} (tail) ---\n{}",
                self.kind,
                self.log_path().display(),
                self.log_tail(60)
            );
        }
    }

    /// Last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }

    /// etcdctl against this server.
    pub fn etcdctl(&self, args: &[&str]) -> CmdOutput {
        etcdctl_at(&self.endpoint(), args, None)
    }

    pub fn etcdctl_stdin(&self, args: &[&str], stdin: &[u8]) -> CmdOutput {
        etcdctl_at(&self.endpoint(), args, Some(stdin))
    }

    /// A connected etcd-client.
    pub async fn client(&self) -> etcd_client::Client {
        connect(&self.endpoint()).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let running = self.child.is_some();
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "\n===== {} server log tail ({}; was {}) =====\n{}\n===== end of {} log =====",
                self.kind,
                self.log_path().display(),
                if running { "running" } else { "not running" },
                self.log_tail(40),
                self.kind
            );
        }
    }
}

/// Connects an etcd-client with bounded timeouts.
pub async fn connect(endpoint: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .unwrap_or_else(|e| panic!("connecting etcd-client to {endpoint}: {e}"))
}

/// One linearizable Range on a dedicated thread/runtime (usable from sync and
/// async callers alike), bounded to 2 s.
fn grpc_probe(endpoint: &str) -> Result<(), String> {
    let ep = endpoint.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let fut = async {
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(2));
                let mut c = etcd_client::Client::connect([ep.as_str()], Some(opts))
                    .await
                    .map_err(|e| e.to_string())?;
                match c.get("corekv-tests-readiness-probe", None).await {
                    // With auth enabled an anonymous read is refused: the server answered.
                    Err(e) if e.to_string().contains("etcdserver: user name is empty") => Ok(()),
                    Err(e) => Err(e.to_string()),
                    Ok(_) => Ok::<(), String>(()),
                }
            };
            match tokio::time::timeout(Duration::from_secs(2), fut).await {
                Ok(r) => r,
                Err(_) => Err("timed out".into()),
            }
        })
    })
    .join()
    .unwrap_or_else(|_| Err("probe thread panicked".into()))
}

// ---------------------------------------------------------------------------
// Running the same check against etcd and the target
// ---------------------------------------------------------------------------

/// Runs `f` against a fresh etcd (proving the asserted behaviour is etcd's)
/// and then against a fresh server under test (unless that is etcd).
pub async fn on_etcd_and_target<F>(f: F)
where
    F: AsyncFn(&Server),
{
    for kind in reference_then_target() {
        on_kind(kind, &f).await;
    }
}

/// Runs `f` against a fresh server of `kind`, labelling output.
pub async fn on_kind<F>(kind: Kind, f: &F)
where
    F: AsyncFn(&Server),
{
    println!("=== running against {kind} ===");
    let server = Server::start(kind);
    let guard = Label(kind);
    f(&server).await;
    std::mem::forget(guard);
    println!("=== {kind}: ok ===");
}

/// Prints which server a panic happened on.
struct Label(Kind);
impl Drop for Label {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("!!! the failure above happened against {} !!!", self.0);
        }
    }
}

// ---------------------------------------------------------------------------
// Errors from etcd-client
// ---------------------------------------------------------------------------

/// (gRPC code name as in Go/tonic, e.g. "InvalidArgument", message) of an
/// etcd-client error; panics on errors that are not a gRPC status.
#[track_caller]
pub fn grpc_status(e: &etcd_client::Error) -> (String, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (format!("{:?}", s.code()), s.message().to_string()),
        other => panic!("expected a gRPC status error, got: {other:?}"),
    }
}

/// Unwraps the error of a result that must have failed with a gRPC status.
#[track_caller]
pub fn expect_status<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>) -> (String, String) {
    match r {
        Ok(v) => panic!("expected a gRPC error, got success: {v:?}"),
        Err(e) => grpc_status(&e),
    }
}

// ---------------------------------------------------------------------------
// Normalisation of etcdctl output for etcd-vs-target comparison
// ---------------------------------------------------------------------------

pub const NONZERO: &str = "<nonzero>";

/// Header fields whose values legitimately differ between two servers.
/// A non-zero value becomes `"<nonzero>"`; absence (= zero, etcd omits zero
/// fields in JSON) is kept, so "present vs absent" differences still show.
const ID_FIELDS: &[&str] = &["cluster_id", "member_id", "raft_term"];

pub fn normalize_json(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if ID_FIELDS.contains(&k.as_str()) {
                    let nonzero = match val {
                        Value::Number(n) => n.as_u64() != Some(0) && n.as_i64() != Some(0),
                        Value::Null => false,
                        _ => true,
                    };
                    *val = if nonzero {
                        Value::String(NONZERO.into())
                    } else {
                        Value::from(0)
                    };
                } else {
                    normalize_json(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize_json),
        _ => {}
    }
}

/// Replaces the given port numbers (as `:PORT`) with placeholders.
pub fn mask_ports(s: &str, ports: &[(u16, &str)]) -> String {
    let mut out = s.to_string();
    for (p, name) in ports {
        out = out.replace(&format!(":{p}"), &format!(":<{name}>"));
    }
    out
}

/// Normalised view of one etcdctl run: exit code, stdout, stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Normalized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  exit code: {}", self.code)?;
        writeln!(f, "  stdout: {}", indent(&truncate(&self.stdout, 3000)))?;
        write!(f, "  stderr: {}", indent(&truncate(&self.stderr, 3000)))
    }
}

/// Normalises etcdctl output: header ids in JSON stdout, and in stderr the
/// client's zap warning lines (timestamp and client-instance target removed,
/// everything else — including the gRPC code and message — kept).
pub fn normalize_output(o: &CmdOutput, ports: &[(u16, &str)]) -> Normalized {
    let stdout = {
        let t = o.stdout.trim_end();
        match serde_json::from_str::<Value>(t) {
            Ok(mut v) if t.starts_with('{') || t.starts_with('[') => {
                normalize_json(&mut v);
                let trailing = &o.stdout[t.len()..];
                format!("{}{}", serde_json::to_string(&v).unwrap(), trailing)
            }
            _ => o.stdout.clone(),
        }
    };
    let mut stderr = String::new();
    for line in o.stderr.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(mut m)) if m.contains_key("level") => {
                m.remove("ts");
                if m.contains_key("target") {
                    m.insert("target".into(), Value::String("<client-target>".into()));
                }
                let sorted: BTreeMap<_, _> = m.into_iter().collect();
                stderr.push_str(&serde_json::to_string(&sorted).unwrap());
                stderr.push_str(&line[body.len()..]);
            }
            _ => stderr.push_str(line),
        }
    }
    Normalized {
        code: if o.timed_out { -999 } else { o.code },
        stdout: mask_ports(&stdout, ports),
        stderr: mask_ports(&stderr, ports),
    }
}

// ---------------------------------------------------------------------------
// Tiny HTTP/1.1 client (loopback only)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let n = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`, 10 s bound.
pub fn http_get(addr: &str, path: &str) -> Result<HttpResponse, String> {
    http_request(addr, "GET", path)
}

/// One HTTP/1.1 request with a JSON body, `Connection: close`, 10 s bound (the gateway).
pub fn http_send(addr: &str, method: &str, path: &str, body: &str) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_http_response(&raw).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn http_request(addr: &str, method: &str, path: &str) -> Result<HttpResponse, String> {
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: corekv-tests\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    parse_http_response(&raw)
}

pub fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header terminator in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let proto = parts.next().unwrap_or_default();
    if !proto.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        let n: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len}"))?;
        if body.len() < n {
            return Err(format!("short body: {} < {n}", body.len()));
        }
        body.truncate(n);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

pub fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_s = String::from_utf8_lossy(&b[..eol]).into_owned();
        let size = usize::from_str_radix(size_s.split(';').next().unwrap().trim(), 16)
            .map_err(|_| format!("bad chunk size {size_s:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------

/// Splits a command line like a shell would for simple cases: whitespace
/// separates words, "double" or 'single' quotes group (and allow empty words).
pub fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unterminated quote in {s:?}");
    if in_word {
        words.push(cur);
    }
    words
}
