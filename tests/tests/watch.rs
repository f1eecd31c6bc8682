//! Watch semantics through the Rust `etcd-client` crate. Every body runs against a real etcd
//! first (proving the expectation is etcd's behaviour), then against the target.

mod common;

use std::time::Duration;

use common::*;
use etcd_client::{
    Client, EventType, GetOptions, PutOptions, WatchFilterType, WatchOptions, WatchResponse,
    WatchStream,
};

/// Waits for the next response on a watch stream, bounded in time.
async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("watch response within 10 s")
        .expect("watch stream healthy")
        .expect("watch stream open")
}

/// (type, key, value, mod_revision, prev value) of a response's events.
fn events(resp: &WatchResponse) -> Vec<(EventType, String, String, i64, Option<String>)> {
    resp.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("event kv");
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (
                e.event_type(),
                text(kv.key()),
                text(kv.value()),
                kv.mod_revision(),
                e.prev_kv().map(|p| text(p.value())),
            )
        })
        .collect()
}

/// Collects events until `count` arrived (bounded by time).
async fn collect(
    stream: &mut WatchStream,
    count: usize,
) -> Vec<(EventType, String, String, i64, Option<String>)> {
    let mut out = Vec::new();
    for _ in 0..count * 4 + 8 {
        if out.len() >= count {
            break;
        }
        out.extend(events(&next(stream).await));
    }
    assert_eq!(out.len(), count, "exactly {count} events");
    out
}

async fn put(c: &mut Client, k: &str, v: &str) -> i64 {
    c.put(k, v, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_events_prev_kv_and_cancel() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        put(&mut c, "k", "v0").await; // revision 2
        let mut stream = c
            .watch("k", Some(WatchOptions::new().with_prev_key()))
            .await
            .unwrap();
        let created = next(&mut stream).await;
        assert!(created.created());
        assert_eq!(
            created.watch_id(),
            0,
            "etcd numbers watchers from 0 per stream"
        );
        assert_eq!(created.header().unwrap().revision(), 2);
        put(&mut c, "k", "v1").await;
        put(&mut c, "other", "x").await;
        c.delete("k", None).await.unwrap();
        let got = collect(&mut stream, 2).await;
        assert_eq!(
            got,
            vec![
                (
                    EventType::Put,
                    "k".into(),
                    "v1".into(),
                    3,
                    Some("v0".into())
                ),
                (
                    EventType::Delete,
                    "k".into(),
                    "".into(),
                    5,
                    Some("v1".into())
                ),
            ]
        );
        stream.cancel(0).await.unwrap();
        let cancelled = next(&mut stream).await;
        assert!(cancelled.canceled());
        assert_eq!(cancelled.watch_id(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_replay_prefix_and_txn_order() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        for i in 0..5 {
            put(&mut c, &format!("p/{i}"), &i.to_string()).await; // revisions 2..=6
        }
        let opts = WatchOptions::new().with_prefix().with_start_revision(3);
        let mut stream = c.watch("p/", Some(opts)).await.unwrap();
        assert!(next(&mut stream).await.created());
        let txn = etcd_client::Txn::new().and_then(vec![
            etcd_client::TxnOp::put("p/b", "1", None),
            etcd_client::TxnOp::put("p/a", "1", None),
            etcd_client::TxnOp::delete("p/0", None),
        ]);
        c.txn(txn).await.unwrap(); // revision 7
        let got = collect(&mut stream, 7).await;
        let order: Vec<(String, i64)> = got.iter().map(|e| (e.1.clone(), e.3)).collect();
        assert_eq!(
            order,
            vec![
                ("p/1".into(), 3),
                ("p/2".into(), 4),
                ("p/3".into(), 5),
                ("p/4".into(), 6),
                ("p/b".into(), 7),
                ("p/a".into(), 7),
                ("p/0".into(), 7),
            ],
            "history then live, a txn's events in op order"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_start_revision_is_created_then_cancelled() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        for i in 0..5 {
            put(&mut c, "k", &i.to_string()).await; // 2..=6
        }
        c.compact(5, None).await.unwrap();
        let mut stream = c
            .watch("k", Some(WatchOptions::new().with_start_revision(3)))
            .await
            .unwrap();
        let first = next(&mut stream).await;
        assert!(first.created());
        let second = if first.canceled() {
            first
        } else {
            next(&mut stream).await
        };
        assert!(second.canceled());
        assert_eq!(second.compact_revision(), 5);
        // A start at the compacted revision itself still works.
        let mut ok = c
            .watch("k", Some(WatchOptions::new().with_start_revision(5)))
            .await
            .unwrap();
        assert!(next(&mut ok).await.created());
        let got = collect(&mut ok, 2).await;
        assert_eq!(got.iter().map(|e| e.3).collect::<Vec<_>>(), vec![5, 6]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_ranges_and_progress() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let mut nodel = c
            .watch(
                "a",
                Some(
                    WatchOptions::new()
                        .with_range("c")
                        .with_filters(vec![WatchFilterType::NoDelete]),
                ),
            )
            .await
            .unwrap();
        assert!(next(&mut nodel).await.created());
        put(&mut c, "a", "1").await; // 2
        c.delete("a", None).await.unwrap(); // 3
        put(&mut c, "b", "1").await; // 4
        put(&mut c, "c", "1").await; // 5: outside [a, c)
        let got = collect(&mut nodel, 2).await;
        assert_eq!(
            got.iter().map(|e| (e.1.clone(), e.3)).collect::<Vec<_>>(),
            vec![("a".into(), 2), ("b".into(), 4)]
        );
        nodel.request_progress().await.unwrap();
        let progress = next(&mut nodel).await;
        assert!(progress.events().is_empty());
        assert_eq!(progress.header().unwrap().revision(), 5);
        let _ = c.get("a", Some(GetOptions::new())).await.unwrap();
        let _ = c.put("z", "1", Some(PutOptions::new())).await.unwrap();
    })
    .await;
}
