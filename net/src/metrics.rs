//! Process-wide metrics: atomics only, so recording never takes a lock on a hot path, and
//! a Prometheus text rendering for `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

/// A fixed-bucket histogram (Prometheus semantics: cumulative `le` buckets on render).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in the histogram's unit times 1e6 (micro-units), kept integral for atomics.
    sum_micros: AtomicU64,
}

/// Latency buckets in seconds: 100 µs .. ~13 s, doubling (etcd uses similar ranges).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536, 13.1072,
];
/// Count buckets (batch sizes): 1 .. 16384, doubling.
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    16384.0,
];
/// Byte buckets (batch sizes): 256 B .. 16 MiB, quadrupling.
pub const BYTES_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

impl Histogram {
    /// An empty histogram over the given upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            buckets: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Relaxed);
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// The gRPC methods corekv counts, in a fixed order (array index = discriminant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    Status,
    MemberList,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    MemberPromote,
    MoveLeader,
    Alarm,
    LeaseGrant,
    LeaseRevoke,
    /// One keep-alive request on a LeaseKeepAlive stream.
    LeaseKeepAlive,
    LeaseTimeToLive,
    LeaseLeases,
    Defragment,
    Hash,
    HashKv,
    Snapshot,
}

impl Method {
    const ALL: [Method; 22] = [
        Method::Range,
        Method::Put,
        Method::DeleteRange,
        Method::Txn,
        Method::Compact,
        Method::Status,
        Method::MemberList,
        Method::MemberAdd,
        Method::MemberRemove,
        Method::MemberUpdate,
        Method::MemberPromote,
        Method::MoveLeader,
        Method::Alarm,
        Method::LeaseGrant,
        Method::LeaseRevoke,
        Method::LeaseKeepAlive,
        Method::LeaseTimeToLive,
        Method::LeaseLeases,
        Method::Defragment,
        Method::Hash,
        Method::HashKv,
        Method::Snapshot,
    ];

    fn service_and_name(self) -> (&'static str, &'static str) {
        match self {
            Method::Range => ("etcdserverpb.KV", "Range"),
            Method::Put => ("etcdserverpb.KV", "Put"),
            Method::DeleteRange => ("etcdserverpb.KV", "DeleteRange"),
            Method::Txn => ("etcdserverpb.KV", "Txn"),
            Method::Compact => ("etcdserverpb.KV", "Compact"),
            Method::Status => ("etcdserverpb.Maintenance", "Status"),
            Method::MemberList => ("etcdserverpb.Cluster", "MemberList"),
            Method::MemberAdd => ("etcdserverpb.Cluster", "MemberAdd"),
            Method::MemberRemove => ("etcdserverpb.Cluster", "MemberRemove"),
            Method::MemberUpdate => ("etcdserverpb.Cluster", "MemberUpdate"),
            Method::MemberPromote => ("etcdserverpb.Cluster", "MemberPromote"),
            Method::MoveLeader => ("etcdserverpb.Maintenance", "MoveLeader"),
            Method::Alarm => ("etcdserverpb.Maintenance", "Alarm"),
            Method::LeaseGrant => ("etcdserverpb.Lease", "LeaseGrant"),
            Method::LeaseRevoke => ("etcdserverpb.Lease", "LeaseRevoke"),
            Method::LeaseKeepAlive => ("etcdserverpb.Lease", "LeaseKeepAlive"),
            Method::LeaseTimeToLive => ("etcdserverpb.Lease", "LeaseTimeToLive"),
            Method::LeaseLeases => ("etcdserverpb.Lease", "LeaseLeases"),
            Method::Defragment => ("etcdserverpb.Maintenance", "Defragment"),
            Method::Hash => ("etcdserverpb.Maintenance", "Hash"),
            Method::HashKv => ("etcdserverpb.Maintenance", "HashKV"),
            Method::Snapshot => ("etcdserverpb.Maintenance", "Snapshot"),
        }
    }
}

struct MethodStats {
    ok: AtomicU64,
    failed: AtomicU64,
    latency: Histogram,
}

/// Every metric corekv exports.
pub struct Metrics {
    methods: Vec<MethodStats>,
    /// Duration of the WAL's write + fdatasync per batch.
    pub wal_fsync_seconds: Histogram,
    /// Duration of one revision store commit (a batch of applied changes).
    pub backend_commit_seconds: Histogram,
    /// Proposals per WAL batch (the group-commit size).
    pub batch_entries: Histogram,
    /// Bytes per WAL batch.
    pub batch_bytes: Histogram,
    /// The key space's current revision.
    pub current_revision: AtomicI64,
    /// The compacted revision.
    pub compact_revision: AtomicI64,
    /// Size of the data on disk (WAL bytes until the revision store lands).
    pub db_size_bytes: AtomicI64,
    /// Live keys.
    pub keys: AtomicI64,
    /// Proposals that failed before being applied.
    pub proposals_failed: AtomicU64,
    /// Proposals applied.
    pub proposals_applied: AtomicU64,
    /// Open watch streams.
    pub watch_streams: AtomicI64,
    /// Watchers on all streams.
    pub watchers: AtomicI64,
    /// Watchers currently catching up from history (their stream was too slow).
    pub slow_watchers: AtomicI64,
    /// Events sent to watchers.
    pub watch_events_sent: AtomicU64,
    /// Leases granted (applied grants).
    pub leases_granted: AtomicU64,
    /// Leases currently granted.
    pub leases_live: AtomicI64,
    /// Leases revoked because they expired.
    pub lease_expirations: AtomicU64,
    /// Raft: leader changes seen by this member (etcd_server_leader_changes_seen_total).
    pub leader_changes: AtomicU64,
    /// 1 if this member knows a leader.
    pub has_leader: AtomicI64,
    /// 1 if this member is the leader.
    pub is_leader: AtomicI64,
    /// Entries committed (etcd_server_proposals_committed_total is the commit index).
    pub proposals_committed: AtomicU64,
    /// Proposals waiting to be applied.
    pub proposals_pending: AtomicI64,
    /// Round-trip time of pings to peers.
    pub peer_round_trip_seconds: Histogram,
    /// Snapshots sent to followers, and those that failed.
    pub snapshot_sends: AtomicU64,
    pub snapshot_send_failures: AtomicU64,
    /// Duration of a successful snapshot send.
    pub snapshot_send_seconds: Histogram,
    /// Snapshots received and installed.
    pub snapshot_installs: AtomicU64,
    /// Raft messages dropped because a peer's queue was full or it was unreachable.
    pub peer_messages_dropped: AtomicU64,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            methods: Method::ALL
                .iter()
                .map(|_| MethodStats {
                    ok: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    latency: Histogram::new(SECONDS_BUCKETS),
                })
                .collect(),
            wal_fsync_seconds: Histogram::new(SECONDS_BUCKETS),
            backend_commit_seconds: Histogram::new(SECONDS_BUCKETS),
            batch_entries: Histogram::new(COUNT_BUCKETS),
            leader_changes: AtomicU64::new(0),
            has_leader: AtomicI64::new(0),
            is_leader: AtomicI64::new(0),
            proposals_committed: AtomicU64::new(0),
            proposals_pending: AtomicI64::new(0),
            peer_round_trip_seconds: Histogram::new(SECONDS_BUCKETS),
            snapshot_sends: AtomicU64::new(0),
            snapshot_send_failures: AtomicU64::new(0),
            snapshot_send_seconds: Histogram::new(SECONDS_BUCKETS),
            snapshot_installs: AtomicU64::new(0),
            peer_messages_dropped: AtomicU64::new(0),
            batch_bytes: Histogram::new(BYTES_BUCKETS),
            current_revision: AtomicI64::new(1),
            compact_revision: AtomicI64::new(0),
            db_size_bytes: AtomicI64::new(0),
            keys: AtomicI64::new(0),
            proposals_failed: AtomicU64::new(0),
            proposals_applied: AtomicU64::new(0),
            watch_streams: AtomicI64::new(0),
            watchers: AtomicI64::new(0),
            slow_watchers: AtomicI64::new(0),
            watch_events_sent: AtomicU64::new(0),
            leases_granted: AtomicU64::new(0),
            leases_live: AtomicI64::new(0),
            lease_expirations: AtomicU64::new(0),
        }
    }

    /// Records one handled request.
    pub fn record(&self, method: Method, ok: bool, elapsed: Duration) {
        let stats = &self.methods[method as usize];
        if ok {
            stats.ok.fetch_add(1, Relaxed);
        } else {
            stats.failed.fetch_add(1, Relaxed);
        }
        stats.latency.observe_duration(elapsed);
    }

    /// Renders everything as Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str(
            "# HELP corekv_grpc_requests_total gRPC requests handled, by method and result.\n",
        );
        out.push_str("# TYPE corekv_grpc_requests_total counter\n");
        for (method, stats) in Method::ALL.iter().zip(&self.methods) {
            let (service, name) = method.service_and_name();
            for (code, counter) in [("OK", &stats.ok), ("Error", &stats.failed)] {
                let _ = writeln!(
                    out,
                    "corekv_grpc_requests_total{{grpc_service=\"{service}\",grpc_method=\"{name}\",grpc_code=\"{code}\"}} {}",
                    counter.load(Relaxed)
                );
            }
        }
        out.push_str(
            "# HELP corekv_grpc_request_duration_seconds gRPC request latency, by method.\n",
        );
        out.push_str("# TYPE corekv_grpc_request_duration_seconds histogram\n");
        for (method, stats) in Method::ALL.iter().zip(&self.methods) {
            let (service, name) = method.service_and_name();
            let labels = format!("grpc_service=\"{service}\",grpc_method=\"{name}\"");
            stats
                .latency
                .render(&mut out, "corekv_grpc_request_duration_seconds", &labels);
        }
        histogram(
            &mut out,
            "corekv_wal_fsync_duration_seconds",
            "WAL write + fdatasync per batch.",
            &self.wal_fsync_seconds,
        );
        histogram(
            &mut out,
            "corekv_backend_commit_duration_seconds",
            "Revision store commit per batch.",
            &self.backend_commit_seconds,
        );
        histogram(
            &mut out,
            "corekv_wal_batch_entries",
            "Proposals per WAL batch (group commit size).",
            &self.batch_entries,
        );
        histogram(
            &mut out,
            "corekv_wal_batch_bytes",
            "Bytes per WAL batch.",
            &self.batch_bytes,
        );
        gauge(
            &mut out,
            "corekv_mvcc_current_revision",
            "Current revision of the key space.",
            self.current_revision.load(Relaxed),
        );
        gauge(
            &mut out,
            "corekv_mvcc_compact_revision",
            "Compacted revision.",
            self.compact_revision.load(Relaxed),
        );
        gauge(
            &mut out,
            "corekv_mvcc_keys",
            "Live keys.",
            self.keys.load(Relaxed),
        );
        gauge(
            &mut out,
            "corekv_db_size_bytes",
            "Bytes on disk.",
            self.db_size_bytes.load(Relaxed),
        );
        counter(
            &mut out,
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
            self.leader_changes.load(Relaxed),
        );
        gauge(
            &mut out,
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            self.has_leader.load(Relaxed),
        );
        gauge(
            &mut out,
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            self.is_leader.load(Relaxed),
        );
        counter(
            &mut out,
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            self.proposals_committed.load(Relaxed),
        );
        counter(
            &mut out,
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            self.proposals_applied.load(Relaxed),
        );
        gauge(
            &mut out,
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            self.proposals_pending.load(Relaxed),
        );
        counter(
            &mut out,
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
            self.proposals_failed.load(Relaxed),
        );
        histogram(
            &mut out,
            "etcd_network_peer_round_trip_time_seconds",
            "Round-trip-time histogram between peers.",
            &self.peer_round_trip_seconds,
        );
        counter(
            &mut out,
            "etcd_network_snapshot_send_success",
            "Total number of successful snapshot sends.",
            self.snapshot_sends.load(Relaxed),
        );
        counter(
            &mut out,
            "etcd_network_snapshot_send_failures",
            "Total number of snapshot send failures.",
            self.snapshot_send_failures.load(Relaxed),
        );
        histogram(
            &mut out,
            "etcd_network_snapshot_send_total_duration_seconds",
            "Total latency distributions of v3 snapshot sends.",
            &self.snapshot_send_seconds,
        );
        counter(
            &mut out,
            "corekv_snapshot_installs_total",
            "Snapshots received from a leader and installed.",
            self.snapshot_installs.load(Relaxed),
        );
        counter(
            &mut out,
            "corekv_peer_messages_dropped_total",
            "Raft messages dropped: the peer's queue was full or it was unreachable.",
            self.peer_messages_dropped.load(Relaxed),
        );
        counter(
            &mut out,
            "corekv_proposals_applied_total",
            "Proposals applied.",
            self.proposals_applied.load(Relaxed),
        );
        counter(
            &mut out,
            "corekv_proposals_failed_total",
            "Proposals that failed before apply.",
            self.proposals_failed.load(Relaxed),
        );
        gauge(
            &mut out,
            "corekv_watch_streams",
            "Open watch streams.",
            self.watch_streams.load(Relaxed),
        );
        gauge(
            &mut out,
            "corekv_watchers",
            "Watchers on all streams.",
            self.watchers.load(Relaxed),
        );
        gauge(
            &mut out,
            "corekv_slow_watchers",
            "Watchers catching up from history.",
            self.slow_watchers.load(Relaxed),
        );
        counter(
            &mut out,
            "corekv_watch_events_sent_total",
            "Events sent to watchers.",
            self.watch_events_sent.load(Relaxed),
        );
        counter(
            &mut out,
            "corekv_lease_granted_total",
            "Leases granted.",
            self.leases_granted.load(Relaxed),
        );
        gauge(
            &mut out,
            "corekv_leases",
            "Leases currently granted.",
            self.leases_live.load(Relaxed),
        );
        counter(
            &mut out,
            "corekv_lease_expired_total",
            "Leases revoked because they expired.",
            self.lease_expirations.load(Relaxed),
        );
        out
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    h.render(out, name, "");
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::new(COUNT_BUCKETS);
        for v in [1.0, 3.0, 3.0, 100000.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"16384\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
    }

    #[test]
    fn every_method_is_listed_at_its_own_index() {
        for (i, method) in Method::ALL.iter().enumerate() {
            assert_eq!(*method as usize, i, "{method:?}");
        }
        let text = Metrics::new().render();
        for name in [
            "Defragment",
            "Hash",
            "HashKV",
            "Snapshot",
            "Alarm",
            "Status",
        ] {
            let series = format!(
                "grpc_service=\"etcdserverpb.Maintenance\",grpc_method=\"{name}\",grpc_code=\"OK\""
            );
            assert!(text.contains(&series), "{name} missing");
        }
    }

    #[test]
    fn render_names_every_method() {
        let m = Metrics::new();
        m.record(Method::Put, true, Duration::from_micros(300));
        let text = m.render();
        assert!(text.contains("grpc_method=\"Put\",grpc_code=\"OK\"} 1"));
        assert!(text.contains("corekv_wal_fsync_duration_seconds_count 0"));
    }
}
