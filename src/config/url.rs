//! A minimal URL type for listen/advertise URLs: `scheme://host:port`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// URL scheme; corekv serves `http` and `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A `scheme://host:port` URL, as etcd requires for its listen and advertise URLs.
///
/// `host` is a hostname (lower-cased), an IPv4 address, or an IPv6 address
/// stored without brackets. The port is mandatory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Url {
    /// The scheme.
    pub scheme: Scheme,
    /// Hostname or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Url {
    /// Parses `http://host:port` or `https://host:port` (IPv6 as `[::1]:port`).
    ///
    /// The error text explains what is wrong, without repeating the input.
    pub fn parse(text: &str) -> Result<Url, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("expected scheme://host:port, e.g. http://127.0.0.1:2379")?;
        let scheme = parse_scheme(scheme)?;
        let authority = authority_only(rest)?;
        let (host, port) = split_host_port(authority)?;
        Ok(Url { scheme, host, port })
    }

    /// `host:port` for binding or connecting; IPv6 hosts are bracketed.
    pub fn socket_addr_string(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Url {
    /// `scheme://host:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.scheme.as_str(),
            self.socket_addr_string()
        )
    }
}

impl FromStr for Url {
    type Err = String;

    fn from_str(text: &str) -> Result<Url, String> {
        Url::parse(text)
    }
}

fn parse_scheme(scheme: &str) -> Result<Scheme, String> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(Scheme::Http),
        "https" => Ok(Scheme::Https),
        other => Err(format!(
            "unsupported URL scheme {other:?} (corekv supports http and https)"
        )),
    }
}

/// The `host:port` part; a path, query, fragment or user info is an error (as in etcd).
fn authority_only(rest: &str) -> Result<&str, String> {
    if let Some(at) = rest.find(['/', '?', '#']) {
        let what = if rest[at..].starts_with('/') {
            "a path"
        } else {
            "a query or fragment"
        };
        return Err(format!("URL must not contain {what}"));
    }
    if rest.contains('@') {
        return Err("URL must not contain user information".into());
    }
    Ok(rest)
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => split_ipv6(bracketed)?,
        None => split_plain(authority)?,
    };
    Ok((host, parse_port(port)?))
}

/// `::1]:2379` (after the opening bracket) into host and port text.
fn split_ipv6(bracketed: &str) -> Result<(String, &str), String> {
    let (host, after) = bracketed
        .split_once(']')
        .ok_or("missing ']' in IPv6 address")?;
    host.parse::<Ipv6Addr>()
        .map_err(|_| format!("invalid IPv6 address {host:?}"))?;
    let port = after.strip_prefix(':').ok_or(MISSING_PORT)?;
    Ok((host.to_ascii_lowercase(), port))
}

/// `host:port` with a hostname or IPv4 address into host and port text.
fn split_plain(authority: &str) -> Result<(String, &str), String> {
    let (host, port) = authority.rsplit_once(':').ok_or(MISSING_PORT)?;
    if host.contains(':') {
        return Err("IPv6 addresses must be enclosed in brackets, e.g. http://[::1]:2379".into());
    }
    check_host(host)?;
    Ok((host.to_ascii_lowercase(), port))
}

const MISSING_PORT: &str = "missing port (URLs must have the form scheme://host:port)";

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("missing host (use 0.0.0.0 or [::] to listen on all interfaces)".into());
    }
    let hostname_chars = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    let numeric = host.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !hostname_chars || (numeric && host.parse::<Ipv4Addr>().is_err()) {
        return Err(format!("invalid host {host:?}"));
    }
    Ok(())
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err(MISSING_PORT.into());
    }
    if !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("invalid port {port:?}"));
    }
    port.parse()
        .map_err(|_| format!("invalid port {port:?} (must be 0-65535)"))
}

/// Parses a comma-separated URL list; an empty string is an empty list.
pub(super) fn parse_url_list(text: &str) -> Result<Vec<Url>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|item| parse_item(item.trim()))
        .collect()
}

/// Parses one URL, naming it in the error (the input may be a whole list).
pub(super) fn parse_item(item: &str) -> Result<Url, String> {
    Url::parse(item).map_err(|why| format!("URL {item:?}: {why}"))
}
