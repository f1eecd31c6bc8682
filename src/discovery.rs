//! Discovery bootstrap (--discovery): etcd's v2 discovery protocol, spoken to an existing
//! etcd (or anything serving etcd's v2 keys API) that holds a token directory.
//!
//! 1. read `<token>/_config/size` (the cluster's size);
//! 2. register this member: `PUT <token>/<member id hex>` = `name=peerURL,...` (only if the
//!    key does not exist yet);
//! 3. list `<token>` and, until `size` members have registered, wait for more with a v2
//!    watch; the first `size` registrations (by creation index) are the cluster;
//! 4. their values, joined, are the `--initial-cluster` of a new cluster.
//!
//! A member that finds `size` members already registered without it gets "discovery:
//! cluster is full". The HTTP client is a minimal blocking HTTP/1.1 client (discovery runs
//! once, before the server starts); requests go through --discovery-proxy if set.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long one discovery request may take (a watch waits up to this for a change).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the whole discovery may take before the member gives up.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest discovery response read (a token directory lists a handful of members).
const RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Retries of a failed request before discovery fails (etcd retries a few times too).
const RETRIES_MAX: u32 = 5;

/// A registered member: its discovery key's creation index and its `name=url,...` value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registration {
    created_index: u64,
    key: String,
    value: String,
}

/// Joins the cluster behind `url` (`http://host:port/v2/keys/<path>/<token>`): registers
/// `self_config` (`name=peerURL,...`) under `member_id` and returns the cluster's
/// `--initial-cluster` once `size` members registered.
pub fn join(url: &str, proxy: &str, member_id: u64, self_config: &str) -> Result<String, String> {
    let d = Discovery {
        url: url.trim_end_matches('/').to_string(),
        proxy: proxy.to_string(),
    };
    let deadline = Instant::now() + DISCOVERY_TIMEOUT;
    let size = d.size()?;
    let (nodes, _) = d.nodes()?;
    let me = format!("{member_id:x}");
    let registered = nodes.iter().any(|n| key_name(&n.key) == me);
    if !registered && nodes.len() >= size {
        return Err("discovery: cluster is full".into());
    }
    if !registered {
        d.register(&me, self_config)?;
    }
    loop {
        let (nodes, index) = d.nodes()?;
        if let Some(pos) = nodes.iter().position(|n| key_name(&n.key) == me) {
            if pos >= size {
                return Err("discovery: cluster is full".into());
            }
        }
        if nodes.len() >= size {
            return Ok(initial_cluster(&nodes[..size]));
        }
        log::info!(
            "discovery: {} of {size} members registered; waiting for the others",
            nodes.len()
        );
        if Instant::now() >= deadline {
            return Err(format!(
                "discovery: timed out after {DISCOVERY_TIMEOUT:?} waiting for {size} members ({} registered)",
                nodes.len()
            ));
        }
        d.wait(index + 1)?;
    }
}

/// The cluster the token describes once it is full: the `size` first registrations, as
/// `--initial-cluster` text (what a member in proxy mode forwards to, as etcd's
/// `discovery.GetCluster`).
pub fn registered_cluster(url: &str, proxy: &str) -> Result<String, String> {
    let d = Discovery {
        url: url.trim_end_matches('/').to_string(),
        proxy: proxy.to_string(),
    };
    let size = d.size()?;
    let (nodes, _) = d.nodes()?;
    if nodes.len() < size {
        return Err(format!(
            "discovery: only {} of {size} members registered",
            nodes.len()
        ));
    }
    Ok(initial_cluster(&nodes[..size]))
}

/// `--initial-cluster` text from the members' registrations (`name=peerURL,...` each).
fn initial_cluster(registered: &[Registration]) -> String {
    let parts: Vec<&str> = registered.iter().map(|n| n.value.as_str()).collect();
    parts.join(",")
}

/// The last path component of a v2 key.
fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

struct Discovery {
    url: String,
    proxy: String,
}

impl Discovery {
    fn size(&self) -> Result<usize, String> {
        let (status, body) = self.request("GET", &format!("{}/_config/size", self.url), None)?;
        if status == 404 {
            return Err("discovery: size key not found".into());
        }
        if status != 200 {
            return Err(format!(
                "discovery: reading the size key: HTTP {status}: {body}"
            ));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("discovery: bad answer: {e}"))?;
        v["node"]["value"]
            .as_str()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| "discovery: size key is bad".to_string())
    }

    /// The registered members (not `_config`) by creation index, and the store's index.
    fn nodes(&self) -> Result<(Vec<Registration>, u64), String> {
        let (status, body) = self.request("GET", &format!("{}?recursive=true", self.url), None)?;
        if status != 200 {
            return Err(format!(
                "discovery: listing the token: HTTP {status}: {body}"
            ));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("discovery: bad answer: {e}"))?;
        let mut out = parse_nodes(&v);
        out.sort_by_key(|n| n.created_index);
        let index = out
            .iter()
            .map(|n| n.created_index)
            .max()
            .unwrap_or(0)
            .max(v["node"]["modifiedIndex"].as_u64().unwrap_or(0));
        Ok((out, index))
    }

    fn register(&self, id_hex: &str, value: &str) -> Result<(), String> {
        let body = format!("value={}", form_encode(value));
        let url = format!("{}/{id_hex}?prevExist=false", self.url);
        let (status, answer) = self.request("PUT", &url, Some(&body))?;
        match status {
            200 | 201 => Ok(()),
            412 => Err("discovery: found duplicate id".into()),
            _ => Err(format!("discovery: registering: HTTP {status}: {answer}")),
        }
    }

    /// Waits for the next change under the token (a v2 watch), or the request timeout.
    fn wait(&self, index: u64) -> Result<(), String> {
        let url = format!("{}?wait=true&recursive=true&waitIndex={index}", self.url);
        match self.request("GET", &url, None) {
            Ok(_) => Ok(()),
            // A watch that saw nothing within the timeout is not an error: list again.
            Err(e) if e.contains("timed out") || e.contains("WouldBlock") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One request, retried on connection errors; `(status, body)`.
    fn request(
        &self,
        method: &str,
        url: &str,
        form: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut last = String::new();
        for attempt in 0..RETRIES_MAX {
            match http(method, url, form, &self.proxy) {
                Ok(answer) => return Ok(answer),
                Err(e) if e.contains("timed out") => return Err(e),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200 << attempt));
        }
        Err(format!("discovery: {method} {url}: {last}"))
    }
}

/// The member registrations in a v2 directory listing (`_config` and sub-directories
/// excluded).
fn parse_nodes(v: &serde_json::Value) -> Vec<Registration> {
    let Some(nodes) = v["node"]["nodes"].as_array() else {
        return Vec::new();
    };
    nodes
        .iter()
        .filter(|n| !n["dir"].as_bool().unwrap_or(false))
        .filter_map(|n| {
            let key = n["key"].as_str()?.to_string();
            if key_name(&key) == "_config" {
                return None;
            }
            Some(Registration {
                created_index: n["createdIndex"].as_u64()?,
                value: n["value"].as_str()?.to_string(),
                key,
            })
        })
        .collect()
}

/// `application/x-www-form-urlencoded` escaping of a value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `(host:port, path-and-query)` of an `http://` URL.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("discovery URL {url} is not http:// (https is not supported)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// A minimal blocking HTTP/1.1 exchange (Connection: close), through `proxy` if not empty.
fn http(method: &str, url: &str, form: Option<&str>, proxy: &str) -> Result<(u16, String), String> {
    let (authority, path) = split_url(url)?;
    let (connect_to, target) = if proxy.is_empty() {
        (authority.clone(), path)
    } else {
        (split_url(proxy)?.0, url.to_string())
    };
    let addr = connect_to
        .to_socket_addrs()
        .map_err(|e| format!("resolving {connect_to}: {e}"))?
        .next()
        .ok_or_else(|| format!("{connect_to} does not resolve"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connecting to {connect_to}: {e}"))?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let host = authority.clone();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some(body) = form {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    } else {
        request.push_str("\r\n");
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending to {connect_to}: {e}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() > RESPONSE_BYTES_MAX {
                    return Err("discovery answer too large".into());
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(format!("request to {connect_to} timed out"))
            }
            Err(e) => return Err(format!("reading from {connect_to}: {e}")),
        }
    }
    parse_response(&raw)
}

/// `(status, body)` of a raw HTTP/1.1 response (identity or chunked body).
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP answer (no header end)")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> Result<String, String> {
    let mut out = String::new();
    // Bounded by the input: each turn consumes one chunk.
    loop {
        let (size_line, rest) = s.split_once("\r\n").ok_or("malformed chunked body")?;
        let size = usize::from_str_radix(size_line.trim(), 16).map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let data = rest.get(..size).ok_or("chunk past the end")?;
        out.push_str(data);
        s = rest
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .unwrap_or("");
        if s.is_empty() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_give_members_in_creation_order_without_config() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"action":"get","node":{"key":"/discovery/t","dir":true,"nodes":[
                {"key":"/discovery/t/b2","value":"b=http://h:2","modifiedIndex":9,"createdIndex":9},
                {"key":"/discovery/t/_config","dir":true,"modifiedIndex":5,"createdIndex":5},
                {"key":"/discovery/t/a1","value":"a=http://h:1","modifiedIndex":7,"createdIndex":7}
            ],"modifiedIndex":5,"createdIndex":5}}"#,
        )
        .unwrap();
        let mut nodes = parse_nodes(&v);
        nodes.sort_by_key(|n| n.created_index);
        let values: Vec<&str> = nodes.iter().map(|n| n.value.as_str()).collect();
        assert_eq!(values, ["a=http://h:1", "b=http://h:2"]);
        assert_eq!(key_name(&nodes[0].key), "a1");
    }

    #[test]
    fn responses_parse_with_length_or_chunks() {
        let plain = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (201, "{}".into()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "abcde".into()));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn urls_and_forms_are_encoded_as_etcd_expects() {
        assert_eq!(
            split_url("http://127.0.0.1:2379/v2/keys/discovery/t").unwrap(),
            ("127.0.0.1:2379".into(), "/v2/keys/discovery/t".into())
        );
        assert_eq!(split_url("http://h/x").unwrap().0, "h:80");
        assert!(split_url("https://h/x").is_err());
        assert_eq!(form_encode("a=http://h:1"), "a%3Dhttp%3A%2F%2Fh%3A1");
    }
}
