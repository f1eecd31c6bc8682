//! Crash durability: SIGKILL the server under test while writers are running,
//! restart it on the same data dir, and check that nothing acknowledged was
//! lost. Also checks that identity, history and compaction survive a kill.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{GetOptions, ResponseHeader};

const WRITERS: usize = 8;
const CYCLES: usize = 3;
const MAX_PUTS_PER_WRITER: usize = 5000;
const MAX_WRITER_TIME: Duration = Duration::from_secs(10);
const KILL_AFTER: Duration = Duration::from_millis(1500);
const KILL_AFTER_ACKS: usize = 2000;
const KILL_AFTER_MAX: Duration = Duration::from_secs(8);
const PUT_TIMEOUT: Duration = Duration::from_secs(3);

/// Value derived from the key, so any key read back can be checked.
fn value_for(key: &str) -> String {
    // FNV-1a, printed in hex, plus the key itself.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("val:{key}:{h:016x}")
}

#[track_caller]
fn rev(h: Option<&ResponseHeader>) -> i64 {
    h.expect("response has a header").revision()
}

struct CycleResult {
    acked: Vec<(String, String)>,
    errors_before_kill: usize,
    writers_running_at_kill: usize,
}

async fn load_and_kill(server: &mut Server, cycle: usize) -> CycleResult {
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let ack_count = Arc::new(AtomicUsize::new(0));
    // Set just before the SIGKILL: errors after it are expected.
    let killed = Arc::new(AtomicBool::new(false));
    // Set after the SIGKILL: writers stop issuing puts.
    let stop = Arc::new(AtomicBool::new(false));
    let errors_before_kill = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(WRITERS));

    // Connect every writer first (one connection each), then start the clock.
    let mut clients = Vec::new();
    for _ in 0..WRITERS {
        clients.push(server.client().await);
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for (task, mut client) in clients.into_iter().enumerate() {
        let acked = acked.clone();
        let ack_count = ack_count.clone();
        let killed = killed.clone();
        let stop = stop.clone();
        let errors_before_kill = errors_before_kill.clone();
        let running = running.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..MAX_PUTS_PER_WRITER {
                if stop.load(Ordering::SeqCst) || start.elapsed() > MAX_WRITER_TIME {
                    break;
                }
                let key = format!("c{cycle}-w{task}-{i}");
                let val = value_for(&key);
                match tokio::time::timeout(PUT_TIMEOUT, client.put(key.clone(), val.clone(), None))
                    .await
                {
                    Ok(Ok(_)) => {
                        acked.lock().unwrap().push((key, val));
                        ack_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Err(e)) => {
                        if !killed.load(Ordering::SeqCst) {
                            errors_before_kill.fetch_add(1, Ordering::SeqCst);
                            eprintln!("writer {task}: put {key} failed before the kill: {e}");
                        }
                        break;
                    }
                    Err(_) => {
                        if !killed.load(Ordering::SeqCst) {
                            errors_before_kill.fetch_add(1, Ordering::SeqCst);
                            eprintln!("writer {task}: put {key} timed out before the kill");
                        }
                        break;
                    }
                }
            }
            running.fetch_sub(1, Ordering::SeqCst);
        }));
    }

    // Kill mid-load: after KILL_AFTER once some puts were acknowledged (a loaded machine
    // can be slow to take the first ones), or at KILL_AFTER_ACKS, and never later than
    // KILL_AFTER_MAX.
    loop {
        let acks = ack_count.load(Ordering::SeqCst);
        let elapsed = start.elapsed();
        if acks >= KILL_AFTER_ACKS
            || (elapsed >= KILL_AFTER && acks > 0)
            || elapsed >= KILL_AFTER_MAX
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let writers_running_at_kill = running.load(Ordering::SeqCst);
    // Snapshot of acks *before* the kill is not needed: anything acked at
    // any time was acknowledged by the server and must be durable.
    killed.store(true, Ordering::SeqCst);
    server.kill(); // SIGKILL by PID, while writers are still issuing puts
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        tokio::time::timeout(Duration::from_secs(15), h)
            .await
            .expect("writer task did not stop after the kill")
            .expect("writer task panicked");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    println!(
        "cycle {cycle}: {} acked puts in {:?}, {} writers running at kill",
        acked.len(),
        start.elapsed(),
        writers_running_at_kill
    );
    CycleResult {
        acked,
        errors_before_kill: errors_before_kill.load(Ordering::SeqCst),
        writers_running_at_kill,
    }
}

/// Reads every key of one writer in one cycle (by prefix).
async fn read_prefix(c: &mut etcd_client::Client, prefix: &str) -> (BTreeMap<String, String>, i64) {
    let r = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap_or_else(|e| panic!("range {prefix}: {e}"));
    let map = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect();
    (map, rev(r.header()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_load_loses_no_acknowledged_put() {
    let mut server = Server::start_target();
    println!(
        "server under test: {} (log {})",
        server.kind,
        server.log_path().display()
    );
    let mut all_acked: Vec<(String, String)> = Vec::new();

    for cycle in 0..CYCLES {
        let res = load_and_kill(&mut server, cycle).await;
        assert_eq!(
            res.errors_before_kill, 0,
            "cycle {cycle}: puts failed while the server was up"
        );
        assert!(
            res.writers_running_at_kill > 0,
            "cycle {cycle}: all writers had finished before the kill; the test did not kill mid-load"
        );
        assert!(
            !res.acked.is_empty(),
            "cycle {cycle}: no put was acknowledged"
        );
        all_acked.extend(res.acked);

        server.restart();
        let mut c = server.client().await;

        // Every key ever acknowledged (this cycle and earlier ones) is back
        // with its value; keys that exist but were not acked (in flight at
        // the kill) must still carry the right value.
        let mut missing = Vec::new();
        let mut wrong = Vec::new();
        let mut max_rev = 0;
        let mut expected: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in &all_acked {
            expected.insert(k, v);
        }
        for cy in 0..=cycle {
            for task in 0..WRITERS {
                let prefix = format!("c{cy}-w{task}-");
                let (got, r) = read_prefix(&mut c, &prefix).await;
                max_rev = max_rev.max(r);
                for (k, v) in &got {
                    if *v != value_for(k) {
                        wrong.push(format!("{k} = {v:?}"));
                    }
                }
                for (k, v) in expected.range(prefix.as_str()..) {
                    if !k.starts_with(&prefix) {
                        break;
                    }
                    match got.get(*k) {
                        None => missing.push(k.to_string()),
                        Some(g) if g != v => wrong.push(format!("{k} = {g:?}, acked {v:?}")),
                        Some(_) => {}
                    }
                }
            }
        }
        assert!(
            missing.is_empty() && wrong.is_empty(),
            "after kill #{} and restart: {} acknowledged keys missing (first: {:?}), {} with wrong values (first: {:?})",
            cycle + 1,
            missing.len(),
            missing.iter().take(10).collect::<Vec<_>>(),
            wrong.len(),
            wrong.iter().take(10).collect::<Vec<_>>()
        );
        let need = 1 + all_acked.len() as i64;
        assert!(
            max_rev >= need,
            "after kill #{}: revision {max_rev} < 1 + {} acknowledged puts",
            cycle + 1,
            all_acked.len()
        );
        println!(
            "cycle {cycle}: ok — {} acked keys verified, revision {max_rev}",
            all_acked.len()
        );
    }
}

#[tokio::test]
async fn kill9_preserves_identity_history_and_compaction() {
    for kind in reference_then_target() {
        println!("=== running against {kind} ===");
        let mut s = Server::start(kind);
        let mut c = s.client().await;
        for i in 0..5 {
            c.put("k", format!("{i}"), None).await.unwrap(); // revs 2..=6
        }
        c.put("other", "x", None).await.unwrap(); // rev 7
        c.delete("other", None).await.unwrap(); // rev 8
        c.compact(4, None).await.unwrap();
        let h = c.get("k", None).await.unwrap();
        let h = h.header().unwrap();
        let (cid, mid) = (h.cluster_id(), h.member_id());
        assert_eq!(h.revision(), 8);
        drop(c);

        s.kill();
        s.restart();
        let mut c = s.client().await;
        let r = c.get("k", None).await.unwrap();
        let h = r.header().unwrap();
        assert_eq!(h.revision(), 8, "{kind}: revision survives kill -9");
        assert_eq!(
            (h.cluster_id(), h.member_id()),
            (cid, mid),
            "{kind}: ids survive restart"
        );
        let kv = &r.kvs()[0];
        assert_eq!(
            (
                kv.value(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version()
            ),
            (&b"4"[..], 2, 6, 5)
        );
        // Compaction is durable; history above it is intact.
        let e = c
            .get("k", Some(GetOptions::new().with_revision(3)))
            .await
            .expect_err("revision 3 was compacted");
        assert_eq!(
            grpc_status(&e),
            (
                "OutOfRange".to_string(),
                "etcdserver: mvcc: required revision has been compacted".to_string()
            ),
            "{kind}"
        );
        let r = c
            .get("k", Some(GetOptions::new().with_revision(5)))
            .await
            .unwrap();
        assert_eq!(r.kvs()[0].value(), b"3");
        let r = c
            .get("other", Some(GetOptions::new().with_revision(7)))
            .await
            .unwrap();
        assert_eq!(r.kvs()[0].value(), b"x");
        // Revisions continue from where they were.
        let p = c.put("k", "5", None).await.unwrap();
        assert_eq!(p.header().unwrap().revision(), 9, "{kind}");
        let ml = c.member_list().await.unwrap();
        assert_eq!(ml.members().len(), 1);
        assert_eq!(ml.members()[0].id(), mid);
        println!("=== {kind}: ok ===");
    }
}

/// WAL segments (64 MiB each) go once the revision store durably holds their entries, and
/// a restart after SIGKILL rebuilds from the store plus what is left of the WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_segments_are_released_once_the_store_holds_them() {
    if target_kind() != Kind::Corekv {
        println!("corekv-only: etcd lays out its data dir differently");
        return;
    }
    let mut server = Server::start_target();
    let wal_dir = server.data_dir().join("member").join("wal");
    let segments = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "wal")
            })
            .count()
    };
    let mut c = server.client().await;
    // 1 MiB values: ~63 fit in a segment, so 150 of them span at least three segments.
    let value = "v".repeat(1024 * 1024);
    for i in 0..150 {
        c.put(format!("big/{i:03}"), value.clone(), None)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while segments(&wal_dir) > 1 && Instant::now() < deadline {
        // Each write gives the sequencer a turn, in which it looks for segments to release.
        c.put("tick", "x", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        segments(&wal_dir),
        1,
        "older segments released once the store holds them"
    );
    server.kill();
    server.restart();
    let mut c = server.client().await;
    let r = c
        .get(
            "big/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .unwrap();
    assert_eq!(
        r.kvs().len(),
        150,
        "every key survives the release and a kill -9"
    );
    let last = c.get("big/149", None).await.unwrap();
    assert_eq!(last.kvs()[0].value().len(), value.len());
}
