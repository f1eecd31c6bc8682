//! Turning raw flag text into a typed [`Config`] (defaults applied, values parsed).

use super::compaction;
use super::flags::{self, Raw, RawMap, Source};
use super::url::{parse_item, parse_url_list, Url};
use super::{ClusterState, Config, ConfigError, LogLevel, TlsSettings};
use std::path::PathBuf;

/// etcd's default backend quota, used when `--quota-backend-bytes` is 0.
pub(super) const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The --initial-cluster etcd derives from its default name and peer URL.
const ETCD_DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";

/// etcd warns above this quota.
const MAX_RECOMMENDED_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Builds the typed configuration from raw values; `online` is the online core count.
pub(super) fn build(raw: &RawMap, online: usize) -> Result<Config, ConfigError> {
    let r = Resolver { raw };
    let name = r.value("name", |s| Ok(s.to_string()))?;
    let initial_advertise_peer_urls = r.value("initial-advertise-peer-urls", parse_url_list)?;
    let discovery_url = r.value("discovery", |s| Ok(s.trim_end_matches('/').to_string()))?;
    let srv = r.value("discovery-srv", |s| Ok(s.to_string()))?;
    let srv_name = r.value("discovery-srv-name", |s| Ok(s.to_string()))?;
    let given_cluster = given_initial_cluster(raw, !discovery_url.is_empty() || !srv.is_empty());
    let bootstrap_flags = [!discovery_url.is_empty(), given_cluster, !srv.is_empty()];
    if bootstrap_flags.iter().filter(|set| **set).count() > 1 {
        return Err(ConfigError(
            "multiple discovery or bootstrap flags are set. \
             Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\""
                .into(),
        ));
    }
    let any_discovery = !discovery_url.is_empty() || !srv.is_empty() || !srv_name.is_empty();
    let initial_cluster = match r.optional("initial-cluster", parse_cluster)? {
        Some(cluster) if given_cluster || !any_discovery => cluster,
        // As etcd, any DNS discovery flag drops the default cluster of this member alone:
        // the SRV records make the cluster (or, with only --discovery-srv-name, nothing
        // does and the member is not found in it).
        _ if !srv.is_empty() || !srv_name.is_empty() => Vec::new(),
        _ => default_cluster(&name, &initial_advertise_peer_urls),
    };
    let auto_compaction_mode = r.value("auto-compaction-mode", compaction::parse_mode)?;
    let auto_compaction_retention = r.value("auto-compaction-retention", |text| {
        compaction::parse_retention(&auto_compaction_mode, text).map(|_| text.to_string())
    })?;
    Ok(Config {
        data_dir: r
            .optional("data-dir", |s| Ok(PathBuf::from(s)))?
            .unwrap_or_else(|| format!("{name}.corekv").into()),
        listen_client_urls: r.value("listen-client-urls", parse_url_list)?,
        advertise_client_urls: r.value("advertise-client-urls", parse_url_list)?,
        listen_peer_urls: r.value("listen-peer-urls", parse_url_list)?,
        initial_cluster_state: r.value("initial-cluster-state", parse_cluster_state)?,
        // With discovery, etcd salts member IDs with the discovery URL instead of the token.
        initial_cluster_token: if discovery_url.is_empty() {
            r.value("initial-cluster-token", |s| Ok(s.to_string()))?
        } else {
            discovery_url.clone()
        },
        discovery: super::Discovery {
            url: discovery_url,
            fallback: r.value("discovery-fallback", |s| match s {
                "exit" | "proxy" => Ok(s.to_string()),
                _ => Err("expected \"exit\" or \"proxy\"".into()),
            })?,
            proxy: r.value("discovery-proxy", |s| Ok(s.to_string()))?,
            srv,
            srv_name,
            proxy_failure_wait_ms: r.value("proxy-failure-wait", parse_u64)?,
            proxy_refresh_interval_ms: r.value("proxy-refresh-interval", parse_u64)?,
            proxy_dial_timeout_ms: r.value("proxy-dial-timeout", parse_u64)?,
        },
        snapshot_count: r.value("snapshot-count", parse_u64)?,
        heartbeat_interval_ms: r.value("heartbeat-interval", parse_u64)?,
        election_timeout_ms: r.value("election-timeout", parse_u64)?,
        quota_backend_bytes: r.value("quota-backend-bytes", parse_quota)?,
        max_request_bytes: r.value("max-request-bytes", parse_u64)?,
        max_txn_ops: r.value("max-txn-ops", parse_u64)?,
        log_level: r.value("log-level", parse_log_level)?,
        listen_metrics_urls: r.value("listen-metrics-urls", parse_url_list)?,
        listen_binary_urls_derived: r.optional("listen-binary-urls", |_| Ok(()))?.is_none(),
        listen_binary_urls: match r.optional("listen-binary-urls", parse_url_list)? {
            Some(urls) => urls,
            None => {
                let client = r.value("listen-client-urls", parse_url_list)?;
                let mut taken = client.clone();
                taken.extend(r.value("listen-peer-urls", parse_url_list)?);
                taken.extend(r.value("listen-metrics-urls", parse_url_list)?);
                // The binary protocol has no TLS yet: an https client URL gets no plaintext
                // binary port next to it by default.
                let plain: Vec<Url> = client
                    .iter()
                    .filter(|u| u.scheme != super::url::Scheme::Https)
                    .cloned()
                    .collect();
                binary_urls_next_to(&plain, &taken)?
            }
        },
        lease_checkpoint_interval_ms: r.value("lease-checkpoint-interval", parse_u64)?,
        auto_compaction_mode,
        auto_compaction_retention,
        auto_compaction_revision_interval_ms: r
            .value("auto-compaction-revision-interval", parse_u64)?,
        cores: r
            .optional("cores", |s| parse_cores(s, online))?
            .unwrap_or(online),
        sequencer_cpu: r.value("sequencer-cpu", parse_sequencer_cpu)?,
        auth_token: r.value("auth-token", |s| Ok(s.to_string()))?,
        auth_token_ttl_secs: r.value("auth-token-ttl", |s| match parse_u64(s)? {
            0 => Err("must be at least 1".into()),
            n => Ok(n),
        })?,
        bcrypt_cost: r.value("bcrypt-cost", |s| match parse_u64(s)? {
            n @ 4..=31 => Ok(n as u32),
            _ => Err("must be within 4..=31".into()),
        })?,
        client_tls: tls_settings(&r, "")?,
        peer_tls: tls_settings(&r, "peer-")?,
        name,
        initial_advertise_peer_urls,
        initial_cluster,
    })
}

/// The TLS flags with `prefix` (`""` for clients, `"peer-"` for peers).
fn tls_settings(r: &Resolver<'_>, prefix: &str) -> Result<TlsSettings, ConfigError> {
    let flag = |name: &str| -> &'static str {
        flags::lookup(&format!("{prefix}{name}"))
            .expect("every TLS flag has a peer twin")
            .name
    };
    let path = |s: &str| Ok((!s.is_empty()).then(|| PathBuf::from(s)));
    Ok(TlsSettings {
        cert_file: r.value(flag("cert-file"), path)?,
        key_file: r.value(flag("key-file"), path)?,
        trusted_ca_file: r.value(flag("trusted-ca-file"), path)?,
        client_cert_auth: r.value(flag("client-cert-auth"), flags::parse_bool)?,
        auto_tls: r.value(flag("auto-tls"), flags::parse_bool)?,
    })
}

/// The default binary-protocol URLs: each client URL with its port + 1, or the next port
/// up that none of this member's other listen URLs (`taken`, any host) uses. With etcd's
/// defaults (client 2379, peer 2380) that is 2381; with free ports around the client port,
/// port + 1.
fn binary_urls_next_to(client_urls: &[Url], taken: &[Url]) -> Result<Vec<Url>, ConfigError> {
    client_urls
        .iter()
        .map(|url| {
            let mut port = url.port;
            loop {
                port = port.checked_add(1).ok_or_else(|| {
                    ConfigError(format!(
                        "--listen-binary-urls: no free port above client URL {url} for the default; set it"
                    ))
                })?;
                if !taken.iter().any(|t| t.port == port) {
                    return Ok(Url {
                        port,
                        ..url.clone()
                    });
                }
            }
        })
        .collect()
}

/// Looks up raw values and parses them, naming flag, value and source on error.
struct Resolver<'a> {
    raw: &'a RawMap,
}

impl Resolver<'_> {
    /// The parsed value of `flag` if it was set.
    fn optional<T>(
        &self,
        flag: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.raw.get(flag) else {
            return Ok(None);
        };
        parse(&raw.value)
            .map(Some)
            .map_err(|why| bad_value(flag, raw, &why))
    }

    /// The parsed value of `flag`, or of its literal default.
    fn value<T>(
        &self,
        flag: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        if let Some(value) = self.optional(flag, &parse)? {
            return Ok(value);
        }
        let default = flags::literal_default(flag).expect("flag with a literal default");
        parse(default).map_err(|why| {
            ConfigError(format!(
                "built-in default {default:?} of --{flag} is invalid: {why}"
            ))
        })
    }
}

/// `invalid value "x" for --flag: why`, naming the variable or file it came from.
fn bad_value(flag: &str, raw: &Raw, why: &str) -> ConfigError {
    let value = &raw.value;
    ConfigError(match &raw.source {
        Source::Flag => format!("invalid value {value:?} for --{flag}: {why}"),
        Source::Env(key) => format!("invalid value {value:?} for {key} (--{flag}): {why}"),
        Source::File(path) => format!(
            "invalid value {value:?} for {flag} in config file {}: {why}",
            path.display()
        ),
    })
}

fn parse_u64(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        return Err("expected a non-negative integer".into());
    }
    text.parse().map_err(|_| "number too large".into())
}

/// etcd's `0` means the default quota; values above 8 GiB are allowed with a warning.
fn parse_quota(text: &str) -> Result<u64, String> {
    let quota = parse_u64(text)?;
    if quota > MAX_RECOMMENDED_QUOTA_BYTES {
        log::warn!("--quota-backend-bytes={quota} exceeds the maximum recommended {MAX_RECOMMENDED_QUOTA_BYTES} bytes");
    }
    Ok(if quota == 0 {
        DEFAULT_QUOTA_BYTES
    } else {
        quota
    })
}

fn parse_cores(text: &str, online: usize) -> Result<usize, String> {
    let cores = parse_u64(text)?;
    if cores == 0 {
        return Err("must be at least 1".into());
    }
    match usize::try_from(cores) {
        Ok(n) if n <= online => Ok(n),
        _ => Err(format!("this machine has only {online} online cores")),
    }
}

fn parse_sequencer_cpu(text: &str) -> Result<Option<usize>, String> {
    if text == "auto" {
        return Ok(None);
    }
    let cpu = parse_u64(text).map_err(|_| "expected auto or a CPU number".to_string())?;
    usize::try_from(cpu)
        .ok()
        .filter(|cpu| *cpu < libc::CPU_SETSIZE as usize)
        .map(Some)
        .ok_or_else(|| "no such CPU".to_string())
}

fn parse_cluster_state(text: &str) -> Result<ClusterState, String> {
    match text {
        "new" => Ok(ClusterState::New),
        "existing" => Ok(ClusterState::Existing),
        _ => Err("expected \"new\" or \"existing\"".into()),
    }
}

fn parse_log_level(text: &str) -> Result<LogLevel, String> {
    match text.to_ascii_lowercase().as_str() {
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        "panic" => Ok(LogLevel::Panic),
        "fatal" => Ok(LogLevel::Fatal),
        _ => Err("expected one of debug, info, warn, error, panic, fatal".into()),
    }
}

/// Parses `name=url,name=url,...` (a name may repeat; an empty string is empty).
pub(super) fn parse_cluster(text: &str) -> Result<Vec<(String, Url)>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|pair| parse_member(pair.trim()))
        .collect()
}

fn parse_member(pair: &str) -> Result<(String, Url), String> {
    match pair.split_once('=') {
        Some((name, url)) if !name.is_empty() => Ok((name.to_string(), parse_item(url.trim())?)),
        _ => Err(format!("{pair:?} is not of the form name=url")),
    }
}

/// Whether --initial-cluster counts as given for etcd's one-bootstrap-flag rule: set and
/// not empty. A config file's value equal to etcd's default is dropped when a discovery
/// flag is set (etcd cannot tell it from the default it fills in itself).
fn given_initial_cluster(raw: &RawMap, discovery: bool) -> bool {
    match raw.get("initial-cluster") {
        None => false,
        Some(r) if r.value.trim().is_empty() => false,
        Some(r) => {
            !(discovery
                && matches!(r.source, Source::File(_))
                && r.value == ETCD_DEFAULT_INITIAL_CLUSTER)
        }
    }
}

/// etcd's default `--initial-cluster`: this member with its advertised peer URLs.
fn default_cluster(name: &str, peer_urls: &[Url]) -> Vec<(String, Url)> {
    peer_urls
        .iter()
        .map(|u| (name.to_string(), u.clone()))
        .collect()
}
