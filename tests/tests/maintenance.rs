//! The Maintenance service and what hangs off it: alarms, the space quota and etcd's
//! documented recovery from NOSPACE (delete, compact, defragment, disarm), Hash and HashKV,
//! Snapshot (`etcdctl snapshot save`), online defragmentation (under load, and SIGKILL in
//! the middle of it), and auto-compaction.
//!
//! Behaviour is checked against a real etcd 3.4 first wherever etcd shows it; byte counts
//! differ (etcd's quota is on its bbolt file) so tests compare behaviour, not sizes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use corekv_engine::sha256::Sha256;
use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, Compare, CompareOp, GetOptions, Txn, TxnOp,
};

/// etcd's text for a refused write under the space quota.
const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";
/// A 2 MiB quota, filled by a handful of 128 KiB values.
const SMALL_QUOTA: &str = "2097152";

fn with_args(args: &[&str]) -> ServerOpts {
    ServerOpts {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

async fn member_id(c: &mut Client) -> u64 {
    c.status()
        .await
        .expect("status")
        .header()
        .expect("status has a header")
        .member_id()
}

/// The alarms listed, as `(member, type)`, sorted (etcd lists them in map order).
async fn alarms(c: &mut Client) -> Vec<(u64, i32)> {
    let r = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .expect("alarm list");
    let mut out: Vec<(u64, i32)> = r
        .alarms()
        .iter()
        .map(|m| (m.member_id(), m.alarm() as i32))
        .collect();
    out.sort_unstable();
    out
}

async fn set_alarm(
    c: &mut Client,
    action: AlarmAction,
    kind: AlarmType,
    member: u64,
) -> Vec<(u64, i32)> {
    let mut opts = AlarmOptions::new();
    opts.with_member(member);
    let r = c
        .alarm(action, kind, Some(opts))
        .await
        .unwrap_or_else(|e| panic!("alarm {action:?} {kind:?}: {e}"));
    assert!(
        r.header().is_none(),
        "etcd 3.4 answers alarms without a header"
    );
    r.alarms()
        .iter()
        .map(|m| (m.member_id(), m.alarm() as i32))
        .collect()
}

async fn status_errors(c: &mut Client) -> Vec<String> {
    c.status().await.expect("status").errors().to_vec()
}

async fn db_size(c: &mut Client) -> i64 {
    c.status().await.expect("status").db_size()
}

fn health(s: &Server) -> (u16, String) {
    let r = http_get(&s.addr(), "/health").expect("GET /health");
    (r.status, r.text().trim().to_string())
}

fn put_txn(key: &str) -> Txn {
    Txn::new()
        .when([Compare::version(key, CompareOp::Greater, -1)])
        .and_then([TxnOp::put(key, "t", None)])
}

fn read_txn(key: &str) -> Txn {
    Txn::new()
        .and_then([TxnOp::get(key, None)])
        .or_else([TxnOp::get(key, None)])
}

fn delete_txn(key: &str) -> Txn {
    Txn::new().and_then([TxnOp::delete(key, None)])
}

#[tokio::test]
async fn alarms_activate_list_and_disarm_as_etcd() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let id = member_id(&mut c).await;
        let nospace = AlarmType::Nospace as i32;
        let corrupt = AlarmType::Corrupt as i32;
        assert_eq!(alarms(&mut c).await, vec![]);
        assert_eq!(
            set_alarm(&mut c, AlarmAction::Get, AlarmType::None, 0).await,
            vec![]
        );
        assert_eq!(health(s), (200, r#"{"health":"true"}"#.into()));

        // Raised by this member and by another: each is listed; raising twice answers it.
        assert_eq!(
            set_alarm(&mut c, AlarmAction::Activate, AlarmType::Nospace, id).await,
            vec![(id, nospace)]
        );
        assert_eq!(
            set_alarm(&mut c, AlarmAction::Activate, AlarmType::Nospace, id).await,
            vec![(id, nospace)]
        );
        assert_eq!(
            set_alarm(&mut c, AlarmAction::Activate, AlarmType::Nospace, 42).await,
            vec![(42, nospace)]
        );
        let mut want = vec![(42, nospace), (id, nospace)];
        want.sort_unstable();
        assert_eq!(alarms(&mut c).await, want);
        assert_eq!(
            set_alarm(&mut c, AlarmAction::Get, AlarmType::Corrupt, 0).await,
            vec![]
        );
        let mut errors = status_errors(&mut c).await;
        errors.sort();
        let mut want_errors = vec![
            format!("memberID:{id} alarm:NOSPACE "),
            "memberID:42 alarm:NOSPACE ".to_string(),
        ];
        want_errors.sort();
        assert_eq!(errors, want_errors);
        assert_eq!(health(s), (503, r#"{"health":"false"}"#.into()));

        // NOSPACE: puts, txns that put and lease grants are refused ...
        assert_eq!(
            expect_status(c.put("k", "v", None).await),
            ("ResourceExhausted".into(), NOSPACE.into())
        );
        assert_eq!(
            expect_status(c.txn(put_txn("k")).await),
            ("ResourceExhausted".into(), NOSPACE.into())
        );
        assert_eq!(
            expect_status(c.lease_grant(60, None).await),
            ("ResourceExhausted".into(), NOSPACE.into())
        );
        // ... reads, deletes, txns without puts and compaction are not.
        let rev = c
            .get("k", None)
            .await
            .expect("range")
            .header()
            .unwrap()
            .revision();
        c.txn(read_txn("k")).await.expect("read-only txn");
        c.txn(delete_txn("k")).await.expect("delete-only txn");
        c.delete("k", None).await.expect("delete");
        c.compact(rev, None).await.expect("compact");

        // etcdctl lists them, and `alarm disarm` clears every one.
        let list = s.etcdctl(&["alarm", "list"]);
        list.expect_ok("etcdctl alarm list");
        let mut lines: Vec<&str> = list.stdout.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            want_errors.iter().map(String::as_str).collect::<Vec<_>>()
        );
        let disarm = s.etcdctl(&["alarm", "disarm"]);
        disarm.expect_ok("etcdctl alarm disarm");
        let mut lines: Vec<&str> = disarm.stdout.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            want_errors.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(alarms(&mut c).await, vec![]);
        assert_eq!(s.etcdctl(&["alarm", "list"]).stdout, "");
        assert_eq!(status_errors(&mut c).await, Vec::<String>::new());
        assert_eq!(health(s), (200, r#"{"health":"true"}"#.into()));
        c.put("k", "v", None)
            .await
            .expect("puts are accepted once disarmed");
        // Clearing an alarm that is not raised answers nothing.
        assert_eq!(
            set_alarm(&mut c, AlarmAction::Deactivate, AlarmType::Nospace, id).await,
            vec![]
        );

        // CORRUPT refuses every write; reads go on.
        assert_eq!(
            set_alarm(&mut c, AlarmAction::Activate, AlarmType::Corrupt, id).await,
            vec![(id, corrupt)]
        );
        let corrupt_err = (
            "DataLoss".to_string(),
            "etcdserver: corrupt cluster".to_string(),
        );
        assert_eq!(expect_status(c.put("k", "v2", None).await), corrupt_err);
        assert_eq!(expect_status(c.delete("k", None).await), corrupt_err);
        let got = c.get("k", None).await.expect("range under CORRUPT");
        assert_eq!(got.kvs()[0].value(), b"v");
        assert_eq!(
            status_errors(&mut c).await,
            vec![format!("memberID:{id} alarm:CORRUPT ")]
        );
        assert_eq!(
            set_alarm(&mut c, AlarmAction::Deactivate, AlarmType::Corrupt, id).await,
            vec![(id, corrupt)]
        );
        c.put("k", "v3", None)
            .await
            .expect("puts are accepted once CORRUPT is cleared");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_raises_nospace_and_etcds_recovery_procedure_restores_writes() {
    for kind in reference_then_target() {
        println!("=== running against {kind} ===");
        let mut s = Server::start_with(kind, with_args(&["--quota-backend-bytes", SMALL_QUOTA]));
        let mut c = s.client().await;
        let id = member_id(&mut c).await;
        let value = vec![b'v'; 128 * 1024];

        // Fill until the quota check refuses a put: that raises NOSPACE through the log.
        let mut stored = 0;
        let mut refusal = None;
        for i in 0..64 {
            match c.put(format!("big{i:02}"), value.clone(), None).await {
                Ok(_) => stored += 1,
                Err(e) => {
                    refusal = Some(grpc_status(&e));
                    break;
                }
            }
        }
        println!("{kind}: {stored} values of 128 KiB stored before the quota refused one");
        assert_eq!(
            refusal,
            Some(("ResourceExhausted".to_string(), NOSPACE.to_string())),
            "{kind}"
        );
        assert!(stored >= 4, "{kind}: only {stored} values fit");
        assert_eq!(
            alarms(&mut c).await,
            vec![(id, AlarmType::Nospace as i32)],
            "{kind}"
        );
        assert_eq!(
            status_errors(&mut c).await,
            vec![format!("memberID:{id} alarm:NOSPACE ")],
            "{kind}"
        );

        // Reads and space-reclaiming requests keep working; puts and grants do not.
        let got = c.get("big00", None).await.expect("range");
        assert_eq!(got.kvs()[0].value().len(), value.len());
        c.txn(read_txn("big00")).await.expect("read-only txn");
        assert_eq!(
            expect_status(c.put("small", "x", None).await),
            ("ResourceExhausted".into(), NOSPACE.into())
        );
        assert_eq!(
            expect_status(c.txn(put_txn("small")).await),
            ("ResourceExhausted".into(), NOSPACE.into())
        );
        assert_eq!(
            expect_status(c.lease_grant(60, None).await),
            ("ResourceExhausted".into(), NOSPACE.into())
        );

        // The alarm is part of the member's persisted state.
        s.restart();
        let mut c = s.client().await;
        assert_eq!(
            alarms(&mut c).await,
            vec![(id, AlarmType::Nospace as i32)],
            "{kind}: alarm after restart"
        );
        assert_eq!(
            expect_status(c.put("small", "x", None).await),
            ("ResourceExhausted".into(), NOSPACE.into())
        );

        // etcd's documented recovery: delete, compact, defragment, disarm.
        let del = c
            .delete("big", Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .expect("delete");
        assert_eq!(del.deleted(), stored as i64);
        let rev = del.header().unwrap().revision();
        c.compact(rev, None).await.expect("compact");
        let before = db_size(&mut c).await;
        c.defragment().await.expect("defragment");
        let after = db_size(&mut c).await;
        println!("{kind}: dbSize {before} -> {after} after delete + compact + defragment");
        // The space is reclaimed. (corekv may not have committed the deleted values to its
        // file at all if the delete came within one store commit of the restart: then the
        // file is small before as well as after.)
        assert!(
            after < before / 2 || after <= 256 * 1024,
            "{kind}: defragment left {after} of {before} bytes"
        );
        // Still refused: the alarm stays until it is disarmed.
        assert_eq!(
            expect_status(c.put("small", "x", None).await),
            ("ResourceExhausted".into(), NOSPACE.into())
        );
        assert_eq!(
            set_alarm(&mut c, AlarmAction::Deactivate, AlarmType::Nospace, id).await,
            vec![(id, 1)]
        );
        c.put("small", "x", None)
            .await
            .expect("put after the recovery");
        c.lease_grant(60, None)
            .await
            .expect("grant after the recovery");
        c.put("big-again", value.clone(), None)
            .await
            .expect("a large put fits again");
        assert_eq!(alarms(&mut c).await, vec![]);
        assert_eq!(status_errors(&mut c).await, Vec::<String>::new());
        println!("=== {kind}: ok ===");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_matches_etcd_and_hash_follows_the_data() {
    let results: Mutex<Vec<(Kind, Vec<String>)>> = Mutex::new(Vec::new());
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        let mut seen = Vec::new();
        for i in 0..20 {
            c.put(format!("key{}", i % 7), format!("value-{i}"), None)
                .await
                .unwrap();
        }
        c.delete("key3", None).await.unwrap();
        let h = c.hash_kv(0).await.unwrap();
        assert_eq!(h.header().unwrap().revision(), 22);
        seen.push(format!(
            "hashkv(0) = {} compact {}",
            h.hash(),
            h.compact_version()
        ));
        for rev in [1, 5, 15, 22] {
            let h = c.hash_kv(rev).await.unwrap();
            assert_eq!(h.header().unwrap().revision(), 22);
            seen.push(format!("hashkv({rev}) = {}", h.hash()));
        }
        c.compact(10, None).await.unwrap();
        let h = c.hash_kv(0).await.unwrap();
        seen.push(format!(
            "hashkv(0) after compact = {} compact {}",
            h.hash(),
            h.compact_version()
        ));
        let h = c.hash_kv(12).await.unwrap();
        seen.push(format!("hashkv(12) after compact = {}", h.hash()));
        for rev in [3, 10, 23, 1000] {
            seen.push(format!(
                "hashkv({rev}): {:?}",
                expect_status(c.hash_kv(rev).await)
            ));
        }

        // Hash: over the whole store (its value is the server's own), stable while
        // nothing changes, different once something does; the header names the revision.
        let a = c.hash().await.unwrap();
        let b = c.hash().await.unwrap();
        assert_eq!(a.hash(), b.hash(), "{}: hash changed with no write", s.kind);
        assert_eq!(a.header().unwrap().revision(), 22);
        c.put("key0", "changed", None).await.unwrap();
        let d = c.hash().await.unwrap();
        assert_ne!(d.hash(), a.hash(), "{}: hash did not follow a put", s.kind);
        assert_eq!(d.header().unwrap().revision(), 23);
        results.lock().unwrap().push((s.kind, seen));
    })
    .await;
    let results = results.into_inner().unwrap();
    for (kind, seen) in &results[1..] {
        assert_eq!(
            seen, &results[0].1,
            "{kind}'s HashKV answers differ from etcd's"
        );
    }
    println!("{:#?}", results[0].1);
}

/// Reads a snapshot file: (image, sha256 trailer).
fn split_snapshot(path: &Path) -> (Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(path).expect("read snapshot file");
    assert_eq!(
        bytes.len() % 512,
        32,
        "etcdctl's framing check: size % 512 == sha256 size"
    );
    let (image, sha) = bytes.split_at(bytes.len() - 32);
    assert_eq!(
        Sha256::digest(image).as_slice(),
        sha,
        "the trailer is the image's SHA-256"
    );
    (image.to_vec(), sha.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_streams_a_verified_image() {
    on_etcd_and_target(async |s: &Server| {
        let mut c = s.client().await;
        for i in 0..300 {
            c.put(
                format!("snap/{i:03}"),
                vec![b'a' + (i % 26) as u8; 1000 + i],
                None,
            )
            .await
            .unwrap();
        }
        let revision = c
            .get("snap/000", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let file = s.dir().join("saved.db");
        let out = s.etcdctl(&["snapshot", "save", file.to_str().unwrap()]);
        out.expect_ok("etcdctl snapshot save");
        assert!(out.stdout.contains("Snapshot saved at"), "{out}");
        let (image, _) = split_snapshot(&file);

        // The raw stream: 32 KiB chunks counting down, then the 32-byte digest.
        let mut stream = c.snapshot().await.expect("snapshot stream");
        let mut received = Vec::new();
        let mut remaining = Vec::new();
        while let Some(msg) = stream.message().await.expect("snapshot message") {
            assert!(msg.blob().len() <= 32 * 1024);
            remaining.push(msg.remaining_bytes());
            received.extend_from_slice(msg.blob());
        }
        assert!(remaining.len() >= 3, "{remaining:?}");
        assert!(
            remaining.windows(2).all(|w| w[0] > w[1] || w[1] == 0),
            "{remaining:?}"
        );
        assert_eq!(
            remaining[remaining.len() - 2..],
            [0, 0],
            "last image chunk, then the digest"
        );
        let (streamed, sha) = received.split_at(received.len() - 32);
        assert_eq!(Sha256::digest(streamed).as_slice(), sha);
        assert_eq!(received.len() % 512, 32);

        if s.kind == Kind::Corekv {
            // A corekv snapshot is a corekv store image: open it and find every key.
            let copy = s.dir().join("image-db");
            std::fs::write(&copy, &image).unwrap();
            let backend =
                corekv_engine::backend::Backend::open(&copy).expect("the image opens as a store");
            backend.verify().expect("the image verifies");
            let (store, meta) = backend.load().expect("the image loads");
            assert_eq!(meta.revision, revision);
            let all = store
                .view()
                .range(&corekv_engine::pb::PbRangeRequest {
                    key: b"snap/".to_vec(),
                    range_end: b"snap0".to_vec(),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(all.kvs.len(), 300);
            for (i, kv) in all.kvs.iter().enumerate() {
                assert_eq!(kv.value, vec![b'a' + (i % 26) as u8; 1000 + i]);
            }
            // Nothing is left behind in the data dir.
            let snap_dir = s.data_dir().join("member").join("snap");
            let names: Vec<String> = std::fs::read_dir(&snap_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names, vec!["db".to_string()], "{}", snap_dir.display());
        }
    })
    .await;
}

/// Writes `count` values of `size` bytes under `prefix` with `clients` connections.
async fn load(s: &Server, prefix: &str, count: usize, size: usize, clients: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut c = s.client().await;
        let next = next.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                if i >= count {
                    break;
                }
                let value = vec![(i % 251) as u8; size];
                c.put(format!("{prefix}{i:06}"), value, None)
                    .await
                    .unwrap_or_else(|e| panic!("load put {i}: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A writer and a reader running until `stop`; returns (acked keys, max put latency, max
/// get latency, errors).
struct Traffic {
    acked: Arc<Mutex<Vec<String>>>,
    max_put: Arc<Mutex<Duration>>,
    max_get: Arc<Mutex<Duration>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    /// Set at the SIGKILL: errors after it are expected.
    killed: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_traffic(s: &Server, prefix: &str) -> Traffic {
    let t = Traffic {
        acked: Default::default(),
        max_put: Default::default(),
        max_get: Default::default(),
        errors: Default::default(),
        stop: Default::default(),
        killed: Default::default(),
        tasks: Vec::new(),
    };
    let mut tasks = Vec::new();
    {
        let mut c = s.client().await;
        let (acked, max_put, errors, stop, killed) = (
            t.acked.clone(),
            t.max_put.clone(),
            t.errors.clone(),
            t.stop.clone(),
            t.killed.clone(),
        );
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("{prefix}{i:06}");
                let started = Instant::now();
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    c.put(key.clone(), key.clone(), None),
                )
                .await
                {
                    Ok(Ok(_)) => {
                        acked.lock().unwrap().push(key);
                        let mut m = max_put.lock().unwrap();
                        *m = (*m).max(started.elapsed());
                    }
                    other => {
                        if !killed.load(Ordering::SeqCst) {
                            errors.lock().unwrap().push(format!("put {key}: {other:?}"));
                        }
                        break;
                    }
                }
                i += 1;
            }
        }));
    }
    {
        let mut c = s.client().await;
        let (max_get, errors, stop, killed) = (
            t.max_get.clone(),
            t.errors.clone(),
            t.stop.clone(),
            t.killed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let opts = GetOptions::new().with_prefix().with_count_only();
                match tokio::time::timeout(Duration::from_secs(5), c.get("load/", Some(opts))).await
                {
                    Ok(Ok(_)) => {
                        let mut m = max_get.lock().unwrap();
                        *m = (*m).max(started.elapsed());
                    }
                    other => {
                        if !killed.load(Ordering::SeqCst) {
                            errors.lock().unwrap().push(format!("get: {other:?}"));
                        }
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    Traffic { tasks, ..t }
}

impl Traffic {
    async fn stop(self) -> (Vec<String>, Duration, Duration, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .expect("traffic stops")
                .expect("traffic task");
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        let max_put = *self.max_put.lock().unwrap();
        let max_get = *self.max_get.lock().unwrap();
        (acked, max_put, max_get, errors)
    }
}

async fn assert_all_present(c: &mut Client, keys: &[String], what: &str) {
    let mut by_prefix: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for k in keys {
        by_prefix.entry(&k[..k.len() - 6]).or_default().push(k);
    }
    for (prefix, keys) in by_prefix {
        let got = c
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        let present: std::collections::HashSet<Vec<u8>> =
            got.kvs().iter().map(|kv| kv.key().to_vec()).collect();
        let missing: Vec<&&String> = keys
            .iter()
            .filter(|k| !present.contains(k.as_bytes()))
            .collect();
        assert!(
            missing.is_empty(),
            "{what}: {} acknowledged keys missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

/// Live data for the defragmentation tests: large enough that copying it takes a while.
const LIVE_VALUES: usize = 320;
const VALUE_BYTES: usize = 128 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_is_online_and_shrinks_the_store() {
    if target_kind() == Kind::Etcd {
        println!("etcd's defragment blocks the member: this test is about corekv's online one");
        return;
    }
    let s = Server::start_target();
    let mut c = s.client().await;
    load(&s, "load/", LIVE_VALUES, VALUE_BYTES, 4).await;
    load(&s, "garbage/", 160, VALUE_BYTES, 4).await;
    let del = c
        .delete(
            "garbage/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    c.compact(del.header().unwrap().revision(), None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = db_size(&mut c).await;

    let traffic = start_traffic(&s, "during/").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    c.defragment().await.expect("defragment");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (acked, max_put, max_get, errors) = traffic.stop().await;
    let after = db_size(&mut c).await;
    println!(
        "defragment took {took:?}: dbSize {before} -> {after}; {} puts meanwhile (slowest {max_put:?}), slowest read {max_get:?}",
        acked.len()
    );
    assert!(
        errors.is_empty(),
        "requests failed during the defragmentation: {errors:?}"
    );
    assert!(after < before * 3 / 4, "dbSize {before} -> {after}");
    assert!(
        after >= (LIVE_VALUES * VALUE_BYTES) as i64,
        "the live data is still there: {after}"
    );
    assert!(max_put < Duration::from_secs(2), "a put waited {max_put:?}");
    assert!(
        max_get < Duration::from_secs(2),
        "a read waited {max_get:?}"
    );
    assert!(
        acked.len() > 10,
        "only {} puts during the test",
        acked.len()
    );
    // Everything written during the defragmentation is in the new file.
    assert_all_present(&mut c, &acked, "after defragment").await;
    let mut s = s;
    s.restart();
    let mut c = s.client().await;
    assert_all_present(&mut c, &acked, "after defragment and restart").await;
    let all = c
        .get(
            "load/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(all.count(), LIVE_VALUES as i64);
    let restarted = db_size(&mut c).await;
    assert!(
        restarted < before * 3 / 4,
        "the compacted file is the store after a restart: {restarted} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_defragment_keeps_every_acknowledged_write() {
    if target_kind() == Kind::Etcd {
        println!("corekv's online defragmentation only");
        return;
    }
    let mut s = Server::start_target();
    let mut c = s.client().await;
    load(&s, "load/", LIVE_VALUES, VALUE_BYTES, 4).await;
    let copy = s.data_dir().join("member").join("snap").join("db.defrag");

    // One uninterrupted run to learn how long a defragmentation takes here.
    let started = Instant::now();
    c.defragment().await.expect("defragment");
    let full = started.elapsed();
    println!("a defragmentation takes {full:?}");

    let mut all_acked: Vec<String> = Vec::new();
    // Kill as the copy appears, at points through the copy, and just after the swap.
    for (round, fraction) in [0.0, 0.3, 0.6, 0.9, 1.2].into_iter().enumerate() {
        let mut c = s.client().await;
        let traffic = start_traffic(&s, &format!("r{round}/")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut admin = s.client().await;
        let defrag = tokio::spawn(async move { admin.defragment().await.map(|_| ()) });
        let wait_start = Instant::now();
        while !copy.exists()
            && !defrag.is_finished()
            && wait_start.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(full.mul_f64(fraction)).await;
        traffic.killed.store(true, Ordering::SeqCst);
        let copy_existed = copy.exists();
        s.kill();
        let (acked, _, _, errors) = traffic.stop().await;
        let _ = defrag.await;
        println!("round {round}: killed {:?} into the defragmentation (copy present: {copy_existed}); {} puts acknowledged", wait_start.elapsed(), acked.len());
        assert!(
            errors.is_empty(),
            "round {round}: requests failed before the kill: {errors:?}"
        );
        all_acked.extend(acked);
        drop(c);

        s.restart();
        c = s.client().await;
        assert!(
            !copy.exists(),
            "round {round}: the interrupted copy was not cleaned up"
        );
        assert_all_present(&mut c, &all_acked, &format!("round {round}")).await;
        let all = c
            .get(
                "load/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap();
        assert_eq!(all.count(), LIVE_VALUES as i64, "round {round}");
        // The store still takes writes and defragments after the crash.
        c.put("after-crash", "1", None).await.unwrap();
    }
    let mut c = s.client().await;
    c.defragment().await.expect("defragment after the crashes");
    assert_all_present(&mut c, &all_acked, "final").await;
}

/// The compacted revision, from HashKV (works on etcd and corekv alike).
async fn compacted(c: &mut Client) -> i64 {
    c.hash_kv(0).await.unwrap().compact_version()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_keeps_the_retention_window() {
    for kind in reference_then_target() {
        println!("=== running against {kind} ===");
        let s = Server::start_with(
            kind,
            with_args(&[
                "--auto-compaction-mode",
                "periodic",
                "--auto-compaction-retention",
                "2s",
            ]),
        );
        let mut c = s.client().await;
        let started = Instant::now();
        let mut revs: Vec<(Duration, i64)> = Vec::new();
        while started.elapsed() < Duration::from_millis(5500) {
            let r = c
                .put("tick", "x", None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision();
            revs.push((started.elapsed(), r));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let compacted_rev = compacted(&mut c).await;
        let now = started.elapsed();
        // The last compaction took a revision recorded one period and a tenth (2.2 s)
        // before it ran, and it ran at most that long ago: so the compacted revision was
        // current between about 4.4 s and 2 s ago (bounds widened for a busy machine).
        let rev_at = |d: Duration| {
            revs.iter()
                .take_while(|(t, _)| *t <= d)
                .last()
                .map_or(1, |(_, r)| *r)
        };
        let oldest = rev_at(now.saturating_sub(Duration::from_millis(5000)));
        let newest = rev_at(now.saturating_sub(Duration::from_millis(1800)));
        println!(
            "{kind}: compacted revision {compacted_rev} (window {oldest}..={newest}), {} writes",
            revs.len()
        );
        assert!(compacted_rev > 1, "{kind}: nothing compacted");
        assert!(
            (oldest..=newest).contains(&compacted_rev),
            "{kind}: compacted {compacted_rev}, expected {oldest}..={newest}"
        );
        let (code, msg) = expect_status(
            c.get(
                "tick",
                Some(GetOptions::new().with_revision(compacted_rev - 1)),
            )
            .await,
        );
        assert_eq!(
            (code.as_str(), msg.as_str()),
            (
                "OutOfRange",
                "etcdserver: mvcc: required revision has been compacted"
            )
        );
        println!("=== {kind}: ok ===");
    }
}

#[tokio::test]
async fn revision_auto_compaction_keeps_the_last_revisions() {
    if target_kind() == Kind::Etcd {
        println!("etcd checks every 5 minutes; corekv's interval is a corekv flag");
        return;
    }
    let s = Server::start_with(
        Kind::Corekv,
        with_args(&[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "10",
            "--auto-compaction-revision-interval",
            "200",
        ]),
    );
    let mut c = s.client().await;
    for i in 0..30 {
        c.put("k", format!("{i}"), None).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while compacted(&mut c).await != 21 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        compacted(&mut c).await,
        21,
        "revision 31 keeps the last 10 revisions"
    );
    c.get("k", Some(GetOptions::new().with_revision(21)))
        .await
        .expect("the oldest kept revision reads");
    expect_status(c.get("k", Some(GetOptions::new().with_revision(20))).await);
    // Nothing new: the same revision is not compacted again; new writes move it on.
    for i in 0..5 {
        c.put("k", format!("more{i}"), None).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while compacted(&mut c).await != 26 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(compacted(&mut c).await, 26);
}
