//! Command line, environment and config-file handling for corekv.
//!
//! corekv accepts etcd's flags with etcd's names, meanings and defaults so an
//! existing etcd deployment can switch binaries without rewriting its unit
//! files:
//!
//! * Go `flag` syntax: `--flag=value`, `--flag value`, `-flag=value`, `-flag value`.
//! * Every flag can also come from the environment as `COREKV_<FLAG>` or
//!   `ETCD_<FLAG>` (upper case, dashes as underscores); `COREKV_` wins over
//!   `ETCD_`, and the command line wins over both.
//! * With `--config-file` (etcd's YAML keys) the file is the only source, as in
//!   etcd: other flags and environment variables are ignored, with a warning.
//!
//! [`Config::load`] turns the arguments and environment into an [`Action`].

mod build;
mod compaction;
mod file;
mod flags;
mod ids;
mod url;
mod validate;

#[cfg(test)]
mod tests;

pub use ids::member_id as member_id_of;
pub use ids::{cluster_id, member_id};
#[allow(unused_imports)] // `Scheme` is for callers matching on `Url::scheme`.
pub use url::{Scheme, Url};

use std::fmt;
use std::path::PathBuf;

/// How a new cluster finds its members when --initial-cluster is not given in full.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Discovery {
    /// `--discovery`: an etcd v2 keys URL ending in the cluster's token; empty if unused.
    pub url: String,
    /// `--discovery-fallback`: `exit` or `proxy`.
    pub fallback: String,
    /// `--discovery-proxy`: HTTP proxy for discovery requests; empty if none.
    pub proxy: String,
    /// `--discovery-srv`: DNS domain whose SRV records list the members; empty if unused.
    pub srv: String,
    /// `--discovery-srv-name`: suffix of the SRV names queried.
    pub srv_name: String,
    /// `--proxy-failure-wait`: how long a member whose client URL refused a connection is
    /// skipped by the proxy (proxy mode: see `proxy.rs`).
    pub proxy_failure_wait_ms: u64,
    /// `--proxy-refresh-interval`: how often the proxy asks the members for their client URLs.
    pub proxy_refresh_interval_ms: u64,
    /// `--proxy-dial-timeout`: how long the proxy waits for a member to accept a connection.
    pub proxy_dial_timeout_ms: u64,
}

/// The fully resolved and validated server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--name`: human-readable member name.
    pub name: String,
    /// `--data-dir`: defaults to `<name>.corekv`.
    pub data_dir: PathBuf,
    /// `--listen-client-urls`: where to accept client (gRPC) traffic.
    pub listen_client_urls: Vec<Url>,
    /// `--advertise-client-urls`: client URLs published to other members and clients.
    pub advertise_client_urls: Vec<Url>,
    /// `--listen-peer-urls`: where to accept peer (raft) traffic.
    pub listen_peer_urls: Vec<Url>,
    /// `--initial-advertise-peer-urls`: this member's peer URLs at bootstrap.
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--initial-cluster`: `(member name, peer URL)` pairs; a name may repeat.
    pub initial_cluster: Vec<(String, Url)>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`: salts member and cluster IDs.
    pub initial_cluster_token: String,
    /// `--discovery*`: bootstrap through a discovery service instead of --initial-cluster.
    pub discovery: Discovery,
    /// `--snapshot-count`: committed entries between snapshots.
    pub snapshot_count: u64,
    /// `--heartbeat-interval` in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` in milliseconds.
    pub election_timeout_ms: u64,
    /// `--quota-backend-bytes`, effective value (etcd's `0` is stored as 2 GiB).
    pub quota_backend_bytes: u64,
    /// `--max-request-bytes`: largest client request accepted.
    pub max_request_bytes: u64,
    /// `--max-txn-ops`: most operations allowed in one transaction.
    pub max_txn_ops: u64,
    /// `--log-level`.
    pub log_level: LogLevel,
    /// `--listen-metrics-urls`: extra listeners for `/metrics` and `/health` (may be empty).
    pub listen_metrics_urls: Vec<Url>,
    /// `--listen-binary-urls` (corekv only): where to serve the binary protocol
    /// (docs/protocol.md); by default each client URL with its port + 1, or the next port up
    /// that no other listen URL of this member uses; empty = off.
    pub listen_binary_urls: Vec<Url>,
    /// Whether `listen_binary_urls` is the derived default (not given): a default port that
    /// something else holds is then skipped with a warning instead of failing the start.
    pub listen_binary_urls_derived: bool,
    /// `--cores` (corekv only): number of cores to run on, 1..=online cores.
    pub cores: usize,
    /// `--sequencer-cpu` (corekv only): the CPU the sequencer (raft log, WAL write +
    /// fdatasync) is pinned to; `None` for auto (see `cores::io_completion_cpu`).
    pub sequencer_cpu: Option<usize>,
    /// `--lease-checkpoint-interval` (corekv only) in milliseconds: how often the leader
    /// records leases' remaining TTLs in the log (etcd's fixed 5 minutes by default).
    pub lease_checkpoint_interval_ms: u64,
    /// `--auto-compaction-mode`: "periodic" (the flag's default), "revision", or "" (what
    /// etcd assumes when a config file leaves it out).
    pub auto_compaction_mode: String,
    /// `--auto-compaction-retention` as given (validated against the mode); "0" = off.
    pub auto_compaction_retention: String,
    /// `--auto-compaction-revision-interval` (corekv only) in milliseconds: how often
    /// revision-mode auto-compaction runs (etcd's fixed 5 minutes by default).
    pub auto_compaction_revision_interval_ms: u64,
    /// `--auth-token`: `simple` or `jwt,...` as given (parsed by the network layer, which
    /// reads the key files).
    pub auth_token: String,
    /// `--auth-token-ttl` in seconds (simple tokens).
    pub auth_token_ttl_secs: u64,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, `--auto-tls`:
    /// TLS on https client URLs.
    pub client_tls: TlsSettings,
    /// The `--peer-*` set of the same: kept for the peer transport.
    pub peer_tls: TlsSettings,
}

/// One listener family's TLS flags, as etcd's `TLSInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    /// Require and verify client certificates against the trusted CA.
    pub client_cert_auth: bool,
    /// Generate a self-signed certificate when no cert/key files are given.
    pub auto_tls: bool,
}

impl TlsSettings {
    /// Whether anything TLS was asked for.
    pub fn is_set(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.auto_tls
    }
}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster.
    New,
    /// Join an existing cluster (not supported by this build yet).
    Existing,
}

/// `--log-level`, with etcd's level names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `debug`
    Debug,
    /// `info` (the default)
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// `panic` (logs like `error`)
    Panic,
    /// `fatal` (logs like `error`)
    Fatal,
}

impl LogLevel {
    /// The `log` crate filter for this level; `panic` and `fatal` log errors only.
    #[allow(clippy::wrong_self_convention)] // the signature the server expects
    pub fn to_log_filter(&self) -> log::LevelFilter {
        match self {
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => log::LevelFilter::Error,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // built once at start-up
pub enum Action {
    /// Run the server with this configuration.
    Run(Config),
    /// `--help`/`-h`: print this usage text and exit 0.
    Help(String),
    /// `--version`: print [`version_text`] and exit 0.
    Version,
}

/// A configuration error; `Display` is the message (main prints `corekv: <msg>`, exits 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The text printed for `--version`.
pub fn version_text() -> String {
    format!(
        "corekv Version: {}\nAPI compatibility: etcd v3",
        env!("CARGO_PKG_VERSION")
    )
}

impl Config {
    /// Parses `args` (without the program name) and `env` (`std::env::vars()`).
    pub fn load(args: Vec<String>, env: Vec<(String, String)>) -> Result<Action, ConfigError> {
        Self::load_with_cores(&args, &env, online_cores(), &system_resolve)
    }

    /// [`Config::load`] with the number of online cores and the host name resolver given
    /// (for tests).
    fn load_with_cores(
        args: &[String],
        env: &[(String, String)],
        online: usize,
        resolve: validate::Resolve<'_>,
    ) -> Result<Action, ConfigError> {
        let cli = match flags::parse_args(args)? {
            flags::Cli::Help => return Ok(Action::Help(flags::usage())),
            flags::Cli::Version => return Ok(Action::Version),
            flags::Cli::Values(values) => values,
        };
        let raw = file::resolve_sources(cli, flags::env_values(env))?;
        let config = build::build(&raw, online)?;
        validate::validate(&config, resolve)?;
        Ok(Action::Run(config))
    }

    /// The checks of this member's place in the initial cluster, for a cluster found by
    /// DNS discovery after the flags were read (names resolved with the system's DNS).
    pub fn verify_bootstrap(&self) -> Result<(), ConfigError> {
        validate::verify_bootstrap(self, &system_resolve)
    }

    /// This member's ID, derived from its peer URLs and the cluster token like etcd.
    pub fn member_id(&self) -> u64 {
        member_id(
            &self.initial_advertise_peer_urls,
            &self.initial_cluster_token,
        )
    }

    /// The names of the `--initial-cluster` members, sorted, each once.
    pub fn member_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .initial_cluster
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The cluster ID derived from the `--initial-cluster` members like etcd.
    pub fn cluster_id(&self) -> u64 {
        let ids: Vec<u64> = self
            .member_names()
            .iter()
            .map(|n| member_id(&self.peer_urls_of(n), &self.initial_cluster_token))
            .collect();
        cluster_id(&ids)
    }

    /// Auto-compaction as the flags ask for it; `None` when off.
    pub fn auto_compaction(&self) -> Option<crate::sequencer::AutoCompaction> {
        // Validated when the configuration was built.
        let retention = compaction::parse_retention(
            &self.auto_compaction_mode,
            &self.auto_compaction_retention,
        )
        .ok()??;
        Some(match retention {
            compaction::Retention::Periodic(period) => {
                crate::sequencer::AutoCompaction::Periodic(period)
            }
            compaction::Retention::Revisions(retention) => {
                crate::sequencer::AutoCompaction::Revision {
                    retention,
                    interval: std::time::Duration::from_millis(
                        self.auto_compaction_revision_interval_ms.max(1),
                    ),
                }
            }
        })
    }

    /// Parses an `--initial-cluster` value (`name=url,...`), as a discovery service returns.
    pub fn parse_initial_cluster(text: &str) -> Result<Vec<(String, Url)>, String> {
        build::parse_cluster(text)
    }

    /// The `--initial-cluster` URLs listed for member `name`.
    pub fn peer_urls_of(&self, name: &str) -> Vec<Url> {
        self.initial_cluster
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, u)| u.clone())
            .collect()
    }
}

/// Resolves a host name as etcd's URL checks do: `/etc/hosts`, then DNS.
fn system_resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    corekv_dns::Resolver::from_system()?
        .resolve_tcp(host, port)
        .map_err(|e| e.to_string())
}

/// Number of online cores (1 if it cannot be determined).
fn online_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
