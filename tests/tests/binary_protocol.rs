//! corekv's binary protocol (docs/protocol.md) against the same server's gRPC answers:
//! every KV and Lease op gives the same revisions, values and error texts either way;
//! pipelined answers come back out of order; watch responses are pushed; a malformed
//! frame gets an error frame and a closed connection while other connections go on.
//!
//! corekv only (etcd has no binary protocol). The server gets its binary listener on a
//! free port through `--listen-binary-urls`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use corekv_client::frame::{self, kind, ErrorBody, Frame, FrameDecoder, Hello, HelloAck};
use corekv_client::proto::*;
use corekv_client::{ClientOptions, Connection, Error, WatchOptions};
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
const KEY_NOT_PROVIDED: &str = "etcdserver: key is not provided";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
/// Upper bound for any single wait in these tests.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A corekv server with its binary listener on a free port; returns it and `host:port`.
fn start() -> (Server, String) {
    let port = free_ports(1)[0];
    let opts = ServerOpts {
        extra_args: vec![
            "--listen-binary-urls".into(),
            format!("http://127.0.0.1:{port}"),
        ],
        ..Default::default()
    };
    let server = Server::start_with(Kind::Corekv, opts);
    (server, format!("127.0.0.1:{port}"))
}

async fn binary(addr: &str) -> Arc<Connection> {
    let connection = tokio::time::timeout(
        STEP_TIMEOUT,
        Connection::connect(addr, &ClientOptions::default()),
    )
    .await
    .expect("connect in time")
    .expect("connect to the binary port");
    Arc::new(connection)
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP_TIMEOUT:?}"))
}

/// (key, value, create, mod, version, lease) of gRPC and binary key-values, comparable.
type Kv = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

fn grpc_kvs(kvs: &[etcd_client::KeyValue]) -> Vec<Kv> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            )
        })
        .collect()
}

fn pb_kvs(kvs: &[PbKeyValue]) -> Vec<Kv> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.clone(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease,
            )
        })
        .collect()
}

fn revision_of(header: &Option<PbResponseHeader>) -> i64 {
    header.as_ref().expect("response has a header").revision
}

/// (gRPC code number, message) of a gRPC error.
#[track_caller]
fn grpc_error<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>) -> (u32, String) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => (s.code() as i32 as u32, s.message().to_string()),
        other => panic!("expected a gRPC status error, got {other:?}"),
    }
}

/// (code, message) of a binary-protocol error.
#[track_caller]
fn binary_error<T: std::fmt::Debug>(r: Result<T, Error>) -> (u32, String) {
    match r {
        Err(Error::Status { code, message }) => (code, message),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

fn range(key: &[u8]) -> PbRangeRequest {
    PbRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn put(key: &[u8], value: &[u8]) -> PbPutRequest {
    PbPutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_ops_match_the_grpc_answers_of_the_same_server() {
    let (server, addr) = start();
    let mut grpc = server.client().await;
    let bin = binary(&addr).await;

    let hello = bin.server_hello();
    let status = grpc.status().await.unwrap();
    assert_eq!(hello.version, frame::PROTOCOL_VERSION);
    assert_eq!(
        hello.member_id,
        status.header().unwrap().member_id(),
        "hello names the member gRPC reports"
    );

    // Writes alternate between the protocols: one revision sequence, read the same by both.
    let r1 = bin.put(&put(b"a", b"1")).await.unwrap();
    let rev1 = revision_of(&r1.header);
    let r2 = grpc
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(r2.header().unwrap().revision(), rev1 + 1);
    let prev = r2.prev_key().expect("prev kv");
    assert_eq!((prev.value(), prev.mod_revision()), (&b"1"[..], rev1));
    let r3 = bin
        .put(&PbPutRequest {
            prev_kv: true,
            ..put(b"a", b"3")
        })
        .await
        .unwrap();
    assert_eq!(revision_of(&r3.header), rev1 + 2);
    let prev = r3.prev_kv.expect("prev kv over binary");
    assert_eq!(
        (prev.value, prev.mod_revision, prev.version),
        (b"2".to_vec(), rev1 + 1, 2)
    );
    let header = r3.header.as_ref().unwrap();
    assert_eq!(header.member_id, hello.member_id);
    assert_eq!(header.cluster_id, hello.cluster_id);
    for key in [&b"b"[..], b"c", b"d"] {
        bin.put(&put(key, key)).await.unwrap();
    }

    // Range: single key, prefix range, limit, count-only, at a past revision.
    let all = PbRangeRequest {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        ..Default::default()
    };
    let b = bin.range(&all).await.unwrap();
    let g = grpc
        .get("a", Some(GetOptions::new().with_range("z")))
        .await
        .unwrap();
    assert_eq!(pb_kvs(&b.kvs), grpc_kvs(g.kvs()));
    assert_eq!((b.count, b.more), (g.count(), g.more()));
    assert_eq!(revision_of(&b.header), g.header().unwrap().revision());
    assert_eq!(b.kvs.len(), 4);
    let b = bin
        .range(&PbRangeRequest {
            limit: 2,
            ..all.clone()
        })
        .await
        .unwrap();
    let g = grpc
        .get("a", Some(GetOptions::new().with_range("z").with_limit(2)))
        .await
        .unwrap();
    assert_eq!(pb_kvs(&b.kvs), grpc_kvs(g.kvs()));
    assert_eq!((b.count, b.more), (4, true));
    assert_eq!((g.count(), g.more()), (4, true));
    let b = bin
        .range(&PbRangeRequest {
            revision: rev1,
            ..range(b"a")
        })
        .await
        .unwrap();
    assert_eq!(b.kvs[0].value, b"1".to_vec());
    let b = bin
        .range(&PbRangeRequest {
            count_only: true,
            serializable: true,
            ..all.clone()
        })
        .await
        .unwrap();
    assert_eq!((b.count, b.kvs.len()), (4, 0));

    // DeleteRange with prev kvs; a delete of nothing does not bump the revision.
    let before = revision_of(&bin.range(&range(b"probe")).await.unwrap().header);
    let d = bin
        .delete_range(&PbDeleteRequest {
            key: b"b".to_vec(),
            range_end: b"d".to_vec(),
            prev_kv: true,
        })
        .await
        .unwrap();
    assert_eq!(d.deleted, 2);
    assert_eq!(d.prev_kvs.len(), 2);
    assert_eq!(revision_of(&d.header), before + 1);
    let d = bin
        .delete_range(&PbDeleteRequest {
            key: b"nothing".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((d.deleted, revision_of(&d.header)), (0, before + 1));
    let g = grpc.delete("nothing", None).await.unwrap();
    assert_eq!(g.header().unwrap().revision(), before + 1);

    // Txn: a compare on the value, both branches, then what gRPC reads afterwards.
    let txn = PbTxnRequest {
        compare: vec![PbCompare {
            result: 0, // EQUAL
            target: 3, // VALUE
            key: b"a".to_vec(),
            target_union: Some(PbTargetUnion::Value(b"3".to_vec())),
            ..Default::default()
        }],
        success: vec![PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(put(b"t", b"yes"))),
        }],
        failure: vec![PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(put(b"t", b"no"))),
        }],
    };
    let t = bin.txn(&txn).await.unwrap();
    assert!(t.succeeded);
    let txn_rev = revision_of(&t.header);
    let g = grpc.get("t", None).await.unwrap();
    assert_eq!(grpc_kvs(g.kvs())[0].1, b"yes".to_vec());
    assert_eq!(g.kvs()[0].mod_revision(), txn_rev);
    let g = grpc
        .txn(
            Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "nope")])
                .and_then([TxnOp::put("t", "grpc-yes", None)])
                .or_else([TxnOp::put("t", "grpc-no", None)]),
        )
        .await
        .unwrap();
    assert!(!g.succeeded());
    assert_eq!(g.header().unwrap().revision(), txn_rev + 1);
    // A read-only txn does not bump the revision.
    let read_only = PbTxnRequest {
        success: vec![PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestRange(range(b"t"))),
        }],
        ..Default::default()
    };
    let t = bin.txn(&read_only).await.unwrap();
    assert_eq!(revision_of(&t.header), txn_rev + 1);
    match &t.responses[0].response {
        Some(PbTxnOpResponse::ResponseRange(r)) => assert_eq!(r.kvs[0].value, b"grpc-no".to_vec()),
        other => panic!("expected a range response, got {other:?}"),
    }

    // Errors: same code and text on both protocols.
    let b = binary_error(bin.put(&put(b"", b"v")).await);
    let g = grpc_error(grpc.put("", "v", None).await);
    assert_eq!(b, g);
    assert_eq!(
        b,
        (frame::code::INVALID_ARGUMENT, KEY_NOT_PROVIDED.to_string())
    );
    let dup = PbTxnRequest {
        success: vec![
            PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestPut(put(b"x", b"1"))),
            },
            PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestPut(put(b"x", b"2"))),
            },
        ],
        ..Default::default()
    };
    let b = binary_error(bin.txn(&dup).await);
    let g = grpc_error(
        grpc.txn(Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]))
            .await,
    );
    assert_eq!(b, g);
    assert_eq!(b.1, DUPLICATE_KEY);
    let future = before + 1000;
    let b = binary_error(
        bin.range(&PbRangeRequest {
            revision: future,
            ..range(b"a")
        })
        .await,
    );
    let g = grpc_error(
        grpc.get("a", Some(GetOptions::new().with_revision(future)))
            .await,
    );
    assert_eq!(b, g);
    assert_eq!(b, (frame::code::OUT_OF_RANGE, FUTURE_REV.to_string()));

    // Compact over binary; both protocols then refuse the compacted revision the same way.
    let c = bin
        .compact(&PbCompactionRequest {
            revision: rev1 + 1,
            physical: true,
        })
        .await
        .unwrap();
    assert!(revision_of(&c.header) > txn_rev);
    let b = binary_error(
        bin.range(&PbRangeRequest {
            revision: rev1,
            ..range(b"a")
        })
        .await,
    );
    let g = grpc_error(
        grpc.get("a", Some(GetOptions::new().with_revision(rev1)))
            .await,
    );
    assert_eq!(b, g);
    assert_eq!(b, (frame::code::OUT_OF_RANGE, COMPACTED.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_ops_match_the_grpc_answers_of_the_same_server() {
    let (server, addr) = start();
    let mut grpc = server.client().await;
    let bin = binary(&addr).await;

    let granted = bin
        .lease_grant(&PbLeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap();
    assert!(granted.id > 0);
    assert_eq!(granted.ttl, 60);
    assert!(granted.error.is_empty());
    bin.put(&PbPutRequest {
        lease: granted.id,
        ..put(b"leased", b"v")
    })
    .await
    .unwrap();

    let b = bin
        .lease_time_to_live(&PbLeaseTimeToLiveRequest {
            id: granted.id,
            keys: true,
        })
        .await
        .unwrap();
    let g = grpc
        .lease_time_to_live(
            granted.id,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert_eq!(
        (b.id, b.granted_ttl, b.keys.clone()),
        (g.id(), g.granted_ttl(), g.keys().to_vec())
    );
    assert_eq!(b.keys, vec![b"leased".to_vec()]);
    assert!(b.ttl > 0 && b.ttl <= 60, "ttl {}", b.ttl);

    let k = bin.lease_keep_alive(granted.id).await.unwrap();
    assert_eq!((k.id, k.ttl), (granted.id, 60));
    // An unknown lease: TTL 0, not an error (as etcd's keep-alive stream answers).
    let k = bin.lease_keep_alive(granted.id + 12345).await.unwrap();
    assert_eq!(k.ttl, 0);

    let leases = bin.lease_leases().await.unwrap();
    let ids: Vec<i64> = leases.leases.iter().map(|l| l.id).collect();
    let g: Vec<i64> = grpc
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert_eq!(ids, g);
    assert_eq!(ids, vec![granted.id]);

    let revoked = bin
        .lease_revoke(&PbLeaseRevokeRequest { id: granted.id })
        .await
        .unwrap();
    let after = revision_of(&revoked.header);
    let g = grpc.get("leased", None).await.unwrap();
    assert_eq!((g.count(), g.header().unwrap().revision()), (0, after));

    let b = binary_error(
        bin.lease_revoke(&PbLeaseRevokeRequest { id: granted.id })
            .await,
    );
    let g = grpc_error(grpc.lease_revoke(granted.id).await);
    assert_eq!(b, g);
    assert_eq!(b, (frame::code::NOT_FOUND, LEASE_NOT_FOUND.to_string()));
    let b = binary_error(
        bin.lease_grant(&PbLeaseGrantRequest { ttl: 10, id: 7 })
            .await
            .and(
                bin.lease_grant(&PbLeaseGrantRequest { ttl: 10, id: 7 })
                    .await,
            ),
    );
    let g = grpc_error(
        grpc.lease_grant(10, Some(etcd_client::LeaseGrantOptions::new().with_id(7)))
            .await,
    );
    assert_eq!(b, g);
}

/// A raw protocol connection, for exact frames.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(64 << 20),
        }
    }

    async fn hello(addr: &str) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let mut out = Vec::new();
        let hello = Hello {
            version_min: 1,
            version_max: 1,
        };
        frame::encode_raw(&mut out, kind::HELLO, 0, &hello.to_bytes());
        raw.send(&out).await;
        let ack = raw.next().await.expect("hello answer");
        assert_eq!(ack.kind, kind::HELLO_ACK);
        let ack = HelloAck::parse(&ack.payload).unwrap();
        assert_eq!(ack.version, 1);
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        within("write", self.stream.write_all(bytes)).await.unwrap();
    }

    /// The next frame, or `None` at end of stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.buf)
                .expect("server frames are valid")
            {
                return Some(frame);
            }
            let n = within("read", self.stream.read_buf(&mut self.buf))
                .await
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_out_of_order_by_id() {
    const ATTEMPTS_MAX: i64 = 5;
    let (server, addr) = start();
    let mut raw = Raw::hello(&addr).await;
    // One write (answered after its fdatasync) and, behind it in the same segment, 50
    // serializable reads (answered from the core's view, without waiting for the write).
    // Whether a read overtakes the write depends on scheduling (a fast disk and a busy
    // core can answer the write first), so the experiment runs a bounded number of times
    // and one overtaking proves the answers are not kept in request order.
    let mut overtaken = false;
    let mut orders = Vec::new();
    for attempt in 0..ATTEMPTS_MAX {
        let mut out = Vec::new();
        frame::encode_message(&mut out, kind::PUT, 1000, &put(b"p", b"v"));
        for id in 1..=50u64 {
            let read = PbRangeRequest {
                serializable: true,
                ..range(b"p")
            };
            frame::encode_message(&mut out, kind::RANGE, id, &read);
        }
        raw.send(&out).await;
        let mut order = Vec::new();
        let mut put_revision = 0;
        while order.len() < 51 {
            let frame = raw
                .next()
                .await
                .expect("all 51 answers before the end of stream");
            match frame.kind {
                k if k == kind::PUT | kind::RESPONSE_BIT => {
                    assert_eq!(frame.request_id, 1000);
                    let resp: PbPutResponse = prost::Message::decode(frame.payload).unwrap();
                    put_revision = revision_of(&resp.header);
                }
                k if k == kind::RANGE | kind::RESPONSE_BIT => {
                    assert!((1..=50).contains(&frame.request_id));
                    let _: PbRangeResponse = prost::Message::decode(frame.payload).unwrap();
                }
                other => panic!("unexpected answer kind {other:#04x}"),
            }
            order.push(frame.request_id);
        }
        let mut sorted = order.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            51,
            "every request answered exactly once: {order:?}"
        );
        assert_eq!(put_revision, attempt + 2);
        let put_at = order.iter().position(|id| *id == 1000).unwrap();
        if put_at > 0 {
            overtaken = true;
            break;
        }
        orders.push(order);
    }
    assert!(
        overtaken,
        "in {ATTEMPTS_MAX} tries no read sent after the write was answered before it: {orders:?}"
    );

    // Many requests in flight on one client connection, each matched to its own answer.
    let bin = binary(&addr).await;
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let bin = bin.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("pipe/{i:03}").into_bytes();
            let r = bin.put(&put(&key, &i.to_le_bytes())).await.unwrap();
            let got = bin.range(&range(&key)).await.unwrap();
            assert_eq!(got.kvs[0].value, i.to_le_bytes().to_vec());
            revision_of(&r.header)
        }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(within("pipelined put", task).await.unwrap());
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 300, "every put got its own revision");
    assert_eq!(bin.pending(), 0, "every answered request freed its id");
    // Callers that give up before their answers leave nothing behind either.
    for i in 0..50u32 {
        let key = format!("abandoned/{i}").into_bytes();
        let _ = tokio::time::timeout(Duration::from_micros(10), bin.put(&put(&key, b"v"))).await;
    }
    let count = within("reads after abandoned puts", async {
        loop {
            let all = bin
                .range(&PbRangeRequest {
                    key: b"abandoned/".to_vec(),
                    range_end: corekv_client::prefix_end(b"abandoned/"),
                    count_only: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            // Abandoned puts that were sent still apply; wait until the last answered.
            if bin.pending() == 0 {
                return all.count;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(count <= 50);
    assert_eq!(bin.pending(), 0);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_are_pushed_to_their_watchers() {
    let (server, addr) = start();
    let mut grpc = server.client().await;
    let bin = binary(&addr).await;

    let mut on_a = within("watch a/", bin.watch(WatchOptions::prefix(b"a/".to_vec())))
        .await
        .unwrap();
    let mut on_b = within(
        "watch b",
        bin.watch(WatchOptions {
            prev_kv: true,
            ..WatchOptions::key(b"b".to_vec())
        }),
    )
    .await
    .unwrap();
    assert_ne!(on_a.watch_id(), on_b.watch_id());
    let start_rev = revision_of(&on_a.created().header);

    let r1 = revision_of(&bin.put(&put(b"a/1", b"x")).await.unwrap().header);
    let r2 = grpc
        .put("b", "y", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let r3 = grpc
        .put("b", "z", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let r4 = revision_of(&bin.put(&put(b"a/2", b"w")).await.unwrap().header);
    assert_eq!(
        (r1, r2, r3, r4),
        (start_rev + 1, start_rev + 2, start_rev + 3, start_rev + 4)
    );

    let mut a_events = Vec::new();
    while a_events.len() < 2 {
        let response = within("events on a/", on_a.next()).await.unwrap().unwrap();
        assert_eq!(response.watch_id, on_a.watch_id());
        for event in response.events {
            let kv = event.kv.unwrap();
            a_events.push((kv.key, kv.mod_revision));
        }
    }
    assert_eq!(a_events, vec![(b"a/1".to_vec(), r1), (b"a/2".to_vec(), r4)]);
    let mut b_events = Vec::new();
    while b_events.len() < 2 {
        let response = within("events on b", on_b.next()).await.unwrap().unwrap();
        assert_eq!(response.watch_id, on_b.watch_id());
        for event in response.events {
            let kv = event.kv.unwrap();
            let prev = event.prev_kv.map(|p| p.value);
            b_events.push((kv.value, kv.mod_revision, prev));
        }
    }
    assert_eq!(
        b_events,
        vec![
            (b"y".to_vec(), r2, None),
            (b"z".to_vec(), r3, Some(b"y".to_vec()))
        ]
    );

    // Cancel: the canceled response ends that watcher; the other keeps getting events.
    on_a.cancel().await.unwrap();
    let last = within("canceled", on_a.next()).await.unwrap().unwrap();
    assert!(last.canceled);
    assert!(on_a.next().await.is_none());
    bin.put(&put(b"a/3", b"q")).await.unwrap();
    let r = revision_of(&bin.put(&put(b"b", b"after")).await.unwrap().header);
    let response = within("event on b after cancel", on_b.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.events[0].kv.as_ref().unwrap().mod_revision, r);

    // A watch from a compacted revision: created, then canceled with the compact revision
    // (as etcd does).
    bin.compact(&PbCompactionRequest {
        revision: r,
        physical: false,
    })
    .await
    .unwrap();
    let mut old = within(
        "watch from a compacted revision",
        bin.watch(WatchOptions {
            start_revision: 2,
            ..WatchOptions::key(b"b".to_vec())
        }),
    )
    .await
    .unwrap();
    let response = within("compacted cancel", old.next())
        .await
        .unwrap()
        .unwrap();
    assert!(response.canceled);
    assert_eq!(response.compact_revision, r);

    // A refused create (empty range) is an error naming etcd's reason.
    let refused = bin
        .watch(WatchOptions {
            key: b"z".to_vec(),
            range_end: b"a".to_vec(),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(refused, Err(Error::WatchRefused(_))),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_frame_and_a_close_while_others_go_on() {
    let (mut server, addr) = start();
    let healthy = binary(&addr).await;
    healthy.put(&put(b"k", b"before")).await.unwrap();

    /// Sends `bytes` (after a hello when `hello`) and expects one error frame, then EOF.
    async fn refused(addr: &str, hello: bool, bytes: &[u8]) -> ErrorBody {
        let mut raw = if hello {
            Raw::hello(addr).await
        } else {
            Raw::connect(addr).await
        };
        raw.send(bytes).await;
        let frame = raw.next().await.expect("an error frame before the close");
        assert_eq!(frame.kind, kind::ERROR);
        let body = ErrorBody::parse(&frame.payload).unwrap();
        assert!(
            raw.next().await.is_none(),
            "the connection closes after {body:?}"
        );
        body
    }

    // An unknown kind after the hello.
    let mut out = Vec::new();
    frame::encode_raw(&mut out, 0x77, 5, b"junk");
    let body = refused(&addr, true, &out).await;
    assert_eq!(body.code, frame::code::INVALID_ARGUMENT);
    assert!(
        body.message.contains("unexpected frame kind 0x77"),
        "{}",
        body.message
    );

    // A payload that is not the kind's message.
    let mut out = Vec::new();
    frame::encode_raw(&mut out, kind::PUT, 6, &[0xff; 7]);
    let body = refused(&addr, true, &out).await;
    assert!(
        body.message.contains("malformed put frame"),
        "{}",
        body.message
    );

    // A frame larger than the maximum (announced length only).
    let body = refused(&addr, true, &u32::MAX.to_le_bytes()).await;
    assert!(
        body.message.contains("exceeds the maximum"),
        "{}",
        body.message
    );

    // A request before the hello, and an HTTP/2 preface sent to the binary port.
    let mut out = Vec::new();
    frame::encode_message(&mut out, kind::PUT, 1, &put(b"k", b"v"));
    let body = refused(&addr, false, &out).await;
    assert!(
        body.message.contains("expected a hello"),
        "{}",
        body.message
    );
    let body = refused(&addr, false, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(
        body.message.contains("exceeds the maximum"),
        "{}",
        body.message
    );

    // A hello for versions this server does not speak.
    let mut out = Vec::new();
    let hello = Hello {
        version_min: 7,
        version_max: 9,
    };
    frame::encode_raw(&mut out, kind::HELLO, 0, &hello.to_bytes());
    let body = refused(&addr, false, &out).await;
    assert_eq!(body.code, frame::code::UNIMPLEMENTED);

    // The other connection and the server went on.
    let r = healthy.put(&put(b"k", b"after")).await.unwrap();
    let got = healthy.range(&range(b"k")).await.unwrap();
    assert_eq!(got.kvs[0].value, b"after".to_vec());
    assert_eq!(got.kvs[0].mod_revision, revision_of(&r.header));
    assert!(server.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_requests_than_the_in_flight_bound_are_all_answered_and_a_pool_spreads_them() {
    let (server, addr) = start();
    let mut raw = Raw::hello(&addr).await;
    // Three times the server's read-ahead bound (1024) in one write: it stops reading at
    // the bound and goes on as answers leave, so every request is still answered once.
    const REQUESTS: u64 = 3 * 1024;
    let mut out = Vec::new();
    for id in 1..=REQUESTS {
        let read = PbRangeRequest {
            serializable: true,
            ..range(b"nothing")
        };
        frame::encode_message(&mut out, kind::RANGE, id, &read);
    }
    raw.send(&out).await;
    let mut seen = vec![false; REQUESTS as usize + 1];
    for _ in 0..REQUESTS {
        let frame = raw.next().await.expect("an answer for every request");
        assert_eq!(frame.kind, kind::RANGE | kind::RESPONSE_BIT);
        let id = frame.request_id as usize;
        assert!(
            id >= 1 && !seen[id],
            "request id {id} answered twice or unknown"
        );
        seen[id] = true;
    }

    // A pool of three connections, used round-robin by concurrent callers.
    let options = ClientOptions {
        connections_per_address: 3,
        ..Default::default()
    };
    let client = Arc::new(
        within(
            "pool",
            corekv_client::Client::connect(std::slice::from_ref(&addr), options),
        )
        .await
        .unwrap(),
    );
    assert_eq!(client.connections().len(), 3);
    let mut tasks = Vec::new();
    for i in 0..60u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .put(&put(format!("pool/{i:02}").as_bytes(), b"v"))
                .await;
            revision_of(&r.unwrap().header)
        }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(within("pooled put", task).await.unwrap());
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 60);
    let all = client
        .range(&PbRangeRequest {
            key: b"pool/".to_vec(),
            range_end: corekv_client::prefix_end(b"pool/"),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.count, 60);
    assert!(client.connections().iter().all(|c| !c.is_closed()));
    drop(server);
}

/// A corekv process started by hand (to choose its ports), killed by PID when dropped.
struct Spawned {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Spawned {
    fn start(client_port: u16, peer_port: u16, extra: &[String]) -> Spawned {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = std::process::Command::new(corekv_bin())
            .arg("--name=n1")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=n1={peer}"))
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn corekv");
        Spawned { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Waits (bounded) until the client port accepts or the process exits; true if it runs.
    fn wait_serving(&mut self, client_port: u16) -> bool {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], client_port));
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "corekv neither served nor exited in {READY_TIMEOUT:?}:\n{}",
            self.log()
        );
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_taken_default_binary_port_is_skipped_but_a_taken_explicit_one_fails_the_start() {
    // Hold a port, then give corekv the client port just below it: the binary protocol's
    // default (client port + 1) is taken.
    let (held, client_port) = loop {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port() - 1;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            break (held, port);
        }
    };
    let held_port = held.local_addr().unwrap().port();
    let peer_port = free_ports(1)[0];
    let mut server = Spawned::start(client_port, peer_port, &[]);
    assert!(
        server.wait_serving(client_port),
        "corekv did not start:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains("not serving the binary protocol") && log.contains(&held_port.to_string()),
        "no warning about the taken default port:\n{log}"
    );
    drop(server);

    // The same port given explicitly: corekv refuses to start, naming it.
    let client_port = free_ports(1)[0];
    let explicit = vec![format!("--listen-binary-urls=http://127.0.0.1:{held_port}")];
    let mut server = Spawned::start(client_port, peer_port, &explicit);
    assert!(!server.wait_serving(client_port), "started on a taken port");
    let log = server.log();
    assert!(
        log.contains(&format!("cannot listen on http://127.0.0.1:{held_port}")),
        "{log}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_streams_never_take_the_server_down() {
    let (mut server, addr) = start();
    // A valid session to mutate: hello, a put, a range, a watch create.
    let mut valid = Vec::new();
    let hello = Hello {
        version_min: 1,
        version_max: 1,
    };
    frame::encode_raw(&mut valid, kind::HELLO, 0, &hello.to_bytes());
    frame::encode_message(&mut valid, kind::PUT, 1, &put(b"fuzz", b"v"));
    frame::encode_message(&mut valid, kind::RANGE, 2, &range(b"fuzz"));
    let watch = WatchOptions::prefix(b"fuzz".to_vec()).to_request();
    frame::encode_message(&mut valid, kind::WATCH, 3, &watch);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..150u64 {
        let mut bytes = valid.clone();
        if round % 3 == 0 {
            // Noise after a valid hello.
            bytes.truncate(frame::FRAME_HEADER_BYTES + frame::HELLO_BYTES);
            let len = 1 + next() % 200;
            bytes.extend((0..len).map(|_| next() as u8));
        } else {
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] ^= 1 << (next() % 8);
            }
        }
        let mut raw = Raw::connect(&addr).await;
        raw.send(&bytes).await;
        // Whatever the server makes of it, it answers with valid frames and, if it found
        // the stream malformed, one error frame before closing. Half-close our side so a
        // stream that is merely incomplete ends too.
        raw.stream.shutdown().await.unwrap();
        let mut frames = 0;
        while let Some(frame) = raw.next().await {
            frames += 1;
            assert!(frames < 100, "round {round}: too many answers");
            if frame.kind == kind::ERROR {
                let body = ErrorBody::parse(&frame.payload).unwrap();
                assert!(!body.message.is_empty(), "round {round}: empty error text");
            }
        }
    }
    assert!(server.is_running(), "the server survived every stream");
    let bin = binary(&addr).await;
    let r = bin.put(&put(b"after-fuzz", b"ok")).await.unwrap();
    assert!(revision_of(&r.header) > 1);
}
