//! `/etc/resolv.conf` and `/etc/hosts`, the parts a stub resolver needs.

use std::net::{IpAddr, SocketAddr};

/// glibc's MAXNS: later `nameserver` lines are ignored.
const NAMESERVERS_MAX: usize = 3;

/// The `nameserver` addresses (port 53), in file order, at most three.
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            parse_ip(words.next()?)
        })
        .take(NAMESERVERS_MAX)
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// `(lower-case name, address)` for every name and alias in a hosts file.
pub(crate) fn parse_hosts(text: &str) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(parse_ip) else {
            continue;
        };
        for name in words {
            out.push((name.trim_end_matches('.').to_ascii_lowercase(), ip));
        }
    }
    out
}

/// An address, without a `%zone` suffix (link-local name servers carry one).
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.split('%').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_the_first_three_name_servers() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\n\
                    nameserver fe80::1%eth0\noptions ndots:2\nnameserver bogus\n\
                    nameserver 10.0.0.3\nnameserver 10.0.0.4\n";
        let got: Vec<String> = parse_resolv_conf(text)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.2:53", "[fe80::1]:53", "10.0.0.3:53"]);
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn hosts_file_names_and_aliases() {
        let text = "127.0.0.1 localhost\n::1 localhost ip6-localhost # loopback\n\
                    # 10.0.0.9 commented\n10.0.0.5 Infra0.Example.com infra0\nnot-an-ip x\n";
        let got = parse_hosts(text);
        let find = |n: &str| -> Vec<String> {
            got.iter()
                .filter(|(h, _)| h == n)
                .map(|(_, ip)| ip.to_string())
                .collect()
        };
        assert_eq!(find("localhost"), ["127.0.0.1", "::1"]);
        assert_eq!(find("infra0.example.com"), ["10.0.0.5"]);
        assert_eq!(find("infra0"), ["10.0.0.5"]);
        assert!(find("x").is_empty() && find("10.0.0.9").is_empty());
    }
}
