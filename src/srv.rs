//! DNS discovery bootstrap (`--discovery-srv DOMAIN`, `--discovery-srv-name NAME`), as
//! etcd's: the initial cluster is read from the SRV records
//! `_etcd-server-ssl[-NAME]._tcp.DOMAIN` (https peer URLs) and
//! `_etcd-server[-NAME]._tcp.DOMAIN` (http peer URLs).
//!
//! Each record's `target:port` is resolved; the one that resolves to an address of this
//! member's --initial-advertise-peer-urls is this member (its --name), the others get
//! temporary names `0`, `1`, ... until they publish their own. URLs keep the record's
//! target host (without the trailing dot), so every member derives the same member and
//! cluster IDs from the same records.
//!
//! Both record sets are combined, as etcd 3.5 and later do; etcd 3.4 uses only the https
//! set when it exists and fails on the http one alone (a bug fixed upstream), which
//! corekv does not copy.

use std::net::SocketAddr;

use crate::config::{Config, Scheme, Url};

/// The DNS lookups discovery needs: the system's resolver, or a table in tests.
pub trait Lookup {
    /// The SRV records of `_service._tcp.domain`.
    fn srv(&self, service: &str, domain: &str) -> Result<Vec<corekv_dns::Srv>, String>;
    /// The address a TCP dial of `host:port` uses.
    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String>;
}

impl Lookup for corekv_dns::Resolver {
    fn srv(&self, service: &str, domain: &str) -> Result<Vec<corekv_dns::Srv>, String> {
        self.lookup_srv(service, "tcp", domain)
            .map_err(|e| e.to_string())
    }

    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        self.resolve_tcp(host, port).map_err(|e| e.to_string())
    }
}

/// The initial cluster (`name`, peer URL) the SRV records of `config`'s domain give. The
/// error reads as etcd's (the caller prefixes "error setting up initial cluster: ").
pub fn initial_cluster(config: &Config, dns: &dyn Lookup) -> Result<Vec<(String, Url)>, String> {
    let suffix = match config.discovery.srv_name.as_str() {
        "" => String::new(),
        name => format!("-{name}"),
    };
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (scheme, service) in [
        (Scheme::Https, format!("etcd-server-ssl{suffix}")),
        (Scheme::Http, format!("etcd-server{suffix}")),
    ] {
        match members_of(dns, scheme, &service, config) {
            Ok(members) => {
                log::info!(
                    "discovery-srv: _{service}._tcp.{} gives {}",
                    config.discovery.srv,
                    cluster_text(&members)
                );
                found.extend(members);
            }
            Err(e) => errors.push(e),
        }
    }
    if found.is_empty() {
        return Err(errors.join("; "));
    }
    if !errors.is_empty() {
        log::warn!(
            "failed to resolve during SRV discovery: {}",
            errors.join("; ")
        );
    }
    log::info!(
        "got bootstrap from DNS for etcd-server: {}",
        cluster_text(&found)
    );
    if found.iter().any(|(_, u)| u.scheme == Scheme::Https)
        && config.peer_tls.trusted_ca_file.is_none()
    {
        // etcd then checks peers' certificates against the domain name; corekv does not
        // verify peer certificates without --peer-trusted-ca-file at all.
        log::info!(
            "discovery-srv: https peers without --peer-trusted-ca-file; their certificates are not verified"
        );
    }
    if !found.iter().any(|(name, _)| *name == config.name) {
        return Err(format!(
            "cannot find local etcd member {:?} in SRV records",
            config.name
        ));
    }
    Ok(found)
}

/// One SRV service's members (etcd's `srv.GetCluster`).
fn members_of(
    dns: &dyn Lookup,
    scheme: Scheme,
    service: &str,
    config: &Config,
) -> Result<Vec<(String, Url)>, String> {
    // This member's own addresses first; one that does not resolve stops discovery.
    let mut mine: Vec<(SocketAddr, &Url)> = Vec::new();
    for url in &config.initial_advertise_peer_urls {
        mine.push((dns.resolve(&url.host, url.port)?, url));
    }
    let records = dns
        .srv(service, &config.discovery.srv)
        .map_err(|e| format!("error querying DNS SRV records for _{service} {e}"))?;
    let mut members = Vec::new();
    let mut last_error = None;
    let mut temporary_names = 0..;
    for record in records {
        let addr = match dns.resolve(&record.target, record.port) {
            Ok(addr) => addr,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let host = record.target.trim_end_matches('.');
        let host_port = if host.contains(':') {
            format!("[{host}]:{}", record.port)
        } else {
            format!("{host}:{}", record.port)
        };
        let text = format!("{}://{host_port}", scheme.as_str());
        let local = mine.iter().find(|(a, _)| *a == addr).map(|(_, u)| *u);
        if let Some(expected) = local.filter(|u| u.scheme != scheme) {
            last_error = Some(format!(
                "bootstrap at {text} from DNS for {service} has scheme mismatch with expected peer {expected}"
            ));
            continue;
        }
        let name = match local {
            Some(_) => config.name.clone(),
            None => temporary_names.next().unwrap_or(0).to_string(),
        };
        let url = Url::parse(&text).map_err(|e| format!("SRV record gives URL {text}: {e}"))?;
        members.push((name, url));
    }
    if members.is_empty() {
        let why = last_error.unwrap_or_else(|| "no usable SRV records".into());
        return Err(format!(
            "error querying DNS SRV records for _{service} {why}"
        ));
    }
    Ok(members)
}

fn cluster_text(members: &[(String, Url)]) -> String {
    let parts: Vec<String> = members.iter().map(|(n, u)| format!("{n}={u}")).collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_dns::Srv;
    use std::collections::HashMap;

    /// SRV records by service name and addresses by host, for `corekv.test`.
    struct Table {
        srv: HashMap<String, Vec<Srv>>,
        hosts: HashMap<String, [u8; 4]>,
    }

    impl Lookup for Table {
        fn srv(&self, service: &str, domain: &str) -> Result<Vec<Srv>, String> {
            assert_eq!(domain, "corekv.test");
            self.srv.get(service).cloned().ok_or_else(|| {
                format!("lookup _{service}._tcp.{domain} on 127.0.0.1:53: no such host")
            })
        }

        fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
            let key = host.trim_end_matches('.');
            match (key.parse::<std::net::IpAddr>(), self.hosts.get(key)) {
                (Ok(ip), _) => Ok(SocketAddr::new(ip, port)),
                (_, Some(ip)) => Ok((*ip, port).into()),
                _ => Err(format!("lookup {key} on 127.0.0.1:53: no such host")),
            }
        }
    }

    fn record(target: &str, port: u16) -> Srv {
        Srv {
            priority: 0,
            weight: 0,
            port,
            target: target.into(),
        }
    }

    fn table(srv: &[(&str, Vec<Srv>)]) -> Table {
        let hosts = [
            ("infra0.corekv.test", [10, 0, 1, 10]),
            ("infra1.corekv.test", [10, 0, 1, 11]),
            ("infra2.corekv.test", [10, 0, 1, 12]),
        ];
        Table {
            srv: srv
                .iter()
                .map(|(s, r)| (s.to_string(), r.clone()))
                .collect(),
            hosts: hosts.iter().map(|(h, ip)| (h.to_string(), *ip)).collect(),
        }
    }

    fn config(name: &str, advertise: &str, srv_name: &str) -> Config {
        let args: Vec<String> = [
            "--name",
            name,
            "--discovery-srv",
            "corekv.test",
            "--discovery-srv-name",
            srv_name,
            "--initial-advertise-peer-urls",
            advertise,
            "--peer-auto-tls",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match Config::load(args, Vec::new()) {
            Ok(crate::config::Action::Run(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    fn text(found: &[(String, Url)]) -> String {
        cluster_text(found)
    }

    fn three(port: u16) -> Vec<Srv> {
        [
            "infra0.corekv.test.",
            "infra1.corekv.test.",
            "infra2.corekv.test.",
        ]
        .iter()
        .map(|t| record(t, port))
        .collect()
    }

    #[test]
    fn the_member_whose_address_is_listed_gets_its_name() {
        let dns = table(&[("etcd-server", three(2380))]);
        let found = initial_cluster(&config("infra1", "http://10.0.1.11:2380", ""), &dns).unwrap();
        assert_eq!(
            text(&found),
            "0=http://infra0.corekv.test:2380,infra1=http://infra1.corekv.test:2380,1=http://infra2.corekv.test:2380"
        );
    }

    #[test]
    fn https_and_http_records_are_combined_and_suffixed_names_used() {
        let dns = table(&[
            (
                "etcd-server-ssl-dev",
                vec![record("infra0.corekv.test.", 2380)],
            ),
            ("etcd-server-dev", vec![record("infra1.corekv.test.", 2380)]),
            ("etcd-server", three(9999)),
        ]);
        let found =
            initial_cluster(&config("infra0", "https://10.0.1.10:2380", "dev"), &dns).unwrap();
        assert_eq!(
            text(&found),
            "infra0=https://infra0.corekv.test:2380,0=http://infra1.corekv.test:2380"
        );
    }

    #[test]
    fn no_records_is_etcds_error() {
        let dns = table(&[]);
        let e = initial_cluster(&config("infra0", "http://10.0.1.10:2380", ""), &dns).unwrap_err();
        assert_eq!(
            e,
            "error querying DNS SRV records for _etcd-server-ssl lookup _etcd-server-ssl._tcp.corekv.test on 127.0.0.1:53: no such host; \
             error querying DNS SRV records for _etcd-server lookup _etcd-server._tcp.corekv.test on 127.0.0.1:53: no such host"
        );
    }

    #[test]
    fn a_member_not_among_the_targets_is_refused() {
        let dns = table(&[("etcd-server", three(2380))]);
        let e = initial_cluster(&config("infra9", "http://10.0.1.99:2380", ""), &dns).unwrap_err();
        assert_eq!(e, "cannot find local etcd member \"infra9\" in SRV records");
        // Same host, another port: not this member either.
        let e = initial_cluster(&config("infra0", "http://10.0.1.10:2390", ""), &dns).unwrap_err();
        assert!(e.contains("cannot find local etcd member"), "{e}");
    }

    #[test]
    fn scheme_mismatch_and_unresolvable_targets() {
        let mut records = three(2380);
        records.push(record("gone.corekv.test.", 2380));
        let dns = table(&[("etcd-server-ssl", records)]);
        // This member advertises http but is listed under https: skipped with etcd's error,
        // and the other https members do not make it a member.
        let e = initial_cluster(&config("infra0", "http://10.0.1.10:2380", ""), &dns).unwrap_err();
        assert_eq!(e, "cannot find local etcd member \"infra0\" in SRV records");
        // Targets that do not resolve are skipped; with none left, the last error is told.
        let dns = table(&[("etcd-server", vec![record("gone.corekv.test.", 1)])]);
        let e = members_of(
            &dns,
            Scheme::Http,
            "etcd-server",
            &config("infra0", "http://10.0.1.10:2380", ""),
        );
        assert_eq!(
            e.unwrap_err(),
            "error querying DNS SRV records for _etcd-server lookup gone.corekv.test on 127.0.0.1:53: no such host"
        );
        let only_mismatch =
            table(&[("etcd-server-ssl", vec![record("infra0.corekv.test.", 2380)])]);
        let e = members_of(
            &only_mismatch,
            Scheme::Https,
            "etcd-server-ssl",
            &config("infra0", "http://10.0.1.10:2380", ""),
        );
        assert_eq!(
            e.unwrap_err(),
            "error querying DNS SRV records for _etcd-server-ssl bootstrap at https://infra0.corekv.test:2380 \
             from DNS for etcd-server-ssl has scheme mismatch with expected peer http://10.0.1.10:2380"
        );
    }

    #[test]
    fn an_advertised_url_that_does_not_resolve_stops_discovery() {
        let dns = table(&[("etcd-server", three(2380))]);
        let e =
            initial_cluster(&config("infra0", "http://nowhere.test:2380", ""), &dns).unwrap_err();
        assert_eq!(
            e,
            "lookup nowhere.test on 127.0.0.1:53: no such host; lookup nowhere.test on 127.0.0.1:53: no such host"
        );
    }
}
