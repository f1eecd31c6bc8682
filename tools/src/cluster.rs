//! Member and cluster IDs for `snapshot restore`, derived exactly as the server derives them
//! from the same flags.
//!
//! The URL parser and the ID hashes are the server's own source files (`src/config/url.rs`,
//! `src/config/ids.rs`), compiled into this tool with `#[path]`: the server is a binary
//! crate, so they cannot be called, but they are not copied either, and any change to them
//! reaches both programs. What is restated here is only `Config::member_id` /
//! `Config::cluster_id` (a few lines in `src/config.rs`), the defaults of the flags involved
//! and the membership checks of `src/config/validate.rs` that the restored member must pass.

#[path = "../../src/config/ids.rs"]
#[allow(dead_code)]
mod ids;
#[path = "../../src/config/url.rs"]
#[allow(dead_code)]
mod url;

use url::{parse_item, parse_url_list, Url};

/// The server's defaults (`src/config/flags.rs`), which are etcd's.
pub const DEFAULT_NAME: &str = "default";
pub const DEFAULT_PEER_URLS: &str = "http://localhost:2380";
pub const DEFAULT_TOKEN: &str = "etcd-cluster";

/// The flags that decide a member's identity.
#[derive(Debug, Clone)]
pub struct Flags<'a> {
    pub name: &'a str,
    /// `--initial-cluster`; `None` means the server's default: `<name>=<each peer URL>`.
    pub initial_cluster: Option<&'a str>,
    pub initial_cluster_token: &'a str,
    pub initial_advertise_peer_urls: &'a str,
}

/// What the flags resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
    pub peer_urls: Vec<String>,
}

/// Resolves the flags as `corekv` would and checks what its start-up checks: the name is in
/// `--initial-cluster` with exactly the advertised peer URLs, no URL twice, and no other
/// member (multi-member clusters are not supported by the server yet).
pub fn resolve(f: &Flags<'_>) -> Result<Member, String> {
    if f.name.is_empty() {
        return Err("--name must not be empty".into());
    }
    let advertised = parse_url_list(f.initial_advertise_peer_urls)
        .map_err(|e| format!("invalid --initial-advertise-peer-urls: {e}"))?;
    if advertised.is_empty() {
        return Err("--initial-advertise-peer-urls must not be empty".into());
    }
    let cluster: Vec<(String, Url)> = match f.initial_cluster {
        None => advertised
            .iter()
            .map(|u| (f.name.to_string(), u.clone()))
            .collect(),
        Some(text) => parse_cluster(text).map_err(|e| format!("invalid --initial-cluster: {e}"))?,
    };
    let mut all: Vec<&Url> = cluster.iter().map(|(_, u)| u).collect();
    all.sort();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!(
            "--initial-cluster lists the URL {} more than once",
            w[0]
        ));
    }
    let mut listed: Vec<Url> = peer_urls_of(&cluster, f.name);
    if listed.is_empty() {
        return Err(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            f.name
        ));
    }
    let mut ap = advertised.clone();
    listed.sort();
    ap.sort();
    ap.dedup();
    if listed != ap {
        let show = |v: &[Url]| v.iter().map(Url::to_string).collect::<Vec<_>>().join(",");
        return Err(format!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}: they must match",
            f.name,
            show(&listed),
            show(&ap)
        ));
    }
    let mut others: Vec<&str> = cluster
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != f.name)
        .collect();
    others.sort_unstable();
    others.dedup();
    if !others.is_empty() {
        return Err(format!(
            "--initial-cluster names other members ({}): corekv runs single-member clusters only so far",
            others.join(", ")
        ));
    }
    // Config::member_id and Config::cluster_id (src/config.rs).
    let token = f.initial_cluster_token;
    let member_id = ids::member_id(&advertised, token);
    let mut names: Vec<&str> = cluster.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let member_ids: Vec<u64> = names
        .iter()
        .map(|n| ids::member_id(&peer_urls_of(&cluster, n), token))
        .collect();
    Ok(Member {
        name: f.name.to_string(),
        member_id,
        cluster_id: ids::cluster_id(&member_ids),
        peer_urls: advertised.iter().map(Url::to_string).collect(),
    })
}

fn peer_urls_of(cluster: &[(String, Url)], name: &str) -> Vec<Url> {
    cluster
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, u)| u.clone())
        .collect()
}

/// `name=url,name=url,...`, as `src/config/build.rs` parses it.
fn parse_cluster(text: &str) -> Result<Vec<(String, Url)>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|pair| match pair.trim().split_once('=') {
            Some((name, url)) if !name.is_empty() => {
                Ok((name.to_string(), parse_item(url.trim())?))
            }
            _ => Err(format!("{:?} is not of the form name=url", pair.trim())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(name: &'a str, cluster: Option<&'a str>, peers: &'a str) -> Flags<'a> {
        Flags {
            name,
            initial_cluster: cluster,
            initial_cluster_token: DEFAULT_TOKEN,
            initial_advertise_peer_urls: peers,
        }
    }

    #[test]
    fn etcd_defaults_give_etcds_ids() {
        // With etcd's defaults etcd's single member is 8e9e05c52164694d in cdf818194e3a8c32.
        let m = resolve(&flags(DEFAULT_NAME, None, DEFAULT_PEER_URLS)).unwrap();
        assert_eq!(m.member_id, 0x8e9e05c52164694d);
        assert_eq!(m.cluster_id, 0xcdf818194e3a8c32);
        let explicit = resolve(&flags(
            "default",
            Some("default=http://localhost:2380"),
            DEFAULT_PEER_URLS,
        ))
        .unwrap();
        assert_eq!(explicit, m);
    }

    #[test]
    fn refuses_what_the_server_refuses() {
        let p = "http://127.0.0.1:2380";
        for (f, want) in [
            (
                flags("n1", Some("n2=http://127.0.0.1:2380"), p),
                "couldn't find local name",
            ),
            (
                flags("n1", Some("n1=http://127.0.0.1:2381"), p),
                "must match",
            ),
            (
                flags(
                    "n1",
                    Some("n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2381"),
                    p,
                ),
                "other members",
            ),
            (
                flags(
                    "n1",
                    Some("n1=http://127.0.0.1:2380,n1=http://127.0.0.1:2380"),
                    p,
                ),
                "more than once",
            ),
            (flags("n1", Some("n1"), p), "name=url"),
            (flags("n1", None, "localhost:2380"), "peer-urls"),
            (flags("", None, p), "--name"),
        ] {
            let e = resolve(&f).unwrap_err();
            assert!(e.contains(want), "{f:?}: {e}");
        }
    }
}
