//! `watch-latency --protocol binary`: the watch-latency measurement over corekv's binary
//! protocol. Watchers are spread over `--conns` binary connections (one watch stream
//! each); `--clients` writers put to the watched key (or under the prefix) at `--rate`
//! on connections of their own. Every put's value starts with its sequence number, so each
//! event is timed from just before its put was sent. A watcher passes when it got exactly
//! one event per put, in strictly increasing revisions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_client::{proto as pb, ClientOptions, Connection, WatchOptions};

use crate::watch::{latency_json, parse_seq, SEQ_DIGITS};
use crate::{encode_key, random_value, round4, Opts, Phase, Tally, CONSECUTIVE_ERRORS_MAX};

/// Problems listed in full; the rest are only counted.
const PROBLEMS_SHOWN: usize = 10;

/// The result of a binary watch-latency run.
pub(crate) struct BinaryWatchReport {
    /// Put-to-event latency over every watcher.
    pub(crate) latency: Tally,
    puts: Tally,
    put_errors: u64,
    first_error: Option<String>,
    write_elapsed: Duration,
    events: u64,
    events_expected: u64,
    watchers: usize,
    watchers_ok: usize,
    problems: Vec<String>,
    problem_count: usize,
}

impl BinaryWatchReport {
    /// Whether every watcher got every event once and in order, and some put succeeded.
    pub(crate) fn passed(&self) -> bool {
        self.watchers_ok == self.watchers && self.put_errors == 0 && self.puts.ok > 0
    }
}

struct Shared {
    base: Instant,
    /// Per sequence number: ns since `base` + 1 just before the put was sent (0 = never).
    sent_ns: Vec<AtomicU64>,
    warmup: u64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }
}

async fn connect(o: &Opts, i: usize) -> Result<Arc<Connection>, String> {
    let ep = &o.endpoints[i % o.endpoints.len()];
    Connection::connect(ep, &ClientOptions::default())
        .await
        .map(Arc::new)
        .map_err(|e| format!("cannot connect to {ep} (binary protocol): {e}"))
}

/// One watcher until it has `expected` events or goes `idle_max` without a response.
async fn watcher_task(
    mut watch: corekv_client::Watch,
    shared: Arc<Shared>,
    expected: u64,
    idle_max: Duration,
) -> (Tally, u64, Option<String>) {
    let mut tally = Tally::new();
    let mut count = 0u64;
    let mut last_rev = 0i64;
    while count < expected {
        let response = match tokio::time::timeout(idle_max, watch.next()).await {
            Err(_) => {
                return (
                    tally,
                    count,
                    Some(format!(
                        "no event for {idle_max:?} after {count} of {expected}"
                    )),
                )
            }
            Ok(None) => return (tally, count, Some("the watch ended".into())),
            Ok(Some(Err(e))) => return (tally, count, Some(e.to_string())),
            Ok(Some(Ok(r))) => r,
        };
        let arrived = shared.now_ns();
        if response.canceled {
            let why = format!("canceled by the server: {:?}", response.cancel_reason);
            return (tally, count, Some(why));
        }
        for event in response.events {
            let Some(kv) = event.kv else {
                return (tally, count, Some("event without kv".into()));
            };
            if kv.mod_revision <= last_rev {
                let why = format!("revision {} after {last_rev}", kv.mod_revision);
                return (tally, count, Some(why));
            }
            last_rev = kv.mod_revision;
            count += 1;
            let Some(seq) = parse_seq(&kv.value) else {
                return (tally, count, Some("value without sequence number".into()));
            };
            if seq >= shared.warmup {
                let sent = shared
                    .sent_ns
                    .get(seq as usize)
                    .map_or(0, |s| s.load(Ordering::Acquire));
                if sent == 0 {
                    return (
                        tally,
                        count,
                        Some(format!("event for put {seq}, never sent")),
                    );
                }
                tally.record(Duration::from_nanos(arrived.saturating_sub(sent)));
            }
        }
    }
    (tally, count, None)
}

async fn writer_task(
    id: usize,
    conn: Arc<Connection>,
    o: Arc<Opts>,
    shared: Arc<Shared>,
    phase: Arc<Phase>,
) -> Tally {
    let mut tally = Tally::new();
    let mut value = random_value(o.val_size);
    let mut in_a_row = 0;
    while let Some(seq) = phase.claim().await {
        let mut key = o.key.as_bytes().to_vec();
        if o.prefix {
            key.extend_from_slice(&encode_key(
                seq % o.key_space_size.max(1),
                o.key_size,
                o.key_encoding,
            ));
        }
        value[..SEQ_DIGITS].copy_from_slice(format!("{seq:016x}").as_bytes());
        let put = pb::PbPutRequest {
            key,
            value: value.clone(),
            ..Default::default()
        };
        let t0 = Instant::now();
        shared.sent_ns[seq as usize].store(shared.now_ns(), Ordering::Release);
        match conn.put(&put).await {
            Ok(_) => {
                in_a_row = 0;
                if seq >= shared.warmup {
                    tally.record(t0.elapsed());
                }
            }
            Err(e) => {
                in_a_row += 1;
                tally.errors += 1;
                phase.note_error(&e.to_string());
                if in_a_row >= CONSECUTIVE_ERRORS_MAX {
                    eprintln!("corekv-bench: writer {id} stopped after {CONSECUTIVE_ERRORS_MAX} consecutive errors; last: {e}");
                    tally.gave_up = 1;
                    break;
                }
            }
        }
    }
    tally
}

/// Runs watch-latency over the binary protocol.
pub(crate) async fn bench(o: Opts) -> Result<BinaryWatchReport, String> {
    let o = Arc::new(o);
    let puts_total = o.warmup + o.total;
    let mut watch_conns = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        watch_conns.push(connect(&o, i).await?);
    }
    let writer_conns = o.conns.min(o.clients).max(1);
    let mut put_conns = Vec::with_capacity(writer_conns);
    for i in 0..writer_conns {
        put_conns.push(connect(&o, o.conns + i).await?);
    }
    let shared = Arc::new(Shared {
        base: Instant::now(),
        sent_ns: (0..puts_total).map(|_| AtomicU64::new(0)).collect(),
        warmup: o.warmup,
    });
    let key = o.key.as_bytes().to_vec();
    let idle_max = o.timeout.max(Duration::from_secs(10));
    let mut watchers = Vec::with_capacity(o.watchers);
    for w in 0..o.watchers {
        let options = if o.prefix {
            WatchOptions::prefix(key.clone())
        } else {
            WatchOptions::key(key.clone())
        };
        let watch =
            tokio::time::timeout(idle_max, watch_conns[w % watch_conns.len()].watch(options))
                .await
                .map_err(|_| format!("watcher {w}: not created within {idle_max:?}"))?
                .map_err(|e| format!("watcher {w}: {e}"))?;
        watchers.push(tokio::spawn(watcher_task(
            watch,
            shared.clone(),
            puts_total,
            idle_max,
        )));
    }
    let phase = Arc::new(Phase::new(Some(puts_total), None, o.rate));
    let mut writers = Vec::with_capacity(o.clients);
    for id in 0..o.clients {
        writers.push(tokio::spawn(writer_task(
            id,
            put_conns[id % put_conns.len()].clone(),
            o.clone(),
            shared.clone(),
            phase.clone(),
        )));
    }
    let mut puts = Tally::new();
    for w in writers {
        puts.merge(&w.await.map_err(|e| format!("writer task: {e}"))?);
    }
    let write_elapsed = phase.start.elapsed();
    let mut latency = Tally::new();
    let (mut events, mut watchers_ok, mut problems, mut problem_count) = (0, 0, Vec::new(), 0);
    for (w, task) in watchers.into_iter().enumerate() {
        let (tally, count, problem) = task.await.map_err(|e| format!("watcher task: {e}"))?;
        latency.merge(&tally);
        events += count;
        match problem {
            None => watchers_ok += 1,
            Some(p) => {
                problem_count += 1;
                if problems.len() < PROBLEMS_SHOWN {
                    problems.push(format!("watcher {w}: {p}"));
                }
            }
        }
    }
    let first_error = phase.first_error.lock().unwrap().clone();
    Ok(BinaryWatchReport {
        latency,
        put_errors: puts.errors,
        puts,
        first_error,
        write_elapsed,
        events,
        events_expected: puts_total * o.watchers as u64,
        watchers: o.watchers,
        watchers_ok,
        problems,
        problem_count,
    })
}

/// Prints the report (JSON with --json, the same keys as the gRPC watch-latency).
pub(crate) fn print(o: &Opts, r: &BinaryWatchReport) {
    let rps = r.puts.ok as f64 / r.write_elapsed.as_secs_f64().max(1e-9);
    let j = serde_json::json!({
        "op": "watch-latency",
        "protocol": "binary",
        "total_requests": r.puts.ok,
        "errors": r.put_errors,
        "elapsed_s": round4(r.write_elapsed.as_secs_f64()),
        "rps": (rps * 100.0).round() / 100.0,
        "latency_ms": latency_json(&r.latency),
        "latency_count": r.latency.ok,
        "put_latency_ms": latency_json(&r.puts),
        "events": r.events,
        "events_expected": r.events_expected,
        "watchers": r.watchers,
        "watchers_ok": r.watchers_ok,
        "watchers_failed": r.problem_count,
        "problems": r.problems,
        "ok": r.passed(),
        "conns": o.conns,
        "clients": o.clients,
        "key": o.key,
        "prefix": o.prefix,
        "val_size": o.val_size,
        "endpoints": o.endpoints,
        "rate": o.rate,
        "warmup": o.warmup,
        "first_error": r.first_error,
    });
    if o.json {
        println!("{j}");
        return;
    }
    let lat = &j["latency_ms"];
    println!(
        "watch-latency over binary: {} watchers on {} conns, {} puts at {}/s -> {}",
        r.watchers,
        o.conns,
        r.puts.ok,
        o.rate,
        o.endpoints.join(",")
    );
    println!(
        "  put-to-event latency (ms): p50 {} p90 {} p99 {} max {} ({} events timed)",
        lat["p50"], lat["p90"], lat["p99"], lat["max"], r.latency.ok
    );
    println!(
        "  events {} of {} expected; watchers ok {} of {}; put errors {}",
        r.events, r.events_expected, r.watchers_ok, r.watchers, r.put_errors
    );
    for p in &r.problems {
        println!("  problem: {p}");
    }
    if let Some(e) = &r.first_error {
        println!("  first error: {e}");
    }
}
