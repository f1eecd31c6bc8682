//! Cross-flag checks, with etcd's wording where etcd has the same check.

use super::url::Url;
use super::{ClusterState, Config, ConfigError};

/// etcd refuses election timeouts above 50 s.
const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// Checks a parsed configuration.
pub(super) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    check_name(cfg)?;
    check_required_urls(cfg)?;
    check_cluster_state(cfg)?;
    check_duplicate_urls(cfg)?;
    check_local_member(cfg)?;
    check_single_member(cfg)?;
    check_timing(cfg)?;
    check_no_tls(cfg)?;
    check_limits(cfg)
}

/// Until TLS lands, an https:// URL is refused: serving plaintext on it would be a lie.
fn check_no_tls(cfg: &Config) -> Result<(), ConfigError> {
    let lists = [
        ("listen-client-urls", &cfg.listen_client_urls),
        ("listen-metrics-urls", &cfg.listen_metrics_urls),
        ("listen-binary-urls", &cfg.listen_binary_urls),
    ];
    for (flag, urls) in lists {
        if let Some(url) = urls.iter().find(|u| u.scheme == super::url::Scheme::Https) {
            return fail(format!(
                "--{flag}={url}: TLS (https) is not supported by this corekv build yet"
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

fn check_cluster_state(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.initial_cluster_state == ClusterState::Existing {
        return fail(
            "--initial-cluster-state=existing (joining an existing cluster) is not supported yet by this \
             corekv build; only a single-member cluster with --initial-cluster-state=new is supported"
                .into(),
        );
    }
    Ok(())
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

/// `--initial-cluster` must list this member with exactly its advertised peer URLs.
fn check_local_member(cfg: &Config) -> Result<(), ConfigError> {
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
    if listed == advertised {
        return Ok(());
    }
    let member = join(listed.iter().map(|u| format!("{}={u}", cfg.name)));
    let ap = join(advertised.iter().map(Url::to_string));
    if listed.iter().any(|u| !advertised.contains(u)) {
        fail(format!(
            "--initial-cluster has {member} but missing from --initial-advertise-peer-urls={ap}"
        ))
    } else {
        fail(format!(
            "--initial-advertise-peer-urls has {ap} but missing from --initial-cluster={member}"
        ))
    }
}

/// Until clustering lands, the initial cluster may contain only this member.
fn check_single_member(cfg: &Config) -> Result<(), ConfigError> {
    let mut others: Vec<&str> = Vec::new();
    for (name, _) in &cfg.initial_cluster {
        if *name != cfg.name && !others.contains(&name.as_str()) {
            others.push(name);
        }
    }
    if others.is_empty() {
        return Ok(());
    }
    fail(format!(
        "--initial-cluster names other members ({}): multi-member clusters are not supported yet by this \
         corekv build; list only this member ({})",
        others.join(", "),
        cfg.name
    ))
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
