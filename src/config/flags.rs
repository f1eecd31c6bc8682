//! The flag table, Go-style command-line parsing, environment lookup and usage text.

use super::ConfigError;
use std::collections::HashMap;
use std::path::PathBuf;

/// A flag's default: a literal parsed like user input, or derived from other flags.
pub(super) enum FlagDefault {
    /// Parsed like a user-supplied value when the flag is not set.
    Value(&'static str),
    /// Computed from other settings; the text documents how.
    Derived(&'static str),
}

/// One accepted flag (also a config-file key and an environment variable).
pub(super) struct FlagSpec {
    pub name: &'static str,
    pub default: FlagDefault,
    pub help: &'static str,
}

use FlagDefault::{Derived, Value};

/// Every value-taking flag, in usage order.
pub(super) const FLAGS: &[FlagSpec] = &[
    FlagSpec { name: "name", default: Value("default"), help: "Human-readable name for this member." },
    FlagSpec { name: "data-dir", default: Derived("<name>.corekv"), help: "Path to the data directory." },
    FlagSpec { name: "listen-client-urls", default: Value("http://localhost:2379"), help: "List of URLs to listen on for client traffic (comma separated)." },
    FlagSpec { name: "advertise-client-urls", default: Value("http://localhost:2379"), help: "List of this member's client URLs to advertise to the public (comma separated)." },
    FlagSpec { name: "listen-peer-urls", default: Value("http://localhost:2380"), help: "List of URLs to listen on for peer traffic (comma separated)." },
    FlagSpec { name: "initial-advertise-peer-urls", default: Value("http://localhost:2380"), help: "List of this member's peer URLs to advertise to the rest of the cluster (comma separated)." },
    FlagSpec { name: "initial-cluster", default: Derived("<name>=<initial-advertise-peer-urls>, i.e. default=http://localhost:2380"), help: "Initial cluster configuration for bootstrapping: name=url pairs, comma separated." },
    FlagSpec { name: "initial-cluster-state", default: Value("new"), help: "Initial cluster state ('new' or 'existing')." },
    FlagSpec { name: "discovery", default: Value(""), help: "Discovery URL used to bootstrap the cluster (etcd's v2 discovery protocol)." },
    FlagSpec { name: "discovery-fallback", default: Value("proxy"), help: "Expected behavior ('exit' or 'proxy') when discovery services fails. 'proxy': a member that finds the cluster full forwards client connections to the members instead." },
    FlagSpec { name: "proxy-failure-wait", default: Value("5000"), help: "Time (in milliseconds) an endpoint will be held in a failed state (proxy mode)." },
    FlagSpec { name: "proxy-refresh-interval", default: Value("30000"), help: "Time (in milliseconds) of the endpoints refresh interval (proxy mode)." },
    FlagSpec { name: "proxy-dial-timeout", default: Value("1000"), help: "Time (in milliseconds) for a dial to timeout (proxy mode)." },
    FlagSpec { name: "discovery-proxy", default: Value(""), help: "HTTP proxy to use for traffic to discovery service." },
    FlagSpec { name: "discovery-srv", default: Value(""), help: "DNS domain used to bootstrap initial cluster (SRV records _etcd-server-ssl._tcp.DOMAIN and _etcd-server._tcp.DOMAIN). The name servers are /etc/resolv.conf's, or COREKV_DNS_SERVER=host:port if set." },
    FlagSpec { name: "discovery-srv-name", default: Value(""), help: "Suffix to the dns srv name queried when bootstrapping." },
    FlagSpec { name: "initial-cluster-token", default: Value("etcd-cluster"), help: "Initial cluster token for the cluster during bootstrap." },
    FlagSpec { name: "snapshot-count", default: Value("100000"), help: "Number of committed transactions to trigger a snapshot to disk." },
    FlagSpec { name: "heartbeat-interval", default: Value("100"), help: "Time (in milliseconds) of a heartbeat interval." },
    FlagSpec { name: "election-timeout", default: Value("1000"), help: "Time (in milliseconds) for an election to timeout." },
    FlagSpec { name: "quota-backend-bytes", default: Value("0"), help: "Raise alarms when backend size exceeds the given quota (0 means the 2 GiB default)." },
    FlagSpec { name: "max-request-bytes", default: Value("1572864"), help: "Maximum client request size in bytes the server will accept." },
    FlagSpec { name: "max-txn-ops", default: Value("128"), help: "Maximum number of operations permitted in a transaction." },
    FlagSpec { name: "auto-compaction-retention", default: Value("0"), help: "Auto compaction retention length. 0 means disable auto compaction." },
    FlagSpec { name: "auto-compaction-mode", default: Value("periodic"), help: "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention." },
    FlagSpec { name: "log-level", default: Value("info"), help: "Configures log level. Only supports debug, info, warn, error, panic, or fatal." },
    FlagSpec { name: "listen-metrics-urls", default: Value(""), help: "List of URLs to listen on for the /metrics and /health endpoints (comma separated)." },
    FlagSpec { name: "config-file", default: Value(""), help: "Path to the server configuration file (YAML with etcd's keys). When set, other flags and environment variables are ignored." },
    FlagSpec { name: "listen-binary-urls", default: Derived("each --listen-client-urls URL with its port + 1, or the next port up that no other --listen-*-urls URL uses (2381 with etcd's defaults)"), help: "corekv: list of URLs to serve the binary protocol on (docs/protocol.md); empty to turn it off." },
    FlagSpec { name: "cores", default: Derived("all online cores"), help: "corekv: number of cores to run on (1 up to the number of online cores)." },
    FlagSpec { name: "sequencer-cpu", default: Value("auto"), help: "corekv: CPU to pin the sequencer (raft log, WAL write + fdatasync) to; auto: the CPU that takes the WAL disk's completion interrupts when a single one does, else the first CPU used." },
    FlagSpec { name: "lease-checkpoint-interval", default: Value("300000"), help: "corekv: time (in milliseconds) between lease checkpoints, which record remaining TTLs so a restart does not renew leases." },
    FlagSpec { name: "auto-compaction-revision-interval", default: Value("300000"), help: "corekv: time (in milliseconds) between revision-mode auto compactions (etcd's fixed 5 minutes)." },
    FlagSpec { name: "auth-token", default: Value("simple"), help: "Specify auth token specific options: 'simple', or 'jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256[,ttl=5m]'." },
    FlagSpec { name: "auth-token-ttl", default: Value("300"), help: "The lifetime in seconds of the auth (simple) token." },
    FlagSpec { name: "bcrypt-cost", default: Value("10"), help: "Specify bcrypt algorithm cost factor for auth password hashing (4..31)." },
    FlagSpec { name: "cert-file", default: Value(""), help: "Path to the client server TLS cert file." },
    FlagSpec { name: "key-file", default: Value(""), help: "Path to the client server TLS key file." },
    FlagSpec { name: "trusted-ca-file", default: Value(""), help: "Path to the client server TLS trusted CA cert file." },
    FlagSpec { name: "client-cert-auth", default: Value("false"), help: "Enable client cert authentication." },
    FlagSpec { name: "auto-tls", default: Value("false"), help: "Client TLS using generated certificates." },
    FlagSpec { name: "peer-cert-file", default: Value(""), help: "Path to the peer server TLS cert file." },
    FlagSpec { name: "peer-key-file", default: Value(""), help: "Path to the peer server TLS key file." },
    FlagSpec { name: "peer-trusted-ca-file", default: Value(""), help: "Path to the peer server TLS trusted CA file." },
    FlagSpec { name: "peer-client-cert-auth", default: Value("false"), help: "Enable peer client cert authentication." },
    FlagSpec { name: "peer-auto-tls", default: Value("false"), help: "Peer TLS using generated certificates." },
];

/// Go boolean flags: given alone (`--client-cert-auth`) they mean true and take no
/// argument from the next word.
const BOOL_FLAGS: &[&str] = &[
    "client-cert-auth",
    "auto-tls",
    "peer-client-cert-auth",
    "peer-auto-tls",
];

/// Looks a flag up by its name (without dashes).
pub(super) fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.name == name)
}

/// The literal default of `flag`, or `None` if it is derived.
pub(super) fn literal_default(flag: &str) -> Option<&'static str> {
    match lookup(flag)?.default {
        Value(v) => Some(v),
        Derived(_) => None,
    }
}

/// Where a raw value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// The command line.
    Flag,
    /// The named environment variable.
    Env(String),
    /// The config file at this path.
    File(PathBuf),
}

/// An unparsed flag value and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Raw {
    pub value: String,
    pub source: Source,
}

/// Raw values by flag name.
pub(super) type RawMap = HashMap<&'static str, Raw>;

/// The outcome of reading the command line.
pub(super) enum Cli {
    Help,
    Version,
    Values(RawMap),
}

/// Parses Go-style flags: `--f=v`, `--f v`, `-f=v`, `-f v`, `-h`, `--help`, `--version`.
pub(super) fn parse_args(args: &[String]) -> Result<Cli, ConfigError> {
    let mut values = RawMap::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            match rest.next() {
                Some(extra) => return Err(unexpected(extra)),
                None => break,
            }
        }
        let (name, inline) = split_arg(arg)?;
        match name {
            "h" | "help" => return Ok(Cli::Help),
            "version" if version_requested(inline)? => return Ok(Cli::Version),
            "version" => continue,
            _ => {}
        }
        let spec =
            lookup(name).ok_or_else(|| err(format!("unknown flag: --{name} (see --help)")))?;
        let value = match inline {
            Some(v) => v.to_string(),
            None if BOOL_FLAGS.contains(&spec.name) => "true".to_string(),
            None => rest
                .next()
                .ok_or_else(|| err(format!("flag needs an argument: --{name}")))?
                .clone(),
        };
        values.insert(
            spec.name,
            Raw {
                value,
                source: Source::Flag,
            },
        );
    }
    Ok(Cli::Values(values))
}

/// Splits `--name=value` / `-name` into the name and the optional inline value.
fn split_arg(arg: &str) -> Result<(&str, Option<&str>), ConfigError> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
    let body = match body {
        Some(b) if !b.is_empty() && !b.starts_with(['-', '=']) => b,
        Some(_) => return Err(err(format!("bad flag syntax: {arg}"))),
        None => return Err(unexpected(arg)),
    };
    Ok(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    })
}

/// A Go boolean flag's value.
pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("expected a boolean (true or false)".into()),
    }
}

/// `--version` is a Go boolean flag: `--version=false` does not print the version.
fn version_requested(inline: Option<&str>) -> Result<bool, ConfigError> {
    match inline {
        None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(err(format!("invalid boolean value {v:?} for --version"))),
    }
}

/// Collects flag values from `COREKV_*` and `ETCD_*` variables (`COREKV_` wins).
///
/// Empty variables are ignored, as etcd does; variables with either prefix
/// that name no known flag are logged and ignored.
pub(super) fn env_values(env: &[(String, String)]) -> RawMap {
    let mut values = RawMap::new();
    for prefix in ["ETCD_", "COREKV_"] {
        for (key, value) in env {
            let Some(suffix) = key.strip_prefix(prefix) else {
                continue;
            };
            let Some(spec) = lookup(&suffix.to_ascii_lowercase().replace('_', "-")) else {
                log::warn!("unrecognized environment variable {key}={value:?}: ignored");
                continue;
            };
            if value.is_empty() {
                continue;
            }
            let raw = Raw {
                value: value.clone(),
                source: Source::Env(key.clone()),
            };
            if let Some(old) = values.insert(spec.name, raw) {
                log::warn!(
                    "environment variable {} is shadowed by {key}",
                    env_name(&old)
                );
            }
        }
    }
    values
}

/// The environment variable a raw value came from, or "" if it came from elsewhere.
pub(super) fn env_name(raw: &Raw) -> &str {
    match &raw.source {
        Source::Env(key) => key,
        _ => "",
    }
}

/// The `--help` text: every flag with its default.
pub(super) fn usage() -> String {
    let mut out = String::from(USAGE_HEAD);
    for spec in FLAGS {
        out.push_str(&format!(
            "  --{} <value>\n        {} {}\n",
            spec.name,
            spec.help,
            default_text(spec)
        ));
    }
    out.push_str("  -h, --help\n        Show this help and exit.\n");
    out.push_str("  --version\n        Print the version and exit.\n");
    out
}

const USAGE_HEAD: &str = "\
Usage: corekv [flags]

An etcd v3 compatible key-value server. Flags have etcd's names, meanings and
defaults, and are written --flag=value, --flag value, -flag=value or -flag value.
Every flag can also be set in the environment as COREKV_<FLAG> or ETCD_<FLAG>
(upper case, dashes as underscores, e.g. COREKV_DATA_DIR); COREKV_ wins over
ETCD_ and the command line wins over both. When --config-file is given, only
the file is read: other flags and environment variables are ignored.

Flags:
";

/// `(default "x")`, `(default: none)` or `(default: <how it is derived>)`.
fn default_text(spec: &FlagSpec) -> String {
    match spec.default {
        Value("") => "(default: none)".to_string(),
        Value(v) => format!("(default \"{v}\")"),
        Derived(how) => format!("(default: {how})"),
    }
}

fn unexpected(arg: &str) -> ConfigError {
    err(format!(
        "unexpected argument {arg:?}: corekv takes only flags (see --help)"
    ))
}

fn err(message: String) -> ConfigError {
    ConfigError(message)
}
