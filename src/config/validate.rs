//! Cross-flag checks, with etcd's wording where etcd has the same check.

use super::url::Url;
use super::{Config, ConfigError};
use std::net::{IpAddr, SocketAddr};

/// Resolves `host` (a name, not an IP literal) for a TCP dial to `port`.
pub(crate) type Resolve<'a> = &'a dyn Fn(&str, u16) -> Result<SocketAddr, String>;

/// etcd refuses election timeouts above 50 s.
const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// Checks a parsed configuration; `resolve` is used only when this member's URLs in
/// --initial-cluster differ from its advertised ones as strings.
pub(super) fn validate(cfg: &Config, resolve: Resolve<'_>) -> Result<(), ConfigError> {
    check_name(cfg)?;
    check_required_urls(cfg)?;
    // With --discovery-srv the initial cluster is only known once DNS has answered; the
    // member checks it then (`verify_bootstrap`), as etcd does.
    if cfg.discovery.srv.is_empty() {
        verify_bootstrap(cfg, resolve)?;
    }
    check_timing(cfg)?;
    check_no_tls(cfg)?;
    check_limits(cfg)
}

/// An https:// client URL needs a certificate (files or --auto-tls); metrics URLs are
/// served plaintext only, so an https:// one is refused rather than served in the clear.
fn check_no_tls(cfg: &Config) -> Result<(), ConfigError> {
    let https = |u: &&Url| u.scheme == super::url::Scheme::Https;
    if let Some(url) = cfg.listen_metrics_urls.iter().find(https) {
        return fail(format!(
            "--listen-metrics-urls={url}: TLS (https) on metrics URLs is not supported by this corekv build yet"
        ));
    }
    if let Some(url) = cfg.listen_binary_urls.iter().find(https) {
        return fail(format!(
            "--listen-binary-urls={url}: TLS on the binary protocol is not supported by this corekv build yet"
        ));
    }
    let peer_urls = cfg
        .listen_peer_urls
        .iter()
        .chain(&cfg.initial_advertise_peer_urls);
    if let Some(url) = peer_urls.into_iter().find(https) {
        if !cfg.peer_tls.is_set() {
            return fail(format!(
                "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url {url} with HTTPS scheme (or --peer-auto-tls)"
            ));
        }
    }
    for (prefix, tls) in [("", &cfg.client_tls), ("peer-", &cfg.peer_tls)] {
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return fail(format!(
                "--{prefix}cert-file and --{prefix}key-file must be given together"
            ));
        }
        if tls.client_cert_auth && tls.trusted_ca_file.is_none() {
            return fail(format!(
                "--{prefix}client-cert-auth needs --{prefix}trusted-ca-file to verify client certificates"
            ));
        }
    }
    if let Some(url) = cfg.listen_client_urls.iter().find(https) {
        if !cfg.client_tls.is_set() {
            return fail(format!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
            ));
        }
    }
    Ok(())
}

fn fail<T>(message: String) -> Result<T, ConfigError> {
    Err(ConfigError(message))
}

fn check_name(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.name.is_empty() {
        return fail("--name must not be empty".into());
    }
    if cfg.data_dir.as_os_str().is_empty() {
        return fail("--data-dir must not be empty".into());
    }
    Ok(())
}

fn check_required_urls(cfg: &Config) -> Result<(), ConfigError> {
    let required = [
        ("listen-client-urls", &cfg.listen_client_urls),
        ("advertise-client-urls", &cfg.advertise_client_urls),
        ("listen-peer-urls", &cfg.listen_peer_urls),
        (
            "initial-advertise-peer-urls",
            &cfg.initial_advertise_peer_urls,
        ),
    ];
    match required.iter().find(|(_, urls)| urls.is_empty()) {
        Some((flag, _)) => fail(format!("--{flag} must list at least one URL")),
        None => Ok(()),
    }
}

/// A peer URL may belong to only one member, once (etcd rejects duplicates too).
fn check_duplicate_urls(cfg: &Config) -> Result<(), ConfigError> {
    let mut seen: Vec<&Url> = Vec::new();
    for (_, url) in &cfg.initial_cluster {
        if seen.contains(&url) {
            return fail(format!(
                "--initial-cluster lists the URL {url} more than once"
            ));
        }
        seen.push(url);
    }
    Ok(())
}

/// The initial cluster's checks of this member's place in it: no URL listed twice, this
/// member listed, with its advertised peer URLs.
pub(super) fn verify_bootstrap(cfg: &Config, resolve: Resolve<'_>) -> Result<(), ConfigError> {
    check_duplicate_urls(cfg)?;
    check_local_member(cfg, resolve)
}

/// `--initial-cluster` must list this member with its advertised peer URLs; URLs that
/// differ as strings may still name the same addresses (etcd's `advertiseMatchesCluster`,
/// with its messages).
fn check_local_member(cfg: &Config, resolve: Resolve<'_>) -> Result<(), ConfigError> {
    let mut listed = cfg.peer_urls_of(&cfg.name);
    if listed.is_empty() {
        return fail(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            cfg.name
        ));
    }
    let mut advertised = cfg.initial_advertise_peer_urls.clone();
    listed.sort();
    advertised.sort();
    advertised.dedup();
    let why = match urls_equal(&advertised, &listed, resolve) {
        Ok(()) => return Ok(()),
        Err(why) => why,
    };
    let ap = join(advertised.iter().map(Url::to_string));
    let named = |urls: &[&Url]| join(urls.iter().map(|u| format!("{}={u}", cfg.name)));
    let only_listed: Vec<&Url> = listed.iter().filter(|u| !advertised.contains(u)).collect();
    if !only_listed.is_empty() {
        return fail(format!(
            "--initial-cluster has {} but missing from --initial-advertise-peer-urls={ap} ({why})",
            named(&only_listed)
        ));
    }
    let all_advertised: Vec<&Url> = advertised.iter().collect();
    let only_advertised: Vec<&Url> = advertised.iter().filter(|u| !listed.contains(u)).collect();
    if !only_advertised.is_empty() {
        return fail(format!(
            "--initial-advertise-peer-urls has {} but missing from --initial-cluster={}",
            join(only_advertised.iter().map(|u| u.to_string())),
            named(&all_advertised)
        ));
    }
    fail(format!(
        "failed to resolve {ap} to match --initial-cluster={} ({why})",
        named(&all_advertised)
    ))
}

/// Whether two sorted URL lists name the same endpoints: equal as strings, or equal once
/// host names other than `localhost` are resolved (etcd's `netutil.URLStringsEqual`).
fn urls_equal(a: &[Url], b: &[Url], resolve: Resolve<'_>) -> Result<(), String> {
    let strings = |urls: &[Url]| go_quoted(urls.iter().map(Url::to_string));
    if a.len() != b.len() {
        return Err(format!("len({}) != len({})", strings(a), strings(b)));
    }
    if a == b {
        return Ok(());
    }
    let mut ra = resolved(a, resolve)?;
    let mut rb = resolved(b, resolve)?;
    ra.sort();
    rb.sort();
    match ra.iter().zip(&rb).find(|(x, y)| x != y) {
        Some((x, y)) => Err(format!("resolved urls: {x:?} != {y:?}")),
        None => Ok(()),
    }
}

/// The URLs with host names replaced by the address they resolve to; `localhost` and IP
/// literals stay as they are, as in etcd.
fn resolved(urls: &[Url], resolve: Resolve<'_>) -> Result<Vec<String>, String> {
    urls.iter()
        .map(|u| {
            if u.host == "localhost" || u.host.parse::<IpAddr>().is_ok() {
                return Ok(u.to_string());
            }
            let addr = resolve(&u.host, u.port)
                .map_err(|e| format!("failed to resolve {:?} ({e})", u.to_string()))?;
            Ok(format!("{}://{addr}", u.scheme.as_str()))
        })
        .collect()
}

/// A list as Go's `%q` prints a `[]string`: `["a" "b"]`.
fn go_quoted(items: impl Iterator<Item = String>) -> String {
    let quoted: Vec<String> = items.map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

fn check_timing(cfg: &Config) -> Result<(), ConfigError> {
    let (heartbeat, election) = (cfg.heartbeat_interval_ms, cfg.election_timeout_ms);
    if heartbeat == 0 {
        return fail("--heartbeat-interval must be greater than 0".into());
    }
    if election < heartbeat.saturating_mul(5) {
        return fail(format!(
            "--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat}ms]"
        ));
    }
    if election > MAX_ELECTION_TIMEOUT_MS {
        return fail(format!(
            "--election-timeout[{election}ms] is too long, and should be set less than {} seconds",
            MAX_ELECTION_TIMEOUT_MS / 1000
        ));
    }
    Ok(())
}

fn check_limits(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.max_txn_ops == 0 {
        return fail("--max-txn-ops must be greater than 0".into());
    }
    if cfg.max_request_bytes == 0 {
        return fail("--max-request-bytes must be greater than 0".into());
    }
    if cfg.lease_checkpoint_interval_ms == 0 {
        return fail("--lease-checkpoint-interval must be greater than 0".into());
    }
    Ok(())
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(",")
}
