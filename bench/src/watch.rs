//! `watch-latency` and `watch`: watchers on one key or prefix, writers putting to it, and a
//! check that every watcher got every event exactly once, in revision order.
//!
//! Every put's value starts with its sequence number (16 hex digits), so an event names the
//! put it comes from: its latency is the time from just before that put was sent to the
//! event's arrival at a watcher, and the pair (sequence, mod_revision) feeds an
//! order-independent fingerprint. A watcher passes when its revisions strictly increase,
//! it got exactly as many events as puts succeeded, and the fingerprint of what it got
//! equals the fingerprint of what the writers were acknowledged. Only plain etcd gRPC is
//! used, so the same run works against corekv and etcd.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KvClient, WatchClient, WatchOptions,
};
use hdrhistogram::Histogram;

use crate::{
    encode_key, histogram_text, random_value, round4, Command, Opts, Phase, Tally,
    CONSECUTIVE_ERRORS_MAX, PERCENTILES, PRIME_KEY,
};

/// Leading value bytes that carry the put's sequence number, as hex digits.
pub(crate) const SEQ_DIGITS: usize = 16;
/// Shared latency histograms (stream tasks record into shard `stream % SHARDS`).
const LATENCY_SHARDS: usize = 8;
/// Latencies a stream task buffers before merging them into its shard.
const LATENCY_FLUSH: usize = 4096;
/// Problems listed in full; the rest are only counted.
const PROBLEMS_SHOWN: usize = 10;

/// Mixes a (sequence, revision) pair into a fingerprint term (SplitMix64 finaliser).
fn mix(seq: u64, rev: i64) -> u64 {
    let mut z =
        seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (rev as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn parse_seq(value: &[u8]) -> Option<u64> {
    let digits = value.get(..SEQ_DIGITS)?;
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// What writers and watchers share.
struct Shared {
    base: Instant,
    /// Per sequence number: nanoseconds since `base` (+1, so 0 = not sent) just before the
    /// put was sent.
    sent_ns: Vec<AtomicU64>,
    /// Puts before this sequence number are warmup: checked, not timed.
    warmup: u64,
    /// Events every watcher must receive (every put issued).
    expected: u64,
    /// Sum of mix(seq, revision) over acknowledged puts.
    expected_fingerprint: AtomicU64,
    puts_ok: AtomicU64,
    latency: Vec<Mutex<Tally>>,
    events: AtomicU64,
    events_measured: AtomicU64,
    last_event_ns: AtomicU64,
    /// Watchers that have received `expected` events.
    complete: AtomicUsize,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }
}

/// One watcher's record.
#[derive(Clone, Debug, Default)]
struct Check {
    last_rev: i64,
    count: u64,
    fingerprint: u64,
    /// The first thing that went wrong for this watcher.
    problem: Option<String>,
}

impl Check {
    fn problem(&mut self, p: impl FnOnce() -> String) {
        if self.problem.is_none() {
            self.problem = Some(p());
        }
    }
}

struct StreamOutcome {
    checks: Vec<Check>,
    /// The stream itself failed (not created, broken, ended).
    error: Option<String>,
}

struct StreamPlan {
    index: usize,
    client: WatchClient,
    watchers: usize,
    key: Vec<u8>,
    prefix: bool,
    create_timeout: Duration,
}

fn watch_options(prefix: bool) -> WatchOptions {
    let o = WatchOptions::new();
    if prefix {
        o.with_prefix()
    } else {
        o
    }
}

/// Runs one watch stream carrying `plan.watchers` watchers until each of them got every
/// event, the stream fails, or `stop` turns true. Reports readiness (all created) on `ready`.
async fn stream_task(
    plan: StreamPlan,
    shared: Arc<Shared>,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> StreamOutcome {
    let StreamPlan {
        index,
        mut client,
        watchers,
        key,
        prefix,
        create_timeout,
    } = plan;
    let mut checks = vec![Check::default(); watchers];
    let fail = |checks: Vec<Check>, e: String| {
        let _ = ready.send(Err(e.clone()));
        StreamOutcome {
            checks,
            error: Some(e),
        }
    };
    let stream = match tokio::time::timeout(
        create_timeout,
        client.watch(key.clone(), Some(watch_options(prefix))),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(checks, format!("stream {index}: watch: {e}")),
        Err(_) => {
            return fail(
                checks,
                format!("stream {index}: watch not answered in {create_timeout:?}"),
            )
        }
    };
    let (mut sender, mut responses) = stream.split();
    // More watchers on the same stream, created while this task reads the created
    // responses (a stream that is not read may stall its creations). The sender is kept
    // for the stream's life: dropping it half-closes the stream.
    let creator = {
        let key = key.clone();
        tokio::spawn(async move {
            for _ in 1..watchers {
                sender
                    .watch(key.clone(), Some(watch_options(prefix)))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(sender)
        })
    };
    let mut ids: HashMap<i64, usize> = HashMap::with_capacity(watchers);
    let mut complete = 0usize;
    let mut pending: Vec<u64> = Vec::with_capacity(LATENCY_FLUSH);
    let shard = &shared.latency[index % LATENCY_SHARDS];
    let flush = |pending: &mut Vec<u64>| {
        if pending.is_empty() {
            return;
        }
        let mut t = shard.lock().unwrap();
        for ns in pending.drain(..) {
            t.record(Duration::from_nanos(ns));
        }
    };
    let created_deadline = Instant::now() + create_timeout;
    let mut error = None;
    let mut sender_kept = None;
    let mut creator = Some(creator);
    loop {
        if ids.len() < watchers && Instant::now() >= created_deadline {
            error = Some(format!(
                "stream {index}: {} of {watchers} watchers created in {create_timeout:?}",
                ids.len()
            ));
            break;
        }
        let message = tokio::select! {
            m = responses.message() => m,
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep_until(created_deadline.into()), if ids.len() < watchers => continue,
        };
        let response = match message {
            Ok(Some(r)) => r,
            Ok(None) => {
                error = Some(format!("stream {index}: ended by the server"));
                break;
            }
            Err(e) => {
                error = Some(format!("stream {index}: {e}"));
                break;
            }
        };
        let arrived_ns = shared.now_ns();
        if response.created() {
            if response.canceled() {
                error = Some(format!(
                    "stream {index}: watch creation refused: {:?}",
                    response.cancel_reason()
                ));
                break;
            }
            let local = ids.len();
            if ids.insert(response.watch_id(), local).is_some() {
                error = Some(format!(
                    "stream {index}: watch id {} created twice",
                    response.watch_id()
                ));
                break;
            }
            if ids.len() == watchers {
                match creator.take().expect("creator runs once").await {
                    Ok(Ok(s)) => sender_kept = Some(s),
                    Ok(Err(e)) => {
                        error = Some(format!("stream {index}: creating watchers: {e}"));
                        break;
                    }
                    Err(e) => {
                        error = Some(format!("stream {index}: creator task: {e}"));
                        break;
                    }
                }
                let _ = ready.send(Ok(()));
            }
        }
        let events = response.events();
        if events.is_empty() && !response.canceled() {
            continue; // created, or a progress notification
        }
        let Some(&local) = ids.get(&response.watch_id()) else {
            error = Some(format!(
                "stream {index}: response for unknown watch id {}",
                response.watch_id()
            ));
            break;
        };
        let check = &mut checks[local];
        if response.canceled() {
            let (reason, compact) = (
                response.cancel_reason().to_string(),
                response.compact_revision(),
            );
            check.problem(|| {
                format!("cancelled by the server (reason {reason:?}, compact_revision {compact})")
            });
        }
        shared
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        shared
            .last_event_ns
            .fetch_max(arrived_ns, Ordering::Relaxed);
        let mut measured = 0;
        for event in events {
            let Some(kv) = event.kv() else {
                check.problem(|| "event without kv".into());
                continue;
            };
            let rev = kv.mod_revision();
            if event.event_type() != EventType::Put {
                check.problem(|| format!("unexpected delete event at revision {rev}"));
                continue;
            }
            let Some(seq) = parse_seq(kv.value()) else {
                check.problem(|| {
                    format!("revision {rev}: value does not start with a sequence number")
                });
                continue;
            };
            if rev <= check.last_rev {
                let last = check.last_rev;
                let what = if rev == last {
                    "duplicate"
                } else {
                    "out of order"
                };
                check.problem(|| {
                    format!("{what}: revision {rev} (seq {seq}) after revision {last}")
                });
            } else {
                check.last_rev = rev;
            }
            check.count += 1;
            check.fingerprint = check.fingerprint.wrapping_add(mix(seq, rev));
            if check.count == shared.expected {
                complete += 1;
                shared.complete.fetch_add(1, Ordering::Relaxed);
            } else if check.count == shared.expected + 1 {
                check.problem(|| format!("more events than puts ({} expected)", shared.expected));
            }
            if seq >= shared.warmup {
                let sent = shared
                    .sent_ns
                    .get(seq as usize)
                    .map_or(0, |s| s.load(Ordering::Acquire));
                if sent == 0 {
                    check.problem(|| {
                        format!("revision {rev}: event for put {seq}, which was never sent")
                    });
                } else {
                    pending.push(arrived_ns.saturating_sub(sent));
                    measured += 1;
                }
            }
        }
        shared
            .events_measured
            .fetch_add(measured, Ordering::Relaxed);
        if pending.len() >= LATENCY_FLUSH {
            flush(&mut pending);
        }
        if complete == watchers {
            break;
        }
    }
    flush(&mut pending);
    if ids.len() < watchers && error.is_none() {
        error = Some(format!(
            "stream {index}: stopped with {} of {watchers} watchers created",
            ids.len()
        ));
    }
    if let Some(e) = &error {
        let _ = ready.send(Err(e.clone()));
    }
    if let Some(c) = creator {
        c.abort();
    }
    drop(sender_kept);
    StreamOutcome { checks, error }
}

/// One writer: claims sequence numbers from the phase and puts them.
async fn writer_task(
    id: usize,
    mut kv: KvClient,
    o: Arc<Opts>,
    shared: Arc<Shared>,
    phase: Arc<Phase>,
) -> Tally {
    let mut tally = Tally::new();
    let mut value = random_value(o.val_size);
    let key = o.key.as_bytes().to_vec();
    let mut in_a_row = 0u32;
    while let Some(seq) = phase.claim().await {
        let k = if o.prefix {
            let mut k = key.clone();
            k.extend_from_slice(&encode_key(
                seq % o.key_space_size.max(1),
                o.key_size,
                o.key_encoding,
            ));
            k
        } else {
            key.clone()
        };
        value[..SEQ_DIGITS].copy_from_slice(format!("{seq:016x}").as_bytes());
        let t0 = Instant::now();
        shared.sent_ns[seq as usize].store(shared.now_ns(), Ordering::Release);
        let res = kv.put(k, value.clone(), None).await;
        let latency = t0.elapsed();
        match res {
            Ok(resp) => {
                in_a_row = 0;
                let rev = resp.header().map_or(0, |h| h.revision());
                shared
                    .expected_fingerprint
                    .fetch_add(mix(seq, rev), Ordering::Relaxed);
                shared.puts_ok.fetch_add(1, Ordering::Relaxed);
                if seq >= shared.warmup {
                    tally.record(latency);
                }
            }
            Err(e) => {
                in_a_row += 1;
                tally.errors += 1;
                let msg = e.to_string();
                phase.note_error(&msg);
                if in_a_row >= CONSECUTIVE_ERRORS_MAX {
                    eprintln!("corekv-bench: writer {id} stopped after {CONSECUTIVE_ERRORS_MAX} consecutive errors; last: {msg}");
                    tally.gave_up = 1;
                    break;
                }
            }
        }
    }
    tally
}

async fn connect(o: &Opts, i: usize, request_timeout: bool) -> Result<Client, String> {
    let ep = &o.endpoints[i % o.endpoints.len()];
    let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    if request_timeout {
        // Not on watch connections: a watch stream outlives any per-request timeout.
        options = options.with_timeout(o.timeout);
    }
    let mut client = Client::connect([ep.as_str()], Some(options))
        .await
        .map_err(|e| format!("cannot connect to {ep}: {e}"))?;
    // Connections open lazily: touch each before any clock starts.
    tokio::time::timeout(
        o.timeout,
        client.get(PRIME_KEY, Some(GetOptions::new().with_serializable())),
    )
    .await
    .map_err(|_| format!("{ep} does not answer within {:?}", o.timeout))?
    .map_err(|e| format!("{ep} does not answer: {e}"))?;
    Ok(client)
}

/// The result of a watch run.
pub(crate) struct WatchReport {
    pub(crate) latency: Tally,
    puts: Tally,
    puts_ok: u64,
    put_errors: u64,
    first_error: Option<String>,
    /// Time from the first measured put to the last write acknowledged.
    write_elapsed: Duration,
    /// Time from the first measured put to the last event received.
    delivery_elapsed: Duration,
    events: u64,
    events_measured: u64,
    expected_per_watcher: u64,
    watchers: usize,
    streams: usize,
    watchers_ok: usize,
    problems: Vec<String>,
    problem_count: usize,
    stream_errors: Vec<String>,
}

impl WatchReport {
    pub(crate) fn passed(&self) -> bool {
        self.problem_count == 0
            && self.stream_errors.is_empty()
            && self.put_errors == 0
            && self.puts_ok > 0
    }

    fn events_per_s(&self) -> f64 {
        let s = self.delivery_elapsed.as_secs_f64();
        if s > 0.0 {
            self.events_measured as f64 / s
        } else {
            0.0
        }
    }

    fn puts_per_s(&self) -> f64 {
        let s = self.write_elapsed.as_secs_f64();
        if s > 0.0 {
            self.puts.ok as f64 / s
        } else {
            0.0
        }
    }
}

pub(crate) async fn bench(o: Opts) -> Result<WatchReport, String> {
    let o = Arc::new(o);
    let puts_total = o.warmup + o.total;
    let streams = o.streams.max(1);
    // Watch connections (no request timeout), then the writers' own connections.
    let mut watch_clients = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        watch_clients.push(connect(&o, i, false).await?.watch_client());
    }
    let writer_conns = o.conns.min(o.clients).max(1);
    let mut kvs = Vec::with_capacity(writer_conns);
    for i in 0..writer_conns {
        kvs.push(connect(&o, o.conns + i, true).await?.kv_client());
    }
    let shared = Arc::new(Shared {
        base: Instant::now(),
        sent_ns: (0..puts_total).map(|_| AtomicU64::new(0)).collect(),
        warmup: o.warmup,
        expected: puts_total,
        expected_fingerprint: AtomicU64::new(0),
        puts_ok: AtomicU64::new(0),
        latency: (0..LATENCY_SHARDS)
            .map(|_| Mutex::new(Tally::new()))
            .collect(),
        events: AtomicU64::new(0),
        events_measured: AtomicU64::new(0),
        last_event_ns: AtomicU64::new(0),
        complete: AtomicUsize::new(0),
    });

    // Watchers: round-robin over streams, streams round-robin over connections.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let create_timeout = o.timeout.max(Duration::from_secs(10));
    let mut tasks = Vec::with_capacity(streams);
    for s in 0..streams {
        let watchers = o.watchers / streams + usize::from(s < o.watchers % streams);
        let plan = StreamPlan {
            index: s,
            client: watch_clients[s % watch_clients.len()].clone(),
            watchers,
            key: o.key.as_bytes().to_vec(),
            prefix: o.prefix,
            create_timeout,
        };
        tasks.push(tokio::spawn(stream_task(
            plan,
            shared.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(ready_tx);
    let setup = Instant::now();
    for _ in 0..streams {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                let _ = stop_tx.send(true);
                return Err(format!("setting up watchers: {e}"));
            }
            None => return Err("setting up watchers: stream tasks ended".into()),
        }
    }
    eprintln!(
        "corekv-bench: {} watchers on {streams} streams over {} conns created in {:.2} s",
        o.watchers,
        o.conns,
        setup.elapsed().as_secs_f64()
    );

    // Writers.
    let phase = Arc::new(Phase::new(Some(puts_total), None, o.rate));
    let write_start = phase.start;
    let mut writers = Vec::with_capacity(o.clients);
    for id in 0..o.clients {
        writers.push(tokio::spawn(writer_task(
            id,
            kvs[id % kvs.len()].clone(),
            o.clone(),
            shared.clone(),
            phase.clone(),
        )));
    }
    let mut puts = Tally::new();
    for w in writers {
        match w.await {
            Ok(t) => puts.merge(&t),
            Err(e) => {
                eprintln!("corekv-bench: writer task failed: {e}");
                puts.gave_up += 1;
            }
        }
    }
    // Measured writes: from the first measured put to the last acknowledgement.
    let first_measured_ns = shared
        .sent_ns
        .get(o.warmup as usize)
        .map_or(0, |s| s.load(Ordering::Acquire));
    let write_elapsed = write_start.elapsed().saturating_sub(
        (shared.base + Duration::from_nanos(first_measured_ns.saturating_sub(1)))
            .saturating_duration_since(write_start),
    );
    let first_error = phase.first_error.lock().unwrap().clone();
    let puts_ok = shared.puts_ok.load(Ordering::Relaxed);

    // Delivery: wait for every watcher to have every event, up to --timeout after the
    // last write (and as long as events keep arriving, up to 10 x --timeout).
    let hard_deadline = Instant::now() + o.timeout * 10;
    let mut deadline = Instant::now() + o.timeout;
    let mut seen = shared.events.load(Ordering::Relaxed);
    loop {
        if shared.complete.load(Ordering::Relaxed) >= o.watchers
            || tasks.iter().all(|t| t.is_finished())
        {
            break;
        }
        let now = Instant::now();
        let events = shared.events.load(Ordering::Relaxed);
        if events != seen {
            seen = events;
            deadline = (now + o.timeout).min(hard_deadline);
        }
        if now >= deadline {
            eprintln!(
                "corekv-bench: delivery stalled: {} of {} watchers complete, {} events received; giving up",
                shared.complete.load(Ordering::Relaxed),
                o.watchers,
                events
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut checks = Vec::with_capacity(o.watchers);
    let mut stream_errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(out) => {
                checks.extend(out.checks);
                stream_errors.extend(out.error);
            }
            Err(e) => stream_errors.push(format!("stream task failed: {e}")),
        }
    }

    // Verdict per watcher.
    let expected_fp = shared.expected_fingerprint.load(Ordering::Relaxed);
    let mut problems = Vec::new();
    let mut problem_count = 0;
    for (i, c) in checks.iter().enumerate() {
        let p = if let Some(p) = &c.problem {
            Some(p.clone())
        } else if c.count < puts_ok {
            Some(format!("missing events: got {} of {puts_ok}", c.count))
        } else if c.count > puts_ok {
            let unknown = if puts.errors > 0 {
                format!(
                    " ({} puts failed, so may or may not have been applied)",
                    puts.errors
                )
            } else {
                String::new()
            };
            Some(format!(
                "{} events for {puts_ok} acknowledged puts{unknown}",
                c.count
            ))
        } else if c.fingerprint != expected_fp {
            Some("got as many events as puts, but not the same (sequence, revision) pairs".into())
        } else {
            None
        };
        if let Some(p) = p {
            problem_count += 1;
            if problems.len() < PROBLEMS_SHOWN {
                problems.push(format!("watcher {i} (stream {}): {p}", i % streams));
            }
        }
    }
    let watchers_ok = checks.len() - problem_count;
    let mut latency = Tally::new();
    for shard in &shared.latency {
        latency.merge(&shard.lock().unwrap());
    }
    let first_measured = shared
        .sent_ns
        .get(o.warmup as usize)
        .map_or(0, |s| s.load(Ordering::Acquire));
    let last = shared.last_event_ns.load(Ordering::Relaxed);
    let delivery_elapsed = Duration::from_nanos(last.saturating_sub(first_measured));
    Ok(WatchReport {
        latency,
        puts_ok,
        put_errors: puts.errors,
        puts,
        first_error,
        write_elapsed,
        delivery_elapsed,
        events: shared.events.load(Ordering::Relaxed),
        events_measured: shared.events_measured.load(Ordering::Relaxed),
        expected_per_watcher: puts_total,
        watchers: o.watchers,
        streams,
        watchers_ok,
        problems,
        problem_count,
        stream_errors,
    })
}

// ---------------------------------------------------------------------------------------
// Output

fn pct(h: &Histogram<u64>, p: f64) -> f64 {
    h.value_at_percentile(p) as f64 / 1000.0
}

pub(crate) fn latency_json(t: &Tally) -> serde_json::Value {
    let mut lat = serde_json::Map::new();
    if t.ok == 0 {
        return serde_json::Value::Object(lat);
    }
    let n = t.ok as f64;
    let mean = t.sum_us / n;
    let var = (t.sum_sq_us / n - mean * mean).max(0.0);
    lat.insert("min".into(), round4(t.min_us / 1000.0).into());
    lat.insert("mean".into(), round4(mean / 1000.0).into());
    lat.insert("stddev".into(), round4(var.sqrt() / 1000.0).into());
    for (p, _, name) in PERCENTILES {
        lat.insert(name.into(), round4(pct(&t.hist, p)).into());
    }
    lat.insert("max".into(), round4(t.max_us / 1000.0).into());
    serde_json::Value::Object(lat)
}

pub(crate) fn print_json(o: &Opts, r: &WatchReport) {
    let j = serde_json::json!({
        "op": o.command.name(),
        "total_requests": r.puts.ok,
        "errors": r.put_errors,
        "elapsed_s": round4(r.write_elapsed.as_secs_f64()),
        "rps": (r.puts_per_s() * 100.0).round() / 100.0,
        "latency_ms": latency_json(&r.latency),
        "latency_count": r.latency.ok,
        "put_latency_ms": latency_json(&r.puts),
        "events": r.events,
        "events_measured": r.events_measured,
        "events_expected": r.expected_per_watcher * r.watchers as u64,
        "events_per_s": r.events_per_s().round(),
        "delivery_s": round4(r.delivery_elapsed.as_secs_f64()),
        "watchers": r.watchers,
        "watchers_ok": r.watchers_ok,
        "watchers_failed": r.problem_count,
        "problems": r.problems,
        "stream_errors": r.stream_errors,
        "ok": r.passed(),
        "streams": r.streams,
        "conns": o.conns,
        "clients": o.clients,
        "key": o.key,
        "prefix": o.prefix,
        "key_size": o.key_size,
        "val_size": o.val_size,
        "endpoints": o.endpoints,
        "rate": o.rate,
        "warmup": o.warmup,
        "first_error": r.first_error,
    });
    println!("{j}");
}

pub(crate) fn print_text(o: &Opts, r: &WatchReport) {
    let mut out = String::new();
    let target = if o.prefix {
        format!("prefix {:?}", o.key)
    } else {
        format!("key {:?}", o.key)
    };
    let _ = writeln!(
        out,
        "{}: {} watchers on {target} ({} streams over {} conns), {} writers, {} puts of {} B{}{} -> {}\n",
        o.command.name(),
        o.watchers,
        r.streams,
        o.conns,
        o.clients,
        o.total,
        o.val_size,
        if o.rate > 0.0 { format!(" at {}/s", o.rate) } else { String::new() },
        if o.warmup > 0 { format!(" (+{} warmup)", o.warmup) } else { String::new() },
        o.endpoints.join(",")
    );
    let _ = writeln!(out, "Summary:");
    let _ = writeln!(
        out,
        "  Writes:\t{:.4} secs, {:.1} puts/sec, {} ok, {} errors.",
        r.write_elapsed.as_secs_f64(),
        r.puts_per_s(),
        r.puts_ok,
        r.put_errors
    );
    let _ = writeln!(
        out,
        "  Events:\t{} received of {} expected ({} measured) in {:.4} secs: {:.1} events/sec.",
        r.events,
        r.expected_per_watcher * r.watchers as u64,
        r.events_measured,
        r.delivery_elapsed.as_secs_f64(),
        r.events_per_s()
    );
    if r.latency.ok > 0 {
        let t = &r.latency;
        let _ = writeln!(
            out,
            "\nWatch latency (put sent -> event received by a watcher), {} events:",
            t.ok
        );
        let _ = writeln!(out, "  Fastest:\t{:.4} ms.", t.min_us / 1000.0);
        let _ = writeln!(
            out,
            "  Average:\t{:.4} ms.",
            t.sum_us / t.ok as f64 / 1000.0
        );
        let _ = writeln!(out, "  Slowest:\t{:.4} ms.", t.max_us / 1000.0);
        if o.command == Command::WatchLatency {
            let _ = writeln!(out, "\nWatch latency histogram:");
            out.push_str(&histogram_text(&t.hist));
        }
        let _ = writeln!(out, "\nWatch latency distribution:");
        for (p, label, _) in PERCENTILES {
            if p >= 50.0 {
                let _ = writeln!(out, "  {label} in {:.4} ms.", pct(&t.hist, p));
            }
        }
        let _ = writeln!(out, "  max in {:.4} ms.", t.max_us / 1000.0);
    }
    if r.puts.ok > 0 {
        let _ = writeln!(
            out,
            "\nPut latency: p50 {:.4} ms, p99 {:.4} ms, max {:.4} ms.",
            pct(&r.puts.hist, 50.0),
            pct(&r.puts.hist, 99.0),
            r.puts.max_us / 1000.0
        );
    }
    if let Some(e) = &r.first_error {
        let _ = writeln!(out, "First put error: {e}");
    }
    let _ = writeln!(out);
    if r.passed() {
        let _ = writeln!(
            out,
            "Check: all {} watchers got all {} events exactly once, in revision order.",
            r.watchers, r.puts_ok
        );
    } else {
        let _ = writeln!(
            out,
            "CHECK FAILED: {} of {} watchers wrong, {} stream errors, {} put errors",
            r.problem_count,
            r.watchers,
            r.stream_errors.len(),
            r.put_errors
        );
        for p in r
            .stream_errors
            .iter()
            .take(PROBLEMS_SHOWN)
            .chain(&r.problems)
        {
            let _ = writeln!(out, "  {p}");
        }
        if r.problem_count > r.problems.len() {
            let _ = writeln!(
                out,
                "  ... and {} more watchers",
                r.problem_count - r.problems.len()
            );
        }
    }
    print!("{out}");
}

/// Prints the failure summary on stderr (also in --json mode) for a failed check.
pub(crate) fn complain(r: &WatchReport) {
    if r.passed() {
        return;
    }
    eprintln!(
        "corekv-bench: WATCH CHECK FAILED: {} of {} watchers did not get every event exactly once in order; {} stream errors; {} put errors",
        r.problem_count,
        r.watchers,
        r.stream_errors.len(),
        r.put_errors
    );
    for p in r
        .stream_errors
        .iter()
        .take(PROBLEMS_SHOWN)
        .chain(&r.problems)
    {
        eprintln!("corekv-bench:   {p}");
    }
    if r.puts_ok == 0 {
        eprintln!(
            "corekv-bench: no put succeeded{}",
            r.first_error
                .as_ref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        );
    }
}
