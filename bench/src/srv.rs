//! `--discovery-srv DOMAIN` / `--discovery-srv-name NAME`: the endpoints to load come
//! from DNS SRV records, as etcdctl finds them (etcd's `srv.GetClient`):
//! `_etcd-client-ssl[-NAME]._tcp.DOMAIN` gives https URLs and `_etcd-client[-NAME]._tcp.DOMAIN`
//! http URLs, each `scheme://target:port`. Either set may be missing; both missing is an
//! error. etcdctl keeps the target's trailing dot, which Go's resolver accepts; the
//! system resolver the gRPC client dials with does not find `localhost.` in /etc/hosts,
//! so the dot is dropped here.

use corekv_dns::Srv;

/// The SRV lookups endpoint discovery needs (a table in tests).
pub trait SrvLookup {
    /// The SRV records of `_service._tcp.domain`.
    fn srv(&self, service: &str, domain: &str) -> Result<Vec<Srv>, String>;
}

impl SrvLookup for corekv_dns::Resolver {
    fn srv(&self, service: &str, domain: &str) -> Result<Vec<Srv>, String> {
        self.lookup_srv(service, "tcp", domain)
            .map_err(|e| e.to_string())
    }
}

/// The client URLs the SRV records of `domain` list, https ones first.
pub fn client_endpoints(
    dns: &dyn SrvLookup,
    domain: &str,
    service_name: &str,
) -> Result<Vec<String>, String> {
    let service = |ssl: bool| {
        let mut s = String::from(if ssl {
            "etcd-client-ssl"
        } else {
            "etcd-client"
        });
        if !service_name.is_empty() {
            s.push('-');
            s.push_str(service_name);
        }
        s
    };
    let urls = |ssl: bool| -> Result<Vec<String>, String> {
        let scheme = if ssl { "https" } else { "http" };
        let records = dns.srv(&service(ssl), domain)?;
        Ok(records
            .iter()
            .map(|r| {
                let host = r.target.trim_end_matches('.');
                if host.contains(':') {
                    format!("{scheme}://[{host}]:{}", r.port)
                } else {
                    format!("{scheme}://{host}:{}", r.port)
                }
            })
            .collect())
    };
    match (urls(true), urls(false)) {
        (Err(https), Err(http)) => Err(format!("dns lookup errors: {https} and {http}")),
        (https, http) => Ok(https.into_iter().chain(http).flatten().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Table(HashMap<&'static str, Vec<Srv>>);

    impl SrvLookup for Table {
        fn srv(&self, service: &str, domain: &str) -> Result<Vec<Srv>, String> {
            let name = format!("_{service}._tcp.{domain}");
            self.0
                .get(name.as_str())
                .cloned()
                .ok_or(format!("lookup {name} on 127.0.0.1:53: no such host"))
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

    #[test]
    fn both_record_sets_give_urls_of_their_targets() {
        let dns = Table(HashMap::from([
            (
                "_etcd-client-ssl._tcp.example.com",
                vec![record("a.example.com.", 2379)],
            ),
            (
                "_etcd-client._tcp.example.com",
                vec![
                    record("b.example.com.", 2379),
                    record("c.example.com.", 12379),
                ],
            ),
        ]));
        assert_eq!(
            client_endpoints(&dns, "example.com", "").unwrap(),
            [
                "https://a.example.com:2379",
                "http://b.example.com:2379",
                "http://c.example.com:12379"
            ]
        );
    }

    #[test]
    fn the_service_name_suffixes_both_records() {
        let dns = Table(HashMap::from([
            ("_etcd-client._tcp.example.com", vec![record("plain.", 1)]),
            ("_etcd-client-dev._tcp.example.com", vec![record("dev.", 2)]),
        ]));
        assert_eq!(
            client_endpoints(&dns, "example.com", "dev").unwrap(),
            ["http://dev:2"]
        );
        let e = client_endpoints(&dns, "example.com", "prod").unwrap_err();
        assert_eq!(
            e,
            "dns lookup errors: lookup _etcd-client-ssl-prod._tcp.example.com on 127.0.0.1:53: \
             no such host and lookup _etcd-client-prod._tcp.example.com on 127.0.0.1:53: no such host"
        );
    }
}
