//! Watch under load, against the server under test (`COREKV_TEST_TARGET`, default corekv):
//!
//! * many watchers on one prefix, spread over 10 streams on 10 connections, and a burst of
//!   writes from 8 concurrent writers: every watcher must get every event exactly once, in
//!   revision order, and the server's RSS must stay bounded;
//! * watchers whose client never reads: the server's RSS must not grow with the backlog,
//!   other clients must keep being served, and once the stalled stream reads again it must
//!   still get every event exactly once, in order.
//!
//! Sizes: `COREKV_STRESS_WATCHERS` (default 1,000) and `COREKV_STRESS_WRITES` (default
//! 1,000) for the first test (10,000 x 10,000 is the full-size run),
//! `COREKV_STRESS_STALL_WRITES` (default 50,000 puts) and `COREKV_STRESS_STALL_KEYS` (default
//! 1,000 distinct keys they cycle over) for the second; `COREKV_STRESS_TIMEOUT_S`
//! bounds each phase (default 300 s). Only this test's writers write, so the revisions of
//! its puts are exactly `rev0+1 ..= rev0+M` and every watcher (created with start revision
//! `rev0+1`) must see exactly that sequence: the check is exact, not statistical.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, WatchOptions, WatchRequestSender,
    WatchResponseStream,
};

const MIB: u64 = 1024 * 1024;
/// The first test's bound on the server's RSS, at any time.
const RSS_MAX_BYTES: u64 = 1024 * MIB;
/// The stalled-reader test's bound on the server's RSS growth.
const STALL_RSS_GROWTH_MAX_BYTES: u64 = 256 * MIB;
/// Watch streams (and connections) of the first test.
const STREAMS: usize = 10;
/// Concurrent writers of the first test.
const WRITERS: usize = 8;
/// A stream with no response for this long fails the test.
const IDLE_MAX: Duration = Duration::from_secs(60);

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

fn phase_timeout() -> Duration {
    Duration::from_secs(env_usize("COREKV_STRESS_TIMEOUT_S", 300) as u64)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

// ---------------------------------------------------------------------------
// RSS of the server process
// ---------------------------------------------------------------------------

/// VmRSS of `pid` in bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples a process's RSS every 50 ms on a thread of its own, keeping the peak.
struct RssSampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid).unwrap_or(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        RssSampler {
            pid,
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn now(&self) -> u64 {
        let rss = rss_bytes(self.pid).expect("server process is running");
        self.peak.fetch_max(rss, Ordering::Relaxed);
        rss
    }

    fn peak(&self) -> u64 {
        self.now();
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak from the current RSS.
    fn reset_peak(&self) -> u64 {
        let rss = rss_bytes(self.pid).expect("server process is running");
        self.peak.store(rss, Ordering::Relaxed);
        rss
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Clients, writers, watchers
// ---------------------------------------------------------------------------

/// A connection for watch streams: no per-request timeout (a stream outlives it).
async fn watch_connection(endpoint: &str) -> Client {
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    Client::connect([endpoint], Some(opts))
        .await
        .unwrap_or_else(|e| panic!("connecting to {endpoint}: {e}"))
}

/// The key of put number `i` under `prefix`, and its value: the key's suffix, then `|` and
/// filler up to `size` bytes, so an event can be checked against its key.
fn key_value(prefix: &str, i: usize, size: usize) -> (String, Vec<u8>) {
    let suffix = format!("{i:08}");
    let mut value = format!("{suffix}|").into_bytes();
    value.resize(size.max(value.len()), b'x');
    (format!("{prefix}{suffix}"), value)
}

/// Puts `count` keys (`key_value(prefix, i % keys, value_size)`) from `writers` concurrent
/// tasks over `clients` (each put bounded by the clients' 10 s request timeout); returns
/// every put's revision, sorted. Stops at the first failure or at `deadline` and panics
/// saying how far the writes got.
async fn write_burst(
    clients: &[Client],
    writers: usize,
    prefix: &str,
    count: usize,
    keys: usize,
    value_size: usize,
    deadline: Instant,
) -> Vec<i64> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut kv = clients[w % clients.len()].kv_client();
        let (next, done, failed, prefix) = (
            next.clone(),
            done.clone(),
            failed.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || failed.lock().unwrap().is_some() {
                    return revisions;
                }
                let (key, value) = key_value(&prefix, i % keys, value_size);
                let t = Instant::now();
                let problem = if t >= deadline {
                    Some("the phase deadline passed".to_string())
                } else {
                    match kv.put(key.clone(), value, None).await {
                        Ok(resp) => {
                            revisions.push(resp.header().expect("put header").revision());
                            done.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Err(e) => Some(format!(
                            "put {key} failed after {:.1} s: {e}",
                            t.elapsed().as_secs_f64()
                        )),
                    }
                };
                if let Some(p) = problem {
                    failed.lock().unwrap().get_or_insert(p);
                    return revisions;
                }
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.expect("writer task"));
    }
    if let Some(p) = failed.lock().unwrap().take() {
        let n = done.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        panic!(
            "writes stalled: {p}; {n} of {count} puts acknowledged in {secs:.1} s ({:.0} puts/s) — the server stopped serving writes in time",
            n as f64 / secs
        );
    }
    all.sort_unstable();
    all
}

/// One watcher's progress: the revision it must see next, and what went wrong first.
#[derive(Clone, Debug)]
struct Progress {
    next_rev: i64,
    count: u64,
    problem: Option<String>,
}

/// Watchers on one stream, all on the same prefix from the same start revision.
struct WatchGroup {
    index: usize,
    /// Kept for the stream's life: dropping it half-closes the stream.
    _sender: WatchRequestSender,
    responses: WatchResponseStream,
    prefix: String,
    wanted: usize,
    ids: HashMap<i64, usize>,
    watchers: Vec<Progress>,
    events: u64,
}

/// What a group's run ended with.
#[derive(Debug)]
struct GroupReport {
    index: usize,
    created: usize,
    complete: usize,
    events: u64,
    /// The stream's own failure, if any, then the first watchers' problems.
    problems: Vec<String>,
    problem_count: usize,
}

impl WatchGroup {
    /// Opens a stream and sends `n` creations on `prefix` from `start_rev`, without reading.
    async fn open(
        client: &Client,
        index: usize,
        prefix: &str,
        n: usize,
        start_rev: i64,
    ) -> WatchGroup {
        assert!(n > 0);
        let opts = || {
            WatchOptions::new()
                .with_prefix()
                .with_start_revision(start_rev)
        };
        let mut watch = client.watch_client();
        let stream =
            tokio::time::timeout(Duration::from_secs(30), watch.watch(prefix, Some(opts())))
                .await
                .unwrap_or_else(|_| panic!("stream {index}: watch not answered in 30 s"))
                .unwrap_or_else(|e| panic!("stream {index}: watch: {e}"));
        let (mut sender, responses) = stream.split();
        for _ in 1..n {
            tokio::time::timeout(Duration::from_secs(30), sender.watch(prefix, Some(opts())))
                .await
                .unwrap_or_else(|_| panic!("stream {index}: creation request not taken in 30 s"))
                .unwrap_or_else(|e| panic!("stream {index}: creation request: {e}"));
        }
        let progress = Progress {
            next_rev: start_rev,
            count: 0,
            problem: None,
        };
        WatchGroup {
            index,
            _sender: sender,
            responses,
            prefix: prefix.to_string(),
            wanted: n,
            ids: HashMap::with_capacity(n),
            watchers: vec![progress; n],
            events: 0,
        }
    }

    /// Reads until every watcher is created (and, if `count` > 0, got `count` events), the
    /// stream fails, or `deadline` passes. Events must come as revisions
    /// `start_rev ..= start_rev + count - 1`, each exactly once, in order.
    async fn run(&mut self, count: u64, deadline: Instant) -> GroupReport {
        let mut failure = None;
        let mut complete = self
            .watchers
            .iter()
            .filter(|w| count > 0 && w.count >= count)
            .count();
        loop {
            if self.ids.len() == self.wanted && (count == 0 || complete == self.wanted) {
                break;
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(IDLE_MAX);
            let response = match tokio::time::timeout(wait, self.responses.message()).await {
                Err(_) => {
                    failure = Some(format!("no response for {wait:?} (deadline or idle limit)"));
                    break;
                }
                Ok(Err(e)) => {
                    failure = Some(format!("stream broke: {e}"));
                    break;
                }
                Ok(Ok(None)) => {
                    failure = Some("stream ended by the server".into());
                    break;
                }
                Ok(Ok(Some(r))) => r,
            };
            if response.created() {
                if response.canceled() {
                    failure = Some(format!("creation refused: {:?}", response.cancel_reason()));
                    break;
                }
                let local = self.ids.len();
                if local >= self.wanted || self.ids.insert(response.watch_id(), local).is_some() {
                    failure = Some(format!(
                        "unexpected created response for watch id {}",
                        response.watch_id()
                    ));
                    break;
                }
            }
            if response.events().is_empty() && !response.canceled() {
                continue;
            }
            let Some(&local) = self.ids.get(&response.watch_id()) else {
                failure = Some(format!(
                    "response for unknown watch id {}",
                    response.watch_id()
                ));
                break;
            };
            let w = &mut self.watchers[local];
            let note = |w: &mut Progress, p: String| {
                if w.problem.is_none() {
                    w.problem = Some(p);
                }
            };
            if response.canceled() {
                let p = format!(
                    "cancelled: {:?}, compact_revision {}",
                    response.cancel_reason(),
                    response.compact_revision()
                );
                note(w, p);
            }
            for event in response.events() {
                self.events += 1;
                let kv = event.kv().expect("event kv");
                let rev = kv.mod_revision();
                if event.event_type() != EventType::Put {
                    note(w, format!("delete event at revision {rev}"));
                }
                let suffix = kv
                    .key()
                    .strip_prefix(self.prefix.as_bytes())
                    .unwrap_or(b"?");
                let value_ok = kv.value().len() > suffix.len()
                    && kv.value().starts_with(suffix)
                    && kv.value()[suffix.len()] == b'|';
                if !value_ok {
                    note(
                        w,
                        format!(
                            "revision {rev}: value does not match key {:?}",
                            String::from_utf8_lossy(kv.key())
                        ),
                    );
                }
                if rev != w.next_rev {
                    let what = if rev < w.next_rev {
                        "duplicate or out of order"
                    } else {
                        "gap (missed events)"
                    };
                    note(
                        w,
                        format!(
                            "{what}: got revision {rev}, expected {} (after {} events)",
                            w.next_rev, w.count
                        ),
                    );
                }
                w.next_rev = w.next_rev.max(rev + 1);
                w.count += 1;
                if count > 0 && w.count == count {
                    complete += 1;
                }
                if count > 0 && w.count == count + 1 {
                    note(w, format!("more than {count} events"));
                }
            }
        }
        let mut problems: Vec<String> = failure.into_iter().collect();
        let mut problem_count = problems.len();
        for (i, w) in self.watchers.iter().enumerate() {
            let p = match &w.problem {
                Some(p) => Some(p.clone()),
                None if count > 0 && w.count != count => {
                    Some(format!("got {} of {count} events", w.count))
                }
                None => None,
            };
            if let Some(p) = p {
                problem_count += 1;
                if problems.len() < 5 {
                    problems.push(format!("watcher {i}: {p}"));
                }
            }
        }
        GroupReport {
            index: self.index,
            created: self.ids.len(),
            complete,
            events: self.events,
            problems,
            problem_count,
        }
    }
}

/// Panics listing every group's problems, if any.
fn assert_groups_ok(reports: &[GroupReport], what: &str) {
    let bad: Vec<&GroupReport> = reports.iter().filter(|r| r.problem_count > 0).collect();
    if bad.is_empty() {
        return;
    }
    let mut msg = format!(
        "{what}: {} of {} streams had problems:\n",
        bad.len(),
        reports.len()
    );
    for r in bad {
        msg += &format!(
            "  stream {}: {} created, {} complete, {} events, {} problems: {}\n",
            r.index,
            r.created,
            r.complete,
            r.events,
            r.problem_count,
            r.problems.join("; ")
        );
    }
    panic!("{msg}");
}

/// The current revision, through a fresh read.
async fn current_revision(client: &mut Client) -> i64 {
    client
        .get("\0", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

// ---------------------------------------------------------------------------
// (a) many watchers, a burst of writes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_get_every_event_once_in_order() {
    let watchers = env_usize("COREKV_STRESS_WATCHERS", 1_000);
    let writes = env_usize("COREKV_STRESS_WRITES", 1_000);
    let timeout = phase_timeout();
    assert!(watchers >= STREAMS && writes > 0);
    let s = Server::start_target();
    let pid = s.pid().expect("server pid");
    let rss = RssSampler::start(pid);
    let baseline = rss.now();
    println!(
        "{}: {watchers} watchers on {STREAMS} streams, {writes} writes from {WRITERS} writers",
        s.kind
    );
    println!("  RSS at start: {:.1} MiB", mib(baseline));

    let mut control = s.client().await;
    let rev0 = current_revision(&mut control).await;
    let prefix = "/stress/many/";
    let t = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..STREAMS {
        conns.push(watch_connection(&s.endpoint()).await);
    }
    let mut groups = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        let n = watchers / STREAMS + usize::from(i < watchers % STREAMS);
        groups.push(WatchGroup::open(c, i, prefix, n, rev0 + 1).await);
    }
    // Wait for every creation before writing, all streams at once.
    let deadline = Instant::now() + timeout;
    let mut tasks = Vec::new();
    for mut g in groups {
        tasks.push(tokio::spawn(async move {
            let r = g.run(0, deadline).await;
            (g, r)
        }));
    }
    let mut groups = Vec::new();
    let mut reports = Vec::new();
    for task in tasks {
        let (g, r) = task.await.expect("group task");
        groups.push(g);
        reports.push(r);
    }
    assert_groups_ok(&reports, "creating watchers");
    let created = rss.now();
    println!(
        "  {watchers} watchers created in {:.2} s; RSS {:.1} MiB",
        t.elapsed().as_secs_f64(),
        mib(created)
    );

    // The burst, with every stream read concurrently.
    let deadline = Instant::now() + timeout;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut g in groups {
        let count = writes as u64;
        tasks.push(tokio::spawn(async move {
            let r = g.run(count, deadline).await;
            (r, Instant::now())
        }));
    }
    let mut writer_conns = Vec::new();
    for _ in 0..4 {
        writer_conns.push(s.client().await);
    }
    let revisions = write_burst(&writer_conns, WRITERS, prefix, writes, writes, 32, deadline).await;
    let write_secs = start.elapsed().as_secs_f64();
    let rss_after_writes = rss.now();
    println!(
        "  {writes} writes in {write_secs:.2} s ({:.0} puts/s); RSS {:.1} MiB",
        writes as f64 / write_secs,
        mib(rss_after_writes)
    );
    assert_eq!(
        revisions,
        ((rev0 + 1)..=(rev0 + writes as i64)).collect::<Vec<_>>(),
        "the puts got revisions rev0+1..=rev0+M (nobody else writes)"
    );
    let mut reports = Vec::new();
    let mut last_done = start;
    for task in tasks {
        let (r, done) = task.await.expect("group task");
        last_done = last_done.max(done);
        reports.push(r);
    }
    let delivery_secs = (last_done - start).as_secs_f64();
    let events: u64 = reports.iter().map(|r| r.events).sum();
    let peak = rss.peak();
    println!(
        "  {events} events ({} expected) delivered {delivery_secs:.2} s after the first write: {:.0} events/s",
        watchers as u64 * writes as u64,
        events as f64 / delivery_secs
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss.now();
    println!(
        "  RSS peak {:.1} MiB, 1 s after delivery {:.1} MiB (bound {:.0} MiB)",
        mib(peak),
        mib(after),
        mib(RSS_MAX_BYTES)
    );
    assert_groups_ok(&reports, "delivering the burst");
    assert_eq!(events, watchers as u64 * writes as u64);
    assert!(
        peak < RSS_MAX_BYTES,
        "server RSS peaked at {:.1} MiB, above {:.0} MiB",
        mib(peak),
        mib(RSS_MAX_BYTES)
    );
    // Still serving.
    let t = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        control.get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        ),
    )
    .await
    .expect("get answered within 5 s")
    .expect("get");
    assert_eq!(resp.count(), writes as i64);
    println!(
        "  count-only get of the prefix answered in {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
}

// ---------------------------------------------------------------------------
// (b) watchers that never read
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_watchers_cost_bounded_memory_and_stall_no_one() {
    const STALLED_WATCHERS: usize = 8;
    const VALUE_BYTES: usize = 1024;
    let writes = env_usize("COREKV_STRESS_STALL_WRITES", 50_000);
    let keys = env_usize("COREKV_STRESS_STALL_KEYS", 1_000).max(1);
    let timeout = phase_timeout();
    let s = Server::start_target();
    let pid = s.pid().expect("server pid");
    let rss = RssSampler::start(pid);
    let mut control = s.client().await;
    let rev0 = current_revision(&mut control).await;
    let prefix = "/stress/stall/";
    println!(
        "{}: {STALLED_WATCHERS} watchers that never read (one stream), 1 that reads, {writes} puts of {VALUE_BYTES} B on {keys} keys",
        s.kind
    );

    // The stalled stream: created, then never polled. Its connection's HTTP/2 windows fill
    // and the server must stop sending to it.
    let stalled_conn = watch_connection(&s.endpoint()).await;
    let mut stalled = WatchGroup::open(&stalled_conn, 0, prefix, STALLED_WATCHERS, rev0 + 1).await;
    // A healthy watcher on another connection, read all along.
    let healthy_conn = watch_connection(&s.endpoint()).await;
    let mut healthy = WatchGroup::open(&healthy_conn, 1, prefix, 1, rev0 + 1).await;
    let deadline = Instant::now() + timeout;
    let count = writes as u64;
    let healthy_task = tokio::spawn(async move {
        let r = healthy.run(count, deadline).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss.reset_peak();
    println!("  RSS before the writes: {:.1} MiB", mib(baseline));

    // Writes: 16 writers over 4 connections, keys cycling over `keys` names.
    let start = Instant::now();
    let mut writer_conns = Vec::new();
    for _ in 0..4 {
        writer_conns.push(s.client().await);
    }
    let revisions = write_burst(
        &writer_conns,
        16,
        prefix,
        writes,
        keys,
        VALUE_BYTES,
        deadline,
    )
    .await;
    assert_eq!(revisions.len(), writes);
    let write_secs = start.elapsed().as_secs_f64();
    let after_writes = rss.now();
    println!(
        "  {writes} puts in {write_secs:.2} s ({:.0} puts/s, {:.1} MiB of values); RSS {:.1} MiB",
        writes as f64 / write_secs,
        mib((writes * VALUE_BYTES) as u64),
        mib(after_writes)
    );

    // Other clients are served promptly: a fresh connection's read and write.
    let t = Instant::now();
    let mut fresh = s.client().await;
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        fresh.get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        ),
    )
    .await
    .expect("get on a fresh connection answered within 5 s")
    .expect("get");
    assert_eq!(got.count(), keys.min(writes) as i64);
    tokio::time::timeout(
        Duration::from_secs(5),
        fresh.put("/stress/other", "x", None),
    )
    .await
    .expect("put on a fresh connection answered within 5 s")
    .expect("put");
    println!(
        "  fresh connection: get + put answered in {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );

    // The healthy watcher got everything while the others stalled.
    let (healthy_report, healthy_done) = healthy_task.await.expect("healthy watcher task");
    println!(
        "  the reading watcher had all {} events {:.2} s after the first put",
        healthy_report.events,
        (healthy_done - start).as_secs_f64()
    );
    let peak = rss.peak();
    let growth = peak.saturating_sub(baseline);
    println!(
        "  RSS peak {:.1} MiB: growth {:.1} MiB (bound {:.0} MiB; a per-watcher backlog would be {:.0} MiB)",
        mib(peak),
        mib(growth),
        mib(STALL_RSS_GROWTH_MAX_BYTES),
        mib((STALLED_WATCHERS * writes * VALUE_BYTES) as u64)
    );
    assert_groups_ok(&[healthy_report], "the reading watcher");
    assert!(
        growth < STALL_RSS_GROWTH_MAX_BYTES,
        "server RSS grew by {:.1} MiB with stalled watchers (bound {:.0} MiB)",
        mib(growth),
        mib(STALL_RSS_GROWTH_MAX_BYTES)
    );

    // The stalled stream reads at last: everything, once, in order (catch-up from history).
    let t = Instant::now();
    let report = stalled.run(count, Instant::now() + timeout).await;
    println!(
        "  the stalled stream, read at last: {} events in {:.2} s; RSS {:.1} MiB",
        report.events,
        t.elapsed().as_secs_f64(),
        mib(rss.now())
    );
    assert_groups_ok(&[report], "the stalled stream once it reads");
    drop(stalled_conn);
}
