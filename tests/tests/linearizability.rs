//! Concurrent clients on every member of a 3-member cluster while the leader is killed
//! (SIGKILL, then restarted) and frozen (SIGSTOP: partitioned away while it still believes
//! it leads, then SIGCONT); the history the clients saw is checked for linearizability
//! with `corekv-linearizability` (per key, Wing-Gong/Lowe search).
//!
//! Reads are linearizable gets; writes are puts of unique values. A write that errs or
//! times out may or may not have happened (recorded as unknown); a read that errs had no
//! effect.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::*;
use corekv_linearizability::{check, History, Op, Outcome, Response};

/// Clients, and the ops each may issue (a bound as well as the time limit).
const CLIENTS: u64 = 6;
const OPS_PER_CLIENT_MAX: u64 = 600;
/// Pause between a client's operations, so the load spans every fault.
const THINK_MS_MAX: u64 = 60;
/// Keys the clients share at a time: few, so operations overlap. Every `KEY_EPOCH` the
/// clients move on to fresh keys, which keeps each key's history small enough for the
/// checker (a write with an unknown outcome can linearize anywhere after its invocation,
/// and every one of them multiplies the search on its key).
const KEYS: u64 = 3;
const KEY_EPOCH: Duration = Duration::from_millis(1_000);
/// How long one request may take before it counts as timed out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// Search steps the checker may take.
const CHECK_BUDGET: u64 = 20_000_000;

#[test]
fn histories_stay_linearizable_while_leaders_are_killed_and_frozen() {
    let mut cluster = Cluster::start(target_kind(), 3, &[]);
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();
    let history = Arc::new(Mutex::new(History::new()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(25);
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let endpoint = endpoints[(client % 3) as usize].clone();
        let history = history.clone();
        tasks.push(runtime.spawn(run_client(client, endpoint, history, stop_at)));
    }
    // The nemesis: alternately kill and freeze whoever leads.
    let mut faults = Vec::new();
    for round in 0..4 {
        std::thread::sleep(Duration::from_secs(3));
        let leader = cluster.wait_leader(Duration::from_secs(15));
        if round % 2 == 0 {
            cluster.kill(leader);
            std::thread::sleep(Duration::from_secs(1));
            cluster.restart(leader);
            faults.push(format!("killed and restarted m{leader}"));
        } else {
            cluster.pause(leader);
            std::thread::sleep(Duration::from_millis(3_000));
            cluster.resume(leader);
            faults.push(format!("froze m{leader} for 3 s"));
        }
    }
    let faults_over = Instant::now();
    let mut completed = 0;
    let mut during_faults = 0;
    for task in tasks {
        let answers = runtime.block_on(task).expect("client task");
        completed += answers.len();
        let first_fault = started + Duration::from_secs(3);
        during_faults += answers
            .iter()
            .filter(|t| **t >= first_fault && **t <= faults_over)
            .count();
    }
    drop(runtime);
    let history = history.lock().expect("history").clone();
    println!(
        "{} operations, {completed} answered, faults: {}",
        history.len(),
        faults.join("; ")
    );
    println!("{during_faults} answers came while the faults ran");
    assert!(
        during_faults > 100,
        "too few operations were answered while the faults ran ({during_faults}) for the check to mean much"
    );
    match check(&history, CHECK_BUDGET) {
        Outcome::Linearizable => {}
        Outcome::NotLinearizable(v) => panic!("not linearizable:\n{v}\n{}", cluster.logs()),
        Outcome::Unknown { key } => panic!(
            "the checker ran out of budget on key {:?}; lower the load or raise the budget",
            String::from_utf8_lossy(&key)
        ),
    }
}

/// One client: random puts and linearizable gets on a few keys through one member until
/// `stop_at`. Returns when each answered operation was answered.
async fn run_client(
    client: u64,
    endpoint: String,
    history: Arc<Mutex<History>>,
    stop_at: Instant,
) -> Vec<Instant> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(REQUEST_TIMEOUT);
    let mut kv = match etcd_client::Client::connect([endpoint.as_str()], Some(opts)).await {
        Ok(c) => c,
        Err(e) => panic!("client {client}: cannot connect to {endpoint}: {e}"),
    };
    // A small deterministic generator per client (no shared RNG state across tasks).
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (client + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut answered = Vec::new();
    for n in 0..OPS_PER_CLIENT_MAX {
        if Instant::now() >= stop_at {
            break;
        }
        let epoch = stop_at
            .checked_duration_since(Instant::now())
            .map_or(0, |left| left.as_millis() / KEY_EPOCH.as_millis());
        let key = format!("lin/{epoch}/{}", next() % KEYS);
        if next() % 2 == 0 {
            let value = format!("c{client}-{n}");
            let id = history
                .lock()
                .expect("history")
                .invoke(client, Op::put(key.clone(), value.clone()));
            let result = tokio::time::timeout(REQUEST_TIMEOUT, kv.put(key, value, None)).await;
            let mut h = history.lock().expect("history");
            match result {
                Ok(Ok(_)) => {
                    h.ok(id, Response::Done);
                    answered.push(Instant::now());
                }
                // An error or no answer: the write may still have been applied.
                _ => h.timeout(id),
            }
        } else {
            let id = history
                .lock()
                .expect("history")
                .invoke(client, Op::get(key.clone()));
            let result = tokio::time::timeout(REQUEST_TIMEOUT, kv.get(key, None)).await;
            let mut h = history.lock().expect("history");
            match result {
                Ok(Ok(resp)) => {
                    let value = resp.kvs().first().map(|kv| kv.value().to_vec());
                    h.ok(id, Response::Value(value));
                    answered.push(Instant::now());
                }
                _ => h.fail(id),
            }
        }
        tokio::time::sleep(Duration::from_millis(next() % THINK_MS_MAX)).await;
    }
    answered
}
