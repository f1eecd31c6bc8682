//! corekv-bench: a closed-loop load generator for etcd-v3-compatible servers, in the
//! spirit of etcd's `benchmark` tool. It speaks plain etcd gRPC (through the
//! `etcd-client` crate), so the same run works against corekv and a real etcd.
//!
//! Model: `--conns` gRPC connections (one `etcd_client::Client` each, endpoint i of
//! `--endpoints` for connection i modulo their count) shared round-robin by `--clients`
//! tokio tasks. Each client issues one request at a time (closed loop) until `--total`
//! requests have been claimed or `--duration` has passed. `--rate` spaces the claimed
//! requests evenly over time for all clients together. Every successful request's latency
//! goes into an HDR histogram (microseconds, up to 60 s); failures are only counted.
//!
//! `fsync-floor` measures the disk's write+fdatasync latency, the floor that any
//! durable single-node write path is judged against.
//!
//! `watch-latency` and `watch` (module `watch`) put watchers on a key or prefix and time
//! and check the events the writers' puts produce.
//!
//! `--protocol binary` runs put, range, txn-put, lease-keepalive, mixed and watch-latency
//! over corekv's binary protocol (docs/protocol.md, crate `corekv-client`) instead: each
//! `--conns` connection is one pipelined binary connection shared by its clients, and
//! `--endpoints` name the server's binary listeners (`--listen-binary-urls`).

// glibc malloc's arena locks were ~8% of the bench's CPU at 256 clients (perf), and the
// bench shares the machine with the server it measures: every cycle it spends is one the
// server cannot use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod binary_watch;
mod plot;
mod srv;
mod unary;
mod watch;

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, ConnectOptions, GetOptions, KvClient, LeaseClient, LeaseKeepAliveStream, LeaseKeeper,
    Txn, TxnOp,
};
use hdrhistogram::Histogram;

/// A client gives up after this many failed requests in a row.
const CONSECUTIVE_ERRORS_MAX: u32 = 100;
/// Highest latency the histogram tracks, in microseconds (60 s); slower ones saturate.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Key read once on every connection before the clock starts, so that connection
/// setup (lazy in tonic) is not charged to the first requests.
const PRIME_KEY: &[u8] = b"\x00corekv-bench-prime";

const USAGE: &str = "\
corekv-bench: load generator for etcd-v3-compatible servers (corekv, etcd)

USAGE:
  corekv-bench [global flags] <put|range|txn-put|lease-keepalive|mixed> [flags]
  corekv-bench [global flags] <watch-latency|watch> [flags]
  corekv-bench fsync-floor --dir D [--count 2000] [--size 512] [--json]

GLOBAL FLAGS (accepted before or after the command):
  --endpoints LIST     comma-separated host:port or http://host:port [127.0.0.1:2379]
  --discovery-srv D    take the endpoints from DNS SRV records of domain D instead, as
                       etcdctl does (_etcd-client-ssl._tcp.D, _etcd-client._tcp.D; https
                       ones are skipped: no TLS here). Name servers from /etc/resolv.conf
                       or COREKV_DNS_SERVER=host:port
  --discovery-srv-name N  suffix of the SRV names queried (_etcd-client-N._tcp.D)
  --conns N            gRPC connections; connection i uses endpoint i mod count [1]
  --clients N          concurrent closed-loop clients, spread round-robin over conns [1]
  --total N            measured requests [10000]
  --duration SECS      run for SECS seconds instead of --total requests
  --rate R             overall requests/s, 0 = unlimited [0]
  --warmup N           requests issued before measuring, not counted [0]
  --threads N          tokio worker threads [2]
  --timeout SECS       per-request timeout [30]
  --json               print a one-line JSON summary instead of text
  --protocol P         grpc (etcd's API; corekv or etcd) or binary (corekv's binary
                       protocol; --endpoints are then binary listeners) [grpc]. binary
                       works with put, range, txn-put, lease-keepalive, mixed and
                       watch-latency
  --grpc-client C      h2 (a lean unary client on the h2 crate, module unary) or
                       etcd-client (the etcd-client crate: tonic's channel) for put,
                       range, txn-put and mixed over gRPC [h2]. Streams (watch, lease
                       keep-alive) always use etcd-client
  --plot FILE.svg      also write an SVG: latency by percentile and throughput over time

put:
  --key-size N         key bytes [8]
  --val-size N         value bytes [256]
  --key-space-size N   keys are drawn uniformly from [0, N) [1]
  --sequential-keys    key = request number mod key-space-size instead of random
  --key-encoding E     decimal (zero-padded digits, default) or binary (big-endian,
                       left-padded with zero bytes) index, exactly key-size bytes

range [KEY [END]]:
  --key K              key to read [foo]
  --end E              read the range [K, E) instead of one key
  --consistency l|s    linearizable or serializable [l]
  --limit N            max keys per response, 0 = none [0]
  --prefill N          before anything else, put keys 0..N-1 (encoded as for put with
                       --key-size/--key-encoding, --val-size values) and, when --end is
                       not given, KEY itself, so reads return data. Not timed. [0]

txn-put:
  --txn-ops N          puts per transaction, distinct random keys, no compares [1]
  --key-size, --val-size, --key-space-size, --sequential-keys, --key-encoding as put

lease-keepalive:
  Every client grants itself a lease (TTL 600 s, before its first timed request) and
  renews it in a closed loop: over gRPC one LeaseKeepAlive stream per client (a request
  and its answer per renewal), over binary one keep-alive frame per renewal.

mixed:
  --read-ratio F       share of requests that are reads, 0..1 [0.8]; the rest are puts.
                       Keys (for both) as for put; reads use --consistency
  --key-size, --val-size, --key-space-size, --sequential-keys, --key-encoding as put

watch-latency:
  Watch streams on one key (or a prefix) and one writer on its own connection putting
  to it at a fixed rate; times every event from just before its put was sent to its
  arrival at each watcher. Defaults differ from the other commands: --rate 100,
  --key /corekv-bench/watch/, one stream per watcher.
  --watchers N         watchers [1]
  --streams N          watch streams the watchers are spread over [= --watchers]
  --prefix             watch the prefix KEY and put keys KEY+<key> (as for put) instead
                       of putting KEY itself
  --key K              the watched key or prefix
  --val-size N         value bytes, at least 16 (they carry the put's number) [256]
  --conns N            connections the watch streams are spread over (writers have
                       their own) [1]
  --clients N          writers [1]
  --key-size, --key-space-size, --key-encoding as put (with --prefix)

watch:
  Throughput: --watchers watchers on the prefix --key, on --streams streams over --conns
  connections; --clients writers (on min(conns, clients) connections of their own) put
  --total keys under the prefix, unpaced unless --rate. Reports events received per
  second (first measured put to last event) and latency as watch-latency does.
  --watchers N [1], --streams N [= --conns], --key, --key-size, --val-size,
  --key-space-size, --key-encoding as above

  Both watch commands check that every watcher got every put's event exactly once and
  in revision order, and exit 1 (listing the failures on stderr) when one did not. They
  wait for delivery up to --timeout after the writes end (longer while events still
  arrive). JSON: op, total_requests (puts), errors, rps (puts/s), latency_ms (watch
  latency), latency_count, put_latency_ms, events, events_expected, events_per_s,
  watchers, watchers_ok, watchers_failed, problems, ok, ...

fsync-floor:
  --dir D              directory on the disk to measure (a temp file is made there)
  --count N            write+fdatasync rounds [2000]
  --size N             bytes written per round [512]

Output: a summary modelled on etcd's benchmark (times in ms, 4 decimals), or with
--json: {op,total_requests,errors,elapsed_s,rps,latency_ms:{min,mean,stddev,p10,p25,p50,
p75,p90,p95,p99,p999,max},conns,clients,key_size,val_size,...}. total_requests counts
successful measured requests. Exit status 1 when no measured request succeeded.
";

// ---------------------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, Debug, PartialEq)]
enum Command {
    Put,
    Range,
    TxnPut,
    FsyncFloor,
    FreePorts,
    WatchLatency,
    Watch,
    LeaseKeepalive,
    Mixed,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::Put => "put",
            Command::Range => "range",
            Command::TxnPut => "txn-put",
            Command::FsyncFloor => "fsync-floor",
            Command::FreePorts => "free-ports",
            Command::WatchLatency => "watch-latency",
            Command::Watch => "watch",
            Command::LeaseKeepalive => "lease-keepalive",
            Command::Mixed => "mixed",
        }
    }
}

/// Which gRPC client sends the KV workloads' requests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum GrpcClient {
    /// The lean unary client of module `unary` (the default: the bench leaves the CPU to
    /// the server it measures).
    H2,
    /// The `etcd-client` crate, as an application would use it.
    EtcdClient,
}

/// Which API a run speaks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    /// etcd's gRPC API (corekv or etcd).
    Grpc,
    /// corekv's binary protocol.
    Binary,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Binary => "binary",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum KeyEncoding {
    Decimal,
    Binary,
}

#[derive(Clone, Debug)]
struct Opts {
    command: Command,
    endpoints: Vec<String>,
    conns: usize,
    clients: usize,
    total: u64,
    duration: Option<Duration>,
    rate: f64,
    warmup: u64,
    threads: usize,
    timeout: Duration,
    json: bool,
    key_size: usize,
    val_size: usize,
    key_space_size: u64,
    sequential_keys: bool,
    key_encoding: KeyEncoding,
    key: String,
    end: Option<String>,
    serializable: bool,
    limit: i64,
    prefill: u64,
    txn_ops: usize,
    dir: Option<String>,
    count: u64,
    size: usize,
    watchers: usize,
    /// 0 = the command's default.
    streams: usize,
    prefix: bool,
    rate_given: bool,
    key_given: bool,
    positional: Vec<String>,
    protocol: Protocol,
    /// Which gRPC client the KV workloads use.
    grpc_client: GrpcClient,
    plot: Option<String>,
    read_ratio: f64,
    /// `--discovery-srv`: domain whose SRV records list the endpoints; empty if unused.
    discovery_srv: String,
    /// `--discovery-srv-name`: suffix of the SRV names queried.
    discovery_srv_name: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            command: Command::Put,
            endpoints: vec!["127.0.0.1:2379".into()],
            conns: 1,
            clients: 1,
            total: 10_000,
            duration: None,
            rate: 0.0,
            warmup: 0,
            threads: 2,
            timeout: Duration::from_secs(30),
            json: false,
            key_size: 8,
            val_size: 256,
            key_space_size: 1,
            sequential_keys: false,
            key_encoding: KeyEncoding::Decimal,
            key: "foo".into(),
            end: None,
            serializable: false,
            limit: 0,
            prefill: 0,
            txn_ops: 1,
            dir: None,
            count: 2000,
            size: 512,
            watchers: 1,
            streams: 0,
            prefix: false,
            rate_given: false,
            key_given: false,
            positional: Vec::new(),
            protocol: Protocol::Grpc,
            grpc_client: GrpcClient::H2,
            plot: None,
            read_ratio: 0.8,
            discovery_srv: String::new(),
            discovery_srv_name: String::new(),
        }
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse::<T>()
        .map_err(|_| format!("{flag}: invalid number {v:?}"))
}

fn parse_args(args: Vec<String>) -> Result<Option<Opts>, String> {
    let mut o = Opts::default();
    let mut command = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" || arg == "help" {
            return Ok(None);
        }
        if !arg.starts_with("--") {
            if command.is_none() {
                command = Some(match arg.as_str() {
                    "put" => Command::Put,
                    "range" => Command::Range,
                    "txn-put" => Command::TxnPut,
                    "fsync-floor" => Command::FsyncFloor,
                    "free-ports" => Command::FreePorts,
                    "watch-latency" => Command::WatchLatency,
                    "watch" => Command::Watch,
                    "lease-keepalive" => Command::LeaseKeepalive,
                    "mixed" => Command::Mixed,
                    other => return Err(format!("unknown command {other:?}")),
                });
            } else {
                o.positional.push(arg);
            }
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        // Boolean flags.
        match name.as_str() {
            "--json" | "--sequential-keys" | "--prefix" => {
                let on = match inline.as_deref() {
                    None | Some("true") | Some("1") => true,
                    Some("false") | Some("0") => false,
                    Some(v) => return Err(format!("{name}: expected true/false, got {v:?}")),
                };
                if name == "--json" {
                    o.json = on;
                } else if name == "--prefix" {
                    o.prefix = on;
                } else {
                    o.sequential_keys = on;
                }
                continue;
            }
            _ => {}
        }
        let v = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        let n = name.as_str();
        match n {
            "--endpoints" => {
                o.endpoints = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if o.endpoints.is_empty() {
                    return Err("--endpoints: empty".into());
                }
            }
            "--discovery-srv" => o.discovery_srv = v,
            "--discovery-srv-name" => o.discovery_srv_name = v,
            "--conns" => o.conns = parse_num(n, &v)?,
            "--clients" => o.clients = parse_num(n, &v)?,
            "--total" => o.total = parse_num(n, &v)?,
            "--duration" => {
                let s: f64 = parse_num(n, &v)?;
                if !(s > 0.0 && s.is_finite()) {
                    return Err("--duration must be > 0".into());
                }
                o.duration = Some(Duration::from_secs_f64(s));
            }
            "--rate" => {
                o.rate = parse_num(n, &v)?;
                o.rate_given = true;
                if !(o.rate >= 0.0 && o.rate.is_finite()) {
                    return Err("--rate must be >= 0".into());
                }
            }
            "--warmup" => o.warmup = parse_num(n, &v)?,
            "--threads" => o.threads = parse_num(n, &v)?,
            "--timeout" => {
                let s: f64 = parse_num(n, &v)?;
                if !(s > 0.0 && s.is_finite()) {
                    return Err("--timeout must be > 0".into());
                }
                o.timeout = Duration::from_secs_f64(s);
            }
            "--key-size" => o.key_size = parse_num(n, &v)?,
            "--val-size" => o.val_size = parse_num(n, &v)?,
            "--key-space-size" => o.key_space_size = parse_num(n, &v)?,
            "--key-encoding" => {
                o.key_encoding = match v.as_str() {
                    "decimal" => KeyEncoding::Decimal,
                    "binary" => KeyEncoding::Binary,
                    _ => {
                        return Err(format!(
                            "--key-encoding: expected decimal or binary, got {v:?}"
                        ))
                    }
                }
            }
            "--key" => {
                o.key = v;
                o.key_given = true;
            }
            "--end" => o.end = Some(v),
            "--consistency" => {
                o.serializable = match v.as_str() {
                    "l" | "linearizable" => false,
                    "s" | "serializable" => true,
                    _ => return Err(format!("--consistency: expected l or s, got {v:?}")),
                }
            }
            "--limit" => o.limit = parse_num(n, &v)?,
            "--prefill" => o.prefill = parse_num(n, &v)?,
            "--txn-ops" => o.txn_ops = parse_num(n, &v)?,
            "--dir" => o.dir = Some(v),
            "--count" => o.count = parse_num(n, &v)?,
            "--size" => o.size = parse_num(n, &v)?,
            "--watchers" => o.watchers = parse_num(n, &v)?,
            "--streams" => o.streams = parse_num(n, &v)?,
            "--protocol" => {
                o.protocol = match v.as_str() {
                    "grpc" => Protocol::Grpc,
                    "binary" => Protocol::Binary,
                    _ => return Err(format!("--protocol: expected grpc or binary, got {v:?}")),
                }
            }
            "--grpc-client" => {
                o.grpc_client = match v.as_str() {
                    "h2" => GrpcClient::H2,
                    "etcd-client" => GrpcClient::EtcdClient,
                    _ => {
                        return Err(format!(
                            "--grpc-client: expected h2 or etcd-client, got {v:?}"
                        ))
                    }
                }
            }
            "--plot" => o.plot = Some(v),
            "--read-ratio" => {
                o.read_ratio = parse_num(n, &v)?;
                if !(0.0..=1.0).contains(&o.read_ratio) {
                    return Err("--read-ratio must be within 0..1".into());
                }
            }
            _ => return Err(format!("unknown flag {name}")),
        }
    }
    o.command = command
        .ok_or("no command given (put, range, txn-put, lease-keepalive, mixed, watch-latency, watch or fsync-floor)")?;
    validate(&mut o)?;
    Ok(Some(o))
}

fn validate_watch(o: &mut Opts) -> Result<(), String> {
    if o.command == Command::Watch {
        // The throughput command always watches a prefix.
        o.prefix = true;
    }
    if o.command == Command::WatchLatency && !o.rate_given {
        o.rate = 100.0;
    }
    if !o.key_given {
        o.key = "/corekv-bench/watch/".into();
    }
    if o.duration.is_some() {
        return Err(format!(
            "{} runs --total puts; --duration is not supported",
            o.command.name()
        ));
    }
    if o.watchers == 0 {
        return Err("--watchers must be > 0".into());
    }
    if o.streams == 0 {
        o.streams = if o.command == Command::WatchLatency {
            o.watchers
        } else {
            o.conns.max(1)
        };
    }
    o.streams = o.streams.min(o.watchers);
    if o.val_size < watch::SEQ_DIGITS {
        return Err(format!(
            "--val-size must be >= {} for watch commands (values carry the put's number)",
            watch::SEQ_DIGITS
        ));
    }
    if o.key.is_empty() {
        return Err("--key must not be empty for watch commands".into());
    }
    Ok(())
}

/// Number of bytes `idx` needs in the given encoding.
fn key_width(idx: u64, enc: KeyEncoding) -> usize {
    match enc {
        KeyEncoding::Decimal => idx.to_string().len(),
        KeyEncoding::Binary => (8 - idx.leading_zeros() as usize / 8).max(1),
    }
}

fn validate(o: &mut Opts) -> Result<(), String> {
    if o.command == Command::Range {
        let mut pos = std::mem::take(&mut o.positional).into_iter();
        if let Some(k) = pos.next() {
            o.key = k;
        }
        if let Some(e) = pos.next() {
            o.end = Some(e);
        }
        if pos.next().is_some() {
            return Err("range takes at most KEY and END".into());
        }
    } else if o.command == Command::FreePorts {
        if o.positional.len() > 1 {
            return Err("free-ports takes at most a count".into());
        }
    } else if !o.positional.is_empty() {
        return Err(format!("unexpected argument {:?}", o.positional[0]));
    }
    match o.command {
        Command::FsyncFloor => {
            if o.dir.is_none() {
                return Err("fsync-floor needs --dir".into());
            }
            if o.count == 0 || o.size == 0 {
                return Err("--count and --size must be > 0".into());
            }
            return Ok(());
        }
        Command::FreePorts => return Ok(()),
        Command::WatchLatency | Command::Watch => validate_watch(o)?,
        _ => {}
    }
    if o.protocol == Protocol::Binary && o.command == Command::Watch {
        return Err("--protocol binary: `watch` runs over gRPC only (use watch-latency)".into());
    }
    if o.conns == 0 || o.clients == 0 || o.threads == 0 {
        return Err("--conns, --clients and --threads must be > 0".into());
    }
    if o.duration.is_none() && o.total == 0 {
        return Err("--total must be > 0".into());
    }
    if o.key_size == 0 {
        return Err("--key-size must be > 0".into());
    }
    let keyed = matches!(o.command, Command::Put | Command::TxnPut | Command::Mixed) || o.prefix;
    if keyed && o.key_space_size == 0 {
        return Err("--key-space-size must be > 0".into());
    }
    let highest = match o.command {
        Command::Range => o.prefill.saturating_sub(1),
        _ => o.key_space_size.saturating_sub(1),
    };
    let need = key_width(highest, o.key_encoding);
    if (keyed || o.prefill > 0) && need > o.key_size {
        return Err(format!(
            "--key-size {} too small: index {highest} needs {need} bytes in {:?} encoding",
            o.key_size, o.key_encoding
        ));
    }
    if o.command == Command::TxnPut {
        if o.txn_ops == 0 {
            return Err("--txn-ops must be > 0".into());
        }
        if (o.txn_ops as u64) > o.key_space_size {
            return Err(format!(
                "--txn-ops {} needs --key-space-size >= {} (keys in one txn must be distinct)",
                o.txn_ops, o.txn_ops
            ));
        }
    }
    if o.limit < 0 {
        return Err("--limit must be >= 0".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Keys, values, randomness

/// SplitMix64: small, fast and good enough to pick keys.
struct Rng(u64);

impl Rng {
    fn seeded(stream: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng(t ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n), n > 0.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// The key for index `idx`: exactly `size` bytes (validated to fit beforehand).
fn encode_key(idx: u64, size: usize, enc: KeyEncoding) -> Vec<u8> {
    match enc {
        KeyEncoding::Decimal => format!("{idx:0size$}").into_bytes(),
        KeyEncoding::Binary => {
            let mut k = vec![0u8; size];
            let be = idx.to_be_bytes();
            let n = size.min(8);
            k[size - n..].copy_from_slice(&be[8 - n..]);
            k
        }
    }
}

fn random_value(size: usize) -> Vec<u8> {
    // Printable, incompressible-enough bytes, like etcd's benchmark random values.
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = Rng::seeded(0x5eed);
    (0..size)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
        .collect()
}

// ---------------------------------------------------------------------------------------
// Workload

struct Workload {
    command: Command,
    key_size: usize,
    key_space_size: u64,
    sequential: bool,
    encoding: KeyEncoding,
    value: Vec<u8>,
    range_key: Vec<u8>,
    range_end: Option<Vec<u8>>,
    serializable: bool,
    limit: i64,
    txn_ops: usize,
    read_ratio: f64,
}

impl Workload {
    fn from_opts(o: &Opts) -> Workload {
        Workload {
            command: o.command,
            key_size: o.key_size,
            key_space_size: o.key_space_size.max(1),
            sequential: o.sequential_keys,
            encoding: o.key_encoding,
            value: random_value(o.val_size),
            range_key: o.key.clone().into_bytes(),
            range_end: o.end.clone().map(String::into_bytes),
            serializable: o.serializable,
            limit: o.limit,
            txn_ops: o.txn_ops,
            read_ratio: o.read_ratio,
        }
    }

    fn key_index(&self, seq: u64, rng: &mut Rng) -> u64 {
        if self.sequential {
            seq % self.key_space_size
        } else {
            rng.below(self.key_space_size)
        }
    }

    /// The keys of transaction `seq`: txn_ops distinct indexes.
    fn txn_keys(&self, seq: u64, rng: &mut Rng) -> Vec<Vec<u8>> {
        let mut idxs: Vec<u64> = Vec::with_capacity(self.txn_ops);
        let mut j = 0u64;
        while idxs.len() < self.txn_ops {
            let idx = if self.sequential {
                (seq.wrapping_mul(self.txn_ops as u64) + j) % self.key_space_size
            } else {
                rng.below(self.key_space_size)
            };
            j += 1;
            if !idxs.contains(&idx) {
                idxs.push(idx);
            }
        }
        idxs.into_iter()
            .map(|i| encode_key(i, self.key_size, self.encoding))
            .collect()
    }

    /// The request number `seq` of this workload sends (not for lease-keepalive).
    fn next_op(&self, seq: u64, rng: &mut Rng) -> KvOp {
        let put = |key: Vec<u8>| pb::PbPutRequest {
            key,
            value: self.value.clone(),
            ..Default::default()
        };
        match self.command {
            Command::Mixed => {
                // A read with probability read_ratio, else a put; same key choice for both.
                let read = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 <= self.read_ratio
                    && self.read_ratio > 0.0;
                let key = encode_key(self.key_index(seq, rng), self.key_size, self.encoding);
                if read {
                    KvOp::Range(pb::PbRangeRequest {
                        key,
                        serializable: self.serializable,
                        ..Default::default()
                    })
                } else {
                    KvOp::Put(put(key))
                }
            }
            Command::Put => KvOp::Put(put(encode_key(
                self.key_index(seq, rng),
                self.key_size,
                self.encoding,
            ))),
            Command::Range => KvOp::Range(pb::PbRangeRequest {
                key: self.range_key.clone(),
                range_end: self.range_end.clone().unwrap_or_default(),
                serializable: self.serializable,
                limit: self.limit,
                ..Default::default()
            }),
            Command::TxnPut => KvOp::Txn(pb::PbTxnRequest {
                success: self
                    .txn_keys(seq, rng)
                    .into_iter()
                    .map(|key| pb::PbTxnRequestOp {
                        request: Some(pb::PbTxnOpRequest::RequestPut(put(key))),
                    })
                    .collect(),
                ..Default::default()
            }),
            Command::LeaseKeepalive
            | Command::FsyncFloor
            | Command::FreePorts
            | Command::WatchLatency
            | Command::Watch => unreachable!("not a closed-loop KV workload"),
        }
    }

    /// Issues request number `seq` of this workload on the client's connection.
    async fn issue(&self, ctx: &mut ClientCtx, seq: u64, rng: &mut Rng) -> Result<(), String> {
        if self.command == Command::LeaseKeepalive {
            return ctx.keep_alive().await;
        }
        let op = self.next_op(seq, rng);
        match &ctx.conn {
            Conn::Binary(c) => match op {
                KvOp::Put(r) => c.put(&r).await.map(drop),
                KvOp::Range(r) => c.range(&r).await.map(drop),
                KvOp::Txn(r) => c.txn(&r).await.map(drop),
            }
            .map_err(err),
            Conn::Grpc {
                unary: Some(ch), ..
            } => match op {
                KvOp::Put(r) => ch
                    .call::<_, pb::PbPutResponse>(unary::KvMethod::Put, &r)
                    .await
                    .map(drop),
                KvOp::Range(r) => ch
                    .call::<_, pb::PbRangeResponse>(unary::KvMethod::Range, &r)
                    .await
                    .map(drop),
                KvOp::Txn(r) => ch
                    .call::<_, pb::PbTxnResponse>(unary::KvMethod::Txn, &r)
                    .await
                    .map(drop),
            },
            Conn::Grpc { kv, .. } => issue_etcd_client(kv.clone(), op).await,
        }
    }
}

/// One request of a closed-loop KV workload, as etcd's messages.
enum KvOp {
    Put(pb::PbPutRequest),
    Range(pb::PbRangeRequest),
    Txn(pb::PbTxnRequest),
}

/// Sends `op` through the `etcd-client` crate (`--grpc-client etcd-client`).
async fn issue_etcd_client(mut kv: KvClient, op: KvOp) -> Result<(), String> {
    match op {
        KvOp::Put(r) => kv.put(r.key, r.value, None).await.map(drop),
        KvOp::Range(r) => {
            let mut opts = GetOptions::new();
            if !r.range_end.is_empty() {
                opts = opts.with_range(r.range_end);
            }
            if r.serializable {
                opts = opts.with_serializable();
            }
            if r.limit > 0 {
                opts = opts.with_limit(r.limit);
            }
            kv.get(r.key, Some(opts)).await.map(drop)
        }
        KvOp::Txn(r) => {
            let ops: Vec<TxnOp> = r
                .success
                .into_iter()
                .filter_map(|op| match op.request {
                    Some(pb::PbTxnOpRequest::RequestPut(p)) => {
                        Some(TxnOp::put(p.key, p.value, None))
                    }
                    _ => None,
                })
                .collect();
            kv.txn(Txn::new().and_then(ops)).await.map(drop)
        }
    }
    .map_err(err)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Lease TTL of the leases lease-keepalive renews (long enough never to expire in a run).
const KEEPALIVE_LEASE_TTL_S: i64 = 600;

/// One connection of a run, shared by the clients assigned to it. (Cloned once per client,
/// never per request, so the size of the gRPC variant does not matter.)
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
enum Conn {
    /// An etcd gRPC connection through `etcd-client`, plus (with `--grpc-client h2`, for
    /// the KV workloads) the lean unary client's own connection that those requests use.
    Grpc {
        kv: KvClient,
        lease: LeaseClient,
        unary: Option<unary::Channel>,
    },
    /// A pipelined binary-protocol connection.
    Binary(Arc<corekv_client::Connection>),
}

/// One closed-loop client: its connection, plus its lease and keep-alive stream for
/// lease-keepalive (set up before its first request).
struct ClientCtx {
    conn: Conn,
    lease_id: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl ClientCtx {
    fn new(conn: Conn) -> ClientCtx {
        ClientCtx {
            conn,
            lease_id: 0,
            keeper: None,
        }
    }

    /// Grants this client's lease (and opens its keep-alive stream over gRPC).
    async fn prepare_lease(&mut self) -> Result<(), String> {
        match &self.conn {
            Conn::Grpc { lease, .. } => {
                let mut lease = lease.clone();
                let granted = lease
                    .grant(KEEPALIVE_LEASE_TTL_S, None)
                    .await
                    .map_err(err)?;
                self.lease_id = granted.id();
                self.keeper = Some(lease.keep_alive(self.lease_id).await.map_err(err)?);
            }
            Conn::Binary(c) => {
                let req = pb::PbLeaseGrantRequest {
                    ttl: KEEPALIVE_LEASE_TTL_S,
                    id: 0,
                };
                self.lease_id = c.lease_grant(&req).await.map_err(err)?.id;
            }
        }
        Ok(())
    }

    /// One renewal of this client's lease, checked.
    async fn keep_alive(&mut self) -> Result<(), String> {
        let ttl = match (&self.conn, self.keeper.as_mut()) {
            (Conn::Grpc { .. }, Some((keeper, stream))) => {
                keeper.keep_alive().await.map_err(err)?;
                match stream.message().await.map_err(err)? {
                    Some(resp) => resp.ttl(),
                    None => return Err("the keep-alive stream ended".into()),
                }
            }
            (Conn::Grpc { .. }, None) => return Err("no keep-alive stream".into()),
            (Conn::Binary(c), _) => c.lease_keep_alive(self.lease_id).await.map_err(err)?.ttl,
        };
        if ttl <= 0 {
            return Err(format!("lease {:x} expired (ttl {ttl})", self.lease_id));
        }
        Ok(())
    }
}

/// etcd's messages, for the binary protocol's requests.
use corekv_client::proto as pb;

// ---------------------------------------------------------------------------------------
// Running a phase

/// What all clients of one phase share: the request counter that bounds the phase,
/// its end time, the pacing and the first error seen.
struct Phase {
    next: AtomicU64,
    total: Option<u64>,
    deadline: Option<Instant>,
    start: Instant,
    rate: f64,
    first_error: Mutex<Option<String>>,
}

impl Phase {
    fn new(total: Option<u64>, duration: Option<Duration>, rate: f64) -> Phase {
        let start = Instant::now();
        Phase {
            next: AtomicU64::new(0),
            total,
            deadline: duration.map(|d| start + d),
            start,
            rate,
            first_error: Mutex::new(None),
        }
    }

    /// Claims the next request number, waiting for its slot when paced; None when the
    /// phase is over.
    async fn claim(&self) -> Option<u64> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|t| seq >= t) {
            return None;
        }
        if self.rate > 0.0 {
            let at = self.start + Duration::from_secs_f64(seq as f64 / self.rate);
            if self.deadline.is_some_and(|d| at >= d) {
                return None;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        Some(seq)
    }

    fn note_error(&self, err: &str) {
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(err.to_string());
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram bounds are valid")
}

/// Width of one throughput-over-time bucket.
const TIMELINE_BUCKET: Duration = Duration::from_millis(100);
/// Buckets kept at most (longer runs count their tail into the last one).
const TIMELINE_BUCKETS_MAX: usize = 36_000;

/// One client's (or, merged, the whole run's) results.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    /// Exact latency moments in microseconds (the histogram rounds).
    sum_us: f64,
    sum_sq_us: f64,
    min_us: f64,
    max_us: f64,
    /// Clients that stopped on CONSECUTIVE_ERRORS_MAX errors in a row.
    gave_up: u64,
    /// Requests completed per TIMELINE_BUCKET since the phase started.
    timeline: Vec<u32>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: new_histogram(),
            ok: 0,
            errors: 0,
            sum_us: 0.0,
            sum_sq_us: 0.0,
            min_us: f64::INFINITY,
            max_us: 0.0,
            gave_up: 0,
            timeline: Vec::new(),
        }
    }

    fn record(&mut self, latency: Duration) {
        let us = latency.as_nanos() as f64 / 1000.0;
        self.hist
            .saturating_record((us.round() as u64).clamp(1, LATENCY_US_MAX));
        self.ok += 1;
        self.sum_us += us;
        self.sum_sq_us += us * us;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    /// Counts one completion `since_start` after the phase began, for the timeline.
    fn mark(&mut self, since_start: Duration) {
        let bucket = ((since_start.as_nanos() / TIMELINE_BUCKET.as_nanos()) as usize)
            .min(TIMELINE_BUCKETS_MAX - 1);
        if self.timeline.len() <= bucket {
            self.timeline.resize(bucket + 1, 0);
        }
        self.timeline[bucket] += 1;
    }

    fn merge(&mut self, other: &Tally) {
        self.hist.add(&other.hist).expect("histograms share bounds");
        self.ok += other.ok;
        self.errors += other.errors;
        self.sum_us += other.sum_us;
        self.sum_sq_us += other.sum_sq_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
        self.gave_up += other.gave_up;
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), 0);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            *mine += theirs;
        }
    }
}

async fn client_loop(
    id: usize,
    conn: Conn,
    work: Arc<Workload>,
    phase: Arc<Phase>,
    record: bool,
    label: &'static str,
) -> Tally {
    let mut tally = Tally::new();
    let mut rng = Rng::seeded(id as u64 + 1);
    let mut in_a_row = 0u32;
    let mut ctx = ClientCtx::new(conn);
    if work.command == Command::LeaseKeepalive {
        if let Err(e) = ctx.prepare_lease().await {
            phase.note_error(&format!("granting the client's lease: {e}"));
            tally.errors += 1;
            tally.gave_up = 1;
            return tally;
        }
    }
    while let Some(seq) = phase.claim().await {
        let t0 = Instant::now();
        let res = work.issue(&mut ctx, seq, &mut rng).await;
        let latency = t0.elapsed();
        match res {
            Ok(()) => {
                in_a_row = 0;
                if record {
                    tally.record(latency);
                    tally.mark(phase.start.elapsed());
                }
            }
            Err(msg) => {
                in_a_row += 1;
                tally.errors += 1;
                phase.note_error(&msg);
                if in_a_row >= CONSECUTIVE_ERRORS_MAX {
                    eprintln!(
                        "corekv-bench: {label} client {id} stopped after {CONSECUTIVE_ERRORS_MAX} consecutive errors; last: {msg}"
                    );
                    tally.gave_up = 1;
                    break;
                }
            }
        }
    }
    tally
}

/// Runs one phase with every client; returns the merged tally, the elapsed time and the
/// first error message.
async fn run_phase(
    conns: &[Conn],
    clients: usize,
    work: Arc<Workload>,
    phase: Phase,
    record: bool,
    label: &'static str,
) -> (Tally, Duration, Option<String>) {
    let phase = Arc::new(phase);
    let mut handles = Vec::with_capacity(clients);
    for id in 0..clients {
        let conn = conns[id % conns.len()].clone();
        handles.push(tokio::spawn(client_loop(
            id,
            conn,
            work.clone(),
            phase.clone(),
            record,
            label,
        )));
    }
    let mut all = Tally::new();
    for h in handles {
        match h.await {
            Ok(t) => all.merge(&t),
            Err(e) => {
                eprintln!("corekv-bench: {label} client task failed: {e}");
                all.gave_up += 1;
            }
        }
    }
    let elapsed = phase.start.elapsed();
    let first = phase.first_error.lock().unwrap().clone();
    (all, elapsed, first)
}

async fn connect_all(o: &Opts) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let ep = &o.endpoints[i % o.endpoints.len()];
        match o.protocol {
            Protocol::Grpc => {
                let options = ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(o.timeout);
                let client = Client::connect([ep.as_str()], Some(options))
                    .await
                    .map_err(|e| format!("cannot connect to {ep}: {e}"))?;
                let kv_workload = matches!(
                    o.command,
                    Command::Put | Command::Range | Command::TxnPut | Command::Mixed
                );
                let unary = if kv_workload && o.grpc_client == GrpcClient::H2 {
                    Some(unary::Channel::connect(ep, Duration::from_secs(5), o.timeout).await?)
                } else {
                    None
                };
                conns.push(Conn::Grpc {
                    kv: client.kv_client(),
                    lease: client.lease_client(),
                    unary,
                });
            }
            Protocol::Binary => {
                let options = corekv_client::ClientOptions::default();
                let c = corekv_client::Connection::connect(ep, &options)
                    .await
                    .map_err(|e| format!("cannot connect to {ep} (binary protocol): {e}"))?;
                conns.push(Conn::Binary(Arc::new(c)));
            }
        }
    }
    // Connections are opened lazily: touch every one before any clock starts.
    let mut primes = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        let conn = conn.clone();
        let ep = o.endpoints[i % o.endpoints.len()].clone();
        primes.push(tokio::spawn(async move {
            let answered = match conn {
                Conn::Grpc { mut kv, unary, .. } => {
                    let primed = kv
                        .get(PRIME_KEY, Some(GetOptions::new().with_serializable()))
                        .await
                        .map(drop)
                        .map_err(err);
                    match (primed, unary) {
                        (Ok(()), Some(ch)) => {
                            let req = pb::PbRangeRequest {
                                key: PRIME_KEY.to_vec(),
                                serializable: true,
                                ..Default::default()
                            };
                            ch.call::<_, pb::PbRangeResponse>(unary::KvMethod::Range, &req)
                                .await
                                .map(drop)
                        }
                        (primed, _) => primed,
                    }
                }
                Conn::Binary(c) => {
                    let req = pb::PbRangeRequest {
                        key: PRIME_KEY.to_vec(),
                        serializable: true,
                        ..Default::default()
                    };
                    c.range(&req).await.map(drop).map_err(err)
                }
            };
            answered.map_err(|e| format!("{ep} does not answer: {e}"))
        }));
    }
    for p in primes {
        p.await.map_err(|e| e.to_string())??;
    }
    Ok(conns)
}

/// Puts keys 0..N (and the range key itself, when reading one key) so reads find data.
async fn prefill(o: &Opts, conns: &[Conn]) -> Result<(), String> {
    let started = Instant::now();
    let work = Arc::new(Workload {
        command: Command::Put,
        sequential: true,
        key_space_size: o.prefill.max(1),
        ..Workload::from_opts(o)
    });
    let clients = o.clients.min(o.prefill as usize).max(1);
    let (tally, _, first) = run_phase(
        conns,
        clients,
        work.clone(),
        Phase::new(Some(o.prefill), None, 0.0),
        false,
        "prefill",
    )
    .await;
    if tally.errors > 0 {
        return Err(format!(
            "prefill: {} of {} puts failed; first: {}",
            tally.errors,
            o.prefill,
            first.unwrap_or_default()
        ));
    }
    if o.end.is_none() {
        let key = o.key.clone().into_bytes();
        let done = match &conns[0] {
            Conn::Grpc { kv, .. } => kv
                .clone()
                .put(key, work.value.clone(), None)
                .await
                .map(drop)
                .map_err(err),
            Conn::Binary(c) => {
                let req = pb::PbPutRequest {
                    key,
                    value: work.value.clone(),
                    ..Default::default()
                };
                c.put(&req).await.map(drop).map_err(err)
            }
        };
        done.map_err(|e| format!("prefill: put {:?}: {e}", o.key))?;
    }
    eprintln!(
        "corekv-bench: prefilled {} keys ({} B keys, {} B values) in {:.2} s",
        o.prefill,
        o.key_size,
        o.val_size,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Report {
    tally: Tally,
    elapsed: Duration,
    first_error: Option<String>,
    warmup_errors: u64,
}

async fn bench(o: Opts) -> Result<Report, String> {
    let conns = connect_all(&o).await?;
    if matches!(o.command, Command::Range | Command::Mixed) && o.prefill > 0 {
        prefill(&o, &conns).await?;
    }
    let work = Arc::new(Workload::from_opts(&o));
    let mut warmup_errors = 0;
    if o.warmup > 0 {
        let phase = Phase::new(Some(o.warmup), None, o.rate);
        let (t, _, first) =
            run_phase(&conns, o.clients, work.clone(), phase, false, "warmup").await;
        warmup_errors = t.errors;
        if t.errors > 0 {
            eprintln!(
                "corekv-bench: warmup: {} errors; first: {}",
                t.errors,
                first.unwrap_or_default()
            );
        }
    }
    let total = if o.duration.is_some() {
        None
    } else {
        Some(o.total)
    };
    let phase = Phase::new(total, o.duration, o.rate);
    let (tally, elapsed, first_error) =
        run_phase(&conns, o.clients, work, phase, true, o.command.name()).await;
    Ok(Report {
        tally,
        elapsed,
        first_error,
        warmup_errors,
    })
}
// ---------------------------------------------------------------------------------------
// Output

const PERCENTILES: [(f64, &str, &str); 8] = [
    (10.0, "10%", "p10"),
    (25.0, "25%", "p25"),
    (50.0, "50%", "p50"),
    (75.0, "75%", "p75"),
    (90.0, "90%", "p90"),
    (95.0, "95%", "p95"),
    (99.0, "99%", "p99"),
    (99.9, "99.9%", "p999"),
];

struct Stats {
    min_ms: f64,
    mean_ms: f64,
    stddev_ms: f64,
    max_ms: f64,
    pct_ms: Vec<f64>,
    rps: f64,
}

fn stats(r: &Report) -> Stats {
    let t = &r.tally;
    let n = t.ok as f64;
    let secs = r.elapsed.as_secs_f64();
    if t.ok == 0 {
        return Stats {
            min_ms: 0.0,
            mean_ms: 0.0,
            stddev_ms: 0.0,
            max_ms: 0.0,
            pct_ms: vec![0.0; PERCENTILES.len()],
            rps: 0.0,
        };
    }
    let mean = t.sum_us / n;
    let var = (t.sum_sq_us / n - mean * mean).max(0.0);
    Stats {
        min_ms: t.min_us / 1000.0,
        mean_ms: mean / 1000.0,
        stddev_ms: var.sqrt() / 1000.0,
        max_ms: t.max_us / 1000.0,
        pct_ms: PERCENTILES
            .iter()
            .map(|(p, _, _)| t.hist.value_at_percentile(*p) as f64 / 1000.0)
            .collect(),
        rps: if secs > 0.0 { n / secs } else { 0.0 },
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn print_json(o: &Opts, r: &Report) {
    let s = stats(r);
    let mut lat = serde_json::Map::new();
    lat.insert("min".into(), round4(s.min_ms).into());
    lat.insert("mean".into(), round4(s.mean_ms).into());
    lat.insert("stddev".into(), round4(s.stddev_ms).into());
    for ((_, _, name), v) in PERCENTILES.iter().zip(&s.pct_ms) {
        lat.insert((*name).into(), round4(*v).into());
    }
    lat.insert("max".into(), round4(s.max_ms).into());
    let mut j = serde_json::json!({
        "op": o.command.name(),
        "protocol": o.protocol.name(),
        "total_requests": r.tally.ok,
        "errors": r.tally.errors,
        "elapsed_s": round4(r.elapsed.as_secs_f64()),
        "rps": (s.rps * 100.0).round() / 100.0,
        "latency_ms": lat,
        "conns": o.conns,
        "clients": o.clients,
        "key_size": o.key_size,
        "val_size": o.val_size,
        "endpoints": o.endpoints,
        "rate": o.rate,
        "warmup": o.warmup,
        "warmup_errors": r.warmup_errors,
        "clients_gave_up": r.tally.gave_up,
        "first_error": r.first_error,
    });
    let m = j.as_object_mut().expect("object");
    match o.command {
        Command::Mixed => {
            m.insert("key_space_size".into(), o.key_space_size.into());
            m.insert("read_ratio".into(), o.read_ratio.into());
            m.insert(
                "consistency".into(),
                (if o.serializable { "s" } else { "l" }).into(),
            );
        }
        Command::Put | Command::TxnPut => {
            m.insert("key_space_size".into(), o.key_space_size.into());
            m.insert("sequential_keys".into(), o.sequential_keys.into());
            if o.command == Command::TxnPut {
                m.insert("txn_ops".into(), o.txn_ops.into());
            }
        }
        Command::Range => {
            m.insert(
                "consistency".into(),
                (if o.serializable { "s" } else { "l" }).into(),
            );
            m.insert("key".into(), o.key.clone().into());
            m.insert("end".into(), o.end.clone().into());
            m.insert("limit".into(), o.limit.into());
            m.insert("prefill".into(), o.prefill.into());
        }
        _ => {}
    }
    println!("{j}");
}

fn print_text(o: &Opts, r: &Report) {
    let s = stats(r);
    let mut out = String::new();
    let bound = match o.duration {
        Some(d) => format!("{:.1} s", d.as_secs_f64()),
        None => format!("{} requests", o.total),
    };
    let what = match o.command {
        Command::Range => format!(
            "range {:?}{} ({}{}{})",
            o.key,
            o.end
                .as_ref()
                .map(|e| format!("..{e:?}"))
                .unwrap_or_default(),
            if o.serializable {
                "serializable"
            } else {
                "linearizable"
            },
            if o.limit > 0 {
                format!(", limit {}", o.limit)
            } else {
                String::new()
            },
            if o.prefill > 0 {
                format!(", {} keys prefilled", o.prefill)
            } else {
                String::new()
            },
        ),
        Command::TxnPut => format!(
            "txn-put {} ops/txn, key {} B, value {} B, key space {}",
            o.txn_ops, o.key_size, o.val_size, o.key_space_size
        ),
        Command::LeaseKeepalive => "lease-keepalive, one lease per client".to_string(),
        Command::Mixed => format!(
            "mixed {:.0}% reads ({}) / puts, key {} B, value {} B, key space {}",
            o.read_ratio * 100.0,
            if o.serializable {
                "serializable"
            } else {
                "linearizable"
            },
            o.key_size,
            o.val_size,
            o.key_space_size
        ),
        _ => format!(
            "put key {} B, value {} B, key space {}",
            o.key_size, o.val_size, o.key_space_size
        ),
    };
    let _ = writeln!(
        out,
        "{what}: {} {} conns, {} clients, {bound}{} -> {}\n",
        o.protocol.name(),
        o.conns,
        o.clients,
        if o.rate > 0.0 {
            format!(", rate {}/s", o.rate)
        } else {
            String::new()
        },
        o.endpoints.join(",")
    );
    let _ = writeln!(out, "Summary:");
    let _ = writeln!(out, "  Total:\t{:.4} secs.", r.elapsed.as_secs_f64());
    let _ = writeln!(out, "  Slowest:\t{:.4} ms.", s.max_ms);
    let _ = writeln!(out, "  Fastest:\t{:.4} ms.", s.min_ms);
    let _ = writeln!(out, "  Average:\t{:.4} ms.", s.mean_ms);
    let _ = writeln!(out, "  Stddev:\t{:.4} ms.", s.stddev_ms);
    let _ = writeln!(out, "  Requests/sec:\t{:.4}", s.rps);
    if r.tally.ok > 0 {
        let _ = writeln!(out, "\nResponse time histogram:");
        out.push_str(&histogram_text(&r.tally.hist));
        let _ = writeln!(out, "\nLatency distribution:");
        for ((_, label, _), v) in PERCENTILES.iter().zip(&s.pct_ms) {
            let _ = writeln!(out, "  {label} in {v:.4} ms.");
        }
    }
    let _ = writeln!(
        out,
        "\nRequests: {} ok, {} errors",
        r.tally.ok, r.tally.errors
    );
    if let Some(e) = &r.first_error {
        let _ = writeln!(out, "First error: {e}");
    }
    if r.tally.gave_up > 0 {
        let _ = writeln!(
            out,
            "{} clients stopped after {CONSECUTIVE_ERRORS_MAX} consecutive errors",
            r.tally.gave_up
        );
    }
    print!("{out}");
}

/// Ten linear buckets between the fastest and slowest request, etcd-style.
fn histogram_text(h: &Histogram<u64>) -> String {
    const BUCKETS: usize = 10;
    const BAR_MAX: u64 = 40;
    let lo = h.min() as f64;
    let hi = h.max() as f64;
    let width = ((hi - lo) / BUCKETS as f64).max(1.0);
    let mut counts = [0u64; BUCKETS + 1];
    for v in h.iter_recorded() {
        let x = h.median_equivalent(v.value_iterated_to()) as f64;
        let b = (((x - lo) / width).floor().max(0.0) as usize).min(BUCKETS);
        counts[b] += v.count_at_value();
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut s = String::new();
    for (i, c) in counts.iter().enumerate() {
        let edge_ms = (lo + width * i as f64) / 1000.0;
        let bar = "∎".repeat((c * BAR_MAX / top) as usize);
        let _ = writeln!(s, "  {edge_ms:.4} [{c}]\t|{bar}");
    }
    s
}

// ---------------------------------------------------------------------------------------
// fsync-floor

/// Filesystem type of the mount holding `dir` (longest matching mount point).
fn fs_type(dir: &std::path::Path) -> String {
    let Ok(abs) = std::fs::canonicalize(dir) else {
        return "?".into();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "?".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mnt), Some(ty)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mnt = mnt.replace("\\040", " ");
        let longer = match &best {
            Some((l, _)) => mnt.len() >= *l,
            None => true,
        };
        if abs.starts_with(&mnt) && longer {
            best = Some((mnt.len(), ty.to_string()));
        }
    }
    best.map(|(_, t)| t).unwrap_or_else(|| "?".into())
}

fn fsync_floor(o: &Opts) -> Result<(), String> {
    let dir = std::path::PathBuf::from(o.dir.as_deref().expect("validated"));
    let path = dir.join(format!(
        ".corekv-bench-fsync-floor.{}.tmp",
        std::process::id()
    ));
    let result = fsync_floor_in(o, &dir, &path);
    let _ = std::fs::remove_file(&path);
    result
}

fn fsync_floor_in(o: &Opts, dir: &std::path::Path, path: &std::path::Path) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("fsync-floor: {what} {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io("create", e))?;
    // Preallocate by writing real zeros (not a sparse set_len), so the timed
    // fdatasyncs only flush data, never block allocation metadata.
    let len = o.count * o.size as u64;
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])
            .map_err(|e| io("preallocate", e))?;
        left -= n as u64;
    }
    file.sync_all().map_err(|e| io("sync", e))?;
    let record = vec![0xA5u8; o.size];
    let mut tally = Tally::new();
    let started = Instant::now();
    for i in 0..o.count {
        let t0 = Instant::now();
        file.write_all_at(&record, i * o.size as u64)
            .map_err(|e| io("write", e))?;
        file.sync_data().map_err(|e| io("fdatasync", e))?;
        tally.record(t0.elapsed());
    }
    let elapsed = started.elapsed();
    let r = Report {
        tally,
        elapsed,
        first_error: None,
        warmup_errors: 0,
    };
    let s = stats(&r);
    let fs = fs_type(dir);
    if o.json {
        let mut lat = serde_json::Map::new();
        lat.insert("min".into(), round4(s.min_ms).into());
        lat.insert("mean".into(), round4(s.mean_ms).into());
        lat.insert("stddev".into(), round4(s.stddev_ms).into());
        for ((_, _, name), v) in PERCENTILES.iter().zip(&s.pct_ms) {
            lat.insert((*name).into(), round4(*v).into());
        }
        lat.insert("max".into(), round4(s.max_ms).into());
        let j = serde_json::json!({
            "op": "fsync-floor",
            "dir": dir.display().to_string(),
            "fs_type": fs,
            "count": o.count,
            "size": o.size,
            "elapsed_s": round4(elapsed.as_secs_f64()),
            "syncs_per_s": (s.rps * 100.0).round() / 100.0,
            "latency_ms": lat,
        });
        println!("{j}");
    } else {
        println!(
            "fsync-floor: {} x (pwrite {} B at increasing offsets + fdatasync) in {} ({fs})\n",
            o.count,
            o.size,
            dir.display()
        );
        println!("Summary:");
        println!("  Total:\t{:.4} secs.", elapsed.as_secs_f64());
        println!("  Slowest:\t{:.4} ms.", s.max_ms);
        println!("  Fastest:\t{:.4} ms.", s.min_ms);
        println!("  Average:\t{:.4} ms.", s.mean_ms);
        println!("  Stddev:\t{:.4} ms.", s.stddev_ms);
        println!("  Syncs/sec:\t{:.4}", s.rps);
        println!("\nLatency distribution:");
        for ((_, label, _), v) in PERCENTILES.iter().zip(&s.pct_ms) {
            println!("  {label} in {v:.4} ms.");
        }
        if fs == "tmpfs" || fs == "ramfs" {
            println!("\nnote: {fs} makes fdatasync a no-op; this is not a disk floor");
        }
    }
    Ok(())
}

/// Prints free loopback TCP ports (all bound at once, then released), for scripts. Each
/// printed port's next port is free too and printed by no other: corekv serves its binary
/// protocol on the client port + 1 by default (bench/storage.sh relies on that).
fn free_ports(o: &Opts) -> Result<(), String> {
    const ATTEMPTS_PER_PORT_MAX: usize = 64;
    let n: usize = match o.positional.first() {
        Some(v) => parse_num("free-ports", v)?,
        None => 1,
    };
    let mut held: Vec<std::net::TcpListener> = Vec::with_capacity(2 * n);
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    for _ in 0..n.saturating_mul(ATTEMPTS_PER_PORT_MAX) {
        if ports.len() == n {
            break;
        }
        let l =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free-ports: {e}"))?;
        let port = l
            .local_addr()
            .map_err(|e| format!("free-ports: {e}"))?
            .port();
        let taken = |p: u16| ports.iter().any(|&q| q == p || q.checked_add(1) == Some(p));
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if taken(port) || taken(next) {
            continue;
        }
        if let Ok(l2) = std::net::TcpListener::bind(("127.0.0.1", next)) {
            ports.push(port);
            held.push(l);
            held.push(l2);
        }
    }
    if ports.len() < n {
        return Err(format!(
            "free-ports: found only {} of {n} free port pairs",
            ports.len()
        ));
    }
    let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    println!("{}", ports.join(" "));
    Ok(())
}

// ---------------------------------------------------------------------------------------

/// Writes the --plot SVG for `tally`.
fn write_plot(
    path: &str,
    title: &str,
    tally: &Tally,
    elapsed: Option<Duration>,
) -> Result<(), String> {
    let svg = plot::svg(
        title,
        &tally.hist,
        &tally.timeline,
        TIMELINE_BUCKET,
        elapsed,
    );
    std::fs::write(path, svg).map_err(|e| format!("--plot {path}: {e}"))
}

/// Replaces `o.endpoints` with the ones the SRV records of --discovery-srv list.
fn discover_endpoints(o: &mut Opts) -> Result<(), String> {
    if o.protocol == Protocol::Binary {
        return Err(
            "--discovery-srv finds gRPC client URLs; give the binary listeners with --endpoints"
                .into(),
        );
    }
    let dns = corekv_dns::Resolver::from_system()?;
    let found = srv::client_endpoints(&dns, &o.discovery_srv, &o.discovery_srv_name)?;
    let (https, http): (Vec<String>, Vec<String>) =
        found.into_iter().partition(|e| e.starts_with("https://"));
    for ep in &https {
        eprintln!("corekv-bench: ignoring discovered TLS endpoint {ep:?} (no TLS support)");
    }
    if http.is_empty() {
        return Err(format!(
            "--discovery-srv {}: no http endpoints in the SRV records",
            o.discovery_srv
        ));
    }
    o.endpoints = http;
    Ok(())
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("corekv-bench: {e}\n(see corekv-bench --help)");
            std::process::exit(2);
        }
    };
    let fail = |e: String| -> ! {
        eprintln!("corekv-bench: {e}");
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    };
    match opts.command {
        Command::FsyncFloor => return fsync_floor(&opts).unwrap_or_else(|e| fail(e)),
        Command::FreePorts => return free_ports(&opts).unwrap_or_else(|e| fail(e)),
        _ => {}
    }
    let mut opts = opts;
    if !opts.discovery_srv.is_empty() {
        discover_endpoints(&mut opts).unwrap_or_else(|e| fail(e));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start tokio runtime: {e}")));
    if opts.command == Command::WatchLatency && opts.protocol == Protocol::Binary {
        let report = runtime
            .block_on(binary_watch::bench(opts.clone()))
            .unwrap_or_else(|e| fail(e));
        binary_watch::print(&opts, &report);
        if let Some(path) = &opts.plot {
            let title = format!(
                "watch-latency over binary, {} watchers (put-to-event latency)",
                opts.watchers
            );
            write_plot(path, &title, &report.latency, None).unwrap_or_else(|e| fail(e));
        }
        let _ = std::io::stdout().flush();
        std::process::exit(if report.passed() { 0 } else { 1 });
    }
    if matches!(opts.command, Command::WatchLatency | Command::Watch) {
        let report = runtime
            .block_on(watch::bench(opts.clone()))
            .unwrap_or_else(|e| fail(e));
        if opts.json {
            watch::print_json(&opts, &report);
        } else {
            watch::print_text(&opts, &report);
        }
        if let Some(path) = &opts.plot {
            let title = format!(
                "{} over grpc, {} watchers (put-to-event latency)",
                opts.command.name(),
                opts.watchers
            );
            write_plot(path, &title, &report.latency, None).unwrap_or_else(|e| fail(e));
        }
        let _ = std::io::stdout().flush();
        watch::complain(&report);
        // Stream tasks may still hold connections; do not wait for them.
        std::process::exit(if report.passed() { 0 } else { 1 });
    }
    let report = runtime
        .block_on(bench(opts.clone()))
        .unwrap_or_else(|e| fail(e));
    if opts.json {
        print_json(&opts, &report);
    } else {
        print_text(&opts, &report);
    }
    if let Some(path) = &opts.plot {
        let title = format!(
            "{} over {}, {} conns / {} clients",
            opts.command.name(),
            opts.protocol.name(),
            opts.conns,
            opts.clients
        );
        write_plot(path, &title, &report.tally, Some(report.elapsed)).unwrap_or_else(|e| fail(e));
    }
    if report.tally.ok == 0 {
        eprintln!(
            "corekv-bench: no request succeeded{}",
            report
                .first_error
                .as_ref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
        std::process::exit(1);
    }
}
