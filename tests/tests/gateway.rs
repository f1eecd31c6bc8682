//! The HTTP/JSON gateway (`POST /v3/...`): the same requests go to a real etcd 3.4 and to
//! the server under test, and the answers are compared: HTTP status, content type and the
//! JSON body, after masking what legitimately differs between two clusters (cluster and
//! member IDs, raft terms and indexes, URLs with their ports, store sizes and hashes).
//! Revisions are not masked: both servers see the same writes from a fresh store.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn send(addr: &str, method: &str, path: &str, body: &str) -> HttpResponse {
    http_send(addr, method, path, body)
}

/// Masks the values that differ between two clusters doing the same thing.
fn mask(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "cluster_id" | "member_id" | "raft_term" | "ID" | "leader" | "raftIndex"
                    | "raftTerm" | "raftAppliedIndex" | "dbSize" | "dbSizeInUse" | "hash"
                    | "version" | "blob" | "remaining_bytes" | "token"
                        if !x.is_object() =>
                    {
                        *x = Value::String("<masked>".into())
                    }
                    "peerURLs" | "clientURLs" => *x = Value::String("<urls>".into()),
                    // Listed by ID, and IDs are random: compare as sets once masked.
                    "members" => {
                        mask(x);
                        if let Value::Array(a) = x {
                            a.sort_by_key(|m| m.to_string());
                        }
                    }
                    _ => mask(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

/// (status, content type, masked body) of one answer; the content type is followed by
/// the Location header when there is one (redirects).
fn answer(s: &Server, method: &str, path: &str, body: &str) -> (u16, String, Value) {
    let r = send(&s.addr(), method, path, body);
    let ctype = r.header("content-type").unwrap_or_default().to_string();
    let ctype = match r.header("location") {
        Some(location) => format!("{ctype} -> {location}"),
        None => ctype,
    };
    let mut v = if ctype.starts_with("application/json") {
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{}: {path}: not JSON ({e}): {:?}", s.kind, r.text()))
    } else {
        Value::String(r.text())
    };
    mask(&mut v);
    (r.status, ctype, v)
}

/// Sends every request to both servers in turn and asserts identical answers.
fn same_answers(etcd: &Server, target: &Server, requests: &[(&str, &str, &str)]) {
    for &(method, path, body) in requests {
        let want = answer(etcd, method, path, body);
        let got = answer(target, method, path, body);
        assert_eq!(got, want, "{method} {path} {body}");
    }
}

/// The first `lines` lines of a streaming answer, then the connection is dropped.
fn stream_lines(s: &Server, path: &str, body: &str, lines: usize) -> (u16, Vec<Value>) {
    let addr = s.addr();
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if let Some((status, got)) = parse_partial(&raw) {
            if got.len() >= lines || stream_ended(&raw) || Instant::now() > deadline {
                return (status, got.into_iter().take(lines).collect());
            }
        }
        assert!(Instant::now() < deadline, "{}: {path}: timed out", s.kind);
    }
    let (status, got) = parse_partial(&raw).expect("a response head");
    (status, got)
}

/// Whether a chunked answer has ended (its last, empty chunk arrived).
fn stream_ended(raw: &[u8]) -> bool {
    raw.ends_with(b"\r\n0\r\n\r\n")
}

/// Status and the complete JSON lines received so far of a chunked answer.
fn parse_partial(raw: &[u8]) -> Option<(u16, Vec<Value>)> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let mut b = &raw[head_end + 4..];
    let mut data = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.trim(), 16).ok()?;
        if size == 0 || b.len() < eol + 2 + size + 2 {
            break;
        }
        data.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    let text = String::from_utf8_lossy(&data).into_owned();
    let lines = text
        .split_terminator('\n')
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("a JSON line");
            mask(&mut v);
            v
        })
        .collect();
    Some((status, lines))
}

fn both() -> (Server, Server) {
    (Server::start(Kind::Etcd), Server::start(target_kind()))
}

#[test]
fn kv_paths_answer_as_etcd() {
    let (etcd, target) = both();
    same_answers(
        &etcd,
        &target,
        &[
            ("POST", "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
            ("POST", "/v3/kv/range", r#"{"key":"Zm9v"}"#),
            // lowerCamelCase input, ints as strings, enums by name and number.
            (
                "POST",
                "/v3/kv/put",
                r#"{"key":"Zm9v","value":"YmF6","prevKv":true}"#,
            ),
            ("POST", "/v3/kv/put", r#"{"key":"Zm9vMg==","value":""}"#),
            (
                "POST",
                "/v3/kv/range",
                r#"{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sort_target":3,"limit":"1"}"#,
            ),
            (
                "POST",
                "/v3/kv/range",
                r#"{"key":"AA==","rangeEnd":"AA==","countOnly":true,"serializable":true}"#,
            ),
            ("POST", "/v3/kv/range", r#"{"key":"bm9wZQ=="}"#),
            (
                "POST",
                "/v3beta/kv/range",
                r#"{"key":"Zm9v","keys_only":true}"#,
            ),
            // A unary method reads the first JSON value and ignores the rest and unknown fields.
            (
                "POST",
                "/v3/kv/range",
                r#"{"key":"Zm9v","bogus":1} trailing"#,
            ),
            (
                "POST",
                "/v3/kv/txn",
                r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],
                    "success":[{"request_range":{"key":"Zm9v"}},{"requestPut":{"key":"YQ==","value":"Yg=="}},
                               {"request_txn":{"success":[{"request_range":{"key":"YQ=="}}]}}],
                    "failure":[{"request_delete_range":{"key":"Zm9v"}}]}"#,
            ),
            (
                "POST",
                "/v3/kv/txn",
                r#"{"compare":[{"key":"Zm9v","target":"VERSION","result":"LESS","version":"1"}],
                    "failure":[{"request_delete_range":{"key":"YQ==","prev_kv":true}}]}"#,
            ),
            (
                "POST",
                "/v3/kv/deleterange",
                r#"{"key":"Zm9v","range_end":"Zm9w","prev_kv":true}"#,
            ),
            ("POST", "/v3/kv/compaction", r#"{"revision":"4"}"#),
            // Errors: compacted and future revisions, missing key, bad input.
            ("POST", "/v3/kv/range", r#"{"key":"Zm9v","revision":2}"#),
            ("POST", "/v3/kv/range", r#"{"key":"Zm9v","revision":"100"}"#),
            ("POST", "/v3/kv/compaction", r#"{"revision":"3"}"#),
            ("POST", "/v3/kv/range", r#"{}"#),
            ("POST", "/v3/kv/range", ""),
            ("POST", "/v3/kv/put", r#"{"value":"YQ=="}"#),
            ("POST", "/v3/kv/range", r#"{"key":"Zm9v!"}"#),
            (
                "POST",
                "/v3/kv/range",
                r#"{"key":"Zm9v","sort_order":"NOPE"}"#,
            ),
            (
                "POST",
                "/v3/kv/range",
                r#"{"key":"Zm9v","keysOnly":"true"}"#,
            ),
            // Routing: unknown method 404, other verbs 405.
            ("POST", "/v3/kv/nothing", "{}"),
            ("POST", "/v3/kv/range/", "{}"),
            ("POST", "/v3/", "{}"),
            ("POST", "/v3beta/", "{}"),
            ("POST", "/v3beta", "{}"),
            ("POST", "/v3alpha/kv/range", "{}"),
            ("POST", "/v3", "{}"),
            ("GET", "/v3/kv/range", ""),
            ("PUT", "/v3/kv/put", "{}"),
            ("POST", "/v3/maintenance/hashkv", "{}"),
            ("OPTIONS", "/v3/kv/range", ""),
        ],
    );
    // Size bounds: a value over --max-request-bytes (1.5 MiB) is refused by the service
    // ("request is too large"); a body far past it is refused before it is decoded.
    let big = |n: usize| {
        let value = "QUFB".repeat(n / 3);
        format!(r#"{{"key":"Ymln","value":"{value}"}}"#)
    };
    let over_limit = big(1_600_000);
    same_answers(&etcd, &target, &[("POST", "/v3/kv/put", &over_limit)]);
    for s in [&etcd, &target] {
        let (status, _, v) = answer(s, "POST", "/v3/kv/put", &big(4_000_000));
        assert_eq!(status, 429, "{}: {v}", s.kind);
        assert_eq!(v["code"], 8, "{}: {v}", s.kind);
    }
    // Bad JSON: the same status and code (the parser's message is Go's on etcd).
    for s in [&etcd, &target] {
        let (status, _, body) = answer(s, "POST", "/v3/kv/range", "{bad");
        assert_eq!(status, 400, "{}", s.kind);
        assert_eq!(body["code"], 3, "{}: {body}", s.kind);
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(body["error"], body["message"]);
    }
    // Byte-level: fields in etcd's order, 64-bit ints as strings, bytes as base64.
    for s in [&etcd, &target] {
        send(
            &s.addr(),
            "POST",
            "/v3/kv/put",
            r#"{"key":"Ynl0ZXM=","value":"dg=="}"#,
        );
    }
    let want = send(
        &etcd.addr(),
        "POST",
        "/v3/kv/range",
        r#"{"key":"Ynl0ZXM="}"#,
    )
    .text();
    let r = send(
        &target.addr(),
        "POST",
        "/v3/kv/range",
        r#"{"key":"Ynl0ZXM="}"#,
    );
    let text = r.text();
    let tail = |t: &str| t[t.find(r#","revision""#).unwrap()..].to_string();
    assert!(text.starts_with(r#"{"header":{"cluster_id":""#), "{text}");
    assert_eq!(tail(&text), tail(&want));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("grpc-metadata-content-type"),
        Some("application/grpc")
    );
}

#[test]
fn lease_paths_answer_as_etcd() {
    let (etcd, target) = both();
    same_answers(
        &etcd,
        &target,
        &[
            ("POST", "/v3/lease/grant", r#"{"TTL":60,"ID":7}"#),
            ("POST", "/v3/lease/grant", r#"{"TTL":"60","ID":"7"}"#),
            ("POST", "/v3/lease/grant", r#"{"TTL":"30","ID":"9"}"#),
            (
                "POST",
                "/v3/kv/put",
                r#"{"key":"bGVhc2Vk","value":"eA==","lease":"7"}"#,
            ),
            ("POST", "/v3/lease/leases", "{}"),
            ("POST", "/v3/kv/lease/leases", ""),
            ("POST", "/v3/lease/revoke", r#"{"ID":9}"#),
            ("POST", "/v3/lease/revoke", r#"{"ID":9}"#),
            ("POST", "/v3/kv/lease/revoke", r#"{"ID":"9"}"#),
            ("POST", "/v3/lease/timetolive", r#"{"ID":9}"#),
            ("POST", "/v3/kv/lease/timetolive", r#"{"ID":9,"keys":true}"#),
            ("GET", "/v3/lease/grant", ""),
        ],
    );
    // TimeToLive counts down: compare all but the remaining TTL.
    for s in [&etcd, &target] {
        let (status, _, mut v) =
            answer(s, "POST", "/v3/lease/timetolive", r#"{"ID":7,"keys":true}"#);
        assert_eq!(status, 200);
        let ttl: i64 = v["TTL"].as_str().unwrap().parse().unwrap();
        assert!((55..=60).contains(&ttl), "{}: {v}", s.kind);
        v.as_object_mut().unwrap().remove("TTL");
        assert_eq!(
            v,
            serde_json::json!({"header":{"cluster_id":"<masked>","member_id":"<masked>","revision":"2","raft_term":"<masked>"},
                "ID":"<masked>","grantedTTL":"60","keys":["bGVhc2Vk"]}),
            "{}",
            s.kind
        );
    }
    // KeepAlive: one answer per request in the body (lease 8 does not exist: TTL left out).
    let want = stream_lines(&etcd, "/v3/lease/keepalive", r#"{"ID":7}{"ID":"8"}"#, 2);
    let got = stream_lines(&target, "/v3/lease/keepalive", r#"{"ID":7}{"ID":"8"}"#, 2);
    assert_eq!(want.1.len(), 2, "{want:?}");
    assert_eq!(got, want);
    // A later request that does not decode ends the client's side: the stream ends after
    // the answers before it (at most 5 lines are waited for; the end comes first).
    let body = r#"{"ID":7}{"ID":"x"}{"ID":7}"#;
    let want = stream_lines(&etcd, "/v3/lease/keepalive", body, 5);
    let got = stream_lines(&target, "/v3/lease/keepalive", body, 5);
    assert_eq!(want.1.len(), 1, "{want:?}");
    assert_eq!(got, want);
}

#[test]
fn watch_streams_several_requests_as_etcd() {
    let (etcd, target) = both();
    same_answers(
        &etcd,
        &target,
        &[
            ("POST", "/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#),
            ("POST", "/v3/kv/put", r#"{"key":"Yg==","value":"Mg=="}"#),
            ("POST", "/v3/kv/deleterange", r#"{"key":"YQ=="}"#),
        ],
    );
    // Two watchers created by one body, both replaying history: 2 created + 2 event lines.
    let body = r#"{"create_request":{"key":"YQ==","start_revision":"2","prev_kv":true}}
                  {"createRequest":{"key":"Yg==","startRevision":2,"filters":["NODELETE"]}}"#;
    let mut want = stream_lines(&etcd, "/v3/watch", body, 4);
    let mut got = stream_lines(&target, "/v3/watch", body, 4);
    // The two watchers' lines may interleave differently; compare them as sets.
    let key = |v: &Value| v.to_string();
    want.1.sort_by_key(key);
    got.1.sort_by_key(key);
    assert_eq!(want.1.len(), 4, "{want:?}");
    assert_eq!(got, want);
    // Create, cancel, progress on one stream, in order.
    let body = r#"{"create_request":{"key":"YQ=="}}{"cancel_request":{"watch_id":0}}{"progress_request":{}}"#;
    let want = stream_lines(&etcd, "/v3/watch", body, 3);
    let got = stream_lines(&target, "/v3/watch", body, 3);
    assert_eq!(want.1.len(), 3, "{want:?}");
    assert_eq!(got, want);
    // A compacted start revision cancels the watcher with the compact revision.
    same_answers(
        &etcd,
        &target,
        &[("POST", "/v3/kv/compaction", r#"{"revision":"3"}"#)],
    );
    let body = r#"{"create_request":{"key":"YQ==","start_revision":1}}"#;
    let want = stream_lines(&etcd, "/v3/watch", body, 2);
    let got = stream_lines(&target, "/v3/watch", body, 2);
    assert_eq!(want.1.len(), 2, "{want:?}");
    assert_eq!(got, want);
    // Live events reach an open stream.
    for s in [&etcd, &target] {
        let addr = s.addr();
        let watcher = std::thread::spawn(move || {
            let body = r#"{"create_request":{"key":"bGl2ZQ=="}}"#;
            let mut c = TcpStream::connect(&addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let req = format!(
                "POST /v3/watch HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            c.write_all(req.as_bytes()).unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let n = c.read(&mut buf).unwrap_or(0);
                raw.extend_from_slice(&buf[..n]);
                if let Some((_, lines)) = parse_partial(&raw) {
                    if lines.len() >= 2 {
                        return lines;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            parse_partial(&raw).map(|x| x.1).unwrap_or_default()
        });
        std::thread::sleep(Duration::from_millis(500));
        send(
            &s.addr(),
            "POST",
            "/v3/kv/put",
            r#"{"key":"bGl2ZQ==","value":"eQ=="}"#,
        );
        let lines = watcher.join().unwrap();
        assert_eq!(lines.len(), 2, "{}: {lines:?}", s.kind);
        assert_eq!(
            lines[1]["result"]["events"][0]["kv"]["value"], "eQ==",
            "{}: {lines:?}",
            s.kind
        );
    }
    // A first request that does not decode fails the call: gRPC Unknown, HTTP 500.
    for s in [&etcd, &target] {
        let (status, _, v) = answer(s, "POST", "/v3/watch", r#"{"create_request":{"key":"YQ=="#);
        assert_eq!(status, 500, "{}: {v}", s.kind);
        assert_eq!(v["code"], 2, "{}: {v}", s.kind);
    }
}

#[test]
fn maintenance_and_cluster_paths_answer_as_etcd() {
    let (etcd, target) = both();
    same_answers(
        &etcd,
        &target,
        &[
            ("POST", "/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#),
            ("POST", "/v3/maintenance/status", "{}"),
            ("POST", "/v3/maintenance/hash", "{}"),
            ("POST", "/v3/maintenance/alarm", r#"{"action":"GET"}"#),
            ("POST", "/v3/maintenance/alarm", "{}"),
            ("POST", "/v3/maintenance/alarm", r#"{"action":"BOGUS"}"#),
            ("POST", "/v3/cluster/member/list", "{}"),
            ("POST", "/v3/cluster/member/remove", r#"{"ID":1}"#),
            (
                "POST",
                "/v3/cluster/member/update",
                r#"{"ID":"1","peerURLs":["http://127.0.0.1:1"]}"#,
            ),
            ("POST", "/v3/cluster/member/promote", r#"{"ID":1}"#),
            (
                "POST",
                "/v3/cluster/member/add",
                r#"{"peerURLs":["http://127.0.0.1:1"],"isLearner":true}"#,
            ),
            ("GET", "/v3/cluster/member/list", ""),
            ("POST", "/v3/maintenance/defragment", "{}"),
            ("POST", "/v3/maintenance/transfer-leadership", "{}"),
            (
                "POST",
                "/v3beta/maintenance/transfer-leadership",
                r#"{"targetID":"1"}"#,
            ),
            ("GET", "/v3/watch", ""),
            ("GET", "/v3/maintenance/snapshot", ""),
            ("GET", "/v3/lease/keepalive", ""),
            ("POST", "/v3/auth/status", "{}"),
        ],
    );
    // Removing the learner just added, by its ID on each server.
    for s in [&etcd, &target] {
        let r = send(&s.addr(), "POST", "/v3/cluster/member/list", "{}");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        // As etcd: members listed by ID.
        let ids: Vec<u64> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["ID"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{}: {ids:?}", s.kind);
        let learner = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["isLearner"] == true)
            .unwrap_or_else(|| panic!("{}: no learner in {v}", s.kind));
        let body = format!(r#"{{"ID":{}}}"#, learner["ID"]);
        let (status, _, v) = answer(s, "POST", "/v3/cluster/member/remove", &body);
        assert_eq!(status, 200, "{}: {v}", s.kind);
        assert_eq!(v["members"].as_array().map(Vec::len), Some(1), "{}", s.kind);
    }
    // Snapshot: chunks as JSON lines, the last one without remaining bytes.
    for s in [&etcd, &target] {
        let r = send(&s.addr(), "POST", "/v3/maintenance/snapshot", "{}");
        assert_eq!(r.status, 200, "{}", s.kind);
        let text = r.text();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(lines.len() >= 2, "{}: {} lines", s.kind, lines.len());
        // remaining_bytes counts down to 0 (then left out) by the last data chunk.
        let mut remaining = u64::MAX;
        for l in &lines {
            assert!(l["result"]["blob"].is_string(), "{}", s.kind);
            let r = l["result"]["remaining_bytes"]
                .as_str()
                .map_or(0, |r| r.parse::<u64>().unwrap());
            assert!(r < remaining || r == 0, "{}: {r} after {remaining}", s.kind);
            remaining = r;
        }
        let before_last = &lines[lines.len() - 2]["result"];
        assert!(before_last.get("remaining_bytes").is_none(), "{}", s.kind);
        let last = &lines[lines.len() - 1]["result"];
        // The checksum: 32 bytes, base64.
        assert_eq!(last["blob"].as_str().map(str::len), Some(44), "{}", s.kind);
    }
}

/// One answer with an `Authorization` header, masked as [`answer`] masks (tokens too).
fn answer_with_token(s: &Server, path: &str, body: &str, token: &str) -> (u16, Value) {
    let addr = s.addr();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let r = parse_http_response(&raw).expect("http answer");
    let mut v: Value = serde_json::from_slice(&r.body).expect("JSON");
    mask(&mut v);
    (r.status, v)
}

#[test]
fn auth_paths_answer_as_etcd() {
    let (etcd, target) = both();
    same_answers(
        &etcd,
        &target,
        &[
            (
                "POST",
                "/v3/auth/user/add",
                r#"{"name":"root","password":"pw"}"#,
            ),
            (
                "POST",
                "/v3/auth/user/add",
                r#"{"name":"root","password":"pw"}"#,
            ),
            (
                "POST",
                "/v3/auth/user/add",
                r#"{"name":"cert","options":{"no_password":true}}"#,
            ),
            (
                "POST",
                "/v3/auth/user/grant",
                r#"{"user":"root","role":"root"}"#,
            ),
            ("POST", "/v3/auth/role/add", r#"{"name":"r1"}"#),
            (
                "POST",
                "/v3/auth/role/grant",
                r#"{"name":"r1","perm":{"permType":"READWRITE","key":"YQ==","range_end":"Yg=="}}"#,
            ),
            (
                "POST",
                "/v3/auth/role/grant",
                r#"{"name":"r1","perm":{"permType":1,"key":"eg=="}}"#,
            ),
            ("POST", "/v3/auth/role/get", r#"{"role":"r1"}"#),
            ("POST", "/v3/auth/role/get", r#"{"role":"nope"}"#),
            (
                "POST",
                "/v3/auth/role/revoke",
                r#"{"role":"r1","key":"eg=="}"#,
            ),
            (
                "POST",
                "/v3/auth/role/revoke",
                r#"{"role":"r1","key":"eg=="}"#,
            ),
            (
                "POST",
                "/v3/auth/user/grant",
                r#"{"user":"cert","role":"r1"}"#,
            ),
            ("POST", "/v3/auth/user/get", r#"{"name":"cert"}"#),
            (
                "POST",
                "/v3/auth/user/revoke",
                r#"{"name":"cert","role":"r1"}"#,
            ),
            ("POST", "/v3/auth/user/list", "{}"),
            ("POST", "/v3/auth/role/list", "{}"),
            (
                "POST",
                "/v3/auth/user/changepw",
                r#"{"name":"cert","password":"x"}"#,
            ),
            ("POST", "/v3/auth/role/delete", r#"{"role":"r1"}"#),
            (
                "POST",
                "/v3/auth/authenticate",
                r#"{"name":"root","password":"pw"}"#,
            ),
            ("POST", "/v3/auth/enable", "{}"),
            ("POST", "/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#),
            (
                "POST",
                "/v3/auth/authenticate",
                r#"{"name":"root","password":"wrong"}"#,
            ),
            ("GET", "/v3/auth/enable", ""),
        ],
    );
    // The token Authenticate returns goes in the Authorization header.
    let mut answers = Vec::new();
    for s in [&etcd, &target] {
        let r = send(
            &s.addr(),
            "POST",
            "/v3/auth/authenticate",
            r#"{"name":"root","password":"pw"}"#,
        );
        let v: Value = serde_json::from_slice(&r.body).expect("JSON");
        let token = v["token"].as_str().expect("a token").to_string();
        let steps = [
            ("/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#),
            ("/v3/kv/range", r#"{"key":"YQ=="}"#),
            ("/v3/auth/user/list", "{}"),
            ("/v3/auth/disable", "{}"),
        ];
        let got: Vec<_> = steps
            .iter()
            .map(|(path, body)| answer_with_token(s, path, body, &token))
            .collect();
        answers.push(got);
    }
    assert_eq!(
        answers[1], answers[0],
        "with a token (left: corekv, right: etcd)"
    );
}

#[test]
fn malformed_bodies_get_gos_errors() {
    let (etcd, target) = both();
    let bodies = [
        "xyz",
        r#"{"key":"#,
        r#"{"key":"YQ==""#,
        r#"{"key": 5}"#,
        r#"{"key":"YQ==","limit":"abc"}"#,
        r#"{"key":"YQ==","limit":"12x"}"#,
        r#"{"key":"YQ==","limit":""}"#,
        r#"{"key":"YQ==","limit":"+5"}"#,
        r#"{"key":"YQ==","limit":"007"}"#,
        r#"{"key":"YQ==","limit":" 5"}"#,
        r#"{"key":"YQ==","limit":"-"}"#,
        r#"{"key":"YQ==","limit":"1."}"#,
        r#"{"key":"YQ==","limit":1.5}"#,
        r#"{"a" 1}"#,
        r#"{"a":1 "b"}"#,
        "{1:2}",
        r#"{"key":"YQ==","range_end":[1 2]}"#,
        r#"{"key":tru}"#,
        r#"{"key":-x}"#,
        r#"{"key":1.x}"#,
        r#"{"key":1ex}"#,
        r#"{"key":"\x"}"#,
        r#"{"key":"\u12g4"}"#,
        "{\"key\":\"a\nb\"}",
        r#"{"key":'b'}"#,
        r#"{"key":"YQ=="} trailing"#,
        r#"[]"#,
    ];
    let requests: Vec<(&str, &str, &str)> = bodies
        .iter()
        .flat_map(|b| [("POST", "/v3/kv/range", *b), ("POST", "/v3/kv/put", *b)])
        .collect();
    same_answers(&etcd, &target, &requests);
}
