//! The HTTP endpoints served on the client port next to gRPC: /health,
//! /version and /metrics. Shapes are compared with a real etcd; metric names
//! are the server's own (`etcd_`/`grpc_` for etcd, `corekv_` for corekv).

mod common;

use common::*;
use serde_json::Value;

fn metric_prefixes(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Etcd => &["etcd_", "grpc_"],
        Kind::Corekv => &["corekv_"],
    }
}

/// The JSON object served at `path`, checked for status 200.
fn get_json(s: &Server, path: &str) -> (HttpResponse, serde_json::Map<String, Value>) {
    let r = http_get(&s.addr(), path).unwrap_or_else(|e| panic!("{}: GET {path}: {e}", s.kind));
    assert_eq!(
        r.status,
        200,
        "{}: GET {path} status; body {:?}",
        s.kind,
        r.text()
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "{}: GET {path} body is not JSON ({e}): {:?}",
            s.kind,
            r.text()
        )
    });
    match v {
        Value::Object(m) => (r, m),
        other => panic!(
            "{}: GET {path}: expected a JSON object, got {other}",
            s.kind
        ),
    }
}

/// Every key etcd serves must be served by the target with the same JSON type.
fn assert_same_shape(
    path: &str,
    etcd: &serde_json::Map<String, Value>,
    other: &serde_json::Map<String, Value>,
    kind: Kind,
) {
    for (k, v) in etcd {
        let o = other.get(k).unwrap_or_else(|| {
            panic!(
                "{kind}: GET {path} lacks field {k:?} that etcd serves ({etcd:?}); got {other:?}"
            )
        });
        let ty = |v: &Value| match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        assert_eq!(
            ty(o),
            ty(v),
            "{kind}: GET {path} field {k:?}: etcd {v}, {kind} {o}"
        );
    }
}

#[test]
fn health_and_version_match_etcd_shape() {
    let etcd = Server::start(Kind::Etcd);
    let (_, eh) = get_json(&etcd, "/health");
    assert_eq!(
        eh.get("health"),
        Some(&Value::String("true".into())),
        "etcd /health: {eh:?}"
    );
    let (_, ev) = get_json(&etcd, "/version");
    assert!(
        ev.get("etcdserver").and_then(|v| v.as_str()).is_some(),
        "etcd /version: {ev:?}"
    );

    let kind = target_kind();
    let s = if kind == Kind::Etcd {
        None
    } else {
        Some(Server::start(kind))
    };
    let s = s.as_ref().unwrap_or(&etcd);

    let (r, h) = get_json(s, "/health");
    assert_eq!(
        h.get("health"),
        Some(&Value::String("true".into())),
        "{kind}: /health must say {{\"health\":\"true\"}} (a string, like etcd): {h:?}"
    );
    assert_same_shape("/health", &eh, &h, kind);
    assert!(
        r.header("content-type").is_some(),
        "{kind}: /health without content-type"
    );

    let (_, v) = get_json(s, "/version");
    assert_same_shape("/version", &ev, &v, kind);
    assert!(
        !v["etcdserver"].as_str().unwrap().is_empty(),
        "{kind}: /version etcdserver is empty: {v:?}"
    );

    // Unknown paths are 404 like etcd's.
    let e404 = http_get(&etcd.addr(), "/no-such-path").unwrap();
    assert_eq!(e404.status, 404);
    let r = http_get(&s.addr(), "/no-such-path").unwrap();
    assert_eq!(r.status, 404, "{kind}: GET /no-such-path");
}

/// (metric name incl. labels, value) for every sample line.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, rest) = match l.rfind('}') {
                Some(i) => (&l[..=i], &l[i + 1..]),
                None => l.split_once(' ')?,
            };
            let v = rest.split_whitespace().next()?;
            let v = match v {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                other => other.parse().ok()?,
            };
            Some((name.trim().to_string(), v))
        })
        .collect()
}

#[tokio::test]
async fn metrics_expose_put_counter_fsync_histogram_and_revision() {
    const PUTS: usize = 7;
    on_etcd_and_target(async |s: &Server| {
        let kind = s.kind;
        let prefixes = metric_prefixes(kind);
        let mut c = s.client().await;
        for i in 0..PUTS {
            c.put(format!("m{i}"), "v", None).await.unwrap();
        }
        let cur = c
            .get("m0", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        assert_eq!(cur, 1 + PUTS as i64);

        let r = http_get(&s.addr(), "/metrics").unwrap();
        assert_eq!(r.status, 200, "{kind}: GET /metrics");
        let ct = r.header("content-type").unwrap_or_default().to_string();
        assert!(
            ct.starts_with("text/plain"),
            "{kind}: /metrics content-type {ct:?}"
        );
        let text = r.text();
        let ours = |name: &str| prefixes.iter().any(|p| name.starts_with(p));
        let all = samples(&text);
        let mine: Vec<&(String, f64)> = all.iter().filter(|(n, _)| ours(n)).collect();
        assert!(
            !mine.is_empty(),
            "{kind}: no metrics with prefix {prefixes:?}"
        );
        let dump = || {
            mine.iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        };

        // A request counter for KV Put that has counted our puts.
        assert!(
            mine.iter()
                .any(|(n, v)| n.contains("Put") && *v >= PUTS as f64),
            "{kind}: no {prefixes:?} sample mentioning `Put` with value >= {PUTS}:\n{}",
            truncate(&dump(), 20000)
        );

        // A WAL fsync histogram that has observed something.
        let fsync_type = text.lines().any(|l| {
            l.starts_with("# TYPE ")
                && ours(&l[7..])
                && l.contains("fsync")
                && l.ends_with(" histogram")
        });
        assert!(
            fsync_type,
            "{kind}: no `# TYPE <...fsync...> histogram` line"
        );
        assert!(
            mine.iter()
                .any(|(n, _)| n.contains("fsync") && n.contains("_bucket")),
            "{kind}: no fsync histogram buckets"
        );
        assert!(
            mine.iter()
                .any(|(n, v)| n.contains("fsync") && n.contains("_count") && *v > 0.0),
            "{kind}: fsync histogram _count is not > 0"
        );

        // The current revision.
        assert!(
            mine.iter()
                .any(|(n, v)| n.contains("revision") && !n.contains("compact") && *v == cur as f64),
            "{kind}: no revision metric equal to the current revision {cur}:\n{}",
            truncate(&dump(), 20000)
        );
    })
    .await;
}
