//! A Range over a large key space is answered without building the answer in memory
//! more than once: the server's resident memory grows by a bounded multiple of the raw
//! answer (keys and values) while it serves a 200,000-key range with no limit.
//!
//! corekv only (the bound is corekv's design, not etcd's behaviour); skipped when the
//! target is etcd.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use etcd_client::{GetOptions, Txn, TxnOp};

const KEYS: usize = 200_000;
const VALUE_BYTES: usize = 100;
/// Puts per txn while loading (the server is started with a --max-txn-ops to match).
const PUTS_PER_TXN: usize = 10_000;
/// The growth allowed, as a multiple of the raw answer (loose: the answer itself, once,
/// plus allocator slack; building it twice over with a struct per key does not fit).
const GROWTH_FACTOR_MAX: f64 = 3.0;

fn key(i: usize) -> String {
    format!("big/{i:07}")
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i:07}-").into_bytes();
    v.resize(VALUE_BYTES, b'0' + (i % 10) as u8);
    v
}

/// VmRSS of `pid` in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_of_200k_keys_grows_rss_by_a_bounded_multiple_of_the_answer() {
    if target_kind() != Kind::Corekv {
        println!("skipped: the memory bound is corekv's");
        return;
    }
    let opts = ServerOpts {
        extra_args: vec![
            format!("--max-txn-ops={PUTS_PER_TXN}"),
            format!("--max-request-bytes={}", 8 * 1024 * 1024),
        ],
        ..Default::default()
    };
    let mut server = Server::start_with(Kind::Corekv, opts);
    let endpoint = server.endpoint();
    let connect = || {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        etcd_client::Client::connect([endpoint.clone()], Some(opts))
    };
    let mut kv = connect().await.expect("connect").kv_client();
    for start in (0..KEYS).step_by(PUTS_PER_TXN) {
        let puts =
            (start..(start + PUTS_PER_TXN).min(KEYS)).map(|i| TxnOp::put(key(i), value(i), None));
        let resp = kv
            .txn(Txn::new().and_then(puts.collect::<Vec<_>>()))
            .await
            .expect("load txn");
        assert!(resp.succeeded());
    }
    let raw_answer_bytes: usize = (0..KEYS).map(|i| key(i).len() + value(i).len()).sum();

    // Restart, so the memory the load freed (and the allocator kept) is not there for the
    // range to reuse unseen; settle; then sample VmRSS every millisecond while the range
    // is served.
    drop(kv);
    server.restart();
    let pid = server.pid().expect("server pid");
    let client = connect().await.expect("connect");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Acquire) {
                peak = peak.max(rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(1));
            }
            peak.max(rss_bytes(pid))
        })
    };
    let mut kv = client.kv_client().max_decoding_message_size(usize::MAX);
    let resp = kv
        .get("big/", Some(GetOptions::new().with_prefix().with_limit(0)))
        .await
        .expect("range");
    stop.store(true, Ordering::Release);
    let peak = sampler.join().expect("sampler");

    assert_eq!(resp.count(), KEYS as i64);
    assert!(!resp.more());
    assert_eq!(resp.kvs().len(), KEYS);
    for (i, kv) in resp.kvs().iter().enumerate() {
        assert_eq!(kv.key(), key(i).as_bytes(), "key {i}");
        assert_eq!(kv.value(), value(i).as_slice(), "value {i}");
    }
    let growth = peak.saturating_sub(before);
    let factor = growth as f64 / raw_answer_bytes as f64;
    println!(
        "raw answer {:.1} MiB; VmRSS before {:.1} MiB, peak {:.1} MiB: grew {:.1} MiB = {factor:.2}x the answer",
        raw_answer_bytes as f64 / 1048576.0,
        before as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        growth as f64 / 1048576.0,
    );
    assert!(
        factor <= GROWTH_FACTOR_MAX,
        "VmRSS grew by {growth} bytes serving a {raw_answer_bytes}-byte answer ({factor:.2}x > {GROWTH_FACTOR_MAX}x)"
    );
}
